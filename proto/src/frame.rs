//! Framing: a little-endian u32 length, then that many bytes of flatbuffer.
//!
//! Sans-I/O: [`FrameDecoder::decode`] takes the bytes received so far and
//! returns whole frames; "not enough bytes yet" is `Ok(None)`, not an error.
//! The length is checked against the maximum before anything else, and the
//! decoder never grows the buffer: the reader grows it as bytes arrive
//! ([`make_room`]), so a length prefix announcing a large frame costs nothing
//! until the peer actually sends the bytes.
//!
//! Requests and answers carry plaintext (Encrypt, data keys), so every buffer
//! that held one is zeroed before it is freed or reallocated:
//! - a [`Frame`] is a view into the read buffer and zeroes its bytes when it
//!   is dropped (the length prefix before it is not secret);
//! - [`make_room`] never lets `BytesMut` reallocate (which would free the old
//!   block unzeroed): it moves the unconsumed bytes into a new buffer and
//!   zeroes them in the old one, whose block is freed once its last frame is
//!   dropped (zeroed);
//! - [`wipe`] zeroes what is left when a connection ends.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Default largest frame: a full batch of 1024 Encrypt requests of 4096 bytes
/// (4 MiB of plaintext) plus the flatbuffer's own overhead fits.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// Zeroes `bytes` in a way the compiler may not remove even if the memory is
/// freed right after. A plain `fill` is a memset (fast, vectorized; the
/// `zeroize` crate's volatile byte loop is several times slower on frames of
/// kilobytes), and the barrier keeps it from being optimized away as a dead
/// store.
pub fn zero(bytes: &mut [u8]) {
    bytes.fill(0);
    zeroize::optimization_barrier(bytes);
}

/// Zeroes what is left in a read buffer and empties it (its spare capacity
/// never held data: reads append at the end).
pub fn wipe(buf: &mut BytesMut) {
    zero(&mut buf[..]);
    buf.clear();
}

/// A read buffer wiped when dropped, also when the task holding it is
/// dropped mid-read (a connection outliving the shutdown grace period, a
/// client's aborted reader).
pub struct WipeOnDrop(pub BytesMut);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// One whole frame (without its length prefix), uniquely owned, zeroed when
/// dropped: a request may carry plaintext. Usually a view into the
/// connection's read buffer (no copy).
pub struct Frame(BytesMut);

impl Frame {
    /// The frame's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

// SAFETY: a `Frame`'s bytes live in its `BytesMut`'s heap block, which
// does not move when the `Frame` moves, and `Frame` offers no `&mut` access
// that could reallocate it (it is only zeroed in place on drop). So a
// decoded request borrowing the frame can travel with it (kmsd keeps the
// two together with `yoke`, so that a frame is decoded once).
#[allow(unsafe_code)]
unsafe impl stable_deref_trait::StableDeref for Frame {}

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        zero(&mut self.0[..]);
    }
}

/// Never shows the bytes (they may be plaintext).
impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({} bytes)", self.0.len())
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.0 == other.0
    }
}

impl Eq for Frame {}

impl From<Vec<u8>> for Frame {
    /// Takes the vector's allocation (no copy).
    fn from(v: Vec<u8>) -> Frame {
        Frame(BytesMut::from(Bytes::from(v)))
    }
}

impl From<&[u8]> for Frame {
    /// Copies the bytes.
    fn from(s: &[u8]) -> Frame {
        Frame(BytesMut::from(s))
    }
}

impl From<Bytes> for Frame {
    /// Takes the bytes without a copy when they are not shared, else copies
    /// them (the shared original is then not zeroed by this frame).
    fn from(b: Bytes) -> Frame {
        Frame(BytesMut::from(b))
    }
}

/// Makes sure `buf` has at least `need` bytes of spare capacity for the next
/// read, without letting `BytesMut` reallocate. When it must grow, the new
/// buffer holds what is unconsumed plus room for at least `chunk` more bytes;
/// while a large frame is arriving the room doubles with what has arrived
/// (never past the frame's end plus `chunk`), so a frame of n bytes costs
/// O(n) copying rather than O(n²), and the memory held stays within twice
/// what the peer actually sent plus one chunk. The unconsumed bytes are
/// zeroed in the old buffer, whose block is freed when its last frame is
/// dropped (frames zero themselves), so no copy of a request is left behind.
/// Before growing, the buffer's own block is reused when no frame still
/// refers to it (see `reclaim`).
pub fn make_room(buf: &mut BytesMut, need: usize, chunk: usize) {
    if buf.capacity() - buf.len() >= need {
        return;
    }
    if reclaim(buf, need) {
        return;
    }
    let len = buf.len();
    let mut extra = need.max(chunk);
    if let Some(frame_len) = peek_len(buf) {
        let rest = (LEN_PREFIX + frame_len).saturating_sub(len);
        if rest > 0 && LEN_PREFIX + frame_len > chunk {
            // A large frame is arriving and reads stop at its end (see
            // [`read_limit`]): room for no more than the rest of it.
            extra = need.max(rest.min(len.max(chunk)));
        } else {
            extra = extra.max(len.min(rest));
        }
    }
    let mut grown = BytesMut::with_capacity(len + extra);
    grown.extend_from_slice(buf);
    wipe(buf);
    *buf = grown;
}

/// How many bytes the next read into `buf` should take at most: `chunk`,
/// except while a frame larger than `chunk` is arriving, when it is only
/// what is left of that frame. A frame arriving this way ends at the end of
/// its buffer, so a connection whose large frame then waits for the byte
/// budget holds that frame and nothing of the next one (measured: 1,024
/// connections pipelining 75 KB frames held about twice their frames
/// before, tests/integration/memory.rs). Small frames are read a chunk at a
/// time, many per read, as before.
pub fn read_limit(buf: &[u8], chunk: usize) -> usize {
    match peek_len(buf) {
        Some(frame_len) if LEN_PREFIX + frame_len > chunk => {
            let rest = (LEN_PREFIX + frame_len).saturating_sub(buf.len());
            if rest == 0 {
                chunk
            } else {
                rest.min(chunk)
            }
        }
        _ => chunk,
    }
}

/// Reuses `buf`'s own block when nothing else refers to it (every frame cut
/// from it has been dropped, and so zeroed): `BytesMut` then moves the
/// unconsumed bytes back to the block's start, and their old place, which
/// does not overlap the new one, is zeroed here. Measured: a fresh block per
/// frame of 4 KiB Encrypt batches cost 70,000 page faults a second and a
/// fifth of the daemon's throughput (docs/perf/zeroed-buffers.md).
fn reclaim(buf: &mut BytesMut, need: usize) -> bool {
    let len = buf.len();
    let from = buf.as_ptr() as usize;
    if !buf.try_reclaim(need) {
        return false;
    }
    let to = buf.as_ptr() as usize;
    if len > 0 && from != to {
        // The old copy starts `from - to` bytes after the new start, at
        // least `len` bytes in (BytesMut moves only without overlap): in
        // the spare capacity, which begins `len` bytes in.
        let off = from - to;
        let spare = buf.spare_capacity_mut();
        let old = &mut spare[off - len..off];
        for b in old.iter_mut() {
            b.write(0);
        }
        zeroize::optimization_barrier(old);
    }
    true
}

/// Makes room for `additional` more bytes in `v` without letting `Vec`
/// reallocate (which would free the old block unzeroed): when it must grow,
/// the bytes move to a new vector of at least twice the capacity and are
/// zeroed in the old one. For buffers of requests or answers.
pub fn reserve_zeroizing(v: &mut Vec<u8>, additional: usize) {
    if v.capacity() - v.len() >= additional {
        return;
    }
    let mut grown = Vec::with_capacity((v.len() + additional).max(2 * v.capacity()));
    grown.extend_from_slice(v);
    zero(v);
    *v = grown;
}

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
    /// Returns `Ok(None)` when more bytes are needed. Never grows `buf`: the
    /// reader does, as bytes arrive (see [`make_room`]).
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
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
        if buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        buf.advance(LEN_PREFIX);
        Ok(Some(Frame(buf.split_to(len))))
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
    #[allow(unsafe_code)] // reads back bytes the test wrote, to see them zeroed
    fn room_made_in_the_same_block_leaves_no_copy_of_what_moved() {
        let d = FrameDecoder::new(64);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[40, 0, 0, 0]);
        buf.extend_from_slice(&[0xAA; 40]);
        buf.extend_from_slice(&[40, 0, 0, 0]);
        buf.extend_from_slice(&[0xBB; 10]);
        let base = buf.as_ptr() as usize;
        drop(d.decode(&mut buf).unwrap().unwrap());
        assert_eq!(buf.len(), 14);
        make_room(&mut buf, 16, 16);
        assert_eq!(buf.as_ptr() as usize, base, "the block is reused");
        assert_eq!(&buf[4..], &[0xBB; 10]);
        // Bytes 14..58 of the block held the frame (zeroed by its drop) and
        // the moved bytes' old copy (zeroed by make_room).
        let spare = buf.spare_capacity_mut();
        let written = &spare[..44];
        assert!(written.iter().all(|b| unsafe { b.assume_init() } == 0));
    }

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
        assert_eq!(&*d.decode(&mut buf).unwrap().unwrap(), b"abc");
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

    #[test]
    fn a_prefix_announcing_the_largest_frame_leaves_the_buffer_small() {
        // Regression: the decoder used to reserve the whole announced frame
        // (8 MiB by default) as soon as the four prefix bytes arrived.
        let d = FrameDecoder::default();
        let chunk = 64 * 1024;
        let mut buf = BytesMut::new();
        make_room(&mut buf, chunk / 4, chunk);
        buf.extend_from_slice(&(DEFAULT_MAX_FRAME as u32).to_le_bytes());
        assert_eq!(d.decode(&mut buf), Ok(None));
        make_room(&mut buf, chunk / 4, chunk);
        assert!(
            buf.capacity() <= LEN_PREFIX + chunk,
            "capacity {} for 4 bytes received",
            buf.capacity()
        );
    }

    #[test]
    fn a_large_frame_is_read_up_to_its_end_and_no_further() {
        // A 75 KB frame followed by the next one, read a chunk at a time
        // within `read_limit`: when the first frame is whole, its buffer
        // holds it and nothing more, in a block no larger than the frame.
        let chunk = 64 * 1024;
        let frame_len = 75_000;
        let mut wire = Vec::new();
        for fill in [1u8, 2] {
            wire.extend_from_slice(&(frame_len as u32).to_le_bytes());
            wire.extend(std::iter::repeat_n(fill, frame_len));
        }
        let d = FrameDecoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut arrived = 0;
        let frame = loop {
            if let Some(f) = d.decode(&mut buf).unwrap() {
                break f;
            }
            make_room(&mut buf, chunk / 4, chunk);
            let n = (buf.capacity() - buf.len()).min(read_limit(&buf, chunk));
            buf.extend_from_slice(&wire[arrived..arrived + n]);
            arrived += n;
        };
        assert_eq!(frame.len(), frame_len);
        assert!(frame.iter().all(|&b| b == 1));
        assert_eq!(arrived, LEN_PREFIX + frame_len, "read past the frame");
        assert!(buf.is_empty());
        assert!(
            buf.capacity() + frame.len() <= LEN_PREFIX + frame_len + chunk / 4,
            "block of {} for a frame of {frame_len}",
            buf.capacity() + frame.len()
        );
        // Small frames are still read a whole chunk at a time.
        let mut small = BytesMut::new();
        small.extend_from_slice(&100u32.to_le_bytes());
        assert_eq!(read_limit(&small, chunk), chunk);
        assert_eq!(read_limit(&[], chunk), chunk);
    }

    #[test]
    fn growth_follows_what_arrived_and_bounds_the_copying() {
        let chunk = 1024;
        let frame_len = 100 * chunk;
        let mut buf = BytesMut::new();
        let mut grows = 0;
        let mut arrived = 0;
        let body = vec![7u8; frame_len];
        let mut wire = (frame_len as u32).to_le_bytes().to_vec();
        wire.extend_from_slice(&body);
        while arrived < wire.len() {
            let before = buf.capacity();
            make_room(&mut buf, chunk / 4, chunk);
            if buf.capacity() != before {
                grows += 1;
            }
            // Never more than twice what arrived plus one chunk.
            assert!(buf.capacity() <= 2 * arrived + 2 * chunk, "{arrived}");
            let n = (buf.capacity() - buf.len())
                .min(read_limit(&buf, chunk))
                .min(wire.len() - arrived);
            buf.extend_from_slice(&wire[arrived..arrived + n]);
            arrived += n;
        }
        // Doubling: a logarithmic number of moves, not one per chunk.
        assert!(grows < 20, "{grows} moves");
        let frame = FrameDecoder::new(frame_len)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(&*frame, &body[..]);
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let f = Frame::from(b"secret".to_vec());
        assert_eq!(format!("{f:?}"), "Frame(6 bytes)");
    }
}
