//! Publishing: model versions on disk, in a checked file format, kept in a store.
//!
//! | module | owns |
//! |---|---|
//! | [`format`](mod@format) | one snapshot file: header, checksum, payload codec, reading a file back |
//! | [`store`] | a directory of snapshots: writing, listing, retention, manifests |
//! | [`error`] | [`SnapshotError`], what went wrong in either, naming the file and version |

pub mod error;
pub mod format;
pub mod store;

#[cfg(test)]
mod fixtures;

pub use error::SnapshotError;
pub use format::{Snapshot, SnapshotMeta, read};
pub use store::{
    Manifest, ManifestEntry, NewestGood, SnapshotStore, StoredVersion, validate_model_name,
};
