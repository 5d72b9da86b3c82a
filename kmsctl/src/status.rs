//! `kmsctl status`: GetStatus as a summary for people, or every series as
//! JSON (`--json`).

use kms_proto::{GetStatusOutput, MetricKind, MetricSample};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Every series: `{"Version", "UptimeMs", "Metrics": [{"Name", "Kind",
/// "Labels", "Value", "Count", "Quantiles"}]}` (Count and Quantiles for
/// histograms only; quantiles keyed "0.5", "0.9", "0.99", "0.999").
pub fn json(st: &GetStatusOutput) -> String {
    let metrics: Vec<Value> = st
        .metrics
        .iter()
        .map(|m| {
            let labels: Map<String, Value> = m
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            let mut o = json!({
                "Name": m.name,
                "Kind": kind(m.kind),
                "Labels": labels,
                "Value": finite(m.value),
            });
            if m.kind == MetricKind::Histogram {
                let q: Map<String, Value> = m
                    .quantiles
                    .iter()
                    .map(|(q, v)| (q.to_string(), finite(*v)))
                    .collect();
                o["Count"] = m.count.into();
                o["Quantiles"] = q.into();
            }
            o
        })
        .collect();
    let v = json!({
        "Version": st.version,
        "UptimeMs": st.uptime_ms,
        "Metrics": metrics,
    });
    let mut s = serde_json::to_string_pretty(&v).expect("JSON values serialize");
    s.push('\n');
    s
}

fn kind(k: MetricKind) -> &'static str {
    match k {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
    }
}

/// JSON has no infinities or NaN: those are null.
fn finite(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// The summary: the sections an operator looks at first, then every other
/// series (audit, throttling, whatever the daemon adds) as `name{labels}
/// value`.
pub fn human(st: &GetStatusOutput) -> String {
    let mut out = String::new();
    let mut shown = std::collections::HashSet::new();
    let mut take = |name: &str| -> Vec<&MetricSample> {
        shown.insert(name.to_owned());
        st.metrics.iter().filter(|m| m.name == name).collect()
    };
    let one = |v: &[&MetricSample]| v.first().map_or(0.0, |m| m.value);
    let _ = writeln!(
        out,
        "kmsd {}, up {}",
        st.version,
        duration(st.uptime_ms / 1000)
    );

    let requests = take("kmsd_requests_total");
    let errors = take("kmsd_errors_total");
    let mut errs_by_op: BTreeMap<&str, f64> = BTreeMap::new();
    let mut errs_by_kind: BTreeMap<&str, f64> = BTreeMap::new();
    for e in &errors {
        *errs_by_op
            .entry(e.label("operation").unwrap_or("?"))
            .or_default() += e.value;
        *errs_by_kind
            .entry(e.label("exception").unwrap_or("?"))
            .or_default() += e.value;
    }
    let _ = writeln!(
        out,
        "\nRequests (items)                      total     errors"
    );
    for r in requests.iter().filter(|r| r.value > 0.0) {
        let op = r.label("operation").unwrap_or("?");
        let _ = writeln!(
            out,
            "  {op:<34} {:>9} {:>10}",
            r.value,
            errs_by_op.get(op).copied().unwrap_or(0.0)
        );
    }
    if !errs_by_kind.is_empty() {
        let _ = writeln!(out, "\nErrors by exception");
        for (k, n) in &errs_by_kind {
            let _ = writeln!(out, "  {k:<44} {n:>9}");
        }
    }

    let latency = take("kmsd_request_duration_seconds");
    let max = take("kmsd_request_duration_max_seconds");
    if !latency.is_empty() {
        let _ = writeln!(
            out,
            "\nLatency per frame         frames      p50      p90      p99    p99.9      max"
        );
        for h in latency.iter().filter(|h| h.count > 0) {
            let op = h.label("operation").unwrap_or("?");
            let q = |q: f64| {
                h.quantiles
                    .iter()
                    .find(|x| x.0 == q)
                    .map_or("-".to_owned(), |x| secs(x.1))
            };
            let m = max
                .iter()
                .find(|m| m.label("operation") == Some(op))
                .map_or("-".to_owned(), |m| secs(m.value));
            let _ = writeln!(
                out,
                "  {op:<22} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                h.count,
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                m
            );
        }
    }

    let queues = take("kmsd_queue_depth");
    let q: Vec<String> = queues
        .iter()
        .map(|m| format!("{} {}", m.label("queue").unwrap_or("?"), m.value))
        .collect();
    let _ = writeln!(out, "\nQueues: {}", q.join(", "));
    let overloaded = one(&take("kmsd_overloaded_total"));
    let dropped = one(&take("kmsd_dropped_frames_total"));
    let _ = writeln!(
        out,
        "Overloaded (refused, queue full): {overloaded}; dropped (client gone): {dropped}"
    );

    let hits = one(&take("kmsd_key_cache_hits_total"));
    let misses = one(&take("kmsd_key_cache_misses_total"));
    let keys = one(&take("kmsd_key_cache_keys"));
    let rate = if hits + misses > 0.0 {
        format!("{:.1}%", 100.0 * hits / (hits + misses))
    } else {
        "-".to_owned()
    };
    let _ = writeln!(
        out,
        "Key cache: {keys} keys, hit rate {rate} ({hits} hits, {misses} misses)"
    );
    let batches = take("kmsd_key_loader_batch_keys");
    let per_batch = batches
        .first()
        .filter(|b| b.count > 0)
        .map_or("-".to_owned(), |b| {
            format!("{:.1}", b.value / b.count as f64)
        });
    let _ = writeln!(
        out,
        "Key loader: {} batches, {per_batch} keys per batch, {} loaded, {} failed, {} timed out",
        one(&take("kmsd_key_loader_batches_total")),
        one(&take("kmsd_key_loader_loaded_total")),
        one(&take("kmsd_key_loader_failed_total")),
        one(&take("kmsd_key_loader_expired_total")),
    );
    let up = take("kmsd_hsm_up");
    let rebuilds = one(&take("kmsd_hsm_rebuilds_total"));
    let failed = one(&take("kmsd_hsm_failed_rebuilds_total"));
    let fast = one(&take("kmsd_hsm_fast_failures_total"));
    let _ = match up.first() {
        None => writeln!(out, "HSM: none (file root)"),
        Some(u) => writeln!(
            out,
            "HSM: {} ({rebuilds} rebuilds, {failed} failed, {fast} calls refused while down)",
            if u.value > 0.0 { "up" } else { "DOWN" }
        ),
    };
    let refused: f64 = take("kmsd_connections_refused_total")
        .iter()
        .map(|m| m.value)
        .sum();
    let _ = writeln!(
        out,
        "Connections: {} open, {} accepted, {refused} refused",
        one(&take("kmsd_connections_open")),
        one(&take("kmsd_connections_accepted_total")),
    );
    for n in ["kmsd_uptime_seconds", "kmsd_build_info"] {
        take(n);
    }

    let rest: Vec<&MetricSample> = st
        .metrics
        .iter()
        .filter(|m| !shown.contains(&m.name))
        .collect();
    if !rest.is_empty() {
        let _ = writeln!(out, "\nOther");
        for m in rest {
            let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            let value = if m.kind == MetricKind::Histogram {
                format!("count {} sum {}", m.count, m.value)
            } else {
                m.value.to_string()
            };
            let _ = writeln!(out, "  {}{{{}}} {value}", m.name, labels.join(","));
        }
    }
    out
}

fn duration(s: u64) -> String {
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Seconds in the unit that reads best.
fn secs(v: f64) -> String {
    if v < 1e-3 {
        format!("{:.0}us", v * 1e6)
    } else if v < 1.0 {
        format!("{:.1}ms", v * 1e3)
    } else {
        format!("{v:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, kind: MetricKind, labels: &[(&str, &str)], value: f64) -> MetricSample {
        MetricSample {
            name: name.into(),
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            value,
            ..MetricSample::default()
        }
    }

    #[test]
    fn summary_and_json_show_every_series() {
        let mut h = sample(
            "kmsd_request_duration_seconds",
            MetricKind::Histogram,
            &[("operation", "Encrypt")],
            0.5,
        );
        h.count = 10;
        h.quantiles = vec![(0.5, 20e-6), (0.9, 0.002), (0.99, 0.01), (0.999, 1.5)];
        let st = GetStatusOutput {
            version: "9.9.9".into(),
            uptime_ms: 3_723_000,
            metrics: vec![
                sample(
                    "kmsd_requests_total",
                    MetricKind::Counter,
                    &[("operation", "Encrypt")],
                    10.0,
                ),
                sample(
                    "kmsd_errors_total",
                    MetricKind::Counter,
                    &[("operation", "Encrypt"), ("exception", "NotFoundException")],
                    2.0,
                ),
                h,
                sample(
                    "kmsd_throttled_total",
                    MetricKind::Counter,
                    &[("principal", "uid:7"), ("class", "cryptographic")],
                    3.0,
                ),
            ],
        };
        let text = human(&st);
        assert!(text.starts_with("kmsd 9.9.9, up 1h 2m 3s\n"), "{text}");
        assert!(
            text.contains("Encrypt") && text.contains("NotFoundException"),
            "{text}"
        );
        assert!(
            text.contains("20us") && text.contains("2.0ms") && text.contains("1.50s"),
            "{text}"
        );
        assert!(
            text.contains("kmsd_throttled_total{principal=\"uid:7\",class=\"cryptographic\"} 3"),
            "{text}"
        );
        assert!(text.contains("HSM: none"), "{text}");
        let v: Value = serde_json::from_str(&json(&st)).unwrap();
        assert_eq!(v["UptimeMs"], 3_723_000);
        assert_eq!(v["Metrics"].as_array().unwrap().len(), 4);
        assert_eq!(v["Metrics"][2]["Quantiles"]["0.99"], 0.01);
        assert_eq!(v["Metrics"][3]["Labels"]["principal"], "uid:7");
    }
}
