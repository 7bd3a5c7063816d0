//! The training operator: scores each example with the servable model, learns from it when its
//! label arrives, and closes a training round at the end of every epoch.
//!
//! Per worker it keeps two copies of the model:
//! - the *base*, the last merged version, which is what serving holds. Every example is
//!   scored by the base as it stood at the example's event time, before any model learned from
//!   it: that is progressive validation against the model a user would have been served.
//! - the *replica*, the base plus this worker's updates in the current round.
//!
//! A round is an epoch. When every example and label of the epoch has been seen, the worker
//! sends the coordinates its replica changed to the merge (see [`super::merge`]), holding a
//! capability at the last second of the epoch to do so. The merged coordinates come back
//! through a feedback edge at the first second of the next epoch, before any of that epoch's
//! examples are processed; the worker applies them to its base, and publishes the new version.
//!
//! The published versions leave on an output connected only to the feedback input. Serving
//! therefore sees the version stream complete up to the next epoch boundary as soon as the
//! previous round has been merged, and never waits for the epoch being ingested.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, ConnectLoop, Feedback};
use timely::progress::Antichain;

use crate::checkpoint::{Checkpointing, Part};
use crate::event::{Event, LabelRequest, partition_key};
use crate::fact::{Symbol, Time};
use crate::hashing::symbol;
use crate::learn::logistic::{Features, log_loss};
use crate::learn::merge::{Merged, RoundMessage, merge};
use crate::learn::optimizer::Optimizer;
use crate::plan::{LabelPlan, Plan};
use crate::publish::model::{Evidence, ModelVersion, RoundMetrics, Weights};
use crate::transform::featurize::featurize;

/// What became of an example, for progressive metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The example was scored and its label arrived.
    Evaluated {
        /// The example's id.
        id: u64,
        /// When the example happened.
        event_time: Time,
        /// The probability the servable model gave it at that time.
        probability: f64,
        /// The probability the worker's replica gave it at that time: the model updated by
        /// every label this worker had learned from, as online learners score progressively.
        online_probability: f64,
        /// Its label.
        label: bool,
        /// The ground-truth probability, for generated data.
        truth: Option<f64>,
    },
    /// The example was scored, but it has no label and never will (its label field is
    /// missing, or its id cannot key the count of a delayed label), so nothing was learned
    /// from it.
    Unlabeled {
        /// The example's id.
        id: u64,
    },
    /// A label arrived for an example this worker never saw (for example a duplicate id).
    Orphaned {
        /// The example's id.
        id: u64,
    },
    /// The example's label was due after the end of what was read (the end of the input, or
    /// where a stopped run stopped reading), so it is not known and nothing was learned.
    BeyondInput {
        /// The example's id.
        id: u64,
    },
}

/// What a worker reports when its reading ends. Every trainer hears every worker's report,
/// and from them learns the *horizon*, the end of what was read: a label due after it was
/// decided by facts nobody read, so it is not learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfReading {
    /// The worker was asked to stop (rather than running out of input).
    pub stopping: bool,
    /// The worker had given the graph every fact before this time.
    pub read_before: Time,
    /// The latest event time the worker read.
    pub max_time: Time,
}

/// The horizon from the reports in so far, of `peers` workers in all: after a stop, what
/// every stopping worker had fully read; at the end of the input, everything up to the latest
/// time any worker read.
///
/// Reports arrive at different moments, and a label is processed once its time is complete,
/// which may be before every report is in. That is safe: a worker that has not reported still
/// holds the reports' input open at its reading position, so a label processed meanwhile is
/// due before that position, and within what that worker reads. A stop bounds the horizon at
/// once; the end of the input is known only when every worker has reported it.
pub fn horizon(reports: &[EndOfReading], peers: usize) -> Option<Time> {
    let stopped = reports
        .iter()
        .filter(|report| report.stopping)
        .map(|report| report.read_before)
        .min();
    if stopped.is_some() {
        return stopped;
    }
    (reports.len() >= peers).then(|| {
        reports
            .iter()
            .map(|report| report.max_time)
            .max()
            .unwrap_or(0)
            .saturating_add(1)
    })
}

/// The outputs of training.
pub struct Trained<'scope> {
    /// One outcome per example or label, at the time it was decided.
    pub outcomes: StreamVec<'scope, Time, Outcome>,
    /// Every published version, keyed by the model's name symbol, on every worker; a version
    /// is retracted once `keep_versions` newer ones exist.
    pub versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
}

/// Trains the plan's model on examples (at their event time) and delayed labels (at the time
/// they are due), across all workers, numbering published versions from `first_version`.
///
/// `variant` says which of the spec's variants the plan's model is (0: the champion), for the
/// checkpoint's state and the operator's name.
pub fn train<'scope>(
    plan: &Rc<Plan>,
    variant: usize,
    first_version: u64,
    examples: VecCollection<'scope, Time, Event>,
    labels: VecCollection<'scope, Time, LabelRequest>,
    ends: StreamVec<'scope, Time, EndOfReading>,
    checkpointing: &Rc<Checkpointing>,
) -> Trained<'scope> {
    let scope = examples.scope();
    let (feedback, merged) = scope.feedback::<Vec<Merged>>(1);

    let name = match variant {
        0 => "Train".to_owned(),
        _ => format!("Train: {}", plan.model.name),
    };
    let mut builder = OperatorBuilder::new(name, scope);
    let partition_plan = Rc::clone(plan);
    let by_entity = move |update: &(Event, Time, isize)| {
        partition_key(&partition_plan, update.0.id, &update.0.row)
    };
    let mut examples_in =
        builder.new_input_connection(examples.inner, Exchange::new(by_entity), []);
    let mut labels_in = builder.new_input_connection(
        labels.inner,
        Exchange::new(|update: &(LabelRequest, Time, isize)| update.0.entity),
        [],
    );
    let mut merged_in = builder.new_input_connection(merged, Pipeline, []);
    let mut ends_in = builder.new_input_connection(ends.broadcast(), Pipeline, []);
    let identity = || Antichain::from_elem(Default::default());
    // rounds leave only under the round capability the operator holds
    let (rounds_out, rounds) = builder.new_output_connection::<Vec<RoundMessage>, _>([]);
    let (outcomes_out, outcomes) =
        builder.new_output_connection::<Vec<Outcome>, _>([(0, identity()), (1, identity())]);
    let (versions_out, versions) = builder
        .new_output_connection::<Vec<((Symbol, Arc<ModelVersion>), Time, isize)>, _>([(
            2,
            identity(),
        )]);
    let mut rounds_out = OutputBuilder::from(rounds_out);
    let mut outcomes_out = OutputBuilder::from(outcomes_out);
    let mut versions_out = OutputBuilder::from(versions_out);

    let worker = scope.index() as u32;
    let mut trainer = Trainer::new(Rc::clone(plan), worker, scope.peers(), first_version);
    let resumed_merges = checkpointing
        .resume_with(|state| state.trainer_of(variant).take())
        .flatten()
        .map(|state| {
            trainer
                .restore(state)
                .expect("a checkpoint's trainer state is checked against the plan before use")
        })
        .unwrap_or_default();
    if checkpointing.exporting() {
        checkpointing.expect(Part::Trainer(variant));
    }
    let checkpointing = Rc::clone(checkpointing);
    builder.build(move |mut capabilities| {
        // keep the capability of the rounds output; the others are taken from inputs, but
        // for the versions of merged rounds a checkpoint holds
        let versions_capability = capabilities.pop();
        capabilities.truncate(1);
        let mut round_capability = capabilities.pop();
        let mut round_epoch: Option<u64> = None;
        let mut work: BTreeMap<Time, Work> = BTreeMap::new();
        let mut merges: BTreeMap<Time, (Capability<Time>, Vec<Merged>)> = BTreeMap::new();
        if let Some(capability) = versions_capability {
            for (time, messages) in resumed_merges {
                merges.insert(time, (capability.delayed(&time), messages));
            }
        }

        move |frontiers| {
            let mut rounds_session = rounds_out.activate();
            let mut outcomes_session = outcomes_out.activate();
            let mut versions_session = versions_out.activate();

            examples_in.for_each_stamp(|capability, data| {
                for container in data {
                    for (event, time, _diff) in container.drain(..) {
                        work.entry(time)
                            .or_insert_with(|| Work::new(capability.delayed(&time, 1)))
                            .events
                            .push(event);
                    }
                }
            });
            labels_in.for_each_stamp(|capability, data| {
                for container in data {
                    for (label, time, _diff) in container.drain(..) {
                        work.entry(time)
                            .or_insert_with(|| Work::new(capability.delayed(&time, 1)))
                            .labels
                            .push(label);
                    }
                }
            });
            ends_in.for_each(|_, data| trainer.ends.append(data));
            merged_in.for_each_stamp(|capability, data| {
                let Some(time) = capability.least().copied() else {
                    return;
                };
                let entry = merges
                    .entry(time)
                    .or_insert_with(|| (capability.delayed(&time, 2), Vec::new()));
                for container in data {
                    entry.1.append(container);
                }
            });

            let complete =
                |time: &Time| frontiers.iter().all(|frontier| !frontier.less_equal(time));

            // process complete times in order: a merge before the examples of the same time
            loop {
                let next_merge = merges.keys().next().copied();
                let next_work = work.keys().next().copied();
                match (next_merge, next_work) {
                    (Some(merge_time), _)
                        if complete(&merge_time)
                            && next_work.is_none_or(|work_time| merge_time <= work_time) =>
                    {
                        let (capability, messages) = merges.remove(&merge_time).expect("present");
                        let mut session = versions_session.session(&capability);
                        for update in trainer.apply(merge_time, messages) {
                            session.give(update);
                        }
                    }
                    (_, Some(work_time)) if complete(&work_time) => {
                        let done = work.remove(&work_time).expect("present");
                        let mut session = outcomes_session.session(&done.capability);
                        trainer.process(work_time, done.events, done.labels, |outcome| {
                            session.give(outcome)
                        });
                    }
                    _ => break,
                }
            }

            // close the round once its epoch's examples and labels are all processed
            let data_frontier = |time: Time| {
                frontiers[..2]
                    .iter()
                    .all(|frontier| !frontier.less_than(&time))
            };
            if let Some(capability) = round_capability.as_mut() {
                let closed = match round_epoch {
                    None => true,
                    Some(epoch) => {
                        let end = trainer.plan.epoch_start(epoch + 1);
                        data_frontier(end) && work.keys().next().is_none_or(|&time| time >= end)
                    }
                };
                if closed {
                    if round_epoch.is_some() {
                        let messages = trainer.close_round();
                        if !messages.is_empty() {
                            rounds_session
                                .session(capability)
                                .give_iterator(messages.into_iter());
                        }
                    }
                    let earliest_data = frontiers[..2]
                        .iter()
                        .flat_map(|frontier| {
                            frontier.frontier().iter().copied().collect::<Vec<_>>()
                        })
                        .chain(work.keys().next().copied())
                        .min();
                    match earliest_data {
                        Some(time) => {
                            let epoch = trainer.plan.epoch(time);
                            let round_end = trainer.plan.epoch_start(epoch + 1).saturating_sub(1);
                            capability.downgrade(&round_end.max(*capability.time()));
                            round_epoch = Some(epoch);
                        }
                        None => {
                            round_capability = None;
                            round_epoch = None;
                        }
                    }
                }
            }

            // At a cut every example and label before it is processed, the round before it is
            // closed, and its merge has arrived (the merged input has passed the cut) but is
            // not applied: that merge is applied at the cut, before the cut's examples.
            if let Some(cut) = checkpointing.wants(Part::Trainer(variant)) {
                let data_done = frontiers[..2]
                    .iter()
                    .all(|frontier| !frontier.less_than(&cut));
                let merges_in = !frontiers[2].less_equal(&cut);
                let round_closed =
                    round_epoch.is_none_or(|epoch| trainer.plan.epoch_start(epoch) >= cut);
                let work_done = work.keys().next().is_none_or(|&time| time >= cut);
                if data_done && merges_in && round_closed && work_done {
                    let pending = merges
                        .iter()
                        .map(|(&time, (_, messages))| (time, messages.clone()))
                        .collect();
                    let state = trainer.export(pending);
                    checkpointing.deposit(Part::Trainer(variant), |worker| {
                        *worker.trainer_of(variant) = Some(state)
                    });
                }
            }
        }
    });

    merge(rounds, plan.model.merge).connect_loop(feedback);
    Trained {
        outcomes,
        versions: versions.as_collection(),
    }
}

/// Examples and labels waiting for their time to complete.
struct Work {
    capability: Capability<Time>,
    events: Vec<Event>,
    labels: Vec<LabelRequest>,
}

impl Work {
    fn new(capability: Capability<Time>) -> Self {
        Work {
            capability,
            events: Vec::new(),
            labels: Vec::new(),
        }
    }
}

/// An example scored and waiting for its label.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Awaiting {
    /// The example's id.
    pub id: u64,
    /// Its partition key, which routes its label (see [`partition_key`]).
    pub entity: u64,
    /// What it was scored on.
    pub features: Features,
    /// The servable model's probability, and the replica's.
    pub probability: f64,
    /// The version that gave `probability` (0: none was published yet).
    #[serde(default)]
    pub scored_by: u64,
    /// The replica's probability.
    pub online_probability: f64,
    /// The ground-truth probability, for generated data.
    pub truth: Option<f64>,
    /// When it happened.
    pub event_time: Time,
}

impl Awaiting {
    /// The worker its label reaches, at `peers` workers (timely's exchange by the key).
    pub fn routes_to(&self, peers: usize) -> usize {
        (self.entity % peers.max(1) as u64) as usize
    }
}

/// A trainer's state at a cut, for a checkpoint (see [`crate::checkpoint`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// The last merged model.
    pub base: Optimizer,
    /// The base plus this worker's updates in the open round.
    pub replica: Optimizer,
    /// The open round's updates per coordinate, ascending by coordinate's first touch.
    pub round_updates: Vec<(u32, u32)>,
    /// The open round's loss sum.
    pub round_loss: f64,
    /// The open round's examples.
    pub round_examples: u64,
    /// Examples scored and waiting for their labels, by id.
    pub awaiting: Vec<Awaiting>,
    /// Coordinates the base has ever changed, ascending.
    pub changed: Vec<u32>,
    /// The number of the last version published.
    pub version: u64,
    /// The versions in the serving window, oldest first.
    pub live: Vec<ModelVersion>,
    /// Merged rounds that had arrived and were still to apply, by time.
    pub pending_merges: Vec<(Time, Vec<Merged>)>,
}

impl TrainerState {
    /// Whether the open round has nothing in it yet, as at every cut.
    pub fn round_is_closed(&self) -> bool {
        self.round_updates.is_empty() && self.round_examples == 0
    }
}

/// One worker's learner state.
struct Trainer {
    plan: Rc<Plan>,
    worker: u32,
    model_symbol: Symbol,
    /// The last merged model: the servable one.
    base: Optimizer,
    /// The base plus this worker's updates in the open round.
    replica: Optimizer,
    /// Updates per coordinate in the open round, and the coordinates with any.
    updates: Vec<u32>,
    touched: Vec<u32>,
    awaiting: HashMap<u64, Awaiting>,
    /// The workers' reports of the end of their reading, all in before a label due after
    /// the horizon is processed (the input they arrive on closes after them).
    ends: Vec<EndOfReading>,
    /// How many workers report.
    peers: usize,
    /// Coordinates the base has ever changed, ascending: where a published version looks.
    changed: Vec<u32>,
    round_loss: f64,
    round_examples: u64,
    /// The open round's examples by the version that scored them.
    round_scored: Vec<Evidence>,
    version: u64,
    live: VecDeque<Arc<ModelVersion>>,
}

impl Trainer {
    fn new(plan: Rc<Plan>, worker: u32, peers: usize, first_version: u64) -> Self {
        let base = Optimizer::new(plan.model.bits, &plan.model.optimizer);
        let size = base.weights().len();
        Trainer {
            model_symbol: symbol(plan.model.name.as_bytes()),
            replica: base.clone(),
            base,
            updates: vec![0; size],
            touched: Vec::new(),
            awaiting: HashMap::new(),
            ends: Vec::new(),
            peers,
            changed: Vec::new(),
            round_loss: 0.0,
            round_examples: 0,
            round_scored: Vec::new(),
            version: first_version.saturating_sub(1),
            live: VecDeque::new(),
            plan,
            worker,
        }
    }

    /// The trainer's state, with the merged rounds still to apply.
    fn export(&self, pending_merges: Vec<(Time, Vec<Merged>)>) -> TrainerState {
        let mut awaiting: Vec<Awaiting> = self.awaiting.values().cloned().collect();
        awaiting.sort_by_key(|awaiting| awaiting.id);
        TrainerState {
            base: self.base.clone(),
            replica: self.replica.clone(),
            round_updates: self
                .touched
                .iter()
                .map(|&coordinate| (coordinate, self.updates[coordinate as usize]))
                .collect(),
            round_loss: self.round_loss,
            round_examples: self.round_examples,
            awaiting,
            changed: self.changed.clone(),
            version: self.version,
            live: self
                .live
                .iter()
                .map(|version| (**version).clone())
                .collect(),
            pending_merges,
        }
    }

    /// Takes on a state exported by [`Trainer::export`], returning its pending merges; an
    /// error when the state is of another model's shape.
    fn restore(&mut self, state: TrainerState) -> Result<Vec<(Time, Vec<Merged>)>, String> {
        let size = self.base.weights().len();
        if state.base.weights().len() != size
            || state.replica.weights().len() != size
            || std::mem::discriminant(&state.base) != std::mem::discriminant(&self.base)
        {
            return Err("the trainer's state is of another model".to_owned());
        }
        self.base = state.base;
        self.replica = state.replica;
        self.touched.clear();
        self.updates.iter_mut().for_each(|count| *count = 0);
        for (coordinate, count) in state.round_updates {
            if let Some(slot) = self.updates.get_mut(coordinate as usize) {
                *slot = count;
                self.touched.push(coordinate);
            }
        }
        self.round_loss = state.round_loss;
        self.round_examples = state.round_examples;
        self.awaiting = state
            .awaiting
            .into_iter()
            .map(|awaiting| (awaiting.id, awaiting))
            .collect();
        self.changed = state.changed;
        self.version = state.version;
        self.live = state.live.into_iter().map(Arc::new).collect();
        Ok(state.pending_merges)
    }

    /// Scores the examples of one time with the base, learns from those with labels, and
    /// learns from the labels due at that time. Both are visited in id order, so that every
    /// layout visits them alike.
    fn process(
        &mut self,
        time: Time,
        mut events: Vec<Event>,
        mut labels: Vec<LabelRequest>,
        mut emit: impl FnMut(Outcome),
    ) {
        events.sort_by_key(|event| event.id);
        for event in events {
            let features = featurize(&self.plan, &event);
            let probability = self.base.predict(&features);
            let online_probability = self.replica.predict(&features);
            let truth = event.truth(&self.plan);
            match (event.label, &self.plan.label) {
                (Some(label), _) => {
                    self.learn(&features, probability, self.version, label);
                    emit(Outcome::Evaluated {
                        id: event.id,
                        event_time: time,
                        probability,
                        online_probability,
                        label,
                        truth,
                    });
                }
                (None, LabelPlan::CountWithin { .. }) => {
                    self.awaiting.insert(
                        event.id,
                        Awaiting {
                            id: event.id,
                            entity: partition_key(&self.plan, event.id, &event.row),
                            features,
                            probability,
                            scored_by: self.version,
                            online_probability,
                            truth,
                            event_time: time,
                        },
                    );
                }
                (None, LabelPlan::Threshold { .. }) => emit(Outcome::Unlabeled { id: event.id }),
            }
        }
        labels.sort_by_key(|label| label.id);
        let at_least = match self.plan.label {
            LabelPlan::CountWithin { at_least, .. } => at_least,
            LabelPlan::Threshold { .. } => i64::MAX,
        };
        let horizon = horizon(&self.ends, self.peers);
        for request in labels {
            let beyond_input = horizon.is_some_and(|horizon| request.as_of > horizon);
            match self.awaiting.remove(&request.id) {
                Some(_) if beyond_input => emit(Outcome::BeyondInput { id: request.id }),
                // an id that cannot key the count leaves no label to learn (a dead letter)
                Some(_) if request.key.is_none() => emit(Outcome::Unlabeled { id: request.id }),
                Some(awaiting) => {
                    let label = request.count >= at_least;
                    self.learn(
                        &awaiting.features,
                        awaiting.probability,
                        awaiting.scored_by,
                        label,
                    );
                    emit(Outcome::Evaluated {
                        id: request.id,
                        event_time: awaiting.event_time,
                        probability: awaiting.probability,
                        online_probability: awaiting.online_probability,
                        label,
                        truth: awaiting.truth,
                    });
                }
                None => emit(Outcome::Orphaned { id: request.id }),
            }
        }
    }

    fn learn(&mut self, features: &[(u32, f32)], probability: f64, scored_by: u64, label: bool) {
        let loss = log_loss(probability, label);
        self.round_loss += loss;
        self.round_examples += 1;
        let evidence = Evidence::of(scored_by, probability, label, loss);
        Evidence::add_to(&mut self.round_scored, &evidence);
        let (updates, touched) = (&mut self.updates, &mut self.touched);
        self.replica.learn(features, label, |coordinate| {
            let count = &mut updates[coordinate as usize];
            if *count == 0 {
                touched.push(coordinate);
            }
            *count += 1;
        });
    }

    /// The messages that close the open round, resetting its counters.
    fn close_round(&mut self) -> Vec<RoundMessage> {
        let mut messages = Vec::with_capacity(self.touched.len() + 1);
        for coordinate in self.touched.drain(..) {
            let slot = coordinate as usize;
            messages.push(RoundMessage::Coordinate {
                coordinate,
                worker: self.worker,
                updates: std::mem::take(&mut self.updates[slot]),
                contribution: self.replica.contribution(&self.base, slot),
            });
        }
        if self.round_examples > 0 {
            messages.push(RoundMessage::Stats {
                worker: self.worker,
                loss_sum: std::mem::take(&mut self.round_loss),
                examples: std::mem::take(&mut self.round_examples),
                totals: self.replica.totals_growth(&self.base),
                scored: std::mem::take(&mut self.round_scored),
            });
        }
        messages
    }

    /// Applies a merged round to the base and the replica, and publishes the new version
    /// (retracting the one that falls out of the serving window).
    fn apply(
        &mut self,
        time: Time,
        merged: Vec<Merged>,
    ) -> Vec<((Symbol, Arc<ModelVersion>), Time, isize)> {
        let mut metrics = RoundMetrics::default();
        let mut newly_changed = Vec::new();
        for message in merged {
            match message {
                Merged::Coordinate { coordinate, merged } => {
                    let slot = coordinate as usize;
                    self.base.apply(slot, &merged);
                    self.replica.copy_coordinate(&self.base, slot);
                    newly_changed.push(coordinate);
                }
                Merged::Stats {
                    loss_sum,
                    examples,
                    totals,
                    scored,
                } => {
                    self.base.apply_totals(totals);
                    self.replica.copy_totals(&self.base);
                    metrics = RoundMetrics {
                        examples,
                        logloss: if examples > 0 {
                            loss_sum / examples as f64
                        } else {
                            0.0
                        },
                        scored,
                    };
                }
            }
        }
        if newly_changed.is_empty() {
            return Vec::new();
        }
        // merged coordinates arrive in coordinate order from each merging worker
        newly_changed.sort_unstable();
        self.changed = merge_sorted(&self.changed, &newly_changed);
        self.version += 1;
        let version = Arc::new(ModelVersion {
            name: self.plan.model.name.clone(),
            version: self.version,
            epoch: self.plan.epoch(time).saturating_sub(1),
            published_at: time,
            bits: self.plan.model.bits,
            weights: Arc::new(Weights::gather(self.base.weights(), &self.changed)),
            metrics,
        });
        let mut updates = vec![((self.model_symbol, Arc::clone(&version)), time, 1)];
        self.live.push_back(version);
        while self.live.len() > self.plan.serving.keep_versions.max(1) {
            if let Some(old) = self.live.pop_front() {
                updates.push(((self.model_symbol, old), time, -1));
            }
        }
        updates
    }
}

/// The union of two ascending lists, ascending and without repeats.
fn merge_sorted(left: &[u32], right: &[u32]) -> Vec<u32> {
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() || j < right.len() {
        let next = match (left.get(i), right.get(j)) {
            (Some(&a), Some(&b)) if a <= b => {
                i += 1;
                if a == b {
                    j += 1;
                }
                a
            }
            (Some(_), Some(&b)) | (None, Some(&b)) => {
                j += 1;
                b
            }
            (Some(&a), None) => {
                i += 1;
                a
            }
            (None, None) => break,
        };
        if merged.last() != Some(&next) {
            merged.push(next);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::merge_sorted;

    #[test]
    fn sorted_lists_merge_without_repeats() {
        assert_eq!(
            merge_sorted(&[1, 4, 9], &[2, 4, 10, 10]),
            vec![1, 2, 4, 9, 10]
        );
        assert_eq!(merge_sorted(&[], &[3]), vec![3]);
        assert_eq!(merge_sorted(&[3], &[]), vec![3]);
    }
}

#[cfg(test)]
mod horizon_tests {
    use super::{EndOfReading, horizon};

    const fn end(max_time: u64) -> EndOfReading {
        EndOfReading {
            stopping: false,
            read_before: u64::MAX,
            max_time,
        }
    }

    const fn stop(read_before: u64, max_time: u64) -> EndOfReading {
        EndOfReading {
            stopping: true,
            read_before,
            max_time,
        }
    }

    #[test]
    fn the_end_of_input_is_known_once_every_worker_reports() {
        assert_eq!(
            horizon(&[end(0)], 2),
            None,
            "a worker that read nothing says nothing of the others"
        );
        assert_eq!(horizon(&[end(0), end(500)], 2), Some(501));
    }

    #[test]
    fn a_stop_bounds_the_horizon_at_once() {
        assert_eq!(horizon(&[stop(300, 420)], 3), Some(300));
        assert_eq!(
            horizon(&[stop(300, 420), end(900), stop(200, 250)], 3),
            Some(200)
        );
    }
}
