//! The exact regression's dataflow: every worker sums the fixed-point moments of its share of
//! the examples, and worker 0 adds the sums up and solves at each epoch's close.
//!
//! The input is the example source's collection, retractions included: a withdrawn fact
//! arrives with difference −1 and subtracts exactly the moments its insertion added, as the
//! feature store's accumulators do. Only sums of integers cross workers, so the totals, and
//! the weights solved from them (see [`super::ridge`]), are the same on every layout.

use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::checkpoint::{Checkpointing, Part};
use crate::fact::{Fact, Time};
use crate::learn::ridge::{EpochDelta, ExactReport, FixedRow, Ridge};
use crate::plan::Plan;

/// Learns the plan's exact regression from the example source's facts; `None` when the plan
/// has none. Reports leave worker 0 at the close of every epoch in which examples arrived or
/// were withdrawn.
pub fn exact<'scope>(
    plan: &Rc<Plan>,
    examples: VecCollection<'scope, Time, Fact>,
    checkpointing: &Rc<Checkpointing>,
) -> Option<StreamVec<'scope, Time, ExactReport>> {
    let exact = plan.exact.clone()?;
    let tick_secs = plan.tick_secs;
    let weights = exact.weights();

    // each worker sums the changes of its own examples, per epoch
    let summing = exact.clone();
    let deltas = examples
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<EpochDelta>>, _, _, _>(
            Pipeline,
            "Exact: moments",
            move |_, _| {
                let mut epochs: BTreeMap<u64, (Capability<Time>, EpochDelta)> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (fact, time, diff) in data.drain(..) {
                            let epoch = time / tick_secs;
                            let entry = epochs.entry(epoch).or_insert_with(|| {
                                (
                                    capability.delayed(&time, 0),
                                    EpochDelta::new(epoch, weights),
                                )
                            });
                            if *entry.0.time() > time {
                                entry.0 = capability.delayed(&time, 0);
                            }
                            let row = FixedRow::from_fields(&summing, &fact.row);
                            entry.1.record(fact.id, row, diff as i64);
                        }
                    });
                    close_ready(&mut epochs, frontier, tick_secs, |capability, delta| {
                        output.session(&capability).give(delta);
                    });
                }
            },
        );

    if checkpointing.exporting() {
        checkpointing.expect(Part::Exact);
    }
    let resumed = checkpointing
        .resume_with(|state| state.exact.take())
        .flatten();
    let checkpointing = Rc::clone(checkpointing);
    // worker 0 adds the workers' sums, scores the new examples, and solves
    let reports = deltas.unary_frontier::<CapacityContainerBuilder<Vec<ExactReport>>, _, _, _>(
        Exchange::new(|_: &EpochDelta| 0),
        "Exact: solve",
        move |_, _| {
            let mut epochs: BTreeMap<u64, (Capability<Time>, EpochDelta)> = BTreeMap::new();
            let mut ridge = resumed.unwrap_or_else(|| Ridge::new(&exact));
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    // sums are sent under a capability, so their stamp has a least time
                    let Some(time) = capability.least().copied() else {
                        return;
                    };
                    for delta in data.drain(..) {
                        match epochs.get_mut(&delta.epoch) {
                            Some(entry) => {
                                if *entry.0.time() > time {
                                    entry.0 = capability.delayed(&time, 0);
                                }
                                entry.1.merge(delta);
                            }
                            None => {
                                let held = capability.delayed(&time, 0);
                                epochs.insert(delta.epoch, (held, delta));
                            }
                        }
                    }
                });
                close_ready(&mut epochs, frontier, tick_secs, |capability, delta| {
                    output.session(&capability).give(ridge.close_epoch(delta));
                });
                // at a cut every epoch before it is closed
                if let Some(cut) = checkpointing.wants(Part::Exact)
                    && !frontier.less_than(&cut)
                    && epochs
                        .keys()
                        .next()
                        .is_none_or(|&epoch| epoch >= cut / tick_secs)
                {
                    let state = ridge.clone();
                    checkpointing.deposit(Part::Exact, |worker| worker.exact = Some(state));
                }
            }
        },
    );
    Some(reports)
}

/// Hands over, in epoch order, every epoch the frontier has passed the end of.
fn close_ready(
    epochs: &mut BTreeMap<u64, (Capability<Time>, EpochDelta)>,
    frontier: &timely::progress::frontier::MutableAntichain<Time>,
    tick_secs: u64,
    mut close: impl FnMut(Capability<Time>, EpochDelta),
) {
    while let Some(entry) = epochs.first_entry() {
        let end = (entry.key() + 1).saturating_mul(tick_secs);
        if frontier.less_than(&end) {
            break;
        }
        let (capability, delta) = entry.remove();
        close(capability, delta);
    }
}
