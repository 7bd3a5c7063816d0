//! Delayed labels: a request per example, due when its label is known, that counts the facts
//! which arrived by then.
//!
//! A post is popular if it gets K likes within H hours: its label request is due H hours after
//! the post, and reads the count of likes of the post strictly before that time, once.

use std::rc::Rc;

use differential_dataflow::VecCollection;

use crate::error::{Errors, GraphError, split_errors};
use crate::event::{LabelRequest, partition_key};
use crate::fact::{Fact, Time};
use crate::plan::{LabelPlan, Plan};
use crate::transform::examples::example_id;
use crate::transform::features::key_of;
use crate::transform::lookup::{LookupSpec, Read, Store, lookup};

/// Requests for the delayed labels of the example facts, due `within_secs` after each, or
/// nothing when labels are known at once; and the errors of examples whose id cannot key the
/// label's count, whose requests go out without a key and leave them unlabeled.
pub fn label_requests<'scope>(
    plan: &Rc<Plan>,
    facts: VecCollection<'scope, Time, Fact>,
) -> Option<(VecCollection<'scope, Time, LabelRequest>, Errors<'scope>)> {
    let LabelPlan::CountWithin { within_secs, .. } = plan.label else {
        return None;
    };
    let plan = Rc::clone(plan);
    let requests = split_errors(
        facts,
        "Label requests",
        move |(fact, time, diff): (Fact, Time, isize), requests, failed| {
            let key = match plan.examples.id_field {
                Some(field) => key_of(&plan.example_source().fields, &fact.row, field, "id field"),
                None => Err("the examples have no id field".to_owned()),
            };
            if let Err(why) = &key {
                let reason = format!("label: {why}, so the label cannot be counted");
                failed.push((GraphError::of(&fact, reason), time, diff));
            }
            if diff > 0 {
                // due `within_secs` after the event, and never before the fact was admitted
                let due = fact.time.saturating_add(within_secs).max(time);
                let id = example_id(&plan, &fact);
                let request = LabelRequest {
                    id,
                    entity: partition_key(&plan, id, &fact.row),
                    key: key.ok(),
                    as_of: due,
                    count: 0,
                    fact_at: time,
                };
                requests.push((request, due, 1));
            }
        },
    );
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
