//! Small line plots rendered to SVG: a few named series of `(x, y)` points, linear or
//! logarithmic axes, axis labels, a legend below the chart and caption notes.
//!
//! The plots are made to read as a reader expects: a marker at every measured point
//! (its own shape per series, open for a point the analysis left out), x ticks where
//! the data were taken when the caller gives them (the step sizes of a run), error bars
//! only where both ends exist on the axis, step functions drawn as steps with a mark at
//! every jump, reference lines (slope guides) grey and labelled on the chart rather
//! than in the legend, and a legend laid out in as many columns as its names allow.
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

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeriesKind {
    /// Measured values: a line through the points and a marker at every point.
    #[default]
    Measured,
    /// A right-continuous step function such as a survival curve: the first point is
    /// where the curve starts (not marked); every later point `(t_i, value after the
    /// jump)` is a measured jump, marked; the last value runs on to the right edge.
    Steps,
    /// A reference line (a slope guide): thin, grey and dotted, without markers,
    /// labelled on the chart beside its left end instead of in the legend.
    Guide,
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Vertical error bars `(low, high)`, one per point, or empty for none. A bar with
    /// a non-finite end is not drawn, nor on a log axis one whose low end is ≤ 0 (a
    /// confidence interval that reaches 0 has no place on that axis).
    pub error_bars: Vec<(f64, f64)>,
    /// How the series is drawn.
    pub kind: SeriesKind,
    /// Points drawn with an open marker (e.g. estimates not resolved from their noise),
    /// one flag per point, or empty for none.
    pub open: Vec<bool>,
}

impl Series {
    /// A series of measured points (markers at every point, no error bars).
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            error_bars: Vec::new(),
            kind: SeriesKind::Measured,
            open: Vec::new(),
        }
    }

    /// Sets how the series is drawn.
    pub fn kind(mut self, kind: SeriesKind) -> Series {
        self.kind = kind;
        self
    }

    /// Sets the error bars `(low, high)`, one per point.
    pub fn error_bars(mut self, error_bars: Vec<(f64, f64)>) -> Series {
        self.error_bars = error_bars;
        self
    }

    /// Sets which points get an open marker, one flag per point.
    pub fn open(mut self, open: Vec<bool>) -> Series {
        self.open = open;
        self
    }
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
    /// Tick positions on the x-axis, in data units (e.g. the step sizes of a run), or
    /// `None` for evenly spaced ones (decades on a log axis).
    pub x_ticks: Option<Vec<f64>>,
    /// The x-range shown, in data units, or `None` for the range of the points.
    /// Points outside it are not drawn.
    pub x_limits: Option<(f64, f64)>,
    /// The lines, drawn in order with distinct colours, dash patterns and markers.
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

/// The colour of guides: grey, so they never read as data.
const GUIDE: RGBColor = RGBColor(110, 110, 110);

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

/// Marker outlines, as vertices around the centre in units of the marker's radius:
/// circle, square, triangle, diamond, inverted triangle, hexagon. A shape per series
/// keeps coinciding points apart where colour alone would not.
fn marker_shape(i: usize) -> Vec<(f64, f64)> {
    let polygon = |n: usize, turn: f64, r: f64| -> Vec<(f64, f64)> {
        (0..n)
            .map(|k| {
                let a = std::f64::consts::TAU * (k as f64 / n as f64 + turn);
                (r * a.cos(), r * a.sin())
            })
            .collect()
    };
    match i % 6 {
        0 => polygon(16, 0.0, 1.0),
        1 => polygon(4, 0.125, 1.2),
        2 => polygon(3, 0.75, 1.35),
        3 => polygon(4, 0.0, 1.3),
        4 => polygon(3, 0.25, 1.35),
        _ => polygon(6, 0.0, 1.15),
    }
}

/// Marker radius in pixels: smaller when a series has many points, so a dense series
/// stays a line with marks rather than a smear.
fn marker_radius(points: usize) -> f64 {
    match points {
        0..=40 => 4.5,
        41..=120 => 3.0,
        _ => 2.2,
    }
}

/// Line widths in pixels, by position: earlier lines are wider (see [`DASHES`]).
fn stroke_width(i: usize) -> u32 {
    if i < 2 { 3 } else { 2 }
}

/// The style of the i-th (non-guide) series.
fn line_style(i: usize) -> (ShapeStyle, Option<(u32, u32)>) {
    let style = ShapeStyle::from(&COLOURS[i % COLOURS.len()]).stroke_width(stroke_width(i));
    (style, DASHES[i % DASHES.len()])
}

/// One series after the axis rules, in drawing coordinates.
#[derive(Debug, Clone, PartialEq)]
struct PreparedSeries {
    /// Legend text (with the counts of clamped and omitted points).
    name: String,
    points: Vec<(f64, f64)>,
    /// Open-marker flag per kept point.
    open: Vec<bool>,
    /// Error bars `(x, low, high)`.
    bars: Vec<(f64, f64, f64)>,
    kind: SeriesKind,
    /// Colour, dash and marker index (guides do not use one up).
    style: usize,
}

/// The data after the axis rules: what is drawn, and what the legend and notes say.
/// On a log axis every coordinate (and the range, ticks and floor) is already
/// `log10(v)`: the chart is drawn on linear coordinates with decade tick labels, which
/// keeps the tick placement under this module's control.
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    series: Vec<PreparedSeries>,
    x_range: (f64, f64),
    y_range: (f64, f64),
    /// Labelled x ticks, and light grid lines between them.
    x_ticks: Vec<f64>,
    x_light: Vec<f64>,
    /// Where clamped values are drawn (log axis with clamped points only).
    floor: Option<f64>,
    notes: Vec<String>,
    log_y: bool,
    log_x: bool,
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
            x_ticks: None,
            x_limits: None,
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

    /// Puts the x-axis ticks at these values (those inside the range; on a log axis,
    /// the positive ones), each labelled with its value.
    pub fn x_ticks(mut self, ticks: Vec<f64>) -> Self {
        self.x_ticks = Some(ticks);
        self
    }

    /// Shows the x-range `[low, high]` instead of the points' range.
    pub fn x_limits(mut self, low: f64, high: f64) -> Self {
        self.x_limits = Some((low, high));
        self
    }

    /// Adds a series built with [`Series::new`].
    pub fn with(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Adds a line of measured points (a marker at every point).
    pub fn series(self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.with(Series::new(name, points))
    }

    /// Adds measured points with vertical error bars `(low, high)`, one per point (see
    /// [`Series::error_bars`] for the bars that are not drawn; on a log axis a positive
    /// low end below the floor is drawn at it).
    pub fn series_with_error_bars(
        self,
        name: impl Into<String>,
        points: Vec<(f64, f64)>,
        error_bars: Vec<(f64, f64)>,
    ) -> Self {
        self.with(Series::new(name, points).error_bars(error_bars))
    }

    /// Adds a step function (see [`SeriesKind::Steps`]).
    pub fn step_series(self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.with(Series::new(name, points).kind(SeriesKind::Steps))
    }

    /// Adds a reference line (see [`SeriesKind::Guide`]).
    pub fn guide(self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.with(Series::new(name, points).kind(SeriesKind::Guide))
    }

    /// Adds a caption line.
    pub fn note(mut self, text: impl Into<String>) -> Self {
        self.notes.push(text.into());
        self
    }

    /// Applies the axis rules: drops non-finite points (counted in the legend) and
    /// points outside the x-limits, clamps values under a log axis's floor, and
    /// computes the ranges and ticks.
    fn prepare(&self) -> Result<Prepared, PlotError> {
        let log_x = self.x_axis == YAxis::Log;
        let limits = self
            .x_limits
            .filter(|&(a, b)| a.is_finite() && b.is_finite() && b > a && (!log_x || a > 0.0));
        let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_x || x > 0.0);
        let inside = |&(x, _): &(f64, f64)| limits.is_none_or(|(a, b)| (a..=b).contains(&x));
        let to_x = |x: f64| if log_x { x.log10() } else { x };
        let shown = |p: &(f64, f64)| finite(p) && inside(p);
        // Error-bar ends widen the y-range like points do.
        let bar_ends = || {
            self.series.iter().flat_map(|s| {
                s.points
                    .iter()
                    .zip(&s.error_bars)
                    .filter(|(p, _)| shown(p))
                    .flat_map(|(_, &(lo, hi))| [lo, hi])
                    .filter(|v| v.is_finite())
            })
        };
        let all_y = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().filter(|p| shown(p)).map(|p| p.1))
                .chain(bar_ends())
        };
        let x_range = match limits {
            Some((a, b)) => (to_x(a), to_x(b)),
            None => {
                let all_x = self
                    .series
                    .iter()
                    .flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| to_x(p.0)));
                let (x_min, x_max) = min_max(all_x).ok_or(PlotError::Empty)?;
                widen(x_min, x_max)
            }
        };
        let mut notes = Vec::new();
        let (y_range, lo) = match self.y_axis {
            YAxis::Linear => {
                let (lo, hi) = min_max(all_y()).ok_or(PlotError::Empty)?;
                let (lo, hi) = widen(lo, hi);
                let pad = 0.05 * (hi - lo);
                ((lo - pad, hi + pad), None)
            }
            YAxis::Log => {
                min_max(all_y()).ok_or(PlotError::Empty)?;
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
        let to_y = |y: f64| match lo {
            Some(lo) if y < lo => (y_range.0 / 10.0).log10(),
            Some(_) => y.log10(),
            None => y,
        };
        let mut style = 0;
        for s in &self.series {
            let mut points = Vec::with_capacity(s.points.len());
            let mut open = Vec::with_capacity(s.points.len());
            let mut bars = Vec::new();
            let (mut clamped, mut dropped) = (0usize, 0usize);
            for (i, p) in s.points.iter().enumerate() {
                if !finite(p) {
                    dropped += 1;
                    continue;
                }
                if !inside(p) {
                    continue;
                }
                if let Some(&(blo, bhi)) = s.error_bars.get(i)
                    && blo.is_finite()
                    && bhi.is_finite()
                    && (lo.is_none() || blo > 0.0)
                {
                    bars.push((to_x(p.0), to_y(blo), to_y(bhi)));
                    any_clamped |= lo.is_some_and(|lo| blo < lo);
                }
                if lo.is_some_and(|lo| p.1 < lo) {
                    clamped += 1;
                }
                points.push((to_x(p.0), to_y(p.1)));
                open.push(s.open.get(i).copied().unwrap_or(false));
            }
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
            series.push(PreparedSeries {
                name,
                points,
                open,
                bars,
                kind: s.kind,
                style,
            });
            if s.kind != SeriesKind::Guide {
                style += 1;
            }
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
        let (x_ticks, x_light) = match &self.x_ticks {
            Some(ticks) => {
                let mut t: Vec<f64> = ticks
                    .iter()
                    .filter(|&&x| x.is_finite() && (!log_x || x > 0.0))
                    .map(|&x| to_x(x))
                    .filter(|x| (x_range.0 - 1e-9..=x_range.1 + 1e-9).contains(x))
                    .collect();
                t.sort_by(f64::total_cmp);
                t.dedup();
                (t, Vec::new())
            }
            None if log_x => log_ticks(x_range),
            None => linear_ticks(x_range),
        };
        notes.extend(self.notes.iter().cloned());
        Ok(Prepared {
            series,
            x_range,
            y_range,
            x_ticks,
            x_light,
            floor,
            notes,
            log_y: lo.is_some(),
            log_x,
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

/// Evenly spaced ticks at a step of 1, 2 or 5 times a power of ten (about 6–12 of
/// them), and light grid lines at a fifth of the step.
fn linear_ticks((a, b): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    let raw = (b - a) / 8.0;
    let decade = decade_below(raw);
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * decade);
    let at = |step: f64| -> Vec<f64> {
        let first = (a / step - 1e-9).ceil() as i64;
        let last = (b / step + 1e-9).floor() as i64;
        (first..=last).map(|k| k as f64 * step).collect()
    };
    (at(step), at(step / 5.0))
}

/// Ticks on a log axis (coordinates are `log10`): every decade inside the range, or
/// 1, 2 and 5 times each decade when the range spans less than two; light lines at
/// 2…9 times each decade.
fn log_ticks((a, b): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    let decades = (a.floor() as i64)..=(b.ceil() as i64);
    let within = |v: &f64| (a - 1e-9..=b + 1e-9).contains(v);
    let marks: &[f64] = if b - a < 2.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let ticks = decades
        .clone()
        .flat_map(|d| marks.iter().map(move |m| d as f64 + m.log10()))
        .filter(within)
        .collect();
    let light = decades
        .flat_map(|d| (2..10).map(move |m| d as f64 + (m as f64).log10()))
        .filter(within)
        .collect();
    (ticks, light)
}

/// A linear axis whose ticks (and light grid lines) are given, not chosen by plotters.
struct TickedAxis {
    inner: plotters::coord::types::RangedCoordf64,
    ticks: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// At most this many legend columns.
const LEGEND_COLUMNS: usize = 6;
/// At most this many y tick labels (plotters thins them to fit).
const Y_LABELS: usize = 16;
const ROW: u32 = 22;
/// Legend text size, and the width of a swatch with its gap to the text.
const LEGEND_FONT: u32 = 16;
const SWATCH: i32 = 42;

/// Columns of the legend: as many entries side by side as fit the width, given the
/// longest name (its width estimated at 0.5 em per character, which holds for the
/// names and digits drawn here in a sans-serif font).
fn legend_columns(width: u32, names: &[&str]) -> usize {
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let column = SWATCH as f64 + 0.5 * LEGEND_FONT as f64 * longest as f64 + 24.0;
    let fit = ((width.saturating_sub(32)) as f64 / column).floor() as usize;
    fit.clamp(1, LEGEND_COLUMNS).min(names.len().max(1))
}

/// Draws a marker of series `style` centred on the pixel `(x, y)`.
fn draw_marker(
    area: &Area<'_>,
    (x, y): (i32, i32),
    style: usize,
    radius: f64,
    open: bool,
) -> DrawResult {
    let colour = COLOURS[style % COLOURS.len()];
    let outline: Vec<(i32, i32)> = marker_shape(style)
        .into_iter()
        .map(|(dx, dy)| {
            (
                x + (radius * dx).round() as i32,
                y + (radius * dy).round() as i32,
            )
        })
        .collect();
    if open {
        // Unfilled, so that an open marker never hides another series' marker beneath.
        let mut closed = outline;
        closed.push(closed[0]);
        area.draw(&PathElement::new(closed, colour.stroke_width(2)))
    } else {
        area.draw(&Polygon::new(outline, colour.filled()))
    }
}

/// Draws a line of `style` through pixel points (solid or dashed).
fn draw_line(area: &Area<'_>, points: Vec<(i32, i32)>, style: usize) -> DrawResult {
    let (line, dashes) = line_style(style);
    match dashes {
        None => area.draw(&PathElement::new(points, line)),
        Some((dash, gap)) => area.draw(&DashedPathElement::new(points, dash, gap, line)),
    }
}

/// Draws title, axes, lines, markers, guides, legend and notes.
fn draw(plot: &LinePlot, p: &Prepared, root: &Area<'_>) -> DrawResult {
    root.fill(&WHITE)?;
    let names: Vec<&str> = p
        .series
        .iter()
        .filter(|s| s.kind != SeriesKind::Guide)
        .map(|s| s.name.as_str())
        .collect();
    let columns = legend_columns(plot.size.0, &names);
    let legend_rows = names.len().div_ceil(columns) as u32;
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

    let x_coord = TickedAxis {
        inner: (x0..x1).into(),
        ticks: p.x_ticks.clone(),
        light: p.x_light.clone(),
    };
    let mut chart = builder.build_cartesian_2d(x_coord, y0..y1)?;
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
    let px = |x: f64, y: f64| chart.backend_coord(&(x, y));
    // Guides first, under the data, each labelled beside its left end.
    let guide_text = ("sans-serif", 14)
        .into_font()
        .color(&GUIDE)
        .pos(Pos::new(HPos::Left, VPos::Bottom));
    for s in p.series.iter().filter(|s| s.kind == SeriesKind::Guide) {
        let points: Vec<(i32, i32)> = s.points.iter().map(|&(x, y)| px(x, y)).collect();
        root.draw(&DashedPathElement::new(
            points.clone(),
            2,
            5,
            ShapeStyle::from(&GUIDE).stroke_width(1),
        ))?;
        if let Some(&(x, y)) = points.iter().min_by_key(|p| p.0) {
            root.draw_text(&s.name, &guide_text, (x + 6, y - 4))?;
        }
    }
    // Error bars: a vertical segment with short caps.
    for s in &p.series {
        let style = ShapeStyle::from(&COLOURS[s.style % COLOURS.len()]).stroke_width(1);
        for &(x, lo, hi) in &s.bars {
            let (bx, blo) = px(x, lo);
            let (_, bhi) = px(x, hi);
            root.draw(&PathElement::new(vec![(bx, blo), (bx, bhi)], style))?;
            for y in [blo, bhi] {
                root.draw(&PathElement::new(vec![(bx - 6, y), (bx + 6, y)], style))?;
            }
        }
    }
    let (right, _) = px(x1, y0);
    for s in p.series.iter().filter(|s| s.kind != SeriesKind::Guide) {
        let corners: Vec<(i32, i32)> = match s.kind {
            SeriesKind::Steps => {
                let mut path = Vec::with_capacity(2 * s.points.len() + 1);
                for (i, &(x, y)) in s.points.iter().enumerate() {
                    if i > 0 {
                        let (_, prev) = s.points[i - 1];
                        path.push(px(x, prev));
                    }
                    path.push(px(x, y));
                }
                if let Some(&(x, y)) = s.points.last() {
                    let end = px(x, y);
                    path.push((right.max(end.0), end.1));
                }
                path
            }
            _ => s.points.iter().map(|&(x, y)| px(x, y)).collect(),
        };
        draw_line(root, corners, s.style)?;
        let skip = usize::from(s.kind == SeriesKind::Steps);
        let radius = marker_radius(s.points.len());
        for (&(x, y), &open) in s.points.iter().zip(&s.open).skip(skip) {
            draw_marker(root, px(x, y), s.style, radius, open)?;
        }
    }

    // Legend below the chart (never over the data), then the notes.
    let column = (width.saturating_sub(32) / columns as u32) as i32;
    let text = ("sans-serif", LEGEND_FONT)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let (origin_x, origin_y) = below.get_base_pixel();
    for (i, s) in p
        .series
        .iter()
        .filter(|s| s.kind != SeriesKind::Guide)
        .enumerate()
    {
        let x = 16 + column * (i % columns) as i32;
        let y = (ROW / 2 + ROW * (i / columns) as u32) as i32;
        let (ax, ay) = (origin_x + x, origin_y + y);
        draw_line(root, vec![(ax, ay), (ax + 34, ay)], s.style)?;
        draw_marker(root, (ax + 17, ay), s.style, 4.5, false)?;
        below.draw_text(&s.name, &text, (x + SWATCH, y))?;
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
        assert_eq!(p.series[0].name, "a (1 at floor)");
        assert_eq!(p.series[1].name, "b (3 at floor)");
        let floor = p.floor.expect("clamped points");
        assert!((floor + 42.0).abs() < 1e-12, "{floor}"); // log10(1e-42)
        assert_eq!(p.series[1].points[2].1, floor);
        assert!((p.series[0].points[1].1 + 3.0).abs() < 1e-12); // log10(1e-3)
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
        assert_eq!(p.series[0].name, "a");
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
        assert_eq!(p.series[0].name, "a (2 non-finite omitted)");
        assert_eq!(p.series[0].points.len(), 2);
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

    /// Polygons in an SVG: plotters writes one `<polygon` per filled marker, and nothing
    /// else here is a polygon.
    fn polygons(svg: &str) -> usize {
        svg.matches("<polygon").count()
    }

    #[test]
    fn every_measured_point_has_a_marker_and_the_legend_one_each() {
        let svg = LinePlot::new("m", "x", "y")
            .series("a", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)])
            .series("b", vec![(0.0, 2.0), (1.0, 1.0), (2.0, 0.5), (3.0, 0.2)])
            .to_svg()
            .unwrap();
        assert_eq!(polygons(&svg), 3 + 4 + 2);
    }

    #[test]
    fn steps_mark_their_jumps_and_guides_have_no_markers_nor_legend_entry() {
        let plot = LinePlot::new("s", "t", "S")
            .step_series("km", vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.0)])
            .guide("slope 1", vec![(0.0, 1.0), (2.0, 0.0)]);
        let svg = plot.to_svg().unwrap();
        // Two jumps, one legend swatch; the guide is labelled on the chart.
        assert_eq!(polygons(&svg), 2 + 1);
        assert!(svg.contains(">\nslope 1\n</text>"));
        let p = plot.prepare().unwrap();
        assert_eq!(p.series[0].style, 0);
        assert_eq!(p.series[1].kind, SeriesKind::Guide);
    }

    #[test]
    fn log_x_ticks_sit_at_the_given_values() {
        let etas = vec![0.1, 0.05, 0.025];
        let plot = LinePlot::new("w", "η", "e")
            .x_axis(YAxis::Log)
            .y_axis(YAxis::Log)
            .x_ticks(etas.clone())
            .series("a", etas.iter().map(|&e| (e, e * e)).collect());
        let p = plot.prepare().unwrap();
        let expected: Vec<f64> = [0.025f64, 0.05, 0.1].iter().map(|e| e.log10()).collect();
        assert_eq!(p.x_ticks, expected);
        assert!(p.x_light.is_empty());
        let svg = plot.to_svg().unwrap();
        for label in ["0.1", "0.05", "0.025"] {
            assert!(
                svg.contains(&format!(">\n{label}\n</text>")),
                "no tick {label}"
            );
        }
    }

    #[test]
    fn linear_ticks_are_round_and_x_limits_crop() {
        let (ticks, light) = linear_ticks((0.0, 9.3));
        assert_eq!(ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(light.len(), 24);
        let plot = LinePlot::new("c", "t", "y")
            .x_limits(0.0, 2.5)
            .series("a", vec![(0.0, 1.0), (2.0, 2.0), (3.0, 50.0)]);
        let p = plot.prepare().unwrap();
        assert_eq!(p.x_range, (0.0, 2.5));
        assert_eq!(p.series[0].points.len(), 2);
        // The cropped point does not stretch the y-axis.
        assert!(p.y_range.1 < 3.0, "{:?}", p.y_range);
    }

    #[test]
    fn error_bars_reaching_zero_are_not_drawn_on_a_log_axis() {
        let plot = LinePlot::new("b", "x", "y").y_axis(YAxis::Log).with(
            Series::new("a", vec![(1.0, 1e-3), (2.0, 1e-4), (3.0, 1e-5)])
                .error_bars(vec![(5e-4, 2e-3), (0.0, 3e-4), (f64::NAN, f64::NAN)])
                .open(vec![false, true, true]),
        );
        let p = plot.prepare().unwrap();
        assert_eq!(p.series[0].bars.len(), 1);
        assert_eq!(p.series[0].open, vec![false, true, true]);
        assert_eq!(p.floor, None);
        let linear = LinePlot::new("b", "x", "y").series_with_error_bars(
            "a",
            vec![(1.0, 0.1)],
            vec![(0.0, 0.2)],
        );
        assert_eq!(linear.prepare().unwrap().series[0].bars.len(), 1);
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
