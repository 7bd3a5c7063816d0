//! Featurisation: an event, with its aggregates looked up, becomes the sparse vector a model
//! scores.
//!
//! Training and serving both call [`featurize`], so they cannot disagree on what a feature
//! means.

use crate::event::Event;
use crate::fact::{Real, Value};
use crate::fixed::FIXED_POINT;
use crate::hashing::{BIAS, coordinate, pair};
use crate::learn::logistic::Features;
use crate::plan::{FeatureKind, FeaturePlan, Function, Plan, Transform, standardize};

/// The values of an event's aggregate features, by name, before any transform.
pub fn aggregate_values(plan: &Plan, event: &Event) -> Vec<(String, Real)> {
    plan.features
        .iter()
        .filter_map(|feature| match feature.kind {
            FeatureKind::Aggregate { aggregate } => Some((
                feature.name.clone(),
                Real(aggregate_value(plan, event, aggregate)),
            )),
            _ => None,
        })
        .collect()
}

/// The value of one aggregate for an event: a count, a sum, a mean, a distinct count or a
/// last value (0 when nothing counts).
fn aggregate_value(plan: &Plan, event: &Event, aggregate: usize) -> f64 {
    let (count, sum) = event.aggregates.get(aggregate).copied().unwrap_or((0, 0));
    match plan.aggregates[aggregate].function {
        Function::Count | Function::Distinct { .. } => count as f64,
        Function::Sum { .. } | Function::Last { .. } | Function::SumOfSquares { .. } => {
            sum as f64 / FIXED_POINT
        }
        Function::Mean { .. } if count > 0 => sum as f64 / FIXED_POINT / count as f64,
        Function::Mean { .. } => 0.0,
    }
}

/// The raw value of a numeric or aggregate feature, before its transform; `None` when the
/// example's field is missing, or for a feature of another kind.
fn numeric_value(plan: &Plan, event: &Event, kind: &FeatureKind) -> Option<f64> {
    match kind {
        FeatureKind::Numeric { field } => event.row.get(*field).and_then(Value::number),
        FeatureKind::Aggregate { aggregate } => Some(aggregate_value(plan, event, *aggregate)),
        _ => None,
    }
}

/// The transformed value of a numeric feature (not bucketized).
fn transformed(event: &Event, transform: &Transform, value: f64) -> f64 {
    match transform {
        Transform::Identity | Transform::Bucketize { .. } => value,
        Transform::Log1p => value.max(0.0).ln_1p(),
        Transform::Standardize { sum, squares } => {
            let (count, sum) = event.aggregates.get(*sum).copied().unwrap_or((0, 0));
            let squares = event.aggregates.get(*squares).map_or(0, |accum| accum.1);
            standardize(
                value,
                count as f64,
                sum as f64 / FIXED_POINT,
                squares as f64 / FIXED_POINT,
            )
        }
    }
}

/// The levels of a feature that has levels: a categorical field's symbols, the hour of day,
/// or the bucket of a bucketized value. Empty for other features and missing fields.
fn levels(plan: &Plan, event: &Event, feature: &FeaturePlan) -> Vec<u64> {
    match &feature.kind {
        FeatureKind::Categorical { field } => match event.row.get(*field) {
            Some(Value::List(levels)) => levels.clone(),
            Some(value) => value.symbol().into_iter().collect(),
            None => Vec::new(),
        },
        FeatureKind::HourOfDay => vec![(event.time / 3600) % 24],
        FeatureKind::Numeric { .. } | FeatureKind::Aggregate { .. } => {
            match (
                &feature.transform,
                numeric_value(plan, event, &feature.kind),
            ) {
                (Transform::Bucketize { edges }, Some(value)) if !value.is_nan() => {
                    vec![Transform::bucket(edges, value) as u64]
                }
                _ => Vec::new(),
            }
        }
        FeatureKind::Cross { .. } => Vec::new(),
    }
}

/// The sparse feature vector of an event: the intercept, then every feature of the plan that
/// the plan's model reads.
///
/// Levels never seen in training have zero weight, so an unknown dog or a new hashtag moves
/// the prediction by nothing rather than failing. A numeric value that is zero, not finite, or
/// beyond the range of `f32` adds no coordinate (an example whose value, read as it is, is
/// beyond `f32` is also a dead letter: see [`super::examples::example_errors`]).
pub fn featurize(plan: &Plan, event: &Event) -> Features {
    let bits = plan.model.bits;
    let mut features = vec![(BIAS, 1.0)];
    let read = plan
        .features
        .iter()
        .enumerate()
        .filter(|(index, _)| plan.model.reads(*index));
    for (_, feature) in read {
        let namespace = feature.namespace;
        match &feature.kind {
            FeatureKind::Categorical { .. } | FeatureKind::HourOfDay => {
                features.extend(
                    levels(plan, event, feature)
                        .into_iter()
                        .map(|level| (coordinate(namespace, level, bits), 1.0)),
                );
            }
            FeatureKind::Numeric { .. } | FeatureKind::Aggregate { .. } => {
                if let Transform::Bucketize { .. } = feature.transform {
                    features.extend(
                        levels(plan, event, feature)
                            .into_iter()
                            .map(|level| (coordinate(namespace, level, bits), 1.0)),
                    );
                } else if let Some(value) = numeric_value(plan, event, &feature.kind) {
                    let value = transformed(event, &feature.transform, value);
                    // a value beyond `f32` would reach the model as an infinity
                    if value.is_finite() && value != 0.0 && (value as f32).is_finite() {
                        features.push((coordinate(namespace, 0, bits), value as f32));
                    }
                }
            }
            FeatureKind::Cross { of } => {
                let first = levels(plan, event, &plan.features[of[0]]);
                let second = levels(plan, event, &plan.features[of[1]]);
                for &a in &first {
                    for &b in &second {
                        features.push((coordinate(namespace, pair(a, b), bits), 1.0));
                    }
                }
            }
        }
    }
    features
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::Symbol;
    use crate::hashing::symbol;
    use crate::plan::*;

    const BITS: u32 = 18;

    /// Ratings `(user, rating, time)`; aggregate 0 is the user's mean rating, aggregates 1 and
    /// 2 the global sum and sum of squares of ratings, as standardisation reads them.
    fn plan(features: Vec<FeaturePlan>) -> Plan {
        let field = |name: &str, kind| FieldPlan {
            name: name.into(),
            kind,
            required: false,
        };
        let global = |function| AggregatePlan {
            name: "global".into(),
            source: 0,
            key_field: None,
            via: None,
            function,
            window: None,
            used_by: AggregateUse::Global,
        };
        Plan {
            name: "featurize".into(),
            tick_secs: 60,
            sources: vec![SourcePlan {
                name: "ratings".into(),
                paths: vec![],
                glob: None,
                format: Format::Tsv,
                header: false,
                fields: vec![
                    field("user", FieldKind::Text),
                    field("rating", FieldKind::Int),
                    field(
                        "time",
                        FieldKind::Time {
                            unit: TimeUnit::Seconds,
                        },
                    ),
                ],
                time_field: Some(2),
                lateness_secs: 0,
                late: LatePolicy::Drop,
                key_fields: vec![],
                op_field: None,
                corrects: None,
            }],
            examples: ExamplePlan {
                source: 0,
                id_field: None,
                entity_field: Some(0),
                truth_field: None,
            },
            label: LabelPlan::Threshold {
                field: 1,
                at_least: 4.0,
            },
            features,
            aggregates: vec![
                AggregatePlan {
                    name: "user_mean".into(),
                    source: 0,
                    key_field: Some(0),
                    via: None,
                    function: Function::Mean { field: 1 },
                    window: None,
                    used_by: AggregateUse::Feature { example_field: 0 },
                },
                global(Function::Sum { field: 1 }),
                global(Function::SumOfSquares { field: 1 }),
            ],
            model: ModelPlan {
                name: "m".into(),
                bits: BITS,
                optimizer: crate::learn::optimizer::OptimizerPlan::AdaGrad(
                    crate::learn::adagrad::AdaGradHyper {
                        learning_rate: 0.1,
                        l2: 0.0,
                    },
                ),
                merge: crate::learn::optimizer::WeightMerge::Average,
                features: None,
            },
            challengers: Vec::new(),
            serving: ServingPlan { keep_versions: 1 },
            exact: None,
        }
    }

    fn feature(
        name: &str,
        namespace: &str,
        kind: FeatureKind,
        transform: Transform,
    ) -> FeaturePlan {
        FeaturePlan {
            name: name.into(),
            namespace: symbol(namespace.as_bytes()),
            kind,
            transform,
        }
    }

    /// A rating by `u1` of `rating` at time 7200, with the user's mean so far of `user_mean`
    /// over 2 ratings, and past ratings 1, 2 and 3 overall.
    fn event(plan: &Plan, rating: i64, user_mean: f64) -> Event {
        let row = vec![
            Value::Text(symbol(b"u1")),
            Value::Int(rating),
            Value::Time(7200),
        ];
        let mut event = Event::new(plan, 1, 7200, 7200, row);
        event.aggregates[0] = (2, (2.0 * user_mean * FIXED_POINT) as i64);
        event.aggregates[1] = (3, 6_000_000);
        event.aggregates[2] = (3, 14_000_000);
        event
    }

    fn ns(name: &str) -> Symbol {
        symbol(name.as_bytes())
    }

    #[test]
    fn bucketize_sets_one_coordinate_per_bucket() {
        let edges = vec![2.0, 3.5];
        assert_eq!(Transform::bucket(&edges, 1.0), 0);
        assert_eq!(
            Transform::bucket(&edges, 2.0),
            1,
            "an edge opens its bucket"
        );
        assert_eq!(Transform::bucket(&edges, 3.4), 1);
        assert_eq!(Transform::bucket(&edges, 5.0), 2);
        let plan = plan(vec![feature(
            "user_mean",
            "user_mean",
            FeatureKind::Aggregate { aggregate: 0 },
            Transform::Bucketize { edges },
        )]);
        let features = featurize(&plan, &event(&plan, 5, 3.0));
        assert_eq!(
            features,
            vec![(BIAS, 1.0), (coordinate(ns("user_mean"), 1, BITS), 1.0)]
        );
        let features = featurize(&plan, &event(&plan, 5, 4.5));
        assert_eq!(features[1], (coordinate(ns("user_mean"), 2, BITS), 1.0));
    }

    #[test]
    fn standardize_uses_the_mean_and_spread_of_past_values() {
        let standardized = feature(
            "rating",
            "rating",
            FeatureKind::Numeric { field: 1 },
            Transform::Standardize { sum: 1, squares: 2 },
        );
        let plan = plan(vec![standardized]);
        // past ratings 1, 2, 3: mean 2, variance 2/3; (5 - 2) / sqrt(2/3) = 3.674234614...
        let features = featurize(&plan, &event(&plan, 5, 3.0));
        assert_eq!(features.len(), 2);
        assert_eq!(features[1].0, coordinate(ns("rating"), 0, BITS));
        assert!((f64::from(features[1].1) - 3.674_234_614_174_767).abs() < 1e-6);
        // equal to the mean: nothing to say
        assert_eq!(featurize(&plan, &event(&plan, 2, 3.0)).len(), 1);
        // fewer than two past values: no spread yet
        let mut early = event(&plan, 5, 3.0);
        early.aggregates[1] = (1, 1_000_000);
        early.aggregates[2] = (1, 1_000_000);
        assert_eq!(featurize(&plan, &early).len(), 1);
        assert_eq!(
            standardize(4.0, 4.0, 8.0, 16.0),
            0.0,
            "all equal: no spread"
        );
    }

    #[test]
    fn a_cross_hashes_each_pair_of_levels() {
        let user = feature(
            "user",
            "user",
            FeatureKind::Categorical { field: 0 },
            Transform::Identity,
        );
        let bucketed = feature(
            "user_mean",
            "user_mean",
            FeatureKind::Aggregate { aggregate: 0 },
            Transform::Bucketize {
                edges: vec![2.0, 3.5],
            },
        );
        let cross = feature(
            "user_x_mean",
            "user_x_mean",
            FeatureKind::Cross { of: [0, 1] },
            Transform::Identity,
        );
        let plan = plan(vec![user, bucketed, cross]);
        let features = featurize(&plan, &event(&plan, 5, 3.0));
        assert_eq!(
            features,
            vec![
                (BIAS, 1.0),
                (coordinate(ns("user"), symbol(b"u1"), BITS), 1.0),
                (coordinate(ns("user_mean"), 1, BITS), 1.0),
                (
                    coordinate(ns("user_x_mean"), pair(symbol(b"u1"), 1), BITS),
                    1.0
                ),
            ]
        );
    }

    #[test]
    fn features_in_one_namespace_share_coordinates() {
        let shared = |name: &str| {
            feature(
                name,
                "people",
                FeatureKind::Categorical { field: 0 },
                Transform::Identity,
            )
        };
        let plan = plan(vec![shared("author"), shared("viewer")]);
        let features = featurize(&plan, &event(&plan, 5, 3.0));
        assert_eq!(features.len(), 3);
        assert_eq!(features[1], features[2]);
        assert_eq!(features[1].0, coordinate(ns("people"), symbol(b"u1"), BITS));
    }
}
