//! Thread per core, shared by both engines: an acceptor thread accepts
//! connections and hands each to one of `io_threads` I/O threads round
//! robin; each I/O thread runs its own single-threaded runtime (tokio's for
//! epoll, tokio-uring's for io_uring) and owns its connections for their
//! whole life. The calling thread only starts, waits for and stops them.
//!
//! The acceptor and the I/O threads are marked as I/O threads
//! ([`crate::thread_role::enter_io`]) before they run anything, so in debug
//! builds a store or PKCS#11 call on them panics. The acceptor has a thread
//! of its own rather than the caller's for that reason: the mark lasts for
//! the thread's life, and the caller (the daemon's main thread, a test) may
//! block once `serve` returns.
//!
//! Why not tokio's multi-thread scheduler: with it, a readiness event found
//! by one worker wakes the connection's task on another, so under steady
//! small requests most of the daemon's time went to cross-thread wake-ups
//! (futex, reschedule IPIs, eventfd writes; `perf` put scheduler entries at
//! over 30% of the daemon's samples) and the open-loop p99 at half the peak
//! was about 5x the echo server's. A connection pinned to one thread is
//! woken only by its own socket, or by a worker finishing one of its
//! requests. The cost is that connections are not rebalanced between I/O
//! threads; heavy work goes to the worker pool anyway, and the I/O threads
//! only read, answer small requests and write.

use super::accept::{accept_loop, ConnGuard};
use super::{wait_shutdown, ServeState, Shutdown};
use crate::identity::Identity;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// A connection on its way from the acceptor to an I/O thread.
pub(super) struct Handoff {
    pub(super) stream: UnixStream,
    pub(super) peer: Identity,
    pub(super) guard: ConnGuard,
}

/// The queue of connections handed to one I/O thread.
pub(super) type Handoffs = mpsc::UnboundedReceiver<Handoff>;

/// Reports whether an I/O thread's runtime started.
pub(super) type Ready = std::sync::mpsc::Sender<io::Result<()>>;

/// The `O_NONBLOCK` flag an accepted socket is handed over with; nothing to
/// do with whether a thread may block (`crate::service::Site`,
/// `crate::thread_role`). io_uring wants blocking sockets (the ring, not
/// the socket, is asynchronous: a non-blocking socket makes it report EAGAIN
/// instead of waiting), tokio non-blocking ones.
#[derive(Clone, Copy)]
pub(super) enum SocketMode {
    /// `O_NONBLOCK` cleared (io_uring).
    Blocking,
    /// `O_NONBLOCK` set (tokio's epoll).
    NonBlocking,
}

/// Starts `io_threads` threads running `io_thread` (which builds its runtime,
/// reports on `Ready`, then serves its `Handoffs` with [`serve_handoffs`])
/// and an acceptor thread that accepts until `shutdown`; then stops the I/O
/// threads, each of which drains its connections within the grace period.
pub(super) fn run(
    name: &str,
    listener: UnixListener,
    io_threads: usize,
    state: Arc<ServeState>,
    shutdown: Shutdown,
    socket_mode: SocketMode,
    io_thread: fn(Handoffs, Arc<ServeState>, Shutdown, Ready),
) -> io::Result<()> {
    // The I/O threads follow an internal stop signal rather than the
    // caller's, so that a failed start can stop the threads already running.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut senders = Vec::with_capacity(io_threads);
    let mut threads = Vec::with_capacity(io_threads);
    for i in 0..io_threads {
        let (tx, rx) = mpsc::unbounded_channel();
        let (state, stop_rx, ready) = (Arc::clone(&state), stop_rx.clone(), ready_tx.clone());
        let spawned = spawn_io_thread(format!("kmsd-{name}-{i}"), move || {
            io_thread(rx, state, stop_rx, ready);
        });
        match spawned {
            Ok(t) => {
                senders.push(tx);
                threads.push(t);
            }
            Err(e) => {
                stop(stop_tx, threads);
                return Err(e);
            }
        }
    }
    drop(ready_tx);
    for _ in 0..threads.len() {
        let failed = match ready_rx.recv() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => io::Error::new(e.kind(), format!("starting an I/O thread: {e}")),
            Err(_) => io::Error::other("an I/O thread died while starting"),
        };
        stop(stop_tx, threads);
        return Err(failed);
    }

    let acceptor = {
        let state = Arc::clone(&state);
        spawn_io_thread("kmsd-accept".into(), move || {
            accept(listener, &state, shutdown, senders, socket_mode)
        })
    };
    let accepted = acceptor.map(std::thread::JoinHandle::join);
    // Stop reading everywhere (this is also how a failed acceptor stops the
    // threads); each thread drains its connections within the grace period.
    stop(stop_tx, threads);
    match accepted {
        Ok(Ok(r)) => r,
        Err(spawn_failed) => Err(spawn_failed),
        // A panic stays a panic, as when the acceptor ran on this thread;
        // the I/O threads are stopped first.
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
    }
}

/// Spawns a thread (the acceptor or an I/O thread) that is marked as an I/O
/// thread before `body` runs, so the mark covers everything it ever does.
pub(super) fn spawn_io_thread<T: Send + 'static>(
    name: String,
    body: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name).spawn(move || {
        crate::thread_role::enter_io();
        body()
    })
}

/// An I/O thread's runtime, once `ready` has been told whether it started.
pub(super) fn started<R>(runtime: io::Result<R>, ready: &Ready) -> Option<R> {
    match runtime {
        Ok(rt) => {
            let _ = ready.send(Ok(()));
            Some(rt)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            None
        }
    }
}

/// Signals the I/O threads to stop and waits for them.
fn stop(stop_tx: watch::Sender<bool>, threads: Vec<std::thread::JoinHandle<()>>) {
    let _ = stop_tx.send(true);
    for t in threads {
        if t.join().is_err() {
            tracing::error!("an I/O thread panicked");
        }
    }
}

/// The acceptor thread's body: its own single-threaded tokio runtime running
/// the accept loop, handing streams over round robin.
fn accept(
    listener: UnixListener,
    state: &ServeState,
    shutdown: Shutdown,
    senders: Vec<mpsc::UnboundedSender<Handoff>>,
    socket_mode: SocketMode,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    listener.set_nonblocking(true)?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let mut next = 0usize;
        accept_loop(listener, state, shutdown, |stream, peer, guard| {
            // Detached tokio streams stay non-blocking.
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot detach an accepted stream");
                    return;
                }
            };
            if let SocketMode::Blocking = socket_mode {
                if let Err(e) = stream.set_nonblocking(false) {
                    tracing::warn!(error = %e, "cannot make an accepted stream blocking");
                    return;
                }
            }
            // Round robin. A thread that is gone drops the stream, which
            // closes it and uncounts it.
            let _ = senders[next % senders.len()].send(Handoff {
                stream,
                peer,
                guard,
            });
            next = next.wrapping_add(1);
        })
        .await;
        Ok(())
    })
}

/// The body of an I/O thread, inside its runtime: spawns `connection` (with
/// the engine's local spawn) for every stream handed over until stop, then
/// closes the streams never adopted and waits for its connections to drain.
pub(super) async fn serve_handoffs(
    rx: Handoffs,
    state: Arc<ServeState>,
    stop: Shutdown,
    spawn: impl FnMut(Handoff, Arc<ServeState>, Shutdown),
) {
    // The audit records of this thread's answers are written together,
    // once per turn of its event loop (see `audit::io_thread`).
    crate::audit::io_thread(handoffs(rx, state, stop, spawn)).await;
}

async fn handoffs(
    mut rx: Handoffs,
    state: Arc<ServeState>,
    stop: Shutdown,
    mut spawn: impl FnMut(Handoff, Arc<ServeState>, Shutdown),
) {
    let mut stopping = stop.clone();
    loop {
        let handoff = tokio::select! {
            biased;
            () = wait_shutdown(&mut stopping) => break,
            h = rx.recv() => h,
        };
        let Some(h) = handoff else { break };
        spawn(h, Arc::clone(&state), stop.clone());
    }
    // Connections still queued for this thread were never read: close them
    // now.
    rx.close();
    while rx.try_recv().is_ok() {}
    state.drain().await;
}
