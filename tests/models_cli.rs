//! `pooch models`: listing a snapshot store written by `SnapshotStore::write`, with the
//! supervisor's decisions, and pin, unpin and rollback through the control file, including
//! the refusal to pin a missing, damaged or non-finite version.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dataflows::publish::model::{Evidence, ModelVersion, RoundMetrics, Weights};
use pooch::publish::{SnapshotMeta, SnapshotStore};
use pooch::serve::supervisor::{
    Action, Actor, Control, ControlWatcher, DecisionLog, Supervisor, SupervisorConfig, spare_served,
};

pub mod support;
use support::{pooch, sniffable_spec};

const MODEL: &str = "pooch-predictor";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The examples version `scored_by` scored, half positive, at `logloss`: they arrive with the
/// next version's round, and judge it.
fn evidence(scored_by: u64, logloss: f64) -> Vec<Evidence> {
    vec![Evidence {
        scored_by,
        examples: 100,
        positives: 50,
        loss_sum: 100.0 * logloss,
        min_probability: 0.1,
        max_probability: 0.9,
        extreme: 0,
    }]
}

fn version(number: u64, logloss: f64, finite: bool) -> ModelVersion {
    let mut dense = vec![0.0f32; 8];
    dense[0] = 0.25 * number as f32;
    dense[3] = if finite { -1.5 } else { f32::NAN };
    ModelVersion {
        name: MODEL.to_owned(),
        version: number,
        epoch: number - 1,
        published_at: 3_600 * number,
        bits: 3,
        weights: Arc::new(Weights::from_dense(&dense)),
        metrics: RoundMetrics {
            examples: 100,
            logloss,
            scored: Vec::new(),
        },
    }
}

/// OUT/snapshots with versions 1 (0.5), 2 (0.5), 3 (non-finite) and 4 (0.9, rejected by the
/// supervisor), and the supervisor's decisions about them in OUT/decisions.jsonl.
fn run_output() -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().expect("temporary directory");
    let store_dir = out.path().join("snapshots");
    let mut store = SnapshotStore::open(&store_dir, 10).expect("open store");
    let mut supervisor = Supervisor::new(MODEL, SupervisorConfig::default()).expect("supervisor");
    let mut log = DecisionLog::open(DecisionLog::path_for_store(&store_dir)).expect("log");
    // each version's round holds the evidence of the one before; a fifth round, never
    // written to the store, brings version 4's
    let qualities = [0.5, 0.5, 0.4, 0.9];
    for (number, model) in [
        version(1, 0.5, true),
        version(2, 0.5, true),
        version(3, 0.4, false),
        version(4, 0.9, true),
        version(5, 0.5, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut model = model;
        if number > 0 {
            model.metrics.scored = evidence(number as u64, qualities[number - 1]);
        }
        if model.version <= 4 {
            store
                .write(&model, &SnapshotMeta::default())
                .expect("write snapshot");
        }
        let decisions = supervisor
            .on_version(&model, 1_770_000_000_000)
            .expect("supervise");
        log.append_all(&decisions).expect("log");
    }
    assert_eq!(supervisor.serving(), Some(2));
    (out, store_dir)
}

fn store_arg(store: &Path) -> String {
    store.to_str().expect("UTF-8 path").to_owned()
}

#[test]
fn list_shows_versions_metrics_and_statuses() {
    let (_out, store) = run_output();
    let output = pooch(&["models", "list", "--store", &store_arg(&store)]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listing = text(&output.stdout);
    assert!(
        listing.contains("model pooch-predictor: serving 2, pinned none"),
        "{listing}"
    );
    let row = |number: &str| {
        listing
            .lines()
            .find(|line| line.split_whitespace().next() == Some(number))
            .unwrap_or_else(|| panic!("no row for version {number} in\n{listing}"))
            .to_owned()
    };
    // written with an empty meta: the line of spec hash ""
    assert!(
        row("1").contains("0.5000  finite      spec:                  promoted"),
        "{listing}"
    );
    assert!(row("2").contains("serving (promoted)"), "{listing}");
    assert!(
        row("3").contains("NON-FINITE")
            && row("3").contains("rejected: its weights are not all finite"),
        "{listing}"
    );
    assert!(
        row("4").contains("0.9000  finite")
            && row("4").contains("rejected: no better than the constant model"),
        "{listing}"
    );
    assert!(
        row("4").split_whitespace().nth(1) == Some("3"),
        "epoch of version 4: {listing}"
    );

    let only = pooch(&[
        "models",
        "list",
        "--store",
        &store_arg(&store),
        "--model",
        MODEL,
    ]);
    assert!(only.status.success());
    assert_eq!(text(&only.stdout), listing);
}

#[test]
fn pin_unpin_and_rollback_reach_a_running_supervisor_through_the_control_file() {
    let (out, store) = run_output();
    let store_text = store_arg(&store);
    // the "running" supervisor, with the same versions
    let mut supervisor = Supervisor::new(MODEL, SupervisorConfig::default()).expect("supervisor");
    for number in [1, 2, 3] {
        let mut model = version(number, 0.5, true);
        model.metrics.scored = evidence(number - 1, 0.5);
        supervisor.on_version(&model, 0).expect("supervise");
    }
    assert_eq!(supervisor.serving(), Some(2));
    let mut watcher = ControlWatcher::new(&store, MODEL).expect("watcher");

    let output = pooch(&[
        "models",
        "pin",
        "--store",
        &store_text,
        "--model",
        MODEL,
        "--version",
        "1",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("pin of version 1 requested"));
    let control = Control::load(&store, MODEL).expect("control");
    assert_eq!((control.generation, control.pin), (1, Some(1)));

    let applied = watcher.poll(&mut supervisor, 0).expect("poll");
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].action, Action::Pinned);
    assert_eq!(supervisor.serving(), Some(1));

    for command in ["unpin", "rollback"] {
        let output = pooch(&["models", command, "--store", &store_text, "--model", MODEL]);
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let applied = watcher.poll(&mut supervisor, 0).expect("poll");
    let actions: Vec<Action> = applied.iter().map(|decision| decision.action).collect();
    assert_eq!(actions, [Action::Unpinned, Action::RolledBack]);
    assert_eq!(supervisor.serving(), Some(1));
    assert!(watcher.poll(&mut supervisor, 0).expect("poll").is_empty());

    // the requests are recorded beside the store, after the supervisor's decisions
    let read = DecisionLog::read(&out.path().join("decisions.jsonl")).expect("decisions");
    assert!(read.malformed.is_empty());
    let requests: Vec<(Action, Option<u64>)> = read
        .decisions
        .iter()
        .filter(|decision| decision.by == Actor::Cli)
        .map(|decision| (decision.action, decision.pinned))
        .collect();
    assert_eq!(
        requests,
        [
            (Action::PinRequested, Some(1)),
            (Action::UnpinRequested, None),
            (Action::RollbackRequested, None)
        ]
    );
    let listing = text(&pooch(&["models", "list", "--store", &store_text]).stdout);
    assert!(
        listing.contains("CONTROL.json generation 3, pin requested: none"),
        "{listing}"
    );
}

#[test]
fn pin_refuses_what_cannot_serve_with_status_2() {
    let (_out, store) = run_output();
    let store_text = store_arg(&store);
    let pin = |model: &str, number: &str| {
        pooch(&[
            "models",
            "pin",
            "--store",
            &store_text,
            "--model",
            model,
            "--version",
            number,
        ])
    };

    let missing = pin(MODEL, "9");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr)
            .contains("has no version 9 in the snapshot store (versions there: 1, 2, 3, 4)"),
        "{}",
        text(&missing.stderr)
    );

    let non_finite = pin(MODEL, "3");
    assert_eq!(non_finite.status.code(), Some(2));
    assert!(text(&non_finite.stderr).contains("weights are not all finite"));

    // one flipped byte in version 1's weights: the checksum no longer matches
    let file = store.join(MODEL).join("v00000001.snap");
    let mut bytes = fs::read(&file).expect("read snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&file, &bytes).expect("damage snapshot");
    let damaged = pin(MODEL, "1");
    assert_eq!(damaged.status.code(), Some(2));
    let message = text(&damaged.stderr);
    assert!(
        message.contains("refusing to pin model pooch-predictor version 1"),
        "{message}"
    );
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(message.contains("v00000001.snap"), "{message}");

    let unknown = pin("no-such-model", "1");
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("models there: pooch-predictor"));

    // nothing was requested
    let control = Control::load(&store, MODEL).expect("control");
    assert_eq!((control.generation, control.pin), (0, None));
    assert!(!store.join(MODEL).join("CONTROL.json").exists());

    // the damaged version is listed as damaged, the others as before
    let listing = text(&pooch(&["models", "list", "--store", &store_text]).stdout);
    assert!(listing.contains("damaged:"), "{listing}");

    let good = pin(MODEL, "2");
    assert!(good.status.success(), "{}", text(&good.stderr));
}

#[test]
fn a_missing_store_or_bad_usage_exits_2() {
    let out = tempfile::tempdir().expect("temporary directory");
    let missing = out.path().join("nowhere");
    let list = pooch(&["models", "list", "--store", &store_arg(&missing)]);
    assert_eq!(list.status.code(), Some(2));
    assert!(text(&list.stderr).contains("no snapshot store at"));
    assert!(!missing.exists(), "listing must not create a store");

    let no_version = pooch(&[
        "models",
        "pin",
        "--store",
        &store_arg(out.path()),
        "--model",
        MODEL,
    ]);
    assert_eq!(no_version.status.code(), Some(2));
    let bad_name = pooch(&[
        "models",
        "unpin",
        "--store",
        &store_arg(out.path()),
        "--model",
        "../escape",
    ]);
    assert_eq!(bad_name.status.code(), Some(2));
}

/// The store's versions by file name.
fn stored(store: &Path) -> Vec<u64> {
    let store = SnapshotStore::open(store, 1).expect("the store");
    let listed = store.list(MODEL).expect("a listing");
    listed.iter().map(|stored| stored.version).collect()
}

#[test]
fn retention_spares_the_version_the_decisions_say_serves() {
    let out = tempfile::tempdir().expect("temporary directory");
    let store_dir = out.path().join("snapshots");
    // keeps the newest 2, and what serves or would be rolled back to
    let mut store = spare_served(SnapshotStore::open(&store_dir, 2).expect("open store"));
    let mut supervisor = Supervisor::new(MODEL, SupervisorConfig::default()).expect("supervisor");
    let mut log = DecisionLog::open(DecisionLog::path_for_store(&store_dir)).expect("log");
    // versions 1 and 2 are promoted on the rounds after them; every later one is far worse
    // than the constant model
    for number in 1..=9 {
        let mut model = version(number, 0.5, true);
        if number > 1 {
            let quality = if number <= 3 { 0.5 } else { 2.0 };
            model.metrics.scored = evidence(number - 1, quality);
        }
        store
            .write(&model, &SnapshotMeta::default())
            .expect("write snapshot");
        let decisions = supervisor.on_version(&model, 0).expect("supervise");
        log.append_all(&decisions).expect("log");
    }
    assert_eq!(supervisor.serving(), Some(2));
    // version 2 serves, version 1 is where a rollback would go: both stay
    assert_eq!(stored(&store_dir), [1, 2, 8, 9]);

    // a pin asked for from the command line is spared too, from the next write on
    let pinned = pooch(&[
        "models",
        "pin",
        "--store",
        &store_arg(&store_dir),
        "--model",
        MODEL,
        "--version",
        "8",
    ]);
    assert!(pinned.status.success(), "{}", text(&pinned.stderr));
    for number in 10..=11 {
        store
            .write(&version(number, 0.5, true), &SnapshotMeta::default())
            .expect("write snapshot");
    }
    assert_eq!(stored(&store_dir), [1, 2, 8, 10, 11]);
}

#[test]
fn list_shows_each_versions_line_and_marks_other_lines_incompatible() {
    let out = tempfile::tempdir().expect("temporary directory");
    let store_dir = out.path().join("snapshots");
    let mut store = SnapshotStore::open(&store_dir, 10).expect("open store");
    let spec = pooch::spec::load(&sniffable_spec(), None).expect("the shipped spec");
    let ours = SnapshotMeta {
        features_hash: spec.features_hash.clone(),
        spec_hash: spec.hash.clone(),
        ..SnapshotMeta::default()
    };
    let theirs = SnapshotMeta {
        features_hash: "0123456789abcdef".to_owned(),
        ..SnapshotMeta::default()
    };
    for (number, meta) in [(1, &theirs), (2, &theirs), (3, &ours)] {
        store
            .write(&version(number, 0.5, true), meta)
            .expect("write snapshot");
    }
    let row = |listing: &str, number: &str| {
        listing
            .lines()
            .find(|line| line.split_whitespace().next() == Some(number))
            .unwrap_or_else(|| panic!("no row for version {number} in\n{listing}"))
            .to_owned()
    };
    let plain = pooch(&["models", "list", "--store", &store_arg(&store_dir)]);
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let listing = text(&plain.stdout);
    assert!(row(&listing, "1").contains("0123456789abcdef"), "{listing}");
    assert!(
        row(&listing, "3").contains(&spec.features_hash),
        "{listing}"
    );
    assert!(
        listing.contains("note: versions of 2 lines are in the store"),
        "{listing}"
    );

    let spec_arg = sniffable_spec().to_str().expect("UTF-8 path").to_owned();
    let checked = pooch(&[
        "models",
        "list",
        "--store",
        &store_arg(&store_dir),
        "--pipeline",
        &spec_arg,
    ]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let listing = text(&checked.stdout);
    for number in ["1", "2"] {
        let row = row(&listing, number);
        assert!(
            row.contains("incompatible with") && row.contains("features hash 0123456789abcdef"),
            "{listing}"
        );
    }
    assert!(!row(&listing, "3").contains("incompatible"), "{listing}");
    assert!(
        listing.contains(&format!("line of {spec_arg}: {}", spec.features_hash)),
        "{listing}"
    );

    let missing = pooch(&[
        "models",
        "list",
        "--store",
        &store_arg(&store_dir),
        "--pipeline",
        "/no/such/spec.toml",
    ]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
}
