//! The daemon's read path: a byte stream is split into frames (max 1 MiB)
//! and every frame is decoded as a request; requests that decode are
//! round-tripped through the encoder. The same stream fed in small pieces
//! must yield the same frames.
#![no_main]

mod common;

use bytes::BytesMut;
use kms_proto::frame::{Frame, FrameDecoder, FrameError};
use libfuzzer_sys::fuzz_target;

/// Frames of `stream` delivered `piece` bytes at a time, and how it ended.
fn split(stream: &[u8], piece: usize) -> (Vec<Frame>, Option<FrameError>) {
    let dec = FrameDecoder::new(common::MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                // Fatal for the connection: the daemon closes it.
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let limits = common::limits();
    let (frames, end) = split(data, data.len().max(1));
    for frame in &frames {
        common::check_request(frame, &limits);
    }
    // Incremental delivery sees exactly the same frames and the same error.
    let (pieces, pieces_end) = split(data, 7);
    assert_eq!(pieces, frames);
    assert_eq!(pieces_end, end);
});
