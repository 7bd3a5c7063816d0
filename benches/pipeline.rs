//! End to end on Sniffable: facts per second through the whole pipeline at 1 and 2 workers,
//! and the round trip of live probe queries asked while ingestion runs at full speed.
//!
//! Run with `./run.sh bench` (or `cargo bench --bench pipeline`). The data is generated once
//! into `target/bench-data/sniffable` (5000 dogs, 28 days: 1.4 M facts). Figures are printed
//! and written to `target/bench-results/pipeline.json`. `BENCH_RUNS` sets the repeats per
//! configuration (default 3); medians are reported.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pooch::generate::sniffable::{SniffableConfig, generate_sniffable};
use pooch::runtime::{LiveQueries, LiveQuery, RunOptions, run, run_with_live_queries};
use serde_json::{Value as Json, json};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("target/bench-data/sniffable");
    if !data.join("posts.csv").exists() {
        eprintln!("generating Sniffable data into {}", data.display());
        generate_sniffable(&SniffableConfig::default(), &data).expect("generate data");
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let spec = root.join("pipelines/sniffable.toml");
    let out = root.join("target/bench-out");

    let mut throughput = Vec::new();
    for workers in [1, 2] {
        let mut seconds = Vec::new();
        let mut facts = 0.0;
        for run_index in 0..runs {
            let options = options(
                &spec,
                &data,
                &out.join(format!("w{workers}-{run_index}")),
                workers,
            );
            let started = Instant::now();
            let summary = run(options)
                .expect("pipeline runs")
                .expect("process 0 summary");
            seconds.push(started.elapsed().as_secs_f64());
            facts = summary.facts_read as f64;
        }
        let median = median(&mut seconds);
        println!(
            "end to end, {workers} worker(s): median {median:.2} s over {runs} runs, {:.0} facts/s",
            facts / median
        );
        throughput.push(json!({
            "workers": workers,
            "runs_secs": seconds,
            "median_secs": median,
            "facts": facts,
            "facts_per_sec": facts / median,
        }));
    }

    let latency = live_latency(&spec, &data, &out.join("latency"), 2);
    let results = json!({
        "benchmark": "pipeline",
        "data": "sniffable default (5000 dogs, 28 days)",
        "cores": std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0),
        "throughput": throughput,
        "live_query_latency": latency,
    });
    let results_dir = root.join("target/bench-results");
    std::fs::create_dir_all(&results_dir).expect("results directory");
    let path = results_dir.join("pipeline.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write results");
    println!("results in {}", path.display());
}

fn options(spec: &Path, data: &Path, out: &Path, workers: usize) -> RunOptions {
    let _ = std::fs::remove_dir_all(out);
    let mut options = RunOptions::new(spec.to_owned(), out.to_owned());
    options.data_dir = Some(data.to_owned());
    options.timely_args = vec!["-w".into(), workers.to_string()];
    options.progress = false;
    options
}

/// Asks one live query at a time (the next 1 ms after the previous answer) while the
/// pipeline ingests, and records each round trip.
fn live_latency(spec: &Path, data: &Path, out: &Path, workers: usize) -> Json {
    let plan = pooch::spec::load(spec, Some(data)).expect("spec").plan;
    let rows: Vec<_> = (0..100)
        .map(|dog| {
            let json = format!(
                r#"{{"dog": "dog-{}", "hashtags": ["ball", "park"]}}"#,
                dog * 37
            );
            pooch::collect::queries::parse_query(json.as_bytes(), &plan)
                .expect("query")
                .row
        })
        .collect();
    let (query_sender, queries) = mpsc::channel();
    let (answers, answer_receiver) = mpsc::channel::<pooch::runtime::LiveAnswer>();
    let client = std::thread::spawn(move || {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        let mut id = 0u64;
        loop {
            let row = rows[id as usize % rows.len()].clone();
            let sent = Instant::now();
            if query_sender.send(LiveQuery { id, row }).is_err() {
                break;
            }
            match answer_receiver.recv_timeout(Duration::from_secs(30)) {
                Ok(answer) => {
                    assert_eq!(answer.id, id);
                    let _ = histogram.record(sent.elapsed().as_micros() as u64);
                }
                // the pipeline finished with the query unanswered: it arrived after the input closed
                Err(_) => break,
            }
            id += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        histogram
    });
    let started = Instant::now();
    let summary = run_with_live_queries(
        options(spec, data, out, workers),
        Some(LiveQueries { queries, answers }),
    )
    .expect("pipeline runs")
    .expect("process 0 summary");
    let elapsed = started.elapsed().as_secs_f64();
    let histogram = client.join().expect("client");
    let facts = summary.facts_read as f64;
    let quantile = |q: f64| histogram.value_at_quantile(q);
    println!(
        "live queries while ingesting at {workers} workers ({:.0} facts/s): {} answered, p50 {} us, p99 {} us, p999 {} us, max {} us",
        facts / elapsed,
        histogram.len(),
        quantile(0.5),
        quantile(0.99),
        quantile(0.999),
        histogram.max()
    );
    json!({
        "workers": workers,
        "queries": histogram.len(),
        "p50_us": quantile(0.5),
        "p99_us": quantile(0.99),
        "p999_us": quantile(0.999),
        "max_us": histogram.max(),
        "ingest_facts_per_sec": facts / elapsed,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
