//! Worker 0's share of the work that is not reading: the output files, the snapshot writer,
//! the bookkeeping, and the summary at the end.

use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Instant;

use dataflows::fact::Time;
use dataflows::plan::Plan;
use serde_json::Value as Json;

use crate::collect::queries::{self, Queries};
use crate::publish::SnapshotStore;
use crate::runtime::collector::Collector;
use crate::runtime::output::{OutputError, OutputFiles};
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
    pub fn start(spec: &Spec, options: &RunOptions) -> Result<(Leader, Queries), RunError> {
        let plan = &spec.plan;
        let mut files = OutputFiles::create(&options.out)?;
        let queries = match &options.queries {
            Some(path) => queries::read(path, plan).map_err(|source| RunError::Queries {
                path: path.clone(),
                source,
            })?,
            None => Queries::default(),
        };
        for error in &queries.errors {
            files.query_error(error)?;
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
        let leader = Leader {
            files,
            live_answers: None,
            next_version,
            collector: Collector::new(queries.errors.len() as u64),
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
        };
        Ok((leader, queries))
    }

    /// Keeps the first failed output, for the end of the run: a sink cannot return it.
    pub fn record(&mut self, result: Result<(), OutputError>) {
        if let Err(error) = result {
            self.first_error.get_or_insert(error);
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
