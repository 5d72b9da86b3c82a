//! The daemon's AWS JSON codec (`src/http/json/`) on arbitrary bytes: the
//! first byte picks the operation (one of kmsd's, or a name it does not
//! serve), the rest is the body. Decoding never panics; a request that
//! decodes is read back (`operation()`, its name, its heap bound); a
//! refusal is one of the codec's exceptions, and its answer, like that of
//! an arbitrary error, is JSON that reads back as written.
//!
//! The codec is compiled into this target from the daemon's source (it
//! uses only kms-proto and a few crates, no daemon code), so fuzzing it
//! does not build the daemon.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/http/json/mod.rs"]
mod json;

use json::{encode_error, encode_json_error, JsonError, JsonLimits, JsonRequest};
use kms_proto::{ErrorKind, KmsError, Operation};
use libfuzzer_sys::fuzz_target;

/// Names kmsd does not serve: one of AWS's, and others.
const UNKNOWN: [&str; 4] = ["Sign", "", "encrypt", "TrentService.Encrypt"];

fn check_error(e: &JsonError) {
    assert!(
        matches!(
            e.name(),
            "UnknownOperationException"
                | "SerializationException"
                | "ValidationException"
                | "UnsupportedOperationException"
                | "MalformedPolicyDocumentException"
        ),
        "unexpected refusal {e:?}"
    );
    let mut out = Vec::new();
    assert_eq!(encode_json_error(e, &mut out), e.status());
    let v: serde_json::Value = serde_json::from_slice(&out).expect("an error answer is JSON");
    assert_eq!(v["__type"], e.name());
    assert_eq!(v["message"], e.message());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let names = Operation::NAMES.len();
    let name = match usize::from(pick) {
        i if i < names => Operation::NAMES[i],
        i => UNKNOWN[i % UNKNOWN.len()],
    };
    for limits in [
        JsonLimits::default(),
        JsonLimits {
            max_body: 512,
            max_depth: 2,
            max_fields: 16,
            max_string: 64,
        },
    ] {
        match JsonRequest::decode(name, body, &limits) {
            Ok(req) => {
                let op = req.operation();
                assert_eq!(op.name(), name);
                assert!(req.heap_bytes() >= body.len());
                let _ = format!("{req:?}");
            }
            Err(e) => check_error(&e),
        }
    }

    // An arbitrary error: its kind from the first byte, its message the
    // body's text.
    let kind = ErrorKind::ALL[usize::from(pick) % ErrorKind::ALL.len()];
    let error = KmsError::new(kind, String::from_utf8_lossy(body));
    let mut out = Vec::new();
    let status = encode_error(&error, &mut out);
    assert!((400..600).contains(&status));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("an error answer is JSON");
    assert_eq!(v["__type"], kind.name());
    assert_eq!(v["message"], error.message.as_str());
});
