//! Probe queries: a JSON Lines file of events to score, each naming its fields by the example
//! source's field names.
//!
//! ```json
//! {"id": "q1", "dog": "dog-17", "hashtags": ["ball", "park"], "time": 1769644800}
//! ```
//!
//! `id` names the query in its answer (a string or a number; the line number when absent).
//! `time` is when it is asked, in unix seconds; without it the query is asked at the end of
//! the input. A malformed query becomes an error line in the answers, naming the line and
//! the problem; it never stops the run.

use std::path::Path;

use dataflows::fact::{Real, Row, Time, Value};
use dataflows::hashing::symbol;
use dataflows::plan::{FieldKind, Plan, TimeUnit};
use serde_json::Value as Json;

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
    let time_name = source
        .time_field
        .map(|field| source.fields[field].name.as_str());

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
    let time = match object
        .get("time")
        .or_else(|| time_name.and_then(|name| object.get(name)))
    {
        None | Some(Json::Null) => None,
        Some(value) => match value.as_u64() {
            Some(seconds) => Some(seconds),
            None => {
                return Err(error(
                    Some(id),
                    format!("`time` must be whole unix seconds, not {value}"),
                ));
            }
        },
    };

    let mut row = Vec::with_capacity(source.fields.len());
    for (index, field) in source.fields.iter().enumerate() {
        let value = if Some(index) == source.time_field {
            time.map(Value::Time).unwrap_or(Value::Missing)
        } else {
            match object.get(&field.name) {
                None | Some(Json::Null) => Value::Missing,
                Some(json) => to_value(json, &field.kind).map_err(|reason| {
                    error(
                        Some(id.clone()),
                        format!("field `{}`: {reason}", field.name),
                    )
                })?,
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

fn to_value(json: &Json, kind: &FieldKind) -> Result<Value, String> {
    match kind {
        FieldKind::Int => json
            .as_i64()
            .map(Value::Int)
            .ok_or_else(|| format!("expected a whole number, not {json}")),
        FieldKind::Real => json
            .as_f64()
            .filter(|number| number.is_finite())
            .map(|number| Value::Real(Real(number)))
            .ok_or_else(|| format!("expected a number, not {json}")),
        FieldKind::Text => match json {
            Json::String(text) => Ok(Value::Text(symbol(text.as_bytes()))),
            Json::Number(number) => Ok(Value::Text(symbol(number.to_string().as_bytes()))),
            other => Err(format!("expected a string, not {other}")),
        },
        FieldKind::List { separator } => {
            let items: Vec<String> = match json {
                Json::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("expected a list of strings, found {item}"))
                    })
                    .collect::<Result<_, _>>()?,
                Json::String(text) => text
                    .split(char::from(*separator))
                    .map(str::to_owned)
                    .collect(),
                other => return Err(format!("expected a list of strings, not {other}")),
            };
            let symbols: Vec<u64> = items
                .iter()
                .map(|item| item.trim())
                .filter(|item| !item.is_empty())
                .map(|item| symbol(item.as_bytes()))
                .collect();
            Ok(if symbols.is_empty() {
                Value::Missing
            } else {
                Value::List(symbols)
            })
        }
        FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        } => json
            .as_str()
            .and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .and_then(|moment| u64::try_from(moment.unix_timestamp()).ok())
            .map(Value::Time)
            .ok_or_else(|| format!("expected an RFC 3339 time, not {json}")),
        FieldKind::Time { unit } => {
            let number = json
                .as_u64()
                .ok_or_else(|| format!("expected a whole, non-negative time, not {json}"))?;
            Ok(Value::Time(match unit {
                TimeUnit::Milliseconds => number / 1000,
                TimeUnit::Seconds | TimeUnit::Rfc3339 => number,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(reasons[3].1.contains("`time` must be whole unix seconds"));
    }
}
