//! Examples carry their features as they stood strictly before their event time, and each
//! example leaves the lookups exactly once however its features change afterwards, at 1, 2
//! and 4 workers. That holds for the features of the example's own entity (the dog that
//! posts) and of other entities it references (the topic it is posted under, owned by other
//! workers), as the item a user rates is on MovieLens.

pub mod support;

use std::collections::BTreeMap;
use std::rc::Rc;

use dataflows::event::Event;
use dataflows::fact::{Fact, Value};
use dataflows::hashing::symbol;
use dataflows::plan::*;
use proptest::prelude::*;

use support::{PlanBuilder, Update, WORKERS, aggregate, field, seconds};

const TICK: u64 = 10;

fn plan() -> Plan {
    let posts = vec![
        field("post", FieldKind::Text),
        field("dog", FieldKind::Text),
        field("topic", FieldKind::Text),
        seconds("time"),
    ];
    let posts_5s = AggregatePlan {
        window: Some(Window::Sliding { secs: 5 }),
        ..aggregate("posts_5s", 0, 1, Function::Count)
    };
    PlanBuilder::new("as-of", TICK)
        .source("posts", posts)
        .examples(ExamplePlan {
            source: 0,
            id_field: Some(0),
            entity_field: Some(1),
            truth_field: None,
        })
        .aggregate(aggregate("posts", 0, 1, Function::Count))
        .aggregate(posts_5s)
        // keyed by another entity than the one training is partitioned by
        .aggregate(aggregate("topic_posts", 0, 2, Function::Count))
        .build()
}

/// `(dog, topic, time)` of each post; post `i` is `p{i}`.
fn run(posts: &[(u8, u8, u64)], workers: usize) -> Vec<(u64, Vec<(i64, i64)>)> {
    let updates: Vec<Update<Fact>> = posts
        .iter()
        .enumerate()
        .map(|(id, &(dog, topic, time))| {
            let row = vec![
                Value::Text(symbol(format!("p{id}").as_bytes())),
                Value::Text(symbol(format!("d{dog}").as_bytes())),
                Value::Text(symbol(format!("t{topic}").as_bytes())),
                Value::Time(time),
            ];
            let fact = Fact {
                id: id as u64,
                source: 0,
                time,
                row,
            };
            (fact, time, 1)
        })
        .collect();
    let outputs = support::replay(&updates, TICK, workers, |facts| {
        let plan = Rc::new(plan());
        let corrections = dataflows::collect::empty(&facts);
        let sources = dataflows::collect::split_sources(&plan, facts, corrections);
        let (store, _) = dataflows::transform::features::feature_store(&plan, &sources);
        let (events, _) = dataflows::transform::examples::example_events(&plan, sources[0].clone());
        let examples = dataflows::transform::examples::with_features(
            &plan,
            events,
            &store,
            |time| time,
            "examples",
        );
        examples.inner
    });
    let mut examples: Vec<(u64, Vec<(i64, i64)>)> = Vec::new();
    for (event, time, diff) in support::all(outputs) {
        let event: Event = event;
        assert_eq!(diff, 1);
        assert_eq!(time, event.time, "an example leaves at its own event time");
        examples.push((event.id, event.aggregates));
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
        for workers in WORKERS {
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
