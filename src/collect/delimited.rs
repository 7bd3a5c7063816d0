//! Delimited lines: a CSV or TSV line split into its fields by position, each read by the row
//! rules ([`crate::collect::row`]).
//!
//! This is the second half of collection's hot path, so it allocates only the row it returns:
//! fields are split into a reused [`LineScratch`], a line without quotes is split in place
//! without copying, and only a line with quotes goes through csv-core.

use std::ops::Range;

use dataflows::fact::{Row, Value};
use dataflows::plan::{Format, SourcePlan};
use memchr::memchr;

use crate::collect::row::{self, Reject, UTF8_BOM};

/// Reusable buffers for [`parse_delimited`], so that parsing a line allocates only its row. Keep one
/// per reading thread and pass it to every call.
#[derive(Debug, Default)]
pub struct LineScratch {
    /// The CSV parser for lines with quotes, and the format it was built for; built on first
    /// use, as building it is far dearer than a line.
    quoted: Option<(Format, Box<csv_core::Reader>)>,
    /// Field bytes with quoting undone, as csv-core writes them.
    unquoted: Vec<u8>,
    /// Where each field ends in `unquoted`, as csv-core writes them.
    ends: Vec<usize>,
    /// Each field's bytes: a range of the line, or of `unquoted` (see [`FieldBytes`]).
    spans: Vec<Range<usize>>,
}

impl LineScratch {
    /// Empty buffers; they grow to fit the lines parsed.
    pub fn new() -> LineScratch {
        LineScratch::default()
    }
}

/// Which bytes [`LineScratch::spans`] index after [`split_fields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldBytes {
    /// The line itself: nothing was quoted.
    Line,
    /// [`LineScratch::unquoted`].
    Unquoted,
}

/// Parses a CSV or TSV line of `source` into a row.
///
/// Fields are split with csv-core's rules for the source's format (RFC 4180 quotes for CSV, no
/// quoting for TSV), and each field's text is read by [`row::read_text`]: trimmed, and missing
/// when empty unless the field is required, which rejects the line.
pub fn parse_delimited(
    bytes: &[u8],
    source: &SourcePlan,
    scratch: &mut LineScratch,
) -> Result<Row, Reject> {
    let field_bytes = split_fields(bytes, source.format, scratch)?;
    if scratch.spans.len() != source.fields.len() {
        return Err(Reject::FieldCount {
            expected: source.fields.len(),
            found: scratch.spans.len(),
        });
    }
    let text = match field_bytes {
        FieldBytes::Line => bytes,
        FieldBytes::Unquoted => &scratch.unquoted[..],
    };
    let mut row = Vec::with_capacity(source.fields.len());
    for (field, span) in source.fields.iter().zip(&scratch.spans) {
        let value = row::read_text(&text[span.clone()], field)?;
        if field.required && matches!(value, Value::Missing) {
            return Err(row::required_empty(field));
        }
        row.push(value);
    }
    Ok(row)
}

/// Checks that a line is UTF-8 and has no line break, and splits it into fields, leaving their
/// ranges in `scratch.spans`.
///
/// A line without quotes (any line, for TSV) splits at every delimiter, which is what csv-core
/// would do, only without copying; a line with quotes goes through csv-core. The common case
/// is one pass over the line: it finds the delimiters, and the UTF-8 check runs only for lines
/// with non-ASCII bytes. Lines are short, so one pass beats several `memchr` calls, each with
/// its own set-up.
fn split_fields(
    bytes: &[u8],
    format: Format,
    scratch: &mut LineScratch,
) -> Result<FieldBytes, Reject> {
    match split_plain(bytes, format, &mut scratch.spans) {
        PlainSplit::Ascii => Ok(FieldBytes::Line),
        PlainSplit::NonAscii => {
            check_utf8(bytes)?;
            Ok(FieldBytes::Line)
        }
        PlainSplit::NeedsParser => {
            check_utf8(bytes)?;
            if let Some(byte) = memchr(b'\n', bytes) {
                return Err(Reject::LineBreak { byte });
            }
            split_quoted(bytes, format, scratch)?;
            Ok(FieldBytes::Unquoted)
        }
    }
}

/// What [`split_plain`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlainSplit {
    /// The line is ASCII and split.
    Ascii,
    /// The line is split but has non-ASCII bytes, so it may not be UTF-8.
    NonAscii,
    /// The line has a quote (in CSV) or a line break, which the plain split cannot handle.
    NeedsParser,
}

/// Splits a line at each delimiter, as ranges of the line, unless it has a quote (in CSV) or a
/// line break.
///
/// It looks at eight bytes at a time (SWAR): a word with no delimiter, quote or line break,
/// which is most words, costs a few arithmetic operations and no unpredictable branch.
fn split_plain(bytes: &[u8], format: Format, spans: &mut Vec<Range<usize>>) -> PlainSplit {
    spans.clear();
    // Only delimited formats are split: JSON Lines never get here (see `row::parse_line`).
    let delimiter = format.delimiter().unwrap_or(b',');
    // Quoting off means no byte is a quote: looking for `\n` twice finds nothing new.
    let quote = if format == Format::Csv { b'"' } else { b'\n' };
    let body_start = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let (words, rest) = bytes[body_start..].as_chunks::<8>();
    let (delimiters, quotes, line_breaks) = (
        repeat_byte(delimiter),
        repeat_byte(quote),
        repeat_byte(b'\n'),
    );
    let mut start = body_start;
    let mut word_start = body_start;
    let mut high_bits = 0;
    for word in words {
        let word = u64::from_le_bytes(*word);
        high_bits |= word;
        if zero_bytes(word ^ quotes) | zero_bytes(word ^ line_breaks) != 0 {
            return PlainSplit::NeedsParser;
        }
        // One high bit per delimiter byte, lowest address lowest.
        let mut found = zero_bytes(word ^ delimiters);
        while found != 0 {
            let end = word_start + (found.trailing_zeros() / 8) as usize;
            spans.push(start..end);
            start = end + 1;
            found &= found - 1;
        }
        word_start += 8;
    }
    for (index, &byte) in rest.iter().enumerate() {
        if byte == delimiter {
            let end = word_start + index;
            spans.push(start..end);
            start = end + 1;
        } else if byte == quote || byte == b'\n' {
            return PlainSplit::NeedsParser;
        }
        high_bits |= u64::from(byte);
    }
    spans.push(start..bytes.len());
    if high_bits & repeat_byte(0x80) == 0 {
        PlainSplit::Ascii
    } else {
        PlainSplit::NonAscii
    }
}

/// A word with `byte` in each of its eight bytes.
const fn repeat_byte(byte: u8) -> u64 {
    u64::from_le_bytes([byte; 8])
}

/// A word with the high bit set in exactly the bytes of `word` that are zero. Unlike the
/// shorter `(word - 0x01..) & !word & 0x80..`, it has no false positives after a zero byte.
const fn zero_bytes(word: u64) -> u64 {
    let low_bits = repeat_byte(0x7f);
    !(((word & low_bits) + low_bits) | word | low_bits)
}

/// Checks that the whole line is UTF-8.
fn check_utf8(bytes: &[u8]) -> Result<(), Reject> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(()),
        Err(error) => Err(Reject::InvalidUtf8 {
            byte: error.valid_up_to(),
        }),
    }
}

/// Splits a line without line breaks with csv-core, as ranges of `scratch.unquoted`.
fn split_quoted(bytes: &[u8], format: Format, scratch: &mut LineScratch) -> Result<(), Reject> {
    scratch.spans.clear();
    // csv-core reads no record from empty input, but an empty line is one empty field, as it
    // is on the unquoted path.
    if bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes).is_empty() {
        scratch.spans.push(0..0);
        return Ok(());
    }
    let reader = match &mut scratch.quoted {
        Some((built_for, reader)) if *built_for == format => reader,
        slot => &mut slot.insert((format, Box::new(csv_reader(format)))).1,
    };
    reader.reset();
    // Quoting only removes bytes, so the fields fit in the line's length; the loop below
    // grows the buffers anyway rather than trust that.
    if scratch.unquoted.len() < bytes.len() {
        scratch.unquoted.resize(bytes.len(), 0);
    }
    if scratch.ends.len() < 16 {
        scratch.ends.resize(16, 0);
    }
    let mut input = bytes;
    let mut written = 0;
    let mut ended = 0;
    loop {
        let (result, read, wrote, ends_written) = reader.read_record(
            input,
            &mut scratch.unquoted[written..],
            &mut scratch.ends[ended..],
        );
        input = &input[read..];
        written += wrote;
        ended += ends_written;
        match result {
            // An empty input next tells csv-core the line is over.
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull => {
                let grown = (scratch.unquoted.len() * 2).max(16);
                scratch.unquoted.resize(grown, 0);
            }
            csv_core::ReadRecordResult::OutputEndsFull => {
                let grown = scratch.ends.len() * 2;
                scratch.ends.resize(grown, 0);
            }
            csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
        }
    }
    if !input.is_empty() {
        // The only record terminator is `\n`, which `split_fields` has ruled out; report the
        // record's end as a line break rather than drop the rest silently.
        return Err(Reject::LineBreak {
            byte: (bytes.len() - input.len()).saturating_sub(1),
        });
    }
    let mut start = 0;
    for &end in &scratch.ends[..ended] {
        scratch.spans.push(start..end);
        start = end;
    }
    Ok(())
}

/// A csv-core reader for one line of `format`.
fn csv_reader(format: Format) -> csv_core::Reader {
    csv_core::ReaderBuilder::new()
        .delimiter(format.delimiter().unwrap_or(b','))
        .quoting(format == Format::Csv)
        // Lines arrive without `\n`, and `\r` inside a line is data, not the end of a record.
        .terminator(csv_core::Terminator::Any(b'\n'))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    use dataflows::fact::Real;
    use dataflows::hashing::symbol;
    use dataflows::plan::FieldKind;
    use proptest::prelude::*;

    use crate::collect::row::parse_line;
    use crate::collect::testing::{Cell, cells, every_kind, field, parse, source, write_row};

    #[test]
    fn a_line_parses_into_typed_values() {
        let row = parse(
            b" 42 ,0.5,\"rex, jr\", ball | park ||,1767225600,1767225600999",
            &every_kind(Format::Csv),
        );
        assert_eq!(
            row,
            Ok(vec![
                Value::Int(42),
                Value::Real(Real(0.5)),
                Value::Text(symbol(b"rex, jr")),
                Value::List(vec![symbol(b"ball"), symbol(b"park")]),
                Value::Time(1_767_225_600),
                Value::Time(1_767_225_600),
            ])
        );
    }

    #[test]
    fn empty_fields_are_missing_unless_required() {
        let schema = every_kind(Format::Csv);
        assert_eq!(parse(b",, ,| |,,", &schema), Ok(vec![Value::Missing; 6]));
        let required = source(
            Format::Csv,
            vec![
                field("dog", FieldKind::Text, true),
                field("tags", FieldKind::List { separator: b'|' }, true),
            ],
        );
        let reject = parse(b" ,a", &required).expect_err("an empty required field");
        assert_eq!(reject.to_string(), "field `dog` is required but empty");
        let reject = parse(b"a,||", &required).expect_err("an empty required list");
        assert_eq!(reject.to_string(), "field `tags` is required but empty");
    }

    #[test]
    fn line_shape_is_checked() {
        let schema = source(
            Format::Csv,
            vec![
                field("a", FieldKind::Text, false),
                field("b", FieldKind::Text, false),
                field("c", FieldKind::Text, false),
            ],
        );
        let reject = parse(b"x,y", &schema).expect_err("too few fields");
        assert_eq!(reject.to_string(), "expected 3 fields, found 2");
        let reject = parse(b"x,\"y,z\",w,v", &schema).expect_err("too many fields");
        assert_eq!(
            reject,
            Reject::FieldCount {
                expected: 3,
                found: 4
            }
        );
        let reject = parse(b"x,\xff,z", &schema).expect_err("not UTF-8");
        assert_eq!(reject.to_string(), "invalid UTF-8 at byte 2");
        let reject = parse(b"x,\"y\nz\",w", &schema).expect_err("two lines");
        assert_eq!(reject, Reject::LineBreak { byte: 4 });
        // An empty line is one empty field.
        let single = source(Format::Csv, vec![field("a", FieldKind::Text, false)]);
        assert_eq!(parse(b"", &single), Ok(vec![Value::Missing]));
        assert_eq!(parse(b"\xef\xbb\xbf", &single), Ok(vec![Value::Missing]));
    }

    #[test]
    fn tsv_has_no_quoting() {
        let schema = source(
            Format::Tsv,
            vec![
                field("a", FieldKind::Text, false),
                field("b", FieldKind::Text, false),
            ],
        );
        // A quoted tab still separates fields.
        assert_eq!(
            parse(b"\"x\ty\"\t,z", &schema),
            Err(Reject::FieldCount {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(
            parse(b"\"x,y\"\t z ", &schema),
            Ok(vec![
                Value::Text(symbol(b"\"x,y\"")),
                Value::Text(symbol(b"z"))
            ])
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_data() {
        let schema = source(Format::Csv, vec![field("n", FieldKind::Int, true)]);
        assert_eq!(parse(b"\xef\xbb\xbf12", &schema), Ok(vec![Value::Int(12)]));
        assert_eq!(
            parse(b"\xef\xbb\xbf\"12\"", &schema),
            Ok(vec![Value::Int(12)])
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), prop::sample::select(b",\t\"\r\n| 0123456789.-e".to_vec())],
                0..80,
            ),
        ) {
            let mut scratch = LineScratch::new();
            for format in [Format::Csv, Format::Tsv] {
                if let Err(reject) = parse_line(&bytes, &every_kind(format), &mut scratch) {
                    let _ = reject.to_string();
                }
            }
        }

        #[test]
        fn written_rows_parse_back(cells in cells()) {
            let mut scratch = LineScratch::new();
            let (line, row) = write_row(&cells, Format::Csv);
            prop_assert_eq!(parse_line(line.as_bytes(), &every_kind(Format::Csv), &mut scratch), Ok(row));
        }

        #[test]
        fn written_tsv_rows_parse_back(cells in cells()) {
            // TSV has no quoting, so its texts hold no tabs.
            let cells: Vec<Cell> = cells.into_iter().map(|cell| match cell {
                Cell::Text(text, quote) => Cell::Text(text.replace('\t', " "), quote),
                Cell::List(items, quote) => Cell::List(items.iter().map(|item| item.replace('\t', " ")).collect(), quote),
                other => other,
            }).collect();
            let mut scratch = LineScratch::new();
            let (line, row) = write_row(&cells, Format::Tsv);
            prop_assert_eq!(parse_line(line.as_bytes(), &every_kind(Format::Tsv), &mut scratch), Ok(row));
        }

        /// The unquoted fast path splits exactly as csv-core would.
        #[test]
        fn unquoted_lines_split_as_csv_core_does(
            bom in any::<bool>(),
            body in prop::collection::vec(prop::sample::select(b"ab,\t \r\xef\xbb\xbf".to_vec()), 0..30),
        ) {
            let mut bytes = if bom { UTF8_BOM.to_vec() } else { Vec::new() };
            bytes.extend(body);
            for format in [Format::Csv, Format::Tsv] {
                let mut scratch = LineScratch::new();
                prop_assert_ne!(split_plain(&bytes, format, &mut scratch.spans), PlainSplit::NeedsParser);
                let plain: Vec<Vec<u8>> = scratch.spans.iter().map(|span| bytes[span.clone()].to_vec()).collect();
                split_quoted(&bytes, format, &mut scratch).expect("no line break");
                let quoted: Vec<Vec<u8>> = scratch.spans.iter().map(|span| scratch.unquoted[span.clone()].to_vec()).collect();
                prop_assert_eq!(plain, quoted);
            }
        }
    }
}
