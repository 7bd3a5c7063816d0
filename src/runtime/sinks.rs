//! The graph's outputs, gathered at worker 0 and written: answers, metrics, published
//! versions, dead letters, reading progress and the exact regression's reports.
//!
//! Every worker attaches the same sinks, but only worker 0 holds the [`Leader`]: the other
//! workers' sinks write nothing. (Every worker publishes the same versions; worker 0's copy
//! is the one stored.)

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use dataflows::error::GraphError;
use dataflows::event::Answer;
use dataflows::fact::{OFFSET_BITS, Time};
use dataflows::learn::compare::VariantReport;
use dataflows::learn::evaluate::EpochMetrics;
use dataflows::learn::ridge::ExactReport;
use dataflows::plan::Plan;
use dataflows::publish::model::ModelVersion;
use serde_json::Value as Json;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;

use crate::publish::SnapshotMeta;
use crate::runtime::LiveAnswer;
use crate::runtime::collector::Reading;
use crate::runtime::feed::LIVE_BASE;
use crate::runtime::leader::Leader;
use crate::runtime::output::{DeadLetter, ReadProgress};
use crate::serve::console::{DeadLetterNote, EpochPoint};
use crate::serve::serving::ServingState;

/// Worker 0's leader, shared by its sinks; `None` on the other workers.
pub type SharedLeader = Option<Rc<RefCell<Leader>>>;

/// A published version, as the graph's versions collection carries it.
type Published = ((u64, Arc<ModelVersion>), Time, isize);

/// The graph's output streams that the sinks write.
pub struct Outputs<'scope> {
    /// Answers to probe and live queries.
    pub answers: StreamVec<'scope, Time, Answer>,
    /// Each epoch's metrics.
    pub epochs: StreamVec<'scope, Time, EpochMetrics>,
    /// Published versions.
    pub versions: StreamVec<'scope, Time, Published>,
    /// Lines and files that did not become facts.
    pub dead: StreamVec<'scope, Time, DeadLetter>,
    /// The readers' running counts.
    pub progress: StreamVec<'scope, Time, ReadProgress>,
}

/// Gathers the graph's outputs at worker 0 and writes them; `serving` (worker 0's only) is
/// kept up to date with versions, live metrics and reading counters.
pub fn attach_sinks(
    leader: &SharedLeader,
    plan: &Rc<Plan>,
    serving: Option<Arc<ServingState>>,
    outputs: Outputs<'_>,
) {
    sink_answers(leader, outputs.answers);
    sink_metrics(leader, plan, serving.clone(), outputs.epochs);
    sink_versions(leader, serving.clone(), outputs.versions);
    sink_dead_letters(leader, serving.clone(), outputs.dead);
    sink_progress(leader, serving, outputs.progress);
}

/// Answers to the queries file go to `answers.jsonl`, named by the query's id, in query order
/// within each time once the time is complete, so that the file is the same whatever the
/// workers' timing; live answers go back to whoever asked at once.
fn sink_answers(leader: &SharedLeader, answers: StreamVec<'_, Time, Answer>) {
    let sink_leader = leader.clone();
    let mut waiting: BTreeMap<Time, Vec<Answer>> = BTreeMap::new();
    // routed to worker 0 before the probe (graph.rs)
    answers.sink(Pipeline, "Sink: answers", move |(input, frontier)| {
        let Some(leader) = &sink_leader else {
            input.for_each(|_, _| {});
            return;
        };
        let mut leader = leader.borrow_mut();
        leader.note_frontier("answers", frontier_of(frontier));
        input.for_each_stamp(|stamp, data| {
            let time = stamp.least().copied().unwrap_or(0);
            for container in data {
                for answer in container.drain(..) {
                    if answer.query >= LIVE_BASE {
                        if let Some(sender) = &leader.live_answers {
                            // an asker that has gone away no longer wants its answer
                            let _ = sender.send(LiveAnswer {
                                id: answer.query - LIVE_BASE,
                                answer,
                            });
                        }
                    } else {
                        waiting.entry(time).or_default().push(answer);
                    }
                }
            }
        });
        while let Some(entry) = waiting.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            let mut complete = entry.remove();
            complete.sort_by_key(|answer| answer.query);
            for answer in complete {
                let id = leader
                    .query_ids
                    .get(answer.query as usize)
                    .cloned()
                    .unwrap_or(Json::Null);
                leader.collector.answers += 1;
                let result = leader.files.answer(&answer, &id);
                leader.record(result);
            }
        }
    });
}

/// Each epoch's metrics go to `metrics.jsonl` with how reading stands, and to the console.
/// (The supervisor takes its evidence from the published versions' rounds, split by scoring
/// version.)
fn sink_metrics(
    leader: &SharedLeader,
    plan: &Rc<Plan>,
    serving: Option<Arc<ServingState>>,
    epochs: StreamVec<'_, Time, EpochMetrics>,
) {
    let sink_leader = leader.clone();
    let sink_plan = Rc::clone(plan);
    epochs.sink(Pipeline, "Sink: metrics", move |(input, frontier)| {
        if let Some(leader) = &sink_leader {
            leader
                .borrow_mut()
                .note_frontier("metrics", frontier_of(frontier));
        }
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for metrics in data.drain(..) {
                let version = leader.collector.model_version();
                let reading = leader.collector.reading(&sink_plan);
                let elapsed_secs = leader.started.elapsed().as_secs_f64();
                if let Some(serving) = &serving {
                    serving.record_epoch(console_point(&metrics, version, &reading, elapsed_secs));
                }
                let result = leader
                    .files
                    .metrics(&metrics, version, &reading, elapsed_secs);
                leader.record(result);
                if metrics.epoch_scores.has_outcomes() {
                    leader.collector.epochs_with_examples += 1;
                }
                leader.collector.last_epoch = Some(metrics);
            }
        });
    });
}

/// A challenger's outputs, gathered at worker 0.
pub struct ChallengerOutputs<'scope> {
    /// The challenger's name.
    pub name: String,
    /// Its metrics of each epoch.
    pub epochs: StreamVec<'scope, Time, EpochMetrics>,
    /// Its published versions.
    pub versions: StreamVec<'scope, Time, Published>,
}

/// A challenger's epoch metrics go to `metrics.jsonl`, in lines that name it, and its newest
/// version to the collector, for the summary. Its versions are neither stored nor served.
pub fn attach_challenger_sinks(leader: &SharedLeader, challenger: ChallengerOutputs<'_>) {
    let ChallengerOutputs {
        name,
        epochs,
        versions,
    } = challenger;
    let sink_leader = leader.clone();
    let sink_name = name.clone();
    versions.sink(Pipeline, "Sink: challenger versions", move |(input, _)| {
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            let run = leader
                .collector
                .challengers
                .entry(sink_name.clone())
                .or_default();
            for ((_, version), _, diff) in data.drain(..) {
                if diff > 0
                    && run
                        .model
                        .as_ref()
                        .is_none_or(|model| model.version < version.version)
                {
                    run.model = Some(version);
                }
            }
        });
    });
    let sink_leader = leader.clone();
    epochs.sink(Pipeline, "Sink: challenger metrics", move |(input, _)| {
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for metrics in data.drain(..) {
                let run = leader
                    .collector
                    .challengers
                    .entry(name.clone())
                    .or_default();
                let version = run.model.as_ref().map_or(0, |model| model.version);
                let result = leader.files.challenger_metrics(&name, &metrics, version);
                leader.record(result);
                let run = leader
                    .collector
                    .challengers
                    .entry(name.clone())
                    .or_default();
                run.last_epoch = Some(metrics);
            }
        });
    });
}

/// The variants' comparisons and drifts go to `metrics.jsonl`, the collector (for the
/// summary) and the serving state (for `GET /v1/models` and `/metrics`).
pub fn attach_variant_report_sink(
    leader: &SharedLeader,
    serving: Option<Arc<ServingState>>,
    reports: StreamVec<'_, Time, VariantReport>,
) {
    let sink_leader = leader.clone();
    reports.sink(Pipeline, "Sink: variant reports", move |(input, _)| {
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for report in data.drain(..) {
                if let Some(serving) = &serving {
                    serving.record_variants(&report);
                }
                let result = leader.files.variant_report(&report);
                leader.record(result);
                if !report.comparisons.is_empty() {
                    leader.collector.comparisons = report.comparisons;
                }
                leader.collector.drifts.extend(report.drifts);
            }
        });
    });
}

/// Each new version goes to the snapshot writer, with the reading positions it was
/// published at, and to the serving state.
fn sink_versions(
    leader: &SharedLeader,
    serving: Option<Arc<ServingState>>,
    versions: StreamVec<'_, Time, Published>,
) {
    let sink_leader = leader.clone();
    // every worker publishes the same versions; worker 0's copy is stored
    versions.sink(Pipeline, "Sink: snapshots", move |(input, frontier)| {
        if let Some(leader) = &sink_leader {
            leader
                .borrow_mut()
                .note_frontier("versions", frontier_of(frontier));
        }
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for ((_, version), _, diff) in data.drain(..) {
                if diff > 0
                    && leader
                        .collector
                        .model
                        .as_ref()
                        .is_none_or(|model| model.version < version.version)
                {
                    let meta = SnapshotMeta {
                        spec_hash: leader.spec_hash.clone(),
                        features_hash: leader.features_hash.clone(),
                        source_offsets: leader.collector.positions_at(version.published_at),
                    };
                    // the writer coalesces: a slow disk never holds the pipeline back
                    leader.snapshots.send(Arc::clone(&version), meta);
                    if let Some(serving) = &serving {
                        serving.publish(Arc::clone(&version));
                    }
                    leader.collector.model = Some(version);
                }
            }
        });
    });
}

/// The facts the graph could not use, as dead letters with the graph's reason. A withdrawn
/// fact withdraws its errors in the graph, but what was written stays written.
pub fn graph_error_letters<'scope>(
    plan: &Rc<Plan>,
    errors: StreamVec<'scope, Time, (GraphError, Time, isize)>,
) -> StreamVec<'scope, Time, DeadLetter> {
    let plan = Rc::clone(plan);
    errors.flat_map(move |(error, _, diff)| {
        let letter = graph_error_letter(&plan, &error);
        std::iter::repeat_n(letter, usize::try_from(diff).unwrap_or(0))
    })
}

/// The dead letter of one graph error. A fact of fixed files whose facts cannot be withdrawn
/// is identified by its position: the file (numbered across the plan's sources) and the byte
/// offset in it.
fn graph_error_letter(plan: &Plan, error: &GraphError) -> DeadLetter {
    let source = plan.sources.get(usize::from(error.source));
    let positional = source.is_some_and(|source| source.glob.is_none() && !source.retractable());
    let file_index = (error.fact >> OFFSET_BITS) as usize;
    let path = positional
        .then(|| {
            plan.sources
                .iter()
                .flat_map(|source| &source.paths)
                .nth(file_index)
        })
        .flatten();
    DeadLetter {
        source: source.map_or_else(String::new, |source| source.name.clone()),
        file: path.map_or_else(String::new, |path| path.display().to_string()),
        line: 0,
        offset: path.map_or(0, |_| error.fact & ((1 << OFFSET_BITS) - 1)),
        reason: error.reason.clone(),
        raw: format!("fact {} at event time {}", error.fact, error.time),
    }
}

/// Where a sink's input frontier stands: its least time, or `Time::MAX` once it is empty.
fn frontier_of(frontier: &timely::progress::frontier::MutableAntichain<Time>) -> Time {
    frontier.frontier().first().copied().unwrap_or(Time::MAX)
}

/// An epoch's metrics as the console plots them.
fn console_point(
    metrics: &EpochMetrics,
    model_version: u64,
    reading: &Reading,
    elapsed_secs: f64,
) -> EpochPoint {
    let (epoch, running) = (&metrics.epoch_scores, &metrics.running);
    EpochPoint {
        seq: 0,
        epoch: metrics.epoch,
        elapsed_secs,
        examples: epoch.examples,
        logloss: epoch.logloss,
        auc: epoch.auc,
        online_logloss: epoch.online_logloss,
        online_auc: epoch.online_auc,
        truth_logloss: epoch.truth_logloss,
        truth_auc: epoch.truth_auc,
        running_logloss: running.logloss,
        running_auc: running.auc,
        running_online_logloss: running.online_logloss,
        running_truth_logloss: running.truth_logloss,
        running_truth_auc: running.truth_auc,
        running_examples: running.examples,
        model_version,
        frontier: reading.frontier,
        facts: reading.sources.values().map(|counts| counts.facts).sum(),
    }
}

/// Dead letters go to `dead-letter.jsonl`, and the latest to the console.
fn sink_dead_letters(
    leader: &SharedLeader,
    serving: Option<Arc<ServingState>>,
    dead: StreamVec<'_, Time, DeadLetter>,
) {
    let sink_leader = leader.clone();
    dead.sink(Pipeline, "Sink: dead letters", move |(input, frontier)| {
        if let Some(leader) = &sink_leader {
            leader
                .borrow_mut()
                .note_frontier("dead letters", frontier_of(frontier));
        }
        input.for_each_stamp(|stamp, data| {
            let Some(leader) = &sink_leader else {
                return;
            };
            let time = stamp.least().copied().unwrap_or(0);
            let mut leader = leader.borrow_mut();
            for letter in data.flat_map(|container| container.drain(..)) {
                if let Some(serving) = &serving {
                    serving.record_dead_letter(DeadLetterNote {
                        source: letter.source.clone(),
                        file: letter.file.clone(),
                        line: letter.line,
                        reason: letter.reason.clone(),
                    });
                }
                leader.dead_letter(time, letter);
            }
        });
    });
}

/// The readers' counts go to the collector, and from it to the serving state's counters;
/// the serving state takes the control file's commands here too, as reading goes on.
fn sink_progress(
    leader: &SharedLeader,
    serving: Option<Arc<ServingState>>,
    progress: StreamVec<'_, Time, ReadProgress>,
) {
    let sink_leader = leader.clone();
    progress.sink(Pipeline, "Sink: read progress", move |(input, frontier)| {
        if let Some(leader) = &sink_leader {
            leader
                .borrow_mut()
                .note_frontier("progress", frontier_of(frontier));
        }
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for read in data.drain(..) {
                leader.collector.record_progress(read);
            }
            if let Some(serving) = &serving {
                leader.collector.report_to(&serving.counters);
                serving.poll_control();
            }
        });
    });
}

/// Writes the exact regression's reports into the metrics, and keeps the latest for the summary.
pub fn attach_exact_sink(
    leader: &SharedLeader,
    plan: &Rc<Plan>,
    exact: StreamVec<'_, Time, ExactReport>,
) {
    let sink_leader = leader.clone();
    let sink_plan = Rc::clone(plan);
    // reports leave worker 0 only, where the leader is
    exact.sink(Pipeline, "Sink: exact", move |(input, frontier)| {
        if let Some(leader) = &sink_leader {
            leader
                .borrow_mut()
                .note_frontier("exact", frontier_of(frontier));
        }
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for report in data.drain(..) {
                let result = leader.files.exact(&sink_plan, &report);
                leader.record(result);
                leader.collector.exact = Some(report);
            }
        });
    });
}
