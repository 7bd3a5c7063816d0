//! Transformation: the feature store, every aggregate of every key kept up to date
//! incrementally from the facts.
//!
//! An aggregate's state is not a value computed by a `reduce` but the accumulated difference
//! of its input: each fact contributes `(1, value)` to the [`Accum`] of its key, a sliding
//! window withdraws the same contribution once the fact's event time is `window_secs` old,
//! and a retracted fact withdraws it. The arrangement of those differences is the store, and reading it as of a time sums
//! the differences before that time. Counts, sums and means therefore equal a from-scratch
//! recomputation exactly, after any sequence of insertions and retractions.

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::implementations::ValBatcher;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;

use crate::event::{Accum, to_fixed};
use crate::fact::{Fact, Symbol, Time, Value};
use crate::lookup::{Store, StoreTrace, route};
use crate::plan::{AggregatePlan, Function, Plan};

/// A store update: `((key, aggregate index), ())` with its accumulated difference.
type StoreUpdate = (((Symbol, u32), ()), Time, Accum);

/// Builds the feature store from the facts of each source (indexed by source id).
pub fn feature_store<'scope>(
    plan: &Plan,
    sources: &[VecCollection<'scope, Time, Fact>],
) -> Store<'scope> {
    let scope = sources[0].scope();
    let mut updates = Vec::new();
    for (index, aggregate) in plan.aggregates.iter().enumerate() {
        updates.push(aggregate_updates(index, aggregate, sources));
    }
    let all = differential_dataflow::collection::concatenate(scope, updates);
    arrange_core::<_, _, ValBatcher<(Symbol, u32), (), Time, Accum>, StoreTrace>(
        all.inner,
        Exchange::new(|update: &StoreUpdate| route((update.0).0.0)),
        "Arrange: FeatureStore",
        ValBatcher::new,
    )
}

/// The store updates of one aggregate.
fn aggregate_updates<'scope>(
    index: usize,
    aggregate: &AggregatePlan,
    sources: &[VecCollection<'scope, Time, Fact>],
) -> VecCollection<'scope, Time, ((Symbol, u32), ()), Accum> {
    let source = usize::from(aggregate.source);
    let facts = sources[source].clone();
    let key_field = aggregate.key_field;
    let value_field = match aggregate.function {
        Function::Count => None,
        Function::Sum { field } | Function::Mean { field } => Some(field),
    };

    // key each fact, with the fixed-point value it contributes and its event time
    let keyed = facts.flat_map(move |fact| {
        let key = fact.row.get(key_field).and_then(Value::symbol)?;
        let value = match value_field {
            None => 0,
            Some(field) => fact
                .row
                .get(field)
                .and_then(Value::number)
                .and_then(to_fixed)?,
        };
        Some((key, (value, fact.time)))
    });

    // re-key through another source: a like's post becomes the post's dog
    let keyed = match &aggregate.via {
        None => keyed,
        Some(via) => {
            let (via_key, via_value) = (via.key_field, via.value_field);
            let lookup = sources[usize::from(via.source)]
                .clone()
                .flat_map(move |fact| {
                    let key = fact.row.get(via_key).and_then(Value::symbol)?;
                    let value = fact.row.get(via_value).and_then(Value::symbol)?;
                    Some((key, value))
                });
            keyed.join_map(lookup, |_old_key, contribution, new_key| {
                (*new_key, *contribution)
            })
        }
    };

    // A sliding window withdraws each contribution once its fact's event time is
    // `window_secs` old. The withdrawal is placed at that moment, or at once for a change made
    // later than that (a correction of a fact already out of the window then cancels out), so
    // the window always holds the live facts whose event time lies in it.
    let keyed = match aggregate.window_secs {
        None => keyed,
        Some(window) => {
            let expired = keyed
                .inner
                .clone()
                .map(move |(data, time, diff)| {
                    let expiry = data.1.1.saturating_add(window).max(time);
                    (data, expiry, -diff)
                })
                .as_collection();
            keyed.concat(expired)
        }
    };

    // differences become accumulators: one counted fact, and its value
    let aggregate_index = index as u32;
    keyed
        .inner
        .map(move |((key, (value, _event_time)), time, diff)| {
            let diff = diff as i64;
            (
                ((key, aggregate_index), ()),
                time,
                (diff, diff.saturating_mul(value)) as Accum,
            )
        })
        .as_collection()
}
