//! Which versions snapshot retention must spare: what serves, what is pinned or asked to be,
//! the last promoted version and the one a rollback would go to, as `decisions.jsonl` says.
//!
//! The store keeps the newest `retain` snapshots of a model. The version that serves is often
//! older than that: in Sniffable a version is promoted a label horizon (24 versions) after it
//! is published, and a good version may serve while dozens of newer ones are rejected. Were
//! its file deleted, a restart could not serve it again, and a rollback to an older good
//! version could not load it. [`ServedVersions`] follows the decisions file as it grows and
//! names those versions; [`spare_served`] makes a store keep them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use super::decisions::{Action, Actor, Decision, DecisionLog};
use crate::publish::SnapshotStore;

/// Good versions remembered per model (promoted, never rolled back), newest first: enough to
/// find the last promoted one and the one below what serves.
const GOOD_REMEMBERED: usize = 64;

/// What the decisions say about one model.
#[derive(Debug, Default)]
struct ModelState {
    /// Serving after the supervisor's last decision.
    serving: Option<u64>,
    /// Pinned after the supervisor's last decision.
    pinned: Option<u64>,
    /// The pin the command line last asked for (a running supervisor applies it later).
    requested_pin: Option<u64>,
    /// Versions promoted and never since rolled back or rejected.
    good: BTreeSet<u64>,
}

impl ModelState {
    fn apply(&mut self, decision: &Decision) {
        if decision.by == Actor::Cli {
            self.requested_pin = decision.pinned;
            return;
        }
        self.serving = decision.serving;
        self.pinned = decision.pinned;
        let Some(version) = decision.version else {
            return;
        };
        match decision.action {
            Action::Promoted | Action::HeldByPin => {
                self.good.insert(version);
            }
            Action::RolledBack | Action::Rejected => {
                self.good.remove(&version);
            }
            _ => {}
        }
        while self.good.len() > GOOD_REMEMBERED {
            self.good.pop_first();
        }
    }

    /// The versions to spare: serving, pinned, requested pin, the newest good version, and
    /// the newest good one below what serves (a rollback's target).
    fn spared(&self) -> BTreeSet<u64> {
        let below_serving = self
            .serving
            .and_then(|serving| self.good.range(..serving).next_back().copied());
        [
            self.serving,
            self.pinned,
            self.requested_pin,
            self.good.last().copied(),
            below_serving,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Follows a decisions file: each call to [`ServedVersions::spared`] reads only the lines
/// appended since the last call (the whole file again if it shrank, i.e. was replaced).
#[derive(Debug)]
pub struct ServedVersions {
    path: PathBuf,
    /// Bytes read and applied so far: up to the end of the last whole line.
    offset: u64,
    models: BTreeMap<String, ModelState>,
}

impl ServedVersions {
    /// Follows the decisions file at `path` (which may not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ServedVersions {
            path: path.into(),
            offset: 0,
            models: BTreeMap::new(),
        }
    }

    /// The versions of `model` that retention must spare, as of the decisions written so
    /// far. A file that cannot be read spares what it spared before, and says so once per
    /// failed read on stderr; a line that does not parse is passed over, as a restart does.
    pub fn spared(&mut self, model: &str) -> BTreeSet<u64> {
        if let Err(error) = self.catch_up() {
            eprintln!(
                "pooch: snapshot retention: cannot read {}: {error}; sparing the versions it named before",
                self.path.display()
            );
        }
        self.models
            .get(model)
            .map(ModelState::spared)
            .unwrap_or_default()
    }

    fn catch_up(&mut self) -> std::io::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        if file.metadata()?.len() < self.offset {
            self.offset = 0;
            self.models.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut appended = Vec::new();
        file.read_to_end(&mut appended)?;
        // a line still being written is read next time
        let Some(end) = appended.iter().rposition(|&byte| byte == b'\n') else {
            return Ok(());
        };
        for line in appended[..end].split(|&byte| byte == b'\n') {
            if let Ok(decision) = serde_json::from_slice::<Decision>(line) {
                self.models
                    .entry(decision.model.clone())
                    .or_default()
                    .apply(&decision);
            }
        }
        self.offset += end as u64 + 1;
        Ok(())
    }
}

/// Makes `store` spare, past its retention limit, the versions the decisions file beside it
/// (`OUT/decisions.jsonl` for the store `OUT/snapshots`) names as serving, pinned, asked to
/// be pinned, last promoted, or a rollback's target.
pub fn spare_served(store: SnapshotStore) -> SnapshotStore {
    let mut served = ServedVersions::new(DecisionLog::path_for_store(store.dir()));
    store.sparing(move |model| served.spared(model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::supervisor::DecisionMetrics;

    fn decision(
        version: Option<u64>,
        action: Action,
        by: Actor,
        serving: Option<u64>,
        pinned: Option<u64>,
    ) -> Decision {
        Decision {
            time_unix_ms: 0,
            model: "m".into(),
            version,
            action,
            by,
            reason: String::new(),
            metrics: DecisionMetrics::default(),
            serving,
            pinned,
        }
    }

    #[test]
    fn the_serving_pinned_and_good_versions_are_spared_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let mut served = ServedVersions::new(&path);
        assert!(served.spared("m").is_empty(), "no file yet");
        let mut log = DecisionLog::open(&path).unwrap();
        let supervisor = Actor::Supervisor;
        log.append_all(&[
            decision(Some(3), Action::Promoted, supervisor, Some(3), None),
            decision(Some(4), Action::Rejected, supervisor, Some(3), None),
            decision(Some(7), Action::Promoted, supervisor, Some(7), None),
        ])
        .unwrap();
        assert_eq!(served.spared("m"), BTreeSet::from([3, 7]));
        assert!(served.spared("other").is_empty());
        // version 7 rolled back: 3 serves, and nothing below it is good
        log.append(&decision(
            Some(7),
            Action::RolledBack,
            supervisor,
            Some(3),
            None,
        ))
        .unwrap();
        assert_eq!(served.spared("m"), BTreeSet::from([3]));
        // a pin asked for from the command line, then carried out
        log.append(&decision(
            Some(5),
            Action::PinRequested,
            Actor::Cli,
            None,
            Some(5),
        ))
        .unwrap();
        assert_eq!(served.spared("m"), BTreeSet::from([3, 5]));
        log.append(&decision(
            Some(5),
            Action::Pinned,
            Actor::Operator,
            Some(5),
            Some(5),
        ))
        .unwrap();
        assert_eq!(served.spared("m"), BTreeSet::from([3, 5]));
    }

    #[test]
    fn a_half_written_line_waits_and_a_replaced_file_is_read_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        let whole = serde_json::to_string(&decision(
            Some(2),
            Action::Promoted,
            Actor::Supervisor,
            Some(2),
            None,
        ))
        .unwrap();
        std::fs::write(&path, format!("{whole}\n{}", &whole[..20])).unwrap();
        let mut served = ServedVersions::new(&path);
        assert_eq!(served.spared("m"), BTreeSet::from([2]));
        std::fs::write(&path, "not json\n").unwrap();
        assert!(served.spared("m").is_empty(), "the file was replaced");
    }
}
