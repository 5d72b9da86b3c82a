//! The AWS JSON 1.1 endpoint (AWS KMS's HTTP API) beside the Unix socket.

pub mod sigv4;
