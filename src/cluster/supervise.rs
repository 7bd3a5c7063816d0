//! `pooch cluster`: launches the processes of a run on this machine and supervises them.
//!
//! - It starts `pooch run` N times (`-n N -p i -h OUT/cluster.hosts`), and waits.
//! - When a process dies (exits with a failure or is killed), it stops the others by PID
//!   (SIGKILL: the attempt is lost anyway, and their own detection would take up to the hang
//!   timeout) and starts the cluster again. A restart replays the input from the start: the
//!   run is deterministic, so its results are those of a run never interrupted. Every attempt
//!   numbers its versions from the same first version, so the answers name the same ones.
//! - Restarts and resume ([`StartFrom`]): nothing here removes or truncates anything in the
//!   output directory. When `pooch run` resumes from `OUT/checkpoints` on its own (it knows
//!   `--fresh`), the first attempt passes `--fresh` (a run starts clean, as it always has) and a
//!   restart passes nothing that defeats the resume: it continues from the newest checkpoint
//!   the manifest lists, numbering versions from the checkpoint's count, or from the start of
//!   the input when there is none yet.
//! - A stall watchdog ([`StallWatch`]) covers what the processes' heartbeat cannot see: a
//!   cluster whose processes are all alive but whose dataflow completes no epoch (every
//!   process stopped or hung, a livelock, an operator that never returns). Process 0 writes
//!   each complete epoch to the serving feed; when it has not changed for `stall_timeout`,
//!   the attempt is stalled: its processes are killed and the cluster restarts. It is off for
//!   a run that follows its input (`--follow`), which may wait for data as long as it likes.
//! - There is a restart budget: more than `max_restarts` restarts within `restart_window`,
//!   and it gives up (status 1).
//! - Every start, death, restart, stop, completion and give-up is a JSON line in
//!   `OUT/cluster.log`, and a counter in [`ClusterCounters`] (the supervisor's `/metrics`).
//! - A stop (SIGINT, SIGTERM) is passed to every process as SIGTERM, so the run ends cleanly
//!   as a single run does; a process still running after `stop_grace` is killed.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// What `pooch cluster` needs to run the processes.
#[derive(Clone, Debug)]
pub struct SuperviseOptions {
    /// The `pooch` binary.
    pub program: PathBuf,
    /// How many processes.
    pub processes: usize,
    /// The processes' addresses, one per process: from a hostfile, or loopback ports.
    pub addresses: Vec<String>,
    /// `pooch run`'s arguments before timely's flags.
    pub run_args: Vec<String>,
    /// More of them, for process 0 only.
    pub first_process_args: Vec<String>,
    /// The version an attempt from the start of the input numbers from (the store's next
    /// before the first attempt), passed as `--first-version`.
    pub first_version: u64,
    /// Whether `pooch run` resumes from the newest checkpoint in its `--out` unless given
    /// `--fresh` (the flag's presence says so).
    pub run_resumes: bool,
    /// Timely's flags for every process (`-w`), without `-n`, `-p` and `-h`.
    pub timely_args: Vec<String>,
    /// The run's output directory: the hostfile and the log go there.
    pub out: PathBuf,
    /// Restarts allowed within `restart_window`.
    pub max_restarts: u32,
    /// The window of the restart budget.
    pub restart_window: Duration,
    /// After a stop, how long the processes have to end before they are killed.
    pub stop_grace: Duration,
    /// An attempt whose process 0 completes no epoch (writes nothing to `feed`) for this long
    /// is stalled; `None`: no watchdog.
    pub stall_timeout: Option<Duration>,
    /// The feed process 0 writes each complete epoch to (`--serving-feed`).
    pub feed: PathBuf,
}

/// How supervision ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every process of an attempt exited with success.
    Completed,
    /// A signal stopped the cluster.
    Stopped,
    /// The restart budget ran out.
    GaveUp,
}

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The log or the hostfile could not be written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start process {process} ({program}): {source}")]
    Spawn {
        /// Its index.
        process: usize,
        /// The binary.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The supervisor's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Processes started.
    pub starts: AtomicU64,
    /// Processes that died.
    pub deaths: AtomicU64,
    /// Cluster restarts.
    pub restarts: AtomicU64,
    /// Times the restart budget ran out.
    pub give_ups: AtomicU64,
    /// Attempts ended by the stall watchdog.
    pub stalls: AtomicU64,
    /// The attempt running now (1 for the first).
    pub attempt: AtomicU64,
}

impl ClusterCounters {
    /// The counters in Prometheus text format.
    pub fn metrics_text(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, value) in [
            (
                "pooch_cluster_process_starts_total",
                "Processes the cluster supervisor started.",
                &self.starts,
            ),
            (
                "pooch_cluster_process_deaths_total",
                "Processes that died under the cluster supervisor.",
                &self.deaths,
            ),
            (
                "pooch_cluster_restarts_total",
                "Times the cluster supervisor restarted the cluster.",
                &self.restarts,
            ),
            (
                "pooch_cluster_stalls_total",
                "Attempts the cluster supervisor ended because no epoch completed for the stall timeout.",
                &self.stalls,
            ),
            (
                "pooch_cluster_give_ups_total",
                "Times the cluster supervisor's restart budget ran out.",
                &self.give_ups,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP pooch_cluster_attempt The cluster's current attempt (1 for the first start)."
        );
        let _ = writeln!(out, "# TYPE pooch_cluster_attempt gauge");
        let _ = writeln!(
            out,
            "pooch_cluster_attempt {}",
            self.attempt.load(Ordering::Relaxed)
        );
    }
}

/// `127.0.0.1:BASE`, `127.0.0.1:BASE+1`, ...
pub fn loopback_addresses(processes: usize, base_port: u16) -> Vec<String> {
    (0..processes)
        .map(|index| format!("127.0.0.1:{}", usize::from(base_port) + index))
        .collect()
}

/// The log beside the outputs: one JSON line per event, stamped in unix milliseconds.
struct EventLog {
    file: File,
    path: PathBuf,
}

impl EventLog {
    fn open(path: PathBuf) -> Result<Self, SuperviseError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| SuperviseError::File {
                path: path.clone(),
                source,
            })?;
        Ok(EventLog { file, path })
    }

    fn event(&mut self, mut line: serde_json::Value) -> Result<(), SuperviseError> {
        line["at_ms"] = json!(crate::clock::now_unix_ms());
        let text = format!("{line}\n");
        eprint!("pooch cluster: {text}");
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| SuperviseError::File {
                path: self.path.clone(),
                source,
            })
    }
}

/// Where an attempt's processes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The start of the input, any checkpoint left from an earlier run removed (`--fresh`,
    /// when the run resumes on its own): the first attempt.
    Fresh,
    /// The start of the input: a restart, with no checkpoint to resume from (or a run that
    /// does not resume).
    Input,
    /// A restart resuming from the newest listed checkpoint, at its cut.
    Checkpoint {
        /// The checkpoint's cut.
        cut: u64,
    },
}

impl StartFrom {
    /// Where attempt `attempt` (1 for the first) starts, given what is in `out`.
    pub fn for_attempt(attempt: u64, run_resumes: bool, out: &Path) -> StartFrom {
        if attempt == 1 {
            return StartFrom::Fresh;
        }
        if !run_resumes {
            return StartFrom::Input;
        }
        match newest_listed_cut(out) {
            Some(cut) => StartFrom::Checkpoint { cut },
            None => StartFrom::Input,
        }
    }

    /// What `pooch run` is given for it: `--fresh` first (if the run knows it), and the first
    /// version unless a checkpoint carries the numbering on.
    pub fn run_args(self, run_resumes: bool, first_version: u64) -> Vec<String> {
        let mut args = Vec::new();
        if self == StartFrom::Fresh && run_resumes {
            args.push("--fresh".to_owned());
        }
        if !matches!(self, StartFrom::Checkpoint { .. }) {
            args.extend(["--first-version".to_owned(), first_version.to_string()]);
        }
        args
    }

    /// For the log.
    pub fn describe(self) -> String {
        match self {
            StartFrom::Fresh => "the start of the input (a clean start)".to_owned(),
            StartFrom::Input => "the start of the input".to_owned(),
            StartFrom::Checkpoint { cut } => format!("the newest checkpoint (cut {cut})"),
        }
    }
}

/// The cut of the newest checkpoint `OUT/checkpoints/MANIFEST.json` lists, if any. The run
/// itself verifies it (and falls back to an older one, or the start, if it does not).
fn newest_listed_cut(out: &Path) -> Option<u64> {
    use crate::runtime::checkpoint::{CheckpointStore, DEFAULT_RETAIN};
    let store = CheckpointStore::open(out, DEFAULT_RETAIN).ok()?;
    store.list().ok()?.last().map(|listed| listed.cut)
}

/// A process of the current attempt.
struct Running {
    index: usize,
    child: Child,
    exited: Option<ExitStatus>,
}

/// Runs the cluster to completion, a stop, or the end of the restart budget.
pub fn supervise(
    options: &SuperviseOptions,
    counters: &ClusterCounters,
    stop: &AtomicBool,
) -> Result<Outcome, SuperviseError> {
    std::fs::create_dir_all(&options.out).map_err(|source| SuperviseError::File {
        path: options.out.clone(),
        source,
    })?;
    let hostfile = options.out.join("cluster.hosts");
    let hosts: String = options
        .addresses
        .iter()
        .map(|address| format!("{}\n", address.trim()))
        .collect();
    std::fs::write(&hostfile, hosts).map_err(|source| SuperviseError::File {
        path: hostfile.clone(),
        source,
    })?;
    let mut log = EventLog::open(options.out.join("cluster.log"))?;
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut attempt = 1u64;
    loop {
        counters.attempt.store(attempt, Ordering::Relaxed);
        let from = StartFrom::for_attempt(attempt, options.run_resumes, &options.out);
        let attempt_args = from.run_args(options.run_resumes, options.first_version);
        let mut running = Vec::with_capacity(options.processes);
        for index in 0..options.processes {
            let child = spawn(options, &hostfile, index, &attempt_args)?;
            counters.starts.fetch_add(1, Ordering::Relaxed);
            log.event(json!({
                "event": "start", "attempt": attempt, "process": index, "pid": child.id(),
                "from": from.describe(),
            }))?;
            running.push(Running {
                index,
                child,
                exited: None,
            });
        }
        let mut stall = StallWatch::new(&options.feed, options.stall_timeout);
        match watch_attempt(&mut running, stop, &mut stall) {
            AttemptEnd::Completed => {
                log.event(json!({"event": "completed", "attempt": attempt}))?;
                return Ok(Outcome::Completed);
            }
            AttemptEnd::Stop => {
                log.event(json!({"event": "stopping", "attempt": attempt, "signal": "SIGTERM"}))?;
                stop_all(&mut running, options.stop_grace, &mut log)?;
                log.event(json!({"event": "stopped", "attempt": attempt}))?;
                return Ok(Outcome::Stopped);
            }
            AttemptEnd::Stalled { silent } => {
                counters.stalls.fetch_add(1, Ordering::Relaxed);
                log.event(json!({
                    "event": "stalled", "attempt": attempt,
                    "silent_secs": silent.as_secs_f64(),
                    "why": format!(
                        "no epoch completed (nothing new in {}) for {:.1} s",
                        options.feed.display(),
                        silent.as_secs_f64()
                    ),
                }))?;
                kill_all(&mut running, &mut log, attempt, "the attempt stalled")?;
            }
            AttemptEnd::Death { index, status } => {
                // the processes that ended with it (a survivor that saw it die, moments
                // later) are reported too, before the rest are killed
                std::thread::sleep(Duration::from_millis(100));
                let mut dead = vec![(index, status)];
                for process in running
                    .iter_mut()
                    .filter(|process| process.exited.is_none())
                {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        process.exited = Some(status);
                        dead.push((process.index, status));
                    }
                }
                for (index, status) in dead {
                    counters.deaths.fetch_add(1, Ordering::Relaxed);
                    let pid = running[index].child.id();
                    log.event(json!({
                        "event": "death", "attempt": attempt, "process": index, "pid": pid,
                        "status": describe(status),
                    }))?;
                }
                kill_all(
                    &mut running,
                    &mut log,
                    attempt,
                    "another process of the attempt died",
                )?;
            }
        }
        // the restart budget: at most `max_restarts` within the window
        let now = Instant::now();
        while restarts
            .front()
            .is_some_and(|&at| now.duration_since(at) > options.restart_window)
        {
            restarts.pop_front();
        }
        if restarts.len() >= options.max_restarts as usize {
            counters.give_ups.fetch_add(1, Ordering::Relaxed);
            log.event(json!({
                "event": "give-up", "attempt": attempt,
                "restarts_in_window": restarts.len(),
                "max_restarts": options.max_restarts,
                "window_secs": options.restart_window.as_secs(),
            }))?;
            return Ok(Outcome::GaveUp);
        }
        restarts.push_back(now);
        counters.restarts.fetch_add(1, Ordering::Relaxed);
        attempt += 1;
        log.event(json!({
            "event": "restart", "attempt": attempt,
            "restarts_in_window": restarts.len(), "max_restarts": options.max_restarts,
            "from": StartFrom::for_attempt(attempt, options.run_resumes, &options.out).describe(),
        }))?;
        if stop.load(Ordering::Relaxed) {
            log.event(json!({"event": "stopped", "attempt": attempt}))?;
            return Ok(Outcome::Stopped);
        }
    }
}

/// Starts process `index` of the cluster.
fn spawn(
    options: &SuperviseOptions,
    hostfile: &Path,
    index: usize,
    attempt_args: &[String],
) -> Result<Child, SuperviseError> {
    let mut command = Command::new(&options.program);
    command
        .arg("run")
        .args(&options.run_args)
        .args(attempt_args);
    if index == 0 {
        command.args(&options.first_process_args);
    }
    command
        .arg("--")
        .args(&options.timely_args)
        .args(["-n", &options.processes.to_string()])
        .args(["-p", &index.to_string()])
        .arg("-h")
        .arg(hostfile)
        .stdin(Stdio::null());
    if index != 0 {
        // process 0 prints the summary; the others have nothing to say on stdout
        command.stdout(Stdio::null());
    }
    command.spawn().map_err(|source| SuperviseError::Spawn {
        process: index,
        program: options.program.clone(),
        source,
    })
}

/// How an attempt ended.
enum AttemptEnd {
    Completed,
    Stop,
    Death { index: usize, status: ExitStatus },
    Stalled { silent: Duration },
}

/// The stall watchdog: when the feed last changed (its inode or its length).
pub struct StallWatch {
    feed: PathBuf,
    bound: Option<Duration>,
    seen: Option<(u64, u64)>,
    changed: Instant,
}

impl StallWatch {
    /// Watches `feed` from now, with no bound for `None`.
    pub fn new(feed: &Path, bound: Option<Duration>) -> Self {
        StallWatch {
            feed: feed.to_owned(),
            bound,
            seen: feed_state(feed),
            changed: Instant::now(),
        }
    }

    /// How long the feed has been unchanged, once that is the bound or more.
    pub fn stalled(&mut self) -> Option<Duration> {
        let bound = self.bound?;
        let now = feed_state(&self.feed);
        if now != self.seen {
            self.seen = now;
            self.changed = Instant::now();
        }
        let silent = self.changed.elapsed();
        (silent >= bound).then_some(silent)
    }
}

/// The feed's inode and length, if it is there.
fn feed_state(feed: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(feed)
        .ok()
        .map(|meta| (meta.ino(), meta.len()))
}

/// Waits for every process to exit well, one to die, a stall, or a stop.
fn watch_attempt(running: &mut [Running], stop: &AtomicBool, stall: &mut StallWatch) -> AttemptEnd {
    loop {
        if stop.load(Ordering::Relaxed) {
            return AttemptEnd::Stop;
        }
        if let Some(silent) = stall.stalled() {
            return AttemptEnd::Stalled { silent };
        }
        for process in running
            .iter_mut()
            .filter(|process| process.exited.is_none())
        {
            // an error here means the child is gone without a status: treat it as a death
            let status = match process.child.try_wait() {
                Ok(status) => status,
                Err(_) => Some(failed_status()),
            };
            if let Some(status) = status {
                process.exited = Some(status);
                if !status.success() {
                    return AttemptEnd::Death {
                        index: process.index,
                        status,
                    };
                }
            }
        }
        if running.iter().all(|process| process.exited.is_some()) {
            return AttemptEnd::Completed;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An exit status of 1, for a child whose status could not be read.
fn failed_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(1 << 8)
}

/// `exit 1`, or `killed by signal 9`.
fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Kills the processes still running (by PID), and reaps them.
fn kill_all(
    running: &mut [Running],
    log: &mut EventLog,
    attempt: u64,
    why: &str,
) -> Result<(), SuperviseError> {
    for process in running
        .iter_mut()
        .filter(|process| process.exited.is_none())
    {
        let pid = process.child.id();
        // SIGKILL ends a stopped (SIGSTOP) process too
        let _ = process.child.kill();
        let status = process.child.wait().ok();
        process.exited = status;
        log.event(json!({
            "event": "killed", "attempt": attempt, "process": process.index, "pid": pid,
            "why": why,
        }))?;
    }
    Ok(())
}

/// Sends SIGTERM to every process still running, waits up to `grace`, then kills the rest.
fn stop_all(
    running: &mut [Running],
    grace: Duration,
    log: &mut EventLog,
) -> Result<(), SuperviseError> {
    for process in running.iter().filter(|process| process.exited.is_none()) {
        if let Ok(pid) = libc::pid_t::try_from(process.child.id()) {
            // SAFETY: kill(2) with a PID this supervisor spawned and has not reaped yet
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        let mut all = true;
        for process in running
            .iter_mut()
            .filter(|process| process.exited.is_none())
        {
            match process.child.try_wait() {
                Ok(Some(status)) => process.exited = Some(status),
                Ok(None) => all = false,
                Err(_) => process.exited = Some(failed_status()),
            }
        }
        if all {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for process in running
        .iter_mut()
        .filter(|process| process.exited.is_none())
    {
        let pid = process.child.id();
        let _ = process.child.kill();
        process.exited = process.child.wait().ok();
        log.event(json!({
            "event": "killed", "process": process.index, "pid": pid,
            "why": format!("still running {} s after SIGTERM", grace.as_secs()),
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::checkpoint::{CheckpointStore, DEFAULT_RETAIN};

    fn args(from: StartFrom, run_resumes: bool) -> Vec<String> {
        from.run_args(run_resumes, 7)
    }

    #[test]
    fn the_stall_watch_fires_only_after_the_bound_without_a_change() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let feed = dir.path().join("serving-feed.jsonl");
        let mut off = StallWatch::new(&feed, None);
        let mut watch = StallWatch::new(&feed, Some(Duration::from_millis(300)));
        std::thread::sleep(Duration::from_millis(200));
        // a new file is progress
        std::fs::write(&feed, "{}\n").expect("feed");
        assert_eq!(watch.stalled(), None);
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(&feed, "{}\n{}\n").expect("feed");
        assert_eq!(watch.stalled(), None);
        std::thread::sleep(Duration::from_millis(350));
        let silent = watch.stalled().expect("stalled");
        assert!(silent >= Duration::from_millis(300), "{silent:?}");
        assert_eq!(off.stalled(), None);
    }

    #[test]
    fn a_run_that_does_not_resume_starts_every_attempt_from_the_input_numbered_alike() {
        let out = tempfile::tempdir().expect("temporary directory");
        for attempt in [1, 2, 3] {
            let from = StartFrom::for_attempt(attempt, false, out.path());
            assert_eq!(args(from, false), ["--first-version", "7"]);
        }
    }

    #[test]
    fn the_first_attempt_is_fresh_and_a_restart_resumes_without_fresh() {
        let out = tempfile::tempdir().expect("temporary directory");
        let first = StartFrom::for_attempt(1, true, out.path());
        assert_eq!(first, StartFrom::Fresh);
        assert_eq!(args(first, true), ["--fresh", "--first-version", "7"]);
        // a restart before any checkpoint: from the input, numbered as the first attempt
        let early = StartFrom::for_attempt(2, true, out.path());
        assert_eq!(early, StartFrom::Input);
        assert_eq!(args(early, true), ["--first-version", "7"]);
    }

    #[test]
    fn a_restart_with_a_listed_checkpoint_resumes_from_it_leaving_the_numbering_to_it() {
        let out = tempfile::tempdir().expect("temporary directory");
        let store = CheckpointStore::open(out.path(), DEFAULT_RETAIN).expect("store");
        let manifest = serde_json::json!({
            "format": crate::runtime::checkpoint::FORMAT_VERSION,
            "checkpoints": [
                {"file": "c0001.ckpt", "cut": 100, "bytes": 1, "checksum": "0"},
                {"file": "c0002.ckpt", "cut": 200, "bytes": 1, "checksum": "0"},
            ],
        });
        std::fs::write(
            store.dir().join(crate::runtime::checkpoint::MANIFEST),
            manifest.to_string(),
        )
        .expect("manifest");
        assert_eq!(store.list().expect("listed").len(), 2);
        let restart = StartFrom::for_attempt(2, true, out.path());
        assert_eq!(restart, StartFrom::Checkpoint { cut: 200 });
        assert!(args(restart, true).is_empty());
        // the first attempt of a run is clean whatever an earlier run left
        assert_eq!(
            StartFrom::for_attempt(1, true, out.path()),
            StartFrom::Fresh
        );
        // a run that does not resume ignores the checkpoints
        assert_eq!(
            StartFrom::for_attempt(2, false, out.path()),
            StartFrom::Input
        );
    }
}
