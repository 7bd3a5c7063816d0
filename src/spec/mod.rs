//! Pipeline specs: reading a TOML file into a checked [`Plan`], one file per section.
//!
//! A new data set needs a new spec, not new Rust. Every mistake in a spec is reported with
//! the file, the key (`features[2].source`) and what is wrong with it, before anything runs.
//!
//! | file | section |
//! |---|---|
//! | `mod.rs` | the file as a whole: reading, `[pipeline]`, the order of the checks, the hash |
//! | `sources.rs` | `[[sources]]`: files, formats, fields, keys, retractions and corrections |
//! | `examples.rs` | `[examples]` and `[label]` |
//! | `features.rs` | `[[features]]`: kinds, the aggregates they read, transforms, crosses |
//! | `model.rs` | `[model]` and its optimizer |
//! | `serving.rs` | `[serving]`: kept versions and the supervisor's rules |
//! | `exact.rs` | `[exact]`: the exact ridge regression |

mod exact;
mod examples;
mod features;
mod model;
mod serving;
mod sources;

use std::path::{Path, PathBuf};

use dataflows::plan::Plan;
use serde::Deserialize;

use exact::ExactSection;
use examples::{ExamplesSection, LabelSection};
use features::FeatureSection;
use model::ModelSection;
use serving::ServingSection;
use sources::SourceSection;

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
    /// Hex XXH3 of what gives a weight its meaning: the features, the aggregates they read
    /// and the model's bits (hashing). Published models record it; a snapshot whose features
    /// hash differs from the running spec's is never served.
    pub features_hash: String,
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
    model: Option<ModelSection>,
    #[serde(default)]
    models: Vec<ModelSection>,
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
        features_hash: features_hash(&plan),
        plan,
        hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes())),
        path: path.to_owned(),
    })
}

/// The hash of what gives a plan's weights their meaning: its features, the aggregates they
/// read, the label and the number of hashed bits. A learning rate or a data path does not
/// change it; a feature, a hashing or a bit count does.
pub fn features_hash(plan: &Plan) -> String {
    let meaning = serde_json::json!({
        "features": plan.features,
        "aggregates": plan.aggregates,
        "bits": plan.model.bits,
    });
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(meaning.to_string().as_bytes())
    )
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

    /// The plan, section by section in the order of the data path; the first mistake found
    /// is the one reported.
    fn plan(&self, file: SpecFile, base: &Path) -> Result<Plan, SpecError> {
        self.pipeline(&file.pipeline)?;
        let mut sources = self.sources(file.sources, base)?;
        let examples = self.examples(&file.examples, &sources)?;
        // the features' aggregates come first, the label's after them
        let mut aggregates = Vec::new();
        let features = self.features(file.features, &sources, examples.source, &mut aggregates)?;
        let label = self.label(&file.label, &mut sources, &examples, &mut aggregates)?;
        let (model, challengers) = self.models(file.model, file.models, &features)?;
        let serving = self.serving(&file.serving)?;
        let exact = file
            .exact
            .map(|section| self.exact(section, &sources[usize::from(examples.source)]))
            .transpose()?;
        Ok(Plan {
            name: file.pipeline.name,
            tick_secs: file.pipeline.tick_secs,
            sources,
            examples,
            label,
            features,
            aggregates,
            model,
            challengers,
            serving,
            exact,
        })
    }

    /// `[pipeline]`: a name and the length of an epoch.
    fn pipeline(&self, section: &PipelineSection) -> Result<(), SpecError> {
        if section.name.trim().is_empty() {
            return Err(self.invalid("pipeline.name", "must not be empty"));
        }
        if section.tick_secs == 0 {
            return Err(self.invalid("pipeline.tick_secs", "must be at least 1 second"));
        }
        Ok(())
    }
}

/// What the section files' tests share: the shipped specs, and a spec edited until it fails.
#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &[&str] = &[
        "pipelines/sniffable.toml",
        "pipelines/movielens.toml",
        "pipelines/elec2.toml",
        "pipelines/movielens-ids.toml",
    ];

    /// The root crate's folder, where `pipelines/` is.
    pub(super) fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn shipped_specs_are_valid() {
        for spec in SHIPPED {
            let spec = load(&root().join(spec), None).unwrap_or_else(|error| panic!("{error}"));
            assert!(!spec.plan.features.is_empty());
        }
    }

    /// The message for `pipelines/sniffable.toml` after `edit`, which must make it invalid.
    pub(super) fn error_for(edit: impl Fn(String) -> String) -> String {
        let path = root().join("pipelines/sniffable.toml");
        let text = edit(std::fs::read_to_string(&path).expect("shipped spec"));
        match parse(&text, &path, None) {
            Ok(_) => panic!("the edited spec was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn the_hash_is_of_the_text() {
        let text = "[pipeline]\nname = \"h\"\ntick_secs = 1\n\n[[sources]]\nname = \"s\"\npath = \"s.csv\"\nformat = \"csv\"\nfields = [{ name = \"y\", type = \"float\" }]\n\n[examples]\nsource = \"s\"\n\n[label]\nkind = \"threshold\"\nfield = \"y\"\nat_least = 1\n\n[model]\nname = \"m\"\n";
        let path = root().join("hash.toml");
        let spec = parse(text, &path, None).expect("a valid spec");
        // published snapshots and summaries record it: XXH3 of the bytes, as 16 hex digits
        assert_eq!(spec.hash, "58a20eb6e2231fdd");
        let spaced = parse(&format!("{text}\n"), &path, None).expect("still valid");
        assert_ne!(spaced.hash, spec.hash, "any byte changes the hash");
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
}
