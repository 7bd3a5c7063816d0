//! Runs over the real data sets in `../shared/data`, which are never copied into this
//! repository. They are `#[ignore]`d so that a user without the data can run the rest of the
//! suite; `./run.sh test` (and CI) runs them, and they fail naming the path when the data is
//! missing.

use std::path::PathBuf;

use serde_json::Value as Json;

pub mod support;
use support::{check, root, run, summary};

fn shared_data() -> PathBuf {
    let dir = root().join("../shared/data");
    let ratings = dir.join("ml-100k/u.data");
    assert!(
        ratings.is_file(),
        "the shared data set is missing: expected {}",
        ratings.display()
    );
    dir
}

/// Runs a shipped spec over the shared data at `workers` workers; its summary.
fn run_shared(spec: &str, workers: usize) -> Json {
    let data = shared_data();
    let out = tempfile::tempdir().expect("temporary directory");
    let data_arg = ["--data", data.to_str().expect("utf-8")];
    check(&run(
        &root().join(spec),
        out.path(),
        &data_arg,
        &["-w", &workers.to_string()],
    ));
    summary(out.path())
}

#[test]
#[ignore = "reads ../shared/data; run by ./run.sh test"]
fn movielens_runs_at_two_workers_and_learns() {
    let summary = run_shared("pipelines/movielens.toml", 2);
    assert_eq!(summary["facts_read"], 100_000);
    assert_eq!(summary["dead_lettered"], 0);
    assert_eq!(summary["examples"], 100_000);
    // 55.4% of ratings are 4 or more: the constant predictor's log loss is 0.6874
    let logloss = summary["logloss"].as_f64().expect("logloss");
    let online_logloss = summary["online_logloss"].as_f64().expect("online logloss");
    // measured: 0.5953 servable, 0.5756 online (the anchors' best on ids only: 0.5776)
    assert!(logloss < 0.600, "servable progressive logloss {logloss}");
    assert!(
        online_logloss < 0.580,
        "online progressive logloss {online_logloss}"
    );
}

#[test]
#[ignore = "reads ../shared/data; run by ./run.sh test"]
fn movielens_ids_reach_the_anchors() {
    let summary = run_shared("pipelines/movielens-ids.toml", 1);
    assert_eq!(summary["examples"], 100_000);
    // measured: 0.5943 servable, 0.5774 online; Vowpal Wabbit `--ftrl` reaches 0.5776
    let logloss = summary["logloss"].as_f64().expect("logloss");
    let online_logloss = summary["online_logloss"].as_f64().expect("online logloss");
    assert!(logloss < 0.598, "servable progressive logloss {logloss}");
    assert!(
        online_logloss < 0.5790,
        "online progressive logloss {online_logloss}"
    );
}

#[test]
#[ignore = "reads ../shared/data; run by ./run.sh test"]
fn elec2_runs_in_file_order_and_learns() {
    // one worker: the spec publishes a model per row, and at 2 workers each row is a
    // cross-worker round trip (same figures, many times the time; see BENCHMARKS.md)
    let summary = run_shared("pipelines/elec2.toml", 1);
    assert_eq!(summary["facts_read"], 45_312);
    assert_eq!(summary["dead_lettered"], 0);
    assert_eq!(summary["examples"], 45_312);
    // 42.5% of periods see the price go up: the constant predictor's log loss is 0.6818
    // measured: 0.3350 servable and online; River SGD(0.1), the anchors' best, reaches 0.3650
    let logloss = summary["logloss"].as_f64().expect("logloss");
    let online_logloss = summary["online_logloss"].as_f64().expect("online logloss");
    assert!(logloss < 0.345, "servable progressive logloss {logloss}");
    assert!(
        online_logloss < 0.345,
        "online progressive logloss {online_logloss}"
    );
    // the exact regression learns every row, and beats the running mean's RMSE (0.4948)
    let exact = &summary["exact"];
    assert_eq!(exact["examples"], 45_312, "{exact}");
    let rmse = exact["rmse"].as_f64().expect("progressive RMSE");
    assert!(rmse < 0.47, "exact progressive RMSE {rmse}");
}
