//! Checkpoints of the graph's state at an epoch boundary, and graphs built from them.
//!
//! A *cut* `T` is an epoch boundary: every input has given the graph all it has before `T` and
//! nothing at or after it, and the graph has done all the work it can. The state a
//! continuation from `T` needs is then, per worker, plain data ([`WorkerState`]):
//!
//! - the **facts and corrections** given to the graph before `T`, consolidated. A graph built
//!   from a state feeds them back at `T - 1` into the collection and transformation regions
//!   only: the feature store, the facts whose window retractions are still to come, the `last`
//!   and `distinct` aggregates, the re-keying joins and the facts a correction may still
//!   withdraw are all functions of those collections, so they are rebuilt exactly (windows
//!   re-issue their own pending retractions from the facts' event times). Examples, label
//!   requests, the exact regression and the graph's errors ignore everything before `T`, so
//!   nothing is scored, learned or reported twice;
//! - the **label requests still pending** (due at or after `T`), fed back at their own times;
//! - the **trainer**'s state: both copies of the model with their full optimizer state, the
//!   examples scored and awaiting their labels, the open round's counters, the version number,
//!   the versions in the serving window, and the merged round that arrives at `T` (applied at
//!   `T` before any of its epoch's examples, as in an uninterrupted run);
//! - worker 0's **progressive evaluation** totals and **exact regression** sums.
//!
//! The versions in the serving window are arranged again at `T - 1` for serving, but do not
//! leave the graph again as [`crate::Graph::versions`].
//!
//! What the state does not hold: lookups waiting for the store (none at a cut: every example
//! before `T` has been answered), the per-epoch sums of the exact regression (every epoch before
//! `T` is closed), and anything outside the graph (read positions, outputs, the serving state).
//!
//! [`WorkerState::rescale`] re-partitions the states of one layout for another: facts,
//! corrections and label requests go anywhere (the graph routes them), awaiting examples go to
//! the worker that will receive their labels, and the model is worker 0's (after the pending
//! merge every replica equals the base, so any worker's would do).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::rc::Rc;

use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::ToStream;
use timely::dataflow::operators::generic::Operator;

use crate::collect::Correction;
use crate::event::LabelRequest;
use crate::fact::{Fact, Time};
use crate::learn::compare::CompareState;
use crate::learn::evaluate::Running;
use crate::learn::ridge::Ridge;
use crate::learn::train::{Awaiting, TrainerState};

/// One worker's share of the graph's state at a cut.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    /// The cut: the state holds everything before it, and nothing at or after it.
    pub cut: Time,
    /// The worker this state was taken from, and how many there were.
    pub worker: usize,
    /// How many workers the graph had.
    pub peers: usize,
    /// The facts this worker gave the graph before the cut, consolidated, in order.
    pub facts: Vec<(Fact, isize)>,
    /// The corrections this worker gave the graph before the cut, consolidated, in order.
    pub corrections: Vec<(Correction, isize)>,
    /// The facts this worker had already given the graph for times at or after the cut (a
    /// reader gives facts ahead of the epoch it closes), at their times.
    pub facts_ahead: Vec<(Fact, Time, isize)>,
    /// The corrections given for times at or after the cut, at their times.
    pub corrections_ahead: Vec<(Correction, Time, isize)>,
    /// Label requests generated before the cut and due at or after it, at their due times.
    pub labels: Vec<(LabelRequest, Time, isize)>,
    /// The trainer's state.
    pub trainer: Option<TrainerState>,
    /// The progressive evaluation's running totals (worker 0 holds them).
    pub evaluator: Option<Running>,
    /// The exact regression's learner (worker 0 holds it).
    pub exact: Option<Ridge>,
    /// The challengers' trainers and evaluators, in the order of
    /// [`crate::plan::Plan::challengers`]; the champion's are `trainer` and `evaluator`.
    #[serde(default)]
    pub challengers: Vec<ChallengerState>,
    /// The variants' paired comparisons and drift detectors (worker 0 holds them).
    #[serde(default)]
    pub compare: Option<CompareState>,
}

/// A challenger's share of a worker's state: its trainer, and (on worker 0) its evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChallengerState {
    /// The challenger's trainer.
    pub trainer: Option<TrainerState>,
    /// Its progressive evaluation's running totals.
    pub evaluator: Option<Running>,
}

impl WorkerState {
    /// The trainer state of variant `variant` (0: the champion).
    pub(crate) fn trainer_of(&mut self, variant: usize) -> &mut Option<TrainerState> {
        match variant {
            0 => &mut self.trainer,
            _ => &mut self.challenger(variant).trainer,
        }
    }

    /// The evaluation totals of variant `variant` (0: the champion).
    pub(crate) fn evaluator_of(&mut self, variant: usize) -> &mut Option<Running> {
        match variant {
            0 => &mut self.evaluator,
            _ => &mut self.challenger(variant).evaluator,
        }
    }

    /// How many variants the state has room for: the champion and its challengers.
    fn variants(&self) -> usize {
        1 + self.challengers.len()
    }

    fn challenger(&mut self, variant: usize) -> &mut ChallengerState {
        if self.challengers.len() < variant {
            self.challengers
                .resize_with(variant, ChallengerState::default);
        }
        &mut self.challengers[variant - 1]
    }
}

impl WorkerState {
    /// The states for `peers` workers from the states of every worker of one layout, at one
    /// cut. The same layout gets its own states back; another gets them re-partitioned.
    ///
    /// An error names what does not fit: no states, states of different cuts or layouts, or
    /// a worker missing.
    pub fn rescale(mut states: Vec<WorkerState>, peers: usize) -> Result<Vec<WorkerState>, String> {
        if peers == 0 {
            return Err("no workers to resume on".to_owned());
        }
        let Some(first) = states.first() else {
            return Err("a checkpoint without any worker's state".to_owned());
        };
        let (cut, old_peers) = (first.cut, first.peers);
        states.sort_by_key(|state| state.worker);
        for (index, state) in states.iter().enumerate() {
            if state.cut != cut || state.peers != old_peers || state.worker != index {
                return Err(format!(
                    "worker states do not fit together: worker {} of {} at cut {}, expected \
                     worker {index} of {old_peers} at cut {cut}",
                    state.worker, state.peers, state.cut
                ));
            }
        }
        if states.len() != old_peers {
            return Err(format!(
                "the checkpoint holds {} of its {old_peers} workers' states",
                states.len()
            ));
        }
        if old_peers == peers {
            return Ok(states);
        }
        let mut out: Vec<WorkerState> = (0..peers)
            .map(|worker| WorkerState {
                cut,
                worker,
                peers,
                ..WorkerState::default()
            })
            .collect();
        let variants = states.iter().map(WorkerState::variants).max().unwrap_or(1);
        let mut awaiting: Vec<Vec<Awaiting>> = vec![Vec::new(); variants];
        let mut models: Vec<Option<TrainerState>> = vec![None; variants];
        let mut position = 0usize;
        for mut state in states {
            for variant in 0..variants {
                if let Some(mut trainer) = state.trainer_of(variant).take() {
                    if !trainer.round_is_closed() {
                        return Err(format!(
                            "worker {}'s training round is open at the cut",
                            state.worker
                        ));
                    }
                    awaiting[variant].append(&mut trainer.awaiting);
                    models[variant].get_or_insert(trainer);
                }
            }
            if state.worker == 0 {
                for variant in 0..variants {
                    *out[0].evaluator_of(variant) = state.evaluator_of(variant).take();
                }
                out[0].exact = state.exact.take();
                out[0].compare = state.compare.take();
            }
            for fact in state.facts {
                out[position % peers].facts.push(fact);
                position += 1;
            }
            for correction in state.corrections {
                out[position % peers].corrections.push(correction);
                position += 1;
            }
            for fact in state.facts_ahead {
                out[position % peers].facts_ahead.push(fact);
                position += 1;
            }
            for correction in state.corrections_ahead {
                out[position % peers].corrections_ahead.push(correction);
                position += 1;
            }
            for label in state.labels {
                out[position % peers].labels.push(label);
                position += 1;
            }
        }
        for state in &mut out {
            state.facts.sort();
            state.corrections.sort();
            state.facts_ahead.sort();
            state.corrections_ahead.sort();
            state.labels.sort();
        }
        for (variant, (model, awaiting)) in models.into_iter().zip(awaiting).enumerate() {
            let Some(model) = model else { continue };
            for (worker, state) in out.iter_mut().enumerate() {
                let mut trainer = model.clone();
                // the worker that will receive an example's label is the one its entity routes to
                trainer.awaiting = awaiting
                    .iter()
                    .filter(|awaiting| awaiting.routes_to(peers) == worker)
                    .cloned()
                    .collect();
                trainer.awaiting.sort_by_key(|awaiting| awaiting.id);
                *state.trainer_of(variant) = Some(trainer);
            }
        }
        Ok(out)
    }
}

/// The parts of a worker's state, each deposited by the operator that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Part {
    Facts,
    Corrections,
    Labels,
    /// The trainer of a variant (0: the champion).
    Trainer(usize),
    /// The evaluator of a variant.
    Evaluator(usize),
    Exact,
    Compare,
}

/// A worker's checkpointing: the state it resumes from, if any, and the taking of its state
/// at a requested cut, if enabled. One per worker, shared by the graph's operators.
#[derive(Debug, Default)]
pub struct Checkpointing {
    exporting: bool,
    layout: std::cell::Cell<(usize, usize)>,
    resumed_at: Option<Time>,
    resume: RefCell<Option<WorkerState>>,
    export: RefCell<Export>,
}

#[derive(Debug, Default)]
struct Export {
    cut: Option<Time>,
    expected: Vec<Part>,
    deposited: Vec<Part>,
    state: WorkerState,
}

impl Checkpointing {
    /// No checkpoints: the graph neither resumes nor keeps what a checkpoint needs.
    pub fn off() -> Rc<Self> {
        Rc::new(Checkpointing::default())
    }

    /// A graph that can be asked for its state at cuts ([`Checkpointing::request`]), resuming
    /// from `resume` when given. Keeping the facts given to the graph costs memory in
    /// proportion to them.
    pub fn new(exporting: bool, resume: Option<WorkerState>) -> Rc<Self> {
        Rc::new(Checkpointing {
            exporting,
            layout: std::cell::Cell::new((0, 1)),
            resumed_at: resume.as_ref().map(|state| state.cut),
            resume: RefCell::new(resume),
            export: RefCell::new(Export::default()),
        })
    }

    /// Whether states can be taken.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// The cut the graph resumed from, if it did.
    pub fn resumed_at(&self) -> Option<Time> {
        self.resumed_at
    }

    /// Asks for the state at `cut`, an epoch boundary the inputs have not yet advanced to.
    /// Advance them to `cut`, then step the worker until [`Checkpointing::take`] gives the
    /// state, and only then give the graph more. Facts and corrections may have been given
    /// ahead, for times at or after the cut (the state keeps them); queries must not have
    /// been (a query waiting for the store is not part of the state).
    pub fn request(&self, cut: Time) {
        let mut export = self.export.borrow_mut();
        export.cut = Some(cut);
        export.deposited.clear();
        let (worker, peers) = self.layout.get();
        export.state = WorkerState {
            cut,
            worker,
            peers,
            ..WorkerState::default()
        };
    }

    /// The cut asked for and not yet taken.
    pub fn requested(&self) -> Option<Time> {
        self.export.borrow().cut
    }

    /// The state at the requested cut once every part of it is in; `None` before.
    pub fn take(&self) -> Option<WorkerState> {
        let mut export = self.export.borrow_mut();
        export.cut?;
        let complete = export
            .expected
            .iter()
            .all(|part| export.deposited.contains(part));
        if !complete {
            return None;
        }
        export.cut = None;
        export.deposited.clear();
        Some(std::mem::take(&mut export.state))
    }

    /// Records which worker of how many the graph is built on.
    pub(crate) fn set_layout(&self, worker: usize, peers: usize) {
        self.layout.set((worker, peers));
    }

    /// Registers a part of the state that an operator will deposit.
    pub(crate) fn expect(&self, part: Part) {
        let mut export = self.export.borrow_mut();
        if !export.expected.contains(&part) {
            export.expected.push(part);
        }
    }

    /// The requested cut, when `part` has not been deposited for it yet.
    pub(crate) fn wants(&self, part: Part) -> Option<Time> {
        let export = self.export.borrow();
        export.cut.filter(|_| !export.deposited.contains(&part))
    }

    /// Deposits `part` of the state.
    pub(crate) fn deposit(&self, part: Part, fill: impl FnOnce(&mut WorkerState)) {
        let mut export = self.export.borrow_mut();
        if export.cut.is_some() && !export.deposited.contains(&part) {
            fill(&mut export.state);
            export.deposited.push(part);
        }
    }

    /// Takes a piece of the state resumed from, leaving the rest.
    pub(crate) fn resume_with<R>(&self, take: impl FnOnce(&mut WorkerState) -> R) -> Option<R> {
        self.resume.borrow_mut().as_mut().map(take)
    }
}

/// What [`keep_consolidated`] deposits: the updates before the cut, consolidated, and those
/// at or after it, at their times.
pub(crate) type Kept<D> = (Vec<(D, isize)>, Vec<(D, Time, isize)>);

/// Keeps the updates of a collection for the state's `part`: those the frontier has passed
/// consolidated, the others at their times; deposits them once the collection is complete up
/// to the requested cut.
pub(crate) fn keep_consolidated<'scope, D>(
    collection: &VecCollection<'scope, Time, D>,
    checkpointing: &Rc<Checkpointing>,
    part: Part,
    name: &str,
    deposit: fn(&mut WorkerState, Kept<D>),
) where
    D: differential_dataflow::Data + Hash,
{
    if !checkpointing.exporting() {
        return;
    }
    checkpointing.expect(part);
    let checkpointing = Rc::clone(checkpointing);
    let mut past: HashMap<D, isize> = HashMap::new();
    let mut ahead: BTreeMap<Time, Vec<(D, isize)>> = BTreeMap::new();
    collection
        .inner
        .clone()
        .sink(Pipeline, name, move |(input, frontier)| {
            input.for_each(|_, data| {
                for (datum, time, diff) in data.drain(..) {
                    ahead.entry(time).or_default().push((datum, diff));
                }
            });
            // what the frontier has passed is consolidated
            let passed = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            let later = ahead.split_off(&passed);
            for (_, updates) in std::mem::replace(&mut ahead, later) {
                for (datum, diff) in updates {
                    *past.entry(datum).or_insert(0) += diff;
                }
            }
            if let Some(cut) = checkpointing.wants(part)
                && !frontier.less_than(&cut)
            {
                past.retain(|_, diff| *diff != 0);
                let mut before: Vec<(D, isize)> = past
                    .iter()
                    .map(|(datum, diff)| (datum.clone(), *diff))
                    .collect();
                before.sort();
                let mut after: Vec<(D, Time, isize)> = ahead
                    .iter()
                    .flat_map(|(&time, updates)| {
                        updates
                            .iter()
                            .map(move |(datum, diff)| (datum.clone(), time, *diff))
                    })
                    .collect();
                after.sort();
                checkpointing.deposit(part, |state| deposit(state, (before, after)));
            }
        });
}

/// Keeps the label requests not yet due, depositing those due at or after the requested cut.
pub(crate) fn keep_pending_labels<'scope>(
    requests: &VecCollection<'scope, Time, LabelRequest>,
    checkpointing: &Rc<Checkpointing>,
) {
    if !checkpointing.exporting() {
        return;
    }
    checkpointing.expect(Part::Labels);
    let checkpointing = Rc::clone(checkpointing);
    let mut pending: BTreeMap<Time, Vec<(LabelRequest, isize)>> = BTreeMap::new();
    requests.inner.clone().sink(
        Pipeline,
        "Checkpoint: pending labels",
        move |(input, frontier)| {
            input.for_each(|_, data| {
                for (request, time, diff) in data.drain(..) {
                    pending.entry(time).or_default().push((request, diff));
                }
            });
            // what the frontier has passed has been looked up
            if let Some(&least) = frontier.frontier().first() {
                pending = pending.split_off(&least);
            } else {
                pending.clear();
            }
            if let Some(cut) = checkpointing.wants(Part::Labels)
                && !frontier.less_than(&cut)
            {
                // the requests of facts given ahead of the cut are made again from them
                let mut labels: Vec<(LabelRequest, Time, isize)> = pending
                    .range(cut..)
                    .flat_map(|(&time, requests)| {
                        requests
                            .iter()
                            .filter(|(request, _)| request.fact_at < cut)
                            .map(move |(request, diff)| (request.clone(), time, *diff))
                    })
                    .collect();
                labels.sort();
                checkpointing.deposit(Part::Labels, |state| state.labels = labels);
            }
        },
    );
}

/// The batches of `stream` sent at or after `cut`: in a resumed graph, those before it carry
/// the state resumed from.
pub(crate) fn sent_from<'scope, D: Clone + 'static>(
    stream: StreamVec<'scope, Time, D>,
    cut: Option<Time>,
) -> StreamVec<'scope, Time, D> {
    let Some(cut) = cut else {
        return stream;
    };
    stream.unary::<CapacityContainerBuilder<Vec<D>>, _, _, _>(
        Pipeline,
        "Checkpoint: sent from the cut",
        move |_, _| {
            move |input, output| {
                input.for_each(|capability, data| {
                    if capability.least().is_some_and(|&time| time >= cut) {
                        output.session(&capability).give_container(data);
                    } else {
                        data.clear();
                    }
                });
            }
        },
    )
}

/// The updates resumed from, as a collection at their own times.
pub(crate) fn resumed<'scope, D>(
    like: &VecCollection<'scope, Time, impl differential_dataflow::Data>,
    updates: Vec<(D, Time, isize)>,
) -> VecCollection<'scope, Time, D>
where
    D: differential_dataflow::Data,
{
    updates.to_stream(like.scope()).as_collection()
}

/// The time resumed data is fed at: just before the cut, so every read as of the cut or later
/// sees it.
pub(crate) fn before(cut: Time) -> Time {
    cut.saturating_sub(1)
}
