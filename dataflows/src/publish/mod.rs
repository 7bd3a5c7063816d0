//! Publishing: immutable model versions, and their arrangement on every worker.
pub mod model;
pub mod versions;
