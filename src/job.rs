//! Running a pipeline: the workers, their readers, the graph, and what it writes.
//!
//! Every worker of every process runs [`worker_main`]: it reads its share of every source file,
//! merges the shares by event time, feeds facts into the graph, and closes an epoch once the
//! facts it has read have moved past it (by the source's lateness). Worker 0 also feeds the
//! queries and owns every output file.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataflows::event::{Answer, Query};
use dataflows::fact::{Fact, Time, Value, position_id};
use dataflows::model::ModelVersion;
use dataflows::plan::Plan;
use differential_dataflow::input::{Input, InputSession};
use serde_json::Value as Json;
use timely::dataflow::InputHandleVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::Input as _;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

use crate::ingest::{LineScratch, ShardReader, parse_line};
use crate::output::{Collector, DeadLetter, OutputError, OutputFiles, RAW_LIMIT, ReadProgress};
use crate::queries::{self, ProbeQuery, Queries};
use crate::snapshot::{SnapshotMeta, SnapshotStore};
use crate::spec::{self, Spec, SpecError};

/// How to run a pipeline.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The pipeline spec.
    pub spec: PathBuf,
    /// Overrides the spec's data directory.
    pub data_dir: Option<PathBuf>,
    /// Where outputs go.
    pub out: PathBuf,
    /// A JSON Lines file of probe queries.
    pub queries: Option<PathBuf>,
    /// Timely's own arguments (`-w`, `-n`, `-p`, `-h`).
    pub timely_args: Vec<String>,
    /// Files are shared among workers in chunks of this many bytes.
    pub chunk_bytes: u64,
    /// Reading pauses while the graph is more than this many epochs behind it.
    pub max_epochs_behind: u64,
    /// How many snapshot files to keep per model.
    pub retain_snapshots: usize,
    /// Print progress lines to stderr.
    pub progress: bool,
}

impl RunOptions {
    /// Options with the defaults for everything but the spec and output directory.
    pub fn new(spec: PathBuf, out: PathBuf) -> Self {
        RunOptions {
            spec,
            data_dir: None,
            out,
            queries: None,
            timely_args: Vec::new(),
            chunk_bytes: 1 << 20,
            max_epochs_behind: 24,
            retain_snapshots: 10,
            progress: true,
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec is wrong.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A source file is missing or unreadable.
    #[error("source `{source_name}`: {path}: {reason}")]
    Source {
        /// The source.
        source_name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The queries file is unreadable.
    #[error("queries file {path}: {source}")]
    Queries {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output could not be written.
    #[error("output: {0}")]
    Output(#[from] OutputError),
    /// Timely could not start (bad flags, or the cluster could not connect).
    #[error("cluster: {0}")]
    Cluster(String),
    /// A worker failed.
    #[error("worker {worker}: {message}")]
    Worker {
        /// The worker's index.
        worker: usize,
        /// What failed.
        message: String,
    },
}

/// A query asked while the pipeline runs, answered from the latest complete state.
#[derive(Clone, Debug)]
pub struct LiveQuery {
    /// The caller's number for it, returned with the answer.
    pub id: u64,
    /// The event to score, in the example source's schema (see [`queries::parse_query`]).
    pub row: dataflows::fact::Row,
}

/// The answer to a [`LiveQuery`].
#[derive(Clone, Debug)]
pub struct LiveAnswer {
    /// The query's number.
    pub id: u64,
    /// The answer.
    pub answer: Answer,
}

/// Channels for asking live queries of a running pipeline; worker 0 takes them.
pub struct LiveQueries {
    /// Queries come in here.
    pub queries: std::sync::mpsc::Receiver<LiveQuery>,
    /// Answers go out here.
    pub answers: std::sync::mpsc::Sender<LiveAnswer>,
}

/// Query numbers from here on are live queries; below, they index the queries file.
const LIVE_BASE: u64 = 1 << 62;

/// Runs a pipeline to the end of its input, and returns the summary (from process 0; other
/// processes return `None`).
pub fn run(options: RunOptions) -> Result<Option<Json>, RunError> {
    run_with_live_queries(options, None)
}

/// As [`run`], answering live queries from `live` while the input is being read.
pub fn run_with_live_queries(
    options: RunOptions,
    live: Option<LiveQueries>,
) -> Result<Option<Json>, RunError> {
    let spec = spec::load(&options.spec, options.data_dir.as_deref())?;
    check_sources(&spec.plan)?;
    let config = timely::Config::from_args(
        std::iter::once("pooch".to_owned()).chain(options.timely_args.iter().cloned()),
    )
    .map_err(|error| {
        RunError::Cluster(format!(
            "timely flags `{}`: {error} (flags: -w THREADS, -n PROCESSES, -p INDEX, -h HOSTFILE)",
            options.timely_args.join(" ")
        ))
    })?;
    // process 0 owns the outputs: set them up before any worker starts, so that a failure
    // here stops the run before the workers depend on each other
    let process = match &config.communication {
        timely::CommunicationConfig::Cluster { process, .. } => *process,
        _ => 0,
    };
    let leader = if process == 0 {
        Some(start_leader(&spec, &options)?)
    } else {
        None
    };
    let job = Arc::new(Job {
        spec,
        options,
        leader: std::sync::Mutex::new(leader),
        step_lines: if live.is_some() { 256 } else { 4096 },
        live: std::sync::Mutex::new(live),
    });
    let guards = timely::execute(config, {
        let job = Arc::clone(&job);
        move |worker| worker_main(&job, worker)
    })
    .map_err(RunError::Cluster)?;
    let mut summary = None;
    for (index, result) in guards.join().into_iter().enumerate() {
        match result {
            Ok(Ok(Some(report))) => summary = Some(report),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => return Err(error),
            Err(panic) => {
                return Err(RunError::Worker {
                    worker: index,
                    message: panic,
                });
            }
        }
    }
    Ok(summary)
}

/// Every source file must exist before the run starts.
fn check_sources(plan: &Plan) -> Result<(), RunError> {
    for source in &plan.sources {
        for path in &source.paths {
            if let Err(error) = std::fs::File::open(path) {
                return Err(RunError::Source {
                    source_name: source.name.clone(),
                    path: path.clone(),
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// What the snapshot writer did.
#[derive(Debug, Default, serde::Serialize)]
struct SnapshotReport {
    /// Versions written to the store.
    written: u64,
    /// Versions skipped because a newer one had arrived before they could be written.
    skipped: u64,
    /// Versions that could not be written, and why.
    errors: Vec<String>,
}

struct Job {
    spec: Spec,
    options: RunOptions,
    /// Process 0's outputs and queries, taken by worker 0.
    leader: std::sync::Mutex<Option<(Leader, Queries)>>,
    /// Live queries, taken by worker 0.
    live: std::sync::Mutex<Option<LiveQueries>>,
    /// Workers step the graph after reading this many lines: often enough for live queries
    /// to be answered promptly when there are any.
    step_lines: u32,
}

/// Worker 0's share of the work that is not reading: output files and bookkeeping.
struct Leader {
    files: OutputFiles,
    live_answers: Option<std::sync::mpsc::Sender<LiveAnswer>>,
    next_version: u64,
    collector: Collector,
    query_ids: Vec<Json>,
    snapshots: Option<std::sync::mpsc::Sender<Arc<ModelVersion>>>,
    snapshot_writer: Option<std::thread::JoinHandle<SnapshotReport>>,
    first_error: Option<OutputError>,
}

impl Leader {
    fn record(&mut self, result: Result<(), OutputError>) {
        if let Err(error) = result {
            self.first_error.get_or_insert(error);
        }
    }
}

fn worker_main(job: &Job, worker: &mut Worker) -> Result<Option<Json>, RunError> {
    let plan = Rc::new(job.spec.plan.clone());
    let index = worker.index();
    let peers = worker.peers();
    let started = Instant::now();

    // worker 0 owns the outputs and the queries
    let taken = if index == 0 {
        job.leader.lock().ok().and_then(|mut leader| leader.take())
    } else {
        None
    };
    let (leader, queries) = match taken {
        Some((leader, queries)) => (Some(leader), queries),
        None => (None, Queries::default()),
    };
    let live_queries = if index == 0 {
        job.live.lock().ok().and_then(|mut live| live.take())
    } else {
        None
    };
    let mut leader = leader;
    if let (Some(leader), Some(live)) = (leader.as_mut(), live_queries.as_ref()) {
        leader.live_answers = Some(live.answers.clone());
    }
    let live_queries = live_queries.map(|live| live.queries);
    let leader = leader.map(|leader| Rc::new(RefCell::new(leader)));

    // continue the version numbering of an existing snapshot store
    let first_version = agree_max(
        worker,
        leader
            .as_ref()
            .map_or(0, |leader| leader.borrow().next_version),
    )
    .max(1);
    let settings = dataflows::Settings { first_version };

    let mut dead_input = InputHandleVec::<Time, DeadLetter>::new();
    let mut progress_input = InputHandleVec::<Time, ReadProgress>::new();
    let (mut facts_input, mut queries_input, probe, learning) =
        worker.dataflow::<Time, _, _>(|scope| {
            let (facts_input, facts) = scope.new_collection::<Fact, isize>();
            let (queries_input, queries) = scope.new_collection::<Query, isize>();
            let graph = dataflows::build(&plan, settings, facts, queries);
            // `learning` follows training, which reading must not outrun; `probe` follows everything
            let (learning, epochs) = graph.epochs.probe();
            let (probe, answers) = graph.answers.probe();
            let epochs = epochs.probe_with(&probe);
            let versions = graph
                .versions
                .inner
                .probe_with(&learning)
                .probe_with(&probe);
            let dead = scope.input_from(&mut dead_input).probe_with(&probe);
            let progress = scope.input_from(&mut progress_input).probe_with(&probe);
            drop(graph.store);
            drop(graph.models);

            let sink_leader = leader.clone();
            answers.sink(
                Exchange::new(|_: &dataflows::event::Answer| 0u64),
                "Sink: answers",
                move |(input, _)| {
                    input.for_each(|_, data| {
                        if let Some(leader) = &sink_leader {
                            let mut leader = leader.borrow_mut();
                            for answer in data.drain(..) {
                                if answer.query >= LIVE_BASE {
                                    if let Some(sender) = &leader.live_answers {
                                        let id = answer.query - LIVE_BASE;
                                        let _ = sender.send(LiveAnswer { id, answer });
                                    }
                                    continue;
                                }
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
                },
            );
            let sink_leader = leader.clone();
            epochs.sink(Pipeline, "Sink: metrics", move |(input, _)| {
                input.for_each(|_, data| {
                    if let Some(leader) = &sink_leader {
                        let mut leader = leader.borrow_mut();
                        for metrics in data.drain(..) {
                            let version = leader
                                .collector
                                .model
                                .as_ref()
                                .map_or(0, |model| model.version);
                            let result = leader.files.metrics(&metrics, version);
                            leader.record(result);
                            leader.collector.epochs_with_examples += 1;
                            leader.collector.last_epoch = Some(metrics);
                        }
                    }
                });
            });
            // every worker publishes the same versions; worker 0's copy is stored
            let sink_leader = leader.clone();
            versions.sink(Pipeline, "Sink: snapshots", move |(input, _)| {
                input.for_each(|_, data| {
                    if let Some(leader) = &sink_leader {
                        let mut leader = leader.borrow_mut();
                        for ((_, version), _, diff) in data.drain(..) {
                            if diff > 0
                                && leader
                                    .collector
                                    .model
                                    .as_ref()
                                    .is_none_or(|model| model.version < version.version)
                            {
                                if let Some(sender) = &leader.snapshots {
                                    // a full channel blocks: snapshots are never dropped
                                    let _ = sender.send(Arc::clone(&version));
                                }
                                leader.collector.model = Some(version);
                            }
                        }
                    }
                });
            });
            let sink_leader = leader.clone();
            dead.sink(
                Exchange::new(|_: &DeadLetter| 0u64),
                "Sink: dead letters",
                move |(input, _)| {
                    input.for_each(|_, data| {
                        if let Some(leader) = &sink_leader {
                            let mut leader = leader.borrow_mut();
                            for letter in data.drain(..) {
                                leader.collector.dead_letters += 1;
                                let result = leader.files.dead_letter(&letter);
                                leader.record(result);
                            }
                        }
                    });
                },
            );
            let sink_leader = leader.clone();
            progress.sink(
                Exchange::new(|_: &ReadProgress| 0u64),
                "Sink: read progress",
                move |(input, _)| {
                    input.for_each(|_, data| {
                        if let Some(leader) = &sink_leader {
                            let mut leader = leader.borrow_mut();
                            for read in data.drain(..) {
                                leader
                                    .collector
                                    .reads
                                    .insert((read.worker, read.source), read);
                            }
                        }
                    });
                },
            );
            (facts_input, queries_input, probe, learning)
        });

    // read this worker's share of every file, merged by event time
    let mut reader = Reader::open(&plan, index, peers, job.options.chunk_bytes)?;
    let mut feeder = Feeder {
        plan: Rc::clone(&plan),
        max_seen: None,
        max_lateness: plan
            .sources
            .iter()
            .map(|source| source.lateness_secs)
            .max()
            .unwrap_or(0),
        timed_queries: {
            let mut timed: Vec<(Time, u64, ProbeQuery)> = queries
                .queries
                .iter()
                .enumerate()
                .filter_map(|(number, query)| {
                    query.time.map(|time| (time, number as u64, query.clone()))
                })
                .collect();
            timed.sort_by_key(|(time, number, _)| (*time, *number));
            timed.into_iter().rev().collect()
        },
    };
    let mut progress_line = ProgressLine {
        enabled: job.options.progress,
        started,
        last: started,
    };
    let mut lines_since_step = 0u32;
    loop {
        let next = reader
            .next(&plan, |letter| dead_input.send(letter))
            .map_err(|message| RunError::Worker {
                worker: index,
                message,
            })?;
        let Some((time, fact)) = next else { break };
        let fact_source = usize::from(fact.source);
        if time < *facts_input.time() {
            let letter = reader
                .late(&plan, &fact, time, *facts_input.time())
                .map_err(|message| RunError::Worker {
                    worker: index,
                    message,
                })?;
            dead_input.send(letter);
        } else {
            reader.counts[usize::from(fact.source)].facts += 1;
            facts_input.update_at(fact, time, 1);
        }
        reader.note_time(fact_source, time);
        let open = feeder.observe(time);
        if open > *facts_input.time() {
            feeder.insert_queries_before(open, &mut queries_input);
            advance(
                open,
                &mut facts_input,
                &mut queries_input,
                &mut dead_input,
                &mut progress_input,
            );
            for read in reader.progress(index as u32) {
                progress_input.send(read);
            }
            // backpressure: do not read further ahead than training can follow (answers
            // are not waited for: they depend on queries, which worker 0 may hold open)
            let behind =
                open.saturating_sub(job.options.max_epochs_behind.saturating_mul(plan.tick_secs));
            while learning.less_than(&behind) {
                worker.step();
            }
        }
        lines_since_step += 1;
        if lines_since_step >= job.step_lines {
            lines_since_step = 0;
            if let Some(live) = &live_queries {
                ask_live_queries(live, &mut queries_input);
            }
            worker.step();
            progress_line.tick(leader.as_deref(), &plan, *facts_input.time());
        }
    }
    for read in reader.progress(index as u32) {
        progress_input.send(read);
    }
    // This worker's input has ended: close what it feeds, so that workers still reading are
    // not held back while this one waits for them below.
    feeder.insert_queries_before(Time::MAX, &mut queries_input);
    drop(facts_input);
    drop(dead_input);
    drop(progress_input);
    // only worker 0 asks queries; the others close their input now
    let mut queries_input = if index == 0 {
        Some(queries_input)
    } else {
        drop(queries_input);
        None
    };

    // agree on the end of the input, and ask the queries that wait for it
    let global_end = agree_max(worker, reader.max_time.unwrap_or(0));
    let end = plan.epoch_start(plan.epoch(global_end) + 1);
    if let Some(input) = queries_input.as_mut() {
        let end = end.max(*input.time());
        for (number, query) in queries.queries.iter().enumerate() {
            if query.time.is_none() {
                input.update_at(
                    Query {
                        number: number as u64,
                        time: end,
                        row: query.row.clone(),
                        live: false,
                    },
                    end,
                    1,
                );
            }
        }
    }
    drop(queries_input);

    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(100)));
        progress_line.tick(leader.as_deref(), &plan, end);
    }

    let Some(leader) = leader else {
        return Ok(None);
    };
    // the graph is done, but its sinks may still hold the leader until the dataflow is dropped
    let mut leader = leader.borrow_mut();
    leader.snapshots = None;
    let snapshots = leader.snapshot_writer.take().map(|writer| {
        writer.join().unwrap_or_else(|_| SnapshotReport {
            errors: vec!["the snapshot writer panicked".into()],
            ..SnapshotReport::default()
        })
    });
    if let Some(error) = leader.first_error.take() {
        return Err(error.into());
    }
    leader.files.flush()?;
    let mut summary = leader.collector.summary(
        &plan,
        &job.spec.hash,
        peers,
        started.elapsed().as_secs_f64(),
    );
    if let (Json::Object(object), Some(snapshots)) = (&mut summary, snapshots) {
        object.insert(
            "snapshots".to_owned(),
            serde_json::to_value(snapshots).unwrap_or(Json::Null),
        );
    }
    let path = job.options.out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(&path, text + "\n").map_err(|source| OutputError { path, source })?;
    Ok(Some(summary))
}

fn start_leader(spec: &Spec, options: &RunOptions) -> Result<(Leader, Queries), RunError> {
    let plan = &spec.plan;
    let mut files = OutputFiles::create(&options.out)?;
    let queries = match &options.queries {
        Some(path) => queries::read(path, plan).map_err(|source| RunError::Queries {
            path: path.clone(),
            source,
        })?,
        None => Queries::default(),
    };
    for error in &queries.errors {
        files.query_error(error)?;
    }
    let store_dir = options.out.join("snapshots");
    let mut store =
        SnapshotStore::open(&store_dir, options.retain_snapshots.max(1)).map_err(|error| {
            RunError::Output(OutputError {
                path: store_dir.clone(),
                source: std::io::Error::other(error.to_string()),
            })
        })?;
    let next_version = store.next_version(&plan.model.name).map_err(|error| {
        RunError::Output(OutputError {
            path: store_dir.clone(),
            source: std::io::Error::other(error.to_string()),
        })
    })?;
    let meta = SnapshotMeta {
        spec_hash: spec.hash.clone(),
        source_offsets: Default::default(),
    };
    let (sender, receiver) = std::sync::mpsc::channel::<Arc<ModelVersion>>();
    // The writer never holds the pipeline back: when versions arrive faster than they can be
    // made durable, it writes the newest that has arrived and skips the ones in between.
    let writer = std::thread::Builder::new()
        .name("snapshot-writer".into())
        .spawn(move || {
            let mut report = SnapshotReport::default();
            while let Ok(mut version) = receiver.recv() {
                while let Ok(newer) = receiver.try_recv() {
                    report.skipped += 1;
                    version = newer;
                }
                match store.write(&version, &meta) {
                    Ok(_) => report.written += 1,
                    Err(error) => {
                        eprintln!(
                            "pooch: snapshot of version {} not written: {error}",
                            version.version
                        );
                        report.errors.push(error.to_string());
                    }
                }
            }
            report
        })
        .map_err(|source| {
            RunError::Output(OutputError {
                path: store_dir,
                source,
            })
        })?;
    let leader = Leader {
        files,
        live_answers: None,
        next_version,
        collector: Collector {
            query_errors: queries.errors.len() as u64,
            ..Collector::default()
        },
        query_ids: queries
            .queries
            .iter()
            .map(|query| query.id.clone())
            .collect(),
        snapshots: Some(sender),
        snapshot_writer: Some(writer),
        first_error: None,
    };
    Ok((leader, queries))
}

/// Asks the live queries that have arrived, at the input's current time.
fn ask_live_queries(
    live: &std::sync::mpsc::Receiver<LiveQuery>,
    input: &mut InputSession<Time, Query, isize>,
) {
    let mut asked = false;
    while let Ok(query) = live.try_recv() {
        let time = *input.time();
        input.update_at(
            Query {
                number: LIVE_BASE + query.id,
                time,
                row: query.row,
                live: true,
            },
            time,
            1,
        );
        asked = true;
    }
    if asked {
        input.flush();
    }
}

/// The largest of the values the workers pass. Every worker must call it, in the same order:
/// each call is a small dataflow they run in step.
fn agree_max(worker: &mut Worker, value: u64) -> u64 {
    let agreed = Rc::new(Cell::new(value));
    let mut input = InputHandleVec::<u64, u64>::new();
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let agreed = Rc::clone(&agreed);
        scope
            .input_from(&mut input)
            .broadcast()
            .inspect(move |value| agreed.set(agreed.get().max(*value)))
            .probe()
            .0
    });
    input.send(value);
    drop(input);
    while !probe.done() {
        worker.step();
    }
    agreed.get()
}

fn advance(
    time: Time,
    facts: &mut InputSession<Time, Fact, isize>,
    queries: &mut InputSession<Time, Query, isize>,
    dead: &mut InputHandleVec<Time, DeadLetter>,
    progress: &mut InputHandleVec<Time, ReadProgress>,
) {
    facts.advance_to(time);
    queries.advance_to(time);
    dead.advance_to(time);
    progress.advance_to(time);
    facts.flush();
    queries.flush();
}

/// Progress on stderr, at most once a second, from worker 0.
struct ProgressLine {
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl ProgressLine {
    fn tick(&mut self, leader: Option<&RefCell<Leader>>, plan: &Plan, open: Time) {
        let Some(leader) =
            leader.filter(|_| self.enabled && self.last.elapsed() >= Duration::from_secs(1))
        else {
            return;
        };
        self.last = Instant::now();
        let leader = leader.borrow();
        let collector = &leader.collector;
        let facts = collector.facts();
        let rate = facts as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let version = collector.model.as_ref().map_or(0, |model| model.version);
        let logloss =
            |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.4}"));
        let (running, last) = match &collector.last_epoch {
            Some(metrics) => (
                logloss(metrics.running.logloss),
                logloss(metrics.epoch_scores.logloss),
            ),
            None => ("-".into(), "-".into()),
        };
        eprintln!(
            "[pooch] epoch {} | {} facts ({:.0}/s) | {} dead letters | model v{} | logloss {} (last epoch {})",
            plan.epoch(open),
            facts,
            rate,
            collector.dead_letters,
            version,
            running,
            last
        );
    }
}

/// Inserts timed queries as the input reaches their time.
struct Feeder {
    plan: Rc<Plan>,
    max_seen: Option<Time>,
    max_lateness: u64,
    /// Timed queries not yet inserted, latest first.
    timed_queries: Vec<(Time, u64, ProbeQuery)>,
}

impl Feeder {
    /// Notes an event time read; returns the start of the epoch the input may now close up to.
    fn observe(&mut self, time: Time) -> Time {
        let max = self.max_seen.map_or(time, |seen| seen.max(time));
        self.max_seen = Some(max);
        let watermark = max.saturating_sub(self.max_lateness);
        self.plan.epoch_start(self.plan.epoch(watermark))
    }

    /// Inserts the timed queries asked before `time` (worker 0 holds them all).
    fn insert_queries_before(&mut self, time: Time, input: &mut InputSession<Time, Query, isize>) {
        while let Some((at, _, _)) = self.timed_queries.last() {
            if *at >= time {
                break;
            }
            let (at, number, query) = self.timed_queries.pop().expect("checked");
            let at = at.max(*input.time());
            input.update_at(
                Query {
                    number,
                    time: at,
                    row: query.row,
                    live: false,
                },
                at,
                1,
            );
        }
    }
}

/// Counts of one source on this worker.
#[derive(Clone, Copy, Default)]
struct SourceCounts {
    facts: u64,
    malformed: u64,
    late: u64,
    time_range: Option<(Time, Time)>,
}

/// One file's share, with its next good fact waiting.
struct FileCursor {
    source: u16,
    file_index: u32,
    path: PathBuf,
    shard: ShardReader,
    scratch: LineScratch,
}

/// This worker's share of every source, merged by event time.
struct Reader {
    cursors: Vec<FileCursor>,
    /// Cursors with a fact waiting, by (time, fact id).
    heap: BinaryHeap<Reverse<(Time, u64, usize)>>,
    waiting: Vec<Option<(Time, Fact)>>,
    started: bool,
    counts: Vec<SourceCounts>,
    max_time: Option<Time>,
}

impl Reader {
    fn open(plan: &Plan, worker: usize, peers: usize, chunk_bytes: u64) -> Result<Self, RunError> {
        let mut cursors = Vec::new();
        let mut file_index = 0u32;
        for (source_index, source) in plan.sources.iter().enumerate() {
            for path in &source.paths {
                let shard = ShardReader::open(path, worker, peers, chunk_bytes, source.header)
                    .map_err(|error| RunError::Source {
                        source_name: source.name.clone(),
                        path: path.clone(),
                        reason: error.to_string(),
                    })?;
                if worker == 0 {
                    warn_on_header_mismatch(source, path, shard.header());
                }
                cursors.push(FileCursor {
                    source: source_index as u16,
                    file_index,
                    path: path.clone(),
                    shard,
                    scratch: LineScratch::default(),
                });
                file_index += 1;
            }
        }
        let count = cursors.len();
        Ok(Reader {
            cursors,
            heap: BinaryHeap::new(),
            waiting: vec![None; count],
            started: false,
            counts: vec![SourceCounts::default(); plan.sources.len()],
            max_time: None,
        })
    }

    /// The next fact in event-time order (ties in file order), dead-lettering bad lines on the way.
    fn next(
        &mut self,
        plan: &Plan,
        mut dead: impl FnMut(DeadLetter),
    ) -> Result<Option<(Time, Fact)>, String> {
        if !self.started {
            self.started = true;
            for cursor in 0..self.cursors.len() {
                self.refill(plan, cursor, &mut dead)?;
            }
        }
        let Some(Reverse((_, _, cursor))) = self.heap.pop() else {
            return Ok(None);
        };
        let next = self.waiting[cursor].take();
        self.refill(plan, cursor, &mut dead)?;
        Ok(next)
    }

    /// Reads the cursor's next good fact into its waiting slot.
    fn refill(
        &mut self,
        plan: &Plan,
        cursor: usize,
        dead: &mut impl FnMut(DeadLetter),
    ) -> Result<(), String> {
        let file = &mut self.cursors[cursor];
        let source = &plan.sources[usize::from(file.source)];
        loop {
            let line = file.shard.next_line().map_err(|error| error.to_string())?;
            let Some(line) = line else { return Ok(()) };
            let (offset, truncated, length) = (line.offset, line.truncated(), line.length);
            let parsed = if truncated {
                Err(format!(
                    "line of {length} bytes is longer than the limit of {} bytes",
                    crate::ingest::MAX_LINE_BYTES
                ))
            } else {
                parse_line(line.bytes, source, &mut file.scratch)
                    .map_err(|reject| reject.to_string())
                    .and_then(|row| match row.get(source.time_field) {
                        Some(&Value::Time(time)) => Ok((time, row)),
                        _ => Err(format!(
                            "field `{}` holds no event time",
                            source.fields[source.time_field].name
                        )),
                    })
            };
            match parsed {
                Ok((time, row)) => {
                    let id = position_id(file.file_index, offset);
                    self.waiting[cursor] = Some((
                        time,
                        Fact {
                            id,
                            source: file.source,
                            row,
                        },
                    ));
                    self.heap.push(Reverse((time, id, cursor)));
                    return Ok(());
                }
                Err(reason) => {
                    let raw =
                        String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(RAW_LIMIT)])
                            .into_owned();
                    let line_number = file
                        .shard
                        .line_number(offset)
                        .map_err(|error| error.to_string())?;
                    self.counts[usize::from(file.source)].malformed += 1;
                    dead(DeadLetter {
                        source: source.name.clone(),
                        file: file.path.display().to_string(),
                        line: line_number,
                        offset,
                        reason,
                        raw,
                    });
                }
            }
        }
    }

    /// The dead letter of a fact that arrived after its epoch closed.
    fn late(
        &mut self,
        plan: &Plan,
        fact: &Fact,
        time: Time,
        open: Time,
    ) -> Result<DeadLetter, String> {
        let source = &plan.sources[usize::from(fact.source)];
        self.counts[usize::from(fact.source)].late += 1;
        let file_index = (fact.id >> dataflows::fact::OFFSET_BITS) as usize;
        let offset = fact.id & ((1 << dataflows::fact::OFFSET_BITS) - 1);
        let cursor = &mut self.cursors[file_index];
        let line = cursor
            .shard
            .line_number(offset)
            .map_err(|error| error.to_string())?;
        Ok(DeadLetter {
            source: source.name.clone(),
            file: cursor.path.display().to_string(),
            line,
            offset,
            reason: format!(
                "late: event time {time} is before the open epoch, which starts at {open} (source `{}` allows {} s of lateness)",
                source.name, source.lateness_secs
            ),
            raw: String::new(),
        })
    }

    fn note_time(&mut self, source: usize, time: Time) {
        let range = &mut self.counts[source].time_range;
        *range = Some(range.map_or((time, time), |(min, max)| (min.min(time), max.max(time))));
        self.max_time = Some(self.max_time.map_or(time, |max| max.max(time)));
    }

    fn progress(&self, worker: u32) -> Vec<ReadProgress> {
        self.counts
            .iter()
            .enumerate()
            .map(|(source, counts)| ReadProgress {
                worker,
                source: source as u16,
                facts: counts.facts,
                malformed: counts.malformed,
                late: counts.late,
                time_range: counts.time_range,
            })
            .collect()
    }
}

fn warn_on_header_mismatch(
    source: &dataflows::plan::SourcePlan,
    path: &Path,
    header: Option<&[u8]>,
) {
    let Some(header) = header else { return };
    let expected = source
        .fields
        .iter()
        .map(|field| field.name.as_str())
        .collect::<Vec<_>>();
    let delimiter = char::from(source.format.delimiter());
    let text = String::from_utf8_lossy(header);
    let found: Vec<&str> = text.split(delimiter).map(str::trim).collect();
    if found != expected {
        eprintln!(
            "pooch: warning: {}: the header names [{}], the spec's source `{}` names [{}]; columns are read by position",
            path.display(),
            found.join(", "),
            source.name,
            expected.join(", ")
        );
    }
}
