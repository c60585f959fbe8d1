//! `--plot FILE.svg`: throughput and latency against clients as an SVG chart, with figures
//! another system measured in the same run (anchors: openraft, etcd) beside ours, and the
//! ratio of our throughput to theirs.
//!
//! The chart has up to three panels side by side: throughput (ops/s) against clients, the
//! latency percentiles (p50 solid with filled markers, p99 dashed with hollow markers, when
//! any series has them), and our throughput over each anchor's (when anchors are given and
//! share client counts with ours). Clients and latencies are on log scales.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

/// One measured row, as the run made it or as `--json` printed it (`--rows`).
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub(crate) struct Measured {
    /// The scenario: rows of one scenario at several client counts make a series.
    pub(crate) scenario: String,
    /// Concurrent clients (0 for scenarios without clients, which are not plotted).
    pub(crate) clients: usize,
    /// Operations per second.
    #[serde(alias = "writes_per_sec")]
    pub(crate) ops_per_sec: f64,
    /// Median latency, µs.
    #[serde(default)]
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    #[serde(default)]
    pub(crate) p99_us: Option<f64>,
}

/// The figures of one series at one client count.
#[derive(Clone, Copy, Debug, PartialEq, serde::Deserialize)]
pub(crate) struct Point {
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Operations per second.
    #[serde(alias = "writes_per_sec")]
    pub(crate) ops_per_sec: f64,
    /// Median latency, µs, when measured.
    #[serde(default)]
    pub(crate) p50_us: Option<f64>,
    /// 99th percentile latency, µs, when measured.
    #[serde(default)]
    pub(crate) p99_us: Option<f64>,
    /// For an anchor: our throughput over this point's as measured pair by pair in the
    /// same run (the median of per-run ratios, which a load that changes between runs
    /// distorts less than the ratio of two medians). The ratio panel draws it instead of
    /// dividing the two figures.
    #[serde(default)]
    pub(crate) ours_over: Option<f64>,
}

/// A named line on the chart: points in increasing client order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) points: Vec<Point>,
}

/// A chart that cannot be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlotError {
    /// `--anchor` without a name or a file.
    #[error("--anchor takes NAME=FILE, not {0:?}")]
    AnchorSpec(String),
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An input file is not the JSON expected.
    #[error("{path} is not {expected}: {source}")]
    Parse {
        path: PathBuf,
        expected: &'static str,
        source: serde_json::Error,
    },
    /// A point that cannot be drawn (no clients, a figure not positive and finite, two
    /// points at one client count).
    #[error("series {series:?}: {reason}")]
    BadPoint { series: String, reason: String },
    /// An anchor gives paired ratios (`ours_over`) but there is more than one series of
    /// ours they could belong to.
    #[error(
        "anchor {anchor:?} gives ours_over, but there are {ours} series of ours: plot one (--rows)"
    )]
    AmbiguousRatio { anchor: String, ours: usize },
    /// No scenario was measured at two or more client counts, and no anchor was given.
    #[error("nothing to plot: no scenario was measured at two or more client counts")]
    Nothing,
    /// The drawing library failed.
    #[error("drawing the chart failed: {0}")]
    Draw(String),
    /// The SVG file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Width and height of one panel, in pixels.
pub(crate) const PANEL: (u32, u32) = (560, 440);

/// Series colors, in series order: ours first, then the anchors, then the ratios.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// The color of the series at `index` (ours, then anchors, then ratios).
pub(crate) fn color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Our series: the scenarios measured at two or more client counts, in the order they
/// first appear, each with its points in increasing client order.
pub(crate) fn sweeps(rows: &[Measured]) -> Result<Vec<Series>, PlotError> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_scenario: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.clients > 0) {
        if !by_scenario.contains_key(row.scenario.as_str()) {
            order.push(&row.scenario);
        }
        // A latency of 0 is a row that measured none.
        let positive = |v: Option<f64>| v.filter(|v| *v > 0.0);
        by_scenario.entry(&row.scenario).or_default().push(Point {
            clients: row.clients,
            ops_per_sec: row.ops_per_sec,
            p50_us: positive(row.p50_us),
            p99_us: positive(row.p99_us),
            ours_over: None,
        });
    }
    let mut series = Vec::new();
    for name in order {
        let mut points = by_scenario.remove(name).unwrap_or_default();
        points.sort_by_key(|p| p.clients);
        let s = Series {
            name: name.to_string(),
            points,
        };
        check(&s)?;
        if s.points.len() >= 2 {
            series.push(s);
        }
    }
    Ok(series)
}

/// Reads an anchor given as `NAME=FILE`: FILE holds a JSON list of points
/// (`{"clients": 16, "ops_per_sec": 3100.0, "p50_us": 4800.0, "p99_us": 9100.0}`, the
/// latencies optional).
pub(crate) fn anchor(spec: &str) -> Result<Series, PlotError> {
    let (name, file) = spec
        .split_once('=')
        .filter(|(name, file)| !name.is_empty() && !file.is_empty())
        .ok_or_else(|| PlotError::AnchorSpec(spec.to_string()))?;
    let path = Path::new(file);
    let mut points: Vec<Point> = parse(
        path,
        "a JSON list of {clients, ops_per_sec, p50_us?, p99_us?}",
    )?;
    points.sort_by_key(|p| p.clients);
    let series = Series {
        name: name.to_string(),
        points,
    };
    check(&series)?;
    Ok(series)
}

/// Reads rows that `raft-bench --json` printed.
pub(crate) fn rows(path: &Path) -> Result<Vec<Measured>, PlotError> {
    parse(path, "the JSON list of rows that raft-bench --json prints")
}

fn parse<T: serde::de::DeserializeOwned>(
    path: &Path,
    expected: &'static str,
) -> Result<T, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlotError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| PlotError::Parse {
        path: path.to_path_buf(),
        expected,
        source,
    })
}

/// Every point has clients, positive finite figures, and a client count of its own.
fn check(series: &Series) -> Result<(), PlotError> {
    let bad = |reason: String| PlotError::BadPoint {
        series: series.name.clone(),
        reason,
    };
    if series.points.is_empty() {
        return Err(bad("no points".into()));
    }
    for (i, p) in series.points.iter().enumerate() {
        if p.clients == 0 {
            return Err(bad(
                "a point at 0 clients (the clients axis is logarithmic)".into(),
            ));
        }
        let figures = [
            ("ops/s", Some(p.ops_per_sec)),
            ("p50", p.p50_us),
            ("p99", p.p99_us),
            ("ours_over", p.ours_over),
        ];
        for (what, value) in figures {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0)
            {
                return Err(bad(format!("{what} at {} clients is {v}", p.clients)));
            }
        }
        if i > 0 && series.points[i - 1].clients == p.clients {
            return Err(bad(format!("two points at {} clients", p.clients)));
        }
    }
    Ok(())
}

/// Ours over each anchor's throughput at the client counts both measured, named
/// `OURS / ANCHOR`: the anchor's paired ratio (`ours_over`) where it gives one, else the
/// quotient of the two figures.
fn ratios(ours: &[Series], anchors: &[Series]) -> Result<Vec<Series>, PlotError> {
    let mut out = Vec::new();
    for them in anchors {
        let paired = them.points.iter().any(|q| q.ours_over.is_some());
        if paired && ours.len() > 1 {
            return Err(PlotError::AmbiguousRatio {
                anchor: them.name.clone(),
                ours: ours.len(),
            });
        }
        for us in ours {
            let points: Vec<Point> = us
                .points
                .iter()
                .filter_map(|p| {
                    let q = them.points.iter().find(|q| q.clients == p.clients)?;
                    Some(Point {
                        clients: p.clients,
                        ops_per_sec: q.ours_over.unwrap_or(p.ops_per_sec / q.ops_per_sec),
                        p50_us: None,
                        p99_us: None,
                        ours_over: None,
                    })
                })
                .collect();
            if !points.is_empty() {
                let how = if paired { " (paired runs)" } else { "" };
                out.push(Series {
                    name: format!("{} / {}{how}", us.name, them.name),
                    points,
                });
            }
        }
    }
    Ok(out)
}

/// Draws the chart of our series and the anchors' as an SVG document.
pub(crate) fn svg(ours: &[Series], anchors: &[Series]) -> Result<String, PlotError> {
    let all: Vec<&Series> = ours.iter().chain(anchors).collect();
    if ours.is_empty() && anchors.is_empty() {
        return Err(PlotError::Nothing);
    }
    for s in &all {
        check(s)?;
    }
    let ratios = ratios(ours, anchors)?;
    let with_latency = all
        .iter()
        .flat_map(|s| &s.points)
        .any(|p| p.p50_us.is_some() || p.p99_us.is_some());
    let panels = 1 + usize::from(with_latency) + usize::from(!ratios.is_empty());
    let mut out = String::new();
    {
        let width = PANEL.0 * panels as u32;
        let root = SVGBackend::with_string(&mut out, (width, PANEL.1)).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        let areas = root.split_evenly((1, panels));
        let clients = clients_range(&all);
        throughput_panel(&areas[0], &all, clients.clone())?;
        if with_latency {
            latency_panel(&areas[1], &all, clients.clone())?;
        }
        if !ratios.is_empty() {
            ratio_panel(&areas[panels - 1], &ratios, all.len(), clients)?;
        }
        root.present().map_err(draw)?;
    }
    Ok(out)
}

/// Draws the chart into `path`.
pub(crate) fn write(path: &Path, ours: &[Series], anchors: &[Series]) -> Result<(), PlotError> {
    let svg = svg(ours, anchors)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn draw<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Draw(e.to_string())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The clients axis: every series' client counts, with room for the markers.
fn clients_range(all: &[&Series]) -> std::ops::Range<f64> {
    let counts = all.iter().flat_map(|s| &s.points).map(|p| p.clients as f64);
    let (lo, hi) = counts.fold((f64::MAX, 0.0f64), |(lo, hi), c| (lo.min(c), hi.max(c)));
    (lo / 1.5)..(hi * 1.5)
}

fn clients_label(c: &f64) -> String {
    format!("{c:.0}")
}

/// 1234567 as "1.23M", 12500 as "12.5k", 500000 as "500k".
fn si(v: &f64) -> String {
    let v = *v;
    let (scaled, unit) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = format!("{scaled:.2}");
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("{digits}{unit}")
}

fn marker(at: (f64, f64), c: RGBColor, filled: bool) -> Circle<(f64, f64), u32> {
    let style = if filled {
        c.filled()
    } else {
        c.stroke_width(2)
    };
    Circle::new(at, 4, style)
}

fn throughput_panel(
    area: &Area<'_>,
    all: &[&Series],
    clients: std::ops::Range<f64>,
) -> Result<(), PlotError> {
    let top = all
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.ops_per_sec)
        .fold(0.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("throughput", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(clients.log_scale(), 0.0..top * 1.15)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_desc("clients (log scale)")
        .y_desc("ops/s")
        .x_label_formatter(&clients_label)
        .y_label_formatter(&si)
        .draw()
        .map_err(draw)?;
    for (i, s) in all.iter().enumerate() {
        let c = color(i);
        let line = s.points.iter().map(|p| (p.clients as f64, p.ops_per_sec));
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(draw)?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        chart
            .draw_series(line.map(|at| marker(at, c, true)))
            .map_err(draw)?;
    }
    legend(&mut chart)
}

fn latency_panel(
    area: &Area<'_>,
    all: &[&Series],
    clients: std::ops::Range<f64>,
) -> Result<(), PlotError> {
    let latencies = all
        .iter()
        .flat_map(|s| &s.points)
        .flat_map(|p| [p.p50_us, p.p99_us])
        .flatten();
    let (lo, hi) = latencies.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut chart = ChartBuilder::on(area)
        .caption("latency: p50 solid, p99 dashed", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(clients.log_scale(), ((lo / 1.5)..(hi * 1.5)).log_scale())
        .map_err(draw)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_desc("clients (log scale)")
        .y_desc("µs (log scale)")
        .x_label_formatter(&clients_label)
        .y_label_formatter(&si)
        .draw()
        .map_err(draw)?;
    for (i, s) in all.iter().enumerate() {
        let c = color(i);
        let p50: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|p| Some((p.clients as f64, p.p50_us?)))
            .collect();
        let p99: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter_map(|p| Some((p.clients as f64, p.p99_us?)))
            .collect();
        if !p50.is_empty() {
            chart
                .draw_series(LineSeries::new(p50.iter().copied(), c.stroke_width(2)))
                .map_err(draw)?
                .label(format!("{} p50", s.name))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            chart
                .draw_series(p50.iter().map(|&at| marker(at, c, true)))
                .map_err(draw)?;
        }
        if !p99.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(
                    p99.iter().copied(),
                    8,
                    5,
                    c.stroke_width(2),
                ))
                .map_err(draw)?
                .label(format!("{} p99", s.name))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.stroke_width(2))
                });
            chart
                .draw_series(p99.iter().map(|&at| marker(at, c, false)))
                .map_err(draw)?;
        }
    }
    legend(&mut chart)
}

fn ratio_panel(
    area: &Area<'_>,
    ratios: &[Series],
    first_color: usize,
    clients: std::ops::Range<f64>,
) -> Result<(), PlotError> {
    let top = ratios
        .iter()
        .flat_map(|s| &s.points)
        .map(|p| p.ops_per_sec)
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("throughput ratio", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(clients.clone().log_scale(), 0.0..top * 1.2)
        .map_err(draw)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_desc("clients (log scale)")
        .y_desc("ours / theirs (×)")
        .x_label_formatter(&clients_label)
        .y_label_formatter(&|v| format!("{v:.1}×"))
        .draw()
        .map_err(draw)?;
    // Parity.
    chart
        .draw_series(LineSeries::new(
            [(clients.start, 1.0), (clients.end, 1.0)],
            BLACK.mix(0.5).stroke_width(1),
        ))
        .map_err(draw)?;
    for (i, s) in ratios.iter().enumerate() {
        let c = color(first_color + i);
        let line = s.points.iter().map(|p| (p.clients as f64, p.ops_per_sec));
        chart
            .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
            .map_err(draw)?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        chart
            .draw_series(line.map(|at| marker(at, c, true)))
            .map_err(draw)?;
    }
    legend(&mut chart)
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> Result<(), PlotError>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(clients: usize, ops: f64, p50: Option<f64>, p99: Option<f64>) -> Point {
        Point {
            clients,
            ops_per_sec: ops,
            p50_us: p50,
            p99_us: p99,
            ours_over: None,
        }
    }

    fn ours() -> Series {
        Series {
            name: "in-process".into(),
            points: vec![
                point(1, 150_000.0, Some(6.0), Some(15.0)),
                point(16, 700_000.0, Some(21.0), Some(80.0)),
                point(64, 1_400_000.0, Some(44.0), Some(190.0)),
                point(256, 1_900_000.0, Some(130.0), Some(600.0)),
                point(1024, 2_200_000.0, Some(450.0), Some(2_100.0)),
            ],
        }
    }

    fn theirs() -> Series {
        Series {
            name: "openraft".into(),
            points: vec![
                point(1, 70_000.0, Some(13.0), Some(30.0)),
                point(16, 320_000.0, Some(48.0), Some(150.0)),
                point(64, 600_000.0, Some(100.0), Some(420.0)),
                point(256, 800_000.0, Some(310.0), Some(1_300.0)),
                point(1024, 840_000.0, Some(1_200.0), Some(5_000.0)),
            ],
        }
    }

    /// A marker the SVG draws: center, and its color as fill or stroke.
    #[derive(Debug)]
    struct Marker {
        x: f64,
        y: f64,
        color: String,
        filled: bool,
    }

    fn attr<'a>(element: &'a str, name: &str) -> Option<&'a str> {
        let start = element.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = element[start..].find('"')?;
        Some(&element[start..start + len])
    }

    fn markers(svg: &str) -> Vec<Marker> {
        svg.split("<circle")
            .skip(1)
            .map(|rest| {
                let element = &rest[..rest.find("/>").expect("a closed circle")];
                let fill = attr(element, "fill").expect("fill");
                let stroke = attr(element, "stroke").expect("stroke");
                Marker {
                    x: attr(element, "cx").expect("cx").parse().expect("cx number"),
                    y: attr(element, "cy").expect("cy").parse().expect("cy number"),
                    color: if fill == "none" { stroke } else { fill }.to_string(),
                    filled: fill != "none",
                }
            })
            .collect()
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The markers of the series at `index` in panel `panel`, filled or hollow, left to
    /// right, with x relative to the panel.
    fn of(all: &[Marker], index: usize, panel: usize, filled: bool) -> Vec<(f64, f64)> {
        let left = (PANEL.0 as usize * panel) as f64;
        let mut found: Vec<(f64, f64)> = all
            .iter()
            .filter(|m| m.color == hex(color(index)) && m.filled == filled)
            .filter(|m| m.x >= left && m.x < left + PANEL.0 as f64)
            .map(|m| (m.x - left, m.y))
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        found
    }

    /// Fits `pixel = a + b * value` by least squares; returns `b` and the largest
    /// distance of a pixel from the line.
    fn fit(pairs: &[(f64, f64)]) -> (f64, f64) {
        let n = pairs.len() as f64;
        let (mv, mp) = (
            pairs.iter().map(|p| p.0).sum::<f64>() / n,
            pairs.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let b = pairs.iter().map(|p| (p.0 - mv) * (p.1 - mp)).sum::<f64>()
            / pairs.iter().map(|p| (p.0 - mv).powi(2)).sum::<f64>();
        let a = mp - b * mv;
        let worst = pairs
            .iter()
            .map(|p| (p.1 - (a + b * p.0)).abs())
            .fold(0.0, f64::max);
        (b, worst)
    }

    /// A series' markers in a panel: its index (so its color), filled or hollow, and the
    /// figures they show, by client count.
    type Expected = (usize, bool, Vec<(usize, f64)>);

    /// Every marker of every listed series sits where its figure maps to: x on one log
    /// scale of clients, y on one scale (linear or log) of the figure, within the pixel
    /// rounding; and each series has exactly one marker per figure.
    fn assert_on_scales(svg_markers: &[Marker], panel: usize, series: &[Expected], log_y: bool) {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for (index, filled, figures) in series {
            let drawn = of(svg_markers, *index, panel, *filled);
            assert_eq!(
                drawn.len(),
                figures.len(),
                "panel {panel}, series {index} (filled {filled}): markers {drawn:?} for figures {figures:?}"
            );
            for (&(x, y), &(clients, value)) in drawn.iter().zip(figures) {
                xs.push(((clients as f64).ln(), x));
                ys.push((if log_y { value.ln() } else { value }, y));
            }
        }
        let (bx, worst_x) = fit(&xs);
        let (by, worst_y) = fit(&ys);
        assert!(
            bx > 0.0,
            "panel {panel}: more clients must be further right"
        );
        assert!(by < 0.0, "panel {panel}: a larger figure must be higher up");
        assert!(
            worst_x <= 1.0,
            "panel {panel}: a marker is {worst_x} px off the clients scale"
        );
        assert!(
            worst_y <= 1.0,
            "panel {panel}: a marker is {worst_y} px off the figure's scale"
        );
    }

    fn figures(s: &Series, f: impl Fn(&Point) -> Option<f64>) -> Vec<(usize, f64)> {
        s.points
            .iter()
            .filter_map(|p| Some((p.clients, f(p)?)))
            .collect()
    }

    #[test]
    fn draws_every_series_point_on_its_scales_with_its_name() {
        let (us, them) = (ours(), theirs());
        let svg = svg(std::slice::from_ref(&us), std::slice::from_ref(&them)).expect("svg");
        let m = markers(&svg);
        let ops = |p: &Point| Some(p.ops_per_sec);
        // Throughput: ours is series 0, openraft series 1.
        assert_on_scales(
            &m,
            0,
            &[(0, true, figures(&us, ops)), (1, true, figures(&them, ops))],
            false,
        );
        // Latency: p50 filled, p99 hollow, on a log scale.
        let p50 = |p: &Point| p.p50_us;
        let p99 = |p: &Point| p.p99_us;
        assert_on_scales(
            &m,
            1,
            &[
                (0, true, figures(&us, p50)),
                (0, false, figures(&us, p99)),
                (1, true, figures(&them, p50)),
                (1, false, figures(&them, p99)),
            ],
            true,
        );
        // Ratio: series 2, ours over theirs at each client count.
        let ratio: Vec<(usize, f64)> = us
            .points
            .iter()
            .zip(&them.points)
            .map(|(a, b)| (a.clients, a.ops_per_sec / b.ops_per_sec))
            .collect();
        assert_on_scales(&m, 2, &[(2, true, ratio)], false);
        for name in [
            ">\nin-process\n</text>",
            ">\nopenraft\n</text>",
            ">\nin-process p50\n</text>",
            ">\nopenraft p99\n</text>",
            ">\nin-process / openraft\n</text>",
        ] {
            assert!(svg.contains(name), "no label {name:?} in the SVG");
        }
        // Three panels side by side.
        assert!(svg.contains(&format!("width=\"{}\"", PANEL.0 * 3)));
    }

    #[test]
    fn throughput_alone_draws_one_panel() {
        let mut us = ours();
        for p in &mut us.points {
            p.p50_us = None;
            p.p99_us = None;
        }
        let svg = svg(std::slice::from_ref(&us), &[]).expect("svg");
        let m = markers(&svg);
        assert_on_scales(
            &m,
            0,
            &[(0, true, figures(&us, |p| Some(p.ops_per_sec)))],
            false,
        );
        assert_eq!(m.len(), us.points.len(), "markers beyond the throughput's");
        assert!(svg.contains(&format!("width=\"{}\"", PANEL.0)));
    }

    fn row(scenario: &str, clients: usize, ops: f64) -> Measured {
        Measured {
            scenario: scenario.into(),
            clients,
            ops_per_sec: ops,
            p50_us: Some(10.0),
            p99_us: Some(0.0),
        }
    }

    #[test]
    fn paired_ratios_are_drawn_as_given() {
        let us = ours();
        let mut them = theirs();
        let paired = [2.6, 1.9, 2.2, 2.5, 2.7];
        for (p, r) in them.points.iter_mut().zip(paired) {
            p.ours_over = Some(r);
        }
        let drawn = svg(std::slice::from_ref(&us), std::slice::from_ref(&them)).expect("svg");
        let expected: Vec<(usize, f64)> =
            them.points.iter().map(|p| p.clients).zip(paired).collect();
        assert_on_scales(&markers(&drawn), 2, &[(2, true, expected)], false);
        assert!(drawn.contains(">\nin-process / openraft (paired runs)\n</text>"));
        // Two series of ours: whose ratios they are is not known.
        let mut other = ours();
        other.name = "tcp".into();
        assert!(matches!(
            svg(&[us, other], &[them]),
            Err(PlotError::AmbiguousRatio { ours: 2, .. })
        ));
    }

    #[test]
    fn axis_labels_are_short() {
        let labels: Vec<String> = [0.0, 12.0, 500_000.0, 12_500.0, 1_234_567.0, 2_500_000.0]
            .iter()
            .map(si)
            .collect();
        assert_eq!(labels, ["0", "12", "500k", "12.5k", "1.23M", "2.5M"]);
    }

    #[test]
    fn sweeps_keep_scenarios_measured_at_several_client_counts() {
        let rows = [
            row("tcp", 64, 200.0),
            row("election", 0, 0.0),
            row("durable", 1, 5.0),
            row("tcp", 1, 100.0),
        ];
        let series = sweeps(&rows).expect("sweeps");
        assert_eq!(series.len(), 1, "{series:?}");
        assert_eq!(series[0].name, "tcp");
        let clients: Vec<usize> = series[0].points.iter().map(|p| p.clients).collect();
        assert_eq!(clients, [1, 64]);
        // A p99 of 0 measured nothing: it is left out rather than drawn at 0.
        assert_eq!(series[0].points[0].p99_us, None);
        assert_eq!(series[0].points[0].p50_us, Some(10.0));
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good.json");
        std::fs::write(
            &good,
            r#"[{"clients": 16, "ops_per_sec": 3100, "p50_us": 4800, "p99_us": 9100},
                {"clients": 1, "writes_per_sec": 900}]"#,
        )
        .expect("write");
        let series = anchor(&format!("etcd={}", good.display())).expect("anchor");
        assert_eq!(series.name, "etcd");
        assert_eq!(
            series.points,
            [
                point(1, 900.0, None, None),
                point(16, 3100.0, Some(4800.0), Some(9100.0))
            ]
        );

        assert!(matches!(anchor("etcd"), Err(PlotError::AnchorSpec(_))));
        assert!(matches!(anchor("=x.json"), Err(PlotError::AnchorSpec(_))));
        let missing = dir.path().join("missing.json");
        assert!(matches!(
            anchor(&format!("etcd={}", missing.display())),
            Err(PlotError::Read { .. })
        ));
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "clients ops\n1 900\n").expect("write");
        assert!(matches!(
            anchor(&format!("etcd={}", garbage.display())),
            Err(PlotError::Parse { .. })
        ));
        for body in [
            r#"[{"clients": 0, "ops_per_sec": 1}]"#,
            r#"[{"clients": 1, "ops_per_sec": -1}]"#,
            r#"[{"clients": 1, "ops_per_sec": 5, "p99_us": 0}]"#,
            r#"[{"clients": 1, "ops_per_sec": 5, "ours_over": -2}]"#,
            r#"[{"clients": 1, "ops_per_sec": 5}, {"clients": 1, "ops_per_sec": 6}]"#,
            r#"[]"#,
        ] {
            std::fs::write(&garbage, body).expect("write");
            assert!(
                matches!(
                    anchor(&format!("etcd={}", garbage.display())),
                    Err(PlotError::BadPoint { .. })
                ),
                "{body} was taken"
            );
        }
        assert!(matches!(svg(&[], &[]), Err(PlotError::Nothing)));
        let nan = Series {
            name: "x".into(),
            points: vec![point(1, f64::NAN, None, None)],
        };
        assert!(matches!(svg(&[nan], &[]), Err(PlotError::BadPoint { .. })));
    }
}
