//! The serving feed: each complete epoch's feature changes, folded into the serving state
//! outside the graph (for the HTTP endpoint).

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflows::fact::{Symbol, Time};
use dataflows::fixed::Accum;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::serve::serving::ServingState;

/// A change to an aggregate's accumulator: (key, aggregate) and the change.
type Change = ((Symbol, u32), Accum);

/// Folds each complete epoch's feature changes into the serving state, at worker 0, once the
/// epoch has closed on every worker. Every worker attaches it; `serving` is worker 0's only
/// (on process 0), the others drop what reaches them (nothing: changes go to worker 0).
pub fn attach_serving<'scope>(
    serving: Option<Arc<ServingState>>,
    tick: u64,
    changes: timely::dataflow::StreamVec<'scope, Time, Change>,
) {
    let mut pending: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
    changes.sink(
        Exchange::new(|_: &Change| 0u64),
        "Sink: serving features",
        move |(input, frontier)| {
            input.for_each_stamp(|capability, data| {
                let Some(&time) = capability.least() else {
                    return;
                };
                for container in data {
                    pending.entry(time / tick).or_default().append(container);
                }
            });
            // an epoch is complete once the frontier has passed its end
            while let Some((&epoch, _)) = pending.first_key_value() {
                let end = (epoch + 1).saturating_mul(tick);
                if frontier.less_than(&end) {
                    break;
                }
                if let Some(changes) = pending.remove(&epoch)
                    && let Some(serving) = &serving
                {
                    serving.apply_epoch(epoch, &changes);
                }
            }
            // epochs without changes are complete too
            if let Some(serving) = &serving {
                // (an empty frontier is the end of the run, which closes no further epoch)
                if let Some(closed) = frontier.frontier().first().map(|&time| time / tick)
                    && closed > 0
                    && pending
                        .first_key_value()
                        .is_none_or(|(&epoch, _)| epoch >= closed)
                {
                    serving.apply_epoch(closed - 1, &[]);
                }
            }
        },
    );
}
