//! GetStatus's metrics: the recorder's own Prometheus rendering read back
//! as a structured list, so the status operation shows exactly what a
//! scrape shows, including metrics other modules register with the macros
//! (the exporter keeps its storage private: its rendering is the one way to
//! read every series it holds).
//!
//! Histograms become their count, sum and quantiles estimated from the
//! cumulative buckets by linear interpolation inside the bucket that holds
//! the rank (what PromQL's `histogram_quantile` does).

use super::QUANTILES;
use kms_proto::types::limits::{
    MAX_METRIC_LABELS, MAX_METRIC_LABEL_BYTES, MAX_METRIC_NAME_LEN, MAX_STATUS_METRICS,
};
use kms_proto::{MetricKind, MetricSample};
use std::collections::{BTreeMap, HashMap};

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Hist {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: u64,
}

/// The series of a Prometheus text exposition (as the exporter writes it),
/// sorted by name then labels, at most [`MAX_STATUS_METRICS`]; series over
/// the status limits (name, labels) are left out.
pub fn samples(text: &str) -> Vec<MetricSample> {
    let mut kinds: HashMap<&str, MetricKind> = HashMap::new();
    let mut plain: BTreeMap<(String, Labels), MetricSample> = BTreeMap::new();
    let mut hists: BTreeMap<(String, Labels), Hist> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                let kind = match kind {
                    "counter" => MetricKind::Counter,
                    "histogram" => MetricKind::Histogram,
                    _ => MetricKind::Gauge,
                };
                kinds.insert(name, kind);
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((name, mut labels, value)) = parse_line(line) else {
            continue;
        };
        let hist_part = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            (kinds.get(base) == Some(&MetricKind::Histogram)).then_some((base, *suffix))
        });
        match hist_part {
            Some((base, suffix)) => {
                let le = labels
                    .iter()
                    .position(|(k, _)| k == "le")
                    .map(|i| labels.remove(i).1);
                let h = hists.entry((base.to_owned(), labels)).or_default();
                match (suffix, le) {
                    ("_bucket", Some(le)) => {
                        let le = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().unwrap_or(f64::INFINITY)
                        };
                        h.buckets.push((le, value));
                    }
                    ("_sum", _) => h.sum = value,
                    ("_count", _) => h.count = value as u64,
                    _ => {}
                }
            }
            None => {
                let kind = kinds.get(name).copied().unwrap_or(MetricKind::Gauge);
                plain.insert(
                    (name.to_owned(), labels.clone()),
                    MetricSample {
                        name: name.to_owned(),
                        kind,
                        labels,
                        value,
                        ..MetricSample::default()
                    },
                );
            }
        }
    }
    for ((name, labels), mut h) in hists {
        h.buckets
            .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let quantiles = QUANTILES
            .iter()
            .map(|&q| (q, quantile(&h.buckets, h.count, q)))
            .collect();
        plain.insert(
            (name.clone(), labels.clone()),
            MetricSample {
                name,
                kind: MetricKind::Histogram,
                labels,
                value: h.sum,
                count: h.count,
                quantiles,
            },
        );
    }
    plain
        .into_values()
        .filter(within_limits)
        .take(MAX_STATUS_METRICS)
        .collect()
}

fn within_limits(m: &MetricSample) -> bool {
    let label_bytes: usize = m.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    !m.name.is_empty()
        && m.name.len() <= MAX_METRIC_NAME_LEN
        && m.labels.len() <= MAX_METRIC_LABELS
        && label_bytes <= MAX_METRIC_LABEL_BYTES
}

/// The `q` quantile of `count` samples in cumulative `buckets` (upper
/// bound, samples at most it), interpolated inside its bucket; a rank in
/// the +Inf bucket gets the largest finite bound. 0 with no samples.
pub fn quantile(buckets: &[(f64, f64)], count: u64, q: f64) -> f64 {
    if count == 0 {
        return 0.0;
    }
    let rank = q * count as f64;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, cumulative) in buckets {
        if cumulative >= rank && cumulative > below {
            if le.is_infinite() {
                return lower;
            }
            return lower + (le - lower) * (rank - below) / (cumulative - below);
        }
        if le.is_finite() {
            lower = le;
        }
        below = cumulative;
    }
    lower
}

/// `name{k="v",...} value` (or `name value`), label values unescaped.
fn parse_line(line: &str) -> Option<(&str, Labels, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let eq = r.find("=\"")?;
            let key = r[..eq].to_owned();
            let mut value = String::new();
            let mut chars = r[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break eq + 2 + i + 1,
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            r = &r[end..];
        }
    } else {
        rest
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn the_rendering_reads_back_as_series() {
        let m = Metrics::new();
        m.requests(0, 5);
        m.error(0, kms_proto::ErrorKind::AccessDenied);
        for us in 1..=100u64 {
            m.latency(0, std::time::Duration::from_micros(us * 10));
        }
        metrics::with_local_recorder(&m.recorder, || {
            metrics::counter!("kmsd_throttled_total", "principal" => "user \"q\"\\x\n", "class" => "c")
                .increment(2);
        });
        m.upkeep();
        let s = samples(&m.render());
        let find = |name: &str, label: &str, value: &str| {
            s.iter()
                .find(|x| x.name == name && x.label(label) == Some(value))
                .unwrap_or_else(|| panic!("{name} {label}={value} in {s:#?}"))
        };
        let r = find("kmsd_requests_total", "operation", "CreateKey");
        assert_eq!((r.kind, r.value), (MetricKind::Counter, 5.0));
        let e = find("kmsd_errors_total", "exception", "AccessDeniedException");
        assert_eq!((e.value, e.label("operation")), (1.0, Some("CreateKey")));
        let t = find("kmsd_throttled_total", "principal", "user \"q\"\\x\n");
        assert_eq!((t.value, t.label("class")), (2.0, Some("c")));
        let h = find("kmsd_request_duration_seconds", "operation", "CreateKey");
        assert_eq!(h.kind, MetricKind::Histogram);
        assert_eq!(h.count, 100);
        assert!((h.value - 0.0505).abs() < 1e-9, "sum {}", h.value);
        // Samples 10..=1000 us: quantiles within the sqrt(2) buckets' 20%.
        for (q, want) in [(0.5, 500e-6), (0.9, 900e-6), (0.99, 990e-6)] {
            let got = h.quantiles.iter().find(|x| x.0 == q).unwrap().1;
            assert!((got - want).abs() <= want * 0.2, "q{q}: {got} vs {want}");
        }
        let max = find("kmsd_request_duration_max_seconds", "operation", "CreateKey");
        assert_eq!((max.kind, max.value), (MetricKind::Gauge, 0.001));
        // Sorted by name then labels.
        let keys: Vec<_> = s.iter().map(|x| (&x.name, &x.labels)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let b = [(1.0, 0.0), (2.0, 10.0), (4.0, 20.0), (f64::INFINITY, 21.0)];
        assert_eq!(quantile(&b, 21, 0.0), 1.0);
        assert!((quantile(&b, 21, 0.5) - 2.1).abs() < 1e-9);
        assert_eq!(quantile(&b, 21, 1.0), 4.0);
        assert_eq!(quantile(&[], 0, 0.5), 0.0);
    }
}
