//! The supervisor's decisions as records, and `decisions.jsonl`, the file they are appended to.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::SupervisorError;
use crate::files::io_error;

/// The name of the decisions file, in the run's output directory (the snapshot store's parent).
pub const DECISIONS_FILE_NAME: &str = "decisions.jsonl";

/// Examples and their example-weighted mean logloss over a range of epochs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowMetrics {
    /// The first epoch of the range.
    pub first_epoch: u64,
    /// The last epoch of the range.
    pub last_epoch: u64,
    /// Examples in the range.
    pub examples: u64,
    /// Their mean logloss; NaN (`null` in JSON) when there are none or one was not a number.
    #[serde(with = "finite_or_null")]
    pub logloss: f64,
}

/// `f64` as a JSON number, or `null` when not finite (JSON has no NaN); `null` reads back as NaN.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else {
            serializer.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
    }
}

/// What a decision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new version became the supervisor's choice, and serves.
    Promoted,
    /// A new version was refused.
    Rejected,
    /// A new version was left undecided (no evidence to compare).
    Candidate,
    /// A pin kept serving what it serves: a new version passed promotion (it becomes the
    /// choice, and serves on unpin), or the pinned version degraded (no rollback while pinned).
    HeldByPin,
    /// The serving version was rolled back; `serving` says what serves now.
    RolledBack,
    /// The serving version degraded, but there is no good version before it: it keeps serving.
    Kept,
    /// An operator pinned a version.
    Pinned,
    /// An operator released the pin.
    Unpinned,
    /// An operator's command could not be carried out; the reason says why.
    Refused,
    /// `pooch models pin` wrote a pin to the control file.
    PinRequested,
    /// `pooch models unpin` wrote an unpin to the control file.
    UnpinRequested,
    /// `pooch models rollback` wrote a rollback to the control file.
    RollbackRequested,
}

/// Who decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The supervisor's rules.
    Supervisor,
    /// An operator's command, carried out by the supervisor.
    Operator,
    /// The command line, recording a request that a running supervisor carries out later.
    Cli,
}

/// Which figure a new version was compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceKind {
    /// The serving version's live logloss over the window.
    Live,
    /// The chosen version's window logloss when it was promoted (its figure).
    Baseline,
}

/// What a new version was compared with.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// The version compared with (the supervisor's choice).
    pub version: u64,
    /// Which of its figures.
    pub kind: ReferenceKind,
    /// The figure.
    pub metrics: WindowMetrics,
}

/// The metrics a decision considered; only those that apply are present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionMetrics {
    /// The version's own training round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<WindowMetrics>,
    /// The version's window: the rounds of the last `window_epochs` epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowMetrics>,
    /// What the window was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// The serving version's live metrics over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<WindowMetrics>,
    /// The serving version's baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The limit the compared figure had to stay within.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
    /// The constant model's logloss (the running positive rate) on the same examples as the
    /// window or the live window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<f64>,
    /// The version's predictions collapsed: all the same, or all at 0 or 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapsed: Option<bool>,
}

/// One decision, as one line of `decisions.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Wall-clock time of the decision, unix milliseconds (supplied by the caller).
    pub time_unix_ms: u64,
    /// The model.
    pub model: String,
    /// The version decided about (for `rolled_back`, the version rolled back; `None` for an
    /// unpin or a refused command that named none).
    pub version: Option<u64>,
    /// What was done.
    pub action: Action,
    /// Who decided.
    pub by: Actor,
    /// Why, in words, with the numbers.
    pub reason: String,
    /// The metrics considered.
    pub metrics: DecisionMetrics,
    /// The version serving after the decision (for `by: cli`, not known: `None`).
    pub serving: Option<u64>,
    /// The version pinned after the decision (for `by: cli`, the pin requested).
    pub pinned: Option<u64>,
}

/// `decisions.jsonl`, appended to one line per decision.
///
/// Each line is written with a single `write` on a file opened for appending, so lines from
/// the running server and from `pooch models` commands do not interleave. Lines are not
/// synced to disk one by one: a crash of the machine may lose the last few.
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    file: File,
}

/// The decisions read back from a file.
#[derive(Debug, Default)]
pub struct DecisionsRead {
    /// The decisions, in file order.
    pub decisions: Vec<Decision>,
    /// Lines that did not parse: line number (from 1) and why.
    pub malformed: Vec<(usize, String)>,
}

impl DecisionLog {
    /// Where the decisions of a run whose snapshot store is `store_dir` go: beside the store,
    /// in the run's output directory (`OUT/decisions.jsonl` for the store `OUT/snapshots`).
    pub fn path_for_store(store_dir: &Path) -> PathBuf {
        match store_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.join(DECISIONS_FILE_NAME),
            _ => PathBuf::from(DECISIONS_FILE_NAME),
        }
    }

    /// Opens a decisions file for appending, creating it (and its directory) if needed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, SupervisorError> {
        let path = path.into();
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            fs::create_dir_all(parent)
                .map_err(io_error(parent, "create the decisions file's directory"))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path, "open the decisions file"))?;
        Ok(DecisionLog { path, file })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one decision as one line, and flushes it.
    pub fn append(&mut self, decision: &Decision) -> Result<(), SupervisorError> {
        let mut line = serde_json::to_vec(decision).map_err(|source| SupervisorError::Encode {
            path: self.path.clone(),
            what: "a decision",
            source,
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(io_error(&self.path, "append to the decisions file"))?;
        Ok(())
    }

    /// Appends decisions in order.
    pub fn append_all(&mut self, decisions: &[Decision]) -> Result<(), SupervisorError> {
        decisions
            .iter()
            .try_for_each(|decision| self.append(decision))
    }

    /// Reads a decisions file; a missing file has none. Malformed lines are reported, not fatal.
    pub fn read(path: &Path) -> Result<DecisionsRead, SupervisorError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(DecisionsRead::default());
            }
            Err(error) => return Err(io_error(path, "open the decisions file")(error).into()),
        };
        let mut read = DecisionsRead::default();
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(io_error(path, "read the decisions file"))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(&line) {
                Ok(decision) => read.decisions.push(decision),
                Err(error) => read.malformed.push((index + 1, error.to_string())),
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value as Json;

    use super::super::fixtures::{NOW, evidence, published, supervisor};

    #[test]
    fn decisions_file_lines_parse_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = DecisionLog::path_for_store(&dir.path().join("snapshots"));
        assert_eq!(path, dir.path().join(DECISIONS_FILE_NAME));
        let mut supervisor = supervisor();
        let mut decisions = Vec::new();
        for version in [
            published(1, 0, vec![evidence(0, 100, 0.69)]),
            published(2, 1, vec![evidence(1, 100, 0.5)]),
            published(3, 2, vec![evidence(2, 100, f64::NAN)]),
        ] {
            decisions.extend(supervisor.on_published(version, NOW).expect("publish"));
        }
        decisions.extend(supervisor.pin(1, NOW + 1).expect("pin"));
        decisions.extend(supervisor.unpin(NOW + 2).expect("unpin"));
        {
            let mut log = DecisionLog::open(&path).expect("open");
            log.append_all(&decisions[..3]).expect("append");
        }
        // a second writer appends to the same file
        DecisionLog::open(&path)
            .expect("open")
            .append_all(&decisions[3..])
            .expect("append");

        let text = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7);
        for line in &lines {
            let value: Json = serde_json::from_str(line).expect("each line is JSON");
            for field in [
                "time_unix_ms",
                "model",
                "version",
                "action",
                "by",
                "reason",
                "metrics",
            ] {
                assert!(value.get(field).is_some(), "{field} missing in {line}");
            }
        }
        let read = DecisionLog::read(&path).expect("read back");
        assert!(read.malformed.is_empty());
        let actions: Vec<Action> = read
            .decisions
            .iter()
            .map(|decision| decision.action)
            .collect();
        assert_eq!(
            actions,
            [
                Action::Candidate,
                Action::Candidate,
                Action::Promoted,
                Action::Candidate,
                Action::Rejected,
                Action::Pinned,
                Action::Unpinned
            ]
        );
        // NaN is written as null and read back as NaN
        let nan_round = read.decisions[3].metrics.round.expect("round");
        assert!(nan_round.logloss.is_nan());
        assert!(lines[3].contains("\"logloss\":null"));
        // what was read writes the same lines again
        for (decision, line) in read.decisions.iter().zip(&lines) {
            assert_eq!(serde_json::to_string(decision).expect("encode"), *line);
        }

        fs::write(&path, format!("{}\nnot json\n", lines[0])).expect("write");
        let read = DecisionLog::read(&path).expect("read back");
        assert_eq!(read.decisions.len(), 1);
        assert_eq!(read.malformed.len(), 1);
        assert_eq!(read.malformed[0].0, 2);
    }
}
