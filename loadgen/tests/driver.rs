//! The load generator's own logic against a real Unix socket and a small
//! protocol server that stalls on purpose: the open loop's schedule, and
//! coordinated-omission accounting (a stall is charged to every request it
//! delayed, not only to the one that met it).

use flatbuffers::FlatBufferBuilder;
use kms_loadgen::driver::{self, RunOptions, Target};
use kms_loadgen::run::LoadModel;
use kms_loadgen::workload::{FramePool, Mix, Popularity, Prepared, WorkloadSpec};
use kms_proto::*;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A protocol server answering GenerateRandom; when `stall_at` is set, the
/// first frame read after that instant makes it sleep for `stall`.
struct StallServer {
    path: PathBuf,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    _dir: tempfile::TempDir,
}

impl StallServer {
    fn start(stall_at: Option<Instant>, stall: Duration) -> StallServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stall.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stalled = Arc::new(AtomicBool::new(false));
        {
            let arrivals = Arc::clone(&arrivals);
            std::thread::spawn(move || {
                for s in listener.incoming() {
                    let (arrivals, stalled) = (Arc::clone(&arrivals), Arc::clone(&stalled));
                    let s = s.unwrap();
                    std::thread::spawn(move || serve(s, stall_at, stall, &stalled, &arrivals));
                }
            });
        }
        StallServer {
            path,
            arrivals,
            _dir: dir,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

fn serve(
    mut s: UnixStream,
    stall_at: Option<Instant>,
    stall: Duration,
    stalled: &AtomicBool,
    arrivals: &Mutex<Vec<Instant>>,
) {
    let mut fbb = FlatBufferBuilder::new();
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        if s.read_exact(&mut frame).is_err() {
            return;
        }
        let now = Instant::now();
        arrivals.lock().unwrap().push(now);
        if let Some(at) = stall_at {
            if now >= at && !stalled.swap(true, Ordering::SeqCst) {
                std::thread::sleep(stall);
            }
        }
        let req = decode_request(&frame, &DecodeLimits::default()).unwrap();
        let mut out = Vec::new();
        encode_response(
            &mut fbb,
            &Response {
                request_id: req.request_id,
                body: ResponseBody::Single(Ok(Output::GenerateRandom(GenerateRandomOutput {
                    plaintext: SecretBytes::from_slice(&[7; 32]),
                }))),
            },
            &mut out,
        );
        if s.write_all(&out).is_err() {
            return;
        }
    }
}

fn pool() -> FramePool {
    let spec = WorkloadSpec {
        mix: Mix::parse("generate-random").unwrap(),
        payload_size: 32,
        keys: 1,
        popularity: Popularity::Uniform,
        context_pairs: 0,
        batch: 1,
        blobs_per_key: 0,
        seed: 1,
        hsm_keys: false,
        by_alias: false,
    };
    FramePool::build(&spec, &Prepared::synthetic(&spec)).unwrap()
}

const WARMUP: Duration = Duration::from_millis(200);
const WINDOW: Duration = Duration::from_secs(1);
const STALL: Duration = Duration::from_millis(200);

fn options(model: LoadModel) -> RunOptions {
    RunOptions {
        model,
        warmup: WARMUP,
        duration: WINDOW,
        progress: false,
        target_pid: None,
    }
}

#[test]
fn open_loop_sends_on_schedule_and_answers_every_request() {
    let server = StallServer::start(None, Duration::ZERO);
    let rate = 2000.0;
    let start = Instant::now();
    let r = driver::run(
        Target::Daemon(server.path()),
        &pool(),
        "schedule",
        &options(LoadModel::Open {
            connections: 1,
            rate,
        }),
    )
    .unwrap();
    // Requests whose intended time falls in the 1 s window: rate of them.
    let expected = rate * WINDOW.as_secs_f64();
    assert!(
        (r.requests as f64 - expected).abs() <= 0.02 * expected,
        "{} requests measured, expected {expected}",
        r.requests
    );
    assert_eq!(r.error_count(), 0);
    // Sent spread over time, not in one burst: of the window's ten 100 ms
    // slices, at least eight got requests and none more than half of them.
    // Not "each slice near rate/10": the machine is shared, a writer the
    // scheduler stalls for a slice or two catches up in a burst by design,
    // and that bound failed on a loaded CI run (63 in one slice) without
    // anything being wrong.
    let arrivals = server.arrivals.lock().unwrap().clone();
    let window_start = start + WARMUP;
    let slices: Vec<usize> = (0..10)
        .map(|slice| {
            let from = window_start + Duration::from_millis(100 * slice);
            let to = from + Duration::from_millis(100);
            arrivals.iter().filter(|t| **t >= from && **t < to).count()
        })
        .collect();
    let total: usize = slices.iter().sum();
    assert!(
        slices.iter().filter(|&&n| n > 0).count() >= 8,
        "requests arrived in bursts: {slices:?} per 100 ms"
    );
    assert!(
        slices.iter().all(|&n| 2 * n <= total),
        "one slice holds most requests: {slices:?} per 100 ms"
    );
}

#[test]
fn open_loop_charges_a_stall_to_every_request_it_delayed() {
    let start = Instant::now();
    let server = StallServer::start(Some(start + WARMUP + Duration::from_millis(300)), STALL);
    let rate = 1000.0;
    let r = driver::run(
        Target::Daemon(server.path()),
        &pool(),
        "stall",
        &options(LoadModel::Open {
            connections: 1,
            rate,
        }),
    )
    .unwrap();
    // A 200 ms stall at 1000 requests/s delays about 200 requests by 0 to
    // 200 ms: about 100 of them by more than 100 ms. Measured from the
    // actual send time, only the request that met the stall would show it.
    let over_100ms = r
        .latency
        .count_between(100_000_000, r.latency.max().max(100_000_000));
    assert!(
        over_100ms >= 60,
        "only {over_100ms} of {} requests charged with the stall",
        r.requests
    );
    assert!(r.latency.max() >= 190_000_000, "max {} ns", r.latency.max());
    assert_eq!(r.error_count(), 0);
}

#[test]
fn closed_loop_sees_the_same_stall_only_once_per_slot() {
    let start = Instant::now();
    let server = StallServer::start(Some(start + WARMUP + Duration::from_millis(300)), STALL);
    let r = driver::run(
        Target::Daemon(server.path()),
        &pool(),
        "closed stall",
        &options(LoadModel::Closed {
            connections: 1,
            pipeline: 1,
        }),
    )
    .unwrap();
    // The closed loop waits with the daemon: the stall appears as one slow
    // request (why the gate's latency figure comes from the open loop).
    let over_100ms = r
        .latency
        .count_between(100_000_000, r.latency.max().max(100_000_000));
    assert_eq!(over_100ms, 1, "closed loop latency histogram");
    assert!(r.requests > 100);
}

#[test]
fn errors_are_counted_by_exception_name_per_item() {
    // Synthetic keys and blobs the service has never seen: every
    // GenerateDataKey is NotFoundException, every Decrypt
    // InvalidCiphertextException, each item counted in its batch.
    let (svc, _dir) = kms_loadgen::inprocess::open_service().unwrap();
    let spec = WorkloadSpec {
        mix: Mix::parse("generate-data-key=1,decrypt=1").unwrap(),
        payload_size: 32,
        keys: 4,
        popularity: Popularity::Uniform,
        context_pairs: 1,
        batch: 4,
        blobs_per_key: 1,
        seed: 3,
        hsm_keys: false,
        by_alias: false,
    };
    let pool = FramePool::build(&spec, &Prepared::synthetic(&spec)).unwrap();
    let mut o = options(LoadModel::Closed {
        connections: 1,
        pipeline: 1,
    });
    o.duration = Duration::from_millis(300);
    let r = driver::run(Target::InProcess(&svc), &pool, "errors", &o).unwrap();
    assert!(r.operations > 0);
    assert_eq!(r.operations, 4 * r.requests);
    let nf = r.errors.get("NotFoundException").copied().unwrap_or(0);
    let ic = r
        .errors
        .get("InvalidCiphertextException")
        .copied()
        .unwrap_or(0);
    assert!(nf > 0 && ic > 0, "{:?}", r.errors);
    assert_eq!(nf + ic, r.operations, "{:?}", r.errors);
}

#[test]
fn by_alias_runs_name_keys_by_alias_and_succeed() {
    // In-process: the run creates an alias per key and every frame names
    // its key by alias.
    let spec = WorkloadSpec {
        mix: Mix::parse("generate-data-key=1,decrypt=1").unwrap(),
        payload_size: 32,
        keys: 3,
        popularity: Popularity::Uniform,
        context_pairs: 1,
        batch: 4,
        blobs_per_key: 1,
        seed: 5,
        hsm_keys: false,
        by_alias: true,
    };
    assert!(spec.describe().ends_with("by-alias"), "{}", spec.describe());
    let synthetic = Prepared::synthetic(&spec);
    assert!(synthetic
        .key_ids
        .iter()
        .all(|k| k.starts_with("alias/kms-loadgen/")));
    let pool = FramePool::build(&spec, &synthetic).unwrap();
    let req = kms_proto::decode_request(&pool.frame(0)[4..], &Default::default()).unwrap();
    let RequestBody::Batch(items) = req.body else {
        panic!("a batch")
    };
    assert!(items.iter().any(|i| matches!(
        i,
        Ok(Operation::GenerateDataKey(g)) if g.key_id.starts_with("alias/")
    )));
    let mut o = options(LoadModel::Closed {
        connections: 1,
        pipeline: 2,
    });
    o.duration = Duration::from_millis(300);
    let r = kms_loadgen::inprocess::run(&spec, &o, "by alias").unwrap();
    assert!(r.operations > 0);
    assert_eq!(r.error_count(), 0, "{:?}", r.errors);
}

#[test]
fn garbage_answers_fail_the_run_loudly() {
    // The echo server is not a KMS: its answers are requests, which the
    // tally refuses, so a daemon target pointed at it fails with a clear
    // error instead of counting nonsense.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let p = path.clone();
    std::thread::spawn(move || kms_loadgen::echo::serve(&p));
    while UnixStream::connect(&path).is_err() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = driver::run(
        Target::Daemon(&path),
        &pool(),
        "echo as daemon",
        &options(LoadModel::Closed {
            connections: 1,
            pipeline: 4,
        }),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bad answer"), "{err:#}");
}
