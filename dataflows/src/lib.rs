//! What pooch computes. (Crate documentation is completed with the graph.)
pub mod fact;
pub mod hashing;
pub mod learn;
pub mod model;
pub mod plan;
