//! Serving through a worker process's death: `pooch cluster -n 2 --http` on the default
//! Sniffable data (`data/sniffable`, generated if missing), queried at a bounded rate while
//! process 1 is `kill -9`ed and the cluster restarts.
//!
//! Measured, per client:
//! - from the kill to the supervisor seeing the death, to the restarted processes starting,
//!   and to the cluster ingesting again (the restarted process 0 writing its first complete
//!   epoch to `OUT/serving-feed.jsonl`);
//! - serving latency p50/p99/max over the whole load, across the failure, and failed requests.
//!
//! Clients: our own (`benches/loadgen`, open loop, every answer's version checked against the
//! supervisor's promotions), `hey` (rate-limited) and `wrk` (closed loop, as fast as answers
//! come: it has no rate limit) when installed (`apt-get install -y hey wrk`); a missing one is
//! skipped with a message.
//!
//! Run with `cargo bench --bench cluster_failover` (part of `./run.sh bench`). Settings:
//! `FAILOVER_RATE` (1000 q/s), `FAILOVER_SECS` (20 s of load), `FAILOVER_KILL_AFTER_SECS` (5),
//! `FAILOVER_WORKERS` (`-w`, 1). Figures are printed and written to
//! `target/bench-results/cluster_failover.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loadgen::LoadConfig;
use serde_json::{Value, json};

const POOCH: &str = env!("CARGO_BIN_EXE_pooch");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The default Sniffable data, generated once.
fn data() -> PathBuf {
    let data = root().join("data/sniffable");
    if !data.join("posts.csv").exists() {
        let status = Command::new(POOCH)
            .args(["generate", "sniffable", "--out"])
            .arg(&data)
            .status()
            .expect("pooch generate");
        assert!(status.success(), "pooch generate sniffable failed");
    }
    data
}

/// Two consecutive free loopback ports (the first).
fn free_port_base() -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("address").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

/// `pooch cluster -n 2 --http`, its serving address, and its output directory.
struct Cluster {
    child: Child,
    address: SocketAddr,
    out: PathBuf,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let out = root().join("target/bench-cluster").join(name);
        let _ = std::fs::remove_dir_all(&out);
        let data = data();
        let mut child = Command::new(POOCH)
            .args(["cluster", "-n", "2", "--port-base"])
            .arg(free_port_base().to_string())
            // serving goes on after the run completes, until SIGTERM: the load may outlast it
            .args(["--http", ":0", "--pipeline"])
            .arg(root().join("pipelines/sniffable.toml"))
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--quiet", "--", "-w"])
            .arg(env_or("FAILOVER_WORKERS", 1u32).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pooch cluster starts");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let address = rest.split_whitespace().next().unwrap_or_default();
                    let _ = sender.send(address.parse::<SocketAddr>().ok());
                }
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(60))
            .ok()
            .flatten()
            .expect("pooch cluster serves");
        Cluster {
            child,
            address,
            out,
        }
    }

    /// The log's events of one kind.
    fn events(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(self.out.join("cluster.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["event"] == kind)
            .collect()
    }

    /// Waits until `/readyz` says ready.
    fn wait_ready(&self) {
        let started = Instant::now();
        let url = format!("http://{}/readyz", self.address);
        while !reqwest::blocking::get(&url).is_ok_and(|answer| answer.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(120), "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills process 1 of the first attempt after `after`, then follows the recovery:
    /// milliseconds from the kill to the death seen, the restart and ingesting again.
    fn kill_and_follow(&self, after: Duration) -> Value {
        std::thread::sleep(after);
        let pid = self
            .events("start")
            .into_iter()
            .find(|event| event["attempt"] == 1 && event["process"] == 1)
            .and_then(|event| event["pid"].as_i64())
            .expect("process 1's pid");
        let feed = self.out.join("serving-feed.jsonl");
        let before = std::fs::metadata(&feed)
            .map(|meta| (meta.ino(), meta.len()))
            .ok();
        let killed_at = now_ms();
        // SAFETY: kill(2) on a process of the cluster this benchmark started
        unsafe {
            libc::kill(libc::pid_t::try_from(pid).expect("a pid"), libc::SIGKILL);
        }
        let started = Instant::now();
        // the restarted process 0 makes the feed anew (the inode number may be reused: it is
        // new once it is shorter than before, or another file), then writes a complete epoch
        let (mut renewed, mut ingesting_at) = (false, None);
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok(meta) = std::fs::metadata(&feed) {
                renewed |=
                    before.is_none_or(|(inode, len)| meta.ino() != inode || meta.len() < len);
                if renewed && std::fs::read_to_string(&feed).is_ok_and(|text| text.contains('\n')) {
                    ingesting_at = Some(now_ms());
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let since = |at: Option<u64>| at.map(|at| at.saturating_sub(killed_at));
        let first_at = |kind: &str| {
            self.events(kind)
                .first()
                .and_then(|event| event["at_ms"].as_u64())
        };
        let restart_at = self
            .events("start")
            .into_iter()
            .find(|event| event["attempt"] == 2)
            .and_then(|event| event["at_ms"].as_u64());
        json!({
            "death_seen_ms": since(first_at("death")),
            "restarted_ms": since(restart_at),
            "ingesting_again_ms": since(ingesting_at),
        })
    }

    /// Waits for the run to complete, stops the supervisor; the versions it promoted.
    fn finish(mut self) -> BTreeSet<u64> {
        let started = Instant::now();
        while self.events("completed").is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the run did not complete"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: kill(2) on the supervisor this benchmark started and has not reaped
        unsafe {
            libc::kill(
                libc::pid_t::try_from(self.child.id()).expect("a pid"),
                libc::SIGTERM,
            );
        }
        let status = self.child.wait().expect("pooch cluster");
        assert!(status.success(), "pooch cluster failed: {status}");
        std::fs::read_to_string(self.out.join("decisions.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|decision| decision["action"] == "promoted")
            .filter_map(|decision| decision["version"].as_u64())
            .collect()
    }
}

const QUERY: &str = r#"{"dog": "dog-17", "hashtags": ["ball"]}"#;

/// Our client: open loop at the rate, every answer's version recorded.
fn with_loadgen(rate: f64, secs: u64, kill_after: Duration) -> Value {
    let cluster = Cluster::start("loadgen");
    cluster.wait_ready();
    let config = LoadConfig {
        addr: cluster.address,
        path: "/v1/predict".into(),
        connections: 8,
        rate_per_sec: Some(rate),
        duration: Duration::from_secs(secs),
        warmup: Duration::ZERO,
        threads: 1,
    };
    let versions: Arc<Mutex<BTreeMap<Option<u64>, u64>>> = Arc::default();
    let seen = Arc::clone(&versions);
    let load = std::thread::spawn(move || {
        loadgen::run_inspecting(
            &config,
            |request| format!(r#"{{"dog": "dog-{}"}}"#, request % 5000).into_bytes(),
            move |answer| {
                let version = serde_json::from_slice::<Value>(answer)
                    .ok()
                    .and_then(|answer| answer["version"].as_u64());
                *seen.lock().expect("versions").entry(version).or_default() += 1;
            },
        )
        .expect("a load run")
    });
    let recovery = cluster.kill_and_follow(kill_after);
    let report = load.join().expect("the load");
    let promoted = cluster.finish();
    let versions = versions.lock().expect("versions").clone();
    let unpromoted: u64 = versions
        .iter()
        .filter(|(version, _)| !version.is_some_and(|version| promoted.contains(&version)))
        .map(|(_, count)| count)
        .sum();
    println!(
        "loadgen: {:.0} q/s, {} ok, {} non-2xx, {} errors, {} unsent, {unpromoted} naming no promoted version | p50 {} us p99 {} us max {} us | recovery {recovery}",
        report.achieved_per_sec,
        report.ok,
        report.non_2xx,
        report.errors,
        report.unsent,
        report.p50_us,
        report.p99_us,
        report.max_us
    );
    json!({
        "client": "loadgen (open loop)",
        "rate_per_sec": rate,
        "achieved_per_sec": report.achieved_per_sec,
        "ok": report.ok,
        "non_2xx": report.non_2xx,
        "errors": report.errors,
        "unsent": report.unsent,
        "answers_naming_no_promoted_version": unpromoted,
        "p50_us": report.p50_us,
        "p99_us": report.p99_us,
        "p999_us": report.p999_us,
        "max_us": report.max_us,
        "recovery": recovery,
    })
}

/// Whether `program` can be run.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// An outside client's run across a failure: its command, its output, the recovery.
fn with_outside_client(
    name: &str,
    command: impl FnOnce(SocketAddr) -> Command,
    kill_after: Duration,
) -> Option<(String, Value)> {
    if !installed(name) {
        println!("{name}: not installed, skipped (apt-get install -y {name})");
        return None;
    }
    let cluster = Cluster::start(name);
    cluster.wait_ready();
    let mut command = command(cluster.address);
    let client = std::thread::spawn(move || command.output().expect("the client runs"));
    let recovery = cluster.kill_and_follow(kill_after);
    let output = client.join().expect("the client");
    cluster.finish();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    Some((text, recovery))
}

/// `hey` at the rate (8 workers, each at rate/8), POSTing the query.
fn with_hey(rate: f64, secs: u64, kill_after: Duration) -> Option<Value> {
    let per_worker = (rate / 8.0).round().max(1.0);
    let (text, recovery) = with_outside_client(
        "hey",
        |address| {
            let mut command = Command::new("hey");
            command
                .args(["-z", &format!("{secs}s"), "-c", "8", "-q"])
                .arg(per_worker.to_string())
                .args(["-m", "POST", "-T", "application/json", "-d", QUERY])
                .arg(format!("http://{address}/v1/predict"));
            command
        },
        kill_after,
    )?;
    let figure = |label: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.trim_start().starts_with(label))
            .and_then(|line| {
                line.split_whitespace()
                    .find_map(|word| word.parse::<f64>().ok())
            })
    };
    let percentile = |p: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.trim_start().starts_with(&format!("{p}% in")))
            .and_then(|line| line.split_whitespace().nth(2))
            .and_then(|secs| secs.parse::<f64>().ok())
    };
    let statuses: Vec<String> = text
        .lines()
        .skip_while(|line| !line.contains("Status code distribution"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.trim().to_owned())
        .collect();
    let errors: Vec<String> = text
        .lines()
        .skip_while(|line| !line.contains("Error distribution"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .map(|line| line.trim().to_owned())
        .collect();
    let us = |secs: Option<f64>| secs.map(|secs| (secs * 1e6).round() as u64);
    let result = json!({
        "client": "hey (rate-limited)",
        "rate_per_sec": per_worker * 8.0,
        "achieved_per_sec": figure("Requests/sec:"),
        "p50_us": us(percentile("50")),
        "p99_us": us(percentile("99")),
        "max_us": us(figure("Slowest:")),
        "status_codes": statuses,
        "errors": errors,
        "recovery": recovery,
    });
    println!("hey: {result}");
    Some(result)
}

/// `wrk`, closed loop (no rate limit), 8 connections, POSTing the query.
fn with_wrk(secs: u64, kill_after: Duration) -> Option<Value> {
    let script = root().join("target/bench-cluster/post.lua");
    let _ = std::fs::create_dir_all(script.parent().expect("a parent"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{QUERY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        ),
    )
    .expect("the wrk script");
    let (text, recovery) = with_outside_client(
        "wrk",
        |address| {
            let mut command = Command::new("wrk");
            command
                .args([
                    "-t",
                    "1",
                    "-c",
                    "8",
                    "-d",
                    &format!("{secs}s"),
                    "--latency",
                    "-s",
                ])
                .arg(&script)
                .arg(format!("http://{address}/v1/predict"));
            command
        },
        kill_after,
    )?;
    // wrk prints "50%  1.23ms"; "Latency   avg   stdev   max   +/- stdev"
    let to_us = |word: &str| -> Option<u64> {
        let (number, unit) = word.split_at(word.find(|c: char| c.is_alphabetic())?);
        let value: f64 = number.parse().ok()?;
        let factor = match unit {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" => 60e6,
            _ => return None,
        };
        Some((value * factor).round() as u64)
    };
    let percentile = |p: &str| -> Option<u64> {
        text.lines()
            .find(|line| line.trim_start().starts_with(&format!("{p}%")))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(to_us)
    };
    let max = text
        .lines()
        .find(|line| line.trim_start().starts_with("Latency"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(to_us);
    let requests_per_sec = text
        .lines()
        .find(|line| line.starts_with("Requests/sec:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse::<f64>().ok());
    let errors: Vec<String> = text
        .lines()
        .filter(|line| line.contains("Socket errors") || line.contains("Non-2xx"))
        .map(|line| line.trim().to_owned())
        .collect();
    let result = json!({
        "client": "wrk (closed loop)",
        "achieved_per_sec": requests_per_sec,
        "p50_us": percentile("50"),
        "p99_us": percentile("99"),
        "max_us": max,
        "errors": errors,
        "recovery": recovery,
    });
    println!("wrk: {result}");
    Some(result)
}

fn main() {
    let rate = env_or("FAILOVER_RATE", 1000.0);
    let secs = env_or("FAILOVER_SECS", 20u64);
    let kill_after = Duration::from_secs(env_or("FAILOVER_KILL_AFTER_SECS", 5u64));
    println!(
        "cluster failover: pooch cluster -n 2 -w {} --http on data/sniffable, {rate} q/s for {secs} s, process 1 killed after {} s",
        env_or("FAILOVER_WORKERS", 1u32),
        kill_after.as_secs()
    );
    let mut results = vec![with_loadgen(rate, secs, kill_after)];
    results.extend(with_hey(rate, secs, kill_after));
    results.extend(with_wrk(secs, kill_after));
    let dir = root().join("target/bench-results");
    std::fs::create_dir_all(&dir).expect("target/bench-results");
    let path = dir.join("cluster_failover.json");
    let text = serde_json::to_string_pretty(&json!({ "runs": results })).expect("JSON");
    std::fs::write(&path, text + "\n").expect("the results");
    println!("written to {}", path.display());
}
