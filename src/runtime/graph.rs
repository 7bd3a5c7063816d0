//! A worker's dataflow: the graph `dataflows::build` makes, the inputs reading feeds, what
//! workers tell each other while reading, the probes reading waits on, and the sinks.

use std::cell::RefCell;
use std::rc::Rc;

use dataflows::checkpoint::Checkpointing;
use dataflows::collect::Correction;
use dataflows::event::Query;
use dataflows::fact::{Fact, Time};
use dataflows::learn::train::EndOfReading;
use dataflows::plan::Plan;
use differential_dataflow::input::{Input, InputSession};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Input as _;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, Exchange, Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::runtime::RunOptions;
use crate::runtime::checkpoint::WorkerCheckpoint;
use crate::runtime::output::{DeadLetter, ReadProgress};
use crate::runtime::serving_feed::{FeedWriter, attach_serving};
use crate::runtime::sinks::{
    ChallengerOutputs, Outputs, SharedLeader, attach_challenger_sinks, attach_exact_sink,
    attach_sinks, attach_variant_report_sink, graph_error_letters,
};

/// What workers tell each other while reading.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Control {
    /// The latest event time the sender has read.
    max_seen: Time,
    /// The sender was asked to stop.
    stop: bool,
    /// Worker 0 announces a checkpoint at this cut (wall-clock checkpoints).
    cut: Option<Time>,
}

/// What a worker has heard from the others (and itself).
#[derive(Default)]
pub struct Heard {
    /// The latest event time any worker has read.
    pub max_seen: Time,
    /// Some worker was asked to stop.
    pub stop: bool,
    /// The latest cut worker 0 announced a checkpoint at.
    pub announced_cut: Option<Time>,
}

/// The graph's inputs, all at the same time: the open epoch's start.
pub struct Inputs {
    /// Facts read.
    pub facts: InputSession<Time, Fact, isize>,
    /// Corrections read.
    pub corrections: InputSession<Time, Correction, isize>,
    /// Probe and live queries (worker 0's only carry any).
    pub queries: InputSession<Time, Query, isize>,
    /// Lines and files that did not become facts.
    pub dead: InputHandleVec<Time, DeadLetter>,
    /// The reader's running counts, at every epoch it closes.
    pub progress: InputHandleVec<Time, ReadProgress>,
    /// What this worker tells the others.
    control: InputHandleVec<Time, Control>,
    /// This worker's end of reading, for the trainers.
    ends: InputHandleVec<Time, EndOfReading>,
    /// This worker's parts of checkpoints, for worker 0.
    pub parts: InputHandleVec<Time, Part>,
}

/// A worker's part of the checkpoint at a cut: the cut, the worker, and its part; `None`
/// says the worker declines every cut up to this one that it has not taken (it had closed
/// the epochs past them when it heard of them, or has stopped reading): no checkpoint is
/// written at such a cut.
pub type Part = (Time, usize, Option<WorkerCheckpoint>);

impl Inputs {
    /// The start of the open epoch: everything before it has been given to the graph.
    pub fn open(&self) -> Time {
        *self.facts.time()
    }

    /// Closes the epochs before `time` on every input.
    pub fn advance_to(&mut self, time: Time) {
        self.facts.advance_to(time);
        self.corrections.advance_to(time);
        self.queries.advance_to(time);
        self.dead.advance_to(time);
        self.progress.advance_to(time);
        self.control.advance_to(time);
        self.ends.advance_to(time);
        if *self.parts.time() < time {
            self.parts.advance_to(time);
        }
        self.facts.flush();
        self.corrections.flush();
        self.queries.flush();
    }

    /// Tells the other workers at once the latest time read, and whether to stop.
    pub fn tell_others(&mut self, max_seen: Time, stop: bool) {
        self.control.send(Control {
            max_seen,
            stop,
            cut: None,
        });
        self.control.flush();
    }

    /// Tells every worker (this one too) to checkpoint at `cut`.
    pub fn announce_cut(&mut self, max_seen: Time, cut: Time) {
        self.control.send(Control {
            max_seen,
            stop: false,
            cut: Some(cut),
        });
        self.control.flush();
    }

    /// Sends this worker's part of a checkpoint to worker 0.
    pub fn send_part(&mut self, part: Part) {
        self.parts.send(part);
        // the exchange to worker 0 holds what it is given until the time moves on: move it
        // on at once (nothing downstream of the parts depends on their time)
        let next = self.parts.time().saturating_add(1);
        self.parts.advance_to(next);
    }

    /// Sends this worker's end of reading and closes every input but the queries, which it
    /// returns: queries without a time are asked once the horizon is known.
    pub fn end_reading(self, report: EndOfReading) -> InputSession<Time, Query, isize> {
        let Inputs {
            facts,
            corrections,
            queries,
            dead,
            progress,
            control,
            mut ends,
            parts,
        } = self;
        ends.send(report);
        drop(ends);
        drop(facts);
        drop(corrections);
        drop(dead);
        drop(progress);
        drop(control);
        drop(parts);
        queries
    }
}

/// A worker's dataflow, as reading drives it.
pub struct Graph {
    /// The inputs.
    pub inputs: Inputs,
    /// Follows everything: the run is over when it is done.
    pub probe: ProbeHandle<Time>,
    /// Follows training, which reading must not outrun.
    pub learning: ProbeHandle<Time>,
    /// What the workers have told each other.
    pub heard: Rc<RefCell<Heard>>,
}

/// Builds the worker's dataflow: the graph, the control channel between workers, the serving
/// feed (when `serve_features`: some process serves over HTTP) and the sinks. Every worker
/// must pass the same `serve_features`, or the processes build different graphs and wait on
/// each other forever.
pub fn build(
    worker: &mut Worker,
    plan: &Rc<Plan>,
    settings: dataflows::Settings,
    checkpointing: &Rc<Checkpointing>,
    options: &RunOptions,
    serve_features: bool,
    leader: &SharedLeader,
) -> Graph {
    let index = worker.index();
    let heard = Rc::new(RefCell::new(Heard::default()));
    let mut dead_input = InputHandleVec::<Time, DeadLetter>::new();
    let mut progress_input = InputHandleVec::<Time, ReadProgress>::new();
    let mut control_input = InputHandleVec::<Time, Control>::new();
    let mut ends_input = InputHandleVec::<Time, EndOfReading>::new();
    let mut parts_input = InputHandleVec::<Time, Part>::new();
    let slow_training = options.slow_training_per_epoch;
    let (facts, corrections, queries, probe, learning) = worker.dataflow::<Time, _, _>(|scope| {
        let (facts_input, facts) = scope.new_collection::<Fact, isize>();
        let (corrections_input, corrections) = scope.new_collection::<Correction, isize>();
        let (queries_input, queries) = scope.new_collection::<Query, isize>();
        let ends = scope.input_from(&mut ends_input);
        let graph = dataflows::build_with(
            plan,
            settings,
            checkpointing,
            facts,
            corrections,
            queries,
            ends,
        );
        drop(graph.models);
        // every worker of every process builds the same graph: the feature changes flow
        // wherever some process serves, though only worker 0 (on process 0) holds a state
        if serve_features {
            let changes = dataflows::serve::changes::feature_changes(plan, graph.store);
            let serving = options.serving.clone().filter(|_| index == 0);
            let feed = options
                .serving_feed
                .as_ref()
                .filter(|_| index == 0)
                .and_then(|path| {
                    FeedWriter::create(path)
                        .map_err(|error| {
                            eprintln!("pooch: serving feed {}: {error}; no feed", path.display());
                        })
                        .ok()
                });
            attach_serving(serving, feed, plan.tick_secs, changes);
        } else {
            drop(graph.store);
        }

        // what workers tell each other: the latest time read, and a request to stop
        let heard_by = Rc::clone(&heard);
        scope
            .input_from(&mut control_input)
            .broadcast()
            .inspect(move |control: &Control| {
                let mut heard = heard_by.borrow_mut();
                heard.max_seen = heard.max_seen.max(control.max_seen);
                heard.stop |= control.stop;
                heard.announced_cut = heard.announced_cut.max(control.cut);
            });

        // the workers' parts of checkpoints, gathered at worker 0 (across processes too)
        let parts_leader = leader.clone();
        scope.input_from(&mut parts_input).exchange(|_| 0).sink(
            Pipeline,
            "Sink: checkpoint parts",
            move |(input, _)| {
                input.for_each(|_, data| {
                    if let Some(leader) = &parts_leader {
                        leader.borrow_mut().parts.append(data);
                    } else {
                        data.clear();
                    }
                });
            },
        );

        // `learning` follows training, which reading must not outrun; `probe` follows everything,
        // and what worker 0 writes alone is routed to it before the probe, so that a done probe
        // leaves nothing in flight to a sink that the summary counts
        let epochs = match slow_training {
            Some(pause) => graph.epochs.inspect(move |_| std::thread::sleep(pause)),
            None => graph.epochs,
        };
        let (learning, epochs) = epochs.probe();
        let (probe, answers) = graph.answers.exchange(|_| 0).probe();
        let epochs = epochs.probe_with(&probe);
        let versions = graph
            .versions
            .inner
            .probe_with(&learning)
            .probe_with(&probe);
        // lines the readers could not use, and facts the graph could not
        let dead = scope
            .input_from(&mut dead_input)
            .concat(graph_error_letters(plan, graph.errors.inner))
            .exchange(|_| 0)
            .probe_with(&probe);
        let progress = scope
            .input_from(&mut progress_input)
            .exchange(|_| 0)
            .probe_with(&probe);
        let serving = options.serving.clone().filter(|_| index == 0);
        let reports = graph
            .variant_reports
            .probe_with(&learning)
            .probe_with(&probe);
        attach_variant_report_sink(leader, serving.clone(), reports);
        let outputs = Outputs {
            answers,
            epochs,
            versions,
            dead,
            progress,
        };
        attach_sinks(leader, plan, serving, outputs);
        for challenger in graph.challengers {
            let epochs = challenger.epochs.probe_with(&learning).probe_with(&probe);
            let versions = challenger.versions.inner.probe_with(&probe);
            let outputs = ChallengerOutputs {
                name: challenger.name,
                epochs,
                versions,
            };
            attach_challenger_sinks(leader, outputs);
        }
        if let Some(exact) = graph.exact {
            let exact = exact.probe_with(&learning).probe_with(&probe);
            attach_exact_sink(leader, plan, exact);
        }
        (
            facts_input,
            corrections_input,
            queries_input,
            probe,
            learning,
        )
    });
    Graph {
        inputs: Inputs {
            facts,
            corrections,
            queries,
            dead: dead_input,
            progress: progress_input,
            control: control_input,
            ends: ends_input,
            parts: parts_input,
        },
        probe,
        learning,
        heard,
    }
}
