//! `[exact]`: the exact ridge regression over numeric fields of the example source, whose
//! weights are solved from sufficient statistics rather than learned step by step.

use dataflows::plan::{ExactPlan, FieldKind, SourcePlan};
use serde::Deserialize;

use super::{Checker, SpecError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExactSection {
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

impl Checker<'_> {
    /// The exact regression, over numeric fields of the example source.
    pub(super) fn exact(
        &self,
        section: ExactSection,
        source: &SourcePlan,
    ) -> Result<ExactPlan, SpecError> {
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
}

#[cfg(test)]
mod tests {
    use crate::spec::tests::root;
    use crate::spec::{Spec, SpecError, parse};

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
}
