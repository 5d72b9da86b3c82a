//! The io_uring engine: tokio-uring 0.5, one single-threaded runtime per I/O
//! thread (thread per core, `threads.rs`).
//!
//! Connections are accepted by a tokio listener on the calling thread, not
//! by tokio-uring's: its `UnixListener::bind` fails with EOPNOTSUPP on Linux
//! 6.12.9 and later (it sets SO_REUSEPORT, which the kernel now refuses on
//! AF_UNIX; tokio-rs/tokio-uring#323), and it has no SO_PEERCRED accessor.
//! Each I/O thread adopts its streams with `UnixStream::from_std`.

use super::threads::{self, serve_handoffs, Blocking, Handoff, Handoffs, Ready};
use super::{
    run_both, wait_shutdown, wipe, Chunk, Conn, ReadStep, Shared, Shutdown, WriteQueue, READ_CHUNK,
};
use bytes::BytesMut;
use std::io;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, OnceLock};
use tokio_uring::net::UnixStream;
use zeroize::Zeroize;

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
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> io::Result<()> {
    threads::run(
        "uring",
        listener,
        io_threads,
        shared,
        shutdown,
        Blocking::Blocking,
        io_thread,
    )
}

fn io_thread(rx: Handoffs, shared: Arc<Shared>, stop: Shutdown, ready: Ready) {
    let runtime = tokio_uring::Runtime::new(&tokio_uring::builder());
    let Some(rt) = threads::started(runtime, &ready) else {
        return;
    };
    rt.block_on(serve_handoffs(rx, shared, stop, |h, shared, stop| {
        tokio_uring::spawn(connection(h, shared, stop));
    }));
    // Dropping the runtime drops the connections that outlived the grace
    // period and cancels their pending operations, which closes them.
    drop(rt);
}

async fn connection(h: Handoff, shared: Arc<Shared>, stop: Shutdown) {
    let Handoff {
        stream,
        peer,
        guard,
    } = h;
    let stream = UnixStream::from_std(stream);
    let (conn, queue) = Conn::new(&shared, peer);
    run_both(
        peer,
        read_loop(&stream, conn, stop),
        write_loop(&stream, queue),
    )
    .await;
    // A read still pending in the ring (the writer failed first) keeps the
    // descriptor open until it completes; shutting the socket down completes
    // it at once.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    drop(stream);
    drop(guard);
}

async fn read_loop(stream: &UnixStream, conn: Conn, mut stop: Shutdown) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // tokio-uring reads into an owned buffer from its start (BytesMut would
    // need tokio-uring's `bytes` feature), so read into a staging Vec and
    // append: one memcpy per read, small next to the syscall it replaces.
    let mut chunk: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    loop {
        if conn.drain(&mut buf, &mut stop).await == ReadStep::Stop {
            break;
        }
        chunk.clear();
        let (read, back) = tokio::select! {
            biased;
            // The staging buffer goes with the cancelled read; it is freed
            // when the ring gives it back.
            () = wait_shutdown(&mut stop) => {
                wipe(&mut buf);
                return;
            }
            r = stream.read(chunk) => r,
        };
        chunk = back;
        match read {
            Ok(0) => {
                conn.eof(&buf);
                break;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                tracing::debug!(peer = ?conn.peer(), error = %e, "read failed; closing the connection");
                break;
            }
        }
    }
    wipe(&mut buf);
    chunk.zeroize();
}

async fn write_loop(stream: &UnixStream, mut queue: WriteQueue) -> io::Result<()> {
    while let Some(chunk) = queue.next().await {
        match chunk {
            Chunk::Gathered => {
                // tokio-uring writes owned buffers: lend the gather buffer
                // to the ring and take it back.
                let buf = std::mem::take(&mut queue.buf);
                let (r, buf) = stream.write_all(buf).await;
                queue.buf = buf;
                queue.written();
                r?;
            }
            Chunk::Large(mut o) => {
                let frame = std::mem::take(&mut o.frame);
                let (r, mut frame) = stream.write_all(frame).await;
                frame.zeroize();
                r?;
            }
        }
    }
    Ok(())
}
