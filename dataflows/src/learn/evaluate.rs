//! Progressive validation: per-epoch and running log loss and AUC of the servable model, and of
//! the ground truth when the data carries it.
//!
//! Outcomes are gathered at worker 0. Each epoch's AUC is exact; the running AUC is computed
//! from a fine histogram of logits, so its memory stays fixed however long the stream runs.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::{Checkpointing, Part};
use crate::fact::Time;
use crate::learn::logistic::log_loss;
use crate::learn::train::Outcome;

/// Progressive metrics of one epoch, and of the whole run up to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// The epoch in which these labels arrived.
    pub epoch: u64,
    /// The epoch's figures.
    pub epoch_scores: Scores,
    /// Figures over every epoch so far.
    pub running: Scores,
}

/// Log loss and AUC over a set of labelled examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Labelled examples.
    pub examples: u64,
    /// Positive labels among them.
    pub positives: u64,
    /// Examples that will never have a label.
    pub unlabeled: u64,
    /// Labels for examples that were never seen.
    pub orphaned: u64,
    /// Examples whose label was due after the end of what was read.
    pub beyond_input: u64,
    /// Mean log loss of the servable model's predictions.
    pub logloss: Option<f64>,
    /// Area under the ROC curve of those predictions; `None` when only one class occurred.
    pub auc: Option<f64>,
    /// Mean log loss of the workers' live replicas' predictions, the protocol of online
    /// learners such as Vowpal Wabbit and River.
    pub online_logloss: Option<f64>,
    /// AUC of those predictions.
    pub online_auc: Option<f64>,
    /// Mean log loss of the ground-truth probabilities, when the data has them.
    pub truth_logloss: Option<f64>,
    /// AUC of the ground-truth probabilities.
    pub truth_auc: Option<f64>,
    /// Examples that entered the feature lookups.
    pub examples_in: u64,
    /// Records that left them: one per example when no join amplifies.
    pub lookup_outputs: u64,
    /// `lookup_outputs / examples_in`: exactly 1 when each example is emitted once.
    pub join_output_per_example: Option<f64>,
    /// The servable model's predictions against the labels, in bins of predicted probability:
    /// a calibration diagram. Empty until an example is scored. Always serialized (binary
    /// checkpoints need every field); `metrics.jsonl` leaves an empty one out.
    #[serde(default)]
    pub calibration: Calibration,
}

/// Bins of equal width in predicted probability, each with its examples, the sum of their
/// predicted probabilities and their positive labels: predicted against observed rate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Calibration {
    /// `[examples, sum of predicted probabilities, positives]` per bin, lowest first;
    /// [`CALIBRATION_BINS`] of them once any example is added.
    pub bins: Vec<(u64, f64, u64)>,
}

/// Bins of a [`Calibration`]: tenths of probability.
pub const CALIBRATION_BINS: usize = 10;

impl Calibration {
    /// Whether no example has been added.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// Adds one prediction and its label.
    pub fn add(&mut self, probability: f64, label: bool) {
        if self.bins.is_empty() {
            self.bins = vec![(0, 0.0, 0); CALIBRATION_BINS];
        }
        let position = (probability * CALIBRATION_BINS as f64).floor();
        // NaN casts to 0: a prediction that is not a number lands in the lowest bin
        let bin = (position.max(0.0) as usize).min(CALIBRATION_BINS - 1);
        let entry = &mut self.bins[bin];
        entry.0 += 1;
        entry.1 += probability;
        entry.2 += u64::from(label);
    }

    /// Adds another calibration's counts.
    pub fn merge(&mut self, other: &Calibration) {
        if other.is_empty() {
            return;
        }
        if self.bins.is_empty() {
            self.bins = vec![(0, 0.0, 0); other.bins.len()];
        }
        for (mine, theirs) in self.bins.iter_mut().zip(&other.bins) {
            mine.0 += theirs.0;
            mine.1 += theirs.1;
            mine.2 += theirs.2;
        }
    }
}

impl Scores {
    fn add_join_counts(&mut self, counts: JoinCounts) {
        self.examples_in += counts.examples_in;
        self.lookup_outputs += counts.lookup_outputs;
        self.join_output_per_example =
            (self.examples_in > 0).then(|| self.lookup_outputs as f64 / self.examples_in as f64);
    }

    /// Whether any outcome was scored or counted.
    pub fn has_outcomes(&self) -> bool {
        self.examples + self.unlabeled + self.orphaned + self.beyond_input > 0
    }
}

/// Records counted going into and coming out of the example lookups, to measure join
/// amplification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounts {
    /// Examples that entered.
    pub examples_in: u64,
    /// Records that left.
    pub lookup_outputs: u64,
}

impl std::ops::AddAssign for JoinCounts {
    fn add_assign(&mut self, other: Self) {
        self.examples_in += other.examples_in;
        self.lookup_outputs += other.lookup_outputs;
    }
}

/// Counts the records of a stream, one [`JoinCounts`] per batch at the batch's time; `side`
/// turns a count into the examples in or the lookup outputs.
pub fn count_records<'scope, D: Clone + 'static>(
    stream: StreamVec<'scope, Time, D>,
    name: &str,
    side: fn(u64) -> JoinCounts,
) -> StreamVec<'scope, Time, JoinCounts> {
    stream.unary::<CapacityContainerBuilder<Vec<JoinCounts>>, _, _, _>(
        Pipeline,
        name,
        move |_, _| {
            move |input, output| {
                input.for_each(|capability, data| {
                    output.session(&capability).give(side(data.len() as u64));
                    data.clear();
                });
            }
        },
    )
}

/// Exact AUC with ties counted as half, the Mann–Whitney statistic; `None` with one class.
pub fn auc(scored: &mut [(f64, bool)]) -> Option<f64> {
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = scored.iter().filter(|(_, label)| *label).count() as f64;
    let negatives = scored.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // sum of positive ranks, with tied scores sharing their average rank
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < scored.len() {
        let end = start
            + scored[start..]
                .iter()
                // `total_cmp`, not `==`: a NaN score (a diverged model) must tie with itself,
                // or this loop would never advance
                .take_while(|(score, _)| score.total_cmp(&scored[start].0).is_eq())
                .count();
        let average_rank = (start + end + 1) as f64 / 2.0;
        rank_sum += average_rank
            * scored[start..end]
                .iter()
                .filter(|(_, label)| *label)
                .count() as f64;
        start = end;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Counts of positives and negatives per logit bucket, for a running AUC in fixed memory.
///
/// Each insertion updates the number of (positive, negative) pairs ordered correctly, using
/// Fenwick trees over the buckets, so reading the AUC costs nothing however long the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogitHistogram {
    positives: Fenwick,
    negatives: Fenwick,
    /// Correctly ordered pairs, ties counted as half, doubled to stay an integer.
    doubled_wins: u128,
}

/// Buckets of the running AUC's histogram, spread over logits in [-LOGIT_RANGE, LOGIT_RANGE].
const BUCKETS: usize = 1 << 18;
const LOGIT_RANGE: f64 = 20.0;

impl Default for LogitHistogram {
    fn default() -> Self {
        LogitHistogram {
            positives: Fenwick::new(BUCKETS),
            negatives: Fenwick::new(BUCKETS),
            doubled_wins: 0,
        }
    }
}

impl LogitHistogram {
    /// Records one labelled probability.
    pub fn insert(&mut self, probability: f64, label: bool) {
        let p = probability.clamp(1e-12, 1.0 - 1e-12);
        let logit = (p / (1.0 - p)).ln();
        let position = ((logit + LOGIT_RANGE) / (2.0 * LOGIT_RANGE) * BUCKETS as f64).floor();
        let bucket = (position.max(0.0) as usize).min(BUCKETS - 1);
        let (same, other) = if label {
            (&mut self.positives, &self.negatives)
        } else {
            (&mut self.negatives, &self.positives)
        };
        let below = other.prefix(bucket);
        let tied = other.prefix(bucket + 1) - below;
        // a positive beats the negatives below it; a negative loses to the positives above it
        let beaten = if label {
            below
        } else {
            other.total() - below - tied
        };
        self.doubled_wins += u128::from(2 * beaten + tied);
        same.add(bucket);
    }

    /// The AUC, with examples in one bucket counted as ties.
    pub fn auc(&self) -> Option<f64> {
        let (positives, negatives) = (self.positives.total(), self.negatives.total());
        if positives == 0 || negatives == 0 {
            return None;
        }
        Some(self.doubled_wins as f64 / 2.0 / (positives as f64 * negatives as f64))
    }
}

/// A Fenwick (binary indexed) tree of counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Fenwick {
    tree: Vec<u64>,
    total: u64,
}

impl Fenwick {
    fn new(size: usize) -> Self {
        Fenwick {
            tree: vec![0; size + 1],
            total: 0,
        }
    }

    fn add(&mut self, index: usize) {
        self.total += 1;
        let mut node = index + 1;
        while node < self.tree.len() {
            self.tree[node] += 1;
            node += node & node.wrapping_neg();
        }
    }

    /// The count of indexes below `end`.
    fn prefix(&self, end: usize) -> u64 {
        let mut sum = 0;
        let mut node = end;
        while node > 0 {
            sum += self.tree[node];
            node -= node & node.wrapping_neg();
        }
        sum
    }

    fn total(&self) -> u64 {
        self.total
    }
}

/// One series of probabilities (the servable model's, the replicas', the truth's) over an epoch.
#[derive(Default)]
struct EpochSeries {
    loss_sum: f64,
    scored: Vec<(f64, bool)>,
}

impl EpochSeries {
    fn push(&mut self, probability: f64, label: bool) {
        self.loss_sum += log_loss(probability, label);
        self.scored.push((probability, label));
    }

    /// Mean log loss and exact AUC.
    fn scores(&mut self) -> (Option<f64>, Option<f64>) {
        if self.scored.is_empty() {
            return (None, None);
        }
        (
            Some(self.loss_sum / self.scored.len() as f64),
            auc(&mut self.scored),
        )
    }
}

/// One series over the whole stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct RunningSeries {
    loss_sum: f64,
    examples: u64,
    histogram: LogitHistogram,
}

impl RunningSeries {
    fn absorb(&mut self, epoch: &EpochSeries) {
        self.loss_sum += epoch.loss_sum;
        self.examples += epoch.scored.len() as u64;
        for &(probability, label) in &epoch.scored {
            self.histogram.insert(probability, label);
        }
    }

    fn scores(&self) -> (Option<f64>, Option<f64>) {
        if self.examples == 0 {
            return (None, None);
        }
        (
            Some(self.loss_sum / self.examples as f64),
            self.histogram.auc(),
        )
    }
}

/// Running totals over the whole stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    scores: Scores,
    model: RunningSeries,
    online: RunningSeries,
    truth: RunningSeries,
}

/// Scores one epoch's outcomes exactly, and folds them into the running totals.
fn score_epoch(mut outcomes: Vec<Outcome>, running: &mut Running) -> Scores {
    // the same order on every layout, so the float sums agree
    outcomes.sort_by_key(outcome_key);
    let mut scores = Scores::default();
    let (mut model, mut online, mut truth) = (
        EpochSeries::default(),
        EpochSeries::default(),
        EpochSeries::default(),
    );
    for outcome in outcomes {
        match outcome {
            Outcome::Evaluated {
                probability,
                online_probability,
                label,
                truth: truth_probability,
                ..
            } => {
                scores.examples += 1;
                scores.positives += u64::from(label);
                scores.calibration.add(probability, label);
                model.push(probability, label);
                online.push(online_probability, label);
                if let Some(truth_probability) = truth_probability {
                    truth.push(truth_probability, label);
                }
            }
            Outcome::Unlabeled { .. } => scores.unlabeled += 1,
            Outcome::Orphaned { .. } => scores.orphaned += 1,
            Outcome::BeyondInput { .. } => scores.beyond_input += 1,
        }
    }
    running.model.absorb(&model);
    running.online.absorb(&online);
    running.truth.absorb(&truth);
    (scores.logloss, scores.auc) = model.scores();
    (scores.online_logloss, scores.online_auc) = online.scores();
    (scores.truth_logloss, scores.truth_auc) = truth.scores();

    let total = &mut running.scores;
    total.examples += scores.examples;
    total.positives += scores.positives;
    total.unlabeled += scores.unlabeled;
    total.orphaned += scores.orphaned;
    total.beyond_input += scores.beyond_input;
    total.calibration.merge(&scores.calibration);
    (total.logloss, total.auc) = running.model.scores();
    (total.online_logloss, total.online_auc) = running.online.scores();
    (total.truth_logloss, total.truth_auc) = running.truth.scores();
    scores
}

fn outcome_key(outcome: &Outcome) -> (u8, u64) {
    match outcome {
        Outcome::Evaluated { id, .. } => (0, *id),
        Outcome::Unlabeled { id } => (1, *id),
        Outcome::Orphaned { id } => (2, *id),
        Outcome::BeyondInput { id } => (3, *id),
    }
}

/// Gathers outcomes and join counts at worker 0 and reports each epoch once it is complete.
pub fn evaluate<'scope>(
    variant: usize,
    outcomes: StreamVec<'scope, Time, Outcome>,
    join_counts: StreamVec<'scope, Time, JoinCounts>,
    tick_secs: u64,
    checkpointing: &Rc<Checkpointing>,
) -> StreamVec<'scope, Time, EpochMetrics> {
    if checkpointing.exporting() {
        checkpointing.expect(Part::Evaluator(variant));
    }
    let resumed = checkpointing
        .resume_with(|state| state.evaluator_of(variant).take())
        .flatten();
    let checkpointing = Rc::clone(checkpointing);
    outcomes.binary_frontier::<_, CapacityContainerBuilder<Vec<EpochMetrics>>, _, _, _, _>(
        join_counts,
        Exchange::new(|_: &Outcome| 0),
        Exchange::new(|_: &JoinCounts| 0),
        "Evaluate",
        move |_, _| {
            let mut epochs: BTreeMap<u64, PendingEpoch> = BTreeMap::new();
            let mut running = resumed.unwrap_or_default();
            move |(outcomes, outcomes_frontier), (counts, counts_frontier), output| {
                outcomes.for_each_stamp(|capability, data| {
                    let Some(time) = capability.least().copied() else {
                        return;
                    };
                    let entry = pending(&mut epochs, time, tick_secs, || {
                        capability.delayed(&time, 0)
                    });
                    for container in data {
                        entry.outcomes.append(container);
                    }
                });
                counts.for_each_stamp(|capability, data| {
                    let Some(time) = capability.least().copied() else {
                        return;
                    };
                    let entry = pending(&mut epochs, time, tick_secs, || {
                        capability.delayed(&time, 0)
                    });
                    for container in data {
                        for counts in container.drain(..) {
                            entry.join += counts;
                        }
                    }
                });
                while let Some(entry) = epochs.first_entry() {
                    let end = (entry.key() + 1).saturating_mul(tick_secs);
                    if outcomes_frontier.less_than(&end) || counts_frontier.less_than(&end) {
                        break;
                    }
                    let epoch = *entry.key();
                    let PendingEpoch {
                        capability,
                        outcomes,
                        join,
                    } = entry.remove();
                    let mut epoch_scores = score_epoch(outcomes, &mut running);
                    epoch_scores.add_join_counts(join);
                    running.scores.add_join_counts(join);
                    let metrics = EpochMetrics {
                        epoch,
                        epoch_scores,
                        running: running.scores.clone(),
                    };
                    output.session(&capability).give(metrics);
                }
                // at a cut every epoch before it is closed
                if let Some(cut) = checkpointing.wants(Part::Evaluator(variant))
                    && !outcomes_frontier.less_than(&cut)
                    && !counts_frontier.less_than(&cut)
                    && epochs
                        .keys()
                        .next()
                        .is_none_or(|&epoch| epoch >= cut / tick_secs)
                {
                    let state = running.clone();
                    checkpointing.deposit(Part::Evaluator(variant), |worker| {
                        *worker.evaluator_of(variant) = Some(state)
                    });
                }
            }
        },
    )
}

/// An epoch's outcomes and join counts, gathered until the epoch is complete.
struct PendingEpoch {
    capability: Capability<Time>,
    outcomes: Vec<Outcome>,
    join: JoinCounts,
}

/// The pending epoch of `time`, holding a capability for the earliest time seen in it.
fn pending(
    epochs: &mut BTreeMap<u64, PendingEpoch>,
    time: Time,
    tick_secs: u64,
    capability: impl Fn() -> Capability<Time>,
) -> &mut PendingEpoch {
    let entry = epochs
        .entry(time / tick_secs)
        .or_insert_with(|| PendingEpoch {
            capability: capability(),
            outcomes: Vec::new(),
            join: JoinCounts::default(),
        });
    if *entry.capability.time() > time {
        entry.capability = capability();
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_bins_count_predictions_and_labels() {
        let mut calibration = Calibration::default();
        assert!(calibration.is_empty());
        calibration.add(0.05, false);
        calibration.add(0.95, true);
        calibration.add(1.0, true);
        calibration.add(0.12, true);
        assert_eq!(calibration.bins.len(), CALIBRATION_BINS);
        assert_eq!(calibration.bins[0], (1, 0.05, 0));
        assert_eq!(calibration.bins[1], (1, 0.12, 1));
        assert_eq!(calibration.bins[9], (2, 1.95, 2));
        let mut total = Calibration::default();
        total.merge(&calibration);
        total.merge(&calibration);
        assert_eq!(total.bins[9], (4, 3.9, 4));
    }

    #[test]
    fn auc_counts_ties_as_half() {
        assert_eq!(auc(&mut [(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(auc(&mut [(0.1, true), (0.9, false)]), Some(0.0));
        assert_eq!(auc(&mut [(0.5, true), (0.5, false)]), Some(0.5));
        // positives at 0.4 and 0.8, negatives at 0.2 and 0.8: wins 1 + 1.5 of 4 pairs
        assert_eq!(
            auc(&mut [(0.4, true), (0.8, true), (0.2, false), (0.8, false)]),
            Some(0.625)
        );
        assert_eq!(auc(&mut [(0.3, true)]), None);
    }

    #[test]
    fn the_histogram_auc_agrees_with_the_exact_one() {
        let mut scored = Vec::new();
        let mut histogram = LogitHistogram::default();
        for i in 0..2000u32 {
            let probability = f64::from((i * 7919) % 1000) / 1000.0 + 0.0005;
            let label = (i * 31) % 7 < 3 || probability > 0.8;
            scored.push((probability, label));
            histogram.insert(probability, label);
        }
        let exact = auc(&mut scored).expect("two classes");
        let approximate = histogram.auc().expect("two classes");
        assert!(
            (exact - approximate).abs() < 1e-4,
            "{exact} vs {approximate}"
        );
    }
}

#[cfg(test)]
mod auc_tests {
    use super::auc;

    #[test]
    fn nan_scores_tie_with_each_other_and_the_auc_ends() {
        let mut scored = vec![
            (f64::NAN, true),
            (0.2, false),
            (f64::NAN, false),
            (0.9, true),
        ];
        let value = auc(&mut scored).expect("two classes");
        // ranks by total order: 0.2 (neg), 0.9 (pos), NaN, NaN (tied: 3.5 each, one positive)
        // positive ranks 2 + 3.5 = 5.5; (5.5 - 3) / (2 * 2) = 0.625
        assert_eq!(value, 0.625);
    }
}
