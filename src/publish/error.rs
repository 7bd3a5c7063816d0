//! The one error type of publishing: what went wrong in the snapshot format or store, and in
//! which file, model or version.

use std::path::PathBuf;

use crate::files::FileError;
use crate::publish::format::{
    BYTE_ORDER_MARKER, FORMAT_VERSION, HEADER_BYTES, POINTER_WIDTH_BITS, describe_byte_order,
};

/// What went wrong in the snapshot store, and in which file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The store was asked to keep no versions at all.
    #[error("snapshot store {}: retain must be at least 1, got {retain}", dir.display())]
    InvalidRetain {
        /// The store's directory.
        dir: PathBuf,
        /// The retention asked for.
        retain: usize,
    },
    /// A model name that cannot safely be a directory name.
    #[error("model name {name:?} cannot name a snapshot directory: it {reason}")]
    InvalidModelName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A model version the store will not write.
    #[error("model {model} version {version} cannot be stored: {reason}")]
    UnsupportedModel {
        /// The model's name.
        model: String,
        /// The version offered.
        version: u64,
        /// Why it cannot be stored.
        reason: String,
    },
    /// A version not newer than one already on disk. Versions only go up, so that retention
    /// keeps the latest and a number never names two different models.
    #[error(
        "model {model} version {version} cannot be stored: version {newest_present} is already on disk and versions must increase"
    )]
    StaleVersion {
        /// The model's name.
        model: String,
        /// The version offered.
        version: u64,
        /// The highest version present.
        newest_present: u64,
    },
    /// A model version could not be encoded.
    #[error("model {model} version {version} could not be encoded: {reason}")]
    Encode {
        /// The model's name.
        model: String,
        /// The version.
        version: u64,
        /// What failed.
        reason: String,
    },
    /// A file-system operation failed: the message names the file and what was being done.
    #[error(transparent)]
    Io(#[from] FileError),
    /// The file is too short to hold a header.
    #[error("{}: file is {file_bytes} bytes, shorter than the {HEADER_BYTES}-byte snapshot header", path.display())]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length.
        file_bytes: u64,
    },
    /// The file does not start with the snapshot magic.
    #[error(
        "{}: not a pooch snapshot (starts with \"{}\", expected \"POOCHSNP\")",
        path.display(),
        found.escape_ascii()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// Its first eight bytes.
        found: [u8; 8],
    },
    /// A format version this build cannot read.
    #[error("{}: snapshot format version {found}, but this build reads only version {FORMAT_VERSION}", path.display())]
    UnsupportedFormatVersion {
        /// The file.
        path: PathBuf,
        /// The version it claims.
        found: u32,
    },
    /// The file was written with another byte order (or its marker is damaged).
    #[error(
        "{}: written on a {}, but this one is {}; the payload is not portable",
        path.display(),
        describe_byte_order(*found),
        describe_byte_order(BYTE_ORDER_MARKER.to_ne_bytes())
    )]
    ForeignByteOrder {
        /// The file.
        path: PathBuf,
        /// The marker bytes as found.
        found: [u8; 4],
    },
    /// The file was written with another pointer width.
    #[error(
        "{}: written on a {found_bits}-bit machine, but this one is {POINTER_WIDTH_BITS}-bit; the payload is not portable",
        path.display()
    )]
    ForeignPointerWidth {
        /// The file.
        path: PathBuf,
        /// The pointer width it claims.
        found_bits: u32,
    },
    /// The header claims sections larger than any valid snapshot has.
    #[error("{}: header claims a {section} of {bytes} bytes, more than the {limit} a snapshot can have", path.display())]
    SectionTooLarge {
        /// The file.
        path: PathBuf,
        /// Which section.
        section: &'static str,
        /// The length claimed.
        bytes: u64,
        /// The largest valid length.
        limit: u64,
    },
    /// The header's lengths disagree with the file's: usually a truncated file.
    #[error(
        "{}: header describes {metadata_bytes} bytes of metadata and {payload_bytes} of payload, {} in all with the header, but the file is {file_bytes} bytes",
        path.display(),
        HEADER_BYTES as u128 + u128::from(*metadata_bytes) + u128::from(*payload_bytes)
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// The metadata length claimed.
        metadata_bytes: u64,
        /// The payload length claimed.
        payload_bytes: u64,
        /// The file's actual length.
        file_bytes: u64,
    },
    /// The content does not hash to the stored checksum.
    #[error(
        "{}: checksum mismatch (file says {stored:#018x}, content hashes to {computed:#018x})",
        path.display()
    )]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// The checksum in the header.
        stored: u64,
        /// The checksum of the metadata and payload as read.
        computed: u64,
    },
    /// The metadata is not the JSON this store writes.
    #[error("{}: metadata is not valid: {source}", path.display())]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// The payload is not a valid sparse model, or disagrees with the metadata.
    #[error("{}: payload is not valid: {reason}", path.display())]
    Payload {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A valid snapshot, in the wrong place: its content names another model or version
    /// than its directory and file name do.
    #[error(
        "{}: holds model {found_model:?} version {found_version}, but its place in the store is for model {expected_model:?} version {expected_version}",
        path.display()
    )]
    Misplaced {
        /// The file.
        path: PathBuf,
        /// The model named inside.
        found_model: String,
        /// The version inside.
        found_version: u64,
        /// The model its directory names.
        expected_model: String,
        /// The version its file name gives.
        expected_version: u64,
    },
    /// A snapshot made for other features than the running spec's: it is never served.
    #[error("{}: incompatible with this spec: {reason}", path.display())]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// How its spec differs.
        reason: String,
    },
    /// The manifest is not the JSON this store writes.
    #[error("{}: manifest is not valid: {source}", path.display())]
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// What the JSON parser found.
        source: serde_json::Error,
    },
}
