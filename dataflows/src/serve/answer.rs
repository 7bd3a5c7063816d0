//! Serving inside the graph: queries, with their features looked up, answered from the
//! published versions.
//!
//! A query asked at time `t` in epoch `e` is answered from the serving state complete at the
//! start of `e`: the entity's features as of that instant, and the newest version published by
//! then. Both are complete as soon as epoch `e - 1` has closed and its round has been merged,
//! so the query never waits for the epoch ingestion is filling.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::progress::frontier::AntichainRef;

use crate::event::{Answer, Event};
use crate::fact::{Real, Symbol, Time};
use crate::hashing::symbol;
use crate::learn::logistic::sigmoid;
use crate::plan::Plan;
use crate::publish::model::ModelVersion;
use crate::publish::versions::Models;
use crate::transform::featurize::{aggregate_values, featurize};
use crate::transform::lookup::LATEST;

/// Answers queries, which have had their features looked up, with the newest version of the
/// plan's model published at or before each query's time.
///
/// Before any version exists the answer is the prior, 0.5, from version 0.
pub fn answer<'scope>(
    plan: &Rc<Plan>,
    queries: VecCollection<'scope, Time, Event>,
    models: &Models<'scope>,
) -> StreamVec<'scope, Time, Answer> {
    let plan = Rc::clone(plan);
    let model_symbol = symbol(plan.model.name.as_bytes());
    let mut trace = models.trace.clone();
    queries
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Vec<Answer>>, _, _, _, _>(
            models.stream.clone(),
            Pipeline,
            Pipeline,
            "Answer",
            move |_, _| {
                // queries waiting for the versions published up to a time, and their capabilities
                let mut pending: BTreeMap<(Time, Time), (Capability<Time>, Vec<Event>)> =
                    BTreeMap::new();
                move |(queries, query_frontier), (batches, model_frontier), output| {
                    queries.for_each_stamp(|capability, data| {
                        for container in data {
                            for (query, time, _diff) in container.drain(..) {
                                // a live query sees what is published when it arrives
                                let view = if query.live { LATEST } else { time };
                                pending
                                    .entry((view, time))
                                    .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                    .1
                                    .push(query);
                            }
                        }
                    });
                    batches.for_each(|_, _| {});

                    // versions published at or before a time are all in once the frontier is past it
                    let model_frontier = model_frontier.frontier();
                    let published = model_frontier
                        .first()
                        .map_or(LATEST, |first| first.saturating_sub(1));
                    let ready: Vec<(Time, Time)> = pending
                        .keys()
                        .take_while(|(view, _)| *view != LATEST && !model_frontier.less_equal(view))
                        .chain(pending.range((LATEST, 0)..).map(|(slot, _)| slot))
                        .copied()
                        .collect();
                    if !ready.is_empty()
                        && let Some(batches) = trace.batches_through(AntichainRef::new(&[]))
                    {
                        let (mut cursor, storage) = cursor_list(batches);
                        for slot in ready {
                            let Some((capability, queries)) = pending.remove(&slot) else {
                                continue;
                            };
                            let view = if slot.0 == LATEST { published } else { slot.0 };
                            let newest = newest_version(&mut cursor, &storage, model_symbol, view);
                            let mut session = output.session(&capability);
                            for query in queries {
                                session.give(score(&plan, &query, newest.as_deref()));
                            }
                        }
                    }

                    // no query asks about a time before the earliest one waiting or yet to come,
                    // nor (a live one) before what is published now
                    let floor = query_frontier
                        .frontier()
                        .iter()
                        .chain(pending.keys().map(|(view, _)| view))
                        .min()
                        .map(|&floor| floor.min(published));
                    match floor {
                        Some(floor) => {
                            trace.set_logical_compaction(AntichainRef::new(&[floor]));
                            trace.set_physical_compaction(AntichainRef::new(&[floor]));
                        }
                        None => {
                            trace.set_logical_compaction(AntichainRef::new(&[]));
                            trace.set_physical_compaction(AntichainRef::new(&[]));
                        }
                    }
                }
            },
        )
}

/// The newest version of a model published at or before `view`.
fn newest_version<C>(
    cursor: &mut C,
    storage: &C::Storage,
    model: Symbol,
    view: Time,
) -> Option<Arc<ModelVersion>>
where
    C: for<'a> Cursor<
            Key<'a> = &'a Symbol,
            Val<'a> = &'a Arc<ModelVersion>,
            TimeGat<'a> = &'a Time,
            DiffGat<'a> = &'a isize,
        >,
{
    let mut newest: Option<Arc<ModelVersion>> = None;
    cursor.rewind_keys(storage);
    cursor.seek_key(storage, &model);
    if cursor.get_key(storage) == Some(&model) {
        while let Some(version) = cursor.get_val(storage) {
            let mut count = 0;
            cursor.map_times(storage, |at, diff| {
                if *at <= view {
                    count += diff;
                }
            });
            if count > 0
                && newest
                    .as_ref()
                    .is_none_or(|newest| newest.version < version.version)
            {
                newest = Some(Arc::clone(version));
            }
            cursor.step_val(storage);
        }
    }
    newest
}

/// The answer to one query from one version (or from the prior, before any version).
fn score(plan: &Plan, query: &Event, model: Option<&ModelVersion>) -> Answer {
    let features = featurize(plan, query);
    let (probability, version) = match model {
        Some(model) => (model.predict(&features), model.version),
        None => (sigmoid(0.0), 0),
    };
    Answer {
        query: query.id,
        probability: Real(probability),
        model: plan.model.name.clone(),
        version,
        features_epoch: plan.epoch(query.as_of).saturating_sub(1),
        features: aggregate_values(plan, query),
    }
}
