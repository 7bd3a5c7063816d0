//! What worker 0 learns over a run from the graph's outputs: reading counts and positions,
//! the newest version, the latest metrics. Progress lines, metrics and the summary read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflows::learn::compare::{DriftAlarm, PairedComparison};
use dataflows::learn::evaluate::EpochMetrics;
use dataflows::learn::ridge::ExactReport;
use dataflows::plan::Plan;
use dataflows::publish::model::ModelVersion;
use serde::Serialize;

use crate::runtime::output::ReadProgress;
use crate::runtime::summary::SourceCounts;

/// What worker 0 learns over a run, for progress lines and the summary.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Collector {
    /// The latest counts of every reader, by (worker, source).
    pub reads: BTreeMap<(u32, u16), ReadProgress>,
    /// Each worker's reading positions at the epochs it closed, most recent last.
    positions: BTreeMap<u32, BTreeMap<u64, BTreeMap<String, u64>>>,
    /// Dead letters received.
    pub dead_letters: u64,
    /// The latest epoch metrics.
    pub last_epoch: Option<EpochMetrics>,
    /// Epochs that had labelled examples.
    pub epochs_with_examples: u64,
    /// The newest published version.
    pub model: Option<Arc<ModelVersion>>,
    /// Answers written.
    pub answers: u64,
    /// Malformed queries.
    pub query_errors: u64,
    /// The exact regression's latest report.
    pub exact: Option<ExactReport>,
    /// What each challenger did, by name.
    pub challengers: BTreeMap<String, ChallengerRun>,
    /// The latest comparison of each challenger with the champion.
    pub comparisons: Vec<PairedComparison>,
    /// Every drift detected, in order.
    pub drifts: Vec<DriftAlarm>,
}

/// What worker 0 learns of one challenger over a run (in a checkpoint with the rest).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ChallengerRun {
    /// Its latest epoch metrics.
    pub last_epoch: Option<EpochMetrics>,
    /// Its newest version.
    pub model: Option<Arc<ModelVersion>>,
}

/// How reading stands, in every line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reading {
    /// The reading frontier: every worker has closed the epochs before it.
    pub frontier: Option<u64>,
    /// The frontier's epoch.
    pub frontier_epoch: Option<u64>,
    /// Counts per source, by name.
    pub sources: BTreeMap<String, SourceCounts>,
}

/// How many closed epochs of reading positions are kept per worker.
const POSITIONS_KEPT: usize = 256;

impl Collector {
    /// A collector that starts knowing how many queries were malformed.
    pub fn new(query_errors: u64) -> Self {
        Collector {
            query_errors,
            ..Collector::default()
        }
    }

    /// Facts read so far, over all workers.
    pub fn facts(&self) -> u64 {
        self.reads.values().map(|read| read.facts).sum()
    }

    /// The newest published version's number, 0 before the first.
    pub fn model_version(&self) -> u64 {
        self.model.as_ref().map_or(0, |model| model.version)
    }

    /// Notes a reader's progress.
    pub fn record_progress(&mut self, read: ReadProgress) {
        let kept = self.positions.entry(read.worker).or_default();
        kept.entry(read.open).or_default().extend(
            read.positions
                .iter()
                .map(|(key, value)| (key.clone(), *value)),
        );
        while kept.len() > POSITIONS_KEPT {
            kept.pop_first();
        }
        self.reads.insert((read.worker, read.source), read);
    }

    /// The reading positions as of `time`: for each worker, those it recorded when it last
    /// closed an epoch at or before `time`. Every fact before them had been given to the graph.
    pub fn positions_at(&self, time: u64) -> BTreeMap<String, u64> {
        let mut positions = BTreeMap::new();
        for by_open in self.positions.values() {
            if let Some((_, at)) = by_open.range(..=time).next_back() {
                positions.extend(at.iter().map(|(key, value)| (key.clone(), *value)));
            }
        }
        positions
    }

    /// What a checkpoint at `cut` keeps: everything but the readers' counts (the readings
    /// in the checkpoint carry them, and send them again on resuming) and the positions
    /// recorded at or after the cut.
    pub fn at_cut(&self, cut: u64) -> Collector {
        let mut kept = self.clone();
        kept.reads.clear();
        for by_open in kept.positions.values_mut() {
            by_open.retain(|open, _| *open < cut);
        }
        kept
    }

    /// Copies the reading counters into the serving state's metrics.
    pub fn report_to(&self, counters: &crate::serve::serving::ServingCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        let max_time = self
            .reads
            .values()
            .filter_map(|read| read.time_range.map(|(_, last)| last))
            .max()
            .unwrap_or(0);
        counters.facts_read.store(self.facts(), Relaxed);
        counters.dead_letters.store(self.dead_letters, Relaxed);
        counters.max_time_read.store(max_time, Relaxed);
    }

    /// Reading counts per source, summed over workers, by source name.
    pub fn source_counts(&self, plan: &Plan) -> BTreeMap<String, SourceCounts> {
        let mut sources: BTreeMap<String, SourceCounts> = BTreeMap::new();
        for read in self.reads.values() {
            let name = plan
                .sources
                .get(usize::from(read.source))
                .map(|source| source.name.clone())
                .unwrap_or_default();
            let counts = sources.entry(name).or_default();
            counts.facts += read.facts;
            counts.malformed += read.malformed;
            counts.late_dropped += read.late_dropped;
            counts.late_admitted += read.late_admitted;
        }
        sources
    }

    /// How reading stands, per source and overall, for the metrics.
    pub fn reading(&self, plan: &Plan) -> Reading {
        // the reading frontier: every worker has closed the epochs before it
        let mut open_by_worker: BTreeMap<u32, u64> = BTreeMap::new();
        for read in self.reads.values() {
            let open = open_by_worker.entry(read.worker).or_insert(read.open);
            *open = (*open).max(read.open);
        }
        let frontier = open_by_worker.values().min().copied();
        Reading {
            frontier,
            frontier_epoch: frontier.map(|time| plan.epoch(time)),
            sources: self.source_counts(plan),
        }
    }
}
