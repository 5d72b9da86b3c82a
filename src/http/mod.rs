//! AWS KMS's HTTP API (AWS JSON 1.1): `POST /` with
//! `X-Amz-Target: TrentService.<Operation>` and a JSON body, answered by
//! the same typed service as the binary protocol (docs/aws-api.md).
//!
//! - [`json`]: the encoding: bodies to typed requests and answers to
//!   bodies, with no I/O.
//! - [`sigv4`]: the TCP listener's caller, from an AWS Signature Version 4
//!   and the configured credentials.
//! - [`call`]: one call, from its head and body to its answer, through the
//!   binary protocol's dispatcher. The sockets are `transport::http`'s.

pub mod call;
pub mod json;
pub mod sigv4;
