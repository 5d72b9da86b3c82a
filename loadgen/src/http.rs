//! AWS KMS's HTTP API from the client's side (`--protocol http`): the
//! pool of prepared requests, the parser of answers, and the small
//! blocking client that prepares a run's keys over the same API.
//!
//! The API is AWS JSON 1.1 over HTTP/1.1 (kmsd's `kmsd-http.sock`):
//! `POST /` with `Content-Type: application/x-amz-json-1.1`,
//! `X-Amz-Target: TrentService.<Operation>` and a JSON body whose blobs are
//! base64. One operation per request: AWS's API has no batches. Answers
//! come back in the order the requests were sent (keep-alive, pipelined),
//! so a connection matches them by position; status 200 is a success,
//! anything else an error named by the body's `__type`.
//!
//! As with the binary frames, requests are built whole before the
//! measured window (`HttpPool`, the same operations `FramePool` would carry
//! for the same spec and seed) and only copied during it; answers are
//! parsed with httparse and checked, never decoded.

use crate::workload::{plan, Prepared, Setup, WorkloadSpec};
use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use kms_proto::{
    DataKeySpec, ErrorKind, GenerateDataKeyWithoutPlaintextOutput, KeyMetadata, KmsError,
    Operation, Origin, Outcome, Output,
};
use std::borrow::Cow;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The content type of AWS JSON 1.1, requests and answers.
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Largest answer head accepted. kmsd's are about 150 bytes.
pub const MAX_HEAD: usize = 16 << 10;

/// Largest answer body accepted: the binary protocol's frame limit, with
/// room for base64's third more.
pub const MAX_BODY: usize = 2 * kms_proto::frame::DEFAULT_MAX_FRAME;

/// Most headers in an answer. kmsd sends five.
const MAX_HEADERS: usize = 32;

/// Prepared HTTP requests, each a whole `POST /` with its body, used
/// round-robin during the run.
pub struct HttpPool {
    requests: Vec<Vec<u8>>,
}

impl HttpPool {
    /// Builds a pool for `spec` from `prepared`: the operations the binary
    /// frame pool of the same spec would carry (`workload::plan`), each
    /// its own request. `spec.batch` must be 1.
    pub fn build(spec: &WorkloadSpec, prepared: &Prepared) -> anyhow::Result<HttpPool> {
        if spec.batch != 1 {
            bail!(
                "--protocol http sends one operation per request (AWS's API has no batches); \
                 --batch must be 1, not {}",
                spec.batch
            );
        }
        let mut requests = Vec::new();
        plan(spec, prepared, |ops| {
            let r = request(&ops[0])?;
            let len = r.len();
            requests.push(r);
            Ok(len)
        })?;
        Ok(HttpPool { requests })
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the pool is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Appends request `i` (mod the pool size) to `out`.
    pub fn put(&self, i: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.requests[i % self.requests.len()]);
    }

    /// Request `i` (mod the pool size), head and body.
    pub fn request(&self, i: usize) -> &[u8] {
        &self.requests[i % self.requests.len()]
    }
}

/// The whole HTTP/1.1 request of `op`: head and AWS JSON 1.1 body.
pub fn request(op: &Operation<'_>) -> anyhow::Result<Vec<u8>> {
    let body = body(op)?;
    let mut r = Vec::with_capacity(160 + body.len());
    write!(
        r,
        "POST / HTTP/1.1\r\nHost: kmsd\r\nContent-Type: {CONTENT_TYPE}\r\n\
         X-Amz-Target: TrentService.{}\r\nContent-Length: {}\r\n\r\n",
        op.name(),
        body.len()
    )?;
    r.extend_from_slice(&body);
    Ok(r)
}

/// AWS's JSON body of `op`, the members in the order of AWS's service
/// model and unset ones left out, as an SDK writes them. Only the
/// operations the load generator sends (its workloads and their setup).
pub fn body(op: &Operation<'_>) -> anyhow::Result<Vec<u8>> {
    let mut o = JsonObject::new();
    match op {
        Operation::GenerateDataKey(g) | Operation::GenerateDataKeyWithoutPlaintext(g) => {
            o.string("KeyId", g.key_id);
            o.context("EncryptionContext", &g.context);
            if let Some(n) = g.number_of_bytes {
                o.number("NumberOfBytes", n);
            }
            if let Some(spec) = g.key_spec {
                o.string(
                    "KeySpec",
                    match spec {
                        DataKeySpec::Aes128 => "AES_128",
                        DataKeySpec::Aes256 => "AES_256",
                    },
                );
            }
        }
        Operation::Encrypt(e) => {
            o.string("KeyId", e.key_id);
            o.base64("Plaintext", e.plaintext);
            o.context("EncryptionContext", &e.context);
        }
        Operation::Decrypt(d) => {
            o.base64("CiphertextBlob", d.ciphertext_blob);
            o.context("EncryptionContext", &d.context);
            if let Some(k) = d.key_id {
                o.string("KeyId", k);
            }
        }
        Operation::ReEncrypt(r) => {
            o.base64("CiphertextBlob", r.ciphertext_blob);
            o.context("SourceEncryptionContext", &r.source_context);
            if let Some(k) = r.source_key_id {
                o.string("SourceKeyId", k);
            }
            o.string("DestinationKeyId", r.destination_key_id);
            o.context("DestinationEncryptionContext", &r.destination_context);
        }
        Operation::GenerateRandom(g) => o.number("NumberOfBytes", g.number_of_bytes),
        Operation::CreateKey(c) => {
            o.string("Description", c.description);
            o.string(
                "Origin",
                match c.origin {
                    Origin::Kmsd => "AWS_KMS",
                    Origin::External => "EXTERNAL",
                    Origin::Hsm => "AWS_CLOUDHSM",
                },
            );
        }
        Operation::CreateAlias(a) => {
            o.string("AliasName", a.alias_name);
            o.string("TargetKeyId", a.target_key_id);
        }
        other => bail!("kms-loadgen does not send {} over HTTP", other.name()),
    }
    Ok(o.finish())
}

/// A JSON object written member by member.
struct JsonObject(Vec<u8>);

impl JsonObject {
    fn new() -> JsonObject {
        JsonObject(b"{".to_vec())
    }

    fn name(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.quoted(name);
        self.0.push(b':');
    }

    fn quoted(&mut self, s: &str) {
        // serde_json's escaping of a string cannot fail.
        serde_json::to_writer(&mut self.0, s).expect("a string serializes");
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        self.quoted(value);
    }

    fn number(&mut self, name: &str, value: u32) {
        self.name(name);
        self.0.extend_from_slice(value.to_string().as_bytes());
    }

    fn base64(&mut self, name: &str, value: &[u8]) {
        self.name(name);
        self.0.push(b'"');
        let text = base64::engine::general_purpose::STANDARD.encode(value);
        self.0.extend_from_slice(text.as_bytes());
        self.0.push(b'"');
    }

    /// An encryption context, left out when empty (as SDKs do).
    fn context(&mut self, name: &str, pairs: &[(&str, &str)]) {
        if pairs.is_empty() {
            return;
        }
        self.name(name);
        self.0.push(b'{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.quoted(k);
            self.0.push(b':');
            self.quoted(v);
        }
        self.0.push(b'}');
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

/// One answer, parsed from the front of a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
    /// Bytes of the buffer the answer took, head and body.
    pub len: usize,
    /// The daemon closes the connection after it (`Connection: close`).
    pub close: bool,
    /// `X-Amzn-ErrorType`, if sent (AWS's services send it with errors).
    error_type: Option<&'a [u8]>,
}

/// Parses the answer at the front of `buf`: `Ok(None)` when it has not
/// arrived whole yet (not an error: read more), an error when the bytes
/// are not an HTTP/1.1 answer the load generator can frame (no
/// `Content-Length`, chunked, an interim 1xx, a head or body beyond
/// [`MAX_HEAD`] or [`MAX_BODY`]).
pub fn parse_answer(buf: &[u8]) -> anyhow::Result<Option<Answer<'_>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            bail!("malformed HTTP answer: head longer than {MAX_HEAD} bytes")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => bail!(
            "malformed HTTP answer ({e}): {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        ),
    };
    if head_len > MAX_HEAD {
        bail!("malformed HTTP answer: head longer than {MAX_HEAD} bytes");
    }
    if response.version != Some(1) {
        bail!("the target answered HTTP/1.0; kms-loadgen speaks HTTP/1.1 with keep-alive");
    }
    let status = response.code.unwrap_or(0);
    if !(200..=599).contains(&status) {
        bail!("the target answered {status}: kms-loadgen expects no interim (1xx) answers");
    }
    let (mut length, mut close, mut error_type) = (None, false, None);
    for h in response.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| anyhow!("malformed HTTP answer: Content-Length {:?}", h.value))?;
            if length.is_some_and(|l| l != n) {
                bail!("malformed HTTP answer: two different Content-Length headers");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            bail!("the target sent a chunked answer; kms-loadgen reads Content-Length bodies only");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case(b"x-amzn-errortype") {
            error_type = Some(h.value);
        }
    }
    let Some(length) = length else {
        bail!("malformed HTTP answer: no Content-Length (status {status})");
    };
    if length > MAX_BODY {
        bail!("HTTP answer of {length} bytes exceeds the limit of {MAX_BODY}");
    }
    let Some(body) = buf.get(head_len..head_len + length) else {
        return Ok(None);
    };
    Ok(Some(Answer {
        status,
        body,
        len: head_len + length,
        close,
        error_type,
    }))
}

impl<'a> Answer<'a> {
    /// Whether the answer is a success: status 200 with a JSON object.
    /// Anything else that came back as 200 is not an answer of kmsd's.
    pub fn success(&self) -> anyhow::Result<bool> {
        if self.status != 200 {
            return Ok(false);
        }
        let b = self.body.trim_ascii();
        if b.first() != Some(&b'{') || b.last() != Some(&b'}') {
            bail!(
                "bad answer: status 200 without a JSON object: {:?}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(80)])
            );
        }
        Ok(true)
    }

    /// The exception an error answer names: the body's `__type` (AWS JSON
    /// 1.1; a `namespace#` prefix dropped), else `X-Amzn-ErrorType`
    /// (before any `:`), else `HTTP <status>`.
    pub fn error_name(&self) -> Cow<'a, str> {
        if let Some(t) = json_string_member(self.body, b"__type") {
            let t = t.rsplit(|&b| b == b'#').next().unwrap_or(t);
            if !t.is_empty() {
                return String::from_utf8_lossy(t);
            }
        }
        if let Some(t) = self.error_type {
            let t = t.split(|&b| b == b':').next().unwrap_or(t).trim_ascii();
            if !t.is_empty() {
                return String::from_utf8_lossy(t);
            }
        }
        Cow::Owned(format!("HTTP {}", self.status))
    }
}

/// The raw text of the string member `name` of a JSON object (escapes left
/// as they are; exception names have none), found by a scan rather than a
/// parse: the error path of a run needs nothing more.
fn json_string_member<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(at) = find(&body[from..], name) {
        let start = from + at;
        let quoted =
            start > 0 && body[start - 1] == b'"' && body.get(start + name.len()) == Some(&b'"');
        from = start + name.len();
        if !quoted {
            continue;
        }
        let rest = body[from + 1..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        let rest = rest.trim_ascii_start().strip_prefix(b"\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        return Some(&rest[..end]);
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A blocking client of the HTTP API for what a run prepares before its
/// window (keys, aliases, ciphertexts): the same API the run measures, so
/// that a daemon reached only by its HTTP socket can be driven.
pub struct HttpClient {
    stream: UnixStream,
    rx: Vec<u8>,
}

/// Requests in flight at once while preparing: small enough that their
/// answers fit the socket's buffers whatever order the two sides write.
const SETUP_WINDOW: usize = 32;

impl HttpClient {
    /// Connects to the HTTP API at `path`.
    pub fn connect(path: &Path) -> anyhow::Result<HttpClient> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connecting to the HTTP API at {}", path.display()))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        Ok(HttpClient {
            stream,
            rx: Vec::with_capacity(64 << 10),
        })
    }

    /// Sends `requests` (pipelined) and returns each answer's status and
    /// body, in order.
    pub fn exchange(&mut self, requests: &[Vec<u8>]) -> anyhow::Result<Vec<(u16, Vec<u8>)>> {
        let mut answers = Vec::with_capacity(requests.len());
        for window in requests.chunks(SETUP_WINDOW) {
            self.stream
                .write_all(&window.concat())
                .context("sending to the HTTP API")?;
            let want = answers.len() + window.len();
            while answers.len() < want {
                match parse_answer(&self.rx)? {
                    Some(a) => {
                        let len = a.len;
                        answers.push((a.status, a.body.to_vec()));
                        if a.close {
                            bail!(
                                "the HTTP API closed the connection after answering {}",
                                a.status
                            );
                        }
                        self.rx.drain(..len);
                    }
                    None => {
                        let mut chunk = [0u8; 16 << 10];
                        let n = self
                            .stream
                            .read(&mut chunk)
                            .context("reading from the HTTP API")?;
                        if n == 0 {
                            bail!("the HTTP API closed the connection");
                        }
                        self.rx.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
        Ok(answers)
    }
}

impl Setup for HttpClient {
    fn batch(&mut self, ops: Vec<Operation<'_>>) -> anyhow::Result<Vec<Outcome>> {
        let requests = ops
            .iter()
            .map(request)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let answers = self.exchange(&requests)?;
        ops.iter()
            .zip(answers)
            .map(|(op, (status, body))| outcome(op, status, &body))
            .collect()
    }
}

/// The typed outcome of a setup operation's answer: the fields the
/// preparation reads (key ids, ciphertexts); errors by their name.
fn outcome(op: &Operation<'_>, status: u16, body: &[u8]) -> anyhow::Result<Outcome> {
    let v: serde_json::Value = if body.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(body).with_context(|| {
            format!(
                "{} over HTTP answered {status} with a body that is not JSON",
                op.name()
            )
        })?
    };
    let text = |v: &serde_json::Value, what: &str| -> anyhow::Result<String> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("{} over HTTP answered without {what}", op.name()))
    };
    if status != 200 {
        let answer = Answer {
            status,
            body,
            len: 0,
            close: false,
            error_type: None,
        };
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let name = answer.error_name();
        return Ok(Err(KmsError::new(
            ErrorKind::from_name(&name),
            format!("{name}: {message}"),
        )));
    }
    Ok(Ok(match op {
        Operation::CreateKey(_) => Output::CreateKey(KeyMetadata {
            key_id: text(&v["KeyMetadata"]["KeyId"], "KeyMetadata.KeyId")?,
            arn: text(&v["KeyMetadata"]["Arn"], "KeyMetadata.Arn").unwrap_or_default(),
            ..KeyMetadata::default()
        }),
        Operation::CreateAlias(_) => Output::CreateAlias,
        Operation::GenerateDataKeyWithoutPlaintext(_) => {
            let blob = text(&v["CiphertextBlob"], "CiphertextBlob")?;
            Output::GenerateDataKeyWithoutPlaintext(GenerateDataKeyWithoutPlaintextOutput {
                key_id: text(&v["KeyId"], "KeyId").unwrap_or_default(),
                ciphertext_blob: base64::engine::general_purpose::STANDARD
                    .decode(blob)
                    .context("CiphertextBlob is not base64")?,
            })
        }
        other => bail!(
            "kms-loadgen prepares nothing with {} over HTTP",
            other.name()
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Mix, Popularity};

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\n\
x-amzn-requestid: 17\r\ncontent-length: 13\r\ndate: Thu, 03 Dec 2026 15:28:29 GMT\r\n\r\n\
{\"Plaintext\"}";

    fn error(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.1\r\n\
content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_whole_answer_parses_and_a_split_one_waits_for_its_rest() {
        let a = parse_answer(OK).unwrap().unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, b"{\"Plaintext\"}");
        assert_eq!(a.len, OK.len());
        assert!(!a.close);
        assert!(a.success().unwrap());
        // Every split point: in the head, at its end, in the body.
        for cut in 0..OK.len() {
            assert_eq!(parse_answer(&OK[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn pipelined_answers_in_one_read_come_out_one_by_one_in_order() {
        let mut buf = OK.to_vec();
        buf.extend_from_slice(&error(
            "404 Not Found",
            r#"{"__type":"NotFoundException","message":"no"}"#,
        ));
        buf.extend_from_slice(OK);
        buf.extend_from_slice(&OK[..20]);
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(a) = parse_answer(&buf[at..]).unwrap() {
            seen.push((a.status, a.success().unwrap()));
            at += a.len;
        }
        assert_eq!(seen, vec![(200, true), (404, false), (200, true)]);
        assert_eq!(&buf[at..], &OK[..20], "the partial fourth waits");
    }

    #[test]
    fn errors_are_named_by_their_type() {
        let named = |raw: &[u8]| {
            parse_answer(raw)
                .unwrap()
                .unwrap()
                .error_name()
                .into_owned()
        };
        assert_eq!(
            named(&error(
                "400 Bad Request",
                r#"{"__type":"ThrottlingException","message":"slow down"}"#
            )),
            "ThrottlingException"
        );
        // A namespace before '#', spaces around the colon, another member first.
        assert_eq!(
            named(&error(
                "400 Bad Request",
                r#"{"message":"the __type is", "__type" : "com.amazonaws.kms#DisabledException"}"#
            )),
            "DisabledException"
        );
        // No __type: X-Amzn-ErrorType, then the status.
        let header = b"HTTP/1.1 503 Service Unavailable\r\nX-Amzn-ErrorType: KMSInternalException:http://x\r\n\
content-length: 2\r\n\r\n{}";
        assert_eq!(named(header), "KMSInternalException");
        assert_eq!(
            named(&error("500 Internal Server Error", "oops")),
            "HTTP 500"
        );
        let a =
            parse_answer(&error("400 Bad Request", "{}")).map(|a| a.unwrap().success().unwrap());
        assert!(!a.unwrap());
    }

    #[test]
    fn malformed_answers_are_refused_with_a_reason() {
        let fails = |raw: &[u8], says: &str| {
            let e = parse_answer(raw).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        fails(b"HTTP/1.1 2OO OK\r\n\r\n", "malformed HTTP answer");
        fails(b"\x00\x00\x00\x10binary frame", "malformed HTTP answer");
        fails(
            b"HTTP/1.1 200 OK\r\ncontent-type: x\r\n\r\n{}",
            "no Content-Length",
        );
        fails(
            b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
            "Content-Length",
        );
        fails(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
            "two different",
        );
        fails(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            "chunked",
        );
        fails(b"HTTP/1.1 100 Continue\r\n\r\n", "interim");
        fails(
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.0",
        );
        let huge = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        fails(huge.as_bytes(), "exceeds");
        let mut long = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        long.resize(MAX_HEAD + 10, b'a');
        fails(&long, "head longer");
        // A 200 that is not a JSON object is not kmsd's answer.
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let e = parse_answer(plain).unwrap().unwrap().success().unwrap_err();
        assert!(e.to_string().contains("without a JSON object"), "{e}");
        // Connection: close is reported (the run stops on it).
        let close = b"HTTP/1.1 400 Bad Request\r\nConnection: keep-alive, close\r\ncontent-length: 2\r\n\r\n{}";
        assert!(parse_answer(close).unwrap().unwrap().close);
    }

    #[test]
    fn requests_are_whole_aws_json_calls_carrying_the_pools_operations() {
        let spec = WorkloadSpec {
            mix: Mix::parse("generate-data-key,encrypt,decrypt,re-encrypt,generate-random,generate-data-key-without-plaintext")
                .unwrap(),
            payload_size: 5,
            keys: 3,
            popularity: Popularity::Uniform,
            context_pairs: 2,
            batch: 1,
            blobs_per_key: 1,
            seed: 9,
            hsm_keys: false,
            by_alias: false,
        };
        let prepared = Prepared::synthetic(&spec);
        let pool = HttpPool::build(&spec, &prepared).unwrap();
        let frames = crate::workload::FramePool::build(&spec, &prepared).unwrap();
        assert_eq!(pool.len(), frames.len());
        let mut targets = std::collections::BTreeSet::new();
        for i in 0..pool.len() {
            let raw = pool.request(i);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let httparse::Status::Complete(head) = req.parse(raw).unwrap() else {
                panic!("a whole head")
            };
            assert_eq!(
                (req.method, req.path, req.version),
                (Some("POST"), Some("/"), Some(1))
            );
            let header = |n: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(n))
                    .map(|h| std::str::from_utf8(h.value).unwrap().to_owned())
            };
            assert_eq!(header("content-type").unwrap(), CONTENT_TYPE);
            assert!(header("host").is_some());
            let len: usize = header("content-length").unwrap().parse().unwrap();
            assert_eq!(head + len, raw.len());
            let target = header("x-amz-target").unwrap();
            let op = target.strip_prefix("TrentService.").unwrap().to_owned();
            let body: serde_json::Value = serde_json::from_slice(&raw[head..]).unwrap();
            // The binary pool's frame i carries the same operation.
            let frame =
                kms_proto::decode_request(&frames.frame(i)[4..], &Default::default()).unwrap();
            let kms_proto::RequestBody::Single(Ok(same)) = frame.body else {
                panic!("a single operation")
            };
            assert_eq!(same.name(), op);
            match op.as_str() {
                "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
                    assert_eq!(body["KeySpec"], "AES_256");
                    assert!(prepared.key_ids.iter().any(|k| body["KeyId"] == **k));
                    assert_eq!(body["EncryptionContext"]["context-key-001"], "value-00001");
                }
                "Encrypt" => assert_eq!(body["Plaintext"], "AAECAwQ="),
                "Decrypt" => {
                    let b64 = body["CiphertextBlob"].as_str().unwrap();
                    let blob = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap();
                    assert!(prepared.blobs.iter().flatten().any(|b| *b == blob));
                    assert_eq!(body["EncryptionContext"].as_object().unwrap().len(), 2);
                }
                "ReEncrypt" => {
                    assert!(body["DestinationKeyId"].is_string());
                    assert!(body["SourceEncryptionContext"].is_object());
                    assert!(body["DestinationEncryptionContext"].is_object());
                }
                "GenerateRandom" => assert_eq!(body["NumberOfBytes"], 32),
                other => panic!("unexpected {other}"),
            }
            targets.insert(op);
        }
        assert_eq!(targets.len(), 6, "{targets:?}");
        let mut batched = spec.clone();
        batched.batch = 4;
        let e = HttpPool::build(&batched, &prepared)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--batch must be 1"), "{e}");
    }

    #[test]
    fn no_context_means_no_member() {
        let g = kms_proto::GenerateDataKey {
            key_id: "k\"1",
            number_of_bytes: Some(32),
            ..Default::default()
        };
        let b = body(&Operation::GenerateDataKey(g)).unwrap();
        assert_eq!(b, br#"{"KeyId":"k\"1","NumberOfBytes":32}"#);
    }
}
