//! Wall-clock time for the key lifecycle: deletion windows, rotation
//! schedules, import-token and imported-material expiry.
//!
//! Everything that decides "is it due?" reads a [`Clock`], never
//! `SystemTime` directly, so that tests move time without sleeping:
//! unit tests with a [`ManualClock`]; tests of the real daemon, with the
//! `test-clock` feature, through a file named by `KMSD_TEST_CLOCK_FILE`
//! that holds an offset in seconds added to the system clock
//! ([`OffsetFileClock`]). A release build (default features) has no way to
//! move its clock: a shortened deletion window must not be one environment
//! variable away. The data path never reads the clock.

use std::sync::Arc;

/// Seconds since the Unix epoch, as the lifecycle sees them.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        system_now()
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A clock that moves only when told (unit tests).
#[cfg(any(test, feature = "internals"))]
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

#[cfg(any(test, feature = "internals"))]
impl ManualClock {
    /// A clock showing `now`.
    pub fn at(now: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(std::sync::atomic::AtomicI64::new(now)))
    }
    /// Moves the clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "internals"))]
impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The system clock plus an offset read from a file at each reading (tests
/// of the real daemon: they write a new offset to move time). A missing or
/// unreadable file means no offset.
#[cfg(feature = "test-clock")]
#[derive(Debug)]
pub struct OffsetFileClock(std::path::PathBuf);

#[cfg(feature = "test-clock")]
impl Clock for OffsetFileClock {
    fn now(&self) -> i64 {
        let offset = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        system_now() + offset
    }
}

/// Environment variable naming the offset file of a `test-clock` build.
#[cfg(any(feature = "test-clock", feature = "internals"))]
pub const TEST_CLOCK_ENV: &str = "KMSD_TEST_CLOCK_FILE";

/// The daemon's clock: the system clock, or, in a `test-clock` build with
/// `KMSD_TEST_CLOCK_FILE` set, the system clock plus that file's offset.
pub fn daemon_clock() -> Arc<dyn Clock> {
    #[cfg(feature = "test-clock")]
    if let Some(path) = std::env::var_os(TEST_CLOCK_ENV) {
        tracing::warn!(
            file = %std::path::Path::new(&path).display(),
            "test clock: the lifecycle's time is shifted by the offset in this file"
        );
        return Arc::new(OffsetFileClock(path.into()));
    }
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_000);
        assert_eq!(c.now(), 1_000);
        c.advance(86_400);
        assert_eq!(c.now(), 87_400);
    }

    #[cfg(feature = "test-clock")]
    #[test]
    fn the_offset_file_shifts_the_system_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offset");
        let c = OffsetFileClock(path.clone());
        let before = system_now();
        assert!((c.now() - before).abs() <= 2, "no file: no offset");
        std::fs::write(&path, "864000\n").unwrap();
        assert!((c.now() - before - 864_000).abs() <= 2);
    }
}
