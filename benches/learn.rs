//! Learning speed: end-to-end examples per second (reading, parsing, featurising, scoring,
//! learning, merging, publishing) per worker, against Vowpal Wabbit's learn-only speed.
//!
//! Two streams: MovieLens 100K with only the ids (`pipelines/movielens-ids.toml`, skipped with a
//! message when `../shared/data/ml-100k/u.data` is missing) and a generated Criteo-shaped stream
//! (`pipelines/criteo.toml`, 1 M rows generated once into `target/bench-data/criteo`;
//! `BENCH_CRITEO_ROWS` changes the count). Each runs at 1 and 2 workers, `BENCH_RUNS` times
//! (default 3); medians are reported.
//!
//! When `vw` is on the PATH it runs on the same rows in the same run, learn only, with the
//! anchors' flags (`../shared/anchors/anchors.py`: `--loss_function logistic --link logistic
//! -b 18`, plus `--ftrl` as both pipelines use FTRL). Otherwise the ratio is against the anchors'
//! published figure, and the output says so. Results go to `target/bench-results/learn.json`.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pooch::generate::criteo::{CriteoConfig, FILE_NAME, generate_criteo};
use pooch::runtime::{RunOptions, run_until};
use serde_json::json;

/// The anchors' published VW learn-only speeds, `--ftrl` (examples/s, `../shared/anchors/README.md`).
const VW_FTRL_ML100K: f64 = 1.46e6;
const VW_FTRL_CRITEO: f64 = 0.60e6;

/// One stream to measure.
struct Stream {
    name: &'static str,
    spec: PathBuf,
    data_dir: PathBuf,
    /// Writes the stream in VW's text format to the given file.
    to_vw: fn(&Path, &Path) -> std::io::Result<()>,
    published_vw: f64,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runs: usize = env_number("BENCH_RUNS").unwrap_or(3).max(1);
    let criteo_rows = env_number("BENCH_CRITEO_ROWS").unwrap_or(1_000_000) as u64;
    let out = root.join("target/bench-out/learn");
    let vw_work = root.join("target/bench-data/vw");

    let mut streams = Vec::new();
    let shared = root.join("../shared/data");
    if shared.join("ml-100k/u.data").exists() {
        streams.push(Stream {
            name: "ml-100k ids",
            spec: root.join("pipelines/movielens-ids.toml"),
            data_dir: shared,
            to_vw: movielens_to_vw,
            published_vw: VW_FTRL_ML100K,
        });
    } else {
        println!(
            "ml-100k: skipped, {} is missing",
            shared.join("ml-100k/u.data").display()
        );
    }
    let criteo = root.join(format!("target/bench-data/criteo-{criteo_rows}"));
    if !criteo.join(FILE_NAME).exists() {
        eprintln!(
            "generating {criteo_rows} Criteo-shaped rows into {}",
            criteo.display()
        );
        let config = CriteoConfig {
            rows: criteo_rows,
            ..CriteoConfig::default()
        };
        generate_criteo(&config, &criteo).expect("generate Criteo-shaped rows");
    }
    streams.push(Stream {
        name: "criteo-shaped",
        spec: root.join("pipelines/criteo.toml"),
        data_dir: criteo,
        to_vw: criteo_to_vw,
        published_vw: VW_FTRL_CRITEO,
    });

    let vw_installed = Command::new("vw")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    let mut results = Vec::new();
    for stream in &streams {
        let (vw_rate, vw_source) = if vw_installed {
            let file = vw_work.join(format!("{}.vw", stream.name.replace(' ', "-")));
            std::fs::create_dir_all(&vw_work).expect("vw work directory");
            (stream.to_vw)(&stream.data_dir, &file).expect("write the VW input");
            (measure_vw(&file, runs), "measured in this run")
        } else {
            (
                stream.published_vw,
                "anchors' published figure (vw is not installed)",
            )
        };
        println!(
            "{}: VW --ftrl learn only {:.0} ex/s ({vw_source})",
            stream.name, vw_rate
        );
        for workers in [1, 2] {
            let mut seconds = Vec::new();
            let mut summary = None;
            for run_index in 0..runs {
                let options = options(
                    stream,
                    &out.join(format!(
                        "{}-w{workers}-{run_index}",
                        stream.name.replace(' ', "-")
                    )),
                    workers,
                );
                let started = Instant::now();
                summary = run_until(options, None, Default::default()).expect("pipeline runs");
                seconds.push(started.elapsed().as_secs_f64());
            }
            let median = median(&mut seconds);
            let summary = summary.expect("process 0 summary");
            let examples = summary.examples as f64;
            let rate = examples / median;
            let per_worker = rate / workers as f64;
            let number = |value: Option<f64>| value.unwrap_or(f64::NAN);
            println!(
                "{}, {workers} worker(s): {examples} examples, median {median:.2} s over {runs} runs, \
                 {rate:.0} ex/s, {per_worker:.0} ex/s per worker = {:.2}x VW | logloss {:.4} \
                 (online {:.4}, truth {:.4}) auc {:.4}",
                stream.name,
                per_worker / vw_rate,
                number(summary.logloss),
                number(summary.online_logloss),
                number(summary.truth_logloss),
                number(summary.auc),
            );
            results.push(json!({
                "data": stream.name,
                "workers": workers,
                "examples": examples,
                "runs_secs": seconds,
                "median_secs": median,
                "examples_per_sec": rate,
                "examples_per_sec_per_worker": per_worker,
                "vw_examples_per_sec": vw_rate,
                "vw_source": vw_source,
                "ratio_per_worker_to_vw": per_worker / vw_rate,
                "logloss": summary.logloss,
                "online_logloss": summary.online_logloss,
                "auc": summary.auc,
                "truth_logloss": summary.truth_logloss,
            }));
        }
    }

    let results = json!({
        "benchmark": "learn",
        "cores": std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0),
        "vw_installed": vw_installed,
        "vw_flags": "--loss_function logistic --link logistic -b 18 --quiet --ftrl",
        "criteo_rows": criteo_rows,
        "results": results,
    });
    let results_dir = root.join("target/bench-results");
    std::fs::create_dir_all(&results_dir).expect("results directory");
    let path = results_dir.join("learn.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write results");
    println!("results in {}", path.display());
}

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

fn options(stream: &Stream, out: &Path, workers: usize) -> RunOptions {
    let _ = std::fs::remove_dir_all(out);
    let mut options = RunOptions::new(stream.spec.clone(), out.to_owned());
    options.data_dir = Some(stream.data_dir.clone());
    options.timely_args = vec!["-w".into(), workers.to_string()];
    options.progress = false;
    options
}

/// VW's learn-only wall time on `file`, median of `runs`, in examples per second.
fn measure_vw(file: &Path, runs: usize) -> f64 {
    let rows = std::fs::read(file)
        .expect("read the VW input")
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count() as f64;
    let mut seconds = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let status = Command::new("vw")
            .arg("-d")
            .arg(file)
            .args([
                "--loss_function",
                "logistic",
                "--link",
                "logistic",
                "-b",
                "18",
                "--quiet",
                "--ftrl",
            ])
            .status()
            .expect("run vw");
        assert!(status.success(), "vw failed on {}", file.display());
        seconds.push(started.elapsed().as_secs_f64());
    }
    rows / median(&mut seconds)
}

/// The anchors' encoding: rows sorted by (time, line), label `rating >= 4`, user and item ids.
fn movielens_to_vw(data_dir: &Path, file: &Path) -> std::io::Result<()> {
    let input = BufReader::new(std::fs::File::open(data_dir.join("ml-100k/u.data"))?);
    let mut rows = Vec::new();
    for line in input.lines() {
        let line = line?;
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() == 4 {
            let time: u64 = fields[3].parse().unwrap_or(0);
            let positive = fields[2].parse::<u32>().unwrap_or(0) >= 4;
            let vw = format!(
                "{} |f user={} item={}\n",
                if positive { 1 } else { -1 },
                fields[0],
                fields[1]
            );
            rows.push((time, rows.len(), vw));
        }
    }
    rows.sort();
    let mut output = BufWriter::new(std::fs::File::create(file)?);
    for (_, _, vw) in rows {
        output.write_all(vw.as_bytes())?;
    }
    output.flush()
}

/// The same features as `pipelines/criteo.toml`: each integer as `Ij:log1p(value)`, each
/// categorical as `Cc=hash`, empty fields left out.
fn criteo_to_vw(data_dir: &Path, file: &Path) -> std::io::Result<()> {
    let input = BufReader::new(std::fs::File::open(data_dir.join(FILE_NAME))?);
    let mut output = BufWriter::new(std::fs::File::create(file)?);
    for line in input.lines() {
        let line = line?;
        let fields: Vec<&str> = line.split('\t').collect();
        write!(output, "{} |f", if fields[0] == "1" { 1 } else { -1 })?;
        for (index, value) in fields[1..14].iter().enumerate() {
            if let Ok(value) = value.parse::<f64>() {
                write!(output, " I{}:{:.5}", index + 1, value.max(0.0).ln_1p())?;
            }
        }
        for (index, value) in fields[14..40].iter().enumerate() {
            if !value.is_empty() {
                write!(output, " C{}={value}", index + 1)?;
            }
        }
        writeln!(output)?;
    }
    output.flush()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
