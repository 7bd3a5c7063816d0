//! Side by side with Vowpal Wabbit, end to end: the `pooch` binary on each stream at 1, 2 and 4
//! workers and at 2 processes × 1 worker, VW `--ftrl` on the same files in the same run, peak
//! memory per run, and the HTTP endpoint measured by independent clients (`hey`, `wrk`) while
//! the pipeline ingests.
//!
//! Run with `./run.sh bench` (all of it) or `./run.sh bench quick` (this benchmark alone, small
//! streams, one run each, no 4 workers, MovieLens ids only: a few minutes on a quiet machine), or `cargo bench --bench side_by_side` with
//! `BENCH_QUICK=1` and `BENCH_RUNS=N` (repeats per configuration; 3 by default, 1 when quick).
//!
//! - **Streams.** The Criteo-shaped rows (`pooch generate criteo --rows 1000000`,
//!   `pipelines/criteo.toml`), Sniffable at the default size and at 10× (`--days 280`), all
//!   generated once into `target/bench-data/`; MovieLens 100K (ids only, and with features)
//!   and elec2 from `../shared/data`.
//! - **pooch** runs as a child process, so the wall time is the whole `pooch run` (start-up,
//!   parsing, features, learning, publishing, outputs) and the peak RSS (`wait4`'s
//!   `ru_maxrss`) is the run's alone. The figures of a run come from its `summary.json`.
//! - **VW** runs through `benches/vw_side_by_side.py` in a virtual environment under
//!   `target/bench-venv`, made and filled from PyPI (`vowpalwabbit`, `numpy`) when missing; when
//!   that fails, VW is skipped with the reason. Its time is learn-only on its own text file
//!   (the script's docstring says what is timed).
//! - **Serving.** `pooch run --http` at 2 workers on the long Sniffable stream: ingest rate in
//!   four phases (no load, `hey` at 5,000 q/s open loop, `wrk` closed loop, no load), then an
//!   idle run (input read, still serving) measured by both. Skipped with a message when `hey`
//!   or `wrk` is missing (`apt-get install hey wrk`).
//!
//! `BENCH_STREAMS=criteo,elec2` runs only the streams whose names start so (serving runs when
//! the Sniffable streams are among them); the streams it runs replace their earlier entries in
//! the results, the others are kept.
//!
//! Results go to `target/bench-results/side_by_side.json` (time, throughput, scaling, logloss,
//! the VW ratio), `memory.json` (peak RSS per stream and layout) and `serving.json`, and a
//! table is printed. On 2 cores, 4 workers measure overhead, not speed-up.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

/// A worker layout: processes × worker threads per process.
#[derive(Clone, Copy)]
struct Layout {
    processes: usize,
    workers: usize,
}

impl Layout {
    fn name(self) -> String {
        if self.processes == 1 {
            format!("w{}", self.workers)
        } else {
            format!("n{}w{}", self.processes, self.workers)
        }
    }
    fn total_workers(self) -> usize {
        self.processes * self.workers
    }
}

const LAYOUTS: [Layout; 4] = [
    Layout {
        processes: 1,
        workers: 1,
    },
    Layout {
        processes: 1,
        workers: 2,
    },
    Layout {
        processes: 1,
        workers: 4,
    },
    Layout {
        processes: 2,
        workers: 1,
    },
];

/// One stream of the benchmark.
struct Stream {
    name: String,
    spec: PathBuf,
    data: PathBuf,
    /// How VW reads it: the kind and path given to `vw_side_by_side.py`.
    vw: Option<(&'static str, PathBuf)>,
    runs: usize,
    layouts: Vec<Layout>,
}

/// What one `pooch run` measured.
struct PoochRun {
    wall_secs: f64,
    peak_rss_kib: Vec<u64>,
    summary: Json,
}

struct Bench {
    root: PathBuf,
    pooch: PathBuf,
    quick: bool,
    timeout: Duration,
    next_port: u16,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|value| value != "0" && !value.is_empty());
    let runs: usize = env_or("BENCH_RUNS", if quick { 1 } else { 3 });
    let mut bench = Bench {
        root: root.clone(),
        pooch: PathBuf::from(env!("CARGO_BIN_EXE_pooch")),
        quick,
        timeout: Duration::from_secs(env_or("BENCH_RUN_TIMEOUT_SECS", 900)),
        next_port: env_or("BENCH_PORT_BASE", 2301),
    };
    let results_dir = root.join("target/bench-results");
    std::fs::create_dir_all(&results_dir).expect("results directory");
    let started = iso_now();
    let load_before = load_average();
    let commit = git_commit(&root);
    let mut command = if quick {
        "./run.sh bench quick"
    } else {
        "./run.sh bench"
    }
    .to_owned();
    if let Ok(streams) = std::env::var("BENCH_STREAMS") {
        command = format!("BENCH_STREAMS={streams} {command}");
    }

    let streams = bench.streams(runs);
    let python = vw_python(&root);
    let mut stream_results = Vec::new();
    for stream in &streams {
        stream_results.push(bench.stream(stream, python.as_ref()));
    }
    // a run of some streams keeps the earlier results of the others
    let earlier = std::fs::read_to_string(results_dir.join("side_by_side.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Json>(&text).ok());
    if let Some(earlier) = earlier.filter(|_| std::env::var_os("BENCH_STREAMS").is_some()) {
        for old in earlier["streams"].as_array().into_iter().flatten() {
            if !stream_results
                .iter()
                .any(|new| new["stream"] == old["stream"])
            {
                stream_results.push(old.clone());
            }
        }
    }
    let memory = memory_section(&stream_results);
    let meta = json!({
        "date": started,
        "finished": iso_now(),
        "quick": quick,
        "runs": runs,
        "cores": std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "git_commit": commit,
        "command": command,
    });
    write_json(
        &results_dir.join("side_by_side.json"),
        &json!({"benchmark": "side_by_side", "meta": meta, "streams": stream_results}),
    );
    write_json(
        &results_dir.join("memory.json"),
        &json!({"benchmark": "memory", "meta": meta, "memory": memory}),
    );
    print_table(&stream_results);
    print_memory(&memory);

    let long = format!("sniffable-d{}", long_days(quick));
    if let Some(serving) = bench.serving(&streams, &long) {
        write_json(
            &results_dir.join("serving.json"),
            &json!({"benchmark": "serving", "meta": meta, "serving": serving}),
        );
        print_serving(&serving);
    }
    println!(
        "results in {}/{{side_by_side,memory,serving}}.json",
        results_dir.display()
    );
}

/// The long Sniffable stream's days: 10× the default, or 2× when quick.
fn long_days(quick: bool) -> u32 {
    if quick { 56 } else { 280 }
}

/// Whether `BENCH_STREAMS` (comma-separated name prefixes) leaves the stream in; all when unset.
fn wanted(name: &str) -> bool {
    match std::env::var("BENCH_STREAMS") {
        Ok(list) => list
            .split(',')
            .any(|prefix| !prefix.is_empty() && name.starts_with(prefix.trim())),
        Err(_) => true,
    }
}

impl Bench {
    fn streams(&self, runs: usize) -> Vec<Stream> {
        let data = self.root.join("target/bench-data");
        let shared = self.root.join("../shared/data");
        let pipelines = self.root.join("pipelines");
        // quick mode: 4 workers only measure overhead on 2 cores, and take the longest
        let all: Vec<Layout> = LAYOUTS
            .iter()
            .copied()
            .filter(|layout| !self.quick || layout.total_workers() <= 2)
            .collect();
        let criteo_rows: u64 = if self.quick { 200_000 } else { 1_000_000 };
        let criteo = data.join(format!("criteo-{criteo_rows}"));
        let mut streams = Vec::new();
        if wanted(&format!("criteo-{criteo_rows}")) {
            self.generate(
                &criteo.join("criteo.tsv"),
                &["generate", "criteo", "--rows", &criteo_rows.to_string()],
                &criteo,
            );
            streams.push(Stream {
                name: format!("criteo-{criteo_rows}"),
                spec: pipelines.join("criteo.toml"),
                data: criteo.clone(),
                vw: Some(("criteo", criteo)),
                runs,
                layouts: all.clone(),
            });
        }
        for days in [28, long_days(self.quick)] {
            if !wanted(&format!("sniffable-d{days}")) {
                continue;
            }
            let dir = data.join(format!("sniffable-d{days}"));
            self.generate(
                &dir.join("posts.csv"),
                &["generate", "sniffable", "--days", &days.to_string()],
                &dir,
            );
            streams.push(Stream {
                name: format!("sniffable-d{days}"),
                spec: pipelines.join("sniffable.toml"),
                data: dir.clone(),
                vw: Some(("sniffable", dir)),
                // the long stream takes a minute or more per run: once per layout, and in quick
                // mode at 1 and 2 workers only
                runs: if days == 28 { runs } else { 1 },
                layouts: if days == 28 || !self.quick {
                    all.clone()
                } else {
                    all[..2].to_vec()
                },
            });
        }
        if shared.join("ml-100k/u.data").exists() {
            for (name, spec) in [
                ("movielens-ids", "movielens-ids.toml"),
                ("movielens", "movielens.toml"),
            ] {
                // quick mode: the anchors' encoding only (the features spec takes 5× longer)
                if !wanted(name) || (self.quick && name == "movielens") {
                    continue;
                }
                streams.push(Stream {
                    name: name.into(),
                    spec: pipelines.join(spec),
                    data: shared.clone(),
                    vw: Some(("ml100k", shared.clone())),
                    runs,
                    layouts: all.clone(),
                });
            }
        } else {
            eprintln!(
                "side_by_side: MovieLens skipped: {} is missing",
                shared.join("ml-100k/u.data").display()
            );
        }
        let elec2 = shared.join("elec2/elec.csv");
        if wanted("elec2") && elec2.exists() {
            streams.push(Stream {
                name: "elec2".into(),
                spec: pipelines.join("elec2.toml"),
                data: shared.clone(),
                vw: Some(("elec2", shared.clone())),
                runs,
                // a model per row: every row is a round trip between workers, so more workers
                // take minutes; quick mode runs 1 and 2 workers in one process
                layouts: if self.quick {
                    all[..2].to_vec()
                } else {
                    all.clone()
                },
            });
        } else if wanted("elec2") {
            eprintln!(
                "side_by_side: elec2 skipped: {} is missing",
                elec2.display()
            );
        }
        streams
    }

    fn generate(&self, marker: &Path, args: &[&str], out: &Path) {
        if marker.exists() {
            return;
        }
        eprintln!("side_by_side: generating {}", out.display());
        let status = Command::new(&self.pooch)
            .args(args)
            .arg("--out")
            .arg(out)
            .stdout(Stdio::null())
            .status()
            .expect("run pooch generate");
        assert!(status.success(), "pooch {} failed", args.join(" "));
    }

    fn stream(&mut self, stream: &Stream, python: Option<&PathBuf>) -> Json {
        eprintln!("side_by_side: {}", stream.name);
        let vw = match (python, &stream.vw) {
            (Some(python), Some((kind, path))) => run_vw(
                python,
                &self.root,
                kind,
                path,
                &self.root.join("target/bench-data/vw").join(&stream.name),
                stream.runs,
            ),
            (None, _) => json!({"skipped": "VW is not installed (see the message above)"}),
            (_, None) => json!({"skipped": "no VW encoding for this stream"}),
        };
        let vw_secs = vw.get("learn_secs").and_then(Json::as_f64);
        let mut layouts = Vec::new();
        let mut base: Option<(f64, f64, f64)> = None; // 1 worker: secs, logloss, online logloss
        for &layout in &stream.layouts {
            let mut seconds = Vec::new();
            let mut rss = Vec::new();
            let mut last = None;
            let mut failure = None;
            for run in 0..stream.runs {
                let out = self.root.join(format!(
                    "target/bench-out/{}/{}-{run}",
                    stream.name,
                    layout.name()
                ));
                match self.run_pooch(stream, layout, &out) {
                    Ok(result) => {
                        seconds.push(result.wall_secs);
                        rss.push(result.peak_rss_kib.clone());
                        last = Some(result);
                    }
                    Err(error) => {
                        eprintln!("side_by_side: {} {}: {error}", stream.name, layout.name());
                        failure = Some(error);
                        break;
                    }
                }
            }
            let Some(last) = last.filter(|_| failure.is_none()) else {
                layouts.push(json!({
                    "layout": layout.name(),
                    "processes": layout.processes,
                    "workers_per_process": layout.workers,
                    "total_workers": layout.total_workers(),
                    "error": failure.unwrap_or_default(),
                }));
                continue;
            };
            let median_secs = median(&seconds);
            let summary = &last.summary;
            let field = |name: &str| summary.get(name).and_then(Json::as_f64);
            let facts = field("facts_read").unwrap_or(0.0);
            let examples = field("examples").unwrap_or(0.0);
            let logloss = field("logloss").unwrap_or(f64::NAN);
            let online = field("online_logloss").unwrap_or(f64::NAN);
            if layout.total_workers() == 1 && layout.processes == 1 {
                base = Some((median_secs, logloss, online));
            }
            let speedup = base.map(|(secs, _, _)| secs / median_secs);
            // the largest process's peak, per run; the median over runs
            let peak_per_process: Vec<u64> = (0..layout.processes)
                .map(|process| {
                    let values: Vec<f64> = rss.iter().map(|run| run[process] as f64).collect();
                    median(&values) as u64
                })
                .collect();
            let relative = |value: f64, reference: f64| 100.0 * (value / reference - 1.0);
            layouts.push(json!({
                "layout": layout.name(),
                "processes": layout.processes,
                "workers_per_process": layout.workers,
                "total_workers": layout.total_workers(),
                "runs_secs": seconds,
                "median_secs": median_secs,
                "facts": facts,
                "examples": examples,
                "facts_per_sec": facts / median_secs,
                "examples_per_sec": examples / median_secs,
                "speedup_vs_w1": speedup,
                "efficiency_per_worker": speedup.map(|speedup| speedup / layout.total_workers() as f64),
                "speed_vs_vw": vw_secs.map(|vw| vw / median_secs),
                "logloss": logloss,
                "online_logloss": online,
                "auc": field("auc"),
                "truth_logloss": field("truth_logloss"),
                "logloss_vs_w1_pct": base.map(|(_, reference, _)| relative(logloss, reference)),
                "online_logloss_vs_w1_pct": base.map(|(_, _, reference)| relative(online, reference)),
                "peak_rss_mib_per_process": peak_per_process.iter().map(|kib| *kib as f64 / 1024.0).collect::<Vec<_>>(),
                "peak_rss_mib": peak_per_process.iter().sum::<u64>() as f64 / 1024.0,
                "epochs": field("epochs"),
                "model_versions": field("model_versions"),
                "facts_digest": summary.get("facts_digest"),
                "model_digest": summary.get("model_digest"),
            }));
        }
        json!({
            "stream": stream.name,
            // a stream's entry may outlive the run that wrote the rest (BENCH_STREAMS)
            "date": iso_now(),
            "quick": self.quick,
            "spec": stream.spec.strip_prefix(&self.root).unwrap_or(&stream.spec),
            "data": stream.data,
            "runs": stream.runs,
            "vw": vw,
            "pooch": layouts,
        })
    }

    /// Runs `pooch run` at `layout` (one child per process) and waits for every process.
    fn run_pooch(
        &mut self,
        stream: &Stream,
        layout: Layout,
        out: &Path,
    ) -> Result<PoochRun, String> {
        let _ = std::fs::remove_dir_all(out);
        let hostfile = out.with_extension("hosts");
        if layout.processes > 1 {
            let mut hosts = String::new();
            for _ in 0..layout.processes {
                hosts.push_str(&format!("127.0.0.1:{}\n", self.free_port()));
            }
            std::fs::create_dir_all(out.parent().expect("parent")).map_err(|e| e.to_string())?;
            std::fs::write(&hostfile, hosts).map_err(|e| e.to_string())?;
        }
        let started = Instant::now();
        let mut children = Vec::new();
        for process in 0..layout.processes {
            let mut command = Command::new(&self.pooch);
            command
                .args(["run", "--quiet", "--pipeline"])
                .arg(&stream.spec)
                .arg("--data")
                .arg(&stream.data)
                .arg("--out")
                .arg(out)
                .args(["--", "-w", &layout.workers.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if layout.processes > 1 {
                command
                    .args([
                        "-n",
                        &layout.processes.to_string(),
                        "-p",
                        &process.to_string(),
                        "-h",
                    ])
                    .arg(&hostfile);
            }
            children.push(command.spawn().map_err(|e| format!("spawn pooch: {e}"))?);
        }
        let stderr: Vec<_> = children
            .iter_mut()
            .map(|child| {
                let pipe = child.stderr.take().expect("piped");
                std::thread::spawn(move || std::io::read_to_string(pipe).unwrap_or_default())
            })
            .collect();
        let waited = wait_all(&mut children, started + self.timeout);
        let wall_secs = started.elapsed().as_secs_f64();
        let messages: Vec<String> = stderr
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect();
        let _ = std::fs::remove_file(&hostfile);
        let peak_rss_kib =
            waited.map_err(|error| format!("{error}; stderr: {}", messages.join(" | ").trim()))?;
        let summary = std::fs::read_to_string(out.join("summary.json"))
            .map_err(|e| format!("read {}: {e}", out.join("summary.json").display()))?;
        let summary = serde_json::from_str(&summary).map_err(|e| format!("summary.json: {e}"))?;
        Ok(PoochRun {
            wall_secs,
            peak_rss_kib,
            summary,
        })
    }

    /// A port that was free a moment ago (bound, then released).
    fn free_port(&mut self) -> u16 {
        loop {
            let port = self.next_port;
            self.next_port = if port >= 60_000 { 2301 } else { port + 1 };
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    /// Serving while ingesting (the long Sniffable stream) and idle (the default one); `None`
    /// when `BENCH_STREAMS` leaves them out.
    fn serving(&mut self, streams: &[Stream], long: &str) -> Option<Json> {
        let find = |name: &str| streams.iter().find(|stream| stream.name == name);
        let (Some(long), Some(short)) = (find(long), find("sniffable-d28")) else {
            eprintln!("side_by_side: serving left out with the Sniffable streams");
            return None;
        };
        let (Some(hey), Some(wrk)) = (tool("hey"), tool("wrk")) else {
            let message = "hey or wrk is missing: install them with `apt-get install hey wrk`";
            eprintln!("side_by_side: serving skipped: {message}");
            return Some(json!({"skipped": message}));
        };
        let phase_secs: u64 = env_or("BENCH_SERVE_SECS", if self.quick { 3 } else { 8 });
        let lua = self.root.join("target/bench-out/predict.lua");
        std::fs::create_dir_all(lua.parent().expect("parent")).expect("bench-out");
        std::fs::write(
            &lua,
            format!(
                "wrk.method = \"POST\"\nwrk.body = '{QUERY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
            ),
        )
        .expect("write predict.lua");
        let clients = Clients {
            hey,
            wrk,
            lua,
            phase_secs,
        };
        let ingesting = self.serve_ingesting(long, &clients);
        let idle = self.serve_idle(short, &clients);
        Some(json!({
            "workers": 2,
            "query": serde_json::from_str::<Json>(QUERY).expect("query"),
            "phase_secs": phase_secs,
            "hey": {"rate_qps": HEY_RATE, "connections": HEY_CONNECTIONS},
            "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS},
            "ingesting": ingesting,
            "idle": idle,
        }))
    }

    fn spawn_serving(&self, stream: &Stream, out: &Path, exit_after_input: bool) -> Served {
        let _ = std::fs::remove_dir_all(out);
        let mut command = Command::new(&self.pooch);
        command
            .args(["run", "--pipeline"])
            .arg(&stream.spec)
            .arg("--data")
            .arg(&stream.data)
            .arg("--out")
            .arg(out)
            .args(["--http", "127.0.0.1:0"]);
        if exit_after_input {
            command.arg("--exit-after-input");
        }
        let mut child = command
            .args(["--", "-w", "2"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pooch run --http");
        let stderr = child.stderr.take().expect("piped");
        let progress = Arc::new(Mutex::new(Vec::new()));
        let (events, event_receiver) = mpsc::channel();
        let samples = Arc::clone(&progress);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let now = Instant::now();
                if let Some(address) = line.strip_prefix("pooch: serving on ") {
                    let _ = events.send(ServeEvent::Address(address.trim().to_owned()));
                } else if line.starts_with("pooch: the input is read") {
                    let _ = events.send(ServeEvent::InputRead);
                } else if let Some(facts) = progress_facts(&line) {
                    samples.lock().expect("samples").push((now, facts));
                }
            }
            let _ = events.send(ServeEvent::Closed);
        });
        Served {
            child,
            progress,
            events: event_receiver,
        }
    }

    fn serve_ingesting(&mut self, stream: &Stream, clients: &Clients) -> Json {
        eprintln!("side_by_side: serving while ingesting {}", stream.name);
        let out = self.root.join("target/bench-out/serving-ingesting");
        let mut served = self.spawn_serving(stream, &out, true);
        let Some(address) = served.address() else {
            return json!({"error": "the run never said where it serves"});
        };
        let url = format!("{address}/v1/predict");
        let started = Instant::now();
        // the first progress line comes after a second: let the read loop get going
        std::thread::sleep(Duration::from_secs(2));
        let mut phases = Vec::new();
        let mut phase = |name: &str, load: &dyn Fn() -> Json| {
            let from = Instant::now();
            let result = load();
            let to = Instant::now();
            phases.push((name.to_owned(), from, to, result));
        };
        phase("none_before", &|| {
            std::thread::sleep(Duration::from_secs(clients.phase_secs));
            Json::Null
        });
        phase("hey", &|| clients.hey(&url));
        phase("wrk", &|| clients.wrk(&url));
        phase("none_after", &|| {
            std::thread::sleep(Duration::from_secs(clients.phase_secs));
            Json::Null
        });
        let status = wait_all(
            std::slice::from_mut(&mut served.child),
            Instant::now() + self.timeout,
        );
        let wall_secs = started.elapsed().as_secs_f64();
        let samples = served.progress.lock().expect("samples").clone();
        let mut rates = BTreeMap::new();
        let phases: Vec<Json> = phases
            .into_iter()
            .map(|(name, from, to, result)| {
                let rate = ingest_rate(&samples, from, to);
                rates.insert(name.clone(), rate);
                json!({"phase": name, "secs": (to - from).as_secs_f64(), "ingest_facts_per_sec": rate, "client": result})
            })
            .collect();
        let unloaded = match (rates["none_before"], rates["none_after"]) {
            (Some(before), Some(after)) => Some((before + after) / 2.0),
            (before, after) => before.or(after),
        };
        let kept = |name: &str| {
            rates[name]
                .zip(unloaded)
                .map(|(loaded, idle)| loaded / idle)
        };
        json!({
            "stream": stream.name,
            "exit": status.map(|_| "ok".to_owned()).unwrap_or_else(|error| error),
            "wall_secs": wall_secs,
            "phases": phases,
            "ingest_facts_per_sec_no_load": unloaded,
            "ingest_kept_under_hey": kept("hey"),
            "ingest_kept_under_wrk": kept("wrk"),
            "note": "a phase whose ingest rate is null ended after the input was read (the stream was too short)",
        })
    }

    fn serve_idle(&mut self, stream: &Stream, clients: &Clients) -> Json {
        eprintln!("side_by_side: serving idle, after reading {}", stream.name);
        let out = self.root.join("target/bench-out/serving-idle");
        let mut served = self.spawn_serving(stream, &out, false);
        let Some(address) = served.address() else {
            return json!({"error": "the run never said where it serves"});
        };
        let url = format!("{address}/v1/predict");
        if !served.wait_input_read(self.timeout) {
            let _ = served.child.kill();
            let _ = served.child.wait();
            return json!({"error": "the input was never read"});
        }
        let wrk = clients.wrk(&url);
        let hey = clients.hey(&url);
        // SIGTERM: the run stops serving and exits 0
        let _ = Command::new("kill")
            .args(["-TERM", &served.child.id().to_string()])
            .status();
        let status = wait_all(
            std::slice::from_mut(&mut served.child),
            Instant::now() + Duration::from_secs(60),
        );
        json!({
            "stream": stream.name,
            "exit": status.map(|_| "ok".to_owned()).unwrap_or_else(|error| error),
            "wrk": wrk,
            "hey": hey,
        })
    }
}

const QUERY: &str = r#"{"dog": "dog-17", "hashtags": ["ball", "park"]}"#;
const HEY_CONNECTIONS: u64 = 10;
const HEY_RATE: u64 = 5000;
const WRK_THREADS: u64 = 2;
const WRK_CONNECTIONS: u64 = 32;

enum ServeEvent {
    Address(String),
    InputRead,
    Closed,
}

struct Served {
    child: Child,
    progress: Arc<Mutex<Vec<(Instant, u64)>>>,
    events: mpsc::Receiver<ServeEvent>,
}

impl Served {
    fn address(&mut self) -> Option<String> {
        loop {
            match self.events.recv_timeout(Duration::from_secs(60)) {
                Ok(ServeEvent::Address(address)) => return Some(address),
                Ok(ServeEvent::InputRead) => continue,
                Ok(ServeEvent::Closed) | Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
    fn wait_input_read(&mut self, timeout: Duration) -> bool {
        matches!(self.events.recv_timeout(timeout), Ok(ServeEvent::InputRead))
    }
}

/// The facts count of a progress line: `[pooch] epoch E | F facts (R/s) | ...`.
fn progress_facts(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("[pooch] epoch ")?;
    let facts = rest.split(" | ").nth(1)?;
    facts.split(' ').next()?.parse().ok()
}

/// Facts per second between the first progress line at or after `from` and the last at or
/// before `to`; `None` with fewer than two lines in the window.
fn ingest_rate(samples: &[(Instant, u64)], from: Instant, to: Instant) -> Option<f64> {
    let inside: Vec<_> = samples
        .iter()
        .filter(|(at, _)| *at >= from && *at <= to)
        .collect();
    let (first, last) = (inside.first()?, inside.last()?);
    let secs = (last.0 - first.0).as_secs_f64();
    (inside.len() >= 2 && secs > 0.0).then(|| (last.1 - first.1) as f64 / secs)
}

struct Clients {
    hey: PathBuf,
    wrk: PathBuf,
    lua: PathBuf,
    phase_secs: u64,
}

impl Clients {
    /// `hey` at HEY_RATE q/s in total, open loop (`-q` is per connection).
    fn hey(&self, url: &str) -> Json {
        let output = Command::new(&self.hey)
            .args(["-z", &format!("{}s", self.phase_secs)])
            .args(["-c", &HEY_CONNECTIONS.to_string()])
            .args(["-q", &(HEY_RATE / HEY_CONNECTIONS).to_string()])
            .args(["-m", "POST", "-T", "application/json", "-d", QUERY, url])
            .output();
        match output {
            Ok(output) => parse_hey(&String::from_utf8_lossy(&output.stdout)),
            Err(error) => json!({"error": format!("run hey: {error}")}),
        }
    }

    /// `wrk` closed loop.
    fn wrk(&self, url: &str) -> Json {
        let output = Command::new(&self.wrk)
            .args([
                "-t",
                &WRK_THREADS.to_string(),
                "-c",
                &WRK_CONNECTIONS.to_string(),
            ])
            .args(["-d", &format!("{}s", self.phase_secs), "--latency", "-s"])
            .arg(&self.lua)
            .arg(url)
            .output();
        match output {
            Ok(output) => parse_wrk(&String::from_utf8_lossy(&output.stdout)),
            Err(error) => json!({"error": format!("run wrk: {error}")}),
        }
    }
}

/// hey's summary: requests/s, latency percentiles (seconds in its output), status codes.
fn parse_hey(text: &str) -> Json {
    let mut result = serde_json::Map::new();
    let mut statuses = serde_json::Map::new();
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            result.insert(
                "achieved_qps".into(),
                json!(rate.trim().parse::<f64>().ok()),
            );
        } else if let Some((percent, rest)) = line.split_once("% in ") {
            let secs: Option<f64> = rest.trim_end_matches(" secs").trim().parse().ok();
            if let (Ok(percent), Some(secs)) = (percent.parse::<u32>(), secs)
                && matches!(percent, 50 | 90 | 99)
            {
                result.insert(format!("p{percent}_us"), json!(secs * 1e6));
            }
        } else if let Some(slowest) = line.strip_prefix("Slowest:") {
            let secs: Option<f64> = slowest.trim().trim_end_matches(" secs").trim().parse().ok();
            result.insert("max_us".into(), json!(secs.map(|secs| secs * 1e6)));
        } else if let Some(rest) = line.strip_prefix('[')
            && let Some((code, count)) = rest.split_once(']')
        {
            let count: Option<u64> = count
                .trim()
                .trim_end_matches(" responses")
                .trim()
                .parse()
                .ok();
            statuses.insert(code.to_owned(), json!(count));
        }
    }
    if result.is_empty() {
        return json!({"error": "hey printed no summary", "output": text});
    }
    result.insert("status_codes".into(), Json::Object(statuses));
    Json::Object(result)
}

/// wrk's summary: requests/s, latency percentiles, errors.
fn parse_wrk(text: &str) -> Json {
    let mut result = serde_json::Map::new();
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            result.insert(
                "achieved_qps".into(),
                json!(rate.trim().parse::<f64>().ok()),
            );
        } else if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(percent), Some(value)) if percent.ends_with('%') => {
                    let key = format!("p{}_us", percent.trim_end_matches('%'));
                    result.insert(key, json!(wrk_duration_us(value)));
                }
                _ => in_distribution = false,
            }
        } else if line.starts_with("Non-2xx") || line.starts_with("Socket errors") {
            result.insert("errors".into(), json!(line));
        }
    }
    if result.is_empty() {
        return json!({"error": "wrk printed no summary", "output": text});
    }
    Json::Object(result)
}

/// `812.00us`, `1.23ms`, `2.00s` in microseconds.
fn wrk_duration_us(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(number) = text.strip_suffix("us") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix("ms") {
        (number, 1e3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1e6)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().ok().map(|value| value * scale)
}

/// The tool's path if it runs.
fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Waits for every child until `deadline`, killing them all if one fails or time runs out.
/// Returns each child's peak RSS in KiB, from `wait4`.
fn wait_all(children: &mut [Child], deadline: Instant) -> Result<Vec<u64>, String> {
    let mut peak = vec![None; children.len()];
    let mut failure = None;
    while peak.iter().any(Option::is_none) {
        let mut progressed = false;
        for (index, child) in children.iter().enumerate() {
            if peak[index].is_some() {
                continue;
            }
            if let Some((status, rss)) = try_wait4(child.id()) {
                peak[index] = Some(rss);
                progressed = true;
                if status != 0 && failure.is_none() {
                    failure = Some(format!("process {index} exited with wait status {status}"));
                }
            }
        }
        if failure.is_some() || Instant::now() > deadline {
            let reason = failure.take().unwrap_or_else(|| "timed out".into());
            for (index, child) in children.iter_mut().enumerate() {
                if peak[index].is_none() {
                    let _ = child.kill();
                    peak[index] = try_wait4_blocking(child.id()).map(|(_, rss)| rss);
                }
            }
            return Err(reason);
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(peak.into_iter().map(Option::unwrap_or_default).collect())
}

/// `wait4(pid, WNOHANG)`: the exit status and peak RSS (KiB) once the child has exited.
fn try_wait4(pid: u32) -> Option<(i32, u64)> {
    wait4(pid, libc::WNOHANG)
}

fn try_wait4_blocking(pid: u32) -> Option<(i32, u64)> {
    wait4(pid, 0)
}

fn wait4(pid: u32, options: i32) -> Option<(i32, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain data, fully written by wait4 when it returns the pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals; the pid is our own child, not yet reaped.
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, options, &mut usage) };
    (reaped == pid as i32).then_some((status, usage.ru_maxrss as u64))
}

/// The Python of `target/bench-venv` with VW importable, made from PyPI when missing.
fn vw_python(root: &Path) -> Option<PathBuf> {
    let venv = root.join("target/bench-venv");
    let python = venv.join("bin/python");
    let importable = |python: &Path| {
        Command::new(python)
            .args(["-c", "import vowpalwabbit, numpy"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if importable(&python) {
        return Some(python);
    }
    eprintln!(
        "side_by_side: installing vowpalwabbit and numpy from PyPI into {}",
        venv.display()
    );
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|status| status.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "vowpalwabbit==9.11.9", "numpy"])
            .status()
            .is_ok_and(|status| status.success());
    if made && importable(&python) {
        Some(python)
    } else {
        eprintln!(
            "side_by_side: VW skipped: could not make a virtual environment with vowpalwabbit \
             (needs python3 with venv and access to PyPI)"
        );
        None
    }
}

fn run_vw(python: &Path, root: &Path, kind: &str, path: &Path, work: &Path, runs: usize) -> Json {
    let output = Command::new(python)
        .arg(root.join("benches/vw_side_by_side.py"))
        .arg(kind)
        .arg(path)
        .arg(work)
        .arg(runs.to_string())
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            serde_json::from_str(stdout.lines().last().unwrap_or_default())
                .unwrap_or_else(|error| json!({"error": format!("VW's output: {error}")}))
        }
        Ok(output) => json!({"error": String::from_utf8_lossy(&output.stderr).trim().to_owned()}),
        Err(error) => json!({"error": format!("run VW: {error}")}),
    }
}

/// Peak RSS per stream and layout, and the long Sniffable stream against the default one.
fn memory_section(streams: &[Json]) -> Json {
    let mut rows = Vec::new();
    let mut sniffable: BTreeMap<String, Vec<(String, f64, f64)>> = BTreeMap::new();
    for stream in streams {
        let name = stream["stream"].as_str().unwrap_or_default();
        for layout in stream["pooch"].as_array().into_iter().flatten() {
            let Some(rss) = layout["peak_rss_mib"].as_f64() else {
                continue;
            };
            let layout_name = layout["layout"].as_str().unwrap_or_default().to_owned();
            rows.push(json!({
                "stream": name,
                "layout": layout_name,
                "facts": layout["facts"],
                "peak_rss_mib": rss,
                "peak_rss_mib_per_process": layout["peak_rss_mib_per_process"],
            }));
            if name.starts_with("sniffable-") {
                let facts = layout["facts"].as_f64().unwrap_or(0.0);
                sniffable
                    .entry(layout_name)
                    .or_default()
                    .push((name.to_owned(), facts, rss));
            }
        }
    }
    let growth: Vec<Json> = sniffable
        .into_iter()
        .filter_map(|(layout, runs)| {
            let short = runs.iter().find(|(name, _, _)| name == "sniffable-d28")?;
            let long = runs.iter().find(|(name, _, _)| name != "sniffable-d28")?;
            Some(json!({
                "layout": layout,
                "short": short.0, "long": long.0,
                "facts_ratio": long.1 / short.1,
                "rss_ratio": long.2 / short.2,
            }))
        })
        .collect();
    json!({"runs": rows, "sniffable_growth": growth})
}

fn print_table(streams: &[Json]) {
    println!();
    println!(
        "{:<16} {:<7} {:>8} {:>11} {:>10} {:>6} {:>6} {:>6} {:>8} {:>8} {:>7} {:>8}",
        "stream",
        "who",
        "secs",
        "facts/s",
        "ex/s",
        "x w1",
        "eff",
        "/VW",
        "logloss",
        "online",
        "dLL%",
        "RSS MiB"
    );
    for stream in streams {
        let name = stream["stream"].as_str().unwrap_or_default();
        let vw = &stream["vw"];
        if let Some(secs) = vw["learn_secs"].as_f64() {
            println!(
                "{:<16} {:<7} {:>8.2} {:>11} {:>10.0} {:>6} {:>6} {:>6} {:>8.4} {:>8} {:>7} {:>8}",
                name,
                "vw",
                secs,
                "-",
                vw["examples_per_sec"].as_f64().unwrap_or(0.0),
                "",
                "",
                "1.00",
                vw["logloss"].as_f64().unwrap_or(f64::NAN),
                "",
                "",
                ""
            );
        } else {
            println!("{name:<16} vw      {}", vw);
        }
        for layout in stream["pooch"].as_array().into_iter().flatten() {
            let who = layout["layout"].as_str().unwrap_or_default();
            if let Some(error) = layout.get("error") {
                println!("{name:<16} {who:<7} failed: {error}");
                continue;
            }
            let number = |key: &str, digits: usize| {
                layout[key]
                    .as_f64()
                    .map_or("-".to_owned(), |value| format!("{value:.digits$}"))
            };
            println!(
                "{:<16} {:<7} {:>8} {:>11} {:>10} {:>6} {:>6} {:>6} {:>8} {:>8} {:>7} {:>8}",
                name,
                who,
                number("median_secs", 2),
                number("facts_per_sec", 0),
                number("examples_per_sec", 0),
                number("speedup_vs_w1", 2),
                number("efficiency_per_worker", 2),
                number("speed_vs_vw", 2),
                number("logloss", 4),
                number("online_logloss", 4),
                number("online_logloss_vs_w1_pct", 2),
                number("peak_rss_mib", 0),
            );
        }
    }
    println!(
        "secs: median wall time; x w1: speed against 1 worker; eff: that per worker; /VW: speed against VW learn-only;\n\
         logloss: servable (progressive); online: the replicas'; dLL%: online logloss against 1 worker"
    );
}

fn print_memory(memory: &Json) {
    for row in memory["sniffable_growth"].as_array().into_iter().flatten() {
        println!(
            "memory {:<5} {} / {}: {:.1}x the facts, {:.2}x the peak RSS",
            row["layout"].as_str().unwrap_or_default(),
            row["long"].as_str().unwrap_or_default(),
            row["short"].as_str().unwrap_or_default(),
            row["facts_ratio"].as_f64().unwrap_or(0.0),
            row["rss_ratio"].as_f64().unwrap_or(0.0),
        );
    }
}

fn print_serving(serving: &Json) {
    if let Some(skipped) = serving.get("skipped") {
        println!("serving: skipped: {skipped}");
        return;
    }
    let client = |value: &Json| {
        let number = |key: &str| {
            value[key]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{v:.0}"))
        };
        format!(
            "{} q/s, p50 {} us, p99 {} us",
            number("achieved_qps"),
            number("p50_us"),
            number("p99_us")
        )
    };
    let ingesting = &serving["ingesting"];
    for phase in ingesting["phases"].as_array().into_iter().flatten() {
        let rate = phase["ingest_facts_per_sec"]
            .as_f64()
            .map_or("-".to_owned(), |rate| format!("{rate:.0}"));
        let load = if phase["client"].is_null() {
            "no load".to_owned()
        } else {
            client(&phase["client"])
        };
        println!(
            "serving while ingesting, {:<11} ingest {:>9} facts/s | {load}",
            phase["phase"].as_str().unwrap_or_default(),
            rate
        );
    }
    let idle = &serving["idle"];
    println!("serving idle, wrk closed loop: {}", client(&idle["wrk"]));
    println!(
        "serving idle, hey at {HEY_RATE} q/s: {}",
        client(&idle["hey"])
    );
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg").ok().map(|text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn git_commit(root: &Path) -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn iso_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn write_json(path: &Path, value: &Json) {
    std::fs::write(
        path,
        serde_json::to_string_pretty(value).expect("json") + "\n",
    )
    .expect("write results");
}
