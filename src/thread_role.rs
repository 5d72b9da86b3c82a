//! Which thread may do what, asserted in debug builds.
//!
//! I/O threads run one single-threaded runtime each: a call that blocks
//! there (a PKCS#11 call, tens of µs on SoftHSM and milliseconds on a
//! network HSM; a store read or an fsync) stalls every connection of that
//! thread. The transport marks its I/O threads; the store and the HSM layer
//! call [`assert_may_block`] before each call, so in debug builds (every
//! test) a blocking call on an I/O thread panics at once instead of showing
//! up later as latency. Release builds compile the checks away.
//!
//! One write to a file is allowed there: an I/O thread writes its own
//! answers' audit records (write(2) into the page cache, once per turn of
//! its event loop, only when the log's lock is free; never an fdatasync:
//! `audit::local`). Handing them to a writer thread cost more than the
//! write (docs/perf/audit.md).

use std::cell::Cell;

/// What a thread is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Anything that may block: workers, the control plane, key loaders,
    /// the HSM executor, tests, start-up.
    MayBlock,
    /// An I/O thread: never blocks.
    Io,
}

thread_local! {
    static ROLE: Cell<Role> = const { Cell::new(Role::MayBlock) };
}

/// Marks the calling thread as an I/O thread (for the rest of its life).
pub fn enter_io() {
    ROLE.set(Role::Io);
}

/// The calling thread's role.
pub fn current() -> Role {
    ROLE.get()
}

/// Panics (debug builds) if the calling thread is an I/O thread: `what`
/// (a store call, a PKCS#11 call) would block it.
#[inline]
#[track_caller]
pub fn assert_may_block(what: &str) {
    if cfg!(debug_assertions) && ROLE.get() == Role::Io {
        panic!("thread rule broken: {what} on an I/O thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocking_call_on_an_io_thread_panics_in_debug_builds() {
        let r = std::thread::spawn(|| {
            enter_io();
            assert_may_block("a store read");
        })
        .join();
        assert_eq!(r.is_err(), cfg!(debug_assertions));
        // Other threads may block.
        assert_may_block("a store read");
        assert_eq!(current(), Role::MayBlock);
    }
}
