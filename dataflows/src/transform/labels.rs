//! Delayed labels: a request per example, due when its label is known, that counts the facts
//! which arrived by then.
//!
//! A post is popular if it gets K likes within H hours: its label request is due H hours after
//! the post, and reads the count of likes of the post strictly before that time, once.

use std::rc::Rc;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;

use crate::event::{LabelRequest, partition_key};
use crate::fact::{Fact, Time};
use crate::plan::{LabelPlan, Plan};
use crate::transform::examples::example_id;
use crate::transform::lookup::{LookupSpec, Read, Store, lookup};

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
            key: |request: &LabelRequest| request.key,
            as_of: |request: &LabelRequest| request.as_of,
            as_of_floor: |time| time,
            fill: move |request: &mut LabelRequest, read: &mut Read<'_>| {
                if let Some(key) = request.key {
                    request.count = read(key, aggregate).0;
                }
            },
            settle: |_: &mut LabelRequest, _| {},
        },
    )
}
