//! Admission: the one decode of a request frame, and everything later
//! stages need to know about it ([`Admitted`]), kept beside the frame it
//! borrows ([`AdmittedFrame`]).

use super::bound::{answer_plan, AnswerPlan};
use crate::service::keys::{KeyRef, Needed};
use crate::service::op::{self, PlaneKind};
use crate::service::Service;
use kms_proto::codec::RequestError;
use kms_proto::frame::Frame;
use kms_proto::{KmsError, Operation, Request, RequestBody};
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
        op::keys(op, svc, &mut refs);
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
