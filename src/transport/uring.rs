//! The io_uring engine: tokio-uring 0.5, one single-threaded runtime per I/O
//! thread (thread per core, `threads.rs`).
//!
//! Connections are accepted by a tokio listener on the calling thread, not
//! by tokio-uring's: its `UnixListener::bind` fails with EOPNOTSUPP on Linux
//! 6.12.9 and later (it sets SO_REUSEPORT, which the kernel now refuses on
//! AF_UNIX; tokio-rs/tokio-uring#323), and it has no SO_PEERCRED accessor.
//! Each I/O thread adopts its streams with `UnixStream::from_std`.

use super::accept::ConnLimits;
use super::conn::{run_both, wipe, Conn, Expiry, ReadStep, ReadTimer};
use super::threads::{self, serve_handoffs, Handoff, Handoffs, Ready, SocketMode};
use super::write_queue::{write_timed_out, Chunk, WriteQueue};
use super::{wait_shutdown, ServeState, Shutdown, READ_CHUNK};
use bytes::BytesMut;
use kms_proto::frame::{make_room, read_limit, zero, WipeOnDrop};
use std::io;
use std::net::Shutdown as How;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::UnixStream;

/// Checks, once per process, that io_uring can be set up and completes an
/// operation here (seccomp profiles and container runtimes often refuse it
/// with EPERM or ENOSYS). The probe runs on its own thread: building and
/// dropping a runtime is not allowed inside another runtime's context, and
/// the caller may be in one.
pub(super) fn probe() -> io::Result<()> {
    static RESULT: OnceLock<Result<(), (io::ErrorKind, String)>> = OnceLock::new();
    let result = RESULT.get_or_init(|| {
        let attempt = std::thread::Builder::new()
            .name("kmsd-uring-probe".into())
            .spawn(|| {
                let rt = tokio_uring::Runtime::new(&tokio_uring::builder())?;
                rt.block_on(tokio_uring::no_op())
            })
            .map_err(|e| (e.kind(), e.to_string()))?
            .join();
        match attempt {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err((e.kind(), e.to_string())),
            // tokio-uring unwraps some submission errors internally.
            Err(_) => Err((
                io::ErrorKind::Unsupported,
                "the io_uring probe panicked".into(),
            )),
        }
    });
    result
        .clone()
        .map_err(|(kind, msg)| io::Error::new(kind, msg))
}

/// Serves `listener` until `shutdown`, then drains (see [`super::serve`]).
pub(super) fn run(
    listener: UnixListener,
    io_threads: usize,
    state: Arc<ServeState>,
    shutdown: Shutdown,
) -> io::Result<()> {
    threads::run(
        "uring",
        listener,
        io_threads,
        state,
        shutdown,
        SocketMode::Blocking,
        io_thread,
    )
}

fn io_thread(rx: Handoffs, state: Arc<ServeState>, stop: Shutdown, ready: Ready) {
    let runtime = tokio_uring::Runtime::new(&tokio_uring::builder());
    let Some(rt) = threads::started(runtime, &ready) else {
        return;
    };
    rt.block_on(serve_handoffs(rx, state, stop, |h, state, stop| {
        tokio_uring::spawn(connection(h, state, stop));
    }));
    // Dropping the runtime drops the connections that outlived the grace
    // period and cancels their pending operations, which closes them.
    drop(rt);
}

async fn connection(h: Handoff, state: Arc<ServeState>, stop: Shutdown) {
    let Handoff {
        stream,
        peer,
        guard,
    } = h;
    let stream = UnixStream::from_std(stream);
    let (conn, queue) = Conn::new(&state, peer.clone());
    let limits = state.conn_limits;
    run_both(
        peer,
        read_loop(&stream, conn, stop, limits),
        write_loop(&stream, queue, limits),
    )
    .await;
    // A read still pending in the ring (the writer failed first) keeps the
    // descriptor open until it completes; shutting the socket down completes
    // it at once.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(stream);
    drop(guard);
}

/// How long to wait for an operation to come back from the ring after the
/// socket was shut down under it (shutdown completes it at once; this only
/// bounds a kernel that would not).
const GIVE_BACK: Duration = Duration::from_secs(1);

async fn read_loop(stream: &UnixStream, conn: Conn, mut stop: Shutdown, limits: ConnLimits) {
    // Wiped when dropped too: a connection that outlives the grace period
    // is dropped with its runtime, mid-read.
    let mut buf = WipeOnDrop(BytesMut::with_capacity(READ_CHUNK));
    let buf = &mut buf.0;
    // tokio-uring reads into an owned buffer from its start (BytesMut would
    // need tokio-uring's `bytes` feature), so read into a staging Vec and
    // append: one memcpy per read, small next to the syscall it replaces.
    // It holds request bytes, so it is zeroed after each copy and never
    // abandoned to the ring: a read that must stop is completed by shutting
    // the socket's read side down, and the buffer taken back.
    let mut chunk: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut timer = ReadTimer::new(limits);
    let sleep = tokio::time::sleep_until(timer.deadline());
    tokio::pin!(sleep);
    let mut stopping = false;
    while !stopping {
        if conn.drain(buf, &mut stop).await == ReadStep::Stop {
            break;
        }
        if let Some(due) = timer.before_read(buf.len()) {
            sleep.as_mut().reset(due);
        }
        chunk.clear();
        // Stops at the end of a large frame (`read_limit`).
        let read = stream.read(chunk.slice(..read_limit(buf, READ_CHUNK)));
        tokio::pin!(read);
        let (read, back) = loop {
            tokio::select! {
                biased;
                () = wait_shutdown(&mut stop), if !stopping => stopping = true,
                r = &mut read => break r,
                () = &mut sleep, if !stopping => match timer.expired(&conn, buf.len()) {
                    Expiry::Rearm(due) => sleep.as_mut().reset(due),
                    Expiry::Close => stopping = true,
                },
            }
            if stopping {
                // Completes the pending read (with 0 or with data already
                // queued); the writer may still finish in-flight answers.
                let _ = stream.shutdown(How::Read);
                match tokio::time::timeout(GIVE_BACK, &mut read).await {
                    Ok(r) => break r,
                    Err(_) => {
                        tracing::debug!(peer = ?conn.peer(), "a cancelled read never came back");
                        wipe(buf);
                        return;
                    }
                }
            }
        };
        chunk = back.into_inner();
        match read {
            Ok(0) => {
                if !stopping {
                    conn.eof(buf);
                }
                break;
            }
            Ok(n) if !stopping => {
                timer.on_read();
                // Grown with what has arrived, never by what a length
                // prefix announces, and without leaving a copy behind.
                make_room(buf, n, READ_CHUNK);
                buf.extend_from_slice(&chunk[..n]);
                zero(&mut chunk[..n]);
            }
            Ok(n) => zero(&mut chunk[..n]),
            Err(e) => {
                tracing::debug!(peer = ?conn.peer(), error = %e, "read failed; closing the connection");
                break;
            }
        }
    }
    wipe(buf);
    zero(&mut chunk);
}

async fn write_loop(
    stream: &UnixStream,
    mut queue: WriteQueue,
    limits: ConnLimits,
) -> io::Result<()> {
    while let Some(chunk) = queue.next().await {
        match chunk {
            Chunk::Gathered => {
                // tokio-uring writes owned buffers: lend the gather buffer
                // to the ring and take it back.
                let buf = std::mem::take(&mut queue.buf);
                let (r, buf) = write_all(stream, buf, limits.write).await;
                queue.buf = buf;
                queue.written();
                r?;
            }
            Chunk::Large(mut o) => {
                let frame = std::mem::take(&mut o.frame);
                let (r, mut frame) = write_all(stream, frame, limits.write).await;
                zero(&mut frame);
                r?;
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` and gives it back, failing once one write makes no
/// progress for `limit` (the write deadline). A write that times out is
/// completed by shutting the socket down rather than abandoned, so the
/// buffer (answers carry plaintext) comes back to be zeroed.
async fn write_all(
    stream: &UnixStream,
    mut buf: Vec<u8>,
    limit: Duration,
) -> (io::Result<()>, Vec<u8>) {
    let mut pos = 0;
    while pos < buf.len() {
        let write = stream.write(buf.slice(pos..)).submit();
        tokio::pin!(write);
        let (r, slice) = tokio::select! {
            biased;
            r = &mut write => r,
            () = tokio::time::sleep(limit) => {
                let _ = stream.shutdown(How::Both);
                match tokio::time::timeout(GIVE_BACK, &mut write).await {
                    Ok((_, slice)) => return (Err(write_timed_out(limit)), slice.into_inner()),
                    // The ring kept the buffer; it is freed when the
                    // operation ends, and nothing is left to give back.
                    Err(_) => return (Err(write_timed_out(limit)), Vec::new()),
                }
            }
        };
        buf = slice.into_inner();
        match r {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => pos += n,
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}
