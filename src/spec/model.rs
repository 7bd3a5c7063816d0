//! `[model]` (or the variants of `[[models]]`): the logistic model, its size, and its optimizer (AdaGrad, FTRL-Proximal or
//! Vowpal Wabbit's SGD) with the hyperparameters that optimizer takes and no others.

use dataflows::learn::adagrad::AdaGradHyper;
use dataflows::learn::ftrl::FtrlHyper;
use dataflows::learn::optimizer::{OptimizerPlan, WeightMerge};
use dataflows::learn::sgd::SgdHyper;
use dataflows::plan::{FeaturePlan, ModelPlan};
use serde::Deserialize;

use super::{Checker, SpecError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ModelSection {
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
    /// The names of the features the model reads; all of them when not given.
    features: Option<Vec<String>>,
    /// Whether this variant of `[[models]]` is the champion (by default the first is).
    champion: Option<bool>,
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

impl Checker<'_> {
    /// `[model]`, or the variants of `[[models]]`: the champion, then the challengers in the
    /// spec's order. Exactly one of the two is given; variants' names are distinct, and at
    /// most one is marked `champion` (by default the first is).
    pub(super) fn models(
        &self,
        model: Option<ModelSection>,
        models: Vec<ModelSection>,
        features: &[FeaturePlan],
    ) -> Result<(ModelPlan, Vec<ModelPlan>), SpecError> {
        let sections: Vec<(String, ModelSection)> = match (model, models.is_empty()) {
            (Some(section), true) => vec![("model".to_owned(), section)],
            (None, false) => models
                .into_iter()
                .enumerate()
                .map(|(index, section)| (format!("models[{index}]"), section))
                .collect(),
            (Some(_), false) => {
                return Err(self.invalid("models", "give `[model]` or `[[models]]`, not both"));
            }
            (None, true) => {
                return Err(self.invalid("model", "missing: give `[model]` or `[[models]]`"));
            }
        };
        let champions: Vec<usize> = sections
            .iter()
            .enumerate()
            .filter(|(_, (_, section))| section.champion == Some(true))
            .map(|(index, _)| index)
            .collect();
        if champions.len() > 1 {
            return Err(self.invalid(
                format!("{}.champion", sections[champions[1]].0),
                "only one variant can be the champion",
            ));
        }
        let mut plans = Vec::with_capacity(sections.len());
        for (prefix, section) in sections {
            if plans
                .iter()
                .any(|plan: &ModelPlan| plan.name == section.name)
            {
                return Err(self.invalid(
                    format!("{prefix}.name"),
                    format!("another variant is called `{}`", section.name),
                ));
            }
            plans.push(self.model(&prefix, section, features)?);
        }
        let champion = champions.first().copied().unwrap_or(0);
        let champion = plans.remove(champion);
        Ok((champion, plans))
    }

    /// One model: a logistic model of `2^bits` weights, its optimizer, and the features it
    /// reads.
    fn model(
        &self,
        prefix: &str,
        section: ModelSection,
        features: &[FeaturePlan],
    ) -> Result<ModelPlan, SpecError> {
        if section.kind != "logistic" {
            return Err(self.invalid(
                format!("{prefix}.kind"),
                format!("unknown kind `{}` (kinds: logistic)", section.kind),
            ));
        }
        if !(4..=28).contains(&section.bits) {
            return Err(self.invalid(format!("{prefix}.bits"), "must be between 4 and 28"));
        }
        let (optimizer, merge) = self.optimizer(prefix, &section)?;
        let read = section
            .features
            .as_ref()
            .map(|names| self.read_features(prefix, names, features))
            .transpose()?;
        Ok(ModelPlan {
            name: section.name,
            bits: section.bits,
            optimizer,
            merge,
            features: read,
        })
    }

    /// The indexes of the features named, ascending; an unknown or repeated name is an error.
    fn read_features(
        &self,
        prefix: &str,
        names: &[String],
        features: &[FeaturePlan],
    ) -> Result<Vec<usize>, SpecError> {
        let mut indexes = Vec::with_capacity(names.len());
        for name in names {
            let Some(index) = features.iter().position(|feature| &feature.name == name) else {
                let known: Vec<&str> = features.iter().map(|f| f.name.as_str()).collect();
                return Err(self.invalid(
                    format!("{prefix}.features"),
                    format!("unknown feature `{name}` (features: {})", known.join(", ")),
                ));
            };
            if indexes.contains(&index) {
                return Err(self.invalid(
                    format!("{prefix}.features"),
                    format!("`{name}` is listed twice"),
                ));
            }
            indexes.push(index);
        }
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// The optimizer of `[model]` with its hyperparameters (defaults for those not given),
    /// and the merge rule. A hyperparameter of another optimizer is an error naming it.
    fn optimizer(
        &self,
        prefix: &str,
        model: &ModelSection,
    ) -> Result<(OptimizerPlan, WeightMerge), SpecError> {
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
                    format!("{prefix}.optimizer"),
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
                return Err(self.invalid(format!("{prefix}.{key}"), reason));
            }
        }
        let positive = |key: &str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(self.invalid(format!("{prefix}.{key}"), "must be a positive number"))
            }
        };
        let non_negative = |key: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(value)
            } else {
                Err(self.invalid(format!("{prefix}.{key}"), "must be zero or positive"))
            }
        };
        let merge = match model.merge.as_deref().unwrap_or("average") {
            "average" => WeightMerge::Average,
            "sum" => WeightMerge::SumSteps,
            other => {
                return Err(self.invalid(
                    format!("{prefix}.merge"),
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
                    return Err(
                        self.invalid(format!("{prefix}.power_t"), "must be between 0 and 1")
                    );
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
}

#[cfg(test)]
mod tests {
    use dataflows::learn::adagrad::AdaGradHyper;
    use dataflows::learn::ftrl::FtrlHyper;
    use dataflows::learn::optimizer::{OptimizerPlan, WeightMerge};
    use dataflows::learn::sgd::SgdHyper;

    use crate::spec::parse;
    use crate::spec::tests::{error_for, root};

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
