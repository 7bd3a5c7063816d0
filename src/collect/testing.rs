//! Fixtures shared by collection's tests: sources with a field of every kind, and random rows
//! written as CSV, TSV and JSON Lines lines, each with the row it should read as.

use dataflows::fact::{Real, Row, Symbol, Value};
use dataflows::hashing::symbol;
use dataflows::plan::{FieldKind, FieldPlan, Format, LatePolicy, SourcePlan, TimeUnit};
use proptest::prelude::*;

use crate::collect::delimited::LineScratch;
use crate::collect::row::{Reject, parse_line};

pub(crate) fn field(name: &str, kind: FieldKind, required: bool) -> FieldPlan {
    FieldPlan {
        name: name.to_string(),
        kind,
        required,
    }
}

pub(crate) fn source(format: Format, fields: Vec<FieldPlan>) -> SourcePlan {
    SourcePlan {
        name: "posts".to_string(),
        paths: Vec::new(),
        glob: None,
        format,
        header: false,
        fields,
        // Parsing does not look at how a source is timed or keyed.
        time_field: None,
        lateness_secs: 0,
        late: LatePolicy::Drop,
        key_fields: Vec::new(),
        op_field: None,
        corrects: None,
    }
}

/// A source with one field of every kind, none required.
pub(crate) fn every_kind(format: Format) -> SourcePlan {
    source(
        format,
        vec![
            field("count", FieldKind::Int, false),
            field("score", FieldKind::Real, false),
            field("dog", FieldKind::Text, false),
            field("tags", FieldKind::List { separator: b'|' }, false),
            field(
                "time",
                FieldKind::Time {
                    unit: TimeUnit::Seconds,
                },
                false,
            ),
            field(
                "time_ms",
                FieldKind::Time {
                    unit: TimeUnit::Milliseconds,
                },
                false,
            ),
        ],
    )
}

pub(crate) fn parse(bytes: &[u8], source: &SourcePlan) -> Result<Row, Reject> {
    parse_line(bytes, source, &mut LineScratch::new())
}

/// One field's value as the round-trip test writes it.
#[derive(Clone, Debug)]
pub(crate) enum Cell {
    Missing,
    Int(i64),
    Real(f64, bool),
    Text(String, bool),
    List(Vec<String>, bool),
    Seconds(u64),
    Milliseconds(u64),
}

pub(crate) fn cells() -> impl Strategy<Value = Vec<Cell>> {
    let text = "[a-z é,\"|\t]{0,8}";
    let quote = any::<bool>();
    (
        prop::option::weighted(0.8, any::<i64>().prop_map(Cell::Int)),
        prop::option::weighted(
            0.8,
            (
                any::<f64>().prop_filter("finite", |real| real.is_finite()),
                any::<bool>(),
            )
                .prop_map(|(real, scientific)| Cell::Real(real, scientific)),
        ),
        prop::option::weighted(
            0.8,
            (text, quote).prop_map(|(text, quote)| Cell::Text(text, quote)),
        ),
        prop::option::weighted(
            0.8,
            (prop::collection::vec("[a-z é,\"\t]{0,5}", 0..4), quote)
                .prop_map(|(items, quote)| Cell::List(items, quote)),
        ),
        prop::option::weighted(0.8, any::<u64>().prop_map(Cell::Seconds)),
        prop::option::weighted(0.8, any::<u64>().prop_map(Cell::Milliseconds)),
    )
        .prop_map(|(int, real, text, list, seconds, milliseconds)| {
            [int, real, text, list, seconds, milliseconds]
                .into_iter()
                .map(|cell| cell.unwrap_or(Cell::Missing))
                .collect()
        })
}

/// Writes a field as a CSV writer would (quoting when needed or asked), or as TSV.
pub(crate) fn write_field(text: &str, quote: bool, format: Format) -> String {
    let needs_quotes = text.contains([',', '"']);
    if format == Format::Csv && (quote || needs_quotes) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub(crate) fn text_value(text: &str) -> Value {
    let trimmed = text.as_bytes().trim_ascii();
    if trimmed.is_empty() {
        Value::Missing
    } else {
        Value::Text(symbol(trimmed))
    }
}

pub(crate) fn write_row(cells: &[Cell], format: Format) -> (String, Row) {
    let mut fields = Vec::new();
    let mut row = Vec::new();
    for cell in cells {
        let (text, value) = match cell {
            Cell::Missing => (String::new(), Value::Missing),
            Cell::Int(int) => (format!(" {int}"), Value::Int(*int)),
            Cell::Real(real, true) => (format!("{real:e} "), Value::Real(Real(*real))),
            Cell::Real(real, false) => (format!("{real}"), Value::Real(Real(*real))),
            Cell::Text(text, quote) => (write_field(text, *quote, format), text_value(text)),
            Cell::List(items, quote) => {
                let symbols: Vec<Symbol> = items
                    .iter()
                    .map(|item| item.as_bytes().trim_ascii())
                    .filter(|item| !item.is_empty())
                    .map(symbol)
                    .collect();
                let value = if symbols.is_empty() {
                    Value::Missing
                } else {
                    Value::List(symbols)
                };
                (write_field(&items.join("|"), *quote, format), value)
            }
            Cell::Seconds(seconds) => (seconds.to_string(), Value::Time(*seconds)),
            Cell::Milliseconds(milliseconds) => {
                (milliseconds.to_string(), Value::Time(milliseconds / 1000))
            }
        };
        fields.push(text);
        row.push(value);
    }
    let delimiter = if format == Format::Csv { "," } else { "\t" };
    (fields.join(delimiter), row)
}

/// [`every_kind`] for JSON Lines, with an RFC 3339 time as well.
pub(crate) fn every_json_kind() -> SourcePlan {
    let mut source = every_kind(Format::JsonLines);
    source.fields.push(field(
        "when",
        FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        },
        false,
    ));
    source
}

/// A JSON string holding `text`.
pub(crate) fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string is JSON")
}

/// An RFC 3339 time for `seconds` since 1970, with a fraction of a second when asked.
pub(crate) fn rfc3339(seconds: u64, with_fraction: bool) -> String {
    let moment = time::OffsetDateTime::from_unix_timestamp(seconds as i64)
        .expect("a time before the year 10000");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
        moment.year(),
        u8::from(moment.month()),
        moment.day(),
        moment.hour(),
        moment.minute(),
        moment.second(),
        if with_fraction { ".25" } else { "" }
    )
}

/// One cell of [`cells`] as a JSON value (`None`: the key is left out) and the value it
/// should read as. `style` picks among the ways to write it.
pub(crate) fn json_cell(cell: &Cell, style: u8) -> (Option<String>, Value) {
    let in_string = style % 2 == 1;
    match cell {
        Cell::Missing => (
            [None, Some("null".to_string()), Some("\"\"".to_string())][usize::from(style % 3)]
                .clone(),
            Value::Missing,
        ),
        Cell::Int(int) if in_string => (Some(format!("\" {int}\"")), Value::Int(*int)),
        Cell::Int(int) => (Some(int.to_string()), Value::Int(*int)),
        Cell::Real(real, scientific) => {
            let text = if *scientific {
                format!("{real:e}")
            } else {
                format!("{real}")
            };
            if in_string {
                (Some(json_string(&text)), Value::Real(Real(*real)))
            } else {
                // What serde_json reads the number as, which can differ from `real` in
                // the last bit.
                let read: f64 = serde_json::from_str(&text).expect("a JSON number");
                (Some(text), Value::Real(Real(read)))
            }
        }
        Cell::Text(text, _) => (Some(json_string(text)), text_value(text)),
        Cell::List(items, _) => {
            let symbols: Vec<Symbol> = items
                .iter()
                .map(|item| item.as_bytes().trim_ascii())
                .filter(|item| !item.is_empty())
                .map(symbol)
                .collect();
            let value = if symbols.is_empty() {
                Value::Missing
            } else {
                Value::List(symbols)
            };
            let written = if in_string {
                json_string(&items.join("|"))
            } else {
                serde_json::to_string(items).expect("strings are JSON")
            };
            (Some(written), value)
        }
        Cell::Seconds(seconds) if in_string => {
            (Some(format!("\"{seconds}\"")), Value::Time(*seconds))
        }
        Cell::Seconds(seconds) => (Some(seconds.to_string()), Value::Time(*seconds)),
        Cell::Milliseconds(milliseconds) => {
            let written = if in_string {
                format!("\"{milliseconds}\"")
            } else {
                milliseconds.to_string()
            };
            (Some(written), Value::Time(milliseconds / 1000))
        }
    }
}

/// A JSON value of any shape, for keys the schema does not read.
pub(crate) fn any_json() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|value| value.to_string()),
        any::<i64>().prop_map(|value| value.to_string()),
        "[a-z \"\\\\é]{0,6}".prop_map(|text| json_string(&text)),
        Just("[1, \"two\", [3], {\"four\": null}]".to_string()),
        Just("{\"nested\": {\"deep\": [true, false, 1.5e3]}}".to_string()),
    ]
}

/// A JSON Lines line for a random row of [`every_json_kind`], with extra keys, in random
/// key order and spacing, and the row it should read as.
pub(crate) fn json_rows() -> impl Strategy<Value = (String, Row)> {
    (
        cells(),
        prop::option::weighted(0.8, (0..253_402_300_800u64, any::<bool>())),
        prop::collection::vec(any::<u8>(), 7),
        prop::collection::vec(("extra_[a-z]{0,4}", any_json()), 0..4),
        prop::collection::vec(any::<u32>(), 11),
        any::<bool>(),
    )
        .prop_map(|(cells, when, styles, extras, order, spaced)| {
            let names = ["count", "score", "dog", "tags", "time", "time_ms"];
            let mut entries = Vec::new();
            let mut row = Vec::new();
            for ((name, cell), style) in names.iter().zip(&cells).zip(&styles) {
                let (written, value) = json_cell(cell, *style);
                if let Some(written) = written {
                    entries.push(format!("\"{name}\":{written}"));
                }
                row.push(value);
            }
            match when {
                Some((seconds, with_fraction)) => {
                    let text = rfc3339(seconds, with_fraction);
                    entries.push(format!("\"when\":{}", json_string(&text)));
                    row.push(Value::Time(seconds));
                }
                None if styles[6] % 2 == 0 => row.push(Value::Missing),
                None => {
                    entries.push("\"when\":\"  \"".to_string());
                    row.push(Value::Missing);
                }
            }
            entries.extend(
                extras
                    .into_iter()
                    .map(|(name, value)| format!("\"{name}\":{value}")),
            );
            let mut keyed: Vec<(u32, String)> = order.into_iter().zip(entries).collect();
            keyed.sort();
            let separator = if spaced { " , " } else { "," };
            let body: Vec<String> = keyed.into_iter().map(|(_, entry)| entry).collect();
            (format!("{{{}}}", body.join(separator)), row)
        })
}
