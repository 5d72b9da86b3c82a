//! Framing: a little-endian u32 length, then that many bytes of flatbuffer.
//!
//! Sans-I/O: [`FrameDecoder::decode`] takes the bytes received so far and
//! returns whole frames; "not enough bytes yet" is `Ok(None)`, not an error.
//! The length is checked against the maximum before any buffer is grown for
//! the frame, so a hostile length costs nothing.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Default largest frame: a full batch of 1024 Encrypt requests of 4096 bytes
/// (4 MiB of plaintext) plus the flatbuffer's own overhead fits.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// A framing failure. Both are fatal for the connection: the stream can no
/// longer be split into frames reliably.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is larger than the configured maximum.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length the peer announced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length frame; no valid message is empty.
    #[error("empty frame")]
    Empty,
}

/// Splits a byte stream into frames.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder accepting frames of up to `max_frame` bytes (excluding the
    /// length prefix).
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { max_frame }
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Takes the next whole frame off the front of `buf`, without copying.
    /// Returns `Ok(None)` when more bytes are needed; in that case `buf` has
    /// been given room for the rest of the frame.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = peek_len(buf) else {
            return Ok(None);
        };
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let total = LEN_PREFIX + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(LEN_PREFIX);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

/// The announced length of the frame at the front of `buf`, if the prefix has
/// arrived.
pub fn peek_len(buf: &[u8]) -> Option<usize> {
    let prefix: [u8; LEN_PREFIX] = buf.get(..LEN_PREFIX)?.try_into().ok()?;
    Some(u32::from_le_bytes(prefix) as usize)
}

/// Appends `payload` to `out` as one frame.
///
/// # Panics
/// If `payload` is longer than `u32::MAX`; callers build frames far smaller.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame larger than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_then_whole() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[3, 0]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[0, 0, b'a', b'b']);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"c");
        buf.extend_from_slice(&[1, 0, 0, 0]);
        assert_eq!(
            d.decode(&mut buf).unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn too_large_is_refused_before_allocating() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 16
            })
        );
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn empty_frame_is_an_error() {
        let d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(d.decode(&mut buf), Err(FrameError::Empty));
    }
}
