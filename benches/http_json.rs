//! The AWS JSON codec (`kmsd::http::json`) on the data path: decoding the
//! bodies of GenerateDataKey, Encrypt and Decrypt as an AWS SDK sends
//! them, and encoding their answers. Beside each, the naive baseline:
//! serde_json into a generic `Value` (what a codec without typed inputs
//! would pay before reading a single member), and serde_json serializing
//! a `Value` of the answer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kms_proto::{DecryptOutput, EncryptOutput, GenerateDataKeyOutput, Output, SecretBytes};
use kmsd::http::json::{encode_output, JsonLimits, JsonRequest};
use serde_json::{json, Value};

const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1b4e28ba-2fa1-41d2-883f-0016d3cca427";

fn bodies() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let ctx = json!({"tenant": "acme", "purpose": "bench"});
    let blob = STANDARD.encode([7u8; 93]);
    let body = |v: Value| v.to_string().into_bytes();
    vec![
        (
            "GenerateDataKey",
            "GenerateDataKey",
            body(json!({"KeyId": ARN, "KeySpec": "AES_256", "EncryptionContext": ctx})),
        ),
        (
            "Encrypt/32B",
            "Encrypt",
            body(
                json!({"KeyId": ARN, "Plaintext": STANDARD.encode([1u8; 32]), "EncryptionContext": ctx}),
            ),
        ),
        (
            "Encrypt/4KiB",
            "Encrypt",
            body(
                json!({"KeyId": ARN, "Plaintext": STANDARD.encode([1u8; 4096]), "EncryptionContext": ctx}),
            ),
        ),
        (
            "Decrypt",
            "Decrypt",
            body(json!({"CiphertextBlob": blob, "EncryptionContext": ctx})),
        ),
    ]
}

fn outputs() -> Vec<(&'static str, Output, Value)> {
    let ct = vec![7u8; 93];
    let pt = vec![1u8; 32];
    vec![
        (
            "GenerateDataKey",
            Output::GenerateDataKey(GenerateDataKeyOutput {
                key_id: ARN.into(),
                plaintext: SecretBytes::new(pt.clone()),
                ciphertext_blob: ct.clone(),
            }),
            json!({"CiphertextBlob": STANDARD.encode(&ct), "Plaintext": STANDARD.encode(&pt), "KeyId": ARN}),
        ),
        (
            "Encrypt",
            Output::Encrypt(EncryptOutput {
                key_id: ARN.into(),
                ciphertext_blob: ct.clone(),
            }),
            json!({"CiphertextBlob": STANDARD.encode(&ct), "KeyId": ARN, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
        ),
        (
            "Decrypt",
            Output::Decrypt(DecryptOutput {
                key_id: ARN.into(),
                plaintext: SecretBytes::new(pt.clone()),
            }),
            json!({"KeyId": ARN, "Plaintext": STANDARD.encode(&pt), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let limits = JsonLimits::default();
    for (label, op, body) in bodies() {
        let mut g = c.benchmark_group(format!("http_json/decode/{label}"));
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function("json_request", |b| {
            b.iter(|| JsonRequest::decode(op, &body, &limits).unwrap())
        });
        g.bench_function("baseline_serde_value", |b| {
            b.iter(|| serde_json::from_slice::<Value>(&body).unwrap())
        });
        g.finish();
    }
    for (label, output, value) in outputs() {
        let mut g = c.benchmark_group(format!("http_json/encode/{label}"));
        let mut out = Vec::with_capacity(1024);
        g.bench_function("encode_output", |b| {
            b.iter(|| {
                out.clear();
                encode_output(&output, &mut out);
            })
        });
        g.bench_function("baseline_serde_value", |b| {
            b.iter(|| {
                out.clear();
                serde_json::to_writer(&mut out, &value).unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
