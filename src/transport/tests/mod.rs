//! The transport's tests: end to end over a real socket, with a real
//! dispatcher and service, on every engine this machine can run. This file
//! holds the harness (a server on its own thread, raw connections, request
//! frames, floods); the tests live in one file per theme.

mod budgets;
mod connections;
mod deadlines;
mod engines;
mod framing;
mod shutdown;
mod thread_roles;
mod write_queue;

use super::{serve, uring_available, Engine};
use crate::config::{DispatchConfig, IoMode, TransportConfig};
use crate::dispatch::Dispatcher;
use crate::identity::Identity;
use crate::service::Service;
use bytes::BytesMut;
use kms_proto::client::Client;
use kms_proto::frame::{FrameDecoder, DEFAULT_MAX_FRAME};
use kms_proto::{Operation, Response};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_FRAME: usize = 64 * 1024;

fn engines() -> Vec<IoMode> {
    let mut v = vec![IoMode::Epoll];
    if uring_available() {
        v.push(IoMode::Uring);
    }
    v
}

fn expected(io: IoMode) -> Engine {
    match io {
        IoMode::Uring => Engine::Uring,
        _ => Engine::Epoll,
    }
}

struct Server {
    socket: PathBuf,
    dispatcher: Arc<Dispatcher>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<io::Result<Engine>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(io: IoMode, tweak: impl FnOnce(&mut TransportConfig)) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), io, 0, tweak)
    }

    /// A server whose store holds `keys` keys.
    fn start_with_keys(
        io: IoMode,
        keys: usize,
        tweak: impl FnOnce(&mut TransportConfig),
    ) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), io, keys, tweak)
    }

    /// A server whose socket every uid can reach (mode 0o666 in
    /// directories of mode 0o711), for tests with a second uid.
    fn start_for_all(io: IoMode, tweak: impl FnOnce(&mut TransportConfig)) -> Server {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let traverse = || std::fs::Permissions::from_mode(0o711);
        std::fs::set_permissions(dir.path(), traverse()).unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::set_permissions(dir.path().join("run"), traverse()).unwrap();
        Server::start_in(dir, io, 0, |c| {
            c.socket_mode = 0o666;
            tweak(c);
        })
    }

    fn start_in(
        dir: tempfile::TempDir,
        io: IoMode,
        keys: usize,
        tweak: impl FnOnce(&mut TransportConfig),
    ) -> Server {
        let socket = dir.path().join("run/kmsd.sock");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut config = TransportConfig {
            io,
            io_threads: 2,
            ..TransportConfig::default()
        };
        tweak(&mut config);
        let root = Arc::new(crate::root::FileRoot::from_key(
            crate::crypto::KeyMaterial::from_bytes([7; 32]),
        ));
        let limits = kms_proto::DecodeLimits {
            max_frame: MAX_FRAME,
            ..kms_proto::DecodeLimits::default()
        };
        let service = Arc::new(Service::open(&data, root, limits, 1000).unwrap());
        for _ in 0..keys {
            service
                .call(
                    &Operation::CreateKey(kms_proto::CreateKey::default()),
                    &Identity::local(0, 0, 0),
                )
                .unwrap();
        }
        let dispatch = DispatchConfig {
            queue_capacity: 1024,
            workers: 1,
            inline_small: true,
            control_threads: 2,
        };
        let dispatcher = Arc::new(Dispatcher::new(service, &dispatch).unwrap());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let path = socket.clone();
        let d = Arc::clone(&dispatcher);
        let thread = std::thread::spawn(move || serve(&path, &config, d, MAX_FRAME, rx));
        // bind() listens at once, so the file's existence means
        // connections will be queued; no probe connection is needed
        // (it would count against max_connections).
        let start = Instant::now();
        while !socket.exists() {
            assert!(!thread.is_finished(), "serve returned early");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Server {
            socket,
            dispatcher,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        let c = Client::connect(&self.socket).unwrap();
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        c
    }

    fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Requests shutdown and waits for serve to return.
    fn shutdown(mut self) -> (io::Result<Engine>, Duration) {
        let start = Instant::now();
        self.stop.send(true).unwrap();
        let r = self.thread.take().unwrap().join().unwrap();
        (r, start.elapsed())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one response frame off a raw stream; `None` on EOF.
fn read_response(s: &mut UnixStream, buf: &mut BytesMut) -> Option<Response> {
    let dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    loop {
        if let Some(frame) = dec.decode(buf).unwrap() {
            return Some(kms_proto::decode_response(&frame, DEFAULT_MAX_FRAME).unwrap());
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the server closed with unread input.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn random_request(id: u64, n: u32, out: &mut Vec<u8>) {
    let req = kms_proto::Request {
        request_id: id,
        body: kms_proto::RequestBody::Single(Ok(Operation::GenerateRandom(
            kms_proto::GenerateRandom { number_of_bytes: n },
        ))),
    };
    kms_proto::codec::encode_request(&mut flatbuffers::FlatBufferBuilder::new(), &req, out);
}

/// A connection that has sent 2,000 GenerateRandom(1024), about 2 MiB of
/// answers, and reads none of them.
fn flood_unread(server: &Server) -> UnixStream {
    let mut s = server.raw();
    let mut frames = Vec::new();
    for id in 1..=2000 {
        random_request(id, 1024, &mut frames);
    }
    s.write_all(&frames).unwrap();
    s
}

/// A batch of `items` GenerateRandom(1024): a small request whose
/// answer is about 1.3 KiB per item (bound: about 1.8 KiB per item).
fn random_batch(id: u64, items: usize, out: &mut Vec<u8>) {
    let req = kms_proto::Request {
        request_id: id,
        body: kms_proto::RequestBody::Batch(
            (0..items)
                .map(|_| {
                    Ok(Operation::GenerateRandom(kms_proto::GenerateRandom {
                        number_of_bytes: 1024,
                    }))
                })
                .collect(),
        ),
    };
    kms_proto::codec::encode_request(&mut flatbuffers::FlatBufferBuilder::new(), &req, out);
}

/// Writes `frame` over and over on a non-blocking `s` without reading
/// anything, until `limit` bytes are sent or the daemon has taken
/// nothing for 2 s; returns the bytes sent. (The daemon reads a chunk of
/// frames and runs them all before it reads again: in a debug build 40
/// batches of random bytes take about half a second.)
fn flood(s: &UnixStream, frame: &[u8], limit: usize) -> usize {
    let mut s = s.try_clone().unwrap();
    s.set_nonblocking(true).unwrap();
    let batch: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * (256 * 1024 / frame.len()).max(1))
        .collect();
    let (mut sent, mut pos) = (0usize, 0usize);
    let mut last_progress = Instant::now();
    while sent < limit && last_progress.elapsed() < Duration::from_secs(2) {
        match s.write(&batch[pos..]) {
            Ok(n) => {
                sent += n;
                pos = (pos + n) % batch.len();
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    // The clone shares the file description, and so its mode.
    s.set_nonblocking(false).unwrap();
    sent
}

/// Waits (at most 20 s) until the daemon has closed its end of `s`,
/// without reading: answers may still be queued unread.
fn wait_closed_by_daemon(s: &UnixStream) -> bool {
    closed_within(s, 20)
}

/// Whether the daemon closes its end of `s` within `secs` seconds.
fn closed_within(s: &UnixStream, secs: i64) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(s, PollFlags::RDHUP)];
    let timeout = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    poll(&mut fds, Some(&timeout)).unwrap() == 1
        && fds[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP)
}
