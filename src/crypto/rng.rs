//! The two sources of random bytes: [`fill`] for everything drawn per
//! request (nonces, data keys, GenerateRandom, key ids), and [`fill_os`] for
//! long-term key material (backing keys, the development root key).
//!
//! [`fill_os`] asks the kernel (`getrandom`) every time: a key that lives for
//! years should not depend on a user-space generator's state, which a bug,
//! a fork or a memory disclosure could expose; a backing key is made once
//! per CreateKey, so the system call costs nothing that matters.
//!
//! [`fill`] is rand 0.9's `ThreadRng`: a per-thread ChaCha12 generator seeded from
//! the operating system (`getrandom`) and reseeded from it every 64 KiB of
//! output. A `getrandom` system call per request would cost about 0.3 µs on
//! the hot path; the user-space generator costs a few nanoseconds per nonce
//! and is a cryptographically secure generator, so the trade is safe.
//!
//! **Invariant**: the process must not `fork` and keep running Rust code in
//! the child without reseeding (`rand::rng().reseed()`), because a forked
//! child would repeat its parent's stream. kmsd never forks; if that ever
//! changes, reseed here.

use rand::RngCore;

/// Fills `buf` with cryptographically secure random bytes from the calling
/// thread's user-space generator (seeded and periodically reseeded by the
/// operating system).
///
/// It cannot fail: if the operating system's generator is unavailable when
/// the thread's generator is first seeded, rand panics rather than hand out
/// predictable bytes, which is the right outcome for a key-management daemon.
pub fn fill(buf: &mut [u8]) {
    #[cfg(test)]
    drawn::USER_SPACE.with(|n| n.set(n.get() + buf.len()));
    rand::rng().fill_bytes(buf);
}

/// Fills `buf` straight from the operating system's generator (`getrandom`),
/// for long-term key material.
///
/// # Panics
///
/// If the operating system's generator fails, which Linux's `getrandom`
/// does not do once the system has booted: a key-management daemon must not
/// fall back to anything weaker.
pub fn fill_os(buf: &mut [u8]) {
    use rand::TryRngCore as _;
    #[cfg(test)]
    drawn::OS.with(|n| n.set(n.get() + buf.len()));
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator failed");
}

/// How many bytes the calling thread drew from each source, so tests can
/// tell which one a caller used.
#[cfg(test)]
pub(crate) mod drawn {
    use std::cell::Cell;
    thread_local! {
        /// Bytes from [`super::fill`].
        pub(crate) static USER_SPACE: Cell<usize> = const { Cell::new(0) };
        /// Bytes from [`super::fill_os`].
        pub(crate) static OS: Cell<usize> = const { Cell::new(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_writes_every_position_and_differs_between_calls() {
        // Two 64-byte draws colliding, or a byte staying zero in all of 64
        // draws, has negligible probability unless fill is broken.
        let mut seen_nonzero = [false; 64];
        let mut previous = [0u8; 64];
        for _ in 0..64 {
            let mut buf = [0u8; 64];
            fill(&mut buf);
            assert_ne!(buf, previous);
            for (seen, byte) in seen_nonzero.iter_mut().zip(buf) {
                *seen |= byte != 0;
            }
            previous = buf;
        }
        assert!(seen_nonzero.iter().all(|&s| s));
    }

    #[test]
    fn fill_accepts_empty_buffer() {
        fill(&mut []);
        fill_os(&mut []);
    }

    #[test]
    fn fill_os_writes_every_position_and_differs_between_calls() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        fill_os(&mut a);
        fill_os(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 64]);
    }
}
