//! The io_uring engine: tokio-uring 0.5, one single-threaded runtime per I/O
//! thread.
//!
//! tokio-uring's own `UnixListener::bind` fails with EOPNOTSUPP on Linux
//! 6.12.9 and later (it sets SO_REUSEPORT, which the kernel now refuses on
//! AF_UNIX; tokio-rs/tokio-uring#323). So connections are accepted by a
//! tokio listener on the calling thread, SO_PEERCRED is read there
//! (tokio-uring has no accessor), and each stream is handed round-robin to
//! one of the I/O threads, which adopts it with `UnixStream::from_std`.

use super::{
    accept_loop, run_both, wait_shutdown, wipe, Chunk, Conn, ConnGuard, ReadStep, Shared, Shutdown,
    WriteQueue, READ_CHUNK,
};
use crate::dispatch::Peer;
use bytes::BytesMut;
use std::io;
use std::os::unix::net::{UnixListener, UnixStream as StdStream};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, watch};
use tokio_uring::net::UnixStream;
use zeroize::Zeroize;

/// A connection on its way from the acceptor to an I/O thread.
struct Handoff {
    stream: StdStream,
    peer: Peer,
    guard: ConnGuard,
}

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
    // The I/O threads follow an internal stop signal rather than the
    // caller's, so that a failed start can stop the threads already running.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut senders = Vec::with_capacity(io_threads);
    let mut threads = Vec::with_capacity(io_threads);
    for i in 0..io_threads {
        let (tx, rx) = mpsc::unbounded_channel();
        let (shared, stop_rx, ready) = (Arc::clone(&shared), stop_rx.clone(), ready_tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("kmsd-io-{i}"))
            .spawn(move || io_thread(rx, shared, stop_rx, ready));
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
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop(stop_tx, threads);
                return Err(io::Error::new(
                    e.kind(),
                    format!("starting an io_uring thread: {e}"),
                ));
            }
            Err(_) => {
                stop(stop_tx, threads);
                return Err(io::Error::other("an io_uring thread died while starting"));
            }
        }
    }

    let accepted = accept_on_this_thread(listener, &shared, shutdown, senders);
    // Stop reading everywhere (this is also how a failed acceptor stops the
    // threads); each thread drains its connections within the grace period.
    stop(stop_tx, threads);
    accepted
}

/// Signals the I/O threads to stop and waits for them.
fn stop(stop_tx: watch::Sender<bool>, threads: Vec<std::thread::JoinHandle<()>>) {
    let _ = stop_tx.send(true);
    for t in threads {
        if t.join().is_err() {
            tracing::error!("an io_uring thread panicked");
        }
    }
}

fn accept_on_this_thread(
    listener: UnixListener,
    shared: &Shared,
    shutdown: Shutdown,
    senders: Vec<mpsc::UnboundedSender<Handoff>>,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    listener.set_nonblocking(true)?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let mut next = 0usize;
        accept_loop(listener, shared, shutdown, |stream, peer, guard| {
            let stream = match stream.into_std() {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot detach an accepted stream");
                    return;
                }
            };
            // io_uring reports EAGAIN instead of waiting on O_NONBLOCK
            // sockets: the ring, not the socket, is asynchronous.
            if let Err(e) = stream.set_nonblocking(false) {
                tracing::warn!(error = %e, "cannot make an accepted stream blocking");
                return;
            }
            let handoff = Handoff {
                stream,
                peer,
                guard,
            };
            // Round robin. A thread that is gone drops the stream, which
            // closes it and uncounts it.
            let _ = senders[next % senders.len()].send(handoff);
            next = next.wrapping_add(1);
        })
        .await;
        Ok(())
    })
}

fn io_thread(
    mut rx: mpsc::UnboundedReceiver<Handoff>,
    shared: Arc<Shared>,
    stop: Shutdown,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
) {
    let rt = match tokio_uring::Runtime::new(&tokio_uring::builder()) {
        Ok(rt) => {
            let _ = ready.send(Ok(()));
            rt
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async {
        let mut stopping = stop.clone();
        loop {
            let handoff = tokio::select! {
                biased;
                () = wait_shutdown(&mut stopping) => break,
                h = rx.recv() => h,
            };
            let Some(h) = handoff else { break };
            let (shared, stop) = (Arc::clone(&shared), stop.clone());
            tokio_uring::spawn(connection(h, shared, stop));
        }
        // Connections still queued for this thread were never read: close
        // them now.
        rx.close();
        while rx.try_recv().is_ok() {}
        shared.drain().await;
    });
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
