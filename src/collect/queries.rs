//! Probe queries: a JSON Lines file of events to score, each naming its fields by the example
//! source's field names.
//!
//! ```json
//! {"id": "q1", "dog": "dog-17", "hashtags": ["ball", "park"], "time": 1769644800}
//! ```
//!
//! Every field's value is read by the row rules ([`crate::collect::row`]), exactly as a source
//! line's is, so that a query asks about the features the model was trained on. This module
//! handles only what is query-specific:
//!
//! - `id` names the query in its answer (a string or a number; `line-N` when absent);
//! - `time` is when it is asked: unix seconds, read as a timestamp field in seconds is, or the
//!   example source's time field by its own name, read by that field's kind; without either
//!   the query is asked at the end of the input. Where the time field is itself named `time`,
//!   `time` is read by its kind;
//! - `model`, which the serving endpoint checks;
//! - keys outside the schema are errors in a queries file and ignored over HTTP;
//! - the entity field is required: it names whom the query is about.
//!
//! A malformed query becomes an error line in the answers, naming the line and the problem; it
//! never stops the run.

use std::path::Path;

use dataflows::fact::{Row, Time, Value};
use dataflows::plan::{FieldKind, FieldPlan, Plan, SourcePlan, TimeUnit};
use serde_json::Value as Json;

use crate::collect::row::{self, UTF8_BOM};

/// One well-formed query.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeQuery {
    /// How the answer names the query: its `id`, verbatim.
    pub id: Json,
    /// When it is asked; `None` for the end of the input.
    pub time: Option<Time>,
    /// The event's fields in the example source's schema.
    pub row: Row,
}

/// A line of the queries file that is not a query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryError {
    /// The 1-based line number.
    pub line: u64,
    /// The query's `id`, if the line got that far.
    pub id: Option<Json>,
    /// What is wrong.
    pub reason: String,
}

/// The queries of a file, and its malformed lines.
#[derive(Clone, Debug, Default)]
pub struct Queries {
    /// Well-formed queries, in file order.
    pub queries: Vec<ProbeQuery>,
    /// Malformed lines.
    pub errors: Vec<QueryError>,
}

/// Reads a queries file. Only an unreadable file is an error; bad lines are reported in
/// [`Queries::errors`].
pub fn read(path: &Path, plan: &Plan) -> Result<Queries, std::io::Error> {
    let text = std::fs::read(path)?;
    Ok(parse(&text, plan))
}

/// Parses the bytes of a queries file.
pub fn parse(bytes: &[u8], plan: &Plan) -> Queries {
    let mut queries = Queries::default();
    // A byte order mark is no JSON, as in a JSON Lines source.
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    for (index, line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let number = index as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(line, number, plan) {
            Ok(query) => queries.queries.push(query),
            Err(error) => queries.errors.push(error),
        }
    }
    queries
}

/// Parses one query (a JSON object), as for a line of a queries file.
pub fn parse_query(json: &[u8], plan: &Plan) -> Result<ProbeQuery, QueryError> {
    parse_line(json, 1, plan)
}

fn parse_line(line: &[u8], number: u64, plan: &Plan) -> Result<ProbeQuery, QueryError> {
    let error = |reason: String| QueryError {
        line: number,
        id: None,
        reason,
    };
    match serde_json::from_slice::<Json>(line) {
        Ok(Json::Object(object)) => parse_object(&object, number, plan, true),
        Ok(_) => Err(error("a query must be a JSON object".to_owned())),
        Err(parse) => Err(error(format!("invalid JSON: {parse}"))),
    }
}

/// Parses one query given as a JSON object. Keys other than the example source's fields,
/// `id`, `time` and `model` are errors when `strict`, and ignored otherwise: a client that
/// sends a field the spec does not know yet still gets its prediction.
pub fn parse_object(
    object: &serde_json::Map<String, Json>,
    number: u64,
    plan: &Plan,
    strict: bool,
) -> Result<ProbeQuery, QueryError> {
    let error = |id: Option<Json>, reason: String| QueryError {
        line: number,
        id,
        reason,
    };
    let id = object
        .get("id")
        .cloned()
        .unwrap_or_else(|| Json::from(format!("line-{number}")));
    let source = plan.example_source();

    for key in object.keys().filter(|_| strict) {
        if key != "id" && key != "time" && key != "model" && source.field(key).is_none() {
            let fields = source
                .fields
                .iter()
                .map(|field| field.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(error(
                Some(id),
                format!("unknown field `{key}` (fields: {fields})"),
            ));
        }
    }
    let time =
        asked_time(object, source).map_err(|reject| error(Some(id.clone()), reject.to_string()))?;
    let mut row = Vec::with_capacity(source.fields.len());
    for (index, field) in source.fields.iter().enumerate() {
        let value = if Some(index) == source.time_field {
            time.map_or(Value::Missing, Value::Time)
        } else {
            match object.get(&field.name) {
                None => Value::Missing,
                Some(json) => row::read_json(json, field)
                    .map_err(|reject| error(Some(id.clone()), reject.to_string()))?,
            }
        };
        row.push(value);
    }
    if let Some(entity_field) = plan.examples.entity_field
        && row[entity_field] == Value::Missing
    {
        let entity = &source.fields[entity_field];
        return Err(error(
            Some(id),
            format!(
                "field `{}` is required: it names whom the query is about",
                entity.name
            ),
        ));
    }
    Ok(ProbeQuery { id, time, row })
}

/// When a query is asked, if it says: its `time`, or the example source's time field by name.
fn asked_time(
    object: &serde_json::Map<String, Json>,
    source: &SourcePlan,
) -> Result<Option<Time>, row::Reject> {
    let time_field = source.time_field.map(|field| &source.fields[field]);
    let seconds;
    let (json, field) = match (object.get("time"), time_field) {
        (Some(json), Some(field)) if field.name == "time" => (json, field),
        (Some(json), _) => {
            seconds = unix_seconds();
            (json, &seconds)
        }
        (None, Some(field)) => match object.get(&field.name) {
            Some(json) => (json, field),
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    Ok(match row::read_json(json, field)? {
        Value::Time(time) => Some(time),
        // A time field reads as a time or as missing.
        _ => None,
    })
}

/// How `time` reads when it is not the time field's name: as a timestamp field in seconds.
fn unix_seconds() -> FieldPlan {
    FieldPlan {
        name: "time".to_owned(),
        kind: FieldKind::Time {
            unit: TimeUnit::Seconds,
        },
        required: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use dataflows::hashing::symbol;

    fn plan() -> Plan {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/sniffable.toml");
        crate::spec::load(&path, None).expect("shipped spec").plan
    }

    #[test]
    fn good_and_bad_lines() {
        let plan = plan();
        let input = br#"{"id": "q1", "dog": "dog-1", "hashtags": ["ball", " park "], "time": 7200}
{"id": 2, "dog": "dog-2"}

not json
{"id": "q4", "hashtags": ["ball"]}
{"id": "q5", "dog": "dog-1", "dgo": 3}
{"id": "q6", "dog": "dog-1", "time": -5}
"#;
        let queries = parse(input, &plan);
        assert_eq!(queries.queries.len(), 2);
        let first = &queries.queries[0];
        assert_eq!(first.time, Some(7200));
        assert_eq!(
            first.row[2],
            Value::List(vec![symbol(b"ball"), symbol(b"park")])
        );
        assert_eq!(queries.queries[1].time, None);
        assert_eq!(queries.queries[1].id, Json::from(2));

        let reasons: Vec<(u64, &str)> = queries
            .errors
            .iter()
            .map(|error| (error.line, error.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4);
        assert_eq!(reasons[0].0, 4);
        assert!(reasons[0].1.starts_with("invalid JSON"));
        assert!(reasons[1].1.contains("field `dog` is required"));
        assert!(reasons[2].1.contains("unknown field `dgo`"));
        assert_eq!(
            reasons[3].1,
            "field `time`: cannot read \"-5\" as a whole, non-negative timestamp in seconds"
        );
    }
}
