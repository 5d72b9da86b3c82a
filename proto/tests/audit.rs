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
