//! `[examples]` and `[label]`: which facts are examples, and what makes one positive (a
//! field over a threshold, or enough facts of another source within a time).

use dataflows::plan::{AggregatePlan, AggregateUse, ExamplePlan, Function, LabelPlan, SourcePlan};
use serde::Deserialize;

use super::{Checker, SpecError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExamplesSection {
    source: String,
    id: Option<String>,
    entity: Option<String>,
    truth: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LabelSection {
    kind: String,
    field: Option<String>,
    source: Option<String>,
    key: Option<String>,
    within_secs: Option<u64>,
    at_least: Option<f64>,
}

impl Checker<'_> {
    /// `[examples]`: the example source and its id, entity and truth fields.
    pub(super) fn examples(
        &self,
        section: &ExamplesSection,
        sources: &[SourcePlan],
    ) -> Result<ExamplePlan, SpecError> {
        let source = self.find_source(sources, "examples.source", &section.source)?;
        let field = |key: &str, name: &Option<String>| {
            name.as_deref()
                .map(|name| self.find_field(sources, key, source, name))
                .transpose()
        };
        Ok(ExamplePlan {
            source,
            id_field: field("examples.id", &section.id)?,
            entity_field: field("examples.entity", &section.entity)?,
            truth_field: field("examples.truth", &section.truth)?,
        })
    }

    /// `[label]`. A `count_within` label counts facts by the example's id through an
    /// aggregate of its own, appended to `aggregates`, and makes that id required.
    pub(super) fn label(
        &self,
        section: &LabelSection,
        sources: &mut [SourcePlan],
        examples: &ExamplePlan,
        aggregates: &mut Vec<AggregatePlan>,
    ) -> Result<LabelPlan, SpecError> {
        match section.kind.as_str() {
            "threshold" => self.threshold_label(section, sources, examples.source),
            "count_within" => self.count_within_label(section, sources, examples, aggregates),
            other => Err(self.invalid(
                "label.kind",
                format!("unknown kind `{other}` (kinds: threshold, count_within)"),
            )),
        }
    }

    /// A label that is a field of the example at or over a threshold.
    fn threshold_label(
        &self,
        section: &LabelSection,
        sources: &[SourcePlan],
        example_source: u16,
    ) -> Result<LabelPlan, SpecError> {
        let field_name = section
            .field
            .as_deref()
            .ok_or_else(|| self.invalid("label.field", "is required for kind `threshold`"))?;
        let field = self.find_field(sources, "label.field", example_source, field_name)?;
        let at_least = section
            .at_least
            .ok_or_else(|| self.invalid("label.at_least", "is required"))?;
        if section.source.is_some() || section.key.is_some() || section.within_secs.is_some() {
            return Err(self.invalid(
                "label",
                "kind `threshold` takes only `field` and `at_least`",
            ));
        }
        Ok(LabelPlan::Threshold { field, at_least })
    }

    /// A label that counts the facts of a source naming the example within a time.
    fn count_within_label(
        &self,
        section: &LabelSection,
        sources: &mut [SourcePlan],
        examples: &ExamplePlan,
        aggregates: &mut Vec<AggregatePlan>,
    ) -> Result<LabelPlan, SpecError> {
        let source_name = section
            .source
            .as_deref()
            .ok_or_else(|| self.invalid("label.source", "is required for kind `count_within`"))?;
        let source = self.find_source(sources, "label.source", source_name)?;
        let key_name = section
            .key
            .as_deref()
            .ok_or_else(|| self.invalid("label.key", "is required for kind `count_within`"))?;
        let key_field = self.find_field(sources, "label.key", source, key_name)?;
        let within_secs = section
            .within_secs
            .ok_or_else(|| self.invalid("label.within_secs", "is required"))?;
        if within_secs == 0 {
            return Err(self.invalid("label.within_secs", "must be at least 1 second"));
        }
        let at_least = section
            .at_least
            .ok_or_else(|| self.invalid("label.at_least", "is required"))?;
        if at_least.fract() != 0.0 || at_least < 1.0 {
            return Err(self.invalid("label.at_least", "must be a whole number of at least 1"));
        }
        let Some(id_field) = examples.id_field else {
            return Err(self.invalid(
                "examples.id",
                "is required by a `count_within` label, which counts facts by the example's id",
            ));
        };
        if section.field.is_some() {
            return Err(self.invalid(
                "label.field",
                "kind `count_within` counts facts; it reads no field of the example",
            ));
        }
        // an example without an id could never be counted: it is malformed
        sources[usize::from(examples.source)].fields[id_field].required = true;
        aggregates.push(AggregatePlan {
            name: "label".to_owned(),
            source,
            key_field: Some(key_field),
            via: None,
            function: Function::Count,
            window: None,
            used_by: AggregateUse::Label,
        });
        Ok(LabelPlan::CountWithin {
            aggregate: aggregates.len() - 1,
            within_secs,
            at_least: at_least as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use dataflows::plan::{AggregateUse, Function, LabelPlan};

    use crate::spec::tests::{error_for, root};
    use crate::spec::{Spec, parse};

    /// The sniffable spec with its `[label]` replaced by `label`.
    fn with_label(label: &str) -> Result<Spec, String> {
        let path = root().join("pipelines/sniffable.toml");
        let text = std::fs::read_to_string(&path).expect("shipped spec");
        let start = text.find("[label]").expect("a label section");
        let end = text.find("[[features]]").expect("a features section");
        let text = format!("{}[label]\n{label}\n\n{}", &text[..start], &text[end..]);
        parse(&text, &path, None).map_err(|error| error.to_string())
    }

    fn rejected(label: &str) -> String {
        match with_label(label) {
            Ok(_) => panic!("accepted: {label}"),
            Err(message) => message,
        }
    }

    #[test]
    fn the_examples_name_their_fields() {
        let plan = with_label("kind = \"threshold\"\nfield = \"truth_p\"\nat_least = 0.5")
            .unwrap_or_else(|message| panic!("{message}"))
            .plan;
        // posts: post, dog, hashtags, time, truth_p
        assert_eq!(plan.examples.source, 1);
        assert_eq!(plan.examples.id_field, Some(0));
        assert_eq!(plan.examples.entity_field, Some(1));
        assert_eq!(plan.examples.truth_field, Some(4));
        assert_eq!(
            plan.label,
            LabelPlan::Threshold {
                field: 4,
                at_least: 0.5
            }
        );
        let message = error_for(|text| text.replacen("entity = \"dog\"", "entity = \"cat\"", 1));
        assert!(
            message.contains("`examples.entity`: source `posts` has no field `cat` (fields: post, dog, hashtags, time, truth_p)"),
            "{message}"
        );
        let message = error_for(|text| {
            text.replacen(
                "source = \"posts\"                  #",
                "source = \"pets\" #",
                1,
            )
        });
        assert!(
            message.contains(
                "`examples.source`: unknown source `pets` (sources: follows, posts, likes)"
            ),
            "{message}"
        );
    }

    #[test]
    fn a_count_within_label_counts_after_the_features_aggregates() {
        let spec = with_label(
            "kind = \"count_within\"\nsource = \"likes\"\nkey = \"post\"\nwithin_secs = 60\nat_least = 2",
        )
        .unwrap_or_else(|message| panic!("{message}"));
        let plan = spec.plan;
        let LabelPlan::CountWithin {
            aggregate,
            within_secs,
            at_least,
        } = plan.label
        else {
            panic!("not a count: {:?}", plan.label);
        };
        assert_eq!((within_secs, at_least), (60, 2));
        // the three aggregate features come first: the label's aggregate is the last one
        assert_eq!(aggregate, 3);
        assert_eq!(plan.aggregates.len(), 4);
        let counted = &plan.aggregates[aggregate];
        assert_eq!(counted.used_by, AggregateUse::Label);
        assert_eq!(counted.function, Function::Count);
        assert_eq!((counted.source, counted.key_field), (2, Some(0)));
        // the example's id is what is counted, so it is required
        assert!(plan.sources[1].fields[0].required);
    }

    #[test]
    fn bad_labels_name_the_key() {
        let count = "kind = \"count_within\"\nsource = \"likes\"\nkey = \"post\"\n";
        let cases = [
            (
                "kind = \"ranking\"".to_owned(),
                "`label.kind`: unknown kind `ranking` (kinds: threshold, count_within)",
            ),
            (
                "kind = \"threshold\"\nat_least = 1".to_owned(),
                "`label.field`: is required for kind `threshold`",
            ),
            (
                "kind = \"threshold\"\nfield = \"truth_p\"".to_owned(),
                "`label.at_least`: is required",
            ),
            (
                "kind = \"threshold\"\nfield = \"truth_p\"\nat_least = 1\nwithin_secs = 5"
                    .to_owned(),
                "`label`: kind `threshold` takes only `field` and `at_least`",
            ),
            (
                "kind = \"count_within\"\nkey = \"post\"".to_owned(),
                "`label.source`: is required for kind `count_within`",
            ),
            (
                "kind = \"count_within\"\nsource = \"likes\"".to_owned(),
                "`label.key`: is required for kind `count_within`",
            ),
            (
                "kind = \"count_within\"\nsource = \"likes\"\nkey = \"liker\"".to_owned(),
                "`label.key`: source `likes` has no field `liker` (fields: post, dog, time)",
            ),
            (
                format!("{count}at_least = 2"),
                "`label.within_secs`: is required",
            ),
            (
                format!("{count}within_secs = 0\nat_least = 2"),
                "`label.within_secs`: must be at least 1 second",
            ),
            (
                format!("{count}within_secs = 60\nat_least = 1.5"),
                "`label.at_least`: must be a whole number of at least 1",
            ),
            (
                format!("{count}within_secs = 60\nat_least = 2\nfield = \"dog\""),
                "`label.field`: kind `count_within` counts facts; it reads no field of the example",
            ),
        ];
        for (label, expected) in cases {
            let message = rejected(&label);
            assert!(message.ends_with(expected), "{label}\n{message}");
        }
        let message = error_for(|text| text.replacen("id = \"post\"\n", "", 1));
        assert!(
            message.ends_with("`examples.id`: is required by a `count_within` label, which counts facts by the example's id"),
            "{message}"
        );
    }
}
