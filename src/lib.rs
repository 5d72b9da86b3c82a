//! # kmsd: a local key-management daemon
//!
//! The pipeline, from the socket inwards:
//!
//! ```text
//! transport (epoll | io_uring) -- SO_PEERCRED at accept, frames split sans-I/O
//!     -> dispatch (inline for small ops on cached keys, else a bounded
//!        crossbeam queue feeding a rayon pool; full queue => ThrottlingException)
//!     -> service (one file per operation under service/ops)
//!         -> crypto (XAES-256-GCM, blob format, canonical encryption context)
//!         -> root (root of trust: wraps backing keys; file root today)
//!         -> keystore (SQLite: key metadata and wrapped backing keys)
//! ```
//!
//! The wire protocol, its types and the client live in the `kms-proto`
//! crate, which knows none of this.
#![deny(unsafe_code)]

pub mod budget;
pub mod config;
pub mod crypto;
pub mod data_dir;
pub mod dispatch;
pub mod errors;
pub mod hsm;
pub mod identity;
pub mod keystore;
pub mod memlock;
pub mod migrate;
pub(crate) mod notify;
pub mod root;
pub mod server;
pub mod service;
pub mod thread_role;
pub mod transport;
pub mod wire;
