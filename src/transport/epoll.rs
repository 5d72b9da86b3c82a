//! The epoll engine: a tokio multi-thread runtime with `io_threads` workers,
//! one task per connection (reader and writer over the stream's halves).

use super::{
    accept_loop, run_both, wipe, Chunk, Conn, ReadStep, Shared, Shutdown, WriteQueue, READ_CHUNK,
};
use bytes::BytesMut;
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
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(io_threads)
        .thread_name("kmsd-io")
        .enable_all()
        .build()?;
    listener.set_nonblocking(true)?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        accept_loop(
            listener,
            &shared,
            shutdown.clone(),
            |stream, peer, guard| {
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connection(stream, &shared, peer, shutdown).await;
                    drop(guard);
                });
            },
        )
        .await;
        shared.drain().await;
        Ok::<_, io::Error>(())
    })?;
    // Drops the tasks of connections that outlived the grace period, which
    // closes their sockets.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn connection(
    mut stream: UnixStream,
    shared: &Shared,
    peer: crate::dispatch::Peer,
    shutdown: Shutdown,
) {
    let (conn, queue) = Conn::new(shared, peer);
    let (rd, wr) = stream.split();
    run_both(peer, read_loop(rd, conn, shutdown), write_loop(wr, queue)).await;
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
