//! Examples: the events of the example source, with their features as they stood just
//! before each event.
//!
//! An example is emitted once, when the store is complete up to its event time, and never
//! again when its features change later. Its label, when it is delayed, comes from
//! [`super::labels`].

use std::rc::Rc;

use differential_dataflow::VecCollection;

use crate::error::{Errors, GraphError, split_errors};
use crate::event::Event;
use crate::fact::{Fact, Time, Value};
use crate::plan::{FeatureKind, LookupGroup, Plan, Transform};
use crate::transform::features::key_of;
use crate::transform::fill::{fill_aggregates, group_key};
use crate::transform::lookup::{LookupSpec, Read, Store, lookup};

/// The example id of a fact of the example source: its id field, or else its position.
pub fn example_id(plan: &Plan, fact: &Fact) -> u64 {
    plan.examples
        .id_field
        .and_then(|field| fact.row.get(field))
        .and_then(|value| value.symbol())
        .unwrap_or(fact.id)
}

/// The events of the example source, one per inserted fact, due at their own event time (or
/// at their admission, for a fact admitted late); and the errors of examples that name a
/// lookup key which cannot be a key, or a numeric feature value the model cannot hold.
///
/// Retracted examples are not emitted: a model cannot unlearn a step of stochastic gradient
/// descent, so a withdrawn example only changes the features it contributed to.
pub fn example_events<'scope>(
    plan: &Rc<Plan>,
    facts: VecCollection<'scope, Time, Fact>,
) -> (VecCollection<'scope, Time, Event>, Errors<'scope>) {
    let plan = Rc::clone(plan);
    let groups = plan.lookup_groups();
    split_errors(
        facts,
        "Examples",
        move |(fact, time, diff): (Fact, Time, isize), events, failed| {
            for reason in example_errors(&plan, &groups, &fact.row) {
                failed.push((GraphError::of(&fact, reason), time, diff));
            }
            if diff > 0 {
                let id = example_id(&plan, &fact);
                // A fact admitted late carries its event time but joins the graph at the
                // open epoch; its features are read as of then, as history before it may
                // already be compacted.
                events.push((Event::new(&plan, id, fact.time, time, fact.row), time, 1));
            }
        },
    )
}

/// Why an example's row cannot be used whole: a lookup key field that holds a value without a
/// symbol (a missing one is no error: the example names no such entity, and reads nothing),
/// or a numeric feature, read as it is, beyond the range of the model's `f32` values.
pub fn example_errors(plan: &Plan, groups: &[LookupGroup], row: &[Value]) -> Vec<String> {
    let fields = &plan.example_source().fields;
    let mut reasons = Vec::new();
    for group in groups {
        let Some(field) = group.example_field else {
            continue;
        };
        if row.get(field).is_some_and(|value| *value != Value::Missing)
            && let Err(why) = key_of(fields, row, field, "lookup key field")
        {
            reasons.push(format!("example: {why}"));
        }
    }
    for feature in &plan.features {
        if let (FeatureKind::Numeric { field }, Transform::Identity) =
            (&feature.kind, &feature.transform)
            && let Some(value) = row.get(*field).and_then(Value::number)
            && value.is_finite()
            && !(value as f32).is_finite()
        {
            reasons.push(format!(
                "feature `{}`: {value:e} is beyond the range of the model's values",
                feature.name
            ));
        }
    }
    reasons
}

/// Looks up every aggregate feature of each event, as it stood strictly before the event's
/// `as_of`, visiting the worker that owns each lookup key in turn.
///
/// `as_of_floor` bounds the `as_of` of events from their record time (for examples they are
/// equal; a query looks at the start of its epoch).
pub fn with_features<'scope>(
    plan: &Rc<Plan>,
    events: VecCollection<'scope, Time, Event>,
    store: &Store<'scope>,
    as_of_floor: impl Fn(Time) -> Time + Clone + 'static,
    name: &str,
) -> VecCollection<'scope, Time, Event> {
    let mut events = events;
    for group in plan.lookup_groups() {
        let field_name = match group.example_field {
            Some(field) => plan.example_source().fields[field].name.as_str(),
            None => "global",
        };
        let name = format!("Lookup: {name} by {field_name}");
        let routed = group.clone();
        events = lookup(
            events,
            store,
            LookupSpec {
                name,
                key: move |event: &Event| group_key(&routed, &event.row),
                as_of: |event: &Event| event.as_of,
                as_of_floor: as_of_floor.clone(),
                fill: move |event: &mut Event, read: &mut Read<'_>| {
                    fill_aggregates(std::slice::from_ref(&group), event, read)
                },
                settle: |event: &mut Event, as_of| event.as_of = as_of,
            },
        );
    }
    events
}
