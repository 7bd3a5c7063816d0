//! The `pooch` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pooch::generate::criteo::{CriteoConfig, generate_criteo};
use pooch::generate::sniffable::{SniffableConfig, generate_sniffable};
use pooch::runtime::{RunOptions, Summary, run};

/// pooch: a reactive machine-learning system on Timely and Differential Dataflow.
///
/// One dataflow graph ingests facts, keeps features up to date, learns a model online,
/// publishes versioned snapshots and answers queries from them.
#[derive(Parser)]
#[command(name = "pooch", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline over its sources to the end of the input (or, with --follow, until
    /// SIGINT or SIGTERM, which end a run cleanly either way).
    ///
    /// Timely's own flags follow `--`: `-w N` threads per process, `-n N` processes,
    /// `-p I` this process's index, `-h FILE` a hostfile of `host:port` lines.
    ///
    /// Example: pooch run --pipeline pipelines/sniffable.toml --out out/sniffable -- -w 2
    Run(RunArgs),
    /// Generate a data set.
    #[command(subcommand)]
    Generate(Generate),
    /// List a snapshot store's model versions, and pin, unpin or roll back the serving one.
    ///
    /// Pin, unpin and rollback write the model's control file (STORE/MODEL/CONTROL.json),
    /// which a running server's supervisor applies at its next poll; every command is recorded in the
    /// decisions file beside the store (OUT/decisions.jsonl for the store OUT/snapshots).
    #[command(subcommand)]
    Models(Models),
    /// Run a pipeline as N processes on this machine, and supervise them: when one dies, the
    /// others are stopped and the cluster restarts (within a restart budget); every event is
    /// a line in OUT/cluster.log. With --http, this process serves, from the snapshot store,
    /// through the workers' failures.
    ///
    /// Example: pooch cluster -n 2 --http :8080 --pipeline pipelines/sniffable.toml --out out/c -- -w 2
    Cluster(ClusterArgs),
    /// Serve predictions over HTTP by following a run's output directory: the versions it
    /// stores (OUT/snapshots) and the feature changes it feeds (OUT/serving-feed.jsonl, which
    /// `pooch cluster` writes). It changes none of the run's files, so any number can follow
    /// one run; a client may use any of them. Runs until SIGINT or SIGTERM.
    ///
    /// Example: pooch serve out/c --pipeline pipelines/sniffable.toml --http :8081
    Serve(ServeArgs),
    /// Write SVG plots of output directories and an HTML page showing them: the learning
    /// curve (progressive logloss and AUC by epoch, truth beside), the calibration diagram and
    /// facts and examples per second over the run; several directories, one curve each.
    /// With --bench DIR, plots of the benchmarks' JSON results instead.
    ///
    /// Example: pooch report out/sniffable (writes out/sniffable/report/index.html)
    Report(ReportArgs),
}

#[derive(Args)]
struct ReportArgs {
    /// Output directories of `pooch run`, finished or running.
    #[arg(value_name = "OUT", required_unless_present = "bench")]
    outs: Vec<PathBuf>,
    /// Where to write the plots [default: OUT/report of the first OUT, or DIR/plots with --bench].
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
    /// Plot the benchmark results in DIR (`./run.sh bench` writes target/bench-results/).
    #[arg(long, value_name = "DIR", conflicts_with = "outs")]
    bench: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    /// The run's output directory.
    #[arg(value_name = "OUT")]
    out: PathBuf,
    /// The run's pipeline spec: the features and model served.
    #[arg(long, value_name = "SPEC")]
    pipeline: PathBuf,
    /// Resolve the spec's relative source paths against DIR instead of its `data_dir`.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Where to listen (host:port; `:8081` for 127.0.0.1:8081).
    #[arg(long, value_name = "ADDR", value_parser = parse_http_addr)]
    http: std::net::SocketAddr,
    /// This server's supervisor decisions [default: OUT/replicas/PID.decisions.jsonl; the
    /// run's own OUT/decisions.jsonl stays the cluster supervisor's].
    #[arg(long, value_name = "FILE")]
    decisions: Option<PathBuf>,
    /// Versions held in memory.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    retain_snapshots: u64,
}

#[derive(Args)]
struct ClusterArgs {
    /// Number of processes.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    processes: u64,
    /// The processes' addresses, one `host:port` line per process (all started here).
    /// Without it, 127.0.0.1 from --port-base up.
    #[arg(long, value_name = "FILE")]
    hostfile: Option<PathBuf>,
    /// The first port, without a hostfile.
    #[arg(long, value_name = "PORT", default_value_t = 2101)]
    port_base: u16,
    /// Restarts allowed within --restart-window-secs; one more and the supervisor gives up.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_restarts: u32,
    /// The restart budget's window, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    restart_window_secs: u64,
    /// After SIGINT or SIGTERM, how long the processes have to end cleanly before they are
    /// killed, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    stop_grace_secs: u64,
    /// An attempt in which no epoch completes for SECS is stalled (its processes alive but
    /// the dataflow making no progress): it is killed and the cluster restarted. 0: no
    /// watchdog; off for a run that follows its input (--follow).
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    stall_timeout: u64,
    /// Serve predictions over HTTP from this process, following OUT/snapshots (see `pooch
    /// run --help`). After the run completes, serving goes on until SIGINT or SIGTERM.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_addr)]
    http: Option<std::net::SocketAddr>,
    /// With --http, exit once the run completes.
    #[arg(long, requires = "http")]
    exit_after_input: bool,
    /// `pooch run`'s arguments (`--pipeline SPEC --out DIR ...`), then `--` and timely's
    /// flags other than -n, -p and -h (`-w N`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "RUN ARGS"
    )]
    run: Vec<String>,
}

/// `pooch run`'s arguments on their own, to check those `pooch cluster` passes on.
#[derive(Parser)]
#[command(name = "pooch run")]
struct RunOnly {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Models {
    /// The versions in the store, with epoch, round metrics, weights, status, what serves and
    /// what is pinned.
    List {
        /// The snapshot store (OUT/snapshots of a run).
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// Only this model.
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Mark the versions not made for this spec's features incompatible, with the reason.
        #[arg(long, value_name = "SPEC")]
        pipeline: Option<PathBuf>,
    },
    /// Serve this version until unpinned. It must be in the store, verify, and have finite
    /// weights.
    // `--version` names the model version here, not pooch's.
    #[command(disable_version_flag = true)]
    Pin {
        /// The snapshot store.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The model.
        #[arg(long, value_name = "NAME")]
        model: String,
        /// The version to pin.
        #[arg(long, value_name = "V")]
        version: u64,
    },
    /// Let the supervisor's choice serve again.
    Unpin {
        /// The snapshot store.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The model.
        #[arg(long, value_name = "NAME")]
        model: String,
    },
    /// Roll the serving version back to the last good version before it (releases a pin).
    Rollback {
        /// The snapshot store.
        #[arg(long, value_name = "DIR")]
        store: PathBuf,
        /// The model.
        #[arg(long, value_name = "NAME")]
        model: String,
    },
}

#[derive(Args)]
struct RunArgs {
    /// The pipeline spec (TOML).
    #[arg(long, value_name = "SPEC")]
    pipeline: PathBuf,
    /// Output directory: answers.jsonl, metrics.jsonl, dead-letter.jsonl, summary.json, snapshots/.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Resolve the spec's relative source paths against DIR instead of its `data_dir`.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Probe queries, one JSON object per line; answers go to OUT/answers.jsonl.
    #[arg(long, value_name = "FILE")]
    queries: Option<PathBuf>,
    /// Files are shared among workers in chunks of this many MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_mib: u64,
    /// Reading pauses while the graph is more than this many epochs behind it.
    #[arg(long, value_name = "EPOCHS", default_value_t = 24)]
    max_epochs_behind: u64,
    /// Snapshot files kept per model.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    retain_snapshots: u64,
    /// Keep reading as files grow and new files match a source's glob, until SIGINT or
    /// SIGTERM; then the open epoch closes, the last version is stored, and pooch exits 0.
    #[arg(long)]
    follow: bool,
    /// While following, how often to look at the files again, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    poll_ms: u64,
    /// Serve predictions over HTTP at ADDR (host:port; 127.0.0.1:8080 for a bare port of
    /// `:8080`): POST /v1/predict, GET /v1/models, pin/unpin/rollback, /metrics, /healthz,
    /// /readyz. The newest good snapshot in OUT/snapshots serves at once; after the input is
    /// read, serving goes on until SIGINT or SIGTERM.
    #[arg(long, value_name = "ADDR", value_parser = parse_http_addr)]
    http: Option<std::net::SocketAddr>,
    /// With --http, stop serving when the input is read instead of waiting for a signal.
    #[arg(long, requires = "http")]
    exit_after_input: bool,
    /// For testing backpressure: training pauses this long at every epoch.
    #[arg(long, value_name = "MS", hide = true)]
    debug_slow_training_ms: Option<u64>,
    /// In a cluster (-n > 1): abort when the other processes have not all joined within
    /// SECS, naming the missing one and its address.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    peer_timeout: u64,
    /// In a cluster: a process heard nothing from for SECS is stopped or hung, and ends the
    /// run (status 1, naming it). A dead process is seen at once.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    hang_timeout: u64,
    /// Number versions from V instead of the snapshot store's next (`pooch cluster` passes
    /// it, so that every attempt numbers alike).
    #[arg(long, value_name = "V", hide = true)]
    first_version: Option<u64>,
    /// Write each complete epoch's feature changes to FILE, for a serving process outside the
    /// run (`pooch cluster --http` passes it to process 0).
    #[arg(long, value_name = "FILE", hide = true)]
    serving_feed: Option<PathBuf>,
    /// Checkpoint at every epoch boundary that is a multiple of N epochs (0, the default:
    /// never by epochs; checkpoints are opt-in while they hold every fact, see the README).
    /// A run on an OUT holding a checkpoint of the same spec resumes from the newest.
    #[arg(long, value_name = "N", default_value_t = pooch::runtime::checkpoint::DEFAULT_EPOCHS)]
    checkpoint_epochs: u64,
    /// And once SECS of wall time have passed since the last checkpoint (0, the default:
    /// never by time; 60 is a sane value for a long stream).
    #[arg(long, value_name = "SECS", default_value_t = pooch::runtime::checkpoint::DEFAULT_SECS)]
    checkpoint_secs: u64,
    /// How many checkpoints are kept in OUT/checkpoints.
    #[arg(long, value_name = "N", default_value_t = pooch::runtime::checkpoint::DEFAULT_RETAIN as u64, value_parser = clap::value_parser!(u64).range(1..))]
    retain_checkpoints: u64,
    /// Start over from the first fact even if OUT holds a checkpoint (its checkpoints are
    /// removed).
    #[arg(long)]
    fresh: bool,
    /// For crash tests: abort the process once N checkpoints have been written.
    #[arg(long, value_name = "N", hide = true)]
    debug_abort_after_checkpoints: Option<u64>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Timely flags, after `--`.
    #[arg(last = true, value_name = "TIMELY FLAGS")]
    timely: Vec<String>,
}

#[derive(Subcommand)]
enum Generate {
    /// Sniffable, a social network for dogs: follows, posts and likes drawn from a documented
    /// ground-truth model, plus probe queries and the truth itself (truth.json).
    Sniffable {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Random seed: the same seed and sizes give the same bytes.
        #[arg(long, default_value_t = SniffableConfig::default().seed)]
        seed: u64,
        /// Number of dogs.
        #[arg(long, default_value_t = SniffableConfig::default().dogs)]
        dogs: usize,
        /// Days of activity.
        #[arg(long, default_value_t = SniffableConfig::default().days)]
        days: u32,
        /// A concept drift: from the start of day DAY (0 is the first) on, every hashtag's
        /// effect is negated. truth.json says what changed. Without it the world is stationary.
        #[arg(long, value_name = "DAY")]
        drift_at: Option<u32>,
    },
    /// A Criteo-shaped click log (label, 13 integer and 26 categorical fields, many empty, plus
    /// `time` and `truth_p`) drawn from a documented logistic ground truth, into DIR/criteo.tsv.
    /// Read it with pipelines/criteo.toml.
    Criteo {
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Number of rows (ten per second of event time).
        #[arg(long, default_value_t = CriteoConfig::default().rows)]
        rows: u64,
        /// Random seed: the same seed and rows give the same bytes.
        #[arg(long, default_value_t = CriteoConfig::default().seed)]
        seed: u64,
    },
}

/// An HTTP address: `host:port`, or `:port` for 127.0.0.1 (never every interface unasked).
fn parse_http_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = if let Some(port) = text.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        text.to_owned()
    };
    text.to_socket_addrs()
        .map_err(|error| format!("`{text}` is not host:port ({error})"))?
        .next()
        .ok_or_else(|| format!("`{text}` names no address"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_command(args),
        Command::Models(command) => models_command(command),
        Command::Report(args) => report_command(args),
        Command::Cluster(args) => cluster_command(args),
        Command::Serve(args) => serve_command(args),
        Command::Generate(Generate::Sniffable {
            out,
            seed,
            dogs,
            days,
            drift_at,
        }) => {
            let config = SniffableConfig {
                seed,
                dogs,
                days,
                drift_at_day: drift_at,
            };
            match generate_sniffable(&config, &out) {
                Ok(report) => {
                    println!(
                        "wrote {} follows, {} posts, {} likes and {} queries to {} ({:.1}% of posts popular)",
                        report.follows,
                        report.posts,
                        report.likes,
                        report.queries,
                        out.display(),
                        100.0 * report.positive_rate
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("pooch generate: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Generate(Generate::Criteo { out, rows, seed }) => {
            match generate_criteo(&CriteoConfig { seed, rows }, &out) {
                Ok(report) => {
                    println!(
                        "wrote {} rows to {} ({:.1}% positive, {:.1}% of fields empty)",
                        report.rows,
                        out.join(pooch::generate::criteo::FILE_NAME).display(),
                        100.0 * report.positive_rate,
                        100.0 * report.missing_rate
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("pooch generate: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_command(args: RunArgs) -> ExitCode {
    let mut options = RunOptions::new(args.pipeline, args.out.clone());
    options.data_dir = args.data;
    options.queries = args.queries;
    options.timely_args = args.timely;
    options.chunk_bytes = args.chunk_mib << 20;
    options.max_epochs_behind = args.max_epochs_behind;
    options.retain_snapshots = args.retain_snapshots as usize;
    options.progress = !args.quiet;
    options.follow = args.follow;
    options.poll_interval = std::time::Duration::from_millis(args.poll_ms);
    options.http = args.http.map(|addr| pooch::serve::http::HttpConfig {
        addr,
        ..pooch::serve::http::HttpConfig::default()
    });
    options.serve_after_input = !args.exit_after_input;
    options.cluster = pooch::cluster::ClusterSettings {
        peer_timeout: std::time::Duration::from_secs(args.peer_timeout),
        hang_timeout: std::time::Duration::from_secs(args.hang_timeout),
    };
    options.first_version = args.first_version;
    options.serving_feed = args.serving_feed;
    options.checkpoints = pooch::runtime::CheckpointOptions {
        every_epochs: args.checkpoint_epochs,
        every: pooch::runtime::checkpoint::interval(args.checkpoint_secs),
        retain: args.retain_checkpoints as usize,
        fresh: args.fresh,
        abort_after: args.debug_abort_after_checkpoints,
    };
    options.slow_training_per_epoch = args
        .debug_slow_training_ms
        .map(std::time::Duration::from_millis);
    match run(options) {
        Ok(Some(summary)) => {
            print_summary(&summary, &args.out);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) if error.is_stop() => {
            eprintln!("pooch run: {error}; nothing was read");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pooch run: {error}");
            if error.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn cluster_command(args: ClusterArgs) -> ExitCode {
    match cluster(args) {
        Ok(code) => code,
        Err((message, code)) => {
            eprintln!("pooch cluster: {message}");
            ExitCode::from(code)
        }
    }
}

/// `pooch cluster`: checks the run's arguments, serves (with --http), supervises.
fn cluster(args: ClusterArgs) -> Result<ExitCode, (String, u8)> {
    use pooch::cluster::supervise::{self, ClusterCounters, Outcome, SuperviseOptions};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let usage = |message: String| (message, 2u8);
    let split = args.run.iter().position(|arg| arg == "--");
    let (run_args, timely_args) = match split {
        Some(at) => (args.run[..at].to_vec(), args.run[at + 1..].to_vec()),
        None => (args.run.clone(), Vec::new()),
    };
    if let Some(flag) = timely_args
        .iter()
        .find(|arg| ["-n", "-p", "-h"].iter().any(|f| arg.starts_with(f)))
    {
        return Err(usage(format!(
            "timely flag `{flag}`: -n, -p and -h are the supervisor's (use -n and --hostfile)"
        )));
    }
    // --http and --exit-after-input among the run's arguments are the supervisor's: it serves
    let mut args = args;
    let mut kept = Vec::with_capacity(run_args.len());
    let mut taken = run_args.into_iter();
    while let Some(arg) = taken.next() {
        let value = if arg == "--http" {
            Some(taken.next().unwrap_or_default())
        } else {
            arg.strip_prefix("--http=").map(str::to_owned)
        };
        if let Some(value) = value {
            args.http =
                Some(parse_http_addr(&value).map_err(|error| usage(format!("--http: {error}")))?);
        } else if arg == "--exit-after-input" {
            args.exit_after_input = true;
        } else {
            kept.push(arg);
        }
    }
    let run_args = kept;
    let checked = RunOnly::try_parse_from(
        std::iter::once("pooch run".to_owned())
            .chain(run_args.iter().cloned())
            .chain(std::iter::once("--".to_owned()))
            .chain(timely_args.iter().cloned()),
    )
    .map_err(|error| usage(format!("the run's arguments: {error}")))?
    .run;
    let processes = args.processes as usize;
    let addresses = match &args.hostfile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| usage(format!("{}: {error}", path.display())))?;
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            if lines.len() < processes {
                return Err(usage(format!(
                    "{}: {} addresses for -n {processes}",
                    path.display(),
                    lines.len()
                )));
            }
            lines[..processes].to_vec()
        }
        None => supervise::loopback_addresses(processes, args.port_base),
    };
    let spec = pooch::spec::load(&checked.pipeline, checked.data.as_deref())
        .map_err(|error| usage(error.to_string()))?;
    // every attempt numbers versions from where the store was before the first
    let store = pooch::publish::SnapshotStore::open(
        checked.out.join("snapshots"),
        checked.retain_snapshots as usize,
    )
    .map_err(|error| (format!("snapshot store: {error}"), 1))?;
    let first_version = store
        .next_version(&spec.plan.model.name)
        .map_err(|error| (format!("snapshot store: {error}"), 1))?;
    // a run that knows `--fresh` resumes from its newest checkpoint unless given it; the
    // supervisor gives it to the first attempt only
    let run_resumes = <RunOnly as clap::CommandFactory>::command()
        .get_arguments()
        .any(|arg| arg.get_long() == Some("fresh"));
    let child_args: Vec<String> = run_args
        .into_iter()
        .filter(|arg| arg != "--fresh")
        .collect();
    let program =
        std::env::current_exe().map_err(|error| (format!("cannot find pooch: {error}"), 1))?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|error| (format!("cannot listen for signal {signal}: {error}"), 1))?;
    }
    let counters = Arc::new(ClusterCounters::default());
    pooch::cluster::serve::clear_feed(&checked.out).map_err(|error| (error.to_string(), 1))?;
    let endpoint = match args.http {
        Some(addr) => {
            let http = pooch::serve::http::HttpConfig {
                addr,
                ..pooch::serve::http::HttpConfig::default()
            };
            let endpoint = pooch::cluster::serve::ClusterEndpoint::start(
                &spec,
                &checked.out,
                checked.retain_snapshots as usize,
                http,
                &checked.out.join("decisions.jsonl"),
                Some(Arc::clone(&counters)),
            )
            .map_err(|error| (error.to_string(), if error.is_usage() { 2 } else { 1 }))?;
            Some(endpoint)
        }
        None => None,
    };
    // process 0 feeds the feature changes to the supervisor's serving state, and to any
    // `pooch serve OUT` following the run
    let first_process_args = vec![
        "--serving-feed".to_owned(),
        pooch::cluster::serve::feed_path(&checked.out)
            .to_string_lossy()
            .into_owned(),
    ];
    let options = SuperviseOptions {
        program,
        processes,
        addresses,
        run_args: child_args,
        first_process_args,
        first_version,
        run_resumes,
        timely_args,
        out: checked.out.clone(),
        max_restarts: args.max_restarts,
        restart_window: std::time::Duration::from_secs(args.restart_window_secs),
        stop_grace: std::time::Duration::from_secs(args.stop_grace_secs),
        stall_timeout: (args.stall_timeout > 0 && !checked.follow)
            .then(|| std::time::Duration::from_secs(args.stall_timeout)),
        feed: pooch::cluster::serve::feed_path(&checked.out),
    };
    let outcome = supervise::supervise(&options, &counters, &stop);
    if let Some(endpoint) = endpoint {
        if matches!(outcome, Ok(Outcome::Completed)) && !args.exit_after_input {
            eprintln!(
                "pooch cluster: the run is complete; still serving on http://{} until SIGINT or SIGTERM",
                endpoint.local_addr()
            );
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        endpoint.shutdown();
    }
    match outcome {
        Ok(Outcome::Completed) | Ok(Outcome::Stopped) => Ok(ExitCode::SUCCESS),
        Ok(Outcome::GaveUp) => Err((
            format!(
                "gave up: more than {} restarts within {} s (see {})",
                args.max_restarts,
                args.restart_window_secs,
                checked.out.join("cluster.log").display()
            ),
            1,
        )),
        Err(error) => Err((error.to_string(), 1)),
    }
}

fn serve_command(args: ServeArgs) -> ExitCode {
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            eprintln!("pooch serve: {message}");
            ExitCode::from(code)
        }
    }
}

/// `pooch serve OUT`: follows the run's output directory and serves until a signal.
fn serve(args: ServeArgs) -> Result<(), (String, u8)> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    if !args.out.is_dir() {
        return Err((
            format!(
                "{}: no such directory (the --out of a run, started first)",
                args.out.display()
            ),
            2,
        ));
    }
    let spec = pooch::spec::load(&args.pipeline, args.data.as_deref())
        .map_err(|error| (error.to_string(), 2))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|error| (format!("cannot listen for signal {signal}: {error}"), 1))?;
    }
    let decisions = args.decisions.unwrap_or_else(|| {
        args.out
            .join("replicas")
            .join(format!("{}.decisions.jsonl", std::process::id()))
    });
    let http = pooch::serve::http::HttpConfig {
        addr: args.http,
        ..pooch::serve::http::HttpConfig::default()
    };
    let endpoint = pooch::cluster::serve::ClusterEndpoint::start(
        &spec,
        &args.out,
        args.retain_snapshots as usize,
        http,
        &decisions,
        None,
    )
    .map_err(|error| (error.to_string(), if error.is_usage() { 2 } else { 1 }))?;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    endpoint.shutdown();
    Ok(())
}

fn models_command(command: Models) -> ExitCode {
    let now = pooch::clock::now_unix_ms();
    let outcome = match &command {
        Models::List {
            store,
            model,
            pipeline,
        } => {
            let spec = match pipeline
                .as_deref()
                .map(|path| pooch::spec::load(path, None))
            {
                None => None,
                Some(Ok(spec)) => Some(spec),
                Some(Err(error)) => {
                    eprintln!("pooch models: {error}");
                    return ExitCode::from(2);
                }
            };
            pooch::serve::models::list(store, model.as_deref(), spec.as_ref())
        }
        Models::Pin {
            store,
            model,
            version,
        } => pooch::serve::models::pin(store, model, *version, now),
        Models::Unpin { store, model } => pooch::serve::models::unpin(store, model, now),
        Models::Rollback { store, model } => pooch::serve::models::rollback(store, model, now),
    };
    match outcome {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pooch models: {error}");
            if error.is_usage() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn report_command(args: ReportArgs) -> ExitCode {
    let failed = |error: pooch::report::ReportError| {
        eprintln!("pooch report: {error}");
        if error.is_usage() {
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        }
    };
    if let Some(dir) = args.bench {
        let to = args.to.unwrap_or_else(|| dir.join("plots"));
        return match pooch::report::bench::bench_report(&dir, &to) {
            Ok(written) => {
                for missing in &written.missing {
                    eprintln!(
                        "pooch report: no {missing} in {} (its benchmark has not run)",
                        dir.display()
                    );
                }
                for (name, reason) in &written.skipped {
                    eprintln!("pooch report: left out {name}: {reason}");
                }
                println!(
                    "benchmark plots ({} charts from {}) in {}",
                    written.charts.len(),
                    written.read.join(", "),
                    written.page.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => failed(error),
        };
    }
    let to = args.to.unwrap_or_else(|| args.outs[0].join("report"));
    match pooch::report::report(&args.outs, &to) {
        Ok(written) => {
            println!("report in {}", written.page.display());
            ExitCode::SUCCESS
        }
        Err(error) => failed(error),
    }
}

fn print_summary(summary: &Summary, out: &std::path::Path) {
    let fixed = |value: Option<f64>| {
        value
            .filter(|value| value.is_finite())
            .map_or("-".to_owned(), |value| format!("{value:.4}"))
    };
    println!(
        "{}: {} facts read, {} dead-lettered, {} epochs, {} examples, {} model versions ({:.1}s, {:.0} facts/s)",
        summary.pipeline,
        summary.facts_read,
        summary.dead_lettered,
        summary.epochs,
        summary.examples,
        summary.model_versions,
        summary.elapsed_secs,
        summary.facts_per_sec,
    );
    print!(
        "progressive logloss {} auc {} (replicas, as online learners score: {} {})",
        fixed(summary.logloss),
        fixed(summary.auc),
        fixed(summary.online_logloss),
        fixed(summary.online_auc)
    );
    if summary.truth_logloss.is_some_and(f64::is_finite) {
        print!(
            " | truth logloss {} auc {}",
            fixed(summary.truth_logloss),
            fixed(summary.truth_auc)
        );
    }
    println!();
    println!("outputs in {}", out.display());
}
