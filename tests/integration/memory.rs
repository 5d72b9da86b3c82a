//! Hostile clients against the real daemon: connections that pipeline
//! requests with large answers and never read them. The daemon's memory
//! stays under the documented bound (docs/config.md, "Memory"), a
//! well-behaved client keeps being answered throughout, and once the
//! hostile clients go, their queued work is dropped and others are served
//! at once.

use crate::support::Daemon;
use kms_proto::client::Client;
use kms_proto::{Operation, Request, RequestBody};
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Hostile connections of each kind.
const HOSTILE: usize = 1024;
/// The RSS the daemon must stay under (docs/config.md: with this test's
/// budgets, 64 MiB of requests and answer bounds in flight, plus the
/// floors, the connections' read buffers and the daemon itself).
const RSS_BOUND: u64 = 256 << 20;
/// How long each kind of hostile client keeps at it.
const PHASE: Duration = Duration::from_secs(6);
/// Longest a well-behaved client waits for one answer.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Enough descriptors for both sides of the hostile connections (kmsd
/// inherits the limit).
fn raise_nofile() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    let want = (3 * HOSTILE as u64 + 256).min(l.maximum.unwrap_or(u64::MAX));
    if l.current.is_some_and(|c| c < want) {
        l.current = Some(want);
        setrlimit(Resource::Nofile, l).expect("raising RLIMIT_NOFILE");
    }
}

fn frame(body: RequestBody<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    kms_proto::codec::encode_request(
        &mut flatbuffers::FlatBufferBuilder::new(),
        &Request {
            request_id: 1,
            body,
        },
        &mut out,
    );
    out
}

/// Connects `HOSTILE` sockets and writes `frame` on each, over and over,
/// never reading, until `stop`; then closes them all. The daemon may close
/// them first (its write deadline disconnects a client that does not read
/// its answers): a closed socket is left alone. Returns how many it closed.
fn hostile(daemon: &Daemon, frame: &[u8], stop: &AtomicBool) -> usize {
    let mut socks: Vec<(UnixStream, usize)> = (0..HOSTILE)
        .map(|_| {
            let s = UnixStream::connect(&daemon.socket).expect("hostile connect");
            s.set_nonblocking(true).unwrap();
            (s, 0)
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let mut progress = false;
        socks.retain_mut(|(s, pos)| loop {
            match s.write(&frame[*pos..]) {
                Ok(n) => {
                    progress = true;
                    *pos = (*pos + n) % frame.len();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return false
                }
                Err(e) => panic!("hostile write: {e}"),
            }
        });
        if !progress {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    HOSTILE - socks.len()
}

/// Sets `stop` when dropped, so that a failed assertion in the test's
/// thread stops the client threads instead of leaving the scope waiting
/// for them forever.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A well-behaved client's connection, made before the hostile ones (a
/// flood of connections may fill the listen backlog; that is the accept
/// path's concern, not this test's).
fn well_behaved_client(daemon: &Daemon) -> Client {
    let c = Client::connect(&daemon.socket).unwrap();
    c.stream().set_read_timeout(Some(ANSWER_DEADLINE)).unwrap();
    c.stream().set_write_timeout(Some(ANSWER_DEADLINE)).unwrap();
    c
}

/// A well-behaved client doing every kind of request, one at a time, until
/// `stop`; every answer within [`ANSWER_DEADLINE`]. Counts its rounds.
fn well_behaved(mut c: Client, daemon: &Daemon, key: &str, stop: &AtomicBool, rounds: &AtomicU64) {
    while !stop.load(Ordering::Relaxed) {
        round(&mut c, key, daemon);
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

fn round(c: &mut Client, key: &str, daemon: &Daemon) {
    let fail = |what: &str, e: &dyn std::fmt::Debug| -> ! {
        panic!("well-behaved {what}: {e:?}; log:\n{}", daemon.log())
    };
    let r = c
        .generate_random(32)
        .unwrap_or_else(|e| fail("GenerateRandom", &e));
    assert_eq!(r.expose().len(), 32);
    let blob = c
        .encrypt(key, b"hello", &[])
        .unwrap_or_else(|e| fail("Encrypt", &e));
    let pt = c
        .decrypt(&blob.ciphertext_blob, None, &[])
        .unwrap_or_else(|e| fail("Decrypt", &e));
    assert_eq!(pt.plaintext.expose(), b"hello");
    let page = c
        .list_keys(10, None)
        .unwrap_or_else(|e| fail("ListKeys", &e));
    assert!(!page.keys.is_empty());
    c.describe_key(key)
        .unwrap_or_else(|e| fail("DescribeKey", &e));
}

/// A daemon for one kind of hostile client: 1,000 keys (so that a
/// ListKeys(Limit 1000) is a full page), and the key the clients use.
fn daemon() -> (Daemon, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kmsd.toml");
    std::fs::write(
        &config,
        "[transport]\nmax_connections = 4096\ntotal_budget_bytes = 33554432\n\
         max_connections_per_uid = 4096\nio_threads = 2\n\n[dispatch]\nworkers = 2\n",
    )
    .unwrap();
    let daemon = Daemon::start(&["--config", config.to_str().unwrap()]);
    let mut c = daemon.client();
    let key = c.create_key("").unwrap().key_id;
    for _ in 0..4 {
        let ops = (0..250)
            .map(|_| Operation::CreateKey(kms_proto::CreateKey::default()))
            .collect();
        let created = c.batch(ops).unwrap();
        assert!(created.iter().all(Result::is_ok), "{created:?}");
    }
    (daemon, key, dir)
}

/// Runs `HOSTILE` connections sending `frame` (made for the daemon's key)
/// against a fresh daemon for [`PHASE`], with a well-behaved client
/// alongside; checks the RSS bound and that the well-behaved client is
/// answered throughout and at once after the hostile ones have gone.
fn hostile_kind(kind: &str, make: impl Fn(&str) -> Vec<u8>) {
    raise_nofile();
    let (daemon, key, _dir) = daemon();
    let pid = daemon.pid().unwrap();
    let frame = make(&key);
    let mut peak = vm_rss(pid);
    let stop = AtomicBool::new(false);
    let rounds = AtomicU64::new(0);
    let mut closed = 0;
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        let mut good = well_behaved_client(&daemon);
        round(&mut good, &key, &daemon);
        let good = scope.spawn(|| well_behaved(good, &daemon, &key, &stop, &rounds));
        let flood = scope.spawn(|| hostile(&daemon, &frame, &stop));
        let end = Instant::now() + PHASE;
        while Instant::now() < end {
            assert!(
                !flood.is_finished() && !good.is_finished(),
                "{kind}: a client thread failed"
            );
            peak = peak.max(vm_rss(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        closed = flood.join().expect("hostile clients");
        good.join().expect("the well-behaved client");
    });
    let rounds = rounds.load(Ordering::Relaxed);
    eprintln!(
        "{kind}: peak VmRSS {} MiB, well-behaved rounds {rounds}, \
         hostile connections closed by the daemon {closed}",
        peak >> 20
    );
    assert!(
        rounds > 0,
        "{kind}: the well-behaved client was never answered"
    );
    assert!(
        peak < RSS_BOUND,
        "{kind}: the daemon grew to {} MiB (bound {} MiB)",
        peak >> 20,
        RSS_BOUND >> 20
    );
    // The hostile clients are gone (closed when their thread ended): their
    // queued work is dropped and others are served at once.
    round(&mut well_behaved_client(&daemon), &key, &daemon);
    assert!(daemon.is_running());
}

#[test]
fn hostile_generate_data_key_batches_that_are_never_read() {
    // 1,024 GenerateDataKey(NumberOfBytes 1024) per frame: about 2.3 MB of
    // answer for 75 KB of request.
    hostile_kind("GenerateDataKey", |key| {
        frame(RequestBody::Batch(
            (0..1024)
                .map(|_| {
                    Ok(Operation::GenerateDataKey(kms_proto::GenerateDataKey {
                        key_id: key,
                        number_of_bytes: Some(1024),
                        key_spec: None,
                        context: vec![],
                        ..Default::default()
                    }))
                })
                .collect(),
        ))
    });
}

#[test]
fn hostile_list_keys_batches_that_are_never_read() {
    // 1,024 ListKeys(Limit 1000) over 1,000 keys per 24 KB frame: 127 MB of
    // answer before answers were bounded.
    hostile_kind("ListKeys", |_| {
        frame(RequestBody::Batch(
            (0..1024)
                .map(|_| {
                    Ok(Operation::ListKeys(kms_proto::ListKeys {
                        limit: 1000,
                        marker: None,
                    }))
                })
                .collect(),
        ))
    });
}
