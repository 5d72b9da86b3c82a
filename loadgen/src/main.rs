//! `kms-loadgen`: drives kmsd (or a baseline) with a workload and reports
//! throughput, errors and latency percentiles; `regress` is the
//! performance regression gate; `plot` compares saved histograms.
#![deny(missing_docs)]

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use kms_loadgen::driver::{self, RunOptions, Target};
use kms_loadgen::hsmraw::{self, HsmCall};
use kms_loadgen::http::{HttpClient, HttpPool};
use kms_loadgen::regress::{self, RegressOptions};
use kms_loadgen::report::{self, JsonReport, JSON_SCHEMA_VERSION};
use kms_loadgen::run::{LoadModel, Protocol, RunResult, TargetKind};
use kms_loadgen::target::{find_kmsd, Spawned};
use kms_loadgen::workload::{FramePool, Mix, Popularity, Prepared, WorkloadSpec};
use kms_loadgen::{inprocess, plot};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "kms-loadgen",
    version,
    about = "Load generator, baselines and regression gate for kmsd",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The performance regression gate: a fixed set of workloads against a
    /// spawned kmsd, the in-process service and the echo server; compares
    /// the ratios with a committed baseline.
    Regress(RegressArgs),
    /// Plots saved .hgrm files (latency by percentile) on one SVG chart.
    Plot {
        /// .hgrm files written by --hdr.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The SVG to write.
        #[arg(long)]
        out: PathBuf,
        /// Chart title.
        #[arg(long, default_value = "latency by percentile")]
        title: String,
    },
    /// The echo baseline's server (started by the load generator itself).
    #[command(hide = true)]
    EchoServer {
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// A running kmsd's socket: its binary socket, or with --protocol http
    /// its HTTP API's socket (kmsd-http.sock).
    #[arg(long, conflicts_with = "spawn")]
    socket: Option<PathBuf>,
    /// The daemon's protocol: binary (kmsd's frames) or http (AWS KMS's
    /// API, AWS JSON 1.1 over HTTP/1.1 with keep-alive; one operation per
    /// request, --batch 1).
    #[arg(long, value_parser = ["binary", "http"], default_value = "binary")]
    protocol: String,
    /// Start kmsd with a temporary data directory, stop it afterwards.
    #[arg(long)]
    spawn: bool,
    /// The kmsd binary for --spawn (default: the one beside kms-loadgen).
    #[arg(long)]
    kmsd: Option<PathBuf>,
    /// I/O engine of the spawned kmsd (epoll, uring, auto).
    #[arg(long)]
    io: Option<String>,
    /// Config file for the spawned kmsd (e.g. an HSM root, a small cache);
    /// the HSM baselines open the token its [root.pkcs11] names.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also run a baseline: `in-process` (the same frames through the
    /// service in this process, no socket), `echo` (an echo server over the
    /// same socket type), `hsm-unwrap` or `hsm-gcm` (the token's raw unwrap
    /// or AES-GCM call rate on one session; needs --config). Repeatable.
    #[arg(long, value_parser = ["in-process", "echo", "hsm-unwrap", "hsm-gcm"])]
    baseline: Vec<String>,
    /// Operation mix, e.g. generate-data-key=70,decrypt=30. Operations:
    /// generate-data-key, generate-data-key-without-plaintext, encrypt,
    /// decrypt, re-encrypt, generate-random.
    #[arg(long, default_value = "generate-data-key")]
    op: String,
    /// Plaintext bytes per Encrypt.
    #[arg(long, default_value_t = 32)]
    payload_size: usize,
    /// Distinct KMS keys (created before the run).
    #[arg(long, default_value_t = 1)]
    keys: usize,
    /// Zipf key popularity with this exponent (default: uniform).
    #[arg(long)]
    zipf: Option<f64>,
    /// Encryption-context pairs per operation (about 24 bytes each).
    #[arg(long, default_value_t = 1)]
    context_size: usize,
    /// Operations per request frame.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Closed loop: requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Connections (each driven by its own thread; the in-process baseline
    /// uses as many threads).
    #[arg(long, visible_alias = "concurrency", default_value_t = 1)]
    connections: usize,
    /// Open loop: requests (frames) per second over all connections;
    /// latency counts from each request's intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Ciphertexts prepared per key for decrypt and re-encrypt.
    #[arg(long, default_value_t = 4)]
    blobs_per_key: usize,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Origin of the keys the run creates: kmsd, or hsm (HSM-only keys,
    /// every operation an HSM call; needs a daemon with the PKCS#11 root).
    #[arg(long, value_parser = ["kmsd", "hsm"], default_value = "kmsd")]
    origin: String,
    /// Name keys by alias: the run creates an alias per key and its
    /// operations carry alias names (resolved by the daemon's alias table).
    #[arg(long)]
    by_alias: bool,
    /// Write a JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency histogram (HdrHistogram .hgrm percentile
    /// distribution) here; with baselines, one file per target.
    #[arg(long)]
    hdr: Option<PathBuf>,
    /// Draw latency by percentile of every target of the run (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress line during the run.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RegressArgs {
    /// The committed baseline to compare with.
    #[arg(long, default_value = "loadgen/baseline.json")]
    baseline_file: PathBuf,
    /// Short runs (about 1 s each) with a wider default tolerance, for CI.
    #[arg(long)]
    smoke: bool,
    /// Allowed relative regression of a ratio (default: the baseline
    /// file's, or 0.5 with --smoke).
    #[arg(long)]
    tolerance: Option<f64>,
    /// Record the measured ratios as the new baseline instead of gating.
    #[arg(long)]
    update: bool,
    /// The kmsd binary (default: the one beside kms-loadgen).
    #[arg(long)]
    kmsd: Option<PathBuf>,
    /// Write the runs and the gate's table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Progress lines during each run.
    #[arg(long)]
    verbose: bool,
    /// Spawn kmsd with authorization bypassed (it decides nothing), to
    /// measure what key policies cost against a run without this flag.
    #[arg(long)]
    bypass_authorization: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::EchoServer { socket }) => kms_loadgen::echo::serve(&socket).map(|()| 0),
        Some(Command::Plot { inputs, out, title }) => {
            plot::plot_files(&inputs, &out, &title).map(|()| 0)
        }
        Some(Command::Regress(a)) => regress_main(a),
        None => run_main(cli.run),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("kms-loadgen: {e:#}");
            std::process::exit(2);
        }
    }
}

fn regress_main(a: RegressArgs) -> anyhow::Result<i32> {
    let kmsd = find_kmsd(a.kmsd.as_deref())?;
    let outcome = regress::run(&RegressOptions {
        kmsd,
        baseline_file: a.baseline_file,
        smoke: a.smoke,
        tolerance: a.tolerance,
        update: a.update,
        json: a.json,
        progress: a.verbose,
        bypass_authorization: a.bypass_authorization,
    })?;
    Ok(if outcome { 0 } else { 1 })
}

fn run_main(a: RunArgs) -> anyhow::Result<i32> {
    let protocol = match a.protocol.as_str() {
        "http" => Protocol::Http,
        _ => Protocol::Binary,
    };
    if protocol == Protocol::Http {
        if a.batch != 1 {
            bail!(
                "--protocol http sends one operation per request (AWS's API has no batches): \
                 --batch must be 1, not {}",
                a.batch
            );
        }
        if a.baseline.iter().any(|b| b == "echo") {
            bail!(
                "--baseline echo echoes binary frames; it has no HTTP counterpart \
                 (compare with a --protocol binary run instead)"
            );
        }
    }
    let spec = WorkloadSpec {
        mix: Mix::parse(&a.op)?,
        payload_size: a.payload_size,
        keys: a.keys,
        popularity: match a.zipf {
            Some(s) => Popularity::Zipf(s),
            None => Popularity::Uniform,
        },
        context_pairs: a.context_size,
        batch: a.batch,
        blobs_per_key: a.blobs_per_key,
        seed: a.seed,
        hsm_keys: a.origin == "hsm",
        by_alias: a.by_alias,
    };
    spec.validate()?;
    if !(a.duration > 0.0 && a.duration.is_finite()) || a.warmup.is_nan() || a.warmup < 0.0 {
        bail!("--duration must be above 0 and --warmup at least 0");
    }
    let model = match a.rate {
        Some(rate) => LoadModel::Open {
            connections: a.connections,
            rate,
        },
        None => LoadModel::Closed {
            connections: a.connections,
            pipeline: a.pipeline,
        },
    };
    let opts = RunOptions {
        model,
        warmup: Duration::from_secs_f64(a.warmup),
        duration: Duration::from_secs_f64(a.duration),
        progress: !a.quiet,
        target_pid: None,
    };
    let spawned = if a.spawn {
        let kmsd = find_kmsd(a.kmsd.as_deref())?;
        Some(Spawned::kmsd(&kmsd, a.io.as_deref(), a.config.as_deref())?)
    } else {
        None
    };
    let socket: Option<&Path> = match (&spawned, protocol) {
        (Some(s), Protocol::Binary) => Some(s.socket.as_path()),
        (Some(s), Protocol::Http) => Some(s.http_socket.as_deref().context(
            "the spawned kmsd does not serve the HTTP API (its --config has [http] enabled = false)",
        )?),
        (None, _) => a.socket.as_deref(),
    };
    let hsm_baseline = a.baseline.iter().any(|b| b.starts_with("hsm-"));
    if a.config.is_some() && !a.spawn && !hsm_baseline {
        bail!("--config configures a kmsd started with --spawn, or the token of --baseline hsm-unwrap|hsm-gcm");
    }
    if socket.is_none() && a.baseline.is_empty() {
        bail!("give the daemon to drive (--socket PATH or --spawn), or a --baseline");
    }
    let name = spec.describe();
    let mut results: Vec<RunResult> = Vec::new();
    if let Some(socket) = socket {
        let mut o = opts.clone();
        o.target_pid = spawned.as_ref().map(|s| s.pid());
        match protocol {
            Protocol::Binary => {
                let mut client = kms_proto::client::Client::connect(socket)
                    .with_context(|| format!("connecting to {}", socket.display()))?;
                eprintln!("preparing {} keys on the daemon", spec.keys);
                let prepared = Prepared::create(&mut client, &spec)?;
                drop(client);
                let pool = FramePool::build(&spec, &prepared)?;
                eprintln!("daemon: {name}");
                results.push(driver::run(Target::Daemon(socket), &pool, &name, &o)?);
            }
            Protocol::Http => {
                // Prepared over the HTTP API itself: a daemon given by
                // --socket may be reachable by that socket only.
                let mut client = HttpClient::connect(socket)?;
                eprintln!("preparing {} keys on the daemon over HTTP", spec.keys);
                let prepared = Prepared::create(&mut client, &spec)?;
                drop(client);
                let pool = HttpPool::build(&spec, &prepared)?;
                eprintln!("daemon over HTTP: {name}");
                results.push(driver::run_http(socket, &pool, &name, &o)?);
            }
        }
    }
    for b in &a.baseline {
        eprintln!("{b}: {name}");
        let r = match b.as_str() {
            "in-process" => inprocess::run(&spec, &opts, &name)?,
            "hsm-unwrap" => hsmraw::run(a.config.as_deref(), HsmCall::Unwrap, &spec, &opts, &name)?,
            "hsm-gcm" => hsmraw::run(a.config.as_deref(), HsmCall::Gcm, &spec, &opts, &name)?,
            _ => {
                let echo = Spawned::echo()?;
                let pool = FramePool::build(&spec, &Prepared::synthetic(&spec))?;
                let mut o = opts.clone();
                o.target_pid = Some(echo.pid());
                driver::run(Target::Echo(&echo.socket), &pool, &name, &o)?
            }
        };
        results.push(r);
    }
    for r in &results {
        println!("{}", report::summary_text(r));
    }
    let daemon = results.iter().find(|r| r.target == TargetKind::Daemon);
    for r in results.iter().filter(|r| r.target != TargetKind::Daemon) {
        let Some(d) = daemon else { continue };
        let throughput = d.throughput() / r.throughput();
        if matches!(r.target, TargetKind::HsmUnwrap | TargetKind::HsmGcm) {
            // One raw call against a whole frame: only the rates compare.
            println!("daemon / {}: throughput {throughput:.2}x", r.target.name());
        } else {
            println!(
                "daemon / {}: throughput {throughput:.2}x, p99 {:.2}x",
                r.target.name(),
                d.latency.value_at_quantile(0.99) as f64
                    / r.latency.value_at_quantile(0.99).max(1) as f64
            );
        }
    }
    if let Some(path) = &a.json {
        report::write_json(
            path,
            &JsonReport {
                schema_version: JSON_SCHEMA_VERSION,
                runs: results.iter().map(report::json_summary).collect(),
                gate: None,
            },
        )?;
    }
    if let Some(path) = &a.hdr {
        for r in &results {
            let p = if results.len() == 1 {
                path.clone()
            } else {
                with_target_suffix(path, r.target.name())
            };
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?,
            );
            report::write_hgrm(&r.latency, &mut f)?;
            std::io::Write::flush(&mut f)?;
        }
    }
    if let Some(path) = &a.plot {
        let series: Vec<_> = results
            .iter()
            .map(|r| plot::series_from_histogram(r.target.name(), &r.latency))
            .collect();
        plot::write_svg(&series, &name, path)?;
    }
    drop(spawned);
    Ok(0)
}

/// `run.hgrm` -> `run.daemon.hgrm`.
fn with_target_suffix(path: &Path, target: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{target}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{target}"),
    };
    path.with_file_name(name)
}
