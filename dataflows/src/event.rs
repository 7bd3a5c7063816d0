//! The records that travel the graph beside facts: events (examples and queries on their way
//! to a model), queries as they enter, requests for delayed labels, and answers.
//!
//! An example (a post, a rating) and a query (a post a dog is about to make) are the same
//! kind of record: the fields of one event, plus the aggregates looked up for it as they
//! stood just before a point in time. [`crate::transform::featurize`] turns either into the
//! sparse vector a model scores, so training and serving cannot disagree on what a feature
//! means.

use serde::{Deserialize, Serialize};

use crate::fact::{Real, Row, Symbol, Time, Value};
use crate::fixed::Accum;
use crate::plan::Plan;

/// An example or a query, with the aggregates looked up for it so far.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// The example's id, or the query's number.
    pub id: u64,
    /// When the event happened.
    pub time: Time,
    /// Aggregates are read as they stood strictly before this time.
    pub as_of: Time,
    /// The event's own fields, in the example source's schema.
    pub row: Row,
    /// One accumulator per aggregate of the plan; lookups fill in the features' ones.
    pub aggregates: Vec<Accum>,
    /// The label, when the event itself says it (a rating); `None` while it is not known.
    pub label: Option<bool>,
    /// A live query: answered from the latest complete state when it arrives, rather than
    /// from the state at a given event time.
    pub live: bool,
}

impl Event {
    /// A fresh event, with every aggregate still zero.
    pub fn new(plan: &Plan, id: u64, time: Time, as_of: Time, row: Row) -> Self {
        let label = match plan.label {
            crate::plan::LabelPlan::Threshold { field, at_least } => row
                .get(field)
                .and_then(Value::number)
                .map(|value| value >= at_least),
            crate::plan::LabelPlan::CountWithin { .. } => None,
        };
        Event {
            id,
            time,
            as_of,
            row,
            aggregates: vec![(0, 0); plan.aggregates.len()],
            label,
            live: false,
        }
    }

    /// The symbol of one of the event's fields, if it has one.
    pub fn symbol(&self, field: usize) -> Option<Symbol> {
        self.row.get(field).and_then(Value::symbol)
    }

    /// The ground-truth probability the event carries, for generated data.
    pub fn truth(&self, plan: &Plan) -> Option<f64> {
        let field = plan.examples.truth_field?;
        self.row
            .get(field)
            .and_then(Value::number)
            .filter(|p| (0.0..=1.0).contains(p))
    }
}

/// The key that places an example's training on a worker: its entity's symbol, or its id
/// when the plan names no entity (or the entity field is missing).
pub fn partition_key(plan: &Plan, id: u64, row: &[Value]) -> u64 {
    plan.examples
        .entity_field
        .and_then(|field| row.get(field))
        .and_then(Value::symbol)
        .unwrap_or(id)
}

/// A query as it enters the graph: a numbered event to score, asked at `time`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Query {
    /// The query's number, unique within a run.
    pub number: u64,
    /// When it is asked. A timed query is answered from the serving state complete at the
    /// start of this time's epoch; it never waits for the epoch being filled.
    pub time: Time,
    /// The fields of the event to score, in the example source's schema.
    pub row: Row,
    /// A live query is answered from whatever state is complete when it arrives, so its
    /// answer depends on timing; a timed query's answer does not.
    pub live: bool,
}

/// A request for an example's delayed label, due at `as_of`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelRequest {
    /// The example's id.
    pub id: u64,
    /// The example's entity, which routes the label to the worker that scored the example.
    pub entity: Symbol,
    /// The key of the label's aggregate (the example's id field); `None` when the id cannot
    /// be a key, so the label cannot be counted and the example stays unlabeled.
    pub key: Option<Symbol>,
    /// The label counts facts strictly before this time.
    pub as_of: Time,
    /// The count found, once looked up.
    pub count: i64,
    /// When the example's fact entered the graph (its timestamp there): a checkpoint keeps
    /// the requests of facts before its cut, and a graph resumed from it makes the others
    /// again from the facts it is given.
    pub fact_at: Time,
}

/// The answer to one query.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Answer {
    /// The query's number.
    pub query: u64,
    /// The probability of a positive label.
    pub probability: Real,
    /// The model that answered.
    pub model: String,
    /// Its version; 0 when no version had been published yet, and the answer is the prior.
    pub version: u64,
    /// The last epoch whose facts the features include.
    pub features_epoch: u64,
    /// The values of the aggregate features the answer used, by name, before any transform.
    pub features: Vec<(String, Real)>,
}
