//! The HTTP API's connections: AWS JSON 1.1 over HTTP/1.1 on a Unix socket
//! of its own, served by hyper's HTTP/1.1 server (docs/aws-api.md).
//!
//! The listener has the binary socket's acceptor, caps and thread per core
//! (`threads.rs`, `accept.rs`): the caller is the SO_PEERCRED identity read
//! at accept, exactly as on the binary socket. Its I/O threads run tokio's
//! epoll runtime whatever `transport.io` says: hyper reads and writes
//! through tokio's I/O traits, and io_uring's gain (fewer syscalls per
//! frame) matters less under HTTP's own per-request costs.
//!
//! Per connection: hyper parses the head within `http.max_head_bytes` and
//! `http.max_headers` (a larger head is answered 431 and the connection
//! closed) and within `http.request_timeout_ms` (408); the body is read up
//! to `http.max_body_bytes` (a larger one is answered ValidationException
//! and the connection closed) and within the same timeout; then
//! `crate::http::call` runs it. Requests on one connection run one at a
//! time, in order (HTTP/1.1 keep-alive, pipelined requests included).
//!
//! What hyper reads and writes passes through its own buffers, which are
//! not zeroed when freed; kmsd's own copies of a body and an answer are
//! (docs/aws-api.md, "Secrets").

use super::budget_for;
use super::threads::{self, serve_handoffs, Handoff, Handoffs, Ready, SocketMode};
use super::{wait_shutdown, ServeState, Shutdown};
use crate::audit::gate::{Gate, Gated};
use crate::config::{HttpConfig, TransportConfig};
use crate::dispatch::Dispatcher;
use crate::http::call::{self, Api, Head, Site};
use crate::http::sigv4::Verifier;
use crate::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// What every connection of one HTTP listener shares, beside the
/// [`ServeState`].
pub(crate) struct HttpState {
    api: Api,
    /// How callers are identified: by the kernel (Unix socket) or by their
    /// signature (TCP).
    verifier: Option<Arc<Verifier>>,
    max_body: usize,
    max_headers: usize,
    max_head: usize,
    timeout: Duration,
}

impl HttpState {
    /// A listener's state from its config; `verifier` for TCP (callers
    /// by their signature), none for the Unix socket (by the kernel).
    fn new(
        transport: &TransportConfig,
        http: &HttpConfig,
        max_frame: usize,
        verifier: Option<Arc<Verifier>>,
    ) -> HttpState {
        let limits = crate::http::json::JsonLimits {
            max_body: http.max_body_bytes,
            ..Default::default()
        };
        HttpState {
            api: Api::new(limits, transport.max_answer_bytes, max_frame),
            verifier,
            max_body: http.max_body_bytes,
            max_headers: http.max_headers,
            max_head: http.max_head_bytes,
            timeout: Duration::from_millis(http.request_timeout_ms),
        }
    }
}

/// The HTTP API's socket, bound (so that start-up fails at once if it
/// cannot be), not yet served.
pub struct HttpListener {
    listener: std::os::unix::net::UnixListener,
    file: super::socket::SocketFile,
    path: std::path::PathBuf,
}

/// Binds the HTTP API's socket with the binary socket's rules (see
/// [`super::socket::bind`]).
pub fn bind_http(socket_path: &Path, transport: &TransportConfig) -> io::Result<HttpListener> {
    let (listener, file) = super::socket::bind(socket_path, transport)?;
    Ok(HttpListener {
        listener,
        file,
        path: socket_path.to_owned(),
    })
}

/// Serves the bound HTTP API socket until `shutdown`, then drains like
/// [`super::serve`] and removes the socket file.
pub fn serve_http(
    bound: HttpListener,
    transport: &TransportConfig,
    http: &HttpConfig,
    dispatcher: Arc<Dispatcher>,
    max_frame: usize,
    shutdown: Shutdown,
) -> io::Result<()> {
    let HttpListener {
        listener,
        file,
        path,
    } = bound;
    let socket_path = path.as_path();
    let mut state = ServeState::new(transport, dispatcher, max_frame);
    state.http = Some(Arc::new(HttpState::new(transport, http, max_frame, None)));
    tracing::info!(socket = %socket_path.display(), "serving AWS KMS's HTTP API");
    let r = threads::run(
        "http",
        listener,
        transport.io_threads.max(1),
        Arc::new(state),
        shutdown,
        SocketMode::NonBlocking,
        io_thread,
    );
    file.remove();
    r
}

/// The HTTP API's TCP socket, bound, not yet served.
pub struct HttpTcpListener {
    listener: std::net::TcpListener,
}

/// Binds `http.tcp`, refusing an address that is not loopback unless
/// `http.allow_non_loopback` says so; `None` when `http.tcp` is not set.
pub fn bind_http_tcp(http: &HttpConfig) -> io::Result<Option<HttpTcpListener>> {
    let Some(addr) = http.tcp_addr()? else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(Some(HttpTcpListener { listener }))
}

/// Serves the bound TCP socket on the calling thread until `shutdown`
/// (then drains like [`super::serve`]). One thread: the TCP listener is
/// for AWS SDKs and tools that cannot reach a Unix socket, not for the
/// daemon's peak rate. Each request must be signed (SigV4) with one of
/// `verifier`'s credentials.
#[allow(clippy::too_many_arguments)]
pub fn serve_http_tcp(
    bound: HttpTcpListener,
    transport: &TransportConfig,
    http: &HttpConfig,
    verifier: Arc<Verifier>,
    dispatcher: Arc<Dispatcher>,
    max_frame: usize,
    shutdown: Shutdown,
) -> io::Result<()> {
    crate::thread_role::enter_io();
    let mut state = ServeState::new(transport, dispatcher, max_frame);
    state.http = Some(Arc::new(HttpState::new(transport, http, max_frame, Some(verifier))));
    let state = Arc::new(state);
    let addr = bound.listener.local_addr()?;
    tracing::info!(%addr, "serving AWS KMS's HTTP API on TCP (SigV4)");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(bound.listener)?;
        let slots = Arc::new(tokio::sync::Semaphore::new(state.max_connections));
        let mut stop = shutdown.clone();
        loop {
            let accepted = tokio::select! {
                biased;
                () = wait_shutdown(&mut stop) => break,
                a = listener.accept() => a,
            };
            let (stream, from) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Past `transport.max_connections` a new connection is closed
            // at once (there is no uid to count per: see docs/aws-api.md).
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::debug!(%from, "TCP connection refused: too many connections");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (state, shutdown) = (Arc::clone(&state), shutdown.clone());
            tokio::spawn(async move {
                serve_connection(stream, None, state, shutdown).await;
                drop(slot);
            });
        }
        drop(listener);
        // Connections finish their request in progress, within the grace.
        let _ = tokio::time::timeout(
            state.grace,
            slots.acquire_many(state.max_connections as u32),
        )
        .await;
        io::Result::Ok(())
    })
}

fn io_thread(rx: Handoffs, state: Arc<ServeState>, stop: Shutdown, ready: Ready) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Some(rt) = threads::started(runtime, &ready) else {
        return;
    };
    rt.block_on(serve_handoffs(rx, state, stop, |h, state, stop| {
        tokio::spawn(connection(h, state, stop));
    }));
    drop(rt);
}

async fn connection(h: Handoff, state: Arc<ServeState>, shutdown: Shutdown) {
    let Handoff {
        stream,
        peer,
        guard,
    } = h;
    let stream = match tokio::net::UnixStream::from_std(stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(?peer, error = %e, "cannot register a connection with epoll");
            return;
        }
    };
    serve_connection(stream, Some(peer), state, shutdown).await;
    drop(guard);
}

/// Serves one connection with hyper; `peer` is the kernel's identity of
/// the caller (none on TCP: each request is signed).
async fn serve_connection<S>(stream: S, peer: Option<Identity>, state: Arc<ServeState>, mut shutdown: Shutdown)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = Arc::clone(state.http.as_ref().expect("an HTTP listener's state"));
    let budget = budget_for(&state);
    let gate = Arc::new(Gate::default());
    let service = {
        let (http, state, peer, gate) = (Arc::clone(&http), Arc::clone(&state), peer.clone(), Arc::clone(&gate));
        hyper::service::service_fn(move |req| {
            let (http, state, budget, peer, gate) = (
                Arc::clone(&http),
                Arc::clone(&state),
                Arc::clone(&budget),
                peer.clone(),
                Arc::clone(&gate),
            );
            async move {
                let site = Site {
                    dispatcher: &state.dispatcher,
                    budget: &budget,
                    gate: &gate,
                };
                Ok::<_, Infallible>(handle(&http, site, peer.as_ref(), req).await)
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(http.timeout)
        .max_buf_size(http.max_head)
        .max_headers(http.max_headers)
        .keep_alive(true)
        // Answers to pipelined requests go out in one write.
        .pipeline_flush(true);
    // Answers are made before their records are written; the connection's
    // writes wait for the records (audit/gate.rs).
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(Gated::new(stream, gate)), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(?peer, error = %e, "HTTP connection closed");
            }
        }
        () = wait_shutdown(&mut shutdown) => {
            // Finishes the request in progress, then closes.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(state.grace, conn).await;
        }
    }
}

/// One request: its body read within the bounds, then the call.
async fn handle(
    http: &HttpState,
    site: Site<'_>,
    peer: Option<&Identity>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // Who the refusals before a verified signature are recorded as on TCP:
    // (uid_t)-1, no user.
    let unknown = Identity::local(u32::MAX, u32::MAX, 0);
    let peer_or_unknown = peer.unwrap_or(&unknown);
    let header = |name: &str| parts.headers.get(name).map(|v| v.as_bytes());
    let head = Head {
        method: &parts.method,
        path: parts.uri.path(),
        target: header("x-amz-target"),
        content_type: header("content-type"),
    };
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let peer = peer_or_unknown;
    let answer = if declared.is_some_and(|n| n > http.max_body as u64) {
        // Not read at all: the connection closes after the answer.
        too_large(http, site, peer)
    } else {
        let read = tokio::time::timeout(http.timeout, Limited::new(body, http.max_body).collect()).await;
        match read {
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                match &http.verifier {
                    // The Unix socket: the kernel's identity; a signature,
                    // if any, is not looked at.
                    None => call::call(&http.api, site, peer, head, &bytes).await,
                    // TCP: the caller is whom the signature says.
                    Some(v) => match v.verify(&parts, &bytes, std::time::SystemTime::now()) {
                        Ok(principal) => {
                            let caller = principal.identity().clone();
                            call::call(&http.api, site, &caller, head, &bytes).await
                        }
                        Err(e) => call::unauthenticated(&http.api, site, peer, e.aws_name(), e.status().as_u16(), &e.to_string()),
                    },
                }
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => too_large(http, site, peer),
            Ok(Err(e)) => {
                tracing::debug!(?peer, error = %e, "reading an HTTP request body failed");
                call::timed_out(&http.api, site, peer, "the request body could not be read")
            }
            Err(_) => call::timed_out(
                &http.api,
                site,
                peer,
                "the request body was not complete within http.request_timeout_ms",
            ),
        }
    };
    respond(answer)
}

fn too_large(http: &HttpState, site: Site<'_>, peer: &Identity) -> call::Answer {
    call::refused(
        &http.api,
        site,
        peer,
        kms_proto::KmsError::validation(format!(
            "the request body has more than {} bytes (http.max_body_bytes)",
            http.max_body
        )),
    )
}

/// The HTTP answer: status, AWS's headers, the body (zeroed once hyper
/// has written it and drops it).
fn respond(mut answer: call::Answer) -> Response<Full<Bytes>> {
    let body = Bytes::from_owner(Zeroing(std::mem::take(&mut answer.body)));
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = hyper::StatusCode::from_u16(answer.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(call::CONTENT_TYPE),
    );
    h.insert(
        "x-amzn-requestid",
        hyper::header::HeaderValue::from(answer.request_id),
    );
    if answer.close {
        h.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    r
}

/// A buffer zeroed when dropped, as the owner of an answer's [`Bytes`].
struct Zeroing(Vec<u8>);

impl AsRef<[u8]> for Zeroing {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Zeroing {
    fn drop(&mut self) {
        kms_proto::frame::zero(&mut self.0);
    }
}
