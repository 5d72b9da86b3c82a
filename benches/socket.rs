//! End to end over the real socket: GenerateDataKey (32 bytes) pipelined,
//! single operations and batches, on both I/O engines, inline dispatch on and
//! off, against the same frames handled in-process (the ratio is the figure
//! that matters on a shared 2-core machine).
//!
//! `cargo bench --bench socket` (env: KMSD_BENCH_SECS per run, default 3).

use flatbuffers::FlatBufferBuilder;
use kms_proto::client::Client;
use kms_proto::*;
use kmsd::config::{Config, IoMode};
use kmsd::crypto::KeyMaterial;
use kmsd::dispatch::Dispatcher;
use kmsd::identity::Identity;
use kmsd::root::FileRoot;
use kmsd::service::Service;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Shape {
    name: &'static str,
    batch: usize,
    window: usize,
    connections: usize,
}

const SHAPES: [Shape; 3] = [
    Shape {
        name: "single, W=1, 1 conn",
        batch: 1,
        window: 1,
        connections: 1,
    },
    Shape {
        name: "single, W=256, 2 conns",
        batch: 1,
        window: 256,
        connections: 2,
    },
    Shape {
        name: "batch 64, W=16, 2 conns",
        batch: 64,
        window: 16,
        connections: 2,
    },
];

fn ops<'a>(key: &'a str, n: usize) -> Vec<Operation<'a>> {
    (0..n)
        .map(|_| {
            Operation::GenerateDataKey(GenerateDataKey {
                key_id: key,
                number_of_bytes: Some(32),
                key_spec: None,
                context: vec![("tenant", "acme")],
                ..Default::default()
            })
        })
        .collect()
}

fn send(c: &mut Client, key: &str, batch: usize) {
    if batch == 1 {
        c.send(ops(key, 1).pop().unwrap());
    } else {
        c.send_batch(ops(key, batch));
    }
}

/// Runs one client shape against `socket` for `secs`; returns items/s.
fn drive(socket: &std::path::Path, key: &str, shape: &Shape, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..shape.connections {
            let (stop, total) = (Arc::clone(&stop), Arc::clone(&total));
            s.spawn(move || {
                let mut c = Client::connect(socket).unwrap();
                for _ in 0..shape.window {
                    send(&mut c, key, shape.batch);
                }
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let r = c.recv().unwrap();
                    if let ResponseBody::Error(e) = r.body {
                        panic!("{e}");
                    }
                    done += shape.batch as u64;
                    send(&mut c, key, shape.batch);
                }
                for _ in 0..shape.window {
                    c.recv().unwrap();
                }
                total.fetch_add(done, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    total.load(Ordering::Relaxed) as f64 / secs
}

/// The same frames through `kmsd::wire::handle_frame` on one thread.
fn in_process(svc: &Service, key: &str, batch: usize, secs: f64) -> f64 {
    let body = if batch == 1 {
        RequestBody::Single(Ok(ops(key, 1).pop().unwrap()))
    } else {
        RequestBody::Batch(ops(key, batch).into_iter().map(Ok).collect())
    };
    let mut frame = Vec::new();
    encode_request(
        &mut FlatBufferBuilder::new(),
        &Request {
            request_id: 1,
            body,
        },
        &mut frame,
    );
    let peer = Identity::local(0, 0, 0);
    let start = Instant::now();
    let mut n = 0u64;
    let mut out = Vec::new();
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            out.clear();
            kmsd::wire::handle_frame(svc, &frame[4..], &peer, &mut out);
        }
        n += 64 * batch as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let secs: f64 = std::env::var("KMSD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut engines = vec![(IoMode::Epoll, "epoll")];
    if kmsd::transport::uring_available() {
        engines.push((IoMode::Uring, "io_uring"));
    }
    println!("GenerateDataKey 32 B, {secs} s per run; items/s (ratio to in-process on one thread)");
    for (io, io_name) in engines {
        for inline in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config {
                socket: dir.path().join("kmsd.sock"),
                data_dir: dir.path().join("data"),
                ..Config::default()
            };
            config.transport.io = io;
            config.dispatch.inline_small = inline;
            std::fs::create_dir_all(&config.data_dir).unwrap();
            let root = Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([1; 32])));
            let svc = Arc::new(
                Service::open(&config.data_dir, root, config.decode_limits(), 10).unwrap(),
            );
            let key = match svc
                .call(
                    &Operation::CreateKey(CreateKey::default()),
                    &Identity::local(0, 0, 0),
                )
                .unwrap()
            {
                Output::CreateKey(m) => m.key_id,
                _ => unreachable!(),
            };
            let dispatcher = Arc::new(Dispatcher::new(Arc::clone(&svc), &config.dispatch).unwrap());
            let (tx, rx) = tokio::sync::watch::channel(false);
            let server = {
                let config = config.clone();
                std::thread::spawn(move || {
                    kmsd::transport::serve(
                        &config.socket,
                        &config.transport,
                        dispatcher,
                        config.limits.max_frame_bytes,
                        rx,
                    )
                    .unwrap()
                })
            };
            while Client::connect(&config.socket).is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
            for shape in &SHAPES {
                let daemon = drive(&config.socket, &key, shape, secs);
                let baseline = in_process(&svc, &key, shape.batch, secs.min(1.0));
                println!(
                    "{io_name:8} inline={inline:5} {:26} {:>10.0}/s  in-process {:>10.0}/s  ratio {:.2}",
                    shape.name,
                    daemon,
                    baseline,
                    daemon / baseline
                );
            }
            tx.send(true).unwrap();
            server.join().unwrap();
        }
    }
}
