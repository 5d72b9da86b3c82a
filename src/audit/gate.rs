//! A connection whose answers leave before their records are written, and
//! whose bytes wait for them instead: the HTTP API's connections.
//!
//! hyper answers a connection's requests one at a time: it reads the next
//! pipelined request only once the answer to the last one is made. Held
//! for its record until the end of the I/O thread's turn, each answer cost
//! a turn (an epoll_wait, a write(2) of a record or two, the wake-ups):
//! 110,000 turns a second at 4 connections x 32 pipelined requests. So an
//! HTTP call gets its answer at once, and "no record, no answer" is kept
//! one level down: the connection's writes ([`Gated`]) wait until every
//! record of the requests answered on it so far is written ([`Gate`]
//! counts them). hyper then answers a whole pipeline in one turn, and its
//! records go out in one write(2), before any of its answers.
//!
//! A record that cannot be written fails the gate: the connection is
//! closed with whatever answers it holds (they cannot be taken back from
//! hyper's buffer and replaced by the refusal). Requests that come after
//! are refused before they run while the log stays unwritable
//! (ServiceUnavailableException), as on the binary protocol.

use crate::metrics::Stamp;
use atomic_waker::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's writes wait for: records of its answered requests
/// not written yet.
#[derive(Default)]
pub struct Gate {
    /// Records handed to the log and not written yet.
    unwritten: AtomicUsize,
    /// A record could not be written: the connection must close.
    failed: AtomicBool,
    /// The connection's task, waiting for the gate.
    waker: AtomicWaker,
}

impl Gate {
    /// A ticket for one record about to be handed over: the gate stays
    /// closed until it is written. Taken before the answer is released.
    pub fn ticket(self: &Arc<Gate>) -> Ticket {
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        Ticket {
            gate: Some(Arc::clone(self)),
            stamp: None,
        }
    }

    fn done(&self, written: bool) {
        if !written {
            self.failed.store(true, Ordering::Release);
        }
        if self.unwritten.fetch_sub(1, Ordering::AcqRel) == 1 || !written {
            self.waker.wake();
        }
    }

    /// Ready(Ok) when every record is written, Ready(Err) once one failed,
    /// else Pending (and the task is woken when that changes).
    fn poll_open(&self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let state = || {
            if self.failed.load(Ordering::Acquire) {
                Some(Err(io::Error::other("an audit record could not be written")))
            } else if self.unwritten.load(Ordering::Acquire) == 0 {
                Some(Ok(()))
            } else {
                None
            }
        };
        if let Some(r) = state() {
            return Poll::Ready(r);
        }
        self.waker.register(cx.waker());
        // Written between the first look and the registration.
        state().map_or(Poll::Pending, Poll::Ready)
    }
}

/// One record's hold on a [`Gate`]. Dropped unwritten (the record lost on
/// the way, e.g. at shutdown), it fails the gate: an answer never goes out
/// without its record.
pub struct Ticket {
    gate: Option<Arc<Gate>>,
    /// The request's latency stamp: its service time ends when its answer
    /// may leave, here as on the binary protocol (where the held answer
    /// carries it).
    stamp: Option<Stamp>,
}

impl Ticket {
    /// The ticket, carrying the request's latency stamp.
    pub fn timed(mut self, stamp: Option<Stamp>) -> Ticket {
        self.stamp = stamp;
        self
    }

    /// The record is written (or held in the buffer of `on_failure =
    /// "buffer"`): the answer may go.
    pub fn written(mut self) {
        self.done(true);
    }

    /// The record could not be written: the connection closes.
    pub fn failed(mut self) {
        self.done(false);
    }

    fn done(&mut self, written: bool) {
        // Recorded before the gate opens: once the answer is out, its
        // latency is in the metrics.
        if let (Some(stamp), Some(m)) = (self.stamp.take(), crate::metrics::get()) {
            stamp.record(m);
        }
        if let Some(g) = self.gate.take() {
            g.done(written);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.done(false);
    }
}

/// A connection's stream whose writes wait at its [`Gate`]. While a write
/// waits, reading waits too: else hyper would answer the next requests
/// first (reads come first in its loop), taking new tickets, and a client
/// that never stops sending could hold its answers back without end.
pub struct Gated<S> {
    inner: S,
    gate: Arc<Gate>,
    /// A write is waiting at the gate.
    waiting: bool,
}

impl<S> Gated<S> {
    /// `inner`, its writes behind `gate`.
    pub fn new(inner: S, gate: Arc<Gate>) -> Gated<S> {
        Gated {
            inner,
            gate,
            waiting: false,
        }
    }

    /// Passes when the gate is open; notes a write waiting when not.
    fn pass(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let open = self.gate.poll_open(cx);
        if open.is_pending() {
            self.waiting = true;
        } else if std::mem::take(&mut self.waiting) {
            // Reads that waited for this write go on (they registered no
            // interest with the socket).
            cx.waker().wake_by_ref();
        }
        open
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.waiting || self.gate.failed.load(Ordering::Acquire) {
            // A failed gate ends the connection; a waiting write goes first
            // (the gate wakes this task).
            return match self.gate.poll_open(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            };
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        std::task::ready!(self.pass(cx))?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.pass(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.pass(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.pass(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Whether `f` is ready at its first poll.
    fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    #[test]
    fn writes_wait_until_every_record_taken_before_them_is_written() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(1024);
            let gate = Arc::new(Gate::default());
            let mut io = Gated::new(a, Arc::clone(&gate));
            let (t1, t2) = (gate.ticket(), gate.ticket());
            assert!(ready_now(io.write_all(b"answer")).is_none(), "written before its records");
            t1.written();
            assert!(ready_now(io.write_all(b"answer")).is_none(), "one record still unwritten");
            // Reading waits with the write.
            let mut byte = [0u8; 1];
            b.write_all(b"next request").await.unwrap();
            assert!(ready_now(io.read(&mut byte)).is_none(), "read before the waiting write");
            t2.written();
            io.write_all(b"answer").await.unwrap();
            let mut got = [0u8; 6];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"answer");
            assert_eq!(io.read(&mut byte).await.unwrap(), 1);
        });
    }

    #[test]
    fn a_record_not_written_closes_the_connection() {
        rt().block_on(async {
            let (a, _b) = tokio::io::duplex(1024);
            let gate = Arc::new(Gate::default());
            let mut io = Gated::new(a, Arc::clone(&gate));
            let t = gate.ticket();
            assert!(ready_now(io.write_all(b"answer")).is_none());
            t.failed();
            assert!(io.write_all(b"answer").await.is_err());
            let mut byte = [0u8; 1];
            assert!(io.read(&mut byte).await.is_err());
            // A ticket lost on the way counts as not written.
            let gate = Arc::new(Gate::default());
            let (a, _b) = tokio::io::duplex(1024);
            let mut io = Gated::new(a, Arc::clone(&gate));
            drop(gate.ticket());
            assert!(io.write_all(b"answer").await.is_err());
        });
    }

    #[test]
    fn a_record_written_on_another_thread_wakes_the_waiting_write() {
        rt().block_on(async {
            let (a, mut b) = tokio::io::duplex(1024);
            let gate = Arc::new(Gate::default());
            let mut io = Gated::new(a, Arc::clone(&gate));
            let t = gate.ticket();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                t.written();
            });
            io.write_all(b"answer").await.unwrap();
            writer.join().unwrap();
            let mut got = [0u8; 6];
            b.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"answer");
        });
    }
}
