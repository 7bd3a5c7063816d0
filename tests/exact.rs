//! The exact regression end to end: a fact withdrawn by an `op = "retract"` line leaves
//! bit-identical weights to a run that never read it, at any number of workers, and every
//! epoch's report reaches `metrics.jsonl` and the summary.

use std::path::Path;

use serde_json::Value as Json;

pub mod support;
use support::{check, json_lines, run};

/// Observations of `y = 2x + 1`, which can be withdrawn by id.
const SPEC: &str = r#"
[pipeline]
name = "line"
tick_secs = 10

[[sources]]
name = "observations"
path = "observations.csv"
format = "csv"
header = true
time = "time"
key = ["id"]
op = "op"
fields = [
  { name = "id", type = "string" },
  { name = "x", type = "float" },
  { name = "y", type = "float" },
  { name = "op", type = "string" },
  { name = "time", type = "timestamp" },
]

[examples]
source = "observations"
id = "id"

[label]
kind = "threshold"
field = "y"
at_least = 5

[[features]]
name = "x"
kind = "numeric"
field = "x"

[model]
name = "m"
bits = 8

[exact]
name = "line"
kind = "ridge"
target = "y"
inputs = ["x"]
l2 = 0.001
"#;

/// Runs the spec in `dir` at `workers` workers into `dir/out`: its summary, with the
/// metrics lines that report the exact regression under `exact_lines`.
fn run_exact(dir: &Path, out: &str, workers: &str) -> Json {
    let out = dir.join(out);
    check(&run(&dir.join("spec.toml"), &out, &[], &["-w", workers]));
    let mut summary = support::summary(&out);
    let reports: Vec<Json> = json_lines(&out.join("metrics.jsonl"))
        .into_iter()
        .filter(|line| line.get("exact").is_some())
        .collect();
    summary["exact_lines"] = Json::from(reports);
    summary
}

#[test]
fn a_retraction_leaves_the_weights_of_a_run_without_the_fact() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write("spec.toml", SPEC);
    let clean = "id,x,y,op,time\na,0,1,,1\nb,1,3,,5\nc,2,5,,12\nd,3,7,,21\ne,4,9,,33\nf,5,11,,44\n";
    // an outlier at 23, withdrawn at 35
    let corrected = "id,x,y,op,time\na,0,1,,1\nb,1,3,,5\nc,2,5,,12\nd,3,7,,21\nbad,2,100,,23\ne,4,9,,33\nbad,,,retract,35\nf,5,11,,44\n";

    write("observations.csv", corrected);
    let with_retraction = run_exact(dir.path(), "corrected", "2");
    let with_retraction_one = run_exact(dir.path(), "corrected-1", "1");
    write("observations.csv", clean);
    let without = run_exact(dir.path(), "clean", "1");

    let exact = &with_retraction["exact"];
    assert_eq!(exact["name"], "line");
    // what the surviving facts say, bit for bit; only the scores of the past differ
    for key in [
        "weights_digest",
        "weights",
        "examples",
        "rmse_train",
        "skipped",
    ] {
        assert_eq!(exact[key], without["exact"][key], "{key}: {exact}");
    }
    assert_eq!(with_retraction_one["exact"], *exact);
    assert_eq!(exact["examples"], 6);
    // the outlier was scored when it arrived, and stays scored
    assert_eq!(exact["scored"], 7);
    assert_eq!(without["exact"]["scored"], 6);
    // and the fit is the line, up to the small ridge penalty
    let slope = exact["weights"]["x"].as_f64().expect("slope");
    let intercept = exact["weights"]["intercept"].as_f64().expect("intercept");
    assert!(
        (slope - 2.0).abs() < 1e-3 && (intercept - 1.0).abs() < 1e-3,
        "{exact}"
    );

    // one metrics line per epoch that changed the examples: 0, 1, 2, 3, 4
    let epochs = |summary: &Json| -> Vec<u64> {
        summary["exact_lines"]
            .as_array()
            .expect("lines")
            .iter()
            .map(|line| line["epoch"].as_u64().expect("epoch"))
            .collect()
    };
    assert_eq!(epochs(&with_retraction), vec![0, 1, 2, 3, 4]);
    let lines = with_retraction["exact_lines"].as_array().expect("lines");
    // epoch 2 holds the outlier; epoch 3 is back to the clean weights of epoch 3
    assert_ne!(
        lines[2]["exact"]["weights"],
        without["exact_lines"][2]["exact"]["weights"]
    );
    assert_eq!(
        lines[3]["exact"]["weights"],
        without["exact_lines"][3]["exact"]["weights"]
    );
}
