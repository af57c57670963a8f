//! Plots of an evaluation, each as SVG and PNG: containers over time per policy, P95 E2E
//! latency over time against the SLA, and bars of containers (normalised to `hpa-cpu`) and
//! window violation rates (the paper's Figs. 12, 14, 16, 17); and the trade-off curves of
//! `derm tradeoff` (containers against window violations).
//!
//! Text is drawn with DejaVu Sans embedded by the `dejavu` crate and registered with
//! plotters' `ab_glyph` backend, so PNGs render the same on any machine, with no system
//! fonts or fontconfig.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::Error;
use super::eval::Evaluation;
use super::run::Point;
use super::tradeoff;

const SIZE: (u32, u32) = (960, 540);
const FONT: &str = "sans-serif";

static FONT_ONCE: Once = Once::new();

fn register_font() {
    FONT_ONCE.call_once(|| {
        // The embedded file is a valid TrueType font; a failure would only lose text.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
        RGBColor(0xe3, 0x77, 0xc2),
        RGBColor(0x7f, 0x7f, 0x7f),
    ];
    PALETTE[i % PALETTE.len()]
}

type Draw<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    order: &[String],
    series: &BTreeMap<String, Vec<Point>>,
    value: impl Fn(&Point) -> f64,
    sla: Option<f64>,
) -> Draw<DB> {
    area.fill(&WHITE)?;
    let x_max = series.values().flat_map(|s| s.last()).map(|p| p.start_s / 60.0).fold(1.0, f64::max);
    let mut y_max = series.values().flatten().map(&value).fold(1.0, f64::max);
    if let Some(s) = sla {
        // Keep the SLA line readable when a policy's tail explodes.
        y_max = y_max.min(4.0 * s).max(1.3 * s);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.05)?;
    chart
        .configure_mesh()
        .x_desc("time (min)")
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, name) in order.iter().enumerate() {
        let Some(points) = series.get(name) else {
            continue;
        };
        let c = colour(i);
        let data: Vec<(f64, f64)> = points.iter().map(|p| (p.start_s / 60.0, value(p).min(y_max * 1.05))).collect();
        chart
            .draw_series(LineSeries::new(data, c.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    let reference = sla.map(|s| ([(0.0, s), (x_max, s)], format!("SLA {s} ms")));
    reference_and_legend(&mut chart, reference)?;
    area.present()
}

/// A thin black reference line (`from`, `to`) with its legend entry, then the legend box.
fn reference_and_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    reference: Option<([(f64, f64); 2], String)>,
) -> Draw<DB> {
    if let Some((ends, label)) = reference {
        chart
            .draw_series(LineSeries::new(ends, BLACK.stroke_width(1)))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
}

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    names: &[String],
    values: &[f64],
    limit: Option<f64>,
) -> Draw<DB> {
    let y_max = values.iter().copied().fold(limit.unwrap_or(0.0), f64::max).max(1e-9) * 1.15;
    let n = names.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..n as f64, 0.0..y_max)?;
    let labels = names.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |x| {
            let k = (x - 0.5).round();
            if (x - 0.5 - k).abs() < 1e-6 && k >= 0.0 {
                labels.get(k as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .label_style((FONT, 11))
        .draw()?;
    chart.draw_series(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], colour(i).filled())),
    )?;
    chart.draw_series(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Text::new(format!("{v:.2}"), (i as f64 + 0.3, *v + y_max * 0.02), (FONT, 13).into_font())),
    )?;
    if let Some(l) = limit {
        chart.draw_series(LineSeries::new(vec![(0.0, l), (n as f64, l)], BLACK.stroke_width(1)))?;
    }
    Ok(())
}

fn summary<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, eval: &Evaluation) -> Draw<DB> {
    area.fill(&WHITE)?;
    let r = &eval.report;
    let names: Vec<String> = r.order.iter().filter(|n| r.policies.contains_key(*n)).cloned().collect();
    let hpa = r.policies.get("hpa-cpu").map(|p| p.summary.mean_containers).filter(|h| *h > 0.0);
    let containers: Vec<f64> =
        names.iter().map(|n| r.policies[n].summary.mean_containers / hpa.unwrap_or(1.0)).collect();
    let violations: Vec<f64> = names.iter().map(|n| 100.0 * r.policies[n].summary.window_violation_rate).collect();
    let (left, right) = area.split_horizontally(SIZE.0 / 2);
    let title = if hpa.is_some() { "containers (normalised to hpa-cpu)" } else { "mean containers" };
    bars(&left, title, &names, &containers, hpa.map(|_| 1.0))?;
    bars(&right, "windows with P95 > SLA (%)", &names, &violations, Some(5.0))?;
    area.present()
}

/// The three figures.
#[derive(Debug, Clone, Copy)]
enum Chart {
    Containers,
    P95,
    Summary,
}

fn draw<DB: DrawingBackend>(chart: Chart, area: &DrawingArea<DB, Shift>, eval: &Evaluation) -> Draw<DB> {
    let r = &eval.report;
    match chart {
        Chart::Containers => {
            let title = format!("{}: containers over time", r.scenario);
            lines(area, &title, "containers", &r.order, &eval.series, |p| p.containers, None)
        }
        Chart::P95 => {
            let title = format!("{}: P95 E2E latency per {} s window", r.scenario, r.interval_s);
            lines(area, &title, "P95 latency (ms)", &r.order, &eval.series, |p| p.p95_ms, Some(r.sla_ms))
        }
        Chart::Summary => summary(area, eval),
    }
}

/// Draws one figure on any backend (SVG and PNG share the code).
trait Figure {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Draw<DB>;
}

impl Figure for (Chart, &Evaluation) {
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Draw<DB> {
        draw(self.0, area, self.1)
    }
}

fn both(dir: &Path, stem: &str, figure: &impl Figure) -> Result<Vec<PathBuf>, Error> {
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let fail = |path: &Path, e: String| Error::Plot { path: path.to_owned(), detail: e };
    {
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        figure.draw(&root).map_err(|e| fail(&svg, e.to_string()))?;
    }
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        figure.draw(&root).map_err(|e| fail(&png, e.to_string()))?;
    }
    Ok(vec![svg, png])
}

/// Write `containers`, `p95` and `summary` as SVG and PNG into `dir`; returns the paths.
pub fn write_all(dir: &Path, eval: &Evaluation) -> Result<Vec<PathBuf>, Error> {
    register_font();
    let mut out = Vec::new();
    out.extend(both(dir, "containers", &(Chart::Containers, eval))?);
    out.extend(both(dir, "p95", &(Chart::P95, eval))?);
    out.extend(both(dir, "summary", &(Chart::Summary, eval))?);
    Ok(out)
}

impl Figure for tradeoff::Report {
    /// One line per policy through its knob values (labelled), the goal as a vertical line.
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Draw<DB> {
        area.fill(&WHITE)?;
        let x_max = self.points.iter().map(|p| 100.0 * p.window_violation_rate).fold(100.0 * self.goal, f64::max);
        let y_max = self.points.iter().map(|p| p.mean_containers).fold(1.0, f64::max);
        // The curves' own range: from zero they would sit in a thin band at the top.
        let y_min = self.points.iter().map(|p| p.mean_containers).fold(y_max, f64::min) * 0.9;
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        let title = format!("{}: containers against window violations (seeds {})", self.scenario, seeds.join(", "));
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max * 1.08 + 0.5, y_min..y_max * 1.08)?;
        chart
            .configure_mesh()
            .x_desc("windows with P95 > SLA (%)")
            .y_desc("mean containers")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        // With one tail margin, one line per policy through its knob values. With several, a
        // policy's points form a cloud: its line is the frontier (no other of its points has
        // fewer containers at no more violations), labelled `headroom/margin`.
        let margins = self.points.iter().filter_map(|p| p.tail_margin.map(f64::to_bits)).collect::<BTreeSet<_>>().len();
        for (i, name) in self.order.iter().enumerate() {
            let c = colour(i);
            let points: Vec<&tradeoff::Point> = self.points.iter().filter(|p| &p.policy == name).collect();
            let xy = |p: &tradeoff::Point| (100.0 * p.window_violation_rate, p.mean_containers);
            let line: Vec<&tradeoff::Point> = if margins > 1 { tradeoff::frontier(&points) } else { points.clone() };
            let label = |p: &tradeoff::Point| match p.tail_margin {
                Some(m) if margins > 1 => format!("{}/{m}", p.value),
                _ => format!("{}", p.value),
            };
            chart
                .draw_series(LineSeries::new(line.iter().map(|p| xy(p)), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            chart.draw_series(points.iter().map(|p| Circle::new(xy(p), 2, c.mix(0.5))))?;
            chart.draw_series(line.iter().map(|p| Circle::new(xy(p), 3, c.filled())))?;
            // Beside the marker, so that a value's minus sign is not drawn under it.
            chart
                .draw_series(line.iter().map(|p| {
                    EmptyElement::at(xy(p)) + Text::new(label(p), (5, -13), (FONT, 11).into_font().color(&c))
                }))?;
        }
        let goal = 100.0 * self.goal;
        reference_and_legend(&mut chart, Some(([(goal, y_min), (goal, y_max * 1.08)], format!("goal {goal}%"))))?;
        area.present()
    }
}

/// Write `tradeoff` as SVG and PNG into `dir`; returns the paths.
pub fn write_tradeoff(dir: &Path, report: &tradeoff::Report) -> Result<Vec<PathBuf>, Error> {
    register_font();
    both(dir, "tradeoff", report)
}
