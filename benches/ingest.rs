//! Collection alone: reading and parsing a CSV source, against the simplest possible Rust
//! line-reading loop on the same file as the ceiling.
//!
//! Run with `cargo bench --bench ingest` (part of `./run.sh bench`). The file is generated once
//! into `target/bench-data/ingest.csv`, lines shaped like Sniffable posts
//! (`p-123456,dog-4821,ball|park|sun,1767225600,0.412345`); `INGEST_BENCH_MB` sets its size
//! (default 1024). Figures are printed and written to `target/bench-results/ingest.json`;
//! each is the median of `BENCH_RUNS` runs (default 3).

use std::fs::File;
use std::hint::black_box;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dataflows::plan::{FieldKind, FieldPlan, Format, LatePolicy, SourcePlan, TimeUnit};
use pooch::collect::delimited::LineScratch;
use pooch::collect::row::parse_line;
use pooch::collect::shard::ShardReader;
use serde_json::json;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let megabytes: u64 = std::env::var("INGEST_BENCH_MB")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1024);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let path = root.join("target/bench-data/ingest.csv");
    ensure_file(&path, megabytes * 1_000_000);
    let bytes = std::fs::metadata(&path).expect("the data file").len() as f64;
    let schema = schema();

    let ceiling = median(runs, || {
        let mut reader = BufReader::new(File::open(&path).expect("open"));
        let mut line = Vec::new();
        let mut lines = 0u64;
        while reader.read_until(b'\n', &mut line).expect("read") > 0 {
            lines += 1;
            black_box(&line);
            line.clear();
        }
        lines
    });
    let lines = ceiling.1 as f64;
    println!(
        "plain read_until loop, 1 thread: {:.0} MB/s, {:.0} lines/s ({} lines, {:.0} MB)",
        bytes / 1e6 / ceiling.0,
        lines / ceiling.0,
        lines,
        bytes / 1e6
    );

    let mut results = vec![json!({
        "reader": "read_until loop",
        "threads": 1,
        "median_secs": ceiling.0,
        "mb_per_sec": bytes / 1e6 / ceiling.0,
        "lines_per_sec": lines / ceiling.0,
    })];
    for workers in [1usize, 2] {
        for parse in [false, true] {
            let (seconds, facts) = median(runs, || {
                read_shares(&path, workers, parse.then_some(&schema))
            });
            assert_eq!(facts as f64, lines, "every line is read exactly once");
            let name = if parse {
                "ShardReader + parse_line"
            } else {
                "ShardReader"
            };
            println!(
                "{name}, {workers} worker(s): {:.0} MB/s, {:.0} facts/s ({:.0} MB/s per worker), {:.2}x the ceiling",
                bytes / 1e6 / seconds,
                facts as f64 / seconds,
                bytes / 1e6 / seconds / workers as f64,
                ceiling.0 / seconds
            );
            results.push(json!({
                "reader": name,
                "threads": workers,
                "median_secs": seconds,
                "mb_per_sec": bytes / 1e6 / seconds,
                "facts_per_sec": facts as f64 / seconds,
                "ratio_to_ceiling": ceiling.0 / seconds,
            }));
        }
    }
    let results = json!({ "benchmark": "ingest", "file_bytes": bytes, "lines": lines, "runs": runs, "results": results });
    let out = root.join("target/bench-results");
    std::fs::create_dir_all(&out).expect("results directory");
    std::fs::write(
        out.join("ingest.json"),
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write");
    println!("results in {}", out.join("ingest.json").display());
}

/// Every worker reads its share of the file on its own thread, as the pipeline's readers do.
fn read_shares(path: &Path, workers: usize, schema: Option<&SourcePlan>) -> u64 {
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || {
                    let mut reader =
                        ShardReader::open(path, worker, workers, 1 << 20, false).expect("open");
                    let mut scratch = LineScratch::new();
                    let mut count = 0u64;
                    while let Some(line) = reader.next_line().expect("read") {
                        match schema {
                            Some(schema) => {
                                black_box(
                                    parse_line(line.bytes, schema, &mut scratch).expect("parse"),
                                );
                            }
                            None => {
                                black_box(line.bytes);
                            }
                        }
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("reader thread"))
            .sum()
    })
}

/// The median wall time of `runs` runs, and what the last run returned.
fn median(runs: usize, mut run: impl FnMut() -> u64) -> (f64, u64) {
    let mut seconds = Vec::new();
    let mut result = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        result = run();
        seconds.push(started.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    (seconds[seconds.len() / 2], result)
}

fn schema() -> SourcePlan {
    let field = |name: &str, kind: FieldKind, required: bool| FieldPlan {
        name: name.into(),
        kind,
        required,
    };
    SourcePlan {
        name: "posts".into(),
        paths: vec![],
        format: Format::Csv,
        header: false,
        fields: vec![
            field("post", FieldKind::Text, true),
            field("dog", FieldKind::Text, true),
            field("hashtags", FieldKind::List { separator: b'|' }, false),
            field(
                "time",
                FieldKind::Time {
                    unit: TimeUnit::Seconds,
                },
                true,
            ),
            field("score", FieldKind::Real, false),
        ],
        time_field: Some(3),
        lateness_secs: 0,
        glob: None,
        late: LatePolicy::Drop,
        key_fields: vec![],
        op_field: None,
        corrects: None,
    }
}

/// Writes the benchmark file unless one of at least `bytes` is there.
fn ensure_file(path: &Path, bytes: u64) {
    if std::fs::metadata(path)
        .map(|metadata| metadata.len() >= bytes)
        .unwrap_or(false)
    {
        return;
    }
    eprintln!(
        "generating {} MB of CSV into {}",
        bytes / 1_000_000,
        path.display()
    );
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("data directory");
    let mut writer = BufWriter::new(File::create(path).expect("create"));
    // a fixed linear congruential sequence: the same file every time
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        state >> 33
    };
    let words = ["ball", "park", "sun", "stick", "snow", "beach", "nap"];
    let (mut written, mut time) = (0u64, 1_767_225_600u64);
    while written < bytes {
        time += next() % 3;
        let line = format!(
            "p-{},dog-{},{}|{}|{},{},0.{:06}\n",
            next() % 1_000_000,
            next() % 10_000,
            words[(next() % 7) as usize],
            words[(next() % 7) as usize],
            words[(next() % 7) as usize],
            time,
            next() % 1_000_000
        );
        writer.write_all(line.as_bytes()).expect("write");
        written += line.len() as u64;
    }
    writer.flush().expect("flush");
}
