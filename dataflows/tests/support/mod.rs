//! Shared support for the dataflow tests: one harness that replays updates epoch by epoch at
//! a number of workers, and a builder for tiny plans.

use std::sync::{Arc, Mutex};

use dataflows::fact::{SourceId, Time};
use dataflows::learn::adagrad::AdaGradHyper;
use dataflows::learn::optimizer::{OptimizerPlan, WeightMerge};
use dataflows::plan::*;
use differential_dataflow::VecCollection;
use differential_dataflow::input::Input;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Capture;
use timely::dataflow::operators::capture::Event;

/// One update to replay: a record, the time it enters the graph at, and its difference.
pub type Update<D> = (D, Time, isize);

/// The layouts every property is checked at.
pub const WORKERS: [usize; 3] = [1, 2, 4];

/// Replays `updates` into the dataflow `build` makes, at `workers` workers, and returns what
/// its output stream carried, per worker in worker order.
///
/// The `i`-th update enters at worker `i % workers`, in the epoch of `tick` seconds its time
/// falls in; each worker steps once per epoch, as a reader does, and runs until the dataflow
/// completes once the input is closed.
pub fn replay<I, D, B>(updates: &[Update<I>], tick: Time, workers: usize, build: B) -> Vec<Vec<D>>
where
    I: timely::ExchangeData + differential_dataflow::Data + Sync,
    D: Clone + Send + 'static,
    B: for<'scope> Fn(VecCollection<'scope, Time, I>) -> StreamVec<'scope, Time, D>
        + Send
        + Sync
        + 'static,
{
    let updates = Arc::new(updates.to_vec());
    let last_epoch = updates.iter().map(|(_, time, _)| time / tick).max();
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&results);
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, captured) = worker.dataflow::<Time, _, _>(|scope| {
            let (input, records) = scope.new_collection::<I, isize>();
            (input, build(records).capture())
        });
        for epoch in last_epoch.map_or(0..0, |last| 0..last + 1) {
            for (position, (record, time, diff)) in updates.iter().enumerate() {
                if position % peers == index && time / tick == epoch {
                    input.update_at(record.clone(), *time, *diff);
                }
            }
            input.advance_to((epoch + 1) * tick);
            input.flush();
            worker.step();
        }
        drop(input);
        while worker.step_or_park(None) {}
        let outputs: Vec<D> = captured
            .try_iter()
            .flat_map(|event| match event {
                Event::Messages(_, batch) => batch,
                Event::Progress(_) => Vec::new(),
            })
            .collect();
        sink.lock().expect("results").push((index, outputs));
    })
    .expect("timely runs");
    let mut results = std::mem::take(&mut *results.lock().expect("results"));
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, outputs)| outputs).collect()
}

/// Everything the workers output, in no particular order.
pub fn all<D>(per_worker: Vec<Vec<D>>) -> Vec<D> {
    per_worker.into_iter().flatten().collect()
}

/// A field that is not required, so an empty value is [`dataflows::fact::Value::Missing`].
pub fn field(name: &str, kind: FieldKind) -> FieldPlan {
    FieldPlan {
        name: name.into(),
        kind,
        required: false,
    }
}

/// A time field in seconds.
pub fn seconds(name: &str) -> FieldPlan {
    field(
        name,
        FieldKind::Time {
            unit: TimeUnit::Seconds,
        },
    )
}

/// An aggregate keyed by a field of its source, read by features under the same field of the
/// example source; change the returned plan's fields for anything else.
pub fn aggregate(
    name: &str,
    source: SourceId,
    key_field: usize,
    function: Function,
) -> AggregatePlan {
    AggregatePlan {
        name: name.into(),
        source,
        key_field: Some(key_field),
        via: None,
        function,
        window: None,
        used_by: AggregateUse::Feature {
            example_field: key_field,
        },
    }
}

/// A tiny plan, built up source by source: the examples are the first source's facts, labelled
/// by a threshold of 0 on their first field, and scored by a small AdaGrad model.
pub struct PlanBuilder {
    plan: Plan,
}

impl PlanBuilder {
    /// A plan with no sources yet, whose epochs are `tick_secs` long.
    pub fn new(name: &str, tick_secs: u64) -> Self {
        PlanBuilder {
            plan: Plan {
                name: name.into(),
                tick_secs,
                sources: Vec::new(),
                examples: ExamplePlan {
                    source: 0,
                    id_field: None,
                    entity_field: None,
                    truth_field: None,
                },
                label: LabelPlan::Threshold {
                    field: 0,
                    at_least: 0.0,
                },
                features: Vec::new(),
                aggregates: Vec::new(),
                model: ModelPlan {
                    name: "m".into(),
                    bits: 8,
                    optimizer: OptimizerPlan::AdaGrad(AdaGradHyper {
                        learning_rate: 0.1,
                        l2: 0.0,
                    }),
                    merge: WeightMerge::Average,
                    features: None,
                },
                challengers: Vec::new(),
                serving: ServingPlan { keep_versions: 1 },
                exact: None,
            },
        }
    }

    /// Adds a CSV source of these fields, timed by its field called `time` if it has one.
    pub fn source(mut self, name: &str, fields: Vec<FieldPlan>) -> Self {
        self.plan.sources.push(SourcePlan {
            name: name.into(),
            paths: vec![],
            glob: None,
            format: Format::Csv,
            header: false,
            time_field: fields.iter().position(|field| field.name == "time"),
            fields,
            lateness_secs: 0,
            late: LatePolicy::Drop,
            key_fields: vec![],
            op_field: None,
            corrects: None,
        });
        self
    }

    /// Makes the last source added retractable, its facts identified by these fields.
    pub fn keyed_by(mut self, key_fields: Vec<usize>) -> Self {
        if let Some(source) = self.plan.sources.last_mut() {
            source.key_fields = key_fields;
        }
        self
    }

    /// Sets which facts are examples and how they are identified and partitioned.
    pub fn examples(mut self, examples: ExamplePlan) -> Self {
        self.plan.examples = examples;
        self
    }

    /// Sets the label.
    pub fn label(mut self, label: LabelPlan) -> Self {
        self.plan.label = label;
        self
    }

    /// Adds an aggregate.
    pub fn aggregate(mut self, aggregate: AggregatePlan) -> Self {
        self.plan.aggregates.push(aggregate);
        self
    }

    /// Adds a feature.
    pub fn feature(mut self, feature: FeaturePlan) -> Self {
        self.plan.features.push(feature);
        self
    }

    /// Learns an exact regression beside the model.
    pub fn exact(mut self, exact: ExactPlan) -> Self {
        self.plan.exact = Some(exact);
        self
    }

    /// Keeps this many versions in the serving arrangement.
    pub fn keep_versions(mut self, keep_versions: usize) -> Self {
        self.plan.serving.keep_versions = keep_versions;
        self
    }

    /// The plan.
    pub fn build(self) -> Plan {
        self.plan
    }
}
