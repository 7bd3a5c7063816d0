//! Transformation: the feature store, every aggregate of every key kept up to date
//! incrementally from the facts.
//!
//! An aggregate's state is the accumulated difference of its input: each fact contributes
//! `(1, value)` to the [`Accum`] of its key, a window withdraws the same contribution once
//! the fact's event time leaves it, and a retracted fact withdraws it. The arrangement of
//! those differences is the store, and reading it as of a time sums the differences before
//! that time. Counts, sums and means therefore equal a from-scratch recomputation exactly,
//! after any sequence of insertions and retractions. A distinct count thresholds the
//! `(key, level)` pairs first, so each live pair contributes `(1, 0)`; a last value is a
//! `reduce` whose output changes retract the old value and insert the new, so it accumulates
//! to `(1, latest value)`.

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::implementations::ValBatcher;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;

use crate::fact::{Fact, Symbol, Time, Value};
use crate::fixed::{Accum, to_fixed};
use crate::plan::{AggregatePlan, Function, GLOBAL_KEY, Plan};
use crate::transform::lookup::{Store, StoreTrace, route};

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

/// What one fact contributes to an aggregate before windows and functions apply:
/// `(value, event time, fact id)`. The value is a fixed-point number, or for a distinct count
/// the identity of the level.
type Contribution = (i64, Time, u64);

/// The identities of the levels of a value, for distinct counts: each symbol of a text or a
/// list, the bits of a real.
fn levels(value: &Value) -> Vec<i64> {
    match value {
        Value::List(symbols) => symbols.iter().map(|&symbol| symbol as i64).collect(),
        Value::Real(real) => vec![real.0.to_bits() as i64],
        Value::Missing => Vec::new(),
        other => other
            .symbol()
            .map(|symbol| symbol as i64)
            .into_iter()
            .collect(),
    }
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
    let function = aggregate.function.clone();

    // key each fact, with what it contributes, its event time and its id
    let keyed = facts.flat_map(move |fact| {
        let key = match key_field {
            None => Some(GLOBAL_KEY),
            Some(field) => fact.row.get(field).and_then(Value::symbol),
        };
        let number = |field: usize| fact.row.get(field).and_then(Value::number);
        let values: Vec<i64> = match function {
            Function::Count => vec![0],
            Function::Sum { field } | Function::Mean { field } | Function::Last { field } => {
                number(field).and_then(to_fixed).into_iter().collect()
            }
            Function::SumOfSquares { field } => number(field)
                .and_then(|value| to_fixed(value * value))
                .into_iter()
                .collect(),
            Function::Distinct { field } => fact.row.get(field).map(levels).unwrap_or_default(),
        };
        let (time, id) = (fact.time, fact.id);
        key.map(|key| {
            values
                .into_iter()
                .map(move |value| (key, (value, time, id)))
        })
        .into_iter()
        .flatten()
    });

    // re-key through another source: a like's post becomes the post's dog
    let keyed: VecCollection<'scope, Time, (Symbol, Contribution)> = match &aggregate.via {
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
            let name = &aggregate.name;
            let new_keys = lookup.arrange_by_key_named(&format!("Arrange: {name} new keys"));
            keyed
                .arrange_by_key_named(&format!("Arrange: {name} by old key"))
                .join_core(new_keys, |_old_key, contribution, new_key| {
                    Some((*new_key, *contribution))
                })
        }
    };

    // A window withdraws each contribution when its fact's event time leaves it: `window_secs`
    // later for a sliding window, at the end of its own window for a tumbling one. The
    // withdrawal is placed at that moment, or at once for a change made later than that (a
    // correction of a fact already out of the window then cancels out), so the window always
    // holds the live facts whose event time lies in it.
    let keyed = match aggregate.window {
        None => keyed,
        Some(window) => {
            let expired = keyed
                .inner
                .clone()
                .map(move |(data, time, diff)| {
                    let expiry = window.expiry(data.1.1).max(time);
                    (data, expiry, -diff)
                })
                .as_collection();
            keyed.concat(expired)
        }
    };

    let aggregate_index = index as u32;
    match aggregate.function {
        // differences become accumulators: one counted fact, and its value
        Function::Count
        | Function::Sum { .. }
        | Function::Mean { .. }
        | Function::SumOfSquares { .. } => keyed
            .inner
            .map(move |((key, (value, _event_time, _id)), time, diff)| {
                let diff = diff as i64;
                (
                    ((key, aggregate_index), ()),
                    time,
                    (diff, diff.saturating_mul(value)) as Accum,
                )
            })
            .as_collection(),
        // a (key, level) pair counts once while any live fact holds it
        Function::Distinct { .. } => keyed
            .map(|(key, (level, _event_time, _id))| (key, level))
            .threshold_named(
                &format!("Distinct: {}", aggregate.name),
                |_pair, count: &isize| -> Accum { if *count > 0 { (1, 0) } else { (0, 0) } },
            )
            .map(move |(key, _level)| ((key, aggregate_index), ())),
        // The latest fact's value: the reduce's output changes retract the old value and
        // insert the new, so the accumulated difference is `(1, latest value)`.
        Function::Last { .. } => keyed
            .map(|(key, (value, event_time, id))| (key, (event_time, id, value)))
            .reduce_named(
                &format!("Last: {}", aggregate.name),
                |_key, input: &[(&(Time, u64, i64), isize)], output: &mut Vec<((), Accum)>| {
                    // values arrive sorted, so the latest live one is the last with a positive count
                    if let Some((latest, _)) = input.iter().rev().find(|(_, count)| *count > 0) {
                        output.push(((), (1, latest.2)));
                    }
                },
            )
            .map(move |(key, ())| ((key, aggregate_index), ())),
    }
}
