//! JSON Lines: a line that is one JSON object, read by a streaming visitor straight into a row,
//! each field's value read by the row rules ([`crate::collect::row`]).
//!
//! No JSON value is built per line: keys are matched and strings hashed in place, and only
//! strings with escapes are decoded, into serde_json's own reused buffer. Each field's value
//! becomes a borrowed [`FieldInput`] and goes through [`row::read_field`], as a query's does.

use dataflows::fact::{Row, Value};
use dataflows::plan::{FieldKind, FieldPlan};
use memchr::memchr;

use crate::collect::row::{self, FieldInput, JsonNumber, ListItems, Reject, UTF8_BOM};

/// Parses a JSON Lines line into a row, one value per field of `fields`.
///
/// Each field is read from the key of its name; keys outside the schema are skipped without
/// being kept. A key given twice counts as its last value, but each must be readable. A
/// required field left missing rejects the line. The object is read with serde_json straight
/// into the row, without building a JSON value.
///
/// Kept out of line, so that the CSV path through [`row::parse_line`] stays as small as it was.
#[inline(never)]
pub fn parse_json_line(bytes: &[u8], fields: &[FieldPlan]) -> Result<Row, Reject> {
    // The first line of a file may start with a byte order mark, which is no JSON.
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let bom_bytes = bytes.len() - body.len();
    let text = std::str::from_utf8(body).map_err(|error| Reject::InvalidUtf8 {
        byte: bom_bytes + error.valid_up_to(),
    })?;
    // JSON takes a line break for blank space, but a fact is one line, as it is in CSV.
    if let Some(byte) = memchr(b'\n', body) {
        return Err(Reject::LineBreak {
            byte: bom_bytes + byte,
        });
    }
    let mut row = vec![Value::Missing; fields.len()];
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let object = JsonObject {
        fields,
        row: &mut row,
    };
    let read = serde::de::DeserializeSeed::deserialize(object, &mut deserializer)
        .and_then(|read| deserializer.end().map(|()| read));
    match read {
        Err(error) => return Err(invalid_json(&error, bom_bytes)),
        Ok(Err(reject)) => return Err(reject),
        Ok(Ok(())) => {}
    }
    row::check_required(fields, &row)?;
    Ok(row)
}

/// The reject for a line serde_json could not read, with its message and column apart.
fn invalid_json(error: &serde_json::Error, bom_bytes: usize) -> Reject {
    let message = error.to_string();
    // serde_json ends its message with where it gave up; a line has only one line.
    let position = format!(" at line {} column {}", error.line(), error.column());
    let problem = message
        .strip_suffix(&position)
        .unwrap_or(&message)
        .to_string();
    let column = match error.column() {
        0 => 0,
        column => column + bom_bytes,
    };
    Reject::InvalidJson { column, problem }
}

/// Reads a JSON Lines object into a row. Its value is the first field that could not be read,
/// if any; a line that is not JSON is a serde_json error instead, so that it reads as one.
struct JsonObject<'a> {
    fields: &'a [FieldPlan],
    row: &'a mut [Value],
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonObject<'_> {
    type Value = Result<(), Reject>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        // Any value, so that a line holding something else says what it holds.
        deserializer.deserialize_any(self)
    }
}

impl JsonObject<'_> {
    fn not_an_object(found: &'static str) -> Result<(), Reject> {
        Err(Reject::NotJsonObject { found })
    }
}

impl<'de> serde::de::Visitor<'de> for JsonObject<'_> {
    type Value = Result<(), Reject>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut first_reject = None;
        while let Some(index) = map.next_key_seed(JsonKey {
            fields: self.fields,
        })? {
            let Some(index) = index else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            let field = &self.fields[index];
            match map.next_value_seed(JsonField { field })? {
                Ok(value) => self.row[index] = value,
                Err(reject) => {
                    // Read on all the same: a line that is not JSON says so first.
                    first_reject.get_or_insert(reject);
                }
            }
        }
        Ok(first_reject.map_or(Ok(()), Err))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
        Ok(Self::not_an_object("a JSON array"))
    }

    fn visit_str<E: serde::de::Error>(self, _text: &str) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON string"))
    }

    fn visit_bool<E: serde::de::Error>(self, _value: bool) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON boolean"))
    }

    fn visit_i64<E: serde::de::Error>(self, _value: i64) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON number"))
    }

    fn visit_u64<E: serde::de::Error>(self, _value: u64) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _value: f64) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON number"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("null"))
    }
}

/// Reads a key of a JSON Lines object as the index of the field it names, if any.
struct JsonKey<'a> {
    fields: &'a [FieldPlan],
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonKey<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonKey<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        // Schemas are short, so a scan beats hashing the key.
        Ok(self.fields.iter().position(|field| field.name == key))
    }
}

/// Reads the value of one field of a JSON Lines object as a [`FieldInput`], and that by the row
/// rules, or says why it cannot be.
struct JsonField<'a> {
    field: &'a FieldPlan,
}

impl JsonField<'_> {
    fn read(&self, input: FieldInput<'_>) -> Result<Value, Reject> {
        row::read_field(input, self.field)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonField<'_> {
    type Value = Result<Value, Reject>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonField<'_> {
    type Value = Result<Value, Reject>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "the value of field `{}`", self.field.name)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.read(FieldInput::Null))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(self.read(FieldInput::Text(text.as_bytes())))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(self.read(FieldInput::Bool(value)))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(self.read(FieldInput::Number(JsonNumber::Signed(value))))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(self.read(FieldInput::Number(JsonNumber::Unsigned(value))))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(self.read(FieldInput::Number(JsonNumber::Fraction(value))))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = ListItems::default();
        if matches!(self.field.kind, FieldKind::List { .. }) {
            while seq
                .next_element_seed(JsonListItem { items: &mut items })?
                .is_some()
            {}
        } else {
            // Only a list looks at an array's items.
            serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
        }
        Ok(self.read(FieldInput::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_map(serde::de::IgnoredAny, map)?;
        Ok(self.read(FieldInput::Object))
    }
}

/// Reads an item of a JSON array given for a list into its [`ListItems`], as a
/// [`FieldInput`]: strings are read in place, anything else is skipped and noted.
struct JsonListItem<'a> {
    items: &'a mut ListItems,
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonListItem<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonListItem<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        self.items.push(FieldInput::Text(text.as_bytes()));
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.items.push(FieldInput::Null);
        Ok(())
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        self.items.push(FieldInput::Bool(value));
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        self.items
            .push(FieldInput::Number(JsonNumber::Signed(value)));
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        self.items
            .push(FieldInput::Number(JsonNumber::Unsigned(value)));
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        self.items
            .push(FieldInput::Number(JsonNumber::Fraction(value)));
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
        self.items.push(FieldInput::Array(ListItems::default()));
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_map(serde::de::IgnoredAny, map)?;
        self.items.push(FieldInput::Object);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use dataflows::fact::Real;
    use dataflows::hashing::symbol;
    use dataflows::plan::{FieldKind, Format};
    use proptest::prelude::*;

    use crate::collect::delimited::LineScratch;
    use crate::collect::row::parse_line;
    use crate::collect::testing::{every_json_kind, field, json_rows, parse, source};

    proptest! {
        #[test]
        fn written_json_rows_parse_back((line, row) in json_rows()) {
            let mut scratch = LineScratch::new();
            prop_assert_eq!(parse_line(line.as_bytes(), &every_json_kind(), &mut scratch), Ok(row), "{}", line);
        }

        #[test]
        fn json_parsing_never_panics(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), prop::sample::select(b"{}[]:,\"\\ 0123456789.-eEtrufalsn|".to_vec())],
                0..80,
            ),
        ) {
            if let Err(reject) = parse_line(&bytes, &every_json_kind(), &mut LineScratch::new()) {
                let _ = reject.to_string();
            }
        }

        #[test]
        fn mutated_json_lines_never_panic(
            (line, _) in json_rows(),
            mutations in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(b"{}[]:,\"\\ 0-.e\xff\n".to_vec()), 0..3u8),
                1..6,
            ),
        ) {
            let mut bytes = line.into_bytes();
            for (at, byte, how) in mutations {
                let at = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.push(byte),
                }
            }
            if let Err(reject) = parse_line(&bytes, &every_json_kind(), &mut LineScratch::new()) {
                let _ = reject.to_string();
            }
        }
    }

    fn parse_json(line: &str) -> Result<Row, Reject> {
        parse(line.as_bytes(), &every_json_kind())
    }

    /// The message of a JSON line's reject.
    fn json_reject(line: &str) -> String {
        match parse_json(line) {
            Ok(row) => panic!("{line} parsed as {row:?}"),
            Err(reject) => reject.to_string(),
        }
    }

    #[test]
    fn a_json_line_parses_into_typed_values() {
        let row = parse_json(
            r#"{"user": {"id": 9}, "time_ms": 1767225600999, "dog": "r\u00e9x", "count": 42,
                "score": 0.5, "tags": [" ball ", "", "park"], "time": "1767225600",
                "when": "2026-01-01T01:00:00+01:00", "extra": [1, 2]}"#
                .replace('\n', "")
                .as_str(),
        );
        assert_eq!(
            row,
            Ok(vec![
                Value::Int(42),
                Value::Real(Real(0.5)),
                Value::Text(symbol("réx".as_bytes())),
                Value::List(vec![symbol(b"ball"), symbol(b"park")]),
                Value::Time(1_767_225_600),
                Value::Time(1_767_225_600),
                Value::Time(1_767_225_600),
            ])
        );
        // A byte order mark, escaped keys, and strings for every kind.
        let row = parse_json(
            "\u{feff}{\"c\\u006funt\": \" 7 \", \"score\": \"1e3\", \"tags\": \"a| b |\", \
             \"time_ms\": \"1500\"}",
        );
        assert_eq!(
            row,
            Ok(vec![
                Value::Int(7),
                Value::Real(Real(1000.0)),
                Value::Missing,
                Value::List(vec![symbol(b"a"), symbol(b"b")]),
                Value::Missing,
                Value::Time(1),
                Value::Missing,
            ])
        );
    }

    #[test]
    fn json_numbers_read_as_their_field_kinds() {
        let row = parse_json(r#"{"count": 1e3, "score": -7, "time": 12.0, "time_ms": 2000.0}"#)
            .expect("whole numbers in any notation");
        assert_eq!(
            &row[..6],
            &[
                Value::Int(1000),
                Value::Real(Real(-7.0)),
                Value::Missing,
                Value::Missing,
                Value::Time(12),
                Value::Time(2),
            ]
        );
        // A number or boolean in a string field is its text, so that 196 keys as "196" and as
        // the integer 196 do.
        for (json, text) in [
            ("196", "196"),
            ("-3", "-3"),
            ("0.5", "0.5"),
            ("true", "true"),
            ("false", "false"),
        ] {
            let row = parse_json(&format!("{{\"dog\": {json}}}")).expect("a string field");
            assert_eq!(row[2], Value::Text(symbol(text.as_bytes())), "{json}");
        }
        let row = parse_json(r#"{"dog": 196}"#).expect("a string field");
        assert_eq!(row[2].symbol(), Value::Int(196).symbol());
        assert_eq!(
            parse_json(r#"{"count": -9223372036854775808}"#).map(|row| row[0].clone()),
            Ok(Value::Int(i64::MIN))
        );
    }

    #[test]
    fn absent_null_and_empty_json_fields_are_missing_unless_required() {
        assert_eq!(
            parse_json(r#"{"dog": null, "tags": [], "when": " ", "count": "", "other": 1}"#),
            Ok(vec![Value::Missing; 7])
        );
        assert_eq!(parse_json("{}"), Ok(vec![Value::Missing; 7]));
        let required = source(
            Format::JsonLines,
            vec![
                field("dog", FieldKind::Text, true),
                field("tags", FieldKind::List { separator: b'|' }, true),
            ],
        );
        for (line, field) in [
            (r#"{"tags": ["a"]}"#, "dog"),
            (r#"{"dog": null, "tags": ["a"]}"#, "dog"),
            (r#"{"dog": "  ", "tags": ["a"]}"#, "dog"),
            (r#"{"dog": "rex", "tags": ["", " "]}"#, "tags"),
            (r#"{"dog": "rex", "tags": "||"}"#, "tags"),
        ] {
            let reject = parse(line.as_bytes(), &required).expect_err(line);
            assert_eq!(
                reject.to_string(),
                format!("field `{field}` is required but empty"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_json_key_given_twice_counts_as_its_last_value() {
        let row = parse_json(r#"{"count": 1, "count": null, "dog": "a", "dog": "b"}"#);
        assert_eq!(
            row.map(|row| (row[0].clone(), row[2].clone())),
            Ok((Value::Missing, Value::Text(symbol(b"b"))))
        );
        assert!(parse_json(r#"{"count": "x", "count": 1}"#).is_err());
    }

    #[test]
    fn lines_that_are_not_json_objects_are_rejected() {
        assert_eq!(
            json_reject(r#"{"count": 1, "dog" "rex"}"#),
            "invalid JSON at column 20: expected `:`"
        );
        assert_eq!(
            json_reject(r#"{"count": 1 "dog": "rex"}"#),
            "invalid JSON at column 13: expected `,` or `}`"
        );
        assert_eq!(
            json_reject(r#"{"count": 1} {"count": 2}"#),
            "invalid JSON at column 14: trailing characters"
        );
        assert_eq!(
            json_reject(""),
            "invalid JSON at column 0: EOF while parsing a value"
        );
        assert_eq!(
            json_reject(r#"{"count": 1, "#),
            "invalid JSON at column 13: EOF while parsing a value"
        );
        // A line that is not JSON says so before any field is read.
        assert_eq!(
            json_reject(r#"{"count": "x", "dog": tru}"#),
            "invalid JSON at column 26: expected ident"
        );
        // Columns count from the line's start, byte order mark included.
        assert_eq!(
            json_reject("\u{feff}{,}"),
            "invalid JSON at column 5: key must be a string"
        );
        for (line, found) in [
            ("[1, 2]", "a JSON array"),
            (r#""rex""#, "a JSON string"),
            ("42", "a JSON number"),
            ("-4.5", "a JSON number"),
            ("null", "null"),
            (" true ", "a JSON boolean"),
        ] {
            assert_eq!(
                json_reject(line),
                format!("expected a JSON object, found {found}"),
                "{line}"
            );
        }
        let reject = parse(b"{\"dog\": \"r\xffx\"}", &every_json_kind()).expect_err("not UTF-8");
        assert_eq!(reject, Reject::InvalidUtf8 { byte: 10 });
        let reject = parse(b"{\"dog\":\n\"rex\"}", &every_json_kind()).expect_err("two lines");
        assert_eq!(reject, Reject::LineBreak { byte: 7 });
    }

    #[test]
    fn json_values_of_the_wrong_type_are_rejected() {
        for (line, message) in [
            (
                r#"{"count": [1]}"#,
                "field `count`: expected an integer, found a JSON array",
            ),
            (
                r#"{"count": true}"#,
                "field `count`: expected an integer, found a JSON boolean",
            ),
            (
                r#"{"score": {"value": 1}}"#,
                "field `score`: expected a real number, found a JSON object",
            ),
            (
                r#"{"dog": {"name": "rex"}}"#,
                "field `dog`: expected a string, number or boolean, found a JSON object",
            ),
            (
                r#"{"dog": ["rex"]}"#,
                "field `dog`: expected a string, number or boolean, found a JSON array",
            ),
            (
                r#"{"tags": 5}"#,
                "field `tags`: expected a list of strings, found a JSON number",
            ),
            (
                r#"{"tags": ["a", 5, "b"]}"#,
                "field `tags`: expected a list of strings, found a JSON array holding a number",
            ),
            (
                r#"{"tags": ["a", null]}"#,
                "field `tags`: expected a list of strings, found a JSON array holding null",
            ),
            (
                r#"{"tags": [["a"]]}"#,
                "field `tags`: expected a list of strings, found a JSON array holding an array",
            ),
            (
                r#"{"time": false}"#,
                "field `time`: expected a timestamp in seconds, found a JSON boolean",
            ),
            (
                r#"{"when": 1767225600}"#,
                "field `when`: expected an RFC 3339 time in a string, found a JSON number",
            ),
        ] {
            assert_eq!(json_reject(line), message, "{line}");
        }
    }

    #[test]
    fn json_numbers_and_strings_are_checked() {
        for (line, message) in [
            (
                r#"{"count": 1.5}"#,
                "field `count`: cannot read \"1.5\" as an integer",
            ),
            (
                r#"{"count": 9223372036854775808}"#,
                "field `count`: cannot read \"9223372036854775808\" as an integer",
            ),
            (
                r#"{"count": 1e19}"#,
                "field `count`: cannot read \"1e+19\" as an integer",
            ),
            (
                r#"{"time": -1}"#,
                "field `time`: cannot read \"-1\" as a whole, non-negative timestamp in seconds",
            ),
            (
                r#"{"time_ms": 0.5}"#,
                "field `time_ms`: cannot read \"0.5\" as a whole, non-negative timestamp in \
                 milliseconds",
            ),
            (
                r#"{"time": "12ab"}"#,
                "field `time`: cannot read \"12ab\" as a timestamp in seconds",
            ),
            (
                r#"{"count": "1.0"}"#,
                "field `count`: cannot read \"1.0\" as an integer",
            ),
            (
                r#"{"score": "NaN"}"#,
                "field `score`: cannot read \"NaN\" as a finite real number",
            ),
            (
                r#"{"when": "2026-01-01"}"#,
                "field `when`: cannot read \"2026-01-01\" as an RFC 3339 time at or after 1970",
            ),
            (
                r#"{"when": "1969-12-31T23:59:59Z"}"#,
                "field `when`: cannot read \"1969-12-31T23:59:59Z\" as an RFC 3339 time at or \
                 after 1970",
            ),
        ] {
            assert_eq!(json_reject(line), message, "{line}");
        }
        // serde_json refuses a number no double can hold, as not JSON it can read.
        assert_eq!(
            json_reject(r#"{"score": 1e400}"#),
            "invalid JSON at column 15: number out of range"
        );
        // The first unreadable field is the one named.
        assert_eq!(
            json_reject(r#"{"time": -1, "count": 1.5}"#),
            "field `time`: cannot read \"-1\" as a whole, non-negative timestamp in seconds"
        );
    }
}
