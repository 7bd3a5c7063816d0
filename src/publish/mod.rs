//! Publishing: versions on disk, in a checked format, kept in a store.

pub mod snapshot;
