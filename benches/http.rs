//! The HTTP endpoint alone: `POST /v1/predict` against a backend that costs next to nothing, so
//! what is measured is the server (HTTP parsing, JSON in and out, routing, limits, metrics).
//!
//! Run with `cargo bench --bench http` (part of `./run.sh bench`). The server runs on
//! `HTTP_BENCH_SERVER_THREADS` threads (default 2) and the load generator in the same process
//! on `HTTP_BENCH_CLIENT_THREADS` (default 2), so on a 2-core machine they share the cores.
//! Two runs of `HTTP_BENCH_SECS` seconds each (default 10, after 2 s of warm-up):
//! closed loop (maximum throughput, `HTTP_BENCH_CONNECTIONS` connections, default 32) and open
//! loop at `HTTP_BENCH_RATE` queries/s (default 5000). Figures are printed and written to
//! `target/bench-results/http.json`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loadgen::{LoadConfig, LoadReport};
use pooch::serve::http::{self, ApiError, Backend, HttpConfig, Prediction};
use serde_json::{Value, json};

/// Scores a dog by a hash of its name: the cost of a real lookup, without the lookup.
struct ConstantBackend;

impl Backend for ConstantBackend {
    fn predict(&self, query: &Value) -> Result<Prediction, ApiError> {
        let dog = query
            .get("dog")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::BadRequest("missing field `dog`".into()))?;
        let hash = xxhash_rust::xxh3::xxh3_64(dog.as_bytes());
        Ok(Prediction {
            probability: (hash % 10_000) as f64 / 10_000.0,
            model: "pooch".into(),
            version: Some(7),
            features_epoch: Some(1234),
        })
    }
    fn models(&self) -> Value {
        json!({})
    }
    fn pin(&self, _model: &str, _version: u64) -> Result<Value, ApiError> {
        Err(ApiError::NotFound("no models".into()))
    }
    fn unpin(&self, _model: &str) -> Result<Value, ApiError> {
        Err(ApiError::NotFound("no models".into()))
    }
    fn rollback(&self, _model: &str) -> Result<Value, ApiError> {
        Err(ApiError::NotFound("no models".into()))
    }
    fn ready(&self) -> bool {
        true
    }
    fn metrics(&self, _out: &mut String) {}
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn query_body(request: u64) -> Vec<u8> {
    format!(
        r#"{{"dog": "dog-{}", "hashtags": ["ball", "park"], "time": 1770246000}}"#,
        request % 5000
    )
    .into_bytes()
}

/// CPU time used so far by this process's threads whose name starts with `prefix`, from
/// `/proc/self/task/*/schedstat` (nanoseconds on CPU). `None` off Linux.
fn cpu_ns(prefix: &str) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let task = task.ok()?.path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap_or_default();
        total += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Runs one load and reports it with the CPU time the server and the client spent per request:
/// on a machine shared with other work, CPU per request is steadier than requests per second.
fn measure(name: &str, config: &LoadConfig) -> Value {
    let server_before = cpu_ns("pooch-http");
    let report = loadgen::run(config, query_body).expect("a load run");
    // The load generator's threads are gone once `run` returns, so it measures its own.
    let server_us = server_before
        .zip(cpu_ns("pooch-http"))
        .map(|(before, after)| (after - before) as f64 / 1000.0);
    let handled = (report.ok + report.non_2xx + report.warmup_answered).max(1) as f64;
    let server_cpu_us_per_request = server_us.map(|us| us / handled);
    let mut summary = summary(name, &report);
    if let Some(per_request) = server_cpu_us_per_request {
        println!(
            "  server CPU {per_request:.1} us/request: {:.0} q/s per fully used core",
            1e6 / per_request
        );
        summary["server_cpu_us_per_request"] = json!(per_request);
    }
    summary
}

fn summary(name: &str, report: &LoadReport) -> Value {
    println!(
        "{name}: {:.0} q/s, {} ok, {} non-2xx, {} errors, {} unsent | p50 {} us p99 {} us p99.9 {} us max {} us",
        report.achieved_per_sec,
        report.ok,
        report.non_2xx,
        report.errors,
        report.unsent,
        report.p50_us,
        report.p99_us,
        report.p999_us,
        report.max_us
    );
    json!({
        "achieved_per_sec": report.achieved_per_sec,
        "ok": report.ok,
        "non_2xx": report.non_2xx,
        "errors": report.errors,
        "unsent": report.unsent,
        "p50_us": report.p50_us,
        "p99_us": report.p99_us,
        "p999_us": report.p999_us,
        "max_us": report.max_us,
    })
}

/// The real serving state, queried over HTTP at `rate` while `pooch run` ingests the default
/// Sniffable data at 2 workers: the question of issue 5, whether a query waits for ingestion.
fn while_ingesting(rate: f64, connections: usize, client_threads: usize) -> Value {
    use pooch::runtime::{RunOptions, run_until};
    use std::sync::atomic::{AtomicBool, Ordering};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("target/bench-data/sniffable");
    if !data.join("posts.csv").exists() {
        pooch::generate::sniffable::generate_sniffable(
            &pooch::generate::sniffable::SniffableConfig::default(),
            &data,
        )
        .expect("generate data");
    }
    let out = root.join("target/bench-data/http-out");
    let _ = std::fs::remove_dir_all(&out);
    let mut options = RunOptions::new(root.join("pipelines/sniffable.toml"), out);
    options.data_dir = Some(data);
    options.timely_args = vec!["-w".into(), "2".into()];
    options.progress = false;
    options.http = Some(HttpConfig {
        addr: "127.0.0.1:0".parse().expect("an address"),
        worker_threads: env_or("HTTP_BENCH_INGEST_SERVER_THREADS", 2),
        ..HttpConfig::default()
    });
    options.serve_after_input = true;
    let (bound, address) = std::sync::mpsc::channel();
    options.http_bound = Some(bound);
    let stop = Arc::new(AtomicBool::new(false));
    let started = std::time::Instant::now();
    let run = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let summary = run_until(options, None, stop);
            (summary, started.elapsed())
        })
    };
    let addr = address.recv().expect("the endpoint listens");
    let seconds: u64 = env_or("HTTP_BENCH_INGEST_SECS", 4);
    let config = LoadConfig {
        addr,
        path: "/v1/predict".into(),
        connections,
        rate_per_sec: Some(rate),
        duration: Duration::from_secs(seconds),
        warmup: Duration::from_millis(500),
        threads: client_threads,
    };
    let name = format!("while ingesting at 2 workers, open loop at {rate} q/s");
    let report = loadgen::run(&config, query_body).expect("a load run");
    let load_ended = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (run_summary, run_time) = run.join().expect("the run thread");
    let run_summary = run_summary.expect("the run succeeds").expect("a summary");
    let facts = run_summary.facts_read;
    let ingest_secs = run_summary.elapsed_secs;
    println!(
        "  ingestion: {facts} facts in {ingest_secs:.2} s ({:.0} facts/s); the load ran from 0 to {:.2} s of it, the run ended at {:.2} s",
        facts as f64 / ingest_secs,
        load_ended.as_secs_f64(),
        run_time.as_secs_f64()
    );
    let mut result = summary(&name, &report);
    result["ingest_facts"] = json!(facts);
    result["ingest_secs"] = json!(ingest_secs);
    result["ingest_facts_per_sec"] = json!(facts as f64 / ingest_secs);
    result["load_ended_secs"] = json!(load_ended.as_secs_f64());
    result
}

fn main() {
    let server_threads: usize = env_or("HTTP_BENCH_SERVER_THREADS", 2);
    let client_threads: usize = env_or("HTTP_BENCH_CLIENT_THREADS", 2);
    let seconds: u64 = env_or("HTTP_BENCH_SECS", 10);
    let connections: usize = env_or("HTTP_BENCH_CONNECTIONS", 32);
    let rate: f64 = env_or("HTTP_BENCH_RATE", 5000.0);
    let server = http::spawn(
        HttpConfig {
            addr: "127.0.0.1:0".parse().expect("an address"),
            worker_threads: server_threads,
            ..HttpConfig::default()
        },
        Arc::new(ConstantBackend),
    )
    .expect("the server starts");
    let load = |rate_per_sec: Option<f64>, connections: usize| LoadConfig {
        addr: server.local_addr(),
        path: "/v1/predict".into(),
        connections,
        rate_per_sec,
        duration: Duration::from_secs(seconds),
        warmup: Duration::from_secs(2),
        threads: client_threads,
    };
    println!(
        "HTTP predict: server {server_threads} threads, load generator {client_threads} threads, {} cores",
        std::thread::available_parallelism().map_or(0, |cores| cores.get())
    );
    let closed = measure(
        &format!("closed loop, {connections} connections"),
        &load(None, connections),
    );
    let open_connections = 16;
    let open = measure(
        &format!("open loop at {rate} q/s, {open_connections} connections"),
        &load(Some(rate), open_connections),
    );
    server.shutdown();
    let ingesting = while_ingesting(rate, open_connections, client_threads);

    let results = json!({
        "server_threads": server_threads,
        "client_threads": client_threads,
        "seconds": seconds,
        "closed_loop": closed,
        "open_loop": open,
        "open_loop_rate": rate,
        "while_ingesting": ingesting,
    });
    let results_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&results_dir).expect("results directory");
    let path = results_dir.join("http.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write results");
    println!("results in {}", path.display());
}
