//! What a run writes under `OUT/`, and the summary it ends with.
//!
//! Only worker 0 of process 0 writes: every output stream of the graph is gathered there.
//! Lines are written as they arrive, so `answers.jsonl` and `metrics.jsonl` can be followed
//! while a run is in progress.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dataflows::event::Answer;
use dataflows::learn::evaluate::EpochMetrics;
use dataflows::learn::ridge::ExactReport;
use dataflows::publish::model::ModelVersion;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::collect::queries::QueryError;

/// A line that did not become a fact, with where it was and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source's name.
    pub source: String,
    /// The file.
    pub file: String,
    /// The 1-based line number.
    pub line: u64,
    /// The byte offset of the line's start.
    pub offset: u64,
    /// Why the line was set aside.
    pub reason: String,
    /// The line as read (lossily decoded, cut at [`RAW_LIMIT`] bytes).
    pub raw: String,
}

/// How much of a dead line is kept.
pub const RAW_LIMIT: usize = 1024;

/// A reader's running counts for one source, sent at every epoch it closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadProgress {
    /// The worker reading.
    pub worker: u32,
    /// The source.
    pub source: u16,
    /// Lines that became facts or corrections.
    pub facts: u64,
    /// Lines dead-lettered for being malformed.
    pub malformed: u64,
    /// Facts dead-lettered for arriving later than the source's lateness allows.
    pub late_dropped: u64,
    /// Facts later than that, admitted to the open epoch.
    pub late_admitted: u64,
    /// Earliest and latest event time read.
    pub time_range: Option<(u64, u64)>,
    /// The start of the worker's open epoch: everything before it has been given to the graph.
    pub open: u64,
    /// The worker's digest of the facts read so far (on source 0's record only).
    pub digest: u64,
    /// Where the worker's reading of each of the source's files stands.
    pub positions: BTreeMap<String, u64>,
}

/// The files of an output directory.
pub struct OutputFiles {
    answers: BufWriter<File>,
    metrics: BufWriter<File>,
    dead_letters: BufWriter<File>,
    dir: PathBuf,
}

/// An output file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct OutputError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

fn create(path: PathBuf) -> Result<BufWriter<File>, OutputError> {
    File::create(&path)
        .map(BufWriter::new)
        .map_err(|source| OutputError { path, source })
}

impl OutputFiles {
    /// Creates (or truncates) the run's files in `dir`, creating `dir` if need be.
    pub fn create(dir: &Path) -> Result<Self, OutputError> {
        std::fs::create_dir_all(dir).map_err(|source| OutputError {
            path: dir.to_owned(),
            source,
        })?;
        Ok(OutputFiles {
            answers: create(dir.join("answers.jsonl"))?,
            metrics: create(dir.join("metrics.jsonl"))?,
            dead_letters: create(dir.join("dead-letter.jsonl"))?,
            dir: dir.to_owned(),
        })
    }

    fn line(
        writer: &mut BufWriter<File>,
        dir: &Path,
        name: &str,
        value: &impl Serialize,
    ) -> Result<(), OutputError> {
        let error = |source| OutputError {
            path: dir.join(name),
            source,
        };
        serde_json::to_writer(&mut *writer, value).map_err(|e| error(e.into()))?;
        writer.write_all(b"\n").map_err(error)
    }

    /// Appends an answer, naming the query by its id.
    pub fn answer(&mut self, answer: &Answer, id: &Json) -> Result<(), OutputError> {
        /// The line of an answer, its fields in this order.
        #[derive(Serialize)]
        struct Line<'a> {
            query: &'a Json,
            probability: f64,
            model: &'a str,
            version: u64,
            features_epoch: u64,
            features: BTreeMap<&'a str, f64>,
        }
        let line = Line {
            query: id,
            probability: answer.probability.0,
            model: &answer.model,
            version: answer.version,
            features_epoch: answer.features_epoch,
            features: answer
                .features
                .iter()
                .map(|(name, value)| (name.as_str(), value.0))
                .collect(),
        };
        Self::line(&mut self.answers, &self.dir, "answers.jsonl", &line)?;
        // answers are what a user waits for: make each visible at once
        self.answers.flush().map_err(|source| OutputError {
            path: self.dir.join("answers.jsonl"),
            source,
        })
    }

    /// Appends the error line of a malformed query.
    pub fn query_error(&mut self, error: &QueryError) -> Result<(), OutputError> {
        let line = json!({ "query": error.id, "line": error.line, "error": error.reason });
        Self::line(&mut self.answers, &self.dir, "answers.jsonl", &line)
    }

    /// Appends an epoch's metrics, with the model version serving and how reading stands.
    pub fn metrics(
        &mut self,
        metrics: &EpochMetrics,
        model_version: u64,
        reading: Json,
    ) -> Result<(), OutputError> {
        let mut line = serde_json::to_value(metrics).unwrap_or(Json::Null);
        if let Json::Object(object) = &mut line {
            object.insert("model_version".to_owned(), json!(model_version));
            object.insert("reading".to_owned(), reading);
        }
        Self::line(&mut self.metrics, &self.dir, "metrics.jsonl", &line)
    }

    /// Appends the exact regression's report of an epoch, as a line of its own:
    /// `{"epoch": e, "exact": {...}}`.
    pub fn exact(
        &mut self,
        plan: &dataflows::plan::Plan,
        report: &ExactReport,
    ) -> Result<(), OutputError> {
        let line = json!({ "epoch": report.epoch, "exact": exact_json(plan, report) });
        Self::line(&mut self.metrics, &self.dir, "metrics.jsonl", &line)
    }

    /// Appends a dead letter.
    pub fn dead_letter(&mut self, letter: &DeadLetter) -> Result<(), OutputError> {
        Self::line(
            &mut self.dead_letters,
            &self.dir,
            "dead-letter.jsonl",
            letter,
        )
    }

    /// Flushes every file.
    pub fn flush(&mut self) -> Result<(), OutputError> {
        for (writer, name) in [
            (&mut self.answers, "answers.jsonl"),
            (&mut self.metrics, "metrics.jsonl"),
            (&mut self.dead_letters, "dead-letter.jsonl"),
        ] {
            writer.flush().map_err(|source| OutputError {
                path: self.dir.join(name),
                source,
            })?;
        }
        Ok(())
    }
}

/// A hash of a model's weights: equal digests mean bit-identical weights.
pub fn model_digest(model: &ModelVersion) -> String {
    let weights = &model.weights;
    let mut bytes = Vec::with_capacity(weights.len() * 8);
    for (index, value) in weights.indices().iter().zip(weights.values()) {
        bytes.extend_from_slice(&index.to_le_bytes());
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// The names of an exact regression's weights: its input fields, then `intercept`.
pub fn exact_weight_names(plan: &dataflows::plan::Plan) -> Vec<String> {
    let Some(exact) = &plan.exact else {
        return Vec::new();
    };
    let source = plan.example_source();
    let mut names: Vec<String> = exact
        .input_fields
        .iter()
        .map(|&field| source.fields[field].name.clone())
        .collect();
    if exact.intercept {
        names.push("intercept".to_owned());
    }
    names
}

/// A hash of weights: equal digests mean bit-identical weights.
fn weights_digest(weights: &[f64]) -> String {
    let bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// An exact regression's report as JSON, its weights named.
pub fn exact_json(plan: &dataflows::plan::Plan, report: &ExactReport) -> Json {
    let weights: serde_json::Map<String, Json> = exact_weight_names(plan)
        .into_iter()
        .zip(&report.model.weights)
        .map(|(name, weight)| (name, json!(weight)))
        .collect();
    json!({
        "name": plan.exact.as_ref().map(|exact| exact.name.as_str()),
        "examples": report.model.examples,
        "skipped": report.skipped,
        "weights": weights,
        "weights_digest": weights_digest(&report.model.weights),
        "solved": report.model.solved,
        "rmse_train": report.model.rmse_train,
        "epoch_examples": report.epoch_scores.examples,
        "epoch_rmse": report.epoch_scores.rmse,
        "scored": report.running.examples,
        "rmse": report.running.rmse,
    })
}

/// What worker 0 learns over a run, for progress lines and the summary.
#[derive(Default)]
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
    pub model: Option<std::sync::Arc<ModelVersion>>,
    /// Answers written.
    pub answers: u64,
    /// Malformed queries.
    pub query_errors: u64,
    /// The exact regression's latest report.
    pub exact: Option<ExactReport>,
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

    /// Copies the reading counters into the serving state's metrics.
    pub fn report_to(&self, counters: &crate::serve::serving::ServingCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        let facts: u64 = self.reads.values().map(|read| read.facts).sum();
        let max_time = self
            .reads
            .values()
            .filter_map(|read| read.time_range.map(|(_, last)| last))
            .max()
            .unwrap_or(0);
        counters.facts_read.store(facts, Relaxed);
        counters.dead_letters.store(self.dead_letters, Relaxed);
        counters.max_time_read.store(max_time, Relaxed);
    }

    /// How reading stands, per source and overall, for the metrics.
    pub fn reading(&self, plan: &dataflows::plan::Plan) -> Json {
        let mut sources: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        for read in self.reads.values() {
            let name = plan
                .sources
                .get(usize::from(read.source))
                .map(|source| source.name.clone())
                .unwrap_or_default();
            let entry = sources.entry(name).or_insert([0; 4]);
            entry[0] += read.facts;
            entry[1] += read.malformed;
            entry[2] += read.late_dropped;
            entry[3] += read.late_admitted;
        }
        let sources: BTreeMap<String, Json> = sources
            .into_iter()
            .map(|(name, [facts, malformed, late_dropped, late_admitted])| {
                (name, json!({ "facts": facts, "malformed": malformed, "late_dropped": late_dropped, "late_admitted": late_admitted }))
            })
            .collect();
        // the reading frontier: every worker has closed the epochs before it
        let mut open_by_worker: BTreeMap<u32, u64> = BTreeMap::new();
        for read in self.reads.values() {
            let open = open_by_worker.entry(read.worker).or_insert(read.open);
            *open = (*open).max(read.open);
        }
        let frontier = open_by_worker.values().min().copied();
        json!({
            "frontier": frontier,
            "frontier_epoch": frontier.map(|time| plan.epoch(time)),
            "sources": sources,
        })
    }

    /// The summary of a finished run.
    pub fn summary(
        &self,
        plan: &dataflows::plan::Plan,
        spec_hash: &str,
        workers: usize,
        elapsed_secs: f64,
    ) -> Json {
        let reading = self.reading(plan);
        let range = self
            .reads
            .values()
            .filter_map(|read| read.time_range)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        let (first_epoch, last_epoch) = match range {
            Some((first, last)) => (Some(plan.epoch(first)), Some(plan.epoch(last))),
            None => (None, None),
        };
        let late_dropped: u64 = self.reads.values().map(|read| read.late_dropped).sum();
        let late_admitted: u64 = self.reads.values().map(|read| read.late_admitted).sum();
        let digest = self
            .reads
            .values()
            .fold(0u64, |digest, read| digest.wrapping_add(read.digest));
        let running = self
            .last_epoch
            .as_ref()
            .map(|metrics| metrics.running.clone())
            .unwrap_or_default();
        let facts = self.facts();
        let exact = match (&plan.exact, &self.exact) {
            (None, _) => Json::Null,
            (Some(_), Some(report)) => exact_json(plan, report),
            // a regression that saw no example keeps its zero weights
            (Some(exact), None) => exact_json(
                plan,
                &ExactReport {
                    epoch: 0,
                    model: dataflows::learn::ridge::ExactModel {
                        weights: vec![0.0; exact.weights()],
                        examples: 0,
                        rmse_train: None,
                        solved: true,
                    },
                    epoch_scores: Default::default(),
                    running: Default::default(),
                    skipped: 0,
                },
            ),
        };
        let mut summary = json!({
            "pipeline": plan.name,
            "spec_hash": spec_hash,
            "workers": workers,
            "facts_read": facts,
            "facts_digest": format!("{digest:016x}"),
            "dead_lettered": self.dead_letters,
            "late_dropped": late_dropped,
            "late_admitted": late_admitted,
            "sources": reading["sources"],
            "epochs": match (first_epoch, last_epoch) { (Some(first), Some(last)) => last - first + 1, _ => 0 },
            "first_epoch": first_epoch,
            "last_epoch": last_epoch,
            "epochs_with_examples": self.epochs_with_examples,
            "tick_secs": plan.tick_secs,
            "examples": running.examples,
            "positives": running.positives,
            "unlabeled": running.unlabeled,
            "labels_beyond_input": running.beyond_input,
            "orphaned_labels": running.orphaned,
            "model": plan.model.name,
            "model_versions": self.model.as_ref().map_or(0, |model| model.version),
            "model_digest": self.model.as_ref().map(|model| model_digest(model)),
            "logloss": running.logloss,
            "auc": running.auc,
            "online_logloss": running.online_logloss,
            "online_auc": running.online_auc,
            "truth_logloss": running.truth_logloss,
            "truth_auc": running.truth_auc,
            "examples_in": running.examples_in,
            "lookup_outputs": running.lookup_outputs,
            "join_output_per_example": running.join_output_per_example,
            "exact": exact,
            "queries_answered": self.answers,
            "query_errors": self.query_errors,
            "elapsed_secs": elapsed_secs,
            "facts_per_sec": if elapsed_secs > 0.0 { facts as f64 / elapsed_secs } else { 0.0 },
        });
        if let Json::Object(object) = &mut summary
            && exact.is_null()
        {
            object.remove("exact");
        }
        summary
    }
}
