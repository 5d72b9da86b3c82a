//! No freed block ever holds a request's or an answer's plaintext.
//!
//! A test binary of its own, the one exception to "one integration test
//! binary": its `#[global_allocator]` is process-wide, and scanning every
//! freed block would slow down and entangle every other test.
//!
//! The allocator scans each freed block for a random 32-byte sentinel. It
//! keeps the default `realloc` (allocate, copy, free), so every block a
//! reallocation leaves behind is scanned as if it had moved: a buffer that
//! grows in place today may move tomorrow. The daemon's transport runs in
//! process over a real Unix socket, on every engine this machine can run;
//! Encrypt requests carry the sentinel (single, pipelined, split across
//! reads, and a batch large enough to grow the read buffer), Decrypt answers
//! carry it back through both clients, and after everything is closed no freed
//! block may have held it. The test's own copies are zeroed before they are
//! freed (`Zeroizing`, builders sized never to grow and reset).

use kms_proto::client::Client;
use kms_proto::frame::DEFAULT_MAX_FRAME;
use kms_proto::{Encrypt, Operation, Request, RequestBody, ResponseBody};
use kmsd::config::{DispatchConfig, IoMode, TransportConfig};
use kmsd::dispatch::Dispatcher;
use kmsd::service::Service;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

static ARMED: AtomicBool = AtomicBool::new(false);
static SENTINEL: [AtomicU8; 32] = [const { AtomicU8::new(0) }; 32];
static HITS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set while reporting a hit (the report allocates).
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

struct Scanning;

// SAFETY: every call is forwarded to the system allocator unchanged; the
// scan only reads the block being freed, before it is freed.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) && !REPORTING.with(Cell::get) {
            // SAFETY: the block is live and `layout.size()` bytes long
            // until the call below frees it.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if holds_sentinel(block) {
                HITS.fetch_add(1, Ordering::Relaxed);
                REPORTING.with(|r| r.set(true));
                eprintln!(
                    "freed a block of {} bytes holding the sentinel on {:?}:\n{}",
                    layout.size(),
                    std::thread::current().name(),
                    std::backtrace::Backtrace::force_capture()
                );
                REPORTING.with(|r| r.set(false));
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Scanning = Scanning;

fn holds_sentinel(block: &[u8]) -> bool {
    if block.len() < 32 {
        return false;
    }
    let mut s = [0u8; 32];
    for (b, a) in s.iter_mut().zip(&SENTINEL) {
        *b = a.load(Ordering::Relaxed);
    }
    let found = (0..=block.len() - 32).any(|i| block[i] == s[0] && block[i..i + 32] == s);
    s.fill(0);
    found
}

/// The sentinel, on the stack (never freed from the heap).
fn sentinel() -> [u8; 32] {
    let mut s = [0u8; 32];
    for (b, a) in s.iter_mut().zip(&SENTINEL) {
        *b = a.load(Ordering::Relaxed);
    }
    s
}

/// A plaintext of `len` bytes holding the sentinel at its start and end.
fn plaintext(len: usize) -> Zeroizing<Vec<u8>> {
    assert!(len >= 64);
    let s = sentinel();
    let mut p = Zeroizing::new(Vec::with_capacity(len));
    p.extend_from_slice(&s);
    p.resize(len - 32, 0xA5);
    p.extend_from_slice(&s);
    p
}

/// Encodes a request of Encrypts of `plaintexts` under `key_id` as one
/// frame, with buffers that never grow (so that the test frees no copy).
fn encrypt_frame(
    id: u64,
    key_id: &str,
    plaintexts: &[Zeroizing<Vec<u8>>],
    batch: bool,
) -> Zeroizing<Vec<u8>> {
    let total: usize = plaintexts.iter().map(|p| p.len()).sum();
    let room = 2 * total + 64 * 1024;
    let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(room);
    let ops: Vec<Operation<'_>> = plaintexts
        .iter()
        .map(|p| {
            Operation::Encrypt(Encrypt {
                key_id,
                plaintext: &p[..],
                context: vec![("purpose", "freed-memory")],
                ..Default::default()
            })
        })
        .collect();
    let body = if batch {
        RequestBody::Batch(ops.into_iter().map(Ok).collect())
    } else {
        assert_eq!(ops.len(), 1);
        RequestBody::Single(Ok(ops.into_iter().next().unwrap()))
    };
    let mut out = Zeroizing::new(Vec::with_capacity(room));
    kms_proto::codec::encode_request(
        &mut fbb,
        &Request {
            request_id: id,
            body,
        },
        &mut out,
    );
    assert!(out.capacity() == room, "the frame buffer grew");
    // Zeroes what the builder wrote before it is freed.
    fbb.reset();
    out
}

struct Server {
    socket: std::path::PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<std::io::Result<kmsd::transport::Engine>>,
    _dir: tempfile::TempDir,
}

fn start(io: IoMode) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/kmsd.sock");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let config = TransportConfig {
        io,
        io_threads: 2,
        ..TransportConfig::default()
    };
    let root = Arc::new(kmsd::root::FileRoot::from_key(
        kmsd::crypto::KeyMaterial::from_bytes([7; 32]),
    ));
    let service =
        Arc::new(Service::open(&data, root, kms_proto::DecodeLimits::default(), 100).unwrap());
    let dispatch = DispatchConfig {
        queue_capacity: 1024,
        workers: 1,
        inline_small: true,
        control_threads: 1,
    };
    let dispatcher = Arc::new(Dispatcher::new(service, &dispatch).unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    let path = socket.clone();
    let thread = std::thread::spawn(move || {
        kmsd::transport::serve(&path, &config, dispatcher, DEFAULT_MAX_FRAME, rx)
    });
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Server {
        socket,
        stop,
        thread,
        _dir: dir,
    }
}

/// Reads `n` answers off `s` and checks each is a success.
fn read_answers(s: &mut UnixStream, n: usize) {
    for _ in 0..n {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).unwrap();
        let mut frame = Zeroizing::new(vec![0u8; u32::from_le_bytes(prefix) as usize]);
        s.read_exact(&mut frame).unwrap();
        let r = kms_proto::decode_response(&frame, DEFAULT_MAX_FRAME).unwrap();
        match r.body {
            ResponseBody::Single(Ok(_)) => {}
            ResponseBody::Batch(items) => assert!(items.iter().all(|i| i.is_ok())),
            other => panic!("{other:?}"),
        }
    }
}

fn exercise(io: IoMode) {
    let server = start(io);
    let mut admin = Client::connect(&server.socket).unwrap();
    let key_id = admin.create_key("freed memory").unwrap().key_id;
    drop(admin);

    ARMED.store(true, Ordering::SeqCst);

    // Single requests, one at a time, over the client (its buffers too),
    // and the plaintext back through Decrypt answers.
    let mut c = Client::connect(&server.socket).unwrap();
    // Sizes around the client's first builder size (4 KiB), where the
    // builder would grow after the plaintext is in.
    for len in [64, 1000, 3900, 3990, 4030, 4070, 4096] {
        let p = plaintext(len);
        let blob = c.encrypt(&key_id, &p, &[("purpose", "x")]).unwrap();
        let back = c
            .decrypt(&blob.ciphertext_blob, None, &[("purpose", "x")])
            .unwrap();
        assert_eq!(back.plaintext.expose(), &p[..]);
    }
    drop(c);

    // The async client's buffers too, with several calls in flight.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = kms_proto::async_client::AsyncClient::connect(&server.socket)
            .await
            .unwrap();
        let calls = [64, 3990, 4096].map(|len| {
            let (c, key_id) = (c.clone(), key_id.clone());
            tokio::spawn(async move {
                let p = plaintext(len);
                let blob = c.encrypt(&key_id, &p, &[]).await.unwrap();
                let back = c.decrypt(&blob.ciphertext_blob, None, &[]).await.unwrap();
                assert_eq!(back.plaintext.expose(), &p[..]);
            })
        });
        for call in calls {
            call.await.unwrap();
        }
    });
    // Its tasks end with the runtime.
    drop(rt);

    let mut s = UnixStream::connect(&server.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Pipelined: many frames in one write, answers read afterwards.
    let mut pipelined = Vec::new();
    for id in 1..=64 {
        pipelined.push(encrypt_frame(id, &key_id, &[plaintext(4096)], false));
    }
    for f in &pipelined {
        s.write_all(f).unwrap();
    }
    read_answers(&mut s, pipelined.len());
    drop(pipelined);

    // Split across reads: a frame in pieces with pauses between them (the
    // pauses only make separate reads likely; nothing depends on them).
    let f = encrypt_frame(100, &key_id, &[plaintext(4096)], false);
    for piece in f.chunks(1000) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    read_answers(&mut s, 1);
    drop(f);

    // Large: a 256-item batch of 4 KiB plaintexts (about 1 MiB), far past
    // the read buffer's first size, sent in pieces so it grows several
    // times; it runs on a worker.
    let many: Vec<_> = (0..256).map(|_| plaintext(4096)).collect();
    let f = encrypt_frame(200, &key_id, &many, true);
    for piece in f.chunks(100 * 1024) {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    read_answers(&mut s, 1);
    drop(f);
    drop(many);

    // A connection closed mid-frame leaves its half frame behind.
    let mut half = UnixStream::connect(&server.socket).unwrap();
    let f = encrypt_frame(300, &key_id, &[plaintext(4096)], false);
    half.write_all(&f[..f.len() / 2]).unwrap();
    drop(f);
    drop(half);
    drop(s);

    let _ = server.stop.send(true);
    server.thread.join().unwrap().unwrap();
    ARMED.store(false, Ordering::SeqCst);
}

#[test]
fn no_freed_block_holds_request_or_answer_plaintext() {
    let mut s = Zeroizing::new([0u8; 32]);
    rand::fill(&mut s[..]);
    for (a, b) in SENTINEL.iter().zip(s.iter()) {
        a.store(*b, Ordering::Relaxed);
    }
    let mut engines = vec![IoMode::Epoll];
    if kmsd::transport::uring_available() {
        engines.push(IoMode::Uring);
    }
    for io in engines {
        exercise(io);
        assert_eq!(
            HITS.load(Ordering::SeqCst),
            0,
            "{io:?}: freed blocks held the sentinel (backtraces above)"
        );
    }
}
