//! Serving outside the dataflow: the state an HTTP request is answered from.
//!
//! The graph answers probe queries itself, deterministically, from its serving arrangement.
//! A request from an application cannot wait for a worker to step, so the graph also keeps
//! this copy up to date: worker 0 folds in the feature store's changes once each epoch is
//! complete, and every model version as it is published. A request reads both under short
//! read locks and never touches a worker, so ingestion, merging or a slow disk cannot delay
//! it. What it reads is always a *complete* epoch: the changes of an epoch are applied at
//! once, under one write lock, after the epoch has closed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dataflows::event::Event;
use dataflows::fact::{Symbol, Time};
use dataflows::fixed::Accum;
use dataflows::plan::Plan;
use dataflows::publish::model::ModelVersion;
use dataflows::transform::featurize::featurize;
use dataflows::transform::fill::fill_aggregates;
use serde_json::{Value as Json, json};

use crate::collect::queries;
use crate::serve::http::Prediction;
use crate::serve::supervisor::{
    ControlWatcher, Decision, DecisionLog, Supervisor, SupervisorConfig, SupervisorError,
    now_unix_ms,
};

/// Why a request cannot be scored.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// The request is malformed: the message names the field.
    #[error("{0}")]
    BadRequest(String),
    /// The request names a model this pipeline does not have.
    #[error("{0}")]
    UnknownModel(String),
    /// The supervisor refused a command: the message says why.
    #[error("{0}")]
    Refused(String),
}

/// The current values of the aggregates features read, as of the start of an epoch.
#[derive(Default)]
struct FeatureView {
    values: HashMap<(Symbol, u32), Accum>,
    /// The last epoch whose changes are in.
    epoch: Option<u64>,
}

/// The versions held and the supervisor deciding which serves. Requests never take this
/// lock: they read [`ServingState::serving`]'s copy.
struct Supervision {
    supervisor: Supervisor,
    /// The versions held, by number: the newest `keep_versions`, and any the supervisor serves.
    held: BTreeMap<u64, Arc<ModelVersion>>,
    /// Where decisions are written, if anywhere.
    log: Option<DecisionLog>,
    /// Commands from `pooch models` through the store's control file.
    control: Option<ControlWatcher>,
    /// The snapshot store, to load a version the supervisor wants that is no longer held.
    store: Option<PathBuf>,
    last_poll: Option<Instant>,
    /// Decisions of this run, newest last (the last 100), for `GET /v1/models`.
    recent: Vec<Decision>,
}

/// How often, at most, the control file is looked at.
const CONTROL_POLL: Duration = Duration::from_millis(200);

/// Counters that the serving state reports as metrics.
#[derive(Default)]
pub struct ServingCounters {
    /// Facts read so far, over every source.
    pub facts_read: AtomicU64,
    /// Lines dead-lettered so far.
    pub dead_letters: AtomicU64,
    /// The latest event time read.
    pub max_time_read: AtomicU64,
    /// Requests scored.
    pub predictions: AtomicU64,
}

/// What requests are answered from: the pipeline's plan, the features as of the last complete
/// epoch, and the model versions held. Shared between worker 0 and the HTTP threads.
pub struct ServingState {
    plan: Plan,
    /// The plan's lookup groups, worked out once rather than per request.
    groups: Vec<dataflows::plan::LookupGroup>,
    keep: usize,
    features: RwLock<FeatureView>,
    serving: RwLock<Option<Arc<ModelVersion>>>,
    supervision: Mutex<Supervision>,
    /// Counters for metrics.
    pub counters: ServingCounters,
}

impl std::fmt::Debug for ServingState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServingState")
            .field("pipeline", &self.plan.name)
            .field("features_epoch", &self.features_epoch())
            .field("serving", &self.serving().map(|version| version.version))
            .finish_non_exhaustive()
    }
}

impl ServingState {
    /// An empty state for a plan: no features yet, no model yet, supervised by the default
    /// rules, deciding in memory only.
    pub fn new(plan: Plan) -> Self {
        let supervisor = Supervisor::new(plan.model.name.clone(), SupervisorConfig::default())
            .expect("the default supervisor config is valid");
        Self::with_supervisor(plan, supervisor)
    }

    /// An empty state whose versions `supervisor` decides on.
    pub fn with_supervisor(plan: Plan, supervisor: Supervisor) -> Self {
        let keep = plan.serving.keep_versions.max(1);
        ServingState {
            groups: plan.lookup_groups(),
            plan,
            keep,
            features: RwLock::default(),
            serving: RwLock::default(),
            supervision: Mutex::new(Supervision {
                supervisor,
                held: BTreeMap::new(),
                log: None,
                control: None,
                store: None,
                last_poll: None,
                recent: Vec::new(),
            }),
            counters: ServingCounters::default(),
        }
    }

    /// Writes decisions to `log`, takes commands from the control file of the snapshot store
    /// in `store`, and loads versions from it when the supervisor wants one no longer held.
    pub fn attach_store(&self, store: PathBuf, log: DecisionLog) -> Result<(), SupervisorError> {
        let control = ControlWatcher::new(&store, &self.plan.model.name)?;
        let mut supervision = self.supervise();
        supervision.log = Some(log);
        supervision.control = Some(control);
        supervision.store = Some(store);
        Ok(())
    }

    fn supervise(&self) -> std::sync::MutexGuard<'_, Supervision> {
        self.supervision
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// The plan requests are read with.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Folds in the changes of a complete epoch, at once.
    pub fn apply_epoch(&self, epoch: u64, changes: &[((Symbol, u32), Accum)]) {
        let mut view = self
            .features
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        for &(key, (count, sum)) in changes {
            let entry = view.values.entry(key).or_insert((0, 0));
            entry.0 += count;
            entry.1 = entry.1.wrapping_add(sum);
            if *entry == (0, 0) {
                view.values.remove(&key);
            }
        }
        view.epoch = Some(view.epoch.map_or(epoch, |last| last.max(epoch)));
    }

    /// Takes a newly published version: it is held (the newest `keep_versions` are), and the
    /// supervisor decides whether it serves. A version with NaN or infinite weights never does.
    pub fn publish(&self, version: Arc<ModelVersion>) {
        let mut supervision = self.supervise();
        if supervision
            .held
            .last_key_value()
            .is_some_and(|(&newest, _)| newest >= version.version)
        {
            return;
        }
        let decisions = supervision.supervisor.on_version(&version, now_unix_ms());
        supervision.held.insert(version.version, version);
        self.settle(&mut supervision, decisions);
    }

    /// Reports the live progressive metrics of an epoch: `examples` scored by version
    /// `scored_by` with mean log loss `logloss`. A serving version that degrades is rolled
    /// back.
    pub fn live_metrics(&self, epoch: u64, examples: u64, logloss: f64, scored_by: u64) {
        let mut supervision = self.supervise();
        let decisions = supervision.supervisor.on_live_metrics(
            epoch,
            examples,
            logloss,
            scored_by,
            now_unix_ms(),
        );
        self.settle(&mut supervision, Ok(decisions));
    }

    /// Pins a version: it serves from the next request until unpinned.
    pub fn pin(&self, model: &str, version: u64) -> Result<Json, ServeError> {
        self.command(model, |supervisor| supervisor.pin(version, now_unix_ms()))
    }

    /// Releases the pin.
    pub fn unpin(&self, model: &str) -> Result<Json, ServeError> {
        self.command(model, |supervisor| supervisor.unpin(now_unix_ms()))
    }

    /// Rolls back to the last good version before the serving one.
    pub fn rollback(&self, model: &str) -> Result<Json, ServeError> {
        self.command(model, |supervisor| supervisor.rollback(now_unix_ms()))
    }

    /// Looks at the control file for commands from `pooch models`, at most every 200 ms.
    pub fn poll_control(&self) {
        let mut supervision = self.supervise();
        self.poll_locked(&mut supervision);
    }

    fn poll_locked(&self, supervision: &mut Supervision) {
        if supervision
            .last_poll
            .is_some_and(|last| last.elapsed() < CONTROL_POLL)
        {
            return;
        }
        supervision.last_poll = Some(Instant::now());
        let Supervision {
            supervisor,
            control,
            ..
        } = supervision;
        let Some(control) = control else { return };
        let decisions = control.poll(supervisor, now_unix_ms());
        self.settle(supervision, decisions);
    }

    fn command(
        &self,
        model: &str,
        act: impl FnOnce(&mut Supervisor) -> Result<Vec<Decision>, SupervisorError>,
    ) -> Result<Json, ServeError> {
        self.check_model(model)?;
        let mut supervision = self.supervise();
        let decisions = act(&mut supervision.supervisor)
            .map_err(|error| ServeError::Refused(error.to_string()))?;
        let answer = serde_json::to_value(&decisions).unwrap_or(Json::Null);
        self.settle(&mut supervision, Ok(decisions));
        let serving = supervision.supervisor.serving();
        Ok(
            json!({ "decisions": answer, "serving": serving, "pinned": supervision.supervisor.pinned() }),
        )
    }

    fn check_model(&self, model: &str) -> Result<(), ServeError> {
        if model == self.plan.model.name {
            Ok(())
        } else {
            Err(ServeError::UnknownModel(format!(
                "unknown model \"{model}\" (this pipeline serves \"{}\")",
                self.plan.model.name
            )))
        }
    }

    /// Records decisions, forgets versions no longer wanted, and makes the supervisor's
    /// choice the version requests read.
    fn settle(
        &self,
        supervision: &mut Supervision,
        decisions: Result<Vec<Decision>, SupervisorError>,
    ) {
        let decisions = match decisions {
            Ok(decisions) => decisions,
            Err(error) => {
                eprintln!("pooch: supervisor: {error}");
                Vec::new()
            }
        };
        if let Some(log) = &mut supervision.log
            && let Err(error) = log.append_all(&decisions)
        {
            eprintln!("pooch: {error}");
        }
        supervision.recent.extend(decisions);
        let excess = supervision.recent.len().saturating_sub(100);
        supervision.recent.drain(..excess);

        let wanted = supervision.supervisor.serving();
        if let Some(version) = wanted
            && !supervision.held.contains_key(&version)
            && let Some(loaded) = load(supervision.store.as_ref(), &self.plan.model.name, version)
        {
            supervision.held.insert(version, loaded);
        }
        let newest: Vec<u64> = supervision
            .held
            .keys()
            .rev()
            .take(self.keep)
            .copied()
            .collect();
        let pinned = supervision.supervisor.pinned();
        supervision.held.retain(|version, _| {
            newest.contains(version) || Some(*version) == wanted || Some(*version) == pinned
        });
        let serving = wanted.and_then(|version| supervision.held.get(&version).cloned());
        let mut current = self
            .serving
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        match serving {
            Some(serving) => *current = Some(serving),
            // a version the supervisor wants but nobody holds: the last one keeps serving
            None if wanted.is_some() => eprintln!(
                "pooch: supervisor chose version {} of {}, which is neither held nor in the store; version {} keeps serving",
                wanted.unwrap_or(0),
                self.plan.model.name,
                current.as_ref().map_or(0, |version| version.version)
            ),
            None => *current = None,
        }
    }

    /// Whether a model version is loaded and serving.
    pub fn ready(&self) -> bool {
        self.serving().is_some()
    }

    /// The version that serves now.
    pub fn serving(&self) -> Option<Arc<ModelVersion>> {
        self.serving
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The versions held, oldest first.
    pub fn held(&self) -> Vec<Arc<ModelVersion>> {
        self.supervise().held.values().cloned().collect()
    }

    /// The last epoch whose feature changes are in.
    pub fn features_epoch(&self) -> Option<u64> {
        let view = self
            .features
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        view.epoch
    }

    /// Scores one request: a JSON object with the example source's fields, and optionally
    /// `model` and `time` (unix seconds; by default, the start of the epoch after the last
    /// complete one). Fields the spec does not know are ignored, and levels never seen in
    /// training weigh nothing, so a new feature in the app never fails a request.
    pub fn predict(&self, request: &Json) -> Result<Prediction, ServeError> {
        let Json::Object(object) = request else {
            return Err(ServeError::BadRequest(
                "a query must be a JSON object".to_owned(),
            ));
        };
        let model = &self.plan.model.name;
        match object.get("model") {
            None | Some(Json::Null) => {}
            Some(Json::String(name)) if name == model => {}
            Some(other) => {
                return Err(ServeError::UnknownModel(format!(
                    "unknown model {other} (this pipeline serves \"{model}\")"
                )));
            }
        }
        let query = queries::parse_object(object, 1, &self.plan, false)
            .map_err(|error| ServeError::BadRequest(error.reason))?;
        let serving = self.serving();

        let mut event;
        let features_epoch;
        {
            let view = self
                .features
                .read()
                .unwrap_or_else(|poison| poison.into_inner());
            features_epoch = view.epoch;
            let time: Time = query.time.unwrap_or_else(|| {
                view.epoch
                    .map_or(0, |epoch| self.plan.epoch_start(epoch.saturating_add(1)))
            });
            event = Event::new(&self.plan, 0, time, time, query.row);
            fill_aggregates(&self.groups, &mut event, |key, aggregate| {
                let value = view.values.get(&(key, aggregate as u32));
                value.copied().unwrap_or((0, 0))
            });
        }
        let features = featurize(&self.plan, &event);
        let (probability, version) = match &serving {
            Some(version) => (version.predict(&features), version.version),
            None => (dataflows::learn::logistic::sigmoid(0.0), 0),
        };
        self.counters.predictions.fetch_add(1, Ordering::Relaxed);
        Ok(Prediction {
            probability,
            model: model.clone(),
            version,
            features_epoch,
        })
    }

    /// The versions held, their metrics and status, and which one serves, as JSON.
    pub fn models_json(&self) -> Json {
        let mut supervision = self.supervise();
        self.poll_locked(&mut supervision);
        let serving = self.serving().map(|version| version.version);
        let held: Vec<Json> = supervision
            .held
            .values()
            .map(|version| {
                json!({
                    "version": version.version,
                    "epoch": version.epoch,
                    "published_at": version.published_at,
                    "finite": version.is_finite(),
                    "weights": version.weights.len(),
                    "metrics": { "examples": version.metrics.examples, "logloss": finite_or_null(version.metrics.logloss) },
                    "status": supervision.supervisor.status(version.version).map(|status| status.name()),
                    "serving": Some(version.version) == serving,
                })
            })
            .collect();
        json!({ "models": [ {
            "name": self.plan.model.name,
            "serving": serving,
            "pinned": supervision.supervisor.pinned(),
            "held": held,
            "supervisor": supervision.supervisor.state(),
            "recent_decisions": serde_json::to_value(&supervision.recent).unwrap_or(Json::Null),
        } ] })
    }

    /// Prometheus text-format lines for the serving state.
    pub fn metrics_text(&self, out: &mut String) {
        use std::fmt::Write;
        let counters = &self.counters;
        let model = &self.plan.model.name;
        let serving = self.serving().map_or(0, |version| version.version);
        let epoch = self.features_epoch();
        let frontier = epoch.map_or(0, |epoch| self.plan.epoch_start(epoch.saturating_add(1)));
        let max_time = counters.max_time_read.load(Ordering::Relaxed);
        let lag = max_time.saturating_sub(frontier);
        let lines = [
            (
                "pooch_facts_read_total",
                "counter",
                "Facts read from the sources.",
                counters.facts_read.load(Ordering::Relaxed),
            ),
            (
                "pooch_dead_letters_total",
                "counter",
                "Lines set aside in the dead-letter file.",
                counters.dead_letters.load(Ordering::Relaxed),
            ),
            (
                "pooch_predictions_total",
                "counter",
                "Requests scored by the serving state.",
                counters.predictions.load(Ordering::Relaxed),
            ),
            (
                "pooch_features_epoch",
                "gauge",
                "The last complete epoch in the served features.",
                epoch.unwrap_or(0),
            ),
            (
                "pooch_frontier_lag_seconds",
                "gauge",
                "Event time read beyond the served features.",
                lag,
            ),
        ];
        for (name, kind, help, value) in lines {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP pooch_model_version_served The model version serving.\n# TYPE pooch_model_version_served gauge\npooch_model_version_served{{model=\"{model}\"}} {serving}"
        );
    }
}

impl crate::serve::http::Backend for ServingState {
    fn predict(&self, query: &Json) -> Result<Prediction, crate::serve::http::ApiError> {
        ServingState::predict(self, query).map_err(api_error)
    }

    fn models(&self) -> Json {
        self.models_json()
    }

    fn pin(&self, model: &str, version: u64) -> Result<Json, crate::serve::http::ApiError> {
        ServingState::pin(self, model, version).map_err(api_error)
    }

    fn unpin(&self, model: &str) -> Result<Json, crate::serve::http::ApiError> {
        ServingState::unpin(self, model).map_err(api_error)
    }

    fn rollback(&self, model: &str) -> Result<Json, crate::serve::http::ApiError> {
        ServingState::rollback(self, model).map_err(api_error)
    }

    fn ready(&self) -> bool {
        ServingState::ready(self)
    }

    fn metrics(&self, out: &mut String) {
        self.metrics_text(out);
    }
}

fn api_error(error: ServeError) -> crate::serve::http::ApiError {
    match error {
        ServeError::BadRequest(message) | ServeError::Refused(message) => {
            crate::serve::http::ApiError::BadRequest(message)
        }
        ServeError::UnknownModel(message) => crate::serve::http::ApiError::NotFound(message),
    }
}

/// Loads a version from the snapshot store, if it is there and verifies.
fn load(store: Option<&PathBuf>, model: &str, version: u64) -> Option<Arc<ModelVersion>> {
    let store = crate::publish::snapshot::SnapshotStore::open(store?, usize::MAX).ok()?;
    let stored = store
        .list(model)
        .ok()?
        .into_iter()
        .find(|stored| stored.version == version)?;
    match crate::publish::snapshot::read(&stored.path) {
        Ok(snapshot) if snapshot.model.version == version => Some(Arc::new(snapshot.model)),
        Ok(_) => None,
        Err(error) => {
            eprintln!("pooch: {error}");
            None
        }
    }
}

fn finite_or_null(value: f64) -> Json {
    if value.is_finite() {
        json!(value)
    } else {
        Json::Null
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::publish::model::{RoundMetrics, Weights};
    use std::path::Path;

    fn state() -> ServingState {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/sniffable.toml");
        ServingState::new(crate::spec::load(&path, None).expect("shipped spec").plan)
    }

    fn version(number: u64, weight: f32) -> Arc<ModelVersion> {
        Arc::new(ModelVersion {
            name: "pooch-predictor".into(),
            version: number,
            epoch: number,
            published_at: number * 3600,
            bits: 18,
            weights: Arc::new(Weights::from_dense(&[weight])),
            metrics: RoundMetrics {
                examples: 100,
                logloss: 0.5,
            },
        })
    }

    #[test]
    fn before_any_model_the_answer_is_the_prior() {
        let state = state();
        let scored = state.predict(&json!({"dog": "dog-1"})).unwrap();
        assert_eq!(
            (scored.probability, scored.version, scored.features_epoch),
            (0.5, 0, None)
        );
        assert!(!state.ready());
    }

    #[test]
    fn the_newest_finite_version_serves_and_a_nan_one_never_does() {
        let state = state();
        state.publish(version(1, 1.0));
        state.publish(version(2, f32::NAN));
        let scored = state
            .predict(&json!({"dog": "dog-1", "hashtags": ["ball"]}))
            .unwrap();
        assert_eq!(scored.version, 1);
        assert_eq!(scored.probability, dataflows::learn::logistic::sigmoid(1.0));
        state.publish(version(3, -1.0));
        assert_eq!(state.predict(&json!({"dog": "dog-1"})).unwrap().version, 3);
        assert_eq!(state.held().len(), 3);
    }

    #[test]
    fn pin_and_rollback_take_effect_for_the_next_request() {
        let state = state();
        for number in 1..=3 {
            state.publish(version(number, number as f32));
        }
        let asked = || state.predict(&json!({"dog": "dog-1"})).unwrap().version;
        assert_eq!(asked(), 3);
        state.pin("pooch-predictor", 1).unwrap();
        assert_eq!(asked(), 1);
        state.publish(version(4, 4.0));
        assert_eq!(asked(), 1, "a pin holds while better versions arrive");
        state.unpin("pooch-predictor").unwrap();
        assert_eq!(asked(), 4);
        state.rollback("pooch-predictor").unwrap();
        assert_eq!(asked(), 3);
        assert!(matches!(
            state.pin("other", 1),
            Err(ServeError::UnknownModel(_))
        ));
        assert!(matches!(
            state.pin("pooch-predictor", 99),
            Err(ServeError::Refused(_))
        ));
        let models = state.models_json();
        assert_eq!(models["models"][0]["serving"], json!(3));
    }

    #[test]
    fn bad_requests_name_the_problem_and_unknown_fields_are_ignored() {
        let state = state();
        let missing = state.predict(&json!({"hashtags": ["ball"]})).unwrap_err();
        assert!(
            missing.to_string().contains("field `dog` is required"),
            "{missing}"
        );
        let wrong = state
            .predict(&json!({"dog": 5.5, "hashtags": 3}))
            .unwrap_err();
        assert!(wrong.to_string().contains("hashtags"), "{wrong}");
        let model = state
            .predict(&json!({"dog": "d", "model": "other"}))
            .unwrap_err();
        assert!(matches!(model, ServeError::UnknownModel(_)));
        assert!(state.predict(&json!({"dog": "d", "mood": "happy"})).is_ok());
        assert!(state.predict(&json!([1, 2])).is_err());
    }

    #[test]
    fn features_change_a_whole_epoch_at_a_time() {
        let state = state();
        let plan = state.plan().clone();
        let groups = plan.lookup_groups();
        let group = &groups[0];
        let key = dataflows::hashing::symbol(b"dog-7");
        let aggregate = group.aggregates[0] as u32;
        state.apply_epoch(3, &[((key, aggregate), (4, 0))]);
        assert_eq!(state.features_epoch(), Some(3));
        state.apply_epoch(4, &[((key, aggregate), (-4, 0))]);
        assert_eq!(state.features_epoch(), Some(4));
        let view = state.features.read().unwrap();
        assert!(view.values.is_empty(), "a value back at zero is forgotten");
    }
}
