//! Key states, deletion and rotation against the real daemon over its
//! socket: a change under load is in force for every request sent after
//! its answer arrived; deletion windows and rotation periods pass (the
//! daemon's clock moved with `KMSD_TEST_CLOCK_FILE`, feature `test-clock`);
//! HSM-only keys rotate and are deleted with their token objects (SoftHSM).

use crate::support::Daemon;
use kms_proto::client::Client;
use kms_proto::{ErrorKind, GenerateDataKey, KmsError, Operation, Outcome, Output, ResponseBody};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Clients sending as fast as they can.
const CLIENTS: usize = 4;
/// Requests each keeps in flight.
const DEPTH: usize = 16;
/// Requests each sends after the change was acknowledged.
const AFTER: usize = 200;
/// Most requests a client sends in all (a change that never comes back
/// must not leave the clients running).
const MOST: usize = 50_000;

/// One request's send order and answer.
struct Sent {
    seq: u64,
    outcome: Outcome,
}

/// Runs `CLIENTS` connections pipelining Encrypt and GenerateDataKey on
/// `key` while `change` (on a connection of its own) changes it once they
/// are all under way. Every send takes a number from one shared sequence
/// just before it is written, and the change takes one just after its
/// answer arrived: a request numbered above the change's was written after
/// the acknowledgement. Returns the change's number and every answer.
fn under_load(
    d: &Daemon,
    key: &str,
    change: impl FnOnce(&mut Client) -> Result<Output, KmsError>,
) -> (u64, Vec<Sent>) {
    let seq = AtomicU64::new(1);
    let ack = AtomicU64::new(u64::MAX);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = AtomicU64::new(0);
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (seq, ack, started, stop) = (&seq, &ack, &started, &stop);
                let mut c = d.client();
                s.spawn(move || {
                    let mut in_flight: HashMap<u64, u64> = HashMap::new();
                    let mut done = Vec::new();
                    let mut after = 0;
                    let mut n = 0usize;
                    let mut waited = false;
                    loop {
                        while in_flight.len() < DEPTH
                            && after < AFTER
                            && n < MOST
                            && !stop.load(Ordering::SeqCst)
                        {
                            let op = if (n + i).is_multiple_of(2) {
                                Operation::Encrypt(kms_proto::Encrypt {
                                    key_id: key,
                                    plaintext: b"under load",
                                    context: vec![],
                                    ..Default::default()
                                })
                            } else {
                                Operation::GenerateDataKey(GenerateDataKey {
                                    key_id: key,
                                    number_of_bytes: Some(32),
                                    key_spec: None,
                                    context: vec![],
                                    ..Default::default()
                                })
                            };
                            n += 1;
                            let mine = seq.fetch_add(1, Ordering::SeqCst);
                            if mine > ack.load(Ordering::SeqCst) {
                                after += 1;
                            }
                            let id = c.send(op);
                            c.flush().unwrap();
                            in_flight.insert(id, mine);
                        }
                        if in_flight.is_empty() {
                            return done;
                        }
                        let r = c.recv().unwrap();
                        let mine = in_flight
                            .remove(&r.request_id)
                            .expect("an answer we asked for");
                        let outcome = match r.body {
                            ResponseBody::Single(o) => o,
                            other => panic!("{other:?}"),
                        };
                        done.push(Sent { seq: mine, outcome });
                        if !waited && done.len() >= 50 {
                            // Under way: the change may go.
                            waited = true;
                            started.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::SeqCst) < CLIENTS as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut c = d.client();
        let changed = change(&mut c);
        ack.store(seq.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
        if changed.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
        let sent: Vec<Sent> = clients
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        if let Err(e) = changed {
            panic!("the change failed: {e}; log:\n{}", d.log());
        }
        (ack.load(Ordering::SeqCst), sent)
    })
}

/// The key version a ciphertext names (its header: version byte, key id,
/// version big-endian; src/crypto/blob.rs).
fn blob_version(blob: &[u8]) -> u32 {
    u32::from_be_bytes(blob[17..21].try_into().unwrap())
}

fn blob_of(o: &Output) -> &[u8] {
    match o {
        Output::Encrypt(e) => &e.ciphertext_blob,
        Output::GenerateDataKey(g) => &g.ciphertext_blob,
        other => panic!("{other:?}"),
    }
}

/// Asserts that every request sent after the acknowledgement failed with
/// `kind`, and that some were.
fn refused_after(ack: u64, sent: &[Sent], kind: ErrorKind) {
    let after: Vec<_> = sent.iter().filter(|s| s.seq > ack).collect();
    assert!(after.len() >= CLIENTS * AFTER, "{} after", after.len());
    for s in after {
        match &s.outcome {
            Err(e) => assert_eq!(e.kind, kind, "request {} (ack {ack}): {e}", s.seq),
            Ok(o) => panic!(
                "request {} sent after the ack {ack} succeeded: {o:?}",
                s.seq
            ),
        }
    }
    // Before it: successes (the load was real), then maybe refusals.
    assert!(sent.iter().any(|s| s.seq < ack && s.outcome.is_ok()));
}

fn call(c: &mut Client, op: Operation<'_>) -> Result<Output, KmsError> {
    c.call(op).map_err(|e| {
        // An I/O error is no exception of the daemon's: shown as internal.
        KmsError::new(e.kind().unwrap_or(ErrorKind::KmsInternal), e.to_string())
    })
}

#[test]
fn disable_key_under_load_refuses_every_request_sent_after_its_answer() {
    let d = Daemon::start(&[]);
    let key = d.client().create_key("under load").unwrap().key_id;
    let (ack, sent) = under_load(&d, &key, |c| {
        call(
            c,
            Operation::DisableKey(kms_proto::DisableKey { key_id: &key }),
        )
    });
    refused_after(ack, &sent, ErrorKind::Disabled);
}

#[test]
fn schedule_key_deletion_under_load_refuses_every_request_sent_after_its_answer() {
    let d = Daemon::start(&[]);
    let key = d.client().create_key("under load").unwrap().key_id;
    let (ack, sent) = under_load(&d, &key, |c| {
        call(
            c,
            Operation::ScheduleKeyDeletion(kms_proto::ScheduleKeyDeletion {
                key_id: &key,
                pending_window_in_days: Some(7),
            }),
        )
    });
    refused_after(ack, &sent, ErrorKind::KmsInvalidState);
}

#[test]
fn rotate_key_on_demand_under_load_new_ciphertexts_name_the_new_version() {
    let d = Daemon::start(&[]);
    let key = d.client().create_key("under load").unwrap().key_id;
    let (ack, sent) = under_load(&d, &key, |c| {
        call(
            c,
            Operation::RotateKeyOnDemand(kms_proto::RotateKeyOnDemand { key_id: &key }),
        )
    });
    let mut c = d.client();
    let mut after = 0;
    for s in &sent {
        let o = s.outcome.as_ref().unwrap_or_else(|e| panic!("{e}"));
        let v = blob_version(blob_of(o));
        if s.seq > ack {
            assert_eq!(v, 2, "request {} sent after the ack {ack}", s.seq);
            after += 1;
        } else {
            assert!(v == 1 || v == 2, "{v}");
        }
    }
    assert!(after >= CLIENTS * AFTER);
    // Both versions' ciphertexts decrypt.
    let first = sent.iter().find(|s| s.seq < ack).unwrap();
    let last = sent.iter().max_by_key(|s| s.seq).unwrap();
    for s in [first, last] {
        let blob = blob_of(s.outcome.as_ref().unwrap());
        c.decrypt(blob, None, &[]).unwrap();
    }
}

/// A daemon whose clock a test moves, and whose scheduler looks for due
/// work every 50 ms. `extra_config` is appended to its config file.
#[cfg(feature = "test-clock")]
pub(crate) struct ClockedDaemon {
    pub(crate) d: Daemon,
    dir: tempfile::TempDir,
    offset: i64,
}

#[cfg(feature = "test-clock")]
impl ClockedDaemon {
    pub(crate) fn start(config: Option<&std::path::Path>) -> ClockedDaemon {
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("clock-offset");
        std::fs::write(&clock, "0").unwrap();
        let path = match config {
            Some(p) => p.to_owned(),
            None => dir.path().join("kmsd.toml"),
        };
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str("\n[lifecycle]\nscheduler_interval_ms = 50\n");
        std::fs::write(&path, text).unwrap();
        let d = Daemon::start_env(
            &["--config", path.to_str().unwrap()],
            &[("KMSD_TEST_CLOCK_FILE", clock.as_os_str())],
        );
        ClockedDaemon { d, dir, offset: 0 }
    }

    /// Moves the daemon's clock forward by `secs`.
    pub(crate) fn advance(&mut self, secs: i64) {
        self.offset += secs;
        let tmp = self.dir.path().join("clock-offset.new");
        std::fs::write(&tmp, self.offset.to_string()).unwrap();
        // Renamed: the daemon never reads half a number.
        std::fs::rename(&tmp, self.dir.path().join("clock-offset")).unwrap();
    }
}

/// Waits (at most 20 s) until `cond` holds: for work the scheduler does
/// after the clock moved.
#[cfg(feature = "test-clock")]
pub(crate) fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(feature = "test-clock")]
pub(crate) const DAY: i64 = 86_400;

#[cfg(feature = "test-clock")]
pub(crate) fn gone(c: &mut Client, key: &str) -> bool {
    match c.describe_key(key) {
        Err(e) => {
            assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
            true
        }
        Ok(m) => {
            assert_eq!(m.key_state, kms_proto::KeyState::PendingDeletion);
            false
        }
    }
}

#[cfg(feature = "test-clock")]
pub(crate) fn rotations(c: &mut Client, key: &str) -> Vec<kms_proto::RotationsListEntry> {
    match call(
        c,
        Operation::ListKeyRotations(kms_proto::ListKeyRotations {
            key_id: key,
            limit: 0,
            marker: None,
        }),
    )
    .unwrap()
    {
        Output::ListKeyRotations(l) => l.rotations,
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "test-clock")]
fn schedule(c: &mut Client, key: &str, days: u32) -> kms_proto::ScheduleKeyDeletionOutput {
    match call(
        c,
        Operation::ScheduleKeyDeletion(kms_proto::ScheduleKeyDeletion {
            key_id: key,
            pending_window_in_days: Some(days),
        }),
    )
    .unwrap()
    {
        Output::ScheduleKeyDeletion(o) => o,
        other => panic!("{other:?}"),
    }
}

#[cfg(feature = "test-clock")]
#[test]
fn a_key_whose_window_passed_is_deleted_and_its_ciphertexts_are_not_found_forever() {
    let mut cd = ClockedDaemon::start(None);
    let mut c = cd.d.client();
    let doomed = c.create_key("doomed").unwrap().key_id;
    let kept = c.create_key("kept").unwrap().key_id;
    let later = c.create_key("deleted while stopped").unwrap().key_id;
    let blob = c
        .encrypt(&doomed, b"secret", &[("a", "b")])
        .unwrap()
        .ciphertext_blob;
    let dk = c
        .generate_data_key(&doomed, 32, &[])
        .unwrap()
        .ciphertext_blob;
    // A canary scheduled a day earlier: once it is gone, a pass ran with
    // the clock past its date and before the doomed key's.
    let canary = c.create_key("canary").unwrap().key_id;
    schedule(&mut c, &canary, 7);
    cd.advance(DAY);
    let o = schedule(&mut c, &doomed, 7);
    assert_eq!(o.key_id, crate::support::key_arn(&doomed));
    assert_eq!(o.key_state, kms_proto::KeyState::PendingDeletion);
    assert_eq!(o.pending_window_in_days, 7);
    schedule(&mut c, &later, 30);
    cd.advance(6 * DAY + 1);
    eventually("the canary's deletion", || gone(&mut c, &canary));
    assert!(!gone(&mut c, &doomed), "deleted before its date");
    cd.advance(DAY);
    eventually("the deletion", || gone(&mut c, &doomed));
    let not_found = |c: &mut Client| {
        for b in [&blob, &dk] {
            let e = c.decrypt(b, None, &[("a", "b")]).unwrap_err();
            assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
        }
        let e = c.encrypt(&doomed, b"x", &[]).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
        let keys: Vec<String> = c
            .list_keys(1000, None)
            .unwrap()
            .keys
            .into_iter()
            .map(|k| k.key_id)
            .collect();
        assert!(!keys.contains(&doomed), "{keys:?}");
        assert!(keys.contains(&kept), "{keys:?}");
    };
    not_found(&mut c);
    // Stopped, the clock moves past the other key's date: deleted at start.
    drop(c);
    cd.d.stop();
    cd.advance(30 * DAY);
    cd.d.restart();
    let mut c = cd.d.client();
    eventually("the deletion due while stopped", || gone(&mut c, &later));
    not_found(&mut c);
    assert!(c.describe_key(&kept).unwrap().enabled);
}

#[cfg(feature = "test-clock")]
#[test]
fn a_key_rotates_at_its_period_and_its_old_ciphertexts_still_decrypt() {
    let mut cd = ClockedDaemon::start(None);
    let mut c = cd.d.client();
    let key = c.create_key("rotating").unwrap().key_id;
    call(
        &mut c,
        Operation::EnableKeyRotation(kms_proto::EnableKeyRotation {
            key_id: &key,
            rotation_period_in_days: Some(90),
        }),
    )
    .unwrap();
    let old = c.encrypt(&key, b"old", &[]).unwrap().ciphertext_blob;
    assert_eq!(blob_version(&old), 1);
    cd.advance(90 * DAY + 1);
    eventually("the rotation", || rotations(&mut c, &key).len() == 1);
    let r = &rotations(&mut c, &key)[0];
    assert_eq!(r.rotation_type, kms_proto::RotationType::Automatic);
    let new = c.encrypt(&key, b"new", &[]).unwrap().ciphertext_blob;
    assert_eq!(blob_version(&new), 2);
    let status = match call(
        &mut c,
        Operation::GetKeyRotationStatus(kms_proto::GetKeyRotationStatus { key_id: &key }),
    )
    .unwrap()
    {
        Output::GetKeyRotationStatus(s) => s,
        other => panic!("{other:?}"),
    };
    assert!(status.key_rotation_enabled);
    assert!(status.next_rotation_date.unwrap() > r.rotation_date + 89 * DAY);
    drop(c);
    cd.d.restart();
    let mut c = cd.d.client();
    assert_eq!(
        c.decrypt(&old, None, &[]).unwrap().plaintext.expose(),
        b"old"
    );
    assert_eq!(
        c.decrypt(&new, None, &[]).unwrap().plaintext.expose(),
        b"new"
    );
    assert_eq!(rotations(&mut c, &key).len(), 1, "once");
}

#[cfg(feature = "test-clock")]
#[test]
fn hsm_only_keys_rotate_and_are_deleted_with_their_token_objects() {
    use crate::hsm::{config, hsm_test, label, token_objects_with_id, Admin};
    let Some((_lock, env)) =
        hsm_test("hsm_only_keys_rotate_and_are_deleted_with_their_token_objects")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root_label = label("states-root");
    let cfg = crate::support::write_pkcs11_config(
        dir.path(),
        &env.module,
        &env.token_label,
        &root_label,
        &env.pin_file,
    );
    kmsd::hsm::init_root_key(&config(env, &root_label)).unwrap();
    let mut cd = ClockedDaemon::start(Some(&cfg));
    let mut c = cd.d.client();
    let key = c
        .create_key_with_origin("hsm-only", kms_proto::Origin::Hsm)
        .unwrap()
        .key_id;
    let id = kmsd::service::Arns::default().parse_key_id(&key).unwrap();
    let objects = |v: u32| token_objects_with_id(env, &kmsd::service::backing::object_id(&id, v));
    let old = c.encrypt(&key, b"v1", &[]).unwrap().ciphertext_blob;
    assert_eq!((old[0], blob_version(&old)), (2, 1), "format 2, version 1");
    assert_eq!((objects(1), objects(2)), (1, 0));
    // On demand: a new token key, current from the answer on.
    call(
        &mut c,
        Operation::RotateKeyOnDemand(kms_proto::RotateKeyOnDemand { key_id: &key }),
    )
    .unwrap();
    assert_eq!(objects(2), 1);
    let mid = c.encrypt(&key, b"v2", &[]).unwrap().ciphertext_blob;
    assert_eq!(blob_version(&mid), 2);
    // Automatic, when its period passes.
    call(
        &mut c,
        Operation::EnableKeyRotation(kms_proto::EnableKeyRotation {
            key_id: &key,
            rotation_period_in_days: Some(90),
        }),
    )
    .unwrap();
    cd.advance(90 * DAY + 1);
    eventually("the automatic rotation", || {
        rotations(&mut c, &key).len() == 2
    });
    assert_eq!(objects(3), 1);
    let new = c.encrypt(&key, b"v3", &[]).unwrap().ciphertext_blob;
    assert_eq!(blob_version(&new), 3);
    for (b, pt) in [(&old, b"v1"), (&mid, b"v2"), (&new, b"v3")] {
        assert_eq!(c.decrypt(b, None, &[]).unwrap().plaintext.expose(), pt);
    }
    // Deleted: every version's token object is destroyed.
    schedule(&mut c, &key, 7);
    cd.advance(7 * DAY + 1);
    eventually("the deletion", || gone(&mut c, &key));
    eventually("the token objects' destruction", || {
        (1..=3).all(|v| objects(v) == 0)
    });
    let e = c.decrypt(&old, None, &[]).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::NotFound), "{e}");
    drop(c);
    cd.d.stop();
    Admin::open(env).destroy_labelled(&[root_label]);
}

/// In process over SoftHSM: versions of an HSM-only key wear out after a
/// (lowered) number of encryptions, and the key rotates instead of
/// refusing; every version's ciphertexts decrypt, and no version is used
/// past its limit.
#[test]
fn a_worn_hsm_only_version_rotates_its_key_in_the_token() {
    use crate::hsm::{config, hsm_test, label, token_objects_with_id, Admin};
    use kmsd::service::{scheduler::Scheduler, Service, ServiceOptions};
    use std::sync::Arc;
    let Some((_lock, env)) = hsm_test("a_worn_hsm_only_version_rotates_its_key_in_the_token")
    else {
        return;
    };
    let root_label = label("worn-root");
    kmsd::hsm::init_root_key(&config(env, &root_label)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let limit = 16;
    let svc = Arc::new(
        Service::with_options(
            kmsd::keystore::Keystore::open(dir.path()).unwrap(),
            Arc::new(kmsd::root::Pkcs11Root::open(&config(env, &root_label)).unwrap()),
            ServiceOptions {
                access: Default::default(),
                limits: Default::default(),
                max_keys: 100,
                cache: Default::default(),
                loader_threads: 1,
                queue_capacity: 64,
                clock: Arc::new(kmsd::clock::SystemClock),
                lifecycle_limits: Default::default(),
                hsm_invocation_limit: limit,
                arns: Default::default(),
            },
        )
        .unwrap(),
    );
    let scheduler = Scheduler::start(Arc::clone(&svc), Duration::from_secs(3600)).unwrap();
    let peer = kmsd::identity::Identity::local(0, 0, 0);
    let key = match svc
        .call(
            &Operation::CreateKey(kms_proto::CreateKey {
                origin: kms_proto::Origin::Hsm,
                ..Default::default()
            }),
            &peer,
        )
        .unwrap()
    {
        Output::CreateKey(m) => m.key_id,
        other => panic!("{other:?}"),
    };
    let blobs: Vec<Vec<u8>> = (0..4 * limit)
        .map(|i| {
            match svc.call(
                &Operation::Encrypt(kms_proto::Encrypt {
                    key_id: &key,
                    plaintext: &i.to_be_bytes(),
                    context: vec![],
                    ..Default::default()
                }),
                &peer,
            ) {
                Ok(Output::Encrypt(e)) => e.ciphertext_blob,
                other => panic!("encryption {i}: {other:?}"),
            }
        })
        .collect();
    let mut per_version: HashMap<u32, u64> = HashMap::new();
    for (i, b) in blobs.iter().enumerate() {
        *per_version.entry(blob_version(b)).or_default() += 1;
        match svc.call(
            &Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: b,
                key_id: None,
                context: vec![],
                ..Default::default()
            }),
            &peer,
        ) {
            Ok(Output::Decrypt(d)) => assert_eq!(d.plaintext.expose(), (i as u64).to_be_bytes()),
            other => panic!("{other:?}"),
        }
    }
    assert!(per_version.len() >= 4, "{per_version:?}");
    assert!(per_version.values().all(|n| *n <= limit), "{per_version:?}");
    let id = kmsd::service::Arns::default().parse_key_id(&key).unwrap();
    let versions = *per_version.keys().max().unwrap();
    let mut labels = vec![root_label];
    for v in 1..=versions {
        let object = kmsd::service::backing::object_id(&id, v);
        assert_eq!(token_objects_with_id(env, &object), 1, "version {v}");
        labels.push(format!(
            "kmsd-key-{}",
            object
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ));
    }
    drop(scheduler);
    drop(svc);
    Admin::open(env).destroy_labelled(&labels);
}
