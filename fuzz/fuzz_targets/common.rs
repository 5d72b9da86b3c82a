//! Checks shared by the fuzz targets.

// Each target uses part of this module.
#![allow(dead_code)]

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use kms_proto::frame::{Frame, FrameDecoder};
use kms_proto::{
    decode_request, decode_response, encode_request, encode_response, DecodeLimits, ErrorKind,
    RequestBody, ResponseBody,
};

/// The largest frame the targets accept: small enough that the fuzzer's
/// memory limit is never the finding.
pub const MAX_FRAME: usize = 1 << 20;

/// Decode limits matching [`MAX_FRAME`].
pub fn limits() -> DecodeLimits {
    DecodeLimits {
        max_frame: MAX_FRAME,
        ..DecodeLimits::default()
    }
}

/// The one frame of `wire`, which must hold exactly one.
fn only_frame(wire: &[u8]) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = FrameDecoder::new(usize::MAX)
        .decode(&mut buf)
        .expect("an encoded frame is well framed")
        .expect("an encoded frame is whole");
    assert!(buf.is_empty(), "encode wrote more than one frame");
    frame
}

/// Decodes `payload` as a request. It must not panic; an error must be one of
/// the decoder's kinds; a request whose items all decoded must survive
/// encode -> frame -> decode unchanged.
pub fn check_request(payload: &[u8], limits: &DecodeLimits) {
    let req = match decode_request(payload, limits) {
        Ok(req) => req,
        Err(e) => {
            assert!(
                matches!(
                    e.error.kind,
                    ErrorKind::Serialization | ErrorKind::Validation
                ),
                "unexpected frame error {e:?}"
            );
            return;
        }
    };
    let all_ok = match &req.body {
        RequestBody::Single(op) => op.is_ok(),
        RequestBody::Batch(items) => items.iter().all(Result::is_ok),
    };
    if !all_ok {
        return;
    }
    let mut wire = Vec::new();
    encode_request(&mut FlatBufferBuilder::new(), &req, &mut wire);
    let frame = only_frame(&wire);
    // The verifier bounded the request's apparent size by the frame limit;
    // the re-encoding is checked without a size limit of its own.
    let relaxed = DecodeLimits {
        max_frame: usize::MAX,
        ..*limits
    };
    let again = decode_request(&frame, &relaxed).expect("re-encoded request decodes");
    assert_eq!(again, req, "request changed in an encode/decode round trip");
}

/// Decodes `payload` as a response. It must not panic; what decodes must
/// re-encode into a response that decodes to the same value (unless it holds
/// error names unknown to this client, which are renamed on the way).
pub fn check_response(payload: &[u8]) {
    let Ok(resp) = decode_response(payload, MAX_FRAME) else {
        return;
    };
    let mut wire = Vec::new();
    encode_response(&mut FlatBufferBuilder::new(), &resp, &mut wire);
    let frame = only_frame(&wire);
    let again = decode_response(&frame, usize::MAX).expect("re-encoded response decodes");
    let unrecognized =
        |o: &kms_proto::Outcome| matches!(o, Err(e) if e.kind == ErrorKind::Unrecognized);
    let renamed = match &resp.body {
        ResponseBody::Error(e) => e.kind == ErrorKind::Unrecognized,
        ResponseBody::Single(o) => unrecognized(o),
        ResponseBody::Batch(items) => items.iter().any(unrecognized),
    };
    if !renamed {
        assert_eq!(
            again, resp,
            "response changed in an encode/decode round trip"
        );
    }
}
