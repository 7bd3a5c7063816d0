//! Example events and delayed labels equal a from-scratch recomputation, under random posts
//! (some admitted late, some withdrawn) and likes (some withdrawn), at 1, 2 and 4 workers.
//!
//! The oracle: every inserted post is one example event, at the time it entered the graph, read
//! as of then; a withdrawn one is not taken back. Every inserted post asks for its label
//! `WITHIN` seconds after its event time (never before it entered the graph), and the label
//! counts the likes of the post that entered the graph before then and were not withdrawn
//! before then.

pub mod support;

use dataflows::event::{Event, LabelRequest};
use dataflows::fact::{Fact, Time, Value, position_id};
use dataflows::hashing::symbol;
use dataflows::plan::*;
use proptest::prelude::*;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::Map;

use support::{PlanBuilder, Update, WORKERS, field, seconds};

const TICK: u64 = 10;
const WITHIN: u64 = 25;

fn plan() -> Plan {
    let posts = vec![
        field("post", FieldKind::Text),
        field("dog", FieldKind::Text),
        seconds("time"),
    ];
    let likes = vec![field("post", FieldKind::Text), seconds("time")];
    let label = AggregatePlan {
        name: "label".into(),
        source: 1,
        key_field: Some(0),
        via: None,
        function: Function::Count,
        window: None,
        used_by: AggregateUse::Label,
    };
    PlanBuilder::new("examples", TICK)
        .source("posts", posts)
        .source("likes", likes)
        .examples(ExamplePlan {
            source: 0,
            id_field: Some(0),
            entity_field: Some(1),
            truth_field: None,
        })
        .label(LabelPlan::CountWithin {
            aggregate: 0,
            within_secs: WITHIN,
            at_least: 2,
        })
        .aggregate(label)
        .build()
}

/// A post `p{post}` by dog `d{dog}` at `time`, entering the graph `late` seconds after it, and
/// perhaps withdrawn; or a like of post `p{post}`, perhaps withdrawn.
#[derive(Clone, Debug)]
enum Op {
    Post {
        post: u8,
        dog: u8,
        time: Time,
        late: Time,
        withdraw_after: Option<Time>,
    },
    Like {
        post: u8,
        time: Time,
        withdraw_after: Option<Time>,
    },
}

fn text(prefix: &str, value: u8) -> Value {
    Value::Text(symbol(format!("{prefix}{value}").as_bytes()))
}

fn fact(position: usize, op: &Op) -> Fact {
    let (source, time, row) = match *op {
        Op::Post {
            post, dog, time, ..
        } => (
            0,
            time,
            vec![text("p", post), text("d", dog), Value::Time(time)],
        ),
        Op::Like { post, time, .. } => (1, time, vec![text("p", post), Value::Time(time)]),
    };
    Fact {
        id: position_id(u32::from(source), position as u64),
        source,
        time,
        row,
    }
}

/// When an op enters the graph, and when it is withdrawn.
fn entry(op: &Op) -> (Time, Option<Time>) {
    match *op {
        Op::Post {
            time,
            late,
            withdraw_after,
            ..
        } => (time + late, withdraw_after.map(|after| time + late + after)),
        Op::Like {
            time,
            withdraw_after,
            ..
        } => (time, withdraw_after.map(|after| time + after)),
    }
}

fn updates(ops: &[Op]) -> Vec<Update<Fact>> {
    let mut updates = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        let fact = fact(position, op);
        let (enters, withdrawn) = entry(op);
        updates.push((fact.clone(), enters, 1));
        if let Some(at) = withdrawn {
            updates.push((fact, at, -1));
        }
    }
    updates
}

/// What leaves the stages: example events and counted label requests, with their record
/// times and differences.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Out {
    Example(Event, Time, isize),
    Label(LabelRequest, Time, isize),
}

fn run_graph(ops: &[Op], workers: usize) -> Vec<Out> {
    let outputs = support::replay(&updates(ops), TICK, workers, |facts| {
        let plan = std::rc::Rc::new(plan());
        let corrections = dataflows::collect::empty(&facts);
        let sources = dataflows::collect::split_sources(&plan, facts, corrections);
        let (store, _) = dataflows::transform::features::feature_store(&plan, &sources);
        let (events, _) = dataflows::transform::examples::example_events(&plan, sources[0].clone());
        let (requests, _) = dataflows::transform::labels::label_requests(&plan, sources[0].clone())
            .expect("a delayed label");
        let labels = dataflows::transform::labels::labels(&plan, requests, &store);
        let events = events.inner.map(|(event, t, r)| Out::Example(event, t, r));
        events.concat(labels.inner.map(|(label, t, r)| Out::Label(label, t, r)))
    });
    let mut outputs = support::all(outputs);
    outputs.sort();
    outputs
}

fn oracle(ops: &[Op]) -> Vec<Out> {
    let plan = plan();
    let mut expected = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        let Op::Post {
            post, dog, time, ..
        } = *op
        else {
            continue;
        };
        let fact = fact(position, op);
        let (enters, _) = entry(op);
        let id = symbol(format!("p{post}").as_bytes());
        let event = Event::new(&plan, id, time, enters, fact.row.clone());
        expected.push(Out::Example(event, enters, 1));
        let due = (time + WITHIN).max(enters);
        let count = ops
            .iter()
            .filter(|other| matches!(other, Op::Like { post: liked, .. } if *liked == post))
            .filter(|like| {
                let (enters, withdrawn) = entry(like);
                enters < due && withdrawn.is_none_or(|at| at >= due)
            })
            .count() as i64;
        let request = LabelRequest {
            id,
            entity: symbol(format!("d{dog}").as_bytes()),
            key: Some(id),
            as_of: due,
            count,
            fact_at: enters,
        };
        expected.push(Out::Label(request, due, 1));
    }
    expected.sort();
    expected
}

fn op() -> impl Strategy<Value = Op> {
    let withdraw = || proptest::option::weighted(0.25, 1u64..30);
    prop_oneof![
        (
            0u8..8,
            0u8..3,
            0..6 * TICK,
            prop_oneof![3 => Just(0u64), 1 => 1u64..25],
            withdraw()
        )
            .prop_map(|(post, dog, time, late, withdraw_after)| Op::Post {
                post,
                dog,
                time,
                late,
                withdraw_after,
            }),
        (0u8..8, 0..8 * TICK, withdraw()).prop_map(|(post, time, withdraw_after)| Op::Like {
            post,
            time,
            withdraw_after,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn examples_and_labels_equal_recomputation(ops in proptest::collection::vec(op(), 0..40)) {
        let expected = oracle(&ops);
        for workers in WORKERS {
            prop_assert_eq!(&run_graph(&ops, workers), &expected, "at {} workers", workers);
        }
    }
}

#[test]
fn a_late_post_is_read_as_of_its_admission_and_its_label_is_due_no_earlier() {
    let ops = vec![
        // due at 5 + 25 = 30, counting the likes at 6 and 29 but not the one at 30
        Op::Post {
            post: 1,
            dog: 0,
            time: 5,
            late: 0,
            withdraw_after: None,
        },
        // admitted at 40, past its label's due time of 2 + 25: the label is due at 40
        Op::Post {
            post: 2,
            dog: 0,
            time: 2,
            late: 38,
            withdraw_after: None,
        },
        Op::Like {
            post: 1,
            time: 6,
            withdraw_after: None,
        },
        Op::Like {
            post: 1,
            time: 29,
            withdraw_after: None,
        },
        Op::Like {
            post: 1,
            time: 30,
            withdraw_after: None,
        },
        Op::Like {
            post: 2,
            time: 12,
            withdraw_after: Some(20),
        },
    ];
    let outputs = run_graph(&ops, 2);
    assert_eq!(outputs, oracle(&ops));
    let mut labels: Vec<(Time, Time, i64)> = outputs
        .iter()
        .filter_map(|out| match out {
            Out::Label(label, time, _) => Some((label.as_of, *time, label.count)),
            Out::Example(..) => None,
        })
        .collect();
    labels.sort();
    assert_eq!(labels, vec![(30, 30, 2), (40, 40, 0)]);
    let late = outputs.iter().find_map(|out| match out {
        Out::Example(event, time, _) if event.time == 2 => Some((event.as_of, *time)),
        _ => None,
    });
    assert_eq!(late, Some((40, 40)));
}
