//! kmsd driven by the real AWS SDK for Rust (`aws-sdk-kms`) over its HTTP
//! API's Unix socket and, in `tcp`, its loopback TCP listener where the
//! SDK's SigV4 signatures are verified: what SDK users rely on when they
//! point the SDK at kmsd instead of AWS KMS.
//!
//! Each test starts its own daemon (`support::Daemon`) and builds a client
//! with `kmsd_sdk_tests::UnixHttpClient` (or `kmsd_sdk_tests::tcp::TcpHttpClient`),
//! as an application would.

mod access;
mod crypto;
mod docs;
mod errors;
mod keys;
mod lifecycle;
mod support;
mod tcp;
