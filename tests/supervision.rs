//! The supervisor end to end, in `pooch run --http`: the cases it used to be fooled by (issue
//! 15). A learner that blows up to a constant model, a restart on an existing store, a store
//! written for another spec, and no promotable version at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pooch::runtime::{RunOptions, Summary};
use serde_json::{Value as Json, json};

pub mod support;
use support::{client, generate, pooch, serve_during, sniffable_spec};

/// A run with the HTTP endpoint on a free port, serving after its input is read; `with` is
/// called with its address, then the run is stopped and its summary returned.
fn serve<T: Send + 'static>(
    spec: &Path,
    data: &Path,
    out: &Path,
    with: impl FnOnce(String) -> T + Send + 'static,
) -> (Option<Summary>, T) {
    let mut options = RunOptions::new(spec.to_owned(), out.to_owned());
    options.data_dir = Some(data.to_owned());
    options.timely_args = vec!["-w".into(), "1".into()];
    options.progress = false;
    // the store keeps every version, so that the restart test can fall back on any promoted
    // one when the snapshot writer skipped the last choice (retention spares what the
    // decisions name: tests/models_cli.rs)
    options.retain_snapshots = 1000;
    serve_during(options, with)
}

fn post(base: &str, path: &str, body: &Json) -> (u16, Json) {
    let response = client()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().expect("a JSON answer"))
}

fn models(base: &str) -> Json {
    client()
        .get(format!("{base}/v1/models"))
        .send()
        .expect("the server answers")
        .json()
        .expect("a JSON answer")
}

/// The version `/v1/models` says serves.
fn serving(base: &str) -> Option<u64> {
    models(base)["models"][0]["serving"].as_u64()
}

/// Waits until the run has read its input and settled: the served features stop moving and
/// the version count stops growing for a second, or 120 s pass.
fn settle(base: &str) {
    let started = Instant::now();
    let mut last = Json::Null;
    let mut stable_since = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let metrics = client()
            .get(format!("{base}/metrics"))
            .send()
            .and_then(|response| response.text())
            .unwrap_or_default();
        let now: Vec<&str> = metrics
            .lines()
            .filter(|line| {
                line.starts_with("pooch_features_epoch") || line.starts_with("pooch_facts_read")
            })
            .collect();
        let now = json!([
            now,
            models(base)["models"][0]["supervisor"]["versions"]
                .as_array()
                .map(Vec::len)
        ]);
        if now != last {
            last = now;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_secs(1) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn decisions(out: &Path) -> Vec<Json> {
    std::fs::read_to_string(out.join("decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a decision line"))
        .collect()
}

/// The versions decisions say were `action`, by the supervisor.
fn versions_with(decisions: &[Json], action: &str) -> BTreeSet<u64> {
    decisions
        .iter()
        .filter(|decision| decision["action"] == action && decision["by"] == "supervisor")
        .filter_map(|decision| decision["version"].as_u64())
        .collect()
}

/// The shipped spec with `from` replaced by `to`, written into `dir` as `name`.
fn spec_with(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(sniffable_spec()).expect("the spec");
    for (from, to) in edits {
        assert!(text.contains(from), "the spec has {from:?}");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writable");
    path
}

const DOGS: [&str; 6] = ["dog-1", "dog-2", "dog-17", "dog-40", "dog-77", "dog-120"];

/// Asks about several dogs; for each answering version, the probabilities it gave.
fn ask_all(base: &str, answers: &mut BTreeMap<u64, Vec<f64>>, refusals: &mut Vec<Json>) {
    for (index, dog) in DOGS.iter().enumerate() {
        let hashtags = if index % 2 == 0 {
            json!(["ball", "park"])
        } else {
            json!(["nap"])
        };
        let (status, answer) = post(
            base,
            "/v1/predict",
            &json!({"dog": dog, "hashtags": hashtags}),
        );
        match status {
            200 => {
                let version = answer["version"].as_u64().expect("a version");
                assert!(version > 0, "version 0 posing as a model: {answer}");
                let probability = answer["probability"].as_f64().expect("a probability");
                answers.entry(version).or_default().push(probability);
            }
            503 => refusals.push(answer),
            other => panic!("status {other}: {answer}"),
        }
    }
}

#[test]
fn a_learner_blown_up_to_a_constant_model_never_serves() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 150, 4);
    let out = dir.path().join("out");
    let spec = spec_with(
        dir.path(),
        "blown.toml",
        &[("learning_rate = 0.5", "learning_rate = 1e30")],
    );
    let (summary, (answers, refusals)) = serve(&spec, &data, &out, |base| {
        let mut answers = BTreeMap::new();
        let mut refusals = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            ask_all(&base, &mut answers, &mut refusals);
        }
        settle(&base);
        ask_all(&base, &mut answers, &mut refusals);
        (answers, refusals)
    });
    assert!(summary.expect("a summary").model_versions > 24);
    for (version, probabilities) in &answers {
        let collapsed = probabilities.iter().all(|p| *p < 1e-6 || *p > 1.0 - 1e-6)
            || probabilities
                .iter()
                .all(|p| (p - probabilities[0]).abs() < 1e-9);
        assert!(
            !collapsed,
            "version {version} serves a collapsed model: {probabilities:?}"
        );
    }
    for refusal in &refusals {
        let error = refusal["error"].as_str().expect("an error");
        assert!(
            error.contains("no version of pooch-predictor serves"),
            "{refusal}"
        );
    }
    let decisions = decisions(&out);
    let promoted = versions_with(&decisions, "promoted");
    let collapsed: Vec<&Json> = decisions
        .iter()
        .filter(|decision| decision["metrics"]["collapsed"] == true)
        .collect();
    assert!(
        !collapsed.is_empty() || promoted.is_empty(),
        "a blown-up learner is flagged collapsed: {promoted:?}"
    );
    for decision in &collapsed {
        assert!(
            !promoted.contains(&decision["version"].as_u64().expect("a version")),
            "{decision}"
        );
    }
}

#[test]
fn a_restart_keeps_rejections_and_serves_a_new_version_once_it_beats_the_old() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 150, 4);
    let out = dir.path().join("out");
    let spec = sniffable_spec();
    let (first, served_first) = serve(&spec, &data, &out, |base| {
        settle(&base);
        serving(&base)
    });
    let first_newest = first.expect("a summary").model_versions;
    assert!(
        served_first.is_some(),
        "a version serves after the first run"
    );
    let before = decisions(&out);
    // the supervisor's last choice, as its decisions record it (what the restore takes back)
    let old = before
        .iter()
        .rev()
        .find(|decision| decision["by"] != "cli")
        .and_then(|decision| decision["serving"].as_u64())
        .expect("the first run's supervisor chose a version");
    let rejected_before = versions_with(&before, "rejected");
    let lines_before = before.len();
    // the snapshot writer coalesces under load, so a promoted version may not be on disk
    let promoted_before = versions_with(&before, "promoted");
    let durable: BTreeSet<u64> = stored_versions(&out)
        .intersection(&promoted_before)
        .copied()
        .collect();

    let (_, ((status, first_answer), final_serving, state)) =
        serve(&spec, &data, &out, move |base| {
            let (status, answer) = post(&base, "/v1/predict", &json!({"dog": "dog-1"}));
            let first = (status, answer);
            settle(&base);
            (first, serving(&base), models(&base))
        });
    // a version the first run promoted serves from the start: its last choice when that is
    // on disk, else the newest promoted one that is; nothing of the new run had evidence of
    // its own yet, so with no promoted version on disk the answer is an honest 503
    if durable.is_empty() {
        assert_eq!(status, 503, "nothing promoted is on disk: {first_answer}");
    } else {
        assert_eq!(status, 200, "the old choice serves at once: {first_answer}");
        let first_answer = first_answer["version"].as_u64().expect("a version");
        assert!(
            first_answer <= old && durable.contains(&first_answer),
            "first answer {first_answer}, the first run's choice {old}, promoted and stored {durable:?}"
        );
    }
    let after = decisions(&out);
    let this_run = &after[lines_before..];
    // no version of the first run is promoted again, nor served against its rejection
    for decision in this_run {
        if let Some(version) = decision["version"].as_u64()
            && version <= first_newest
        {
            assert_ne!(decision["action"], "promoted", "{decision}");
        }
    }
    let versions = state["models"][0]["supervisor"]["versions"]
        .as_array()
        .expect("versions")
        .clone();
    for version in &versions {
        let number = version["version"].as_u64().expect("a number");
        if rejected_before.contains(&number) {
            assert_eq!(version["status"], "rejected", "{version}");
        }
    }
    // the new run's versions are judged on live evidence, and one that beats the old serves
    let promoted_now = versions_with(this_run, "promoted");
    assert!(
        promoted_now.iter().any(|version| *version > first_newest),
        "a new version is promoted after the restart: {this_run:?}"
    );
    let final_serving = final_serving.expect("a version serves");
    assert!(
        final_serving > first_newest,
        "serving {final_serving}, old newest {first_newest}"
    );
}

#[test]
fn a_snapshot_made_for_another_spec_never_serves_and_is_listed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 150, 4);
    let out = dir.path().join("out");
    let small = spec_with(dir.path(), "bits10.toml", &[("bits = 18", "bits = 10")]);
    let (first, _) = serve(&small, &data, &out, |base| settle(&base));
    let old_newest = first.expect("a summary").model_versions;
    assert!(old_newest > 0);

    let (_, (answers, refusals, listed)) = serve(&sniffable_spec(), &data, &out, |base| {
        let mut answers = BTreeMap::new();
        let mut refusals = Vec::new();
        ask_all(&base, &mut answers, &mut refusals);
        settle(&base);
        ask_all(&base, &mut answers, &mut refusals);
        (answers, refusals, models(&base))
    });
    for version in answers.keys() {
        assert!(
            *version > old_newest,
            "version {version} of the bits = 10 spec served"
        );
    }
    assert!(!refusals.is_empty() || !answers.is_empty());
    let skipped = listed["models"][0]["skipped"]
        .as_array()
        .expect("skipped")
        .clone();
    assert!(!skipped.is_empty(), "{listed}");
    // the line served is the running spec's features hash; the skipped ones are of another
    let line = pooch::spec::load(&sniffable_spec(), None)
        .expect("the spec")
        .features_hash;
    assert_eq!(listed["models"][0]["line"], json!(line), "{listed}");
    for entry in &skipped {
        assert_eq!(entry["incompatible"], true, "{entry}");
        let other = entry["line"].as_str().expect("the snapshot's line");
        assert_ne!(other, line, "{entry}");
        assert!(
            entry["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains("features hash")),
            "{entry}"
        );
    }
    // and `pooch models list`, given the spec, says the same of the files
    let store = out.join("snapshots");
    let listing = pooch(&[
        "models",
        "list",
        "--store",
        store.to_str().expect("UTF-8 path"),
        "--pipeline",
        sniffable_spec().to_str().expect("UTF-8 path"),
    ]);
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let incompatible = listing
        .lines()
        .filter(|row| row.contains("incompatible with"))
        .count();
    assert_eq!(incompatible, skipped.len(), "{listing}");
}

#[test]
fn a_declared_constant_fallback_answers_as_the_constant_model_with_no_version() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 150, 2);
    let out = dir.path().join("out");
    // nothing is promotable, and the spec declares the constant model as the fallback
    let spec = spec_with(
        dir.path(),
        "fallback.toml",
        &[(
            "keep_versions = 3",
            "keep_versions = 3\nbaseline_margin = 0.99\nfallback = \"constant\"",
        )],
    );
    let (_, (ready, single, batch)) = serve(&spec, &data, &out, |base| {
        settle(&base);
        let ready = client()
            .get(format!("{base}/readyz"))
            .send()
            .expect("the server answers")
            .status()
            .as_u16();
        let single = post(&base, "/v1/predict", &json!({"dog": "dog-1"}));
        let batch = post(
            &base,
            "/v1/predict",
            &json!({"queries": [{"dog": "dog-1"}, {"dog": "dog-2"}]}),
        );
        (ready, single, batch)
    });
    assert_eq!(ready, 200, "the fallback answers, so the endpoint is ready");
    let (status, answer) = single;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "constant", "{answer}");
    assert_eq!(answer["version"], Json::Null, "{answer}");
    // the running positive rate of the rounds seen, never exactly 0, 1 or the prior's 0.5
    let probability = answer["probability"].as_f64().expect("a probability");
    assert!(
        probability > 0.0 && probability < 1.0 && probability != 0.5,
        "{answer}"
    );
    let (status, batch) = batch;
    assert_eq!(status, 200, "{batch}");
    for answer in batch["predictions"].as_array().expect("predictions") {
        assert_eq!(answer["model"], "constant", "{batch}");
        assert_eq!(answer["probability"].as_f64(), Some(probability), "{batch}");
    }
}

#[test]
fn with_nothing_promotable_predict_answers_503_and_an_unknown_pin_404() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 150, 2);
    let out = dir.path().join("out");
    // no model beats the constant model by 99%
    let spec = spec_with(
        dir.path(),
        "strict.toml",
        &[(
            "keep_versions = 3",
            "keep_versions = 3\nbaseline_margin = 0.99",
        )],
    );
    let (_, (single, batch, pin)) = serve(&spec, &data, &out, |base| {
        settle(&base);
        let single = post(&base, "/v1/predict", &json!({"dog": "dog-1"}));
        let batch = post(
            &base,
            "/v1/predict",
            &json!({"queries": [{"dog": "dog-1"}]}),
        );
        let pin = post(
            &base,
            "/v1/models/pooch-predictor/pin",
            &json!({"version": 999_999}),
        );
        (single, batch, pin)
    });
    assert_eq!(single.0, 503, "{}", single.1);
    assert!(
        single.1["error"]
            .as_str()
            .is_some_and(|error| error.contains("no version of pooch-predictor serves")),
        "{}",
        single.1
    );
    assert_eq!(batch.0, 503, "{}", batch.1);
    assert_eq!(pin.0, 404, "{}", pin.1);
}

#[test]
fn impossible_layouts_are_refused_with_status_2() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 20, 1);
    let out = dir.path().join("out");
    let spec = sniffable_spec();
    for flags in [
        &["-w", "0"][..],
        &["-n", "0"],
        &["-n", "2", "-p", "2"],
        &["-w", "x"],
    ] {
        let mut args = vec![
            "run",
            "--pipeline",
            spec.to_str().expect("a path"),
            "--out",
            out.to_str().expect("a path"),
            "--data",
            data.to_str().expect("a path"),
            "--",
        ];
        args.extend(flags);
        let output = pooch(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains("timely flags"), "{flags:?}: {stderr}");
    }
}

/// The versions whose snapshots are in `out`'s store, for any model.
fn stored_versions(out: &Path) -> BTreeSet<u64> {
    let Ok(models) = std::fs::read_dir(out.join("snapshots")) else {
        return BTreeSet::new();
    };
    models
        .flatten()
        .filter_map(|model| std::fs::read_dir(model.path()).ok())
        .flatten()
        .flatten()
        .filter_map(|file| {
            let name = file.file_name().into_string().ok()?;
            name.strip_prefix('v')?.strip_suffix(".snap")?.parse().ok()
        })
        .collect()
}
