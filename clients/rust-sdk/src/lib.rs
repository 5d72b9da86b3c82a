//! An HTTP client for the AWS SDK for Rust that talks to kmsd's HTTP API
//! over its Unix socket (`kmsd-http.sock`), and the tests that drive kmsd
//! with the real `aws-sdk-kms` through it (`tests/`).
//!
//! The SDK's transport is pluggable: a client is anything implementing
//! [`HttpClient`], which hands out an [`HttpConnector`], which takes one
//! HTTP request and returns a future of its response. [`UnixHttpClient`]
//! opens a new Unix-socket connection per request and speaks HTTP/1.1 on
//! it with hyper's client: no pool, no TLS, no DNS. A connection to a
//! local socket costs a few microseconds; correctness is what counts here.
//!
//! docs/aws-sdk-rust.md shows this file's code from its first `use` on,
//! for users to copy, and how to build a client with it; a test
//! (`tests/kms/docs.rs`) keeps the two the same.
//!
//! [`tcp`] is the same client over TCP, for kmsd's loopback listener with
//! SigV4 (`[http] tcp`), where the SDK's signature is verified.

pub mod tcp;

use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A KMS client of the kmsd whose HTTP API listens on `socket` (by
/// default `kmsd-http.sock` beside kmsd's socket).
pub fn kms_client(socket: impl Into<PathBuf>) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::from_conf(kms_config(socket).build())
}

/// The configuration [`kms_client`] builds, to change before `build()`
/// (retries, timeouts).
pub fn kms_config(socket: impl Into<PathBuf>) -> aws_sdk_kms::config::Builder {
    aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        // Any Region: kmsd has none, the SDK wants one (for signing).
        .region(Region::new("us-east-1"))
        // Any http URL: its host is only the Host header.
        .endpoint_url("http://localhost")
        // kmsd knows the caller from the socket (SO_PEERCRED) and ignores
        // the signature, but the SDK signs every request: any credentials.
        .credentials_provider(Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "kmsd",
        ))
        .http_client(UnixHttpClient::new(socket))
}

/// An [`HttpClient`] that sends every request to one Unix socket.
#[derive(Clone, Debug)]
pub struct UnixHttpClient {
    socket: Arc<Path>,
}

impl UnixHttpClient {
    /// A client of the HTTP server listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> UnixHttpClient {
        UnixHttpClient {
            socket: socket.into().into(),
        }
    }
}

impl HttpClient for UnixHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(UnixConnector {
            socket: Arc::clone(&self.socket),
            connect_timeout: settings.connect_timeout(),
            read_timeout: settings.read_timeout(),
        })
    }
}

/// The connector [`UnixHttpClient`] hands out, with the SDK's timeouts.
#[derive(Debug)]
struct UnixConnector {
    socket: Arc<Path>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl HttpConnector for UnixConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let socket = Arc::clone(&self.socket);
        let (connect_timeout, read_timeout) = (self.connect_timeout, self.read_timeout);
        HttpConnectorFuture::new(async move {
            let request = origin_form(request)?;
            let stream = within(connect_timeout, tokio::net::UnixStream::connect(&*socket))
                .await
                .map_err(|e| e.never_connected())?
                .map_err(|e| ConnectorError::io(e.into()).never_connected())?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ConnectorError::io(e.into()))?;
            // The connection's I/O runs beside the request; it ends when the
            // response body has been read (or dropped) and `sender` is gone.
            tokio::spawn(connection);
            let response = within(read_timeout, sender.send_request(request))
                .await?
                .map_err(classify)?;
            let response = response.map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK's request as hyper's client sends it: the request target in
/// origin form (`/`, as HTTP/1.1 wants it), the endpoint's authority as
/// the Host header.
fn origin_form(request: HttpRequest) -> Result<http::Request<SdkBody>, ConnectorError> {
    let mut request = request
        .try_into_http1x()
        .map_err(|e| ConnectorError::user(e.into()))?;
    let uri = request.uri().clone();
    if !request.headers().contains_key(http::header::HOST) {
        let host = uri.authority().map_or("localhost", |a| a.as_str());
        let value =
            http::HeaderValue::from_str(host).map_err(|e| ConnectorError::user(e.into()))?;
        request.headers_mut().insert(http::header::HOST, value);
    }
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = target
        .parse()
        .map_err(|e: http::uri::InvalidUri| ConnectorError::user(e.into()))?;
    Ok(request)
}

/// `future`, failed with a timeout error after `limit` (if any).
async fn within<T>(
    limit: Option<Duration>,
    future: impl std::future::Future<Output = T>,
) -> Result<T, ConnectorError> {
    match limit {
        None => Ok(future.await),
        Some(limit) => tokio::time::timeout(limit, future)
            .await
            .map_err(|e| ConnectorError::timeout(e.into())),
    }
}

/// A failed exchange: an I/O error (the SDK retries those as transient)
/// unless hyper says the request itself was bad.
fn classify(e: hyper::Error) -> ConnectorError {
    if e.is_user() {
        ConnectorError::user(e.into())
    } else {
        ConnectorError::io(e.into())
    }
}
