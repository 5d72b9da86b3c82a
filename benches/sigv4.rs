//! What the AWS JSON endpoint's SigV4 check costs per request: a KMS
//! Encrypt request exactly as botocore signs it
//! (tests/data/sigv4/botocore-kms/encrypt.http: four signed headers, a
//! 109-byte body), verified with the per-day signing-key cache (the
//! steady state: one HMAC of the string to sign, SHA-256 of the body and
//! of the canonical request), against the naive baseline that derives the
//! signing key for every request (four HMACs more).
//!
//! `cargo bench --features internals --bench sigv4`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kmsd::http::sigv4::{Credentials, Verifier};
use std::time::{Duration, UNIX_EPOCH};

/// The request's head and body, from the raw capture.
fn request() -> (http::request::Parts, Vec<u8>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/sigv4/botocore-kms/encrypt.http"
    );
    let raw = std::fs::read(path).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let mut builder = http::Request::builder()
        .method(first.next().unwrap())
        .uri(first.next().unwrap());
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        builder = builder.header(name, value.trim());
    }
    (
        builder.body(()).unwrap().into_parts().0,
        raw[split + 4..].to_vec(),
    )
}

fn bench(c: &mut Criterion) {
    let (parts, body) = request();
    // 20260314T150926Z, the request's X-Amz-Date.
    let now = UNIX_EPOCH + Duration::from_secs(1_773_500_966);
    let verifier = |cache: bool| {
        Verifier::new(
            Credentials::from_secrets(&[(
                "AKIAKMSDTESTEXAMPLE",
                "kmsdTestSecret/K7MDENG+bPxRfiCYEXAMPLEKEY",
                1000,
                1000,
            )]),
            "eu-west-3",
        )
        .with_signing_key_cache(cache)
    };
    let mut g = c.benchmark_group("sigv4");
    g.throughput(Throughput::Elements(1));
    for (name, v) in [
        ("verify, key cached", verifier(true)),
        ("verify, key derived (naive)", verifier(false)),
    ] {
        assert!(v.verify(&parts, &body, now).is_ok());
        g.bench_function(name, |b| b.iter(|| v.verify(&parts, &body, now).is_ok()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
