//! The summary a run ends with: [`Summary`], written once to `OUT/summary.json` and returned.
//!
//! The file lists its keys sorted, as it always has (scripts and tests read it by key): it is
//! written through a JSON value, whose maps are sorted, and the fields are declared in the
//! same order for the reader's sake.

use std::collections::BTreeMap;
use std::path::Path;

use dataflows::learn::compare::PairedComparison;
use dataflows::learn::evaluate::EpochMetrics;
use dataflows::learn::ridge::{ExactModel, ExactReport};
use dataflows::plan::Plan;
use dataflows::publish::model::ModelVersion;
use serde::{Deserialize, Serialize};

use crate::runtime::collector::Collector;
use crate::runtime::output::OutputError;
use crate::runtime::snapshot_writer::SnapshotReport;

/// What a finished run did: `OUT/summary.json`, from process 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// AUC of the servable model's progressive predictions.
    pub auc: Option<f64>,
    /// Lines (and files) dead-lettered.
    pub dead_lettered: u64,
    /// Wall-clock seconds the run took.
    pub elapsed_secs: f64,
    /// Epochs from the first event time read to the last, inclusive.
    pub epochs: u64,
    /// Epochs that had labelled examples.
    pub epochs_with_examples: u64,
    /// The exact regression's final report, when the spec asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<ExactSummary>,
    /// Labelled examples scored.
    pub examples: u64,
    /// Examples that entered the feature lookups.
    pub examples_in: u64,
    /// A digest of every fact read, the same at every worker layout.
    pub facts_digest: String,
    /// Facts read per wall-clock second.
    pub facts_per_sec: f64,
    /// Lines that became facts or corrections.
    pub facts_read: u64,
    /// The epoch of the first event time read.
    pub first_epoch: Option<u64>,
    /// The end of what was read: labels due after it are not learned.
    pub horizon: u64,
    /// `lookup_outputs / examples_in`.
    pub join_output_per_example: Option<f64>,
    /// Examples whose label was due after the horizon.
    pub labels_beyond_input: u64,
    /// The epoch of the last event time read.
    pub last_epoch: Option<u64>,
    /// Late facts admitted to the open epoch.
    pub late_admitted: u64,
    /// Late facts dead-lettered.
    pub late_dropped: u64,
    /// Progressive log loss of the servable model.
    pub logloss: Option<f64>,
    /// Records that left the feature lookups.
    pub lookup_outputs: u64,
    /// How many epochs reading was at most ahead of training.
    pub max_read_ahead_epochs: u64,
    /// The model's name.
    pub model: String,
    /// A digest of the last version's weights ([`model_digest`]).
    pub model_digest: Option<String>,
    /// The last version published.
    pub model_versions: u64,
    /// Every variant's figures by name, the champion's (the top-level figures) included.
    #[serde(default)]
    pub models: BTreeMap<String, VariantSummary>,
    /// AUC of the workers' live replicas.
    pub online_auc: Option<f64>,
    /// Log loss of the workers' live replicas.
    pub online_logloss: Option<f64>,
    /// Labels for examples never seen.
    pub orphaned_labels: u64,
    /// The pipeline's name.
    pub pipeline: String,
    /// Positive labels among the examples.
    pub positives: u64,
    /// Probe queries answered.
    pub queries_answered: u64,
    /// Malformed probe queries.
    pub query_errors: u64,
    /// What the snapshot writer did.
    pub snapshots: SnapshotReport,
    /// Reading counts per source, by name.
    pub sources: BTreeMap<String, SourceCounts>,
    /// The spec's hash.
    pub spec_hash: String,
    /// A signal ended the reading (rather than the end of the input).
    pub stopped_by_signal: bool,
    /// The epoch length in event-time seconds.
    pub tick_secs: u64,
    /// AUC of the ground-truth probabilities, when the data has them.
    pub truth_auc: Option<f64>,
    /// Log loss of the ground-truth probabilities, when the data has them.
    pub truth_logloss: Option<f64>,
    /// Examples that will never have a label.
    pub unlabeled: u64,
    /// Workers in the run, over every process.
    pub workers: usize,
}

/// One variant's figures over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantSummary {
    /// Progressive AUC of its servable model.
    pub auc: Option<f64>,
    /// Whether it is the champion, whose versions serve.
    pub champion: bool,
    /// Drifts detected on its progressive loss.
    #[serde(default)]
    pub drifts: u64,
    /// Progressive log loss of its servable model.
    pub logloss: Option<f64>,
    /// A digest of its last version's weights ([`model_digest`]).
    pub model_digest: Option<String>,
    /// AUC of its workers' live replicas.
    pub online_auc: Option<f64>,
    /// Log loss of its workers' live replicas.
    pub online_logloss: Option<f64>,
    /// The last version it published.
    pub versions: u64,
    /// A challenger against the champion over the last paired window.
    #[serde(default)]
    pub vs_champion: Option<PairedComparison>,
}

impl VariantSummary {
    /// The figures of a variant from its latest metrics and newest version.
    fn of(champion: bool, metrics: Option<&EpochMetrics>, model: Option<&ModelVersion>) -> Self {
        let running = metrics.map(|metrics| &metrics.running);
        VariantSummary {
            auc: running.and_then(|running| running.auc),
            champion,
            logloss: running.and_then(|running| running.logloss),
            model_digest: model.map(model_digest),
            online_auc: running.and_then(|running| running.online_auc),
            online_logloss: running.and_then(|running| running.online_logloss),
            versions: model.map_or(0, |model| model.version),
            vs_champion: None,
            drifts: 0,
        }
    }
}

/// Every variant's figures: the champion's, and each challenger's.
fn variant_summaries(collector: &Collector, plan: &Plan) -> BTreeMap<String, VariantSummary> {
    let champion = VariantSummary::of(
        true,
        collector.last_epoch.as_ref(),
        collector.model.as_deref(),
    );
    let challengers = plan.challengers.iter().map(|model| {
        let run = collector.challengers.get(&model.name);
        let summary = VariantSummary::of(
            false,
            run.and_then(|run| run.last_epoch.as_ref()),
            run.and_then(|run| run.model.as_deref()),
        );
        (model.name.clone(), summary)
    });
    let mut summaries: BTreeMap<String, VariantSummary> =
        std::iter::once((plan.model.name.clone(), champion))
            .chain(challengers)
            .collect();
    for comparison in &collector.comparisons {
        if let Some(summary) = summaries.get_mut(&comparison.challenger) {
            summary.vs_champion = Some(comparison.clone());
        }
    }
    for drift in &collector.drifts {
        if let Some(summary) = summaries.get_mut(&drift.model) {
            summary.drifts = summary.drifts.max(drift.drifts);
        }
    }
    summaries
}

/// How reading one source went, over every worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    /// Lines that became facts or corrections.
    pub facts: u64,
    /// Facts later than the lateness allows, admitted to the open epoch.
    pub late_admitted: u64,
    /// Facts dead-lettered for arriving too late.
    pub late_dropped: u64,
    /// Lines dead-lettered for being malformed.
    pub malformed: u64,
}

/// An exact regression's report, its weights named: in the summary, and in `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactSummary {
    /// The epoch's new examples scored.
    pub epoch_examples: u64,
    /// Their root mean squared error.
    pub epoch_rmse: Option<f64>,
    /// The live examples the weights were solved from.
    pub examples: i64,
    /// The regression's name.
    pub name: Option<String>,
    /// Progressive root mean squared error over every epoch so far.
    pub rmse: Option<f64>,
    /// Root mean squared error of the weights over their examples.
    pub rmse_train: Option<f64>,
    /// Examples scored over every epoch so far.
    pub scored: u64,
    /// Live examples left out (a missing target or a value out of range).
    pub skipped: i64,
    /// False if the last system could not be solved.
    pub solved: bool,
    /// The weights by input field name (and `intercept`); `null` when not finite.
    pub weights: BTreeMap<String, Option<f64>>,
    /// A hash of the weights, in input order: equal digests mean bit-identical weights.
    pub weights_digest: String,
}

impl ExactSummary {
    /// The summary of a report of `plan`'s exact regression.
    pub fn of(plan: &Plan, report: &ExactReport) -> Self {
        let weights = exact_weight_names(plan)
            .into_iter()
            .zip(&report.model.weights)
            .map(|(name, &weight)| (name, weight.is_finite().then_some(weight)))
            .collect();
        ExactSummary {
            epoch_examples: report.epoch_scores.examples,
            epoch_rmse: report.epoch_scores.rmse,
            examples: report.model.examples,
            name: plan.exact.as_ref().map(|exact| exact.name.clone()),
            rmse: report.running.rmse,
            rmse_train: report.model.rmse_train,
            scored: report.running.examples,
            skipped: report.skipped,
            solved: report.model.solved,
            weights,
            weights_digest: weights_digest(&report.model.weights),
        }
    }
}

/// What the run knows at its end besides what the [`Collector`] gathered.
pub struct RunEnd {
    /// The spec's hash.
    pub spec_hash: String,
    /// Workers over every process.
    pub workers: usize,
    /// Wall-clock seconds the run took.
    pub elapsed_secs: f64,
    /// What the snapshot writer did.
    pub snapshots: SnapshotReport,
    /// A signal ended the reading.
    pub stopped_by_signal: bool,
    /// The agreed end of what was read.
    pub horizon: u64,
    /// How far reading ran ahead of training, in epochs.
    pub max_read_ahead_epochs: u64,
}

impl Summary {
    /// The summary of a finished run.
    pub fn new(collector: &Collector, plan: &Plan, end: RunEnd) -> Self {
        let reads = || collector.reads.values();
        let range = reads()
            .filter_map(|read| read.time_range)
            .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
        let first_epoch = range.map(|(first, _)| plan.epoch(first));
        let last_epoch = range.map(|(_, last)| plan.epoch(last));
        let digest = reads().fold(0u64, |digest, read| digest.wrapping_add(read.digest));
        let running = collector
            .last_epoch
            .as_ref()
            .map(|metrics| metrics.running.clone())
            .unwrap_or_default();
        let facts = collector.facts();
        let elapsed_secs = end.elapsed_secs;
        Summary {
            auc: running.auc,
            dead_lettered: collector.dead_letters,
            elapsed_secs,
            epochs: match (first_epoch, last_epoch) {
                (Some(first), Some(last)) => last - first + 1,
                _ => 0,
            },
            epochs_with_examples: collector.epochs_with_examples,
            examples: running.examples,
            examples_in: running.examples_in,
            exact: exact_summary(plan, collector.exact.as_ref()),
            facts_digest: format!("{digest:016x}"),
            facts_per_sec: if elapsed_secs > 0.0 {
                facts as f64 / elapsed_secs
            } else {
                0.0
            },
            facts_read: facts,
            first_epoch,
            horizon: end.horizon,
            join_output_per_example: running.join_output_per_example,
            labels_beyond_input: running.beyond_input,
            last_epoch,
            late_admitted: reads().map(|read| read.late_admitted).sum(),
            late_dropped: reads().map(|read| read.late_dropped).sum(),
            logloss: running.logloss,
            lookup_outputs: running.lookup_outputs,
            max_read_ahead_epochs: end.max_read_ahead_epochs,
            model: plan.model.name.clone(),
            model_digest: collector.model.as_ref().map(|model| model_digest(model)),
            models: variant_summaries(collector, plan),
            model_versions: collector.model.as_ref().map_or(0, |model| model.version),
            online_auc: running.online_auc,
            online_logloss: running.online_logloss,
            orphaned_labels: running.orphaned,
            pipeline: plan.name.clone(),
            positives: running.positives,
            queries_answered: collector.answers,
            query_errors: collector.query_errors,
            snapshots: end.snapshots,
            sources: collector.source_counts(plan),
            spec_hash: end.spec_hash,
            stopped_by_signal: end.stopped_by_signal,
            tick_secs: plan.tick_secs,
            truth_auc: running.truth_auc,
            truth_logloss: running.truth_logloss,
            unlabeled: running.unlabeled,
            workers: end.workers,
        }
    }

    /// The summary as pretty-printed JSON, its keys sorted at every level.
    pub fn to_json_text(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(&serde_json::to_value(self)?)
    }

    /// Writes the summary to `path`, as [`Summary::to_json_text`] and a newline.
    pub fn write(&self, path: &Path) -> Result<(), OutputError> {
        let failed = |source| OutputError {
            path: path.to_owned(),
            source,
        };
        let text = self.to_json_text().map_err(|error| failed(error.into()))?;
        std::fs::write(path, text + "\n").map_err(failed)
    }

    /// Reads a summary written by [`Summary::write`].
    pub fn read(path: &Path) -> Result<Self, OutputError> {
        let failed = |source| OutputError {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(failed)?;
        serde_json::from_str(&text).map_err(|error| failed(error.into()))
    }
}

/// The exact regression's summary: its last report, or its zero weights if it saw no example.
fn exact_summary(plan: &Plan, report: Option<&ExactReport>) -> Option<ExactSummary> {
    let exact = plan.exact.as_ref()?;
    Some(match report {
        Some(report) => ExactSummary::of(plan, report),
        None => ExactSummary::of(
            plan,
            &ExactReport {
                epoch: 0,
                model: ExactModel {
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
    })
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
fn exact_weight_names(plan: &Plan) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            auc: Some(0.94),
            dead_lettered: 3,
            elapsed_secs: 7.5,
            epochs: 839,
            epochs_with_examples: 672,
            examples: 136_336,
            examples_in: 136_336,
            exact: Some(ExactSummary {
                epoch_examples: 4,
                epoch_rmse: Some(0.5),
                examples: 10,
                name: Some("score".into()),
                rmse: None,
                rmse_train: Some(0.25),
                scored: 9,
                skipped: 1,
                solved: true,
                weights: BTreeMap::from([("a".into(), Some(1.5)), ("intercept".into(), None)]),
                weights_digest: "0011223344556677".into(),
            }),
            facts_digest: "e0f2396a8df1af9a".into(),
            facts_per_sec: 188_645.75,
            facts_read: 1_435_080,
            first_epoch: Some(490_896),
            horizon: 1_770_243_099,
            join_output_per_example: Some(1.0),
            labels_beyond_input: 0,
            last_epoch: Some(491_734),
            late_admitted: 2,
            late_dropped: 1,
            logloss: Some(0.284),
            lookup_outputs: 136_336,
            max_read_ahead_epochs: 24,
            model: "pooch-predictor".into(),
            model_digest: Some("24ef6be09381bcb0".into()),
            models: BTreeMap::from([(
                "pooch-predictor".into(),
                VariantSummary {
                    champion: true,
                    logloss: Some(0.284),
                    versions: 672,
                    ..VariantSummary::default()
                },
            )]),
            model_versions: 672,
            online_auc: None,
            online_logloss: Some(0.28),
            orphaned_labels: 0,
            pipeline: "sniffable".into(),
            positives: 48_349,
            queries_answered: 8,
            query_errors: 0,
            snapshots: SnapshotReport {
                errors: vec!["disk full".into()],
                skipped: 1,
                written: 671,
                already_stored: 0,
            },
            sources: BTreeMap::from([(
                "posts".into(),
                SourceCounts {
                    facts: 136_336,
                    late_admitted: 2,
                    late_dropped: 1,
                    malformed: 3,
                },
            )]),
            spec_hash: "31b65a719b098e1d".into(),
            stopped_by_signal: false,
            tick_secs: 3600,
            truth_auc: Some(0.96),
            truth_logloss: Some(0.23),
            unlabeled: 0,
            workers: 2,
        }
    }

    #[test]
    fn a_summary_reads_back_as_written() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("summary.json");
        let written = summary();
        written.write(&path).expect("written");
        assert_eq!(Summary::read(&path).expect("read back"), written);
    }

    #[test]
    fn the_file_lists_its_keys_sorted_and_leaves_out_a_missing_exact() {
        let mut written = summary();
        let text = written.to_json_text().expect("serialized");
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("  \"")?.split('"').next())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        assert!(keys.contains(&"exact"));
        // the fields are declared in the file's order, at every level
        assert_eq!(
            serde_json::to_string_pretty(&written).expect("serialized"),
            text
        );
        // the shape `./run.sh`'s summary_field reads
        assert!(text.contains("\n  \"logloss\": 0.284,\n"), "{text}");

        written.exact = None;
        let text = written.to_json_text().expect("serialized");
        assert!(!text.contains("\"exact\""));
        assert_eq!(
            serde_json::from_str::<Summary>(&text).expect("read back"),
            written
        );
    }

    #[test]
    fn a_score_that_is_not_finite_is_written_as_null() {
        let mut written = summary();
        written.logloss = Some(f64::NAN);
        let text = written.to_json_text().expect("serialized");
        assert!(text.contains("\n  \"logloss\": null,\n"), "{text}");
        let read = serde_json::from_str::<Summary>(&text).expect("read back");
        assert_eq!(read.logloss, None);
    }
}
