//! Collection: each worker's share of the source files, parsed into typed rows, and the probe
//! queries parsed by the same rules.

pub mod ingest;
pub mod queries;
pub mod read;
