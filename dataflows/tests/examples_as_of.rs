//! Examples carry their features as they stood strictly before their event time, and each
//! example leaves the lookups exactly once however its features change afterwards, at 1, 2
//! and 4 workers. That holds for the features of the example's own entity (the dog that
//! posts) and of other entities it references (the topic it is posted under, owned by other
//! workers), as the item a user rates is on MovieLens.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use dataflows::event::Event;
use dataflows::fact::{Fact, Value};
use dataflows::hashing::symbol;
use dataflows::learn::adagrad::AdaGradHyper;
use dataflows::learn::optimizer::{OptimizerPlan, WeightMerge};
use dataflows::plan::*;
use differential_dataflow::input::Input;
use proptest::prelude::*;
use timely::dataflow::operators::Capture;
use timely::dataflow::operators::capture::Extract;

const TICK: u64 = 10;

fn plan() -> Plan {
    let field = |name: &str, kind: FieldKind| FieldPlan {
        name: name.into(),
        kind,
        required: false,
    };
    let posts = SourcePlan {
        name: "posts".into(),
        paths: vec![],
        format: Format::Csv,
        header: false,
        fields: vec![
            field("post", FieldKind::Text),
            field("dog", FieldKind::Text),
            field("topic", FieldKind::Text),
            field(
                "time",
                FieldKind::Time {
                    unit: TimeUnit::Seconds,
                },
            ),
        ],
        time_field: Some(3),
        lateness_secs: 0,
        glob: None,
        late: LatePolicy::Drop,
        key_fields: vec![],
        op_field: None,
        corrects: None,
    };
    let aggregate = |name: &str, field: usize, window_secs: Option<u64>| AggregatePlan {
        name: name.into(),
        source: 0,
        key_field: Some(field),
        via: None,
        function: Function::Count,
        window: window_secs.map(|secs| Window::Sliding { secs }),
        used_by: AggregateUse::Feature {
            example_field: field,
        },
    };
    Plan {
        name: "as-of".into(),
        tick_secs: TICK,
        sources: vec![posts],
        examples: ExamplePlan {
            source: 0,
            id_field: Some(0),
            entity_field: Some(1),
            truth_field: None,
        },
        label: LabelPlan::Threshold {
            field: 0,
            at_least: 0.0,
        },
        features: vec![],
        aggregates: vec![
            aggregate("posts", 1, None),
            aggregate("posts_5s", 1, Some(5)),
            // keyed by another entity than the one training is partitioned by
            aggregate("topic_posts", 2, None),
        ],
        model: ModelPlan {
            name: "m".into(),
            bits: 8,
            optimizer: OptimizerPlan::AdaGrad(AdaGradHyper {
                learning_rate: 0.1,
                l2: 0.0,
            }),
            merge: WeightMerge::Average,
        },
        serving: ServingPlan { keep_versions: 1 },
        exact: None,
    }
}

/// `(dog, topic, time)` of each post; post `i` is `p{i}`.
fn run(posts: &[(u8, u8, u64)], workers: usize) -> Vec<(u64, Vec<(i64, i64)>)> {
    let plan = Rc::new(plan());
    let posts = posts.to_vec();
    let captured_all = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&captured_all);
    let plan_data = (*plan).clone();
    timely::execute(timely::Config::process(workers), move |worker| {
        let plan = Rc::new(plan_data.clone());
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, captured) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, facts) = scope.new_collection::<Fact, isize>();
            // retractions here are plain negative updates; corrections are tested end to end
            let (_corrections_input, corrections) = scope.new_collection::<(u16, u64), isize>();
            let sources = dataflows::collect::split_sources(&plan, facts, corrections);
            let (store, _errors) = dataflows::transform::features::feature_store(&plan, &sources);
            let (events, _errors) =
                dataflows::transform::examples::example_events(&plan, sources[0].clone());
            let examples = dataflows::transform::examples::with_features(
                &plan,
                events,
                &store,
                |time| time,
                "examples",
            );
            (input, examples.inner.capture())
        });
        let horizon = posts.iter().map(|&(_, _, time)| time).max().unwrap_or(0) / TICK + 1;
        for epoch in 0..=horizon {
            for (id, &(dog, topic, time)) in posts.iter().enumerate() {
                if id % peers == index && time / TICK == epoch {
                    let row = vec![
                        Value::Text(symbol(format!("p{id}").as_bytes())),
                        Value::Text(symbol(format!("d{dog}").as_bytes())),
                        Value::Text(symbol(format!("t{topic}").as_bytes())),
                        Value::Time(time),
                    ];
                    input.update_at(
                        Fact {
                            id: id as u64,
                            source: 0,
                            time,
                            row,
                        },
                        time,
                        1,
                    );
                }
            }
            input.advance_to((epoch + 1) * TICK);
            input.flush();
            worker.step();
        }
        drop(input);
        while worker.step_or_park(None) {}
        sink.lock().expect("results").push(captured.extract());
    })
    .expect("timely runs");

    let mut examples: Vec<(u64, Vec<(i64, i64)>)> = Vec::new();
    for per_worker in captured_all.lock().expect("results").drain(..) {
        for (_, batch) in per_worker {
            for (event, time, diff) in batch {
                let event: Event = event;
                assert_eq!(diff, 1);
                assert_eq!(time, event.time, "an example leaves at its own event time");
                examples.push((event.id, event.aggregates));
            }
        }
    }
    examples.sort();
    examples
}

/// What each example should see: posts by its dog strictly before it, all and in the last
/// 5 s, and posts under its topic strictly before it.
fn oracle(posts: &[(u8, u8, u64)]) -> Vec<(u64, Vec<(i64, i64)>)> {
    let mut expected: Vec<(u64, Vec<(i64, i64)>)> = posts
        .iter()
        .enumerate()
        .map(|(id, &(dog, topic, time))| {
            let earlier = posts
                .iter()
                .filter(|&&(other, _, at)| other == dog && at < time);
            let all = earlier.clone().count() as i64;
            let recent = earlier.filter(|&&(_, _, at)| at + 5 >= time).count() as i64;
            let topic_posts = posts
                .iter()
                .filter(|&&(_, other, at)| other == topic && at < time)
                .count() as i64;
            (
                symbol(format!("p{id}").as_bytes()),
                vec![(all, 0), (recent, 0), (topic_posts, 0)],
            )
        })
        .collect();
    expected.sort();
    expected
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn examples_see_only_the_past_and_leave_once(posts in proptest::collection::vec((0u8..3, 0u8..2, 0u64..60), 0..50)) {
        let expected = oracle(&posts);
        for workers in [1, 2, 4] {
            let examples = run(&posts, workers);
            prop_assert_eq!(examples.len(), posts.len(), "one output per example at {} workers", workers);
            prop_assert_eq!(&examples, &expected, "at {} workers", workers);
        }
    }
}

#[test]
fn a_post_does_not_see_itself_or_its_own_second() {
    // two posts in the same second, one before: each sees only the earlier second, by its
    // dog and by its topic (the other dog's post at 3 s counts for the topic)
    let examples: BTreeMap<u64, Vec<(i64, i64)>> =
        run(&[(0, 0, 3), (0, 0, 7), (0, 0, 7), (1, 0, 3)], 2)
            .into_iter()
            .collect();
    let seen =
        |id: usize, aggregate: usize| examples[&symbol(format!("p{id}").as_bytes())][aggregate].0;
    assert_eq!((seen(0, 0), seen(1, 0), seen(2, 0)), (0, 1, 1));
    assert_eq!(
        (seen(0, 2), seen(1, 2), seen(2, 2), seen(3, 2)),
        (0, 2, 2, 0)
    );
}
