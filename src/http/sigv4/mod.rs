//! AWS Signature Version 4, verified: who sent a request to the AWS JSON
//! endpoint's loopback TCP listener, where the kernel names no peer.
//!
//! Sans-I/O: [`Verifier::verify`] takes the request's head as the HTTP
//! server parsed it (`http::request::Parts`, what hyper 1 gives), its whole
//! body and the time, and answers with the [`Principal`] the request runs
//! as or a [`SigV4Error`] that carries AWS's exception name and HTTP status
//! for the `{"__type": ..., "message": ...}` answer. No socket, no clock, no
//! log: the server does those.
//!
//! What is checked, in this order (docs/sigv4.md has AWS's sources and
//! every message):
//!
//! 1. one `Authorization` header (none: MissingAuthenticationTokenException)
//!    of the form `AWS4-HMAC-SHA256 Credential=AKID/yyyymmdd/region/service/
//!    aws4_request, SignedHeaders=a;b;c, Signature=<64 hex>`; query-string
//!    (presigned) authentication is refused (IncompleteSignatureException);
//! 2. one `X-Amz-Date` header, ISO 8601 basic (`20150830T123600Z`); the
//!    `Date` header alone is not taken;
//! 3. `host` and `x-amz-date` among the signed headers, and `x-amz-target`
//!    when the request has one (it names the KMS operation);
//! 4. the credential scope: the terminator, the date (that of
//!    `X-Amz-Date`), the region (the configured one) and the service
//!    (`kms`);
//! 5. the time: `X-Amz-Date` within [`DEFAULT_MAX_SKEW`] (AWS KMS's 5
//!    minutes) of now, either way;
//! 6. the access key id (UnrecognizedClientException if unknown) and no
//!    `X-Amz-Security-Token` (kmsd issues no temporary credentials);
//! 7. the payload: always the SHA-256 of the body received; an
//!    `x-amz-content-sha256` header must equal it (`UNSIGNED-PAYLOAD` is
//!    refused: the body of a KMS request is its arguments);
//! 8. the signature: canonical request, string to sign, the signing key
//!    (derived from the secret by the HMAC chain date, region, service,
//!    `aws4_request`; cached per access key for the two most recent dates,
//!    zeroized when replaced), HMAC-SHA256, compared in constant time.
//!
//! Secrets never leave [`credentials`]'s types: no `Debug` prints them, and
//! no message carries one or an Authorization header.

// The HTTP listener (src/http/, another change) wires the verifier in; until
// then only the tests and the internals build use it.
#![cfg_attr(not(feature = "internals"), allow(dead_code, unused_imports))]

mod canonical;
pub mod credentials;
#[cfg(test)]
mod tests;

pub use credentials::{CredentialConfig, CredentialError, Credentials, Principal};

use canonical::Sink;
use hmac::{KeyInit, Mac};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::StatusCode;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<Sha256>;

impl Sink for HmacSha256 {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// The one signing algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The service a credential must be scoped to (KMS's signing name).
pub const SERVICE: &str = "kms";

/// How far `X-Amz-Date` may be from the daemon's clock, either way: AWS
/// KMS's own window ("Signature expired: ... (... - 5 min.)" from KMS,
/// docs/sigv4.md).
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The widest window [`Verifier::with_max_skew`] takes: AWS's widest (15
/// minutes, its `RequestExpired` rule), so a captured request is never
/// replayable for longer than AWS would allow.
pub const MAX_MAX_SKEW: Duration = Duration::from_secs(15 * 60);

const TERMINATOR: &str = "aws4_request";
const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
const X_AMZ_TARGET: HeaderName = HeaderName::from_static("x-amz-target");
const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");

/// Why a request is not authenticated. Each has AWS's exception name
/// ([`SigV4Error::aws_name`]) and HTTP status ([`SigV4Error::status`]);
/// the `Display` text is the message to send. Messages quote what the
/// client sent (clipped), never a secret or a whole Authorization header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No Authorization header, or an empty one.
    #[error("Request is missing Authentication Token")]
    MissingAuthenticationToken,
    /// An Authorization or X-Amz-Date header that is not SigV4's form, a
    /// required header not signed, or query-string authentication.
    #[error("{0}")]
    IncompleteSignature(Cow<'static, str>),
    /// An access key id the store does not have.
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    /// An `X-Amz-Security-Token`: kmsd has no temporary credentials.
    #[error("The security token included in the request is invalid.")]
    SessionToken,
    /// A credential scoped to another region (the one it names).
    #[error("Credential should be scoped to a valid region, not '{0}'. ")]
    WrongRegion(String),
    /// A credential scoped to another service (the message names the right
    /// one, as AWS's does).
    #[error("Credential should be scoped to correct service: '{expected}'. ")]
    WrongService {
        /// The service named in the scope.
        found: String,
        /// The service it must name.
        expected: &'static str,
    },
    /// A scope that does not end in `aws4_request`.
    #[error("Credential should be scoped with a valid terminator: 'aws4_request', not '{0}'. ")]
    WrongTerminator(String),
    /// A scope date other than the day of `X-Amz-Date`.
    #[error(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
         HTTP: '{scope}' != '{day}', from '{amz_date}'."
    )]
    DateMismatch {
        /// The scope's date.
        scope: String,
        /// The day of `X-Amz-Date`.
        day: String,
        /// `X-Amz-Date`.
        amz_date: String,
    },
    /// `X-Amz-Date` older than the window allows.
    #[error("Signature expired: {amz_date} is now earlier than {limit} ({now} - {window}.)")]
    Expired {
        /// The request's time.
        amz_date: String,
        /// The oldest time accepted.
        limit: String,
        /// Now.
        now: String,
        /// The window (`5 min`).
        window: String,
    },
    /// `X-Amz-Date` further in the future than the window allows.
    #[error(
        "Signature not yet current: {amz_date} is still later than {limit} ({now} + {window}.)"
    )]
    NotYetCurrent {
        /// The request's time.
        amz_date: String,
        /// The latest time accepted.
        limit: String,
        /// Now.
        now: String,
        /// The window.
        window: String,
    },
    /// An `x-amz-content-sha256` that is no hash (`UNSIGNED-PAYLOAD`,
    /// `STREAMING-...`): kmsd verifies every body.
    #[error(
        "kmsd verifies the payload: x-amz-content-sha256 must be the SHA-256 of the body, not '{0}'"
    )]
    UnsignedPayload(String),
    /// An `x-amz-content-sha256` that is another body's hash.
    #[error("x-amz-content-sha256 does not match the SHA-256 of the body")]
    PayloadHashMismatch,
    /// The signature is not the one the secret gives.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check \
         your AWS Secret Access Key and signing method. Consult the service documentation for \
         details."
    )]
    SignatureMismatch,
}

impl SigV4Error {
    /// AWS's exception name, for `__type`.
    pub fn aws_name(&self) -> &'static str {
        match self {
            SigV4Error::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            SigV4Error::IncompleteSignature(_) => "IncompleteSignatureException",
            SigV4Error::UnknownAccessKey | SigV4Error::SessionToken => {
                "UnrecognizedClientException"
            }
            SigV4Error::WrongRegion(_)
            | SigV4Error::WrongService { .. }
            | SigV4Error::WrongTerminator(_)
            | SigV4Error::DateMismatch { .. }
            | SigV4Error::Expired { .. }
            | SigV4Error::NotYetCurrent { .. }
            | SigV4Error::UnsignedPayload(_)
            | SigV4Error::PayloadHashMismatch
            | SigV4Error::SignatureMismatch => "InvalidSignatureException",
        }
    }

    /// The HTTP status: 400 for all of them, as AWS's JSON services (KMS,
    /// DynamoDB, ECR...) answer them (docs/sigv4.md). None is 5xx: an SDK
    /// does not retry them.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    fn incomplete(message: impl Into<Cow<'static, str>>) -> SigV4Error {
        SigV4Error::IncompleteSignature(message.into())
    }
}

/// At most 64 characters of what a client sent, for a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// The signing keys of one access key for its most recent dates (two: a
/// window of at most 15 minutes either way spans at most two days).
#[derive(Default)]
struct SigningKeys {
    slots: [Option<(u32, Zeroizing<[u8; 32]>)>; 2],
    next: usize,
}

/// Verifies SigV4 requests against a credential store, for one region and
/// the `kms` service.
pub struct Verifier {
    credentials: Credentials,
    region: Box<str>,
    service: &'static str,
    max_skew: i64,
    cache_signing_keys: bool,
    /// By credential index.
    signing_keys: Box<[Mutex<SigningKeys>]>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("region", &self.region)
            .field("service", &self.service)
            .field("max_skew_seconds", &self.max_skew)
            .field("cache_signing_keys", &self.cache_signing_keys)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of requests scoped to `region` and `kms`, with AWS KMS's
    /// 5-minute window and the signing-key cache on.
    pub fn new(credentials: Credentials, region: &str) -> Verifier {
        let signing_keys = (0..credentials.len())
            .map(|_| Mutex::new(SigningKeys::default()))
            .collect();
        Verifier {
            credentials,
            region: region.into(),
            service: SERVICE,
            max_skew: DEFAULT_MAX_SKEW.as_secs() as i64,
            cache_signing_keys: true,
            signing_keys,
        }
    }

    /// Another window for `X-Amz-Date`, whole seconds, at most
    /// [`MAX_MAX_SKEW`].
    pub fn with_max_skew(mut self, skew: Duration) -> Verifier {
        self.max_skew = skew.min(MAX_MAX_SKEW).as_secs() as i64;
        self
    }

    /// Turns the signing-key cache off (every request derives its key: four
    /// more HMACs), to measure what it saves (benches/sigv4.rs).
    pub fn with_signing_key_cache(mut self, on: bool) -> Verifier {
        self.cache_signing_keys = on;
        self
    }

    /// Another service than `kms` (AWS's test suite signs for `service`).
    #[cfg(test)]
    fn for_service(mut self, service: &'static str) -> Verifier {
        self.service = service;
        self
    }

    /// The region credentials must be scoped to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The window for `X-Amz-Date`.
    pub fn max_skew(&self) -> Duration {
        Duration::from_secs(self.max_skew as u64)
    }

    /// The store.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Verifies a request: its head as received, its whole body, and the
    /// time now. Answers with whom it runs as.
    ///
    /// # Errors
    ///
    /// The first check that fails (the module's list), as AWS names it.
    pub fn verify(
        &self,
        parts: &Parts,
        body: &[u8],
        now: SystemTime,
    ) -> Result<&Principal, SigV4Error> {
        let headers = &parts.headers;
        let query_auth = parts.uri.query().is_some_and(has_query_auth);
        let authorization = match single(headers, &http::header::AUTHORIZATION, "Authorization")? {
            Some(v) => v
                .to_str()
                .map_err(|_| SigV4Error::incomplete("the Authorization header is not ASCII"))?
                .trim(),
            None => "",
        };
        if authorization.is_empty() {
            return Err(if query_auth {
                SigV4Error::incomplete(
                    "kmsd takes SigV4 in the Authorization header only: query-string \
                     (presigned) authentication is not supported",
                )
            } else {
                SigV4Error::MissingAuthenticationToken
            });
        }
        if query_auth {
            return Err(SigV4Error::incomplete(
                "the request carries both an Authorization header and query-string \
                 authentication (X-Amz-Signature): use the header alone",
            ));
        }
        let auth = Authorization::parse(authorization)?;

        let amz_date = match single(headers, &X_AMZ_DATE, "X-Amz-Date")? {
            Some(v) => v.to_str().unwrap_or("").trim_matches([' ', '\t']),
            None => {
                return Err(SigV4Error::incomplete(
                    "Authorization header requires existence of a 'X-Amz-Date' header (kmsd \
                     does not take the 'Date' header instead).",
                ))
            }
        };
        let Some(time) = parse_amz_date(amz_date) else {
            return Err(SigV4Error::incomplete(format!(
                "X-Amz-Date must be in the ISO 8601 basic format YYYYMMDD'T'HHMMSS'Z', not '{}'",
                clip(amz_date)
            )));
        };

        let signed = |name: &str| auth.signed_headers.split(';').any(|h| h == name);
        for (name, shown) in [("host", "Host"), ("x-amz-date", "X-Amz-Date")] {
            if !signed(name) {
                return Err(SigV4Error::incomplete(format!(
                    "'{shown}' must be a 'SignedHeader' in the AWS Authorization."
                )));
            }
        }
        if headers.contains_key(X_AMZ_TARGET) && !signed("x-amz-target") {
            return Err(SigV4Error::incomplete(
                "'X-Amz-Target' must be a 'SignedHeader' in the AWS Authorization: it names the \
                 operation.",
            ));
        }

        if auth.terminator != TERMINATOR {
            return Err(SigV4Error::WrongTerminator(clip(auth.terminator)));
        }
        if auth.date != &amz_date[..8] {
            return Err(SigV4Error::DateMismatch {
                scope: clip(auth.date),
                day: amz_date[..8].to_owned(),
                amz_date: amz_date.to_owned(),
            });
        }
        if auth.region != &*self.region {
            return Err(SigV4Error::WrongRegion(clip(auth.region)));
        }
        if auth.service != self.service {
            return Err(SigV4Error::WrongService {
                found: clip(auth.service),
                expected: self.service,
            });
        }

        let now = unix_seconds(now);
        let window = || {
            if self.max_skew % 60 == 0 {
                format!("{} min", self.max_skew / 60)
            } else {
                format!("{} s", self.max_skew)
            }
        };
        if time < now - self.max_skew {
            return Err(SigV4Error::Expired {
                amz_date: amz_date.to_owned(),
                limit: format_amz_date(now - self.max_skew),
                now: format_amz_date(now),
                window: window(),
            });
        }
        if time > now + self.max_skew {
            return Err(SigV4Error::NotYetCurrent {
                amz_date: amz_date.to_owned(),
                limit: format_amz_date(now + self.max_skew),
                now: format_amz_date(now),
                window: window(),
            });
        }

        let index = self
            .credentials
            .index(auth.access_key_id)
            .ok_or(SigV4Error::UnknownAccessKey)?;
        if headers.contains_key(X_AMZ_SECURITY_TOKEN) {
            return Err(SigV4Error::SessionToken);
        }

        let body_hash: [u8; 32] = Sha256::digest(body).into();
        let body_hex: [u8; 64] = canonical::hex_lower(&body_hash);
        let payload_hash: &[u8] =
            match single(headers, &X_AMZ_CONTENT_SHA256, "x-amz-content-sha256")? {
                None => &body_hex,
                Some(v) => {
                    let v = v.as_bytes();
                    if v.len() == 64 && v.iter().all(u8::is_ascii_hexdigit) {
                        if !v.eq_ignore_ascii_case(&body_hex) {
                            return Err(SigV4Error::PayloadHashMismatch);
                        }
                        // As the signer wrote it (botocore puts the header's
                        // value in the canonical request as it is).
                        v
                    } else {
                        return Err(SigV4Error::UnsignedPayload(clip(&String::from_utf8_lossy(
                            v,
                        ))));
                    }
                }
            };

        let mut hash = Sha256::new();
        canonical_request(&mut hash, parts, auth.signed_headers, payload_hash)?;
        let canonical_hash: [u8; 32] = hash.finalize().into();

        let key = self.signing_key(index, auth.date);
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(&key[..]).expect("HMAC takes any key length");
        string_to_sign(
            &mut mac,
            amz_date,
            auth.date,
            &self.region,
            self.service,
            &canonical_hash,
        );
        let Some(signature) = auth.signature else {
            return Err(SigV4Error::SignatureMismatch);
        };
        // Constant time: digest's `Mac::verify_slice` compares with ctutils.
        mac.verify_slice(&signature)
            .map_err(|_| SigV4Error::SignatureMismatch)?;
        Ok(&self.credentials.get(index).principal)
    }

    /// The signing key of credential `index` for `date` (`yyyymmdd`, checked
    /// to be `X-Amz-Date`'s day, itself within the window of now: so the
    /// cache holds only keys of today and yesterday or tomorrow).
    fn signing_key(&self, index: usize, date: &str) -> Zeroizing<[u8; 32]> {
        let day: u32 = date.parse().unwrap_or(0);
        if self.cache_signing_keys {
            let keys = self.signing_keys[index].lock();
            if let Some((_, key)) = keys.slots.iter().flatten().find(|(d, _)| *d == day) {
                return key.clone();
            }
        }
        let key = derive_signing_key(
            self.credentials.get(index).k_secret(),
            date,
            &self.region,
            self.service,
        );
        if self.cache_signing_keys {
            let mut keys = self.signing_keys[index].lock();
            if !keys.slots.iter().flatten().any(|(d, _)| *d == day) {
                let next = keys.next;
                // The key replaced is zeroized as it drops.
                keys.slots[next] = Some((day, key.clone()));
                keys.next = 1 - next;
            }
        }
        key
    }
}

/// The parts of an Authorization header.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: &'a str,
    /// `None`: not 64 lowercase hex digits (never equal to a signature).
    signature: Option<[u8; 32]>,
}

impl<'a> Authorization<'a> {
    fn parse(value: &'a str) -> Result<Authorization<'a>, SigV4Error> {
        let (algorithm, rest) = value.split_once(' ').unwrap_or((value, ""));
        if algorithm != ALGORITHM {
            return Err(SigV4Error::incomplete(format!(
                "kmsd takes Signature Version 4 only: the Authorization header must start with \
                 '{ALGORITHM} ', not '{}'",
                clip(algorithm)
            )));
        }
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        let rest = rest.trim_matches([' ', '\t']);
        for item in rest.split(',').filter(|_| !rest.is_empty()) {
            let item = item.trim_matches([' ', '\t']);
            let Some((key, value)) = item.split_once('=') else {
                return Err(SigV4Error::incomplete(format!(
                    "'{}' not a valid key=value pair (missing equal-sign) in Authorization header",
                    clip(item)
                )));
            };
            let slot = match key {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                _ => {
                    return Err(SigV4Error::incomplete(format!(
                        "'{}' is not a parameter of the Authorization header (Credential, \
                         SignedHeaders, Signature)",
                        clip(key)
                    )))
                }
            };
            if slot.replace(value).is_some() {
                return Err(SigV4Error::incomplete(format!(
                    "the Authorization header gives '{key}' more than once"
                )));
            }
        }
        let mut missing = String::new();
        for (name, absent) in [
            ("Credential", credential.is_none()),
            ("Signature", signature.is_none()),
            ("SignedHeaders", signed_headers.is_none()),
        ] {
            if absent {
                missing.push_str(&format!(
                    "Authorization header requires '{name}' parameter. "
                ));
            }
        }
        let (Some(credential), Some(signed_headers), Some(signature)) =
            (credential, signed_headers, signature)
        else {
            return Err(SigV4Error::incomplete(missing.trim_end().to_owned()));
        };
        let mut e = credential.split('/');
        let elements = [e.next(), e.next(), e.next(), e.next(), e.next(), e.next()];
        let [Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None] =
            elements
        else {
            return Err(SigV4Error::incomplete(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{}'",
                clip(credential)
            )));
        };
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SigV4Error::incomplete(format!(
                "the Credential's date must be YYYYMMDD, not '{}'",
                clip(date)
            )));
        }
        if !valid_signed_headers(signed_headers) {
            return Err(SigV4Error::incomplete(format!(
                "SignedHeaders must be header names in lowercase, sorted, without repeats, \
                 separated by ';': '{}'",
                clip(signed_headers)
            )));
        }
        Ok(Authorization {
            access_key_id,
            date,
            region,
            service,
            terminator,
            signed_headers,
            signature: decode_signature(signature),
        })
    }
}

/// Lowercase token characters (RFC 9110), in strictly ascending order.
fn valid_signed_headers(list: &str) -> bool {
    let token = |h: &str| {
        !h.is_empty()
            && h.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
            })
    };
    let mut previous: Option<&str> = None;
    for h in list.split(';') {
        if !token(h) || previous.is_some_and(|p| p >= h) {
            return false;
        }
        previous = Some(h);
    }
    true
}

/// 64 lowercase hex digits to bytes.
fn decode_signature(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Whether a query carries SigV4's query-string authentication.
fn has_query_auth(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        ["X-Amz-Signature", "X-Amz-Credential", "X-Amz-Algorithm"]
            .iter()
            .any(|p| name.eq_ignore_ascii_case(p))
    })
}

/// The header `name`, if the request has it once; an error if more.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    shown: &str,
) -> Result<Option<&'h HeaderValue>, SigV4Error> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(SigV4Error::incomplete(format!(
            "the request has more than one '{shown}' header"
        )));
    }
    Ok(first)
}

/// Writes the canonical request: method, URI, query, the signed headers
/// (each `name:values`), a blank line, the signed header list, the
/// payload's hash.
fn canonical_request(
    out: &mut impl Sink,
    parts: &Parts,
    signed_headers: &str,
    payload_hash: &[u8],
) -> Result<(), SigV4Error> {
    out.put(parts.method.as_str().as_bytes());
    out.put(b"\n");
    canonical::uri(out, parts.uri.path());
    out.put(b"\n");
    canonical::query(out, parts.uri.query());
    out.put(b"\n");
    for name in signed_headers.split(';') {
        out.put(name.as_bytes());
        out.put(b":");
        let mut values = parts.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            // HTTP/2 carries the host as :authority, which hyper puts in
            // the URI.
            match parts.uri.authority() {
                Some(authority) if name == "host" => {
                    canonical::header_value(out, authority.as_str().as_bytes());
                }
                _ => {
                    return Err(SigV4Error::incomplete(format!(
                        "SignedHeaders names '{name}', which the request does not carry"
                    )))
                }
            }
        }
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.put(b",");
            }
            canonical::header_value(out, value.as_bytes());
        }
        out.put(b"\n");
    }
    out.put(b"\n");
    out.put(signed_headers.as_bytes());
    out.put(b"\n");
    out.put(payload_hash);
    Ok(())
}

/// Writes the string to sign: the algorithm, `X-Amz-Date`, the credential
/// scope, the canonical request's hash.
fn string_to_sign(
    out: &mut impl Sink,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    canonical_hash: &[u8; 32],
) {
    out.put(ALGORITHM.as_bytes());
    out.put(b"\n");
    out.put(amz_date.as_bytes());
    out.put(b"\n");
    for part in [date, "/", region, "/", service, "/", TERMINATOR, "\n"] {
        out.put(part.as_bytes());
    }
    out.put(&canonical::hex_lower::<32, 64>(canonical_hash));
}

fn hmac(key: &[u8], message: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    Zeroizing::new(m.finalize().into_bytes().into())
}

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" || secret, date), region),
/// service), "aws4_request").
fn derive_signing_key(
    k_secret: &[u8],
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; 32]> {
    let k_date = hmac(k_secret, date.as_bytes());
    let k_region = hmac(&k_date[..], region.as_bytes());
    let k_service = hmac(&k_region[..], service.as_bytes());
    hmac(&k_service[..], TERMINATOR.as_bytes())
}

/// Seconds since the epoch (negative before it).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (the inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYYMMDDTHHMMSSZ` to seconds since the epoch; `None` if it is not that
/// form or not a real time.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    // The day must exist: it survives the round trip.
    let days = days_from_civil(y, mo, d);
    if civil_from_days(days) != (y, mo, d) {
        return None;
    }
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

/// Seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
fn format_amz_date(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}
