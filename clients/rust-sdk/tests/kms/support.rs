//! The real kmsd binary in a temporary directory, and an `aws-sdk-kms`
//! client pointed at its HTTP socket (or, with [`Daemon::start_tcp`], at
//! its loopback TCP listener with SigV4 credentials).
//!
//! The binary is `$KMSD_BIN`, or `../../target/debug/kmsd` from this
//! crate's directory (the workspace's debug build; scripts/sdk-tests.sh
//! builds it). Every [`Daemon`] has its own directory (sockets, data
//! directory, log), so tests run in parallel without sharing state; it is
//! killed and waited for when dropped, a failing test included, and its
//! log is printed then if the test is failing.

use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::{HttpClient, SharedHttpClient};
use kmsd_sdk_tests::UnixHttpClient;
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

/// The access key of [`Daemon::start_tcp`]'s administrator: the uid the
/// tests run as (kmsd's own, an administrator, docs/access.md).
pub const ACCESS_KEY_ID: &str = "AKIDKMSDTEST";
/// The access key of [`Daemon::start_tcp`]'s other principal:
/// [`OTHER_UID`], a caller with no rights on anybody's key.
pub const OTHER_ACCESS_KEY_ID: &str = "AKIDKMSDOTHER";
/// kmsd's `aws.region` in [`Daemon::start_tcp`]: the SigV4 scope's Region
/// it requires, and its ARNs' Region.
pub const REGION: &str = "us-east-1";
/// kmsd's `aws.account_id` in [`Daemon::start_tcp`]: its ARNs' account.
pub const ACCOUNT_ID: &str = "000000000000";
/// The uid [`OTHER_ACCESS_KEY_ID`] maps to, unless that is the tests' own
/// uid (then the next one).
const OTHER_UID: u32 = 61000;

/// A running kmsd, killed when dropped.
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    /// `<dir>/kmsd-http.sock`: the HTTP API's socket.
    pub http_socket: PathBuf,
    /// The TCP listener and its credentials, with [`Daemon::start_tcp`].
    tcp: Option<Tcp>,
}

/// The loopback TCP listener of [`Daemon::start_tcp`].
struct Tcp {
    addr: SocketAddr,
    /// [`ACCESS_KEY_ID`]'s secret.
    secret: String,
    /// [`OTHER_ACCESS_KEY_ID`]'s secret.
    other_secret: String,
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
        let mut daemon = Daemon::spawn(new_dir(), config);
        if let Err(status) = daemon.wait_ready() {
            panic!(
                "kmsd exited during start-up ({status}); log:\n{}",
                daemon.log()
            );
        }
        daemon
    }

    /// [`Daemon::start`] with the HTTP API also on loopback TCP
    /// (`http.tcp`, a free port), where every request must be signed
    /// (SigV4) with one of two credentials, their secrets in 0600 files
    /// in the daemon's directory: [`ACCESS_KEY_ID`] for the tests' own
    /// uid, [`OTHER_ACCESS_KEY_ID`] for [`OTHER_UID`]. `aws.region` is
    /// [`REGION`], `aws.account_id` [`ACCOUNT_ID`]. Ready once both the
    /// Unix socket and the port accept connections.
    pub fn start_tcp() -> Daemon {
        // kmsd binds the TCP port before its Unix sockets (a refused
        // start leaves no socket), so once `<dir>/kmsd-http.sock`
        // accepts, the port is this daemon's. A port another process took
        // between `free_port` and kmsd's bind fails the start: try
        // another.
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let dir = new_dir();
            let uid = std::fs::metadata(dir.path())
                .expect("the temporary directory's metadata")
                .uid();
            let other_uid = if uid == OTHER_UID {
                OTHER_UID + 1
            } else {
                OTHER_UID
            };
            let (secret, other_secret) = (new_secret(), new_secret());
            let (path, other_path) = (
                write_secret(dir.path(), ACCESS_KEY_ID, &secret),
                write_secret(dir.path(), OTHER_ACCESS_KEY_ID, &other_secret),
            );
            let addr = free_port();
            let config = format!(
                "[aws]\nregion = \"{REGION}\"\naccount_id = \"{ACCOUNT_ID}\"\n\n\
                 [http]\ntcp = \"{addr}\"\n\n\
                 [[http.credentials]]\naccess_key_id = \"{ACCESS_KEY_ID}\"\n\
                 secret_file = {}\nprincipal = \"uid:{uid}\"\n\n\
                 [[http.credentials]]\naccess_key_id = \"{OTHER_ACCESS_KEY_ID}\"\n\
                 secret_file = {}\nprincipal = \"uid:{other_uid}\"\n",
                toml_string(&path),
                toml_string(&other_path),
            );
            let mut daemon = Daemon::spawn(dir, Some(&config));
            match daemon.wait_ready() {
                Ok(()) => {
                    daemon.wait_tcp_ready(addr);
                    daemon.tcp = Some(Tcp {
                        addr,
                        secret,
                        other_secret,
                    });
                    return daemon;
                }
                Err(status) if attempt < ATTEMPTS && daemon.log().contains("in use") => {
                    eprintln!("kmsd could not bind {addr} ({status}), trying another port");
                }
                Err(status) => panic!(
                    "kmsd exited during start-up ({status}); log:\n{}",
                    daemon.log()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `kmsd serve` in `dir`, with `--config <dir>/kmsd.toml` holding
    /// `config` (if any); not waited for.
    fn spawn(dir: tempfile::TempDir, config: Option<&str>) -> Daemon {
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
        Daemon {
            dir,
            child,
            http_socket,
            tcp: None,
        }
    }

    /// Waits until the HTTP socket accepts connections; the exit status if
    /// kmsd exited first.
    fn wait_ready(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for kmsd") {
                return Err(status);
            }
            if std::os::unix::net::UnixStream::connect(&self.http_socket).is_ok() {
                return Ok(());
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

    /// Waits until `addr` accepts connections (at once, once the Unix
    /// socket does: the port was bound first).
    fn wait_tcp_ready(&self, addr: SocketAddr) {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "kmsd's TCP listener {addr} did not accept connections within \
                 {START_TIMEOUT:?}; log:\n{}",
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

    fn tcp(&self) -> &Tcp {
        self.tcp
            .as_ref()
            .expect("a daemon started with Daemon::start_tcp")
    }

    /// The TCP listener's address (`http.tcp`).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp().addr
    }

    /// [`ACCESS_KEY_ID`]'s secret, as its file holds it.
    pub fn secret(&self) -> &str {
        &self.tcp().secret
    }

    /// [`OTHER_ACCESS_KEY_ID`]'s secret.
    pub fn other_secret(&self) -> &str {
        &self.tcp().other_secret
    }

    /// A client of the TCP listener that signs as [`ACCESS_KEY_ID`] for
    /// [`REGION`], with the SDK's default retries.
    pub fn tcp_client(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::from_conf(
            self.tcp_config(ACCESS_KEY_ID, self.secret(), REGION)
                .build(),
        )
    }

    /// The documented TCP configuration (`kmsd_sdk_tests::tcp::kms_config`)
    /// of this daemon's listener, signing as `access_key_id` with `secret`
    /// for `region`; to change before `build()`.
    pub fn tcp_config(
        &self,
        access_key_id: &str,
        secret: &str,
        region: &str,
    ) -> aws_sdk_kms::config::Builder {
        kmsd_sdk_tests::tcp::kms_config(self.tcp_addr(), access_key_id, secret, region)
    }
}

/// A new temporary directory for one daemon (mode 0700, the tests' own).
fn new_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kmsd-sdk-")
        .tempdir()
        .expect("creating a temporary directory")
}

/// A random secret access key: 40 lowercase hex characters (AWS's are 40
/// characters too).
fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<dir>/secret-<access_key_id>` holding `secret` and a newline (as `echo
/// secret > file` writes it: kmsd removes one), created with mode 0600 as
/// kmsd requires (owned by the daemon's uid, ours).
fn write_secret(dir: &Path, access_key_id: &str, secret: &str) -> PathBuf {
    let path = dir.join(format!("secret-{access_key_id}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("creating a secret file");
    std::io::Write::write_all(&mut file, format!("{secret}\n").as_bytes())
        .expect("writing a secret file");
    path
}

/// `path` as a TOML basic string: quoted, `"` and `\` escaped (as Rust's
/// `Debug` of a string does them).
fn toml_string(path: &Path) -> String {
    format!("{:?}", path.to_str().expect("a UTF-8 temporary path"))
}

/// A loopback port that was free a moment ago: the kernel's choice for
/// port 0, released for kmsd to bind.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
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
    inner: SharedHttpClient,
    /// Requests sent so far.
    pub sent: Arc<AtomicUsize>,
}

impl Counting {
    /// Counts the requests sent to `socket`.
    pub fn new(socket: &Path) -> Counting {
        Counting::wrapping(UnixHttpClient::new(socket))
    }

    /// Counts the requests sent through `inner`.
    pub fn wrapping(inner: impl HttpClient + 'static) -> Counting {
        Counting {
            inner: SharedHttpClient::new(inner),
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
