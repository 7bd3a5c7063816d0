//! How pooch runs: the command line's building blocks. Reading specs and source files,
//! driving the workers, writing outputs and snapshots, supervising which model version
//! serves, and generating the Sniffable data.

pub mod generate;
pub mod generate_criteo;
pub mod http;
pub mod ingest;
pub mod job;
pub mod loadgen;
pub mod models;
pub mod output;
pub mod queries;
pub mod read;
pub mod serving;
pub mod snapshot;
pub mod spec;
pub mod supervisor;
