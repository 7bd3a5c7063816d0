//! Pipeline specs: reading a TOML file into a checked [`Plan`].
//!
//! A new data set needs a new spec, not new Rust. Every mistake in a spec is reported with
//! the file, the key (`features[2].source`) and what is wrong with it, before anything runs.

use std::path::{Path, PathBuf};

use dataflows::hashing::symbol;
use dataflows::learn::adagrad::AdaGradHyper;
use dataflows::learn::ftrl::FtrlHyper;
use dataflows::learn::optimizer::{OptimizerPlan, WeightMerge};
use dataflows::learn::sgd::SgdHyper;
use dataflows::plan::{
    AggregatePlan, AggregateUse, ExactPlan, ExamplePlan, FeatureKind, FeaturePlan, FieldKind,
    FieldPlan, Format, Function, LabelPlan, LatePolicy, ModelPlan, Plan, ServingPlan, SourcePlan,
    TimeUnit, Transform, Via, Window,
};
use serde::Deserialize;

/// What can be wrong with a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{path}: cannot read the pipeline spec: {source}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has a key of the wrong type or an unknown key.
    #[error("{path}: {message}")]
    Syntax {
        /// The spec file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key has a value that makes no sense.
    #[error("{path}: `{key}`: {reason}")]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// The key, as a path (`features[2].source`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A checked spec: the plan to run and a hash of the text it came from.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The plan.
    pub plan: Plan,
    /// Hex XXH3 of the spec file's bytes; published models record it.
    pub hash: String,
    /// The spec file.
    pub path: PathBuf,
    /// The rules deciding which published version serves over HTTP (`[serving]`).
    pub supervisor: crate::serve::supervisor::SupervisorConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    pipeline: PipelineSection,
    #[serde(default)]
    sources: Vec<SourceSection>,
    examples: ExamplesSection,
    label: LabelSection,
    #[serde(default)]
    features: Vec<FeatureSection>,
    model: ModelSection,
    #[serde(default)]
    serving: ServingSection,
    exact: Option<ExactSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSection {
    name: String,
    tick_secs: u64,
    data_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    name: String,
    path: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    glob: Option<String>,
    format: String,
    #[serde(default)]
    header: bool,
    time: Option<String>,
    #[serde(default)]
    lateness_secs: u64,
    late: Option<String>,
    key: Option<Vec<String>>,
    op: Option<String>,
    corrects: Option<String>,
    fields: Vec<FieldSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSection {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    separator: Option<String>,
    unit: Option<String>,
    #[serde(default)]
    required: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExamplesSection {
    source: String,
    id: Option<String>,
    entity: Option<String>,
    truth: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelSection {
    kind: String,
    field: Option<String>,
    source: Option<String>,
    key: Option<String>,
    within_secs: Option<u64>,
    at_least: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeatureSection {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    name: String,
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default = "default_bits")]
    bits: u32,
    optimizer: Option<String>,
    merge: Option<String>,
    learning_rate: Option<f64>,
    l2: Option<f64>,
    alpha: Option<f64>,
    beta: Option<f64>,
    l1: Option<f64>,
    power_t: Option<f64>,
    adaptive: Option<bool>,
    normalized: Option<bool>,
    invariant: Option<bool>,
}

impl ModelSection {
    /// The hyperparameter keys given, by name.
    fn given(&self) -> [(&'static str, bool); 10] {
        [
            ("merge", self.merge.is_some()),
            ("learning_rate", self.learning_rate.is_some()),
            ("l2", self.l2.is_some()),
            ("alpha", self.alpha.is_some()),
            ("beta", self.beta.is_some()),
            ("l1", self.l1.is_some()),
            ("power_t", self.power_t.is_some()),
            ("adaptive", self.adaptive.is_some()),
            ("normalized", self.normalized.is_some()),
            ("invariant", self.invariant.is_some()),
        ]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExactSection {
    name: String,
    kind: String,
    target: String,
    #[serde(default)]
    inputs: Vec<String>,
    l2: f64,
    #[serde(default = "default_intercept")]
    intercept: bool,
}

fn default_intercept() -> bool {
    true
}

fn default_kind() -> String {
    "logistic".to_owned()
}
fn default_bits() -> u32 {
    18
}
/// AdaGrad's base rate when the spec gives none.
const ADAGRAD_LEARNING_RATE: f64 = 0.1;
/// FTRL-Proximal's defaults: `beta = 1` as McMahan et al. suggest; `alpha` of the order of
/// AdaGrad's useful rates on sparse ids.
const FTRL_ALPHA: f64 = 0.1;
const FTRL_BETA: f64 = 1.0;
/// Vowpal Wabbit's defaults: `-l 0.5`, `--power_t 0.5`.
const SGD_LEARNING_RATE: f64 = 0.5;
const SGD_POWER_T: f64 = 0.5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServingSection {
    #[serde(default = "default_keep_versions")]
    keep_versions: usize,
    promote_margin: Option<f64>,
    rollback_threshold: Option<f64>,
    window_epochs: Option<usize>,
    min_live_examples: Option<u64>,
}

impl Default for ServingSection {
    fn default() -> Self {
        ServingSection {
            keep_versions: default_keep_versions(),
            promote_margin: None,
            rollback_threshold: None,
            window_epochs: None,
            min_live_examples: None,
        }
    }
}

fn default_keep_versions() -> usize {
    3
}

/// The files matching a pattern, in name order.
fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let matches = glob::glob(pattern).map_err(|error| format!("not a valid pattern: {error}"))?;
    let mut paths = Vec::new();
    for entry in matches {
        let path = entry.map_err(|error| error.to_string())?;
        if path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Reads and checks the spec at `path`. Relative source paths are resolved against `data_dir`
/// when given, else against the spec's `pipeline.data_dir` (itself relative to the spec file),
/// else against the spec file's directory.
pub fn load(path: &Path, data_dir: Option<&Path>) -> Result<Spec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, data_dir)
}

/// Checks a spec's text; `path` is where it came from, for messages and relative paths.
pub fn parse(text: &str, path: &Path, data_dir: Option<&Path>) -> Result<Spec, SpecError> {
    let file: SpecFile = toml::from_str(text).map_err(|error| SpecError::Syntax {
        path: path.to_owned(),
        message: error.to_string().trim_end().to_owned(),
    })?;
    let checker = Checker { path };
    let spec_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = match (data_dir, &file.pipeline.data_dir) {
        (Some(dir), _) => dir.to_path_buf(),
        (None, Some(dir)) => spec_dir.join(dir),
        (None, None) => spec_dir,
    };
    let supervisor = checker.supervisor(&file.serving)?;
    let plan = checker.plan(file, &base)?;
    Ok(Spec {
        supervisor,
        plan,
        hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes())),
        path: path.to_owned(),
    })
}

struct Checker<'a> {
    path: &'a Path,
}

impl Checker<'_> {
    fn invalid(&self, key: impl Into<String>, reason: impl Into<String>) -> SpecError {
        SpecError::Invalid {
            path: self.path.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn plan(&self, file: SpecFile, base: &Path) -> Result<Plan, SpecError> {
        if file.pipeline.name.trim().is_empty() {
            return Err(self.invalid("pipeline.name", "must not be empty"));
        }
        if file.pipeline.tick_secs == 0 {
            return Err(self.invalid("pipeline.tick_secs", "must be at least 1 second"));
        }
        if file.sources.is_empty() {
            return Err(self.invalid("sources", "a pipeline needs at least one [[sources]] table"));
        }
        if file.sources.len() > usize::from(u16::MAX) {
            return Err(self.invalid("sources", "too many sources"));
        }
        let mut sources = Vec::new();
        let mut corrections: Vec<(usize, String)> = Vec::new();
        for (index, section) in file.sources.into_iter().enumerate() {
            if let Some(target) = &section.corrects {
                corrections.push((index, target.clone()));
            }
            let key = format!("sources[{index}]");
            if sources
                .iter()
                .any(|source: &SourcePlan| source.name == section.name)
            {
                return Err(self.invalid(
                    format!("{key}.name"),
                    format!("source `{}` is defined twice", section.name),
                ));
            }
            sources.push(self.source(&key, section, base)?);
        }
        for (index, target_name) in corrections {
            let key = format!("sources[{index}].corrects");
            let target = sources
                .iter()
                .position(|source| source.name == target_name)
                .ok_or_else(|| self.invalid(&key, format!("unknown source `{target_name}`")))?;
            if target == index {
                return Err(self.invalid(
                    &key,
                    "a source cannot correct itself; use `op` for retractions in the same source",
                ));
            }
            let names = |source: &SourcePlan| {
                source
                    .key_fields
                    .iter()
                    .map(|&field| source.fields[field].name.clone())
                    .collect::<Vec<_>>()
            };
            if sources[target].key_fields.is_empty() {
                return Err(self.invalid(
                    &key,
                    format!("source `{target_name}` has no `key`, so its facts cannot be named"),
                ));
            }
            if names(&sources[index]) != names(&sources[target]) {
                return Err(self.invalid(
                    format!("sources[{index}].key"),
                    format!(
                        "must name the same fields as the key of `{target_name}`: {}",
                        names(&sources[target]).join(", ")
                    ),
                ));
            }
            sources[index].corrects = Some(target as u16);
        }
        let names = sources
            .iter()
            .map(|source| source.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let find_source = |key: &str, name: &str| -> Result<u16, SpecError> {
            sources
                .iter()
                .position(|source| source.name == name)
                .map(|index| index as u16)
                .ok_or_else(|| {
                    self.invalid(key, format!("unknown source `{name}` (sources: {names})"))
                })
        };
        let find_field = |key: &str, source: u16, name: &str| -> Result<usize, SpecError> {
            let plan = &sources[usize::from(source)];
            plan.field(name).ok_or_else(|| {
                let fields = plan
                    .fields
                    .iter()
                    .map(|field| field.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.invalid(
                    key,
                    format!(
                        "source `{}` has no field `{name}` (fields: {fields})",
                        plan.name
                    ),
                )
            })
        };

        // examples
        let example_source = find_source("examples.source", &file.examples.source)?;
        let examples = ExamplePlan {
            source: example_source,
            id_field: file
                .examples
                .id
                .as_deref()
                .map(|name| find_field("examples.id", example_source, name))
                .transpose()?,
            entity_field: file
                .examples
                .entity
                .as_deref()
                .map(|name| find_field("examples.entity", example_source, name))
                .transpose()?,
            truth_field: file
                .examples
                .truth
                .as_deref()
                .map(|name| find_field("examples.truth", example_source, name))
                .transpose()?,
        };

        // features, and the aggregates they read
        let mut aggregates = Vec::new();
        let mut features = Vec::new();
        let mut crosses: Vec<(usize, String, Vec<String>)> = Vec::new();
        for (index, section) in file.features.into_iter().enumerate() {
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
            const AGGREGATE_KEYS: [&str; 7] = [
                "source",
                "key",
                "example_key",
                "via",
                "function",
                "window_secs",
                "window",
            ];
            let name = section.name.clone();
            let kind = match section.kind.as_str() {
                "categorical" | "numeric" => {
                    let field_name = section.field.as_deref().ok_or_else(|| {
                        self.invalid(format!("{key}.field"), "is required for this kind")
                    })?;
                    let field = find_field(&format!("{key}.field"), example_source, field_name)?;
                    self.reject_keys(&key, &section, &AGGREGATE_KEYS)?;
                    self.reject_keys(&key, &section, &["of"])?;
                    if section.kind == "categorical" {
                        self.reject_keys(&key, &section, &["transform", "buckets"])?;
                        FeatureKind::Categorical { field }
                    } else {
                        FeatureKind::Numeric { field }
                    }
                }
                "hour_of_day" => {
                    self.reject_keys(&key, &section, &AGGREGATE_KEYS)?;
                    self.reject_keys(&key, &section, &["field", "of", "transform", "buckets"])?;
                    FeatureKind::HourOfDay
                }
                "aggregate" => {
                    self.reject_keys(&key, &section, &["of"])?;
                    let aggregate =
                        self.aggregate(&key, &section, &find_source, &find_field, example_source)?;
                    aggregates.push(aggregate);
                    FeatureKind::Aggregate {
                        aggregate: aggregates.len() - 1,
                    }
                }
                "cross" => {
                    self.reject_keys(&key, &section, &AGGREGATE_KEYS)?;
                    self.reject_keys(&key, &section, &["field", "transform", "buckets"])?;
                    let of = section.of.clone().ok_or_else(|| {
                        self.invalid(format!("{key}.of"), "is required for kind `cross`")
                    })?;
                    if of.len() != 2 {
                        return Err(
                            self.invalid(format!("{key}.of"), "must name exactly two features")
                        );
                    }
                    crosses.push((features.len(), format!("{key}.of"), of));
                    // the two features are resolved once every feature is known
                    FeatureKind::Cross { of: [0, 0] }
                }
                other => {
                    return Err(self.invalid(
                        format!("{key}.kind"),
                        format!("unknown kind `{other}` (kinds: categorical, numeric, hour_of_day, aggregate, cross)"),
                    ));
                }
            };
            let transform =
                self.transform(&key, &section, &kind, &mut aggregates, example_source)?;
            let namespace = match &section.namespace {
                None => name.as_str(),
                Some(namespace) => {
                    let shared_level_space = match &kind {
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
                    namespace.as_str()
                }
            };
            features.push(FeaturePlan {
                namespace: symbol(namespace.as_bytes()),
                name,
                kind,
                transform,
            });
        }
        for (position, key, names) in crosses {
            let mut of = [0; 2];
            for (slot, name) in names.iter().enumerate() {
                let found = features
                    .iter()
                    .position(|feature| &feature.name == name)
                    .ok_or_else(|| self.invalid(&key, format!("unknown feature `{name}`")))?;
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
                        &key,
                        format!("feature `{name}` has no levels to cross: cross categorical, hour_of_day or bucketized features"),
                    ));
                }
                of[slot] = found;
            }
            features[position].kind = FeatureKind::Cross { of };
        }

        // the label
        let label = match file.label.kind.as_str() {
            "threshold" => {
                let field_name = file.label.field.as_deref().ok_or_else(|| {
                    self.invalid("label.field", "is required for kind `threshold`")
                })?;
                let field = find_field("label.field", example_source, field_name)?;
                let at_least = file
                    .label
                    .at_least
                    .ok_or_else(|| self.invalid("label.at_least", "is required"))?;
                if file.label.source.is_some()
                    || file.label.key.is_some()
                    || file.label.within_secs.is_some()
                {
                    return Err(self.invalid(
                        "label",
                        "kind `threshold` takes only `field` and `at_least`",
                    ));
                }
                LabelPlan::Threshold { field, at_least }
            }
            "count_within" => {
                let source_name = file.label.source.as_deref().ok_or_else(|| {
                    self.invalid("label.source", "is required for kind `count_within`")
                })?;
                let source = find_source("label.source", source_name)?;
                let key_name = file.label.key.as_deref().ok_or_else(|| {
                    self.invalid("label.key", "is required for kind `count_within`")
                })?;
                let key_field = find_field("label.key", source, key_name)?;
                let within_secs = file
                    .label
                    .within_secs
                    .ok_or_else(|| self.invalid("label.within_secs", "is required"))?;
                if within_secs == 0 {
                    return Err(self.invalid("label.within_secs", "must be at least 1 second"));
                }
                let at_least = file
                    .label
                    .at_least
                    .ok_or_else(|| self.invalid("label.at_least", "is required"))?;
                if at_least.fract() != 0.0 || at_least < 1.0 {
                    return Err(
                        self.invalid("label.at_least", "must be a whole number of at least 1")
                    );
                }
                let Some(id_field) = examples.id_field else {
                    return Err(self.invalid("examples.id", "is required by a `count_within` label, which counts facts by the example's id"));
                };
                // an example without an id could never be counted: it is malformed
                sources[usize::from(example_source)].fields[id_field].required = true;
                if file.label.field.is_some() {
                    return Err(self.invalid(
                        "label.field",
                        "kind `count_within` counts facts; it reads no field of the example",
                    ));
                }
                aggregates.push(AggregatePlan {
                    name: "label".to_owned(),
                    source,
                    key_field: Some(key_field),
                    via: None,
                    function: Function::Count,
                    window: None,
                    used_by: AggregateUse::Label,
                });
                LabelPlan::CountWithin {
                    aggregate: aggregates.len() - 1,
                    within_secs,
                    at_least: at_least as i64,
                }
            }
            other => {
                return Err(self.invalid(
                    "label.kind",
                    format!("unknown kind `{other}` (kinds: threshold, count_within)"),
                ));
            }
        };

        // the model
        if file.model.kind != "logistic" {
            return Err(self.invalid(
                "model.kind",
                format!("unknown kind `{}` (kinds: logistic)", file.model.kind),
            ));
        }
        if !(4..=28).contains(&file.model.bits) {
            return Err(self.invalid("model.bits", "must be between 4 and 28"));
        }
        let (optimizer, merge) = self.optimizer(&file.model)?;
        if file.serving.keep_versions == 0 {
            return Err(self.invalid("serving.keep_versions", "must be at least 1"));
        }
        let exact = file
            .exact
            .map(|section| self.exact(section, &sources[usize::from(example_source)]))
            .transpose()?;

        Ok(Plan {
            name: file.pipeline.name,
            tick_secs: file.pipeline.tick_secs,
            sources,
            examples,
            label,
            features,
            aggregates,
            model: ModelPlan {
                name: file.model.name,
                bits: file.model.bits,
                optimizer,
                merge,
            },
            serving: ServingPlan {
                keep_versions: file.serving.keep_versions,
            },
            exact,
        })
    }

    /// The supervisor's rules from `[serving]`, defaults for those not given.
    fn supervisor(
        &self,
        serving: &ServingSection,
    ) -> Result<crate::serve::supervisor::SupervisorConfig, SpecError> {
        let defaults = crate::serve::supervisor::SupervisorConfig::default();
        let config = crate::serve::supervisor::SupervisorConfig {
            promote_margin: serving.promote_margin.unwrap_or(defaults.promote_margin),
            rollback_threshold: serving
                .rollback_threshold
                .unwrap_or(defaults.rollback_threshold),
            window_epochs: serving.window_epochs.unwrap_or(defaults.window_epochs),
            min_live_examples: serving
                .min_live_examples
                .unwrap_or(defaults.min_live_examples),
            ..defaults
        };
        config
            .validate()
            .map_err(|error| self.invalid("serving", error.to_string()))?;
        Ok(config)
    }

    /// The exact regression, over numeric fields of the example source.
    fn exact(&self, section: ExactSection, source: &SourcePlan) -> Result<ExactPlan, SpecError> {
        if section.name.trim().is_empty() {
            return Err(self.invalid("exact.name", "must not be empty"));
        }
        if section.kind != "ridge" {
            return Err(self.invalid(
                "exact.kind",
                format!("unknown kind `{}` (kinds: ridge)", section.kind),
            ));
        }
        let numeric = |key: String, name: &str| -> Result<usize, SpecError> {
            let names = source
                .fields
                .iter()
                .map(|field| field.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let field = source.field(name).ok_or_else(|| {
                self.invalid(
                    &key,
                    format!(
                        "the example source `{}` has no field `{name}` (fields: {names})",
                        source.name
                    ),
                )
            })?;
            match source.fields[field].kind {
                FieldKind::Int | FieldKind::Real => Ok(field),
                _ => Err(self.invalid(
                    key,
                    format!("field `{name}` must have type `int` or `float`"),
                )),
            }
        };
        let target_field = numeric("exact.target".to_owned(), &section.target)?;
        let mut input_fields = Vec::new();
        for (index, name) in section.inputs.iter().enumerate() {
            let key = format!("exact.inputs[{index}]");
            let field = numeric(key.clone(), name)?;
            if field == target_field {
                return Err(self.invalid(key, format!("`{name}` is the target")));
            }
            if input_fields.contains(&field) {
                return Err(self.invalid(key, format!("`{name}` is listed twice")));
            }
            input_fields.push(field);
        }
        let plan = ExactPlan {
            name: section.name,
            target_field,
            input_fields,
            intercept: section.intercept,
            l2: section.l2,
        };
        if plan.weights() == 0 {
            return Err(self.invalid(
                "exact.inputs",
                "the regression needs at least one input or the intercept",
            ));
        }
        if plan.weights() > ExactPlan::MAX_WEIGHTS {
            return Err(self.invalid(
                "exact.inputs",
                format!(
                    "{} weights (inputs and intercept) is too many; at most {} (its statistics grow as the square)",
                    plan.weights(),
                    ExactPlan::MAX_WEIGHTS
                ),
            ));
        }
        if !(plan.l2.is_finite() && plan.l2 > 0.0) {
            return Err(self.invalid(
                "exact.l2",
                "must be a positive number: it keeps the system solvable before any data and with collinear inputs",
            ));
        }
        Ok(plan)
    }

    /// The optimizer of `[model]` with its hyperparameters (defaults for those not given),
    /// and the merge rule. A hyperparameter of another optimizer is an error naming it.
    fn optimizer(&self, model: &ModelSection) -> Result<(OptimizerPlan, WeightMerge), SpecError> {
        let name = model.optimizer.as_deref().unwrap_or("adagrad");
        let applies: &[&str] = match name {
            "adagrad" => &["merge", "learning_rate", "l2"],
            "ftrl" => &["alpha", "beta", "l1", "l2"],
            "sgd" => &[
                "merge",
                "learning_rate",
                "power_t",
                "adaptive",
                "normalized",
                "invariant",
            ],
            other => {
                return Err(self.invalid(
                    "model.optimizer",
                    format!("unknown optimizer `{other}` (optimizers: adagrad, ftrl, sgd)"),
                ));
            }
        };
        for (key, given) in model.given() {
            if given && !applies.contains(&key) {
                let reason = if key == "merge" {
                    "does not apply to optimizer `ftrl`, whose state always merges by summed \
                     deltas"
                        .to_owned()
                } else {
                    format!(
                        "does not apply to optimizer `{name}` (its keys: {})",
                        applies.join(", ")
                    )
                };
                return Err(self.invalid(format!("model.{key}"), reason));
            }
        }
        let positive = |key: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(self.invalid(format!("model.{key}"), "must be a positive number"))
            }
        };
        let non_negative = |key: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(value)
            } else {
                Err(self.invalid(format!("model.{key}"), "must be zero or positive"))
            }
        };
        let merge = match model.merge.as_deref().unwrap_or("average") {
            "average" => WeightMerge::Average,
            "sum" => WeightMerge::SumSteps,
            other => {
                return Err(self.invalid(
                    "model.merge",
                    format!("unknown merge `{other}` (merges: average, sum)"),
                ));
            }
        };
        let optimizer = match name {
            "adagrad" => OptimizerPlan::AdaGrad(AdaGradHyper {
                learning_rate: positive(
                    "learning_rate",
                    model.learning_rate.unwrap_or(ADAGRAD_LEARNING_RATE),
                )?,
                l2: non_negative("l2", model.l2.unwrap_or(0.0))?,
            }),
            "ftrl" => OptimizerPlan::Ftrl(FtrlHyper {
                alpha: positive("alpha", model.alpha.unwrap_or(FTRL_ALPHA))?,
                beta: non_negative("beta", model.beta.unwrap_or(FTRL_BETA))?,
                l1: non_negative("l1", model.l1.unwrap_or(0.0))?,
                l2: non_negative("l2", model.l2.unwrap_or(0.0))?,
            }),
            _ => {
                let power_t = non_negative("power_t", model.power_t.unwrap_or(SGD_POWER_T))?;
                if power_t > 1.0 {
                    return Err(self.invalid("model.power_t", "must be between 0 and 1"));
                }
                OptimizerPlan::Sgd(SgdHyper {
                    learning_rate: positive(
                        "learning_rate",
                        model.learning_rate.unwrap_or(SGD_LEARNING_RATE),
                    )?,
                    power_t,
                    adaptive: model.adaptive.unwrap_or(true),
                    normalized: model.normalized.unwrap_or(true),
                    invariant: model.invariant.unwrap_or(true),
                })
            }
        };
        Ok((optimizer, merge))
    }

    fn source(
        &self,
        key: &str,
        section: SourceSection,
        base: &Path,
    ) -> Result<SourcePlan, SpecError> {
        let absolute = |path: PathBuf| {
            if path.is_absolute() {
                path
            } else {
                base.join(path)
            }
        };
        let (paths, glob) = match (section.path, section.paths, section.glob) {
            (Some(path), None, None) => (vec![absolute(path)], None),
            (None, Some(paths), None) if !paths.is_empty() => {
                (paths.into_iter().map(absolute).collect(), None)
            }
            (None, Some(_), None) => {
                return Err(self.invalid(format!("{key}.paths"), "must list at least one file"));
            }
            (None, None, Some(pattern)) => {
                let pattern = absolute(PathBuf::from(pattern))
                    .to_string_lossy()
                    .into_owned();
                let paths = expand_glob(&pattern)
                    .map_err(|reason| self.invalid(format!("{key}.glob"), reason))?;
                (paths, Some(pattern))
            }
            (None, None, None) => {
                return Err(
                    self.invalid(format!("{key}.path"), "is required (or `paths`, or `glob`)")
                );
            }
            _ => return Err(self.invalid(key, "give one of `path`, `paths` and `glob`")),
        };
        let format = match section.format.as_str() {
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "jsonl" => Format::JsonLines,
            other => {
                return Err(self.invalid(
                    format!("{key}.format"),
                    format!("unknown format `{other}` (formats: csv, tsv, jsonl)"),
                ));
            }
        };
        if format == Format::JsonLines && section.header {
            return Err(self.invalid(format!("{key}.header"), "JSON Lines files have no header"));
        }
        if section.fields.is_empty() {
            return Err(self.invalid(format!("{key}.fields"), "a source needs at least one field"));
        }
        let mut fields: Vec<FieldPlan> = Vec::new();
        for (index, field) in section.fields.into_iter().enumerate() {
            let field_key = format!("{key}.fields[{index}]");
            if fields.iter().any(|existing| existing.name == field.name) {
                return Err(self.invalid(
                    format!("{field_key}.name"),
                    format!("field `{}` is defined twice", field.name),
                ));
            }
            let kind = match field.kind.as_str() {
                "int" => FieldKind::Int,
                "float" => FieldKind::Real,
                "string" => FieldKind::Text,
                "strings" => {
                    let separator = field.separator.as_deref().unwrap_or("|");
                    let &[separator] = separator.as_bytes() else {
                        return Err(self.invalid(
                            format!("{field_key}.separator"),
                            "must be a single ASCII character",
                        ));
                    };
                    if !separator.is_ascii() {
                        return Err(self.invalid(
                            format!("{field_key}.separator"),
                            "must be a single ASCII character",
                        ));
                    }
                    FieldKind::List { separator }
                }
                "timestamp" => {
                    let unit = match field.unit.as_deref().unwrap_or("s") {
                        "s" => TimeUnit::Seconds,
                        "ms" => TimeUnit::Milliseconds,
                        "rfc3339" => TimeUnit::Rfc3339,
                        other => {
                            return Err(self.invalid(
                                format!("{field_key}.unit"),
                                format!("unknown unit `{other}` (units: s, ms, rfc3339)"),
                            ));
                        }
                    };
                    FieldKind::Time { unit }
                }
                other => {
                    return Err(self.invalid(
                        format!("{field_key}.type"),
                        format!(
                            "unknown type `{other}` (types: int, float, string, strings, timestamp)"
                        ),
                    ));
                }
            };
            if field.separator.is_some() && !matches!(kind, FieldKind::List { .. }) {
                return Err(self.invalid(
                    format!("{field_key}.separator"),
                    "only fields of type `strings` have a separator",
                ));
            }
            if field.unit.is_some() && !matches!(kind, FieldKind::Time { .. }) {
                return Err(self.invalid(
                    format!("{field_key}.unit"),
                    "only fields of type `timestamp` have a unit",
                ));
            }
            fields.push(FieldPlan {
                name: field.name,
                kind,
                required: field.required,
            });
        }
        let find = |what: &str, name: &str| {
            fields
                .iter()
                .position(|field| field.name == name)
                .ok_or_else(|| {
                    let names = fields
                        .iter()
                        .map(|field| field.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    self.invalid(
                        format!("{key}.{what}"),
                        format!("no field is called `{name}` (fields: {names})"),
                    )
                })
        };
        let time_field = section
            .time
            .as_deref()
            .map(|name| find("time", name))
            .transpose()?;
        let key_fields = section
            .key
            .iter()
            .flatten()
            .map(|name| find("key", name))
            .collect::<Result<Vec<_>, _>>()?;
        let op_field = section
            .op
            .as_deref()
            .map(|name| find("op", name))
            .transpose()?;
        if let Some(time_field) = time_field {
            if !matches!(fields[time_field].kind, FieldKind::Time { .. }) {
                return Err(self.invalid(
                    format!("{key}.time"),
                    format!(
                        "field `{}` must have type `timestamp`",
                        fields[time_field].name
                    ),
                ));
            }
            // a fact without an event time cannot be placed, so the time is always required
            fields[time_field].required = true;
        }
        if let Some(op_field) = op_field {
            if fields[op_field].kind != FieldKind::Text {
                return Err(
                    self.invalid(format!("{key}.op"), "the op field must have type `string`")
                );
            }
            if key_fields.is_empty() {
                return Err(self.invalid(
                    format!("{key}.key"),
                    "is required with `op`: a retraction names its fact by key",
                ));
            }
        }
        if section.corrects.is_some() && key_fields.is_empty() {
            return Err(self.invalid(
                format!("{key}.key"),
                "is required with `corrects`: a correction names its fact by key",
            ));
        }
        // a fact that cannot be named cannot be withdrawn
        for &field in &key_fields {
            fields[field].required = true;
        }
        let late = match section.late.as_deref().unwrap_or("drop") {
            "drop" => LatePolicy::Drop,
            "admit" => LatePolicy::Admit,
            other => {
                return Err(self.invalid(
                    format!("{key}.late"),
                    format!("unknown policy `{other}` (policies: drop, admit)"),
                ));
            }
        };
        Ok(SourcePlan {
            name: section.name,
            paths,
            glob,
            format,
            header: section.header,
            fields,
            time_field,
            lateness_secs: section.lateness_secs,
            late,
            key_fields,
            op_field,
            corrects: None,
        })
    }

    fn aggregate(
        &self,
        key: &str,
        section: &FeatureSection,
        find_source: &dyn Fn(&str, &str) -> Result<u16, SpecError>,
        find_field: &dyn Fn(&str, u16, &str) -> Result<usize, SpecError>,
        example_source: u16,
    ) -> Result<AggregatePlan, SpecError> {
        let source_name = section.source.as_deref().ok_or_else(|| {
            self.invalid(format!("{key}.source"), "is required for kind `aggregate`")
        })?;
        let source = find_source(&format!("{key}.source"), source_name)?;
        let key_name = section.key.as_deref().ok_or_else(|| {
            self.invalid(format!("{key}.key"), "is required for kind `aggregate`")
        })?;
        let key_field = find_field(&format!("{key}.key"), source, key_name)?;
        let via = match &section.via {
            None => None,
            Some(via) => {
                let via_source = find_source(&format!("{key}.via.source"), &via.source)?;
                Some(Via {
                    source: via_source,
                    key_field: find_field(&format!("{key}.via.key"), via_source, &via.key)?,
                    value_field: find_field(&format!("{key}.via.value"), via_source, &via.value)?,
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
        let example_field =
            find_field(&format!("{key}.example_key"), example_source, matched_name)?;
        let value_field = |function: &str| -> Result<usize, SpecError> {
            let name = section.field.as_deref().ok_or_else(|| {
                self.invalid(
                    format!("{key}.field"),
                    format!("is required by function `{function}`"),
                )
            })?;
            find_field(&format!("{key}.field"), source, name)
        };
        let function = match section.function.as_deref().unwrap_or("count") {
            "count" => {
                if section.field.is_some() {
                    return Err(self.invalid(
                        format!("{key}.field"),
                        "function `count` counts facts; it reads no field",
                    ));
                }
                Function::Count
            }
            "sum" => Function::Sum {
                field: value_field("sum")?,
            },
            "mean" => Function::Mean {
                field: value_field("mean")?,
            },
            "distinct" => Function::Distinct {
                field: value_field("distinct")?,
            },
            "last" => Function::Last {
                field: value_field("last")?,
            },
            other => {
                return Err(self.invalid(
                    format!("{key}.function"),
                    format!(
                        "unknown function `{other}` (functions: count, sum, mean, distinct, last)"
                    ),
                ));
            }
        };
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
    use super::*;

    const SHIPPED: &[&str] = &[
        "pipelines/sniffable.toml",
        "pipelines/movielens.toml",
        "pipelines/elec2.toml",
        "pipelines/movielens-ids.toml",
    ];

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn shipped_specs_are_valid() {
        for spec in SHIPPED {
            let spec = load(&root().join(spec), None).unwrap_or_else(|error| panic!("{error}"));
            assert!(!spec.plan.features.is_empty());
        }
    }

    fn error_for(edit: impl Fn(String) -> String) -> String {
        let path = root().join("pipelines/sniffable.toml");
        let text = edit(std::fs::read_to_string(&path).expect("shipped spec"));
        match parse(&text, &path, None) {
            Ok(_) => panic!("the edited spec was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_supervisor_rules_come_from_serving() {
        let path = root().join("pipelines/sniffable.toml");
        let text = std::fs::read_to_string(&path)
            .expect("shipped spec")
            .replacen(
                "keep_versions = 3",
                "keep_versions = 3\npromote_margin = 0.1\nwindow_epochs = 4",
                1,
            );
        let spec = parse(&text, &path, None).expect("a valid spec");
        assert_eq!(spec.supervisor.promote_margin, 0.1);
        assert_eq!(spec.supervisor.window_epochs, 4);
        assert_eq!(spec.supervisor.rollback_threshold, 0.25);
        let message = error_for(|text| {
            text.replacen(
                "keep_versions = 3",
                "keep_versions = 3\nrollback_threshold = -1.0",
                1,
            )
        });
        assert!(
            message.contains("`serving`") && message.contains("rollback_threshold"),
            "{message}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let message =
            error_for(|text| text.replacen("source = \"likes\"", "source = \"likez\"", 1));
        assert!(message.contains("unknown source `likez`"), "{message}");
        assert!(
            message.contains("sources: follows, posts, likes"),
            "{message}"
        );

        let message = error_for(|text| text.replace("tick_secs = 3600", "tick_secs = 0"));
        assert!(
            message.contains("`pipeline.tick_secs`: must be at least 1 second"),
            "{message}"
        );

        let message =
            error_for(|text| text.replacen("kind = \"aggregate\"", "kind = \"aggregat\"", 1));
        assert!(
            message.contains(".kind`: unknown kind `aggregat`"),
            "{message}"
        );

        let message = error_for(|text| text.replacen("bits = ", "bitz = ", 1));
        assert!(message.contains("unknown field `bitz`"), "{message}");
    }

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

    fn elec2_with_exact(exact: &str) -> Result<Spec, SpecError> {
        let path = root().join("pipelines/elec2.toml");
        let text = std::fs::read_to_string(&path).expect("shipped spec");
        let start = text.find("[exact]").expect("elec2 has an [exact] section");
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |offset| start + 1 + offset + 1);
        let text = format!("{}{}\n{}", &text[..start], exact, &text[end..]);
        parse(&text, &path, None)
    }

    #[test]
    fn the_exact_section_is_checked() {
        let spec = elec2_with_exact(
            "[exact]\nname = \"r\"\nkind = \"ridge\"\ntarget = \"feat_4\"\ninputs = [\"feat_1\", \"target\"]\nl2 = 0.5\n",
        )
        .expect("a valid section");
        let exact = spec.plan.exact.expect("an exact plan");
        assert_eq!(exact.target_field, 3);
        assert_eq!(exact.input_fields, vec![0, 6]);
        assert!(exact.intercept);
        assert_eq!(exact.weights(), 3);

        let error = |section: &str| match elec2_with_exact(section) {
            Ok(_) => panic!("accepted: {section}"),
            Err(error) => error.to_string(),
        };
        let base = "[exact]\nname = \"r\"\nkind = \"ridge\"\nl2 = 1.0\n";
        let message = error(&format!("{base}target = \"nope\"\n"));
        assert!(
            message.contains("`exact.target`: the example source `prices` has no field `nope`"),
            "{message}"
        );
        let message = error(&format!(
            "{base}target = \"target\"\ninputs = [\"feat_1\", \"feat_1\"]\n"
        ));
        assert!(
            message.contains("`exact.inputs[1]`: `feat_1` is listed twice"),
            "{message}"
        );
        let message = error(&format!(
            "{base}target = \"target\"\ninputs = [\"target\"]\n"
        ));
        assert!(
            message.contains("`exact.inputs[0]`: `target` is the target"),
            "{message}"
        );
        let message = error(&format!("{base}target = \"target\"\nintercept = false\n"));
        assert!(
            message.contains("at least one input or the intercept"),
            "{message}"
        );
        let message =
            error("[exact]\nname = \"r\"\nkind = \"ridge\"\ntarget = \"target\"\nl2 = 0.0\n");
        assert!(
            message.contains("`exact.l2`: must be a positive number"),
            "{message}"
        );
        let message =
            error("[exact]\nname = \"r\"\nkind = \"lasso\"\ntarget = \"target\"\nl2 = 1.0\n");
        assert!(
            message.contains("unknown kind `lasso` (kinds: ridge)"),
            "{message}"
        );
    }

    #[test]
    fn an_exact_regression_has_at_most_64_weights() {
        let fields: String = (0..64)
            .map(|index| format!("  {{ name = \"x{index}\", type = \"float\" }},\n"))
            .collect();
        let inputs: Vec<String> = (0..64).map(|index| format!("\"x{index}\"")).collect();
        let spec = |intercept: bool| {
            format!(
                "[pipeline]\nname = \"wide\"\ntick_secs = 1\n\n[[sources]]\nname = \"rows\"\npath = \"rows.csv\"\nformat = \"csv\"\nfields = [\n{fields}  {{ name = \"y\", type = \"float\" }},\n]\n\n[examples]\nsource = \"rows\"\n\n[label]\nkind = \"threshold\"\nfield = \"y\"\nat_least = 1\n\n[model]\nname = \"m\"\n\n[exact]\nname = \"r\"\nkind = \"ridge\"\ntarget = \"y\"\ninputs = [{}]\nl2 = 1.0\nintercept = {intercept}\n",
                inputs.join(", ")
            )
        };
        let path = root().join("wide.toml");
        let plan = parse(&spec(false), &path, None).expect("64 weights").plan;
        assert_eq!(plan.exact.map(|exact| exact.weights()), Some(64));
        let message = parse(&spec(true), &path, None)
            .expect_err("65 weights are refused")
            .to_string();
        assert!(
            message.contains(
                "`exact.inputs`: 65 weights (inputs and intercept) is too many; at most 64"
            ),
            "{message}"
        );
    }

    #[test]
    fn the_optimizer_and_its_keys_are_checked() {
        fn model(lines: &'static str) -> impl Fn(String) -> String {
            move |text: String| {
                let start = text.find("[model]").expect("a model section");
                let end = text.find("[serving]").expect("a serving section");
                format!(
                    "{}[model]\nname = \"m\"\n{lines}\n{}",
                    &text[..start],
                    &text[end..]
                )
            }
        }
        let message = error_for(model("optimizer = \"adam\""));
        assert!(
            message.contains("`model.optimizer`: unknown optimizer `adam`"),
            "{message}"
        );
        let message = error_for(model("optimizer = \"ftrl\"\nlearning_rate = 0.1"));
        assert!(
            message.contains("`model.learning_rate`: does not apply to optimizer `ftrl`"),
            "{message}"
        );
        let message = error_for(model("alpha = 0.1"));
        assert!(
            message.contains("`model.alpha`: does not apply to optimizer `adagrad`"),
            "{message}"
        );
        let message = error_for(model("optimizer = \"ftrl\"\nmerge = \"sum\""));
        assert!(
            message.contains("`model.merge`: does not apply"),
            "{message}"
        );
        let message = error_for(model("optimizer = \"sgd\"\npower_t = 1.5"));
        assert!(
            message.contains("`model.power_t`: must be between 0 and 1"),
            "{message}"
        );
        let message = error_for(model("optimizer = \"ftrl\"\nalpha = 0"));
        assert!(
            message.contains("`model.alpha`: must be a positive number"),
            "{message}"
        );
        let message = error_for(model("merge = \"median\""));
        assert!(message.contains("unknown merge `median`"), "{message}");
        let message = error_for(model("optimiser = \"sgd\""));
        assert!(message.contains("unknown field `optimiser`"), "{message}");
    }

    #[test]
    fn optimizers_take_their_defaults() {
        let path = root().join("pipelines/sniffable.toml");
        let text = std::fs::read_to_string(&path).expect("shipped spec");
        let start = text.find("[model]").expect("a model section");
        let end = text.find("[serving]").expect("a serving section");
        let with = |lines: &str| {
            let text = format!(
                "{}[model]\nname = \"m\"\n{lines}\n{}",
                &text[..start],
                &text[end..]
            );
            let plan = parse(&text, &path, None)
                .unwrap_or_else(|error| panic!("{error}"))
                .plan;
            (plan.model.optimizer, plan.model.merge)
        };
        assert_eq!(
            with(""),
            (
                OptimizerPlan::AdaGrad(AdaGradHyper {
                    learning_rate: 0.1,
                    l2: 0.0
                }),
                WeightMerge::Average
            )
        );
        assert_eq!(
            with("optimizer = \"ftrl\"\nl1 = 0.5").0,
            OptimizerPlan::Ftrl(FtrlHyper {
                alpha: 0.1,
                beta: 1.0,
                l1: 0.5,
                l2: 0.0
            })
        );
        assert_eq!(
            with("optimizer = \"sgd\"\nnormalized = false\nmerge = \"sum\""),
            (
                OptimizerPlan::Sgd(SgdHyper {
                    learning_rate: 0.5,
                    power_t: 0.5,
                    adaptive: true,
                    normalized: false,
                    invariant: true
                }),
                WeightMerge::SumSteps
            )
        );
    }
}
