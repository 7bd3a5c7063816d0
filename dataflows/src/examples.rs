//! Examples: the events of the example source, their features as they stood just before each
//! event, and their labels when they are due.
//!
//! An example is emitted once, when the store is complete up to its event time, and never
//! again when its features change later. A delayed label (a post is popular if it gets K likes
//! within H hours) is a separate request, due H hours after the event, that counts the facts
//! which arrived by then.

use std::rc::Rc;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;

use crate::event::{Event, LabelRequest, partition_key};
use crate::fact::{Fact, Time};
use crate::lookup::{LookupSpec, Store, lookup};
use crate::plan::{GLOBAL_KEY, LabelPlan, Plan};

/// The example id of a fact of the example source: its id field, or else its position.
pub fn example_id(plan: &Plan, fact: &Fact) -> u64 {
    plan.examples
        .id_field
        .and_then(|field| fact.row.get(field))
        .and_then(|value| value.symbol())
        .unwrap_or(fact.id)
}

/// The events of the example source, one per inserted fact, due at their own event time (or
/// at their admission, for a fact admitted late).
///
/// Retracted examples are not emitted: a model cannot unlearn a step of stochastic gradient
/// descent, so a withdrawn example only changes the features it contributed to.
pub fn example_events<'scope>(
    plan: &Rc<Plan>,
    facts: VecCollection<'scope, Time, Fact>,
) -> VecCollection<'scope, Time, Event> {
    let plan = Rc::clone(plan);
    facts
        .inner
        .flat_map(move |(fact, time, diff)| {
            (diff > 0).then(|| {
                let id = example_id(&plan, &fact);
                // A fact admitted late carries its event time but joins the graph at the
                // open epoch; its features are read as of then, as history before it may
                // already be compacted.
                (Event::new(&plan, id, fact.time, time, fact.row), time, 1)
            })
        })
        .as_collection()
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
        let field = group.example_field;
        let field_name = match field {
            Some(field) => plan.example_source().fields[field].name.as_str(),
            None => "global",
        };
        events = lookup(
            events,
            store,
            LookupSpec {
                name: format!("Lookup: {name} by {field_name}"),
                aggregates: group.aggregates,
                key: move |event: &Event| match field {
                    Some(field) => event.symbol(field),
                    None => Some(GLOBAL_KEY),
                },
                as_of: |event: &Event| event.as_of,
                as_of_floor: as_of_floor.clone(),
                write: |event: &mut Event, aggregate, value| event.aggregates[aggregate] = value,
                settle: |event: &mut Event, as_of| event.as_of = as_of,
            },
        );
    }
    events
}

/// Requests for the delayed labels of the example facts, due `within_secs` after each, or
/// nothing when labels are known at once.
pub fn label_requests<'scope>(
    plan: &Rc<Plan>,
    facts: VecCollection<'scope, Time, Fact>,
) -> Option<VecCollection<'scope, Time, LabelRequest>> {
    let LabelPlan::CountWithin { within_secs, .. } = plan.label else {
        return None;
    };
    let plan = Rc::clone(plan);
    let requests = facts
        .inner
        .flat_map(move |(fact, time, diff)| {
            (diff > 0).then(|| {
                // due `within_secs` after the event, and never before the fact was admitted
                let due = fact.time.saturating_add(within_secs).max(time);
                let id = example_id(&plan, &fact);
                let request = LabelRequest {
                    id,
                    entity: partition_key(&plan, id, &fact.row),
                    key: plan
                        .examples
                        .id_field
                        .and_then(|field| fact.row.get(field))
                        .and_then(|value| value.symbol()),
                    as_of: due,
                    count: 0,
                };
                (request, due, 1)
            })
        })
        .as_collection();
    Some(requests)
}

/// Counts, for each label request, the facts of the label's aggregate before it was due.
pub fn labels<'scope>(
    plan: &Plan,
    requests: VecCollection<'scope, Time, LabelRequest>,
    store: &Store<'scope>,
) -> VecCollection<'scope, Time, LabelRequest> {
    let LabelPlan::CountWithin { aggregate, .. } = plan.label else {
        return requests;
    };
    lookup(
        requests,
        store,
        LookupSpec {
            name: "Lookup: labels".to_owned(),
            aggregates: vec![aggregate],
            key: |request: &LabelRequest| request.key,
            as_of: |request: &LabelRequest| request.as_of,
            as_of_floor: |time| time,
            write: |request: &mut LabelRequest, _aggregate, (count, _sum)| request.count = count,
            settle: |_: &mut LabelRequest, _| {},
        },
    )
}
