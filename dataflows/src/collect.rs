//! Collection, inside the graph: facts split by source, and queries made into events.
//!
//! Reading and parsing files happens before the graph (in the root crate); what enters here is
//! already typed. Malformed lines never reach the graph as facts: they travel as dead letters.

use std::rc::Rc;

use differential_dataflow::AsCollection;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::ToStream;
use timely::dataflow::operators::vec::Map;

use crate::event::{Event, Query};
use crate::fact::{Fact, SourceId, Time};
use crate::plan::Plan;
use crate::transform::lookup::LATEST;

/// A retraction: the source, and the key id (see [`crate::fact::key_id`]) of the fact to
/// withdraw.
pub type Correction = (SourceId, u64);

/// One collection of facts per source, indexed by source id, with corrections applied.
///
/// A correction withdraws the live facts of its source whose key it names, from the time it
/// arrives. It is joined with the facts rather than subtracted blindly, so a correction of a
/// fact that never arrived withdraws nothing, and a second correction of the same fact
/// withdraws nothing more.
pub fn split_sources<'scope>(
    plan: &Plan,
    facts: VecCollection<'scope, Time, Fact>,
    corrections: VecCollection<'scope, Time, Correction>,
) -> Vec<VecCollection<'scope, Time, Fact>> {
    (0..plan.sources.len())
        .map(|index| {
            let source = index as SourceId;
            let facts = facts.clone().filter(move |fact| fact.source == source);
            if !plan.sources[index].retractable() {
                return facts;
            }
            let name = &plan.sources[index].name;
            // the keys named by a correction, each once
            let named = corrections
                .clone()
                .filter(move |(target, _)| *target == source)
                .map(|(_, key)| key)
                .threshold_named(&format!("Distinct: {name} corrections"), |_, _| 1isize)
                .arrange_by_self_named(&format!("Arrange: {name} corrections"));
            // the live facts those keys name
            let withdrawn = facts
                .clone()
                .map(|fact| (fact.id, fact))
                .arrange_by_key_named(&format!("Arrange: {name} facts by id"))
                .join_core(named, |_id, fact, ()| Some(fact.clone()));
            facts.concat(withdrawn.negate())
        })
        .collect()
}

/// Queries as events to score, asked as of the start of their epoch, or of the latest complete
/// state for live queries.
pub fn query_events<'scope>(
    plan: &Rc<Plan>,
    queries: VecCollection<'scope, Time, Query>,
) -> VecCollection<'scope, Time, Event> {
    let plan = Rc::clone(plan);
    queries
        .inner
        .map(move |(query, time, diff)| {
            let as_of = if query.live {
                LATEST
            } else {
                plan.epoch_start(plan.epoch(query.time))
            };
            let mut event = Event::new(&plan, query.number, query.time, as_of, query.row);
            event.live = query.live;
            (event, time, diff)
        })
        .as_collection()
}

/// An empty collection in the same scope as `like`.
pub fn empty<'scope, D: differential_dataflow::Data, E>(
    like: &VecCollection<'scope, Time, E>,
) -> VecCollection<'scope, Time, D>
where
    E: differential_dataflow::Data,
{
    Vec::<(D, Time, isize)>::new()
        .to_stream(like.scope())
        .as_collection()
}
