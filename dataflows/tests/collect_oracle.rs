//! Collection splits facts by source and applies corrections, and equals a from-scratch
//! recomputation at every epoch under random facts, withdrawals and corrections, at 1, 2 and 4
//! workers.
//!
//! The oracle: at the close of an epoch, a source's live facts are those inserted before it and
//! not withdrawn before it; of a retractable source, those whose key a correction named before
//! it are gone too (a correction keeps withdrawing its key, so a fact with that key arriving
//! later is withdrawn as it arrives). A correction of a source that cannot be retracted, or of
//! a key no fact has, withdraws nothing.

pub mod support;

use std::collections::BTreeMap;

use dataflows::collect::Correction;
use dataflows::fact::{Fact, SourceId, Time, Value, key_id, position_id};
use dataflows::hashing::symbol;
use dataflows::plan::*;
use differential_dataflow::AsCollection;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;

use support::{PlanBuilder, Update, WORKERS, field, seconds};

const TICK: u64 = 10;

/// What the readers hand the graph: facts and corrections.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Read {
    Fact(Fact),
    Correction(Correction),
}

/// Source 0 is retractable, its facts identified by their sensor; source 1 is not.
fn plan() -> Plan {
    let fields = || {
        vec![
            field("sensor", FieldKind::Text),
            field("value", FieldKind::Int),
            seconds("time"),
        ]
    };
    PlanBuilder::new("collect", TICK)
        .source("readings", fields())
        .keyed_by(vec![0])
        .source("notes", fields())
        .build()
}

#[derive(Clone, Debug)]
enum Op {
    /// A fact, perhaps withdrawn later by a negative update.
    Fact {
        source: SourceId,
        sensor: u8,
        value: i8,
        time: Time,
        withdraw_at: Option<Time>,
    },
    /// A correction of a source's fact by its sensor.
    Correction {
        source: SourceId,
        sensor: u8,
        time: Time,
    },
}

fn sensor_key(source: SourceId, sensor: u8) -> u64 {
    key_id(source, &[Some(symbol(format!("s{sensor}").as_bytes()))])
}

/// The fact of the `position`-th op: identified as the readers identify it, by key for a
/// retractable source and by position otherwise.
fn fact(position: usize, source: SourceId, sensor: u8, value: i8, time: Time) -> Fact {
    let id = match source {
        0 => sensor_key(0, sensor),
        _ => position_id(1, position as u64),
    };
    Fact {
        id,
        source,
        time,
        row: vec![
            Value::Text(symbol(format!("s{sensor}").as_bytes())),
            Value::Int(i64::from(value)),
            Value::Time(time),
        ],
    }
}

fn updates(ops: &[Op]) -> Vec<Update<Read>> {
    let mut updates = Vec::new();
    for (position, op) in ops.iter().enumerate() {
        match *op {
            Op::Fact {
                source,
                sensor,
                value,
                time,
                withdraw_at,
            } => {
                let fact = fact(position, source, sensor, value, time);
                updates.push((Read::Fact(fact.clone()), time, 1));
                if let Some(at) = withdraw_at {
                    updates.push((Read::Fact(fact), at, -1));
                }
            }
            Op::Correction {
                source,
                sensor,
                time,
            } => updates.push((
                Read::Correction((source, sensor_key(source, sensor))),
                time,
                1,
            )),
        }
    }
    updates
}

/// Each source's facts, counted, at the close of each epoch up to `ends`.
type State = BTreeMap<(Time, usize, Fact), isize>;

fn run_graph(ops: &[Op], workers: usize, ends: u64) -> State {
    let plan = plan();
    let outputs = support::replay(&updates(ops), TICK, workers, move |reads| {
        let facts = reads.clone().flat_map(|read| match read {
            Read::Fact(fact) => Some(fact),
            Read::Correction(_) => None,
        });
        let corrections = reads.flat_map(|read| match read {
            Read::Correction(correction) => Some(correction),
            Read::Fact(_) => None,
        });
        let sources = dataflows::collect::split_sources(&plan, facts, corrections);
        let tagged: Vec<_> = sources
            .into_iter()
            .enumerate()
            .map(|(index, facts)| facts.inner.map(move |(fact, t, r)| ((index, fact), t, r)))
            .collect();
        let scope = tagged[0].scope();
        differential_dataflow::collection::concatenate(
            scope,
            tagged.into_iter().map(|stream| stream.as_collection()),
        )
        .inner
    });
    let updates = support::all(outputs);
    let mut state = State::new();
    for end in (1..=ends).map(|epoch| epoch * TICK) {
        for ((source, fact), time, diff) in &updates {
            if *time < end {
                *state.entry((end, *source, fact.clone())).or_insert(0) += diff;
            }
        }
    }
    state.retain(|_, count| *count != 0);
    state
}

fn oracle(ops: &[Op], ends: u64) -> State {
    let mut state = State::new();
    for end in (1..=ends).map(|epoch| epoch * TICK) {
        let corrected = |fact_source: SourceId, sensor: u8| {
            fact_source == 0
                && ops.iter().any(|op| {
                    matches!(*op, Op::Correction { source, sensor: named, time }
                        if source == fact_source && named == sensor && time < end)
                })
        };
        for (position, op) in ops.iter().enumerate() {
            if let Op::Fact {
                source,
                sensor,
                value,
                time,
                withdraw_at,
            } = *op
                && time < end
                && withdraw_at.is_none_or(|at| at >= end)
                && !corrected(source, sensor)
            {
                let fact = fact(position, source, sensor, value, time);
                *state.entry((end, usize::from(source), fact)).or_insert(0) += 1;
            }
        }
    }
    state
}

fn op() -> impl Strategy<Value = Op> {
    let time = 0..8 * TICK;
    prop_oneof![
        3 => (0u16..2, 0u8..4, -3i8..3, time.clone(), proptest::option::weighted(0.3, 1u64..30))
            .prop_map(|(source, sensor, value, time, delay)| Op::Fact {
                source,
                sensor,
                value,
                time,
                withdraw_at: delay.map(|delay| time + delay),
            }),
        1 => (0u16..2, 0u8..5, time).prop_map(|(source, sensor, time)| Op::Correction {
            source,
            sensor,
            time,
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sources_equal_recomputation(ops in proptest::collection::vec(op(), 0..40)) {
        let expected = oracle(&ops, 12);
        for workers in WORKERS {
            prop_assert_eq!(&run_graph(&ops, workers, 12), &expected, "at {} workers", workers);
        }
    }
}

#[test]
fn a_correction_withdraws_its_key_once_and_keeps_withdrawing_it() {
    let reading = |sensor, value, time| Op::Fact {
        source: 0,
        sensor,
        value,
        time,
        withdraw_at: None,
    };
    let ops = vec![
        reading(1, 5, 2),
        reading(2, 6, 3),
        // sensor 1 corrected twice, and a correction of a key no fact has
        Op::Correction {
            source: 0,
            sensor: 1,
            time: 14,
        },
        Op::Correction {
            source: 0,
            sensor: 1,
            time: 15,
        },
        Op::Correction {
            source: 0,
            sensor: 3,
            time: 15,
        },
        // a later fact of a corrected key is withdrawn as it arrives
        reading(1, 7, 25),
        // corrections of a source that cannot be retracted do nothing
        Op::Fact {
            source: 1,
            sensor: 1,
            value: 8,
            time: 4,
            withdraw_at: None,
        },
        Op::Correction {
            source: 1,
            sensor: 1,
            time: 16,
        },
    ];
    let state = run_graph(&ops, 2, 4);
    let live = |end: Time| -> Vec<(usize, i64)> {
        let mut live: Vec<(usize, i64)> = state
            .iter()
            .filter(|((at, _, _), _)| *at == end)
            .map(|((_, source, fact), count)| {
                assert_eq!(*count, 1);
                let Value::Int(value) = fact.row[1] else {
                    panic!("an integer value")
                };
                (*source, value)
            })
            .collect();
        live.sort();
        live
    };
    assert_eq!(live(10), vec![(0, 5), (0, 6), (1, 8)]);
    assert_eq!(live(20), vec![(0, 6), (1, 8)]);
    assert_eq!(live(30), vec![(0, 6), (1, 8)]);
    assert_eq!(state, oracle(&ops, 4));
}
