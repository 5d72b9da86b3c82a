//! Wiring: root of trust, service, dispatcher, transport and signals.

use crate::config::Config;
use crate::data_dir::DataDir;
use crate::dispatch::Dispatcher;
use crate::keystore::Keystore;
use crate::notify::Notifier;
use crate::root::RootOfTrust;
use crate::service::{Service, ServiceOptions};
use anyhow::Context as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Runs the daemon until SIGTERM or SIGINT, then drains and returns.
pub fn run(config: &Config) -> anyhow::Result<()> {
    run_seeded(config, None)
}

/// [`run`], first making the keys of the seed file `seed` that the store
/// does not have (`kmsd serve --seed FILE`; docs/seeding.md).
pub fn run_seeded(config: &Config, seed: Option<&std::path::Path>) -> anyhow::Result<()> {
    run_from(config, seed, None)
}

/// [`run_seeded`], with the file `config` was read from: SIGHUP reads it
/// again and applies what may change while serving (`[quotas]`).
pub fn run_from(
    config: &Config,
    seed: Option<&std::path::Path>,
    config_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    config.validate()?;
    // Always: GetStatus reads the recorder whether or not it is served.
    // Installed before anything counts (the dispatcher and the service
    // register their samplers with it).
    let metrics = crate::metrics::install();
    match crate::memlock::protect(config.cache.mlock) {
        crate::memlock::MemLock::Skipped(why) => {
            tracing::warn!("key memory is not locked: {why}")
        }
        m => tracing::info!(?m, "memory protection"),
    }
    // The socket's directory first: refused, it must fail start-up before
    // anything is created.
    crate::transport::socket::prepare_dir(&config.socket)
        .with_context(|| format!("serving on {}", config.socket.display()))?;
    // Checked and locked before anything in it is read, and held until
    // this function returns: one process per data directory.
    let data_dir = DataDir::create_or_open(&config.data_dir, "kmsd serve")?;
    // The keystore before the root of trust: a damaged, truncated or too
    // new keys.db stops start-up at once with one line naming the file and
    // saying what to do (its own words: no context to repeat them), and a
    // new one is created whole (keystore/durable.rs).
    let store = Keystore::open(data_dir.path())?;
    // The file root or the PKCS#11 token, by root.kind; start-up errors are
    // one line that says what to do.
    let root: Arc<dyn RootOfTrust> = crate::root::open(config)?;
    let service = Arc::new(
        Service::with_options(store, root, ServiceOptions::from_config(config))
            .context("opening the keystore")?,
    );
    // Checked by validate() above: cannot fail here.
    service.quotas().reload(
        crate::quota::Limits::from_config(&config.quotas, &config.aws)
            .map_err(anyhow::Error::msg)?,
    );
    // A CreateKey of an HSM-only key interrupted by a crash may have left a
    // token object that no stored key names: destroyed before serving.
    service
        .reconcile_hsm_only_keys()
        .context("settling pending HSM-only keys")?;
    // Likewise an interrupted GetParametersForImport or ImportKeyMaterial
    // may have left an import wrapping key in the token.
    service
        .reconcile_import_wrapping_keys()
        .context("settling import wrapping keys")?;
    // Seeded keys before the scheduler and before serving: no client sees
    // a seed file half applied. Its errors are one line of their own.
    if let Some(path) = seed {
        let report = crate::seed::seed(&service, path)?;
        tracing::info!(
            file = %path.display(),
            created = report.created,
            existing = report.existing,
            "seed file applied"
        );
    }
    // Deletions, rotations and expiries that came due (also while kmsd was
    // stopped): a pass now, then one per interval; stopped on return.
    let scheduler = crate::service::scheduler::Scheduler::start(
        Arc::clone(&service),
        std::time::Duration::from_millis(config.lifecycle.scheduler_interval_ms),
    )
    .context("starting the lifecycle scheduler")?;
    // The audit log before the first request: its seal key (made at the
    // first start, stored wrapped by the root of trust) is unwrapped once
    // here; a torn last record left by a crash is named and the chain
    // continues.
    let audit = if config.audit.enabled {
        let key = crate::audit::seal::SealKey::load_or_create(&service.store(), service.root())?;
        let log = crate::audit::AuditLog::open(&config.audit, data_dir.path(), key)
            .context("opening the audit log")?;
        service.set_audit(Arc::clone(&log));
        Some(log)
    } else {
        None
    };
    let dispatcher = Arc::new(Dispatcher::with_audit(
        Arc::clone(&service),
        &config.dispatch,
        audit.clone(),
    )?);
    // The metrics thread (upkeep, and the listener if [metrics] listen is
    // set; a bad address stops start-up here, before the socket serves).
    let metrics_server =
        crate::metrics::listener::start(metrics, &config.metrics, &config.transport)
            .context("starting the metrics listener")?;
    if let Some(listen) = &config.metrics.listen {
        tracing::info!(listen = %listen, addr = ?metrics_server.tcp_addr, "serving metrics");
    }
    // systemd (Type=notify): READY=1 once the socket accepts, STOPPING=1
    // when draining starts. Nothing at all without NOTIFY_SOCKET.
    let notifier = Notifier::from_env()?.map(Arc::new);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let reload = Reload {
        file: config_file.map(ToOwned::to_owned),
        running: config.clone(),
        service: Arc::downgrade(&service),
    };
    let shutdown_tx = Arc::new(shutdown_tx);
    spawn_signal_thread(Arc::clone(&shutdown_tx), notifier.clone(), reload)?;
    let stop_ready_probe = Arc::new(AtomicBool::new(false));
    if let Some(n) = &notifier {
        crate::notify::ready_when_accepting(
            n.clone(),
            config.socket.clone(),
            stop_ready_probe.clone(),
        )
        .context("starting the readiness thread")?;
    }
    tracing::info!(
        socket = %config.socket.display(),
        data_dir = %config.data_dir.display(),
        "kmsd starting"
    );
    // AWS KMS's HTTP API (docs/aws-api.md) on its own Unix socket beside
    // the binary protocol's and, if configured, on loopback TCP, through
    // the same dispatcher. Everything that can refuse start-up comes
    // first (the TCP credentials' files, the TCP address, the socket), so
    // a refused start leaves no socket file behind; the threads stop with
    // the binary server.
    let tcp_verifier = match &config.http.tcp {
        Some(_) => {
            let credentials = crate::http::sigv4::Credentials::load(&config.http.credentials)
                .context("loading http.credentials")?;
            Some(Arc::new(crate::http::sigv4::Verifier::new(
                credentials,
                &config.aws.region,
            )))
        }
        None => None,
    };
    let tcp_bound = crate::transport::bind_http_tcp(&config.http)
        .context("binding the HTTP API's TCP listener (http.tcp)")?;
    let http_bound = if config.http.enabled {
        let path = config.http.socket_path(&config.socket);
        let bound = crate::transport::socket::prepare_dir(&path)
            .and_then(|()| crate::transport::bind_http(&path, &config.transport))
            .with_context(|| format!("serving the HTTP API on {}", path.display()))?;
        Some(bound)
    } else {
        None
    };
    let mut http_threads = Vec::new();
    if let Some(bound) = http_bound {
        let (transport, http, dispatcher, max_frame, shutdown) = (
            config.transport.clone(),
            config.http.clone(),
            Arc::clone(&dispatcher),
            config.limits.max_frame_bytes,
            shutdown_rx.clone(),
        );
        http_threads.push(
            std::thread::Builder::new()
                .name("kmsd-http".into())
                .spawn(move || {
                    crate::transport::serve_http(
                        bound, &transport, &http, dispatcher, max_frame, shutdown,
                    )
                    .context("serving the HTTP API on its Unix socket")
                })
                .context("starting the HTTP API")?,
        );
    }
    if let (Some(bound), Some(verifier)) = (tcp_bound, tcp_verifier) {
        let (transport, http, dispatcher, max_frame, shutdown) = (
            config.transport.clone(),
            config.http.clone(),
            Arc::clone(&dispatcher),
            config.limits.max_frame_bytes,
            shutdown_rx.clone(),
        );
        http_threads.push(
            std::thread::Builder::new()
                .name("kmsd-http-tcp".into())
                .spawn(move || {
                    crate::transport::serve_http_tcp(
                        bound, &transport, &http, verifier, dispatcher, max_frame, shutdown,
                    )
                    .context("serving the HTTP API on TCP")
                })
                .context("starting the HTTP API's TCP listener")?,
        );
    }
    let engine = crate::transport::serve(
        &config.socket,
        &config.transport,
        dispatcher,
        config.limits.max_frame_bytes,
        shutdown_rx,
    )
    .with_context(|| format!("serving on {}", config.socket.display()));
    stop_ready_probe.store(true, Ordering::Release);
    // The binary server has stopped (drained after a signal, or failed to
    // start): so do the HTTP listeners.
    let _ = shutdown_tx.send(true);
    for t in http_threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e:#}"),
            Err(_) => tracing::error!("the HTTP API's thread panicked"),
        }
    }
    let engine = engine?;
    drop(metrics_server);
    drop(scheduler);
    // After the last answer: what is queued is written, sealed and synced.
    if let Some(a) = &audit {
        a.close();
    }
    tracing::info!(?engine, "kmsd stopped cleanly");
    drop(data_dir);
    Ok(())
}

/// What SIGHUP needs: the config file, the config running, the service.
struct Reload {
    file: Option<std::path::PathBuf>,
    running: Config,
    /// Weak: the signal thread outlives `run`, the service must not.
    service: std::sync::Weak<Service>,
}

impl Reload {
    /// Reads the config file again and applies `[quotas]`. A file that
    /// does not read, parse or validate changes nothing (one log line says
    /// why); changes to other sections are logged as needing a restart.
    /// Connections and requests in flight are not touched.
    fn reload(&mut self) {
        let Some(path) = &self.file else {
            tracing::warn!("SIGHUP: kmsd was started without --config; nothing to reload");
            return;
        };
        let mut new = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: {e}; keeping the running config");
                return;
            }
        };
        // The command line's overrides stay as they were.
        new.socket = self.running.socket.clone();
        new.data_dir = self.running.data_dir.clone();
        new.transport.io = self.running.transport.io;
        // `aws.region` (the Region when `quotas.aws_region` is unset) is
        // the running one: `[aws]` changes at the next start only.
        let limits = match crate::quota::Limits::from_config(&new.quotas, &self.running.aws) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("SIGHUP: invalid config: {e}; keeping the running config");
                return;
            }
        };
        let Some(service) = self.service.upgrade() else {
            return;
        };
        service.quotas().reload(limits);
        let unchanged = |c: &Config| {
            let mut c = c.clone();
            c.quotas = Default::default();
            toml::to_string(&c).ok()
        };
        if unchanged(&new) != unchanged(&self.running) {
            tracing::warn!(
                "SIGHUP: only [quotas] changes while serving; other changes in {} take effect at the next start",
                path.display()
            );
        }
        tracing::info!(file = %path.display(), profile = new.quotas.profile.name(), "SIGHUP: quotas reloaded");
        self.running.quotas = new.quotas;
    }
}

/// Turns SIGTERM and SIGINT into the shutdown signal (a second signal while
/// draining exits at once), and SIGHUP into a reload of `[quotas]`.
fn spawn_signal_thread(
    tx: Arc<tokio::sync::watch::Sender<bool>>,
    notifier: Option<Arc<Notifier>>,
    mut reload: Reload,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Register the handlers before returning, so that a signal that arrives
    // during start-up is not lost (the default action would kill us).
    let (mut term, mut int, mut hup) = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("kmsd-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => { tracing::info!("SIGTERM: draining"); break }
                        _ = int.recv() => { tracing::info!("SIGINT: draining"); break }
                        _ = hup.recv() => reload.reload(),
                    }
                }
                if let Some(n) = &notifier {
                    n.notify_or_log("STOPPING=1");
                }
                let _ = tx.send(true);
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                tracing::warn!("second signal: exiting without draining");
                std::process::exit(1);
            });
        })?;
    Ok(())
}
