//! The model versions the serving state holds, and which one serves: the supervisor's
//! decisions applied, logged, and taken from the control file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::publish::model::ModelVersion;
use serde_json::{Value as Json, json};

use crate::clock::now_unix_ms;
use crate::publish::{self, SnapshotStore};
use crate::serve::supervisor::{
    ControlWatcher, Decision, DecisionLog, Supervisor, SupervisorError, VersionStatus,
};

/// How often, at most, the control file is looked at.
const CONTROL_POLL: Duration = Duration::from_millis(200);

/// Candidates held at most, awaiting the evidence that judges them (Sniffable's label horizon
/// is 24 versions).
const MAX_CANDIDATES_HELD: usize = 256;

/// Decisions of this run kept for `GET /v1/models`, newest last.
const RECENT_DECISIONS: usize = 100;

/// The versions held and the supervisor deciding which serves. Requests never read this:
/// they read the serving state's copy of the version that serves, which each method's
/// [`Serve`] says how to update.
pub(super) struct Supervision {
    supervisor: Supervisor,
    /// How many of the newest versions are held, besides any the supervisor serves or pins.
    keep: usize,
    /// The versions held, by number.
    held: BTreeMap<u64, Arc<ModelVersion>>,
    /// Where decisions are written, if anywhere.
    log: Option<DecisionLog>,
    /// Commands from `pooch models` through the store's control file.
    control: Option<ControlWatcher>,
    /// The snapshot store, to load a version the supervisor wants that is no longer held.
    store: Option<PathBuf>,
    last_poll: Option<Instant>,
    /// Decisions of this run, newest last (the last [`RECENT_DECISIONS`]).
    recent: Vec<Decision>,
    /// Snapshot files passed over at startup (damaged, misplaced or made for another
    /// spec): their file and why.
    skipped: Vec<Json>,
    /// Versions in the store made for another spec, which are never loaded.
    foreign: BTreeSet<u64>,
    /// The line of versions served: the running spec's features hash, when known.
    line: Option<String>,
}

/// What requests should read once decisions are settled.
pub(super) enum Serve {
    /// This version.
    Version(Arc<ModelVersion>),
    /// No version: none has been promoted or pinned.
    Nothing,
    /// The supervisor wants this version, but it is neither held nor in the store: the
    /// version serving now keeps serving.
    Missing(u64),
}

impl Supervision {
    /// No version held yet; the newest `keep` (at least 1) will be.
    pub(super) fn new(supervisor: Supervisor, keep: usize) -> Self {
        Supervision {
            supervisor,
            keep: keep.max(1),
            held: BTreeMap::new(),
            log: None,
            control: None,
            store: None,
            last_poll: None,
            recent: Vec::new(),
            skipped: Vec::new(),
            foreign: BTreeSet::new(),
            line: None,
        }
    }

    /// Writes decisions to `log`, takes commands from the control file of the snapshot store
    /// in `store`, and loads versions from it when the supervisor wants one no longer held.
    pub(super) fn attach_store(
        &mut self,
        store: PathBuf,
        log: DecisionLog,
    ) -> Result<(), SupervisorError> {
        self.control = Some(ControlWatcher::new(&store, self.supervisor.model())?);
        self.log = Some(log);
        self.store = Some(store);
        Ok(())
    }

    /// Records the snapshot files passed over at startup, and the versions never to load.
    pub(super) fn set_skipped(&mut self, skipped: Vec<Json>, foreign: BTreeSet<u64>) {
        self.skipped = skipped;
        self.foreign = foreign;
    }

    /// Names the line of versions served (the running spec's features hash).
    pub(super) fn set_line(&mut self, line: String) {
        self.line = Some(line);
    }

    /// Adopts a stored version no decision names (see [`Supervisor::adopt`]).
    pub(super) fn adopt(&mut self, version: Arc<ModelVersion>) -> Serve {
        let decisions = self.supervisor.adopt(&version, now_unix_ms());
        self.held.insert(version.version, version);
        self.settle(decisions)
    }

    /// The supervisor.
    pub(super) fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The versions held, oldest first.
    pub(super) fn held(&self) -> impl Iterator<Item = &Arc<ModelVersion>> {
        self.held.values()
    }

    /// Takes a newly published version, which the supervisor decides on; `None` for one not
    /// newer than every version held, which is ignored.
    pub(super) fn publish(&mut self, version: Arc<ModelVersion>) -> Option<Serve> {
        if self
            .held
            .last_key_value()
            .is_some_and(|(&newest, _)| newest >= version.version)
        {
            return None;
        }
        let decisions = self.supervisor.on_version(&version, now_unix_ms());
        self.held.insert(version.version, version);
        Some(self.settle(decisions))
    }

    /// Carries out an operator's command: its decisions as JSON, or why it was refused.
    pub(super) fn command(
        &mut self,
        act: impl FnOnce(&mut Supervisor, u64) -> Result<Vec<Decision>, SupervisorError>,
    ) -> Result<(Json, Serve), SupervisorError> {
        let decisions = act(&mut self.supervisor, now_unix_ms())?;
        let answer = serde_json::to_value(&decisions).unwrap_or(Json::Null);
        Ok((answer, self.settle(Ok(decisions))))
    }

    /// Applies the control file's new commands, if it was not looked at in the last 200 ms;
    /// `None` when it was not looked at.
    pub(super) fn poll_control(&mut self) -> Option<Serve> {
        if self
            .last_poll
            .is_some_and(|last| last.elapsed() < CONTROL_POLL)
        {
            return None;
        }
        self.last_poll = Some(Instant::now());
        let control = self.control.as_mut()?;
        let decisions = control.poll(&mut self.supervisor, now_unix_ms());
        Some(self.settle(decisions))
    }

    /// Settles with no new decision: serves what the supervisor wants (after a restore).
    pub(super) fn settle_now(&mut self) -> Serve {
        self.settle(Ok(Vec::new()))
    }

    /// Why no version serves, for a request refused with 503.
    pub(super) fn why_nothing_serves(&self) -> String {
        let supervisor = &self.supervisor;
        let counts = supervisor.status_counts();
        let described: Vec<String> = counts
            .iter()
            .map(|(status, count)| format!("{count} {status}"))
            .collect();
        format!(
            "no version of {} serves: none has been promoted or pinned (versions seen: {}); a candidate is promoted once the examples it scored beat the constant model and the reference",
            supervisor.model(),
            if described.is_empty() {
                "none".to_owned()
            } else {
                described.join(", ")
            }
        )
    }

    /// The model's versions, their status and the supervisor's state, for `GET /v1/models`.
    pub(super) fn models_json(&self, serving: Option<u64>) -> Json {
        let held: Vec<Json> = self
            .held
            .values()
            .map(|version| {
                json!({
                    "version": version.version,
                    "epoch": version.epoch,
                    "published_at": version.published_at,
                    "finite": version.is_finite(),
                    "weights": version.weights.len(),
                    // serde_json writes a logloss that is not finite as null
                    "metrics": {
                        "examples": version.metrics.examples,
                        "logloss": version.metrics.logloss,
                    },
                    "status": self.supervisor.status(version.version).map(|status| status.name()),
                    "serving": Some(version.version) == serving,
                })
            })
            .collect();
        json!({
            "name": self.supervisor.model(),
            "line": self.line,
            "serving": serving,
            "pinned": self.supervisor.pinned(),
            "held": held,
            "skipped": self.skipped,
            "supervisor": self.supervisor.state(),
            "recent_decisions": serde_json::to_value(&self.recent).unwrap_or(Json::Null),
        })
    }

    /// Records decisions, forgets versions no longer wanted, and says what requests should
    /// read now: the supervisor's choice.
    fn settle(&mut self, decisions: Result<Vec<Decision>, SupervisorError>) -> Serve {
        let decisions = match decisions {
            Ok(decisions) => decisions,
            Err(error) => {
                eprintln!("pooch: supervisor: {error}");
                Vec::new()
            }
        };
        if let Some(log) = &mut self.log
            && let Err(error) = log.append_all(&decisions)
        {
            eprintln!("pooch: {error}");
        }
        self.recent.extend(decisions);
        let excess = self.recent.len().saturating_sub(RECENT_DECISIONS);
        self.recent.drain(..excess);

        let wanted = self.supervisor.serving();
        if let Some(version) = wanted
            && !self.held.contains_key(&version)
            && !self.foreign.contains(&version)
            && let Some(store) = &self.store
            && let Some(loaded) = load(store, self.supervisor.model(), version)
        {
            self.held.insert(version, loaded);
        }
        let newest: Vec<u64> = self.held.keys().rev().take(self.keep).copied().collect();
        // a candidate is promoted when its own evidence arrives, a label horizon after it was
        // published: it is held until judged (the newest MAX_CANDIDATES_HELD of them)
        let candidates: BTreeSet<u64> = self
            .held
            .keys()
            .rev()
            .filter(|version| {
                matches!(
                    self.supervisor.status(**version),
                    Some(VersionStatus::Candidate { .. })
                )
            })
            .take(MAX_CANDIDATES_HELD)
            .copied()
            .collect();
        let pinned = self.supervisor.pinned();
        self.held.retain(|version, _| {
            newest.contains(version)
                || candidates.contains(version)
                || Some(*version) == wanted
                || Some(*version) == pinned
        });
        match wanted {
            None => Serve::Nothing,
            Some(version) => match self.held.get(&version) {
                Some(held) => Serve::Version(Arc::clone(held)),
                None => Serve::Missing(version),
            },
        }
    }
}

/// Loads a version from the snapshot store, if it is there and verifies.
fn load(store: &Path, model: &str, version: u64) -> Option<Arc<ModelVersion>> {
    let store = SnapshotStore::open(store, usize::MAX).ok()?;
    let stored = store
        .list(model)
        .ok()?
        .into_iter()
        .find(|stored| stored.version == version)?;
    match publish::read(&stored.path) {
        Ok(snapshot) if snapshot.model.version == version => Some(Arc::new(snapshot.model)),
        Ok(_) => None,
        Err(error) => {
            eprintln!("pooch: {error}");
            None
        }
    }
}
