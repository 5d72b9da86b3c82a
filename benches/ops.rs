//! Each operation in-process through `Service::call` (no socket, no queue),
//! with the raw crypto beside it as the naive baseline: the service's own
//! overhead is the difference. Also: naming a key by alias against by key
//! id (the resolution alone, and GenerateDataKey both through
//! `Service::call` and as a whole frame, admission included).

use aes_gcm::aead::{AeadInOut, KeyInit};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_proto::*;
use kmsd::crypto::{CanonicalContext, KeyMaterial};
use kmsd::identity::Identity;
use kmsd::keystore::Keystore;
use kmsd::root::FileRoot;
use kmsd::service::Service;
use std::sync::Arc;

const PEER: Identity = Identity::local(0, 0, 0);

fn bench(c: &mut Criterion) {
    let svc = Service::with_store(
        Keystore::open_in_memory().unwrap(),
        Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([3; 32]))),
        DecodeLimits::default(),
        1000,
    )
    .unwrap();
    let key = match svc
        .call(&Operation::CreateKey(CreateKey::default()), &PEER)
        .unwrap()
    {
        Output::CreateKey(m) => m.key_id,
        _ => unreachable!(),
    };
    let ctx = vec![("tenant", "acme"), ("purpose", "bench")];
    let mut g = c.benchmark_group("ops");
    g.throughput(Throughput::Elements(1));
    let gdk = Operation::GenerateDataKey(GenerateDataKey {
        key_id: &key,
        number_of_bytes: Some(32),
        key_spec: None,
        context: ctx.clone(),
        ..Default::default()
    });
    g.bench_function("GenerateDataKey_32B", |b| {
        b.iter(|| svc.call(&gdk, &PEER).unwrap())
    });
    let gdkwp = Operation::GenerateDataKeyWithoutPlaintext(GenerateDataKey {
        key_id: &key,
        number_of_bytes: Some(32),
        key_spec: None,
        context: ctx.clone(),
        ..Default::default()
    });
    g.bench_function("GenerateDataKeyWithoutPlaintext_32B", |b| {
        b.iter(|| svc.call(&gdkwp, &PEER).unwrap())
    });
    for size in [32usize, 4096] {
        let pt = vec![0x42u8; size];
        let enc = Operation::Encrypt(Encrypt {
            key_id: &key,
            plaintext: &pt,
            context: ctx.clone(),
            ..Default::default()
        });
        g.bench_function(format!("Encrypt_{size}B"), |b| {
            b.iter(|| svc.call(&enc, &PEER).unwrap())
        });
        let blob = match svc.call(&enc, &PEER).unwrap() {
            Output::Encrypt(o) => o.ciphertext_blob,
            _ => unreachable!(),
        };
        let dec = Operation::Decrypt(Decrypt {
            ciphertext_blob: &blob,
            key_id: None,
            context: ctx.clone(),
            ..Default::default()
        });
        g.bench_function(format!("Decrypt_{size}B"), |b| {
            b.iter(|| svc.call(&dec, &PEER).unwrap())
        });
        if size == 32 {
            let re = Operation::ReEncrypt(ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: ctx.clone(),
                destination_key_id: &key,
                destination_context: ctx.clone(),
                ..Default::default()
            });
            g.bench_function("ReEncrypt_32B", |b| {
                b.iter(|| svc.call(&re, &PEER).unwrap())
            });
        }
    }
    // Aliases: 50 on the key (AWS's limit per key), one of them used.
    for i in 0..50 {
        let name = format!("alias/bench/{i:02}");
        svc.call(
            &Operation::CreateAlias(CreateAlias {
                alias_name: &name,
                target_key_id: &key,
            }),
            &PEER,
        )
        .unwrap();
    }
    let alias = "alias/bench/07";
    let gdk_alias = Operation::GenerateDataKey(GenerateDataKey {
        key_id: alias,
        number_of_bytes: Some(32),
        key_spec: None,
        context: ctx.clone(),
        ..Default::default()
    });
    g.bench_function("GenerateDataKey_32B_by_alias", |b| {
        b.iter(|| svc.call(&gdk_alias, &PEER).unwrap())
    });
    // Whole frames: admission resolves the name too.
    for (name, op) in [("by_id", &gdk), ("by_alias", &gdk_alias)] {
        let mut frame = Vec::new();
        encode_request(
            &mut flatbuffers::FlatBufferBuilder::new(),
            &Request {
                request_id: 1,
                body: RequestBody::Single(Ok(op.clone())),
            },
            &mut frame,
        );
        let mut out = Vec::new();
        g.bench_function(format!("frame_GenerateDataKey_32B_{name}"), |b| {
            b.iter(|| {
                out.clear();
                kmsd::wire::handle_frame(&svc, &frame[4..], &PEER, &mut out);
                out.len()
            })
        });
    }
    let rnd = Operation::GenerateRandom(GenerateRandom {
        number_of_bytes: 32,
    });
    g.bench_function("GenerateRandom_32B", |b| {
        b.iter(|| svc.call(&rnd, &PEER).unwrap())
    });
    g.finish();

    // Resolving a client's key name to a key id.
    let mut g = c.benchmark_group("resolve");
    g.throughput(Throughput::Elements(1));
    let arn = format!("{}{key}", svc.arns().key_arn_prefix());
    let alias_arn = svc.arns().alias_arn(alias);
    let legacy_arn = format!("arn:kmsd:kms:local:key/{key}");
    for (name, s) in [
        ("key_id", key.as_str()),
        ("key_arn", arn.as_str()),
        ("alias", alias),
        ("alias_arn", alias_arn.as_str()),
        ("legacy_key_arn", legacy_arn.as_str()),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                svc.resolve_key_id(std::hint::black_box(s), "KeyId")
                    .unwrap()
            })
        });
    }
    g.finish();

    // Baselines: the crypto alone.
    let mut g = c.benchmark_group("crypto");
    g.throughput(Throughput::Elements(1));
    let gcm = aes_gcm::Aes256Gcm::new(&[5u8; 32].into());
    let nonce = [0u8; 12];
    g.bench_function("aes256gcm_cached_key_seal_32B", |b| {
        b.iter(|| {
            let mut buf = [0x42u8; 32];
            gcm.encrypt_inout_detached(&nonce.into(), b"", (&mut buf[..]).into())
                .unwrap()
        })
    });
    let xaes = kmsd::crypto::XaesKey::new(&KeyMaterial::from_bytes([5; 32]));
    g.bench_function("xaes256gcm_seal_32B", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(48);
            buf.extend_from_slice(&[0x42u8; 32]);
            xaes.seal_in_place(&[1; 24], b"", &mut buf);
            buf
        })
    });
    g.bench_function("canonical_context_2_pairs", |b| {
        b.iter(|| CanonicalContext::new(&ctx).unwrap())
    });
    g.bench_function("rng_32B", |b| {
        b.iter(|| {
            let mut k = [0u8; 32];
            kmsd::crypto::rng::fill(&mut k);
            k
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
