//! Collection: each worker's share of the source files, parsed into typed rows, and the probe
//! queries parsed by the same rules.

pub mod delimited; // CSV and TSV lines split into fields
pub mod json_lines; // JSON Lines lines read by a streaming visitor
pub mod queries; // probe queries and HTTP requests: what is query-specific
pub mod read; // a worker's shares of every file, merged by event time
pub mod row; // the row rules: a field's text or JSON value becomes a value
pub mod shard; // one worker's share of a file, line by line, followed as it grows
#[cfg(test)]
mod testing; // fixtures for collection's tests: every field kind, random rows
