//! The serving state an HTTP endpoint answers from, set up before the run starts: supervised,
//! its decisions logged, its state restored from earlier runs' decisions, and serving the
//! version those decisions chose (or the newest good snapshot, when none were recorded).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value as Json, json};

use crate::publish::{self, Snapshot, SnapshotError, SnapshotMeta, SnapshotStore};
use crate::runtime::{RunError, RunOptions};
use crate::serve::serving::ServingState;
use crate::serve::supervisor::{DecisionLog, Supervisor};
use crate::spec::Spec;

/// Whether a snapshot was made for this spec's features: its features hash, or for a snapshot
/// from before features hashes were recorded, its spec hash, must match. `Err` says how not.
pub fn compatibility(meta: &SnapshotMeta, spec: &Spec) -> Result<(), String> {
    if meta.features_hash.is_empty() {
        if meta.spec_hash == spec.hash {
            return Ok(());
        }
        return Err(format!(
            "made by spec {} (recorded before features hashes were), not this spec ({})",
            meta.spec_hash, spec.hash
        ));
    }
    if meta.features_hash == spec.features_hash {
        return Ok(());
    }
    Err(format!(
        "its features hash {} differs from this spec's {} (features, aggregates or bits changed; spec {} against {})",
        meta.features_hash, spec.features_hash, meta.spec_hash, spec.hash
    ))
}

/// The serving state for the HTTP endpoint: supervised, its decisions written to
/// `OUT/decisions.jsonl`, commands taken from the snapshot store's control file, its state
/// restored from the decisions of earlier runs, and the version they chose loaded at once, so
/// requests are answered before ingestion catches up. Snapshots that fail verification or
/// were made for another spec are skipped, and listed with the reason.
pub fn start_serving(spec: &Spec, options: &RunOptions) -> Result<Arc<ServingState>, RunError> {
    let plan = &spec.plan;
    let model = &plan.model.name;
    let store_dir = options.out.join("snapshots");
    let mut supervisor = Supervisor::new(model.clone(), spec.supervisor.clone())?;
    // the endpoint only reads the store; its retention is the leader's, which keeps at least one
    let store = SnapshotStore::open(&store_dir, options.retain_snapshots.max(1))?;
    let mut servable = BTreeSet::new();
    let mut foreign = BTreeSet::new();
    let mut skipped: Vec<(Option<u64>, SnapshotError)> = Vec::new();
    // the line (features hash) of each incompatible snapshot
    let mut lines = std::collections::BTreeMap::new();
    let mut newest: Option<Snapshot> = None;
    for stored in store.list(model)? {
        match publish::read(&stored.path) {
            Ok(snapshot)
                if snapshot.model.name != *model || snapshot.model.version != stored.version =>
            {
                skipped.push((
                    Some(stored.version),
                    SnapshotError::Misplaced {
                        path: stored.path,
                        found_model: snapshot.model.name,
                        found_version: snapshot.model.version,
                        expected_model: model.clone(),
                        expected_version: stored.version,
                    },
                ));
            }
            Ok(snapshot) => match compatibility(&snapshot.meta, spec) {
                Ok(()) => {
                    servable.insert(stored.version);
                    newest = Some(snapshot);
                }
                Err(reason) => {
                    foreign.insert(stored.version);
                    lines.insert(
                        stored.version,
                        crate::serve::models::line_of(&snapshot.meta),
                    );
                    skipped.push((
                        Some(stored.version),
                        SnapshotError::Incompatible {
                            path: stored.path,
                            reason,
                        },
                    ));
                }
            },
            Err(error) => skipped.push((Some(stored.version), error)),
        }
    }
    for (_, error) in &skipped {
        eprintln!("pooch: serving: skipped a snapshot: {error}");
    }
    let decisions_path = DecisionLog::path_for_store(&store_dir);
    let restored = if decisions_path.exists() {
        let read = DecisionLog::read(&decisions_path)?;
        for (line, reason) in &read.malformed {
            eprintln!(
                "pooch: serving: {}:{line}: passed over: {reason}",
                decisions_path.display()
            );
        }
        supervisor.restore(&read.decisions, &servable, &foreign)
    } else {
        0
    };
    let serving = Arc::new(ServingState::with_supervisor(plan.clone(), supervisor));
    let log = DecisionLog::open(&decisions_path)?;
    serving.attach_store(store_dir.clone(), log)?;
    let listed: Vec<Json> = skipped
        .iter()
        .map(|(version, error)| {
            json!({
                "version": version,
                "incompatible": matches!(error, SnapshotError::Incompatible { .. }),
                "line": version.and_then(|version| lines.get(&version)),
                "reason": error.to_string(),
            })
        })
        .collect();
    serving.set_skipped(listed, foreign);
    serving.set_line(spec.features_hash.clone());
    if restored > 0 {
        serving.settle();
        match serving.serving() {
            Some(version) => eprintln!(
                "pooch: serving {model} version {} from {}, as earlier runs' decisions chose ({restored} versions restored)",
                version.version,
                store_dir.display()
            ),
            None => eprintln!(
                "pooch: serving: earlier runs' decisions ({restored} versions) leave no version of {model} to serve until one is promoted"
            ),
        }
    } else if let Some(snapshot) = newest {
        eprintln!(
            "pooch: serving {model} version {} from {} until this run publishes",
            snapshot.model.version,
            store_dir.display()
        );
        serving.adopt(Arc::new(snapshot.model));
    }
    Ok(serving)
}
