//! Serving outside the dataflow: the state an HTTP request is answered from.
//!
//! The graph answers probe queries itself, deterministically, from its serving arrangement.
//! A request from an application cannot wait for a worker to step, so the graph also keeps
//! this copy up to date: worker 0 folds in the feature store's changes once each epoch is
//! complete, and every model version as it is published. A request reads both under short
//! read locks and never touches a worker, so ingestion, merging or a slow disk cannot delay
//! it. What it reads is always a *complete* epoch: the changes of an epoch are applied at
//! once, under one write lock, after the epoch has closed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use dataflows::event::Event;
use dataflows::fact::{Symbol, Time};
use dataflows::fixed::Accum;
use dataflows::plan::Plan;
use dataflows::publish::model::ModelVersion;
use dataflows::transform::featurize::featurize;
use dataflows::transform::fill::fill_aggregates;
use serde_json::{Value as Json, json};

use crate::collect::queries;
use crate::serve::console::{ConsoleJournal, DeadLetterNote, EpochPoint};
use crate::serve::http::{ApiError, Backend, Prediction};
use crate::serve::supervision::{Serve, Supervision};
use crate::serve::supervisor::{
    Decision, DecisionLog, Fallback, Supervisor, SupervisorConfig, SupervisorError,
};

/// The model name of answers from the constant fallback (`[serving] fallback = "constant"`).
pub const CONSTANT_MODEL: &str = "constant";

/// Why a request or an operator's command cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A query that is not a JSON object.
    #[error("a query must be a JSON object")]
    NotAnObject,
    /// A query whose fields do not fit the example source.
    #[error("{reason}")]
    BadQuery {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A query or command naming another model than the pipeline's.
    #[error("unknown model {requested} (this pipeline serves \"{serving}\")")]
    UnknownModel {
        /// The model named, as the JSON it was given in (a name is quoted).
        requested: Json,
        /// The pipeline's model.
        serving: String,
    },
    /// The supervisor refused an operator's command: the message says why, naming the
    /// version.
    #[error(transparent)]
    Refused(#[from] SupervisorError),
    /// No version serves: none has been promoted or pinned. The reason says where the
    /// versions stand.
    #[error("{reason}")]
    NoModel {
        /// Why nothing serves.
        reason: String,
    },
}

/// The current values of the aggregates features read, as of the start of an epoch.
#[derive(Default)]
struct FeatureView {
    values: HashMap<(Symbol, u32), Accum>,
    /// The last epoch whose changes are in.
    epoch: Option<u64>,
}

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
    features: RwLock<FeatureView>,
    serving: RwLock<Option<Arc<ModelVersion>>>,
    supervision: Mutex<Supervision>,
    /// Recent epochs and dead letters, for the console.
    console: Mutex<ConsoleJournal>,
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
        let supervision = Supervision::new(supervisor, plan.serving.keep_versions);
        ServingState {
            groups: plan.lookup_groups(),
            plan,
            features: RwLock::default(),
            serving: RwLock::default(),
            supervision: Mutex::new(supervision),
            console: Mutex::default(),
            counters: ServingCounters::default(),
        }
    }

    /// Writes decisions to `log`, takes commands from the control file of the snapshot store
    /// in `store`, and loads versions from it when the supervisor wants one no longer held.
    pub fn attach_store(&self, store: PathBuf, log: DecisionLog) -> Result<(), SupervisorError> {
        self.supervise().attach_store(store, log)
    }

    /// Records the snapshot files passed over at startup (shown by `GET /v1/models`), and the
    /// versions made for another spec, which are never loaded.
    pub fn set_skipped(&self, skipped: Vec<Json>, foreign: std::collections::BTreeSet<u64>) {
        self.supervise().set_skipped(skipped, foreign);
    }

    /// Names the line of versions this state serves: the running spec's features hash, which
    /// every version it loads was made for (shown by `GET /v1/models`).
    pub fn set_line(&self, features_hash: String) {
        self.supervise().set_line(features_hash);
    }

    /// Adopts a stored version no decision names (see
    /// [`crate::serve::supervisor::Supervisor::adopt`]).
    pub fn adopt(&self, version: Arc<ModelVersion>) {
        let mut supervision = self.supervise();
        let serve = supervision.adopt(version);
        self.serve(serve);
    }

    /// Serves what the supervisor chose, once its state is restored: the version is loaded
    /// from the store when it is not held.
    pub fn settle(&self) {
        let mut supervision = self.supervise();
        let serve = supervision.settle_now();
        self.serve(serve);
    }

    fn supervise(&self) -> MutexGuard<'_, Supervision> {
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
        if let Some(serve) = supervision.publish(version) {
            self.serve(serve);
        }
    }

    /// Pins a version: it serves from the next request until unpinned.
    pub fn pin(&self, model: &str, version: u64) -> Result<Json, ServeError> {
        self.command(model, |supervisor, now| supervisor.pin(version, now))
    }

    /// Releases the pin.
    pub fn unpin(&self, model: &str) -> Result<Json, ServeError> {
        self.command(model, |supervisor, now| supervisor.unpin(now))
    }

    /// Rolls back to the last good version before the serving one.
    pub fn rollback(&self, model: &str) -> Result<Json, ServeError> {
        self.command(model, |supervisor, now| supervisor.rollback(now))
    }

    /// Looks at the control file for commands from `pooch models`, at most every 200 ms.
    pub fn poll_control(&self) {
        let mut supervision = self.supervise();
        if let Some(serve) = supervision.poll_control() {
            self.serve(serve);
        }
    }

    fn command(
        &self,
        model: &str,
        act: impl FnOnce(&mut Supervisor, u64) -> Result<Vec<Decision>, SupervisorError>,
    ) -> Result<Json, ServeError> {
        self.check_model(model)?;
        let mut supervision = self.supervise();
        let (decisions, serve) = supervision.command(act)?;
        self.serve(serve);
        let supervisor = supervision.supervisor();
        Ok(json!({
            "decisions": decisions,
            "serving": supervisor.serving(),
            "pinned": supervisor.pinned(),
        }))
    }

    fn check_model(&self, model: &str) -> Result<(), ServeError> {
        if model == self.plan.model.name {
            Ok(())
        } else {
            Err(self.unknown_model(Json::from(model)))
        }
    }

    fn unknown_model(&self, requested: Json) -> ServeError {
        ServeError::UnknownModel {
            requested,
            serving: self.plan.model.name.clone(),
        }
    }

    /// Makes what the supervision settled on the version requests read. Called with the
    /// supervision locked, so that two settlements cannot land out of order.
    fn serve(&self, serve: Serve) {
        let mut current = self
            .serving
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        match serve {
            Serve::Version(version) => *current = Some(version),
            Serve::Nothing => *current = None,
            Serve::Missing(wanted) => eprintln!(
                "pooch: supervisor chose version {wanted} of {}, which is neither held nor in the store; version {} keeps serving",
                self.plan.model.name,
                current.as_ref().map_or(0, |version| version.version)
            ),
        }
    }

    /// Whether `/v1/predict` answers: a model version is loaded and serving, or the spec
    /// declares a fallback.
    pub fn ready(&self) -> bool {
        self.serving().is_some() || self.has_fallback()
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
        self.supervise().held().cloned().collect()
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
            return Err(ServeError::NotAnObject);
        };
        let model = &self.plan.model.name;
        match object.get("model") {
            None | Some(Json::Null) => {}
            Some(Json::String(name)) if name == model => {}
            Some(other) => return Err(self.unknown_model(other.clone())),
        }
        let query = queries::parse_object(object, 1, &self.plan, false).map_err(|error| {
            ServeError::BadQuery {
                reason: error.reason,
            }
        })?;
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
        let Some(serving) = serving else {
            return self.fallback(features_epoch);
        };
        let features = featurize(&self.plan, &event);
        let (probability, version) = (serving.predict(&features), serving.version);
        self.counters.predictions.fetch_add(1, Ordering::Relaxed);
        Ok(Prediction {
            probability,
            model: model.clone(),
            version: Some(version),
            features_epoch,
        })
    }

    /// The answer when no version serves: the constant model's (the running positive rate,
    /// named `"constant"`, with no version) when the spec declares it as the fallback, else
    /// why nothing serves.
    fn fallback(&self, features_epoch: Option<u64>) -> Result<Prediction, ServeError> {
        let supervision = self.supervise();
        let supervisor = supervision.supervisor();
        match supervisor.config().fallback {
            Fallback::None => Err(ServeError::NoModel {
                reason: supervision.why_nothing_serves(),
            }),
            Fallback::Constant => {
                self.counters.predictions.fetch_add(1, Ordering::Relaxed);
                Ok(Prediction {
                    probability: supervisor.constant_probability(),
                    model: CONSTANT_MODEL.to_owned(),
                    version: None,
                    features_epoch,
                })
            }
        }
    }

    /// Whether the spec declares a fallback that answers when no version serves.
    fn has_fallback(&self) -> bool {
        self.supervise().supervisor().config().fallback != Fallback::None
    }

    /// The versions held, their metrics and status, and which one serves, as JSON.
    pub fn models_json(&self) -> Json {
        let mut supervision = self.supervise();
        if let Some(serve) = supervision.poll_control() {
            self.serve(serve);
        }
        let serving = self.serving().map(|version| version.version);
        json!({ "models": [supervision.models_json(serving)] })
    }

    fn journal(&self) -> MutexGuard<'_, ConsoleJournal> {
        self.console
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records an epoch's progressive metrics for the console.
    pub fn record_epoch(&self, point: EpochPoint) {
        self.journal().record_epoch(point);
    }

    /// Records a dead letter for the console.
    pub fn record_dead_letter(&self, note: DeadLetterNote) {
        self.journal().record_dead_letter(note);
    }

    /// What the console polls: the epochs after `since`, the counters, the dead letters,
    /// the model and what serves.
    pub fn console_json(&self, since: u64) -> Json {
        let mut answer = self.journal().json(since);
        let counters = &self.counters;
        let epoch = self.features_epoch();
        let frontier = epoch.map_or(0, |epoch| self.plan.epoch_start(epoch.saturating_add(1)));
        let max_time = counters.max_time_read.load(Ordering::Relaxed);
        if let Json::Object(object) = &mut answer {
            object.insert("pipeline".into(), json!(self.plan.name));
            object.insert("model".into(), json!(self.plan.model.name));
            object.insert(
                "serving".into(),
                json!(self.serving().map(|version| version.version)),
            );
            object.insert(
                "counters".into(),
                json!({
                    "facts_read": counters.facts_read.load(Ordering::Relaxed),
                    "dead_letters": counters.dead_letters.load(Ordering::Relaxed),
                    "predictions": counters.predictions.load(Ordering::Relaxed),
                    "features_epoch": epoch,
                    "max_time_read": max_time,
                    "frontier_lag_secs": max_time.saturating_sub(frontier),
                }),
            );
        }
        answer
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

impl Backend for ServingState {
    fn predict(&self, query: &Json) -> Result<Prediction, ApiError> {
        ServingState::predict(self, query).map_err(api_error)
    }

    fn models(&self) -> Json {
        self.models_json()
    }

    fn pin(&self, model: &str, version: u64) -> Result<Json, ApiError> {
        ServingState::pin(self, model, version).map_err(api_error)
    }

    fn unpin(&self, model: &str) -> Result<Json, ApiError> {
        ServingState::unpin(self, model).map_err(api_error)
    }

    fn rollback(&self, model: &str) -> Result<Json, ApiError> {
        ServingState::rollback(self, model).map_err(api_error)
    }

    fn ready(&self) -> bool {
        ServingState::ready(self)
    }

    fn metrics(&self, out: &mut String) {
        self.metrics_text(out);
    }

    fn console(&self, since: u64) -> Json {
        self.console_json(since)
    }
}

/// The HTTP status of a refusal: 404 for another model or a version not held, 503 when no
/// version serves, 400 for anything else.
fn api_error(error: ServeError) -> ApiError {
    match error {
        ServeError::UnknownModel { .. }
        | ServeError::Refused(SupervisorError::UnknownVersion { .. }) => {
            ApiError::NotFound(error.to_string())
        }
        ServeError::NoModel { .. } => ApiError::Unavailable(error.to_string()),
        ServeError::NotAnObject | ServeError::BadQuery { .. } | ServeError::Refused(_) => {
            ApiError::BadRequest(error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataflows::publish::model::{Evidence, RoundMetrics, Weights};
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
            // the round's examples were scored by the version before, at 0.5 (the constant
            // model scores half positives at ln 2): publishing a version promotes the one
            // before it
            metrics: RoundMetrics {
                examples: 100,
                logloss: 0.5,
                scored: vec![Evidence {
                    scored_by: number - 1,
                    examples: 100,
                    positives: 50,
                    loss_sum: 50.0,
                    min_probability: 0.1,
                    max_probability: 0.9,
                    extreme: 0,
                }],
            },
        })
    }

    #[test]
    fn before_any_model_the_answer_is_503_with_a_reason() {
        let state = state();
        let refused = state.predict(&json!({"dog": "dog-1"})).unwrap_err();
        assert!(matches!(refused, ServeError::NoModel { .. }), "{refused}");
        assert!(
            refused
                .to_string()
                .contains("no version of pooch-predictor serves"),
            "{refused}"
        );
        assert!(matches!(api_error(refused), ApiError::Unavailable(_)));
        assert!(!state.ready());
    }

    #[test]
    fn a_declared_constant_fallback_answers_as_itself_until_a_version_serves() {
        let plan = state().plan().clone();
        let config = SupervisorConfig {
            fallback: Fallback::Constant,
            ..SupervisorConfig::default()
        };
        let supervisor = Supervisor::new(plan.model.name.clone(), config).unwrap();
        let state = ServingState::with_supervisor(plan, supervisor);
        assert!(state.ready(), "the fallback answers");
        let answer = state.predict(&json!({"dog": "dog-1"})).unwrap();
        // no round seen yet: one positive and one negative imagined
        assert_eq!(
            (answer.model.as_str(), answer.version, answer.probability),
            (CONSTANT_MODEL, None, 0.5)
        );
        let body = serde_json::to_value(&answer).unwrap();
        assert_eq!(body["model"], json!("constant"));
        assert_eq!(body["version"], Json::Null);
        // version 1 is judged on the round of version 2 (100 examples, 50 positive)
        state.publish(version(1, 1.0));
        let answer = state.predict(&json!({"dog": "dog-1"})).unwrap();
        assert_eq!(
            (answer.model.as_str(), answer.version),
            (CONSTANT_MODEL, None)
        );
        state.publish(version(2, 1.0));
        let answer = state.predict(&json!({"dog": "dog-1"})).unwrap();
        assert_eq!(
            (answer.model.as_str(), answer.version),
            ("pooch-predictor", Some(1))
        );
        // a bad query is still refused, fallback or not
        assert!(state.predict(&json!({"hashtags": ["ball"]})).is_err());
    }

    #[test]
    fn the_newest_finite_version_serves_and_a_nan_one_never_does() {
        let state = state();
        state.publish(version(1, 1.0));
        state.publish(version(2, f32::NAN));
        let scored = state
            .predict(&json!({"dog": "dog-1", "hashtags": ["ball"]}))
            .unwrap();
        assert_eq!(scored.version, Some(1));
        assert_eq!(scored.probability, dataflows::learn::logistic::sigmoid(1.0));
        // version 3 serves once the examples it scored arrive, with version 4
        state.publish(version(3, -1.0));
        assert_eq!(
            state.predict(&json!({"dog": "dog-1"})).unwrap().version,
            Some(1)
        );
        state.publish(version(4, -1.0));
        assert_eq!(
            state.predict(&json!({"dog": "dog-1"})).unwrap().version,
            Some(3)
        );
        assert_eq!(state.held().len(), 3);
    }

    #[test]
    fn pin_and_rollback_take_effect_for_the_next_request() {
        let state = state();
        for number in 1..=4 {
            state.publish(version(number, number as f32));
        }
        let asked = || {
            let answer = state.predict(&json!({"dog": "dog-1"})).unwrap();
            answer.version.expect("a version answers")
        };
        assert_eq!(asked(), 3);
        // version 1 is no longer held (the newest 3 are, with what serves)
        state.pin("pooch-predictor", 2).unwrap();
        assert_eq!(asked(), 2);
        state.publish(version(5, 5.0));
        assert_eq!(asked(), 2, "a pin holds while better versions arrive");
        state.unpin("pooch-predictor").unwrap();
        assert_eq!(asked(), 4);
        state.rollback("pooch-predictor").unwrap();
        assert_eq!(asked(), 3);
        assert!(matches!(
            state.pin("other", 1),
            Err(ServeError::UnknownModel { .. })
        ));
        assert!(matches!(
            state.pin("pooch-predictor", 99),
            Err(ServeError::Refused(_))
        ));
        let refused = state.pin("pooch-predictor", 99).unwrap_err();
        assert!(refused.to_string().contains("version 99"), "{refused}");
        assert!(matches!(api_error(refused), ApiError::NotFound(_)));
        let models = state.models_json();
        assert_eq!(models["models"][0]["serving"], json!(3));
    }

    #[test]
    fn a_loss_that_is_not_a_number_is_listed_as_null() {
        let state = state();
        state.publish(version(1, 1.0));
        let mut diverged = (*version(2, 1.0)).clone();
        diverged.metrics.logloss = f64::NAN;
        state.publish(Arc::new(diverged));
        let models = state.models_json();
        let held = &models["models"][0]["held"];
        assert_eq!(held[0]["metrics"], json!({"examples": 100, "logloss": 0.5}));
        assert_eq!(
            held[1]["metrics"],
            json!({"examples": 100, "logloss": null})
        );
        // its round was version 1's evidence: version 2 waits for its own
        assert_eq!(held[1]["status"], json!("candidate"));
    }

    #[test]
    fn bad_requests_name_the_problem_and_unknown_fields_are_ignored() {
        let state = state();
        state.publish(version(1, 1.0));
        state.publish(version(2, 1.0));
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
        assert_eq!(
            model.to_string(),
            "unknown model \"other\" (this pipeline serves \"pooch-predictor\")"
        );
        let error = state.pin("cat", 1).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown model \"cat\" (this pipeline serves \"pooch-predictor\")"
        );
        assert_eq!(
            state.predict(&json!([1, 2])).unwrap_err().to_string(),
            "a query must be a JSON object"
        );
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
