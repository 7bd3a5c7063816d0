//! The HTTP endpoint of a run (process 0, with `--http`): its supervised serving state, the
//! server, and serving on after the input is read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::publish::snapshot::SnapshotStore;
use crate::runtime::{RunError, RunOptions};
use crate::serve::http::{HttpConfig, HttpServer};
use crate::serve::serving::ServingState;
use crate::serve::supervisor::{DecisionLog, Supervisor};
use crate::spec::Spec;

/// The endpoint while it listens.
pub struct Endpoint {
    server: HttpServer,
    serving: Arc<ServingState>,
}

impl Endpoint {
    /// Sets up the serving state, then listens, telling `options.http_bound` where.
    pub fn start(spec: &Spec, options: &RunOptions, http: HttpConfig) -> Result<Self, RunError> {
        let serving = start_serving(spec, options)?;
        let server =
            crate::serve::http::spawn(http, Arc::clone(&serving) as _).map_err(RunError::Http)?;
        eprintln!("pooch: serving on http://{}", server.local_addr());
        if let Some(bound) = &options.http_bound {
            // the caller may have stopped listening for it: the endpoint serves regardless
            let _ = bound.send(server.local_addr());
        }
        Ok(Endpoint { server, serving })
    }

    /// The serving state, for the graph to keep up to date.
    pub fn serving(&self) -> Arc<ServingState> {
        Arc::clone(&self.serving)
    }

    /// Goes on serving after the input is read, taking commands from the control file, until
    /// `stop` is set.
    pub fn serve_until(&self, stop: &AtomicBool) {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        eprintln!(
            "pooch: the input is read; still serving on http://{} until SIGINT or SIGTERM",
            self.server.local_addr()
        );
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            self.serving.poll_control();
        }
    }

    /// Stops listening and waits for the server to end.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}

/// The serving state for the HTTP endpoint: supervised, its decisions written to
/// `OUT/decisions.jsonl`, commands taken from the snapshot store's control file, and the
/// newest good snapshot loaded at once, so requests are answered before ingestion catches up.
fn start_serving(spec: &Spec, options: &RunOptions) -> Result<Arc<ServingState>, RunError> {
    let plan = &spec.plan;
    let store_dir = options.out.join("snapshots");
    let supervisor = Supervisor::new(plan.model.name.clone(), spec.supervisor.clone())?;
    let serving = Arc::new(ServingState::with_supervisor(plan.clone(), supervisor));
    let log = DecisionLog::open(DecisionLog::path_for_store(&store_dir))?;
    serving.attach_store(store_dir.clone(), log)?;
    // the endpoint only reads the store; its retention is the leader's, which keeps at least one
    let store = SnapshotStore::open(&store_dir, options.retain_snapshots.max(1))?;
    let newest = store.newest_good(&plan.model.name)?;
    for skipped in &newest.skipped {
        eprintln!("pooch: serving: skipped a snapshot: {skipped}");
    }
    if let Some(snapshot) = newest.snapshot {
        eprintln!(
            "pooch: serving {} version {} from {} until this run publishes",
            plan.model.name,
            snapshot.model.version,
            store_dir.display()
        );
        serving.publish(Arc::new(snapshot.model));
    }
    Ok(serving)
}
