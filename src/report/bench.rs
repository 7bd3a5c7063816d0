//! `pooch report --bench DIR`: plots of the benchmarks' JSON results (`./run.sh bench` writes
//! them to `target/bench-results/`), from whatever files are there.
//!
//! The benchmarks change what they write, so this reads shapes rather than files:
//!
//! - **throughput against workers**: every array of objects with a numeric `total_workers`,
//!   `workers` or `threads` and fields ending in `_per_sec`; one curve per label (the
//!   object's or its nearest enclosing object's `stream`, `name`, `reader` or `data`, and its
//!   `processes` when more than one) and field;
//! - **latency distributions**: every object with at least two of `p50_us`, `p75_us`,
//!   `p90_us`, `p99_us`, `p999_us`, `max_us`, named by its file and place in it;
//! - **pooch beside VW**: every object with a field `vw_X` beside `X_per_worker` or `X`, and
//!   every object with a `vw` object beside `pooch` results (one bar per layout).
//!
//! A file that is missing is listed as missing; one that is not JSON is listed with the
//! reason and left out. Neither fails the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::report::plots::{Bars, Chart, Series, write_bars, write_charts};
use crate::report::{ReportError, html_escape};

/// The files `./run.sh bench` is known to write; others found are read too.
pub const KNOWN: &[&str] = &["pipeline.json", "ingest.json", "http.json", "learn.json"];

/// Latency fields, in order, with their labels.
const QUANTILES: &[(&str, &str)] = &[
    ("p50_us", "p50"),
    ("p75_us", "p75"),
    ("p90_us", "p90"),
    ("p99_us", "p99"),
    ("p999_us", "p99.9"),
    ("max_us", "max"),
];

/// What a benchmark report wrote and found.
#[derive(Clone, Debug, Default)]
pub struct BenchWritten {
    /// The HTML page.
    pub page: PathBuf,
    /// The charts.
    pub charts: Vec<PathBuf>,
    /// Files read.
    pub read: Vec<String>,
    /// Known files not there.
    pub missing: Vec<String>,
    /// Files left out, with why.
    pub skipped: Vec<(String, String)>,
}

/// Reads the JSON files of `dir`, in name order, noting the missing and the unreadable.
fn read_results(
    dir: &Path,
    written: &mut BenchWritten,
) -> Result<Vec<(String, Json)>, ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    for known in KNOWN {
        if !names.iter().any(|name| name == known) {
            written.missing.push((*known).to_owned());
        }
    }
    let mut results = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let parsed = std::fs::read_to_string(&path)
            .map_err(|error| error.to_string())
            .and_then(|text| {
                serde_json::from_str::<Json>(&text)
                    .map_err(|error| format!("line {}: {error}", error.line()))
            });
        match parsed {
            Ok(json) => {
                written.read.push(name.clone());
                results.push((name, json));
            }
            Err(reason) => written.skipped.push((name, reason)),
        }
    }
    Ok(results)
}

/// A short label of an object: its `stream`, `name`, `reader`, `data` or `label`, whichever
/// it has.
fn label_of(object: &serde_json::Map<String, Json>) -> Option<String> {
    ["stream", "name", "reader", "data", "label"]
        .iter()
        .find_map(|key| object.get(*key).and_then(Json::as_str).map(str::to_owned))
}

/// Calls `visit` on every value in `value` with its path (`a.b[2]`).
fn walk<'a>(value: &'a Json, path: &str, visit: &mut dyn FnMut(&str, &'a Json)) {
    walk_labelled(value, path, None, &mut |path, _, value| visit(path, value));
}

/// [`walk`], also passing the label of the nearest enclosing object that has one.
fn walk_labelled<'a>(
    value: &'a Json,
    path: &str,
    label: Option<&str>,
    visit: &mut dyn FnMut(&str, Option<&str>, &'a Json),
) {
    visit(path, label, value);
    match value {
        Json::Object(object) => {
            let own = label_of(object);
            let label = own.as_deref().or(label);
            for (key, child) in object {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk_labelled(child, &child_path, label, visit);
            }
        }
        Json::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                walk_labelled(child, &format!("{path}[{index}]"), label, visit);
            }
        }
        _ => {}
    }
}

/// Throughput charts: one per file and `_per_sec` field, a curve per label.
pub fn throughput_charts(results: &[(String, Json)]) -> Vec<Chart> {
    let mut charts = Vec::new();
    for (file, json) in results {
        // (field, label) -> points
        let mut curves: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
        walk_labelled(json, "", None, &mut |path, outer, value| {
            let Json::Array(items) = value else { return };
            for item in items {
                let Json::Object(object) = item else { continue };
                let Some(workers) = ["total_workers", "workers", "threads"]
                    .iter()
                    .find_map(|key| object.get(*key).and_then(Json::as_f64))
                else {
                    continue;
                };
                let mut label = label_of(object)
                    .or_else(|| outer.map(str::to_owned))
                    .unwrap_or_else(|| path.to_owned());
                if let Some(processes) = object.get("processes").and_then(Json::as_u64)
                    && processes > 1
                {
                    let _ = write!(label, ", {processes} processes");
                }
                for (key, value) in object {
                    if !key.ends_with("_per_sec") || key.starts_with("vw_") {
                        continue;
                    }
                    if let Some(rate) = value.as_f64() {
                        curves
                            .entry((key.clone(), label.clone()))
                            .or_default()
                            .push((workers, rate));
                    }
                }
            }
        });
        let mut by_field: BTreeMap<String, Vec<Series>> = BTreeMap::new();
        for ((field, label), mut points) in curves {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let series = by_field.entry(field).or_default();
            let mut curve = Series::new(label, series.len(), points);
            curve.marked = true;
            series.push(curve);
        }
        for (field, series) in by_field {
            let stem = file.trim_end_matches(".json");
            charts.push(Chart {
                title: format!("{stem}: {field} against workers"),
                x_label: "workers".into(),
                y_label: field.replace('_', " "),
                series,
                ..Chart::default()
            });
        }
    }
    charts
}

/// The latency distributions found: one curve per object with quantiles, on a log scale.
pub fn latency_chart(results: &[(String, Json)]) -> Option<Chart> {
    let mut series = Vec::new();
    for (file, json) in results {
        walk(json, "", &mut |path, value| {
            let Json::Object(object) = value else { return };
            let points: Vec<(f64, f64)> = QUANTILES
                .iter()
                .enumerate()
                .filter_map(|(index, (key, _))| {
                    object
                        .get(*key)
                        .and_then(Json::as_f64)
                        .map(|us| (index as f64, us))
                })
                .collect();
            if points.len() >= 2 {
                let name = format!("{} {}", file.trim_end_matches(".json"), path);
                let mut curve = Series::new(name.trim().to_owned(), series.len(), points);
                curve.marked = true;
                series.push(curve);
            }
        });
    }
    (!series.is_empty()).then(|| Chart {
        title: "Latency distributions (log scale)".into(),
        x_label: "quantile".into(),
        y_label: "microseconds".into(),
        series,
        log_y: true,
        categories: QUANTILES
            .iter()
            .map(|(_, label)| (*label).to_owned())
            .collect(),
        ..Chart::default()
    })
}

/// pooch beside VW: one bar chart per compared figure, a pair of bars per result.
pub fn vw_bars(results: &[(String, Json)]) -> Vec<(String, Bars)> {
    // figure -> (category, pooch, vw)
    let mut figures: BTreeMap<String, Vec<(String, Option<f64>, Option<f64>)>> = BTreeMap::new();
    for (_, json) in results {
        walk(json, "", &mut |path, value| {
            let Json::Object(object) = value else { return };
            for (key, vw) in object {
                let Some(figure) = key.strip_prefix("vw_") else {
                    continue;
                };
                let Some(vw) = vw.as_f64() else { continue };
                let (pooch, name) = match object.get(&format!("{figure}_per_worker")) {
                    Some(value) => (value.as_f64(), format!("{figure} per worker")),
                    None => match object.get(figure) {
                        Some(value) => (value.as_f64(), figure.to_owned()),
                        None => continue,
                    },
                };
                let mut category = label_of(object).unwrap_or_else(|| path.to_owned());
                if let Some(workers) = object.get("workers").and_then(Json::as_u64) {
                    let _ = write!(category, ", {workers} w");
                }
                figures
                    .entry(name)
                    .or_default()
                    .push((category, pooch, Some(vw)));
            }
        });
    }
    let mut charts: Vec<(String, Bars)> = figures
        .into_iter()
        .map(|(figure, rows)| {
            let bars = Bars {
                title: format!("pooch beside Vowpal Wabbit: {}", figure.replace('_', " ")),
                y_label: figure.replace('_', " "),
                categories: rows.iter().map(|row| row.0.clone()).collect(),
                groups: vec![
                    ("pooch".into(), rows.iter().map(|row| row.1).collect()),
                    (
                        "Vowpal Wabbit".into(),
                        rows.iter().map(|row| row.2).collect(),
                    ),
                ],
            };
            (figure, bars)
        })
        .collect();
    charts.extend(side_by_side(results));
    charts
}

/// Objects holding a `vw` result beside `pooch` results: for each figure both have, bars of
/// VW and of every pooch layout, per labelled object (a stream).
fn side_by_side(results: &[(String, Json)]) -> Vec<(String, Bars)> {
    // figure -> category -> group -> value
    let mut figures: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut groups: Vec<String> = vec!["Vowpal Wabbit".into()];
    for (_, json) in results {
        walk(json, "", &mut |path, value| {
            let Json::Object(object) = value else { return };
            let (Some(Json::Object(vw)), Some(pooch)) = (object.get("vw"), object.get("pooch"))
            else {
                return;
            };
            let pooch: Vec<&serde_json::Map<String, Json>> = match pooch {
                Json::Array(items) => items.iter().filter_map(Json::as_object).collect(),
                Json::Object(one) => vec![one],
                _ => return,
            };
            let category = label_of(object).unwrap_or_else(|| path.to_owned());
            if !order.contains(&category) {
                order.push(category.clone());
            }
            for (figure, vw_value) in vw {
                let Some(vw_value) = vw_value.as_f64() else {
                    continue;
                };
                if !["examples_per_sec", "logloss", "auc"].contains(&figure.as_str()) {
                    continue;
                }
                let entry = figures
                    .entry(figure.clone())
                    .or_default()
                    .entry(category.clone())
                    .or_default();
                entry.insert("Vowpal Wabbit".into(), vw_value);
                for (index, result) in pooch.iter().enumerate() {
                    let Some(value) = result.get(figure).and_then(Json::as_f64) else {
                        continue;
                    };
                    let layout = result.get("layout").and_then(Json::as_str).map_or_else(
                        || format!("pooch {index}"),
                        |layout| format!("pooch {layout}"),
                    );
                    if !groups.contains(&layout) {
                        groups.push(layout.clone());
                    }
                    entry.insert(layout, value);
                }
            }
        });
    }
    figures
        .into_iter()
        .map(|(figure, by_category)| {
            let categories: Vec<String> = order
                .iter()
                .filter(|category| by_category.contains_key(*category))
                .cloned()
                .collect();
            let bars = Bars {
                title: format!("pooch beside Vowpal Wabbit: {}", figure.replace('_', " ")),
                y_label: figure.replace('_', " "),
                groups: groups
                    .iter()
                    .map(|group| {
                        let values = categories
                            .iter()
                            .map(|category| by_category[category].get(group).copied())
                            .collect();
                        (group.clone(), values)
                    })
                    .collect(),
                categories,
            };
            (format!("side-by-side {figure}"), bars)
        })
        .collect()
}

/// Writes the benchmark plots of the JSON files in `dir` into `to`, with an `index.html`.
pub fn bench_report(dir: &Path, to: &Path) -> Result<BenchWritten, ReportError> {
    let mut written = BenchWritten::default();
    let results = read_results(dir, &mut written)?;
    std::fs::create_dir_all(to).map_err(|source| ReportError::Io {
        path: to.to_owned(),
        source,
    })?;
    let throughput = throughput_charts(&results);
    if !throughput.is_empty() {
        let path = to.join("bench-throughput.svg");
        write_charts(&path, &throughput, 900, 340)?;
        written.charts.push(path);
    }
    if let Some(latency) = latency_chart(&results) {
        let path = to.join("bench-latency.svg");
        write_charts(&path, &[latency], 900, 420)?;
        written.charts.push(path);
    }
    for (figure, bars) in vw_bars(&results) {
        let path = to.join(format!("bench-vw-{}.svg", figure.replace([' ', '/'], "-")));
        write_bars(&path, &bars, 900, 380)?;
        written.charts.push(path);
    }
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>pooch benchmarks</title>\
         <style>body{font:14px/1.4 system-ui,sans-serif;margin:20px}img{max-width:100%;border:1px solid #eee;margin:8px 0}</style>\
         </head><body>\n<h1>pooch benchmarks</h1>\n",
    );
    let _ = writeln!(
        page,
        "<p>From <code>{}</code>: read {}.</p>",
        html_escape(&dir.display().to_string()),
        if written.read.is_empty() {
            "nothing".to_owned()
        } else {
            written.read.join(", ")
        }
    );
    if !written.missing.is_empty() {
        let _ = writeln!(
            page,
            "<p>Not there (their benchmark has not run): {}.</p>",
            written.missing.join(", ")
        );
    }
    for (name, reason) in &written.skipped {
        let _ = writeln!(
            page,
            "<p>Left out {}: {}</p>",
            html_escape(name),
            html_escape(reason)
        );
    }
    for chart in &written.charts {
        let name = chart
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(page, "<p><img src=\"{name}\" alt=\"{name}\"></p>");
    }
    page.push_str("</body></html>\n");
    written.page = to.join("index.html");
    std::fs::write(&written.page, page).map_err(|source| ReportError::Io {
        path: written.page.clone(),
        source,
    })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results() -> Vec<(String, Json)> {
        vec![
            (
                "pipeline.json".into(),
                json!({
                    "throughput": [
                        {"workers": 2, "facts_per_sec": 250.0},
                        {"workers": 1, "facts_per_sec": 170.0}
                    ],
                    "live_query_latency": {"workers": 2, "p50_us": 3400, "p99_us": 28000, "max_us": 130000}
                }),
            ),
            (
                "learn.json".into(),
                json!({"results": [
                    {"data": "criteo", "workers": 1, "examples_per_sec": 9.0,
                     "examples_per_sec_per_worker": 9.0, "vw_examples_per_sec": 12.0}
                ]}),
            ),
        ]
    }

    #[test]
    fn shapes_are_found_wherever_they_are() {
        let results = results();
        let throughput = throughput_charts(&results);
        let titles: Vec<&str> = throughput
            .iter()
            .map(|chart| chart.title.as_str())
            .collect();
        assert_eq!(
            titles,
            [
                "pipeline: facts_per_sec against workers",
                "learn: examples_per_sec against workers",
            ]
        );
        assert_eq!(
            throughput[0].series[0].points,
            vec![(1.0, 170.0), (2.0, 250.0)]
        );
        let latency = latency_chart(&results).unwrap();
        assert_eq!(latency.series.len(), 1);
        assert_eq!(latency.series[0].name, "pipeline live_query_latency");
        assert_eq!(
            latency.series[0].points,
            vec![(0.0, 3400.0), (3.0, 28000.0), (5.0, 130000.0)]
        );
        let vw = vw_bars(&results);
        assert_eq!(vw.len(), 1);
        assert_eq!(vw[0].1.categories, ["criteo, 1 w"]);
        assert_eq!(vw[0].1.groups[0].1, [Some(9.0)]);
        assert_eq!(vw[0].1.groups[1].1, [Some(12.0)]);
    }

    #[test]
    fn streams_with_vw_beside_pooch_layouts_are_bars() {
        let results = vec![(
            "side_by_side.json".to_owned(),
            json!({"streams": [
                {"stream": "criteo", "vw": {"examples_per_sec": 100.0, "logloss": 0.5},
                 "pooch": [
                    {"layout": "w1", "total_workers": 1, "processes": 1, "examples_per_sec": 60.0, "logloss": 0.49},
                    {"layout": "n2w1", "total_workers": 2, "processes": 2, "examples_per_sec": 70.0}
                 ]}
            ]}),
        )];
        let bars = vw_bars(&results);
        let names: Vec<&str> = bars.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["side-by-side examples_per_sec", "side-by-side logloss"]
        );
        let speed = &bars[0].1;
        assert_eq!(speed.categories, ["criteo"]);
        assert_eq!(
            speed.groups[0],
            ("Vowpal Wabbit".to_owned(), vec![Some(100.0)])
        );
        assert_eq!(speed.groups[2], ("pooch n2w1".to_owned(), vec![Some(70.0)]));
        assert_eq!(bars[1].1.groups[2].1, [None]);
        let throughput = throughput_charts(&results);
        let labels: Vec<&str> = throughput[0]
            .series
            .iter()
            .map(|series| series.name.as_str())
            .collect();
        assert_eq!(labels, ["criteo", "criteo, 2 processes"]);
    }

    #[test]
    fn missing_and_broken_files_are_listed_not_fatal() {
        let dir = std::env::temp_dir().join(format!("pooch-bench-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, json) in results() {
            std::fs::write(dir.join(name), json.to_string()).unwrap();
        }
        std::fs::write(dir.join("http.json"), "{ not json").unwrap();
        let written = bench_report(&dir, &dir.join("plots")).unwrap();
        assert_eq!(written.read, ["learn.json", "pipeline.json"]);
        assert_eq!(written.missing, ["ingest.json"]);
        assert_eq!(written.skipped.len(), 1);
        assert_eq!(written.charts.len(), 3);
        let page = std::fs::read_to_string(&written.page).unwrap();
        assert!(page.contains("ingest.json") && page.contains("Left out http.json"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
