//! VerifyAuditSeals on the wire: its request and answer round-trip, and
//! seals of the wrong size or too many are refused at decoding.

use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{decode_request, encode_request, encode_response};
use kms_proto::*;

fn frame(op: Operation<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(
        &mut FlatBufferBuilder::new(),
        &Request {
            request_id: 9,
            body: RequestBody::Single(Ok(op)),
        },
        &mut out,
    );
    out
}

fn seals(n: usize) -> Vec<AuditSeal> {
    (0..n as u64)
        .map(|i| AuditSeal {
            seq: i + 1,
            prev_hash: [i as u8; 32],
            mac: [!(i as u8); 32],
        })
        .collect()
}

#[test]
fn requests_and_answers_round_trip() {
    for n in [0, 1, 3, limits::MAX_AUDIT_SEALS] {
        let op = Operation::VerifyAuditSeals(VerifyAuditSeals { seals: seals(n) });
        let f = frame(op.clone());
        assert!(
            f.len() - 4
                <= codec::request_size_bound(&Request {
                    request_id: 9,
                    body: RequestBody::Single(Ok(op.clone())),
                })
        );
        let r = decode_request(&f[4..], &DecodeLimits::default()).unwrap();
        assert_eq!(r.body, RequestBody::Single(Ok(op)));
    }
    let resp = Response {
        request_id: 9,
        body: ResponseBody::Single(Ok(Output::VerifyAuditSeals(VerifyAuditSealsOutput {
            valid: vec![true, false, true],
            head_seq: 12345,
            head_hash: [7; 32],
        }))),
    };
    let mut out = Vec::new();
    encode_response(&mut FlatBufferBuilder::new(), &resp, &mut out);
    assert!(out.len() <= codec::response_size_hint(&resp) + 4);
    assert_eq!(decode_response(&out[4..], 1 << 20).unwrap(), resp);
}

#[test]
fn too_many_seals_are_a_validation_error() {
    let op = Operation::VerifyAuditSeals(VerifyAuditSeals {
        seals: seals(limits::MAX_AUDIT_SEALS + 1),
    });
    let f = frame(op);
    let r = decode_request(&f[4..], &DecodeLimits::default()).unwrap();
    let RequestBody::Single(Err(e)) = r.body else {
        panic!("{:?}", r.body)
    };
    assert_eq!(e.kind, ErrorKind::Validation);
}

// ------------------------------------------------------------- golden frames

/// kmsd's own operations of issue 13 (GetStatus, VerifyAuditSeals), their
/// requests in one batch and their answers in another, pinned byte for
/// byte in `proto/tests/golden/own/` (the union tags 39 and 40 with them).
/// After an intended, compatible change: `KMS_UPDATE_GOLDEN=1 cargo test
/// -p kms-proto --test audit golden`.
#[test]
fn golden_frames_of_kmsds_own_operations() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/own");
    let check = |name: &str, wire: &[u8]| {
        let path = dir.join(name);
        if std::env::var_os("KMS_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, wire).unwrap();
            return;
        }
        let want = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write it with KMS_UPDATE_GOLDEN=1 cargo test -p kms-proto --test audit golden",
                path.display()
            )
        });
        assert!(
            want == wire,
            "{name}: the encoding changed (the wire format is pinned)"
        );
    };
    let request = Request {
        request_id: 77,
        body: RequestBody::Batch(vec![
            Ok(Operation::GetStatus(GetStatus)),
            Ok(Operation::VerifyAuditSeals(VerifyAuditSeals {
                seals: seals(2),
            })),
        ]),
    };
    let mut wire = Vec::new();
    encode_request(&mut FlatBufferBuilder::new(), &request, &mut wire);
    check("request_batch.bin", &wire);
    assert_eq!(
        decode_request(&wire[4..], &DecodeLimits::default()).unwrap(),
        request
    );
    let response = Response {
        request_id: 77,
        body: ResponseBody::Batch(vec![
            Ok(Output::GetStatus(GetStatusOutput {
                version: "0.1.0".into(),
                uptime_ms: 1_234,
                metrics: vec![MetricSample {
                    name: "kmsd_requests_total".into(),
                    kind: MetricKind::Counter,
                    labels: vec![("operation".into(), "Encrypt".into())],
                    value: 3.0,
                    ..MetricSample::default()
                }],
            })),
            Ok(Output::VerifyAuditSeals(VerifyAuditSealsOutput {
                valid: vec![true, false],
                head_seq: 42,
                head_hash: [9; 32],
            })),
        ]),
    };
    let mut wire = Vec::new();
    encode_response(&mut FlatBufferBuilder::new(), &response, &mut wire);
    check("response_batch.bin", &wire);
    assert_eq!(
        kms_proto::codec::decode_response(&wire[4..], 1 << 20).unwrap(),
        response
    );
}
