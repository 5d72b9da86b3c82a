//! Keeping key material out of swap and core dumps.
//!
//! The daemon asks the kernel not to dump its memory (PR_SET_DUMPABLE 0,
//! which also stops other processes of the same user from ptrace-attaching)
//! and, when `cache.mlock` is on and RLIMIT_MEMLOCK allows it, locks all its
//! pages (mlockall) so unwrapped keys never reach swap. With a small limit
//! (the usual 8 MiB) locking is skipped with a warning: mlockall with
//! MCL_FUTURE under a limit the daemon will outgrow makes later allocations
//! fail, which is worse than not locking.

use rustix::process::{getrlimit, Resource};

/// Smallest RLIMIT_MEMLOCK under which the whole daemon is locked.
const MIN_LOCKABLE: u64 = 1 << 30;

/// What `protect` did, for the start-up log line.
#[derive(Debug, PartialEq, Eq)]
pub enum MemLock {
    /// All current and future pages are locked.
    Locked,
    /// Not asked for.
    Off,
    /// Asked for, not possible: why.
    Skipped(String),
}

/// Marks the process non-dumpable and, if `mlock`, locks its memory.
pub fn protect(mlock: bool) -> MemLock {
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        tracing::warn!("could not mark the process non-dumpable: {e}");
    }
    if !mlock {
        return MemLock::Off;
    }
    let limit = getrlimit(Resource::Memlock).current;
    if limit.is_some_and(|l| l < MIN_LOCKABLE) {
        return MemLock::Skipped(format!(
            "RLIMIT_MEMLOCK is {} KiB; raise it (e.g. LimitMEMLOCK=infinity) to keep keys out of swap",
            limit.unwrap_or(0) / 1024
        ));
    }
    match rustix::mm::mlockall(
        rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE,
    ) {
        Ok(()) => MemLock::Locked,
        Err(e) => MemLock::Skipped(format!("mlockall failed: {e}")),
    }
}
