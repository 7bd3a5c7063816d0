//! The feature store's changes, coalesced per epoch, for the serving state kept outside the
//! graph.

use std::collections::{BTreeMap, HashMap};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Filter;

use crate::fact::{Symbol, Time};
use crate::fixed::Accum;
use crate::plan::{AggregateUse, Plan};
use crate::transform::lookup::Store;

/// The changes to the aggregates that features read, coalesced per epoch: for each key and
/// aggregate touched in an epoch, the sum of its changes, emitted once the epoch is complete.
///
/// Serving outside the graph keeps a copy of the store's current values from these; summed
/// over every epoch before `e`, they are the store as of the start of `e`. Coalescing on each
/// worker first sends one change per touched key per epoch, not one per fact.
pub fn feature_changes<'scope>(
    plan: &Plan,
    store: Store<'scope>,
) -> StreamVec<'scope, Time, ((Symbol, u32), Accum)> {
    let tick = plan.tick_secs;
    let wanted: Vec<bool> = plan
        .aggregates
        .iter()
        .map(|aggregate| !matches!(aggregate.used_by, AggregateUse::Label))
        .collect();
    let updates = store
        .as_collection(|key, _| *key)
        .inner
        .filter(move |((_, aggregate), _, _)| {
            wanted.get(*aggregate as usize).copied().unwrap_or(false)
        });
    updates.unary_frontier::<CapacityContainerBuilder<Vec<((Symbol, u32), Accum)>>, _, _, _>(
        Pipeline,
        "Serve: feature changes",
        move |_, _| {
            // per epoch start: its capability and the coalesced changes
            let mut pending: BTreeMap<Time, (Capability<Time>, HashMap<(Symbol, u32), Accum>)> =
                BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|capability, data| {
                    for container in data {
                        for (key, time, (count, sum)) in container.drain(..) {
                            let start = time - time % tick;
                            let (_, changes) = pending
                                .entry(start)
                                .or_insert_with(|| (capability.delayed(&time, 0), HashMap::new()));
                            let entry = changes.entry(key).or_insert((0, 0));
                            entry.0 += count;
                            entry.1 = entry.1.wrapping_add(sum);
                        }
                    }
                });
                // an epoch is complete once nothing before its end can arrive
                let complete: Vec<Time> = pending
                    .keys()
                    .copied()
                    .take_while(|start| !frontier.less_than(&start.saturating_add(tick)))
                    .collect();
                for start in complete {
                    if let Some((capability, changes)) = pending.remove(&start) {
                        let mut changes: Vec<_> = changes
                            .into_iter()
                            .filter(|(_, accum)| *accum != (0, 0))
                            .collect();
                        changes.sort_unstable();
                        output
                            .session(&capability)
                            .give_iterator(changes.into_iter());
                    }
                }
            }
        },
    )
}
