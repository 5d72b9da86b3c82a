//! # kmsd: a local key-management daemon
//!
//! The path of a request, from the socket inwards (ARCHITECTURE.md has the
//! whole map and the rules):
//!
//! ```text
//! transport (epoll | io_uring) -- SO_PEERCRED -> Identity at accept, frames split sans-I/O
//!     -> wire::admit (the one decode: typed request, plane, keys, answer bound)
//!     -> dispatch (inline for small data-plane frames on cached keys; else the
//!        control-plane executor, the key loader then the HSM executor or the
//!        workers; every queue bounded, full => ThrottlingException)
//!     -> service (typed; one file per operation under service/ops, each an Op)
//!         -> crypto (XAES-256-GCM, blob formats, canonical encryption context)
//!         -> root (root of trust: the file root, or a PKCS#11 HSM)
//!         -> keystore (SQLite: key records and wrapped backing keys)
//!     -> wire::answer (encode) -> the connection's write queue
//! ```
//!
//! The wire protocol, its types and the client live in the `kms-proto`
//! crate, which knows none of this.
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod crypto;
pub mod data_dir;
pub mod hsm;
pub mod migrate;
pub(crate) mod notify;
pub mod root;
pub mod server;

/// Declares modules public with the `internals` feature (kms-loadgen, the
/// integration tests, the benches) and crate-private without it, so that a
/// plain build of kmsd reports the code nothing uses.
macro_rules! internals {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

internals!(
    audit,
    budget,
    clock,
    dispatch,
    errors,
    http,
    identity,
    keystore,
    memlock,
    metrics,
    quota,
    seed,
    service,
    thread_role,
    transport,
    wire,
);

/// Loads the HTTP API's TCP credentials as start-up does (each secret
/// file's mode, owner and content), for `kmsd --check-config`: a file that
/// would stop `kmsd serve` fails the check too.
pub fn http_credentials_check(config: &config::Config) -> Result<(), String> {
    http::sigv4::Credentials::load(&config.http.credentials)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
