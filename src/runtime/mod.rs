//! The runtime: running a pipeline's workers, feeding the graph, and writing what it produces.

pub mod job;
pub mod output;
