//! Quotas end to end: the real daemon throttles past its `[quotas]`, with
//! AWS's message and a retry hint, counts a batch per item, mirrors AWS's
//! per-operation quotas with `profile = "aws"`, and applies a new config on
//! SIGHUP without dropping a connection (a bad one changes nothing).

use crate::support::Daemon;
use kms_proto::{ErrorKind, GenerateDataKey, Operation, Output};
use std::time::{Duration, Instant};

/// A daemon reading `config` from a file in its own directory (written
/// there first so SIGHUP can find a changed one).
fn daemon_with(config: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("kmsd-quotas-")
        .tempdir()
        .expect("a directory for the config");
    let path = dir.path().join("kmsd.toml");
    std::fs::write(&path, config).unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    (d, dir)
}

fn config_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("kmsd.toml")
}

fn crypto_limit(rate: f64, burst: f64) -> String {
    format!(
        "[[quotas.limit]]\nprincipal = \"*\"\nclass = \"cryptographic\"\nrate = {rate:?}\nburst = {burst:?}\n"
    )
}

/// Sends SIGHUP and waits until the log has `want` one more time than now.
fn hup_and_wait(d: &Daemon, want: &str) {
    let before = d.log().matches(want).count();
    let pid = d.pid().expect("kmsd is running");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .expect("SIGHUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.log().matches(want).count() == before {
        assert!(
            Instant::now() < deadline,
            "no {want:?} in the log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kinds of a batch of `n` GenerateDataKey of `key` (None: success).
fn batch(c: &mut kms_proto::client::Client, key: &str, n: usize) -> Vec<Option<ErrorKind>> {
    let ops = (0..n)
        .map(|_| {
            Operation::GenerateDataKey(GenerateDataKey {
                key_id: key,
                number_of_bytes: Some(32),
                ..Default::default()
            })
        })
        .collect();
    c.batch(ops)
        .expect("an answer")
        .into_iter()
        .map(|o| o.err().map(|e| e.kind))
        .collect()
}

fn successes(kinds: &[Option<ErrorKind>]) -> usize {
    kinds.iter().filter(|k| k.is_none()).count()
}

#[test]
fn throttled_items_get_aws_error_with_a_hint_and_sighup_changes_limits_on_open_connections() {
    // 5 at once, then one every 10 s: the test's few seconds refill at
    // most one.
    let (d, dir) = daemon_with(&crypto_limit(0.1, 5.0));
    let mut c = d.client();
    let key = c.create_key("").expect("CreateKey (another class)").key_id;
    let kinds = batch(&mut c, &key, 8);
    let ok = successes(&kinds);
    assert!((5..=6).contains(&ok), "{kinds:?}");
    assert!(
        kinds[ok..]
            .iter()
            .all(|k| *k == Some(ErrorKind::Throttling)),
        "{kinds:?}"
    );
    let e = c
        .call(Operation::GenerateDataKey(GenerateDataKey {
            key_id: &key,
            number_of_bytes: Some(32),
            ..Default::default()
        }))
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("ThrottlingException"), "{msg}");
    assert!(
        msg.contains("You have exceeded the rate at which you may call KMS.")
            && msg.contains("Retry after "),
        "{msg}"
    );
    // Other classes are not spent.
    c.describe_key(&key).expect("DescribeKey");
    // The refusals show by principal and class in the status (GetStatus;
    // the Prometheus text has the same series).
    let out = d.kmsctl(&["--json", "status"], None);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let throttled = v["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["Name"] == "kmsd_throttled_total"
                && m["Labels"]["principal"] == "uid:0"
                && m["Labels"]["class"] == "cryptographic"
        })
        .unwrap_or_else(|| panic!("no kmsd_throttled_total for uid:0: {v}"));
    assert_eq!(
        throttled["Value"].as_f64().unwrap(),
        (8 - ok + 1) as f64,
        "{throttled}"
    );

    // A good config: applied on SIGHUP, on this very connection.
    std::fs::write(config_path(&dir), crypto_limit(1e6, 1e6)).unwrap();
    hup_and_wait(&d, "SIGHUP: quotas reloaded");
    // A reload keeps what a caller spent, at most the new burst: one
    // interval (1 µs here) after the first use, it has its new rate.
    batch(&mut c, &key, 1);
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(successes(&batch(&mut c, &key, 200)), 200);

    // Bad configs: refused with a log line, the running limits stay.
    for (bad, why) in [
        (
            "[[quotas.limit]]\nprincipal = \"*\"\nclass = \"no-such-class\"\nrate = 1.0\n",
            "no class",
        ),
        ("[quotas\nprofile = ", "kmsd.toml"),
        (
            "[quotas]\nprofile = \"aws\"\nper_key_rate = -1.0\n",
            "per_key_rate",
        ),
    ] {
        std::fs::write(config_path(&dir), bad).unwrap();
        hup_and_wait(&d, "keeping the running config");
        assert!(
            d.log().contains(why),
            "the log says why ({why}):\n{}",
            d.log()
        );
        assert_eq!(successes(&batch(&mut c, &key, 200)), 200, "after {bad:?}");
    }
    // Back to a tight limit: the same connection is throttled again.
    std::fs::write(config_path(&dir), crypto_limit(0.1, 3.0)).unwrap();
    hup_and_wait(&d, "SIGHUP: quotas reloaded");
    assert!(successes(&batch(&mut c, &key, 10)) <= 4);
    assert!(d.is_running());
}

#[test]
fn the_aws_profile_throttles_create_key_at_five_a_second() {
    let (d, _dir) = daemon_with("[quotas]\nprofile = \"aws\"\n");
    let mut c = d.client();
    let started = Instant::now();
    let outcomes: Vec<_> = (0..7).map(|_| c.create_key("").map(|_| ())).collect();
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    // Five at once; at most one more per 200 ms that the calls took.
    let refill = (started.elapsed().as_millis() / 200) as usize;
    assert!(
        ok >= 5 && ok <= 5 + refill,
        "{ok} of 7 in {:?}",
        started.elapsed()
    );
    if ok < 7 {
        let e = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
        assert_eq!(e.kind(), Some(ErrorKind::Throttling), "{e}");
    }
    // DescribeKey has its own bucket (2,000 a second).
    let Output::ListKeys(keys) = c
        .call(Operation::ListKeys(Default::default()))
        .expect("ListKeys")
    else {
        panic!()
    };
    for k in keys.keys.iter().take(3) {
        c.describe_key(&k.key_id).expect("DescribeKey");
    }
}

#[test]
fn a_config_with_bad_quotas_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kmsd.toml");
    std::fs::write(&path, "[quotas]\nprofile = \"aws\"\n[[quotas.limit]]\nprincipal = \"group:x\"\nclass = \"CreateKey\"\nrate = 1.0\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .arg("--check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("quotas are per uid"), "{err}");
}
