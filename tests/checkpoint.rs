//! Checkpoints end to end: a run aborted after its checkpoints and started again on the same
//! `--out` resumes, and its outputs equal those of an uninterrupted run, at 1 and 2 workers; a
//! damaged newest checkpoint is refused, named, and the one before it used.

pub mod support;

use std::path::Path;

use serde_json::Value as Json;
use support::{check, generate, json_lines, run, sniffable_spec};

/// Summary fields that depend on wall-clock time or on the snapshot writer's timing, in any
/// two runs alike.
const TIMING_SUMMARY: &[&str] = &[
    "elapsed_secs",
    "facts_per_sec",
    "max_read_ahead_epochs",
    "snapshots",
];

/// Metrics fields that depend on timing in any run.
const TIMING_METRICS: &[&str] = &["elapsed_secs", "reading"];

/// Checkpoints every 20 epochs, none by time.
const EVERY: &[&str] = &["--checkpoint-epochs", "20", "--checkpoint-secs", "0"];

fn without(mut value: Json, fields: &[&str]) -> Json {
    if let Some(object) = value.as_object_mut() {
        for field in fields {
            object.remove(*field);
        }
    }
    value
}

/// What a run's outputs are, timing aside: the summary, the metrics lines, the answers
/// (sorted: their order within an epoch is the file's, but compare as sets of lines too) and
/// the dead letters.
fn outputs(out: &Path) -> (Json, Vec<Json>, Vec<String>, String) {
    let summary = without(support::summary(out), TIMING_SUMMARY);
    let metrics = json_lines(&out.join("metrics.jsonl"))
        .into_iter()
        .map(|line| without(line, TIMING_METRICS))
        .collect();
    let answers = std::fs::read_to_string(out.join("answers.jsonl")).unwrap_or_default();
    let mut answers: Vec<String> = answers.lines().map(str::to_owned).collect();
    answers.sort();
    let dead = std::fs::read_to_string(out.join("dead-letter.jsonl")).unwrap_or_default();
    (summary, metrics, answers, dead)
}

/// The checkpoint files in `out`, oldest first.
fn checkpoints(out: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "ckpt"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Runs uninterrupted, then aborted after `abort_after` checkpoints and resumed (with
/// `damage` applied to the checkpoints in between), and compares the two.
fn resumed_equals_uninterrupted(workers: &str, abort_after: u64, damage: impl Fn(&Path)) -> String {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    // large enough (likes.csv about 2 MB) that each of 2 workers reads a share: a worker
    // whose reading has ended declines later cuts, so no checkpoint would be taken
    generate(&data, 1500, 6);
    let queries = data.join("queries.jsonl");
    let data_arg = data.to_str().expect("utf-8");
    let mut extra = vec![
        "--data",
        data_arg,
        "--queries",
        queries.to_str().expect("utf-8"),
    ];
    extra.extend_from_slice(EVERY);
    let timely = ["-w", workers];

    let whole = dir.path().join("whole");
    check(&run(&sniffable_spec(), &whole, &extra, &timely));

    let resumed = dir.path().join("resumed");
    let abort = abort_after.to_string();
    let mut aborting = extra.clone();
    aborting.extend_from_slice(&["--debug-abort-after-checkpoints", &abort]);
    let killed = run(&sniffable_spec(), &resumed, &aborting, &timely);
    assert!(
        !killed.status.success(),
        "the run was to abort after {abort_after} checkpoints"
    );
    let written = checkpoints(&resumed);
    assert!(!written.is_empty(), "no checkpoint before the abort");
    assert!(
        !resumed.join("summary.json").exists(),
        "an aborted run wrote its summary"
    );
    damage(&resumed);

    let second = run(&sniffable_spec(), &resumed, &extra, &timely);
    check(&second);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("resuming from"),
        "the second run did not resume:\n{stderr}"
    );

    let (whole_summary, whole_metrics, whole_answers, whole_dead) = outputs(&whole);
    let (summary, metrics, answers, dead) = outputs(&resumed);
    assert_eq!(summary, whole_summary, "summary.json at -w {workers}");
    assert_eq!(
        metrics.len(),
        whole_metrics.len(),
        "metrics.jsonl lines at -w {workers}: none lost or doubled"
    );
    for (index, (line, want)) in metrics.iter().zip(&whole_metrics).enumerate() {
        assert_eq!(
            line,
            want,
            "metrics.jsonl line {} at -w {workers}",
            index + 1
        );
    }
    assert_eq!(answers, whole_answers, "answers.jsonl at -w {workers}");
    assert!(!answers.is_empty(), "the probe queries were answered");
    assert_eq!(dead, whole_dead, "dead-letter.jsonl at -w {workers}");
    stderr.into_owned()
}

#[test]
fn a_run_aborted_after_its_checkpoints_resumes_to_the_same_outputs_at_1_worker() {
    let _ = resumed_equals_uninterrupted("1", 3, |_| {});
}

#[test]
fn a_run_aborted_after_its_checkpoints_resumes_to_the_same_outputs_at_2_workers() {
    let _ = resumed_equals_uninterrupted("2", 2, |_| {});
}

#[test]
fn a_damaged_newest_checkpoint_is_refused_and_the_one_before_it_used() {
    let damaged = std::cell::RefCell::new(String::new());
    let stderr = resumed_equals_uninterrupted("2", 2, |out| {
        let files = checkpoints(out);
        assert!(
            files.len() >= 2,
            "two checkpoints to choose from: {files:?}"
        );
        let newest = files.last().expect("a checkpoint");
        let mut bytes = std::fs::read(newest).expect("the checkpoint");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(newest, bytes).expect("damage the checkpoint");
        *damaged.borrow_mut() = newest
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
    });
    let damaged = damaged.into_inner();
    assert!(
        stderr.contains(&damaged),
        "the refusal names {damaged}:\n{stderr}"
    );
}

#[test]
fn fresh_starts_over_and_removes_the_checkpoints() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 60, 2);
    let out = dir.path().join("out");
    let mut extra = vec!["--data", data.to_str().expect("utf-8")];
    extra.extend_from_slice(EVERY);
    let mut aborting = extra.clone();
    aborting.extend_from_slice(&["--debug-abort-after-checkpoints", "1"]);
    let killed = run(&sniffable_spec(), &out, &aborting, &["-w", "1"]);
    assert!(!killed.status.success());
    assert!(!checkpoints(&out).is_empty());
    let mut fresh = extra.clone();
    fresh.push("--fresh");
    let second = run(&sniffable_spec(), &out, &fresh, &["-w", "1"]);
    check(&second);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !stderr.contains("resuming from"),
        "--fresh resumed:\n{stderr}"
    );
}

#[test]
fn checkpoints_are_off_by_default_in_the_library_and_the_command_line() {
    assert!(!pooch::runtime::CheckpointOptions::default().enabled());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("data");
    generate(&data, 60, 2);
    let out = dir.path().join("out");
    check(&run(
        &sniffable_spec(),
        &out,
        &["--data", data.to_str().expect("utf-8")],
        &["-w", "1"],
    ));
    assert!(
        checkpoints(&out).is_empty(),
        "a default run took checkpoints"
    );
}
