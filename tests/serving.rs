//! Serving end to end: `pooch run` with the HTTP endpoint, queried while it ingests, a
//! poisoned learner, and damaged snapshot files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use pooch::runtime::{RunOptions, Summary, run_until};
use serde_json::{Value as Json, json};

pub mod support;
use support::{client, generate, serve_during, sniffable_spec};

/// A run with the HTTP endpoint on a free port; `with` is called with its address while the
/// run goes on, then the run is stopped and its summary returned.
fn serve<T: Send + 'static>(
    spec: &Path,
    data: &Path,
    out: &Path,
    workers: usize,
    with: impl FnOnce(String) -> T + Send + 'static,
) -> (Option<Summary>, T) {
    let mut options = RunOptions::new(spec.to_owned(), out.to_owned());
    options.data_dir = Some(data.to_owned());
    options.timely_args = vec!["-w".into(), workers.to_string()];
    options.progress = false;
    serve_during(options, with)
}

fn predict(client: &reqwest::blocking::Client, base: &str, body: &Json) -> (u16, Json) {
    let response = client
        .post(format!("{base}/v1/predict"))
        .json(body)
        .send()
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().expect("a JSON answer"))
}

fn decisions(out: &Path) -> Vec<Json> {
    std::fs::read_to_string(out.join("decisions.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a decision line"))
        .collect()
}

#[test]
fn a_flood_of_queries_while_ingesting_never_fails_and_names_real_versions() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 400, 10);
    let out = dir.path().join("out");
    let (summary, answered) = serve(&sniffable_spec(), &data, &out, 2, |base| {
        let client = client();
        let mut versions = BTreeSet::new();
        let mut answered = 0;
        // ask until the input is read and a model serves, then a little longer
        for round in 0..20_000 {
            let body =
                json!({"dog": format!("dog-{}", round % 450), "hashtags": ["ball", "new-tag"]});
            let (status, answer) = predict(&client, &base, &body);
            // before a version is promoted on evidence of its own, nothing serves: 503
            if status == 503 {
                let error = answer["error"].as_str().unwrap_or_default();
                assert!(error.contains("no version of"), "{answer}");
                continue;
            }
            assert_eq!(status, 200, "{answer}");
            let probability = answer["probability"].as_f64().expect("a probability");
            assert!((0.0..=1.0).contains(&probability), "{answer}");
            versions.insert(answer["version"].as_u64().expect("a version"));
            answered += 1;
            let ready = client
                .get(format!("{base}/readyz"))
                .send()
                .is_ok_and(|response| response.status().is_success());
            if ready && answered > 2_000 {
                break;
            }
        }
        (answered, versions)
    });
    let (answered, versions) = answered;
    let summary = summary.expect("process 0's summary");
    let published = summary.model_versions;
    assert!(answered > 2_000, "{answered} answers");
    assert!(published > 0);
    // version 0 is the prior, before any version serves; every other one was published and
    // promoted by the supervisor
    let promoted: BTreeSet<u64> = decisions(&out)
        .iter()
        .filter(|decision| decision["action"] == "promoted")
        .filter_map(|decision| decision["version"].as_u64())
        .collect();
    for version in versions {
        assert!(
            version == 0 || promoted.contains(&version),
            "version {version} answered but was never promoted ({promoted:?})"
        );
    }
}

#[test]
fn a_diverging_learner_is_never_promoted_and_damaged_snapshots_are_skipped() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 150, 4);
    let out = dir.path().join("out");

    // a good run leaves a store of good versions
    let mut options = RunOptions::new(sniffable_spec(), out.clone());
    options.data_dir = Some(data.clone());
    options.progress = false;
    let summary = run_until(options, None, Arc::new(AtomicBool::new(false))).expect("a good run");
    let good = summary.expect("a summary").model_versions;
    assert!(good > 2);
    let store = out.join("snapshots/pooch-predictor");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&store)
        .expect("the store")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "snap")
        })
        .collect();
    files.sort();
    // damage the newest two: one truncated, one with a flipped byte
    let newest = files.pop().expect("a snapshot");
    let second = files.pop().expect("another snapshot");
    let bytes = std::fs::read(&newest).expect("readable");
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).expect("writable");
    let mut bytes = std::fs::read(&second).expect("readable");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&second, bytes).expect("writable");
    let survivor = files.last().expect("an older snapshot").clone();
    let survivor_version: u64 = survivor
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.trim_start_matches('v').parse().ok())
        .expect("a version in the name");

    // the same pipeline with a learning rate that overflows the weights to infinity and NaN
    let spec_text = std::fs::read_to_string(sniffable_spec()).expect("the spec");
    let poisoned = spec_text.replacen("learning_rate = 0.5", "learning_rate = 1e300", 1);
    assert_ne!(poisoned, spec_text, "the spec sets learning_rate = 0.5");
    let poisoned_spec = dir.path().join("poisoned.toml");
    std::fs::write(&poisoned_spec, poisoned).expect("writable");
    let (_, served) = serve(&poisoned_spec, &data, &out, 1, |base| {
        let client = client();
        let mut served = BTreeSet::new();
        for round in 0..400 {
            let (status, answer) = predict(&client, &base, &json!({"dog": format!("dog-{round}")}));
            assert_eq!(status, 200, "{answer}");
            served.insert(answer["version"].as_u64().expect("a version"));
            std::thread::sleep(Duration::from_millis(2));
        }
        served
    });
    assert_eq!(
        served,
        BTreeSet::from([survivor_version]),
        "only the newest good snapshot serves"
    );
    let decisions = decisions(&out);
    let rejected = decisions
        .iter()
        .filter(|decision| {
            decision["action"] == "rejected" && decision["version"].as_u64() > Some(good)
        })
        .count();
    assert!(
        rejected > 0,
        "the poisoned versions were rejected: {decisions:?}"
    );
    assert!(
        !decisions
            .iter()
            .any(|decision| decision["action"] == "promoted"
                && decision["version"].as_u64() > Some(good)),
        "no poisoned version was promoted"
    );
}
