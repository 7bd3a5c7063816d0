//! The model supervisor: which published version serves, every decision about it in
//! `decisions.jsonl`, and operators' commands through a control file.
//!
//! | module | owns |
//! |---|---|
//! | [`policy`] | the rules: [`Supervisor`], its [`SupervisorConfig`], version statuses |
//! | [`decisions`] | what was decided ([`Decision`]), and `decisions.jsonl` ([`DecisionLog`]) |
//! | [`control`] | operators' [`Command`]s in a model's [`Control`] file, and the [`ControlWatcher`] |
//! | [`retention`] | the versions snapshot retention must spare ([`spare_served`]) |
//!
//! The policy is plain state with no I/O: every method returns the decisions it made, and the
//! caller ([`crate::serve::serving`]) logs them and acts on them. Commands from the command
//! line ([`crate::serve::models`]) reach a running supervisor through the control file.

use std::path::PathBuf;

use crate::files::FileError;
use crate::publish::SnapshotError;

pub mod control;
pub mod decisions;
pub mod policy;
pub mod retention;

#[cfg(test)]
mod fixtures;

pub use control::{
    CONTROL_FILE_NAME, Command, Control, ControlCommand, ControlWatcher, MAX_CONTROL_COMMANDS,
};
pub use decisions::{
    Action, Actor, DECISIONS_FILE_NAME, Decision, DecisionLog, DecisionMetrics, DecisionsRead,
    Reference, ReferenceKind, WindowMetrics,
};
pub use policy::{Fallback, Published, Supervisor, SupervisorConfig, VersionStatus};
pub use retention::{ServedVersions, spare_served};

/// What went wrong in the supervisor, its decisions file or a control file.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A configuration value out of range.
    #[error("supervisor configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A version offered for another model than the supervisor's.
    #[error("supervisor of model {model:?} was given a version of model {offered:?}")]
    WrongModel {
        /// The supervisor's model.
        model: String,
        /// The model of the version offered.
        offered: String,
    },
    /// A version not newer than one already seen.
    #[error("model {model} version {version} is not newer than version {newest}, already seen")]
    VersionNotNewer {
        /// The model.
        model: String,
        /// The version offered.
        version: u64,
        /// The newest version seen.
        newest: u64,
    },
    /// A version the supervisor does not hold (never seen, or forgotten).
    #[error("model {model} version {version} is not held by the supervisor (held: {held})")]
    UnknownVersion {
        /// The model.
        model: String,
        /// The version asked for.
        version: u64,
        /// The versions held, as a range or list.
        held: String,
    },
    /// A version with a non-finite weight, which may never serve.
    #[error("model {model} version {version} has non-finite weights and cannot serve")]
    NotFinite {
        /// The model.
        model: String,
        /// The version.
        version: u64,
    },
    /// Unpin with no pin in place.
    #[error("model {model} has no pinned version")]
    NotPinned {
        /// The model.
        model: String,
    },
    /// Rollback with no good version before the serving one.
    #[error("model {model}: no good version before {} to roll back to", describe_version(*serving))]
    NoEarlierGoodVersion {
        /// The model.
        model: String,
        /// The serving version, if any.
        serving: Option<u64>,
    },
    /// A control file that is not what this module writes.
    #[error("{}: control file is not valid: {reason}", path.display())]
    ControlInvalid {
        /// The control file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A decision or a control file could not be encoded as JSON.
    #[error("{}: could not encode {what}: {source}", path.display())]
    Encode {
        /// The file it was meant for.
        path: PathBuf,
        /// What was being encoded.
        what: &'static str,
        /// What the JSON encoder found.
        source: serde_json::Error,
    },
    /// A file-system operation failed: the message names the file and what was being done.
    #[error(transparent)]
    Io(#[from] FileError),
    /// A model name that cannot name a snapshot directory, as the snapshot store judges it.
    #[error(transparent)]
    Store(#[from] SnapshotError),
}

fn describe_version(version: Option<u64>) -> String {
    version.map_or("the serving version (none serves)".to_owned(), |version| {
        format!("version {version}")
    })
}
