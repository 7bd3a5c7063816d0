//! End-to-end tests of the `pooch` binary on generated Sniffable data and on hand-made files.

use std::path::Path;
use std::process::Output;

use serde_json::Value as Json;

pub mod support;
use support::{
    TinySpec, check, generate, json_lines, pooch, run, sniffable_spec, sorted_lines, summary,
    two_process_hostfile,
};

/// The shipped Sniffable spec over `data`, asked `data/queries.jsonl`.
fn run_sniffable(data: &Path, out: &Path, timely: &[&str]) -> Output {
    let queries = data.join("queries.jsonl");
    let extra = [
        "--data",
        data.to_str().expect("utf-8"),
        "--queries",
        queries.to_str().expect("utf-8"),
    ];
    run(&sniffable_spec(), out, &extra, timely)
}

#[test]
fn two_workers_and_two_processes_agree_exactly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 400, 6);

    let threads = dir.path().join("threads");
    check(&run_sniffable(&data, &threads, &["-w", "2"]));

    let processes = dir.path().join("processes");
    let hosts = two_process_hostfile(dir.path());
    let second = {
        let (data, processes, hosts) = (data.clone(), processes.clone(), hosts.clone());
        std::thread::spawn(move || {
            run_sniffable(&data, &processes, &["-n", "2", "-p", "1", "-h", &hosts])
        })
    };
    let first = run_sniffable(&data, &processes, &["-n", "2", "-p", "0", "-h", &hosts]);
    check(&first);
    check(&second.join().expect("second process"));

    let (threads_summary, processes_summary) = (summary(&threads), summary(&processes));
    assert_eq!(
        threads_summary["model_digest"],
        processes_summary["model_digest"]
    );
    assert!(threads_summary["model_digest"].is_string());
    assert_eq!(threads_summary["logloss"], processes_summary["logloss"]);
    let answers = sorted_lines(&threads.join("answers.jsonl"));
    assert_eq!(answers.len(), 8, "every query is answered");
    assert_eq!(answers, sorted_lines(&processes.join("answers.jsonl")));
}

#[test]
fn learns_sniffable_close_to_the_truth() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 2000, 14);
    let out = dir.path().join("out");
    check(&run_sniffable(&data, &out, &["-w", "2"]));
    let summary = summary(&out);

    let examples = summary["examples"].as_f64().expect("examples");
    let positive_rate = summary["positives"].as_f64().expect("positives") / examples;
    let constant_logloss =
        -(positive_rate * positive_rate.ln() + (1.0 - positive_rate) * (1.0 - positive_rate).ln());
    let logloss = summary["logloss"].as_f64().expect("logloss");
    let auc = summary["auc"].as_f64().expect("auc");
    let truth_auc = summary["truth_auc"].as_f64().expect("truth auc");
    assert!(
        logloss < 0.8 * constant_logloss,
        "logloss {logloss} against the constant predictor's {constant_logloss}"
    );
    assert!(
        (truth_auc - auc).abs() <= 0.05,
        "progressive AUC {auc} against the truth's {truth_auc}"
    );
    assert_eq!(summary["unlabeled"], 0);
    assert_eq!(summary["dead_lettered"], 0);
}

/// A pipeline over one hand-made CSV source, `ratings.csv`, with each user's mean score.
fn ratings_spec() -> TinySpec {
    TinySpec {
        function: "mean".to_owned(),
        ..TinySpec::new("ratings")
    }
}

#[test]
fn malformed_lines_are_dead_lettered_and_the_run_completes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spec = ratings_spec().write(dir.path());
    let mut csv = b"user,score,time\n".to_vec();
    for line in [
        "u1,4,100",
        "u2,two,101", // 3: not a number
        "u1,5",       // 4: too few fields
        "u3,1,102",
        ",4,103",          // 6: required user missing
        "u2,3,not-a-time", // 7: not a time
        "u2,3,104,extra",  // 8: too many fields
        "u1,2,105",
    ] {
        csv.extend_from_slice(line.as_bytes());
        csv.push(b'\n');
    }
    csv.extend_from_slice(b"u\xff\xfe,3,106\n"); // 10: invalid UTF-8
    csv.extend_from_slice(b"u4,3,90\n"); // 11: late: its epoch closed when time 106 was read
    std::fs::write(dir.path().join("ratings.csv"), &csv).expect("data");
    let out = dir.path().join("out");
    check(&run(&spec, &out, &[], &[]));

    let letters = json_lines(&out.join("dead-letter.jsonl"));
    let lines: Vec<u64> = letters
        .iter()
        .map(|letter| letter["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![3, 4, 6, 7, 8, 10, 11]);
    for letter in &letters {
        assert!(
            letter["file"]
                .as_str()
                .expect("file")
                .ends_with("ratings.csv"),
            "{letter}"
        );
        assert_eq!(letter["source"], "ratings");
        assert!(!letter["reason"].as_str().expect("reason").is_empty());
    }
    assert!(
        letters[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("score"),
        "{}",
        letters[0]
    );
    assert_eq!(letters[0]["raw"], "u2,two,101");
    assert!(
        letters[6]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("late"),
        "{}",
        letters[6]
    );

    let summary = summary(&out);
    assert_eq!(summary["facts_read"], 3);
    assert_eq!(summary["dead_lettered"], 7);
    assert_eq!(summary["examples"], 3);
    // each example leaves the feature lookups once
    assert_eq!(summary["examples_in"], 3);
    assert_eq!(summary["lookup_outputs"], 3);
    assert_eq!(summary["join_output_per_example"], 1.0);
    assert_eq!(summary["sources"]["ratings"]["malformed"], 6);
    assert_eq!(summary["sources"]["ratings"]["late_dropped"], 1);
}

#[test]
fn a_bad_spec_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spec = TinySpec {
        label_field: "scor".to_owned(),
        ..ratings_spec()
    }
    .write(dir.path());
    let out = dir.path().join("out");
    let output = pooch(&[
        "run",
        "--pipeline",
        spec.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("`label.field`") && message.contains("no field `scor`"),
        "{message}"
    );
}

#[test]
fn the_published_snapshot_is_the_final_model() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    generate(&data, 200, 4);
    let out = dir.path().join("out");
    check(&run_sniffable(&data, &out, &["-w", "1"]));
    let summary = summary(&out);

    let store = pooch::publish::SnapshotStore::open(out.join("snapshots"), 10).expect("store");
    let newest = store.newest_good("pooch-predictor").expect("listing");
    let snapshot = newest.snapshot.expect("a snapshot loads");
    assert!(newest.skipped.is_empty());
    assert_eq!(
        Some(snapshot.model.version),
        summary["model_versions"].as_u64()
    );
    assert_eq!(
        Json::from(pooch::runtime::summary::model_digest(&snapshot.model)),
        summary["model_digest"]
    );
    assert_eq!(
        snapshot.meta.spec_hash,
        summary["spec_hash"].as_str().expect("hash")
    );

    // a second run on the same directory continues the numbering
    check(&run_sniffable(&data, &out, &["-w", "1"]));
    let again = pooch::publish::SnapshotStore::open(out.join("snapshots"), 10).expect("store");
    let newest = again
        .newest_good("pooch-predictor")
        .expect("listing")
        .snapshot
        .expect("loads");
    assert_eq!(newest.model.version, 2 * snapshot.model.version);
}
