//! # kms-proto: the kmsd wire protocol and client
//!
//! `schema/kms.fbs` is the source of truth; [`generated`] is flatc's output
//! for it. On top of it:
//!
//! - [`frame`]: sans-I/O framing (u32 little-endian length + flatbuffer);
//! - [`types`]: the typed requests (borrowed from the frame) and responses
//!   that client and daemon share;
//! - [`codec`]: the one conversion between verified flatbuffers and those
//!   types;
//! - [`client`]: a blocking, pipelining client; `async_client` (feature
//!   `tokio`) an async one;
//! - [`peer`]: the default socket path and the check of the server's uid
//!   (SO_PEERCRED) that clients make before sending anything.
//!
//! Boundary: this crate knows no async runtime unless the `tokio` feature is
//! on, and never knows the daemon's HSM, store or worker pool.
//!
//! Every public item is documented, and the build fails otherwise
//! (`deny(missing_docs)`): this crate is what client authors read. Only
//! [`generated`] (flatc's output, not ours to edit) is exempt.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod client;
pub mod codec;
pub mod error;
pub mod frame;
pub mod generated;
pub mod peer;
pub mod types;

#[cfg(feature = "tokio")]
pub mod async_client;

pub use codec::{
    decode_request, decode_response, encode_request, encode_response, tally_response, DecodeLimits,
    RequestError, ResponseTally, PROTOCOL_VERSION,
};
pub use error::{ErrorKind, KmsError};
pub use types::*;
