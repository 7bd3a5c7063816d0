//! A graph built from a checkpoint continues exactly: a stream run straight through, and the
//! same stream run to a cut, its state taken, and the rest run by a fresh graph built from
//! that state, give the same features, versions (weights and all), epoch metrics, exact
//! regression reports, answers and errors, at 1, 2 and 4 workers.
//!
//! Resuming at another number of workers re-partitions the state: the features and the
//! errors are those of a straight run at any layout (the model is not: each layout trains
//! its own replicas).
//!
//! The plan has everything that holds state across a cut: a sliding window with retractions
//! still to come, a `last` and a `distinct` aggregate, a re-keying join, a retractable source
//! with corrections, delayed labels, a model, the progressive evaluation, and an exact
//! regression.

pub mod support;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use dataflows::checkpoint::{Checkpointing, WorkerState};
use dataflows::collect::Correction;
use dataflows::event::Query;
use dataflows::fact::{Fact, Real, Symbol, Time, Value, key_id};
use dataflows::fixed::Accum;
use dataflows::hashing::symbol;
use dataflows::learn::train::EndOfReading;
use dataflows::plan::*;
use differential_dataflow::input::Input as _;
use proptest::prelude::*;
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::capture::{Capture, Event};
use timely::dataflow::operators::core::Input as _;
use timely::dataflow::operators::vec::Map;

use support::{PlanBuilder, WORKERS, aggregate, field, seconds};

const TICK: u64 = 10;
const DOGS: u8 = 4;

/// Posts (the examples, labelled by their likes within 20 s, retractable by their post id),
/// follows (counted over a 15 s sliding window) and likes (counted per post, and per dog
/// through the posts); each dog's last score and distinct hashtags; an exact regression of
/// the score on the time.
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
    let mut builder = PlanBuilder::new("checkpoint", TICK)
        .source("posts", posts)
        .keyed_by(vec![0])
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
        .aggregate(AggregatePlan {
            window: Some(Window::Sliding { secs: 15 }),
            ..by_dog("followers", 1, 1, Function::Count)
        })
        .aggregate(by_dog("last_score", 0, 1, Function::Last { field: 3 }))
        .aggregate(by_dog("tags", 0, 1, Function::Distinct { field: 2 }))
        .aggregate(AggregatePlan {
            via: Some(Via {
                source: 0,
                key_field: 0,
                value_field: 1,
            }),
            ..by_dog("likes", 2, 0, Function::Count)
        })
        .exact(ExactPlan {
            name: "exact".into(),
            target_field: 3,
            input_fields: vec![4],
            intercept: true,
            l2: 0.5,
        })
        .keep_versions(2);
    for (index, name) in ["followers", "last_score", "tags", "likes"]
        .iter()
        .enumerate()
    {
        builder = builder.feature(FeaturePlan {
            name: (*name).into(),
            namespace: symbol(name.as_bytes()),
            kind: FeatureKind::Aggregate {
                aggregate: index + 1,
            },
            transform: Transform::Identity,
        });
    }
    let mut plan = builder
        .feature(FeaturePlan {
            name: "dog".into(),
            namespace: symbol(b"dog"),
            kind: FeatureKind::Categorical { field: 1 },
            transform: Transform::Identity,
        })
        .build();
    // a challenger beside the champion: another learner on part of the features
    plan.challengers = vec![ModelPlan {
        name: "challenger".into(),
        bits: 10,
        optimizer: dataflows::learn::optimizer::OptimizerPlan::Ftrl(
            dataflows::learn::ftrl::FtrlHyper {
                alpha: 0.3,
                beta: 1.0,
                l1: 0.0,
                l2: 0.0,
            },
        ),
        merge: dataflows::learn::optimizer::WeightMerge::Average,
        features: Some(vec![0, 4]),
    }];
    plan
}

/// What enters the graph.
#[derive(Clone, Debug)]
enum Input {
    Fact(Fact),
    Correction(Correction),
    Query(Query),
}

/// What a generated stream holds.
#[derive(Clone, Debug)]
enum Op {
    Post {
        dog: u8,
        tags: u8,
        score: i8,
        time: Time,
    },
    Follow {
        follower: u8,
        followee: u8,
        time: Time,
    },
    Like {
        post: usize,
        time: Time,
    },
    Retract {
        post: usize,
        after: Time,
    },
    Query {
        dog: u8,
        time: Time,
    },
}

fn text(value: &str) -> Value {
    Value::Text(symbol(value.as_bytes()))
}

fn dog(dog: u8) -> Value {
    text(&format!("d{dog}"))
}

/// The stream of updates, `(input, time, diff)`, in input order.
fn updates(ops: &[Op]) -> Vec<(Input, Time, isize)> {
    let mut posts = Vec::new();
    let mut updates = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        match *op {
            Op::Post {
                dog: author,
                tags,
                score,
                time,
            } => {
                let post = format!("p{position}");
                let hashtags = (0..3)
                    .filter(|bit| tags & (1 << bit) != 0)
                    .map(|bit| symbol(format!("t{bit}").as_bytes()))
                    .collect();
                let id = key_id(0, &[Some(symbol(post.as_bytes()))]);
                let row = vec![
                    text(&post),
                    dog(author),
                    Value::List(hashtags),
                    Value::Real(Real(f64::from(score))),
                    Value::Time(time),
                ];
                posts.push((post.clone(), time));
                let fact = Fact {
                    id,
                    source: 0,
                    time,
                    row,
                };
                updates.push((Input::Fact(fact), time, 1));
            }
            Op::Follow {
                follower,
                followee,
                time,
            } => {
                let row = vec![dog(follower), dog(followee), Value::Time(time)];
                let fact = Fact {
                    id: 1_000_000 + position as u64,
                    source: 1,
                    time,
                    row,
                };
                updates.push((Input::Fact(fact), time, 1));
            }
            Op::Like { post, time } => {
                let Some((post, _)) = posts.get(post % posts.len().max(1)).cloned() else {
                    continue;
                };
                let fact = Fact {
                    id: 2_000_000 + position as u64,
                    source: 2,
                    time,
                    row: vec![text(&post), Value::Time(time)],
                };
                updates.push((Input::Fact(fact), time, 1));
            }
            Op::Retract { post, after } => {
                let Some((post, time)) = posts.get(post % posts.len().max(1)).cloned() else {
                    continue;
                };
                let key = key_id(0, &[Some(symbol(post.as_bytes()))]);
                updates.push((Input::Correction((0, key)), time + after, 1));
            }
            Op::Query { dog: asker, time } => {
                let query = Query {
                    number: position as u64,
                    time,
                    row: vec![
                        Value::Missing,
                        dog(asker),
                        Value::Missing,
                        Value::Missing,
                        Value::Time(time),
                    ],
                    live: false,
                };
                updates.push((Input::Query(query), time, 1));
            }
        }
    }
    updates
}

/// Everything a run output, across workers, each as text (the records' own `Debug`), with
/// the time it left at; the store as its updates.
#[derive(Clone, Debug, Default)]
struct Outputs {
    answers: Vec<(Time, String)>,
    epochs: Vec<(Time, String)>,
    versions: Vec<(Time, String, isize)>,
    exact: Vec<(Time, String)>,
    errors: Vec<(Time, String, isize)>,
    store: Vec<((Symbol, u32), Time, Accum)>,
}

impl Outputs {
    fn append(&mut self, other: Outputs) {
        self.answers.extend(other.answers);
        self.epochs.extend(other.epochs);
        self.versions.extend(other.versions);
        self.exact.extend(other.exact);
        self.errors.extend(other.errors);
        self.store.extend(other.store);
    }

    /// What left at or after `from` and before `until`, sorted (the store is left whole).
    fn between(&self, from: Time, until: Time) -> Outputs {
        let within = |time: &Time| *time >= from && *time < until;
        let mut out = Outputs {
            answers: self
                .answers
                .iter()
                .filter(|r| within(&r.0))
                .cloned()
                .collect(),
            epochs: self
                .epochs
                .iter()
                .filter(|r| within(&r.0))
                .cloned()
                .collect(),
            versions: self
                .versions
                .iter()
                .filter(|r| within(&r.0))
                .cloned()
                .collect(),
            exact: self
                .exact
                .iter()
                .filter(|r| within(&r.0))
                .cloned()
                .collect(),
            errors: self
                .errors
                .iter()
                .filter(|r| within(&r.0))
                .cloned()
                .collect(),
            store: self.store.clone(),
        };
        out.answers.sort();
        out.epochs.sort();
        out.versions.sort();
        out.exact.sort();
        out.errors = consolidate(std::mem::take(&mut out.errors));
        out
    }

    /// Each feature's accumulated value as it stood at every epoch boundary from `from` on.
    fn features(&self, from: Time, until: Time) -> BTreeMap<(Time, (Symbol, u32)), Accum> {
        let mut features = BTreeMap::new();
        let mut boundary = from;
        while boundary <= until {
            for &(key, time, (count, sum)) in &self.store {
                if time < boundary {
                    let entry = features.entry((boundary, key)).or_insert((0, 0));
                    entry.0 += count;
                    entry.1 += sum;
                }
            }
            boundary += TICK;
        }
        features.retain(|_, accum| *accum != (0, 0));
        features
    }
}

fn consolidate(records: Vec<(Time, String, isize)>) -> Vec<(Time, String, isize)> {
    let mut sums: BTreeMap<(Time, String), isize> = BTreeMap::new();
    for (time, record, diff) in records {
        *sums.entry((time, record)).or_insert(0) += diff;
    }
    sums.into_iter()
        .filter(|(_, diff)| *diff != 0)
        .map(|((time, record), diff)| (time, record, diff))
        .collect()
}

/// How a run goes. Every run reads up to the same epoch, so that they agree on the end of
/// the input.
#[derive(Clone)]
enum Run {
    /// Everything, straight through, to the end of this epoch.
    Straight(u64),
    /// Up to the cut, returning the state there; what it outputs before the cut counts. The
    /// other runs read to the end of the epoch given.
    ToCut(Time, u64),
    /// From the cut, resuming from these states (one per worker), to the end of this epoch.
    FromCut(Vec<WorkerState>, u64),
}

/// The epoch whose turn the `position`-th update, at `time`, is given to the graph in: its own,
/// or for every third fact or correction the one before, as a reader gives them ahead of the
/// epoch it closes (queries are given by their epoch's close, as a checkpoint requires).
fn fed_in(position: usize, input: &Input, time: Time) -> u64 {
    let epoch = time / TICK;
    if position % 3 == 0 && !matches!(input, Input::Query(_)) {
        epoch.saturating_sub(1)
    } else {
        epoch
    }
}

/// Runs the graph over `updates` at `workers` workers; the `i`-th update enters at worker
/// `i % workers`, an epoch at a time (see [`fed_in`]). Returns the outputs and, for
/// [`Run::ToCut`], the state.
fn run(updates: &[(Input, Time, isize)], workers: usize, how: Run) -> (Outputs, Vec<WorkerState>) {
    let updates = Arc::new(updates.to_vec());
    let through = match &how {
        Run::Straight(through) | Run::FromCut(_, through) => *through,
        Run::ToCut(_, through) => *through,
    };
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&results);
    let how = Arc::new(how);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let plan = Rc::new(plan());
        let (first_epoch, last_epoch, cut, resume) = match &*how {
            Run::Straight(through) => (0, *through, None, None),
            Run::ToCut(cut, _) => (0, cut / TICK, Some(*cut), None),
            Run::FromCut(states, through) => {
                let state = states[index].clone();
                (state.cut / TICK, *through, None, Some(state))
            }
        };
        let checkpointing = Checkpointing::new(true, resume);
        let mut ends_input = InputHandleVec::<Time, EndOfReading>::new();
        let (mut facts, mut corrections, mut queries, captured) =
            worker.dataflow::<Time, _, _>(|scope| {
                let (facts_input, facts) = scope.new_collection::<Fact, isize>();
                let (corrections_input, corrections) = scope.new_collection::<Correction, isize>();
                let (queries_input, queries) = scope.new_collection::<Query, isize>();
                let ends = scope.input_from(&mut ends_input);
                let graph = dataflows::build_with(
                    &plan,
                    Default::default(),
                    &checkpointing,
                    facts,
                    corrections,
                    queries,
                    ends,
                );
                let store = graph.store.as_collection(|key, _| *key).inner.capture();
                drop(graph.models);
                // the challenger's epochs and versions beside the champion's, and the
                // comparisons beside the exact reports
                let mut epochs = graph.epochs;
                let mut versions = graph.versions.inner;
                for challenger in graph.challengers {
                    epochs = epochs.concat(challenger.epochs);
                    versions = versions.concat(challenger.versions.inner);
                }
                let reports = graph
                    .exact
                    .expect("an exact plan")
                    .map(|report| format!("{report:?}"))
                    .concat(graph.variant_reports.map(|report| format!("{report:?}")));
                (
                    facts_input,
                    corrections_input,
                    queries_input,
                    (
                        graph.answers.capture(),
                        epochs.capture(),
                        versions.capture(),
                        reports.capture(),
                        graph.errors.inner.capture(),
                        store,
                    ),
                )
            });
        let start = first_epoch * TICK;
        facts.advance_to(start);
        corrections.advance_to(start);
        queries.advance_to(start);
        ends_input.advance_to(start);
        // an input session moves its handle on only when it flushes
        facts.flush();
        corrections.flush();
        queries.flush();
        let mut state = None;
        for epoch in first_epoch..=last_epoch {
            for (position, (input, time, diff)) in updates.iter().enumerate() {
                if position % peers == index && fed_in(position, input, *time) == epoch {
                    match input {
                        Input::Fact(fact) => facts.update_at(fact.clone(), *time, *diff),
                        Input::Correction(c) => corrections.update_at(*c, *time, *diff),
                        Input::Query(query) => queries.update_at(query.clone(), *time, *diff),
                    }
                }
            }
            let next = (epoch + 1) * TICK;
            if cut == Some(next) {
                checkpointing.request(next);
            }
            facts.advance_to(next);
            corrections.advance_to(next);
            queries.advance_to(next);
            ends_input.advance_to(next);
            facts.flush();
            corrections.flush();
            queries.flush();
            worker.step();
            if cut == Some(next) {
                while state.is_none() {
                    worker.step();
                    state = checkpointing.take();
                }
                break;
            }
        }
        ends_input.send(EndOfReading {
            stopping: false,
            read_before: u64::MAX,
            // what every run has advanced through, so that a label is beyond the input, or
            // not, alike in every run
            max_time: (through + 1) * TICK - 1,
        });
        drop((facts, corrections, queries, ends_input));
        while worker.step_or_park(None) {}

        let (answers, epochs, versions, exact, errors, store) = captured;
        let outputs = Outputs {
            answers: stamped(answers),
            epochs: stamped(epochs),
            versions: as_text(updates_of(versions)),
            exact: stamped(exact),
            errors: as_text(updates_of(errors)),
            store: updates_of(store)
                .into_iter()
                .map(|(time, key, diff)| (key, time, diff))
                .collect(),
        };
        sink.lock().expect("results").push((index, outputs, state));
    })
    .expect("timely runs");
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by_key(|(index, _, _)| *index);
    let mut outputs = Outputs::default();
    let mut states = Vec::new();
    for (_, output, state) in results {
        outputs.append(output);
        states.extend(state);
    }
    (outputs, states)
}

type Captured<D> = std::sync::mpsc::Receiver<Event<Time, Vec<D>>>;

/// The records a stream carried, as text, with the time of the message that carried each.
fn stamped<D: std::fmt::Debug>(events: Captured<D>) -> Vec<(Time, String)> {
    let mut records = Vec::new();
    for event in events.try_iter() {
        if let Event::Messages(stamp, batch) = event {
            let time = stamp.least().copied().unwrap_or(0);
            records.extend(batch.iter().map(|record| (time, format!("{record:?}"))));
        }
    }
    records
}

/// The updates a collection carried, `(time, record, diff)`.
fn updates_of<D, R>(events: Captured<(D, Time, R)>) -> Vec<(Time, D, R)> {
    let mut updates = Vec::new();
    for event in events.try_iter() {
        if let Event::Messages(_, batch) = event {
            updates.extend(
                batch
                    .into_iter()
                    .map(|(record, time, diff)| (time, record, diff)),
            );
        }
    }
    updates
}

fn as_text<D: std::fmt::Debug>(updates: Vec<(Time, D, isize)>) -> Vec<(Time, String, isize)> {
    updates
        .into_iter()
        .map(|(time, record, diff)| (time, format!("{record:?}"), diff))
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    let time = 0..90u64;
    prop_oneof![
        4 => (0..DOGS, 0..8u8, -5..5i8, time.clone())
            .prop_map(|(dog, tags, score, time)| Op::Post { dog, tags, score, time }),
        3 => (0..DOGS, 0..DOGS, time.clone())
            .prop_map(|(follower, followee, time)| Op::Follow { follower, followee, time }),
        4 => (0..40usize, time.clone()).prop_map(|(post, time)| Op::Like { post, time }),
        1 => (0..40usize, 0..30u64).prop_map(|(post, after)| Op::Retract { post, after }),
        2 => (0..DOGS, time).prop_map(|(dog, time)| Op::Query { dog, time }),
    ]
}

/// Checks that the run resumed at `cut` equals the straight run, before and after the cut.
fn check_exact_resume(ops: &[Op], cut_epoch: u64, workers: usize) -> Result<(), TestCaseError> {
    let updates = updates(ops);
    let last = updates.iter().map(|(_, time, _)| *time).max().unwrap_or(0);
    let cut = cut_epoch * TICK;
    let end = (last / TICK + 3) * TICK;
    let through = (last / TICK).max(cut_epoch);
    let (straight, _) = run(&updates, workers, Run::Straight(through));
    let (before, states) = run(&updates, workers, Run::ToCut(cut, through));
    prop_assert_eq!(states.len(), workers);
    let (after, _) = run(&updates, workers, Run::FromCut(states, through));

    let (expected, got) = (straight.between(0, cut), before.between(0, cut));
    prop_assert_eq!(&expected.epochs, &got.epochs, "epochs before the cut");
    let (expected, got) = (
        straight.between(cut, Time::MAX),
        after.between(0, Time::MAX),
    );
    prop_assert_eq!(&expected.answers, &got.answers, "answers");
    prop_assert_eq!(&expected.epochs, &got.epochs, "epoch metrics");
    prop_assert_eq!(&expected.versions, &got.versions, "versions");
    prop_assert_eq!(&expected.exact, &got.exact, "exact reports");
    prop_assert_eq!(&expected.errors, &got.errors, "errors");
    prop_assert_eq!(
        straight.features(cut, end),
        after.features(cut, end),
        "features"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn a_resumed_graph_continues_exactly(
        ops in prop::collection::vec(op(), 1..60),
        cut_epoch in 1..10u64,
    ) {
        for workers in WORKERS {
            check_exact_resume(&ops, cut_epoch, workers)?;
        }
    }

    #[test]
    fn a_graph_resumed_at_another_layout_has_the_same_features_and_errors(
        ops in prop::collection::vec(op(), 1..60),
        cut_epoch in 1..10u64,
        from in 0..3usize,
        to in 0..3usize,
    ) {
        let (from, to) = (WORKERS[from], WORKERS[to]);
        let updates = updates(&ops);
        let last = updates.iter().map(|(_, time, _)| *time).max().unwrap_or(0);
        let (cut, end) = (cut_epoch * TICK, (last / TICK + 3) * TICK);
        let through = (last / TICK).max(cut_epoch);
        let (straight, _) = run(&updates, to, Run::Straight(through));
        let (_, states) = run(&updates, from, Run::ToCut(cut, through));
        let states = WorkerState::rescale(states, to).expect("states of one cut");
        prop_assert_eq!(states.len(), to);
        let (after, _) = run(&updates, to, Run::FromCut(states, through));
        prop_assert_eq!(straight.features(cut, end), after.features(cut, end), "features");
        prop_assert_eq!(
            straight.between(cut, Time::MAX).errors,
            after.between(0, Time::MAX).errors,
            "errors"
        );
    }
}

#[test]
fn states_of_different_cuts_do_not_fit_together() {
    let state = |worker, cut| WorkerState {
        cut,
        worker,
        peers: 2,
        ..WorkerState::default()
    };
    let error = WorkerState::rescale(vec![state(0, 10), state(1, 20)], 1).unwrap_err();
    assert!(error.contains("do not fit together"), "{error}");
    let error = WorkerState::rescale(vec![state(0, 10)], 1).unwrap_err();
    assert!(error.contains("1 of its 2"), "{error}");
    assert!(WorkerState::rescale(vec![], 1).is_err());
}
