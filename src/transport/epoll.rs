//! The epoll engine: one single-threaded tokio runtime per I/O thread
//! (thread per core, `threads.rs`), one task per connection (reader and
//! writer over the stream's halves).

use super::accept::ConnLimits;
use super::conn::{run_both, wipe, Conn, Expiry, ReadStep, ReadTimer};
use super::threads::{self, serve_handoffs, Handoff, Handoffs, Ready, SocketMode};
use super::write_queue::{write_timed_out, Chunk, WriteQueue};
use super::{ServeState, Shutdown, READ_CHUNK};
use bytes::{BufMut, BytesMut};
use kms_proto::frame::{make_room, read_limit, WipeOnDrop};
use std::io;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

/// Serves `listener` until `shutdown`, then drains (see [`super::serve`]).
pub(super) fn run(
    listener: UnixListener,
    io_threads: usize,
    state: Arc<ServeState>,
    shutdown: Shutdown,
) -> io::Result<()> {
    threads::run(
        "io",
        listener,
        io_threads,
        state,
        shutdown,
        SocketMode::NonBlocking,
        io_thread,
    )
}

fn io_thread(rx: Handoffs, state: Arc<ServeState>, stop: Shutdown, ready: Ready) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Some(rt) = threads::started(runtime, &ready) else {
        return;
    };
    rt.block_on(serve_handoffs(rx, state, stop, |h, state, stop| {
        tokio::spawn(connection(h, state, stop));
    }));
    // Dropping the runtime drops the tasks of connections that outlived the
    // grace period, which closes their sockets.
    drop(rt);
}

async fn connection(h: Handoff, state: Arc<ServeState>, shutdown: Shutdown) {
    let Handoff {
        stream,
        peer,
        guard,
    } = h;
    let mut stream = match UnixStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(?peer, error = %e, "cannot register a connection with epoll");
            return;
        }
    };
    let (conn, queue) = Conn::new(&state, peer.clone());
    let limits = state.conn_limits;
    let (rd, wr) = stream.split();
    run_both(
        peer,
        read_loop(rd, conn, shutdown, limits),
        write_loop(wr, queue, limits),
    )
    .await;
    drop(stream);
    drop(guard);
}

async fn read_loop(mut rd: ReadHalf<'_>, conn: Conn, mut shutdown: Shutdown, limits: ConnLimits) {
    // Wiped when dropped too: a connection that outlives the grace period
    // is dropped with its runtime, mid-read.
    let mut buf = WipeOnDrop(BytesMut::with_capacity(READ_CHUNK));
    let buf = &mut buf.0;
    let mut timer = ReadTimer::new(limits);
    let sleep = tokio::time::sleep_until(timer.deadline());
    tokio::pin!(sleep);
    loop {
        if conn.drain(buf, &mut shutdown).await == ReadStep::Stop {
            break;
        }
        // Room for the next read, grown with what has arrived (never by
        // what a length prefix announces) and without leaving an unzeroed
        // copy behind; this also keeps reads from shrinking to a few bytes.
        // A read stops at the end of a large frame (`read_limit`).
        make_room(buf, READ_CHUNK / 4, READ_CHUNK);
        if let Some(due) = timer.before_read(buf.len()) {
            sleep.as_mut().reset(due);
        }
        let limit = read_limit(buf, READ_CHUNK);
        let read = tokio::select! {
            biased;
            () = super::wait_shutdown(&mut shutdown) => break,
            r = async { rd.read_buf(&mut (&mut *buf).limit(limit)).await } => r,
            () = &mut sleep => match timer.expired(&conn, buf.len()) {
                Expiry::Rearm(due) => {
                    sleep.as_mut().reset(due);
                    continue;
                }
                Expiry::Close => break,
            },
        };
        match read {
            Ok(0) => {
                conn.eof(buf);
                break;
            }
            Ok(_) => timer.on_read(),
            Err(e) => {
                tracing::debug!(peer = ?conn.peer(), error = %e, "read failed; closing the connection");
                break;
            }
        }
    }
    wipe(buf);
    // `conn` (and its sender) drops here: the writer finishes once every
    // in-flight answer is written.
}

async fn write_loop(
    mut wr: WriteHalf<'_>,
    mut queue: WriteQueue,
    limits: ConnLimits,
) -> io::Result<()> {
    while let Some(chunk) = queue.next().await {
        match chunk {
            Chunk::Gathered => {
                let r = write_all(&mut wr, &queue.buf, limits.write).await;
                queue.written();
                r?;
            }
            // Outgoing zeroizes its own frame when dropped.
            Chunk::Large(o) => write_all(&mut wr, &o.frame, limits.write).await?,
        }
    }
    Ok(())
}

/// Writes all of `bytes`, failing once one write makes no progress for
/// `limit` (the write deadline: a peer that stops reading its answers).
async fn write_all(wr: &mut WriteHalf<'_>, bytes: &[u8], limit: Duration) -> io::Result<()> {
    let mut pos = 0;
    while pos < bytes.len() {
        match tokio::time::timeout(limit, wr.write(&bytes[pos..])).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => pos += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(write_timed_out(limit)),
        }
    }
    Ok(())
}
