//! Bad data in the graph leaves it as errors with a reason, never silently: hand-made facts
//! through the whole graph that [`dataflows::build`] makes, at 1, 2 and 4 workers.
//!
//! A missing optional value is no error; a fact without its key, a value that does not fit
//! fixed point, an example whose lookup key or id cannot be a key, are. A withdrawn fact
//! withdraws its errors.

pub mod support;

use std::collections::BTreeMap;
use std::rc::Rc;

use dataflows::error::GraphError;
use dataflows::fact::{Fact, Real, SourceId, Time, Value};
use dataflows::hashing::symbol;
use dataflows::learn::train::EndOfReading;
use dataflows::plan::*;
use timely::dataflow::operators::ToStream;

use support::{PlanBuilder, Update, WORKERS, aggregate, field, seconds};

const TICK: u64 = 10;

/// Posts (the examples, labelled by their likes), follows and likes, as on Sniffable, with a
/// score summed per dog and an aggregate read under the posts' hashtags.
fn plan() -> Plan {
    let posts = vec![
        field("post", FieldKind::Text),
        field("dog", FieldKind::Text),
        field("hashtags", FieldKind::List { separator: b'|' }),
        field("score", FieldKind::Real),
        seconds("time"),
    ];
    let follows = vec![
        field("follower", FieldKind::Text),
        field("followee", FieldKind::Text),
        seconds("time"),
    ];
    let likes = vec![field("post", FieldKind::Text), seconds("time")];
    let by_dog = |name: &str, source, key_field, function| AggregatePlan {
        used_by: AggregateUse::Feature { example_field: 1 },
        ..aggregate(name, source, key_field, function)
    };
    PlanBuilder::new("dead letters", TICK)
        .source("posts", posts)
        .source("follows", follows)
        .source("likes", likes)
        .examples(ExamplePlan {
            source: 0,
            id_field: Some(0),
            entity_field: Some(1),
            truth_field: None,
        })
        .label(LabelPlan::CountWithin {
            aggregate: 0,
            within_secs: 20,
            at_least: 1,
        })
        .aggregate(AggregatePlan {
            used_by: AggregateUse::Label,
            ..aggregate("label", 2, 0, Function::Count)
        })
        .aggregate(by_dog("followers", 1, 1, Function::Count))
        .aggregate(by_dog("score_sum", 0, 1, Function::Sum { field: 3 }))
        .aggregate(AggregatePlan {
            via: Some(Via {
                source: 0,
                key_field: 0,
                value_field: 1,
            }),
            ..by_dog("likes", 2, 0, Function::Count)
        })
        // read under the posts' hashtags, a list, which cannot be a key
        .aggregate(AggregatePlan {
            used_by: AggregateUse::Feature { example_field: 2 },
            ..aggregate("tag_followers", 1, 1, Function::Count)
        })
        .build()
}

fn text(value: &str) -> Value {
    Value::Text(symbol(value.as_bytes()))
}

fn post(id: u64, post: Value, dog: Value, hashtags: Value, score: Value, time: Time) -> Fact {
    Fact {
        id,
        source: 0,
        time,
        row: vec![post, dog, hashtags, score, Value::Time(time)],
    }
}

fn fact(id: u64, source: SourceId, time: Time, row: Vec<Value>) -> Fact {
    Fact {
        id,
        source,
        time,
        row,
    }
}

/// The graph's errors, consolidated: `(source, fact, reason)` with their counts.
fn errors(updates: &[Update<Fact>], workers: usize) -> BTreeMap<(SourceId, u64, String), isize> {
    let outputs = support::replay(updates, TICK, workers, |facts| {
        let plan = Rc::new(plan());
        let corrections = dataflows::collect::empty(&facts);
        let queries = dataflows::collect::empty(&facts);
        let ends = Vec::<EndOfReading>::new().to_stream(facts.scope());
        let graph = dataflows::build(&plan, Default::default(), facts, corrections, queries, ends);
        graph.errors.inner
    });
    let mut errors = BTreeMap::new();
    for (error, _time, diff) in support::all(outputs) {
        let GraphError {
            source,
            fact,
            reason,
            ..
        } = error;
        *errors.entry((source, fact, reason)).or_insert(0) += diff;
    }
    errors.retain(|_, count| *count != 0);
    errors
}

#[test]
fn bad_facts_are_errors_with_their_reason_and_missing_values_are_not() {
    let none = Value::Missing;
    let updates = vec![
        // good, with its optional hashtags and score missing: no error
        (
            post(1, text("p1"), text("d1"), none.clone(), none.clone(), 1),
            1,
            1,
        ),
        (
            fact(2, 1, 2, vec![text("d2"), text("d1"), Value::Time(2)]),
            2,
            1,
        ),
        (fact(3, 2, 3, vec![text("p1"), Value::Time(3)]), 3, 1),
        // a like of a post nobody made only finds no dog: no error
        (fact(4, 2, 4, vec![text("p9"), Value::Time(4)]), 4, 1),
        // a follow without its followee
        (
            fact(5, 1, 5, vec![text("d3"), none.clone(), Value::Time(5)]),
            5,
            1,
        ),
        // a score too large for fixed point
        (
            post(
                6,
                text("p6"),
                text("d1"),
                none.clone(),
                Value::Real(Real(1.0e13)),
                6,
            ),
            6,
            1,
        ),
        // a post without its dog: no key for the dog's aggregates, nor to re-key its likes
        (
            post(7, text("p7"), none.clone(), none.clone(), none.clone(), 7),
            7,
            1,
        ),
        // a post without its id cannot have its likes counted, nor re-key them
        (
            post(8, none.clone(), text("d1"), none.clone(), none.clone(), 8),
            8,
            1,
        ),
        // hashtags, a list, as the key of a lookup
        (
            post(
                9,
                text("p9"),
                text("d1"),
                Value::List(vec![1]),
                none.clone(),
                9,
            ),
            9,
            1,
        ),
        // a bad fact withdrawn: its errors are withdrawn too
        (
            fact(10, 1, 11, vec![text("d4"), none.clone(), Value::Time(11)]),
            11,
            1,
        ),
        (
            fact(10, 1, 11, vec![text("d4"), none.clone(), Value::Time(11)]),
            15,
            -1,
        ),
    ];
    let reason = |source, fact, reason: &str| ((source, fact, reason.to_owned()), 1);
    let expected: BTreeMap<_, _> = [
        reason(
            1,
            5,
            "aggregate `followers`: key field `followee` is missing",
        ),
        reason(
            1,
            5,
            "aggregate `tag_followers`: key field `followee` is missing",
        ),
        reason(
            0,
            6,
            "aggregate `score_sum`: field `score` = 1e13 does not fit fixed point",
        ),
        reason(0, 7, "aggregate `score_sum`: key field `dog` is missing"),
        reason(
            0,
            7,
            "aggregate `likes` via `posts`: re-keying field `dog` is missing",
        ),
        reason(
            0,
            8,
            "aggregate `likes` via `posts`: key field `post` is missing",
        ),
        reason(
            0,
            8,
            "label: id field `post` is missing, so the label cannot be counted",
        ),
        reason(
            0,
            9,
            "example: lookup key field `hashtags` holds a list, which cannot be a key",
        ),
    ]
    .into_iter()
    .collect();
    for workers in WORKERS {
        assert_eq!(errors(&updates, workers), expected, "at {workers} workers");
    }
}
