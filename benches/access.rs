//! Authorization on the data path: a cached decision (the common case:
//! the same connection asking the same thing of a cached key), against
//! evaluating the key's policy every time, for a typical policy and for a
//! long one (the cache's worth grows with the policy).
//!
//! Also what accept pays per connection for the supplementary groups,
//! cgroup and unit, and what a quota check costs per item (allowed, with
//! and without per-uid entries, and refused).
//!
//! `cargo bench --features internals --bench access`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_policy::Action;
use kms_proto::*;
use kmsd::crypto::KeyMaterial;
use kmsd::identity::{Identity, PeerDetails};
use kmsd::keystore::Keystore;
use kmsd::root::FileRoot;
use kmsd::service::access::Ask;
use kmsd::service::{Service, Site};
use std::sync::Arc;

const ADMIN: Identity = Identity::local(0, 0, 0);

/// The default policy's shape plus a service that may encrypt only with
/// its tenant's context.
const TYPICAL: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Sid":"admins","Effect":"Allow","Principal":{"AWS":["uid:0","gid:0"]},"Action":"kms:*","Resource":"*"},
 {"Sid":"creator","Effect":"Allow","Principal":{"AWS":"uid:1000"},"Action":["kms:Encrypt","kms:Decrypt","kms:ReEncrypt*","kms:GenerateDataKey*","kms:DescribeKey"],"Resource":"*"},
 {"Sid":"service B","Effect":"Allow","Principal":{"AWS":"uid:2001"},"Action":"kms:Decrypt","Resource":"*",
  "Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"B"}}}]}"#;

/// 100 statements for other principals before the one that allows.
fn long_policy() -> String {
    let mut statements = vec![
        r#"{"Effect":"Allow","Principal":{"AWS":"uid:0"},"Action":"kms:*","Resource":"*"}"#
            .to_owned(),
    ];
    for i in 0..100 {
        statements.push(format!(
            r#"{{"Effect":"Allow","Principal":{{"AWS":"uid:{}"}},"Action":["kms:Decrypt","kms:Encrypt"],"Resource":"*","Condition":{{"StringLike":{{"kms:EncryptionContext:tenant":"t{i}-*"}}}}}}"#,
            5000 + i
        ));
    }
    statements.push(r#"{"Effect":"Allow","Principal":{"AWS":"uid:2001"},"Action":"kms:Decrypt","Resource":"*","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"B"}}}"#.to_owned());
    format!(r#"{{"Statement":[{}]}}"#, statements.join(","))
}

fn bench(c: &mut Criterion) {
    let svc = Service::with_store(
        Keystore::open_in_memory().unwrap(),
        Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([3; 32]))),
        DecodeLimits::default(),
        1000,
    )
    .unwrap();
    let mut g = c.benchmark_group("authorize");
    g.throughput(Throughput::Elements(1));
    for (name, policy) in [
        ("typical", TYPICAL.to_owned()),
        ("100_statements", long_policy()),
    ] {
        let key = match svc
            .call(&Operation::CreateKey(CreateKey::default()), &ADMIN)
            .unwrap()
        {
            Output::CreateKey(m) => m.key_id,
            _ => unreachable!(),
        };
        let id = svc.parse_key_id(&key).unwrap();
        svc.set_key_policy(&ADMIN, &id, &policy).unwrap();
        let loaded = svc
            .load_key(&id, Site::Blocking { prefetched: None })
            .unwrap();
        let ctx = [("tenant", "B"), ("purpose", "bench")];
        let ask = Ask::context(&ctx);
        // A connection (decisions cached) and an in-process caller (never
        // cached: every call evaluates), both service B.
        let conn = Identity::accepted(2001, 2001, 1, PeerDetails::default());
        let local = Identity::local(2001, 2001, 1);
        svc.authorize_loaded(&conn, &loaded, Action::Decrypt, &ask)
            .unwrap();
        g.bench_function(format!("{name}/cached"), |b| {
            b.iter(|| {
                svc.authorize_loaded(&conn, &loaded, Action::Decrypt, &ask)
                    .unwrap()
            })
        });
        g.bench_function(format!("{name}/evaluated"), |b| {
            b.iter(|| {
                svc.authorize_loaded(&local, &loaded, Action::Decrypt, &ask)
                    .unwrap()
            })
        });
    }
    g.finish();

    // What accept pays per connection for the rest of the identity:
    // SO_PEERGROUPS, SO_PEERPIDFD, the pidfd's pid and the cgroup file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    c.bench_function("accept/peer_details", |b| {
        b.iter(|| kmsd::transport::peer::peer_details(std::os::fd::AsFd::as_fd(&accepted)))
    });
}

/// The quota check every item takes (`Quotas::admit`, docs/quotas.md).
fn quota(c: &mut Criterion) {
    use kmsd::config::{AwsConfig, QuotaLimit, QuotaProfile, QuotasConfig};
    use kmsd::quota::{op_index, Quotas};
    let limit = |principal: &str, rate: f64| QuotaLimit {
        principal: principal.into(),
        class: "cryptographic".into(),
        rate: Some(rate),
        burst: None,
        unlimited: false,
    };
    let gdk = op_index("GenerateDataKey");
    let mut g = c.benchmark_group("quota");
    g.throughput(Throughput::Elements(1));
    let plain = Quotas::from_config(
        &QuotasConfig {
            profile: QuotaProfile::Kmsd,
            limit: vec![limit("*", 1e9)],
            ..Default::default()
        },
        &AwsConfig::default(),
    )
    .unwrap();
    g.bench_function("admit/allowed", |b| b.iter(|| plain.admit(1000, gdk)));
    let overrides = Quotas::from_config(
        &QuotasConfig {
            profile: QuotaProfile::Kmsd,
            limit: (0..100)
                .map(|u| limit(&format!("uid:{u}"), 1e9))
                .chain([limit("uid:1000", 1e9)])
                .collect(),
            ..Default::default()
        },
        &AwsConfig::default(),
    )
    .unwrap();
    g.bench_function("admit/allowed-100-entries", |b| {
        b.iter(|| overrides.admit(1000, gdk))
    });
    let tight = Quotas::from_config(
        &QuotasConfig {
            profile: QuotaProfile::Kmsd,
            limit: vec![limit("*", 1.0)],
            ..Default::default()
        },
        &AwsConfig::default(),
    )
    .unwrap();
    let _ = tight.admit(1000, gdk);
    g.bench_function("admit/refused", |b| b.iter(|| tight.admit(1000, gdk)));
    g.finish();
}

criterion_group!(benches, bench, quota);
criterion_main!(benches);
