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

pub mod bound;

use crate::identity::Identity;
use crate::service::keys::{KeyRef, Needed};
use crate::service::op::{self, ExecError, PlaneKind, Site};
use crate::service::Service;
use bound::{answer_plan, answer_too_large, AnswerPlan};
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{encode_error_response, encode_response, response_size_hint, RequestError};
use kms_proto::frame::Frame;
use kms_proto::{KmsError, Operation, Output, Request, RequestBody, Response, ResponseBody};
use std::cell::RefCell;
use yoke::{Yoke, Yokeable};

/// Inline (I/O-thread) execution is limited to requests this small, so that
/// one connection's big batch cannot stall the other connections of its
/// I/O thread. Larger requests go to the worker pool.
const INLINE_MAX_ITEMS: usize = 64;
const INLINE_MAX_PAYLOAD: usize = 64 * 1024;

/// A decoded request and what every later stage needs to know about it.
#[derive(Yokeable)]
pub struct Admitted<'f> {
    /// The typed request, borrowing the frame.
    pub request: Request<'f>,
    /// Which items run and the bound of the answer frame.
    pub plan: AnswerPlan,
    /// Control if any item is a control-plane operation.
    pub plane: PlaneKind,
    /// The keys the request needs (sorted by key, no repeats).
    pub keys: Vec<Needed>,
    /// Client payload bytes over all items.
    pub payload: usize,
    /// Items (1 for a single request).
    pub items: usize,
    /// Heap bytes the items' decoded forms hold (contexts).
    pub heap: usize,
    /// It uses an HSM-only key (a cached one, or a format 2 ciphertext):
    /// it runs on the HSM executor.
    pub hsm: bool,
}

impl Admitted<'_> {
    /// Small enough to run on an I/O thread (a data-plane request of at
    /// most 64 items and 64 KiB of payload).
    pub fn small(&self) -> bool {
        self.plane == PlaneKind::Data
            && self.items <= INLINE_MAX_ITEMS
            && self.payload <= INLINE_MAX_PAYLOAD
    }

    /// Heap bytes its decoded form holds beyond the frame (the items,
    /// their encryption contexts, the keys), charged to the byte budgets
    /// with the frame.
    pub fn decoded_bytes(&self) -> usize {
        self.items * std::mem::size_of::<Result<Operation<'_>, KmsError>>()
            + self.heap
            + self.keys.len() * std::mem::size_of::<Needed>()
    }

    /// Whether every key it needs was cached at admission.
    pub fn all_cached(&self) -> bool {
        self.keys.iter().all(|n| n.cached.is_some())
    }

    /// The keys that were not cached at admission: what the key loader
    /// fetches before the request runs.
    pub fn missing(&self) -> Vec<KeyRef> {
        self.keys
            .iter()
            .filter(|n| n.cached.is_none())
            .map(|n| n.key)
            .collect()
    }
}

/// A frame with its decoded request: the request borrows the frame, and
/// the frame (zeroed on drop) lives as long as the request.
pub type AdmittedFrame = Yoke<Admitted<'static>, Frame>;

/// Decodes `frame` once and admits it (see [`Admitted`]). A frame that
/// does not decode is the error to answer (small: its message is bounded);
/// the frame is dropped (zeroed).
pub fn admit(
    svc: &Service,
    frame: Frame,
    max_answer: usize,
) -> Result<AdmittedFrame, RequestError> {
    Yoke::try_attach_to_cart(frame, |bytes: &[u8]| admit_slice(svc, bytes, max_answer))
}

/// [`admit`] for a frame borrowed from elsewhere (tests, the in-process
/// baseline).
pub fn admit_slice<'f>(
    svc: &Service,
    frame: &'f [u8],
    max_answer: usize,
) -> Result<Admitted<'f>, RequestError> {
    let request = kms_proto::decode_request(frame, svc.limits())?;
    let plan = answer_plan(&request, max_answer);
    let ops: &[Result<Operation<'_>, KmsError>] = match &request.body {
        RequestBody::Single(op) => std::slice::from_ref(op),
        RequestBody::Batch(items) => items,
    };
    let mut plane = PlaneKind::Data;
    let mut payload = 0;
    let mut hsm = false;
    let mut heap = 0;
    let mut refs = Vec::new();
    for op in ops.iter().flatten() {
        plane = plane.max(op::plane(op));
        payload += op::payload(op);
        heap += op::heap_bytes(op);
        op::keys(op, &mut refs);
        hsm |= names_hsm_blob(op);
    }
    refs.sort_unstable();
    refs.dedup();
    let keys: Vec<Needed> = refs
        .into_iter()
        .map(|key| Needed {
            key,
            cached: svc.cached(&key),
        })
        .collect();
    hsm |= keys.iter().any(|n| {
        n.cached
            .as_ref()
            .is_some_and(|k| k.origin() == kms_proto::Origin::Hsm)
    });
    Ok(Admitted {
        items: ops.len(),
        heap,
        request,
        plan,
        plane,
        keys,
        payload,
        hsm,
    })
}

/// Whether `op` decrypts a format 2 blob (an HSM-only key's, whether or
/// not the key is cached).
fn names_hsm_blob(op: &Operation<'_>) -> bool {
    let blob = match op {
        Operation::Decrypt(r) => r.ciphertext_blob,
        Operation::ReEncrypt(r) => r.ciphertext_blob,
        _ => return false,
    };
    blob.first() == Some(&crate::crypto::hsm_blob::VERSION)
}

/// How [`answer`] runs a request.
pub struct AnswerOptions<'a> {
    /// Largest answer frame, length prefix included (what the plan was
    /// made for).
    pub max_answer: usize,
    /// True once nobody will read the answer (checked between items, off
    /// the I/O threads).
    pub gone: Option<&'a dyn Fn() -> bool>,
}

/// Why [`answer`] wrote no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRun {
    /// On an I/O thread, a key was not cached after all (evicted since
    /// admission): run it off the I/O thread. Nothing visible happened.
    NotReady,
    /// The connection is gone; the work was dropped.
    Gone,
}

/// Runs an admitted request for `caller` at `site` and appends the encoded
/// answer to `out`. Items past the plan are answered ValidationException
/// without running (see [`bound::answer_plan`]).
pub fn answer(
    svc: &Service,
    admitted: &Admitted<'_>,
    caller: &Identity,
    site: Site<'_>,
    opts: AnswerOptions<'_>,
    out: &mut Vec<u8>,
) -> Result<(), NotRun> {
    let plan = admitted.plan;
    let gone = || site.may_block() && opts.gone.is_some_and(|g| g());
    if gone() {
        return Err(NotRun::Gone);
    }
    let run = |op: &Result<Operation<'_>, KmsError>| -> Result<Result<Output, KmsError>, NotRun> {
        let op = match op {
            Ok(op) => op,
            Err(e) => return Ok(Err(e.clone())),
        };
        match svc.run_admitted(op, caller, site, &admitted.keys) {
            Ok(o) => Ok(Ok(o)),
            Err(ExecError::Kms(e)) => Ok(Err(e)),
            Err(ExecError::NotReady) => Err(NotRun::NotReady),
        }
    };
    let too_large = || answer_too_large(opts.max_answer);
    let body = match &admitted.request.body {
        RequestBody::Single(_) if plan.runs == 0 => ResponseBody::Single(Err(too_large())),
        RequestBody::Single(op) => ResponseBody::Single(run(op)?),
        RequestBody::Batch(items) => {
            let mut outcomes = Vec::with_capacity(items.len());
            for (i, op) in items.iter().enumerate() {
                if i >= plan.runs {
                    outcomes.push(Err(too_large()));
                    continue;
                }
                if gone() {
                    return Err(NotRun::Gone);
                }
                outcomes.push(run(op)?);
            }
            ResponseBody::Batch(outcomes)
        }
    };
    let response = Response {
        request_id: admitted.request.request_id,
        body,
    };
    let start = out.len();
    encode(&response, out);
    debug_assert!(
        out.len() - start <= plan.bound,
        "answer of {} bytes over its bound {}",
        out.len() - start,
        plan.bound
    );
    Ok(())
}

/// Appends the answer to a frame that did not decode.
pub fn reject(e: &RequestError, out: &mut Vec<u8>) {
    encode_error_response(e.request_id, &e.error, out);
}

/// Appends an answer to the whole frame with `error`, unrun. Only the
/// request id is read: an overloaded daemon should not decode.
pub fn fail(frame: &[u8], error: &KmsError, out: &mut Vec<u8>) {
    let request_id = kms_proto::codec::request_id_of(frame).unwrap_or(0);
    encode_error_response(request_id, error, out);
}

/// Decodes, runs and answers a frame (without its length prefix) on the
/// calling thread, which may block: tests, benches and the in-process
/// baseline, the same work the daemon does for a frame minus the
/// hand-offs. Answers are bounded by the default largest answer.
pub fn handle_frame(svc: &Service, frame: &[u8], caller: &Identity, out: &mut Vec<u8>) {
    let admitted = match admit_slice(svc, frame, DEFAULT_MAX_ANSWER) {
        Ok(a) => a,
        Err(e) => return reject(&e, out),
    };
    let opts = AnswerOptions {
        max_answer: DEFAULT_MAX_ANSWER,
        gone: None,
    };
    let site = Site::Blocking { prefetched: None };
    if let Err(e) = answer(svc, &admitted, caller, site, opts, out) {
        unreachable!("a blocking run without a connection always answers: {e:?}");
    }
}

/// The default largest answer frame: the default largest request frame.
pub const DEFAULT_MAX_ANSWER: usize = kms_proto::frame::DEFAULT_MAX_FRAME;

thread_local! {
    // One builder per thread, reused: encoding allocates nothing in the
    // steady state. The capacity is tracked because a builder that grows
    // frees its old buffer without zeroizing it.
    static BUILDER: RefCell<(FlatBufferBuilder<'static>, usize)> =
        RefCell::new((FlatBufferBuilder::with_capacity(BUILDER_CAPACITY), BUILDER_CAPACITY));
}
const BUILDER_CAPACITY: usize = 64 * 1024;

/// Encodes with this thread's builder, making sure it never has to grow.
fn encode(response: &Response, out: &mut Vec<u8>) {
    let hint = response_size_hint(response);
    out.reserve(hint + kms_proto::frame::LEN_PREFIX);
    if hint > BUILDER_CAPACITY * 16 {
        // Rare, huge answers: a one-off builder of the right size, so that no
        // thread keeps megabytes around.
        let mut fbb = FlatBufferBuilder::with_capacity(hint);
        encode_response(&mut fbb, response, out);
        return;
    }
    BUILDER.with(|b| {
        let mut b = b.borrow_mut();
        if hint > b.1 {
            let cap = hint.next_power_of_two();
            *b = (FlatBufferBuilder::with_capacity(cap), cap);
        }
        encode_response(&mut b.0, response, out);
    });
}

#[cfg(test)]
mod tests {
    use super::bound::answer_plan;
    use super::*;
    use crate::crypto::KeyMaterial;
    use crate::keystore::Keystore;
    use crate::root::FileRoot;
    use kms_proto::{CreateKey, ListKeys};
    use kms_proto::{DecodeLimits, ErrorKind};
    use std::sync::Arc;

    const PEER: Identity = Identity {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };

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
            })
        };
        let ops = vec![
            Operation::DescribeKey(kms_proto::DescribeKey { key_id: &key }),
            Operation::DescribeKey(kms_proto::DescribeKey { key_id: &bad_id }),
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
            }),
            Operation::Encrypt(kms_proto::Encrypt {
                key_id: &key,
                plaintext: &[2; MAX_PLAINTEXT],
                context: vec![],
            }),
            Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: &blob,
                key_id: None,
                context: vec![],
            }),
            Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: &blob,
                key_id: Some(&bad_id),
                context: vec![],
            }),
            Operation::ReEncrypt(kms_proto::ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: vec![],
                destination_key_id: &key,
                destination_context: vec![(&dup, "a"), (&dup, "b")],
            }),
            Operation::ReEncrypt(kms_proto::ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: vec![],
                destination_key_id: &key,
                destination_context: vec![],
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
