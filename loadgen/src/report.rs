//! What a run reports: the summary a person reads at the end of a run, the
//! JSON summary that scripts and the regression gate read, the `.hgrm`
//! percentile distribution that the standard HdrHistogram plotter reads, and
//! the live progress line shown while a run is in flight.

use crate::run::{LoadModel, Protocol, RunResult};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Version of the JSON report layout (`JsonReport`). It changes only when a
/// field is renamed, removed or changes meaning, so that scripts reading old
/// reports can tell which layout they hold. Added fields keep it: `protocol`
/// came later in version 1, and a report without it is a binary one.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Nanoseconds per millisecond: latencies are recorded in nanoseconds and the
/// `.hgrm` format (as the HdrHistogram plotter expects) is in milliseconds.
const NS_PER_MS: f64 = 1e6;

/// Nanoseconds per microsecond, the unit of the summaries.
const NS_PER_US: f64 = 1e3;

/// Bytes per MiB, the unit memory is shown in.
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// Percentile ticks per half distance to 100%, as Java HdrHistogram's
/// `outputPercentileDistribution` and HdrHistogram_c's `hdr_percentiles_print`
/// use by default, so our `.hgrm` files have the familiar row density.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Decimals of the millisecond values in `.hgrm` files. The originals print
/// as many decimals as the histogram has significant digits (3), which is
/// right for values recorded in microseconds; ours are recorded in
/// nanoseconds, and 3 decimals of a millisecond would round a 31.2 µs
/// in-process latency to 0.031, throwing away the precision the histogram
/// kept. Six decimals print every nanosecond value exactly, and every reader
/// of the format (the plotter, `read_hgrm`) parses any number of decimals.
const HGRM_VALUE_DECIMALS: usize = 6;

// ---------------------------------------------------------------------------
// Human summary
// ---------------------------------------------------------------------------

/// The end-of-run summary for a person: what ran, how fast, what failed,
/// latency percentiles in microseconds, and what it cost in CPU and memory.
pub fn summary_text(r: &RunResult) -> String {
    let j = json_summary(r);
    let mut lines: Vec<String> = Vec::new();

    lines.push(format!("target       {}", j.target));
    lines.push(format!("protocol     {}", describe_protocol(r.protocol)));
    lines.push(format!("workload     {}", j.workload));
    lines.push(format!("load         {}", describe_model(&r.model)));
    lines.push(format!("batch        {} operations per request", r.batch));
    lines.push(format!("window       {:.2} s", r.duration_secs));
    lines.push(format!(
        "throughput   {} ops/s   {} req/s",
        group_f64(j.throughput_ops_per_sec),
        group_f64(j.requests_per_sec)
    ));
    lines.push(format!(
        "answered     {} requests, {} operations",
        group(r.requests),
        group(r.operations)
    ));

    let failed = r.error_count();
    let failed_pct = if r.operations > 0 {
        100.0 * failed as f64 / r.operations as f64
    } else {
        0.0
    };
    lines.push(format!(
        "errors       {} ({}% of operations), throttled {}",
        group(failed),
        fmt_percent(failed_pct),
        group(j.throttled)
    ));
    // Errors are listed by name, one per line, because the mix (validation
    // versus throttling versus internal) is what tells a person what went
    // wrong; a single total would hide it.
    let name_width = r.errors.keys().map(|k| k.len()).max().unwrap_or(0);
    for (name, count) in &r.errors {
        lines.push(format!("  {name:<name_width$}  {}", group(*count)));
    }

    if r.latency.is_empty() {
        lines.push("latency      no requests answered".to_string());
    } else {
        lines.push(format!(
            "latency      per request frame, microseconds ({} samples)",
            group(r.latency.len())
        ));
        let l = &j.latency_us;
        // One precision for the whole block, chosen by the median, so the
        // decimal points line up and the body keeps about four digits.
        let decimals = us_decimals(l.p50);
        for (label, value) in [
            ("p50", l.p50),
            ("p90", l.p90),
            ("p99", l.p99),
            ("p99.9", l.p99_9),
            ("p99.99", l.p99_99),
            ("max", l.max),
            ("mean", l.mean),
        ] {
            lines.push(format!("  {label:<8} {:>14}", fmt_grouped(value, decimals)));
        }
    }

    lines.push(format!(
        "loadgen cpu  {:.2} cores, {} ns/op ({:.2} s CPU)",
        j.loadgen.cores,
        group_f64(j.loadgen.cpu_ns_per_op),
        j.loadgen.cpu_secs
    ));

    if let Some(t) = &j.target_process {
        if let (Some(cpu), Some(cores)) = (t.cpu_secs, t.cores) {
            let per_op = if r.operations > 0 {
                format!(", {} ns/op", group_f64(cpu * 1e9 / r.operations as f64))
            } else {
                String::new()
            };
            lines.push(format!(
                "target cpu   {cores:.2} cores{per_op} ({cpu:.2} s CPU)"
            ));
        }
        match (t.rss_bytes, t.peak_rss_bytes) {
            (Some(rss), Some(peak)) => lines.push(format!(
                "target rss   {:.1} MiB (peak {:.1} MiB)",
                rss as f64 / BYTES_PER_MIB,
                peak as f64 / BYTES_PER_MIB
            )),
            (Some(rss), None) => lines.push(format!(
                "target rss   {:.1} MiB",
                rss as f64 / BYTES_PER_MIB
            )),
            (None, Some(peak)) => lines.push(format!(
                "target rss   peak {:.1} MiB",
                peak as f64 / BYTES_PER_MIB
            )),
            (None, None) => {}
        }
    }

    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The protocol, in words.
fn describe_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Binary => "binary (flatbuffers frames)",
        Protocol::Http => "http (AWS JSON 1.1 over HTTP/1.1, keep-alive)",
    }
}

/// How the load was offered, in words.
fn describe_model(m: &LoadModel) -> String {
    match m {
        LoadModel::Closed {
            connections,
            pipeline,
        } => format!(
            "closed loop, {connections} connections x {pipeline} pipelined = {} in flight",
            connections.saturating_mul(*pipeline)
        ),
        LoadModel::Open { connections, rate } => format!(
            "open loop, {} req/s offered over {connections} connections",
            group_f64(*rate)
        ),
    }
}

/// Decimals that give a microsecond figure about four significant digits,
/// so that a 1.234 µs in-process latency and a 312.4 µs daemon latency both
/// read sensibly.
fn us_decimals(v: f64) -> usize {
    let a = v.abs();
    if a < 10.0 {
        3
    } else if a < 100.0 {
        2
    } else if a < 1000.0 {
        1
    } else {
        0
    }
}

/// Formats a figure with `decimals` decimals and thousands separators in
/// its integer part.
fn fmt_grouped(v: f64, decimals: usize) -> String {
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return format!("{v:.decimals$}");
    }
    let text = format!("{v:.decimals$}");
    match text.split_once('.') {
        Some((int, frac)) => match int.parse::<u64>() {
            Ok(n) => format!("{}.{frac}", group(n)),
            Err(_) => text,
        },
        None => match text.parse::<u64>() {
            Ok(n) => group(n),
            Err(_) => text,
        },
    }
}

/// Formats a percentage with about three significant digits, so that a
/// handful of errors in millions of operations does not show as 0.000%.
fn fmt_percent(pct: f64) -> String {
    if pct <= 0.0 || !pct.is_finite() {
        return "0".to_string();
    }
    let decimals = (2 - pct.log10().floor() as i32).clamp(0, 8) as usize;
    format!("{pct:.decimals$}")
}

/// Formats an integer with thousands separators, because throughputs in the
/// millions are hard to read as a run of digits.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rounds a non-negative figure to an integer and groups its digits; negative
/// or non-finite figures (which a correct run never produces) are shown as
/// they are rather than hidden.
fn group_f64(v: f64) -> String {
    if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
        group(v.round() as u64)
    } else {
        format!("{v}")
    }
}

// ---------------------------------------------------------------------------
// JSON summary
// ---------------------------------------------------------------------------

/// One run in the JSON report. Field names are a stable interface (scripts
/// and the baseline tooling read them); renaming one requires bumping
/// `JSON_SCHEMA_VERSION`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JsonSummary {
    /// Short name of the workload, e.g. "generate-data-key=100 batch=64".
    pub workload: String,
    /// Who answered: "daemon", "in-process" or "echo".
    pub target: String,
    /// The protocol of the requests: "binary" (kmsd's frames; every
    /// baseline) or "http" (AWS JSON 1.1 over HTTP/1.1). Reports written
    /// before the field existed are binary ones.
    #[serde(default)]
    pub protocol: Protocol,
    /// How load was offered: `{"kind": "closed", "connections": n,
    /// "pipeline": n}` or `{"kind": "open", "connections": n, "rate": r}`
    /// (rate in request frames per second).
    pub model: LoadModel,
    /// Operations (batch items) per request frame.
    pub batch: usize,
    /// Length of the measured window in seconds (warm-up excluded).
    pub duration_secs: f64,
    /// Request frames answered in the window.
    pub requests: u64,
    /// Operations answered in the window, successes and errors.
    pub operations: u64,
    /// Operations per second over the window.
    pub throughput_ops_per_sec: f64,
    /// Request frames per second over the window.
    pub requests_per_sec: f64,
    /// Failed operations by AWS exception name (ThrottlingException
    /// included).
    pub errors: BTreeMap<String, u64>,
    /// Operations refused with ThrottlingException (also counted in
    /// `errors`).
    pub throttled: u64,
    /// Latency of request frames in microseconds.
    pub latency_us: LatencyUs,
    /// What the load generator itself cost.
    pub loadgen: LoadgenUsage,
    /// What the target process cost, when it is a separate process on this
    /// host; absent (null) for the in-process target.
    pub target_process: Option<TargetUsage>,
}

/// Latency percentiles of request frames, in microseconds. All fields are 0
/// when no request was answered.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LatencyUs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest latency seen (to the histogram's precision).
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// CPU the load generator used in the window.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoadgenUsage {
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
    /// Average cores busy: `cpu_secs / duration_secs` (0 for an empty
    /// window).
    pub cores: f64,
    /// CPU nanoseconds per operation answered (0 when none was answered).
    pub cpu_ns_per_op: f64,
}

/// CPU and memory of the target process; each figure is null when it could
/// not be read.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TargetUsage {
    /// User plus system CPU seconds of the target in the window.
    pub cpu_secs: Option<f64>,
    /// Average cores the target kept busy: `cpu_secs / duration_secs`.
    pub cores: Option<f64>,
    /// Resident set at the end of the window, bytes.
    pub rss_bytes: Option<u64>,
    /// Peak resident set so far (VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Builds the JSON summary of one run. The human summary is derived from the
/// same figures, so the two never disagree.
pub fn json_summary(r: &RunResult) -> JsonSummary {
    let per_sec = |n: f64| {
        if r.duration_secs > 0.0 {
            n / r.duration_secs
        } else {
            0.0
        }
    };
    let loadgen = LoadgenUsage {
        cpu_secs: r.loadgen_cpu_secs,
        cores: per_sec(r.loadgen_cpu_secs),
        cpu_ns_per_op: if r.operations > 0 {
            r.loadgen_cpu_secs * 1e9 / r.operations as f64
        } else {
            0.0
        },
    };
    let target_process = if r.target_cpu_secs.is_some()
        || r.target_rss_bytes.is_some()
        || r.target_peak_rss_bytes.is_some()
    {
        Some(TargetUsage {
            cpu_secs: r.target_cpu_secs,
            cores: r.target_cpu_secs.map(per_sec),
            rss_bytes: r.target_rss_bytes,
            peak_rss_bytes: r.target_peak_rss_bytes,
        })
    } else {
        None
    };
    JsonSummary {
        workload: r.workload.clone(),
        target: r.target.name().to_string(),
        protocol: r.protocol,
        model: r.model.clone(),
        batch: r.batch,
        duration_secs: r.duration_secs,
        requests: r.requests,
        operations: r.operations,
        throughput_ops_per_sec: r.throughput(),
        requests_per_sec: per_sec(r.requests as f64),
        errors: r.errors.clone(),
        throttled: r.throttled(),
        latency_us: latency_us(&r.latency),
        loadgen,
        target_process,
    }
}

/// Latency percentiles of a nanosecond histogram, in microseconds.
fn latency_us(h: &Histogram<u64>) -> LatencyUs {
    if h.is_empty() {
        return LatencyUs {
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p99_9: 0.0,
            p99_99: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    let us = |ns: u64| ns as f64 / NS_PER_US;
    LatencyUs {
        p50: us(h.value_at_quantile(0.5)),
        p90: us(h.value_at_quantile(0.9)),
        p99: us(h.value_at_quantile(0.99)),
        p99_9: us(h.value_at_quantile(0.999)),
        p99_99: us(h.value_at_quantile(0.9999)),
        max: us(h.max()),
        mean: h.mean() / NS_PER_US,
    }
}

/// The whole JSON report: every run of an invocation, and the gate's verdict
/// when the gate ran.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct JsonReport {
    /// Layout version, `JSON_SCHEMA_VERSION` when written by this build.
    pub schema_version: u32,
    /// One summary per run, in the order they ran.
    pub runs: Vec<JsonSummary>,
    /// The regression gate's report (`gate::GateReport` serialized), when
    /// the gate ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<serde_json::Value>,
}

/// Writes the report as pretty-printed JSON with a trailing newline (so the
/// file is a well-formed text file that diffs cleanly).
pub fn write_json(path: &Path, report: &JsonReport) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(report).context("serializing the JSON report")?;
    text.push('\n');
    std::fs::write(path, text)
        .with_context(|| format!("writing the JSON report to {}", path.display()))
}

// ---------------------------------------------------------------------------
// .hgrm percentile distribution
// ---------------------------------------------------------------------------

/// One row of the percentile distribution: the value reached, the
/// percentile level iterated to, and the count of samples at or below it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PercentileRow {
    /// Highest value equivalent to the bucket reached, nanoseconds.
    pub value_ns: u64,
    /// Percentile level iterated to, in 0..=1.
    pub quantile: f64,
    /// Samples at or below `value_ns`.
    pub total_count: u64,
}

/// The rows of the percentile distribution, with the same ticks the original
/// HdrHistogram implementations print. Shared by `write_hgrm` and the plot,
/// so a plot made directly from a run matches one made from its `.hgrm`.
pub(crate) fn percentile_rows(h: &Histogram<u64>) -> Vec<PercentileRow> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut total = 0u64;
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            // The iterator reports the samples passed since the previous
            // row; their running sum is the originals' TotalCount column.
            total += v.count_since_last_iteration();
            PercentileRow {
                value_ns: v.value_iterated_to(),
                quantile: v.quantile_iterated_to(),
                total_count: total,
            }
        })
        .collect()
}

/// Number of sub-buckets per bucket, as the originals print in the footer.
/// The Rust crate keeps it private, so it is derived the same way the Java
/// implementation does: the smallest power of two that holds
/// 2 x 10^significant-digits distinct values.
fn sub_bucket_count(h: &Histogram<u64>) -> u64 {
    let largest_single_unit = 2.0 * 10f64.powi(i32::from(h.sigfig()));
    let magnitude = (largest_single_unit.log2().ceil() as u32).max(1);
    1u64 << magnitude
}

/// Writes the histogram (values recorded in nanoseconds) as the standard
/// HdrHistogram percentile distribution, values in milliseconds, in the
/// CLASSIC layout of Java HdrHistogram's `outputPercentileDistribution` and
/// HdrHistogram_c's `hdr_percentiles_print`, which the HdrHistogram plotter
/// (hdrhistogram.github.io/HdrHistogram/plotFiles.html) reads. The only
/// difference is that values carry six decimals rather than three (see
/// `HGRM_VALUE_DECIMALS`).
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> std::io::Result<()> {
    let d = HGRM_VALUE_DECIMALS;
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    writeln!(out)?;
    for row in percentile_rows(h) {
        let value = row.value_ns as f64 / NS_PER_MS;
        if row.quantile < 1.0 {
            writeln!(
                out,
                "{:>12.d$} {:>2.12} {:>10} {:>14.2}",
                value,
                row.quantile,
                row.total_count,
                1.0 / (1.0 - row.quantile)
            )?;
        } else {
            // The originals leave 1/(1-p) out of the last row, where it is
            // infinite; readers rely on that to recognise the max row.
            writeln!(
                out,
                "{:>12.d$} {:>2.12} {:>10}",
                value, row.quantile, row.total_count
            )?;
        }
    }
    let max = if h.is_empty() { 0 } else { h.max() };
    writeln!(
        out,
        "#[Mean    = {:>12.d$}, StdDeviation   = {:>12.d$}]",
        h.mean() / NS_PER_MS,
        h.stdev() / NS_PER_MS
    )?;
    writeln!(
        out,
        "#[Max     = {:>12.d$}, Total count    = {:>12}]",
        max as f64 / NS_PER_MS,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_bucket_count(h)
    )?;
    Ok(())
}

/// Reads the rows of a `.hgrm` percentile distribution (ours, Java's,
/// HdrHistogram_c's or wrk2's) as (percentile in 0..=1, value in ms) pairs.
/// Header, footer, blank and other text lines are skipped; a row whose
/// percentile lies outside 0..=1 (a file in some other layout) is an error,
/// and so is a file with no rows at all.
pub fn read_hgrm(text: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(value), Some(percentile)) = (fields.next(), fields.next()) else {
            continue;
        };
        // Lines whose first two fields are not numbers are headers or other
        // text (wrk2 prints its own summary around the distribution).
        let (Ok(value), Ok(percentile)) = (value.parse::<f64>(), percentile.parse::<f64>()) else {
            continue;
        };
        if !value.is_finite() || !(0.0..=1.0).contains(&percentile) {
            bail!(
                "line {}: `{line}` is not a percentile distribution row \
                 (expected a finite value and a percentile between 0 and 1)",
                index + 1
            );
        }
        rows.push((percentile, value));
    }
    if rows.is_empty() {
        bail!(
            "no percentile rows found; expected an HdrHistogram percentile distribution \
             (.hgrm) with rows like `0.312000 0.500000000000 5000 2.00`"
        );
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Progress line
// ---------------------------------------------------------------------------

/// The live progress display on stderr: one line updated in place on a
/// terminal, one line per update otherwise (so logs of CI runs stay
/// readable). The caller decides whether stderr is a terminal.
pub struct Progress {
    /// Whether stderr is a terminal, so the line can be redrawn in place.
    is_tty: bool,
    /// Whether an in-place line is on screen and not yet ended with a
    /// newline.
    drawn: bool,
}

impl Progress {
    /// A progress display; `is_tty` says whether stderr is a terminal.
    pub fn new(is_tty: bool) -> Progress {
        Progress {
            is_tty,
            drawn: false,
        }
    }

    /// The progress line for the given figures, e.g.
    /// `  12.0 s   1,034,211 ops/s   errors 0   p99 312.4 us`. Fields have
    /// fixed widths so that a line redrawn in place does not jitter.
    pub fn line(&self, elapsed_secs: f64, ops_per_sec: f64, errors: u64, p99_ns: u64) -> String {
        format!(
            "{elapsed_secs:>6.1} s {:>11} ops/s   errors {}   p99 {}",
            group_f64(ops_per_sec),
            group(errors),
            fmt_latency_ns(p99_ns)
        )
    }

    /// Shows the progress line on stderr. A failure to write (stderr closed)
    /// is ignored: progress is a courtesy and must not abort a run.
    pub fn emit(&mut self, elapsed_secs: f64, ops_per_sec: f64, errors: u64, p99_ns: u64) {
        let line = self.line(elapsed_secs, ops_per_sec, errors, p99_ns);
        let _ = self.emit_to(&mut std::io::stderr().lock(), &line);
    }

    /// Ends an in-place line with a newline, so that whatever is printed
    /// next starts on a line of its own. Does nothing if no line was drawn.
    pub fn finish(&mut self) {
        let _ = self.finish_to(&mut std::io::stderr().lock());
    }

    /// Writes `line` to `out` the way `emit` does: in place on a terminal
    /// (carriage return, line, erase to end of line), else as its own line.
    fn emit_to(&mut self, out: &mut impl Write, line: &str) -> std::io::Result<()> {
        if self.is_tty {
            write!(out, "\r{line}\x1b[K")?;
            self.drawn = true;
        } else {
            writeln!(out, "{line}")?;
        }
        out.flush()
    }

    /// Writes the newline that ends an in-place line, once.
    fn finish_to(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.drawn {
            self.drawn = false;
            writeln!(out)?;
            out.flush()?;
        }
        Ok(())
    }
}

impl Drop for Progress {
    /// Ends an in-place line even when a run stops early with an error, so
    /// that the error message does not land on the end of the progress line.
    fn drop(&mut self) {
        self.finish();
    }
}

/// Formats a nanosecond latency in the unit that keeps it short.
fn fmt_latency_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e6 {
        format!("{:.1} us", ns / NS_PER_US)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / NS_PER_MS)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::TargetKind;
    use std::collections::BTreeSet;

    /// A histogram with a body around 30-60 µs and a tail to a few ms, like
    /// a daemon run.
    fn sample_histogram() -> Histogram<u64> {
        let mut h = RunResult::new_histogram();
        for i in 0..100_000u64 {
            h.record(30_000 + (i * 7919) % 30_000).unwrap();
        }
        for i in 0..100u64 {
            h.record(1_000_000 + i * 37_000).unwrap();
        }
        h.record(12_345_678).unwrap();
        h
    }

    fn sample_run() -> RunResult {
        let mut errors = BTreeMap::new();
        errors.insert("ThrottlingException".to_string(), 12);
        errors.insert("ValidationException".to_string(), 3);
        RunResult {
            workload: "generate-data-key=100 batch=64".to_string(),
            target: TargetKind::Daemon,
            protocol: Protocol::Binary,
            model: LoadModel::Closed {
                connections: 4,
                pipeline: 16,
            },
            batch: 64,
            duration_secs: 4.0,
            requests: 100_101,
            operations: 6_406_464,
            errors,
            latency: sample_histogram(),
            loadgen_cpu_secs: 2.0,
            target_cpu_secs: Some(6.0),
            target_rss_bytes: Some(50 * 1024 * 1024),
            target_peak_rss_bytes: Some(64 * 1024 * 1024),
        }
    }

    fn keys(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn summary_text_names_the_run_and_its_figures() {
        let text = summary_text(&sample_run());
        assert!(text.contains("daemon"), "{text}");
        assert!(text.contains("generate-data-key=100 batch=64"), "{text}");
        assert!(text.contains("4 connections x 16 pipelined"), "{text}");
        // 6,406,464 operations over 4 s.
        assert!(text.contains("1,601,616 ops/s"), "{text}");
        assert!(text.contains("25,025 req/s"), "{text}");
        assert!(text.contains("throttled 12"), "{text}");
        let throttle_line = text
            .lines()
            .find(|l| l.trim_start().starts_with("ThrottlingException"))
            .expect("one line per error name");
        assert!(throttle_line.trim_end().ends_with("12"), "{throttle_line}");
        assert!(text
            .lines()
            .any(|l| l.trim_start().starts_with("ValidationException")));
        for label in ["p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{label} "))),
                "no {label} line in\n{text}"
            );
        }
        // The max recorded value is 12,345,678 ns, about 12,346 µs; the
        // block's precision follows the 45 µs median.
        assert!(text.contains("12,353.5"), "{text}");
        assert!(text.contains("(0.000234% of operations)"), "{text}");
        // 2 CPU seconds over 4 s is half a core; 2e9 ns / 6,406,464 ops.
        assert!(text.contains("0.50 cores, 312 ns/op"), "{text}");
        assert!(text.contains("1.50 cores"), "{text}");
        assert!(text.contains("50.0 MiB (peak 64.0 MiB)"), "{text}");
    }

    #[test]
    fn summary_text_of_an_open_loop_run_shows_the_rate() {
        let mut r = sample_run();
        r.model = LoadModel::Open {
            connections: 2,
            rate: 50_000.0,
        };
        r.target = TargetKind::InProcess;
        r.target_cpu_secs = None;
        r.target_rss_bytes = None;
        r.target_peak_rss_bytes = None;
        let text = summary_text(&r);
        assert!(text.contains("50,000 req/s offered"), "{text}");
        assert!(text.contains("in-process"), "{text}");
        assert!(!text.contains("target cpu"), "{text}");
        assert!(!text.contains("target rss"), "{text}");
    }

    #[test]
    fn summary_text_of_an_empty_run_does_not_divide_by_zero() {
        let mut r = sample_run();
        r.duration_secs = 0.0;
        r.requests = 0;
        r.operations = 0;
        r.errors.clear();
        r.latency = RunResult::new_histogram();
        let text = summary_text(&r);
        assert!(text.contains("no requests answered"), "{text}");
        assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
    }

    #[test]
    fn json_summary_figures() {
        let r = sample_run();
        let j = json_summary(&r);
        assert_eq!(j.target, "daemon");
        assert_eq!(j.throttled, 12);
        assert_eq!(j.throughput_ops_per_sec, 6_406_464.0 / 4.0);
        assert_eq!(j.requests_per_sec, 100_101.0 / 4.0);
        assert_eq!(j.loadgen.cores, 0.5);
        assert!((j.loadgen.cpu_ns_per_op - 2e9 / 6_406_464.0).abs() < 1e-9);
        let t = j.target_process.expect("target figures were given");
        assert_eq!(t.cores, Some(1.5));
        assert_eq!(t.peak_rss_bytes, Some(64 * 1024 * 1024));
        let l = &j.latency_us;
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9);
        assert!(l.p99_9 <= l.p99_99 && l.p99_99 <= l.max);
        assert!((l.p50 - 45.0).abs() < 1.0, "p50 {}", l.p50);
        assert!((l.max - 12_345.678).abs() < 12.35, "max {}", l.max);
    }

    #[test]
    fn json_schema_has_exactly_the_documented_fields_and_round_trips() {
        let summary = json_summary(&sample_run());
        let report = JsonReport {
            schema_version: JSON_SCHEMA_VERSION,
            runs: vec![summary.clone()],
            gate: Some(serde_json::json!({"passed": true})),
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(keys(&v), set(&["schema_version", "runs", "gate"]));
        let run = &v["runs"][0];
        assert_eq!(
            keys(run),
            set(&[
                "workload",
                "target",
                "protocol",
                "model",
                "batch",
                "duration_secs",
                "requests",
                "operations",
                "throughput_ops_per_sec",
                "requests_per_sec",
                "errors",
                "throttled",
                "latency_us",
                "loadgen",
                "target_process",
            ])
        );
        assert_eq!(
            keys(&run["latency_us"]),
            set(&["p50", "p90", "p99", "p99_9", "p99_99", "max", "mean"])
        );
        assert_eq!(
            keys(&run["loadgen"]),
            set(&["cpu_secs", "cores", "cpu_ns_per_op"])
        );
        assert_eq!(
            keys(&run["target_process"]),
            set(&["cpu_secs", "cores", "rss_bytes", "peak_rss_bytes"])
        );
        assert_eq!(
            keys(&run["model"]),
            set(&["kind", "connections", "pipeline"])
        );
        assert_eq!(run["model"]["kind"], "closed");
        assert_eq!(run["target"], "daemon");
        assert_eq!(run["protocol"], "binary");
        assert_eq!(run["errors"]["ThrottlingException"], 12);

        let back: JsonReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn json_protocol_is_named_and_old_reports_read_as_binary() {
        let mut r = sample_run();
        r.protocol = Protocol::Http;
        let mut v = serde_json::to_value(json_summary(&r)).unwrap();
        assert_eq!(v["protocol"], "http");
        assert!(summary_text(&r).contains("protocol     http"));
        // A report from before the field: read as the binary protocol.
        v.as_object_mut().unwrap().remove("protocol");
        let back: JsonSummary = serde_json::from_value(v).unwrap();
        assert_eq!(back.protocol, Protocol::Binary);
    }

    #[test]
    fn json_report_without_gate_omits_the_field() {
        let report = JsonReport {
            schema_version: JSON_SCHEMA_VERSION,
            runs: vec![],
            gate: None,
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(keys(&v), set(&["schema_version", "runs"]));
        let back: JsonReport = serde_json::from_value(v).unwrap();
        assert_eq!(back.gate, None);
    }

    #[test]
    fn write_json_is_pretty_with_a_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let report = JsonReport {
            schema_version: JSON_SCHEMA_VERSION,
            runs: vec![json_summary(&sample_run())],
            gate: None,
        };
        write_json(&path, &report).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"));
        assert!(text.lines().count() > 10, "pretty-printed");
        let back: JsonReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn write_json_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("report.json");
        let report = JsonReport {
            schema_version: JSON_SCHEMA_VERSION,
            runs: vec![],
            gate: None,
        };
        let err = write_json(&path, &report).unwrap_err();
        assert!(format!("{err:#}").contains("missing-dir"), "{err:#}");
    }

    #[test]
    fn hgrm_has_the_standard_header_and_footer() {
        let h = sample_histogram();
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        let n = lines.len();
        assert!(lines[n - 3].starts_with("#[Mean    = "), "{}", lines[n - 3]);
        assert!(lines[n - 3].contains(", StdDeviation   = "));
        assert!(lines[n - 2].starts_with("#[Max     = "), "{}", lines[n - 2]);
        assert!(lines[n - 2].ends_with(&format!("Total count    = {:>12}]", h.len())));
        assert_eq!(
            lines[n - 1],
            format!(
                "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
                h.buckets(),
                2048
            )
        );
        // The row before the footer is the max row, without 1/(1-p).
        let last_row: Vec<&str> = lines[n - 4].split_whitespace().collect();
        assert_eq!(last_row.len(), 3, "{}", lines[n - 4]);
        assert_eq!(last_row[1], "1.000000000000");
        assert_eq!(last_row[2], h.len().to_string());
        // Ordinary rows have all four columns, at the originals' widths.
        let first = lines[2];
        assert_eq!(first.split_whitespace().count(), 4, "{first}");
        assert_eq!(&first[12..13], " ");
        assert_eq!(first[13..].split(' ').next().unwrap(), "0.000000000000");
    }

    #[test]
    fn hgrm_round_trips_through_read_hgrm() {
        let h = sample_histogram();
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let rows = read_hgrm(&String::from_utf8(out).unwrap()).unwrap();
        assert_eq!(rows.len(), percentile_rows(&h).len());
        // Five ticks per half distance give dozens of rows, not a handful.
        assert!(rows.len() > 50, "{} rows", rows.len());
        for pair in rows.windows(2) {
            assert!(pair[0].0 <= pair[1].0, "percentiles go down: {pair:?}");
            assert!(pair[0].1 <= pair[1].1, "values go down: {pair:?}");
        }
        assert_eq!(rows.last().unwrap().0, 1.0);
        assert_eq!(rows[0].0, 0.0);
        let precision = 10f64.powi(-i32::from(h.sigfig()));
        for &(p, ms) in &rows {
            let expected = h.value_at_quantile(p) as f64 / NS_PER_MS;
            assert!(
                (ms - expected).abs() <= expected * precision + 1e-6,
                "at p={p}: read {ms} ms, histogram says {expected} ms"
            );
        }
        let max_ms = rows.last().unwrap().1;
        assert!((max_ms - h.max() as f64 / NS_PER_MS).abs() < 1e-6);
    }

    #[test]
    fn hgrm_of_an_empty_histogram_has_no_rows() {
        let h = RunResult::new_histogram();
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("#[Max     = "));
        let err = read_hgrm(&text).unwrap_err();
        assert!(err.to_string().contains("no percentile rows"), "{err}");
    }

    #[test]
    fn read_hgrm_reads_java_output_and_skips_other_text() {
        let text = "some preamble from wrk2\n\
                    \x20      Value     Percentile TotalCount 1/(1-Percentile)\n\
                    \n\
                    \x20     0.100 0.000000000000          1           1.00\n\
                    \x20     0.250 0.500000000000         50           2.00\n\
                    \x20     9.000 1.000000000000        100\n\
                    #[Mean    =        0.300, StdDeviation   =        0.100]\n";
        let rows = read_hgrm(text).unwrap();
        assert_eq!(rows, vec![(0.0, 0.1), (0.5, 0.25), (1.0, 9.0)]);
    }

    #[test]
    fn read_hgrm_rejects_percentiles_outside_zero_to_one() {
        let err = read_hgrm("  0.250  50.0  50  2.00\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(read_hgrm("").is_err());
        assert!(read_hgrm("just some text\n").is_err());
    }

    #[test]
    fn progress_line_matches_the_documented_layout() {
        let p = Progress::new(false);
        assert_eq!(
            p.line(12.0, 1_034_211.4, 0, 312_400),
            "  12.0 s   1,034,211 ops/s   errors 0   p99 312.4 us"
        );
        assert!(p.line(1.0, 10.0, 5, 2_500_000).ends_with("p99 2.50 ms"));
        assert!(p.line(1.0, 10.0, 5, 3_000_000_000).ends_with("p99 3.00 s"));
        // Fixed widths keep the throughput column in place as it grows.
        let a = p.line(1.0, 999.0, 0, 1000);
        let b = p.line(100.0, 12_345_678.0, 0, 1000);
        assert_eq!(a.find("ops/s"), b.find("ops/s"));
    }

    #[test]
    fn progress_redraws_in_place_on_a_terminal() {
        let mut p = Progress::new(true);
        let mut out = Vec::new();
        p.emit_to(&mut out, "one").unwrap();
        p.emit_to(&mut out, "two").unwrap();
        p.finish_to(&mut out).unwrap();
        p.finish_to(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\rone\x1b[K\rtwo\x1b[K\n");
    }

    #[test]
    fn progress_writes_plain_lines_when_not_a_terminal() {
        let mut p = Progress::new(false);
        let mut out = Vec::new();
        p.emit_to(&mut out, "one").unwrap();
        p.emit_to(&mut out, "two").unwrap();
        p.finish_to(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\n");
    }

    #[test]
    fn thousands_grouping() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_034_211), "1,034,211");
        assert_eq!(group_f64(1_234.6), "1,235");
        assert_eq!(fmt_grouped(12_345.678, 1), "12,345.7");
        assert_eq!(fmt_grouped(45.0, 2), "45.00");
        assert_eq!(fmt_percent(15.0 / 6_406_464.0 * 100.0), "0.000234");
        assert_eq!(fmt_percent(12.5), "12.5");
        assert_eq!(fmt_percent(0.0), "0");
    }
}
