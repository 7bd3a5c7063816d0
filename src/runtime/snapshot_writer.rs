//! The snapshot writer: a thread of its own that makes published versions durable in the
//! store, so that a slow disk never holds the pipeline back.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use dataflows::publish::model::ModelVersion;
use serde::{Deserialize, Serialize};

use crate::publish::{SnapshotMeta, SnapshotStore};

/// What the snapshot writer did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotReport {
    /// Versions that could not be written, and why.
    pub errors: Vec<String>,
    /// Versions skipped because a newer one had arrived before they could be written.
    pub skipped: u64,
    /// Versions written to the store.
    pub written: u64,
    /// Versions not written because the store already held them: a restarted attempt of a
    /// supervised cluster replays versions an earlier attempt stored (the same ones, the run
    /// being deterministic).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub already_stored: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// A version to write, and what the store records beside it.
type Job = (Arc<ModelVersion>, SnapshotMeta);

/// The handle of the writer thread.
pub struct SnapshotWriter {
    /// Versions go to the thread here; dropped to tell it the run is over.
    sender: Option<Sender<Job>>,
    thread: Option<JoinHandle<SnapshotReport>>,
}

impl SnapshotWriter {
    /// Starts the thread writing into `store` the versions after `stored_through` (0 for
    /// all: the versions up to it are on disk already).
    pub fn spawn(store: SnapshotStore, stored_through: u64) -> Result<Self, std::io::Error> {
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || write_newest(store, stored_through, receiver))?;
        Ok(SnapshotWriter {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Hands a version to the thread. After [`SnapshotWriter::finish`], versions are ignored.
    pub fn send(&self, version: Arc<ModelVersion>, meta: SnapshotMeta) {
        if let Some(sender) = &self.sender {
            // the thread stops only when the sender is dropped: a send cannot fail before
            let _ = sender.send((version, meta));
        }
    }

    /// Waits for the thread to write what it was given, and returns what it did.
    pub fn finish(&mut self) -> SnapshotReport {
        self.sender = None;
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| SnapshotReport {
                errors: vec!["the snapshot writer panicked".into()],
                ..SnapshotReport::default()
            }),
            None => SnapshotReport::default(),
        }
    }
}

/// The thread's loop. When versions arrive faster than they can be made durable, it writes
/// the newest that has arrived and skips the ones in between.
fn write_newest(
    mut store: SnapshotStore,
    stored_through: u64,
    receiver: Receiver<Job>,
) -> SnapshotReport {
    let mut report = SnapshotReport::default();
    while let Ok(mut newest) = receiver.recv() {
        if newest.0.version <= stored_through {
            report.already_stored += 1;
            continue;
        }
        while let Ok(newer) = receiver.try_recv() {
            report.skipped += 1;
            newest = newer;
        }
        let (version, meta) = newest;
        match store.write(&version, &meta) {
            Ok(_) => report.written += 1,
            Err(error) => {
                eprintln!(
                    "pooch: snapshot of version {} not written: {error}",
                    version.version
                );
                report.errors.push(error.to_string());
            }
        }
    }
    report
}
