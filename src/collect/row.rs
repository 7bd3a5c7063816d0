//! The row rules: how a field's text or JSON value becomes a [`Value`], by the field's name and
//! kind, the same for a CSV or TSV line, a JSON Lines line, a queries-file line and an HTTP
//! request, so that a model is asked about the features it was trained on.
//!
//! Every path reduces a field to a [`FieldInput`] (text, a JSON number, a boolean, an array,
//! ...) and reads it with [`read_field`]. [`parse_line`] reads a source line; a query is read
//! by `crate::collect::queries`, which handles only what is query-specific and hands every
//! field value here through [`read_json`].
//!
//! # The rules
//!
//! These are the rules the source path has always had, which the models were trained on.
//!
//! - **Missing.** An absent JSON key, `null`, and text that is empty or all ASCII whitespace
//!   are [`Value::Missing`]. Missing is a value, not an error.
//! - **Trimming.** Text (a CSV or TSV field with quoting undone, a JSON string with escapes
//!   decoded) is trimmed of ASCII whitespace before it is read, so `" dog-17"` is `dog-17`.
//! - **Text reads as its kind.** An `int` is an optionally signed decimal integer within 64
//!   bits (`"3"`, `"+7"`; not `"1.0"` or `"1e3"`); a `float` is any finite decimal or
//!   scientific number; a `string` is the hash of the trimmed text; a `timestamp` in seconds
//!   or milliseconds is unsigned decimal digits (milliseconds are truncated to seconds); an
//!   `rfc3339` timestamp is an RFC 3339 time at or after 1970.
//! - **Lists.** Text for a `strings` field is split at the field's separator; a JSON array of
//!   strings gives its items. Either way each item is trimmed, empty items are skipped, and a
//!   list with no items left is missing. An array item that is not a string is an error.
//! - **JSON numbers** read as an `int` when whole and within `i64`, in any notation (`1e3`);
//!   as a `float` when finite; as a timestamp in seconds or milliseconds when whole and not
//!   negative; and as a `string` by their text, so that `196` keys as `"196"` does. An integer's
//!   text is as written; another number's is serde_json's shortest (`0.5`, `1e21`). A JSON
//!   number for a list or an RFC 3339 time is an error.
//! - **JSON booleans** are the strings `"true"` and `"false"` for a `string` field, and an
//!   error for any other kind. A JSON object is always an error.
//! - **Required fields.** A source line whose required field is missing is rejected
//!   ([`check_required`]). A query is an event to score, not a fact: it carries no example id,
//!   label or truth, which sources often require, so a query requires only its entity
//!   (checked in `queries`), and a required field it leaves out reads as missing. Nor does it
//!   need the time field, which a spec makes required: without one it is asked at the end of
//!   the input.
//! - **A key given twice** counts as its last value. (A JSON Lines line must still have every
//!   one readable; a query is read from a JSON object, which keeps only the last.)
//!
//! A reject names the field and quotes its text: [`Reject`].

use dataflows::fact::{Real, Row, Symbol, Value};
use dataflows::hashing::symbol;
use dataflows::plan::{FieldKind, FieldPlan, Format, SourcePlan, TimeUnit};
use serde_json::Value as Json;

use crate::collect::delimited::{self, LineScratch};
use crate::collect::json_lines;

/// How much of an unreadable field a [`Reject`] quotes, in characters.
pub(crate) const EXCERPT_CHARS: usize = 64;

/// The byte order mark some tools write at the start of a UTF-8 file. csv-core drops it from the
/// start of its input, so the unquoted fast path of the delimited reader drops it too, and so
/// do the JSON Lines reader and the queries file.
pub(crate) const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Why a line (or a query) is not a row. Display gives a message naming the field, e.g.
/// "field `time`: cannot read \"12ab\" as a timestamp in seconds".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// The line is not UTF-8.
    #[error("invalid UTF-8 at byte {byte}")]
    InvalidUtf8 {
        /// Where in the line the first invalid sequence starts.
        byte: usize,
    },
    /// The line holds a `\n`; a fact is one line, so a quoted field cannot span lines.
    #[error("line break at byte {byte}: a fact must fit on one line")]
    LineBreak {
        /// Where in the line the `\n` is.
        byte: usize,
    },
    /// The line has more or fewer fields than the source.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// The number of fields of the source.
        expected: usize,
        /// The number of fields in the line.
        found: usize,
    },
    /// A required field is empty.
    #[error("field `{field}` is required but empty")]
    RequiredEmpty {
        /// The field's name.
        field: String,
    },
    /// A field's text does not read as its kind.
    #[error("field `{field}`: cannot read {text:?} as {expected}")]
    Unreadable {
        /// The field's name.
        field: String,
        /// The field's text, cut to 64 characters.
        text: String,
        /// What the field should hold, e.g. "a timestamp in seconds".
        expected: &'static str,
    },
    /// A JSON Lines line is not JSON.
    #[error("invalid JSON at column {column}: {problem}")]
    InvalidJson {
        /// The 1-based column, in bytes, where the JSON parser gave up; 0 for an empty line.
        column: usize,
        /// What the JSON parser found wrong, e.g. "expected `,` or `}`".
        problem: String,
    },
    /// A JSON Lines line is JSON, but not an object.
    #[error("expected a JSON object, found {found}")]
    NotJsonObject {
        /// What the line holds instead, e.g. "a JSON array".
        found: &'static str,
    },
    /// A field holds a JSON value of a type that cannot be its kind.
    #[error("field `{field}`: expected {expected}, found {found}")]
    JsonType {
        /// The field's name.
        field: String,
        /// What the field should hold, e.g. "an integer".
        expected: &'static str,
        /// What it holds, e.g. "a JSON array".
        found: &'static str,
    },
}

/// Parses one line of `source` into a row, one value per field, by the rules above.
///
/// CSV and TSV lines are split by position with csv-core's rules for the source's format
/// (RFC 4180 quotes for CSV, no quoting for TSV): see [`crate::collect::delimited`]. A JSON
/// Lines line is one object whose keys name the fields; keys outside the schema are ignored,
/// as real logs carry more than a source reads: see [`crate::collect::json_lines`]. A line
/// that was truncated by the reader should be dead-lettered by the caller rather than passed
/// here, but any bytes at all are safe to pass.
pub fn parse_line(
    bytes: &[u8],
    source: &SourcePlan,
    scratch: &mut LineScratch,
) -> Result<Row, Reject> {
    if source.format == Format::JsonLines {
        return json_lines::parse_json_line(bytes, &source.fields);
    }
    delimited::parse_delimited(bytes, source, scratch)
}

/// One field's value as a line or a query gives it, before it is read as the field's kind.
#[derive(Debug)]
pub enum FieldInput<'a> {
    /// JSON `null`. (An absent key is missing too; a caller need not make an input for it.)
    Null,
    /// Text, untrimmed: a CSV or TSV field with quoting undone, or a JSON string with its
    /// escapes decoded.
    Text(&'a [u8]),
    /// A JSON number.
    Number(JsonNumber),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON array. Only a list field looks at its items, so for any other kind a reader may
    /// skip them and pass empty [`ListItems`].
    Array(ListItems),
    /// A JSON object.
    Object,
}

impl FieldInput<'_> {
    /// What the input is, for a message about a value of the wrong type.
    fn found(&self) -> &'static str {
        match self {
            FieldInput::Null => "null",
            FieldInput::Text(_) => "a JSON string",
            FieldInput::Number(_) => "a JSON number",
            FieldInput::Bool(_) => "a JSON boolean",
            FieldInput::Array(_) => "a JSON array",
            FieldInput::Object => "a JSON object",
        }
    }

    /// What the input is as an item of an array, for a message about a list.
    fn found_in_array(&self) -> &'static str {
        match self {
            FieldInput::Null => "a JSON array holding null",
            FieldInput::Text(_) => "a JSON array holding a string",
            FieldInput::Number(_) => "a JSON array holding a number",
            FieldInput::Bool(_) => "a JSON array holding a boolean",
            FieldInput::Array(_) => "a JSON array holding an array",
            FieldInput::Object => "a JSON array holding an object",
        }
    }
}

/// The items of a JSON array given for a list, read one at a time with [`ListItems::push`]: the
/// symbols of the string items, or what the first item that is not a string was.
#[derive(Debug, Default)]
pub struct ListItems {
    symbols: Vec<Symbol>,
    not_text: Option<&'static str>,
}

impl ListItems {
    /// Adds an item: a string's trimmed text, unless it is empty. Anything else spoils the list,
    /// and later items are then not looked at.
    pub fn push(&mut self, item: FieldInput<'_>) {
        if self.not_text.is_some() {
            return;
        }
        match item {
            FieldInput::Text(text) => {
                let text = text.trim_ascii();
                if !text.is_empty() {
                    self.symbols.push(symbol(text));
                }
            }
            other => self.not_text = Some(other.found_in_array()),
        }
    }
}

/// Reads one field's input as its kind, by the rules in the module doc.
pub fn read_field(input: FieldInput<'_>, field: &FieldPlan) -> Result<Value, Reject> {
    match (input, &field.kind) {
        (FieldInput::Null, _) => Ok(Value::Missing),
        (FieldInput::Text(text), _) => read_text(text, field),
        (FieldInput::Number(number), _) => read_number(number, field),
        (FieldInput::Bool(value), FieldKind::Text) => {
            Ok(Value::Text(symbol(if value { b"true" } else { b"false" })))
        }
        (FieldInput::Array(items), FieldKind::List { .. }) => match items.not_text {
            Some(found) => Err(wrong_type(field, found)),
            None => Ok(list_value(items.symbols)),
        },
        (other, _) => Err(wrong_type(field, other.found())),
    }
}

/// Reads a field's text, trimmed, as its kind: empty text is missing. The text path of
/// [`read_field`], which the delimited reader calls straight for every field.
#[inline]
pub fn read_text(text: &[u8], field: &FieldPlan) -> Result<Value, Reject> {
    let text = text.trim_ascii();
    if text.is_empty() {
        return Ok(Value::Missing);
    }
    parse_field(text, &field.kind).map_err(|expected| Reject::Unreadable {
        field: field.name.clone(),
        text: excerpt(text),
        expected,
    })
}

/// Reads a field of a query, given as a parsed JSON value, by the same rules.
pub fn read_json(json: &Json, field: &FieldPlan) -> Result<Value, Reject> {
    read_field(json_input(json, &field.kind), field)
}

/// A parsed JSON value as a field's input. An array's items are read only for a list.
fn json_input<'a>(json: &'a Json, kind: &FieldKind) -> FieldInput<'a> {
    match json {
        Json::Null => FieldInput::Null,
        Json::Bool(value) => FieldInput::Bool(*value),
        Json::Number(number) => FieldInput::Number(JsonNumber::from(number)),
        Json::String(text) => FieldInput::Text(text.as_bytes()),
        Json::Array(values) => {
            let mut items = ListItems::default();
            if matches!(kind, FieldKind::List { .. }) {
                for value in values {
                    // An item's own items never matter: an array in an array spoils the list.
                    items.push(json_input(value, &FieldKind::Text));
                }
            }
            FieldInput::Array(items)
        }
        Json::Object(_) => FieldInput::Object,
    }
}

/// The first required field of a source that a row leaves missing, as a reject.
pub fn check_required(fields: &[FieldPlan], row: &[Value]) -> Result<(), Reject> {
    match fields
        .iter()
        .zip(row)
        .find(|(field, value)| field.required && matches!(value, Value::Missing))
    {
        Some((field, _)) => Err(required_empty(field)),
        None => Ok(()),
    }
}

/// The reject for a required field that is missing.
#[cold]
pub(crate) fn required_empty(field: &FieldPlan) -> Reject {
    Reject::RequiredEmpty {
        field: field.name.clone(),
    }
}

/// A list of symbols as a value: missing when empty.
fn list_value(symbols: Vec<Symbol>) -> Value {
    if symbols.is_empty() {
        Value::Missing
    } else {
        Value::List(symbols)
    }
}

/// The reject for a JSON value of a type the field's kind cannot hold.
#[cold]
fn wrong_type(field: &FieldPlan, found: &'static str) -> Reject {
    Reject::JsonType {
        field: field.name.clone(),
        expected: json_expectation(&field.kind),
        found,
    }
}

/// What a field holds, in a message about a JSON value of the wrong type.
fn json_expectation(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Int => "an integer",
        FieldKind::Real => "a real number",
        FieldKind::Text => "a string, number or boolean",
        FieldKind::List { .. } => "a list of strings",
        FieldKind::Time {
            unit: TimeUnit::Seconds,
        } => "a timestamp in seconds",
        FieldKind::Time {
            unit: TimeUnit::Milliseconds,
        } => "a timestamp in milliseconds",
        FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        } => "an RFC 3339 time in a string",
    }
}

/// Reads a JSON number as the field's kind.
fn read_number(number: JsonNumber, field: &FieldPlan) -> Result<Value, Reject> {
    let (read, expected) = match field.kind {
        FieldKind::Int => (number.as_i64().map(Value::Int), "an integer"),
        FieldKind::Real => (
            number.as_finite_f64().map(|real| Value::Real(Real(real))),
            "a finite real number",
        ),
        FieldKind::Text => return Ok(Value::Text(symbol(number.text().as_bytes()))),
        FieldKind::List { .. }
        | FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        } => return Err(wrong_type(field, "a JSON number")),
        FieldKind::Time {
            unit: TimeUnit::Seconds,
        } => (
            number.as_u64().map(Value::Time),
            "a whole, non-negative timestamp in seconds",
        ),
        FieldKind::Time {
            unit: TimeUnit::Milliseconds,
        } => (
            number
                .as_u64()
                .map(|milliseconds| Value::Time(milliseconds / 1000)),
            "a whole, non-negative timestamp in milliseconds",
        ),
    };
    read.ok_or_else(|| Reject::Unreadable {
        field: field.name.clone(),
        text: number.text(),
        expected,
    })
}

/// A JSON number as serde_json reads it: an integer when written without a fraction or an
/// exponent (and within 64 bits), otherwise the nearest double.
#[derive(Clone, Copy, Debug)]
pub enum JsonNumber {
    /// A whole number written without a fraction or an exponent, not negative.
    Unsigned(u64),
    /// A negative whole number written without a fraction or an exponent.
    Signed(i64),
    /// Any other number.
    Fraction(f64),
}

/// 2^63, just past the largest `i64`, as a double (exactly).
const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
/// 2^64, just past the largest `u64`, as a double (exactly).
const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;

impl From<&serde_json::Number> for JsonNumber {
    /// The number as the streaming reader sees it: serde_json keeps the same three cases.
    fn from(number: &serde_json::Number) -> JsonNumber {
        if let Some(value) = number.as_u64() {
            JsonNumber::Unsigned(value)
        } else if let Some(value) = number.as_i64() {
            JsonNumber::Signed(value)
        } else {
            // Without arbitrary precision every number is one of the three.
            JsonNumber::Fraction(number.as_f64().unwrap_or(f64::NAN))
        }
    }
}

impl JsonNumber {
    /// The number, when it is whole and within `i64`.
    fn as_i64(self) -> Option<i64> {
        match self {
            JsonNumber::Unsigned(value) => i64::try_from(value).ok(),
            JsonNumber::Signed(value) => Some(value),
            JsonNumber::Fraction(value) => (value.fract() == 0.0
                && (-TWO_TO_63..TWO_TO_63).contains(&value))
            .then_some(value as i64),
        }
    }

    /// The number, when it is whole, not negative, and within `u64`.
    fn as_u64(self) -> Option<u64> {
        match self {
            JsonNumber::Unsigned(value) => Some(value),
            JsonNumber::Signed(value) => u64::try_from(value).ok(),
            JsonNumber::Fraction(value) => {
                (value.fract() == 0.0 && (0.0..TWO_TO_64).contains(&value)).then_some(value as u64)
            }
        }
    }

    /// The number as a finite double. serde_json refuses numbers out of a double's range.
    fn as_finite_f64(self) -> Option<f64> {
        let value = match self {
            JsonNumber::Unsigned(value) => value as f64,
            JsonNumber::Signed(value) => value as f64,
            JsonNumber::Fraction(value) => value,
        };
        value.is_finite().then_some(value)
    }

    /// The number's text, which a string field hashes: an integer as written, so that `196`
    /// keys as `"196"` and as the integer 196 do; other numbers as serde_json writes them,
    /// shortest first (`0.5`, `1.0`, `1e+21`), which is how most writers write them.
    fn text(self) -> String {
        match self {
            JsonNumber::Unsigned(value) => value.to_string(),
            JsonNumber::Signed(value) => value.to_string(),
            JsonNumber::Fraction(value) => serde_json::Number::from_f64(value)
                .map_or_else(|| value.to_string(), |number| number.to_string()),
        }
    }
}

/// The start of an unreadable field's text, for a message.
fn excerpt(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Reads one field's bytes as its kind, or says what it should have held. The error is a
/// pointer-sized `&'static str` rather than a [`Reject`], which keeps every return on this hot
/// path small; [`read_text`] builds the message on the rare rejected line.
#[inline]
fn parse_field(text: &[u8], kind: &FieldKind) -> Result<Value, &'static str> {
    match *kind {
        FieldKind::Int => parse_i64(text).map(Value::Int).ok_or("an integer"),
        FieldKind::Real => parse_finite_f64(text)
            .map(|real| Value::Real(Real(real)))
            .ok_or("a finite real number"),
        FieldKind::Text => Ok(Value::Text(symbol(text))),
        FieldKind::List { separator } => Ok(list_value(list_symbols(text, separator))),
        FieldKind::Time {
            unit: TimeUnit::Seconds,
        } => parse_u64(text)
            .map(Value::Time)
            .ok_or("a timestamp in seconds"),
        FieldKind::Time {
            unit: TimeUnit::Milliseconds,
        } => parse_u64(text)
            .map(|milliseconds| Value::Time(milliseconds / 1000))
            .ok_or("a timestamp in milliseconds"),
        FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        } => std::str::from_utf8(text)
            .ok()
            .and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .and_then(|moment| u64::try_from(moment.unix_timestamp()).ok())
            .map(Value::Time)
            .ok_or("an RFC 3339 time at or after 1970"),
    }
}

/// The symbols of a list's items, each trimmed, skipping empty ones.
fn list_symbols(text: &[u8], separator: u8) -> Vec<Symbol> {
    // Most lists are short; starting at the capacity the first push would pick saves a grow.
    let mut items = Vec::with_capacity(4);
    let mut push = |item: &[u8]| {
        let item = item.trim_ascii();
        if !item.is_empty() {
            items.push(symbol(item));
        }
    };
    let mut start = 0;
    for (index, &byte) in text.iter().enumerate() {
        if byte == separator {
            push(&text[start..index]);
            start = index + 1;
        }
    }
    push(&text[start..]);
    items
}

/// Reads an optionally signed decimal integer, refusing anything else and any overflow.
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    // 18 digits cannot overflow, so only the rest need checked arithmetic. Accumulate
    // downwards, so that `i64::MIN`, which has no positive counterpart, reads.
    let (unchecked, checked) = digits.split_at(digits.len().min(18));
    let mut value: i64 = 0;
    for &byte in unchecked {
        value = value * 10 - i64::from(decimal_digit(byte)?);
    }
    for &byte in checked {
        value = value
            .checked_mul(10)?
            .checked_sub(i64::from(decimal_digit(byte)?))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Reads an unsigned decimal integer (digits only), refusing overflow.
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    // 19 digits cannot overflow, so only the rest need checked arithmetic.
    let (unchecked, checked) = text.split_at(text.len().min(19));
    let mut value: u64 = 0;
    for &byte in unchecked {
        value = value * 10 + u64::from(decimal_digit(byte)?);
    }
    for &byte in checked {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(decimal_digit(byte)?))?;
    }
    Some(value)
}

/// The value of an ASCII decimal digit.
fn decimal_digit(byte: u8) -> Option<u8> {
    let digit = byte.wrapping_sub(b'0');
    (digit <= 9).then_some(digit)
}

/// Reads a real number, refusing infinities and NaN, which no feature can use.
fn parse_finite_f64(text: &[u8]) -> Option<f64> {
    if let Some(real) = parse_plain_decimal(text) {
        return Some(real);
    }
    std::str::from_utf8(text)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|real| real.is_finite())
}

/// The powers of ten that are exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Reads the common `[+-]digits[.digits]` of at most 19 bytes after the sign quickly, or gives
/// up.
///
/// When the digits as an integer fit in 53 bits and there are at most 22 after the point, both
/// the integer and the power of ten are exact doubles, so one correctly rounded division gives
/// the correctly rounded value (Clinger's fast path): the same bits as `str::parse`.
fn parse_plain_decimal(text: &[u8]) -> Option<f64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    // At most 19 digits, which cannot overflow a `u64`.
    if digits.len() > 19 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut digit_count = 0;
    let mut fraction_digits: Option<usize> = None;
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                digit_count += 1;
                if let Some(count) = &mut fraction_digits {
                    *count += 1;
                }
            }
            b'.' if fraction_digits.is_none() => fraction_digits = Some(0),
            _ => return None,
        }
    }
    let power = EXACT_POWERS_OF_TEN.get(fraction_digits.unwrap_or(0))?;
    if digit_count == 0 || mantissa >= 1 << 53 {
        return None;
    }
    let magnitude = mantissa as f64 / power;
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    use dataflows::plan::Plan;
    use proptest::prelude::*;

    use crate::collect::testing::{
        Cell, cells, field, json_cell, json_string, parse, rfc3339, source, write_row,
    };

    #[test]
    fn rejects_name_the_field_and_quote_the_text() {
        let schema = source(
            Format::Csv,
            vec![field(
                "time",
                FieldKind::Time {
                    unit: TimeUnit::Seconds,
                },
                true,
            )],
        );
        let reject = parse(b"12ab", &schema).expect_err("not a time");
        assert_eq!(
            reject.to_string(),
            "field `time`: cannot read \"12ab\" as a timestamp in seconds"
        );
        assert!(parse(b"-5", &schema).is_err());

        let long = "9".repeat(30) + &"x".repeat(100);
        let reject = parse(long.as_bytes(), &schema).expect_err("not a time");
        let Reject::Unreadable { text, .. } = reject else {
            panic!("expected an unreadable field, got {reject:?}");
        };
        assert_eq!(text.chars().count(), EXCERPT_CHARS + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn numbers_are_checked() {
        let ints = source(Format::Csv, vec![field("n", FieldKind::Int, true)]);
        assert_eq!(
            parse(b"-9223372036854775808", &ints),
            Ok(vec![Value::Int(i64::MIN)])
        );
        assert_eq!(parse(b"+7", &ints), Ok(vec![Value::Int(7)]));
        for bad in [&b"9223372036854775808"[..], b"1.0", b"-", b"1e3", b"0x10"] {
            assert!(
                parse(bad, &ints).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let reals = source(Format::Csv, vec![field("x", FieldKind::Real, true)]);
        assert_eq!(parse(b"1e3", &reals), Ok(vec![Value::Real(Real(1000.0))]));
        for bad in [&b"inf"[..], b"NaN", b"-infinity", b"1e400", b"1,5"] {
            assert!(
                parse(bad, &reals).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let reject = parse(b"nan", &reals).expect_err("NaN is no feature");
        assert_eq!(
            reject.to_string(),
            "field `x`: cannot read \"nan\" as a finite real number"
        );
    }

    proptest! {
        /// The decimal fast path reads exactly what the standard library reads.
        #[test]
        fn plain_decimals_read_as_the_standard_library_reads(
            text in "[+-]?[0-9]{0,21}(\\.[0-9]{0,24})?",
            real in any::<f64>(),
        ) {
            for text in [text, real.to_string(), format!("{real:.3}")] {
                let standard = text.parse::<f64>().ok().filter(|real| real.is_finite());
                let ours = parse_finite_f64(text.as_bytes());
                prop_assert_eq!(ours.map(f64::to_bits), standard.map(f64::to_bits), "{}", text);
            }
        }
    }

    /// A pipeline whose example source has a field of every kind, the entity `dog` required,
    /// timed by an RFC 3339 field, with a feature on every field.
    const EVERY_KIND_SPEC: &str = r#"
[pipeline]
name = "skew"
tick_secs = 3600

[[sources]]
name = "events"
path = "events.csv"
format = "csv"
time = "when"
fields = [
  { name = "count", type = "int" },
  { name = "score", type = "float" },
  { name = "dog", type = "string", required = true },
  { name = "tags", type = "strings", separator = "|" },
  { name = "seen", type = "timestamp" },
  { name = "seen_ms", type = "timestamp", unit = "ms" },
  { name = "breed", type = "string" },
  { name = "when", type = "timestamp", unit = "rfc3339" },
]

[examples]
source = "events"
entity = "dog"

[label]
kind = "threshold"
field = "count"
at_least = 3

[[features]]
name = "count"
kind = "numeric"
field = "count"

[[features]]
name = "count_level"
kind = "categorical"
field = "count"

[[features]]
name = "score"
kind = "numeric"
field = "score"

[[features]]
name = "dog"
kind = "categorical"
field = "dog"

[[features]]
name = "tags"
kind = "categorical"
field = "tags"

[[features]]
name = "seen"
kind = "categorical"
field = "seen"

[[features]]
name = "seen_ms"
kind = "numeric"
field = "seen_ms"

[[features]]
name = "breed"
kind = "categorical"
field = "breed"

[[features]]
name = "hour"
kind = "hour_of_day"

[model]
name = "m"
"#;

    /// The field names of [`EVERY_KIND_SPEC`]'s source, in order.
    const NAMES: [&str; 8] = [
        "count", "score", "dog", "tags", "seen", "seen_ms", "breed", "when",
    ];

    fn every_kind_plan() -> Plan {
        crate::spec::parse(EVERY_KIND_SPEC, std::path::Path::new("skew.toml"), None)
            .expect("the test spec")
            .plan
    }

    /// The example source as it would read a file of `format`.
    fn example_source(plan: &Plan, format: Format) -> SourcePlan {
        let mut source = plan.example_source().clone();
        source.format = format;
        source
    }

    /// The time of the events of the rule tests: a source requires its time field, while a
    /// query without one is asked at the end of the input.
    const WHEN: (&str, &str, &str) = ("when", "2026-01-01T00:00:00Z", "\"2026-01-01T00:00:00Z\"");

    /// One event read four ways: as a CSV line, as a JSON Lines line, as a line of a queries
    /// file and as an HTTP request. A reject or query error is its message.
    #[derive(Debug)]
    struct FourWays {
        csv: Result<Row, String>,
        json_lines: Result<Row, String>,
        queries_file: Result<Row, String>,
        http: Result<Row, String>,
    }

    impl FourWays {
        /// Reads the event whose fields are given as (name, CSV text, JSON value) triples;
        /// fields left out are empty in the CSV line and absent from the JSON objects, except
        /// `dog` (`rex`) and `when` ([`WHEN`]).
        fn read(plan: &Plan, given: &[(&str, &str, &str)]) -> FourWays {
            let mut fields = given.to_vec();
            for default in [("dog", "rex", "\"rex\""), WHEN] {
                if !fields.iter().any(|(name, _, _)| *name == default.0) {
                    fields.push(default);
                }
            }
            let csv_line = NAMES
                .iter()
                .map(|name| {
                    fields
                        .iter()
                        .find(|(field, _, _)| field == name)
                        .map_or("", |(_, text, _)| text)
                })
                .collect::<Vec<_>>()
                .join(",");
            let body = fields
                .iter()
                .map(|(name, _, json)| format!("\"{name}\": {json}"))
                .collect::<Vec<_>>()
                .join(", ");
            FourWays::of_lines(plan, &csv_line, &format!("{{{body}}}"))
        }

        /// Reads a CSV line and a JSON object (as a JSON Lines line and as a query).
        fn of_lines(plan: &Plan, csv_line: &str, json_object: &str) -> FourWays {
            let mut scratch = LineScratch::new();
            let csv = parse_line(
                csv_line.as_bytes(),
                &example_source(plan, Format::Csv),
                &mut scratch,
            )
            .map_err(|reject| reject.to_string());
            let json_lines = parse_line(
                json_object.as_bytes(),
                &example_source(plan, Format::JsonLines),
                &mut scratch,
            )
            .map_err(|reject| reject.to_string());
            let file = crate::collect::queries::parse(json_object.as_bytes(), plan);
            let queries_file = match (&file.queries[..], &file.errors[..]) {
                ([query], []) => Ok(query.row.clone()),
                ([], [error]) => Err(error.reason.clone()),
                _ => panic!("one query line gave {file:?}"),
            };
            let object: serde_json::Map<String, Json> =
                serde_json::from_str(json_object).expect("a JSON object");
            let http = crate::collect::queries::parse_object(&object, 1, plan, false)
                .map(|query| query.row)
                .map_err(|error| error.reason);
            FourWays {
                csv,
                json_lines,
                queries_file,
                http,
            }
        }

        /// The one row all four give, or a panic naming the one that differs.
        fn agreed(&self) -> Result<Row, String> {
            assert_eq!(self.json_lines, self.csv, "JSON Lines against CSV");
            self.agreed_without_csv()
        }

        /// The row the JSON paths all give: for a JSON value that has no CSV text.
        fn agreed_without_csv(&self) -> Result<Row, String> {
            assert_eq!(
                self.queries_file, self.json_lines,
                "queries file against source"
            );
            assert_eq!(self.http, self.json_lines, "HTTP against source");
            self.json_lines.clone()
        }
    }

    /// The value of one field, when the event is read the same four ways.
    fn agreed_value(fields: &[(&str, &str, &str)], name: &str) -> Value {
        let plan = every_kind_plan();
        let row = FourWays::read(&plan, fields).agreed().expect("a row");
        let index = NAMES
            .iter()
            .position(|field| *field == name)
            .expect("a field");
        row[index].clone()
    }

    #[test]
    fn text_is_trimmed_everywhere() {
        let plan = every_kind_plan();
        let row = FourWays::read(&plan, &[("dog", " dog-17", "\" dog-17\"")]).agreed();
        assert_eq!(row.expect("a row")[2], Value::Text(symbol(b"dog-17")));
        assert_eq!(
            agreed_value(&[("breed", "\tcollie ", "\"\\tcollie \"")], "breed"),
            Value::Text(symbol(b"collie"))
        );
        // Only ASCII whitespace is trimmed, in a list item too.
        assert_eq!(
            agreed_value(&[("tags", "\u{a0}ball", "[\"\u{a0}ball \"]")], "tags"),
            Value::List(vec![symbol("\u{a0}ball".as_bytes())])
        );
    }

    #[test]
    fn empty_and_blank_text_are_missing_everywhere() {
        for (csv, json) in [("", "\"\""), ("   ", "\"   \""), ("", "null")] {
            for name in ["breed", "count", "score", "tags", "seen", "seen_ms"] {
                assert_eq!(
                    agreed_value(&[(name, csv, json)], name),
                    Value::Missing,
                    "{name}: {json}"
                );
            }
        }
        // The entity is required by a source line and a query alike.
        let plan = every_kind_plan();
        let blank = FourWays::read(&plan, &[("dog", " ", "\" \"")]);
        assert_eq!(
            blank.csv,
            Err("field `dog` is required but empty".to_owned())
        );
        assert_eq!(blank.json_lines, blank.csv);
        for query in [&blank.queries_file, &blank.http] {
            let reason = query.as_ref().expect_err("no entity");
            assert!(reason.contains("field `dog` is required"), "{reason}");
        }
    }

    #[test]
    fn numbers_in_strings_read_as_their_kind_everywhere() {
        assert_eq!(
            agreed_value(&[("count", " 3", "\" 3\"")], "count"),
            Value::Int(3)
        );
        assert_eq!(
            agreed_value(&[("count", "+7", "\"+7\"")], "count"),
            Value::Int(7)
        );
        assert_eq!(
            agreed_value(&[("score", "0.5", "\"0.5\"")], "score"),
            Value::Real(Real(0.5))
        );
        assert_eq!(
            agreed_value(&[("seen", "12", "\"12\"")], "seen"),
            Value::Time(12)
        );
        assert_eq!(
            agreed_value(&[("seen_ms", "1500", "\"1500\"")], "seen_ms"),
            Value::Time(1)
        );
        // And what does not read is rejected everywhere, with one message.
        let plan = every_kind_plan();
        let bad = FourWays::read(&plan, &[("count", "1.0", "\"1.0\"")]);
        assert_eq!(
            bad.agreed(),
            Err("field `count`: cannot read \"1.0\" as an integer".to_owned())
        );
    }

    #[test]
    fn json_numbers_read_as_their_kind_in_sources_and_queries() {
        let plan = every_kind_plan();
        let read = |json: &str| {
            FourWays::of_lines(
                &plan,
                "",
                &format!("{{\"dog\": \"rex\", \"when\": {}, {json}}}", WHEN.2),
            )
            .agreed_without_csv()
        };
        let row = read(r#""count": 1e3, "score": 7, "seen": 12.0, "seen_ms": 2000.0"#)
            .expect("whole numbers in any notation");
        assert_eq!(
            [&row[0], &row[1], &row[4], &row[5]],
            [
                &Value::Int(1000),
                &Value::Real(Real(7.0)),
                &Value::Time(12),
                &Value::Time(2)
            ]
        );
        // A number in a string field is its text, as the same text in a CSV field is.
        for (json, text) in [("196", "196"), ("-3", "-3"), ("0.5", "0.5")] {
            assert_eq!(
                agreed_value(&[("breed", text, json)], "breed"),
                Value::Text(symbol(text.as_bytes())),
                "{json}"
            );
        }
        assert_eq!(
            read(r#""seen": -1"#),
            Err(
                "field `seen`: cannot read \"-1\" as a whole, non-negative timestamp in seconds"
                    .to_owned()
            )
        );
    }

    #[test]
    fn booleans_are_strings_everywhere_and_nothing_else() {
        assert_eq!(
            agreed_value(&[("breed", "true", "true")], "breed"),
            Value::Text(symbol(b"true"))
        );
        let plan = every_kind_plan();
        let read = |json: &str| {
            FourWays::of_lines(
                &plan,
                "",
                &format!("{{\"dog\": \"rex\", \"when\": {}, {json}}}", WHEN.2),
            )
            .agreed_without_csv()
        };
        assert_eq!(
            read(r#""count": false"#),
            Err("field `count`: expected an integer, found a JSON boolean".to_owned())
        );
    }

    #[test]
    fn lists_read_the_same_from_text_and_arrays_everywhere() {
        let expected = Value::List(vec![symbol(b"ball"), symbol(b"park")]);
        assert_eq!(
            agreed_value(&[("tags", " ball | | park", "\" ball | | park\"")], "tags"),
            expected
        );
        assert_eq!(
            agreed_value(
                &[("tags", "ball|park", "[\" ball\", \"\", \"park \"]")],
                "tags"
            ),
            expected
        );
        assert_eq!(
            agreed_value(&[("tags", "||", "[\"\", \" \"]")], "tags"),
            Value::Missing
        );
        let plan = every_kind_plan();
        let read = |json: &str| {
            FourWays::of_lines(
                &plan,
                "",
                &format!("{{\"dog\": \"rex\", \"when\": {}, {json}}}", WHEN.2),
            )
            .agreed_without_csv()
        };
        for (json, found) in [
            (r#""tags": ["a", 5]"#, "a JSON array holding a number"),
            (r#""tags": ["a", null]"#, "a JSON array holding null"),
            (r#""tags": [["a"]]"#, "a JSON array holding an array"),
            (r#""tags": 5"#, "a JSON number"),
        ] {
            assert_eq!(
                read(json),
                Err(format!(
                    "field `tags`: expected a list of strings, found {found}"
                )),
                "{json}"
            );
        }
    }

    #[test]
    fn times_read_by_their_unit_everywhere() {
        assert_eq!(
            agreed_value(
                &[(
                    "when",
                    " 2026-01-01T01:00:00+01:00 ",
                    "\" 2026-01-01T01:00:00+01:00 \""
                )],
                "when"
            ),
            Value::Time(1_767_225_600)
        );
        assert_eq!(
            agreed_value(&[("seen_ms", "1767225600999", "1767225600999")], "seen_ms"),
            Value::Time(1_767_225_600)
        );
        // A query's `time`, when it is not the time field's name, is unix seconds.
        let plan = every_kind_plan();
        let query = crate::collect::queries::parse(br#"{"dog": "rex", "time": "7200"}"#, &plan);
        assert_eq!(query.queries[0].time, Some(7200));
        assert_eq!(query.queries[0].row[7], Value::Time(7200));
    }

    /// One event with a random value in every field, as a CSV line, a JSON object for a
    /// JSON Lines source and another for a query (each written its own random way), with the
    /// row it should read as.
    fn every_kind_events() -> impl Strategy<Value = (String, String, String, Row)> {
        (
            cells(),
            prop::option::weighted(0.8, "[a-z 0-9\t]{0,6}"),
            prop::option::weighted(0.8, (0..253_402_300_800u64, any::<bool>())),
            prop::collection::vec(any::<u8>(), 16),
        )
            .prop_map(|(cells, breed, when, styles)| {
                let (csv_line, mut row) = write_row(&cells, Format::Csv);
                let mut json_line = Vec::new();
                let mut query = vec!["\"id\": \"q\"".to_owned()];
                for (index, cell) in cells.iter().enumerate() {
                    let name = NAMES[index];
                    let (written, value) = json_cell(cell, styles[index]);
                    assert_eq!(value, row[index]);
                    json_line.extend(written.map(|json| format!("\"{name}\": {json}")));
                    let (written, _) = json_cell(cell, styles[index + 8]);
                    query.extend(written.map(|json| format!("\"{name}\": {json}")));
                }
                let breed = breed.map_or(Cell::Missing, |text| Cell::Text(text, false));
                let breed_text = match &breed {
                    Cell::Text(text, _) => text.clone(),
                    _ => String::new(),
                };
                let (breed_in_line, breed_value) = json_cell(&breed, styles[6]);
                let (breed_in_query, _) = json_cell(&breed, styles[14]);
                json_line.extend(breed_in_line.map(|json| format!("\"breed\": {json}")));
                query.extend(breed_in_query.map(|json| format!("\"breed\": {json}")));
                let when_text = when.map_or(String::new(), |(seconds, fraction)| {
                    rfc3339(seconds, fraction)
                });
                let when_value = when.map_or(Value::Missing, |(seconds, _)| Value::Time(seconds));
                for entries in [&mut json_line, &mut query] {
                    entries.push(format!("\"when\": {}", json_string(&when_text)));
                }
                row.push(breed_value);
                row.push(when_value);
                (
                    format!("{csv_line},{breed_text},{when_text}"),
                    format!("{{{}}}", json_line.join(", ")),
                    format!("{{{}}}", query.join(", ")),
                    row,
                )
            })
    }

    /// The features an event with this row is scored on, as serving builds the event.
    fn features(plan: &Plan, row: &Row) -> dataflows::learn::logistic::Features {
        let time = match plan.example_source().time_field.map(|field| &row[field]) {
            Some(Value::Time(time)) => *time,
            _ => 0,
        };
        let event = dataflows::event::Event::new(plan, 0, time, time, row.clone());
        dataflows::transform::featurize::featurize(plan, &event)
    }

    proptest! {
        /// Any row written as a source line (CSV or JSON Lines) and as a query (a queries-file
        /// line or an HTTP request) reads as the same row, and so gives the same features.
        #[test]
        fn a_row_reads_the_same_as_a_source_line_and_as_a_query(
            (csv_line, json_line, query, row) in every_kind_events(),
        ) {
            let plan = every_kind_plan();
            let source = FourWays::of_lines(&plan, &csv_line, &json_line);
            let asked = FourWays::of_lines(&plan, &csv_line, &query);
            // Without an entity every way rejects the event.
            if row[2] == Value::Missing {
                prop_assert!(source.csv.is_err() && source.json_lines.is_err());
                prop_assert!(asked.queries_file.is_err() && asked.http.is_err());
                return Ok(());
            }
            // A source requires its time field; a query without one is asked at the end of the
            // input, and reads the same otherwise.
            if row[7] == Value::Missing {
                let reject = Err("field `when` is required but empty".to_owned());
                prop_assert_eq!(&source.csv, &reject);
                prop_assert_eq!(&source.json_lines, &reject);
                prop_assert_eq!(&asked.queries_file, &Ok(row.clone()), "{}", query);
                prop_assert_eq!(&asked.http, &Ok(row.clone()), "{}", query);
                return Ok(());
            }
            prop_assert_eq!(&source.csv, &Ok(row.clone()), "{}", csv_line);
            prop_assert_eq!(&source.json_lines, &Ok(row.clone()), "{}", json_line);
            prop_assert_eq!(&asked.queries_file, &Ok(row.clone()), "{}", query);
            prop_assert_eq!(&asked.http, &Ok(row.clone()), "{}", query);
            let trained = features(&plan, &row);
            for read in [&source.csv, &source.json_lines, &asked.queries_file, &asked.http] {
                let read = read.as_ref().expect("a row");
                prop_assert_eq!(&features(&plan, read), &trained);
            }
        }
    }
}
