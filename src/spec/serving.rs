//! `[serving]`: how many published versions are kept, and the supervisor's rules for which
//! one serves over HTTP.

use dataflows::plan::ServingPlan;
use serde::Deserialize;

use super::{Checker, SpecError};
use crate::serve::supervisor::{Fallback, SupervisorConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServingSection {
    #[serde(default = "default_keep_versions")]
    keep_versions: usize,
    promote_margin: Option<f64>,
    baseline_margin: Option<f64>,
    rollback_threshold: Option<f64>,
    window_epochs: Option<usize>,
    min_live_examples: Option<u64>,
    fallback: Option<Fallback>,
}

impl Default for ServingSection {
    fn default() -> Self {
        ServingSection {
            keep_versions: default_keep_versions(),
            promote_margin: None,
            baseline_margin: None,
            rollback_threshold: None,
            window_epochs: None,
            min_live_examples: None,
            fallback: None,
        }
    }
}

fn default_keep_versions() -> usize {
    3
}

impl Checker<'_> {
    /// The versions kept on disk.
    pub(super) fn serving(&self, section: &ServingSection) -> Result<ServingPlan, SpecError> {
        if section.keep_versions == 0 {
            return Err(self.invalid("serving.keep_versions", "must be at least 1"));
        }
        Ok(ServingPlan {
            keep_versions: section.keep_versions,
        })
    }

    /// The supervisor's rules from `[serving]`, defaults for those not given.
    pub(super) fn supervisor(
        &self,
        serving: &ServingSection,
    ) -> Result<SupervisorConfig, SpecError> {
        let defaults = SupervisorConfig::default();
        let config = SupervisorConfig {
            promote_margin: serving.promote_margin.unwrap_or(defaults.promote_margin),
            baseline_margin: serving.baseline_margin.unwrap_or(defaults.baseline_margin),
            rollback_threshold: serving
                .rollback_threshold
                .unwrap_or(defaults.rollback_threshold),
            window_epochs: serving.window_epochs.unwrap_or(defaults.window_epochs),
            min_live_examples: serving
                .min_live_examples
                .unwrap_or(defaults.min_live_examples),
            fallback: serving.fallback.unwrap_or(defaults.fallback),
            ..defaults
        };
        config
            .validate()
            .map_err(|error| self.invalid("serving", error.to_string()))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use crate::serve::supervisor::Fallback;
    use crate::spec::parse;
    use crate::spec::tests::{error_for, root};

    /// The shipped spec with `line` added to `[serving]`.
    fn text_with(path: &std::path::Path, line: &str) -> String {
        std::fs::read_to_string(path)
            .expect("shipped spec")
            .replacen(
                "keep_versions = 3",
                &format!("keep_versions = 3\n{line}"),
                1,
            )
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
        assert_eq!(spec.supervisor.fallback, Fallback::None);
        let fallback = text_with(&path, "fallback = \"constant\"");
        let spec = parse(&fallback, &path, None).expect("a valid spec");
        assert_eq!(spec.supervisor.fallback, Fallback::Constant);
        let message = error_for(|text| {
            text.replacen(
                "keep_versions = 3",
                "keep_versions = 3\nfallback = \"last\"",
                1,
            )
        });
        assert!(message.contains("fallback"), "{message}");
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
}
