//! A plain-HTTP (no TLS) client over TCP, for kmsd's loopback listener
//! (`[http] tcp`), where every request must carry a SigV4 signature made
//! with configured credentials (docs/sigv4.md) and the SDK signs it.
//!
//! An application with the SDK's default features needs none of this:
//! the SDK's own client (hyper with rustls) speaks plain HTTP to an
//! `http://` endpoint URL. The tests here run without it, to keep rustls
//! and its crypto out of this crate's graph, so they use
//! [`TcpHttpClient`]: the Unix connector's code with a
//! `tokio::net::TcpStream` instead of a `UnixStream`, connecting to the
//! endpoint URL's host and port. One connection per request, no pool.

use super::{classify, origin_form, within};
use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// The configuration of a KMS client of the kmsd whose TCP listener is
/// `addr` (`http.tcp`), signing as `access_key_id` with `secret` for
/// `region` (kmsd's `aws.region`): what an application with the SDK's
/// default HTTP client sets, plus [`TcpHttpClient`].
pub fn kms_config(
    addr: SocketAddr,
    access_key_id: &str,
    secret: &str,
    region: &str,
) -> aws_sdk_kms::config::Builder {
    aws_sdk_kms::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        // The SigV4 scope's Region: kmsd requires its own (aws.region).
        .region(Region::new(region.to_owned()))
        // Where TcpHttpClient connects, and the signed Host header.
        .endpoint_url(format!("http://{addr}"))
        .credentials_provider(Credentials::new(access_key_id, secret, None, None, "kmsd"))
        .http_client(TcpHttpClient)
}

/// An [`HttpClient`] that sends each request over a new TCP connection
/// to its URL's host and port (80 if none), in plain HTTP/1.1: for an
/// `http://` endpoint URL only.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpHttpClient;

impl HttpClient for TcpHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(TcpConnector {
            connect_timeout: settings.connect_timeout(),
            read_timeout: settings.read_timeout(),
        })
    }
}

/// The connector [`TcpHttpClient`] hands out, with the SDK's timeouts.
#[derive(Debug)]
struct TcpConnector {
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

impl HttpConnector for TcpConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (connect_timeout, read_timeout) = (self.connect_timeout, self.read_timeout);
        HttpConnectorFuture::new(async move {
            let (host, port) = destination(&request)?;
            let request = origin_form(request)?;
            let stream = within(
                connect_timeout,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|e| e.never_connected())?
            .map_err(|e| ConnectorError::io(e.into()).never_connected())?;
            // One small request, one small answer: no Nagle delay.
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ConnectorError::io(e.into()))?;
            tokio::spawn(connection);
            let response = within(read_timeout, sender.send_request(request))
                .await?
                .map_err(classify)?;
            let response = response.map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The host (without an IPv6 literal's brackets) and port to connect to:
/// the request URL's. Refuses `https` (there is no TLS here) and a URL
/// without a host.
fn destination(request: &HttpRequest) -> Result<(String, u16), ConnectorError> {
    let uri: http::Uri = request
        .uri()
        .parse()
        .map_err(|e: http::uri::InvalidUri| ConnectorError::user(e.into()))?;
    if uri.scheme_str() != Some("http") {
        return Err(ConnectorError::user(
            format!("TcpHttpClient speaks plain HTTP only, not to {uri}").into(),
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| ConnectorError::user(format!("no host in {uri}").into()))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok((host, uri.port_u16().unwrap_or(80)))
}
