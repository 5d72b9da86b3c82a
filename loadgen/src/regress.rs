//! The performance regression gate: a fixed, short set of workloads run in
//! one process against a spawned kmsd, the in-process service and the echo
//! server, reduced to ratios (which survive a noisy shared machine far
//! better than absolute figures) and compared with `loadgen/baseline.json`.
//!
//! Workloads: closed loop GenerateDataKey (32 B) by key id and by alias,
//! Decrypt of data keys and Encrypt of 4 KiB, each batched and pipelined
//! on two connections; then single-operation GenerateDataKey: its
//! closed-loop peak over the binary protocol, the same operations over the
//! HTTP API (AWS JSON 1.1, `HTTP_MODEL`) as a ratio of that peak, and in
//! open loop at half the binary peak, against kmsd and against the echo
//! server at the same rate (five one-second daemon/echo pairs; the best
//! ratio is gated).

use crate::driver::{self, RunOptions, Target};
use crate::gate::{self, Baseline, Better, Measured, Ratio};
use crate::http::HttpPool;
use crate::report::{self, JsonReport, JSON_SCHEMA_VERSION};
use crate::run::{LoadModel, RunResult};
use crate::target::Spawned;
use crate::workload::{FramePool, Mix, Popularity, Prepared, WorkloadSpec};
use anyhow::Context as _;
use std::path::PathBuf;
use std::time::Duration;

/// What `kms-loadgen regress` was asked.
pub struct RegressOptions {
    /// The kmsd binary to spawn.
    pub kmsd: PathBuf,
    /// The committed baseline.
    pub baseline_file: PathBuf,
    /// Short runs for CI.
    pub smoke: bool,
    /// Tolerance override.
    pub tolerance: Option<f64>,
    /// Write the measured ratios as the new baseline.
    pub update: bool,
    /// JSON output.
    pub json: Option<PathBuf>,
    /// Progress lines.
    pub progress: bool,
    /// Run kmsd with authorization bypassed (what authorization costs is
    /// the difference from a run without); never with `update`.
    pub bypass_authorization: bool,
}

/// Open-loop daemon/echo pairs; the best (lowest) p99 ratio is gated.
///
/// At half the peak the daemon and the load generator keep the two cores
/// busy most of the time, so any stall from outside (another tenant, a
/// kernel thread taking a core for 2-3 ms) builds a backlog that takes
/// milliseconds to drain, while the echo server (a fifth of the CPU)
/// absorbs it. With the writer's old 50 µs bursts single one-second pairs
/// on the reference machine ranged from 1.0 to 19.5 (20 pairs, median
/// 3.1), and a median of three failed CI on noise; with 100 µs bursts 9 of
/// 10 fell within 1.9-3.6 (one 9.6). Outside stalls only make a pair worse,
/// so the best of several pairs is the estimator noise cannot push up; a
/// daemon that is slower in every window (a blocking call, a lost inline
/// path) still fails.
const OPEN_LOOP_PAIRS: usize = 5;

/// The open-loop ratio's tolerance multiplier (see [`Ratio::noise`]): the
/// limit is 5x the baseline with `--smoke`, 3.4x in full runs. Best of 5
/// on a quiet machine: 1.3-2.0 (the baseline, 2.0); in the CI run right
/// after the builds, 3.6 (pairs up to 16); in a noisy hour, single pairs of
/// 1.4-18 for unchanged code. A quiet hour and a noisy one overlap by more
/// than any real regression short of a collapse (the old multi-thread
/// scheduler measured ~4x the current ratio), so in CI this ratio catches
/// only a collapse; full runs on a quiet machine, read pair by pair, are
/// the precise instrument.
const OPEN_LOOP_NOISE: f64 = 8.0;

/// Each open-loop pair's warm-up and window, the same in full and smoke
/// runs so that a smoke run compares like with like against a baseline
/// recorded by a full one.
const OPEN_LOOP_WARMUP: Duration = Duration::from_millis(300);
const OPEN_LOOP_WINDOW: Duration = Duration::from_secs(1);

/// The HTTP API's workload: single GenerateDataKey operations, closed loop,
/// on more connections than the binary peak: the many-connections case
/// (chosen when each request cost the daemon a turn, so connections were
/// what kept it busy; since the connections' gate a pipeline is answered
/// per turn and fewer, deeper connections go faster, docs/perf/http.md).
const HTTP_MODEL: LoadModel = LoadModel::Closed {
    connections: HTTP_CONNECTIONS,
    pipeline: HTTP_PIPELINE,
};
const HTTP_CONNECTIONS: usize = 16;
const HTTP_PIPELINE: usize = 8;

/// Default tolerance of a new baseline (full-length runs).
pub const DEFAULT_TOLERANCE: f64 = 0.3;
/// Tolerance of `--smoke` runs, whose one-second windows are noisier.
pub const SMOKE_TOLERANCE: f64 = 0.5;

struct Closed {
    name: &'static str,
    mix: &'static str,
    payload: usize,
    batch: usize,
    keys: usize,
    by_alias: bool,
}

const CLOSED: [Closed; 4] = [
    Closed {
        name: "gdk32",
        mix: "generate-data-key",
        payload: 32,
        batch: 64,
        keys: 16,
        by_alias: false,
    },
    // gdk32 with keys named by alias: resolving an alias on the data path
    // (admission and the item) must cost about what parsing a key id does.
    Closed {
        name: "gdk32-alias",
        mix: "generate-data-key",
        payload: 32,
        batch: 64,
        keys: 16,
        by_alias: true,
    },
    Closed {
        name: "decrypt",
        mix: "decrypt",
        payload: 32,
        batch: 64,
        keys: 16,
        by_alias: false,
    },
    Closed {
        name: "encrypt4k",
        mix: "encrypt",
        payload: 4096,
        batch: 16,
        keys: 16,
        by_alias: false,
    },
];

fn spec(
    mix: &str,
    payload: usize,
    batch: usize,
    keys: usize,
    by_alias: bool,
) -> anyhow::Result<WorkloadSpec> {
    Ok(WorkloadSpec {
        mix: Mix::parse(mix)?,
        payload_size: payload,
        keys,
        popularity: Popularity::Uniform,
        context_pairs: 1,
        batch,
        blobs_per_key: 4,
        seed: 1,
        hsm_keys: false,
        by_alias,
    })
}

/// Runs the gate; returns whether it passed (always true with `update`).
pub fn run(o: &RegressOptions) -> anyhow::Result<bool> {
    if let Some(t) = o.tolerance {
        gate::validate_tolerance(t)?;
    }
    let (warmup, duration) = if o.smoke { (0.3, 1.0) } else { (1.0, 5.0) };
    let model = LoadModel::Closed {
        connections: 2,
        pipeline: 16,
    };
    let opts = |model: LoadModel, pid: Option<i32>| RunOptions {
        model,
        warmup: Duration::from_secs_f64(warmup),
        duration: Duration::from_secs_f64(duration),
        progress: o.progress,
        target_pid: pid,
    };
    if o.bypass_authorization && o.update {
        anyhow::bail!("a baseline is never recorded with authorization bypassed");
    }
    let daemon = Spawned::kmsd_with(&o.kmsd, None, None, o.bypass_authorization)?;
    let echo = Spawned::echo()?;
    let mut client = kms_proto::client::Client::connect(&daemon.socket)?;
    let mut runs: Vec<RunResult> = Vec::new();
    let mut m = Measured {
        ratios: Default::default(),
        absolutes: Default::default(),
    };
    let ratio = |m: &mut Measured, name: String, value: f64, better: Better, what: &str| {
        m.ratios.insert(
            name,
            Ratio {
                value,
                better,
                description: what.to_owned(),
                noise: 1.0,
            },
        );
    };
    for w in &CLOSED {
        let spec = spec(w.mix, w.payload, w.batch, w.keys, w.by_alias)?;
        let label = format!("{} ({})", w.name, spec.describe());
        let pool = FramePool::build(&spec, &Prepared::create(&mut client, &spec)?)?;
        eprintln!("regress: {label}");
        let d = driver::run(
            Target::Daemon(&daemon.socket),
            &pool,
            &label,
            &opts(model.clone(), Some(daemon.pid())),
        )?;
        let i = crate::inprocess::run(&spec, &opts(model.clone(), None), &label)?;
        let echo_pool = FramePool::build(&spec, &Prepared::synthetic(&spec))?;
        let e = driver::run(
            Target::Echo(&echo.socket),
            &echo_pool,
            &label,
            &opts(model.clone(), Some(echo.pid())),
        )?;
        check_clean(&d)?;
        check_clean(&i)?;
        ratio(
            &mut m,
            format!("{}.daemon/in-process", w.name),
            d.throughput() / i.throughput(),
            Better::Higher,
            "daemon throughput over the same frames in-process",
        );
        ratio(
            &mut m,
            format!("{}.daemon/echo", w.name),
            d.throughput() / e.throughput(),
            Better::Higher,
            "daemon throughput over the echo server's (the transport limit)",
        );
        for r in [&d, &i, &e] {
            m.absolutes.insert(
                format!("{}.{}.ops_per_sec", w.name, r.target.name()),
                r.throughput().round(),
            );
        }
        m.absolutes.insert(
            format!("{}.daemon.p99_us", w.name),
            d.latency.value_at_quantile(0.99) as f64 / 1e3,
        );
        runs.extend([d, i, e]);
    }

    // Open loop: single operations at half the closed-loop peak.
    let spec = spec("generate-data-key", 32, 1, 16, false)?;
    let prepared = Prepared::create(&mut client, &spec)?;
    let pool = FramePool::build(&spec, &prepared)?;
    let label = format!("open-gdk32 ({})", spec.describe());
    eprintln!("regress: {label}: finding the closed-loop peak");
    let peak = driver::run(
        Target::Daemon(&daemon.socket),
        &pool,
        &format!("peak of {label}"),
        &opts(
            LoadModel::Closed {
                connections: 2,
                pipeline: 64,
            },
            Some(daemon.pid()),
        ),
    )?;
    check_clean(&peak)?;

    // The same operations over the HTTP API, as a ratio of the binary
    // protocol's single-operation peak measured just before.
    let http_socket = daemon
        .http_socket
        .as_deref()
        .context("the spawned kmsd serves no HTTP API")?;
    let http_pool = HttpPool::build(&spec, &prepared)?;
    let http_label = format!("gdk32-http ({} http)", spec.describe());
    eprintln!("regress: {http_label}");
    let http = driver::run_http(
        http_socket,
        &http_pool,
        &http_label,
        &opts(HTTP_MODEL, Some(daemon.pid())),
    )?;
    check_clean(&http)?;
    ratio(
        &mut m,
        "gdk32-http.daemon/binary".to_owned(),
        http.throughput() / peak.throughput(),
        Better::Higher,
        "HTTP API (AWS JSON 1.1) single-operation throughput over the binary protocol's single-operation peak",
    );
    m.absolutes.insert(
        "gdk32-http.daemon.ops_per_sec".into(),
        http.throughput().round(),
    );
    m.absolutes.insert(
        "gdk32-http.daemon.p99_us".into(),
        http.latency.value_at_quantile(0.99) as f64 / 1e3,
    );
    if let Some(cpu) = http.target_cpu_secs {
        m.absolutes.insert(
            "gdk32-http.daemon.cpu_ns_per_op".into(),
            (cpu * 1e9 / http.operations.max(1) as f64).round(),
        );
    }

    let rate = (peak.requests as f64 / peak.duration_secs / 2.0).max(1.0);
    eprintln!("regress: {label}: open loop at {rate:.0} requests/s");
    let open = LoadModel::Open {
        connections: 2,
        rate,
    };
    // The tail at half the peak is the noisiest figure of the gate (see
    // OPEN_LOOP_PAIRS): the gated ratio is the best of several short
    // daemon/echo pairs, and their median is recorded beside it.
    let echo_pool = FramePool::build(&spec, &Prepared::synthetic(&spec))?;
    let p99 = |r: &RunResult| r.latency.value_at_quantile(0.99).max(1) as f64;
    let open_opts = |pid| RunOptions {
        warmup: OPEN_LOOP_WARMUP,
        duration: OPEN_LOOP_WINDOW,
        ..opts(open.clone(), Some(pid))
    };
    let mut pairs = Vec::new();
    for _ in 0..OPEN_LOOP_PAIRS {
        let d = driver::run(
            Target::Daemon(&daemon.socket),
            &pool,
            &label,
            &open_opts(daemon.pid()),
        )?;
        check_clean(&d)?;
        let e = driver::run(
            Target::Echo(&echo.socket),
            &echo_pool,
            &label,
            &open_opts(echo.pid()),
        )?;
        pairs.push((p99(&d) / p99(&e), d, e));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ratios: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    eprintln!("regress: {label}: p99/echo-p99 of each pair, best first: {ratios:.2?}");
    let median = ratios[OPEN_LOOP_PAIRS / 2];
    let (best, d, e) = pairs.swap_remove(0);
    ratio(
        &mut m,
        "open-gdk32.p99/echo-p99".to_owned(),
        best,
        Better::Lower,
        "open-loop p99 at half the peak over the echo server's p99 at the same rate (best of 5 one-second pairs)",
    );
    if let Some(r) = m.ratios.get_mut("open-gdk32.p99/echo-p99") {
        r.noise = OPEN_LOOP_NOISE;
    }
    m.absolutes
        .insert("open-gdk32.p99/echo-p99.median".into(), median);
    m.absolutes.insert(
        "open-gdk32.p99/echo-p99.worst".into(),
        ratios[OPEN_LOOP_PAIRS - 1],
    );
    m.absolutes.insert(
        "open-gdk32.peak_requests_per_sec".into(),
        (2.0 * rate).round(),
    );
    m.absolutes
        .insert("open-gdk32.daemon.p99_us".into(), p99(&d) / 1e3);
    m.absolutes
        .insert("open-gdk32.echo.p99_us".into(), p99(&e) / 1e3);
    if let Some(rss) = d.target_peak_rss_bytes {
        m.absolutes
            .insert("daemon.peak_rss_mib".into(), rss as f64 / (1 << 20) as f64);
    }
    runs.extend([peak, http, d, e]);
    drop(client);
    drop(daemon);
    drop(echo);

    for r in &runs {
        println!("{}", report::summary_text(r));
    }
    if o.update {
        let tolerance = o.tolerance.unwrap_or(DEFAULT_TOLERANCE);
        let note = format!(
            "recorded by `kms-loadgen regress --update{}`; ratios are gated, absolutes are for reference",
            if o.smoke { " --smoke" } else { "" }
        );
        Baseline::from_measured(&m, tolerance, &note).save(&o.baseline_file)?;
        println!("baseline written to {}", o.baseline_file.display());
        write_json(o, &runs, None)?;
        return Ok(true);
    }
    let baseline = Baseline::load(&o.baseline_file)
        .with_context(|| "the gate needs a baseline; record one with --update")?;
    let tolerance = o.tolerance.unwrap_or(if o.smoke {
        SMOKE_TOLERANCE
    } else {
        baseline.tolerance
    });
    let verdict = gate::evaluate(&baseline, &m, tolerance);
    println!("{verdict}");
    write_json(o, &runs, Some(serde_json::to_value(&verdict)?))?;
    Ok(verdict.passed)
}

/// The gate measures a healthy daemon: any error in a run is a failure.
fn check_clean(r: &RunResult) -> anyhow::Result<()> {
    if r.error_count() > 0 {
        anyhow::bail!(
            "{} run of {} had errors: {:?}",
            r.target.name(),
            r.workload,
            r.errors
        );
    }
    if r.operations == 0 {
        anyhow::bail!("{} run of {} answered nothing", r.target.name(), r.workload);
    }
    Ok(())
}

fn write_json(
    o: &RegressOptions,
    runs: &[RunResult],
    gate: Option<serde_json::Value>,
) -> anyhow::Result<()> {
    if let Some(path) = &o.json {
        report::write_json(
            path,
            &JsonReport {
                schema_version: JSON_SCHEMA_VERSION,
                runs: runs.iter().map(report::json_summary).collect(),
                gate,
            },
        )?;
    }
    Ok(())
}
