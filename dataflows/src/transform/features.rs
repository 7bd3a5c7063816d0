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

use crate::error::{Errors, GraphError, split_errors};
use crate::fact::{Fact, Symbol, Time, Value};
use crate::fixed::{Accum, to_fixed};
use crate::plan::{AggregatePlan, FieldPlan, Function, GLOBAL_KEY, Plan};
use crate::transform::lookup::{Store, StoreTrace, route};

/// A store update: `((key, aggregate index), ())` with its accumulated difference.
type StoreUpdate = (((Symbol, u32), ()), Time, Accum);

/// Builds the feature store from the facts of each source (indexed by source id), and the
/// errors of the facts it could not use: a fact without its key, or a value that cannot be
/// summed exactly.
pub fn feature_store<'scope>(
    plan: &Plan,
    sources: &[VecCollection<'scope, Time, Fact>],
) -> (Store<'scope>, Errors<'scope>) {
    let scope = sources[0].scope();
    let mut updates = Vec::new();
    let mut errors = Vec::new();
    for index in 0..plan.aggregates.len() {
        let (aggregate, failed) = aggregate_updates(plan, index, sources);
        updates.push(aggregate);
        errors.extend(failed);
    }
    let all = differential_dataflow::collection::concatenate(scope, updates);
    let store = arrange_core::<_, _, ValBatcher<(Symbol, u32), (), Time, Accum>, StoreTrace>(
        all.inner,
        Exchange::new(|update: &StoreUpdate| route((update.0).0.0)),
        "Arrange: FeatureStore",
        ValBatcher::new,
    );
    (
        store,
        differential_dataflow::collection::concatenate(scope, errors),
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

/// The symbol of a field that keys facts: `role` names the field in the reason when it is
/// missing, or holds a value that has no single symbol (a real number, a list).
pub(crate) fn key_of(
    fields: &[FieldPlan],
    row: &[Value],
    field: usize,
    role: &str,
) -> Result<Symbol, String> {
    let name = fields.get(field).map_or("?", |field| field.name.as_str());
    match row.get(field) {
        None | Some(Value::Missing) => Err(format!("{role} `{name}` is missing")),
        Some(value) => value.symbol().ok_or_else(|| {
            let kind = match value {
                Value::Real(_) => "a real number",
                Value::List(_) => "a list",
                _ => "a value without a symbol",
            };
            format!("{role} `{name}` holds {kind}, which cannot be a key")
        }),
    }
}

/// What one fact contributes to an aggregate, keyed, pushed onto `keyed`; the reason when the
/// fact cannot be used: its key is missing or cannot be a key, or its value is not a number or
/// does not fit fixed point. A missing value contributes nothing, and is no error.
fn contributions(
    aggregate: &AggregatePlan,
    fields: &[FieldPlan],
    fact: &Fact,
    keyed: &mut Vec<(Symbol, Contribution)>,
) -> Result<(), String> {
    let key = match aggregate.key_field {
        None => GLOBAL_KEY,
        Some(field) => key_of(fields, &fact.row, field, "key field")?,
    };
    let (time, id) = (fact.time, fact.id);
    let name = |field: usize| fields.get(field).map_or("?", |field| field.name.as_str());
    // a field's number; `None` when it is missing
    let number = |field: usize| match fact.row.get(field) {
        None | Some(Value::Missing) => Ok(None),
        Some(value) => value
            .number()
            .map(Some)
            .ok_or_else(|| format!("field `{}` is not a number", name(field))),
    };
    let fixed = |value: f64, what: String| {
        to_fixed(value).ok_or_else(|| format!("{what} = {value:e} does not fit fixed point"))
    };
    match aggregate.function {
        Function::Count => keyed.push((key, (0, time, id))),
        Function::Sum { field } | Function::Mean { field } | Function::Last { field } => {
            if let Some(value) = number(field)? {
                let value = fixed(value, format!("field `{}`", name(field)))?;
                keyed.push((key, (value, time, id)));
            }
        }
        Function::SumOfSquares { field } => {
            if let Some(value) = number(field)? {
                let square = fixed(
                    value * value,
                    format!("the square of field `{}`", name(field)),
                )?;
                keyed.push((key, (square, time, id)));
            }
        }
        Function::Distinct { field } => {
            if let Some(value) = fact.row.get(field) {
                keyed.extend(
                    levels(value)
                        .into_iter()
                        .map(|level| (key, (level, time, id))),
                );
            }
        }
    }
    Ok(())
}

/// The store updates of one aggregate, and the errors of the facts it could not use.
fn aggregate_updates<'scope>(
    plan: &Plan,
    index: usize,
    sources: &[VecCollection<'scope, Time, Fact>],
) -> (
    VecCollection<'scope, Time, ((Symbol, u32), ()), Accum>,
    Vec<Errors<'scope>>,
) {
    let aggregate = &plan.aggregates[index];
    let source = usize::from(aggregate.source);
    let facts = sources[source].clone();
    let mut errors = Vec::new();

    // key each fact, with what it contributes, its event time and its id
    let keying = aggregate.clone();
    let fields = plan.sources[source].fields.clone();
    let mut contribution = Vec::new();
    let (keyed, failed) = split_errors(
        facts,
        &format!("Key: {}", aggregate.name),
        move |(fact, time, diff): (Fact, Time, isize), keyed, failed| {
            contribution.clear();
            match contributions(&keying, &fields, &fact, &mut contribution) {
                Ok(()) => keyed.extend(contribution.drain(..).map(|keyed| (keyed, time, diff))),
                Err(why) => {
                    let reason = format!("aggregate `{}`: {why}", keying.name);
                    failed.push((GraphError::of(&fact, reason), time, diff));
                }
            }
        },
    );
    errors.push(failed);

    // re-key through another source: a like's post becomes the post's dog
    let keyed: VecCollection<'scope, Time, (Symbol, Contribution)> = match &aggregate.via {
        None => keyed,
        Some(via) => {
            let (via_key, via_value) = (via.key_field, via.value_field);
            let via_source = &plan.sources[usize::from(via.source)];
            let fields = via_source.fields.clone();
            let context = format!("aggregate `{}` via `{}`", aggregate.name, via_source.name);
            let (lookup, failed) = split_errors(
                sources[usize::from(via.source)].clone(),
                &format!("Key: {} via {}", aggregate.name, via_source.name),
                move |(fact, time, diff): (Fact, Time, isize), found, failed| {
                    let key = key_of(&fields, &fact.row, via_key, "key field");
                    let value = key_of(&fields, &fact.row, via_value, "re-keying field");
                    match key.and_then(|key| value.map(|value| (key, value))) {
                        Ok(pair) => found.push((pair, time, diff)),
                        Err(why) => {
                            let error = GraphError::of(&fact, format!("{context}: {why}"));
                            failed.push((error, time, diff));
                        }
                    }
                },
            );
            errors.push(failed);
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
    let updates = match aggregate.function {
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
    };
    (updates, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::Real;
    use crate::hashing::symbol;
    use crate::plan::{AggregateUse, FieldKind};

    fn fields() -> Vec<FieldPlan> {
        ["dog", "score", "tags"]
            .into_iter()
            .map(|name| FieldPlan {
                name: name.into(),
                kind: FieldKind::Text,
                required: false,
            })
            .collect()
    }

    fn aggregate(function: Function) -> AggregatePlan {
        AggregatePlan {
            name: "a".into(),
            source: 0,
            key_field: Some(0),
            via: None,
            function,
            window: None,
            used_by: AggregateUse::Feature { example_field: 0 },
        }
    }

    fn fact(row: Vec<Value>) -> Fact {
        Fact {
            id: 7,
            source: 0,
            time: 30,
            row,
        }
    }

    fn contribute(
        function: Function,
        row: Vec<Value>,
    ) -> Result<Vec<(Symbol, Contribution)>, String> {
        let mut keyed = Vec::new();
        contributions(&aggregate(function), &fields(), &fact(row), &mut keyed).map(|()| keyed)
    }

    #[test]
    fn a_fact_contributes_its_value_under_its_key() {
        let dog = Value::Text(symbol(b"d1"));
        let row = vec![dog.clone(), Value::Real(Real(1.5)), Value::List(vec![4, 5])];
        let key = symbol(b"d1");
        assert_eq!(
            contribute(Function::Count, row.clone()),
            Ok(vec![(key, (0, 30, 7))])
        );
        assert_eq!(
            contribute(Function::Sum { field: 1 }, row.clone()),
            Ok(vec![(key, (1_500_000, 30, 7))])
        );
        assert_eq!(
            contribute(Function::SumOfSquares { field: 1 }, row.clone()),
            Ok(vec![(key, (2_250_000, 30, 7))])
        );
        assert_eq!(
            contribute(Function::Distinct { field: 2 }, row),
            Ok(vec![(key, (4, 30, 7)), (key, (5, 30, 7))])
        );
    }

    #[test]
    fn a_missing_value_contributes_nothing_and_is_no_error() {
        let row = vec![Value::Text(symbol(b"d1")), Value::Missing, Value::Missing];
        for function in [
            Function::Sum { field: 1 },
            Function::Mean { field: 1 },
            Function::Last { field: 1 },
            Function::Distinct { field: 2 },
        ] {
            assert_eq!(contribute(function, row.clone()), Ok(vec![]));
        }
    }

    #[test]
    fn a_fact_without_its_key_is_an_error() {
        let missing = contribute(Function::Count, vec![Value::Missing, Value::Missing]);
        assert_eq!(missing, Err("key field `dog` is missing".to_owned()));
        let real = contribute(Function::Count, vec![Value::Real(Real(2.0))]);
        assert_eq!(
            real,
            Err("key field `dog` holds a real number, which cannot be a key".to_owned())
        );
        let list = contribute(Function::Count, vec![Value::List(vec![1])]);
        assert!(list.unwrap_err().contains("holds a list"));
        // a global aggregate needs no key
        let mut global = aggregate(Function::Count);
        global.key_field = None;
        let mut keyed = Vec::new();
        let result = contributions(&global, &fields(), &fact(vec![Value::Missing]), &mut keyed);
        assert_eq!((result, keyed), (Ok(()), vec![(GLOBAL_KEY, (0, 30, 7))]));
    }

    #[test]
    fn a_value_that_does_not_fit_fixed_point_is_an_error() {
        let dog = Value::Text(symbol(b"d1"));
        let huge = vec![dog.clone(), Value::Real(Real(1.0e13))];
        let error = contribute(Function::Sum { field: 1 }, huge).unwrap_err();
        assert_eq!(error, "field `score` = 1e13 does not fit fixed point");
        // fits, but its square does not
        let large = vec![dog.clone(), Value::Real(Real(1.0e7))];
        assert!(contribute(Function::Sum { field: 1 }, large.clone()).is_ok());
        let error = contribute(Function::SumOfSquares { field: 1 }, large).unwrap_err();
        assert_eq!(
            error,
            "the square of field `score` = 1e14 does not fit fixed point"
        );
        let text = vec![dog, Value::Text(1)];
        let error = contribute(Function::Mean { field: 1 }, text).unwrap_err();
        assert_eq!(error, "field `score` is not a number");
    }
}
