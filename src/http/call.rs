//! One HTTP call of AWS KMS's API, from its head and body to its answer,
//! without the socket (the connection is `transport::http`'s).
//!
//! The call is checked (POST, `X-Amz-Target: TrentService.<Operation>`,
//! `Content-Type: application/x-amz-json-1.1`), its body decoded by
//! [`super::json`] into the typed request, and that request run as a
//! single-operation frame of the binary protocol through the same
//! [`Dispatcher`] the Unix socket feeds: admission, byte budgets, the
//! inline or worker decision, quotas, policies, the audit log and the
//! metrics are the binary path's, not a copy of them. The answer frame is
//! read back into the typed outcome and encoded as AWS's JSON.
//!
//! Request ids: each call gets a fresh 64-bit id (a random base per start
//! plus a counter). It is the frame's request id, hence the audit record's
//! `requestID`, and the answer's `x-amzn-RequestId` header, in decimal: a
//! call and its record are matched by it.

use super::json::{self, JsonError, JsonLimits, JsonRequest};
use crate::audit::gate::Gate;
use crate::budget::ConnBudget;
use crate::dispatch::{Dispatcher, Reply};
use crate::identity::Identity;
use kms_proto::codec::RequestEncoder;
use kms_proto::{ErrorKind, KmsError, Request, RequestBody, ResponseBody};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The `X-Amz-Target` prefix of AWS KMS's operations.
pub const TARGET_PREFIX: &str = "TrentService.";
/// The content type of AWS JSON 1.1, requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// What every call of one HTTP listener shares.
pub struct Api {
    /// Bounds of request bodies (checked before parsing).
    pub limits: JsonLimits,
    /// Largest answer frame of the binary protocol the call runs as.
    pub max_answer: usize,
    /// Largest frame the answer is read back with.
    pub max_frame: usize,
    next_id: AtomicU64,
}

impl Api {
    /// The state of a listener with these bounds.
    pub fn new(limits: JsonLimits, max_answer: usize, max_frame: usize) -> Api {
        Api {
            limits,
            max_answer,
            max_frame,
            // A random base: ids of different starts do not repeat (the
            // audit log outlives a run).
            next_id: AtomicU64::new(rand::random::<u64>() >> 1),
        }
    }

    fn request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a call's head says, as the connection read it.
pub struct Head<'a> {
    /// The method (`POST`).
    pub method: &'a http::Method,
    /// The path (`/`).
    pub path: &'a str,
    /// `X-Amz-Target`, if present.
    pub target: Option<&'a [u8]>,
    /// `Content-Type`, if present.
    pub content_type: Option<&'a [u8]>,
}

/// A call's answer: status, body and request id. The body may carry
/// plaintext (Decrypt, GenerateDataKey): zeroed when dropped.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
    /// For `x-amzn-RequestId`.
    pub request_id: u64,
    /// Close the connection after it (the request was not read whole).
    pub close: bool,
}

impl Drop for Answer {
    fn drop(&mut self) {
        kms_proto::frame::zero(&mut self.body);
    }
}

/// Where a call runs: the dispatcher and the connection's byte budget.
pub struct Site<'a> {
    /// The daemon's dispatcher (the binary protocol's).
    pub dispatcher: &'a Dispatcher,
    /// The connection's byte budget.
    pub budget: &'a Arc<ConnBudget>,
    /// The connection's gate: its writes wait for the records of the
    /// answers given to it (see [`crate::audit::gate`]).
    pub gate: &'a Arc<Gate>,
}

/// Runs one call for `caller` and returns its answer. Never fails: every
/// refusal is an answer with AWS's exception and status.
pub async fn call(api: &Api, site: Site<'_>, caller: &Identity, head: Head<'_>, body: &[u8]) -> Answer {
    let request_id = api.request_id();
    let refuse = |name: &str, e: JsonError| {
        site.dispatcher
            .record_refusal(caller, request_id, name, &kms_error(&e), site.gate);
        error_answer(request_id, &e)
    };
    let operation = match operation_of(&head) {
        Ok(op) => op,
        Err(e) => return refuse("Unknown", e),
    };
    let request = match JsonRequest::decode(operation, body, &api.limits) {
        Ok(r) => r,
        Err(e) => {
            let name = kms_proto::Operation::NAMES
                .iter()
                .find(|n| **n == operation)
                .copied()
                .unwrap_or("Unknown");
            return refuse(name, e);
        }
    };
    let frame = encode_frame(request_id, &request);
    drop(request);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let reply = Reply::gated(tx, Arc::clone(site.gate));
    if let Err(waiting) = site
        .dispatcher
        .offer(frame, caller.clone(), reply, api.max_answer, site.budget)
    {
        let charge = site.budget.charge(waiting.bytes()).await;
        site.dispatcher.resume(*waiting, charge);
    }
    let Some(out) = rx.recv().await else {
        // The dispatcher dropped the reply: only at shutdown.
        let e = KmsError::new(ErrorKind::ServiceUnavailable, "kmsd is shutting down");
        return error_answer(request_id, &JsonError::Kms(e));
    };
    let prefix = kms_proto::frame::LEN_PREFIX;
    let response = match kms_proto::decode_response(&out.frame[prefix..], api.max_frame) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "an answer of the dispatcher did not decode");
            let e = KmsError::new(ErrorKind::KmsInternal, "internal error");
            return error_answer(request_id, &JsonError::Kms(e));
        }
    };
    drop(out);
    let outcome = match response.body {
        ResponseBody::Single(o) => o,
        ResponseBody::Error(e) => Err(e),
        ResponseBody::Batch(_) => Err(KmsError::new(ErrorKind::KmsInternal, "internal error")),
    };
    match outcome {
        Ok(output) => {
            let mut body = Vec::with_capacity(json::output_len_bound(&output));
            json::encode_output(&output, &mut body);
            Answer {
                status: 200,
                body,
                request_id,
                close: false,
            }
        }
        Err(e) => error_answer(request_id, &JsonError::Kms(e)),
    }
}

/// The operation a call names, after the checks of its head that come
/// before its body: the method, the path, the content type and the target.
/// AWS's services answer a call they cannot route to an operation
/// UnknownOperationException (400); kmsd does the same for each of these,
/// with a message that says which.
fn operation_of<'h>(head: &Head<'h>) -> Result<&'h str, JsonError> {
    let unknown = |m: String| Err(JsonError::UnknownOperation(m));
    if head.method != http::Method::POST || head.path != "/" {
        return unknown(format!(
            "AWS KMS's API is POST / (AWS JSON 1.1); got {} {}",
            head.method,
            truncate(head.path)
        ));
    }
    match head.content_type {
        Some(ct) if content_type_ok(ct) => {}
        Some(ct) => {
            return unknown(format!(
                "Content-Type must be {CONTENT_TYPE}; got {}",
                truncate(&String::from_utf8_lossy(ct))
            ))
        }
        None => return unknown(format!("Content-Type must be {CONTENT_TYPE}; it is missing")),
    }
    let Some(target) = head.target else {
        return unknown("X-Amz-Target is missing: it names the operation (TrentService.<Operation>)".into());
    };
    match std::str::from_utf8(target)
        .ok()
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
    {
        Some(op) => Ok(op),
        None => unknown(format!(
            "X-Amz-Target must be {TARGET_PREFIX}<Operation>; got {}",
            truncate(&String::from_utf8_lossy(target))
        )),
    }
}

/// `application/x-amz-json-1.1`, with or without parameters (a charset).
fn content_type_ok(ct: &[u8]) -> bool {
    let essence = ct.split(|&b| b == b';').next().unwrap_or_default();
    essence.trim_ascii().eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
}

/// Client text quoted in a message, cut to a sane length.
fn truncate(s: &str) -> String {
    const MAX: usize = 128;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// The audit record's view of a refusal (an exception kmsd knows by name).
fn kms_error(e: &JsonError) -> KmsError {
    match e {
        JsonError::Kms(k) => k.clone(),
        JsonError::UnknownOperation(m) => KmsError::new(ErrorKind::UnsupportedOperation, m.clone()),
    }
}

fn error_answer(request_id: u64, e: &JsonError) -> Answer {
    let mut body = Vec::new();
    let status = json::encode_json_error(e, &mut body);
    Answer {
        status,
        body,
        request_id,
        close: false,
    }
}

/// The answer to a request refused before its body was read whole (too
/// large): recorded, answered with `e`, and the connection closed.
pub fn refused(api: &Api, site: Site<'_>, caller: &Identity, e: KmsError) -> Answer {
    let request_id = api.request_id();
    site.dispatcher.record_refusal(caller, request_id, "Unknown", &e, site.gate);
    let mut a = error_answer(request_id, &JsonError::Kms(e));
    a.close = true;
    a
}

/// The answer to a TCP request whose signature does not name a caller:
/// the exception the SigV4 check gave, recorded as refused.
pub fn unauthenticated(
    api: &Api,
    site: Site<'_>,
    caller: &Identity,
    name: &str,
    status: u16,
    message: &str,
) -> Answer {
    let request_id = api.request_id();
    let e = KmsError::new(ErrorKind::AccessDenied, format!("{name}: {message}"));
    site.dispatcher.record_refusal(caller, request_id, "Unknown", &e, site.gate);
    let mut body = Vec::new();
    json::exception(name, message, &mut body);
    Answer {
        status,
        body,
        request_id,
        close: false,
    }
}

/// The answer to a request whose body did not arrive in time (or not at
/// all): 408 RequestTimeoutException, recorded, and the connection closed.
/// AWS's services answer a request that stalls this way; SDKs retry it.
pub fn timed_out(api: &Api, site: Site<'_>, caller: &Identity, why: &str) -> Answer {
    let request_id = api.request_id();
    let e = KmsError::new(ErrorKind::Validation, why);
    site.dispatcher.record_refusal(caller, request_id, "Unknown", &e, site.gate);
    let mut body = Vec::new();
    json::exception("RequestTimeoutException", why, &mut body);
    Answer {
        status: 408,
        body,
        request_id,
        close: true,
    }
}

thread_local! {
    // One encoder per thread: its builder is reused and zeroed after each
    // request (a request may carry plaintext).
    static ENCODER: RefCell<RequestEncoder> = RefCell::new(RequestEncoder::with_capacity(4096));
}

/// The binary protocol's frame (without its length prefix) of a
/// single-operation request.
fn encode_frame(request_id: u64, request: &JsonRequest) -> kms_proto::frame::Frame {
    let req = Request {
        request_id,
        body: RequestBody::Single(Ok(request.operation().clone())),
    };
    ENCODER.with(|e| {
        e.borrow_mut()
            .encode(&req, |payload| kms_proto::frame::Frame::from(payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(method: &'a http::Method, path: &'a str, ct: Option<&'a [u8]>, target: Option<&'a [u8]>) -> Head<'a> {
        Head {
            method,
            path,
            target,
            content_type: ct,
        }
    }

    #[test]
    fn the_head_names_the_operation_or_the_call_is_an_unknown_operation() {
        let post = http::Method::POST;
        let ct: &[u8] = b"application/x-amz-json-1.1";
        let ok = operation_of(&head(&post, "/", Some(ct), Some(b"TrentService.Encrypt")));
        assert_eq!(ok.unwrap(), "Encrypt");
        let charset = operation_of(&head(
            &post,
            "/",
            Some(b"application/x-amz-json-1.1; charset=utf-8"),
            Some(b"TrentService.Decrypt"),
        ));
        assert_eq!(charset.unwrap(), "Decrypt");
        let get = http::Method::GET;
        for (h, says) in [
            (head(&get, "/", Some(ct), Some(b"TrentService.Encrypt")), "POST /"),
            (head(&post, "/x", Some(ct), Some(b"TrentService.Encrypt")), "POST /"),
            (head(&post, "/", Some(b"application/json"), Some(b"TrentService.Encrypt")), "Content-Type"),
            (head(&post, "/", None, Some(b"TrentService.Encrypt")), "missing"),
            (head(&post, "/", Some(ct), None), "X-Amz-Target is missing"),
            (head(&post, "/", Some(ct), Some(b"DynamoDB_20120810.GetItem")), "TrentService.<Operation>"),
        ] {
            match operation_of(&h) {
                Err(JsonError::UnknownOperation(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn quoted_client_text_is_cut() {
        let long = "x".repeat(1000);
        assert_eq!(truncate(&long).len(), 131);
        assert_eq!(truncate("short"), "short");
    }
}
