//! Publishing and serving: published versions are arranged on every worker, next to the
//! feature store, and queries are answered from both.
//!
//! A query asked at time `t` in epoch `e` is answered from the serving state complete at the
//! start of `e`: the entity's features as of that instant, and the newest version published by
//! then. Both are complete as soon as epoch `e - 1` has closed and its round has been merged,
//! so the query never waits for the epoch ingestion is filling.

use std::collections::BTreeMap;
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
use timely::progress::frontier::AntichainRef;

use crate::event::{Answer, Event, featurize};
use crate::fact::{Real, Symbol, Time};
use crate::hashing::symbol;
use crate::learn::logistic::sigmoid;
use crate::model::ModelVersion;
use crate::plan::Plan;

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
                let mut pending: BTreeMap<Time, (Capability<Time>, Vec<Event>)> = BTreeMap::new();
                move |(queries, query_frontier), (batches, model_frontier), output| {
                    queries.for_each_stamp(|capability, data| {
                        for container in data {
                            for (query, time, _diff) in container.drain(..) {
                                pending
                                    .entry(time)
                                    .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                    .1
                                    .push(query);
                            }
                        }
                    });
                    batches.for_each(|_, _| {});

                    // versions published at or before a query's time are all in once the frontier is past it
                    let model_frontier = model_frontier.frontier();
                    let ready: Vec<Time> = pending
                        .keys()
                        .take_while(|time| !model_frontier.less_equal(time))
                        .copied()
                        .collect();
                    if !ready.is_empty()
                        && let Some(batches) = trace.batches_through(AntichainRef::new(&[]))
                    {
                        let (mut cursor, storage) = cursor_list(batches);
                        for time in ready {
                            let Some((capability, queries)) = pending.remove(&time) else {
                                continue;
                            };
                            // the newest version live at `time`
                            let mut live: BTreeMap<u64, (isize, Arc<ModelVersion>)> =
                                BTreeMap::new();
                            cursor.rewind_keys(&storage);
                            cursor.seek_key(&storage, &model_symbol);
                            if cursor.get_key(&storage) == Some(&model_symbol) {
                                while let Some(version) = cursor.get_val(&storage) {
                                    let mut count = 0;
                                    cursor.map_times(&storage, |at, diff| {
                                        if *at <= time {
                                            count += diff;
                                        }
                                    });
                                    if count > 0 {
                                        live.insert(version.version, (count, Arc::clone(version)));
                                    }
                                    cursor.step_val(&storage);
                                }
                            }
                            let newest = live.into_values().next_back().map(|(_, version)| version);
                            let mut session = output.session(&capability);
                            for query in queries {
                                let features = featurize(&plan, &query);
                                let (probability, version) = match &newest {
                                    Some(model) => (model.predict(&features), model.version),
                                    None => (sigmoid(0.0), 0),
                                };
                                session.give(Answer {
                                    query: query.id,
                                    probability: Real(probability),
                                    model: plan.model.name.clone(),
                                    version,
                                    features_epoch: plan.epoch(query.as_of).saturating_sub(1),
                                });
                            }
                        }
                    }

                    // no query asks about a time before the earliest one waiting or yet to come
                    let floor = query_frontier
                        .frontier()
                        .iter()
                        .chain(pending.keys())
                        .min()
                        .copied();
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
