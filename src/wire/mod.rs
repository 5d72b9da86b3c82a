//! The flatbuffers edge: the one place a request frame is decoded
//! ([`admit`]) and an answer encoded ([`answer`]). The service in between
//! sees only typed requests and outputs, so another encoding (AWS's JSON
//! API) can sit beside this one without touching the operations.
//!
//! [`admit`] decodes a frame once and yields everything later stages need
//! ([`Admitted`]): the typed request (borrowing the frame: zero-copy), the
//! answer's bound and which items run under it, the plane, the keys the
//! request needs and which of them are cached, its payload, and whether it
//! needs the HSM executor. The decoded request travels with its frame
//! ([`AdmittedFrame`], a `yoke`: the request borrows the frame it lives
//! beside), so routing, the inline decision, the budgets, the worker and
//! the HSM executor never decode it again; later, the policy check, the
//! quota check and the audit record hang off the same place.

mod admit;
mod answer;
pub mod bound;

pub use admit::{admit, AdmittedFrame};
#[cfg(any(test, feature = "internals"))]
pub use admit::{admit_slice, Admitted};
#[cfg(any(test, feature = "internals"))]
pub use answer::handle_frame;
pub use answer::{answer, fail, reject, AnswerOptions, NotRun};

/// The default largest answer frame: the default largest request frame.
pub const DEFAULT_MAX_ANSWER: usize = kms_proto::frame::DEFAULT_MAX_FRAME;

#[cfg(test)]
mod tests {
    use super::bound::answer_plan;
    use super::*;
    use crate::crypto::KeyMaterial;
    use crate::identity::Identity;
    use crate::keystore::Keystore;
    use crate::root::FileRoot;
    use crate::service::Service;
    use flatbuffers::FlatBufferBuilder;
    use kms_proto::{CreateKey, ListKeys};
    use kms_proto::{DecodeLimits, ErrorKind};
    use kms_proto::{Operation, Output, Request, RequestBody, ResponseBody};
    use std::sync::Arc;

    const PEER: Identity = Identity::local(0, 0, 1);

    fn service() -> Service {
        Service::with_store(
            Keystore::open_in_memory().unwrap(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
            DecodeLimits::default(),
            10_000,
        )
        .unwrap()
    }

    fn create(svc: &Service, description: &str) -> String {
        let op = Operation::CreateKey(CreateKey {
            description,
            ..CreateKey::default()
        });
        match svc.call(&op, &PEER).unwrap() {
            Output::CreateKey(m) => m.key_id,
            other => panic!("{other:?}"),
        }
    }

    fn frame(body: RequestBody<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        kms_proto::codec::encode_request(
            &mut FlatBufferBuilder::new(),
            &Request {
                request_id: 7,
                body,
            },
            &mut out,
        );
        out
    }

    /// Runs a frame (without its length prefix) as a worker would.
    fn answer(svc: &Service, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        handle_frame(svc, &frame[4..], &PEER, &mut out);
        out
    }

    #[test]
    fn a_batch_whose_answer_would_exceed_the_bound_runs_only_the_items_that_fit() {
        // The case: 1,024 ListKeys(Limit 1000) over 1,000 keys was
        // one answer of 127 MB.
        let svc = service();
        for _ in 0..1000 {
            create(&svc, "");
        }
        let list = || {
            Ok(Operation::ListKeys(ListKeys {
                limit: 1000,
                marker: None,
            }))
        };
        let f = frame(RequestBody::Batch((0..1024).map(|_| list()).collect()));
        let out = answer(&svc, &f);
        assert!(
            out.len() <= DEFAULT_MAX_ANSWER,
            "answer of {} bytes",
            out.len()
        );
        let r = kms_proto::decode_response(&out[4..], 1 << 30).unwrap();
        assert_eq!(r.request_id, 7);
        let ResponseBody::Batch(items) = r.body else {
            panic!("a batch answer")
        };
        assert_eq!(items.len(), 1024);
        let runs = items.iter().take_while(|o| o.is_ok()).count();
        // One page of 1,000 keys per answer: clients accept no more tables.
        assert_eq!(runs, 1);
        for o in &items[..runs] {
            let Ok(Output::ListKeys(l)) = o else {
                panic!("{o:?}")
            };
            assert_eq!(l.keys.len(), 1000);
        }
        for o in &items[runs..] {
            let e = o.as_ref().expect_err("past the bound");
            assert_eq!(e.kind, ErrorKind::Validation);
            assert!(e.message.contains("largest answer frame"), "{e}");
        }
        // The plan said so before anything ran.
        let req = kms_proto::decode_request(&f[4..], &DecodeLimits::default()).unwrap();
        let plan = answer_plan(&req, DEFAULT_MAX_ANSWER);
        assert_eq!(plan.runs, runs);
        assert!(out.len() <= plan.bound);
        // A single request over a (small) bound gets the same error.
        let single = frame(RequestBody::Single(list()));
        let req = kms_proto::decode_request(&single[4..], &DecodeLimits::default()).unwrap();
        assert_eq!(answer_plan(&req, 100_000).runs, 0);
    }

    #[test]
    fn answer_bounds_hold_for_the_largest_answers_and_errors() {
        use kms_proto::types::limits::{MAX_DESCRIPTION_LEN, MAX_PLAINTEXT};
        let svc = service();
        // The longest description: 8192 four-byte characters.
        let long = "\u{10348}".repeat(MAX_DESCRIPTION_LEN);
        let key = create(&svc, &long);
        let blob = match svc
            .call(
                &Operation::Encrypt(kms_proto::Encrypt {
                    key_id: &key,
                    plaintext: &[1; MAX_PLAINTEXT],
                    context: vec![],
                    ..Default::default()
                }),
                &PEER,
            )
            .unwrap()
        {
            Output::Encrypt(o) => o.ciphertext_blob,
            other => panic!("{other:?}"),
        };
        // Client text quoted in errors, escaped as much as possible.
        let bad_id = "\u{1}".repeat(2048);
        let dup = "\u{1}".repeat(4000);
        let gdk = |key_id, n, context| {
            Operation::GenerateDataKey(kms_proto::GenerateDataKey {
                key_id,
                number_of_bytes: Some(n),
                key_spec: None,
                context,
                ..Default::default()
            })
        };
        let ops = vec![
            Operation::DescribeKey(kms_proto::DescribeKey {
                key_id: &key,
                ..Default::default()
            }),
            Operation::DescribeKey(kms_proto::DescribeKey {
                key_id: &bad_id,
                ..Default::default()
            }),
            Operation::CreateKey(CreateKey {
                description: &long,
                ..CreateKey::default()
            }),
            Operation::ListKeys(ListKeys {
                limit: 1000,
                marker: None,
            }),
            gdk(&key, 1024, vec![]),
            gdk(&key, 1024, vec![(&dup, "a"), (&dup, "b")]),
            gdk(&bad_id, 1024, vec![]),
            Operation::GenerateDataKeyWithoutPlaintext(kms_proto::GenerateDataKey {
                key_id: &key,
                number_of_bytes: Some(1024),
                key_spec: None,
                context: vec![],
                ..Default::default()
            }),
            Operation::Encrypt(kms_proto::Encrypt {
                key_id: &key,
                plaintext: &[2; MAX_PLAINTEXT],
                context: vec![],
                ..Default::default()
            }),
            Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: &blob,
                key_id: None,
                context: vec![],
                ..Default::default()
            }),
            Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: &blob,
                key_id: Some(&bad_id),
                context: vec![],
                ..Default::default()
            }),
            Operation::ReEncrypt(kms_proto::ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: vec![],
                destination_key_id: &key,
                destination_context: vec![(&dup, "a"), (&dup, "b")],
                ..Default::default()
            }),
            Operation::ReEncrypt(kms_proto::ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: vec![],
                destination_key_id: &key,
                destination_context: vec![],
                ..Default::default()
            }),
            Operation::GenerateRandom(kms_proto::GenerateRandom {
                number_of_bytes: 1024,
            }),
            Operation::GenerateRandom(kms_proto::GenerateRandom {
                number_of_bytes: 5000,
            }),
        ];
        for op in &ops {
            let f = frame(RequestBody::Single(Ok(op.clone())));
            let req = kms_proto::decode_request(&f[4..], &DecodeLimits::default()).unwrap();
            let bound = answer_plan(&req, DEFAULT_MAX_ANSWER).bound;
            let out = answer(&svc, &f);
            assert!(out.len() <= bound, "{op:?}: {} > {bound}", out.len());
        }
        // And all of them in one batch.
        let f = frame(RequestBody::Batch(ops.into_iter().map(Ok).collect()));
        let req = kms_proto::decode_request(&f[4..], &DecodeLimits::default()).unwrap();
        let plan = answer_plan(&req, DEFAULT_MAX_ANSWER);
        assert_eq!(plan.runs, 15);
        assert!(answer(&svc, &f).len() <= plan.bound);
    }
}
