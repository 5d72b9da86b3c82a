//! The performance regression gate: compares the ratios a run measured
//! against a committed baseline and says whether any got worse by more than
//! the tolerance.
//!
//! Only ratios are gated (e.g. daemon throughput over echo-server throughput
//! on the same machine in the same minute), because they cancel out most of
//! the machine's speed and noise; absolute figures are recorded next to them
//! for people to read but never gated, since a shared CI machine can be
//! twice as slow from one hour to the next.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// Version of the baseline file layout this build reads and writes.
pub const BASELINE_SCHEMA_VERSION: u32 = 1;

/// Which direction of a ratio is good.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Larger is better (e.g. a throughput ratio).
    Higher,
    /// Smaller is better (e.g. a latency or CPU-per-operation ratio).
    Lower,
}

impl Better {
    /// The word used in tables and files.
    pub fn name(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// One gated figure: a ratio of two measurements taken side by side.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ratio {
    /// The ratio's value.
    pub value: f64,
    /// Which direction is an improvement.
    pub better: Better,
    /// What the ratio compares, for people reading the baseline file.
    #[serde(default)]
    pub description: String,
    /// Multiplies the gate's tolerance for this ratio (1 = as is). A tail
    /// latency ratio on a shared machine swings far more from run to run
    /// than a throughput ratio, and a gate that fails on noise stops being
    /// read; the baseline's value is taken, so the file says it.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub noise: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

/// What one gate run measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Measured {
    /// Gated ratios by name.
    pub ratios: BTreeMap<String, Ratio>,
    /// Absolute figures by name (e.g. ops/s), recorded for people and never
    /// gated: the machine is too noisy for absolute thresholds.
    pub absolutes: BTreeMap<String, f64>,
}

/// The committed baseline the gate compares against.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Layout version; must be `BASELINE_SCHEMA_VERSION`.
    pub schema_version: u32,
    /// Default relative tolerance, e.g. 0.10 for 10%.
    pub tolerance: f64,
    /// Free text: where and when the baseline was taken, and why.
    pub note: String,
    /// Gated ratios by name.
    pub ratios: BTreeMap<String, Ratio>,
    /// Absolute figures at the time the baseline was taken, for reference.
    pub absolutes: BTreeMap<String, f64>,
}

/// Checks that a tolerance is a finite, non-negative fraction. Callers
/// taking a tolerance from the command line should check it with this
/// before calling `evaluate`.
pub fn validate_tolerance(tolerance: f64) -> anyhow::Result<()> {
    if !tolerance.is_finite() || tolerance < 0.0 {
        bail!("tolerance {tolerance} is not a finite non-negative fraction (e.g. 0.10 for 10%)");
    }
    Ok(())
}

impl Baseline {
    /// Reads a baseline file. Files of another schema version and files
    /// with fields this build does not know are refused, so that a typo or
    /// a newer layout is not silently half-read.
    pub fn load(path: &Path) -> anyhow::Result<Baseline> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading baseline {}", path.display()))?;
        // The version is checked before the strict parse, so that a file
        // from a newer layout is reported as such rather than as an unknown
        // field.
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("baseline {} is not valid JSON", path.display()))?;
        match value
            .get("schema_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(BASELINE_SCHEMA_VERSION) => {}
            Some(v) => bail!(
                "baseline {} has schema_version {v}; this kms-loadgen reads version \
                 {BASELINE_SCHEMA_VERSION}",
                path.display()
            ),
            None => bail!(
                "baseline {} has no numeric schema_version field",
                path.display()
            ),
        }
        let baseline: Baseline = serde_json::from_value(value)
            .with_context(|| format!("baseline {} is malformed", path.display()))?;
        validate_tolerance(baseline.tolerance)
            .with_context(|| format!("baseline {}", path.display()))?;
        Ok(baseline)
    }

    /// Writes the baseline as pretty-printed JSON with a trailing newline,
    /// so that the committed file diffs cleanly.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut text = serde_json::to_string_pretty(self).context("serializing the baseline")?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("writing baseline {}", path.display()))
    }

    /// A baseline holding exactly what was measured.
    pub fn from_measured(m: &Measured, tolerance: f64, note: &str) -> Baseline {
        Baseline {
            schema_version: BASELINE_SCHEMA_VERSION,
            tolerance,
            note: note.to_string(),
            ratios: m.ratios.clone(),
            absolutes: m.absolutes.clone(),
        }
    }
}

/// The outcome for one ratio.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the tolerance of the baseline.
    Ok,
    /// Better than the baseline by more than the tolerance: worth a
    /// baseline update so that a later regression is caught.
    Improved,
    /// Worse than the baseline by more than the tolerance. Fails the gate.
    Regressed,
    /// In the baseline but not measured. Fails the gate, because a gated
    /// figure that silently disappears is a regression nobody sees.
    Missing,
    /// Measured but not in the baseline. Reported, does not fail.
    New,
    /// Measured as NaN or infinite, which means the measurement broke.
    /// Fails the gate.
    Invalid,
}

impl Verdict {
    /// Whether this verdict fails the gate.
    pub fn fails(self) -> bool {
        matches!(
            self,
            Verdict::Regressed | Verdict::Missing | Verdict::Invalid
        )
    }

    /// The word shown in the table; failures are in capitals so they stand
    /// out in a CI log.
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Improved => "improved",
            Verdict::Regressed => "REGRESSED",
            Verdict::Missing => "MISSING",
            Verdict::New => "new",
            Verdict::Invalid => "INVALID",
        }
    }
}

/// One ratio's comparison.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct GateRow {
    /// Name of the ratio.
    pub name: String,
    /// Baseline value, when the baseline has this ratio.
    pub baseline: Option<f64>,
    /// Measured value, when it was measured.
    pub current: Option<f64>,
    /// Which direction is good (the baseline's, when both have it).
    pub better: Better,
    /// Relative change from the baseline, e.g. -0.12 for 12% lower; absent
    /// when either side is missing or the baseline is 0.
    pub change: Option<f64>,
    /// The value beyond which the ratio counts as regressed.
    pub limit: Option<f64>,
    /// The outcome.
    pub verdict: Verdict,
}

/// The gate's outcome: one row per ratio in the baseline or the
/// measurement, in name order.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct GateReport {
    /// The comparisons.
    pub rows: Vec<GateRow>,
    /// Relative tolerance the comparisons used.
    pub tolerance: f64,
    /// True when no row fails.
    pub passed: bool,
}

/// Compares `measured` with `baseline`. A `Higher` ratio regresses when it
/// falls below baseline x (1 - tolerance), a `Lower` one when it rises above
/// baseline x (1 + tolerance). A baseline ratio that was not measured fails,
/// a new ratio is reported without failing, and a non-finite measurement
/// fails. When the measurement and the baseline disagree about which
/// direction is better, the baseline's word counts: the baseline is the
/// reviewed, committed definition. An invalid tolerance (negative or not
/// finite) is taken as 0, the strictest reading, so that a bad value can
/// never make the gate pass everything.
pub fn evaluate(baseline: &Baseline, measured: &Measured, tolerance: f64) -> GateReport {
    let tolerance = if validate_tolerance(tolerance).is_ok() {
        tolerance
    } else {
        0.0
    };
    let names: BTreeSet<&String> = baseline
        .ratios
        .keys()
        .chain(measured.ratios.keys())
        .collect();
    let rows: Vec<GateRow> = names
        .into_iter()
        .map(|name| {
            compare(
                name,
                baseline.ratios.get(name),
                measured.ratios.get(name),
                tolerance,
            )
        })
        .collect();
    let passed = rows.iter().all(|r| !r.verdict.fails());
    GateReport {
        rows,
        tolerance,
        passed,
    }
}

/// Compares one ratio; at least one side is present.
fn compare(name: &str, base: Option<&Ratio>, cur: Option<&Ratio>, tolerance: f64) -> GateRow {
    let better = base.or(cur).map_or(Better::Higher, |r| r.better);
    let tolerance = tolerance * base.map_or(1.0, |r| r.noise.max(1.0));
    let baseline = base.map(|r| r.value);
    let current = cur.map(|r| r.value);
    let limit = baseline.map(|b| match better {
        Better::Higher => b * (1.0 - tolerance),
        Better::Lower => b * (1.0 + tolerance),
    });
    let change = match (baseline, current) {
        (Some(b), Some(c)) if b != 0.0 && c.is_finite() => Some((c - b) / b),
        _ => None,
    };
    let verdict = match (baseline, current, limit) {
        (_, Some(c), _) if !c.is_finite() => Verdict::Invalid,
        (Some(b), Some(c), Some(limit)) => {
            // The improvement threshold mirrors the regression one on the
            // other side of the baseline.
            let (regressed, improved) = match better {
                Better::Higher => (c < limit, c > b * (1.0 + tolerance)),
                Better::Lower => (c > limit, c < b * (1.0 - tolerance)),
            };
            if regressed {
                Verdict::Regressed
            } else if improved {
                Verdict::Improved
            } else {
                Verdict::Ok
            }
        }
        (Some(_), None, _) => Verdict::Missing,
        _ => Verdict::New,
    };
    GateRow {
        name: name.to_string(),
        baseline,
        current,
        better,
        change,
        limit,
        verdict,
    }
}

/// Decimals that give `reference` about four significant digits. A row's
/// baseline, current value and limit share the baseline's precision, so
/// their decimal points line up.
fn decimals_for(reference: Option<f64>) -> usize {
    match reference {
        Some(v) if v.is_finite() && v != 0.0 && v.abs() < 1000.0 => {
            (3 - v.abs().log10().floor() as i32).clamp(0, 9) as usize
        }
        _ => 0,
    }
}

/// Formats a figure with the given decimals, or "-" when absent.
fn fmt_value(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        Some(v) => v.to_string(),
        None => "-".to_string(),
    }
}

/// Formats a relative change as a signed percentage.
fn fmt_change(c: Option<f64>) -> String {
    match c {
        Some(c) => format!("{:+.1}%", c * 100.0),
        None => "-".to_string(),
    }
}

impl fmt::Display for GateReport {
    /// An aligned table, one row per ratio, then the verdict on the last
    /// line: `gate: PASS`, or `gate: FAIL (...)` naming every failing ratio.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "name", "better", "baseline", "current", "change", "limit", "verdict",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                let d = decimals_for(r.baseline.or(r.current));
                [
                    r.name.clone(),
                    r.better.name().to_string(),
                    fmt_value(r.baseline, d),
                    fmt_value(r.current, d),
                    fmt_change(r.change),
                    fmt_value(r.limit, d),
                    r.verdict.label().to_string(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        writeln!(
            f,
            "performance gate: {} ratios, tolerance {:.1}%",
            self.rows.len(),
            self.tolerance * 100.0
        )?;
        let write_row = |f: &mut fmt::Formatter<'_>, row: &[&str]| -> fmt::Result {
            // Names and words are left-aligned, numbers right-aligned, so
            // that decimal points line up.
            let line = format!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {:>w5$}  {:<w6$}",
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[6],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
                w5 = widths[5],
                w6 = widths[6],
            );
            writeln!(f, "{}", line.trim_end())
        };
        write_row(f, &header)?;
        for row in &cells {
            let refs: Vec<&str> = row.iter().map(String::as_str).collect();
            write_row(f, &refs)?;
        }
        if self.passed {
            write!(f, "gate: PASS")
        } else {
            let mut groups = Vec::new();
            for (verdict, word) in [
                (Verdict::Regressed, "regressed"),
                (Verdict::Missing, "missing"),
                (Verdict::Invalid, "invalid"),
            ] {
                let names: Vec<&str> = self
                    .rows
                    .iter()
                    .filter(|r| r.verdict == verdict)
                    .map(|r| r.name.as_str())
                    .collect();
                if !names.is_empty() {
                    groups.push(format!("{} {word}: {}", names.len(), names.join(", ")));
                }
            }
            write!(f, "gate: FAIL ({})", groups.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(value: f64, better: Better) -> Ratio {
        Ratio {
            noise: 1.0,
            value,
            better,
            description: String::new(),
        }
    }

    fn measured(ratios: &[(&str, f64, Better)]) -> Measured {
        Measured {
            ratios: ratios
                .iter()
                .map(|&(n, v, b)| (n.to_string(), ratio(v, b)))
                .collect(),
            absolutes: BTreeMap::from([("daemon_ops_per_sec".to_string(), 1.0e6)]),
        }
    }

    fn baseline() -> Baseline {
        Baseline::from_measured(
            &measured(&[
                ("daemon_vs_echo", 0.80, Better::Higher),
                ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
            ]),
            0.10,
            "test machine",
        )
    }

    fn row<'a>(r: &'a GateReport, name: &str) -> &'a GateRow {
        r.rows.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn equal_figures_pass() {
        let b = baseline();
        let m = Measured {
            ratios: b.ratios.clone(),
            absolutes: BTreeMap::new(),
        };
        let report = evaluate(&b, &m, b.tolerance);
        assert!(report.passed);
        assert!(report.rows.iter().all(|r| r.verdict == Verdict::Ok));
        assert_eq!(row(&report, "daemon_vs_echo").change, Some(0.0));
        assert!(report.to_string().ends_with("gate: PASS"));
    }

    #[test]
    fn regression_beyond_tolerance_fails_and_is_named() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.70, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
        ]);
        let report = evaluate(&b, &m, 0.10);
        assert!(!report.passed);
        let r = row(&report, "daemon_vs_echo");
        assert_eq!(r.verdict, Verdict::Regressed);
        assert!((r.limit.unwrap() - 0.72).abs() < 1e-12);
        assert!((r.change.unwrap() + 0.125).abs() < 1e-12);
        let text = report.to_string();
        assert!(
            text.ends_with("gate: FAIL (1 regressed: daemon_vs_echo)"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("daemon_vs_echo"))
            .unwrap();
        assert!(
            line.contains("REGRESSED") && line.contains("-12.5%"),
            "{line}"
        );
    }

    #[test]
    fn within_tolerance_passes() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.73, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.64, Better::Lower),
        ]);
        let report = evaluate(&b, &m, 0.10);
        assert!(report.passed, "{report}");
        assert!(report.rows.iter().all(|r| r.verdict == Verdict::Ok));
    }

    #[test]
    fn lower_ratio_rising_fails() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.80, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.70, Better::Lower),
        ]);
        let report = evaluate(&b, &m, 0.10);
        assert!(!report.passed);
        let r = row(&report, "cpu_ns_per_op_vs_inproc");
        assert_eq!(r.verdict, Verdict::Regressed);
        assert!((r.limit.unwrap() - 1.65).abs() < 1e-12);
        // The same ratio falling is an improvement, not a failure.
        let m = measured(&[
            ("daemon_vs_echo", 0.80, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.20, Better::Lower),
        ]);
        let report = evaluate(&b, &m, 0.10);
        assert!(report.passed);
        assert_eq!(
            row(&report, "cpu_ns_per_op_vs_inproc").verdict,
            Verdict::Improved
        );
    }

    #[test]
    fn a_noisy_ratio_gets_its_multiple_of_the_tolerance_and_no_more() {
        let mut b = baseline();
        b.ratios.get_mut("cpu_ns_per_op_vs_inproc").unwrap().noise = 2.0;
        let at = |v: f64| {
            let m = measured(&[
                ("daemon_vs_echo", 0.80, Better::Higher),
                ("cpu_ns_per_op_vs_inproc", v, Better::Lower),
            ]);
            evaluate(&b, &m, 0.10)
        };
        // 1.5 x (1 + 2 x 0.10) = 1.8: 1.7 fails the plain ratio, not this one.
        let r = at(1.70);
        assert!(r.passed);
        assert!((row(&r, "cpu_ns_per_op_vs_inproc").limit.unwrap() - 1.8).abs() < 1e-12);
        let r = at(1.85);
        assert!(!r.passed);
        assert_eq!(
            row(&r, "cpu_ns_per_op_vs_inproc").verdict,
            Verdict::Regressed
        );
        // The other ratios keep the plain tolerance.
        let m = measured(&[
            ("daemon_vs_echo", 0.70, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
        ]);
        assert!(!evaluate(&b, &m, 0.10).passed);
    }

    #[test]
    fn higher_ratio_rising_beyond_tolerance_is_an_improvement() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.95, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
        ]);
        let report = evaluate(&b, &m, 0.10);
        assert!(report.passed);
        assert_eq!(row(&report, "daemon_vs_echo").verdict, Verdict::Improved);
    }

    #[test]
    fn missing_ratio_fails() {
        let b = baseline();
        let m = measured(&[("daemon_vs_echo", 0.80, Better::Higher)]);
        let report = evaluate(&b, &m, 0.10);
        assert!(!report.passed);
        let r = row(&report, "cpu_ns_per_op_vs_inproc");
        assert_eq!(r.verdict, Verdict::Missing);
        assert_eq!(r.current, None);
        assert!(report
            .to_string()
            .ends_with("gate: FAIL (1 missing: cpu_ns_per_op_vs_inproc)"));
    }

    #[test]
    fn new_ratio_passes() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.80, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
            ("open_loop_p99_vs_echo", 3.0, Better::Lower),
        ]);
        let report = evaluate(&b, &m, 0.10);
        assert!(report.passed);
        let r = row(&report, "open_loop_p99_vs_echo");
        assert_eq!(r.verdict, Verdict::New);
        assert_eq!(r.baseline, None);
        assert_eq!(r.limit, None);
    }

    #[test]
    fn non_finite_measurement_fails() {
        let b = baseline();
        for bad in [f64::NAN, f64::INFINITY] {
            let m = measured(&[
                ("daemon_vs_echo", bad, Better::Higher),
                ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
                ("brand_new", bad, Better::Lower),
            ]);
            let report = evaluate(&b, &m, 0.10);
            assert!(!report.passed);
            assert_eq!(row(&report, "daemon_vs_echo").verdict, Verdict::Invalid);
            assert_eq!(row(&report, "brand_new").verdict, Verdict::Invalid);
            assert!(report
                .to_string()
                .contains("2 invalid: brand_new, daemon_vs_echo"));
        }
    }

    #[test]
    fn invalid_tolerance_is_strict_not_lenient() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.79, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
        ]);
        assert!(!evaluate(&b, &m, f64::NAN).passed);
        assert!(!evaluate(&b, &m, -0.5).passed);
        assert!(validate_tolerance(f64::NAN).is_err());
        assert!(validate_tolerance(0.1).is_ok());
    }

    #[test]
    fn table_columns_are_aligned() {
        let b = baseline();
        let m = measured(&[
            ("daemon_vs_echo", 0.70, Better::Higher),
            ("cpu_ns_per_op_vs_inproc", 1.50, Better::Lower),
        ]);
        let text = evaluate(&b, &m, 0.10).to_string();
        let lines: Vec<&str> = text.lines().collect();
        let header = lines[1];
        assert!(header.starts_with("name"), "{text}");
        // Each column's right edge for right-aligned numbers is the same on
        // every row: "current" ends where each current value ends.
        let end = header.find("current").unwrap() + "current".len();
        for line in &lines[2..4] {
            assert_eq!(&line[end..end + 2], "  ", "{text}");
            assert_ne!(&line[end - 1..end], " ", "{text}");
        }
    }

    #[test]
    fn baseline_round_trips_through_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        let mut b = baseline();
        b.ratios.get_mut("daemon_vs_echo").unwrap().description =
            "daemon ops/s over echo ops/s".to_string();
        b.ratios.get_mut("cpu_ns_per_op_vs_inproc").unwrap().noise = 2.0;
        b.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("}\n"));
        assert!(text.contains("\"better\": \"higher\""), "{text}");
        assert_eq!(Baseline::load(&path).unwrap(), b);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        let mut v = serde_json::to_value(baseline()).unwrap();
        v["tolerence"] = serde_json::json!(0.2);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = format!("{:#}", Baseline::load(&path).unwrap_err());
        assert!(err.contains("tolerence"), "{err}");
        assert!(err.contains("baseline.json"), "{err}");

        let mut v = serde_json::to_value(baseline()).unwrap();
        v["ratios"]["daemon_vs_echo"]["beter"] = serde_json::json!("lower");
        std::fs::write(&path, v.to_string()).unwrap();
        let err = format!("{:#}", Baseline::load(&path).unwrap_err());
        assert!(err.contains("beter"), "{err}");
    }

    #[test]
    fn other_schema_versions_and_bad_files_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        let mut v = serde_json::to_value(baseline()).unwrap();
        v["schema_version"] = serde_json::json!(2);
        v["something_new"] = serde_json::json!(true);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = format!("{:#}", Baseline::load(&path).unwrap_err());
        assert!(err.contains("schema_version 2"), "{err}");

        std::fs::write(&path, "{ not json").unwrap();
        let err = format!("{:#}", Baseline::load(&path).unwrap_err());
        assert!(err.contains("baseline.json"), "{err}");

        let missing = dir.path().join("absent.json");
        let err = format!("{:#}", Baseline::load(&missing).unwrap_err());
        assert!(err.contains("absent.json"), "{err}");
    }

    #[test]
    fn report_serializes_for_the_json_report() {
        let b = baseline();
        let m = measured(&[("daemon_vs_echo", 0.70, Better::Higher)]);
        let v = serde_json::to_value(evaluate(&b, &m, 0.10)).unwrap();
        assert_eq!(v["passed"], false);
        assert_eq!(v["rows"][1]["name"], "daemon_vs_echo");
        assert_eq!(v["rows"][1]["verdict"], "regressed");
        assert_eq!(v["rows"][1]["better"], "higher");
        assert_eq!(v["rows"][0]["verdict"], "missing");
    }
}
