//! Accepting connections: the accept loop, the connection caps (in all and
//! per uid) and the per-connection limits every connection carries.
//!
//! Apart from the connection's own code because admission is decided once,
//! at accept, on one thread (the acceptor), before a connection is handed to
//! an I/O thread; nothing here runs on the data path except `ConnLimits`,
//! which the connection copies.

use super::{socket, wait_shutdown, ServeState, Shutdown};
use crate::config::TransportConfig;
use crate::identity::Identity;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Per-connection limits beyond the connection count: the per-uid cap and
/// the deadlines (see `TransportConfig` for what each means).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Most connections one uid may hold (never more than
    /// `max_connections`).
    pub(crate) max_per_uid: usize,
    /// No bytes received and nothing in flight for this long: closed.
    pub(crate) idle: Duration,
    /// From a frame's first byte to its last.
    pub(crate) frame: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub(crate) write: Duration,
}

impl ConnLimits {
    pub(super) fn new(config: &TransportConfig) -> ConnLimits {
        let ms = |v: u64| Duration::from_millis(v.max(1));
        ConnLimits {
            max_per_uid: config
                .max_connections_per_uid
                .clamp(1, config.max_connections.max(1)),
            idle: ms(config.idle_timeout_ms),
            frame: ms(config.frame_timeout_ms),
            write: ms(config.write_timeout_ms),
        }
    }
}

/// Counts open connections, in all and per uid, for the connection caps and
/// for draining.
#[derive(Default)]
pub(crate) struct Tracker {
    live: AtomicUsize,
    idle: Notify,
    /// Open connections per uid. A lock taken once at accept and once at
    /// close, never on the data path.
    per_uid: parking_lot::Mutex<HashMap<u32, usize>>,
}

/// Why a new connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `max_connections` are open.
    Full,
    /// This uid holds `max_connections_per_uid`.
    UidFull,
}

impl Tracker {
    /// Open connections.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Counts a new connection of `uid` unless `max` are open or `uid`
    /// holds `max_per_uid`. Only the acceptor calls this, so check-then-add
    /// does not race with other adds.
    pub(crate) fn try_enter(
        self: &Arc<Self>,
        max: usize,
        uid: u32,
        max_per_uid: usize,
    ) -> Result<ConnGuard, Refused> {
        if self.live() >= max {
            return Err(Refused::Full);
        }
        {
            let mut per_uid = self.per_uid.lock();
            let n = per_uid.entry(uid).or_insert(0);
            if *n >= max_per_uid {
                return Err(Refused::UidFull);
            }
            *n += 1;
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        Ok(ConnGuard {
            tracker: Arc::clone(self),
            uid,
        })
    }

    /// Completes when no connection is open.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a close between the check and
            // the await is not missed.
            notified.as_mut().enable();
            if self.live() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection; dropping it uncounts it.
pub(crate) struct ConnGuard {
    tracker: Arc<Tracker>,
    uid: u32,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(m) = crate::metrics::get() {
            m.connection_closed();
        }
        {
            let mut per_uid = self.tracker.per_uid.lock();
            if let Some(n) = per_uid.get_mut(&self.uid) {
                *n -= 1;
                if *n == 0 {
                    per_uid.remove(&self.uid);
                }
            }
        }
        if self.tracker.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

/// Accepts connections until shutdown, reading SO_PEERCRED and enforcing
/// the connection cap, and hands each one to `handoff`. Both engines accept
/// with a tokio listener (tokio-uring's own listener cannot bind on Linux
/// >= 6.12.9, see `uring.rs`).
pub(crate) async fn accept_loop(
    listener: tokio::net::UnixListener,
    state: &ServeState,
    mut shutdown: Shutdown,
    mut handoff: impl FnMut(tokio::net::UnixStream, Identity, ConnGuard),
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = wait_shutdown(&mut shutdown) => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_error(&e).await;
                continue;
            }
        };
        let peer = match socket::peer_of(&stream) {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "SO_PEERCRED failed; closing the connection");
                continue;
            }
        };
        // The per-uid cap keeps one user (root included: a daemon running
        // as root is no reason to let it crowd out everyone else) from
        // taking every slot.
        let limits = &state.conn_limits;
        match state
            .tracker
            .try_enter(state.max_connections, peer.uid, limits.max_per_uid)
        {
            Ok(guard) => {
                if let Some(m) = crate::metrics::get() {
                    m.connection(Ok(()));
                }
                tracing::debug!(?peer, "connection accepted");
                handoff(stream, peer, guard);
            }
            Err(refused) => {
                if let Some(m) = crate::metrics::get() {
                    m.connection(Err(refused == Refused::UidFull));
                }
                log_refused(&refused, &peer, state);
            }
        }
    }
    tracing::debug!("stopped accepting");
}

fn log_refused(refused: &Refused, peer: &Identity, state: &ServeState) {
    let limits = &state.conn_limits;
    match refused {
            Refused::Full => tracing::debug!(
                ?peer,
                max_connections = state.max_connections,
                "connection limit reached; closing a new connection"
            ),
            Refused::UidFull => tracing::debug!(
                ?peer,
                max_connections_per_uid = limits.max_per_uid,
                "per-uid connection limit reached; closing a new connection"
            ),
    }
}

/// Accept failures are transient for a daemon (out of descriptors or
/// memory, a peer that gave up): log, pause briefly so that a persistent
/// condition does not spin the thread, and go on.
async fn accept_error(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
