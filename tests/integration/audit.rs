//! The audit log end to end: the real daemon, its real log files, the real
//! `kmsctl audit verify`, a real full file system (tmpfs) and a real kill -9.

use super::support::Daemon;
use kms_proto::client::ClientError;
use kms_proto::{ErrorKind, GenerateDataKey, Operation};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// Every line of every log file, in order.
fn lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

pub(crate) fn records(dir: &Path) -> Vec<serde_json::Value> {
    lines(dir)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub(crate) fn audit_dir(d: &Daemon) -> PathBuf {
    d.data_dir.join("audit")
}

pub(crate) fn verify(d: &Daemon, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "verify", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    d.kmsctl(&args, None)
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits (bounded) until the records are in the files: a record is written
/// before its answer, so this only waits for the seals that follow.
fn wait_for(dir: &Path, what: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = records(dir);
        if what(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_request_is_recorded_with_its_outcome_and_never_a_secret() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let created = c.create_key("audited").unwrap();
    let key = created.key_id;
    let secret = b"the plaintext nobody may log 0123456789";
    let ctx = [("purpose", "audit-test")];
    let e = c.encrypt(&key, secret, &ctx).unwrap();
    let p = c.decrypt(&e.ciphertext_blob, None, &ctx).unwrap();
    assert_eq!(p.plaintext.expose(), secret);
    let dk = c.generate_data_key(&key, 32, &[]).unwrap();
    // A batch of alike items and one that fails.
    let gdk = |k: &'static str| {
        Operation::GenerateDataKey(GenerateDataKey {
            key_id: k,
            number_of_bytes: Some(32),
            ..Default::default()
        })
    };
    let key_static: &'static str = Box::leak(key.clone().into_boxed_str());
    let mut batch: Vec<_> = (0..100).map(|_| gdk(key_static)).collect();
    batch.push(gdk("alias/none-such"));
    let arn_static: &'static str = Box::leak(created.arn.clone().into_boxed_str());
    batch.push(gdk(arn_static));
    let out = c.batch(batch).unwrap();
    assert_eq!(out.len(), 102);
    // Refused: a key that does not exist, and a frame that does not decode.
    let err = c.describe_key("alias/missing").unwrap_err();
    assert!(
        matches!(err, ClientError::Kms(ref e) if e.kind == ErrorKind::NotFound),
        "{err:?}"
    );
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let junk = [12u8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        s.write_all(&junk).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
    }
    let dir = audit_dir(&d);
    let r = records(&dir);
    let named = |n: &str| r.iter().filter(|v| v["eventName"] == n).collect::<Vec<_>>();
    let ck = named("CreateKey");
    assert_eq!(ck.len(), 1);
    assert_eq!(ck[0]["readOnly"], false);
    assert_eq!(ck[0]["resources"][0]["type"], "AWS::KMS::Key");
    let enc = &named("Encrypt")[0];
    assert_eq!(enc["requestParameters"]["keyId"], key.as_str());
    assert_eq!(
        enc["requestParameters"]["encryptionContext"]["purpose"],
        "audit-test"
    );
    assert_eq!(enc["eventSource"], "kms.amazonaws.com");
    assert_eq!(enc["userIdentity"]["principalId"], "uid:0");
    assert_eq!(enc["userIdentity"]["pid"], std::process::id());
    assert_eq!(enc["additionalEventData"]["keyVersion"], 1);
    assert_eq!(enc["additionalEventData"]["policyDecision"], "Allow");
    assert_eq!(
        enc["resources"][0]["ARN"],
        crate::support::key_arn(&key).as_str()
    );
    assert_eq!(enc["resources"][0]["accountId"], "000000000000");
    let dec = &named("Decrypt")[0];
    assert!(dec.get("errorCode").is_none());
    // The batch: one record, the 100 alike items one entry with a count.
    let b: Vec<_> = named("GenerateDataKey")
        .into_iter()
        .filter(|v| v["additionalEventData"]["items"] == 102)
        .collect();
    assert_eq!(b.len(), 1, "one record per frame");
    let entries = b[0]["additionalEventData"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(entries[0]["count"], 100);
    // What every entry shares is written once: here the parameters but
    // for keyId (the failed item has no key version or decision).
    assert_eq!(
        b[0]["additionalEventData"]["common"],
        serde_json::json!({"requestParameters": {"numberOfBytes": 32}})
    );
    assert_eq!(
        entries[0]["requestParameters"],
        serde_json::json!({"keyId": key.as_str()})
    );
    assert_eq!(entries[0]["keyVersion"], 1);
    // Named by its id: the ARN would only repeat it.
    assert!(entries[0].get("resources").is_none(), "{:?}", entries[0]);
    assert_eq!(entries[1]["count"], 1);
    assert_eq!(entries[1]["errorCode"], "NotFoundException");
    assert_eq!(entries[1]["additionalEventData"], serde_json::Value::Null);
    assert_eq!(entries[1]["aliasUsed"], "alias/none-such");
    // Named by its ARN: the key is named in `resources` too.
    assert_eq!(entries[2]["firstItem"], 101);
    assert_eq!(entries[2]["resources"][0]["ARN"], created.arn.as_str());
    let nf = named("DescribeKey");
    assert_eq!(nf[0]["errorCode"], "NotFoundException");
    let bad = named("Unknown");
    assert_eq!(bad.len(), 1, "the undecodable frame");
    assert!(bad[0]["errorCode"].is_string());
    // Never a secret: the plaintext, the data key, the ciphertexts, in
    // any usual encoding.
    let all = lines(&dir).join("\n");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert!(
        !all.contains(std::str::from_utf8(secret).unwrap()),
        "plaintext in the log"
    );
    for s in [
        &secret[..],
        dk.plaintext.expose(),
        &dk.ciphertext_blob,
        &e.ciphertext_blob,
    ] {
        for enc in [hex::encode(s), b64.encode(s)] {
            assert!(
                !all.contains(&enc[..enc.len().min(40)]),
                "a secret in the log"
            );
        }
    }
    // A request's answer waited for its record: the chain verifies, with the
    // daemon's seals and head.
    let o = verify(&d, &dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A copy of the log to tamper with.
fn copy_of(dir: &Path, to: &Path) -> PathBuf {
    let dst = to.join(format!("copy-{}", rand_suffix()));
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The only log file of `dir`, as lines; written back with `f` applied.
fn edit(dir: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let path = dir.join("audit-000001.jsonl");
    let mut l: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    f(&mut l);
    let mut s = l.join("\n");
    s.push('\n');
    std::fs::write(&path, s).unwrap();
}

/// A change to a log file's lines.
type Tamper = Box<dyn FnOnce(&mut Vec<String>)>;

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[test]
fn verify_fails_naming_the_record_on_edited_deleted_reordered_truncated_and_rewritten_logs() {
    let d = Daemon::start(&[]);
    let mut c = d.client();
    let key = c.create_key("chain").unwrap().key_id;
    for i in 0..20 {
        c.encrypt(&key, format!("m{i}").as_bytes(), &[]).unwrap();
    }
    let dir = audit_dir(&d);
    // Sealed after the last request (the interval seal), so that a
    // rewritten chain meets a seal it cannot make.
    wait_for(&dir, |r| {
        r.last().is_some_and(|v| {
            v["eventName"] == "AuditSeal" && v["sequenceNumber"].as_u64() > Some(22)
        })
    });
    let work = tempfile::tempdir().unwrap();
    let clean = verify(&d, &copy_of(&dir, work.path()), &[]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    let n = lines(&dir).len();
    assert!(n >= 22, "{n} lines");
    // Line 10 of the file (sequenceNumber 10).
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "edited",
            Box::new(|l| l[9] = l[9].replace("\"Encrypt\"", "\"Decrypt\"")),
            "line 10 (sequenceNumber 10)",
        ),
        (
            "deleted",
            Box::new(|l| {
                l.remove(9);
            }),
            "line 10 (sequenceNumber 11)",
        ),
        (
            "reordered",
            Box::new(|l| l.swap(9, 10)),
            "line 10 (sequenceNumber 11)",
        ),
        (
            "truncated",
            Box::new(|l| {
                l.truncate(l.len() - 3);
            }),
            "cut off",
        ),
        (
            "rewritten",
            Box::new(|l| {
                // Every record re-hashed after an edit: a consistent chain
                // whose seals the attacker cannot make.
                l[9] = l[9].replace("\"Encrypt\"", "\"Decrypt\"");
                for i in 10..l.len() {
                    let prev = sha(&l[i - 1]);
                    let v: serde_json::Value = serde_json::from_str(&l[i]).unwrap();
                    let old = v["previousHash"].as_str().unwrap().to_owned();
                    l[i] = l[i].replace(&old, &prev);
                }
            }),
            "seal is not one the daemon's seal key made",
        ),
    ];
    for (what, f, names) in cases {
        let copy = copy_of(&dir, work.path());
        edit(&copy, f);
        let o = verify(&d, &copy, &[]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{what}: {t}");
        assert!(t.contains("first bad record"), "{what}: {t}");
        assert!(t.contains(names), "{what}: {t}");
    }
    // The unsealed tail edited and re-hashed: only the head catches it.
    let copy = copy_of(&dir, work.path());
    edit(&copy, |l| {
        let last = l.len() - 1;
        let edited = l[last].replacen("\"readOnly\":true", "\"readOnly\":false", 1);
        assert_ne!(edited, l[last]);
        l[last] = edited;
    });
    let o = verify(&d, &copy, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn the_chain_survives_kill_9_and_a_torn_record_is_reported_as_torn() {
    let mut d = Daemon::start(&[]);
    let key = d.client().create_key("crash").unwrap().key_id;
    d.client().encrypt(&key, b"x", &[]).unwrap();
    d.kill();
    let dir = audit_dir(&d);
    let before = records(&dir);
    let last_seq = before.last().unwrap()["sequenceNumber"].as_u64().unwrap();
    // What a crash mid-write leaves: a record cut short.
    let file = dir.join("audit-000001.jsonl");
    let torn = "{\"eventVersion\":\"1.08\",\"eventTime\":\"2026";
    let offset = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, torn.as_bytes()))
        .unwrap();
    let o = verify(&d, &dir, &["--offline"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("torn"), "{}", text(&o));
    d.restart();
    d.client().encrypt(&key, b"y", &[]).unwrap();
    let l = lines(&dir);
    let r: Vec<serde_json::Value> = l
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let rec = r
        .iter()
        .find(|v| v["eventName"] == "AuditLogRecovered")
        .expect("a recovery record");
    let t = &rec["additionalEventData"]["tornRecord"];
    assert_eq!(t["offset"], offset);
    assert_eq!(t["length"], torn.len());
    assert_eq!(t["sha256"], sha(torn));
    assert_eq!(rec["sequenceNumber"], last_seq + 1, "the chain continues");
    assert!(l.iter().any(|x| x == torn), "the torn bytes are kept");
    let o = verify(&d, &dir, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("torn by a crash"), "{}", text(&o));
    assert!(text(&o).contains("chain whole"), "{}", text(&o));
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    // Seals every 3 records too: interval seals (synced by the sync
    // thread, not the writer) between rotations' seals.
    std::fs::write(&path, "[audit]\nmax_file_bytes = 4096\nseal_records = 3\n").unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    let mut c = d.client();
    let key = c.create_key("rotate").unwrap().key_id;
    for i in 0..60 {
        c.encrypt(&key, format!("m{i}").as_bytes(), &[]).unwrap();
    }
    let dir = audit_dir(&d);
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert!(files >= 3, "{files} files");
    let log: String = (1..=files)
        .map(|i| std::fs::read_to_string(dir.join(format!("audit-{i:06}.jsonl"))).unwrap())
        .collect();
    let interval_seals = log.matches(r#""reason":"interval""#).count();
    assert!(
        interval_seals >= 5,
        "{interval_seals} interval seals:\n{log}"
    );
    let o = verify(&d, &dir, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A whole file removed from the middle is caught.
    let work = tempfile::tempdir().unwrap();
    let copy = copy_of(&dir, work.path());
    std::fs::remove_file(copy.join("audit-000002.jsonl")).unwrap();
    let o = verify(&d, &copy, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("audit-000003.jsonl line 1"),
        "{}",
        text(&o)
    );
}

/// A small tmpfs of our own (root only: the tests run as root here and in
/// CI), unmounted on drop.
pub(crate) struct Tmpfs(pub(crate) tempfile::TempDir);

impl Tmpfs {
    pub(crate) fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "mount -t tmpfs failed: the audit fault tests need root"
        );
        Tmpfs(dir)
    }

    /// Fills it (the file `filler`, removed to make room again).
    pub(crate) fn fill(&self) -> PathBuf {
        let filler = self.0.path().join("filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=4k", "count=1000"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn fail_closed_refuses_requests_while_the_log_cannot_be_written_and_recovers() {
    let fs = Tmpfs::mount("1m");
    let audit = fs.0.path().join("audit");
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(
        &path,
        format!("[audit]\ndirectory = \"{}\"\n", audit.display()),
    )
    .unwrap();
    let mut d = Daemon::start(&["--config", path.to_str().unwrap()]);
    let mut c = d.client();
    let key = c.create_key("full").unwrap().key_id;
    c.encrypt(&key, b"before", &[]).unwrap();
    // Fill the file system.
    let filler = fs.fill();
    // The file's last page may still have room for a few records: the
    // first refusal comes within a few requests, and nothing else fails.
    let mut answered = 0;
    let err = loop {
        match c.encrypt(&key, b"refused", &[]) {
            Ok(_) => answered += 1,
            Err(e) => break e,
        }
        assert!(answered < 1000, "never refused on a full file system");
    };
    let ClientError::Kms(e) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(e.kind, ErrorKind::ServiceUnavailable, "{e}");
    assert!(e.message.contains("audit log"), "{e}");
    // Refused at once while it stays full, unrun.
    let err = c.create_key("not made").unwrap_err();
    assert!(matches!(err, ClientError::Kms(ref e) if e.kind == ErrorKind::ServiceUnavailable));
    // Room again: answered again within a few retries.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.encrypt(&key, b"after", &[]) {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("not recovered: {e:?}\n{}", d.log()),
        }
    }
    let r = wait_for(&audit, |r| {
        r.iter().any(|v| v["eventName"] == "AuditLogUnavailable")
    });
    let out = r
        .iter()
        .find(|v| v["eventName"] == "AuditLogUnavailable")
        .expect("the outage is recorded");
    assert!(
        out["additionalEventData"]["refusedRequests"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // No key was made while refused.
    let keys = c.list_keys(100, None).unwrap();
    assert_eq!(keys.keys.len(), 1);
    let o = verify(&d, &audit, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    d.stop();
}

/// Refusals are recorded like any other outcome: a caller without a
/// policy gets AccessDeniedException and its record names the caller and
/// the decision; items past a quota are ThrottlingException in the batch's
/// record, beside the ones that ran.
#[test]
fn refusals_by_policy_and_by_quota_are_recorded_with_the_caller_and_decision() {
    use std::os::unix::fs::PermissionsExt as _;
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(
        &path,
        "[transport]\nsocket_mode = 0o666\n\n[[quotas.limit]]\nprincipal = \"uid:0\"\nclass = \"cryptographic\"\nrate = 0.01\nburst = 3.0\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut c = d.client();
    let key = c.create_key("refusals").unwrap().key_id;
    // Another uid, on a thread of its own (credentials are per thread).
    let socket = d.socket.clone();
    let key2 = key.clone();
    let denied = std::thread::spawn(move || {
        let uid = rustix::process::Uid::from_raw(4242);
        let gid = rustix::process::Gid::from_raw(4242);
        rustix::thread::set_thread_groups(&[]).unwrap();
        rustix::thread::set_thread_res_gid(gid, gid, gid).unwrap();
        rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
        let mut other = kms_proto::client::Client::connect_expecting(
            &socket,
            kms_proto::peer::ServerUid::Exactly(0),
        )
        .unwrap();
        other.encrypt(&key2, b"not yours", &[]).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(denied.kind(), Some(ErrorKind::AccessDenied), "{denied}");
    // Root's quota: 3 at once, then (almost) nothing: a batch of 5.
    let ops = (0..5)
        .map(|_| {
            Operation::GenerateDataKey(GenerateDataKey {
                key_id: &key,
                number_of_bytes: Some(32),
                ..Default::default()
            })
        })
        .collect();
    let outcomes = c.batch(ops).unwrap();
    let throttled = outcomes
        .iter()
        .filter(|o| matches!(o, Err(e) if e.kind == ErrorKind::Throttling))
        .count();
    assert!(throttled >= 2, "{outcomes:?}");
    let dir = audit_dir(&d);
    let r = records(&dir);
    let refused = r
        .iter()
        .find(|x| x["userIdentity"]["uid"] == 4242)
        .unwrap_or_else(|| panic!("no record of uid 4242: {r:?}"));
    assert_eq!(refused["eventName"], "Encrypt");
    assert_eq!(refused["errorCode"], "AccessDeniedException");
    assert_eq!(refused["userIdentity"]["principalId"], "uid:4242");
    assert_eq!(
        refused["additionalEventData"]["policyDecision"],
        "ImplicitDeny"
    );
    assert_eq!(refused["requestParameters"]["keyId"], key.as_str());
    let batch = r
        .iter()
        .find(|x| x["additionalEventData"]["items"] == 5)
        .unwrap_or_else(|| panic!("no record of the batch: {r:?}"));
    let entries = batch["additionalEventData"]["entries"].as_array().unwrap();
    let count = |code: Option<&str>| {
        entries
            .iter()
            .filter(|e| e["errorCode"].as_str() == code)
            .map(|e| e["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        count(Some("ThrottlingException")),
        throttled as u64,
        "{batch}"
    );
    assert_eq!(count(None), 5 - throttled as u64, "{batch}");
}

/// `on_failure = "buffer"`: while the log cannot be written, requests are
/// still answered; their records wait in memory up to the bound, the rest
/// are counted as dropped (in the status' metrics), and when the disk has
/// room again the held records are written after a record of the outage,
/// and the chain verifies.
#[test]
fn buffer_mode_answers_through_an_outage_and_counts_what_it_drops() {
    let fs = Tmpfs::mount("1m");
    let audit = fs.0.path().join("audit");
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(
        &path,
        format!(
            "[audit]\ndirectory = \"{}\"\non_failure = \"buffer\"\nbuffer_records = 20\n",
            audit.display()
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&["--config", path.to_str().unwrap()]);
    let mut c = d.client();
    let key = c.create_key("buffered").unwrap().key_id;
    let filler = fs.fill();
    // Every request is answered, full disk or not.
    for i in 0..100 {
        c.encrypt(&key, format!("m{i}").as_bytes(), &[])
            .unwrap_or_else(|e| panic!("request {i} refused in buffer mode: {e}"));
    }
    // More records than the buffer holds: some were dropped, and counted.
    let metric = |name: &str| -> f64 {
        let out = d.kmsctl(&["--json", "status"], None);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == name)
            .map_or(0.0, |m| m["Value"].as_f64().unwrap())
    };
    assert!(metric("kmsd_audit_dropped_records_total") >= 1.0);
    assert!(metric("kmsd_audit_buffered_records") >= 1.0);
    std::fs::remove_file(&filler).unwrap();
    let r = wait_for(&audit, |r| {
        r.iter().any(|v| v["eventName"] == "AuditRecordsDropped")
    });
    let outage = r
        .iter()
        .find(|v| v["eventName"] == "AuditRecordsDropped")
        .unwrap_or_else(|| panic!("no outage record:\n{}", d.log()));
    let dropped = outage["additionalEventData"]["droppedRecords"]
        .as_u64()
        .unwrap();
    assert!(dropped >= 1, "{outage}");
    // The held records follow it: the last request's record is there.
    let last = r.iter().filter(|v| v["eventName"] == "Encrypt").count();
    assert!(last >= 20, "{last} Encrypt records written");
    let o = verify(&d, &audit, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    d.stop();
}

/// `kmsctl audit tail`: the last N records (raw with `--json`, a summary
/// line each without), and with `--follow` the new ones as they are
/// written, across a rotation.
#[test]
fn audit_tail_prints_the_last_records_and_follows_new_ones_across_rotations() {
    use std::io::BufRead as _;
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("kmsd.toml");
    std::fs::write(&path, "[audit]\nmax_file_bytes = 4096\n").unwrap();
    let d = Daemon::start(&["--config", path.to_str().unwrap()]);
    let mut c = d.client();
    let key = c.create_key("tailed").unwrap().key_id;
    c.encrypt(&key, b"one", &[]).unwrap();
    let dir = audit_dir(&d);
    let dir_arg = dir.to_str().unwrap();
    let o = d.kmsctl(
        &["audit", "tail", "--dir", dir_arg, "-n", "3", "--json"],
        None,
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines.iter().any(|v| v["eventName"] == "Encrypt"),
        "the last records include the Encrypt: {out}"
    );
    let o = d.kmsctl(&["audit", "tail", "--dir", dir_arg, "-n", "2"], None);
    assert!(o.status.success(), "{}", text(&o));
    let summary = String::from_utf8(o.stdout).unwrap();
    assert_eq!(summary.lines().count(), 2, "{summary}");
    // --follow: new records as they come, through several rotations
    // (4 KiB files: a few records each). `-n 1` prints the last record
    // first: once it is read, kmsctl is following the end of the log.
    /// Kills the follower however the test ends (it never exits itself,
    /// and it holds the test's stderr).
    struct Follower(std::process::Child);
    impl Drop for Follower {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Follower(
        std::process::Command::new(super::support::kmsctl_bin())
            .args([
                "audit", "tail", "--dir", dir_arg, "-n", "1", "--json", "--follow",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no line from kmsctl audit tail --follow ({what}): {e}"))
    };
    next("the last record");
    let files_before = std::fs::read_dir(&dir).unwrap().count();
    let ids: Vec<String> = (0..20)
        .map(|i| {
            c.encrypt(&key, b"followed", &[("n", &i.to_string())])
                .unwrap();
            i.to_string()
        })
        .collect();
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > files_before,
        "rotated"
    );
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let line = next(&format!("after {seen:?}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["eventName"] == "Encrypt" {
            if let Some(n) = v["requestParameters"]["encryptionContext"]["n"].as_str() {
                seen.push(n.to_owned());
            }
        }
    }
    drop(child);
    assert_eq!(seen, ids, "every new record, in order");
}
