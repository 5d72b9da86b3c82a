//! Records of an I/O thread, gathered and written together.
//!
//! An I/O thread answers many frames in one turn of its event loop (every
//! complete frame of every ready connection). Writing each frame's record
//! on its own cost a write(2), a SHA-256 round and a lock per frame (single
//! GenerateDataKey ran at a third of its rate with the log on,
//! docs/perf/audit.md); so an I/O thread's records wait in a thread-local
//! list until its flusher, a future polled beside the thread's connection
//! loop, runs: after the tasks that were ready with it, before the thread
//! waits for events again. The list is written with one lock and one
//! write(2), and the answers leave.
//!
//! Nothing waits longer than it would for its own write: the flusher is
//! woken by the first record of a list, and the event loop runs it before
//! it polls for new events.

use super::{Core, Pending};
use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Waker};

/// A list longer than this is written at once (a bound on what one turn
/// holds back).
const MOST: usize = 1024;

#[derive(Default)]
struct Local {
    /// Whether this thread has a flusher (only threads that run
    /// [`io_thread`] do).
    active: bool,
    core: Option<Arc<Core>>,
    records: Vec<Pending>,
    waker: Option<Waker>,
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Adds `p` to this thread's list, for its flusher; gives it back when the
/// thread has no flusher (or its list is for another log).
pub(super) fn defer(core: &Arc<Core>, p: Pending) -> Option<Pending> {
    let mut p = Some(p);
    let (waker, full) = LOCAL.with_borrow_mut(|l| {
        if !l.active || l.core.as_ref().is_some_and(|c| !Arc::ptr_eq(c, core)) {
            return (None, None);
        }
        l.core.get_or_insert_with(|| Arc::clone(core));
        l.records.extend(p.take());
        let waker = if l.records.len() == 1 { l.waker.take() } else { None };
        let full = (l.records.len() >= MOST).then(|| std::mem::take(&mut l.records));
        (waker, full)
    });
    if let Some(w) = waker {
        w.wake();
    }
    if let Some(records) = full {
        core.submit_all(records, true);
    }
    p
}

/// Takes this thread's list (and its log).
fn take() -> Option<(Arc<Core>, Vec<Pending>)> {
    LOCAL.with_borrow_mut(|l| {
        if l.records.is_empty() {
            return None;
        }
        let core = Arc::clone(l.core.as_ref()?);
        Some((core, std::mem::take(&mut l.records)))
    })
}

/// Runs an I/O thread's `serve` future with the flusher of its records
/// beside it; writes what is left when `serve` ends.
pub async fn io_thread<F: Future>(serve: F) -> F::Output {
    LOCAL.with_borrow_mut(|l| l.active = true);
    let flusher = std::future::poll_fn(|cx| {
        while let Some((core, records)) = take() {
            core.submit_all(records, true);
        }
        // Writing the list ran no other code of this thread (answers are
        // queued, not polled), so no record came in since the last take.
        LOCAL.with_borrow_mut(|l| l.waker = Some(cx.waker().clone()));
        Poll::<()>::Pending
    });
    let out = tokio::select! {
        biased;
        out = serve => out,
        () = flusher => unreachable!("the flusher never ends"),
    };
    LOCAL.with_borrow_mut(|l| {
        l.active = false;
        l.waker = None;
    });
    if let Some((core, records)) = take() {
        core.submit_all(records, true);
    }
    out
}
