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
