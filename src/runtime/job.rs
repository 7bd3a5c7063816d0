//! Running a pipeline: the workers, their reading, the graph, and what it writes.
//!
//! Every worker of every process runs [`worker_main`]: it reads its share of every source file
//! (see [`crate::collect::read`]), feeds facts and corrections into the graph in event-time order, and
//! closes an epoch once the facts it has read have moved past it by the source's lateness.
//! Worker 0 also feeds the queries and owns every output file.
//!
//! Reading ends at the end of the input, or when a signal (SIGINT, SIGTERM) asks for a stop.
//! Either way the workers agree on a *horizon*, the end of what was read: labels due after it
//! were decided by facts nobody read, so they are not learned. Then the inputs close, the graph
//! drains, the last version is published and stored, and the run exits with status 0.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataflows::collect::Correction;
use dataflows::event::{Answer, Query};
use dataflows::fact::{Fact, Time};
use dataflows::learn::ridge::ExactReport;
use dataflows::learn::train::EndOfReading;
use dataflows::plan::Plan;
use dataflows::publish::model::ModelVersion;
use differential_dataflow::input::{Input, InputSession};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use timely::dataflow::InputHandleVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::core::Input as _;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

use crate::collect::queries::{self, ProbeQuery, Queries};
use crate::collect::read::{Item, Next, Reader};
use crate::publish::snapshot::{SnapshotMeta, SnapshotStore};
use crate::runtime::output::{Collector, DeadLetter, OutputError, OutputFiles, ReadProgress};
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
    /// Reading pauses while training is more than this many epochs behind it.
    pub max_epochs_behind: u64,
    /// How many snapshot files to keep per model.
    pub retain_snapshots: usize,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Keep reading files as they grow, and pick up new files matching a source's glob,
    /// until a signal stops the run.
    pub follow: bool,
    /// While following, how long to wait before looking at the files again.
    pub poll_interval: Duration,
    /// For tests of backpressure: training pauses this long at every epoch.
    pub slow_training_per_epoch: Option<Duration>,
    /// A serving state outside the graph to keep up to date (for the HTTP endpoint): worker 0
    /// folds in every complete epoch's feature changes and every published version. Set by
    /// [`run_until`] when `http` is given.
    pub serving: Option<Arc<crate::serve::serving::ServingState>>,
    /// Serve predictions over HTTP while the run lasts (process 0 only).
    pub http: Option<crate::serve::http::HttpConfig>,
    /// Told the address the HTTP endpoint listens on, once it does.
    pub http_bound: Option<std::sync::mpsc::Sender<std::net::SocketAddr>>,
    /// With `http`, keep serving after the input is read, until a signal.
    pub serve_after_input: bool,
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
            follow: false,
            poll_interval: Duration::from_millis(50),
            slow_training_per_epoch: None,
            serving: None,
            http: None,
            http_bound: None,
            serve_after_input: false,
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

/// Runs a pipeline to the end of its input (or, following, until SIGINT or SIGTERM), and
/// returns the summary (from process 0; other processes return `None`).
pub fn run(options: RunOptions) -> Result<Option<Json>, RunError> {
    run_with_live_queries(options, None)
}

/// As [`run`], answering live queries from `live` while the input is being read.
pub fn run_with_live_queries(
    options: RunOptions,
    live: Option<LiveQueries>,
) -> Result<Option<Json>, RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|error| {
            RunError::Cluster(format!("cannot listen for signal {signal}: {error}"))
        })?;
    }
    run_until(options, live, stop)
}

/// As [`run_with_live_queries`], stopping cleanly when `stop` becomes true.
pub fn run_until(
    options: RunOptions,
    live: Option<LiveQueries>,
    stop: Arc<AtomicBool>,
) -> Result<Option<Json>, RunError> {
    let spec = spec::load(&options.spec, options.data_dir.as_deref())?;
    check_sources(&spec.plan, options.follow)?;
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
    let mut options = options;
    let http = match (&options.http, process) {
        (Some(config), 0) => {
            let serving = start_serving(&spec, &options)?;
            let server = crate::serve::http::spawn(config.clone(), Arc::clone(&serving) as _)
                .map_err(|error| RunError::Cluster(format!("--http: {error}")))?;
            eprintln!("pooch: serving on http://{}", server.local_addr());
            if let Some(bound) = &options.http_bound {
                let _ = bound.send(server.local_addr());
            }
            options.serving = Some(serving);
            Some(server)
        }
        _ => None,
    };
    let job = Arc::new(Job {
        spec,
        leader: std::sync::Mutex::new(leader),
        step_lines: if live.is_some() { 256 } else { 4096 },
        live: std::sync::Mutex::new(live),
        stop,
        options,
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
    if let Some(server) = http {
        if job.options.serve_after_input && !job.stop.load(Ordering::Relaxed) {
            eprintln!(
                "pooch: the input is read; still serving on http://{} until SIGINT or SIGTERM",
                server.local_addr()
            );
            while !job.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if let Some(serving) = &job.options.serving {
                    serving.poll_control();
                }
            }
        }
        server.shutdown();
    }
    Ok(summary)
}

/// The serving state for the HTTP endpoint: supervised, its decisions written to
/// `OUT/decisions.jsonl`, commands taken from the snapshot store's control file, and the
/// newest good snapshot loaded at once, so requests are answered before ingestion catches up.
fn start_serving(
    spec: &Spec,
    options: &RunOptions,
) -> Result<Arc<crate::serve::serving::ServingState>, RunError> {
    use crate::serve::supervisor::{DecisionLog, Supervisor};
    let plan = &spec.plan;
    let store_dir = options.out.join("snapshots");
    let failed = |error: String| RunError::Cluster(format!("serving: {error}"));
    let supervisor = Supervisor::new(plan.model.name.clone(), spec.supervisor.clone())
        .map_err(|error| failed(error.to_string()))?;
    let serving = Arc::new(crate::serve::serving::ServingState::with_supervisor(
        plan.clone(),
        supervisor,
    ));
    let log = DecisionLog::open(DecisionLog::path_for_store(&store_dir))
        .map_err(|error| failed(error.to_string()))?;
    serving
        .attach_store(store_dir.clone(), log)
        .map_err(|error| failed(error.to_string()))?;
    let store = crate::publish::snapshot::SnapshotStore::open(&store_dir, options.retain_snapshots)
        .map_err(|error| failed(error.to_string()))?;
    let newest = store
        .newest_good(&plan.model.name)
        .map_err(|error| failed(error.to_string()))?;
    for skipped in &newest.skipped {
        eprintln!("pooch: serving: skipped a snapshot: {skipped}");
    }
    if let Some(snapshot) = newest.snapshot {
        eprintln!(
            "pooch: serving {} version {} from {} until this run publishes",
            plan.model.name,
            snapshot.model.version,
            store_dir.display()
        );
        serving.publish(Arc::new(snapshot.model));
    }
    Ok(serving)
}

/// Every source file must exist before the run starts, and a glob must match something
/// unless the run follows it.
fn check_sources(plan: &Plan, follow: bool) -> Result<(), RunError> {
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
        if let Some(pattern) = &source.glob
            && source.paths.is_empty()
            && !follow
        {
            return Err(RunError::Source {
                source_name: source.name.clone(),
                path: PathBuf::from(pattern),
                reason: "no file matches (with --follow, files may appear later)".into(),
            });
        }
    }
    Ok(())
}

/// What the snapshot writer did.
#[derive(Debug, Default, Serialize)]
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
    /// Set by a signal: stop reading, and end cleanly.
    stop: Arc<AtomicBool>,
}

/// Worker 0's share of the work that is not reading: output files and bookkeeping.
struct Leader {
    files: OutputFiles,
    live_answers: Option<std::sync::mpsc::Sender<LiveAnswer>>,
    next_version: u64,
    collector: Collector,
    query_ids: Vec<Json>,
    spec_hash: String,
    snapshots: Option<std::sync::mpsc::Sender<(Arc<ModelVersion>, SnapshotMeta)>>,
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

/// What workers tell each other while reading.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Control {
    /// The latest event time the sender has read.
    max_seen: Time,
    /// The sender was asked to stop.
    stop: bool,
}

/// What a worker has heard from the others.
#[derive(Default)]
struct Heard {
    max_seen: Time,
    stop: bool,
}

/// How reading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The input ran out.
    Input,
    /// A signal asked for a stop.
    Stop,
}

fn worker_main(job: &Job, worker: &mut Worker) -> Result<Option<Json>, RunError> {
    let plan = Rc::new(job.spec.plan.clone());
    let index = worker.index();
    let peers = worker.peers();
    let started = Instant::now();
    let failed = |message: String| RunError::Worker {
        worker: index,
        message,
    };

    // worker 0 owns the outputs, the queries and the live queries
    let taken = if index == 0 {
        job.leader.lock().ok().and_then(|mut leader| leader.take())
    } else {
        None
    };
    let (mut leader, queries) = match taken {
        Some((leader, queries)) => (Some(leader), queries),
        None => (None, Queries::default()),
    };
    let live_queries = if index == 0 {
        job.live.lock().ok().and_then(|mut live| live.take())
    } else {
        None
    };
    if let (Some(leader), Some(live)) = (leader.as_mut(), live_queries.as_ref()) {
        leader.live_answers = Some(live.answers.clone());
    }
    let live_queries = live_queries.map(|live| live.queries);

    // continue the version numbering of an existing snapshot store
    let next_version = leader.as_ref().map_or(0, |leader| leader.next_version);
    let first_version = agree(worker, vec![next_version])[0].max(1);
    let settings = dataflows::Settings { first_version };
    let leader = leader.map(|leader| Rc::new(RefCell::new(leader)));

    let heard = Rc::new(RefCell::new(Heard::default()));
    let mut dead_input = InputHandleVec::<Time, DeadLetter>::new();
    let mut progress_input = InputHandleVec::<Time, ReadProgress>::new();
    let mut control_input = InputHandleVec::<Time, Control>::new();
    let mut ends_input = InputHandleVec::<Time, EndOfReading>::new();
    let slow_training = job.options.slow_training_per_epoch;
    let (mut facts_input, mut corrections_input, mut queries_input, probe, learning) = worker
        .dataflow::<Time, _, _>(|scope| {
            let (facts_input, facts) = scope.new_collection::<Fact, isize>();
            let (corrections_input, corrections) = scope.new_collection::<Correction, isize>();
            let (queries_input, queries) = scope.new_collection::<Query, isize>();
            let ends = scope.input_from(&mut ends_input);
            let graph = dataflows::build(&plan, settings, facts, corrections, queries, ends);
            drop(graph.models);
            match &job.options.serving {
                Some(serving) => {
                    let changes = dataflows::serve::changes::feature_changes(&plan, graph.store);
                    attach_serving(Arc::clone(serving), index == 0, plan.tick_secs, changes);
                }
                None => drop(graph.store),
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
                });

            // `learning` follows training, which reading must not outrun; `probe` follows everything
            let epochs = match slow_training {
                Some(pause) => graph.epochs.inspect(move |_| std::thread::sleep(pause)),
                None => graph.epochs,
            };
            let (learning, epochs) = epochs.probe();
            let (probe, answers) = graph.answers.probe();
            let epochs = epochs.probe_with(&probe);
            let versions = graph
                .versions
                .inner
                .probe_with(&learning)
                .probe_with(&probe);
            let dead = scope.input_from(&mut dead_input).probe_with(&probe);
            let progress = scope.input_from(&mut progress_input).probe_with(&probe);
            let serving = job.options.serving.clone().filter(|_| index == 0);
            attach_sinks(
                &leader, &plan, serving, answers, epochs, versions, dead, progress,
            );
            attach_graph_errors(&leader, &plan, graph.errors.inner.probe_with(&probe));
            if let Some(exact) = graph.exact {
                let exact = exact.probe_with(&learning).probe_with(&probe);
                attach_exact_sink(&leader, &plan, exact);
            }
            (
                facts_input,
                corrections_input,
                queries_input,
                probe,
                learning,
            )
        });

    // read this worker's share of every file, merged by event time
    let mut reader = Reader::open(
        &plan,
        index,
        peers,
        job.options.chunk_bytes,
        job.options.follow,
    )
    .map_err(|(source_name, path, error)| RunError::Source {
        source_name,
        path,
        reason: error.to_string(),
    })?;
    let mut feeder = Feeder::new(&plan, &queries);
    let mut progress_line = ProgressLine {
        enabled: job.options.progress,
        started,
        last: started,
    };
    let mut lines_since_step = 0u32;
    let mut last_rescan = Instant::now();
    let mut stop_sent = false;
    let mut max_read_ahead: u64 = 0;
    let mut reported_failures = 0;
    let ending = loop {
        // a signal here, or a stop heard from another worker
        if job.stop.load(Ordering::Relaxed) && !stop_sent {
            stop_sent = true;
            control_input.send(Control {
                max_seen: reader.max_time.unwrap_or(0),
                stop: true,
            });
            control_input.flush();
        }
        if heard.borrow().stop {
            break Ending::Stop;
        }
        let open = *facts_input.time();
        let watermark = match reader.next(&plan, open) {
            Next::Item(time, item) => {
                match item {
                    // a late fact admitted comes at the open epoch's time, its event time in the data
                    Item::Fact(fact) => facts_input.update_at(fact, time.max(open), 1),
                    // a correction takes effect at its own time, or at once if that has passed
                    Item::Correction(correction) => {
                        corrections_input.update_at(correction, time.max(open), 1)
                    }
                    Item::Dead(letter) => dead_input.send(letter),
                }
                feeder.watermark(reader.max_time)
            }
            Next::Pending => {
                // nothing to read now: follow the other workers' progress, and wait for more
                for failure in &reader.failures[reported_failures..] {
                    eprintln!("pooch: source `{}`: {}", failure.source, failure.reason);
                    dead_input.send(failure_letter(failure));
                }
                reported_failures = reader.failures.len();
                if last_rescan.elapsed() >= Duration::from_secs(1) {
                    last_rescan = Instant::now();
                    for (source, path, error) in reader.rescan(&plan) {
                        eprintln!("pooch: source `{source}`: {}: {error}", path.display());
                    }
                }
                if let Some(live) = &live_queries {
                    ask_live_queries(live, &mut queries_input);
                }
                worker.step_or_park(Some(job.options.poll_interval));
                progress_line.tick(leader.as_deref(), &plan, open);
                let heard_max = heard.borrow().max_seen;
                feeder.watermark(Some(reader.max_time.unwrap_or(0).max(heard_max)))
            }
            Next::End => break Ending::Input,
        };
        if watermark > open {
            feeder.insert_queries_before(watermark, &mut queries_input);
            advance(
                watermark,
                &mut facts_input,
                &mut corrections_input,
                &mut queries_input,
                &mut dead_input,
                &mut progress_input,
                &mut control_input,
                &mut ends_input,
            );
            for read in reader.progress(&plan, watermark) {
                progress_input.send(read);
            }
            // tell the other workers at once: one waiting for its file to grow follows this
            control_input.send(Control {
                max_seen: reader.max_time.unwrap_or(0),
                stop: false,
            });
            control_input.flush();
            // backpressure: do not read further ahead than training can follow (answers
            // are not waited for: they depend on queries, which worker 0 may hold open)
            let behind = watermark
                .saturating_sub(job.options.max_epochs_behind.saturating_mul(plan.tick_secs));
            while learning.less_than(&behind) && !heard.borrow().stop {
                worker.step();
            }
            let trained =
                learning.with_frontier(|frontier| frontier.first().copied().unwrap_or(watermark));
            max_read_ahead =
                max_read_ahead.max(plan.epoch(watermark).saturating_sub(plan.epoch(trained)));
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
    };

    // This worker's reading is over: tell the others, and close what it feeds, so that
    // workers still reading are not held back while this one waits for them below.
    let open = *facts_input.time();
    for read in reader.progress(&plan, open) {
        progress_input.send(read);
    }
    for failure in &reader.failures[reported_failures..] {
        eprintln!("pooch: source `{}`: {}", failure.source, failure.reason);
        dead_input.send(failure_letter(failure));
    }
    feeder.insert_queries_before(Time::MAX, &mut queries_input);
    let stopping = ending == Ending::Stop;
    let report = EndOfReading {
        stopping,
        read_before: if stopping { open } else { Time::MAX },
        max_time: reader.max_time.unwrap_or(0),
    };
    ends_input.send(report);
    drop(ends_input);
    drop(facts_input);
    drop(corrections_input);
    drop(dead_input);
    drop(progress_input);
    drop(control_input);
    let mut queries_input = if index == 0 {
        Some(queries_input)
    } else {
        drop(queries_input);
        None
    };

    // Every trainer learns the horizon from every worker's report; the driver learns it here
    // too, for the queries asked at the end and the summary.
    let agreed = agree(
        worker,
        vec![
            u64::from(report.stopping),
            Time::MAX - report.read_before,
            report.max_time,
        ],
    );
    let all = EndOfReading {
        stopping: agreed[0] == 1,
        read_before: Time::MAX - agreed[1],
        max_time: agreed[2],
    };
    let (stopped, max_time) = (all.stopping, all.max_time);
    let horizon = dataflows::learn::train::horizon(&[all], 1).unwrap_or(0);

    // queries without a time are asked at the end of what was read
    let end = if stopped {
        horizon
    } else {
        plan.epoch_start(plan.epoch(max_time) + 1)
    };
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
    if let Json::Object(object) = &mut summary {
        object.insert(
            "snapshots".to_owned(),
            serde_json::to_value(snapshots).unwrap_or(Json::Null),
        );
        object.insert("stopped_by_signal".to_owned(), Json::from(stopped));
        object.insert("horizon".to_owned(), Json::from(horizon));
        object.insert(
            "max_read_ahead_epochs".to_owned(),
            Json::from(max_read_ahead),
        );
    }
    let path = job.options.out.join("summary.json");
    let text = serde_json::to_string_pretty(&summary).map_err(|error| failed(error.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|source| OutputError { path, source })?;
    Ok(Some(summary))
}

/// Folds each complete epoch's feature changes into the serving state, at worker 0, once the
/// epoch has closed on every worker.
fn attach_serving<'scope>(
    serving: Arc<crate::serve::serving::ServingState>,
    leader: bool,
    tick: u64,
    changes: timely::dataflow::StreamVec<'scope, Time, ((u64, u32), dataflows::fixed::Accum)>,
) {
    use std::collections::BTreeMap;
    use timely::dataflow::operators::generic::Operator;
    let mut pending: BTreeMap<u64, Vec<((u64, u32), dataflows::fixed::Accum)>> = BTreeMap::new();
    changes.sink(
        Exchange::new(|_: &((u64, u32), dataflows::fixed::Accum)| 0u64),
        "Sink: serving features",
        move |(input, frontier)| {
            input.for_each_stamp(|capability, data| {
                let Some(&time) = capability.least() else {
                    return;
                };
                for container in data {
                    pending.entry(time / tick).or_default().append(container);
                }
            });
            // an epoch is complete once the frontier has passed its end
            while let Some((&epoch, _)) = pending.first_key_value() {
                let end = (epoch + 1).saturating_mul(tick);
                if frontier.less_than(&end) {
                    break;
                }
                if let Some(changes) = pending.remove(&epoch)
                    && leader
                {
                    serving.apply_epoch(epoch, &changes);
                }
            }
            // epochs without changes are complete too
            if leader {
                // (an empty frontier is the end of the run, which closes no further epoch)
                if let Some(closed) = frontier.frontier().first().map(|&time| time / tick)
                    && closed > 0
                    && pending
                        .first_key_value()
                        .is_none_or(|(&epoch, _)| epoch >= closed)
                {
                    serving.apply_epoch(closed - 1, &[]);
                }
            }
        },
    );
}

/// Gathers the graph's outputs at worker 0 and writes them.
#[allow(clippy::too_many_arguments)]
fn attach_sinks<'scope>(
    leader: &Option<Rc<RefCell<Leader>>>,
    plan: &Rc<Plan>,
    serving: Option<Arc<crate::serve::serving::ServingState>>,
    answers: timely::dataflow::StreamVec<'scope, Time, Answer>,
    epochs: timely::dataflow::StreamVec<'scope, Time, dataflows::learn::evaluate::EpochMetrics>,
    versions: timely::dataflow::StreamVec<'scope, Time, ((u64, Arc<ModelVersion>), Time, isize)>,
    dead: timely::dataflow::StreamVec<'scope, Time, DeadLetter>,
    progress: timely::dataflow::StreamVec<'scope, Time, ReadProgress>,
) {
    let sink_leader = leader.clone();
    answers.sink(
        Exchange::new(|_: &Answer| 0u64),
        "Sink: answers",
        move |(input, _)| {
            input.for_each(|_, data| {
                let Some(leader) = &sink_leader else { return };
                let mut leader = leader.borrow_mut();
                for answer in data.drain(..) {
                    if answer.query >= LIVE_BASE {
                        if let Some(sender) = &leader.live_answers {
                            let _ = sender.send(LiveAnswer {
                                id: answer.query - LIVE_BASE,
                                answer,
                            });
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
            });
        },
    );
    let sink_leader = leader.clone();
    let sink_plan = Rc::clone(plan);
    let sink_serving = serving.clone();
    epochs.sink(Pipeline, "Sink: metrics", move |(input, _)| {
        input.for_each(|_, data| {
            let Some(leader) = &sink_leader else { return };
            let mut leader = leader.borrow_mut();
            for metrics in data.drain(..) {
                let version = leader
                    .collector
                    .model
                    .as_ref()
                    .map_or(0, |model| model.version);
                // the graph scores with the newest version; the supervisor counts it only
                // while that version is also the one serving
                if let (Some(serving), Some(logloss)) =
                    (&sink_serving, metrics.epoch_scores.logloss)
                {
                    serving.live_metrics(
                        metrics.epoch,
                        metrics.epoch_scores.examples,
                        logloss,
                        version,
                    );
                }
                let reading = leader.collector.reading(&sink_plan);
                let result = leader.files.metrics(&metrics, version, reading);
                leader.record(result);
                if metrics.epoch_scores.has_outcomes() {
                    leader.collector.epochs_with_examples += 1;
                }
                leader.collector.last_epoch = Some(metrics);
            }
        });
    });
    // every worker publishes the same versions; worker 0's copy is stored
    let sink_leader = leader.clone();
    let versions_serving = serving.clone();
    versions.sink(Pipeline, "Sink: snapshots", move |(input, _)| {
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
                        source_offsets: leader.collector.positions_at(version.published_at),
                    };
                    if let Some(sender) = &leader.snapshots {
                        // the writer coalesces: a slow disk never holds the pipeline back
                        let _ = sender.send((Arc::clone(&version), meta));
                    }
                    if let Some(serving) = &versions_serving {
                        serving.publish(Arc::clone(&version));
                    }
                    leader.collector.model = Some(version);
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
                let Some(leader) = &sink_leader else { return };
                let mut leader = leader.borrow_mut();
                for letter in data.drain(..) {
                    leader.collector.dead_letters += 1;
                    let result = leader.files.dead_letter(&letter);
                    leader.record(result);
                }
            });
        },
    );
    let sink_leader = leader.clone();
    let progress_serving = serving.clone();
    progress.sink(
        Exchange::new(|_: &ReadProgress| 0u64),
        "Sink: read progress",
        move |(input, _)| {
            input.for_each(|_, data| {
                let Some(leader) = &sink_leader else { return };
                let mut leader = leader.borrow_mut();
                for read in data.drain(..) {
                    leader.collector.record_progress(read);
                }
                if let Some(serving) = &progress_serving {
                    leader.collector.report_to(&serving.counters);
                    serving.poll_control();
                }
            });
        },
    );
}

/// Writes the facts the graph could not use to the dead letters, with the graph's reason.
fn attach_graph_errors<'scope>(
    leader: &Option<Rc<RefCell<Leader>>>,
    plan: &Rc<Plan>,
    errors: timely::dataflow::StreamVec<'scope, Time, (dataflows::error::GraphError, Time, isize)>,
) {
    use dataflows::error::GraphError;
    use dataflows::fact::OFFSET_BITS;
    // A fact of fixed files whose facts cannot be withdrawn is identified by its position:
    // the file (numbered across the plan's sources) and the byte offset in it.
    fn letter(plan: &Plan, error: &GraphError) -> DeadLetter {
        let source = plan.sources.get(usize::from(error.source));
        let positional =
            source.is_some_and(|source| source.glob.is_none() && !source.retractable());
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
    let sink_leader = leader.clone();
    let sink_plan = Rc::clone(plan);
    errors.sink(
        Exchange::new(|_: &(GraphError, Time, isize)| 0u64),
        "Sink: graph errors",
        move |(input, _)| {
            input.for_each(|_, data| {
                let Some(leader) = &sink_leader else { return };
                let mut leader = leader.borrow_mut();
                // a withdrawn fact withdraws its errors; what was written stays written
                for (error, _, diff) in data.drain(..) {
                    for _ in 0..diff.max(0) {
                        leader.collector.dead_letters += 1;
                        let result = leader.files.dead_letter(&letter(&sink_plan, &error));
                        leader.record(result);
                    }
                }
            });
        },
    );
}

/// Writes the exact regression's reports into the metrics, and keeps the latest for the summary.
fn attach_exact_sink<'scope>(
    leader: &Option<Rc<RefCell<Leader>>>,
    plan: &Rc<Plan>,
    exact: timely::dataflow::StreamVec<'scope, Time, ExactReport>,
) {
    let sink_leader = leader.clone();
    let sink_plan = Rc::clone(plan);
    // reports leave worker 0 only, where the leader is
    exact.sink(Pipeline, "Sink: exact", move |(input, _)| {
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
    let store_error = |error: crate::publish::snapshot::SnapshotError| {
        RunError::Output(OutputError {
            path: store_dir.clone(),
            source: std::io::Error::other(error.to_string()),
        })
    };
    let mut store =
        SnapshotStore::open(&store_dir, options.retain_snapshots.max(1)).map_err(store_error)?;
    let next_version = store.next_version(&plan.model.name).map_err(store_error)?;
    let (sender, receiver) = std::sync::mpsc::channel::<(Arc<ModelVersion>, SnapshotMeta)>();
    // The writer never holds the pipeline back: when versions arrive faster than they can be
    // made durable, it writes the newest that has arrived and skips the ones in between.
    let writer = std::thread::Builder::new()
        .name("snapshot-writer".into())
        .spawn(move || {
            let mut report = SnapshotReport::default();
            while let Ok(mut newest) = receiver.recv() {
                while let Ok(newer) = receiver.try_recv() {
                    report.skipped += 1;
                    newest = newer;
                }
                let (version, meta) = newest;
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
                path: store_dir.clone(),
                source,
            })
        })?;
    let leader = Leader {
        files,
        live_answers: None,
        next_version,
        collector: Collector::new(queries.errors.len() as u64),
        query_ids: queries
            .queries
            .iter()
            .map(|query| query.id.clone())
            .collect(),
        spec_hash: spec.hash.clone(),
        snapshots: Some(sender),
        snapshot_writer: Some(writer),
        first_error: None,
    };
    Ok((leader, queries))
}

/// The dead letter reporting a file that stopped being readable.
fn failure_letter(failure: &crate::collect::read::FileFailure) -> DeadLetter {
    DeadLetter {
        source: failure.source.clone(),
        file: String::new(),
        line: 0,
        offset: 0,
        reason: failure.reason.clone(),
        raw: String::new(),
    }
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

/// The elementwise maximum of the values the workers pass. Every worker must call it, in the
/// same order, with as many values: each call is a small dataflow they run in step.
fn agree(worker: &mut Worker, values: Vec<u64>) -> Vec<u64> {
    let agreed = Rc::new(RefCell::new(values.clone()));
    let mut input = InputHandleVec::<u64, Vec<u64>>::new();
    let probe = worker.dataflow::<u64, _, _>(|scope| {
        let agreed = Rc::clone(&agreed);
        scope
            .input_from(&mut input)
            .broadcast()
            .inspect(move |values: &Vec<u64>| {
                for (agreed, value) in agreed.borrow_mut().iter_mut().zip(values) {
                    *agreed = (*agreed).max(*value);
                }
            })
            .probe()
            .0
    });
    input.send(values);
    drop(input);
    while !probe.done() {
        worker.step();
    }
    agreed.take()
}

#[allow(clippy::too_many_arguments)]
fn advance(
    time: Time,
    facts: &mut InputSession<Time, Fact, isize>,
    corrections: &mut InputSession<Time, Correction, isize>,
    queries: &mut InputSession<Time, Query, isize>,
    dead: &mut InputHandleVec<Time, DeadLetter>,
    progress: &mut InputHandleVec<Time, ReadProgress>,
    control: &mut InputHandleVec<Time, Control>,
    ends: &mut InputHandleVec<Time, EndOfReading>,
) {
    facts.advance_to(time);
    corrections.advance_to(time);
    queries.advance_to(time);
    dead.advance_to(time);
    progress.advance_to(time);
    control.advance_to(time);
    ends.advance_to(time);
    facts.flush();
    corrections.flush();
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

/// Decides when epochs close, and inserts timed queries as the input reaches their time.
struct Feeder {
    plan: Rc<Plan>,
    max_lateness: u64,
    /// Timed queries not yet inserted, latest first.
    timed_queries: Vec<(Time, u64, ProbeQuery)>,
}

impl Feeder {
    fn new(plan: &Rc<Plan>, queries: &Queries) -> Self {
        let mut timed: Vec<(Time, u64, ProbeQuery)> = queries
            .queries
            .iter()
            .enumerate()
            .filter_map(|(number, query)| {
                query.time.map(|time| (time, number as u64, query.clone()))
            })
            .collect();
        timed.sort_by_key(|(time, number, _)| (*time, *number));
        timed.reverse();
        Feeder {
            plan: Rc::clone(plan),
            max_lateness: plan
                .sources
                .iter()
                .map(|source| source.lateness_secs)
                .max()
                .unwrap_or(0),
            timed_queries: timed,
        }
    }

    /// The start of the epoch the input may close up to, given the latest time read.
    fn watermark(&self, max_seen: Option<Time>) -> Time {
        let Some(max) = max_seen else { return 0 };
        self.plan
            .epoch_start(self.plan.epoch(max.saturating_sub(self.max_lateness)))
    }

    /// Inserts the timed queries asked before `time` (worker 0 holds them all).
    fn insert_queries_before(&mut self, time: Time, input: &mut InputSession<Time, Query, isize>) {
        while let Some((at, _, _)) = self.timed_queries.last() {
            if *at >= time {
                break;
            }
            let Some((at, number, query)) = self.timed_queries.pop() else {
                break;
            };
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
