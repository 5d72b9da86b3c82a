//! The generic cell rate algorithm on one atomic: a bucket is the
//! theoretical arrival time (TAT) of the next request, in nanoseconds on
//! the quotas' clock. Taking `n` requests moves it `n` emission intervals
//! later; a request is refused when that would put it more than the
//! bucket's tolerance ahead of now. A bucket that has been idle long enough
//! is the same as a new one (its TAT is in the past), so buckets need no
//! refill thread and no timer.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rate and its burst, in the form the algorithm uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds per request (the emission interval, 1 / rate).
    interval_ns: u64,
    /// How far ahead of now the TAT may go: burst x interval.
    limit_ns: u64,
}

impl Rate {
    /// `per_second` requests a second (fractions allowed: AWS has 0.25/s
    /// quotas), at most `burst` at once (at least 1).
    pub fn new(per_second: f64, burst: f64) -> Rate {
        debug_assert!(per_second > 0.0 && burst >= 1.0);
        let interval_ns = (1e9 / per_second).round().max(1.0) as u64;
        let limit_ns = (interval_ns as f64 * burst.max(1.0)).round() as u64;
        Rate {
            interval_ns,
            limit_ns,
        }
    }
}

/// Takes `n` requests from the bucket `tat` at `now`: `Ok`, or
/// `Err(nanoseconds)` until they would fit (nothing taken). Lock-free: one
/// load and one compare-and-swap when uncontended.
#[inline]
pub fn take(tat: &AtomicU64, now: u64, rate: Rate, n: u64) -> Result<(), u64> {
    let cost = rate.interval_ns.saturating_mul(n);
    let mut current = tat.load(Ordering::Relaxed);
    loop {
        // A TAT further ahead than this rate allows (left by a tighter
        // limit before a reload) is brought back to a spent burst: the new
        // limit applies from its first use, and the caller gets nothing
        // for free.
        let most = now.saturating_add(rate.limit_ns);
        if current > most {
            match tat.compare_exchange_weak(current, most, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => current = most,
                Err(seen) => current = seen,
            }
            continue;
        }
        let next = current.max(now).saturating_add(cost);
        let ahead = next - now;
        if ahead > rate.limit_ns {
            return Err(ahead - rate.limit_ns);
        }
        match tat.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(seen) => current = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_bucket_allows_its_burst_then_one_per_interval() {
        let tat = AtomicU64::new(0);
        let r = Rate::new(10.0, 5.0); // 100 ms apart, 5 at once
        let now = 1_000_000_000;
        for _ in 0..5 {
            assert_eq!(take(&tat, now, r, 1), Ok(()));
        }
        // The sixth waits one interval.
        assert_eq!(take(&tat, now, r, 1), Err(100_000_000));
        assert_eq!(take(&tat, now + 99_999_999, r, 1), Err(1));
        assert_eq!(take(&tat, now + 100_000_000, r, 1), Ok(()));
    }

    #[test]
    fn a_refusal_takes_nothing_and_n_counts_n_requests() {
        let tat = AtomicU64::new(0);
        let r = Rate::new(1000.0, 100.0);
        assert!(take(&tat, 5, r, 101).is_err());
        assert_eq!(take(&tat, 5, r, 100), Ok(()));
        assert!(take(&tat, 5, r, 1).is_err());
    }

    #[test]
    fn fractional_rates() {
        let r = Rate::new(0.25, 1.0);
        assert_eq!(r.interval_ns, 4_000_000_000);
        let tat = AtomicU64::new(0);
        assert_eq!(take(&tat, 10, r, 1), Ok(()));
        assert_eq!(take(&tat, 10, r, 1), Err(4_000_000_000));
    }
}
