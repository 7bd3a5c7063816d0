//! Serving inside the graph: a query asked at `t` is answered by the newest version published
//! at or before `t`, from the feature store as of the start of `t`'s epoch, at 1, 2 and 4
//! workers.
//!
//! Training publishes versions at epoch starts, so "at or before `t`" is "by the start of its
//! epoch" there; here versions are published (and withdrawn) at any time, to pin the rule down
//! at every instant. The oracle recomputes each answer from the inputs: the posts of the
//! query's dog that entered before the epoch start and were not withdrawn by then, and the
//! versions present at `t`.

pub mod support;

use std::rc::Rc;
use std::sync::Arc;

use dataflows::event::{Answer, Query};
use dataflows::fact::{Fact, Real, Time, Value};
use dataflows::hashing::{BIAS, coordinate, symbol};
use dataflows::learn::logistic::sigmoid;
use dataflows::plan::*;
use dataflows::publish::model::{ModelVersion, RoundMetrics, Weights};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Broadcast;

use support::{PlanBuilder, Update, WORKERS, aggregate, field, seconds};

const TICK: u64 = 10;
const BITS: u32 = 8;

/// What enters: posts, which the store counts by dog; versions, by number; and queries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Input {
    Post(Fact),
    Version(u64),
    Query(Query),
}

fn plan() -> Plan {
    PlanBuilder::new("serve", TICK)
        .source(
            "posts",
            vec![field("dog", FieldKind::Text), seconds("time")],
        )
        .examples(ExamplePlan {
            source: 0,
            id_field: None,
            entity_field: Some(0),
            truth_field: None,
        })
        .aggregate(aggregate("posts", 0, 0, Function::Count))
        .feature(FeaturePlan {
            name: "posts".into(),
            namespace: symbol(b"posts"),
            kind: FeatureKind::Aggregate { aggregate: 0 },
            transform: Transform::Identity,
        })
        .build()
}

/// Version `number` weighs the intercept by a tenth of its number, and each post by a half.
fn version(number: u64) -> ModelVersion {
    let posts = coordinate(symbol(b"posts"), 0, BITS);
    let weights = Weights::from_sorted(vec![BIAS, posts], vec![0.1 * number as f32, 0.5])
        .expect("canonical weights");
    ModelVersion {
        name: "m".into(),
        version: number,
        epoch: 0,
        published_at: 0,
        bits: BITS,
        weights: Arc::new(weights),
        metrics: RoundMetrics::default(),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Post {
        dog: u8,
        time: Time,
        withdraw_after: Option<Time>,
    },
    Version {
        time: Time,
        withdraw_after: Option<Time>,
    },
    Query {
        dog: u8,
        time: Time,
    },
}

fn dog(dog: u8) -> Value {
    Value::Text(symbol(format!("d{dog}").as_bytes()))
}

/// The input of the `position`-th op, when it enters, and when it is withdrawn. Versions are
/// numbered by their position, so every version has its own number.
fn input(position: usize, op: &Op) -> (Input, Time, Option<Time>) {
    match *op {
        Op::Post {
            dog: author,
            time,
            withdraw_after,
        } => {
            let fact = Fact {
                id: position as u64,
                source: 0,
                time,
                row: vec![dog(author), Value::Time(time)],
            };
            (
                Input::Post(fact),
                time,
                withdraw_after.map(|after| time + after),
            )
        }
        Op::Version {
            time,
            withdraw_after,
        } => (
            Input::Version(position as u64 + 1),
            time,
            withdraw_after.map(|after| time + after),
        ),
        Op::Query { dog: asker, time } => {
            let query = Query {
                number: position as u64,
                time,
                row: vec![dog(asker), Value::Time(time)],
                live: false,
            };
            (Input::Query(query), time, None)
        }
    }
}

fn updates(ops: &[Op]) -> Vec<Update<Input>> {
    let mut updates = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        let (input, enters, withdrawn) = input(position, op);
        updates.push((input.clone(), enters, 1));
        if let Some(at) = withdrawn {
            updates.push((input, at, -1));
        }
    }
    updates
}

fn run_graph(ops: &[Op], workers: usize) -> Vec<Answer> {
    let outputs = support::replay(&updates(ops), TICK, workers, |inputs| {
        let plan = Rc::new(plan());
        let facts = inputs.clone().flat_map(|input| match input {
            Input::Post(fact) => Some(fact),
            _ => None,
        });
        // every worker publishes every version, as training does
        let versions = inputs
            .clone()
            .flat_map(|input| match input {
                Input::Version(number) => Some(number),
                _ => None,
            })
            .inner
            .broadcast();
        let versions = differential_dataflow::AsCollection::as_collection(versions)
            .map(|number| (symbol(b"m"), Arc::new(version(number))));
        let queries = inputs.flat_map(|input| match input {
            Input::Query(query) => Some(query),
            _ => None,
        });
        let corrections = dataflows::collect::empty(&facts);
        let sources = dataflows::collect::split_sources(&plan, facts, corrections);
        let (store, _) = dataflows::transform::features::feature_store(&plan, &sources);
        let models = dataflows::publish::versions::arrange_models(versions);
        let queries = dataflows::collect::query_events(&plan, queries);
        let queries = dataflows::transform::examples::with_features(
            &plan,
            queries,
            &store,
            |time| time - time % TICK,
            "queries",
        );
        dataflows::serve::answer::answer(&plan, queries, &models)
    });
    let mut answers = support::all(outputs);
    answers.sort();
    answers
}

fn oracle(ops: &[Op]) -> Vec<Answer> {
    let present = |position: usize, op: &Op, at: Time| {
        let (_, enters, withdrawn) = input(position, op);
        enters <= at && withdrawn.is_none_or(|withdrawn| withdrawn > at)
    };
    let mut answers = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        let Op::Query { dog: asker, time } = *op else {
            continue;
        };
        let start = time - time % TICK;
        // the store as of the epoch start counts the updates strictly before it
        let posts = ops
            .iter()
            .enumerate()
            .filter(|(other, post)| {
                matches!(post, Op::Post { dog, .. } if *dog == asker)
                    && start > 0
                    && present(*other, post, start - 1)
            })
            .count();
        let newest = ops
            .iter()
            .enumerate()
            .filter(|(other, op)| matches!(op, Op::Version { .. }) && present(*other, op, time))
            .map(|(other, _)| other as u64 + 1)
            .max();
        let mut features = vec![(BIAS, 1.0)];
        if posts > 0 {
            features.push((coordinate(symbol(b"posts"), 0, BITS), posts as f32));
        }
        let probability = newest.map_or(sigmoid(0.0), |number| version(number).predict(&features));
        answers.push(Answer {
            query: position as u64,
            probability: Real(probability),
            model: "m".into(),
            version: newest.unwrap_or(0),
            features_epoch: (time / TICK).saturating_sub(1),
            features: vec![("posts".into(), Real(posts as f64))],
        });
    }
    answers.sort();
    answers
}

fn op() -> impl Strategy<Value = Op> {
    let time = || 0..8 * TICK;
    let withdraw = || proptest::option::weighted(0.3, 1u64..30);
    prop_oneof![
        3 => (0u8..3, time(), withdraw()).prop_map(|(dog, time, withdraw_after)| Op::Post {
            dog,
            time,
            withdraw_after,
        }),
        1 => (time(), withdraw()).prop_map(|(time, withdraw_after)| Op::Version {
            time,
            withdraw_after,
        }),
        2 => (0u8..4, time()).prop_map(|(dog, time)| Op::Query { dog, time }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn answers_equal_recomputation(ops in proptest::collection::vec(op(), 0..40)) {
        let expected = oracle(&ops);
        for workers in WORKERS {
            prop_assert_eq!(&run_graph(&ops, workers), &expected, "at {} workers", workers);
        }
    }
}

#[test]
fn a_query_reads_the_epoch_start_and_the_newest_version_by_its_time() {
    let post = |dog, time| Op::Post {
        dog,
        time,
        withdraw_after: None,
    };
    let ops = vec![
        post(0, 3),
        post(0, 12),
        // version 3 from 10, version 4 from 14 until 20
        Op::Version {
            time: 10,
            withdraw_after: None,
        },
        Op::Version {
            time: 14,
            withdraw_after: Some(6),
        },
        // before any version: the prior
        Op::Query { dog: 0, time: 8 },
        // in epoch 1 at 14: version 4, and the one post before 10
        Op::Query { dog: 0, time: 14 },
        // at 13: version 3; the post at 12 is not in yet (the epoch started at 10)
        Op::Query { dog: 0, time: 13 },
        // at 25: version 4 is withdrawn, so version 3; both posts count
        Op::Query { dog: 0, time: 25 },
    ];
    let answers = run_graph(&ops, 2);
    assert_eq!(answers, oracle(&ops));
    let seen: Vec<(u64, u64, f64)> = answers
        .iter()
        .map(|answer| (answer.query, answer.version, answer.features[0].1.0))
        .collect();
    assert_eq!(
        seen,
        vec![(4, 0, 0.0), (5, 4, 1.0), (6, 3, 1.0), (7, 3, 2.0)]
    );
    assert_eq!(answers[0].probability, Real(0.5));
    assert_eq!(answers[1].features_epoch, 0);
}
