//! Running a pipeline: the options, the errors, and [`run`], which starts the workers and the
//! HTTP endpoint and returns the [`Summary`].
//!
//! Every worker of every process runs `worker::worker_main`: it reads its share of every
//! source file (see [`crate::collect::read`]), feeds facts and corrections into the graph in
//! event-time order, and closes an epoch once the facts it has read have moved past it by the
//! source's lateness. Worker 0 also feeds the queries and owns every output file.
//!
//! Reading ends at the end of the input, or when a signal (SIGINT, SIGTERM) asks for a stop.
//! Either way the workers agree on a *horizon*, the end of what was read: labels due after it
//! were decided by facts nobody read, so they are not learned. Then the inputs close, the graph
//! drains, the last version is published and stored, and the run exits with status 0.
//!
//! | module | owns |
//! |---|---|
//! | `endpoint` | the HTTP endpoint of a run: listening, serving on, shutting down |
//! | `serving_setup` | the endpoint's serving state: supervised, loaded from the store |
//! | `leader` | worker 0's outputs: starting them, and writing the summary at the end |
//! | `worker` | a worker's data path: set up, build, read, end, drain, summarise |
//! | `graph` | the worker's dataflow: the graph, its inputs and probes |
//! | `feed` | which epoch may close, and when each query goes in |
//! | `agree` | values all workers agree on: the first version, the horizon |
//! | `sinks` | the graph's outputs gathered at worker 0 and written |
//! | `serving_feed` | complete epochs' feature changes folded into the serving state |
//! | `snapshot_writer` | the thread that makes published versions durable |
//! | [`checkpoint`] | checkpoints on disk: format, manifest, retention, verification |
//! | `progress` | the progress line on stderr |
//! | [`output`] | the line files under `OUT/` |
//! | `collector` | what worker 0 learns over a run |
//! | [`summary`] | `summary.json`, typed |

mod agree;
pub mod checkpoint;
mod collector;
mod endpoint;
mod feed;
mod graph;
mod leader;
pub mod output;
mod progress;
mod serving_feed;
pub(crate) mod serving_setup;
mod sinks;
mod snapshot_writer;
pub mod summary;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use dataflows::event::Answer;
use dataflows::plan::Plan;

use crate::publish::SnapshotError;
use crate::runtime::endpoint::Endpoint;
use crate::runtime::leader::Leader;
use crate::runtime::output::OutputError;
use crate::runtime::worker::Job;
use crate::serve::supervisor::SupervisorError;
use crate::spec::{self, SpecError};

pub use crate::runtime::summary::Summary;

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
    /// For a cluster: how long to wait for the other processes, and when a silent one is
    /// hung.
    pub cluster: crate::cluster::ClusterSettings,
    /// Number the versions from this one rather than from the snapshot store's next: every
    /// attempt of a supervised cluster numbers them alike (`pooch cluster`).
    pub first_version: Option<u64>,
    /// Write each complete epoch's feature changes to this file (worker 0), for a serving
    /// process outside the run (`pooch cluster --http`).
    pub serving_feed: Option<PathBuf>,
    /// When checkpoints are taken.
    pub checkpoints: CheckpointOptions,
}

/// When checkpoints are taken, how many are kept, and whether a run resumes from one.
#[derive(Clone, Debug)]
pub struct CheckpointOptions {
    /// A checkpoint at every epoch boundary that is a multiple of this many epochs; 0 for
    /// none by epochs.
    pub every_epochs: u64,
    /// A checkpoint once this much wall-clock time has passed since the last; `None` for none
    /// by time.
    pub every: Option<Duration>,
    /// How many checkpoints are kept.
    pub retain: usize,
    /// Start over even if `OUT/` holds a checkpoint of the same spec (its checkpoints are
    /// removed).
    pub fresh: bool,
    /// For crash tests: abort the process (as a `kill -9` would end it) once this many
    /// checkpoints are on disk.
    pub abort_after: Option<u64>,
}

impl CheckpointOptions {
    /// Whether any checkpoint is taken.
    pub fn enabled(&self) -> bool {
        self.every_epochs > 0 || self.every.is_some()
    }
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            every_epochs: checkpoint::DEFAULT_EPOCHS,
            every: checkpoint::interval(checkpoint::DEFAULT_SECS),
            retain: checkpoint::DEFAULT_RETAIN,
            fresh: false,
            abort_after: None,
        }
    }
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
            cluster: crate::cluster::ClusterSettings::default(),
            first_version: None,
            serving_feed: None,
            checkpoints: CheckpointOptions::default(),
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
    /// The snapshot store could not be opened or read.
    #[error("snapshot store: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The serving state's supervisor could not start: its configuration, its decisions file
    /// or its control file.
    #[error("serving: {0}")]
    Supervisor(#[from] SupervisorError),
    /// The HTTP endpoint could not start.
    #[error("--http: {0}")]
    Http(#[source] std::io::Error),
    /// A thread of the run could not start.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The run cannot listen for a stop signal.
    #[error("cannot listen for signal {signal}: {source}")]
    Signal {
        /// The signal's number.
        signal: i32,
        /// Why.
        source: std::io::Error,
    },
    /// Timely could not start (bad flags).
    #[error("cluster: {0}")]
    Cluster(String),
    /// The processes of a cluster did not all join (or a signal stopped the wait).
    #[error("cluster: {0}")]
    Join(#[from] crate::cluster::connect::ConnectError),
    /// The checkpoints could not be read, or the run cannot go on from one.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// A worker failed.
    #[error("worker {worker}: {message}")]
    Worker {
        /// The worker's index.
        worker: usize,
        /// What failed.
        message: String,
    },
}

impl RunError {
    /// Whether a signal stopped the run before it started (while the processes joined):
    /// nothing was read, and nothing failed.
    pub fn is_stop(&self) -> bool {
        matches!(
            self,
            RunError::Join(crate::cluster::connect::ConnectError::Stopped)
        )
    }

    /// Whether the error is the caller's to fix (flags, spec, inputs, configuration) rather
    /// than a failure while running.
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::Spec(_)
            | RunError::Source { .. }
            | RunError::Queries { .. }
            | RunError::Supervisor(_)
            | RunError::Http(_)
            | RunError::Signal { .. }
            | RunError::Cluster(_) => true,
            RunError::Join(error) => error.is_usage(),
            RunError::Output(_)
            | RunError::Snapshot(_)
            | RunError::Checkpoint(_)
            | RunError::Thread { .. }
            | RunError::Worker { .. } => false,
        }
    }
}

/// A query asked while the pipeline runs, answered from the latest complete state.
#[derive(Clone, Debug)]
pub struct LiveQuery {
    /// The caller's number for it, returned with the answer.
    pub id: u64,
    /// The event to score, in the example source's schema (see
    /// [`crate::collect::queries::parse_query`]).
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

/// Runs a pipeline to the end of its input (or, following, until SIGINT or SIGTERM), and
/// returns the summary (from process 0; other processes return `None`).
pub fn run(options: RunOptions) -> Result<Option<Summary>, RunError> {
    run_with_live_queries(options, None)
}

/// As [`run`], answering live queries from `live` while the input is being read.
pub fn run_with_live_queries(
    options: RunOptions,
    live: Option<LiveQueries>,
) -> Result<Option<Summary>, RunError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|source| RunError::Signal { signal, source })?;
    }
    run_until(options, live, stop)
}

/// As [`run_with_live_queries`], stopping cleanly when `stop` becomes true.
pub fn run_until(
    options: RunOptions,
    live: Option<LiveQueries>,
    stop: Arc<AtomicBool>,
) -> Result<Option<Summary>, RunError> {
    let spec = spec::load(&options.spec, options.data_dir.as_deref())?;
    check_sources(&spec.plan, options.follow)?;
    let config = timely_config(&options.timely_args)?;
    // process 0 owns the outputs: set them up before any worker starts, so that a failure
    // here stops the run before the workers depend on each other
    let process = match &config.communication {
        timely::CommunicationConfig::Cluster { process, .. } => *process,
        _ => 0,
    };
    let resume = resume_from(&spec, &options)?;
    let leader = if process == 0 {
        Some(Leader::start(&spec, &options, resume.as_ref())?)
    } else {
        None
    };
    let mut options = options;
    let endpoint = match (&options.http, process) {
        (Some(http), 0) => Some(Endpoint::start(&spec, &options, http.clone())?),
        _ => None,
    };
    options.serving = endpoint.as_ref().map(Endpoint::serving);
    let job = Arc::new(Job::new(spec, options, leader, live, stop, resume));
    let summary = worker::execute(config, &job)?;
    if let Some(endpoint) = endpoint {
        if job.options.serve_after_input {
            endpoint.serve_until(&job.stop);
        }
        endpoint.shutdown();
    }
    Ok(summary)
}

/// The checkpoint the run goes on from: the newest good one of this spec in `OUT/`, unless
/// `--fresh` (which removes them). Each one passed over is reported on stderr with why; what
/// is resumed is said there too.
fn resume_from(
    spec: &spec::Spec,
    options: &RunOptions,
) -> Result<Option<checkpoint::Checkpoint>, RunError> {
    let failed = |error: checkpoint::CheckpointError| RunError::Checkpoint(error.to_string());
    let dir = options.out.join("checkpoints");
    if !dir.join(checkpoint::MANIFEST).exists() {
        return Ok(None);
    }
    let store = checkpoint::CheckpointStore::open(&options.out, options.checkpoints.retain)
        .map_err(failed)?;
    if options.checkpoints.fresh {
        store.clear().map_err(failed)?;
        return Ok(None);
    }
    let (newest, refusals) = store.newest(&spec.hash).map_err(failed)?;
    for refusal in &refusals {
        eprintln!("pooch run: {refusal}");
    }
    let Some(checkpoint) = newest else {
        if !refusals.is_empty() {
            eprintln!("pooch run: no usable checkpoint: starting over from the first fact");
        }
        return Ok(None);
    };
    let facts: u64 = checkpoint
        .workers
        .iter()
        .flat_map(|worker| &worker.reader.counts)
        .map(|counts| counts.facts)
        .sum();
    eprintln!(
        "pooch run: resuming from {}: cut {} (epoch {}), {facts} facts already counted, \
         taken at {} workers",
        dir.join(format!("c{:020}.ckpt", checkpoint.cut)).display(),
        checkpoint.cut,
        spec.plan.epoch(checkpoint.cut),
        checkpoint.workers.len(),
    );
    Ok(Some(checkpoint))
}

/// Timely's configuration from its flags.
fn timely_config(args: &[String]) -> Result<timely::Config, RunError> {
    check_layout(args)?;
    timely::Config::from_args(std::iter::once("pooch".to_owned()).chain(args.iter().cloned()))
        .map_err(|error| {
            RunError::Cluster(format!(
                "timely flags `{}`: {error} (flags: -w THREADS, -n PROCESSES, -p INDEX, -h HOSTFILE)",
                args.join(" ")
            ))
        })
}

/// Refuses a layout timely would run as something else or not at all: no worker threads
/// (timely runs `-w 0` as one), no processes, or a process index outside `0..processes`.
fn check_layout(args: &[String]) -> Result<(), RunError> {
    let value = |short: &str, long: &str| -> Option<String> {
        let mut found = None;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == short || arg == long {
                found = args.next().cloned();
            } else if let Some(rest) = arg.strip_prefix(&format!("{long}=")) {
                found = Some(rest.to_owned());
            } else if let Some(rest) = arg.strip_prefix(short)
                && !rest.is_empty()
                && !arg.starts_with("--")
            {
                found = Some(rest.to_owned());
            }
        }
        found
    };
    let refuse = |reason: String| {
        Err(RunError::Cluster(format!(
            "timely flags `{}`: {reason} (flags: -w THREADS, -n PROCESSES, -p INDEX, -h HOSTFILE)",
            args.join(" ")
        )))
    };
    let number = |short: &str, long: &str, default: usize| -> Result<usize, String> {
        match value(short, long) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("{short} must be a whole number, got {text:?}")),
        }
    };
    let (threads, processes, process) = match (
        number("-w", "--threads", 1),
        number("-n", "--processes", 1),
        number("-p", "--process", 0),
    ) {
        (Ok(threads), Ok(processes), Ok(process)) => (threads, processes, process),
        (Err(reason), _, _) | (_, Err(reason), _) | (_, _, Err(reason)) => return refuse(reason),
    };
    if threads == 0 {
        return refuse("-w 0: a process needs at least one worker thread".to_owned());
    }
    if processes == 0 {
        return refuse("-n 0: a run needs at least one process".to_owned());
    }
    if process >= processes {
        return refuse(format!(
            "-p {process} is not a process of -n {processes} (indices run from 0 to {})",
            processes - 1
        ));
    }
    Ok(())
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
