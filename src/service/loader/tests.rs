//! The loader against a root of trust that counts, slows down and fails
//! on demand (`root::fakes::TestRoot`, a fault-injecting wrapper around the
//! file root; the real HSM's faults are tested end to end in
//! tests/integration/hsm.rs).

use super::deadlines::NEGATIVE_TTL;
use super::*;
use crate::config::CacheConfig;
use crate::crypto::KeyMaterial;
use crate::errors::load_timed_out as timed_out;
use crate::identity::Identity;
use crate::keystore::Keystore;
use crate::root::fakes::TestRoot;
use crate::root::FileRoot;
use crate::service::{Service, ServiceOptions, Site};
use kms_proto::{CreateKey, ErrorKind, GenerateDataKey, Operation, Output};

/// A timeout no test reaches.
const LONG: Duration = Duration::from_secs(600);

const PEER: Identity = Identity::local(0, 0, 0);

/// A store under `dir` holding `n` keys; returns their ids.
fn keys_in(dir: &std::path::Path, n: usize) -> Vec<[u8; 16]> {
    let svc = Service::open(
        dir,
        Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([9; 32]))),
        Default::default(),
        100_000,
    )
    .unwrap();
    (0..n)
        .map(
            |_| match svc.call(&Operation::CreateKey(CreateKey::default()), &PEER) {
                Ok(Output::CreateKey(m)) => super::super::Arns::default().parse_key_id(&m.key_id).unwrap(),
                other => panic!("{other:?}"),
            },
        )
        .collect()
}

/// A fresh service (cold cache) over the same store.
fn cold(dir: &std::path::Path, cache: CacheConfig) -> (Service, Arc<TestRoot>) {
    let root = TestRoot::new([9; 32]);
    let svc = Service::with_options(
        Keystore::open(dir).unwrap(),
        root.clone(),
        ServiceOptions {
            access: Default::default(),
            limits: Default::default(),
            max_keys: 100_000,
            cache,
            loader_threads: 1,
            queue_capacity: 64,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            lifecycle_limits: Default::default(),
            hsm_invocation_limit: crate::service::backing::HSM_INVOCATION_LIMIT,
            arns: Default::default(),
        },
    )
    .unwrap();
    (svc, root)
}

/// Waits (at most 10 s) until `cond` holds: for state another thread
/// updates after the answer a test waited for.
fn wait_for(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn gdk(svc: &Service, id: &[u8; 16]) -> Result<Output, KmsError> {
    svc.call(
        &Operation::GenerateDataKey(GenerateDataKey {
            key_id: &super::super::format_key_id(id),
            number_of_bytes: Some(32),
            key_spec: None,
            context: vec![],
            ..Default::default()
        }),
        &PEER,
    )
}

#[test]
fn hsm_frames_run_on_loader_threads_and_their_queue_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 2);
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            // A frame that waited on its own thread would hang far past
            // the receive timeouts below.
            load_timeout_ms: 600_000,
            ..CacheConfig::default()
        },
    );
    let svc = Arc::new(svc);
    // Occupy the only loader thread with slow unwraps (every frame
    // below runs after the first one).
    root.delay_ms.store(300, Ordering::SeqCst);
    let (loaded_tx, loaded_rx) = std::sync::mpsc::channel();
    svc.loader()
        .prefetch(&ids[..1], Duration::from_secs(10), move |_| {
            loaded_tx.send(()).unwrap()
        });
    assert!(wait_for(|| root.unwraps.load(Ordering::SeqCst) == 1));
    // The queue holds 64 frames (`cold`); the 65th is handed back.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..64 {
        let work = (Arc::clone(&svc), tx.clone(), i, ids[1]);
        let queued = svc
            .hsm_executor()
            .submit(work, LONG, |(_svc, tx, i, id), on| {
                // On an executor thread, a key that is not cached is
                // loaded right here rather than queued behind this frame.
                let on = on.expect("started before its deadline");
                let thread = std::thread::current().name().map(str::to_owned);
                let loaded = on.load(KeyRef::from(id)).is_ok();
                tx.send((i, thread, loaded)).unwrap();
            });
        assert!(queued.is_ok(), "frame {i}");
    }
    let refused = svc.hsm_executor().submit(65, LONG, |_, _| unreachable!());
    assert_eq!(refused.unwrap_err(), 65);
    loaded_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut ran: Vec<_> = (0..64)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    ran.sort_unstable_by_key(|r| r.0);
    for (i, (n, thread, loaded)) in ran.into_iter().enumerate() {
        assert_eq!(n, i);
        assert_eq!(thread.as_deref(), Some("kmsd-loader-0"));
        assert!(loaded);
    }
    // Counted before each frame runs, so before its message was sent.
    assert_eq!(svc.loader().stats().frames, 64);
    // Room again once they ran.
    let (tx, rx) = std::sync::mpsc::channel();
    svc.hsm_executor()
        .submit(tx, LONG, |tx, _| tx.send(()).unwrap())
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
}

fn gdk_op(key: &str) -> Result<Operation<'_>, KmsError> {
    Ok(Operation::GenerateDataKey(GenerateDataKey {
        key_id: key,
        number_of_bytes: Some(32),
        key_spec: None,
        context: vec![],
        ..Default::default()
    }))
}

/// Sends a request through the dispatcher (as an I/O thread would) and
/// returns its outcomes, waiting at most 10 s for the answer; a whole
/// frame's error is one outcome.
fn through(
    d: &crate::dispatch::Dispatcher,
    body: kms_proto::RequestBody<'_>,
) -> Vec<Result<Output, KmsError>> {
    use kms_proto::{codec, Request, ResponseBody};
    let mut frame = Vec::new();
    codec::encode_request(
        &mut flatbuffers::FlatBufferBuilder::new(),
        &Request {
            request_id: 7,
            body,
        },
        &mut frame,
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    d.dispatch(
        bytes::Bytes::from(frame).slice(4..),
        PEER,
        crate::dispatch::Reply::new(tx, None),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        match rx.try_recv() {
            Ok(a) => break a,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("no answer: {e}"),
        }
    };
    let r = codec::decode_response(&answer.frame[4..], 1 << 20).unwrap();
    assert_eq!(r.request_id, 7);
    match r.body {
        ResponseBody::Single(o) => vec![o],
        ResponseBody::Batch(v) => v,
        ResponseBody::Error(e) => vec![Err(e)],
    }
}

fn create(svc: &Service) -> String {
    match svc.call(&Operation::CreateKey(CreateKey::default()), &PEER) {
        Ok(Output::CreateKey(m)) => m.key_id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn control_plane_frames_run_on_the_control_plane_executor() {
    use crate::config::DispatchConfig;
    use kms_proto::{GenerateRandom, RequestBody};
    let dir = tempfile::tempdir().unwrap();
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    let d = crate::dispatch::Dispatcher::new(
        Arc::new(svc),
        &DispatchConfig {
            workers: 1,
            ..DispatchConfig::default()
        },
    )
    .unwrap();
    // Opening the service wrapped a check value on this thread.
    root.wrappers.lock().clear();
    // A CreateKey (a wrap and an fsync), and a batch mixing a data-plane
    // item with one: neither may run on an I/O thread or a worker.
    let create = || Ok(Operation::CreateKey(CreateKey::default()));
    let one = through(&d, RequestBody::Single(create()));
    assert!(matches!(one[..], [Ok(Output::CreateKey(_))]), "{one:?}");
    let mixed = through(
        &d,
        RequestBody::Batch(vec![
            Ok(Operation::GenerateRandom(GenerateRandom { number_of_bytes: 8 })),
            create(),
        ]),
    );
    assert!(
        matches!(mixed[..], [Ok(Output::GenerateRandom(_)), Ok(Output::CreateKey(_))]),
        "{mixed:?}"
    );
    // Each wrap happened before its answer was sent.
    let wrappers = root.wrappers.lock().clone();
    assert!(
        !wrappers.is_empty() && wrappers.iter().all(|t| t.starts_with("kmsd-control-")),
        "{wrappers:?}"
    );
}

#[test]
fn a_timed_out_load_holds_no_worker_and_fails_only_its_items() {
    use crate::config::DispatchConfig;
    use kms_proto::RequestBody;
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 2);
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            load_timeout_ms: 100,
            ..CacheConfig::default()
        },
    );
    let svc = Arc::new(svc);
    let cached = create(&svc);
    let one_worker = DispatchConfig {
        workers: 1,
        ..DispatchConfig::default()
    };
    let d = crate::dispatch::Dispatcher::new(Arc::clone(&svc), &one_worker).unwrap();
    // A root far slower than the load timeout: it answers nothing
    // until the end of the test.
    root.stall.store(true, Ordering::SeqCst);
    let stalled = super::super::format_key_id(&ids[0]);
    let a = through(&d, RequestBody::Single(gdk_op(&stalled)));
    assert!(matches!(&a[..], [Err(e)] if *e == timed_out()), "{a:?}");
    // A batch on a cached key, too large for an I/O thread: the one
    // worker serves it while the root still hangs.
    let b = through(
        &d,
        RequestBody::Batch((0..65).map(|_| gdk_op(&cached)).collect()),
    );
    assert_eq!(b.len(), 65);
    assert!(b.iter().all(|o| o.is_ok()), "{b:?}");
    // A batch mixing a key whose load times out with the cached key:
    // only the timed-out key's item fails.
    let other = super::super::format_key_id(&ids[1]);
    let c = through(
        &d,
        RequestBody::Batch(vec![gdk_op(&cached), gdk_op(&other), gdk_op(&cached)]),
    );
    assert!(
        matches!(&c[..], [Ok(_), Err(e), Ok(_)] if *e == timed_out()),
        "{c:?}"
    );
    // Each frame waited for its keys once (its prefetch); the worker
    // that ran it never waited for the root again.
    assert_eq!(svc.loader().stats().expired, 2);
    assert_eq!(root.unwraps.load(Ordering::SeqCst), 1);
    root.stall.store(false, Ordering::SeqCst);
}

#[test]
fn a_batch_mixing_failed_and_good_keys_serves_the_good_ones() {
    use kms_proto::RequestBody;
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 2);
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    let svc = Arc::new(svc);
    let cached = create(&svc);
    // The root fails for one key as if the HSM were down.
    let wrapped = Keystore::open(dir.path())
        .unwrap()
        .get_versions(&ids[1])
        .unwrap()
        .remove(0)
        .wrapped;
    root.failing.lock().push(wrapped);
    let d = crate::dispatch::Dispatcher::new(Arc::clone(&svc), &Default::default()).unwrap();
    let (good, bad) = (
        super::super::format_key_id(&ids[0]),
        super::super::format_key_id(&ids[1]),
    );
    let unknown = super::super::format_key_id(&[7; 16]);
    let out = through(
        &d,
        RequestBody::Batch(vec![
            gdk_op(&cached),
            gdk_op(&bad),
            gdk_op(&good),
            gdk_op(&unknown),
            gdk_op(&cached),
        ]),
    );
    let kinds: Vec<_> = out
        .iter()
        .map(|o| o.as_ref().err().map(|e| e.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(ErrorKind::KeyUnavailable),
            None,
            Some(ErrorKind::NotFound),
            None
        ],
        "{out:?}"
    );
}

#[test]
fn queued_hsm_frames_wait_behind_key_loads_and_expire_at_their_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 2);
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // The only loader thread hangs in the first key's unwrap.
    root.stall.store(true, Ordering::SeqCst);
    let t = tx.clone();
    svc.loader()
        .prefetch(&ids[..1], LONG, move |_| t.send("first".into()).unwrap());
    assert!(wait_for(|| root.unwraps.load(Ordering::SeqCst) == 1));
    // HSM frames queued behind it, then a load of another key.
    for i in 0..3 {
        let work = (tx.clone(), i);
        svc.hsm_executor()
            .submit(work, LONG, |(t, i), on| {
                assert!(on.is_ok());
                t.send(format!("frame {i}")).unwrap()
            })
            .unwrap();
    }
    let t = tx.clone();
    svc.loader()
        .prefetch(&ids[1..], LONG, move |_| t.send("key".into()).unwrap());
    assert!(wait_for(|| svc.loader().stats().batches == 2));
    // A frame with a short deadline is answered by the sweep, unrun,
    // while the loader thread still hangs.
    let (etx, erx) = std::sync::mpsc::channel();
    svc.hsm_executor()
        .submit(etx, Duration::from_millis(50), |etx, on| {
            etx.send(on.err()).unwrap()
        })
        .unwrap();
    let e = erx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(e.map(|e| e.kind), Some(ErrorKind::KeyUnavailable));
    assert_eq!(svc.loader().stats().frames_expired, 1);
    // Once the root answers: the key load before the queued frames.
    root.stall.store(false, Ordering::SeqCst);
    let order: Vec<String> = (0..5)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(order, ["first", "key", "frame 0", "frame 1", "frame 2"]);
    assert_eq!(svc.loader().stats().frames, 3);
}

#[test]
fn concurrent_misses_for_one_key_share_one_unwrap() {
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    root.delay_ms.store(50, Ordering::SeqCst);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                svc.load_key(&id, Site::Blocking { prefetched: None })
                    .unwrap()
            });
        }
    });
    assert_eq!(root.unwraps.load(Ordering::SeqCst), 1);
    assert_eq!(svc.loader().stats().loaded, 1);
}

#[test]
fn without_batching_every_miss_unwraps() {
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            batching: false,
            ..CacheConfig::default()
        },
    );
    root.delay_ms.store(20, Ordering::SeqCst);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                svc.load_key(&id, Site::Blocking { prefetched: None })
                    .unwrap()
            });
        }
    });
    assert_eq!(root.unwraps.load(Ordering::SeqCst), 8);
}

#[test]
fn misses_for_many_keys_are_loaded_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 150);
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            batch_max: 64,
            ..CacheConfig::default()
        },
    );
    root.delay_ms.store(1, Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    svc.loader()
        .prefetch(&ids, Duration::from_secs(10), move |_| tx.send(()).unwrap());
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let stats = svc.loader().stats();
    assert_eq!(stats.loaded, 150);
    assert!(stats.max_batch > 1, "{stats:?}");
    assert!(stats.batches < 150, "{stats:?}");
    for id in &ids {
        assert!(svc.load_key(id, Site::Io).is_ok());
    }
    assert_eq!(root.unwraps.load(Ordering::SeqCst), 150);
    // Records are read by the store stage, but every root call is made
    // by the loader thread that owns the session.
    assert_eq!(
        root.callers.lock().iter().collect::<Vec<_>>(),
        ["kmsd-loader-0"]
    );
}

#[test]
fn a_slow_root_answers_key_unavailable_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            load_timeout_ms: 50,
            ..CacheConfig::default()
        },
    );
    root.delay_ms.store(600, Ordering::SeqCst);
    let e = gdk(&svc, &id).unwrap_err();
    assert_eq!(e, timed_out());
    // The waiter gives up on its own a little after the sweep's
    // deadline; the sweep thread may count it just after that.
    assert!(wait_for(|| svc.loader().stats().expired == 1));
}

#[test]
fn keys_whose_waiters_gave_up_behind_a_slow_unwrap_are_not_unwrapped() {
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 4);
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    root.delay_ms.store(300, Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, id) in ids[..3].iter().enumerate() {
        let tx = tx.clone();
        svc.loader().prefetch(
            std::slice::from_ref(id),
            Duration::from_millis(50),
            move |_| tx.send(()).unwrap(),
        );
        if i == 0 {
            // The first is being unwrapped when the others are read
            // and staged behind it.
            assert!(wait_for(|| root.unwraps.load(Ordering::SeqCst) == 1));
        }
    }
    for _ in 0..3 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
    assert_eq!(svc.loader().stats().expired, 3);
    // The slow unwrap ends; the loader thread then finds nobody waiting
    // for the other two. A later key is loaded after them (batches are
    // taken in order), so once it is, they have been skipped.
    let tx = tx.clone();
    svc.loader()
        .prefetch(&ids[3..], LONG, move |_| tx.send(()).unwrap());
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(svc.load_key(&ids[3], Site::Io).is_ok());
    assert_eq!(root.unwraps.load(Ordering::SeqCst), 2);
    for id in &ids[1..3] {
        assert!(svc.load_key(id, Site::Io).is_err());
    }
}

#[test]
fn while_the_root_is_down_cached_keys_work_and_others_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 2);
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    gdk(&svc, &ids[0]).unwrap();
    root.down.store(true, Ordering::SeqCst);
    // Cached: unaffected.
    gdk(&svc, &ids[0]).unwrap();
    // Not cached: a clear, retryable error (no timing assertion: the
    // machine is noisy; the root answered at once, not the deadline).
    let e = gdk(&svc, &ids[1]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::KeyUnavailable, "{e}");
    assert_eq!(svc.loader().stats().expired, 0);
    // Back up: after the short memo of the failure, the key loads.
    root.down.store(false, Ordering::SeqCst);
    std::thread::sleep(NEGATIVE_TTL + Duration::from_millis(20));
    gdk(&svc, &ids[1]).unwrap();
}

#[test]
fn the_cache_is_bounded_and_evicted_keys_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ids = keys_in(dir.path(), 20);
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            capacity: 5,
            ..CacheConfig::default()
        },
    );
    for id in &ids {
        gdk(&svc, id).unwrap();
    }
    assert_eq!(svc.cached_keys(), 5);
    gdk(&svc, &ids[0]).unwrap();
    assert_eq!(root.unwraps.load(Ordering::SeqCst), 21);
}

#[test]
fn unknown_keys_are_not_found_and_remembered_briefly() {
    let dir = tempfile::tempdir().unwrap();
    keys_in(dir.path(), 1);
    let (svc, _root) = cold(dir.path(), CacheConfig::default());
    let e = gdk(&svc, &[7; 16]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(svc.loader().remembered_failure(&[7; 16]).is_some());
    assert_eq!(svc.loader().stats().failed, 1);
    gdk(&svc, &[7; 16]).unwrap_err();
    assert_eq!(
        svc.loader().stats().failed,
        1,
        "second miss served from the memo"
    );
}

#[test]
fn a_load_in_flight_during_an_invalidation_does_not_cache_the_old_key() {
    use kms_proto::KeyState;
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    // The load reads the key (Enabled), then hangs in its unwrap.
    root.stall.store(true, Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    svc.loader().prefetch(&[id], LONG, move |p| {
        let state = p.get(&id).unwrap().map(|k| k.record().state);
        tx.send(state).unwrap()
    });
    assert!(wait_for(|| root.unwraps() == 1));
    // Meanwhile the control plane disables the key, commits, and
    // invalidates it before it acknowledges.
    svc.store().set_state(&id, KeyState::Disabled).unwrap();
    svc.invalidate(&id);
    root.stall.store(false, Ordering::SeqCst);
    // The waiter gets a fresh load, and the old key is not cached.
    let state = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(state, KeyState::Disabled);
    let cached = svc.load_key(&id, Site::Io).unwrap();
    assert_eq!(cached.record().state, KeyState::Disabled);
    assert_eq!(root.unwraps(), 2);
    assert_eq!(svc.loader().stats().stale, 1);
    // Invalidating a cached key drops it: the next use loads it again.
    svc.invalidate(&id);
    assert!(svc.load_key(&id, Site::Io).is_err());
    assert_eq!(svc.cached_keys(), 0);
}

/// Adds versions 2..=n to a stored key (the last one current), wrapped
/// under the tests' root key.
fn add_versions(dir: &std::path::Path, id: &[u8; 16], n: u32) {
    let mut store = Keystore::open(dir).unwrap();
    let root = FileRoot::from_key(KeyMaterial::from_bytes([9; 32]));
    for v in 2..=n {
        let wrapped =
            crate::root::RootOfTrust::wrap(&root, &KeyMaterial::from_bytes([v as u8; 32])).unwrap();
        store
            .add_version(
                id,
                &crate::keystore::WrappedVersion {
                    version: v,
                    wrapped,
                },
            )
            .unwrap();
    }
}

fn encrypt(svc: &Service, id: &[u8; 16]) -> Vec<u8> {
    let key = super::super::format_key_id(id);
    let op = Operation::Encrypt(kms_proto::Encrypt {
        key_id: &key,
        plaintext: b"secret",
        context: vec![],
        ..Default::default()
    });
    match svc.call(&op, &PEER) {
        Ok(Output::Encrypt(o)) => o.ciphertext_blob,
        other => panic!("{other:?}"),
    }
}

fn decrypt(
    svc: &Service,
    blob: &[u8],
    site: Site<'_>,
) -> Result<Output, crate::service::ExecError> {
    let op = Operation::Decrypt(kms_proto::Decrypt {
        ciphertext_blob: blob,
        key_id: None,
        context: vec![],
        ..Default::default()
    });
    svc.execute(&op, &PEER, site)
}

#[test]
fn old_versions_are_unwrapped_when_a_ciphertext_first_names_them() {
    use crate::service::ExecError;
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let v1_blob = {
        let (svc, _root) = cold(dir.path(), CacheConfig::default());
        encrypt(&svc, &id)
    };
    add_versions(dir.path(), &id, 3);
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    // Loading a key of three versions unwraps one: the current.
    let v3_blob = encrypt(&svc, &id);
    assert_eq!(v3_blob[17..21], 3u32.to_be_bytes());
    assert_eq!(root.unwraps(), 1);
    let entry = svc.core.cache.get(&id).unwrap();
    assert!(svc.core.cache.ready(&KeyRef::from(id)));
    let v1 = KeyRef {
        id,
        version: Some(1),
    };
    assert!(!svc.core.cache.ready(&v1));
    // On an I/O thread, a version not unwrapped yet needs a worker.
    assert_eq!(
        decrypt(&svc, &v1_blob, Site::Io).unwrap_err(),
        ExecError::NotReady
    );
    // Its load unwraps that version once, into the cached key.
    let (tx, rx) = std::sync::mpsc::channel();
    svc.loader().prefetch(&[v1], LONG, move |p| {
        tx.send(p.get_ref(&v1).is_some()).unwrap()
    });
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert_eq!(root.unwraps(), 2);
    assert!(svc.core.cache.ready(&v1));
    assert!(Arc::ptr_eq(&entry, &svc.core.cache.get(&id).unwrap()));
    for _ in 0..3 {
        decrypt(&svc, &v1_blob, Site::Io).unwrap();
        decrypt(&svc, &v3_blob, Site::Io).unwrap();
    }
    assert_eq!(root.unwraps(), 2);
    // Version 2, first named by a worker's decrypt: loaded there, once.
    let mut v2_blob = v1_blob.clone();
    v2_blob[17..21].copy_from_slice(&2u32.to_be_bytes());
    for _ in 0..2 {
        // (The header is part of the AAD: the relabelled blob does not
        // open, but its version is loaded first.)
        let e = decrypt(&svc, &v2_blob, Site::Blocking { prefetched: None }).unwrap_err();
        assert!(
            matches!(&e, ExecError::Kms(e) if e.kind == ErrorKind::InvalidCiphertext),
            "{e:?}"
        );
    }
    assert_eq!(root.unwraps(), 3);
    assert!(Arc::ptr_eq(&entry, &svc.core.cache.get(&id).unwrap()));
    // A version the key does not have needs no load: the ciphertext is
    // simply invalid.
    let mut v9_blob = v1_blob.clone();
    v9_blob[17..21].copy_from_slice(&9u32.to_be_bytes());
    assert!(svc.core.cache.ready(&KeyRef {
        id,
        version: Some(9)
    }));
    let e = decrypt(&svc, &v9_blob, Site::Io).unwrap_err();
    assert!(
        matches!(&e, ExecError::Kms(e) if e.kind == ErrorKind::InvalidCiphertext),
        "{e:?}"
    );
    assert_eq!(root.unwraps(), 3);
    assert_eq!(svc.loader().stats().loaded, 3);
}

#[test]
fn a_cold_load_naming_an_old_version_unwraps_it_with_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let v1_blob = {
        let (svc, _root) = cold(dir.path(), CacheConfig::default());
        encrypt(&svc, &id)
    };
    add_versions(dir.path(), &id, 3);
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    // A blocking decrypt on a cold cache: the key's load, then its
    // version's.
    decrypt(&svc, &v1_blob, Site::Blocking { prefetched: None }).unwrap();
    assert_eq!(root.unwraps(), 2);
    // A prefetch naming the version loads both at once.
    let (svc, root) = cold(dir.path(), CacheConfig::default());
    let v1 = KeyRef {
        id,
        version: Some(1),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    svc.loader()
        .prefetch(&[v1], LONG, move |p| tx.send(p.get(&id).is_some()).unwrap());
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert_eq!(root.unwraps(), 2);
    decrypt(&svc, &v1_blob, Site::Io).unwrap();
    encrypt(&svc, &id);
    assert_eq!(root.unwraps(), 2);
}

#[test]
fn a_blocking_load_on_an_executor_thread_loads_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, root) = cold(
        dir.path(),
        CacheConfig {
            // Waiting on its own thread would hang far past the receive
            // timeout below.
            load_timeout_ms: 600_000,
            ..CacheConfig::default()
        },
    );
    let svc = Arc::new(svc);
    let (tx, rx) = std::sync::mpsc::channel();
    // A frame that loads without its thread handle (as a frame run
    // through the service's blocking path does).
    let queued =
        svc.hsm_executor()
            .submit((Arc::clone(&svc), tx, id), LONG, |(svc, tx, id), on| {
                assert!(on.is_ok());
                let loaded = svc
                    .load_key(&id, Site::Blocking { prefetched: None })
                    .is_ok();
                tx.send(loaded).unwrap();
            });
    assert!(queued.is_ok());
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert_eq!(
        root.callers.lock().iter().collect::<Vec<_>>(),
        ["kmsd-loader-0"]
    );
    // Elsewhere the thread is not an executor thread.
    assert!(svc.hsm_executor().current_thread().is_none());
}

#[test]
fn loads_read_the_store_through_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, _root) = cold(dir.path(), CacheConfig::default());
    // The service's store is held (as by a control-plane write waiting
    // for its fsync); the load does not wait for it.
    let store = svc.store();
    let (tx, rx) = std::sync::mpsc::channel();
    svc.loader().prefetch(&[id], LONG, move |p| {
        tx.send(p.get(&id).unwrap().is_ok()).unwrap()
    });
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    drop(store);
}

#[test]
fn a_frame_holding_a_key_from_before_a_change_loads_it_again() {
    use crate::service::keys::Needed;
    use crate::service::ExecError;
    use kms_proto::{Encrypt, KeyState};
    let dir = tempfile::tempdir().unwrap();
    let id = keys_in(dir.path(), 1)[0];
    let (svc, _root) = cold(dir.path(), CacheConfig::default());
    let key = svc.load_key(&id, Site::Blocking { prefetched: None }).unwrap();
    assert!(svc.is_fresh(&key));
    // What admission looked up for a frame that is then queued.
    let resolved = [Needed {
        key: KeyRef::from(id),
        cached: Some(Arc::clone(&key)),
    }];
    // The prefetch of another frame waiting for the same key.
    let (tx, rx) = std::sync::mpsc::channel();
    svc.loader().prefetch(&[id], LONG, move |p| tx.send(p).unwrap());
    let prefetched = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // DisableKey commits, invalidates, and is acknowledged...
    svc.store().set_state(&id, KeyState::Disabled).unwrap();
    svc.invalidate(&id);
    assert!(!svc.is_fresh(&key));
    // ...then the queued frames run: neither uses the key it held.
    let key_id = crate::service::format_key_id(&id);
    let op = Operation::Encrypt(Encrypt {
        key_id: &key_id,
        plaintext: b"x",
        context: vec![],
        ..Default::default()
    });
    let caller = Identity::local(0, 0, 1);
    let inline = crate::service::op::execute(&svc, &op, &caller, Site::Io, &resolved);
    assert_eq!(inline, Err(ExecError::NotReady), "inline: the key is looked up again");
    for site in [
        Site::Blocking { prefetched: None },
        Site::Blocking {
            prefetched: Some(&prefetched),
        },
    ] {
        match crate::service::op::execute(&svc, &op, &caller, site, &resolved) {
            Err(ExecError::Kms(e)) => assert_eq!(e.kind, ErrorKind::Disabled),
            other => panic!("{other:?}"),
        }
    }
}
