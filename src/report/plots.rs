//! The charts of `pooch report`, drawn as SVG by `plotters`: line charts with one curve per
//! series (optionally on a log scale, or over named categories) and grouped bar charts.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::{ReportError, Run, rates};

/// One curve of a [`Chart`].
#[derive(Clone, Debug)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// Its points, in the order drawn.
    pub points: Vec<(f64, f64)>,
    /// The palette colour it takes.
    pub color: usize,
    /// Drawn dashed (a reference, such as the ground truth).
    pub dashed: bool,
    /// Drawn thin and light (noisy per-epoch figures behind the running ones).
    pub faint: bool,
    /// Each point marked with a dot.
    pub marked: bool,
}

impl Series {
    /// A solid curve of colour `color`.
    pub fn new(name: impl Into<String>, color: usize, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            color,
            dashed: false,
            faint: false,
            marked: false,
        }
    }
}

/// A line chart.
#[derive(Clone, Debug, Default)]
pub struct Chart {
    /// Its title.
    pub title: String,
    /// The x axis's label.
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
    /// A log scale for y (every value must be positive; others are left out).
    pub log_y: bool,
    /// Names of the x values 0, 1, 2...: a chart over categories.
    pub categories: Vec<String>,
    /// Fixed ranges instead of the data's.
    pub x_range: Option<(f64, f64)>,
    /// See `x_range`. Points outside it are left out.
    pub y_range: Option<(f64, f64)>,
    /// The legend at the lower right rather than the upper right.
    pub legend_below: bool,
}

fn color(index: usize) -> RGBColor {
    // a qualitative palette that prints and reads well
    const PALETTE: [(u8, u8, u8); 8] = [
        (21, 101, 192),
        (239, 108, 0),
        (46, 125, 50),
        (106, 27, 154),
        (198, 40, 40),
        (0, 131, 143),
        (109, 76, 65),
        (96, 125, 139),
    ];
    let (r, g, b) = PALETTE[index % PALETTE.len()];
    RGBColor(r, g, b)
}

fn draw_error(path: &Path) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Draw {
        path: path.to_owned(),
        reason,
    }
}

/// The data's extent, widened a little, and never empty.
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
    for value in values.filter(|value| value.is_finite()) {
        low = low.min(value);
        high = high.max(value);
    }
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    if high - low < 1e-12 {
        let pad = if low.abs() > 1e-12 {
            low.abs() * 0.05
        } else {
            1.0
        };
        return (low - pad, high + pad);
    }
    let pad = (high - low) * 0.04;
    (low - pad, high + pad)
}

/// Draws `chart` into `area`.
pub fn draw_chart(area: &DrawingArea<SVGBackend<'_>, Shift>, chart: &Chart) -> Result<(), String> {
    let transform = |y: f64| if chart.log_y { y.log10() } else { y };
    let series: Vec<(Series, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|series| {
            let points = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_y || *y > 0.0))
                .map(|&(x, y)| (x, transform(y)))
                .collect();
            (series.clone(), points)
        })
        .collect();
    let (x0, x1) = chart.x_range.unwrap_or_else(|| {
        if chart.categories.is_empty() {
            extent(
                series
                    .iter()
                    .flat_map(|(_, points)| points.iter().map(|p| p.0)),
            )
        } else {
            (-0.3, chart.categories.len() as f64 - 0.7)
        }
    });
    let (y0, y1) = chart
        .y_range
        .map(|(low, high)| (transform(low), transform(high)))
        .unwrap_or_else(|| {
            extent(
                series
                    .iter()
                    .flat_map(|(_, points)| points.iter().map(|p| p.1)),
            )
        });
    // a point beyond a fixed range would be drawn on its edge
    let series: Vec<(Series, Vec<(f64, f64)>)> = series
        .into_iter()
        .map(|(series, points)| {
            let inside = points
                .into_iter()
                .filter(|&(x, y)| (x0..=x1).contains(&x) && (y0..=y1).contains(&y))
                .collect();
            (series, inside)
        })
        .collect();
    let mut context = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|error| error.to_string())?;
    let categories = chart.categories.clone();
    let x_format = move |x: &f64| {
        if categories.is_empty() {
            compact(*x)
        } else {
            let index = x.round();
            if (x - index).abs() < 1e-6 && index >= 0.0 {
                categories.get(index as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let log_y = chart.log_y;
    let y_format = move |y: &f64| {
        if log_y {
            compact(10f64.powf(*y))
        } else {
            compact(*y)
        }
    };
    let mut mesh = context.configure_mesh();
    mesh.x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .light_line_style(RGBColor(238, 238, 238));
    if !chart.categories.is_empty() {
        mesh.x_labels(chart.categories.len() * 2 + 1);
    }
    mesh.draw().map_err(|error| error.to_string())?;
    for (series, points) in &series {
        let base = color(series.color);
        let style: ShapeStyle = if series.faint {
            base.mix(0.3).stroke_width(1)
        } else {
            base.stroke_width(2)
        };
        let drawn = if series.dashed {
            context
                .draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))
                .map_err(|error| error.to_string())?
        } else {
            context
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(|error| error.to_string())?
        };
        drawn
            .label(series.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        if series.marked {
            context
                .draw_series(
                    points
                        .iter()
                        .map(|&point| Circle::new(point, 3, base.filled())),
                )
                .map_err(|error| error.to_string())?;
        }
    }
    if series.iter().any(|(series, _)| !series.name.is_empty()) {
        context
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font(("sans-serif", 12))
            .position(if chart.legend_below {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .draw()
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// A number short enough for a tick label.
fn compact(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// Writes an SVG of `charts` stacked vertically, each `height` pixels high.
pub fn write_charts(
    path: &Path,
    charts: &[Chart],
    width: u32,
    height: u32,
) -> Result<(), ReportError> {
    let error = draw_error(path);
    let rows = charts.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, height * rows)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
    let areas = root.split_evenly((charts.len().max(1), 1));
    for (area, chart) in areas.iter().zip(charts) {
        draw_chart(area, chart).map_err(&error)?;
    }
    root.present().map_err(|e| error(e.to_string()))
}

/// A grouped bar chart: for each category, one bar per group.
#[derive(Clone, Debug, Default)]
pub struct Bars {
    /// Its title.
    pub title: String,
    /// The y axis's label.
    pub y_label: String,
    /// The categories along x.
    pub categories: Vec<String>,
    /// Each group's name and its value per category (`None`: no bar).
    pub groups: Vec<(String, Vec<Option<f64>>)>,
}

/// Writes `bars` as an SVG.
pub fn write_bars(path: &Path, bars: &Bars, width: u32, height: u32) -> Result<(), ReportError> {
    let error = draw_error(path);
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
    let high = bars
        .groups
        .iter()
        .flat_map(|(_, values)| values.iter().flatten().copied())
        .filter(|value| value.is_finite())
        .fold(0.0f64, f64::max);
    let high = if high > 0.0 { high * 1.12 } else { 1.0 };
    let count = bars.categories.len().max(1);
    let mut context = ChartBuilder::on(&root)
        .caption(&bars.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(38)
        .y_label_area_size(62)
        .build_cartesian_2d(-0.5f64..count as f64 - 0.5, 0f64..high)
        .map_err(|e| error(e.to_string()))?;
    let categories = bars.categories.clone();
    let x_format = move |x: &f64| {
        let index = x.round();
        if (x - index).abs() < 1e-6 && index >= 0.0 {
            categories.get(index as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    context
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count * 2 + 1)
        .x_label_formatter(&x_format)
        .y_label_formatter(&|y| compact(*y))
        .y_desc(bars.y_label.as_str())
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|e| error(e.to_string()))?;
    let groups = bars.groups.len().max(1) as f64;
    let width = 0.8 / groups;
    for (group, (name, values)) in bars.groups.iter().enumerate() {
        let fill = color(group);
        let left = |category: usize| category as f64 - 0.4 + group as f64 * width;
        context
            .draw_series(values.iter().enumerate().filter_map(|(category, value)| {
                let value = (*value)?;
                value.is_finite().then(|| {
                    Rectangle::new(
                        [
                            (left(category), 0.0),
                            (left(category) + width * 0.92, value),
                        ],
                        fill.filled(),
                    )
                })
            }))
            .map_err(|e| error(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
        // figures over the bars while they fit: a pair per category, not a crowd
        if bars.groups.len() > 2 {
            continue;
        }
        context
            .draw_series(values.iter().enumerate().filter_map(|(category, value)| {
                let value = (*value)?;
                value.is_finite().then(|| {
                    Text::new(
                        compact(value),
                        (left(category), value + high * 0.01),
                        ("sans-serif", 11),
                    )
                })
            }))
            .map_err(|e| error(e.to_string()))?;
    }
    context
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| error(e.to_string()))?;
    root.present().map_err(|e| error(e.to_string()))
}

/// Epochs from the run's first, and a figure of each.
fn by_epoch(
    run: &Run,
    figure: impl Fn(&crate::report::EpochLine) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let first = run.epochs.first().map_or(0, |epoch| epoch.epoch);
    run.epochs
        .iter()
        .filter_map(|epoch| figure(epoch).map(|value| ((epoch.epoch - first) as f64, value)))
        .collect()
}

/// Logloss and AUC by epoch, running, for every run, with the truth's and (for one run) the
/// epochs' own.
pub fn learning_curve(runs: &[Run], path: &Path) -> Result<(), ReportError> {
    let label = |run: &Run, what: &str| {
        if runs.len() == 1 {
            what.to_owned()
        } else {
            format!("{}: {what}", run.name)
        }
    };
    let mut logloss = Chart {
        title: "Progressive logloss by epoch".into(),
        x_label: "epochs since the first".into(),
        y_label: "logloss".into(),
        ..Chart::default()
    };
    let mut auc = Chart {
        title: "Progressive AUC by epoch".into(),
        x_label: "epochs since the first".into(),
        y_label: "AUC".into(),
        ..Chart::default()
    };
    for (index, run) in runs.iter().enumerate() {
        if runs.len() == 1 {
            let mut epoch = Series::new("epoch", index, by_epoch(run, |e| e.logloss));
            epoch.faint = true;
            logloss.series.push(epoch);
            let mut epoch = Series::new("epoch", index, by_epoch(run, |e| e.auc));
            epoch.faint = true;
            auc.series.push(epoch);
        }
        logloss.series.push(Series::new(
            label(run, "running"),
            index,
            by_epoch(run, |e| e.running_logloss),
        ));
        auc.series.push(Series::new(
            label(run, "running"),
            index,
            by_epoch(run, |e| e.running_auc),
        ));
        let truth = by_epoch(run, |e| e.running_truth_logloss);
        if !truth.is_empty() {
            let mut series = Series::new(
                label(run, "truth, running"),
                index + runs.len().max(2),
                truth,
            );
            series.dashed = true;
            logloss.series.push(series);
            let mut series = Series::new(
                label(run, "truth, running"),
                index + runs.len().max(2),
                by_epoch(run, |e| e.running_truth_auc),
            );
            series.dashed = true;
            auc.series.push(series);
        }
    }
    // the first epochs' few examples make the running figures swing: show the settled range
    logloss.y_range = settled_range(&logloss);
    auc.y_range = settled_range(&auc);
    auc.legend_below = true;
    write_charts(path, &[logloss, auc], 900, 360)
}

/// The y range of the running curves past their first tenth, and every truth curve: the
/// start of a run, scored on a handful of examples, would flatten the rest.
fn settled_range(chart: &Chart) -> Option<(f64, f64)> {
    let values: Vec<f64> = chart
        .series
        .iter()
        .filter(|series| !series.faint)
        .flat_map(|series| {
            let skip = series.points.len() / 10;
            series.points.iter().skip(skip).map(|point| point.1)
        })
        .collect();
    (!values.is_empty()).then(|| extent(values.into_iter()))
}

/// Predicted against observed rate, in bins, for every run; the diagonal is perfect calibration.
pub fn calibration(runs: &[Run], path: &Path) -> Result<(), ReportError> {
    let mut chart = Chart {
        title: "Calibration (running, over the whole run)".into(),
        x_label: "mean predicted probability in the bin".into(),
        y_label: "observed positive rate".into(),
        x_range: Some((0.0, 1.0)),
        y_range: Some((0.0, 1.0)),
        legend_below: true,
        ..Chart::default()
    };
    let mut diagonal = Series::new("perfectly calibrated", 7, vec![(0.0, 0.0), (1.0, 1.0)]);
    diagonal.dashed = true;
    chart.series.push(diagonal);
    for (index, run) in runs.iter().enumerate() {
        let points: Vec<(f64, f64)> = run
            .calibration()
            .iter()
            .filter(|(examples, _, _)| *examples > 0)
            .map(|&(examples, predicted, positives)| {
                (
                    predicted / examples as f64,
                    positives as f64 / examples as f64,
                )
            })
            .collect();
        let mut series = Series::new(
            if points.is_empty() {
                format!("{} (no calibration bins in metrics.jsonl)", run.name)
            } else {
                run.name.clone()
            },
            index,
            points,
        );
        series.marked = true;
        chart.series.push(series);
    }
    write_charts(path, &[chart], 640, 560)
}

/// Facts and examples per second over the run, for every run.
pub fn speed(runs: &[Run], path: &Path) -> Result<(), ReportError> {
    let mut facts = Chart {
        title: "Facts read per second".into(),
        x_label: "seconds since the run started".into(),
        y_label: "facts/s".into(),
        ..Chart::default()
    };
    let mut examples = Chart {
        title: "Examples labelled per second".into(),
        x_label: "seconds since the run started".into(),
        y_label: "examples/s".into(),
        ..Chart::default()
    };
    for (index, run) in runs.iter().enumerate() {
        let rates = rates(&run.epochs, 0.5);
        let name = if rates.is_empty() {
            format!("{} (no timings in metrics.jsonl)", run.name)
        } else {
            run.name.clone()
        };
        facts.series.push(Series::new(
            name.clone(),
            index,
            rates.iter().map(|&(at, facts, _)| (at, facts)).collect(),
        ));
        examples.series.push(Series::new(
            name,
            index,
            rates
                .iter()
                .map(|&(at, _, examples)| (at, examples))
                .collect(),
        ));
    }
    write_charts(path, &[facts, examples], 900, 320)
}
