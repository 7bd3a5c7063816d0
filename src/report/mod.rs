//! `pooch report`: static plots of output directories, as SVG through `plotters`, and an
//! HTML page that shows them together; and plots of the benchmarks' JSON results.
//!
//! | module | owns |
//! |---|---|
//! | this file | reading a run's `metrics.jsonl` and `summary.json`, the report of runs |
//! | `plots` | the charts: learning curve, calibration, speed; bars and lines for benchmarks |
//! | [`bench`] | the benchmark report, from whatever JSON files `target/bench-results/` holds |
//!
//! A run's report reads a finished or a running output directory: a last line cut short by a
//! writer still at work is left out; any other line that is not a JSON object is an error
//! naming the file and line.

pub mod bench;
mod plots;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of a JSON Lines file, or a JSON file, is not what it should be.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line (1 for a whole JSON file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An output directory with no epoch to plot.
    #[error("{path}: no epoch metrics to plot (is this a pooch output directory?)")]
    NoMetrics {
        /// The metrics file.
        path: PathBuf,
    },
    /// Drawing a chart failed.
    #[error("{path}: cannot draw: {reason}")]
    Draw {
        /// The chart's file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ReportError {
    /// Whether the user named something wrong (exit status 2) rather than a failure.
    pub fn is_usage(&self) -> bool {
        matches!(self, ReportError::NoMetrics { .. })
            || matches!(self, ReportError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// One epoch of a run, as the report plots it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochLine {
    /// The epoch.
    pub epoch: u64,
    /// Seconds since the run's outputs were created (absent in older outputs).
    pub elapsed_secs: Option<f64>,
    /// The epoch's progressive logloss and AUC, and the truth's.
    pub logloss: Option<f64>,
    /// See `logloss`.
    pub auc: Option<f64>,
    /// See `logloss`.
    pub truth_logloss: Option<f64>,
    /// See `logloss`.
    pub truth_auc: Option<f64>,
    /// The same over the run so far.
    pub running_logloss: Option<f64>,
    /// See `running_logloss`.
    pub running_auc: Option<f64>,
    /// See `running_logloss`.
    pub running_online_logloss: Option<f64>,
    /// See `running_logloss`.
    pub running_truth_logloss: Option<f64>,
    /// See `running_logloss`.
    pub running_truth_auc: Option<f64>,
    /// Examples labelled over the run so far.
    pub running_examples: u64,
    /// Facts read so far, over every source.
    pub facts: u64,
    /// The running calibration bins: (examples, sum of predictions, positives).
    pub calibration: Vec<(u64, f64, u64)>,
}

/// A run's output directory, read.
#[derive(Clone, Debug)]
pub struct Run {
    /// The directory.
    pub dir: PathBuf,
    /// Its name in legends: the pipeline's (from `summary.json`) or the directory's.
    pub name: String,
    /// Its epochs, in the order written.
    pub epochs: Vec<EpochLine>,
    /// `summary.json`, when the run has finished.
    pub summary: Option<Json>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Io {
        path: path.to_owned(),
        source,
    }
}

fn number(value: &Json, key: &str) -> Option<f64> {
    value.get(key).and_then(Json::as_f64)
}

impl Run {
    /// Reads `dir/metrics.jsonl` and, if there, `dir/summary.json`.
    pub fn read(dir: &Path) -> Result<Run, ReportError> {
        let path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        let epochs = parse_metrics(&path, &text)?;
        if epochs.is_empty() {
            return Err(ReportError::NoMetrics { path });
        }
        let summary_path = dir.join("summary.json");
        let summary =
            match std::fs::read_to_string(&summary_path) {
                Ok(text) => Some(serde_json::from_str::<Json>(&text).map_err(|error| {
                    ReportError::Parse {
                        path: summary_path.clone(),
                        line: error.line(),
                        reason: error.to_string(),
                    }
                })?),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(io(&summary_path)(error)),
            };
        let name = summary
            .as_ref()
            .and_then(|summary| summary.get("pipeline"))
            .and_then(Json::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| {
                dir.file_name().map_or_else(
                    || dir.display().to_string(),
                    |name| name.to_string_lossy().into_owned(),
                )
            });
        Ok(Run {
            dir: dir.to_owned(),
            name,
            epochs,
            summary,
        })
    }

    /// The run's final calibration bins (of the last epoch that has them).
    pub fn calibration(&self) -> &[(u64, f64, u64)] {
        self.epochs
            .iter()
            .rev()
            .find(|epoch| !epoch.calibration.is_empty())
            .map_or(&[], |epoch| &epoch.calibration)
    }
}

/// The epoch lines of a `metrics.jsonl`; the exact regression's lines are left out, and so is
/// a last line without its newline (a writer may be at work on it).
pub fn parse_metrics(path: &Path, text: &str) -> Result<Vec<EpochLine>, ReportError> {
    let mut epochs = Vec::new();
    let complete = if text.ends_with('\n') {
        text
    } else {
        // the part after the last newline is being written
        text.rfind('\n').map_or("", |end| &text[..=end])
    };
    for (index, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ReportError::Parse {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let value: Json = serde_json::from_str(line).map_err(|error| bad(error.to_string()))?;
        if !value.is_object() {
            return Err(bad("a metrics line must be a JSON object".into()));
        }
        if value.get("exact").is_some() {
            continue;
        }
        let epoch = value
            .get("epoch")
            .and_then(Json::as_u64)
            .ok_or_else(|| bad("field `epoch` is missing or not a non-negative integer".into()))?;
        let (Some(scores), Some(running)) = (value.get("epoch_scores"), value.get("running"))
        else {
            return Err(bad(
                "fields `epoch_scores` and `running` are required".into()
            ));
        };
        let calibration = match running.get("calibration") {
            None | Some(Json::Null) => Vec::new(),
            Some(bins) => serde_json::from_value::<Vec<(u64, f64, u64)>>(bins.clone())
                .map_err(|error| bad(format!("field `running.calibration`: {error}")))?,
        };
        let facts = value
            .pointer("/reading/sources")
            .and_then(Json::as_object)
            .map_or(0, |sources| {
                sources
                    .values()
                    .filter_map(|counts| counts.get("facts").and_then(Json::as_u64))
                    .sum()
            });
        epochs.push(EpochLine {
            epoch,
            elapsed_secs: number(&value, "elapsed_secs"),
            logloss: number(scores, "logloss"),
            auc: number(scores, "auc"),
            truth_logloss: number(scores, "truth_logloss"),
            truth_auc: number(scores, "truth_auc"),
            running_logloss: number(running, "logloss"),
            running_auc: number(running, "auc"),
            running_online_logloss: number(running, "online_logloss"),
            running_truth_logloss: number(running, "truth_logloss"),
            running_truth_auc: number(running, "truth_auc"),
            running_examples: running.get("examples").and_then(Json::as_u64).unwrap_or(0),
            facts,
            calibration,
        });
    }
    Ok(epochs)
}

/// Rates per second over the run: (seconds, facts/s, examples/s), each over at least
/// `window` seconds so that a burst does not spike it. Empty without timings.
pub fn rates(epochs: &[EpochLine], window: f64) -> Vec<(f64, f64, f64)> {
    let mut rates = Vec::new();
    let mut base: Option<(f64, u64, u64)> = None;
    for epoch in epochs {
        let Some(at) = epoch.elapsed_secs else {
            continue;
        };
        match base {
            None => base = Some((at, epoch.facts, epoch.running_examples)),
            Some((since, facts, examples)) if at - since >= window => {
                let seconds = at - since;
                rates.push((
                    at,
                    epoch.facts.saturating_sub(facts) as f64 / seconds,
                    epoch.running_examples.saturating_sub(examples) as f64 / seconds,
                ));
                base = Some((at, epoch.facts, epoch.running_examples));
            }
            Some(_) => {}
        }
    }
    rates
}

/// What a report wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The HTML page.
    pub page: PathBuf,
    /// The charts.
    pub charts: Vec<PathBuf>,
}

/// Writes the report of the runs in `dirs` into `to`: `learning-curve.svg`,
/// `calibration.svg`, `speed.svg` and `index.html`. With several runs, each has its curve.
pub fn report(dirs: &[PathBuf], to: &Path) -> Result<Written, ReportError> {
    let runs = dirs
        .iter()
        .map(|dir| Run::read(dir))
        .collect::<Result<Vec<_>, _>>()?;
    std::fs::create_dir_all(to).map_err(io(to))?;
    let mut charts = Vec::new();
    let learning = to.join("learning-curve.svg");
    plots::learning_curve(&runs, &learning)?;
    charts.push(learning);
    let calibration = to.join("calibration.svg");
    plots::calibration(&runs, &calibration)?;
    charts.push(calibration);
    let speed = to.join("speed.svg");
    plots::speed(&runs, &speed)?;
    charts.push(speed);
    let page = to.join("index.html");
    std::fs::write(&page, run_page(&runs)).map_err(io(&page))?;
    Ok(Written { page, charts })
}

pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn figure(value: Option<&Json>) -> String {
    match value {
        None | Some(Json::Null) => "–".into(),
        Some(Json::Number(number)) => match (number.as_u64(), number.as_f64()) {
            (Some(integer), _) => integer.to_string(),
            (None, Some(real)) => format!("{real:.4}"),
            _ => number.to_string(),
        },
        Some(other) => html_escape(&other.to_string()),
    }
}

/// The page that shows a run report's charts together, with each run's summary.
fn run_page(runs: &[Run]) -> String {
    let mut page = String::new();
    let names: Vec<String> = runs.iter().map(|run| html_escape(&run.name)).collect();
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pooch report: {}</title>\n\
         <style>body{{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#1d2330}}\
         table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}\
         img{{max-width:100%;border:1px solid #eee;margin:8px 0}}</style></head><body>\n\
         <h1>pooch report: {}</h1>\n",
        names.join(", "),
        names.join(", ")
    );
    page.push_str("<table><tr><th>run</th><th>directory</th><th>epochs plotted</th>");
    const FIELDS: &[&str] = &[
        "facts_read",
        "examples",
        "model_versions",
        "logloss",
        "auc",
        "truth_logloss",
        "truth_auc",
        "elapsed_secs",
        "facts_per_sec",
    ];
    for field in FIELDS {
        let _ = write!(page, "<th>{field}</th>");
    }
    page.push_str("</tr>\n");
    for run in runs {
        let _ = write!(
            page,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td>",
            html_escape(&run.name),
            html_escape(&run.dir.display().to_string()),
            run.epochs.len()
        );
        for field in FIELDS {
            let value = run.summary.as_ref().and_then(|summary| summary.get(*field));
            let _ = write!(page, "<td>{}</td>", figure(value));
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n");
    if runs.iter().any(|run| run.summary.is_none()) {
        page.push_str("<p>A run without <code>summary.json</code> is still going (or was stopped): its figures are those of the epochs written so far.</p>\n");
    }
    for (file, title) in [
        (
            "learning-curve.svg",
            "Learning curve: progressive logloss and AUC by epoch, running, with the ground truth's",
        ),
        (
            "calibration.svg",
            "Calibration: mean predicted probability against the observed rate, in bins of a tenth",
        ),
        ("speed.svg", "Facts and examples per second over the run"),
    ] {
        let _ = writeln!(
            page,
            "<h2>{title}</h2>\n<img src=\"{file}\" alt=\"{title}\">"
        );
    }
    page.push_str("<h2>Calibration bins</h2>\n");
    for run in runs {
        let _ = writeln!(
            page,
            "<h3>{}</h3><table><tr><th>predicted</th><th>examples</th><th>mean predicted</th><th>observed rate</th></tr>",
            html_escape(&run.name)
        );
        let bins = run.calibration();
        for (index, &(examples, predicted, positives)) in bins.iter().enumerate() {
            let width = 1.0 / bins.len() as f64;
            let (mean, observed) = if examples > 0 {
                (
                    format!("{:.4}", predicted / examples as f64),
                    format!("{:.4}", positives as f64 / examples as f64),
                )
            } else {
                ("–".into(), "–".into())
            };
            let _ = writeln!(
                page,
                "<tr><td>{:.1}–{:.1}</td><td>{examples}</td><td>{mean}</td><td>{observed}</td></tr>",
                index as f64 * width,
                (index + 1) as f64 * width
            );
        }
        if bins.is_empty() {
            page.push_str("<tr><td colspan=\"4\">no calibration bins in this run's metrics.jsonl (written by an older pooch)</td></tr>\n");
        }
        page.push_str("</table>\n");
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"epoch":7,"elapsed_secs":1.5,"epoch_scores":{"logloss":0.5,"auc":0.75,"truth_logloss":0.4},"running":{"logloss":0.6,"auc":0.7,"examples":10,"calibration":[[4,0.2,0],[6,5.0,5]]},"reading":{"sources":{"a":{"facts":3},"b":{"facts":4}}}}"#;

    #[test]
    fn metrics_lines_are_read_and_exact_ones_left_out() {
        let text = format!("{LINE}\n{{\"epoch\":7,\"exact\":{{}}}}\n");
        let epochs = parse_metrics(Path::new("m.jsonl"), &text).unwrap();
        assert_eq!(epochs.len(), 1);
        let epoch = &epochs[0];
        assert_eq!(
            (epoch.epoch, epoch.facts, epoch.running_examples),
            (7, 7, 10)
        );
        assert_eq!(epoch.logloss, Some(0.5));
        assert_eq!(epoch.truth_logloss, Some(0.4));
        assert_eq!(epoch.truth_auc, None);
        assert_eq!(epoch.calibration, vec![(4, 0.2, 0), (6, 5.0, 5)]);
    }

    #[test]
    fn a_last_line_being_written_is_left_out_and_a_bad_line_is_named() {
        let text = format!("{LINE}\n{}", &LINE[..20]);
        assert_eq!(parse_metrics(Path::new("m.jsonl"), &text).unwrap().len(), 1);
        let text = format!("{LINE}\nnot json\n{LINE}\n");
        let error = parse_metrics(Path::new("m.jsonl"), &text).unwrap_err();
        assert!(error.to_string().starts_with("m.jsonl:2: "), "{error}");
        let error = parse_metrics(Path::new("m.jsonl"), "{\"running\":{}}\n").unwrap_err();
        assert!(error.to_string().contains("`epoch`"), "{error}");
    }

    #[test]
    fn rates_span_at_least_the_window() {
        let at = |secs: f64, facts: u64, examples: u64| EpochLine {
            elapsed_secs: Some(secs),
            facts,
            running_examples: examples,
            ..EpochLine::default()
        };
        let epochs = [
            at(0.0, 0, 0),
            at(0.2, 50, 5),
            at(1.0, 100, 10),
            at(3.0, 300, 30),
        ];
        assert_eq!(
            rates(&epochs, 0.5),
            vec![(1.0, 100.0, 10.0), (3.0, 100.0, 10.0)]
        );
        assert!(rates(&[EpochLine::default()], 0.5).is_empty());
    }

    #[test]
    fn a_report_of_two_runs_writes_its_charts_and_page() {
        let dir = std::env::temp_dir().join(format!("pooch-report-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut dirs = Vec::new();
        for name in ["first", "second"] {
            let out = dir.join(name);
            std::fs::create_dir_all(&out).unwrap();
            let mut text = String::new();
            for epoch in 0..20u64 {
                let loss = 0.7 - epoch as f64 * 0.01;
                let _ = writeln!(
                    text,
                    r#"{{"epoch":{epoch},"elapsed_secs":{},"epoch_scores":{{"logloss":{loss},"auc":0.8}},"running":{{"logloss":{loss},"auc":0.8,"truth_logloss":0.3,"examples":{},"calibration":[[10,1.0,1],[0,0.0,0],[0,0.0,0],[0,0.0,0],[0,0.0,0],[0,0.0,0],[0,0.0,0],[0,0.0,0],[0,0.0,0],[10,9.5,9]]}},"reading":{{"sources":{{"s":{{"facts":{}}}}}}}}}"#,
                    epoch as f64 * 0.3,
                    epoch * 10,
                    epoch * 100
                );
            }
            std::fs::write(out.join("metrics.jsonl"), text).unwrap();
            dirs.push(out);
        }
        let written = report(&dirs, &dir.join("report")).unwrap();
        let svg = std::fs::read_to_string(&written.charts[0]).unwrap();
        assert!(svg.contains("<svg") && svg.contains("first") && svg.contains("second"));
        assert!(svg.contains("<polyline"), "the learning curve has lines");
        let page = std::fs::read_to_string(&written.page).unwrap();
        assert!(page.contains("learning-curve.svg") && page.contains("0.9–1.0"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
