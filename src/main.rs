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
    options.slow_training_per_epoch = args
        .debug_slow_training_ms
        .map(std::time::Duration::from_millis);
    match run(options) {
        Ok(Some(summary)) => {
            print_summary(&summary, &args.out);
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
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

fn models_command(command: Models) -> ExitCode {
    let now = pooch::clock::now_unix_ms();
    let outcome = match &command {
        Models::List { store, model } => pooch::serve::models::list(store, model.as_deref()),
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
