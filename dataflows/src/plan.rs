//! The plan: a pipeline spec with every name resolved to an index, ready to build a graph from.
//!
//! `src/spec.rs` reads a TOML spec, checks it, and produces a [`Plan`]. Everything here is plain
//! data: the graph reads it, and so do the readers that parse source files.

use serde::{Deserialize, Serialize};

use crate::fact::{SourceId, Symbol, Time};
use crate::learn::optimizer::{OptimizerPlan, WeightMerge};

/// A whole pipeline: sources, the examples and their label, features, model and serving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The pipeline's name.
    pub name: String,
    /// Length of an epoch in event-time seconds. Epoch `e` covers `[e * tick, (e + 1) * tick)`.
    pub tick_secs: u64,
    /// The sources facts are read from.
    pub sources: Vec<SourcePlan>,
    /// Which facts are examples, and how each is identified and partitioned.
    pub examples: ExamplePlan,
    /// How an example's label is derived.
    pub label: LabelPlan,
    /// Features of an example, in model order.
    pub features: Vec<FeaturePlan>,
    /// Aggregates maintained over sources, looked up by features and labels.
    pub aggregates: Vec<AggregatePlan>,
    /// The learner: the champion, whose versions are served and whose figures are the run's.
    pub model: ModelPlan,
    /// Other variants of the learner, trained beside the champion in the same graph on the
    /// same examples and features (each on its own subset, with its own bits); empty for a
    /// one-model spec.
    #[serde(default)]
    pub challengers: Vec<ModelPlan>,
    /// How published models are served.
    pub serving: ServingPlan,
    /// An exact ridge regression learned beside the model, if the spec asks for one.
    #[serde(default)]
    pub exact: Option<ExactPlan>,
}

impl Plan {
    /// The epoch an event time falls in.
    pub fn epoch(&self, time: Time) -> u64 {
        time / self.tick_secs
    }

    /// The first second of an epoch.
    pub fn epoch_start(&self, epoch: u64) -> Time {
        epoch.saturating_mul(self.tick_secs)
    }

    /// Every variant of the learner, the champion first.
    pub fn variants(&self) -> impl Iterator<Item = &ModelPlan> {
        std::iter::once(&self.model).chain(&self.challengers)
    }

    /// The plan as variant `index` of [`Plan::variants`] sees it: that variant is its model,
    /// and it has no challengers. Variant 0 is the champion.
    pub fn for_variant(&self, index: usize) -> Plan {
        let model = match index {
            0 => self.model.clone(),
            _ => self.challengers[index - 1].clone(),
        };
        Plan {
            model,
            challengers: Vec::new(),
            ..self.clone()
        }
    }

    /// The source examples are drawn from.
    pub fn example_source(&self) -> &SourcePlan {
        &self.sources[usize::from(self.examples.source)]
    }

    /// Groups of aggregate lookups, one per example field that aggregates are keyed by, and
    /// one for the global aggregates that transforms read.
    ///
    /// An example visits the worker that owns each group's key once, and reads all of that
    /// group's aggregates there.
    pub fn lookup_groups(&self) -> Vec<LookupGroup> {
        let mut groups: Vec<LookupGroup> = Vec::new();
        for (index, aggregate) in self.aggregates.iter().enumerate() {
            let example_field = match aggregate.used_by {
                AggregateUse::Feature { example_field } => Some(example_field),
                AggregateUse::Global => None,
                AggregateUse::Label => continue,
            };
            match groups
                .iter_mut()
                .find(|group| group.example_field == example_field)
            {
                Some(group) => group.aggregates.push(index),
                None => groups.push(LookupGroup {
                    example_field,
                    aggregates: vec![index],
                }),
            }
        }
        groups
    }
}

/// Aggregates looked up under the same example field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupGroup {
    /// The example field whose symbol is the lookup key; `None` for the global aggregates,
    /// all read under [`GLOBAL_KEY`].
    pub example_field: Option<usize>,
    /// Indexes into [`Plan::aggregates`], ascending.
    pub aggregates: Vec<usize>,
}

/// The store key of a global aggregate, which has one value for all facts.
pub const GLOBAL_KEY: Symbol = 0;

/// One source: where its facts are and what their fields are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourcePlan {
    /// The source's name, as the spec gives it.
    pub name: String,
    /// The files to read, in order.
    pub paths: Vec<std::path::PathBuf>,
    /// A file-name pattern (`dir/*.csv`) whose matches are read in name order; with
    /// `--follow`, new matches are picked up as they appear.
    pub glob: Option<String>,
    /// How lines are laid out.
    pub format: Format,
    /// Whether the first line of each file names the fields rather than holding a fact.
    pub header: bool,
    /// The fields of a fact, in column order (for JSON Lines, the keys read).
    pub fields: Vec<FieldPlan>,
    /// The field that holds the event time; `None` for a source timed by its order: the
    /// n-th fact of the source (from 0, across its files) happens at time n.
    pub time_field: Option<usize>,
    /// How far behind the latest event time already read a fact may be and still be placed
    /// at its own time.
    pub lateness_secs: u64,
    /// What happens to a fact later than that.
    pub late: LatePolicy,
    /// The fields that identify a fact, so that it can be retracted; empty when facts are
    /// identified by their position and cannot be.
    pub key_fields: Vec<usize>,
    /// A field whose value `retract` (or `delete`) withdraws the fact its key names, instead
    /// of adding one.
    pub op_field: Option<usize>,
    /// When set, this source holds no facts: each of its rows withdraws the fact of that
    /// source whose key equals the row's key fields.
    pub corrects: Option<SourceId>,
}

impl SourcePlan {
    /// The index of the field called `name`.
    pub fn field(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| field.name == name)
    }

    /// Whether facts of this source can be withdrawn, by an `op` field or another source.
    pub fn retractable(&self) -> bool {
        !self.key_fields.is_empty()
    }
}

/// What happens to a fact later than its source's lateness allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatePolicy {
    /// It is dead-lettered with reason `late`.
    Drop,
    /// It joins the open epoch, keeping its event time in the data.
    Admit,
}

/// The line format of a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// Comma-separated values, with RFC 4180 quoting.
    Csv,
    /// Tab-separated values.
    Tsv,
    /// One JSON object per line, fields named by their keys.
    JsonLines,
}

impl Format {
    /// The field delimiter of a delimited format.
    pub fn delimiter(self) -> Option<u8> {
        match self {
            Format::Csv => Some(b','),
            Format::Tsv => Some(b'\t'),
            Format::JsonLines => None,
        }
    }
}

/// One field of a source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldPlan {
    /// The field's name.
    pub name: String,
    /// How its text is read.
    pub kind: FieldKind,
    /// Whether an empty value is an error rather than [`crate::fact::Value::Missing`].
    pub required: bool,
}

/// How the text of a field becomes a [`crate::fact::Value`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldKind {
    /// A whole number.
    Int,
    /// A real number.
    Real,
    /// A string, hashed to a symbol.
    Text,
    /// A list of strings separated by `separator`, each hashed.
    List {
        /// The byte between list items.
        separator: u8,
    },
    /// A point in time.
    Time {
        /// How the text encodes the time.
        unit: TimeUnit,
    },
}

/// The encoding of a time field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeUnit {
    /// Whole seconds since the Unix epoch.
    Seconds,
    /// Whole milliseconds since the Unix epoch (truncated to seconds).
    Milliseconds,
    /// An RFC 3339 date and time with an offset, such as `2026-01-01T09:30:00Z` (fractions of a
    /// second are truncated).
    Rfc3339,
}

/// Which facts are examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExamplePlan {
    /// The source whose facts are examples.
    pub source: SourceId,
    /// The field that identifies an example, if any; otherwise its position in the file does.
    pub id_field: Option<usize>,
    /// The field whose symbol partitions training across workers, typically the entity the
    /// example is about (the dog that posts, the user who rates); without one, examples are
    /// spread across workers by id.
    pub entity_field: Option<usize>,
    /// A field holding the ground-truth probability of the label, for generated data.
    pub truth_field: Option<usize>,
}

/// How an example's label is derived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LabelPlan {
    /// Positive when a numeric field of the example is at least `at_least`. Known at once.
    Threshold {
        /// The example field.
        field: usize,
        /// The threshold.
        at_least: f64,
    },
    /// Positive when at least `at_least` facts counted by an aggregate arrive within
    /// `within_secs` of the example. Known `within_secs` after the example.
    CountWithin {
        /// Index into [`Plan::aggregates`] of the count, keyed by the example's id field.
        aggregate: usize,
        /// The delay after which the label is known.
        within_secs: u64,
        /// The count that makes the label positive.
        at_least: i64,
    },
}

impl LabelPlan {
    /// How long after an example its label is known.
    pub fn delay_secs(&self) -> u64 {
        match self {
            LabelPlan::Threshold { .. } => 0,
            LabelPlan::CountWithin { within_secs, .. } => *within_secs,
        }
    }
}

/// One feature of an example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeaturePlan {
    /// The feature's name.
    pub name: String,
    /// The hashing namespace symbol: the hash of the spec's `namespace`, by default of the
    /// name. Categorical features that share a namespace share their levels' weights.
    pub namespace: Symbol,
    /// What the feature reads.
    pub kind: FeatureKind,
    /// How a numeric value is transformed before it reaches the model.
    pub transform: Transform,
}

/// What a feature reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FeatureKind {
    /// One coordinate per level of a text or list field of the example.
    Categorical {
        /// The example field.
        field: usize,
    },
    /// The hour of day (UTC) of the example's event time, as a categorical level.
    HourOfDay,
    /// A numeric field of the example.
    Numeric {
        /// The example field.
        field: usize,
    },
    /// An aggregate of facts looked up as it stood just before the example.
    Aggregate {
        /// Index into [`Plan::aggregates`].
        aggregate: usize,
    },
    /// One coordinate per pair of levels of two other features (categorical, hour of day, or
    /// bucketized), such as user × item genre.
    Cross {
        /// Indexes into [`Plan::features`] of the two crossed features.
        of: [usize; 2],
    },
}

/// How the value of a numeric or aggregate feature reaches the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Transform {
    /// The value as it is.
    Identity,
    /// `ln(1 + max(value, 0))`.
    Log1p,
    /// `(value - mean) / sd`, with the mean and standard deviation of every value of the
    /// field read before the example (point in time); 0 while fewer than two values were read
    /// or they were all equal.
    Standardize {
        /// Index into [`Plan::aggregates`] of the global count and sum of the field.
        sum: usize,
        /// Index into [`Plan::aggregates`] of the global count and sum of squares.
        squares: usize,
    },
    /// One coordinate per bucket, set to 1 for the bucket the value falls in: bucket `i`
    /// holds the values with exactly `i` edges at or below them.
    Bucketize {
        /// Bucket edges, strictly ascending.
        edges: Vec<f64>,
    },
}

impl Transform {
    /// The bucket a value falls in: how many edges are at or below it.
    pub fn bucket(edges: &[f64], value: f64) -> usize {
        edges.partition_point(|&edge| edge <= value)
    }
}

/// Standardises `value` by the count, sum and sum of squares of the values before it;
/// 0 when fewer than two values were seen or their variance is 0.
pub fn standardize(value: f64, count: f64, sum: f64, sum_of_squares: f64) -> f64 {
    if count < 2.0 {
        return 0.0;
    }
    let mean = sum / count;
    let variance = sum_of_squares / count - mean * mean;
    // fixed-point rounding can leave a tiny variance where every value was equal
    if variance <= 1e-9 {
        return 0.0;
    }
    (value - mean) / variance.sqrt()
}

/// An aggregate kept incrementally over a source, keyed by one of its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggregatePlan {
    /// A name for logs and errors.
    pub name: String,
    /// The source aggregated.
    pub source: SourceId,
    /// The field of the source that keys the aggregate; `None` for a global aggregate, whose
    /// one key is [`GLOBAL_KEY`].
    pub key_field: Option<usize>,
    /// Re-keys the source's facts through another source first.
    pub via: Option<Via>,
    /// What is aggregated.
    pub function: Function,
    /// When set, only the facts of a window of event time count.
    pub window: Option<Window>,
    /// Who reads the aggregate.
    pub used_by: AggregateUse,
}

/// A window of event time, relative to the instant an aggregate is read as of.
///
/// An aggregate read as of `t` sees facts strictly before `t`; a window narrows those further.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    /// The facts of the last `secs` seconds: event times in `[t - secs, t)`.
    Sliding {
        /// The window's length.
        secs: u64,
    },
    /// The facts of the current tumbling window: event times `e < t` in the same window
    /// `[k * secs, (k + 1) * secs)` as the last instant read, `t - 1`.
    Tumbling {
        /// The window's length.
        secs: u64,
    },
}

impl Window {
    /// When a fact with event time `event_time` leaves the window.
    pub fn expiry(self, event_time: Time) -> Time {
        match self {
            Window::Sliding { secs } => event_time.saturating_add(secs),
            Window::Tumbling { secs } => (event_time / secs).saturating_add(1).saturating_mul(secs),
        }
    }
}

/// Re-keying through another source: each fact's key is replaced by the `value_field` of the
/// facts of `source` whose `key_field` equals it (for example, a like's post by the post's dog).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Via {
    /// The source to look through.
    pub source: SourceId,
    /// Its field that matches the aggregated fact's key.
    pub key_field: usize,
    /// Its field that becomes the new key.
    pub value_field: usize,
}

/// What an aggregate computes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Function {
    /// The number of facts.
    Count,
    /// The sum of a numeric field over facts where it is present.
    Sum {
        /// The summed field of the aggregated source.
        field: usize,
    },
    /// The mean of a numeric field over facts where it is present; 0 when there are none.
    Mean {
        /// The averaged field of the aggregated source.
        field: usize,
    },
    /// The number of distinct values of a field (each level of a list counts); 0 when there
    /// are none.
    Distinct {
        /// The field whose values are counted.
        field: usize,
    },
    /// The numeric field of the fact with the greatest event time (ties go to the greatest
    /// fact id, then the greatest value); 0 when there is none.
    Last {
        /// The field read.
        field: usize,
    },
    /// The sum of the squares of a numeric field, for standardisation; not a spec function.
    SumOfSquares {
        /// The field squared.
        field: usize,
    },
}

impl Function {
    /// The field of the aggregated source the function reads, if any.
    pub fn field(&self) -> Option<usize> {
        match *self {
            Function::Count => None,
            Function::Sum { field }
            | Function::Mean { field }
            | Function::Distinct { field }
            | Function::Last { field }
            | Function::SumOfSquares { field } => Some(field),
        }
    }
}

/// Who reads an aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggregateUse {
    /// A feature, looked up by the symbol of an example field.
    Feature {
        /// The example field whose symbol is matched against the aggregate's key.
        example_field: usize,
    },
    /// The label, looked up by the example's id field when the label is due.
    Label,
    /// A transform (standardisation), looked up under [`GLOBAL_KEY`].
    Global,
}

/// The learner and its hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPlan {
    /// The model's name, under which versions are published and served.
    pub name: String,
    /// The model has `2^bits` weights.
    pub bits: u32,
    /// The optimizer and its hyperparameters.
    pub optimizer: OptimizerPlan,
    /// How the weights of coordinates that several workers changed in a round are merged.
    pub merge: WeightMerge,
    /// Indexes into [`Plan::features`] of the features this model reads, ascending; `None`
    /// for all of them. A cross reads its crossed features' levels whether or not they are
    /// in the list.
    #[serde(default)]
    pub features: Option<Vec<usize>>,
}

impl ModelPlan {
    /// Whether the model reads feature `index` of the plan.
    pub fn reads(&self, index: usize) -> bool {
        self.features
            .as_ref()
            .is_none_or(|features| features.binary_search(&index).is_ok())
    }
}

/// How published models are served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServingPlan {
    /// How many recent versions the serving arrangement holds.
    pub keep_versions: usize,
}

/// An exact incremental ridge regression over numeric fields of the example source.
///
/// Its sufficient statistics are kept exactly, in fixed point, so a retraction withdraws
/// exactly what the fact added, and the weights are the same on every worker layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactPlan {
    /// The regression's name, for outputs.
    pub name: String,
    /// The example field predicted.
    pub target_field: usize,
    /// The example fields it is predicted from, in weight order; a missing value counts as 0.
    pub input_fields: Vec<usize>,
    /// Whether a constant input of 1 follows the fields, as the last weight.
    pub intercept: bool,
    /// The ridge penalty on every weight, the intercept's included; positive, so the system
    /// is solvable before any data and with collinear inputs.
    pub l2: f64,
}

impl ExactPlan {
    /// The most weights an exact regression may have: its statistics grow as their square.
    pub const MAX_WEIGHTS: usize = 64;

    /// The number of weights: one per input, and the intercept.
    pub fn weights(&self) -> usize {
        self.input_fields.len() + usize::from(self.intercept)
    }
}
