//! The exact regression equals a from-scratch solve at every epoch, bit for bit, under random
//! insertions and retractions, at 1, 2 and 4 workers; and a fact inserted then retracted
//! leaves exactly the weights of a run that never had it.
//!
//! The oracle takes the facts live at each epoch's close (inserted before, not retracted
//! before), solves over them from nothing, and scores each epoch's new facts with the previous
//! epoch's solution.

pub mod support;

use std::rc::Rc;

use dataflows::fact::{Fact, Real, Value};
use dataflows::learn::ridge::{EpochDelta, ExactReport, FixedRow, Ridge};
use dataflows::plan::*;
use proptest::prelude::*;

use support::{PlanBuilder, WORKERS, field, seconds};

const TICK: u64 = 10;
const EPOCHS: u64 = 10;

/// One observation, inserted at `time` and perhaps retracted at `retract_at`.
#[derive(Clone, Debug)]
struct Op {
    y: Option<f64>,
    x1: Option<f64>,
    x2: Option<i64>,
    time: u64,
    retract_at: Option<u64>,
}

fn plan() -> Plan {
    let fields = vec![
        field("y", FieldKind::Real),
        field("x1", FieldKind::Real),
        field("x2", FieldKind::Int),
        seconds("time"),
    ];
    PlanBuilder::new("oracle", TICK)
        .source("observations", fields)
        .exact(ExactPlan {
            name: "exact".into(),
            target_field: 0,
            input_fields: vec![1, 2],
            intercept: true,
            l2: 0.25,
        })
        .build()
}

fn fact(op: &Op, id: u64) -> Fact {
    let real = |value: Option<f64>| value.map_or(Value::Missing, |value| Value::Real(Real(value)));
    Fact {
        id,
        source: 0,
        time: op.time,
        row: vec![
            real(op.y),
            real(op.x1),
            op.x2.map_or(Value::Missing, Value::Int),
            Value::Time(op.time),
        ],
    }
}

/// The reports of the graph, in epoch order.
fn run_graph(ops: &[Op], workers: usize) -> Vec<ExactReport> {
    let mut updates = Vec::new();
    for (id, op) in ops.iter().enumerate() {
        let fact = fact(op, id as u64);
        updates.push((fact.clone(), op.time, 1));
        if let Some(retract) = op.retract_at {
            updates.push((fact, retract, -1));
        }
    }
    let per_worker = support::replay(&updates, TICK, workers, |facts| {
        let plan = Rc::new(plan());
        let checkpointing = dataflows::checkpoint::Checkpointing::off();
        dataflows::learn::exact::exact(&plan, facts, &checkpointing).expect("an exact plan")
    });
    for (index, reports) in per_worker.iter().enumerate() {
        assert!(
            index == 0 || reports.is_empty(),
            "reports leave worker 0 only"
        );
    }
    let mut reports = support::all(per_worker);
    reports.sort_by_key(|report| report.epoch);
    reports
}

/// The reports recomputed from scratch: one per epoch in which a fact arrived or left.
fn oracle(ops: &[Op]) -> Vec<ExactReport> {
    let plan = plan();
    let exact = plan.exact.as_ref().expect("an exact plan");
    let weights = exact.weights();
    let live = |op: &Op, end: u64| op.time < end && op.retract_at.is_none_or(|at| at >= end);
    let mut changed: Vec<u64> = ops
        .iter()
        .flat_map(|op| [Some(op.time / TICK), op.retract_at.map(|at| at / TICK)])
        .flatten()
        .collect();
    changed.sort();
    changed.dedup();

    let mut reports: Vec<ExactReport> = Vec::new();
    let (mut squared_error, mut scored) = (0.0, 0u64);
    for epoch in changed {
        let end = (epoch + 1) * TICK;
        // solve over the live facts, from nothing
        let mut fresh = Ridge::new(exact);
        let mut everything = EpochDelta::new(epoch, weights);
        for (id, op) in ops.iter().enumerate().filter(|(_, op)| live(op, end)) {
            everything.record(
                id as u64,
                FixedRow::from_fields(exact, &fact(op, id as u64).row),
                1,
            );
        }
        let solved = fresh.close_epoch(everything);

        // score the epoch's new facts with the previous solution, in id order
        let previous = reports
            .last()
            .map_or(vec![0.0; weights], |report| report.model.weights.clone());
        let mut epoch_error = 0.0;
        let mut epoch_scored = 0u64;
        for (id, op) in ops.iter().enumerate() {
            if op.time / TICK != epoch {
                continue;
            }
            if let Some(row) = FixedRow::from_fields(exact, &fact(op, id as u64).row) {
                let prediction: f64 = previous.iter().zip(row.inputs()).map(|(w, x)| w * x).sum();
                let error = row.target() - prediction;
                epoch_error += error * error;
                epoch_scored += 1;
            }
        }
        squared_error += epoch_error;
        scored += epoch_scored;
        let rmse = |sum: f64, count: u64| (count > 0).then(|| (sum / count as f64).sqrt());
        reports.push(ExactReport {
            epoch,
            model: solved.model,
            epoch_scores: dataflows::learn::ridge::RegressionScores {
                examples: epoch_scored,
                rmse: rmse(epoch_error, epoch_scored),
            },
            running: dataflows::learn::ridge::RegressionScores {
                examples: scored,
                rmse: rmse(squared_error, scored),
            },
            skipped: solved.skipped,
        });
    }
    reports
}

/// Reports as bits, so that equality is bit-identity (and NaN would be caught too).
fn bits(
    reports: &[ExactReport],
) -> Vec<(
    u64,
    Vec<u64>,
    i64,
    Option<u64>,
    u64,
    Option<u64>,
    Option<u64>,
    i64,
)> {
    reports
        .iter()
        .map(|report| {
            (
                report.epoch,
                report.model.weights.iter().map(|w| w.to_bits()).collect(),
                report.model.examples,
                report.model.rmse_train.map(f64::to_bits),
                report.running.examples,
                report.epoch_scores.rmse.map(f64::to_bits),
                report.running.rmse.map(f64::to_bits),
                report.skipped,
            )
        })
        .collect()
}

/// The weights in force at the close of `epoch`: those of the last report up to it.
fn weights_at(reports: &[ExactReport], epoch: u64) -> Vec<u64> {
    reports
        .iter()
        .rev()
        .find(|report| report.epoch <= epoch)
        .map_or(vec![0.0f64.to_bits(); 3], |report| {
            report.model.weights.iter().map(|w| w.to_bits()).collect()
        })
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (-400i32..400).prop_map(|value| f64::from(value) / 8.0),
        -1.0e3f64..1.0e3,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    (
        proptest::option::weighted(0.9, value()),
        proptest::option::weighted(0.9, value()),
        proptest::option::weighted(0.9, -20i64..20),
        0..EPOCHS * TICK,
        proptest::option::weighted(0.3, 1u64..60),
    )
        .prop_map(|(y, x1, x2, time, retract)| Op {
            y,
            x1,
            x2,
            time,
            retract_at: retract.map(|delay| time + delay),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn weights_equal_a_solve_from_scratch(ops in proptest::collection::vec(op(), 0..60)) {
        let expected = bits(&oracle(&ops));
        for workers in WORKERS {
            prop_assert_eq!(&bits(&run_graph(&ops, workers)), &expected, "at {} workers", workers);
        }
    }

    #[test]
    fn a_retracted_fact_leaves_the_weights_of_a_run_without_it(
        mut ops in proptest::collection::vec(op(), 1..40),
        extra in op(),
        delay in 1u64..50,
        workers in prop_oneof![Just(1usize), Just(2), Just(4)],
    ) {
        for op in &mut ops {
            op.retract_at = None;
        }
        let without = run_graph(&ops, workers);
        let retract_at = extra.time + delay;
        ops.push(Op { retract_at: Some(retract_at), ..extra });
        let with = run_graph(&ops, workers);
        for epoch in retract_at / TICK..EPOCHS + 8 {
            prop_assert_eq!(weights_at(&with, epoch), weights_at(&without, epoch), "epoch {}", epoch);
        }
    }
}

#[test]
fn an_inserted_then_retracted_fact_changes_the_weights_and_then_nothing() {
    let op = |y: f64, x1: f64, x2: i64, time: u64| Op {
        y: Some(y),
        x1: Some(x1),
        x2: Some(x2),
        time,
        retract_at: None,
    };
    let mut ops = vec![
        op(1.5, 0.25, 3, 1),
        op(-2.0, 1.125, -1, 4),
        op(0.3, 7.0, 2, 12),
        op(4.0, -0.5, 0, 25),
    ];
    let without = run_graph(&ops, 2);
    // an outlier at 13, withdrawn at 31
    ops.push(Op {
        retract_at: Some(31),
        ..op(900.0, -40.0, 17, 13)
    });
    let with = run_graph(&ops, 2);
    assert_ne!(weights_at(&with, 1), weights_at(&without, 1));
    assert_ne!(weights_at(&with, 2), weights_at(&without, 2));
    assert_eq!(weights_at(&with, 3), weights_at(&without, 3));
    assert_eq!(weights_at(&with, 9), weights_at(&without, 9));
    // the outlier was scored when it arrived, and stays scored
    let last = with.last().expect("reports");
    assert_eq!(last.running.examples, 5);
    assert_eq!(last.model.examples, 4);
}
