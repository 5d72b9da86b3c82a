//! The one source of random bytes: nonces, backing keys, the development root
//! key and GenerateRandom all come from [`fill`].
//!
//! It is rand 0.9's `ThreadRng`: a per-thread ChaCha12 generator seeded from
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
    rand::rng().fill_bytes(buf);
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
    }
}
