//! The `pooch models` commands: list the versions in a snapshot store with their metrics and
//! statuses, and write operators' pin, unpin and rollback commands to a model's control file
//! for a running supervisor (see [`crate::serve::supervisor`]).
//!
//! Every command is recorded in the decisions file beside the store
//! ([`DecisionLog::path_for_store`]: `OUT/decisions.jsonl` for the store `OUT/snapshots`),
//! as a decision `by: "cli"`; the supervisor records what it then does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::files::io_error;
use crate::publish::{
    self, Snapshot, SnapshotError, SnapshotMeta, SnapshotStore, StoredVersion, validate_model_name,
};
use crate::runtime::serving_setup::compatibility;
use crate::serve::supervisor::{
    Action, Actor, CONTROL_FILE_NAME, Command, Control, Decision, DecisionLog, DecisionMetrics,
    SupervisorError,
};
use crate::spec::Spec;

/// What went wrong in a `pooch models` command.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    /// The store directory does not exist.
    #[error("no snapshot store at {}: the directory does not exist", path.display())]
    NoStore {
        /// The directory given.
        path: PathBuf,
    },
    /// No such model in the store.
    #[error("model {model:?} is not in the snapshot store {} (models there: {})", store.display(), list_or_none(known))]
    UnknownModel {
        /// The store.
        store: PathBuf,
        /// The model asked for.
        model: String,
        /// The models present.
        known: Vec<String>,
    },
    /// No such version of the model in the store.
    #[error(
        "model {model} has no version {version} in the snapshot store (versions there: {})",
        list_or_none(present)
    )]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        version: u64,
        /// The versions present.
        present: Vec<u64>,
    },
    /// The version's file does not verify: it cannot be pinned.
    #[error(
        "refusing to pin model {model} version {version}: its snapshot does not verify: {source}"
    )]
    Unverified {
        /// The model.
        model: String,
        /// The version.
        version: u64,
        /// What the check found.
        source: SnapshotError,
    },
    /// The version has non-finite weights: it cannot be pinned.
    #[error("refusing to pin model {model} version {version}: its weights are not all finite")]
    NotFinite {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] SnapshotError),
    /// The control or decisions file could not be read or written.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

impl ModelsError {
    /// Whether the command line named something that is not there or not acceptable (exit
    /// status 2), rather than failing to read or write (status 1).
    pub fn is_usage(&self) -> bool {
        match self {
            ModelsError::NoStore { .. }
            | ModelsError::UnknownModel { .. }
            | ModelsError::UnknownVersion { .. }
            | ModelsError::Unverified { .. }
            | ModelsError::NotFinite { .. }
            | ModelsError::Store(SnapshotError::InvalidModelName { .. })
            | ModelsError::Supervisor(SupervisorError::Store(SnapshotError::InvalidModelName {
                ..
            })) => true,
            ModelsError::Store(_) | ModelsError::Supervisor(_) => false,
        }
    }
}

fn list_or_none<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `pooch models list`: per model (the one named, or every model in the store), its versions
/// with epoch, round metrics, weights, line and status, what serves and what is pinned.
///
/// A version's *line* is the features hash it was made for ([`line_of`]): versions of one line
/// read their weights the same way, and a run serves only its own spec's line. Given the
/// running `spec`, a version of another line is listed as incompatible, with the reason.
pub fn list(
    store_dir: &Path,
    model: Option<&str>,
    spec: Option<&Spec>,
) -> Result<String, ModelsError> {
    let store = open_store(store_dir)?;
    let models = match model {
        Some(model) => {
            known_model(&store, model)?;
            vec![model.to_owned()]
        }
        None => models_in(store_dir)?,
    };
    let decisions_path = DecisionLog::path_for_store(store_dir);
    let decisions = DecisionLog::read(&decisions_path)?;
    let mut out = String::new();
    if models.is_empty() {
        let _ = writeln!(out, "no models in {}", store_dir.display());
    }
    if !decisions.malformed.is_empty() {
        let _ = writeln!(
            out,
            "note: {} malformed line(s) of {} skipped (first: line {})",
            decisions.malformed.len(),
            decisions_path.display(),
            decisions.malformed[0].0
        );
    }
    for model in &models {
        let history: Vec<&Decision> = decisions
            .decisions
            .iter()
            .filter(|decision| &decision.model == model)
            .collect();
        list_model(&mut out, &store, model, &history, &decisions_path, spec)?;
    }
    Ok(out)
}

fn list_model(
    out: &mut String,
    store: &SnapshotStore,
    model: &str,
    history: &[&Decision],
    decisions_path: &Path,
    spec: Option<&Spec>,
) -> Result<(), ModelsError> {
    let stored = store.list(model)?;
    let mut lines = BTreeSet::new();
    let control = Control::load(store.dir(), model)?;
    // what the supervisor last did: requests from the command line are not yet done
    let last = history
        .iter()
        .rev()
        .find(|decision| decision.by != Actor::Cli);
    let describe = |version: Option<u64>| version.map_or("none".to_owned(), |v| v.to_string());
    let _ = write!(out, "model {model}: ");
    match last {
        Some(last) => {
            let _ = write!(
                out,
                "serving {}, pinned {} (last decision in {})",
                describe(last.serving),
                describe(last.pinned),
                decisions_path.display()
            );
        }
        None => {
            let _ = write!(
                out,
                "no supervisor decisions in {}",
                decisions_path.display()
            );
        }
    }
    let _ = writeln!(
        out,
        "; {} generation {}, pin requested: {}",
        CONTROL_FILE_NAME,
        control.generation,
        describe(control.pin)
    );

    let statuses = last_statuses(history);

    let _ = writeln!(
        out,
        "{:>10}  {:>8}  {:>9}  {:>9}  {:<10}  {:<21}  status",
        "version", "epoch", "examples", "logloss", "weights", "line"
    );
    for entry in &stored {
        let version = entry.version;
        let mut status = statuses
            .get(&version)
            .cloned()
            .unwrap_or_else(|| "-".to_owned());
        if last.and_then(|last| last.serving) == Some(version) {
            status = format!("serving ({status})");
        }
        if last.and_then(|last| last.pinned) == Some(version) {
            status = format!("pinned, {status}");
        }
        match verified(model, entry.version, &entry.path) {
            Ok(snapshot) => {
                let line = line_of(&snapshot.meta);
                if let Some(spec) = spec
                    && let Err(reason) = compatibility(&snapshot.meta, spec)
                {
                    status = format!(
                        "incompatible with {}: {reason}; {status}",
                        spec.path.display()
                    );
                }
                let _ = writeln!(
                    out,
                    "{:>10}  {:>8}  {:>9}  {:>9.4}  {:<10}  {line:<21}  {status}",
                    version,
                    snapshot.model.epoch,
                    snapshot.model.metrics.examples,
                    snapshot.model.metrics.logloss,
                    if snapshot.model.is_finite() {
                        "finite"
                    } else {
                        "NON-FINITE"
                    },
                );
                lines.insert(line);
            }
            Err(error) => {
                let _ = writeln!(
                    out,
                    "{:>10}  {:>8}  {:>9}  {:>9}  {:<10}  {:<21}  {status}; damaged: {error}",
                    version, "-", "-", "-", "-", "-"
                );
            }
        }
    }
    lines_note(out, &lines, spec);
    manifest_note(out, store, model, &stored);
    Ok(())
}

/// The line a snapshot belongs to: its features hash, or for a snapshot written before
/// features hashes were recorded, `spec:` and its spec hash.
pub fn line_of(meta: &SnapshotMeta) -> String {
    if meta.features_hash.is_empty() {
        format!("spec:{}", meta.spec_hash)
    } else {
        meta.features_hash.clone()
    }
}

/// A note when the store holds versions of more than one line, or none of the spec's.
fn lines_note(out: &mut String, lines: &BTreeSet<String>, spec: Option<&Spec>) {
    match spec {
        Some(spec) => {
            let _ = writeln!(
                out,
                "line of {}: {} (only its versions serve in a run of it)",
                spec.path.display(),
                spec.features_hash
            );
        }
        None if lines.len() > 1 => {
            let _ = writeln!(
                out,
                "note: versions of {} lines are in the store ({}): a run serves only its own spec's line; give --pipeline SPEC to mark the others incompatible",
                lines.len(),
                lines.iter().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        None => {}
    }
}

/// Each version's last status in the decisions, as the listing shows it.
fn last_statuses(history: &[&Decision]) -> BTreeMap<u64, String> {
    let mut statuses: BTreeMap<u64, String> = BTreeMap::new();
    for decision in history {
        let Some(version) = decision.version else {
            continue;
        };
        let status = match decision.action {
            Action::Promoted => "promoted".to_owned(),
            Action::HeldByPin if decision.pinned != Some(version) => {
                "promoted (held by pin)".to_owned()
            }
            Action::Rejected => format!("rejected: {}", decision.reason),
            Action::Candidate => format!("candidate: {}", decision.reason),
            Action::RolledBack => format!("rolled_back: {}", decision.reason),
            _ => continue,
        };
        statuses.insert(version, status);
    }
    statuses
}

/// A note when the manifest, rewritten after each snapshot, disagrees with the files.
fn manifest_note(out: &mut String, store: &SnapshotStore, model: &str, stored: &[StoredVersion]) {
    if let Ok(Some(manifest)) = store.manifest(model) {
        let listed: BTreeSet<u64> = manifest
            .versions
            .iter()
            .map(|entry| entry.version)
            .collect();
        let files: BTreeSet<u64> = stored.iter().map(|entry| entry.version).collect();
        if listed != files {
            let _ = writeln!(
                out,
                "note: the manifest lists versions {}; the files above are the authority",
                list_or_none(&listed.into_iter().collect::<Vec<_>>())
            );
        }
    }
}

/// `pooch models pin`: checks that the version is in the store, verifies and is finite, then
/// writes the pin to the control file and records the request. Returns what to print.
pub fn pin(
    store_dir: &Path,
    model: &str,
    version: u64,
    now_unix_ms: u64,
) -> Result<String, ModelsError> {
    let store = open_store(store_dir)?;
    known_model(&store, model)?;
    let stored = store.list(model)?;
    let Some(entry) = stored.iter().find(|entry| entry.version == version) else {
        return Err(ModelsError::UnknownVersion {
            model: model.to_owned(),
            version,
            present: stored.iter().map(|entry| entry.version).collect(),
        });
    };
    let snapshot =
        verified(model, version, &entry.path).map_err(|source| ModelsError::Unverified {
            model: model.to_owned(),
            version,
            source,
        })?;
    if !snapshot.model.is_finite() {
        return Err(ModelsError::NotFinite {
            model: model.to_owned(),
            version,
        });
    }
    request(store_dir, model, Command::Pin { version }, now_unix_ms)
}

/// `pooch models unpin`: writes an unpin to the control file and records the request.
pub fn unpin(store_dir: &Path, model: &str, now_unix_ms: u64) -> Result<String, ModelsError> {
    let store = open_store(store_dir)?;
    known_model(&store, model)?;
    request(store_dir, model, Command::Unpin, now_unix_ms)
}

/// `pooch models rollback`: writes a rollback to the control file and records the request.
pub fn rollback(store_dir: &Path, model: &str, now_unix_ms: u64) -> Result<String, ModelsError> {
    let store = open_store(store_dir)?;
    known_model(&store, model)?;
    request(store_dir, model, Command::Rollback, now_unix_ms)
}

fn request(
    store_dir: &Path,
    model: &str,
    command: Command,
    now_unix_ms: u64,
) -> Result<String, ModelsError> {
    let control = Control::request(store_dir, model, command, now_unix_ms)?;
    let (action, version, what) = match command {
        Command::Pin { version } => (
            Action::PinRequested,
            Some(version),
            format!("pin of version {version}"),
        ),
        Command::Unpin => (Action::UnpinRequested, None, "unpin".to_owned()),
        Command::Rollback => (Action::RollbackRequested, None, "rollback".to_owned()),
    };
    let control_path = Control::path(store_dir, model)?;
    let reason = format!(
        "{what} requested from the command line; a running supervisor applies it at its next poll ({} generation {})",
        control_path.display(),
        control.generation
    );
    let decisions_path = DecisionLog::path_for_store(store_dir);
    DecisionLog::open(&decisions_path)?.append(&Decision {
        time_unix_ms: now_unix_ms,
        model: model.to_owned(),
        version,
        action,
        by: Actor::Cli,
        reason: reason.clone(),
        metrics: DecisionMetrics::default(),
        serving: None,
        pinned: control.pin,
    })?;
    Ok(format!(
        "{reason}; recorded in {}\n",
        decisions_path.display()
    ))
}

/// Opens an existing store (without creating one where there is none).
fn open_store(store_dir: &Path) -> Result<SnapshotStore, ModelsError> {
    if !store_dir.is_dir() {
        return Err(ModelsError::NoStore {
            path: store_dir.to_owned(),
        });
    }
    // retention matters only to writes, which these commands never make
    Ok(SnapshotStore::open(store_dir, 1)?)
}

/// Checks that a model has a directory in the store.
fn known_model(store: &SnapshotStore, model: &str) -> Result<(), ModelsError> {
    validate_model_name(model)?;
    if store.dir().join(model).is_dir() {
        return Ok(());
    }
    Err(ModelsError::UnknownModel {
        store: store.dir().to_owned(),
        model: model.to_owned(),
        known: models_in(store.dir())?,
    })
}

/// The models of a store: its subdirectories with a valid model name, sorted.
fn models_in(store_dir: &Path) -> Result<Vec<String>, ModelsError> {
    let entries = fs::read_dir(store_dir)
        .map_err(io_error(store_dir, "list the snapshot store"))
        .map_err(SnapshotError::from)?;
    let mut models: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| validate_model_name(name).is_ok())
        .collect();
    models.sort();
    Ok(models)
}

/// Reads and verifies a version's file, and checks that it holds what its place says.
fn verified(model: &str, version: u64, path: &Path) -> Result<Snapshot, SnapshotError> {
    let snapshot = publish::read(path)?;
    if snapshot.model.name != model || snapshot.model.version != version {
        return Err(SnapshotError::Misplaced {
            path: path.to_owned(),
            found_model: snapshot.model.name,
            found_version: snapshot.model.version,
            expected_model: model.to_owned(),
            expected_version: version,
        });
    }
    Ok(snapshot)
}
