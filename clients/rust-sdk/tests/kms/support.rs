//! The real kmsd binary in a temporary directory, and an `aws-sdk-kms`
//! client pointed at its HTTP socket.
//!
//! The binary is `$KMSD_BIN`, or `../../target/debug/kmsd` from this
//! crate's directory (the workspace's debug build; scripts/sdk-tests.sh
//! builds it). Every [`Daemon`] has its own directory (sockets, data
//! directory, log), so tests run in parallel without sharing state; it is
//! killed and waited for when dropped, a failing test included, and its
//! log is printed then if the test is failing.

use aws_sdk_kms::config::retry::RetryConfig;
use kmsd_sdk_tests::UnixHttpClient;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long start-up may take.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The kmsd binary the tests run.
fn kmsd_bin() -> PathBuf {
    let path = match std::env::var_os("KMSD_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/kmsd"),
    };
    assert!(
        path.is_file(),
        "the kmsd binary is not at {}: build it first (`cargo build -p kmsd` at the \
         repository's root, or scripts/sdk-tests.sh), or set KMSD_BIN to its path",
        path.display()
    );
    path
}

/// A running kmsd, killed when dropped.
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    /// `<dir>/kmsd-http.sock`: the HTTP API's socket.
    pub http_socket: PathBuf,
}

impl Daemon {
    /// `kmsd serve --socket <dir>/kmsd.sock --data-dir <dir>/data`, once
    /// its HTTP socket accepts connections.
    pub fn start() -> Daemon {
        Daemon::start_with_config(None)
    }

    /// [`Daemon::start`] with `--config <dir>/kmsd.toml` holding `config`
    /// (if any).
    pub fn start_with_config(config: Option<&str>) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("kmsd-sdk-")
            .tempdir()
            .expect("creating a temporary directory");
        let log = File::create(dir.path().join("kmsd.log")).expect("creating kmsd.log");
        let mut command = Command::new(kmsd_bin());
        command
            .arg("serve")
            .arg("--socket")
            .arg(dir.path().join("kmsd.sock"))
            .arg("--data-dir")
            .arg(dir.path().join("data"));
        if let Some(config) = config {
            let path = dir.path().join("kmsd.toml");
            std::fs::write(&path, config).expect("writing kmsd.toml");
            command.arg("--config").arg(path);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning kmsd");
        let http_socket = dir.path().join("kmsd-http.sock");
        let mut daemon = Daemon {
            dir,
            child,
            http_socket,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for kmsd") {
                panic!(
                    "kmsd exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.http_socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kmsd's HTTP socket {} did not accept connections within {START_TIMEOUT:?}; log:\n{}",
                self.http_socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the daemon has written to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kmsd.log")).unwrap_or_default()
    }

    /// A client with the SDK's default retries (standard mode, 3 attempts).
    pub fn client(&self) -> aws_sdk_kms::Client {
        self.client_with(
            RetryConfig::standard(),
            UnixHttpClient::new(&self.http_socket),
        )
    }

    /// A client with `retry` whose requests go through `http`: the
    /// documented configuration (`kmsd_sdk_tests::kms_config`) with these
    /// two changed.
    pub fn client_with(
        &self,
        retry: RetryConfig,
        http: impl aws_sdk_kms::config::HttpClient + 'static,
    ) -> aws_sdk_kms::Client {
        let config = kmsd_sdk_tests::kms_config(&self.http_socket)
            .retry_config(retry)
            .http_client(http)
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("kmsd's log:\n{}", self.log());
        }
    }
}

/// An HTTP client that counts the requests sent through it (the SDK's
/// attempts, retries included).
#[derive(Clone, Debug)]
pub struct Counting {
    inner: UnixHttpClient,
    /// Requests sent so far.
    pub sent: Arc<AtomicUsize>,
}

impl Counting {
    /// Counts the requests sent to `socket`.
    pub fn new(socket: &Path) -> Counting {
        Counting {
            inner: UnixHttpClient::new(socket),
            sent: Arc::default(),
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

impl aws_sdk_kms::config::HttpClient for Counting {
    fn http_connector(
        &self,
        settings: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
        components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
    ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
        let inner = self.inner.http_connector(settings, components);
        aws_smithy_runtime_api::client::http::SharedHttpConnector::new(CountingConnector {
            inner,
            sent: Arc::clone(&self.sent),
        })
    }
}

#[derive(Debug)]
struct CountingConnector {
    inner: aws_smithy_runtime_api::client::http::SharedHttpConnector,
    sent: Arc<AtomicUsize>,
}

impl aws_smithy_runtime_api::client::http::HttpConnector for CountingConnector {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.inner.call(request)
    }
}

/// A new symmetric encryption key's id.
pub async fn new_key(kms: &aws_sdk_kms::Client) -> String {
    kms.create_key()
        .send()
        .await
        .expect("CreateKey")
        .key_metadata
        .expect("KeyMetadata")
        .key_id
}

/// Asserts that an answer's key field names the key `id`, by id or ARN.
/// (Where AWS promises the ARN, `keys::answers_name_keys_by_arn_where_aws_does`
/// checks it.)
#[track_caller]
pub fn names_key(field: Option<&str>, id: &str) {
    assert!(
        field.is_some_and(|f| f == id || f.ends_with(&format!(":key/{id}"))),
        "{field:?} does not name the key {id}"
    );
}
