//! Answering: running an admitted request's items through the service
//! and encoding the outcomes with this thread's flatbuffers builder.

use super::admit::Admitted;
use super::bound::answer_too_large;
use crate::audit::note::{self, Note};
use crate::identity::Identity;
use crate::service::op::{ExecError, Site};
use crate::service::Service;
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{encode_error_response, encode_response, response_size_hint, RequestError};
use kms_proto::{KmsError, Operation, Output, RequestBody, Response, ResponseBody};
use std::cell::RefCell;

/// How [`answer`] runs a request.
pub struct AnswerOptions<'a> {
    /// Largest answer frame, length prefix included (what the plan was
    /// made for).
    pub max_answer: usize,
    /// True once nobody will read the answer (checked between items, off
    /// the I/O threads).
    pub gone: Option<&'a dyn Fn() -> bool>,
    /// Where the frame's audit record goes (built after its items ran,
    /// from the request, the outcomes and what the service noted), when
    /// the log is on.
    pub record: Option<&'a mut Vec<u8>>,
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
/// without running (see [`super::bound::answer_plan`]).
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
    let recording = opts.record.is_some();
    let mut notes: Vec<Note> = match (&admitted.request.body, recording) {
        (RequestBody::Batch(items), true) => Vec::with_capacity(items.len()),
        _ => Vec::new(),
    };
    let mut run = |op: &Result<Operation<'_>, KmsError>| -> Result<Result<Output, KmsError>, NotRun> {
        let op = match op {
            Ok(op) => op,
            Err(e) => {
                if recording {
                    notes.push(Note::default());
                }
                return Ok(Err(e.clone()));
            }
        };
        if recording {
            note::reset();
        }
        let r = match svc.run_admitted(op, caller, site, &admitted.keys) {
            Ok(o) => Ok(Ok(o)),
            Err(ExecError::Kms(e)) => Ok(Err(e)),
            Err(ExecError::NotReady) => Err(NotRun::NotReady),
        };
        if recording {
            notes.push(note::take());
        }
        r
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
    if let Some(m) = crate::metrics::get() {
        let outcomes: &[Result<Output, KmsError>] = match &body {
            ResponseBody::Single(o) => std::slice::from_ref(o),
            ResponseBody::Batch(o) => o,
            ResponseBody::Error(_) => &[],
        };
        crate::metrics::count_items(m, admitted.request.body.items(), |i| {
            outcomes.get(i).and_then(|o| o.as_ref().err()).map(|e| e.kind)
        });
    }
    let response = Response {
        request_id: admitted.request.request_id,
        body,
    };
    if let Some(rec) = opts.record {
        crate::audit::record::request(
            rec,
            caller,
            svc.arns(),
            &admitted.request,
            &response.body,
            &notes,
        );
    }
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

#[cfg(any(test, feature = "internals"))]
/// Decodes, runs and answers a frame (without its length prefix) on the
/// calling thread, which may block: tests, benches and the in-process
/// baseline, the same work the daemon does for a frame minus the
/// hand-offs. Answers are bounded by the default largest answer.
pub fn handle_frame(svc: &Service, frame: &[u8], caller: &Identity, out: &mut Vec<u8>) {
    use super::{admit::admit_slice, DEFAULT_MAX_ANSWER};
    let admitted = match admit_slice(svc, frame, DEFAULT_MAX_ANSWER) {
        Ok(a) => a,
        Err(e) => return reject(&e, out),
    };
    let opts = AnswerOptions {
        max_answer: DEFAULT_MAX_ANSWER,
        gone: None,
        record: None,
    };
    let site = Site::Blocking { prefetched: None };
    if let Err(e) = answer(svc, &admitted, caller, site, opts, out) {
        unreachable!("a blocking run without a connection always answers: {e:?}");
    }
}

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
