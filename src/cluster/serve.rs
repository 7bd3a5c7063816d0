//! Serving contained from the dataflow's failures: under `pooch cluster --http`, the
//! supervisor process serves, not a worker process.
//!
//! It follows what the dataflow makes durable, the snapshot store (`OUT/snapshots`): every
//! [`FOLLOW_INTERVAL`] it looks for a version newer than the newest it has, loads the newest
//! one that verifies, and hands it to its serving state, whose supervisor decides what serves
//! (`OUT/decisions.jsonl`, pins and rollbacks from `pooch models` or HTTP) as in a single run.
//! While the workers die and restart, nothing here changes: `/readyz` stays ready once a
//! version is loaded, and answers go on naming the version they used. A restarted attempt
//! replays from the start and writes the same versions again, so the newest on disk only ever
//! moves forward.
//!
//! The features come the same way: process 0 writes each complete epoch's feature changes to
//! a feed file ([`feed_path`]), and the supervisor folds in each epoch newer than the last it
//! has. A restarted attempt makes the file anew and replays the epochs it has from the start
//! (the same changes: the run is deterministic), which are skipped until it gets past them.
//!
//! The same follower serves on its own as `pooch serve OUT` ([`ClusterEndpoint::start`]
//! without counters): it only reads the output directory (and writes its own decisions
//! file), so any number of them can follow one run, each answering alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value as Json;

use crate::cluster::supervise::ClusterCounters;
use crate::publish::{SnapshotStore, read};
use crate::runtime::RunError;
use crate::runtime::serving_setup::compatibility;
use crate::serve::http::{ApiError, Backend, HttpConfig, HttpServer, Prediction};
use crate::serve::serving::ServingState;
use crate::serve::supervisor::{DecisionLog, Supervisor};
use crate::spec::Spec;

/// How often the store is looked at for new versions (and the control file for commands).
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// The feature feed a supervised run's process 0 writes, `OUT/serving-feed.jsonl`.
pub fn feed_path(out: &std::path::Path) -> std::path::PathBuf {
    out.join("serving-feed.jsonl")
}

/// Removes a feed left by an earlier run in `out` (it is not this run's: the first attempt
/// writes it anew), so that no follower folds in another run's features.
pub fn clear_feed(out: &std::path::Path) -> Result<(), RunError> {
    match std::fs::remove_file(feed_path(out)) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RunError::Output(crate::runtime::output::OutputError {
            path: feed_path(out),
            source,
        })),
    }
}

/// How many of a feed file's first bytes tell one file from another with the same inode
/// number (a file removed and made anew may get its number back).
const FEED_PREFIX_BYTES: usize = 256;

/// Where the supervisor is in the feed file.
struct FeedFollower {
    path: std::path::PathBuf,
    /// The file being read (its inode): a restart makes a new one.
    inode: Option<u64>,
    /// The file's first bytes (up to [`FEED_PREFIX_BYTES`]) when it was last read.
    prefix: Vec<u8>,
    /// Bytes consumed, up to the last complete line.
    offset: u64,
    /// The newest epoch folded in.
    applied: Option<u64>,
}

impl FeedFollower {
    /// Folds in the complete epochs written since the last call; returns them.
    fn follow(&mut self, serving: &ServingState) -> Vec<u64> {
        use std::io::{Read, Seek, SeekFrom};
        use std::os::unix::fs::MetadataExt;
        let mut folded = Vec::new();
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return folded;
        };
        let Ok(meta) = file.metadata() else {
            return folded;
        };
        let mut prefix = vec![0; FEED_PREFIX_BYTES.min(usize::try_from(meta.len()).unwrap_or(0))];
        if file.read_exact(&mut prefix).is_err() {
            return folded;
        }
        let shared = prefix.len().min(self.prefix.len());
        if self.inode != Some(meta.ino())
            || meta.len() < self.offset
            || prefix[..shared] != self.prefix[..shared]
        {
            // a new attempt's feed: read it from its start, skipping epochs already folded in
            // (a resumed attempt's starts after the checkpoint: its first bytes differ)
            self.inode = Some(meta.ino());
            self.offset = 0;
        }
        self.prefix = prefix;
        if meta.len() == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return folded;
        }
        let mut text = String::new();
        if file.read_to_string(&mut text).is_err() {
            return folded;
        }
        // only complete lines: the writer may be in the middle of one
        let Some(end) = text.rfind('\n') else {
            return folded;
        };
        for line in text[..end].lines() {
            let Ok(entry) = serde_json::from_str::<FeedLine>(line) else {
                continue;
            };
            if self.applied.is_none_or(|applied| entry.epoch > applied) {
                serving.apply_epoch(entry.epoch, &entry.changes);
                self.applied = Some(entry.epoch);
                folded.push(entry.epoch);
            }
        }
        self.offset += end as u64 + 1;
        folded
    }
}

/// A line of the feed file.
#[derive(serde::Deserialize)]
struct FeedLine {
    epoch: u64,
    changes: Vec<((u64, u32), (i64, i64))>,
}

/// The serving state and the cluster's counters, behind one HTTP endpoint.
struct ClusterBackend {
    serving: Arc<ServingState>,
    counters: Option<Arc<ClusterCounters>>,
}

impl Backend for ClusterBackend {
    fn predict(&self, query: &Json) -> Result<Prediction, ApiError> {
        Backend::predict(&*self.serving, query)
    }

    fn models(&self) -> Json {
        Backend::models(&*self.serving)
    }

    fn pin(&self, model: &str, version: u64) -> Result<Json, ApiError> {
        Backend::pin(&*self.serving, model, version)
    }

    fn unpin(&self, model: &str) -> Result<Json, ApiError> {
        Backend::unpin(&*self.serving, model)
    }

    fn rollback(&self, model: &str) -> Result<Json, ApiError> {
        Backend::rollback(&*self.serving, model)
    }

    fn ready(&self) -> bool {
        Backend::ready(&*self.serving)
    }

    fn metrics(&self, out: &mut String) {
        Backend::metrics(&*self.serving, out);
        if let Some(counters) = &self.counters {
            counters.metrics_text(out);
        }
    }
}

/// The supervisor's endpoint: the server, and the thread that follows the store.
pub struct ClusterEndpoint {
    server: HttpServer,
    done: Arc<AtomicBool>,
    follower: Option<JoinHandle<()>>,
}

impl ClusterEndpoint {
    /// Sets up the serving state over `OUT/snapshots` (the newest good version serves at
    /// once), listens, and starts following the store.
    ///
    /// The supervisor's decisions go to `decisions`; `counters`, the cluster supervisor's,
    /// are added to `/metrics` (`None` for `pooch serve`).
    pub fn start(
        spec: &Spec,
        out: &std::path::Path,
        retain: usize,
        http: HttpConfig,
        decisions: &std::path::Path,
        counters: Option<Arc<ClusterCounters>>,
    ) -> Result<Self, RunError> {
        let plan = &spec.plan;
        let store_dir = out.join("snapshots");
        let supervisor = Supervisor::new(plan.model.name.clone(), spec.supervisor.clone())?;
        let serving = Arc::new(ServingState::with_supervisor(plan.clone(), supervisor));
        serving.set_line(spec.features_hash.clone());
        let log = DecisionLog::open(decisions)?;
        serving.attach_store(store_dir.clone(), log)?;
        let store = SnapshotStore::open(&store_dir, retain.max(1))?;
        let mut newest = 0;
        follow(&store, spec, &serving, &mut newest);
        let backend_is_cluster = counters.is_some();
        let backend = ClusterBackend {
            serving: Arc::clone(&serving),
            counters,
        };
        let server = crate::serve::http::spawn(http, Arc::new(backend)).map_err(RunError::Http)?;
        let who = if backend_is_cluster {
            "pooch cluster"
        } else {
            "pooch serve"
        };
        eprintln!(
            "{who}: serving on http://{} (following {}, through the workers' failures)",
            server.local_addr(),
            out.display()
        );
        let done = Arc::new(AtomicBool::new(false));
        let follower = {
            let (done, spec) = (Arc::clone(&done), spec.clone());
            let mut feed = FeedFollower {
                path: feed_path(out),
                inode: None,
                prefix: Vec::new(),
                offset: 0,
                applied: None,
            };
            std::thread::Builder::new()
                .name("pooch:follow-store".into())
                .spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        std::thread::sleep(FOLLOW_INTERVAL);
                        follow(&store, &spec, &serving, &mut newest);
                        let _ = feed.follow(&serving);
                        serving.poll_control();
                    }
                })
                .map_err(|source| RunError::Thread {
                    name: "follow-store",
                    source,
                })?
        };
        Ok(ClusterEndpoint {
            server,
            done,
            follower: Some(follower),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }

    /// Stops following and listening.
    pub fn shutdown(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(follower) = self.follower.take() {
            let _ = follower.join();
        }
        self.server.shutdown();
    }
}

/// Publishes every good version in the store newer than `newest`, oldest first: each carries
/// its round's evidence, split by the version that scored it, and the supervisor judges a
/// version on the evidence of its own that later rounds bring, so skipping to the newest would
/// leave every version a candidate. A file that does not load, or was made for another spec's
/// features, is passed over for good: it never serves.
fn follow(store: &SnapshotStore, spec: &Spec, serving: &ServingState, newest: &mut u64) {
    let model = spec.plan.model.name.as_str();
    let listed = match store.list(model) {
        Ok(listed) => listed,
        // a store not written yet, or a passing error: the next look may succeed
        Err(_) => return,
    };
    let after = *newest;
    for stored in listed.into_iter().filter(|stored| stored.version > after) {
        *newest = stored.version;
        if let Ok(snapshot) = read(&stored.path)
            && snapshot.model.name == model
            && snapshot.model.version == stored.version
            && compatibility(&snapshot.meta, spec).is_ok()
        {
            serving.publish(Arc::new(snapshot.model));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_line(epoch: u64) -> String {
        // a change long enough that a few lines pass the compared first bytes
        let changes: Vec<_> = (0..8u64).map(|key| ((key, 0u32), (1i64, 1i64))).collect();
        format!(
            "{}\n",
            serde_json::json!({"epoch": epoch, "changes": changes})
        )
    }

    fn feed_of(epochs: std::ops::Range<u64>) -> String {
        epochs.map(feed_line).collect()
    }

    #[test]
    fn a_feed_made_anew_is_read_from_its_start_even_with_the_same_inode() {
        let spec = crate::spec::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/sniffable.toml"),
            None,
        )
        .expect("the shipped spec");
        let serving = ServingState::new(spec.plan.clone());
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = feed_path(dir.path());
        let mut feed = FeedFollower {
            path: path.clone(),
            inode: None,
            prefix: Vec::new(),
            offset: 0,
            applied: None,
        };
        std::fs::write(&path, feed_of(0..3)).expect("feed");
        assert_eq!(feed.follow(&serving), [0, 1, 2]);
        // a partial line waits for its end
        let mut grown = feed_of(0..4);
        grown.push_str("{\"epoch\": 4");
        std::fs::write(&path, &grown).expect("feed");
        assert_eq!(feed.follow(&serving), [3]);
        // an attempt replaying from the start: the epochs folded in already are skipped
        std::fs::remove_file(&path).expect("removed");
        std::fs::write(&path, feed_of(0..6)).expect("feed");
        assert_eq!(feed.follow(&serving), [4, 5]);
        // a resumed attempt's feed, rewritten in place (the same inode) and longer than what
        // was read: its first bytes differ, so it is read from its start, no epoch lost
        std::fs::write(&path, feed_of(6..16)).expect("feed");
        assert_eq!(feed.follow(&serving), (6..16).collect::<Vec<_>>());
        assert_eq!(serving.features_epoch(), Some(15));
    }
}
