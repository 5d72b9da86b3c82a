//! Latency-by-percentile charts: the classic HdrHistogram plot, with the
//! percentile on a log scale of 1/(1-p) so that the tail (99.9%, 99.99%)
//! gets as much room as the body, and several runs compared on one chart.
//!
//! The SVG is written by hand. A plotting crate such as plotters lays out
//! text with system fonts, which minimal machines and CI containers lack; an
//! SVG names a generic font family and leaves text layout to the viewer.

use crate::report::{percentile_rows, read_hgrm};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One curve on the chart: a run's latency by percentile.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text, e.g. the run or file name.
    pub label: String,
    /// (percentile in 0..=1, latency in milliseconds) pairs, in increasing
    /// percentile order.
    pub points: Vec<(f64, f64)>,
}

/// The series of a nanosecond latency histogram: the same points that
/// `report::write_hgrm` writes, so a chart drawn from a run and one drawn
/// from its `.hgrm` file agree.
pub fn series_from_histogram(label: &str, h: &Histogram<u64>) -> Series {
    Series {
        label: label.to_string(),
        points: percentile_rows(h)
            .into_iter()
            .map(|row| (row.quantile, row.value_ns as f64 / 1e6))
            .collect(),
    }
}

/// Chart size and margins in SVG user units (pixels at 100%).
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 600.0;
const MARGIN_LEFT: f64 = 90.0;
const MARGIN_RIGHT: f64 = 40.0;
const MARGIN_TOP: f64 = 56.0;
const MARGIN_BOTTOM: f64 = 70.0;

/// The x axis always reaches at least 99.999% (five decades of 1/(1-p)),
/// so charts of runs of different lengths share a scale and the tail ticks
/// are always labelled.
const MIN_DECADES: u32 = 5;

/// How far beyond a series' last finite percentile its max (p = 1, where
/// 1/(1-p) is infinite) is drawn, in decades of 1/(1-p).
const MAX_OFFSET_DECADES: f64 = 0.2;

/// Line colours (the Tableau 10 palette): distinct from each other and
/// readable for most forms of colour blindness; series beyond ten reuse
/// them.
const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// Position of percentile `p` on the x axis, in decades of 1/(1-p): 0 at
/// 0%, 1 at 90%, 2 at 99%, and so on; infinite at p = 1.
fn percentile_position(p: f64) -> f64 {
    if p >= 1.0 {
        f64::INFINITY
    } else {
        (1.0 / (1.0 - p)).log10()
    }
}

/// The tick label of decade `d` of 1/(1-p): 0%, 90%, 99%, 99.9%, ...
fn decade_label(d: u32) -> String {
    match d {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        _ => format!("99.{}%", "9".repeat(d as usize - 2)),
    }
}

/// Escapes text for use in SVG element content and attribute values.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed
            // in XML 1.0 at all, escaped or not.
            c if c.is_control() && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) that divides `max`
/// into about `target` intervals.
fn nice_step(max: f64, target: f64) -> f64 {
    let raw = max / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let nice = if normalized <= 1.0 {
        1.0
    } else if normalized <= 2.0 {
        2.0
    } else if normalized <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Decimals needed to print multiples of `step` without rounding them
/// together.
fn step_decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        // The small offset keeps 0.1 (which is slightly off in binary) from
        // being taken for 0.0999... and given an extra decimal.
        (-(step.log10() + 1e-9).floor()).max(0.0) as usize
    }
}

/// A series made ready to draw: points sorted by percentile with the max
/// moved to a finite x position.
struct Prepared<'a> {
    label: &'a str,
    /// (x in decades, latency in ms).
    points: Vec<(f64, f64)>,
    /// The max point, when the series has one (p = 1).
    max_point: Option<(f64, f64)>,
}

/// Checks a series and places its points on the x axis.
fn prepare(s: &Series) -> anyhow::Result<Prepared<'_>> {
    if s.points.is_empty() {
        bail!("series `{}` has no points to plot", s.label);
    }
    let mut sorted = s.points.clone();
    for &(p, ms) in &sorted {
        if !(0.0..=1.0).contains(&p) || !ms.is_finite() || ms < 0.0 {
            bail!(
                "series `{}` has an invalid point (percentile {p}, latency {ms} ms): \
                 percentiles must lie in 0..=1 and latencies be finite and non-negative",
                s.label
            );
        }
    }
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let last_finite = sorted
        .iter()
        .filter(|(p, _)| *p < 1.0)
        .map(|(p, _)| percentile_position(*p))
        .fold(0.0_f64, f64::max);
    let max_x = last_finite + MAX_OFFSET_DECADES;
    let mut max_point = None;
    let points = sorted
        .iter()
        .map(|&(p, ms)| {
            if p >= 1.0 {
                max_point = Some((max_x, ms));
                (max_x, ms)
            } else {
                (percentile_position(p), ms)
            }
        })
        .collect();
    Ok(Prepared {
        label: &s.label,
        points,
        max_point,
    })
}

/// Renders the chart as SVG text.
fn render_svg(series: &[Series], title: &str) -> anyhow::Result<String> {
    if series.is_empty() {
        bail!("nothing to plot: no series given");
    }
    let prepared = series
        .iter()
        .map(prepare)
        .collect::<anyhow::Result<Vec<_>>>()?;

    // X range: whole decades, at least MIN_DECADES.
    let x_data_max = prepared
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max);
    let decades = (x_data_max.ceil() as u32).max(MIN_DECADES);

    // Y range and unit: microseconds when everything is below a
    // millisecond, so the tick labels are not all "0.0x".
    let y_data_max_ms = prepared
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max);
    let (unit, per_ms) = if y_data_max_ms < 1.0 {
        ("µs", 1000.0)
    } else {
        ("ms", 1.0)
    };
    let y_data_max = if y_data_max_ms > 0.0 {
        y_data_max_ms * per_ms
    } else {
        1.0
    };
    let step = nice_step(y_data_max, 6.0);
    let y_top = (y_data_max / step).ceil() * step;
    let decimals = step_decimals(step);

    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let px = |x: f64| MARGIN_LEFT + x / f64::from(decades) * plot_w;
    let py = |y_ms: f64| MARGIN_TOP + plot_h - (y_ms * per_ms) / y_top * plot_h;

    let mut svg = String::new();
    // Writing to a String cannot fail, so the fmt::Result values below are
    // ignored deliberately.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="32" text-anchor="middle" font-size="18">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(title)
    );

    // Grid and ticks, x: one per decade of 1/(1-p).
    let _ = writeln!(svg, r##"<g stroke="#dddddd" stroke-width="1">"##);
    for d in 0..=decades {
        let x = px(f64::from(d));
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.2}" y1="{MARGIN_TOP:.2}" x2="{x:.2}" y2="{:.2}"/>"#,
            MARGIN_TOP + plot_h
        );
    }
    let y_ticks = (y_top / step).round() as u32;
    for i in 0..=y_ticks {
        let y = MARGIN_TOP + plot_h - f64::from(i) * step / y_top * plot_h;
        let _ = writeln!(
            svg,
            r#"<line x1="{MARGIN_LEFT:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}"/>"#,
            MARGIN_LEFT + plot_w
        );
    }
    let _ = writeln!(svg, "</g>");

    // Tick labels.
    let _ = writeln!(svg, r##"<g fill="#333333">"##);
    for d in 0..=decades {
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
            px(f64::from(d)),
            MARGIN_TOP + plot_h + 18.0,
            decade_label(d)
        );
    }
    for i in 0..=y_ticks {
        let value = f64::from(i) * step;
        let y = MARGIN_TOP + plot_h - value / y_top * plot_h;
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{value:.decimals$}</text>"#,
            MARGIN_LEFT - 8.0,
            y + 4.0
        );
    }
    let _ = writeln!(svg, "</g>");

    // Frame and axis titles.
    let _ = writeln!(
        svg,
        r##"<rect x="{MARGIN_LEFT:.2}" y="{MARGIN_TOP:.2}" width="{plot_w:.2}" height="{plot_h:.2}" fill="none" stroke="#333333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="14">Percentile</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 22.0
    );
    let label_x = 24.0;
    let label_y = MARGIN_TOP + plot_h / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="{label_x:.2}" y="{label_y:.2}" text-anchor="middle" font-size="14" transform="rotate(-90 {label_x:.2} {label_y:.2})">Latency ({unit})</text>"#
    );

    // The curves, each with a marker on its max.
    for (i, s) in prepared.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let mut coords = String::new();
        for (j, &(x, ms)) in s.points.iter().enumerate() {
            if j > 0 {
                coords.push(' ');
            }
            let _ = write!(coords, "{:.2},{:.2}", px(x), py(ms));
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" points="{coords}"><title>{}</title></polyline>"#,
            xml_escape(s.label)
        );
        if let Some((x, ms)) = s.max_point {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.2}" cy="{:.2}" r="4" fill="{colour}"><title>{} max {:.3} {unit}</title></circle>"#,
                px(x),
                py(ms),
                xml_escape(s.label),
                ms * per_ms
            );
        }
    }

    // Legend in the top-left corner, where latency-by-percentile curves
    // are lowest and the box hides the least.
    let row_h = 20.0;
    let longest = prepared
        .iter()
        .map(|s| s.label.chars().count())
        .max()
        .unwrap_or(0);
    let legend_w = 48.0 + 7.0 * longest as f64;
    let legend_h = 10.0 + row_h * prepared.len() as f64;
    let lx = MARGIN_LEFT + 12.0;
    let ly = MARGIN_TOP + 12.0;
    let _ = writeln!(
        svg,
        r##"<rect x="{lx:.2}" y="{ly:.2}" width="{legend_w:.2}" height="{legend_h:.2}" fill="white" fill-opacity="0.9" stroke="#bbbbbb"/>"##
    );
    for (i, s) in prepared.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let y = ly + 5.0 + row_h * (i as f64 + 0.5);
        let _ = writeln!(
            svg,
            r#"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{colour}" stroke-width="3"/>"#,
            lx + 8.0,
            lx + 32.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}">{}</text>"#,
            lx + 40.0,
            y + 4.0,
            xml_escape(s.label)
        );
    }

    svg.push_str("</svg>\n");
    Ok(svg)
}

/// Writes the latency-by-percentile chart of `series` as SVG to `path`.
/// Only SVG is produced: a `.png` path is refused with advice on converting
/// the SVG, rather than silently writing SVG bytes under a PNG name.
pub fn write_svg(series: &[Series], title: &str, path: &Path) -> anyhow::Result<()> {
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if is_png {
        bail!(
            "{}: only SVG charts are written; write to a .svg file and convert it with \
             `rsvg-convert -o chart.png chart.svg` (Debian package librsvg2-bin)",
            path.display()
        );
    }
    let svg = render_svg(series, title)?;
    std::fs::write(path, svg).with_context(|| format!("writing the chart to {}", path.display()))
}

/// Plots `.hgrm` files on one chart (one series per file, labelled with
/// the file name without its extension): `kms-loadgen plot a.hgrm b.hgrm
/// --out cmp.svg`.
pub fn plot_files(inputs: &[PathBuf], out: &Path, title: &str) -> anyhow::Result<()> {
    if inputs.is_empty() {
        bail!("no .hgrm files given to plot");
    }
    let mut series = Vec::with_capacity(inputs.len());
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let points = read_hgrm(&text).with_context(|| format!("parsing {}", path.display()))?;
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        series.push(Series { label, points });
    }
    write_svg(&series, title, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::write_hgrm;
    use crate::run::RunResult;

    fn histogram(scale_ns: u64) -> Histogram<u64> {
        let mut h = RunResult::new_histogram();
        for i in 0..20_000u64 {
            h.record(scale_ns + (i * 7919) % scale_ns).unwrap();
        }
        h.record(scale_ns * 40).unwrap();
        h
    }

    fn polylines(svg: &str) -> usize {
        svg.matches("<polyline").count()
    }

    /// The (x, y) pixel pairs of the n-th polyline.
    fn polyline_points(svg: &str, n: usize) -> Vec<(f64, f64)> {
        let start = svg.match_indices("<polyline").nth(n).unwrap().0;
        let rest = &svg[start..];
        let attr = rest.find("points=\"").unwrap() + "points=\"".len();
        let end = rest[attr..].find('"').unwrap();
        rest[attr..attr + end]
            .split(' ')
            .map(|xy| {
                let (x, y) = xy.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn svg_has_one_polyline_per_series_with_legend_and_ticks() {
        let series = vec![
            series_from_histogram("baseline", &histogram(50_000)),
            series_from_histogram("candidate", &histogram(80_000)),
            series_from_histogram("echo", &histogram(10_000)),
        ];
        let svg = render_svg(&series, "kmsd latency").unwrap();
        assert!(svg.starts_with("<svg "));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(polylines(&svg), 3);
        assert_eq!(svg.matches("<svg").count(), 1);
        for label in ["baseline", "candidate", "echo", "kmsd latency"] {
            assert!(svg.contains(&format!(">{label}<")), "no {label}");
        }
        for tick in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"] {
            assert!(svg.contains(&format!(">{tick}</text>")), "no tick {tick}");
        }
        assert!(svg.contains("Percentile"));
        // 3.2 ms max: milliseconds, not microseconds.
        assert!(svg.contains("Latency (ms)"));
        // Distinct colours for the three curves.
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]) && svg.contains(PALETTE[2]));
    }

    #[test]
    fn svg_escapes_labels_and_title() {
        let series = vec![Series {
            label: "a<b & \"c\"".to_string(),
            points: vec![(0.0, 0.1), (0.5, 0.2), (1.0, 0.3)],
        }];
        let svg = render_svg(&series, "x < y & z").unwrap();
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot;"));
        assert!(svg.contains("x &lt; y &amp; z"));
        assert!(!svg.contains("a<b"));
        // Sub-millisecond data is labelled in microseconds.
        assert!(svg.contains("Latency (µs)"));
    }

    #[test]
    fn points_map_monotonically_and_the_max_stays_on_the_chart() {
        let series = vec![series_from_histogram("run", &histogram(50_000))];
        let svg = render_svg(&series, "t").unwrap();
        let pts = polyline_points(&svg, 0);
        assert_eq!(pts.len(), series[0].points.len());
        for pair in pts.windows(2) {
            assert!(pair[0].0 < pair[1].0, "x not increasing: {pair:?}");
            // SVG y grows downwards; latency never falls with percentile.
            assert!(pair[0].1 >= pair[1].1, "latency falls: {pair:?}");
        }
        for &(x, y) in &pts {
            assert!(x.is_finite() && y.is_finite());
            assert!((MARGIN_LEFT..=WIDTH - MARGIN_RIGHT).contains(&x), "x {x}");
            assert!((MARGIN_TOP..=HEIGHT - MARGIN_BOTTOM).contains(&y), "y {y}");
        }
        assert!(svg.contains("<circle"), "the max is marked");
    }

    #[test]
    fn percentile_position_is_monotone_with_decade_ticks() {
        assert_eq!(percentile_position(0.0), 0.0);
        assert!((percentile_position(0.9) - 1.0).abs() < 1e-9);
        assert!((percentile_position(0.999) - 3.0).abs() < 1e-9);
        assert!(percentile_position(1.0).is_infinite());
        let ps = [0.0, 0.1, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 0.99999];
        for pair in ps.windows(2) {
            assert!(percentile_position(pair[0]) < percentile_position(pair[1]));
        }
        assert_eq!(decade_label(0), "0%");
        assert_eq!(decade_label(1), "90%");
        assert_eq!(decade_label(5), "99.999%");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(3.2, 6.0), 1.0);
        assert_eq!(nice_step(2.9, 6.0), 0.5);
        assert_eq!(nice_step(700.0, 6.0), 200.0);
        assert_eq!(step_decimals(0.5), 1);
        assert_eq!(step_decimals(nice_step(0.6, 6.0)), 1);
        assert_eq!(step_decimals(0.05), 2);
        assert_eq!(step_decimals(20.0), 0);
    }

    #[test]
    fn invalid_series_are_refused() {
        assert!(render_svg(&[], "t").is_err());
        let empty = Series {
            label: "e".to_string(),
            points: vec![],
        };
        assert!(render_svg(&[empty], "t").is_err());
        let bad = Series {
            label: "b".to_string(),
            points: vec![(0.5, f64::NAN)],
        };
        assert!(render_svg(&[bad], "t").is_err());
    }

    #[test]
    fn png_output_is_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.PNG");
        let series = vec![series_from_histogram("run", &histogram(50_000))];
        let err = write_svg(&series, "t", &path).unwrap_err().to_string();
        assert!(err.contains("rsvg-convert"), "{err}");
        assert!(err.contains("librsvg2-bin"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn plot_files_reads_hgrm_files_and_labels_them_by_stem() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for (name, scale) in [("before", 50_000), ("after", 40_000)] {
            let path = dir.path().join(format!("{name}.hgrm"));
            let mut f = std::fs::File::create(&path).unwrap();
            write_hgrm(&histogram(scale), &mut f).unwrap();
            inputs.push(path);
        }
        let out = dir.path().join("cmp.svg");
        plot_files(&inputs, &out, "before vs after").unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        assert_eq!(polylines(&svg), 2);
        assert!(svg.contains(">before<") && svg.contains(">after<"));

        let missing = dir.path().join("nope.hgrm");
        let err = plot_files(&[missing], &out, "t").unwrap_err();
        assert!(format!("{err:#}").contains("nope.hgrm"), "{err:#}");
    }
}
