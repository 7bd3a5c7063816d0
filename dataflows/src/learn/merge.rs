//! Merging the workers' replicas at the close of each training round.
//!
//! Every worker trains its own replica of the model on its share of the examples (examples are
//! partitioned by entity, so each dog's weights live on one worker). When a round closes, each
//! worker sends the coordinates it changed; the owner of a coordinate combines them:
//!
//! - the weight becomes the average of the replicas' weights, each weighted by the number of
//!   updates that replica made to it. A coordinate one worker alone touched (a dog, a user)
//!   takes that worker's value exactly, so with one worker the merge is sequential training.
//!   Shared coordinates (the intercept, an hour of day) move by the average step rather than the
//!   sum, which is the conservative choice: summing stale steps can overshoot.
//! - the sums of squared gradients add up, so the adaptive step sizes shrink as if one learner
//!   had seen every gradient.
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

/// What a worker's learner sends when a round closes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoundMessage {
    /// A coordinate the worker changed in the round.
    Coordinate {
        /// The coordinate.
        coordinate: u32,
        /// The worker that changed it.
        worker: u32,
        /// The replica's weight.
        weight: f32,
        /// How much the replica's sum of squared gradients grew.
        squared_delta: f64,
        /// How many updates the replica made to it.
        updates: u32,
    },
    /// The worker's progressive loss over the round.
    Stats {
        /// The worker.
        worker: u32,
        /// Sum of the log losses of the examples learned.
        loss_sum: f64,
        /// Examples learned.
        examples: u64,
    },
}

/// The merged outcome of a round, as every worker receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Merged {
    /// The new state of a coordinate.
    Coordinate {
        /// The coordinate.
        coordinate: u32,
        /// Its merged weight.
        weight: f32,
        /// How much its sum of squared gradients grew, over all workers.
        squared_delta: f64,
    },
    /// The round's progressive loss over all workers.
    Stats {
        /// Sum of the log losses of the examples learned.
        loss_sum: f64,
        /// Examples learned.
        examples: u64,
    },
}

/// Merges the round messages of every round, and sends the outcome to every worker.
pub fn merge<'scope>(
    rounds: StreamVec<'scope, Time, RoundMessage>,
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
                            .give_iterator(combine(messages).into_iter());
                    }
                }
            },
        )
        .broadcast()
}

/// Combines one round's messages, deterministically.
pub fn combine(mut messages: Vec<RoundMessage>) -> Vec<Merged> {
    messages.sort_by_key(order_key);
    let mut merged = Vec::new();
    let mut stats: Option<(f64, u64)> = None;
    let mut current: Option<(u32, f64, f64, f64)> = None; // coordinate, Σ n·w, Σ n, Σ squared
    for message in messages {
        match message {
            RoundMessage::Stats {
                loss_sum, examples, ..
            } => {
                let (total_loss, total_examples) = stats.get_or_insert((0.0, 0));
                *total_loss += loss_sum;
                *total_examples += examples;
            }
            RoundMessage::Coordinate {
                coordinate,
                weight,
                squared_delta,
                updates,
                ..
            } => {
                if let Some(done) = current.filter(|(open, ..)| *open != coordinate) {
                    merged.push(finish(done));
                    current = None;
                }
                let (_, weighted, count, squared) =
                    current.get_or_insert((coordinate, 0.0, 0.0, 0.0));
                let updates = f64::from(updates.max(1));
                *weighted += updates * f64::from(weight);
                *count += updates;
                *squared += squared_delta;
            }
        }
    }
    if let Some(done) = current {
        merged.push(finish(done));
    }
    if let Some((loss_sum, examples)) = stats {
        merged.push(Merged::Stats { loss_sum, examples });
    }
    merged
}

fn order_key(message: &RoundMessage) -> (u8, u32, u32) {
    match message {
        RoundMessage::Coordinate {
            coordinate, worker, ..
        } => (0, *coordinate, *worker),
        RoundMessage::Stats { worker, .. } => (1, 0, *worker),
    }
}

fn finish((coordinate, weighted, count, squared_delta): (u32, f64, f64, f64)) -> Merged {
    Merged::Coordinate {
        coordinate,
        weight: (weighted / count) as f32,
        squared_delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coordinate(
        coordinate: u32,
        worker: u32,
        weight: f32,
        squared_delta: f64,
        updates: u32,
    ) -> RoundMessage {
        RoundMessage::Coordinate {
            coordinate,
            worker,
            weight,
            squared_delta,
            updates,
        }
    }

    #[test]
    fn a_single_contribution_is_taken_exactly() {
        let merged = combine(vec![coordinate(7, 0, 0.123_456_7, 0.5, 3)]);
        assert_eq!(
            merged,
            vec![Merged::Coordinate {
                coordinate: 7,
                weight: 0.123_456_7,
                squared_delta: 0.5
            }]
        );
    }

    #[test]
    fn shared_coordinates_average_by_updates_and_sum_squares() {
        // worker 0 made 3 updates ending at 1.0, worker 1 made 1 ending at -1.0: (3 - 1) / 4.
        let merged = combine(vec![
            coordinate(2, 1, -1.0, 0.25, 1),
            coordinate(2, 0, 1.0, 0.75, 3),
        ]);
        assert_eq!(
            merged,
            vec![Merged::Coordinate {
                coordinate: 2,
                weight: 0.5,
                squared_delta: 1.0
            }]
        );
    }

    #[test]
    fn the_order_of_arrival_does_not_matter() {
        let messages = vec![
            coordinate(5, 1, 0.1, 0.01, 2),
            RoundMessage::Stats {
                worker: 1,
                loss_sum: 0.3,
                examples: 2,
            },
            coordinate(3, 0, 0.7, 0.02, 1),
            coordinate(5, 0, 0.2, 0.03, 5),
            RoundMessage::Stats {
                worker: 0,
                loss_sum: 0.1,
                examples: 1,
            },
        ];
        let mut reversed = messages.clone();
        reversed.reverse();
        assert_eq!(combine(messages), combine(reversed));
    }
}
