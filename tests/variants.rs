//! Model variants in one graph (`[[models]]`): each variant trained beside the others learns
//! exactly what it learns alone, at 1 and 2 workers, and reports its own metrics.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

pub mod support;
use support::{check, generate, json_lines, root, run, sniffable_spec, summary};

/// The shipped variants spec.
fn variants_spec() -> PathBuf {
    root().join("pipelines/sniffable-variants.toml")
}

/// The variants spec with only its `index`-th `[[models]]` entry, written into `dir`.
fn alone_spec(dir: &Path, index: usize) -> PathBuf {
    let text = std::fs::read_to_string(variants_spec()).expect("the variants spec");
    let first = text.find("[[models]]").expect("a [[models]] entry");
    let serving = text.find("[serving]").expect("a serving section");
    let entries: Vec<&str> = text[first..serving]
        .split("[[models]]")
        .filter(|entry| !entry.trim().is_empty())
        .collect();
    let alone = format!(
        "{}[[models]]{}{}",
        &text[..first],
        entries[index],
        &text[serving..]
    );
    let path = dir.join(format!("alone-{index}.toml"));
    std::fs::write(&path, alone).expect("spec written");
    path
}

/// Runs `spec` on `data` at `workers` workers into `out`, and returns its summary.
fn run_on(spec: &Path, data: &Path, out: &Path, workers: &str) -> Json {
    let extra = ["--data", data.to_str().expect("utf-8")];
    check(&run(spec, out, &extra, &["-w", workers]));
    summary(out)
}

#[test]
fn a_variant_beside_others_is_bit_identical_to_the_same_model_alone() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 300, 5);
    for workers in ["1", "2"] {
        let together = run_on(
            &variants_spec(),
            &data,
            &dir.path().join(format!("together-{workers}")),
            workers,
        );
        let models = together["models"].as_object().expect("a models map");
        assert_eq!(models.len(), 3, "{models:?}");
        // the top level is the champion's, the first variant
        let champion = &models["pooch-predictor"];
        assert_eq!(champion["champion"], true);
        assert_eq!(together["model_digest"], champion["model_digest"]);
        assert_eq!(together["logloss"], champion["logloss"]);
        for (index, name) in ["pooch-predictor", "ftrl", "richer"].iter().enumerate() {
            let out = dir.path().join(format!("alone-{index}-{workers}"));
            let alone = run_on(&alone_spec(dir.path(), index), &data, &out, workers);
            let variant = &models[*name];
            assert!(variant["model_digest"].is_string(), "{name}: {variant}");
            assert!(variant["versions"].as_u64().unwrap_or(0) > 0, "{name}");
            assert_eq!(variant["model_digest"], alone["model_digest"], "{name}");
            assert_eq!(variant["logloss"], alone["logloss"], "{name}");
            assert_eq!(variant["online_logloss"], alone["online_logloss"], "{name}");
            assert_eq!(variant["versions"], alone["model_versions"], "{name}");
        }
        // the `[model]` shorthand of sniffable.toml is the variants' champion
        let shorthand = run_on(
            &sniffable_spec(),
            &data,
            &dir.path().join(format!("shorthand-{workers}")),
            workers,
        );
        assert_eq!(shorthand["model_digest"], champion["model_digest"]);
        assert_eq!(shorthand["logloss"], champion["logloss"]);
        // the challengers differ from the champion, or the test could not tell them apart
        assert_ne!(models["ftrl"]["model_digest"], champion["model_digest"]);
        assert_ne!(models["richer"]["model_digest"], champion["model_digest"]);
    }
}

#[test]
fn every_variant_writes_its_own_metrics_for_every_epoch() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 200, 3);
    let out = dir.path().join("out");
    run_on(&variants_spec(), &data, &out, "2");
    let lines = json_lines(&out.join("metrics.jsonl"));
    let epochs_of = |model: Option<&str>| -> Vec<u64> {
        lines
            .iter()
            .filter(|line| line.get("epoch_scores").is_some())
            .filter(|line| line.get("model").and_then(Json::as_str) == model)
            .map(|line| line["epoch"].as_u64().expect("an epoch"))
            .collect()
    };
    let champion = epochs_of(None);
    assert!(champion.len() > 10, "{} champion lines", champion.len());
    for name in ["ftrl", "richer"] {
        assert_eq!(epochs_of(Some(name)), champion, "{name}'s epochs");
    }
}

#[test]
fn a_spec_with_model_and_models_or_a_bad_feature_list_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = std::fs::read_to_string(variants_spec()).expect("the variants spec");
    let refused = |text: String, expected: &str| {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("spec written");
        let output = run(&path, &dir.path().join("out"), &[], &[]);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    };
    refused(
        text.replace("[serving]", "[model]\nname = \"m\"\n\n[serving]"),
        "`models`: give `[model]` or `[[models]]`, not both",
    );
    refused(
        text.replacen("\"followers\", ", "\"folowers\", ", 1),
        "`models[0].features`: unknown feature `folowers`",
    );
    refused(
        text.replace("name = \"ftrl\"", "name = \"pooch-predictor\""),
        "`models[1].name`: another variant is called `pooch-predictor`",
    );
}

/// The drifts `metrics.jsonl` reports, as (variant, event time of the example that raised it).
fn drifts(out: &Path) -> Vec<(String, u64)> {
    json_lines(&out.join("metrics.jsonl"))
        .iter()
        .filter_map(|line| line.get("drifts").and_then(Json::as_array).cloned())
        .flatten()
        .map(|drift| {
            let model = drift["model"].as_str().expect("a model").to_owned();
            (model, drift["event_time"].as_u64().expect("an event time"))
        })
        .collect()
}

#[test]
fn a_drift_is_detected_soon_after_it_happens_and_there_is_no_alarm_without_one() {
    // (with 2,000 dogs over 8 days, the flip of day 4 raises no alarm: too few losses a day
    // for ADWIN's bound; 5,000 dogs is the default population)
    const DAY: u64 = 86_400;
    let dir = tempfile::tempdir().expect("temporary directory");
    let stationary = dir.path().join("stationary");
    generate(&stationary, 5000, 10);
    let drifting = dir.path().join("drifting");
    check(&support::pooch(&[
        "generate",
        "sniffable",
        "--out",
        drifting.to_str().expect("utf-8"),
        "--dogs",
        "5000",
        "--days",
        "10",
        "--drift-at",
        "5",
    ]));
    let truth: Json = serde_json::from_str(
        &std::fs::read_to_string(drifting.join("truth.json")).expect("truth.json"),
    )
    .expect("truth is JSON");
    let drift_time = truth["drift"]["time"].as_u64().expect("the drift's time");

    let out = dir.path().join("stationary-out");
    run_on(&variants_spec(), &stationary, &out, "2");
    assert_eq!(drifts(&out), vec![], "no alarm on a stationary stream");

    let out = dir.path().join("drifting-out");
    run_on(&variants_spec(), &drifting, &out, "2");
    let found = drifts(&out);
    for name in ["pooch-predictor", "ftrl", "richer"] {
        let first = found
            .iter()
            .find(|(model, _)| model == name)
            .map(|(_, time)| *time);
        let Some(first) = first else {
            panic!("{name}: no drift detected ({found:?})")
        };
        assert!(
            (drift_time..drift_time + 2 * DAY).contains(&first),
            "{name}: first drift at {first}, the drift at {drift_time}"
        );
    }
    let summary = summary(&out);
    assert!(summary["models"]["ftrl"]["drifts"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn each_challenger_is_compared_with_the_champion_on_the_same_examples() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 300, 4);
    let out = dir.path().join("out");
    let summary = run_on(&variants_spec(), &data, &out, "1");
    let lines = json_lines(&out.join("metrics.jsonl"));
    let last = lines
        .iter()
        .rev()
        .find_map(|line| line.get("comparisons").and_then(Json::as_array).cloned())
        .expect("comparison lines");
    let challengers: Vec<&str> = last
        .iter()
        .map(|comparison| comparison["challenger"].as_str().expect("a name"))
        .collect();
    assert_eq!(challengers, ["ftrl", "richer"]);
    for comparison in &last {
        let (low, mean, high) = (
            comparison["low"].as_f64().expect("low"),
            comparison["mean_difference"].as_f64().expect("mean"),
            comparison["high"].as_f64().expect("high"),
        );
        assert!(low <= mean && mean <= high, "{comparison}");
        assert_eq!(comparison["champion"], "pooch-predictor");
        // every labelled example is scored by both, so the window holds them all (or is full)
        let examples = summary["examples"].as_u64().expect("examples");
        let pairs = comparison["window_pairs"].as_u64().expect("pairs");
        assert_eq!(pairs, examples.min(5_000), "{comparison}");
    }
    let vs = &summary["models"]["ftrl"]["vs_champion"];
    assert_eq!(vs["challenger"], "ftrl");
    assert!(summary["models"]["pooch-predictor"]["vs_champion"].is_null());
}
