//! Quotas against a hand-moved clock: accuracy over a window, classes,
//! overrides, reloads, and a batch counted per item through the service.

use super::*;
use crate::config::{AwsConfig, QuotaLimit, QuotaProfile, QuotasConfig};
use kms_proto::ErrorKind;

const ENCRYPT: usize = op_index("Encrypt");
const GDK: usize = op_index("GenerateDataKey");
const CREATE_KEY: usize = op_index("CreateKey");
const DESCRIBE_KEY: usize = op_index("DescribeKey");

fn limit(principal: &str, class: &str, rate: f64, burst: Option<f64>) -> QuotaLimit {
    QuotaLimit {
        principal: principal.into(),
        class: class.into(),
        rate: Some(rate),
        burst,
        unlimited: false,
    }
}

fn config(profile: QuotaProfile, limits: Vec<QuotaLimit>) -> QuotasConfig {
    QuotasConfig {
        profile,
        limit: limits,
        ..Default::default()
    }
}

fn manual(config: &QuotasConfig) -> (Quotas, Arc<AtomicU64>) {
    manual_in(config, &AwsConfig::default())
}

/// [`manual`] for a daemon whose `[aws]` is `aws`.
fn manual_in(config: &QuotasConfig, aws: &AwsConfig) -> (Quotas, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(1_000_000_000));
    let q = Quotas::new(
        Limits::from_config(config, aws).unwrap(),
        QuotaClock::Manual(Arc::clone(&now)),
    );
    (q, now)
}

/// Offers `offered` requests a second, evenly spaced, for `secs` seconds;
/// returns how many were allowed.
fn offer(q: &Quotas, now: &AtomicU64, uid: u32, op: usize, offered: u64, secs: u64) -> u64 {
    let step = 1_000_000_000 / offered;
    let mut allowed = 0;
    for _ in 0..offered * secs {
        now.fetch_add(step, Ordering::Relaxed);
        if q.admit(uid, op).is_ok() {
            allowed += 1;
        }
    }
    allowed
}

#[test]
fn the_allowed_rate_over_a_window_is_the_limit_within_two_percent() {
    for (rate, burst, offered) in [(1_000.0, 100.0, 5_000), (250.0, 250.0, 2_000), (40_000.0, 2.0, 100_000)] {
        let (q, now) = manual(&config(
            QuotaProfile::Kmsd,
            vec![limit("*", "cryptographic", rate, Some(burst))],
        ));
        // A 10-second window, after the burst has been spent: the rate
        // alone.
        offer(&q, &now, 1000, ENCRYPT, offered, 1);
        let allowed = offer(&q, &now, 1000, ENCRYPT, offered, 10);
        let expected = rate * 10.0;
        let error = (allowed as f64 - expected).abs() / expected;
        assert!(
            error <= 0.02,
            "rate {rate}, offered {offered}/s: {allowed} allowed in 10 s, expected {expected}"
        );
    }
}

#[test]
fn a_new_caller_gets_its_burst_at_once_then_the_rate() {
    let (q, now) = manual(&config(
        QuotaProfile::Kmsd,
        vec![limit("*", "cryptographic", 100.0, Some(20.0))],
    ));
    let ok = (0..50).filter(|_| q.admit(7, GDK).is_ok()).count();
    assert_eq!(ok, 20, "the burst, at one instant");
    now.fetch_add(100_000_000, Ordering::Relaxed); // 100 ms: 10 more
    let ok = (0..50).filter(|_| q.admit(7, GDK).is_ok()).count();
    assert_eq!(ok, 10);
}

#[test]
fn a_refusal_is_throttling_with_aws_message_and_a_retry_hint() {
    let (q, _now) = manual(&config(
        QuotaProfile::Kmsd,
        vec![limit("*", "cryptographic", 4.0, Some(1.0))],
    ));
    q.admit(1, ENCRYPT).unwrap();
    let e = q.admit(1, ENCRYPT).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttling);
    assert!(
        e.message.starts_with(
            "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
        ),
        "{}",
        e.message
    );
    assert!(e.message.ends_with("Retry after 250 ms."), "{}", e.message);
}

#[test]
fn callers_and_classes_have_buckets_of_their_own() {
    let (q, _now) = manual(&config(
        QuotaProfile::Kmsd,
        vec![
            limit("*", "cryptographic", 1.0, Some(3.0)),
            limit("*", "management-read", 1.0, Some(2.0)),
        ],
    ));
    for uid in [1, 2, 3] {
        assert_eq!((0..10).filter(|_| q.admit(uid, ENCRYPT).is_ok()).count(), 3);
        assert_eq!(
            (0..10).filter(|_| q.admit(uid, DESCRIBE_KEY).is_ok()).count(),
            2
        );
    }
    // Generate and Encrypt share the class.
    assert!(q.admit(1, GDK).is_err());
    let t = q.throttled();
    assert!(t.contains(&("uid:1".into(), "cryptographic".into(), 8)), "{t:?}");
    assert!(t.contains(&("uid:2".into(), "management-read".into(), 8)), "{t:?}");
}

#[test]
fn a_callers_own_entry_wins_over_star_in_any_order() {
    let mut unlimited = limit("uid:5", "cryptographic", 1.0, None);
    unlimited.rate = None;
    unlimited.unlimited = true;
    let (q, _now) = manual(&config(
        QuotaProfile::Kmsd,
        vec![
            limit("uid:9", "cryptographic", 1.0, Some(10.0)),
            unlimited,
            limit("*", "cryptographic", 1.0, Some(2.0)),
        ],
    ));
    assert_eq!((0..100).filter(|_| q.admit(5, ENCRYPT).is_ok()).count(), 100);
    assert_eq!((0..100).filter(|_| q.admit(9, ENCRYPT).is_ok()).count(), 10);
    assert_eq!((0..100).filter(|_| q.admit(4, ENCRYPT).is_ok()).count(), 2);
}

#[test]
fn the_aws_profile_has_a_bucket_per_management_operation() {
    let (q, now) = manual(&config(QuotaProfile::Aws, vec![]));
    // CreateKey: 5 a second.
    assert_eq!((0..20).filter(|_| q.admit(1, CREATE_KEY).is_ok()).count(), 5);
    // DescribeKey's own bucket is untouched.
    assert!(q.admit(1, DESCRIBE_KEY).is_ok());
    now.fetch_add(1_000_000_000, Ordering::Relaxed);
    assert_eq!((0..20).filter(|_| q.admit(1, CREATE_KEY).is_ok()).count(), 5);
    // The symmetric bucket: aws.region's, us-east-1 by default.
    assert_eq!(
        (0..200_000).filter(|_| q.admit(1, ENCRYPT).is_ok()).count(),
        100_000
    );
    assert!(q.admit(1, op_index("GenerateRandom")).is_err());
}

#[test]
fn the_aws_symmetric_bucket_is_sized_by_quotas_aws_region_else_aws_region() {
    let paris = AwsConfig {
        region: "eu-west-3".into(),
        ..AwsConfig::default()
    };
    let frankfurt = QuotasConfig {
        aws_region: Some("eu-central-1".into()),
        ..config(QuotaProfile::Aws, vec![])
    };
    for (quotas, aws, rate) in [
        (config(QuotaProfile::Aws, vec![]), AwsConfig::default(), 100_000),
        (config(QuotaProfile::Aws, vec![]), paris.clone(), 10_000),
        (frankfurt.clone(), paris, 20_000),
        (frankfurt, AwsConfig::default(), 20_000),
    ] {
        let (q, _now) = manual_in(&quotas, &aws);
        assert_eq!(
            (0..200_000).filter(|_| q.admit(1, ENCRYPT).is_ok()).count(),
            rate,
            "{:?} {:?}",
            quotas.aws_region,
            aws.region
        );
    }
}

#[test]
fn off_limits_nothing() {
    let (q, _now) = manual(&config(QuotaProfile::Off, vec![]));
    assert_eq!(
        (0..300_000).filter(|_| q.admit(1, ENCRYPT).is_ok()).count(),
        300_000
    );
}

#[test]
fn a_reload_changes_the_rate_and_keeps_what_was_spent() {
    let (q, now) = manual(&config(
        QuotaProfile::Kmsd,
        vec![limit("*", "cryptographic", 10.0, Some(10.0))],
    ));
    assert_eq!((0..20).filter(|_| q.admit(1, ENCRYPT).is_ok()).count(), 10);
    q.reload(
        Limits::from_config(&config(
            QuotaProfile::Kmsd,
            vec![limit("*", "cryptographic", 100.0, Some(10.0))],
        ), &AwsConfig::default())
        .unwrap(),
    );
    // Spent: nothing more at this instant, even with a higher rate.
    assert!(q.admit(1, ENCRYPT).is_err());
    // At 100/s, 100 ms gives 10 more (the old rate would give 1).
    now.fetch_add(100_000_000, Ordering::Relaxed);
    assert_eq!((0..20).filter(|_| q.admit(1, ENCRYPT).is_ok()).count(), 10);
}

#[test]
fn bad_entries_are_refused_with_their_reason() {
    let cases = [
        (limit("*", "no-such-class", 1.0, None), "no class \"no-such-class\""),
        (limit("gid:4", "cryptographic", 1.0, None), "quotas are per uid"),
        (limit("uid:x", "cryptographic", 1.0, None), "uid:N needs a number"),
        (limit("user:no-such-user-kmsd", "cryptographic", 1.0, None), "no such user"),
        (limit("*", "cryptographic", 0.0, None), "rate must be above 0"),
        (limit("*", "cryptographic", f64::NAN, None), "rate must be above 0"),
        (limit("*", "cryptographic", 1.0, Some(0.5)), "burst must be"),
    ];
    for (entry, want) in cases {
        let e = Limits::from_config(&config(QuotaProfile::Kmsd, vec![entry]), &AwsConfig::default()).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
    // An aws class name is not a kmsd one.
    let e = Limits::from_config(&config(
        QuotaProfile::Kmsd,
        vec![limit("*", "CreateKey", 1.0, None)],
    ), &AwsConfig::default())
    .unwrap_err();
    assert!(e.contains("management-read"), "lists the classes: {e}");
    assert!(Limits::from_config(&config(
        QuotaProfile::Aws,
        vec![limit("uid:0", "CreateKey", 1.0, None)]
    ), &AwsConfig::default())
    .is_ok());
}

#[test]
fn concurrent_callers_of_one_bucket_never_get_more_than_it_holds() {
    let (q, _now) = manual(&config(
        QuotaProfile::Kmsd,
        vec![limit("*", "cryptographic", 1.0, Some(10_000.0))],
    ));
    let allowed = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    if q.admit(3, ENCRYPT).is_ok() {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.into_inner(), 10_000);
}

#[test]
fn per_key_rate_is_shared_by_every_caller_of_the_key() {
    let mut c = config(QuotaProfile::Kmsd, vec![]);
    c.per_key_rate = 1.0;
    c.per_key_burst = Some(3.0);
    let (q, _now) = manual(&c);
    let key = AtomicU64::new(0);
    let other = AtomicU64::new(0);
    assert_eq!((0..10).filter(|_| q.admit_key(&key).is_ok()).count(), 3);
    assert!(q.admit_key(&other).is_ok());
    assert!(q
        .throttled()
        .contains(&("key:*".into(), "per-key".into(), 7)));
}

/// Through the service: a batch's items count one each, and a per-key
/// limit applies to whoever uses the key.
#[test]
fn a_batch_counts_per_item_through_the_service() {
    use crate::service::ops::test_support::TestService;
    use crate::identity::Identity;
    use kms_proto::codec;
    use kms_proto::*;
    let t = TestService::new();
    let key = t.create_key();
    t.svc.quotas().reload(
        Limits::from_config(&config(
            QuotaProfile::Kmsd,
            vec![limit("*", "cryptographic", 0.001, Some(5.0))],
        ), &AwsConfig::default())
        .unwrap(),
    );
    let op = || {
        Ok(Operation::GenerateDataKey(GenerateDataKey {
            key_id: &key,
            number_of_bytes: Some(32),
            ..Default::default()
        }))
    };
    let mut frame = Vec::new();
    codec::encode_request(
        &mut flatbuffers::FlatBufferBuilder::new(),
        &Request {
            request_id: 1,
            body: RequestBody::Batch((0..8).map(|_| op()).collect()),
        },
        &mut frame,
    );
    let mut out = Vec::new();
    crate::wire::handle_frame(&t.svc, &frame[4..], &Identity::local(0, 0, 1), &mut out);
    let r = codec::decode_response(&out[4..], 1 << 20).unwrap();
    let ResponseBody::Batch(items) = r.body else {
        panic!("{:?}", r.body)
    };
    let kinds: Vec<_> = items.iter().map(|o| o.as_ref().err().map(|e| e.kind)).collect();
    assert_eq!(
        kinds,
        [None, None, None, None, None]
            .into_iter()
            .chain([Some(ErrorKind::Throttling); 3])
            .collect::<Vec<_>>()
    );
    // Another uid has its own bucket.
    let other = Identity::local(4242, 4242, 1);
    let e = t.svc.call(&op().unwrap(), &other).unwrap_err();
    // ... but no permission on the key: the quota came first and passed,
    // then the policy refused.
    assert_eq!(e.kind, ErrorKind::AccessDenied);
}
