//! The control-file protocol: operators' commands written to a model's `CONTROL.json`, and
//! the watcher that applies each new one to a running supervisor, once.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::SupervisorError;
use super::decisions::{Action, Actor, Decision, DecisionMetrics};
use super::policy::Supervisor;
use crate::files::{self, io_error};
use crate::publish::validate_model_name;

/// The name of a model's control file, in its snapshot directory.
pub const CONTROL_FILE_NAME: &str = "CONTROL.json";

/// A control file keeps this many of the latest commands. A running supervisor that polls
/// less often than this many commands arrive misses the oldest of them.
pub const MAX_CONTROL_COMMANDS: usize = 64;

/// An operator's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Command {
    /// Serve this version until unpinned.
    Pin {
        /// The version.
        version: u64,
    },
    /// Let the supervisor's choice serve again.
    Unpin,
    /// Roll the serving version back to the last good one before it.
    Rollback,
}

/// A command in the control file, numbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlCommand {
    /// The file's generation this command made: commands are applied in this order, once.
    pub generation: u64,
    /// When it was written, unix milliseconds.
    pub time_unix_ms: u64,
    /// The command.
    #[serde(flatten)]
    pub command: Command,
}

/// A model's control file, `<store>/<model>/CONTROL.json`: operators' commands for a
/// running supervisor. Every command bumps `generation`; a supervisor applies those with a
/// generation above the last it applied, in order, each once.
///
/// ```json
/// {"model": "pooch-predictor", "generation": 3, "pin": null,
///  "commands": [{"generation": 2, "time_unix_ms": 1770000000000, "action": "pin", "version": 41},
///               {"generation": 3, "time_unix_ms": 1770000100000, "action": "rollback"}]}
/// ```
///
/// Written atomically (temporary file, sync, rename). One writer at a time: two commands
/// written at the same instant may lose one (the second reads the file before the first
/// renames its own into place).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The model.
    pub model: String,
    /// The number of commands ever written.
    pub generation: u64,
    /// The pin as the commands leave it: set by `pin`, cleared by `unpin` and `rollback`.
    pub pin: Option<u64>,
    /// The latest commands, oldest first, at most [`MAX_CONTROL_COMMANDS`].
    pub commands: Vec<ControlCommand>,
}

impl Control {
    /// The control file of `model` in the store `store_dir`.
    pub fn path(store_dir: &Path, model: &str) -> Result<PathBuf, SupervisorError> {
        validate_model_name(model)?;
        Ok(store_dir.join(model).join(CONTROL_FILE_NAME))
    }

    /// Reads a model's control file; with none, a control with no commands.
    pub fn load(store_dir: &Path, model: &str) -> Result<Control, SupervisorError> {
        let path = Control::path(store_dir, model)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Control {
                    model: model.to_owned(),
                    generation: 0,
                    pin: None,
                    commands: Vec::new(),
                });
            }
            Err(error) => return Err(io_error(&path, "read the control file")(error).into()),
        };
        let invalid = |reason: String| SupervisorError::ControlInvalid {
            path: path.clone(),
            reason,
        };
        let control: Control =
            serde_json::from_slice(&bytes).map_err(|error| invalid(error.to_string()))?;
        if control.model != model {
            return Err(invalid(format!(
                "it names model {:?}, but lies in the directory of model {model:?}",
                control.model
            )));
        }
        if let Some(command) = control
            .commands
            .iter()
            .find(|command| command.generation > control.generation)
        {
            return Err(invalid(format!(
                "command of generation {} is newer than the file's generation {}",
                command.generation, control.generation
            )));
        }
        Ok(control)
    }

    /// Adds a command to a model's control file and writes it atomically; returns the file as
    /// written. The model's snapshot directory must exist.
    pub fn request(
        store_dir: &Path,
        model: &str,
        command: Command,
        now_unix_ms: u64,
    ) -> Result<Control, SupervisorError> {
        let mut control = Control::load(store_dir, model)?;
        control.generation += 1;
        control.pin = match command {
            Command::Pin { version } => Some(version),
            Command::Unpin | Command::Rollback => None,
        };
        control.commands.push(ControlCommand {
            generation: control.generation,
            time_unix_ms: now_unix_ms,
            command,
        });
        let excess = control.commands.len().saturating_sub(MAX_CONTROL_COMMANDS);
        control.commands.drain(..excess);
        let mut bytes =
            serde_json::to_vec_pretty(&control).map_err(|source| SupervisorError::Encode {
                path: store_dir.join(model).join(CONTROL_FILE_NAME),
                what: "the control file",
                source,
            })?;
        bytes.push(b'\n');
        files::replace(&store_dir.join(model), CONTROL_FILE_NAME, &bytes)?;
        Ok(control)
    }

    /// Applies to `supervisor`, in order, the commands with a generation above
    /// `applied_generation`; returns the decisions (a command that fails becomes a `refused`
    /// decision) and the generation now applied. Each reason names the command's generation.
    pub fn apply(
        &self,
        supervisor: &mut Supervisor,
        applied_generation: u64,
        now_unix_ms: u64,
    ) -> (Vec<Decision>, u64) {
        let mut decisions = Vec::new();
        for command in self
            .commands
            .iter()
            .filter(|command| command.generation > applied_generation)
        {
            let outcome = match command.command {
                Command::Pin { version } => supervisor.pin(version, now_unix_ms),
                Command::Unpin => supervisor.unpin(now_unix_ms),
                Command::Rollback => supervisor.rollback(now_unix_ms),
            };
            let source = format!("{CONTROL_FILE_NAME} generation {}", command.generation);
            match outcome {
                Ok(made) => decisions.extend(made.into_iter().map(|mut decision| {
                    decision.reason = format!("{} ({source})", decision.reason);
                    decision
                })),
                Err(error) => {
                    let version = match command.command {
                        Command::Pin { version } => Some(version),
                        Command::Unpin | Command::Rollback => None,
                    };
                    decisions.push(supervisor.decision(
                        now_unix_ms,
                        version,
                        Action::Refused,
                        Actor::Operator,
                        format!("{:?} refused: {error} ({source})", command.command),
                        DecisionMetrics::default(),
                    ));
                }
            }
        }
        (decisions, self.generation.max(applied_generation))
    }
}

/// What identifies one content of a file without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    length: u64,
    /// A rename into place gives a new inode; kept where the platform has them.
    inode: u64,
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp {
            modified: metadata.modified().ok(),
            length: metadata.len(),
            inode,
        }
    }
}

/// Watches a model's control file for a running supervisor: [`Self::poll`] costs one `stat`
/// while the file is unchanged, and applies each new command once.
#[derive(Debug)]
pub struct ControlWatcher {
    store_dir: PathBuf,
    model: String,
    path: PathBuf,
    applied_generation: u64,
    seen: Option<FileStamp>,
}

impl ControlWatcher {
    /// Starts watching. Commands already in the file belong to earlier runs and are not
    /// applied: the watcher starts at the file's current generation.
    pub fn new(store_dir: &Path, model: &str) -> Result<Self, SupervisorError> {
        let path = Control::path(store_dir, model)?;
        let seen = fs::metadata(&path)
            .ok()
            .map(|metadata| FileStamp::of(&metadata));
        let applied_generation = Control::load(store_dir, model)?.generation;
        Ok(ControlWatcher {
            store_dir: store_dir.to_owned(),
            model: model.to_owned(),
            path,
            applied_generation,
            seen,
        })
    }

    /// The generation of the last command applied.
    pub fn applied_generation(&self) -> u64 {
        self.applied_generation
    }

    /// Applies the commands written since the last poll, if the file changed. An invalid file
    /// is an error once, then ignored until it changes again.
    pub fn poll(
        &mut self,
        supervisor: &mut Supervisor,
        now_unix_ms: u64,
    ) -> Result<Vec<Decision>, SupervisorError> {
        let stamp = match fs::metadata(&self.path) {
            Ok(metadata) => Some(FileStamp::of(&metadata)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(io_error(&self.path, "look at the control file")(error).into());
            }
        };
        if stamp == self.seen {
            return Ok(Vec::new());
        }
        self.seen = stamp;
        if self.seen.is_none() {
            return Ok(Vec::new());
        }
        let control = Control::load(&self.store_dir, &self.model)?;
        // a file whose generation went backwards was replaced by a new one: all its commands
        // are new
        let applied_before = if control.generation < self.applied_generation {
            0
        } else {
            self.applied_generation
        };
        let (decisions, applied) = control.apply(supervisor, applied_before, now_unix_ms);
        self.applied_generation = applied;
        Ok(decisions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::decisions::Action;
    use super::super::fixtures::{NOW, supervisor, two_good};

    /// A store directory with model `m`'s directory in it.
    fn store_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = dir.path().join("snapshots");
        fs::create_dir_all(store.join("m")).expect("model directory");
        (dir, store)
    }

    #[test]
    fn control_file_commands_are_applied_once_in_order() {
        let (_dir, store) = store_dir();
        let mut supervisor = supervisor();
        two_good(&mut supervisor);
        // a command from before the run is history, not applied
        Control::request(&store, "m", Command::Pin { version: 1 }, NOW).expect("request");
        let mut watcher = ControlWatcher::new(&store, "m").expect("watcher");
        assert_eq!(watcher.applied_generation(), 1);
        assert!(watcher.poll(&mut supervisor, NOW).expect("poll").is_empty());
        assert_eq!(supervisor.serving(), Some(2));

        Control::request(&store, "m", Command::Pin { version: 1 }, NOW).expect("request");
        let decisions = watcher.poll(&mut supervisor, NOW).expect("poll");
        assert_eq!(decisions.len(), 1);
        assert_eq!(decisions[0].action, Action::Pinned);
        assert!(decisions[0].reason.ends_with("(CONTROL.json generation 2)"));
        assert_eq!(supervisor.serving(), Some(1));
        assert!(watcher.poll(&mut supervisor, NOW).expect("poll").is_empty());

        // several commands between two polls: all applied, in order, once
        Control::request(&store, "m", Command::Unpin, NOW).expect("request");
        Control::request(&store, "m", Command::Rollback, NOW).expect("request");
        Control::request(&store, "m", Command::Pin { version: 7 }, NOW).expect("request");
        let decisions = watcher.poll(&mut supervisor, NOW).expect("poll");
        let actions: Vec<Action> = decisions.iter().map(|decision| decision.action).collect();
        assert_eq!(
            actions,
            [Action::Unpinned, Action::RolledBack, Action::Refused]
        );
        assert!(
            decisions[2].reason.contains("not held"),
            "{}",
            decisions[2].reason
        );
        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(watcher.applied_generation(), 5);
        assert!(watcher.poll(&mut supervisor, NOW).expect("poll").is_empty());

        // applying the same file again applies nothing
        let control = Control::load(&store, "m").expect("load");
        assert_eq!((control.generation, control.pin), (5, Some(7)));
        let (again, applied) = control.apply(&mut supervisor, 5, NOW);
        assert!(again.is_empty());
        assert_eq!(applied, 5);
    }

    #[test]
    fn a_control_file_keeps_the_latest_commands() {
        let (_dir, store) = store_dir();
        for _ in 0..MAX_CONTROL_COMMANDS + 6 {
            Control::request(&store, "m", Command::Unpin, NOW).expect("request");
        }
        let control = Control::load(&store, "m").expect("load");
        assert_eq!(control.generation, MAX_CONTROL_COMMANDS as u64 + 6);
        assert_eq!(control.commands.len(), MAX_CONTROL_COMMANDS);
        assert_eq!(control.commands[0].generation, 7);
        // no temporary file is left behind
        let names = files::names_in(&store.join("m"));
        assert_eq!(names, [CONTROL_FILE_NAME]);
    }

    #[test]
    fn a_damaged_control_file_is_an_error_naming_it() {
        let (_dir, store) = store_dir();
        let path = store.join("m").join(CONTROL_FILE_NAME);
        fs::write(
            &path,
            b"{\"model\": \"other\", \"generation\": 1, \"pin\": null, \"commands\": []}",
        )
        .expect("write");
        let error = Control::load(&store, "m").expect_err("wrong model");
        assert!(error.to_string().contains("CONTROL.json"), "{error}");
        assert!(error.to_string().contains("\"other\""), "{error}");
        fs::write(&path, b"not json").expect("write");
        assert!(Control::load(&store, "m").is_err());
        assert!(Control::load(&store, "../m").is_err());
    }
}
