//! Small line plots rendered to SVG: a few named series of `(x, y)` points, a linear
//! or logarithmic y-axis, axis labels, a legend below the chart and caption notes.
//!
//! Rendering uses `plotters` with only its SVG backend: text becomes SVG `<text>`
//! elements that the viewer draws with its own sans-serif font, and plotters lays text
//! out with its built-in size estimate, so no font file (system or bundled) is read.
//!
//! A logarithmic axis cannot show zero or negative values, and the numbers plotted here
//! are often exactly zero (every W2 distance at t = 0, an exact model to round-off).
//! Such values are not dropped silently: every value below the axis floor `lo` is drawn
//! on a dotted line one decade below it, each series' legend entry says how many of its
//! points sit there, and a caption note states the rule. `lo` is the smallest positive
//! value, but at least [`LOG_DYNAMIC_RANGE`] times the largest one.
//!
//! ```
//! use hasme::plot::{LinePlot, YAxis};
//!
//! let svg = LinePlot::new("W2 to SGD", "t", "W2")
//!     .y_axis(YAxis::Log)
//!     .series("sme1", vec![(0.0, 0.0), (1.0, 1e-2), (2.0, 3e-2)])
//!     .series("hasme", vec![(0.0, 0.0), (1.0, 1e-16), (2.0, 2e-16)])
//!     .to_svg()?;
//! assert!(svg.trim_start().starts_with("<svg"));
//! assert!(svg.contains("sme1") && svg.contains("hasme (1 at floor)"));
//! # Ok::<(), hasme::plot::PlotError>(())
//! ```

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// On a log axis, values below `LOG_DYNAMIC_RANGE × max` are drawn at the floor. Why
/// 1e−40: series of very different sizes share the axis (a model at round-off next to
/// one that is off by 1e15), so each must keep its own decades; beyond about 40 decades
/// the tick labels crowd and the axis stops being readable.
pub const LOG_DYNAMIC_RANGE: f64 = 1e-40;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// There is nothing to draw.
    #[error("the plot has no series with a finite point")]
    Empty,
    /// The drawing library failed.
    #[error("drawing the plot failed: {0}")]
    Draw(String),
}

/// The y-axis scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YAxis {
    /// Linear.
    #[default]
    Linear,
    /// Base-10 logarithmic; values below the floor are drawn at it (see the module
    /// documentation).
    Log,
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Vertical error bars `(low, high)`, one per point, or empty for none.
    pub error_bars: Vec<(f64, f64)>,
}

/// A line plot: build it, then render it with [`LinePlot::to_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct LinePlot {
    /// Title above the chart.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// Scale of the y-axis.
    pub y_axis: YAxis,
    /// Scale of the x-axis (the same two scales; default linear).
    pub x_axis: YAxis,
    /// The lines, drawn in order with distinct colours and dash patterns.
    pub series: Vec<Series>,
    /// Caption lines printed under the legend.
    pub notes: Vec<String>,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

/// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies).
const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Dash patterns `(dash, gap)` in pixels; `None` is solid. Coinciding lines (two exact
/// models) stay visible: later lines are dashed and thinner, so earlier ones show
/// through their gaps.
const DASHES: [Option<(u32, u32)>; 6] = [
    None,
    Some((12, 6)),
    Some((3, 4)),
    Some((16, 6)),
    Some((6, 6)),
    Some((2, 7)),
];

/// Line widths in pixels, by position: earlier lines are wider (see [`DASHES`]).
fn stroke_width(i: usize) -> u32 {
    if i < 2 { 3 } else { 2 }
}

/// The style of the i-th series.
fn line_style(i: usize) -> (ShapeStyle, Option<(u32, u32)>) {
    let style = ShapeStyle::from(&COLOURS[i % COLOURS.len()]).stroke_width(stroke_width(i));
    (style, DASHES[i % DASHES.len()])
}

/// The data after the axis rules: what is drawn, and what the legend and notes say.
/// On a log axis every y (and the range and floor) is already `log10(y)`: the chart is
/// drawn on linear coordinates with decade tick labels, which keeps the tick placement
/// under this module's control.
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    series: Vec<(String, Vec<(f64, f64)>)>,
    x_range: (f64, f64),
    y_range: (f64, f64),
    /// Where clamped values are drawn (log axis with clamped points only).
    floor: Option<f64>,
    notes: Vec<String>,
    log_y: bool,
    log_x: bool,
    /// Error bars per series: `(x, low, high)` in drawing coordinates.
    bars: Vec<Vec<(f64, f64, f64)>>,
}

impl LinePlot {
    /// An empty plot with a title and axis labels, linear axes, 900×600 pixels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LinePlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            y_axis: YAxis::Linear,
            x_axis: YAxis::Linear,
            series: Vec::new(),
            notes: Vec::new(),
            size: (900, 600),
        }
    }

    /// Sets the y-axis scale.
    pub fn y_axis(mut self, y_axis: YAxis) -> Self {
        self.y_axis = y_axis;
        self
    }

    /// Sets the x-axis scale. On a log x-axis, points with x ≤ 0 are omitted and counted
    /// in the legend.
    pub fn x_axis(mut self, x_axis: YAxis) -> Self {
        self.x_axis = x_axis;
        self
    }

    /// Adds a line.
    pub fn series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
            error_bars: Vec::new(),
        });
        self
    }

    /// Adds a line with vertical error bars `(low, high)`, one per point (a bar that is
    /// not finite is not drawn; on a log axis a low end below the floor is drawn at it).
    pub fn series_with_error_bars(
        mut self,
        name: impl Into<String>,
        points: Vec<(f64, f64)>,
        error_bars: Vec<(f64, f64)>,
    ) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
            error_bars,
        });
        self
    }

    /// Adds a caption line.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }

    /// Applies the axis rules: drops non-finite points (counted in the legend), clamps
    /// values under a log axis's floor, and computes the ranges.
    fn prepare(&self) -> Result<Prepared, PlotError> {
        let log_x = self.x_axis == YAxis::Log;
        let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_x || x > 0.0);
        let to_x = |x: f64| if log_x { x.log10() } else { x };
        // Error-bar ends widen the y-range like points do.
        let bar_ends = || {
            self.series.iter().flat_map(|s| {
                s.points
                    .iter()
                    .zip(&s.error_bars)
                    .filter(|(p, _)| finite(p))
                    .flat_map(|(_, &(lo, hi))| [lo, hi])
                    .filter(|v| v.is_finite())
            })
        };
        let all_y = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| p.1))
                .chain(bar_ends())
        };
        let all_x = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| to_x(p.0)))
        };
        let (x_min, x_max) = min_max(all_x()).ok_or(PlotError::Empty)?;
        let x_range = widen(x_min, x_max);
        let mut notes = Vec::new();
        let (y_range, lo) = match self.y_axis {
            YAxis::Linear => {
                let (lo, hi) = min_max(all_y()).ok_or(PlotError::Empty)?;
                let (lo, hi) = widen(lo, hi);
                let pad = 0.05 * (hi - lo);
                ((lo - pad, hi + pad), None)
            }
            YAxis::Log => {
                let positive = min_max(all_y().filter(|&y| y > 0.0));
                let (lo, hi) = match positive {
                    Some((min, max)) => (min.max(max * LOG_DYNAMIC_RANGE), max),
                    None => {
                        notes.push("Every value is 0: all points are drawn at the floor.".into());
                        (1e-16, 1.0)
                    }
                };
                let bottom = decade_below(lo);
                // A decade of headroom when the largest value sits near the top.
                let top = decade_above(hi);
                let top = if hi > 0.3 * top { top * 10.0 } else { top };
                let top = top.max(bottom * 10.0);
                ((bottom, top), Some(lo))
            }
        };
        let mut any_clamped = false;
        let mut series = Vec::new();
        let mut bars = Vec::new();
        let to_y = |y: f64| match lo {
            Some(lo) if y < lo => (y_range.0 / 10.0).log10(),
            Some(_) => y.log10(),
            None => y,
        };
        for s in &self.series {
            let mut points = Vec::with_capacity(s.points.len());
            let mut series_bars = Vec::new();
            let (mut clamped, mut dropped) = (0usize, 0usize);
            for (i, p) in s.points.iter().enumerate() {
                if !finite(p) {
                    dropped += 1;
                    continue;
                }
                if let Some(&(blo, bhi)) = s.error_bars.get(i)
                    && blo.is_finite()
                    && bhi.is_finite()
                {
                    series_bars.push((to_x(p.0), to_y(blo), to_y(bhi)));
                    any_clamped |= lo.is_some_and(|lo| blo < lo);
                }
                match lo {
                    Some(lo) if p.1 < lo => {
                        clamped += 1;
                        points.push((to_x(p.0), (y_range.0 / 10.0).log10()));
                    }
                    Some(_) => points.push((to_x(p.0), p.1.log10())),
                    None => points.push((to_x(p.0), p.1)),
                }
            }
            bars.push(series_bars);
            let mut name = s.name.clone();
            let mut extra = Vec::new();
            if clamped > 0 {
                extra.push(format!("{clamped} at floor"));
            }
            if dropped > 0 {
                extra.push(format!(
                    "{dropped} non-finite{} omitted",
                    if log_x { " or x ≤ 0" } else { "" }
                ));
            }
            if !extra.is_empty() {
                name = format!("{name} ({})", extra.join(", "));
            }
            any_clamped |= clamped > 0;
            series.push((name, points));
        }
        let (y_range, floor) = match lo {
            Some(lo) if any_clamped => {
                let floor = y_range.0 / 10.0;
                notes.insert(
                    0,
                    format!(
                        "Values below {lo:.1e} (exact zeros included) are drawn at {floor:.0e}, \
                         on the dotted line."
                    ),
                );
                let floor = floor.log10();
                ((floor - 0.3, y_range.1.log10()), Some(floor))
            }
            Some(_) => ((y_range.0.log10(), y_range.1.log10()), None),
            None => (y_range, None),
        };
        notes.extend(self.notes.iter().cloned());
        Ok(Prepared {
            series,
            x_range,
            y_range,
            floor,
            notes,
            log_y: lo.is_some(),
            log_x,
            bars,
        })
    }

    /// Renders the plot as an SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let prepared = self.prepare()?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size).into_drawing_area();
            draw(self, &prepared, &root).map_err(|e| PlotError::Draw(e.to_string()))?;
            root.present().map_err(|e| PlotError::Draw(e.to_string()))?;
        }
        Ok(svg)
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

const LEGEND_COLUMNS: usize = 3;
/// At most this many y tick labels (plotters thins them to fit).
const Y_LABELS: usize = 16;
const ROW: u32 = 22;

/// Draws title, axes, lines, legend and notes.
fn draw(plot: &LinePlot, p: &Prepared, root: &Area<'_>) -> DrawResult {
    root.fill(&WHITE)?;
    let legend_rows = p.series.len().div_ceil(LEGEND_COLUMNS) as u32;
    let bottom = ROW * (legend_rows + p.notes.len() as u32) + 16;
    let (width, height) = plot.size;
    let (chart_area, below) = root.split_vertically(height.saturating_sub(bottom));
    let mut builder = ChartBuilder::on(&chart_area);
    builder
        .caption(&plot.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size(84);
    let (x0, x1) = p.x_range;
    let (y0, y1) = p.y_range;

    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
    let decades = if p.log_y {
        (y1.floor() - y0.ceil()).max(0.0) as usize + 1
    } else {
        Y_LABELS
    };
    let log_label = |v: &f64| {
        // Labels only at whole decades (nice steps of 1, 2, 5… decades land on them).
        if (v - v.round()).abs() < 1e-9 {
            format!("1e{}", v.round() as i64)
        } else {
            String::new()
        }
    };
    // Ticks such as 0.1·3 land a rounding away from 0.3: print the shortest text that
    // rounds to the same value at 12 significant digits.
    let linear_label = |v: &f64| tick_text(*v);
    // A log x-axis (step sizes) spans a decade or two: label every tick with its value
    // to three significant digits.
    let log_x_label = |v: &f64| {
        let x = 10f64.powf(*v);
        if (1e-3..1e4).contains(&x) {
            let digits = (2 - x.log10().floor() as i32).max(0) as usize;
            let text = format!("{x:.digits$}");
            if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                text
            }
        } else {
            format!("{x:.2e}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(plot.x_label.as_str())
        .y_desc(plot.y_label.as_str())
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .y_labels(decades.min(Y_LABELS))
        .y_label_formatter(if p.log_y { &log_label } else { &linear_label })
        .x_label_formatter(if p.log_x { &log_x_label } else { &linear_label })
        .draw()?;
    if let Some(floor) = p.floor {
        chart.draw_series(DashedLineSeries::new(
            vec![(x0, floor), (x1, floor)],
            2,
            4,
            ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1),
        ))?;
    }
    // Error bars: a vertical segment with short caps (3% of the x-range wide).
    let cap = 0.015 * (x1 - x0);
    for (i, bars) in p.bars.iter().enumerate() {
        let (style, _) = line_style(i);
        let style = style.stroke_width(1);
        for &(x, lo, hi) in bars {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, lo), (x, hi)],
                style,
            )))?;
            for y in [lo, hi] {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(x - cap, y), (x + cap, y)],
                    style,
                )))?;
            }
        }
    }
    for (i, (_, points)) in p.series.iter().enumerate() {
        let (style, dashes) = line_style(i);
        match dashes {
            None => {
                chart.draw_series(LineSeries::new(points.iter().copied(), style))?;
            }
            Some((dash, gap)) => {
                chart.draw_series(DashedLineSeries::new(
                    points.iter().copied(),
                    dash,
                    gap,
                    style,
                ))?;
            }
        }
    }

    // Legend below the chart (never over the data), then the notes.
    let column = (width.saturating_sub(32) / LEGEND_COLUMNS as u32) as i32;
    let text = ("sans-serif", 16)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (name, _)) in p.series.iter().enumerate() {
        let x = 16 + column * (i % LEGEND_COLUMNS) as i32;
        let y = (ROW / 2 + ROW * (i / LEGEND_COLUMNS) as u32) as i32;
        let (style, dashes) = line_style(i);
        match dashes {
            None => below.draw(&PathElement::new(vec![(x, y), (x + 34, y)], style))?,
            Some((dash, gap)) => below.draw(&DashedPathElement::new(
                vec![(x, y), (x + 34, y)],
                dash,
                gap,
                style,
            ))?,
        }
        below.draw_text(name, &text, (x + 42, y))?;
    }
    let note_style = ("sans-serif", 14)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, note) in p.notes.iter().enumerate() {
        let y = (ROW / 2 + ROW * (legend_rows + i as u32)) as i32 + 6;
        below.draw_text(note, &note_style, (16, y))?;
    }
    Ok(())
}

/// Smallest and largest of finite values; `None` when there are none.
fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A non-empty interval: a single value `v` becomes `[v − 1, v + 1]` (scaled to `v`).
fn widen(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else {
        let half = if lo == 0.0 { 1.0 } else { 0.5 * lo.abs() };
        (lo - half, hi + half)
    }
}

/// The largest power of ten ≤ v (v > 0).
fn decade_below(v: f64) -> f64 {
    10f64.powf(v.log10().floor())
}

/// The smallest power of ten ≥ v (v > 0).
fn decade_above(v: f64) -> f64 {
    10f64.powf(v.log10().ceil())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_clamps_zeros_to_a_floor_and_says_so() {
        let plot = LinePlot::new("t", "x", "y")
            .y_axis(YAxis::Log)
            .series("a", vec![(0.0, 0.0), (1.0, 1e-3), (2.0, 1e-1)])
            .series("b", vec![(0.0, 0.0), (1.0, 0.0), (2.0, 1e-45)]);
        let p = plot.prepare().unwrap();
        // lo = max(1e-45, 0.1 · 1e-40) = 1e-41 → axis from 1e-41, floor 1e-42.
        assert_eq!(p.series[0].0, "a (1 at floor)");
        assert_eq!(p.series[1].0, "b (3 at floor)");
        let floor = p.floor.expect("clamped points");
        assert!((floor + 42.0).abs() < 1e-12, "{floor}"); // log10(1e-42)
        assert_eq!(p.series[1].1[2].1, floor);
        assert!((p.series[0].1[1].1 + 3.0).abs() < 1e-12); // log10(1e-3)
        assert!(p.y_range.0 < floor && p.y_range.1 >= -1.0);
        assert!(p.notes[0].contains("drawn at 1e-42"), "{:?}", p.notes);
    }

    #[test]
    fn log_axis_without_clamping_has_no_floor() {
        let plot = LinePlot::new("t", "x", "y")
            .y_axis(YAxis::Log)
            .series("a", vec![(0.0, 2e-3), (1.0, 5.0)]);
        let p = plot.prepare().unwrap();
        assert_eq!(p.floor, None);
        // 2e-3 → 1e-3 below; 5 sits near 10, so a decade of headroom: 100.
        assert_eq!(p.y_range, (-3.0, 2.0));
        assert_eq!(p.series[0].0, "a");
        assert!(p.notes.is_empty());
    }

    #[test]
    fn non_finite_points_are_dropped_and_counted() {
        let plot = LinePlot::new("t", "x", "y").series(
            "a",
            vec![
                (0.0, 1.0),
                (1.0, f64::NAN),
                (f64::INFINITY, 2.0),
                (2.0, 3.0),
            ],
        );
        let p = plot.prepare().unwrap();
        assert_eq!(p.series[0].0, "a (2 non-finite omitted)");
        assert_eq!(p.series[0].1.len(), 2);
        assert_eq!(p.x_range, (0.0, 2.0));
    }

    #[test]
    fn an_empty_plot_is_an_error() {
        assert!(matches!(
            LinePlot::new("t", "x", "y").to_svg(),
            Err(PlotError::Empty)
        ));
        let all_nan = LinePlot::new("t", "x", "y").series("a", vec![(f64::NAN, 1.0)]);
        assert!(matches!(all_nan.to_svg(), Err(PlotError::Empty)));
    }

    #[test]
    fn all_zero_log_plot_still_renders() {
        let svg = LinePlot::new("zeros", "x", "y")
            .y_axis(YAxis::Log)
            .series("z", vec![(0.0, 0.0), (1.0, 0.0)])
            .to_svg()
            .unwrap();
        assert!(svg.contains("Every value is 0"));
        assert!(svg.contains("z (2 at floor)"));
    }

    #[test]
    fn svg_has_title_labels_legend_and_notes_as_text() {
        let svg = LinePlot::new("My title", "time t", "distance")
            .series("first", vec![(0.0, 1.0), (1.0, 2.0)])
            .series("second", vec![(0.0, 2.0), (1.0, 1.0)])
            .note("a note")
            .to_svg()
            .unwrap();
        assert!(svg.trim_start().starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // plotters writes each text on its own line inside the element.
        for text in [
            "My title", "time t", "distance", "first", "second", "a note",
        ] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "missing {text}"
            );
        }
    }
}

/// A linear-axis tick value as short text: 12 significant digits, trailing zeros dropped
/// (`0.30000000000000004` → `0.3`, `1e-7` stays compact).
fn tick_text(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let rounded: f64 = format!("{v:.11e}").parse().unwrap_or(v);
    if (1e-4..1e6).contains(&rounded.abs()) {
        format!("{rounded}")
    } else {
        format!("{rounded:e}")
    }
}

#[cfg(test)]
mod tick_tests {
    use super::tick_text;

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick_text(0.1 * 3.0), "0.3");
        assert_eq!(tick_text(0.7999999999999999), "0.8");
        assert_eq!(tick_text(-0.0), "0");
        assert_eq!(tick_text(25.0), "25");
        assert_eq!(tick_text(1e-7), "1e-7");
        assert_eq!(tick_text(123456.0), "123456");
    }
}
