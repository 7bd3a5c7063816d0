//! Merging the workers' replicas at the close of each training round.
//!
//! Every worker trains its own replica of the model on its share of the examples (examples are
//! partitioned by entity, so each dog's weights live on one worker). When a round closes, each
//! worker sends what its replica did to every coordinate it changed (a [`Contribution`]); the
//! owner of a coordinate combines them:
//!
//! - the weight, for optimizers that carry one (AdaGrad, SGD), by the spec's [`WeightMerge`]:
//!   - `Average` (the default): the average of the replicas' weights, each weighted by the
//!     number of updates that replica made to it. Shared coordinates (the intercept, an hour of
//!     day) move by the average step rather than the sum, the conservative choice: summing
//!     stale steps can overshoot.
//!   - `SumSteps`: the base weight plus every replica's step, as one learner taking every step
//!     would move it. With a constant rate and examples spread over workers by id (no entity),
//!     averaging divides the rate by the number of workers; summing does not.
//!
//!   A coordinate one worker alone touched (a dog, a user) takes that worker's value exactly
//!   under either rule, so with one worker the merge is sequential training.
//! - additive state grows by the sum of the replicas' growths: AdaGrad's and SGD's sums of
//!   squared gradients, FTRL's `z` and `n` (FTRL's weight is then recomputed from them), so
//!   adaptive rates shrink as if one learner had seen every gradient;
//! - SGD's per-coordinate normaliser is the largest any replica saw, and its model-wide
//!   example count and norm sum grow by the sum of the replicas' growths (sent with the stats).
//!
//! Contributions are combined in worker order, so the result is bit-identical for a given number
//! of workers however they are spread over processes.

use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;

use crate::fact::Time;
use crate::learn::optimizer::{Contribution, MergedCoordinate, MergedWeight, WeightMerge};
use crate::publish::model::Evidence;

/// What a worker's learner sends when a round closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoundMessage {
    /// A coordinate the worker changed in the round.
    Coordinate {
        /// The coordinate.
        coordinate: u32,
        /// The worker that changed it.
        worker: u32,
        /// How many updates the replica made to it.
        updates: u32,
        /// What the replica did to it.
        contribution: Contribution,
    },
    /// The worker's progressive loss over the round, and the growth of its replica's
    /// model-wide state.
    Stats {
        /// The worker.
        worker: u32,
        /// Sum of the log losses of the examples learned.
        loss_sum: f64,
        /// Examples learned.
        examples: u64,
        /// The growth of the model-wide state (SGD's examples and norm sum).
        totals: [f64; 2],
        /// The examples split by the version that scored them.
        scored: Vec<Evidence>,
    },
}

/// The merged outcome of a round, as every worker receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Merged {
    /// The new state of a coordinate.
    Coordinate {
        /// The coordinate.
        coordinate: u32,
        /// Its merged state.
        merged: MergedCoordinate,
    },
    /// The round's progressive loss over all workers, and the summed growth of the
    /// model-wide state.
    Stats {
        /// Sum of the log losses of the examples learned.
        loss_sum: f64,
        /// Examples learned.
        examples: u64,
        /// The summed growth of the model-wide state.
        totals: [f64; 2],
        /// The examples split by the version that scored them, over all workers.
        scored: Vec<Evidence>,
    },
}

/// Merges the round messages of every round by `rule`, and sends the outcome to every worker.
pub fn merge<'scope>(
    rounds: StreamVec<'scope, Time, RoundMessage>,
    rule: WeightMerge,
) -> StreamVec<'scope, Time, Merged> {
    let route = |message: &RoundMessage| match message {
        RoundMessage::Coordinate { coordinate, .. } => u64::from(*coordinate),
        RoundMessage::Stats { .. } => 0,
    };
    rounds
        .unary_frontier::<CapacityContainerBuilder<Vec<Merged>>, _, _, _>(
            Exchange::new(route),
            "Merge",
            |_, _| {
                let mut rounds: std::collections::BTreeMap<
                    Time,
                    (Capability<Time>, Vec<RoundMessage>),
                > = Default::default();
                move |(input, frontier), output| {
                    input.for_each_stamp(|capability, data| {
                        let Some(time) = capability.least().copied() else {
                            return;
                        };
                        let entry = rounds
                            .entry(time)
                            .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()));
                        for container in data {
                            entry.1.append(container);
                        }
                    });
                    while let Some(entry) = rounds.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (capability, messages) = entry.remove();
                        output
                            .session(&capability)
                            .give_iterator(combine(messages, rule).into_iter());
                    }
                }
            },
        )
        .broadcast()
}

/// Combines one round's messages by `rule`, deterministically.
pub fn combine(mut messages: Vec<RoundMessage>, rule: WeightMerge) -> Vec<Merged> {
    messages.sort_by_key(order_key);
    let mut merged = Vec::new();
    let mut stats: Option<(f64, u64, [f64; 2], Vec<Evidence>)> = None;
    let mut current: Option<(u32, Combining)> = None;
    for message in messages {
        match message {
            RoundMessage::Stats {
                loss_sum,
                examples,
                totals,
                scored,
                ..
            } => {
                let (total_loss, total_examples, sums, evidence) =
                    stats.get_or_insert((0.0, 0, [0.0; 2], Vec::new()));
                *total_loss += loss_sum;
                *total_examples += examples;
                sums[0] += totals[0];
                sums[1] += totals[1];
                for entry in &scored {
                    Evidence::add_to(evidence, entry);
                }
            }
            RoundMessage::Coordinate {
                coordinate,
                updates,
                contribution,
                ..
            } => {
                if let Some((open, combining)) = current.take_if(|(open, _)| *open != coordinate) {
                    merged.push(combining.finish(open, rule));
                }
                let (_, combining) = current.get_or_insert((coordinate, Combining::default()));
                combining.add(updates, &contribution);
            }
        }
    }
    if let Some((coordinate, combining)) = current {
        merged.push(combining.finish(coordinate, rule));
    }
    if let Some((loss_sum, examples, totals, scored)) = stats {
        merged.push(Merged::Stats {
            loss_sum,
            examples,
            totals,
            scored,
        });
    }
    merged
}

/// The contributions to one coordinate so far, in worker order.
#[derive(Default)]
struct Combining {
    /// Σ updates · weight.
    weighted: f64,
    /// Σ updates.
    updates: f64,
    /// Σ steps.
    steps: f64,
    /// Σ growth of the additive state.
    sums: [f64; 2],
    /// The largest normaliser.
    normalizer: f32,
}

impl Combining {
    fn add(&mut self, updates: u32, contribution: &Contribution) {
        let updates = f64::from(updates.max(1));
        self.weighted += updates * f64::from(contribution.weight);
        self.updates += updates;
        self.steps += contribution.step;
        self.sums[0] += contribution.sums[0];
        self.sums[1] += contribution.sums[1];
        self.normalizer = self.normalizer.max(contribution.normalizer);
    }

    fn finish(self, coordinate: u32, rule: WeightMerge) -> Merged {
        let weight = match rule {
            WeightMerge::Average => MergedWeight::Value((self.weighted / self.updates) as f32),
            WeightMerge::SumSteps => MergedWeight::Step(self.steps),
        };
        Merged::Coordinate {
            coordinate,
            merged: MergedCoordinate {
                weight,
                sums: self.sums,
                normalizer: self.normalizer,
            },
        }
    }
}

fn order_key(message: &RoundMessage) -> (u8, u32, u32) {
    match message {
        RoundMessage::Coordinate {
            coordinate, worker, ..
        } => (0, *coordinate, *worker),
        RoundMessage::Stats { worker, .. } => (1, 0, *worker),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AdaGrad-style contribution: a weight, a step and one additive sum.
    fn coordinate(
        coordinate: u32,
        worker: u32,
        weight: f32,
        step: f64,
        squared_delta: f64,
        updates: u32,
    ) -> RoundMessage {
        RoundMessage::Coordinate {
            coordinate,
            worker,
            updates,
            contribution: Contribution {
                weight,
                step,
                sums: [squared_delta, 0.0],
                normalizer: 0.0,
            },
        }
    }

    fn merged(coordinate: u32, weight: MergedWeight, sums: [f64; 2], normalizer: f32) -> Merged {
        Merged::Coordinate {
            coordinate,
            merged: MergedCoordinate {
                weight,
                sums,
                normalizer,
            },
        }
    }

    #[test]
    fn a_single_contribution_is_taken_exactly() {
        let messages = vec![coordinate(7, 0, 0.123_456_7, 0.1, 0.5, 3)];
        assert_eq!(
            combine(messages.clone(), WeightMerge::Average),
            vec![merged(7, MergedWeight::Value(0.123_456_7), [0.5, 0.0], 0.0)]
        );
        assert_eq!(
            combine(messages, WeightMerge::SumSteps),
            vec![merged(7, MergedWeight::Step(0.1), [0.5, 0.0], 0.0)]
        );
    }

    #[test]
    fn shared_coordinates_average_by_updates_or_sum_steps_and_sum_squares() {
        // From a base weight of 0: worker 0 made 3 updates ending at 1.0, worker 1 made 1
        // ending at -1.0. Average: (3 - 1) / 4 = 0.5. Sum of steps: 1 - 1 = 0.
        let messages = vec![
            coordinate(2, 1, -1.0, -1.0, 0.25, 1),
            coordinate(2, 0, 1.0, 1.0, 0.75, 3),
        ];
        assert_eq!(
            combine(messages.clone(), WeightMerge::Average),
            vec![merged(2, MergedWeight::Value(0.5), [1.0, 0.0], 0.0)]
        );
        assert_eq!(
            combine(messages, WeightMerge::SumSteps),
            vec![merged(2, MergedWeight::Step(0.0), [1.0, 0.0], 0.0)]
        );
    }

    #[test]
    fn ftrl_state_sums_and_normalisers_take_the_max() {
        let contribution = |worker, sums, normalizer| RoundMessage::Coordinate {
            coordinate: 4,
            worker,
            updates: 1,
            contribution: Contribution {
                weight: 0.0,
                step: 0.0,
                sums,
                normalizer,
            },
        };
        let messages = vec![
            contribution(0, [-0.5, 0.25], 2.0),
            contribution(1, [0.25, 0.5], 8.0),
            contribution(2, [-1.0, 1.0], 4.0),
        ];
        assert_eq!(
            combine(messages, WeightMerge::Average),
            vec![merged(4, MergedWeight::Value(0.0), [-1.25, 1.75], 8.0)]
        );
    }

    #[test]
    fn stats_and_totals_add_up() {
        let stats = |worker, loss_sum, examples, totals, scored| RoundMessage::Stats {
            worker,
            loss_sum,
            examples,
            totals,
            scored,
        };
        let one = |version, probability, label| Evidence::of(version, probability, label, 0.25);
        let merged = combine(
            vec![
                stats(
                    1,
                    0.5,
                    2,
                    [2.0, 3.0],
                    vec![one(3, 0.2, true), one(4, 0.9, false)],
                ),
                stats(0, 0.25, 1, [1.0, 0.5], vec![one(3, 0.6, false)]),
            ],
            WeightMerge::Average,
        );
        let mut three = one(3, 0.6, false);
        three.absorb(&one(3, 0.2, true));
        assert_eq!(
            merged,
            vec![Merged::Stats {
                loss_sum: 0.75,
                examples: 3,
                totals: [3.0, 3.5],
                scored: vec![three, one(4, 0.9, false)],
            }]
        );
        assert_eq!(
            (
                three.examples,
                three.positives,
                three.min_probability,
                three.max_probability
            ),
            (2, 1, 0.2, 0.6)
        );
    }

    #[test]
    fn the_order_of_arrival_does_not_matter() {
        let messages = vec![
            coordinate(5, 1, 0.1, 0.1, 0.01, 2),
            RoundMessage::Stats {
                worker: 1,
                loss_sum: 0.3,
                examples: 2,
                totals: [2.0, 0.1],
                scored: vec![Evidence::of(1, 0.5, true, 0.3)],
            },
            coordinate(3, 0, 0.7, 0.7, 0.02, 1),
            coordinate(5, 0, 0.2, 0.2, 0.03, 5),
            RoundMessage::Stats {
                worker: 0,
                loss_sum: 0.1,
                examples: 1,
                totals: [1.0, 0.7],
                scored: vec![Evidence::of(1, 0.4, false, 0.1)],
            },
        ];
        let mut reversed = messages.clone();
        reversed.reverse();
        for rule in [WeightMerge::Average, WeightMerge::SumSteps] {
            assert_eq!(
                combine(messages.clone(), rule),
                combine(reversed.clone(), rule)
            );
        }
    }
}
