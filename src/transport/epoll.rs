//! The epoll engine: one single-threaded tokio runtime per I/O thread
//! (thread per core, `threads.rs`), one task per connection (reader and
//! writer over the stream's halves).

use super::threads::{self, serve_handoffs, Blocking, Handoff, Handoffs, Ready};
use super::{run_both, wipe, Chunk, Conn, ReadStep, Shared, Shutdown, WriteQueue, READ_CHUNK};
use bytes::BytesMut;
use std::io;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

/// Serves `listener` until `shutdown`, then drains (see [`super::serve`]).
pub(super) fn run(
    listener: UnixListener,
    io_threads: usize,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> io::Result<()> {
    threads::run(
        "io",
        listener,
        io_threads,
        shared,
        shutdown,
        Blocking::NonBlocking,
        io_thread,
    )
}

fn io_thread(rx: Handoffs, shared: Arc<Shared>, stop: Shutdown, ready: Ready) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Some(rt) = threads::started(runtime, &ready) else {
        return;
    };
    rt.block_on(serve_handoffs(rx, shared, stop, |h, shared, stop| {
        tokio::spawn(connection(h, shared, stop));
    }));
    // Dropping the runtime drops the tasks of connections that outlived the
    // grace period, which closes their sockets.
    drop(rt);
}

async fn connection(h: Handoff, shared: Arc<Shared>, shutdown: Shutdown) {
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
    let (conn, queue) = Conn::new(&shared, peer);
    let (rd, wr) = stream.split();
    run_both(peer, read_loop(rd, conn, shutdown), write_loop(wr, queue)).await;
    drop(stream);
    drop(guard);
}

async fn read_loop(mut rd: ReadHalf<'_>, conn: Conn, mut shutdown: Shutdown) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if conn.drain(&mut buf, &mut shutdown).await == ReadStep::Stop {
            break;
        }
        // The decoder reserves room for a large frame's remainder itself;
        // this keeps small reads from shrinking to a few bytes each.
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = super::wait_shutdown(&mut shutdown) => break,
            r = rd.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => {
                conn.eof(&buf);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = ?conn.peer(), error = %e, "read failed; closing the connection");
                break;
            }
        }
    }
    wipe(&mut buf);
    // `conn` (and its sender) drops here: the writer finishes once every
    // in-flight answer is written.
}

async fn write_loop(mut wr: WriteHalf<'_>, mut queue: WriteQueue) -> io::Result<()> {
    while let Some(chunk) = queue.next().await {
        match chunk {
            Chunk::Gathered => {
                let r = wr.write_all(&queue.buf).await;
                queue.written();
                r?;
            }
            // Outgoing zeroizes its own frame when dropped.
            Chunk::Large(o) => wr.write_all(&o.frame).await?,
        }
    }
    Ok(())
}
