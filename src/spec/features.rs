//! `[[features]]`: what the model sees of an example. Fields as they are (categorical,
//! numeric), the hour of day, aggregates over a source (counts, sums, means, distinct values,
//! last values, windowed, reached through a `via` lookup), transforms, namespaces and crosses.

use dataflows::fact::Symbol;
use dataflows::hashing::symbol;
use dataflows::plan::{
    AggregatePlan, AggregateUse, FeatureKind, FeaturePlan, Function, SourcePlan, Transform, Via,
    Window,
};
use serde::Deserialize;

use super::{Checker, SpecError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FeatureSection {
    name: String,
    kind: String,
    field: Option<String>,
    source: Option<String>,
    key: Option<String>,
    example_key: Option<String>,
    via: Option<ViaSection>,
    function: Option<String>,
    window_secs: Option<u64>,
    window: Option<String>,
    transform: Option<String>,
    buckets: Option<Vec<f64>>,
    namespace: Option<String>,
    of: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViaSection {
    source: String,
    key: String,
    value: String,
}

/// A cross waiting for the features it names, which may come after it.
struct PendingCross {
    /// Where the cross is in the features.
    position: usize,
    /// `features[N].of`, for messages.
    key: String,
    /// The names of the two features crossed.
    of: Vec<String>,
}

/// The keys that only aggregates take.
const AGGREGATE_KEYS: [&str; 7] = [
    "source",
    "key",
    "example_key",
    "via",
    "function",
    "window_secs",
    "window",
];

impl Checker<'_> {
    /// Every feature, in the spec's order; the aggregates they read are appended to
    /// `aggregates`.
    pub(super) fn features(
        &self,
        sections: Vec<FeatureSection>,
        sources: &[SourcePlan],
        example_source: u16,
        aggregates: &mut Vec<AggregatePlan>,
    ) -> Result<Vec<FeaturePlan>, SpecError> {
        let mut features = Vec::new();
        let mut crosses = Vec::new();
        for (index, section) in sections.into_iter().enumerate() {
            let key = format!("features[{index}]");
            if features
                .iter()
                .any(|feature: &FeaturePlan| feature.name == section.name)
            {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("feature `{}` is defined twice", section.name),
                ));
            }
            let kind = self.feature_kind(&key, &section, sources, example_source, aggregates)?;
            if let FeatureKind::Cross { .. } = kind {
                // the two features are resolved once every feature is known
                crosses.push(PendingCross {
                    position: features.len(),
                    key: format!("{key}.of"),
                    of: section.of.clone().unwrap_or_default(),
                });
            }
            let transform = self.transform(&key, &section, &kind, aggregates, example_source)?;
            let namespace = self.namespace(&key, &section, &kind, &transform)?;
            features.push(FeaturePlan {
                namespace,
                name: section.name,
                kind,
                transform,
            });
        }
        for cross in crosses {
            self.resolve_cross(&mut features, cross)?;
        }
        Ok(features)
    }

    /// What a feature reads; a cross is a placeholder until [`Checker::resolve_cross`].
    fn feature_kind(
        &self,
        key: &str,
        section: &FeatureSection,
        sources: &[SourcePlan],
        example_source: u16,
        aggregates: &mut Vec<AggregatePlan>,
    ) -> Result<FeatureKind, SpecError> {
        match section.kind.as_str() {
            "categorical" | "numeric" => {
                let field_name = section.field.as_deref().ok_or_else(|| {
                    self.invalid(format!("{key}.field"), "is required for this kind")
                })?;
                let field =
                    self.find_field(sources, &format!("{key}.field"), example_source, field_name)?;
                self.reject_keys(key, section, &AGGREGATE_KEYS)?;
                self.reject_keys(key, section, &["of"])?;
                if section.kind == "categorical" {
                    self.reject_keys(key, section, &["transform", "buckets"])?;
                    Ok(FeatureKind::Categorical { field })
                } else {
                    Ok(FeatureKind::Numeric { field })
                }
            }
            "hour_of_day" => {
                self.reject_keys(key, section, &AGGREGATE_KEYS)?;
                self.reject_keys(key, section, &["field", "of", "transform", "buckets"])?;
                Ok(FeatureKind::HourOfDay)
            }
            "aggregate" => {
                self.reject_keys(key, section, &["of"])?;
                let aggregate = self.aggregate(key, section, sources, example_source)?;
                aggregates.push(aggregate);
                Ok(FeatureKind::Aggregate {
                    aggregate: aggregates.len() - 1,
                })
            }
            "cross" => {
                self.reject_keys(key, section, &AGGREGATE_KEYS)?;
                self.reject_keys(key, section, &["field", "transform", "buckets"])?;
                let of = section.of.as_ref().ok_or_else(|| {
                    self.invalid(format!("{key}.of"), "is required for kind `cross`")
                })?;
                if of.len() != 2 {
                    return Err(self.invalid(format!("{key}.of"), "must name exactly two features"));
                }
                Ok(FeatureKind::Cross { of: [0, 0] })
            }
            other => Err(self.invalid(
                format!("{key}.kind"),
                format!("unknown kind `{other}` (kinds: categorical, numeric, hour_of_day, aggregate, cross)"),
            )),
        }
    }

    /// The hashing namespace: the feature's own name, or a shared `namespace` for features
    /// with levels.
    fn namespace(
        &self,
        key: &str,
        section: &FeatureSection,
        kind: &FeatureKind,
        transform: &Transform,
    ) -> Result<Symbol, SpecError> {
        let Some(namespace) = &section.namespace else {
            return Ok(symbol(section.name.as_bytes()));
        };
        let shared_level_space = match kind {
            FeatureKind::Categorical { .. }
            | FeatureKind::HourOfDay
            | FeatureKind::Cross { .. } => true,
            FeatureKind::Numeric { .. } | FeatureKind::Aggregate { .. } => {
                matches!(transform, Transform::Bucketize { .. })
            }
        };
        if !shared_level_space {
            return Err(self.invalid(
                format!("{key}.namespace"),
                "only features with levels (categorical, hour_of_day, cross, bucketized) take a namespace; a numeric value owns one coordinate",
            ));
        }
        if namespace.is_empty() {
            return Err(self.invalid(format!("{key}.namespace"), "must not be empty"));
        }
        Ok(symbol(namespace.as_bytes()))
    }

    /// The two features a cross names: each must exist and have levels.
    fn resolve_cross(
        &self,
        features: &mut [FeaturePlan],
        cross: PendingCross,
    ) -> Result<(), SpecError> {
        let mut of = [0; 2];
        for (slot, name) in cross.of.iter().enumerate() {
            let found = features
                .iter()
                .position(|feature| &feature.name == name)
                .ok_or_else(|| self.invalid(&cross.key, format!("unknown feature `{name}`")))?;
            let feature = &features[found];
            let has_levels = match feature.kind {
                FeatureKind::Categorical { .. } | FeatureKind::HourOfDay => true,
                FeatureKind::Numeric { .. } | FeatureKind::Aggregate { .. } => {
                    matches!(feature.transform, Transform::Bucketize { .. })
                }
                FeatureKind::Cross { .. } => false,
            };
            if !has_levels {
                return Err(self.invalid(
                    &cross.key,
                    format!("feature `{name}` has no levels to cross: cross categorical, hour_of_day or bucketized features"),
                ));
            }
            of[slot] = found;
        }
        features[cross.position].kind = FeatureKind::Cross { of };
        Ok(())
    }

    /// The aggregate a feature of kind `aggregate` reads.
    fn aggregate(
        &self,
        key: &str,
        section: &FeatureSection,
        sources: &[SourcePlan],
        example_source: u16,
    ) -> Result<AggregatePlan, SpecError> {
        let source_name = section.source.as_deref().ok_or_else(|| {
            self.invalid(format!("{key}.source"), "is required for kind `aggregate`")
        })?;
        let source = self.find_source(sources, &format!("{key}.source"), source_name)?;
        let key_name = section.key.as_deref().ok_or_else(|| {
            self.invalid(format!("{key}.key"), "is required for kind `aggregate`")
        })?;
        let key_field = self.find_field(sources, &format!("{key}.key"), source, key_name)?;
        let via = match &section.via {
            None => None,
            Some(via) => {
                let via_source =
                    self.find_source(sources, &format!("{key}.via.source"), &via.source)?;
                Some(Via {
                    source: via_source,
                    key_field: self.find_field(
                        sources,
                        &format!("{key}.via.key"),
                        via_source,
                        &via.key,
                    )?,
                    value_field: self.find_field(
                        sources,
                        &format!("{key}.via.value"),
                        via_source,
                        &via.value,
                    )?,
                })
            }
        };
        // the example field matched against the key: `example_key`, else the field the key
        // ends up as (the via value, or the key itself)
        let matched_name = match (&section.example_key, &section.via) {
            (Some(name), _) => name.as_str(),
            (None, Some(via)) => via.value.as_str(),
            (None, None) => key_name,
        };
        let example_field = self.find_field(
            sources,
            &format!("{key}.example_key"),
            example_source,
            matched_name,
        )?;
        let function = self.aggregate_function(key, section, sources, source)?;
        let window = self.window(key, section)?;
        Ok(AggregatePlan {
            name: section.name.clone(),
            source,
            key_field: Some(key_field),
            via,
            function,
            window,
            used_by: AggregateUse::Feature { example_field },
        })
    }

    /// What an aggregate computes over the facts of `source`, `count` when not given.
    fn aggregate_function(
        &self,
        key: &str,
        section: &FeatureSection,
        sources: &[SourcePlan],
        source: u16,
    ) -> Result<Function, SpecError> {
        let value_field = |function: &str| -> Result<usize, SpecError> {
            let name = section.field.as_deref().ok_or_else(|| {
                self.invalid(
                    format!("{key}.field"),
                    format!("is required by function `{function}`"),
                )
            })?;
            self.find_field(sources, &format!("{key}.field"), source, name)
        };
        match section.function.as_deref().unwrap_or("count") {
            "count" => {
                if section.field.is_some() {
                    return Err(self.invalid(
                        format!("{key}.field"),
                        "function `count` counts facts; it reads no field",
                    ));
                }
                Ok(Function::Count)
            }
            "sum" => Ok(Function::Sum {
                field: value_field("sum")?,
            }),
            "mean" => Ok(Function::Mean {
                field: value_field("mean")?,
            }),
            "distinct" => Ok(Function::Distinct {
                field: value_field("distinct")?,
            }),
            "last" => Ok(Function::Last {
                field: value_field("last")?,
            }),
            other => Err(self.invalid(
                format!("{key}.function"),
                format!("unknown function `{other}` (functions: count, sum, mean, distinct, last)"),
            )),
        }
    }

    /// An aggregate's window: sliding by default when `window_secs` is given, else none.
    fn window(&self, key: &str, section: &FeatureSection) -> Result<Option<Window>, SpecError> {
        if section.window_secs == Some(0) {
            return Err(self.invalid(format!("{key}.window_secs"), "must be at least 1 second"));
        }
        let window = match (section.window.as_deref(), section.window_secs) {
            (None, None) => None,
            (None | Some("sliding"), Some(secs)) => Some(Window::Sliding { secs }),
            (Some("tumbling"), Some(secs)) => Some(Window::Tumbling { secs }),
            (Some("sliding" | "tumbling"), None) => {
                return Err(self.invalid(
                    format!("{key}.window_secs"),
                    "is required with `window`: the window's length in seconds",
                ));
            }
            (Some(other), _) => {
                return Err(self.invalid(
                    format!("{key}.window"),
                    format!("unknown window `{other}` (windows: sliding, tumbling)"),
                ));
            }
        };
        Ok(window)
    }

    /// The transform of a feature; standardisation adds the global aggregates it reads.
    fn transform(
        &self,
        key: &str,
        section: &FeatureSection,
        kind: &FeatureKind,
        aggregates: &mut Vec<AggregatePlan>,
        example_source: u16,
    ) -> Result<Transform, SpecError> {
        let name = section.transform.as_deref().unwrap_or("identity");
        if section.buckets.is_some() && name != "bucketize" {
            return Err(self.invalid(
                format!("{key}.buckets"),
                "only applies with `transform = \"bucketize\"`",
            ));
        }
        match name {
            "identity" => Ok(Transform::Identity),
            "log1p" => Ok(Transform::Log1p),
            "bucketize" => {
                let edges = section.buckets.clone().ok_or_else(|| {
                    self.invalid(
                        format!("{key}.buckets"),
                        "is required by `transform = \"bucketize\"` (a list of edges)",
                    )
                })?;
                if edges.is_empty() {
                    return Err(self.invalid(format!("{key}.buckets"), "needs at least one edge"));
                }
                if edges.iter().any(|edge| !edge.is_finite())
                    || edges.windows(2).any(|pair| pair[0] >= pair[1])
                {
                    return Err(self.invalid(
                        format!("{key}.buckets"),
                        "edges must be finite and strictly ascending",
                    ));
                }
                Ok(Transform::Bucketize { edges })
            }
            "standardize" => {
                // the field whose past values give the mean and the spread
                let (source, field) = match kind {
                    FeatureKind::Numeric { field } => (example_source, *field),
                    FeatureKind::Aggregate { aggregate } => {
                        let aggregate = &aggregates[*aggregate];
                        match aggregate.function {
                            Function::Mean { field } | Function::Last { field } => {
                                (aggregate.source, field)
                            }
                            _ => {
                                return Err(self.invalid(
                                    format!("{key}.transform"),
                                    "`standardize` applies to aggregates on the scale of their field (`mean`, `last`); use `log1p` or `bucketize` for counts and sums",
                                ));
                            }
                        }
                    }
                    _ => {
                        return Err(self.invalid(
                            format!("{key}.transform"),
                            "`standardize` applies to numeric and aggregate features",
                        ));
                    }
                };
                let mut global = |function: Function, suffix: &str| {
                    let plan = AggregatePlan {
                        name: format!("{}.{suffix}", section.name),
                        source,
                        key_field: None,
                        via: None,
                        function,
                        window: None,
                        used_by: AggregateUse::Global,
                    };
                    // features standardising the same field share the aggregates
                    match aggregates.iter().position(|existing| {
                        existing.used_by == AggregateUse::Global
                            && existing.source == plan.source
                            && existing.function == plan.function
                    }) {
                        Some(index) => index,
                        None => {
                            aggregates.push(plan);
                            aggregates.len() - 1
                        }
                    }
                };
                let sum = global(Function::Sum { field }, "sum");
                let squares = global(Function::SumOfSquares { field }, "squares");
                Ok(Transform::Standardize { sum, squares })
            }
            other => Err(self.invalid(
                format!("{key}.transform"),
                format!(
                    "unknown transform `{other}` (transforms: identity, log1p, standardize, bucketize)"
                ),
            )),
        }
    }

    /// An error naming the first of `names` given, which the feature's kind does not take.
    fn reject_keys(
        &self,
        key: &str,
        section: &FeatureSection,
        names: &[&str],
    ) -> Result<(), SpecError> {
        for &name in names {
            let present = match name {
                "field" => section.field.is_some(),
                "source" => section.source.is_some(),
                "key" => section.key.is_some(),
                "example_key" => section.example_key.is_some(),
                "via" => section.via.is_some(),
                "function" => section.function.is_some(),
                "window_secs" => section.window_secs.is_some(),
                "transform" => section.transform.is_some(),
                "window" => section.window.is_some(),
                "buckets" => section.buckets.is_some(),
                "of" => section.of.is_some(),
                _ => false,
            };
            if present {
                return Err(self.invalid(
                    format!("{key}.{name}"),
                    format!("does not apply to kind `{}`", section.kind),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use dataflows::hashing::symbol;
    use dataflows::plan::{AggregateUse, FeatureKind, Function, Transform, Window};

    use crate::spec::tests::root;
    use crate::spec::{Spec, parse};

    /// The sniffable spec with one more feature table appended.
    fn with_feature(table: &str) -> Result<Spec, String> {
        let path = root().join("pipelines/sniffable.toml");
        let text = std::fs::read_to_string(&path).expect("shipped spec");
        parse(&format!("{text}\n[[features]]\n{table}\n"), &path, None)
            .map_err(|error| error.to_string())
    }

    fn rejected(table: &str) -> String {
        match with_feature(table) {
            Ok(_) => panic!("accepted: {table}"),
            Err(message) => message,
        }
    }

    #[test]
    fn feature_families_are_read() {
        let spec = with_feature(
            "name = \"distinct_likers\"\nkind = \"aggregate\"\nsource = \"likes\"\nkey = \"post\"\nvia = { source = \"posts\", key = \"post\", value = \"dog\" }\nfunction = \"distinct\"\nfield = \"dog\"\nwindow = \"tumbling\"\nwindow_secs = 86400\nnamespace = \"likers\"\ntransform = \"bucketize\"\nbuckets = [1, 5, 25]\n\n[[features]]\nname = \"dog_x_hour\"\nkind = \"cross\"\nof = [\"dog\", \"hour\"]",
        )
        .unwrap_or_else(|message| panic!("{message}"));
        let plan = spec.plan;
        let feature = &plan.features[plan.features.len() - 2];
        let FeatureKind::Aggregate { aggregate } = feature.kind else {
            panic!("not an aggregate: {feature:?}");
        };
        let distinct = &plan.aggregates[aggregate];
        assert!(matches!(distinct.function, Function::Distinct { .. }));
        assert_eq!(distinct.window, Some(Window::Tumbling { secs: 86400 }));
        assert_eq!(feature.namespace, symbol(b"likers"));
        assert_eq!(
            feature.transform,
            Transform::Bucketize {
                edges: vec![1.0, 5.0, 25.0]
            }
        );
        let cross = plan.features.last().expect("the cross");
        assert_eq!(cross.kind, FeatureKind::Cross { of: [0, 2] });
    }

    #[test]
    fn standardize_adds_shared_global_aggregates() {
        let spec = with_feature(
            "name = \"score_z\"\nkind = \"numeric\"\nfield = \"truth_p\"\ntransform = \"standardize\"\n\n[[features]]\nname = \"score_z2\"\nkind = \"numeric\"\nfield = \"truth_p\"\ntransform = \"standardize\"",
        )
        .unwrap_or_else(|message| panic!("{message}"));
        let plan = spec.plan;
        let transforms: Vec<&Transform> = plan.features[plan.features.len() - 2..]
            .iter()
            .map(|feature| &feature.transform)
            .collect();
        assert_eq!(
            transforms[0], transforms[1],
            "one pair of aggregates for one field"
        );
        let Transform::Standardize { sum, squares } = transforms[0] else {
            panic!("not standardised: {:?}", transforms[0]);
        };
        assert_eq!(plan.aggregates[*sum].used_by, AggregateUse::Global);
        assert_eq!(plan.aggregates[*sum].key_field, None);
        assert!(matches!(
            plan.aggregates[*squares].function,
            Function::SumOfSquares { .. }
        ));
    }

    #[test]
    fn bad_feature_families_name_the_key() {
        let aggregate = "name = \"x\"\nkind = \"aggregate\"\nsource = \"posts\"\nkey = \"dog\"\n";
        let message = rejected(&format!(
            "{aggregate}function = \"median\"\nfield = \"dog\""
        ));
        assert!(message.contains("features[6].function`: unknown function `median` (functions: count, sum, mean, distinct, last)"), "{message}");
        let message = rejected(&format!("{aggregate}function = \"last\""));
        assert!(
            message.contains("features[6].field`: is required by function `last`"),
            "{message}"
        );
        let message = rejected(&format!(
            "{aggregate}window = \"hopping\"\nwindow_secs = 60"
        ));
        assert!(
            message.contains("features[6].window`: unknown window `hopping`"),
            "{message}"
        );
        let message = rejected(&format!("{aggregate}window = \"tumbling\""));
        assert!(
            message.contains("features[6].window_secs`: is required with `window`"),
            "{message}"
        );
        let message = rejected(&format!("{aggregate}transform = \"bucketize\""));
        assert!(
            message.contains("features[6].buckets`: is required"),
            "{message}"
        );
        let message = rejected(&format!(
            "{aggregate}transform = \"bucketize\"\nbuckets = [3, 1]"
        ));
        assert!(
            message.contains("features[6].buckets`: edges must be finite and strictly ascending"),
            "{message}"
        );
        let message = rejected(&format!("{aggregate}buckets = [1]"));
        assert!(
            message.contains("features[6].buckets`: only applies with `transform = \"bucketize\"`"),
            "{message}"
        );
        let message = rejected(&format!("{aggregate}transform = \"standardize\""));
        assert!(
            message.contains(
                "features[6].transform`: `standardize` applies to aggregates on the scale"
            ),
            "{message}"
        );
        let message = rejected(&format!("{aggregate}namespace = \"shared\""));
        assert!(
            message.contains("features[6].namespace`: only features with levels"),
            "{message}"
        );
        let message = rejected("name = \"x\"\nkind = \"cross\"\nof = [\"dog\", \"cat\"]");
        assert!(
            message.contains("features[6].of`: unknown feature `cat`"),
            "{message}"
        );
        let message = rejected("name = \"x\"\nkind = \"cross\"\nof = [\"dog\", \"followers\"]");
        assert!(
            message.contains("features[6].of`: feature `followers` has no levels to cross"),
            "{message}"
        );
        let message = rejected("name = \"x\"\nkind = \"cross\"\nof = [\"dog\"]");
        assert!(
            message.contains("features[6].of`: must name exactly two features"),
            "{message}"
        );
        let message =
            rejected("name = \"x\"\nkind = \"cross\"\nof = [\"dog\", \"hour\"]\nfield = \"dog\"");
        assert!(
            message.contains("features[6].field`: does not apply to kind `cross`"),
            "{message}"
        );
    }
}
