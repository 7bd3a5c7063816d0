//! Worker 0's share of the work that is not reading: the output files, the snapshot writer,
//! the bookkeeping, and the summary at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Instant;

use dataflows::fact::Time;
use dataflows::plan::Plan;
use serde_json::Value as Json;

use crate::collect::queries::{self, Queries};
use crate::publish::SnapshotStore;
use crate::runtime::checkpoint::{Checkpoint, WorkerCheckpoint};
use crate::runtime::collector::Collector;
use crate::runtime::output::{DeadLetter, OutputError, OutputFiles};
use crate::runtime::snapshot_writer::SnapshotWriter;
use crate::runtime::summary::{RunEnd, Summary};
use crate::runtime::{LiveAnswer, RunError, RunOptions};
use crate::spec::Spec;

/// Worker 0's outputs and bookkeeping. The graph's sinks share it.
pub struct Leader {
    /// The line files.
    pub files: OutputFiles,
    /// Where live answers go, if live queries are asked.
    pub live_answers: Option<Sender<LiveAnswer>>,
    /// The first version number the snapshot store has not used yet.
    pub next_version: u64,
    /// What worker 0 learns over the run.
    pub collector: Collector,
    /// The queries file's ids, by query number.
    pub query_ids: Vec<Json>,
    /// The spec's hash, recorded with every snapshot.
    pub spec_hash: String,
    /// The spec's features hash, recorded in every snapshot.
    pub features_hash: String,
    /// Makes published versions durable.
    pub snapshots: SnapshotWriter,
    /// When the output files were created: metrics lines count their seconds from it.
    pub started: Instant,
    /// The first output that failed; the run fails with it at the end.
    first_error: Option<OutputError>,
    /// Each sink's input frontier when it last ran: a checkpoint's output lengths are taken
    /// once every sink has passed the cut.
    pub sink_frontiers: BTreeMap<&'static str, Time>,
    /// While a checkpoint at this cut is taken, dead letters at or after it are held back
    /// (other workers may have read past the cut), and written once it is taken.
    pub holding: Option<Time>,
    /// The dead letters held back.
    pub held: Vec<DeadLetter>,
    /// The workers' parts of checkpoints, as they arrived (see [`crate::runtime::graph::Part`]).
    pub parts: Vec<(Time, usize, Option<WorkerCheckpoint>)>,
}

/// How the workers' reading ended, for the summary.
pub struct ReadingEnd {
    /// A signal ended the reading.
    pub stopped_by_signal: bool,
    /// The agreed end of what was read.
    pub horizon: Time,
    /// How far this worker's reading ran ahead of training, in epochs.
    pub max_read_ahead_epochs: u64,
}

impl Leader {
    /// Creates the output files, reads the queries (writing the malformed ones' errors),
    /// opens the snapshot store and starts its writer.
    ///
    /// Resuming from a checkpoint, the files are cut back to its lengths and appended to,
    /// the malformed queries' errors (written before the cut) are not written again, and the
    /// bookkeeping is the checkpoint's.
    pub fn start(
        spec: &Spec,
        options: &RunOptions,
        resume: Option<&Checkpoint>,
    ) -> Result<(Leader, Queries), RunError> {
        let plan = &spec.plan;
        let mut files = match resume {
            Some(checkpoint) => OutputFiles::resume(&options.out, &checkpoint.outputs)?,
            None => OutputFiles::create(&options.out)?,
        };
        let queries = match &options.queries {
            Some(path) => queries::read(path, plan).map_err(|source| RunError::Queries {
                path: path.clone(),
                source,
            })?,
            None => Queries::default(),
        };
        if resume.is_none() {
            for error in &queries.errors {
                files.query_error(error)?;
            }
        }
        // retention spares what serves, is pinned, or a rollback would go to
        let store = crate::serve::supervisor::spare_served(SnapshotStore::open(
            options.out.join("snapshots"),
            options.retain_snapshots.max(1),
        )?);
        // a supervised cluster's restart numbers from its first attempt's first version, and
        // leaves alone the versions an earlier attempt stored
        let store_next = store.next_version(&plan.model.name)?;
        let (next_version, stored_through) = match options.first_version {
            Some(first) => (first, store_next.saturating_sub(1)),
            None => (store_next, 0),
        };
        let snapshots =
            SnapshotWriter::spawn(store, stored_through).map_err(|source| RunError::Thread {
                name: "snapshot-writer",
                source,
            })?;
        let collector = match resume {
            Some(checkpoint) => checkpoint.collector.clone(),
            None => Collector::new(queries.errors.len() as u64),
        };
        let leader = Leader {
            files,
            live_answers: None,
            next_version,
            collector,
            query_ids: queries
                .queries
                .iter()
                .map(|query| query.id.clone())
                .collect(),
            spec_hash: spec.hash.clone(),
            features_hash: spec.features_hash.clone(),
            snapshots,
            started: Instant::now(),
            first_error: None,
            sink_frontiers: BTreeMap::new(),
            holding: None,
            held: Vec::new(),
            parts: Vec::new(),
        };
        Ok((leader, queries))
    }

    /// Keeps the first failed output, for the end of the run: a sink cannot return it.
    pub fn record(&mut self, result: Result<(), OutputError>) {
        if let Err(error) = result {
            self.first_error.get_or_insert(error);
        }
    }

    /// Notes where a sink's input frontier stands.
    pub fn note_frontier(&mut self, sink: &'static str, frontier: Time) {
        self.sink_frontiers.insert(sink, frontier);
    }

    /// Whether every sink that has run has passed `cut`.
    pub fn sinks_passed(&self, cut: Time) -> bool {
        self.sink_frontiers
            .values()
            .all(|&frontier| frontier >= cut)
    }

    /// Writes a dead letter, or holds it back while a checkpoint before its time is taken.
    pub fn dead_letter(&mut self, time: Time, letter: DeadLetter) {
        if self.holding.is_some_and(|cut| time >= cut) {
            self.held.push(letter);
            return;
        }
        self.collector.dead_letters += 1;
        let result = self.files.dead_letter(&letter);
        self.record(result);
    }

    /// The checkpoint is taken: writes the dead letters held back for it.
    pub fn release_held(&mut self) {
        self.holding = None;
        for letter in std::mem::take(&mut self.held) {
            self.collector.dead_letters += 1;
            let result = self.files.dead_letter(&letter);
            self.record(result);
        }
    }

    /// Once the graph is done: waits for the snapshot writer, flushes the files, and writes
    /// and returns the summary. The first output that failed fails the run here.
    pub fn finish(
        &mut self,
        plan: &Plan,
        out: &Path,
        workers: usize,
        started: Instant,
        reading: ReadingEnd,
    ) -> Result<Summary, RunError> {
        let snapshots = self.snapshots.finish();
        if let Some(error) = self.first_error.take() {
            return Err(error.into());
        }
        self.files.flush()?;
        let end = RunEnd {
            spec_hash: self.spec_hash.clone(),
            workers,
            elapsed_secs: started.elapsed().as_secs_f64(),
            snapshots,
            stopped_by_signal: reading.stopped_by_signal,
            horizon: reading.horizon,
            max_read_ahead_epochs: reading.max_read_ahead_epochs,
        };
        let summary = Summary::new(&self.collector, plan, end);
        summary.write(&out.join("summary.json"))?;
        Ok(summary)
    }
}
