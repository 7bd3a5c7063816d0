//! Publishing and serving: published versions are arranged on every worker, next to the
//! feature store, and queries are answered from both.
//!
//! A query asked at time `t` in epoch `e` is answered from the serving state complete at the
//! start of `e`: the entity's features as of that instant, and the newest version published by
//! then. Both are complete as soon as epoch `e - 1` has closed and its round has been merged,
//! so the query never waits for the epoch ingestion is filling.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Filter;
use timely::progress::frontier::AntichainRef;

use crate::event::{Accum, Answer, Event, aggregate_values, featurize};
use crate::fact::{Real, Symbol, Time};
use crate::hashing::symbol;
use crate::learn::logistic::sigmoid;
use crate::lookup::LATEST;
use crate::model::ModelVersion;
use crate::plan::{AggregateUse, Plan};

/// The trace of published versions: model name symbol to version.
pub type ModelTrace = ValSpine<Symbol, Arc<ModelVersion>, Time, isize>;

/// Published versions, arranged on every worker (each worker arranges its own copy).
pub type Models<'scope> = Arranged<'scope, TraceAgent<ModelTrace>>;

/// Arranges the versions each worker published, locally.
pub fn arrange_models<'scope>(
    versions: VecCollection<'scope, Time, (Symbol, Arc<ModelVersion>)>,
) -> Models<'scope> {
    arrange_core::<_, _, ValBatcher<Symbol, Arc<ModelVersion>, Time, isize>, ModelTrace>(
        versions.inner,
        Pipeline,
        "Arrange: Models",
        ValBatcher::new,
    )
}

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
            "Serve",
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

/// The changes to the aggregates that features read, coalesced per epoch: for each key and
/// aggregate touched in an epoch, the sum of its changes, emitted once the epoch is complete.
///
/// Serving outside the graph keeps a copy of the store's current values from these; summed
/// over every epoch before `e`, they are the store as of the start of `e`. Coalescing on each
/// worker first sends one change per touched key per epoch, not one per fact.
pub fn feature_changes<'scope>(
    plan: &Plan,
    store: crate::lookup::Store<'scope>,
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
