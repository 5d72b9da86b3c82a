//! Metrics end to end, against the real daemon binary: the Prometheus
//! listener on a Unix socket and on loopback TCP, scraped over HTTP and
//! parsed with a real Prometheus text parser (prometheus-parse); GetStatus
//! through `kmsctl status --json`; non-administrators refused; a
//! non-loopback address refused at start.

use crate::support::Daemon;
use kms_proto::{ErrorKind, KmsError};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// GET /metrics over `stream`: the status line, the content type, the body.
pub(crate) fn get(mut stream: impl Read + Write) -> (String, String, String) {
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: kmsd\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.lines().next().unwrap().to_owned();
    let ctype = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_owned();
    (status, ctype, body.to_owned())
}

/// The value of the series `name` with every label of `labels`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        })
}

pub(crate) fn parse(body: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

fn config(d: &tempfile::TempDir, text: &str) -> String {
    let path = d.path().join("kmsd.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Traffic with known counts: 3 GenerateRandom, 2 DescribeKey of a key
/// that does not exist (NotFoundException), and a batch of 4 WhoAmI.
fn traffic(d: &Daemon) {
    let mut c = d.client();
    for _ in 0..3 {
        c.generate_random(16).unwrap();
    }
    for _ in 0..2 {
        let e = c
            .describe_key("1234abcd-12ab-34cd-56ef-1234567890ab")
            .unwrap_err();
        assert!(format!("{e}").contains("NotFoundException"), "{e}");
    }
    let items = (0..4)
        .map(|_| kms_proto::Operation::WhoAmI(kms_proto::WhoAmI))
        .collect();
    let out = c.batch(items).unwrap();
    assert!(out.iter().all(|o| o.is_ok()));
}

fn check_counts(body: &str) {
    let s = parse(body);
    let req = |op| value(&s, "kmsd_requests_total", &[("operation", op)]);
    assert_eq!(req("GenerateRandom"), Some(3.0), "{body}");
    assert_eq!(req("DescribeKey"), Some(2.0));
    assert_eq!(req("WhoAmI"), Some(4.0));
    assert_eq!(
        value(
            &s,
            "kmsd_errors_total",
            &[
                ("operation", "DescribeKey"),
                ("exception", "NotFoundException")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&s, "kmsd_errors_total", &[("operation", "GenerateRandom")]),
        None
    );
    // 3 + 2 + 1 frames of latency: the batch is one frame.
    let frames: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "kmsd_request_duration_seconds_count")
        .map(|x| match x.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
            ref other => panic!("{other:?}"),
        })
        .sum();
    assert!(frames >= 6.0, "{body}");
    assert!(value(&s, "kmsd_connections_accepted_total", &[]).unwrap() >= 1.0);
    assert!(value(&s, "kmsd_uptime_seconds", &[]).unwrap() >= 0.0);
    assert!(value(&s, "kmsd_queue_depth", &[("queue", "workers_small")]).is_some());
}

#[test]
fn the_unix_socket_listener_serves_counts_a_real_parser_reads() {
    let conf = tempfile::tempdir().unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sock_dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock = sock_dir.path().join("metrics.sock");
    let path = config(
        &conf,
        &format!("[metrics]\nlisten = \"{}\"\n", sock.display()),
    );
    let d = Daemon::start(&["--config", &path]);
    traffic(&d);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "metrics.socket_mode's default");
    let (status, ctype, body) = get(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    check_counts(&body);
}

#[test]
fn the_loopback_tcp_listener_serves_the_same() {
    let conf = tempfile::tempdir().unwrap();
    let path = config(&conf, "[metrics]\nlisten = \"127.0.0.1:0\"\n");
    let d = Daemon::start(&["--config", &path]);
    // Port 0: the daemon logs the port it got.
    let log = d.log();
    let addr = log
        .lines()
        .find(|l| l.contains("serving metrics"))
        .and_then(|l| l.split("Some(").nth(1))
        .and_then(|a| a.split(')').next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_owned();
    traffic(&d);
    let (status, _, body) = get(std::net::TcpStream::connect(&addr).unwrap());
    assert_eq!(status, "HTTP/1.1 200 OK");
    check_counts(&body);
}

#[test]
fn kmsctl_status_json_shows_the_same_counts() {
    let d = Daemon::start(&[]);
    traffic(&d);
    let out = d.kmsctl(&["--json", "status"], None);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    let metrics = v["Metrics"].as_array().unwrap();
    let find = |name: &str, label: &str, value: &str| {
        metrics
            .iter()
            .find(|m| m["Name"] == name && m["Labels"][label] == value)
            .unwrap_or_else(|| panic!("{name} {label}={value}: {v}"))
    };
    assert_eq!(
        find("kmsd_requests_total", "operation", "GenerateRandom")["Value"],
        3.0
    );
    assert_eq!(
        find("kmsd_errors_total", "exception", "NotFoundException")["Value"],
        2.0
    );
    let h = find(
        "kmsd_request_duration_seconds",
        "operation",
        "GenerateRandom",
    );
    assert_eq!(h["Kind"], "histogram");
    assert_eq!(h["Count"], 3);
    assert!(h["Quantiles"]["0.99"].as_f64().unwrap() > 0.0, "{h}");
    let text = String::from_utf8(d.kmsctl(&["status"], None).stdout).unwrap();
    assert!(text.starts_with("kmsd "), "{text}");
    assert!(text.contains("GenerateRandom"), "{text}");
}

#[test]
fn get_status_is_refused_to_non_administrators() {
    let conf = tempfile::tempdir().unwrap();
    let path = config(&conf, "[transport]\nsocket_mode = 0o666\n");
    let d = Daemon::start(&["--config", &path]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = d.socket.clone();
    let e = std::thread::spawn(move || {
        let uid = rustix::process::Uid::from_raw(4343);
        rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid on this thread");
        let mut c = kms_proto::client::Client::connect_expecting(
            &socket,
            kms_proto::client::ServerUid::Exactly(0),
        )
        .unwrap();
        c.get_status().unwrap_err()
    })
    .join()
    .unwrap();
    let kms: KmsError = match e {
        kms_proto::client::ClientError::Kms(k) => k,
        other => panic!("{other:?}"),
    };
    assert_eq!(kms.kind, ErrorKind::AccessDenied, "{kms}");
    // The administrator (root: the daemon's uid) is answered.
    d.client().get_status().unwrap();
}

#[test]
fn a_non_loopback_address_is_refused_at_start() {
    let conf = tempfile::tempdir().unwrap();
    let path = config(&conf, "[metrics]\nlisten = \"0.0.0.0:9464\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .args(["--check-config", &path])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .arg("serve")
        .arg("--socket")
        .arg(data.path().join("kmsd.sock"))
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--config", &path])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_non_loopback"), "{err}");
    assert!(!data.path().join("kmsd.sock").exists());
}
