//! `[[sources]]`: the files a pipeline reads, their format and typed fields, the key that
//! names a fact, retractions (`op`) and corrections (`corrects`), and finding a source or a
//! field by name for the sections that refer to them.

use std::path::{Path, PathBuf};

use dataflows::plan::{FieldKind, FieldPlan, Format, LatePolicy, SourcePlan, TimeUnit};
use serde::Deserialize;

use super::{Checker, SpecError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceSection {
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

/// The fields with a role in a source: its event time, the key naming a fact, the op field.
struct Roles {
    time_field: Option<usize>,
    key_fields: Vec<usize>,
    op_field: Option<usize>,
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

impl Checker<'_> {
    /// Every source, in the spec's order, with the corrections between them resolved.
    pub(super) fn sources(
        &self,
        sections: Vec<SourceSection>,
        base: &Path,
    ) -> Result<Vec<SourcePlan>, SpecError> {
        if sections.is_empty() {
            return Err(self.invalid("sources", "a pipeline needs at least one [[sources]] table"));
        }
        if sections.len() > usize::from(u16::MAX) {
            return Err(self.invalid("sources", "too many sources"));
        }
        let mut sources = Vec::new();
        let mut corrections: Vec<(usize, String)> = Vec::new();
        for (index, section) in sections.into_iter().enumerate() {
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
            self.correction(&mut sources, index, &target_name)?;
        }
        Ok(sources)
    }

    /// Source `index` corrects the source `target_name`: both must name facts by the same key.
    fn correction(
        &self,
        sources: &mut [SourcePlan],
        index: usize,
        target_name: &str,
    ) -> Result<(), SpecError> {
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
        Ok(())
    }

    /// The source called `name`, for the key `key` that names it.
    pub(super) fn find_source(
        &self,
        sources: &[SourcePlan],
        key: &str,
        name: &str,
    ) -> Result<u16, SpecError> {
        sources
            .iter()
            .position(|source| source.name == name)
            .map(|index| index as u16)
            .ok_or_else(|| {
                let names = sources
                    .iter()
                    .map(|source| source.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.invalid(key, format!("unknown source `{name}` (sources: {names})"))
            })
    }

    /// The field called `name` of source `source`, for the key `key` that names it.
    pub(super) fn find_field(
        &self,
        sources: &[SourcePlan],
        key: &str,
        source: u16,
        name: &str,
    ) -> Result<usize, SpecError> {
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
    }

    /// One `[[sources]]` table, `key` being `sources[N]`; `corrects` is resolved by the caller.
    fn source(
        &self,
        key: &str,
        section: SourceSection,
        base: &Path,
    ) -> Result<SourcePlan, SpecError> {
        let (paths, glob) = self.paths(key, section.path, section.paths, section.glob, base)?;
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
            fields.push(self.field(&field_key, field)?);
        }
        let roles = self.roles(
            key,
            &mut fields,
            section.time.as_deref(),
            section.key.as_deref().unwrap_or_default(),
            section.op.as_deref(),
            section.corrects.is_some(),
        )?;
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
            time_field: roles.time_field,
            lateness_secs: section.lateness_secs,
            late,
            key_fields: roles.key_fields,
            op_field: roles.op_field,
            corrects: None,
        })
    }

    /// The files of a source, from exactly one of `path`, `paths` and `glob`, relative to
    /// `base`; the pattern itself too when it is a glob.
    fn paths(
        &self,
        key: &str,
        path: Option<PathBuf>,
        paths: Option<Vec<PathBuf>>,
        glob: Option<String>,
        base: &Path,
    ) -> Result<(Vec<PathBuf>, Option<String>), SpecError> {
        let absolute = |path: PathBuf| {
            if path.is_absolute() {
                path
            } else {
                base.join(path)
            }
        };
        match (path, paths, glob) {
            (Some(path), None, None) => Ok((vec![absolute(path)], None)),
            (None, Some(paths), None) if !paths.is_empty() => {
                Ok((paths.into_iter().map(absolute).collect(), None))
            }
            (None, Some(_), None) => {
                Err(self.invalid(format!("{key}.paths"), "must list at least one file"))
            }
            (None, None, Some(pattern)) => {
                let pattern = absolute(PathBuf::from(pattern))
                    .to_string_lossy()
                    .into_owned();
                let paths = expand_glob(&pattern)
                    .map_err(|reason| self.invalid(format!("{key}.glob"), reason))?;
                Ok((paths, Some(pattern)))
            }
            (None, None, None) => {
                Err(self.invalid(format!("{key}.path"), "is required (or `paths`, or `glob`)"))
            }
            _ => Err(self.invalid(key, "give one of `path`, `paths` and `glob`")),
        }
    }

    /// One field of a source, `field_key` being `sources[N].fields[M]`.
    fn field(&self, field_key: &str, field: FieldSection) -> Result<FieldPlan, SpecError> {
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
        Ok(FieldPlan {
            name: field.name,
            kind,
            required: field.required,
        })
    }

    /// The fields named by `time`, `key` and `op`. The time and the key fields become
    /// required: a fact without them could not be placed, or named to be withdrawn.
    fn roles(
        &self,
        key: &str,
        fields: &mut [FieldPlan],
        time: Option<&str>,
        key_names: &[String],
        op: Option<&str>,
        corrects: bool,
    ) -> Result<Roles, SpecError> {
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
        let time_field = time.map(|name| find("time", name)).transpose()?;
        let key_fields = key_names
            .iter()
            .map(|name| find("key", name))
            .collect::<Result<Vec<_>, _>>()?;
        let op_field = op.map(|name| find("op", name)).transpose()?;
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
        if corrects && key_fields.is_empty() {
            return Err(self.invalid(
                format!("{key}.key"),
                "is required with `corrects`: a correction names its fact by key",
            ));
        }
        // a fact that cannot be named cannot be withdrawn
        for &field in &key_fields {
            fields[field].required = true;
        }
        Ok(Roles {
            time_field,
            key_fields,
            op_field,
        })
    }
}

#[cfg(test)]
mod tests {
    use dataflows::plan::{FieldKind, Format, LatePolicy, TimeUnit};

    use crate::spec::tests::root;
    use crate::spec::{Spec, parse};

    /// The sniffable spec with one more source, `extra`, before `[examples]`.
    fn with_source(table: &str) -> Result<Spec, String> {
        let path = root().join("pipelines/sniffable.toml");
        let text = std::fs::read_to_string(&path).expect("shipped spec");
        let text = text.replacen(
            "[examples]",
            &format!("[[sources]]\nname = \"extra\"\n{table}\n\n[examples]"),
            1,
        );
        parse(&text, &path, None).map_err(|error| error.to_string())
    }

    fn rejected(table: &str) -> String {
        match with_source(table) {
            Ok(_) => panic!("accepted: {table}"),
            Err(message) => message,
        }
    }

    #[test]
    fn a_source_is_read_with_its_roles() {
        let spec = with_source(
            "path = \"extra.tsv\"\nformat = \"tsv\"\ntime = \"at\"\nkey = [\"post\", \"liker\"]\nop = \"op\"\nlate = \"admit\"\nlateness_secs = 5\nfields = [\n  { name = \"post\", type = \"string\" },\n  { name = \"liker\", type = \"string\" },\n  { name = \"tags\", type = \"strings\", separator = \";\" },\n  { name = \"op\", type = \"string\" },\n  { name = \"at\", type = \"timestamp\", unit = \"ms\" },\n]",
        )
        .unwrap_or_else(|message| panic!("{message}"));
        let data = root().join("pipelines/../data/sniffable");
        let extra = &spec.plan.sources[3];
        assert_eq!(extra.name, "extra");
        assert_eq!(extra.paths, vec![data.join("extra.tsv")]);
        assert_eq!(extra.format, Format::Tsv);
        assert_eq!(extra.time_field, Some(4));
        assert_eq!(extra.key_fields, vec![0, 1]);
        assert_eq!(extra.op_field, Some(3));
        assert_eq!(extra.late, LatePolicy::Admit);
        assert_eq!(extra.lateness_secs, 5);
        assert_eq!(extra.fields[2].kind, FieldKind::List { separator: b';' });
        assert_eq!(
            extra.fields[4].kind,
            FieldKind::Time {
                unit: TimeUnit::Milliseconds
            }
        );
        // the time and the key are required; the others are not
        let required: Vec<bool> = extra.fields.iter().map(|field| field.required).collect();
        assert_eq!(required, vec![true, true, false, false, true]);
        assert_eq!(extra.corrects, None);
    }

    #[test]
    fn a_correction_names_the_source_it_corrects() {
        let fields = "fields = [\n  { name = \"post\", type = \"string\" },\n  { name = \"dog\", type = \"string\" },\n]";
        let likes_keyed = |text: String| {
            text.replacen(
                "name = \"likes\"                    # `dog` likes `post`",
                "name = \"likes\"\nkey = [\"post\", \"dog\"]",
                1,
            )
        };
        let path = root().join("pipelines/sniffable.toml");
        let text = std::fs::read_to_string(&path).expect("shipped spec");
        let correcting = |key: &str| {
            let text = likes_keyed(text.clone()).replacen(
                "[examples]",
                &format!(
                    "[[sources]]\nname = \"unlikes\"\npath = \"unlikes.csv\"\nformat = \"csv\"\ncorrects = \"likes\"\nkey = {key}\n{fields}\n\n[examples]"
                ),
                1,
            );
            parse(&text, &path, None).map_err(|error| error.to_string())
        };
        let spec = correcting("[\"post\", \"dog\"]").unwrap_or_else(|message| panic!("{message}"));
        assert_eq!(spec.plan.sources[3].corrects, Some(2));
        let message = correcting("[\"dog\", \"post\"]").expect_err("another key order");
        assert!(
            message.contains(
                "`sources[3].key`: must name the same fields as the key of `likes`: post, dog"
            ),
            "{message}"
        );

        let message = rejected(&format!(
            "path = \"x.csv\"\nformat = \"csv\"\ncorrects = \"likes\"\nkey = [\"post\"]\n{fields}"
        ));
        assert!(
            message.contains(
                "`sources[3].corrects`: source `likes` has no `key`, so its facts cannot be named"
            ),
            "{message}"
        );
        let message = rejected(&format!(
            "path = \"x.csv\"\nformat = \"csv\"\ncorrects = \"extra\"\nkey = [\"post\"]\n{fields}"
        ));
        assert!(
            message.contains("`sources[3].corrects`: a source cannot correct itself; use `op` for retractions in the same source"),
            "{message}"
        );
        let message = rejected(&format!(
            "path = \"x.csv\"\nformat = \"csv\"\ncorrects = \"nope\"\nkey = [\"post\"]\n{fields}"
        ));
        assert!(
            message.contains("`sources[3].corrects`: unknown source `nope`"),
            "{message}"
        );
        let message = rejected(&format!(
            "path = \"x.csv\"\nformat = \"csv\"\ncorrects = \"likes\"\n{fields}"
        ));
        assert!(
            message.contains(
                "`sources[3].key`: is required with `corrects`: a correction names its fact by key"
            ),
            "{message}"
        );
    }

    #[test]
    fn bad_sources_name_the_key() {
        let field = "fields = [{ name = \"k\", type = \"string\" }]";
        let cases = [
            (
                format!("format = \"csv\"\n{field}"),
                "`sources[3].path`: is required (or `paths`, or `glob`)",
            ),
            (
                format!("path = \"a.csv\"\nglob = \"*.csv\"\nformat = \"csv\"\n{field}"),
                "`sources[3]`: give one of `path`, `paths` and `glob`",
            ),
            (
                format!("paths = []\nformat = \"csv\"\n{field}"),
                "`sources[3].paths`: must list at least one file",
            ),
            (
                format!("path = \"a.xml\"\nformat = \"xml\"\n{field}"),
                "`sources[3].format`: unknown format `xml` (formats: csv, tsv, jsonl)",
            ),
            (
                format!("path = \"a.jsonl\"\nformat = \"jsonl\"\nheader = true\n{field}"),
                "`sources[3].header`: JSON Lines files have no header",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = []".to_owned(),
                "`sources[3].fields`: a source needs at least one field",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"string\" }, { name = \"k\", type = \"int\" }]".to_owned(),
                "`sources[3].fields[1].name`: field `k` is defined twice",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"bool\" }]".to_owned(),
                "`sources[3].fields[0].type`: unknown type `bool` (types: int, float, string, strings, timestamp)",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"strings\", separator = \"ab\" }]".to_owned(),
                "`sources[3].fields[0].separator`: must be a single ASCII character",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"int\", separator = \"|\" }]".to_owned(),
                "`sources[3].fields[0].separator`: only fields of type `strings` have a separator",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"timestamp\", unit = \"h\" }]".to_owned(),
                "`sources[3].fields[0].unit`: unknown unit `h` (units: s, ms, rfc3339)",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"int\", unit = \"s\" }]".to_owned(),
                "`sources[3].fields[0].unit`: only fields of type `timestamp` have a unit",
            ),
            (
                format!("path = \"a.csv\"\nformat = \"csv\"\ntime = \"t\"\n{field}"),
                "`sources[3].time`: no field is called `t` (fields: k)",
            ),
            (
                format!("path = \"a.csv\"\nformat = \"csv\"\ntime = \"k\"\n{field}"),
                "`sources[3].time`: field `k` must have type `timestamp`",
            ),
            (
                "path = \"a.csv\"\nformat = \"csv\"\nop = \"n\"\nkey = [\"k\"]\nfields = [{ name = \"k\", type = \"string\" }, { name = \"n\", type = \"int\" }]".to_owned(),
                "`sources[3].op`: the op field must have type `string`",
            ),
            (
                format!("path = \"a.csv\"\nformat = \"csv\"\nop = \"k\"\n{field}"),
                "`sources[3].key`: is required with `op`: a retraction names its fact by key",
            ),
            (
                format!("path = \"a.csv\"\nformat = \"csv\"\nlate = \"keep\"\n{field}"),
                "`sources[3].late`: unknown policy `keep` (policies: drop, admit)",
            ),
        ];
        for (table, expected) in cases {
            let message = rejected(&table);
            assert!(message.ends_with(expected), "{table}\n{message}");
        }
    }

    #[test]
    fn a_source_defined_twice_is_named() {
        let message = rejected(
            "path = \"a.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"string\" }]\n\n[[sources]]\nname = \"extra\"\npath = \"b.csv\"\nformat = \"csv\"\nfields = [{ name = \"k\", type = \"string\" }]",
        );
        assert!(
            message.ends_with("`sources[4].name`: source `extra` is defined twice"),
            "{message}"
        );
    }

    #[test]
    fn a_glob_lists_the_matching_files_in_name_order() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for name in ["b.csv", "a.csv", "c.txt"] {
            std::fs::write(dir.path().join(name), "").expect("writable");
        }
        std::fs::create_dir(dir.path().join("d.csv")).expect("a directory");
        let spec = with_source(&format!(
            "glob = \"{}/*.csv\"\nformat = \"csv\"\nfields = [{{ name = \"k\", type = \"string\" }}]",
            dir.path().display()
        ))
        .unwrap_or_else(|message| panic!("{message}"));
        let extra = &spec.plan.sources[3];
        // files only: the directory that matches is not read
        assert_eq!(
            extra.paths,
            vec![dir.path().join("a.csv"), dir.path().join("b.csv")]
        );
        assert_eq!(
            extra.glob.as_deref(),
            Some(format!("{}/*.csv", dir.path().display()).as_str())
        );
    }
}
