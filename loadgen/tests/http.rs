//! `--protocol http` end to end: short runs of the HTTP API's workloads
//! against a spawned kmsd (the real binary), through the library and
//! through the `kms-loadgen` command.

use kms_loadgen::driver::{self, RunOptions};
use kms_loadgen::http::{HttpClient, HttpPool};
use kms_loadgen::run::{LoadModel, Protocol, TargetKind};
use kms_loadgen::target::Spawned;
use kms_loadgen::workload::{Mix, Popularity, Prepared, WorkloadSpec};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The kmsd binary of this build's target directory and profile, built
/// (once per test process) if missing or stale.
///
/// kmsd is another package of the workspace, and Cargo defines
/// `CARGO_BIN_EXE_<name>` only for the package under test, so this builds
/// it as `tests/integration/support.rs` builds kmsctl: `cargo build` is a
/// no-op when the binary is fresh. With `--all-features`, as
/// `scripts/test.sh` builds it, so that the binary the daemon's own tests
/// run is never replaced by one with fewer features.
fn kmsd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let me = Path::new(env!("CARGO_BIN_EXE_kms-loadgen"));
        let profile_dir = me.parent().expect("kms-loadgen's directory");
        let target_dir = profile_dir.parent().expect("the target directory");
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args([
            "build",
            "--locked",
            "--quiet",
            "-p",
            "kmsd",
            "--bin",
            "kmsd",
            "--all-features",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
            None => panic!("unexpected kms-loadgen path {}", me.display()),
        }
        let out = cmd.output().expect("running cargo build -p kmsd");
        assert!(
            out.status.success(),
            "cargo build -p kmsd failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("kmsd")
    })
}

fn spec(mix: &str, keys: usize) -> WorkloadSpec {
    WorkloadSpec {
        mix: Mix::parse(mix).unwrap(),
        payload_size: 64,
        keys,
        popularity: Popularity::Uniform,
        context_pairs: 2,
        batch: 1,
        blobs_per_key: 2,
        seed: 11,
        hsm_keys: false,
        by_alias: false,
    }
}

fn options(model: LoadModel, pid: i32) -> RunOptions {
    RunOptions {
        model,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(700),
        progress: false,
        target_pid: Some(pid),
    }
}

#[test]
fn every_operation_runs_over_http_without_errors_closed_and_open_loop() {
    let daemon = Spawned::kmsd(kmsd_bin(), None, None).unwrap();
    let socket = daemon
        .http_socket
        .clone()
        .expect("the HTTP API is on by default");
    assert_eq!(socket, daemon.socket.with_file_name("kmsd-http.sock"));
    let spec = spec(
        "generate-data-key=3,generate-data-key-without-plaintext,encrypt,decrypt=2,re-encrypt,generate-random",
        4,
    );
    // Keys and ciphertexts made over the HTTP API itself.
    let mut client = HttpClient::connect(&socket).unwrap();
    let prepared = Prepared::create(&mut client, &spec).unwrap();
    drop(client);
    assert_eq!(prepared.key_ids.len(), 4);
    assert!(prepared.blobs.iter().all(|b| b.len() == 2));
    let pool = HttpPool::build(&spec, &prepared).unwrap();

    let closed = LoadModel::Closed {
        connections: 2,
        pipeline: 8,
    };
    let r = driver::run_http(&socket, &pool, "http mix", &options(closed, daemon.pid())).unwrap();
    assert_eq!(r.error_count(), 0, "{:?}", r.errors);
    assert!(r.requests > 0 && r.operations == r.requests);
    assert_eq!(r.latency.len(), r.requests);
    assert_eq!(
        (r.target, r.protocol, r.batch),
        (TargetKind::Daemon, Protocol::Http, 1)
    );
    assert!(
        r.target_cpu_secs.is_some_and(|c| c > 0.0),
        "{:?}",
        r.target_cpu_secs
    );

    let open = LoadModel::Open {
        connections: 2,
        rate: 1000.0,
    };
    let r = driver::run_http(&socket, &pool, "http open", &options(open, daemon.pid())).unwrap();
    assert_eq!(r.error_count(), 0, "{:?}", r.errors);
    // Requests whose intended time falls in the 0.7 s window: 700.
    assert!((600..=800).contains(&r.requests), "{} requests", r.requests);
}

#[test]
fn error_answers_are_counted_by_exception_name() {
    let daemon = Spawned::kmsd(kmsd_bin(), None, None).unwrap();
    let socket = daemon.http_socket.clone().unwrap();
    // Keys and blobs the daemon has never seen: every GenerateDataKey is
    // NotFoundException, every Decrypt InvalidCiphertextException.
    let spec = spec("generate-data-key,decrypt", 3);
    let pool = HttpPool::build(&spec, &Prepared::synthetic(&spec)).unwrap();
    let closed = LoadModel::Closed {
        connections: 1,
        pipeline: 4,
    };
    let r = driver::run_http(&socket, &pool, "errors", &options(closed, daemon.pid())).unwrap();
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
fn the_command_runs_http_and_reports_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kms-loadgen"))
        .args([
            "--spawn",
            "--protocol",
            "http",
            "--op",
            "generate-data-key,decrypt",
        ])
        .args([
            "--connections",
            "2",
            "--pipeline",
            "4",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
        ])
        .args(["--quiet", "--kmsd"])
        .arg(kmsd_bin())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("protocol     http"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["protocol"], "http");
    assert_eq!(run["target"], "daemon");
    assert_eq!(run["errors"], serde_json::json!({}));
    assert!(run["requests_per_sec"].as_f64().unwrap() > 0.0);
    assert!(run["target_process"]["cores"].as_f64().unwrap() > 0.0);

    // Batches do not exist in AWS's API: refused before anything starts.
    let out = Command::new(env!("CARGO_BIN_EXE_kms-loadgen"))
        .args(["--spawn", "--protocol", "http", "--batch", "8", "--kmsd"])
        .arg(kmsd_bin())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--batch must be 1"), "{stderr}");
}
