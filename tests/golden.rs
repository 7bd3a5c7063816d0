//! Golden files: what a user sees of a run, pinned. Each case in `tests/golden/<case>/` is a
//! spec, its input files and maybe `queries.jsonl`; `expected/` holds the answers, the
//! deterministic fields of the summary and the dead letters of a run at `-w 1`.
//!
//! At `-w 2` the same run must give what does not depend on the layout: the same facts,
//! counts, features and dead letters. The model does depend on it (workers' updates are
//! merged), so the probabilities and the model's scores and digest are pinned at `-w 1` only.
//!
//! When an output changes on purpose, `./run.sh bless` (`POOCH_BLESS=1` for this test)
//! rewrites `expected/`; review the change with `git diff tests/golden`.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

pub mod support;
use support::{check, root, run};

/// The cases, each a folder of `tests/golden/`.
const CASES: &[&str] = &["ratings", "sniffable"];

/// Summary fields that vary from run to run with timing: never pinned.
const TIMING: &[&str] = &[
    "elapsed_secs",
    "facts_per_sec",
    "max_read_ahead_epochs",
    "snapshots",
];

/// Summary fields that depend on the number of workers: pinned at `-w 1` only.
const LAYOUT: &[&str] = &[
    "auc",
    "logloss",
    "model_digest",
    // every variant's figures, as the champion's top-level ones
    "models",
    "online_auc",
    "online_logloss",
    "workers",
];

/// Answer fields that depend on the number of workers: the model's.
const ANSWER_LAYOUT: &[&str] = &["probability"];

#[test]
fn ratings_with_malformed_lines_and_retractions() {
    golden("ratings");
}

#[test]
fn sniffable_with_probe_queries() {
    golden("sniffable");
}

#[test]
fn a_diff_shows_the_changed_lines_with_context() {
    let old = "a\nb\nc\nd\ne\nf\n";
    let new = "a\nb\nC\nd\ne\nf\ng\n";
    assert_eq!(diff(old, new), "  b\n- c\n+ C\n  d\n  ...\n  f\n+ g\n");
    assert_eq!(diff(old, old), "");
}

#[test]
fn every_case_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.join("spec.toml").is_file())
        .filter_map(|path| Some(path.file_name()?.to_str()?.to_owned()))
        .collect();
    found.sort();
    assert_eq!(found, CASES, "each case in tests/golden needs a test here");
}

fn golden_dir() -> PathBuf {
    root().join("tests/golden")
}

/// The user-visible outputs of a run, normalised: files in sorted order, paths relative to
/// the case, timing left out.
#[derive(Debug, PartialEq)]
struct Outputs {
    answers: String,
    summary: String,
    dead_letters: String,
}

impl Outputs {
    /// The outputs of the run in `out` of the case in `case`.
    fn of_run(case: &Path, out: &Path) -> Outputs {
        let mut answers = lines(&out.join("answers.jsonl"));
        answers.sort_by(|a, b| answer_order(a, b));
        let mut summary = support::summary(out);
        for key in TIMING {
            summary
                .as_object_mut()
                .expect("the summary is an object")
                .remove(*key);
        }
        let prefix = format!("{}/", case.display());
        let mut letters: Vec<Json> = lines(&out.join("dead-letter.jsonl"))
            .iter()
            .map(|line| {
                let mut letter: Json = serde_json::from_str(line).expect("a JSON dead letter");
                if let Some(file) = letter["file"].as_str() {
                    letter["file"] = Json::from(file.strip_prefix(&prefix).unwrap_or(file));
                }
                letter
            })
            .collect();
        letters.sort_by(|a, b| {
            (a["file"].as_str(), a["line"].as_u64()).cmp(&(b["file"].as_str(), b["line"].as_u64()))
        });
        Outputs {
            answers: joined(answers),
            summary: format!(
                "{}\n",
                serde_json::to_string_pretty(&summary).expect("serialisable")
            ),
            dead_letters: joined(letters.iter().map(Json::to_string)),
        }
    }

    /// The expected outputs of a case.
    fn expected(case: &Path) -> Outputs {
        let read = |name: &str| std::fs::read_to_string(case.join("expected").join(name));
        Outputs {
            answers: read("answers.jsonl").unwrap_or_default(),
            summary: read("summary.json").unwrap_or_default(),
            dead_letters: read("dead-letter.jsonl").unwrap_or_default(),
        }
    }

    /// Writes the outputs as the case's expected ones.
    fn bless(&self, case: &Path) {
        let dir = case.join("expected");
        std::fs::create_dir_all(&dir).expect("expected/ can be made");
        for (name, text) in self.files() {
            let path = dir.join(name);
            if text.is_empty() {
                // no dead letters: no file
                if path.exists() {
                    std::fs::remove_file(&path).expect("removable");
                }
            } else {
                std::fs::write(&path, text).expect("writable");
            }
        }
    }

    /// What does not depend on the layout.
    fn layout_independent(&self) -> Outputs {
        let answers = self.answers.lines().map(|line| {
            let mut answer: Json = serde_json::from_str(line).expect("a JSON answer");
            for key in ANSWER_LAYOUT {
                if let Some(object) = answer.as_object_mut() {
                    object.remove(*key);
                }
            }
            answer.to_string()
        });
        let summary = match serde_json::from_str::<Json>(&self.summary) {
            Ok(mut summary) => {
                for key in LAYOUT {
                    if let Some(object) = summary.as_object_mut() {
                        object.remove(*key);
                    }
                }
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&summary).expect("serialisable")
                )
            }
            // not blessed yet: nothing to compare with
            Err(_) => self.summary.clone(),
        };
        Outputs {
            answers: joined(answers),
            summary,
            dead_letters: self.dead_letters.clone(),
        }
    }

    fn files(&self) -> [(&'static str, &str); 3] {
        [
            ("answers.jsonl", &self.answers),
            ("summary.json", &self.summary),
            ("dead-letter.jsonl", &self.dead_letters),
        ]
    }

    /// A diff of each file that differs from `expected`; empty when none does.
    fn differences(&self, expected: &Outputs) -> String {
        let mut report = String::new();
        for ((name, actual), (_, wanted)) in self.files().into_iter().zip(expected.files()) {
            if actual != wanted {
                writeln!(
                    report,
                    "--- expected/{name}\n+++ this run\n{}",
                    diff(wanted, actual)
                )
                .expect("a string");
            }
        }
        report
    }
}

/// Runs a case at `-w 1` and compares (or, with `POOCH_BLESS=1`, writes) its expected
/// outputs, then at `-w 2` and compares what does not depend on the layout.
fn golden(name: &str) {
    let case = golden_dir().join(name);
    let bless = std::env::var_os("POOCH_BLESS").is_some_and(|value| value == "1");
    let one = run_case(&case, 1);
    if bless {
        one.bless(&case);
    }
    let expected = Outputs::expected(&case);
    let mut report = one.differences(&expected);
    let two = run_case(&case, 2);
    let layout = two
        .layout_independent()
        .differences(&expected.layout_independent());
    if !layout.is_empty() {
        writeln!(
            report,
            "at -w 2, the outputs that do not depend on the layout differ from expected/:\n{layout}"
        )
        .expect("a string");
    }
    assert!(
        report.is_empty(),
        "golden case `{name}` (tests/golden/{name}) differs:\n{report}\nIf the change is intended, run `./run.sh bless` and review `git diff tests/golden`."
    );
}

/// The case's spec over its inputs (and queries) at `workers` workers.
fn run_case(case: &Path, workers: usize) -> Outputs {
    let out = tempfile::tempdir().expect("temporary directory");
    let queries = case.join("queries.jsonl");
    let mut extra = Vec::new();
    if queries.is_file() {
        extra = vec!["--queries", queries.to_str().expect("utf-8")];
    }
    check(&run(
        &case.join("spec.toml"),
        out.path(),
        &extra,
        &["-w", &workers.to_string()],
    ));
    Outputs::of_run(case, out.path())
}

/// A file's lines; none when it does not exist.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Lines joined, each ending in a newline.
fn joined(lines: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    lines.into_iter().fold(String::new(), |mut text, line| {
        text.push_str(line.as_ref());
        text.push('\n');
        text
    })
}

/// Answers by query id, then line (error lines without an id have the line).
fn answer_order(a: &str, b: &str) -> Ordering {
    let key = |line: &str| {
        let answer: Json = serde_json::from_str(line).expect("a JSON answer");
        (answer["query"].to_string(), answer["line"].as_u64())
    };
    key(a).cmp(&key(b))
}

/// A line diff of `old` to `new`: changed lines with `-` and `+`, one line of context around
/// them and `...` for the lines left out between, from a longest common subsequence.
fn diff(old: &str, new: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // common[i][j]: the longest common subsequence of old[i..] and new[j..]
    let mut common = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let mut edits = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            edits.push((' ', old[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < old.len() && (j == new.len() || common[i + 1][j] >= common[i][j + 1]) {
            edits.push(('-', old[i]));
            i += 1;
        } else {
            edits.push(('+', new[j]));
            j += 1;
        }
    }
    let changed = |index: usize| edits.get(index).is_some_and(|(sign, _)| *sign != ' ');
    let mut text = String::new();
    let mut skipped = false;
    for (index, (sign, line)) in edits.iter().enumerate() {
        let near = changed(index) || changed(index + 1) || (index > 0 && changed(index - 1));
        if near {
            if skipped && !text.is_empty() {
                text.push_str("  ...\n");
            }
            writeln!(text, "{sign} {line}").expect("a string");
            skipped = false;
        } else {
            skipped = true;
        }
    }
    text
}
