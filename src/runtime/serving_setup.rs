//! The serving state an HTTP endpoint answers from, set up before the run starts: supervised,
//! its decisions logged, and loaded with the newest good snapshot.

use std::sync::Arc;

use crate::publish::SnapshotStore;
use crate::runtime::{RunError, RunOptions};
use crate::serve::serving::ServingState;
use crate::serve::supervisor::{DecisionLog, Supervisor};
use crate::spec::Spec;

/// The serving state for the HTTP endpoint: supervised, its decisions written to
/// `OUT/decisions.jsonl`, commands taken from the snapshot store's control file, and the
/// newest good snapshot loaded at once, so requests are answered before ingestion catches up.
pub fn start_serving(spec: &Spec, options: &RunOptions) -> Result<Arc<ServingState>, RunError> {
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
