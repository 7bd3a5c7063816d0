//! The feature store equals a from-scratch recomputation at every epoch, under random
//! insertions and retractions, at 1, 2 and 4 workers.
//!
//! The oracle is semantic: at the close of an epoch it takes the facts that are live then
//! (inserted before, not retracted before) and counts, sums, averages, counts distinct
//! levels, finds the latest value and windows (sliding and tumbling) them directly, per key
//! and globally.

pub mod support;

use std::collections::BTreeMap;

use dataflows::fact::{Fact, Real, Value};
use dataflows::hashing::symbol;
use dataflows::plan::*;
use proptest::prelude::*;

use support::{PlanBuilder, Update, WORKERS, aggregate, field, seconds};

const TICK: u64 = 10;
const EPOCHS: u64 = 10;

/// One fact, inserted at its event time and perhaps retracted later.
#[derive(Clone, Debug)]
enum Row {
    Post {
        post: u8,
        dog: u8,
        score: Option<i8>,
    },
    Like {
        post: u8,
    },
}

#[derive(Clone, Debug)]
struct Op {
    row: Row,
    time: u64,
    retract_at: Option<u64>,
}

fn plan() -> Plan {
    let feature = |name: &str, source: u16, key_field: usize, function, window| AggregatePlan {
        window,
        used_by: AggregateUse::Feature { example_field: 1 },
        ..aggregate(name, source, key_field, function)
    };
    let via = |name: &str, function, window| AggregatePlan {
        via: Some(Via {
            source: 0,
            key_field: 0,
            value_field: 1,
        }),
        ..feature(name, 1, 0, function, window)
    };
    let global = |name: &str, function| AggregatePlan {
        key_field: None,
        used_by: AggregateUse::Global,
        ..aggregate(name, 0, 0, function)
    };
    let sliding = |secs| Some(Window::Sliding { secs });
    let tumbling = |secs| Some(Window::Tumbling { secs });
    let posts = vec![
        field("post", FieldKind::Text),
        field("dog", FieldKind::Text),
        field("score", FieldKind::Real),
        seconds("time"),
    ];
    PlanBuilder::new("oracle", TICK)
        .source("posts", posts)
        .source(
            "likes",
            vec![field("post", FieldKind::Text), seconds("time")],
        )
        .examples(ExamplePlan {
            source: 0,
            id_field: Some(0),
            entity_field: Some(1),
            truth_field: None,
        })
        .label(LabelPlan::Threshold {
            field: 2,
            at_least: 0.0,
        })
        .aggregate(feature("posts", 0, 1, Function::Count, None))
        .aggregate(feature("posts_15", 0, 1, Function::Count, sliding(15)))
        .aggregate(via("likes_via_20", Function::Count, sliding(20)))
        .aggregate(feature(
            "mean_score_25",
            0,
            1,
            Function::Mean { field: 2 },
            sliding(25),
        ))
        .aggregate(feature("sum_score", 0, 1, Function::Sum { field: 2 }, None))
        .aggregate(feature("likes_by_post", 1, 0, Function::Count, None))
        // 6..: the families added later
        .aggregate(feature(
            "distinct_posts",
            0,
            1,
            Function::Distinct { field: 0 },
            None,
        ))
        .aggregate(feature(
            "distinct_posts_tumbling_25",
            0,
            1,
            Function::Distinct { field: 0 },
            tumbling(25),
        ))
        .aggregate(via(
            "distinct_liked_posts_via",
            Function::Distinct { field: 0 },
            None,
        ))
        .aggregate(feature(
            "last_score",
            0,
            1,
            Function::Last { field: 2 },
            None,
        ))
        .aggregate(feature(
            "last_score_15",
            0,
            1,
            Function::Last { field: 2 },
            sliding(15),
        ))
        .aggregate(feature(
            "posts_tumbling_25",
            0,
            1,
            Function::Count,
            tumbling(25),
        ))
        .aggregate(global("score_sum", Function::Sum { field: 2 }))
        .aggregate(global("score_squares", Function::SumOfSquares { field: 2 }))
        .build()
}

fn fact(op: &Op, id: u64) -> Fact {
    let text = |prefix: &str, value: u8| Value::Text(symbol(format!("{prefix}{value}").as_bytes()));
    let time = Value::Time(op.time);
    match &op.row {
        Row::Post { post, dog, score } => Fact {
            id,
            source: 0,
            time: op.time,
            row: vec![
                text("p", *post),
                text("d", *dog),
                score.map_or(Value::Missing, |score| {
                    Value::Real(Real(f64::from(score) / 4.0))
                }),
                time,
            ],
        },
        Row::Like { post } => Fact {
            id,
            source: 1,
            time: op.time,
            row: vec![text("p", *post), time],
        },
    }
}

type State = BTreeMap<((u64, u32), u64), (i64, i64)>;

/// The facts of the ops, inserted at their time and withdrawn at their retraction.
fn updates(ops: &[Op]) -> Vec<Update<Fact>> {
    let mut updates = Vec::new();
    for (id, op) in ops.iter().enumerate() {
        let fact = fact(op, id as u64);
        updates.push((fact.clone(), op.time, 1));
        if let Some(retract) = op.retract_at {
            updates.push((fact, retract, -1));
        }
    }
    updates
}

/// The store's contents at the close of every epoch, from the graph.
fn run_graph(ops: &[Op], workers: usize) -> State {
    let plan = plan();
    let updates = support::all(support::replay(
        &updates(ops),
        TICK,
        workers,
        move |facts| {
            // retractions here are plain negative updates; corrections have their own test
            let corrections = dataflows::collect::empty(&facts);
            let sources = dataflows::collect::split_sources(&plan, facts, corrections);
            let (store, _errors) = dataflows::transform::features::feature_store(&plan, &sources);
            store.as_collection(|key, _| *key).inner
        },
    ));
    let mut state = State::new();
    for end in 1..=EPOCHS + 4 {
        let end = end * TICK;
        for &(key, time, (count, sum)) in &updates {
            if time < end {
                let entry = state.entry((key, end)).or_insert((0, 0));
                entry.0 += count;
                entry.1 += sum;
            }
        }
    }
    state.retain(|_, accum| *accum != (0, 0));
    state
}

/// The same, recomputed from the live facts at each epoch close.
fn oracle(ops: &[Op]) -> State {
    let live =
        |op: &Op, end: u64| op.time < end && op.retract_at.is_none_or(|retract| retract >= end);
    let key = |prefix: &str, value: u8| symbol(format!("{prefix}{value}").as_bytes());
    let mut state = State::new();
    let mut add = |store_key: (u64, u32), end: u64, count: i64, sum: i64| {
        let entry = state.entry((store_key, end)).or_insert((0, 0));
        entry.0 += count;
        entry.1 += sum;
    };
    for end in (1..=EPOCHS + 4).map(|epoch| epoch * TICK) {
        // a fact is in a window until the window's expiry of its event time reaches `end`
        let in_window = |op: &Op, window: u64| op.time + window >= end;
        let in_tumbling = |op: &Op, window: u64| (op.time / window + 1) * window >= end;
        // distinct (key, level) pairs, and the latest (time, id, value) per key
        let mut distinct: BTreeMap<(u32, u64, u64), ()> = BTreeMap::new();
        let mut last: BTreeMap<(u32, u64), (u64, usize, i64)> = BTreeMap::new();
        let mut latest = |aggregate: u32, dog: u64, candidate: (u64, usize, i64)| {
            let entry = last.entry((aggregate, dog)).or_insert(candidate);
            *entry = (*entry).max(candidate);
        };
        for (id, op) in ops.iter().enumerate().filter(|(_, op)| live(op, end)) {
            match &op.row {
                Row::Post { post, dog, score } => {
                    let dog = key("d", *dog);
                    add((dog, 0), end, 1, 0);
                    if in_window(op, 15) {
                        add((dog, 1), end, 1, 0);
                    }
                    if in_tumbling(op, 25) {
                        add((dog, 11), end, 1, 0);
                        distinct.insert((7, dog, key("p", *post)), ());
                    }
                    distinct.insert((6, dog, key("p", *post)), ());
                    if let Some(score) = score {
                        let fixed = i64::from(*score) * 250_000;
                        if in_window(op, 25) {
                            add((dog, 3), end, 1, fixed);
                        }
                        add((dog, 4), end, 1, fixed);
                        latest(9, dog, (op.time, id, fixed));
                        if in_window(op, 15) {
                            latest(10, dog, (op.time, id, fixed));
                        }
                        add((0, 12), end, 1, fixed);
                        add((0, 13), end, 1, i64::from(*score).pow(2) * 62_500);
                    }
                }
                Row::Like { post } => {
                    add((key("p", *post), 5), end, 1, 0);
                    // one contribution per live post fact with this id (the join's multiplicity)
                    for other in ops.iter().filter(|other| live(other, end)) {
                        if let Row::Post {
                            post: other_post,
                            dog,
                            ..
                        } = &other.row
                            && other_post == post
                        {
                            if in_window(op, 20) {
                                add((key("d", *dog), 2), end, 1, 0);
                            }
                            distinct.insert((8, key("d", *dog), key("p", *post)), ());
                        }
                    }
                }
            }
        }
        for (aggregate, dog, _level) in distinct.into_keys() {
            add((dog, aggregate), end, 1, 0);
        }
        for ((aggregate, dog), (_, _, value)) in last {
            add((dog, aggregate), end, 1, value);
        }
    }
    state.retain(|_, accum| *accum != (0, 0));
    state
}

fn op() -> impl Strategy<Value = Op> {
    let row =
        prop_oneof![
            (0u8..6, 0u8..3, proptest::option::of(-8i8..8))
                .prop_map(|(post, dog, score)| Row::Post { post, dog, score }),
            (0u8..6).prop_map(|post| Row::Like { post }),
        ];
    (row, 0..EPOCHS * TICK, proptest::option::of(1u64..60)).prop_map(|(row, time, retract)| Op {
        row,
        time,
        retract_at: retract.map(|delay| time + delay),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn store_equals_recomputation(ops in proptest::collection::vec(op(), 0..60)) {
        let expected = oracle(&ops);
        for workers in WORKERS {
            prop_assert_eq!(&run_graph(&ops, workers), &expected, "at {} workers", workers);
        }
    }
}
