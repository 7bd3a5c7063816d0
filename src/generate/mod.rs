//! Data generators: Sniffable, the running example, and Criteo-shaped click rows.

pub mod criteo;
pub mod sniffable;
