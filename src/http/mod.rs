//! AWS KMS's HTTP API (AWS JSON 1.1): `POST /` with
//! `X-Amz-Target: TrentService.<Operation>` and a JSON body, answered by
//! the same typed service as the Unix socket. [`json`] is the encoding:
//! bodies to typed requests and answers to bodies, with no I/O
//! (docs/aws-api.md).

pub mod json;
pub mod call;
