//! Clusters of `pooch run` processes on loopback: `--http` on two processes, a dead, stopped
//! or missing peer, SIGTERM in every state, and `pooch cluster`'s supervision and serving
//! through a worker process's death.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub mod support;
use support::{POOCH, check, generate, json_lines, run, sniffable_spec, sorted_lines, summary};

/// A process started with its stderr collected as it comes.
struct Process {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Process {
    fn start(command: &mut Command) -> Process {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pooch starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr");
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = collected.lock().expect("stderr");
                text.push_str(&line);
                text.push('\n');
            }
        });
        Process { child, stderr }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child this test started and has not reaped
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// Waits up to `bound` for the process to exit; kills it and fails the test otherwise.
    fn wait_within(&mut self, bound: Duration, what: &str) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                // let the stderr thread catch up
                std::thread::sleep(Duration::from_millis(100));
                return (status, started.elapsed());
            }
            if started.elapsed() > bound {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{what}: still running after {bound:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until stderr contains `text`.
    fn wait_for_line(&mut self, text: &str, bound: Duration) -> String {
        let started = Instant::now();
        loop {
            let stderr = self.stderr();
            if let Some(line) = stderr.lines().find(|line| line.contains(text)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("exited ({status}) before saying `{text}`:\n{stderr}");
            }
            assert!(
                started.elapsed() < bound,
                "no `{text}` within {bound:?}:\n{stderr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Small Sniffable data in `dir/data` (a run of a few seconds at most).
fn small_data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    generate(&data, 400, 6);
    data
}

/// Free loopback ports for `count` processes, in a hostfile `dir/hosts`.
fn hostfile(dir: &Path, count: usize) -> (String, Vec<String>) {
    let listeners: Vec<_> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addresses: Vec<String> = listeners
        .iter()
        .map(|listener| listener.local_addr().expect("address").to_string())
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, addresses.join("\n") + "\n").expect("hostfile");
    (path.to_str().expect("utf-8").to_owned(), addresses)
}

/// `pooch run` on the small data as process `index` of two.
fn cluster_process(data: &Path, out: &Path, hosts: &str, index: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(POOCH);
    command
        .args(["run", "--quiet", "--pipeline"])
        .arg(sniffable_spec())
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .args(["--", "-n", "2", "-p", &index.to_string(), "-h", hosts]);
    command
}

/// Both processes of a two-process run that follows its input (it runs until stopped).
fn following_pair(dir: &Path, data: &Path, extra: &[&str]) -> (Process, Process, Vec<String>) {
    let (hosts, addresses) = hostfile(dir, 2);
    let out = dir.join("out");
    let mut args = vec!["--follow"];
    args.extend_from_slice(extra);
    let second = Process::start(&mut cluster_process(data, &out, &hosts, 1, &args));
    let mut first = Process::start(&mut cluster_process(data, &out, &hosts, 0, &args));
    // process 0 writes the epochs' metrics once the cluster runs
    let metrics = out.join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::metadata(&metrics).map_or(0, |meta| meta.len()) == 0 {
        if let Some(status) = first.child.try_wait().expect("wait") {
            panic!("process 0 exited ({status}):\n{}", first.stderr());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the cluster did not start:\n{}",
            first.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (first, second, addresses)
}

/// The survivor's one line: status 1, the peer and its address named, no panic.
fn assert_lost(status: ExitStatus, stderr: &str, peer: usize, address: &str, seen: &str) {
    assert_eq!(status.code(), Some(1), "{stderr}");
    let expected = format!("process {peer} at {address}");
    assert!(
        stderr.contains(&expected) && stderr.contains(seen),
        "expected `{expected}` and `{seen}`:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "a panic, not one line:\n{stderr}"
    );
}

#[test]
fn http_on_two_processes_serves_and_completes_with_the_same_digests() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let alone = dir.path().join("alone");
    check(&run(
        &sniffable_spec(),
        &alone,
        &["--data", data.to_str().expect("utf-8")],
        &["-w", "2"],
    ));

    let (hosts, _) = hostfile(dir.path(), 2);
    let out = dir.path().join("served");
    let mut second = Process::start(&mut cluster_process(
        &data,
        &out,
        &hosts,
        1,
        &["--http", ":0"],
    ));
    let mut first = Process::start(&mut cluster_process(
        &data,
        &out,
        &hosts,
        0,
        &["--http", ":0"],
    ));
    let line = first.wait_for_line("still serving on http://", Duration::from_secs(120));
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address");
    let answer: Json = reqwest::blocking::Client::new()
        .post(format!("http://{address}/v1/predict"))
        .body(r#"{"dog": "dog-17", "hashtags": ["ball"]}"#)
        .send()
        .expect("an answer")
        .json()
        .expect("JSON");
    assert!(answer["version"].as_u64().is_some(), "{answer}");
    assert!(answer["features_epoch"].as_u64().is_some(), "{answer}");
    let (status, _) = second.wait_within(Duration::from_secs(30), "process 1");
    assert!(status.success(), "{}", second.stderr());
    first.signal(libc::SIGTERM);
    let (status, _) = first.wait_within(Duration::from_secs(30), "process 0");
    assert!(status.success(), "{}", first.stderr());
    let (alone, served) = (summary(&alone), summary(&out));
    assert_eq!(alone["facts_digest"], served["facts_digest"]);
    assert_eq!(alone["model_digest"], served["model_digest"]);
}

#[test]
fn a_killed_process_makes_each_survivor_exit_within_10_s_naming_it() {
    for victim in [0usize, 1] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = small_data(dir.path());
        let (first, second, addresses) = following_pair(dir.path(), &data, &[]);
        let (mut survivor, killed) = if victim == 0 {
            (second, first)
        } else {
            (first, second)
        };
        killed.signal(libc::SIGKILL);
        let (status, took) = survivor.wait_within(Duration::from_secs(10), "the survivor");
        assert_lost(
            status,
            &survivor.stderr(),
            victim,
            &addresses[victim],
            "was lost",
        );
        assert!(took <= Duration::from_secs(10), "{took:?}");
    }
}

#[test]
fn a_stopped_process_is_detected_within_the_hang_timeout() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let (mut first, second, addresses) =
        following_pair(dir.path(), &data, &["--hang-timeout", "5"]);
    second.signal(libc::SIGSTOP);
    let (status, took) = first.wait_within(Duration::from_secs(30), "process 0");
    assert_lost(
        status,
        &first.stderr(),
        1,
        &addresses[1],
        "is not responding",
    );
    assert!(took >= Duration::from_secs(4), "detected early: {took:?}");
    second.signal(libc::SIGKILL);
}

#[test]
fn a_missing_process_aborts_within_the_peer_timeout_naming_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let (hosts, addresses) = hostfile(dir.path(), 2);
    let out = dir.path().join("out");
    let mut alone = Process::start(&mut cluster_process(
        &data,
        &out,
        &hosts,
        0,
        &["--peer-timeout", "2"],
    ));
    let (status, took) = alone.wait_within(Duration::from_secs(10), "process 0");
    let stderr = alone.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "process 1 at {} did not join within 2 s",
            addresses[1]
        )),
        "{stderr}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}");
}

#[test]
fn sigterm_while_waiting_for_peers_ends_the_wait() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let (hosts, _) = hostfile(dir.path(), 2);
    let out = dir.path().join("out");
    let mut alone = Process::start(&mut cluster_process(&data, &out, &hosts, 1, &[]));
    std::thread::sleep(Duration::from_millis(700));
    alone.signal(libc::SIGTERM);
    let (status, _) = alone.wait_within(Duration::from_secs(5), "a waiting process");
    let stderr = alone.stderr();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("stopped by a signal while waiting"),
        "{stderr}"
    );
}

#[test]
fn sigterm_with_a_peer_stopped_ends_within_seconds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let (mut first, second, addresses) = following_pair(dir.path(), &data, &[]);
    second.signal(libc::SIGSTOP);
    first.signal(libc::SIGTERM);
    let (status, took) = first.wait_within(Duration::from_secs(10), "process 0");
    assert_lost(
        status,
        &first.stderr(),
        1,
        &addresses[1],
        "stopping on a signal",
    );
    assert!(took <= Duration::from_secs(10), "{took:?}");
    second.signal(libc::SIGKILL);
}

#[test]
fn sigterm_to_either_process_drains_both_cleanly() {
    for signalled in [0usize, 1] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let data = small_data(dir.path());
        let (mut first, mut second, _) = following_pair(dir.path(), &data, &[]);
        if signalled == 0 {
            first.signal(libc::SIGTERM);
        } else {
            second.signal(libc::SIGTERM);
        }
        let (status, _) = first.wait_within(Duration::from_secs(30), "process 0");
        assert!(status.success(), "{}", first.stderr());
        let (status, _) = second.wait_within(Duration::from_secs(30), "process 1");
        assert!(status.success(), "{}", second.stderr());
        let summary = summary(&dir.path().join("out"));
        assert_eq!(summary["stopped_by_signal"], true);
    }
}

#[test]
fn sigterm_again_while_draining_still_ends_both_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let (mut first, mut second, _) = following_pair(dir.path(), &data, &[]);
    first.signal(libc::SIGTERM);
    // both are draining now; more signals, to each, change nothing
    std::thread::sleep(Duration::from_millis(50));
    second.signal(libc::SIGTERM);
    first.signal(libc::SIGTERM);
    let (status, _) = first.wait_within(Duration::from_secs(30), "process 0");
    assert!(status.success(), "{}", first.stderr());
    let (status, _) = second.wait_within(Duration::from_secs(30), "process 1");
    assert!(status.success(), "{}", second.stderr());
    assert_eq!(summary(&dir.path().join("out"))["stopped_by_signal"], true);
}

/// `pooch cluster -n 2` over the small data, training slowed so that a run lasts seconds.
fn supervised(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(POOCH);
    let queries = data.join("queries.jsonl");
    command
        .args(["cluster", "-n", "2", "--port-base"])
        .arg(free_port_base().to_string())
        .args(extra)
        .args(["--pipeline"])
        .arg(sniffable_spec())
        .arg("--data")
        .arg(data)
        .arg("--queries")
        .arg(queries)
        .arg("--out")
        .arg(out)
        .args(["--quiet", "--debug-slow-training-ms", "15", "--", "-w", "1"]);
    command
}

/// Two consecutive free ports (the first of them).
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

/// The supervisor log's events of one kind.
fn events(out: &Path, kind: &str) -> Vec<Json> {
    let path = out.join("cluster.log");
    if !path.exists() {
        return Vec::new();
    }
    json_lines(&path)
        .into_iter()
        .filter(|event| event["event"] == kind)
        .collect()
}

/// Waits for the first attempt's processes to start, and a little more, and returns the
/// PID of process `index`.
fn started_pid(out: &Path, index: usize) -> i32 {
    let started = Instant::now();
    loop {
        if let Some(start) = events(out, "start")
            .into_iter()
            .find(|event| event["process"] == index)
        {
            return i32::try_from(start["pid"].as_i64().expect("a pid")).expect("a pid");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the run has published something (its reading is under way).
fn wait_for_versions(out: &Path) {
    let started = Instant::now();
    let store = out.join("snapshots/pooch-predictor");
    while std::fs::read_dir(&store).map_or(0, |dir| dir.count()) < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "no versions");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn under_pooch_cluster_a_killed_process_is_restarted_and_the_run_ends_as_if_uninterrupted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let uninterrupted = dir.path().join("uninterrupted");
    let queries = data.join("queries.jsonl");
    check(&run(
        &sniffable_spec(),
        &uninterrupted,
        &[
            "--data",
            data.to_str().expect("utf-8"),
            "--queries",
            queries.to_str().expect("utf-8"),
        ],
        &["-w", "2"],
    ));
    for victim in [0usize, 1] {
        let out = dir.path().join(format!("killed-{victim}"));
        let mut cluster = Process::start(&mut supervised(&data, &out, &[]));
        let pid = started_pid(&out, victim);
        wait_for_versions(&out);
        // SAFETY: kill(2) on a process of the cluster this test started
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        let (status, _) = cluster.wait_within(Duration::from_secs(120), "pooch cluster");
        let stderr = cluster.stderr();
        assert!(status.success(), "{stderr}");
        let deaths = events(&out, "death");
        assert!(
            deaths
                .iter()
                .any(|death| death["process"] == victim && death["pid"] == pid),
            "{deaths:?}"
        );
        assert_eq!(events(&out, "restart").len(), 1, "{stderr}");
        assert_eq!(events(&out, "completed").len(), 1, "{stderr}");
        let (expected, got) = (summary(&uninterrupted), summary(&out));
        for field in ["facts_digest", "model_digest", "logloss", "model_versions"] {
            assert_eq!(expected[field], got[field], "{field}");
        }
        assert_eq!(
            sorted_lines(&uninterrupted.join("answers.jsonl")),
            sorted_lines(&out.join("answers.jsonl"))
        );
    }
}

#[test]
fn under_pooch_cluster_a_stopped_process_is_detected_within_30_s_and_the_cluster_restarted() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let out = dir.path().join("out");
    // the default hang timeout (10 s)
    let mut cluster = Process::start(&mut supervised(&data, &out, &[]));
    let pid = started_pid(&out, 1);
    wait_for_versions(&out);
    // SAFETY: kill(2) on a process of the cluster this test started
    unsafe {
        libc::kill(pid, libc::SIGSTOP);
    }
    let stopped = Instant::now();
    while events(&out, "restart").is_empty() {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "no restart within 30 s of a SIGSTOP:\n{}",
            cluster.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // process 0 saw it silent and ended; the supervisor killed the stopped one
    let deaths = events(&out, "death");
    assert!(
        deaths.iter().any(|death| death["process"] == 0),
        "{deaths:?}"
    );
    let killed = events(&out, "killed");
    assert!(
        killed
            .iter()
            .any(|kill| kill["process"] == 1 && kill["pid"] == pid),
        "{killed:?}"
    );
    assert!(
        cluster.stderr().contains("is not responding"),
        "{}",
        cluster.stderr()
    );
    let (status, _) = cluster.wait_within(Duration::from_secs(120), "pooch cluster");
    assert!(status.success(), "{}", cluster.stderr());
    assert_eq!(events(&out, "completed").len(), 1);
}

#[test]
fn under_pooch_cluster_a_stalled_attempt_is_killed_and_the_cluster_restarted() {
    // every process stopped: alive, silent to no one, and no epoch completes
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let out = dir.path().join("out");
    let mut cluster = Process::start(&mut supervised(&data, &out, &["--stall-timeout", "3"]));
    let pids = [started_pid(&out, 0), started_pid(&out, 1)];
    wait_for_versions(&out);
    for pid in pids {
        // SAFETY: kill(2) on a process of the cluster this test started
        unsafe {
            libc::kill(pid, libc::SIGSTOP);
        }
    }
    let stopped = Instant::now();
    while events(&out, "restart").is_empty() {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "no restart within 20 s of a stall:\n{}",
            cluster.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    let stalled = events(&out, "stalled");
    assert_eq!(stalled.len(), 1, "{}", cluster.stderr());
    assert_eq!(events(&out, "killed").len(), 2, "{}", cluster.stderr());
    let (status, _) = cluster.wait_within(Duration::from_secs(120), "pooch cluster");
    assert!(status.success(), "{}", cluster.stderr());
    assert_eq!(events(&out, "completed").len(), 1);
}

#[test]
fn pooch_cluster_gives_up_when_the_restart_budget_is_spent() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let out = dir.path().join("out");
    let mut cluster = Process::start(&mut supervised(&data, &out, &["--max-restarts", "0"]));
    let pid = started_pid(&out, 1);
    wait_for_versions(&out);
    // SAFETY: kill(2) on a process of the cluster this test started
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let (status, _) = cluster.wait_within(Duration::from_secs(60), "pooch cluster");
    let stderr = cluster.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("gave up"), "{stderr}");
    assert_eq!(events(&out, "give-up").len(), 1);
    assert!(events(&out, "restart").is_empty());
}

#[test]
fn sigterm_to_pooch_cluster_stops_every_process_cleanly() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let out = dir.path().join("out");
    let mut cluster = Process::start(&mut supervised(&data, &out, &[]));
    let pids = [started_pid(&out, 0), started_pid(&out, 1)];
    wait_for_versions(&out);
    cluster.signal(libc::SIGTERM);
    let (status, _) = cluster.wait_within(Duration::from_secs(40), "pooch cluster");
    let stderr = cluster.stderr();
    assert!(status.success(), "{stderr}");
    assert_eq!(events(&out, "stopped").len(), 1, "{stderr}");
    assert!(events(&out, "killed").is_empty(), "{stderr}");
    assert_eq!(summary(&out)["stopped_by_signal"], true);
    for pid in pids {
        // SAFETY: signal 0 only asks whether the process exists
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "process {pid} still runs");
    }
}

/// Polls `/readyz` every 20 ms from the first time it is ready until told to stop, counting
/// the polls that were not ready (or not answered) after that.
struct ReadyWatch {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl ReadyWatch {
    /// Waits (up to 60 s) for `/readyz` to be ready, then starts watching it.
    fn start(address: std::net::SocketAddr) -> ReadyWatch {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a client");
        let url = format!("http://{address}/readyz");
        let ready = move || {
            client
                .get(&url)
                .send()
                .is_ok_and(|answer| answer.status().is_success())
        };
        let started = Instant::now();
        while !ready() {
            assert!(started.elapsed() < Duration::from_secs(60), "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let (mut polls, mut not_ready) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                polls += 1;
                not_ready += u64::from(!ready());
                std::thread::sleep(Duration::from_millis(20));
            }
            (polls, not_ready)
        });
        ReadyWatch { done, thread }
    }

    /// Stops watching: (polls, polls not ready).
    fn finish(self) -> (u64, u64) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the readyz watch")
    }
}

/// The versions the supervisor promoted, from `OUT/decisions.jsonl`.
fn promoted_versions(out: &Path) -> std::collections::BTreeSet<u64> {
    json_lines(&out.join("decisions.jsonl"))
        .iter()
        .filter(|decision| decision["action"] == "promoted")
        .filter_map(|decision| decision["version"].as_u64())
        .collect()
}

#[test]
fn the_supervisor_serves_under_load_through_a_worker_death() {
    use loadgen::LoadConfig;
    use std::collections::BTreeMap;
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let out = dir.path().join("out");
    let mut cluster = Process::start(&mut supervised(
        &data,
        &out,
        &["--http", ":0", "--exit-after-input"],
    ));
    let line = cluster.wait_for_line("serving on http://", Duration::from_secs(30));
    let address: std::net::SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .parse()
        .expect("an address");
    let pid = started_pid(&out, 1);
    // ready once the first version is on disk; from then on it must stay ready
    let readiness = ReadyWatch::start(address);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: kill(2) on a process of the cluster this test started
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    });
    let config = LoadConfig {
        addr: address,
        path: "/v1/predict".into(),
        connections: 8,
        rate_per_sec: Some(1000.0),
        duration: Duration::from_secs(3),
        warmup: Duration::ZERO,
        threads: 1,
    };
    // every answer's version (or `None`, for an answer that names none), counted
    let versions: Arc<Mutex<BTreeMap<Option<u64>, u64>>> = Arc::default();
    let seen = Arc::clone(&versions);
    let report = loadgen::run_inspecting(
        &config,
        |request| {
            format!(
                r#"{{"dog": "dog-{}", "hashtags": ["ball"]}}"#,
                request % 400
            )
            .into_bytes()
        },
        move |answer| {
            let version = serde_json::from_slice::<Json>(answer)
                .ok()
                .and_then(|answer| answer["version"].as_u64());
            *seen.lock().expect("versions").entry(version).or_default() += 1;
        },
    )
    .expect("load");
    killer.join().expect("killer");
    let (polls, not_ready) = readiness.finish();
    assert_eq!((report.errors, report.non_2xx), (0, 0), "{report:?}");
    // open loop at 1,000 q/s for 3 s: on a loaded machine some requests may go unsent, but
    // none that was sent failed
    assert!(
        report.ok + report.unsent >= 2500 && report.ok >= 1000,
        "{report:?}"
    );
    assert_eq!(
        not_ready, 0,
        "/readyz not ready {not_ready} of {polls} times"
    );
    let metrics = reqwest::blocking::get(format!("http://{address}/metrics"))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("pooch_cluster_process_deaths_total 1")
            || metrics.contains("pooch_cluster_process_deaths_total 2"),
        "{metrics}"
    );
    let (status, _) = cluster.wait_within(Duration::from_secs(120), "pooch cluster");
    assert!(status.success(), "{}", cluster.stderr());
    assert_eq!(events(&out, "restart").len(), 1);
    // every answer named a version, and the supervisor promoted each one named
    let versions = versions.lock().expect("versions").clone();
    let answered: u64 = versions.values().sum();
    assert_eq!(answered, report.ok, "{versions:?}");
    let promoted = promoted_versions(&out);
    for version in versions.keys() {
        assert!(
            version.is_some_and(|version| promoted.contains(&version)),
            "answers named {version:?}, not promoted ({promoted:?}); all: {versions:?}"
        );
    }
}

/// The address a server's "serving on http://ADDR" line names.
fn served_address(line: &str) -> std::net::SocketAddr {
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address")
        .parse()
        .expect("an address")
}

/// The answer to one query, as (version, features_epoch, probability).
fn ask(address: std::net::SocketAddr) -> Option<(u64, u64, String)> {
    let answer: Json = reqwest::blocking::Client::new()
        .post(format!("http://{address}/v1/predict"))
        .body(r#"{"dog": "dog-17", "hashtags": ["ball"]}"#)
        .send()
        .ok()?
        .json()
        .ok()?;
    Some((
        answer["version"].as_u64()?,
        answer["features_epoch"].as_u64()?,
        answer["probability"].to_string(),
    ))
}

#[test]
fn replicas_following_a_cluster_serve_and_agree_with_its_supervisor() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = small_data(dir.path());
    let out = dir.path().join("out");
    let mut cluster = Process::start(&mut supervised(&data, &out, &["--http", ":0"]));
    let supervisor =
        served_address(&cluster.wait_for_line("serving on http://", Duration::from_secs(30)));
    let mut replicas: Vec<Process> = (0..2)
        .map(|_| {
            Process::start(
                Command::new(POOCH)
                    .arg("serve")
                    .arg(&out)
                    .arg("--pipeline")
                    .arg(sniffable_spec())
                    .arg("--data")
                    .arg(&data)
                    .args(["--http", ":0"]),
            )
        })
        .collect();
    let mut addresses = vec![supervisor];
    for replica in &mut replicas {
        let line = replica.wait_for_line("serving on http://", Duration::from_secs(30));
        addresses.push(served_address(&line));
    }
    // each serves while the run goes on (ready once a version is stored)
    for &address in &addresses {
        let (_, not_ready) = ReadyWatch::start(address).finish();
        assert_eq!(not_ready, 0);
    }
    cluster.wait_for_line("the run is complete", Duration::from_secs(120));
    // once caught up, every server answers alike: same version, features and probability
    let started = Instant::now();
    loop {
        let answers: Vec<_> = addresses.iter().map(|&address| ask(address)).collect();
        if answers[0].is_some() && answers.iter().all(|answer| *answer == answers[0]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the servers disagree: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // the replicas wrote their own decisions, not the supervisor's file
    let own = std::fs::read_dir(out.join("replicas"))
        .expect("OUT/replicas")
        .count();
    assert_eq!(own, 2);
    for replica in &mut replicas {
        replica.signal(libc::SIGTERM);
        let (status, _) = replica.wait_within(Duration::from_secs(10), "pooch serve");
        assert!(status.success(), "{}", replica.stderr());
    }
    cluster.signal(libc::SIGTERM);
    let (status, _) = cluster.wait_within(Duration::from_secs(10), "pooch cluster");
    assert!(status.success(), "{}", cluster.stderr());
}

#[test]
fn pooch_serve_refuses_a_directory_that_is_not_there() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let missing = dir.path().join("nothing");
    let output = Command::new(POOCH)
        .arg("serve")
        .arg(&missing)
        .arg("--pipeline")
        .arg(sniffable_spec())
        .args(["--http", ":0"])
        .output()
        .expect("pooch starts");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("no such directory"),
        "{stderr}"
    );
}
