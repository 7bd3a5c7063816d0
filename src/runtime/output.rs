//! The line files a run writes under `OUT/` (answers, metrics, dead letters), and the records
//! readers send to worker 0 for them.
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
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::collect::queries::QueryError;
use crate::runtime::collector::Reading;
use crate::runtime::summary::ExactSummary;

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

    /// Opens the run's files in `dir` to go on from a checkpoint: each is cut back to the
    /// length `lengths` gives it (what was written before the cut), and appended to. A file
    /// shorter than that, or missing, is an error naming it.
    pub fn resume(dir: &Path, lengths: &BTreeMap<String, u64>) -> Result<Self, OutputError> {
        let open = |name: &str| -> Result<BufWriter<File>, OutputError> {
            let path = dir.join(name);
            let failed = |source| OutputError {
                path: path.clone(),
                source,
            };
            let length = lengths.get(name).copied().unwrap_or(0);
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(length == 0)
                .truncate(false)
                .open(&path)
                .map_err(failed)?;
            let now = file.metadata().map_err(failed)?.len();
            if now < length {
                return Err(failed(std::io::Error::other(format!(
                    "{now} bytes, shorter than the {length} the checkpoint recorded: it was \
                     changed since (start over with --fresh)"
                ))));
            }
            file.set_len(length).map_err(failed)?;
            let mut file = file;
            std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).map_err(failed)?;
            Ok(BufWriter::new(file))
        };
        Ok(OutputFiles {
            answers: open("answers.jsonl")?,
            metrics: open("metrics.jsonl")?,
            dead_letters: open("dead-letter.jsonl")?,
            dir: dir.to_owned(),
        })
    }

    /// Flushes every file and returns their lengths, by name: what a checkpoint records.
    pub fn lengths(&mut self) -> Result<BTreeMap<String, u64>, OutputError> {
        self.flush()?;
        let mut lengths = BTreeMap::new();
        for name in ["answers.jsonl", "metrics.jsonl", "dead-letter.jsonl"] {
            let path = self.dir.join(name);
            let length = std::fs::metadata(&path)
                .map_err(|source| OutputError {
                    path: path.clone(),
                    source,
                })?
                .len();
            lengths.insert(name.to_owned(), length);
        }
        Ok(lengths)
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

    /// Appends an epoch's metrics, with the model version serving, how reading stands and
    /// the seconds since the outputs were created (the line's one field that depends on
    /// timing, for plots of speed over the run).
    pub fn metrics(
        &mut self,
        metrics: &EpochMetrics,
        model_version: u64,
        reading: &Reading,
        elapsed_secs: f64,
    ) -> Result<(), OutputError> {
        let mut line = serde_json::to_value(metrics).unwrap_or(Json::Null);
        if let Json::Object(object) = &mut line {
            // an empty calibration is left out, as it always was
            for scores in ["epoch_scores", "running"] {
                if let Some(Json::Object(scores)) = object.get_mut(scores)
                    && scores
                        .get("calibration")
                        .and_then(Json::as_array)
                        .is_some_and(Vec::is_empty)
                {
                    scores.remove("calibration");
                }
            }
            object.insert("model_version".to_owned(), json!(model_version));
            object.insert("elapsed_secs".to_owned(), json!(elapsed_secs));
            object.insert(
                "reading".to_owned(),
                serde_json::to_value(reading).unwrap_or(Json::Null),
            );
        }
        Self::line(&mut self.metrics, &self.dir, "metrics.jsonl", &line)
    }

    /// Appends a challenger's metrics of an epoch, as a line of its own that names it:
    /// `{"model": name, "epoch": e, "epoch_scores": {...}, "running": {...}, ...}`.
    pub fn challenger_metrics(
        &mut self,
        model: &str,
        metrics: &EpochMetrics,
        model_version: u64,
    ) -> Result<(), OutputError> {
        let mut line = serde_json::to_value(metrics).unwrap_or(Json::Null);
        if let Json::Object(object) = &mut line {
            object.insert("model".to_owned(), json!(model));
            object.insert("model_version".to_owned(), json!(model_version));
        }
        Self::line(&mut self.metrics, &self.dir, "metrics.jsonl", &line)
    }

    /// Appends an epoch's comparison of the variants and its drifts, as a line of its own:
    /// `{"epoch": e, "comparisons": [...], "drifts": [...]}`.
    pub fn variant_report(
        &mut self,
        report: &dataflows::learn::compare::VariantReport,
    ) -> Result<(), OutputError> {
        let line = serde_json::to_value(report).unwrap_or(Json::Null);
        Self::line(&mut self.metrics, &self.dir, "metrics.jsonl", &line)
    }

    /// Appends the exact regression's report of an epoch, as a line of its own:
    /// `{"epoch": e, "exact": {...}}`.
    pub fn exact(
        &mut self,
        plan: &dataflows::plan::Plan,
        report: &ExactReport,
    ) -> Result<(), OutputError> {
        // through a JSON value, whose maps are sorted, as every line of the file is
        let line = json!({ "epoch": report.epoch, "exact": ExactSummary::of(plan, report) });
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
