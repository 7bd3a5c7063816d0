//! How pooch runs.
