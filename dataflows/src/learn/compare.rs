//! Side by side: every variant's progressive losses on the same examples, compared in pairs
//! against the champion's, and watched for drift.
//!
//! Every variant scores every example, so a challenger and the champion are compared on the
//! *same* examples: for each example both scored and whose label arrived, the difference of
//! their servable log losses (challenger minus champion; negative is better). Over a window of
//! the last [`WINDOW_PAIRS`] such differences, the report gives their mean and a 95% confidence
//! interval by the normal approximation on the paired differences (mean ± 1.96 · sd / √n, with
//! the sample standard deviation). Pairing removes the variance the examples share, so the
//! interval is far narrower than one from two independent loglosses.
//!
//! Each variant's per-example servable log loss also feeds a drift detector ([`Adwin`], with
//! MOA's and River's settings) in a fixed order (by label time, then event time, then id). An
//! ADWIN cut after which the window's mean loss is higher by at least [`MIN_RISE`] (relative)
//! is a drift. A cut to a lower mean is the model learning, and is not reported; nor is any cut
//! at an example within [`GRACE_SECS`] of event time of the variant's first, while a fresh
//! model's loss swings as its first versions are published. (On the default Sniffable stream,
//! without these two rules ADWIN cuts upwards seven times as the first versions are published,
//! about a day in, and once more, by 7%, on day 7: BENCHMARKS.md.)
//!
//! Outcomes are gathered at worker 0, and an epoch is reported once all its labels are in.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::{Checkpointing, Part};
use crate::fact::Time;
use crate::learn::drift::{Adwin, AdwinConfig, DriftDetector};
use crate::learn::logistic::log_loss;
use crate::learn::train::Outcome;

/// The paired differences a comparison's window holds: at Sniffable's rate of about 160
/// labelled posts an hour, about a day and a half.
pub const WINDOW_PAIRS: usize = 5_000;

/// How long after a variant's first example (in event time) a cut may count as a drift.
pub const GRACE_SECS: Time = 2 * 86_400;

/// The least relative rise of the window's mean loss at a cut that counts as a drift.
pub const MIN_RISE: f64 = 0.10;

/// The two-sided 95% quantile of the standard normal distribution.
const Z_95: f64 = 1.959_964;

/// What the comparison reports at the close of an epoch that had something to report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VariantReport {
    /// The epoch in which these labels arrived.
    pub epoch: u64,
    /// Each challenger against the champion, in the plan's order.
    pub comparisons: Vec<PairedComparison>,
    /// The drifts detected in the epoch, by variant in the plan's order.
    pub drifts: Vec<DriftAlarm>,
}

/// A challenger against the champion over the window of paired examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// The challenger.
    pub challenger: String,
    /// The champion.
    pub champion: String,
    /// Examples of this epoch both scored.
    pub epoch_pairs: u64,
    /// Paired examples in the window.
    pub window_pairs: u64,
    /// The mean of the challenger's log loss minus the champion's over the window; negative
    /// when the challenger does better.
    pub mean_difference: f64,
    /// The standard error of that mean: the paired differences' sample standard deviation over
    /// the square root of their number.
    pub standard_error: f64,
    /// The 95% confidence interval's lower end, `mean - 1.96 · standard_error`.
    pub low: f64,
    /// Its upper end.
    pub high: f64,
}

impl PairedComparison {
    /// Whether the challenger is better than the champion at 95% confidence: the whole
    /// interval is below zero.
    pub fn challenger_better(&self) -> bool {
        self.window_pairs >= 2 && self.high < 0.0
    }
}

/// A drift detected on a variant's loss stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftAlarm {
    /// The variant.
    pub model: String,
    /// The event time of the example whose loss raised it.
    pub event_time: Time,
    /// That example's id.
    pub example: u64,
    /// The mean loss of the detector's window just before the cut.
    pub mean_before: f64,
    /// The mean loss of what the window kept, after the cut.
    pub mean_after: f64,
    /// Drifts detected on this variant so far, this one included.
    pub drifts: u64,
}

/// The comparison's running state, for a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareState {
    /// Per challenger, its window of paired differences, oldest first.
    windows: Vec<VecDeque<f64>>,
    /// Per variant, its drift detector.
    detectors: Vec<Adwin>,
    /// Per variant, the drifts it raised so far.
    drifts: Vec<u64>,
    /// Per variant, the event time of the first example it lost on.
    first_seen: Vec<Option<Time>>,
}

impl CompareState {
    fn new(variants: usize) -> Self {
        CompareState {
            windows: vec![VecDeque::new(); variants.saturating_sub(1)],
            detectors: vec![Adwin::new(AdwinConfig::default()); variants],
            drifts: vec![0; variants],
            first_seen: vec![None; variants],
        }
    }

    /// Whether the state is one for this many variants.
    fn fits(&self, variants: usize) -> bool {
        self.detectors.len() == variants
            && self.windows.len() + 1 == variants
            && self.drifts.len() == variants
            && self.first_seen.len() == variants
    }

    /// Folds in one epoch's outcomes, each tagged with its variant's index; the report of
    /// the epoch, when it has comparisons or drifts.
    fn epoch(
        &mut self,
        epoch: u64,
        names: &[String],
        outcomes: Vec<(usize, Outcome)>,
    ) -> Option<VariantReport> {
        // per variant, its evaluated examples' (event time, loss) by id
        let mut losses: Vec<BTreeMap<u64, (Time, f64)>> = vec![BTreeMap::new(); names.len()];
        for (variant, outcome) in outcomes {
            if let Outcome::Evaluated {
                id,
                event_time,
                probability,
                label,
                ..
            } = outcome
                && let Some(losses) = losses.get_mut(variant)
            {
                losses.insert(id, (event_time, log_loss(probability, label)));
            }
        }
        let drifts = self.watch(names, &losses);
        let comparisons = (1..names.len())
            .map(|challenger| self.compare(names, &losses, challenger))
            .collect::<Vec<_>>();
        (!comparisons.is_empty() || !drifts.is_empty()).then_some(VariantReport {
            epoch,
            comparisons,
            drifts,
        })
    }

    /// Feeds every variant's losses to its detector, by event time then id; the increases
    /// detected.
    fn watch(
        &mut self,
        names: &[String],
        losses: &[BTreeMap<u64, (Time, f64)>],
    ) -> Vec<DriftAlarm> {
        let mut alarms = Vec::new();
        for (variant, losses) in losses.iter().enumerate() {
            let mut ordered: Vec<(Time, u64, f64)> = losses
                .iter()
                .map(|(&id, &(event_time, loss))| (event_time, id, loss))
                .collect();
            ordered.sort_by_key(|&(event_time, id, _)| (event_time, id));
            let detector = &mut self.detectors[variant];
            for (event_time, id, loss) in ordered {
                let before = detector.mean();
                let cut = detector.update(loss);
                let first = *self.first_seen[variant].get_or_insert(event_time);
                let warm = event_time >= first.saturating_add(GRACE_SECS);
                if cut && warm && detector.mean() >= before * (1.0 + MIN_RISE) {
                    self.drifts[variant] += 1;
                    alarms.push(DriftAlarm {
                        model: names[variant].clone(),
                        event_time,
                        example: id,
                        mean_before: before,
                        mean_after: detector.mean(),
                        drifts: self.drifts[variant],
                    });
                }
            }
        }
        alarms
    }

    /// Adds the epoch's paired differences of `challenger` to its window, and compares.
    fn compare(
        &mut self,
        names: &[String],
        losses: &[BTreeMap<u64, (Time, f64)>],
        challenger: usize,
    ) -> PairedComparison {
        let window = &mut self.windows[challenger - 1];
        let mut epoch_pairs = 0;
        for (id, &(_, champion_loss)) in &losses[0] {
            if let Some(&(_, challenger_loss)) = losses[challenger].get(id) {
                window.push_back(challenger_loss - champion_loss);
                epoch_pairs += 1;
            }
        }
        while window.len() > WINDOW_PAIRS {
            window.pop_front();
        }
        let (mean, standard_error) = mean_and_standard_error(window.iter().copied());
        PairedComparison {
            challenger: names[challenger].clone(),
            champion: names[0].clone(),
            epoch_pairs,
            window_pairs: window.len() as u64,
            mean_difference: mean,
            standard_error,
            low: mean - Z_95 * standard_error,
            high: mean + Z_95 * standard_error,
        }
    }
}

/// The mean of `values`, and its standard error (0 with fewer than two values).
fn mean_and_standard_error(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let count = values.clone().count();
    if count == 0 {
        return (0.0, 0.0);
    }
    let mean = values.clone().sum::<f64>() / count as f64;
    if count < 2 {
        return (mean, 0.0);
    }
    let squares: f64 = values.map(|value| (value - mean) * (value - mean)).sum();
    let variance = squares / (count - 1) as f64;
    (mean, (variance / count as f64).sqrt())
}

/// Gathers every variant's outcomes (the champion's first, then the challengers' in the
/// plan's order, named by `names`) at worker 0, and reports each epoch's comparisons and
/// drifts once it is complete.
pub fn compare<'scope>(
    names: Vec<String>,
    outcomes: StreamVec<'scope, Time, (usize, Outcome)>,
    tick_secs: u64,
    checkpointing: &Rc<Checkpointing>,
) -> StreamVec<'scope, Time, VariantReport> {
    if checkpointing.exporting() {
        checkpointing.expect(Part::Compare);
    }
    let resumed = checkpointing
        .resume_with(|state| state.compare.take())
        .flatten()
        .filter(|state| state.fits(names.len()));
    let checkpointing = Rc::clone(checkpointing);
    outcomes.unary_frontier::<CapacityContainerBuilder<Vec<VariantReport>>, _, _, _>(
        Exchange::new(|_: &(usize, Outcome)| 0),
        "Compare",
        move |_, _| {
            let mut epochs: BTreeMap<u64, (Capability<Time>, Vec<(usize, Outcome)>)> =
                BTreeMap::new();
            let mut state = resumed.unwrap_or_else(|| CompareState::new(names.len()));
            move |(input, frontier), output| {
                input.for_each_stamp(|capability, data| {
                    let Some(time) = capability.least().copied() else {
                        return;
                    };
                    let entry = epochs
                        .entry(time / tick_secs)
                        .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                    if *entry.0.time() > time {
                        entry.0 = capability.delayed(&time, 0);
                    }
                    for container in data {
                        entry.1.append(container);
                    }
                });
                while let Some(entry) = epochs.first_entry() {
                    let end = (entry.key() + 1).saturating_mul(tick_secs);
                    if frontier.less_than(&end) {
                        break;
                    }
                    let epoch = *entry.key();
                    let (capability, outcomes) = entry.remove();
                    if let Some(report) = state.epoch(epoch, &names, outcomes) {
                        output.session(&capability).give(report);
                    }
                }
                // at a cut every epoch before it is closed
                if let Some(cut) = checkpointing.wants(Part::Compare)
                    && !frontier.less_than(&cut)
                    && epochs
                        .keys()
                        .next()
                        .is_none_or(|&epoch| epoch >= cut / tick_secs)
                {
                    let kept = state.clone();
                    checkpointing.deposit(Part::Compare, |worker| worker.compare = Some(kept));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluated(id: u64, event_time: Time, probability: f64, label: bool) -> Outcome {
        Outcome::Evaluated {
            id,
            event_time,
            probability,
            online_probability: probability,
            label,
            truth: None,
        }
    }

    fn names() -> Vec<String> {
        vec!["champion".into(), "challenger".into()]
    }

    #[test]
    fn differences_are_paired_by_example_and_their_interval_is_the_normal_one() {
        let mut state = CompareState::new(2);
        // example 3 is scored by the champion only: it has no pair
        let outcomes = vec![
            (0, evaluated(1, 10, 0.5, true)),
            (1, evaluated(1, 10, 0.8, true)),
            (0, evaluated(2, 11, 0.5, false)),
            (1, evaluated(2, 11, 0.4, false)),
            (0, evaluated(3, 12, 0.5, true)),
        ];
        let report = state.epoch(7, &names(), outcomes).expect("a report");
        assert_eq!(report.epoch, 7);
        let comparison = &report.comparisons[0];
        assert_eq!((comparison.epoch_pairs, comparison.window_pairs), (2, 2));
        let first = 0.5f64.ln() - 0.8f64.ln();
        let second = 0.5f64.ln() - 0.6f64.ln();
        let mean = (first + second) / 2.0;
        assert!((comparison.mean_difference - mean).abs() < 1e-12);
        // two values: sd = |a - b| / √2, standard error = sd / √2 = |a - b| / 2
        let standard_error = (first - second).abs() / 2.0;
        assert!((comparison.standard_error - standard_error).abs() < 1e-12);
        assert!((comparison.high - (mean + Z_95 * standard_error)).abs() < 1e-12);
        assert!((comparison.low - (mean - Z_95 * standard_error)).abs() < 1e-12);
        // better on both examples, and by enough that the interval stays below 0
        assert!(comparison.high < 0.0 && comparison.challenger_better());
    }

    #[test]
    fn a_consistently_better_challenger_is_significant_and_the_window_is_bounded() {
        let mut state = CompareState::new(2);
        let mut id = 0;
        for epoch in 0..3 {
            let mut outcomes = Vec::new();
            for _ in 0..WINDOW_PAIRS / 2 {
                id += 1;
                let label = id % 3 == 0;
                let (champion, challenger) = if label { (0.6, 0.7) } else { (0.4, 0.3) };
                outcomes.push((0, evaluated(id, id, champion, label)));
                outcomes.push((1, evaluated(id, id, challenger, label)));
            }
            let report = state.epoch(epoch, &names(), outcomes).expect("a report");
            let comparison = &report.comparisons[0];
            assert!(comparison.challenger_better(), "{comparison:?}");
            assert!(comparison.window_pairs <= WINDOW_PAIRS as u64);
        }
        assert_eq!(state.windows[0].len(), WINDOW_PAIRS);
    }

    #[test]
    fn a_rise_during_the_grace_period_is_no_drift() {
        let mut state = CompareState::new(1);
        let names = vec!["only".to_owned()];
        // one example a minute for just under the grace period
        let examples = GRACE_SECS / 60;
        let outcomes = (0..examples)
            .map(|id| {
                let probability = if id < examples / 2 { 0.9 } else { 0.2 };
                (0, evaluated(id, id * 60, probability, true))
            })
            .collect();
        assert!(state.epoch(0, &names, outcomes).is_none());
    }

    #[test]
    fn a_rise_in_loss_is_a_drift_and_a_fall_is_not() {
        let mut state = CompareState::new(1);
        let names = vec!["only".to_owned()];
        // a falling loss (a model learning), then a sudden rise
        let mut outcomes = Vec::new();
        for id in 0..4_000u64 {
            let probability = if id < 2_000 { 0.6 } else { 0.9 };
            outcomes.push((0, evaluated(id, id * 60, probability, true)));
        }
        assert!(
            state.epoch(0, &names, outcomes).is_none(),
            "no drift on a fall"
        );
        let outcomes = (4_000..6_000u64)
            .map(|id| (0, evaluated(id, id * 60, 0.3, true)))
            .collect();
        let report = state.epoch(1, &names, outcomes).expect("a drift");
        assert!(!report.drifts.is_empty());
        let alarm = &report.drifts[0];
        assert_eq!(alarm.model, "only");
        assert!(alarm.mean_after > alarm.mean_before, "{alarm:?}");
        assert!(
            (4_000 * 60..4_500 * 60).contains(&alarm.event_time),
            "detected soon after the rise: {alarm:?}"
        );
        assert!(report.comparisons.is_empty());
    }
}
