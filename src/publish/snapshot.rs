//! The on-disk store of published model versions: one checked, atomically written file per
//! version, a manifest per model, and a limit on how many versions are kept.
//!
//! ```text
//! <dir>/<model>/v00000003.snap   one ModelVersion and what produced it (format below)
//! <dir>/<model>/MANIFEST.json    the retained versions, rewritten after every snapshot
//! ```
//!
//! # Snapshot file format, version 1
//!
//! ```text
//! offset  bytes  field
//!      0      8  magic b"POOCHSNP"
//!      8      4  format version, u32 little-endian (1)
//!     12      4  byte-order marker: 0x0102_0304 in the writer's native byte order
//!     16      4  the writer's pointer width in bits, u32 little-endian (64 or 32)
//!     20      8  metadata length M in bytes, u64 little-endian
//!     28      8  payload length P in bytes, u64 little-endian
//!     36      8  XXH3-64 of the metadata and payload bytes, u64 little-endian
//!     44      M  metadata: JSON (model name, version, epoch, metrics, spec hash, offsets)
//!   44+M      P  payload: the non-zero weights, abomonation-encoded
//! ```
//!
//! The header is written field by field, so it reads the same everywhere. The payload is
//! abomonation's copy of an in-memory struct, which only this architecture and byte order can
//! read, so the header records both and a reader refuses a file from anywhere else. Nothing is
//! decoded until the magic, version, architecture, lengths and checksum have all been checked.
//!
//! The payload is a `#[repr(C)]` struct followed by the contents of its two vectors:
//!
//! ```text
//! offset (64-bit)  bytes  field
//!               0      4  bits, u32 native: the model has 2^bits weights
//!               4      4  entry count N, u32 native
//!               8     24  header of the vector of coordinates (written as zeros)
//!              32     24  header of the vector of weights (written as zeros)
//!              56     4N  coordinates with a non-zero weight, u32 native, ascending
//!           56+4N     4N  their weights, f32 native
//! ```
//!
//! (On a 32-bit machine the vector headers are 12 bytes each and the coordinates start at 32.)
//! The vector headers abomonation writes hold the writer's heap addresses. They mean nothing
//! in another process, so the writer zeroes them (which also makes equal models give equal
//! bytes) and the reader never trusts them: it rebuilds them from the entry count, which it
//! checks against the payload's length (see `decode_payload` for why).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::{offset_of, size_of};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use abomonation::Abomonation;
use dataflows::publish::model::{ModelVersion, RoundMetrics, Weights};
use serde::{Deserialize, Serialize};

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"POOCHSNP";

/// The snapshot file format this build writes, and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;

/// The largest model the store accepts has `2^MAX_BITS` weights (4 GiB of `f32`), so a
/// damaged or hostile file cannot make a reader allocate without bound.
pub const MAX_BITS: u32 = 30;

/// The size of the fixed header at the start of every snapshot file.
pub const HEADER_BYTES: usize = 44;

/// The name of the per-model manifest.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST.json";

/// Part of every temporary file's name, which starts with a dot.
const TEMPORARY_MARKER: &str = ".tmp-";

/// Written in native byte order; reading it back in native order tells whether the writer's
/// byte order was ours.
const BYTE_ORDER_MARKER: u32 = 0x0102_0304;

/// The pointer width of this build, which fixes the size of the payload's vector headers.
const POINTER_WIDTH_BITS: u32 = usize::BITS;

/// Metadata is a few hundred bytes of JSON; anything near this is not ours.
const MAX_METADATA_BYTES: u64 = 16 << 20;

/// A model name becomes a directory name, so it is kept short and plain.
const MAX_MODEL_NAME_BYTES: usize = 128;

/// The header's fields, by byte range.
const MAGIC_RANGE: Range<usize> = 0..8;
const FORMAT_VERSION_RANGE: Range<usize> = 8..12;
const BYTE_ORDER_RANGE: Range<usize> = 12..16;
const POINTER_WIDTH_RANGE: Range<usize> = 16..20;
const METADATA_LENGTH_RANGE: Range<usize> = 20..28;
const PAYLOAD_LENGTH_RANGE: Range<usize> = 28..36;
const CHECKSUM_RANGE: Range<usize> = 36..44;
const _: () = assert!(CHECKSUM_RANGE.end == HEADER_BYTES);

/// The payload struct, in a module of its own so that a lint can be allowed for it alone.
mod payload {
    // abomonation_derive puts its impl inside a named constant, which rustc flags as a
    // non-local definition; it is the derive's style, not a problem here.
    #![allow(non_local_definitions)]

    use abomonation_derive::Abomonation;

    /// The payload: the model's non-zero weights, sparse.
    ///
    /// `#[repr(C)]` fixes the field order, so `bits` and `entry_count` sit at known offsets
    /// and can be checked before anything is decoded.
    #[derive(Abomonation)]
    #[repr(C)]
    pub(super) struct SparsePayload {
        /// The model has `2^bits` weights.
        pub(super) bits: u32,
        /// How many coordinates follow: the length of both vectors.
        pub(super) entry_count: u32,
        /// Ascending coordinates whose weight is not `+0.0`.
        pub(super) indices: Vec<u32>,
        /// The weight at each of `indices`, bit for bit.
        pub(super) weights: Vec<f32>,
    }
}
use payload::SparsePayload;

/// The size of the struct part of the payload, before the vectors' contents.
const PAYLOAD_PREFIX_BYTES: usize = size_of::<SparsePayload>();

/// Where the two vector headers lie in the payload.
const PAYLOAD_VECTOR_HEADERS: Range<usize> =
    offset_of!(SparsePayload, indices)..PAYLOAD_PREFIX_BYTES;

/// Each payload entry is one coordinate and one weight.
const PAYLOAD_ENTRY_BYTES: usize = size_of::<u32>() + size_of::<f32>();

/// The largest payload a valid file can have.
const MAX_PAYLOAD_BYTES: u64 =
    PAYLOAD_PREFIX_BYTES as u64 + ((PAYLOAD_ENTRY_BYTES as u64) << MAX_BITS);

// abomonation copies the payload struct byte for byte, padding included, and reading padding is
// undefined behaviour. These pin down that there is none: two `u32`s, then two vector headers
// of three initialised words each, laid end to end.
const _: () = assert!(size_of::<Vec<u32>>() == 3 * size_of::<usize>());
const _: () = assert!(size_of::<Vec<f32>>() == size_of::<Vec<u32>>());
const _: () = assert!(offset_of!(SparsePayload, entry_count) == size_of::<u32>());
const _: () = assert!(offset_of!(SparsePayload, indices) == 2 * size_of::<u32>());
const _: () = assert!(
    offset_of!(SparsePayload, weights)
        == offset_of!(SparsePayload, indices) + size_of::<Vec<u32>>()
);
const _: () =
    assert!(PAYLOAD_PREFIX_BYTES == offset_of!(SparsePayload, weights) + size_of::<Vec<f32>>());
// The vectors' contents start right after the prefix and must be aligned for u32 and f32.
const _: () = assert!(PAYLOAD_PREFIX_BYTES.is_multiple_of(align_of::<u32>()));

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
    /// A file-system operation failed.
    #[error("{}: could not {action}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
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
    /// The manifest is not the JSON this store writes.
    #[error("{}: manifest is not valid: {source}", path.display())]
    ManifestInvalid {
        /// The manifest file.
        path: PathBuf,
        /// What the JSON parser found.
        source: serde_json::Error,
    },
}

/// What the caller knows about where a model version came from, stored beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Hex of a hash of the pipeline spec the features were computed by. A model is only
    /// meaningful with the features it was trained on.
    pub spec_hash: String,
    /// For each source, the byte offset its reader had reached when the version was published.
    pub source_offsets: BTreeMap<String, u64>,
}

/// A snapshot as read back from disk.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The model version, weights dense again.
    pub model: ModelVersion,
    /// What the writer knew about its origin.
    pub meta: SnapshotMeta,
    /// When the snapshot was written, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The XXH3-64 checksum of the file's metadata and payload, which identifies its content.
    pub checksum: u64,
}

/// A snapshot file present in the store, known only by its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVersion {
    /// The version its file name gives.
    pub version: u64,
    /// The file.
    pub path: PathBuf,
}

/// The outcome of looking for the newest snapshot that loads.
#[derive(Debug)]
pub struct NewestGood {
    /// The newest snapshot that loaded cleanly, if any did.
    pub snapshot: Option<Snapshot>,
    /// Why each newer snapshot was skipped, newest first. Reported even when none loaded,
    /// which is why this is not folded into an `Option` of the snapshot.
    pub skipped: Vec<SnapshotError>,
}

/// The contents of a model's `MANIFEST.json`, for tools and readers that want the retained
/// versions without opening each file.
///
/// It is written after the snapshot it lists, so a crash between the two leaves it one
/// version behind the files; the file names, as [`SnapshotStore::list`] reads them, are the
/// authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The model's name.
    pub model: String,
    /// The newest version, the one written last.
    pub newest: u64,
    /// The retained versions, ascending.
    pub versions: Vec<ManifestEntry>,
}

/// One retained version in a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The model version.
    pub version: u64,
    /// The epoch whose close produced it.
    pub epoch: u64,
    /// The snapshot's file name, within the model's directory.
    pub file: String,
    /// The snapshot's checksum, as in its header.
    #[serde(with = "hex_u64")]
    pub checksum: u64,
}

/// A directory of snapshots: `<dir>/<model>/v<version>.snap`, at most `retain` per model.
///
/// One store writes to a directory at a time: `write` reads and rewrites the manifest, and
/// takes `&mut self` so that a store shared in-process cannot interleave two of them.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    retain: usize,
    /// Makes temporary file names unique within this process.
    temporary_sequence: u64,
}

impl SnapshotStore {
    /// Opens the store in `dir`, creating the directory if needed. Each model keeps at most
    /// `retain` versions, which must be at least 1.
    pub fn open(dir: impl Into<PathBuf>, retain: usize) -> Result<Self, SnapshotError> {
        let dir = dir.into();
        if retain == 0 {
            return Err(SnapshotError::InvalidRetain { dir, retain });
        }
        fs::create_dir_all(&dir).map_err(io_error(&dir, "create the snapshot directory"))?;
        Ok(SnapshotStore {
            dir,
            retain,
            temporary_sequence: 0,
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a model version durably and returns its file.
    ///
    /// In order: the snapshot goes to a temporary file that is synced and renamed into
    /// place; then the manifest, the same way; then versions past the retention limit are
    /// deleted. A crash at any point leaves every snapshot file and the manifest whole (the
    /// manifest possibly one version behind). An `Io` error from the deletions comes after
    /// the new snapshot and manifest are durable; the next write retries them.
    ///
    /// The version must be higher than every version on disk ([`Self::next_version`] gives
    /// the next one), and the model's coordinates must lie below `2^bits`, `bits <= MAX_BITS`.
    ///
    /// Non-finite weights are stored as they are: what may serve is decided elsewhere.
    pub fn write(
        &mut self,
        model: &ModelVersion,
        meta: &SnapshotMeta,
    ) -> Result<PathBuf, SnapshotError> {
        validate_model_name(&model.name)?;
        let unsupported = |reason: String| SnapshotError::UnsupportedModel {
            model: model.name.clone(),
            version: model.version,
            reason,
        };
        if model.bits > MAX_BITS {
            return Err(unsupported(format!(
                "it has 2^{} weights, more than the 2^{MAX_BITS} the store accepts",
                model.bits
            )));
        }
        if let Some(&last) = model.weights.indices().last()
            && u64::from(last) >= 1u64 << model.bits
        {
            return Err(unsupported(format!(
                "it has a weight at coordinate {last}, outside its 2^{} weights",
                model.bits
            )));
        }
        let present = self.list(&model.name)?;
        if let Some(newest) = present.last()
            && newest.version >= model.version
        {
            return Err(SnapshotError::StaleVersion {
                model: model.name.clone(),
                version: model.version,
                newest_present: newest.version,
            });
        }

        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            });
        let (file_bytes, checksum) = encode_file(model, meta, created_unix_ms)?;

        // write the snapshot
        let model_dir = self.dir.join(&model.name);
        if !model_dir.is_dir() {
            fs::create_dir_all(&model_dir).map_err(io_error(
                &model_dir,
                "create the model's snapshot directory",
            ))?;
            sync_directory(&self.dir)?;
        }
        let file_name = snapshot_file_name(model.version);
        let path = self.write_atomically(&model_dir, &file_name, &file_bytes)?;

        // keep the newest `retain` versions on disk, this one included
        let mut versions: Vec<u64> = present.iter().map(|stored| stored.version).collect();
        versions.push(model.version);
        let keep_from = versions.len().saturating_sub(self.retain);
        let (expired, kept) = versions.split_at(keep_from);

        // the manifest: old entries from the old manifest, or from the files if it is lost
        let mut known: BTreeMap<u64, ManifestEntry> = match self.manifest(&model.name) {
            Ok(Some(old)) => old
                .versions
                .into_iter()
                .map(|entry| (entry.version, entry))
                .collect(),
            // An unreadable manifest is rebuilt from the snapshots themselves.
            Ok(None) | Err(_) => BTreeMap::new(),
        };
        known.insert(
            model.version,
            ManifestEntry {
                version: model.version,
                epoch: model.epoch,
                file: file_name,
                checksum,
            },
        );
        let entries = kept
            .iter()
            .filter_map(|&version| match known.remove(&version) {
                Some(entry) => Some(entry),
                // A snapshot that does not load is kept on disk for inspection but not listed.
                None => read(&model_dir.join(snapshot_file_name(version)))
                    .ok()
                    .map(|snapshot| ManifestEntry {
                        version,
                        epoch: snapshot.model.epoch,
                        file: snapshot_file_name(version),
                        checksum: snapshot.checksum,
                    }),
            })
            .collect();
        let manifest = Manifest {
            model: model.name.clone(),
            newest: model.version,
            versions: entries,
        };
        let manifest_bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|error| SnapshotError::Encode {
                model: model.name.clone(),
                version: model.version,
                reason: error.to_string(),
            })?;
        self.write_atomically(&model_dir, MANIFEST_FILE_NAME, &manifest_bytes)?;

        // only now, with the new version durable, forget the old ones
        for &version in expired {
            let expired_path = model_dir.join(snapshot_file_name(version));
            fs::remove_file(&expired_path).map_err(io_error(
                &expired_path,
                "delete a snapshot past the retention limit (the new snapshot and manifest are durable)",
            ))?;
        }
        remove_leftover_temporaries(&model_dir);
        sync_directory(&model_dir)?;
        Ok(path)
    }

    /// The snapshot files present for a model, by version ascending, judged by name alone.
    /// A model with no directory has none.
    pub fn list(&self, model: &str) -> Result<Vec<StoredVersion>, SnapshotError> {
        validate_model_name(model)?;
        let model_dir = self.dir.join(model);
        let entries = match fs::read_dir(&model_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => {
                return Err(io_error(&model_dir, "list the model's snapshot directory")(
                    error,
                ));
            }
        };
        let mut versions = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(io_error(&model_dir, "list the model's snapshot directory"))?;
            // Temporary files, the manifest and anything foreign do not parse, and are ignored.
            if let Some(version) = entry
                .file_name()
                .to_str()
                .and_then(parse_snapshot_file_name)
            {
                versions.push(StoredVersion {
                    version,
                    path: entry.path(),
                });
            }
        }
        versions.sort_by_key(|stored| stored.version);
        Ok(versions)
    }

    /// The newest snapshot of a model that loads cleanly and is where it should be, with the
    /// reasons every newer one was skipped. Meant for startup: a damaged newest file costs
    /// one version, not the run.
    pub fn newest_good(&self, model: &str) -> Result<NewestGood, SnapshotError> {
        let mut skipped = Vec::new();
        for stored in self.list(model)?.into_iter().rev() {
            match read(&stored.path) {
                Ok(snapshot)
                    if snapshot.model.name == model && snapshot.model.version == stored.version =>
                {
                    return Ok(NewestGood {
                        snapshot: Some(snapshot),
                        skipped,
                    });
                }
                Ok(snapshot) => skipped.push(SnapshotError::Misplaced {
                    path: stored.path,
                    found_model: snapshot.model.name,
                    found_version: snapshot.model.version,
                    expected_model: model.to_owned(),
                    expected_version: stored.version,
                }),
                Err(error) => skipped.push(error),
            }
        }
        Ok(NewestGood {
            snapshot: None,
            skipped,
        })
    }

    /// The version the next write of a model should carry: one more than the highest on disk,
    /// damaged files included, so a number is never reused; 1 for a new model.
    pub fn next_version(&self, model: &str) -> Result<u64, SnapshotError> {
        Ok(self
            .list(model)?
            .last()
            .map_or(1, |newest| newest.version.saturating_add(1)))
    }

    /// A model's manifest, or `None` if it has none yet.
    pub fn manifest(&self, model: &str) -> Result<Option<Manifest>, SnapshotError> {
        validate_model_name(model)?;
        let path = self.dir.join(model).join(MANIFEST_FILE_NAME);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(&path, "read the manifest")(error)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| SnapshotError::ManifestInvalid { path, source })
    }

    /// Writes `bytes` to `dir/file_name` atomically and durably (see [`write_atomically`]).
    fn write_atomically(
        &mut self,
        dir: &Path,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, SnapshotError> {
        self.temporary_sequence += 1;
        write_atomically(dir, file_name, bytes, self.temporary_sequence)
    }
}

/// Writes `bytes` to `dir/file_name` so that the name holds either the old content or the
/// whole new content, durably: temporary file, sync, rename, sync the directory. `unique`
/// tells apart the temporary files of concurrent writers in one process (with the process id
/// for writers in different processes). Shared with the supervisor's control file.
pub(crate) fn write_atomically(
    dir: &Path,
    file_name: &str,
    bytes: &[u8],
    unique: u64,
) -> Result<PathBuf, SnapshotError> {
    // The leading dot keeps `list` from ever taking a half-written file for a snapshot.
    let temporary = dir.join(format!(
        ".{file_name}{TEMPORARY_MARKER}{}-{unique}",
        std::process::id(),
    ));
    let destination = dir.join(file_name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .map_err(io_error(&temporary, "create a temporary file"))
        .and_then(|mut file| {
            file.write_all(bytes)
                .map_err(io_error(&temporary, "write a temporary file"))?;
            file.sync_all()
                .map_err(io_error(&temporary, "sync a temporary file"))
        })
        .and_then(|()| {
            fs::rename(&temporary, &destination).map_err(io_error(
                &destination,
                "move a finished temporary file into place",
            ))
        });
    if let Err(error) = written {
        // Best effort: the temporary name is invisible to `list`, so a leftover costs
        // disk space, not correctness, and the original error is the one worth reporting.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    sync_directory(dir)?;
    Ok(destination)
}

/// Reads and checks a snapshot file: magic, format version, byte order and pointer width,
/// lengths against the file's size, and checksum, all before decoding; then the metadata and
/// a validated payload. Refuses any damaged or foreign file with an error naming it, and
/// never panics, whatever the bytes.
pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
    let mut file = File::open(path).map_err(io_error(path, "open the snapshot"))?;
    let file_bytes = file
        .metadata()
        .map_err(io_error(path, "read the snapshot's size"))?
        .len();
    if file_bytes < HEADER_BYTES as u64 {
        return Err(SnapshotError::TooShort {
            path: path.to_owned(),
            file_bytes,
        });
    }
    let mut header_bytes = [0u8; HEADER_BYTES];
    file.read_exact(&mut header_bytes)
        .map_err(io_error(path, "read the snapshot header"))?;
    let header = Header::parse(path, &header_bytes, file_bytes)?;

    // read the rest, whose size the header now vouches for
    let body_bytes = header.metadata_bytes + header.payload_bytes;
    let mut body = Vec::new();
    let reserved = usize::try_from(body_bytes)
        .ok()
        .and_then(|capacity| body.try_reserve_exact(capacity).ok());
    if reserved.is_none() {
        return Err(io_error(path, "read the snapshot")(io::Error::from(
            io::ErrorKind::OutOfMemory,
        )));
    }
    file.take(body_bytes)
        .read_to_end(&mut body)
        .map_err(io_error(path, "read the snapshot"))?;
    if body.len() as u64 != body_bytes {
        // The file shrank after its size was taken.
        return Err(SnapshotError::SizeMismatch {
            path: path.to_owned(),
            metadata_bytes: header.metadata_bytes,
            payload_bytes: header.payload_bytes,
            file_bytes: HEADER_BYTES as u64 + body.len() as u64,
        });
    }

    let computed = xxhash_rust::xxh3::xxh3_64(&body);
    if computed != header.checksum {
        return Err(SnapshotError::ChecksumMismatch {
            path: path.to_owned(),
            stored: header.checksum,
            computed,
        });
    }

    // Both lengths fit in the body, which is in memory, so they fit in usize.
    let (metadata, payload) = body.split_at(body.len() - header.payload_bytes as usize);
    let record: MetadataRecord =
        serde_json::from_slice(metadata).map_err(|source| SnapshotError::Metadata {
            path: path.to_owned(),
            source,
        })?;
    let (payload_bits, weights) = decode_payload(path, payload)?;
    if payload_bits != record.bits {
        return Err(SnapshotError::Payload {
            path: path.to_owned(),
            reason: format!(
                "it holds 2^{payload_bits} weights but the metadata says bits = {}",
                record.bits
            ),
        });
    }
    Ok(record.into_snapshot(Arc::new(weights), header.checksum))
}

/// The header's variable fields, once checked.
struct Header {
    metadata_bytes: u64,
    payload_bytes: u64,
    checksum: u64,
}

impl Header {
    /// Writes a header for the given sections, in the layout the module doc draws.
    fn encode(metadata_bytes: u64, payload_bytes: u64, checksum: u64) -> [u8; HEADER_BYTES] {
        let mut header = [0u8; HEADER_BYTES];
        header[MAGIC_RANGE].copy_from_slice(&MAGIC);
        header[FORMAT_VERSION_RANGE].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[BYTE_ORDER_RANGE].copy_from_slice(&BYTE_ORDER_MARKER.to_ne_bytes());
        header[POINTER_WIDTH_RANGE].copy_from_slice(&POINTER_WIDTH_BITS.to_le_bytes());
        header[METADATA_LENGTH_RANGE].copy_from_slice(&metadata_bytes.to_le_bytes());
        header[PAYLOAD_LENGTH_RANGE].copy_from_slice(&payload_bytes.to_le_bytes());
        header[CHECKSUM_RANGE].copy_from_slice(&checksum.to_le_bytes());
        header
    }

    /// Checks a header against this build and the file's size, in the order that gives the
    /// most telling error: whose file is it, can we read it, is it whole.
    fn parse(
        path: &Path,
        header: &[u8; HEADER_BYTES],
        file_bytes: u64,
    ) -> Result<Header, SnapshotError> {
        let path = || path.to_owned();
        let magic: [u8; 8] = field(header, MAGIC_RANGE);
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic {
                path: path(),
                found: magic,
            });
        }
        let format_version = u32::from_le_bytes(field(header, FORMAT_VERSION_RANGE));
        if format_version != FORMAT_VERSION {
            return Err(SnapshotError::UnsupportedFormatVersion {
                path: path(),
                found: format_version,
            });
        }
        let byte_order: [u8; 4] = field(header, BYTE_ORDER_RANGE);
        if byte_order != BYTE_ORDER_MARKER.to_ne_bytes() {
            return Err(SnapshotError::ForeignByteOrder {
                path: path(),
                found: byte_order,
            });
        }
        let pointer_width_bits = u32::from_le_bytes(field(header, POINTER_WIDTH_RANGE));
        if pointer_width_bits != POINTER_WIDTH_BITS {
            return Err(SnapshotError::ForeignPointerWidth {
                path: path(),
                found_bits: pointer_width_bits,
            });
        }
        let metadata_bytes = u64::from_le_bytes(field(header, METADATA_LENGTH_RANGE));
        let payload_bytes = u64::from_le_bytes(field(header, PAYLOAD_LENGTH_RANGE));
        for (section, bytes, limit) in [
            ("metadata section", metadata_bytes, MAX_METADATA_BYTES),
            ("payload", payload_bytes, MAX_PAYLOAD_BYTES),
        ] {
            if bytes > limit {
                return Err(SnapshotError::SectionTooLarge {
                    path: path(),
                    section,
                    bytes,
                    limit,
                });
            }
        }
        // Both are bounded above, so the sum cannot overflow.
        if HEADER_BYTES as u64 + metadata_bytes + payload_bytes != file_bytes {
            return Err(SnapshotError::SizeMismatch {
                path: path(),
                metadata_bytes,
                payload_bytes,
                file_bytes,
            });
        }
        Ok(Header {
            metadata_bytes,
            payload_bytes,
            checksum: u64::from_le_bytes(field(header, CHECKSUM_RANGE)),
        })
    }
}

/// A fixed-size field of the header.
fn field<const N: usize>(header: &[u8; HEADER_BYTES], range: Range<usize>) -> [u8; N] {
    let mut bytes = [0u8; N];
    bytes.copy_from_slice(&header[range]);
    bytes
}

/// The bytes of a snapshot file for a model already checked to be storable, and its checksum.
fn encode_file(
    model: &ModelVersion,
    meta: &SnapshotMeta,
    created_unix_ms: u64,
) -> Result<(Vec<u8>, u64), SnapshotError> {
    let encode_error = |reason: String| SnapshotError::Encode {
        model: model.name.clone(),
        version: model.version,
        reason,
    };
    let record = MetadataRecord::new(model, meta, created_unix_ms);
    let metadata = serde_json::to_vec(&record).map_err(|error| encode_error(error.to_string()))?;
    let payload = encode_payload(&SparsePayload::from_weights(model.bits, &model.weights))
        .map_err(|error| encode_error(error.to_string()))?;
    Ok(assemble_file(&metadata, &payload))
}

/// Puts a header in front of metadata and payload; returns the file's bytes and its checksum.
fn assemble_file(metadata: &[u8], payload: &[u8]) -> (Vec<u8>, u64) {
    let mut file = Vec::with_capacity(HEADER_BYTES + metadata.len() + payload.len());
    file.extend_from_slice(&[0u8; HEADER_BYTES]);
    file.extend_from_slice(metadata);
    file.extend_from_slice(payload);
    let checksum = xxhash_rust::xxh3::xxh3_64(&file[HEADER_BYTES..]);
    let header = Header::encode(metadata.len() as u64, payload.len() as u64, checksum);
    file[..HEADER_BYTES].copy_from_slice(&header);
    (file, checksum)
}

impl SparsePayload {
    /// The payload of a model of `2^bits` weights, `bits <= MAX_BITS`.
    ///
    /// The sparse form leaves out only `+0.0`, so `-0.0` and NaN survive bit for bit.
    fn from_weights(bits: u32, weights: &Weights) -> SparsePayload {
        SparsePayload {
            bits,
            // at most 2^MAX_BITS coordinates, so the count fits in u32
            entry_count: weights.len() as u32,
            indices: weights.indices().to_vec(),
            weights: weights.values().to_vec(),
        }
    }
}

/// Encodes a payload with abomonation, then zeroes its vector headers (see the module doc).
fn encode_payload(payload: &SparsePayload) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(abomonation::measure(payload));
    // SAFETY: `encode` copies out the bytes of `payload` and of its vectors' elements. The
    // struct is `repr(C)` without padding (asserted at compile time next to it), so every byte
    // is initialised, and `u32` and `f32` elements have no padding either.
    unsafe { abomonation::encode(payload, &mut bytes) }?;
    bytes[PAYLOAD_VECTOR_HEADERS].fill(0);
    Ok(bytes)
}

/// Decodes and validates a payload into `bits` and the weights.
///
/// The only part of the payload that abomonation reinterprets as something other than plain
/// numbers is the pair of vector headers: pointers, capacities and lengths. A checksum cannot
/// vouch for them (XXH3 is no signature; anyone can write a file whose checksum matches), and a
/// null pointer or an absurd length would be undefined behaviour. So they are never taken from
/// the file: the entry count is checked against the payload's length, and the headers are
/// replaced by those of vectors of that length made here. What abomonation then reads from the
/// file is only `u32`s and `f32`s, for which any bits are valid, and those are validated after.
fn decode_payload(path: &Path, payload: &[u8]) -> Result<(u32, Weights), SnapshotError> {
    let invalid = |reason: String| SnapshotError::Payload {
        path: path.to_owned(),
        reason,
    };
    if payload.len() < PAYLOAD_PREFIX_BYTES {
        return Err(invalid(format!(
            "it is {} bytes, shorter than its {PAYLOAD_PREFIX_BYTES}-byte fixed part",
            payload.len()
        )));
    }
    let native_u32 = |offset: usize| {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&payload[offset..offset + 4]);
        u32::from_ne_bytes(bytes)
    };
    let bits = native_u32(offset_of!(SparsePayload, bits));
    let entry_count = native_u32(offset_of!(SparsePayload, entry_count));
    if bits > MAX_BITS {
        return Err(invalid(format!(
            "bits = {bits}, more than the {MAX_BITS} the store accepts"
        )));
    }
    let entry_bytes = (payload.len() - PAYLOAD_PREFIX_BYTES) as u64;
    let expected_entry_bytes = u64::from(entry_count) * PAYLOAD_ENTRY_BYTES as u64;
    if entry_bytes != expected_entry_bytes {
        return Err(invalid(format!(
            "it says {entry_count} entries, which take {expected_entry_bytes} bytes, but {entry_bytes} follow its fixed part"
        )));
    }
    let weight_count = 1usize << bits;
    let entries = entry_count as usize;
    if entries > weight_count {
        return Err(invalid(format!(
            "it has {entries} entries for a model of only {weight_count} weights"
        )));
    }

    // the fixed part, with vector headers made here rather than read from the file
    let template = SparsePayload {
        bits,
        entry_count,
        indices: vec![0; entries],
        weights: vec![0.0; entries],
    };
    let mut prefix = PrefixCapture {
        bytes: Vec::with_capacity(PAYLOAD_PREFIX_BYTES),
    };
    // SAFETY: as in `encode_payload`: the template is a valid, padding-free SparsePayload. The
    // capture refuses everything after the fixed part, so this stops without copying the
    // template's elements, and the error that stops it is expected.
    let _stopped_after_prefix = unsafe { abomonation::encode(&template, &mut prefix) };
    if prefix.bytes.len() != PAYLOAD_PREFIX_BYTES {
        return Err(invalid("its fixed part could not be rebuilt".to_owned()));
    }

    // an aligned copy: abomonation reads u32s and f32s in place
    let mut aligned = vec![0u64; payload.len().div_ceil(size_of::<u64>())];
    // SAFETY: `aligned` is initialised and at least `payload.len()` bytes long, `u8` has no
    // alignment or validity requirements, and the view borrows `aligned` exclusively.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(aligned.as_mut_ptr().cast::<u8>(), payload.len()) };
    bytes.copy_from_slice(payload);
    bytes[..PAYLOAD_PREFIX_BYTES].copy_from_slice(&prefix.bytes);

    // SAFETY: `bytes` comes from a Vec<u64>, so it is 8-aligned, and its fixed part is the
    // encoding of a valid SparsePayload made just above whose vectors have `entries` elements
    // each; the elements, checked above, fill exactly the rest of `bytes`.
    let decoded = unsafe { decode_in_place(bytes) };
    let Some((decoded, rest)) = decoded else {
        return Err(invalid("abomonation could not decode it".to_owned()));
    };
    if !rest.is_empty() || decoded.indices.len() != entries || decoded.weights.len() != entries {
        return Err(invalid(
            "abomonation decoded a different number of entries than it says".to_owned(),
        ));
    }

    // the canonical sparse form the writer makes, inside the model
    if let Some(position) = decoded
        .indices
        .iter()
        .position(|&index| u64::from(index) >= weight_count as u64)
    {
        return Err(invalid(format!(
            "entry {position} has coordinate {}, outside a model of 2^{bits} weights",
            decoded.indices[position]
        )));
    }
    let weights =
        Weights::from_sorted(decoded.indices.clone(), decoded.weights.clone()).map_err(invalid)?;
    Ok((bits, weights))
}

/// What `abomonation::decode::<SparsePayload>` does, but sound under Miri's Stacked Borrows
/// model: `decode` makes its `&mut T` from a `&mut u8` to the first byte only, which Miri
/// flags as undefined behaviour; here the reference comes from a pointer to the whole fixed
/// part. Returns the payload, borrowing `bytes`, and whatever bytes its vectors did not use.
///
/// # Safety
///
/// `bytes` must be aligned for `SparsePayload`, and its first `PAYLOAD_PREFIX_BYTES` must be a
/// valid `SparsePayload` (as encoded in this process), so that its vector lengths are sane.
unsafe fn decode_in_place(bytes: &mut [u8]) -> Option<(&SparsePayload, &mut [u8])> {
    let (fixed, elements) = bytes.split_at_mut_checked(PAYLOAD_PREFIX_BYTES)?;
    // SAFETY: the pointer covers exactly the fixed part, which the caller promises is aligned
    // and holds a valid SparsePayload; `fixed` is borrowed exclusively for the result's life.
    let payload = unsafe { &mut *fixed.as_mut_ptr().cast::<SparsePayload>() };
    // SAFETY: `exhume` repoints each vector at its elements in `elements`, after checking they
    // fit, before anything reads through the vector; the elements are u32 and f32, valid for
    // any bits. The vectors are never dropped: only a shared reference to them escapes.
    let rest = unsafe { payload.exhume(elements) }?;
    Some((payload, rest))
}

/// Keeps the first `PAYLOAD_PREFIX_BYTES` written to it and refuses the rest.
struct PrefixCapture {
    bytes: Vec<u8>,
}

impl Write for PrefixCapture {
    fn write(&mut self, buffer: &[u8]) -> io::Result<usize> {
        let room = PAYLOAD_PREFIX_BYTES - self.bytes.len();
        if room == 0 {
            return Err(io::Error::other("the fixed part is complete"));
        }
        let taken = room.min(buffer.len());
        self.bytes.extend_from_slice(&buffer[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The metadata section as stored: JSON, one object.
#[derive(Serialize, Deserialize)]
struct MetadataRecord {
    model: String,
    version: u64,
    epoch: u64,
    published_at: u64,
    bits: u32,
    metrics: MetricsRecord,
    spec_hash: String,
    source_offsets: BTreeMap<String, u64>,
    created_unix_ms: u64,
}

/// `RoundMetrics` as stored. Not the struct itself: serde_json writes a NaN loss (a diverged
/// model has one) as `null` and then cannot read it back, and its default float parsing may be
/// off by one ulp. The loss is therefore stored as a string in Rust's round-trip notation.
#[derive(Serialize, Deserialize)]
struct MetricsRecord {
    examples: u64,
    #[serde(with = "exact_f64")]
    logloss: f64,
}

impl MetadataRecord {
    fn new(model: &ModelVersion, meta: &SnapshotMeta, created_unix_ms: u64) -> MetadataRecord {
        MetadataRecord {
            model: model.name.clone(),
            version: model.version,
            epoch: model.epoch,
            published_at: model.published_at,
            bits: model.bits,
            metrics: MetricsRecord {
                examples: model.metrics.examples,
                logloss: model.metrics.logloss,
            },
            spec_hash: meta.spec_hash.clone(),
            source_offsets: meta.source_offsets.clone(),
            created_unix_ms,
        }
    }

    fn into_snapshot(self, weights: Arc<Weights>, checksum: u64) -> Snapshot {
        Snapshot {
            model: ModelVersion {
                name: self.model,
                version: self.version,
                epoch: self.epoch,
                published_at: self.published_at,
                bits: self.bits,
                weights,
                metrics: RoundMetrics {
                    examples: self.metrics.examples,
                    logloss: self.metrics.logloss,
                },
            },
            meta: SnapshotMeta {
                spec_hash: self.spec_hash,
                source_offsets: self.source_offsets,
            },
            created_unix_ms: self.created_unix_ms,
            checksum,
        }
    }
}

/// An `f64` as a string that parses back to the same value: Rust's `Debug` notation, which
/// is the shortest that round-trips, and spells the non-finite values `NaN`, `inf`, `-inf`.
mod exact_f64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("{text:?} is not a number")))
    }
}

/// A `u64` as `"0x"` and sixteen hex digits: checksums read as hex, and JSON tools that hold
/// numbers as doubles would round them.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:#018x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.strip_prefix("0x")
            .and_then(|digits| u64::from_str_radix(digits, 16).ok())
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a 0x-prefixed hex u64")))
    }
}

/// The file name of a version: `v` and at least eight digits, so names sort like versions.
pub(crate) fn snapshot_file_name(version: u64) -> String {
    format!("v{version:08}.snap")
}

/// The version a snapshot file name stands for, if it is exactly what the store would write.
fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?.strip_suffix(".snap")?;
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let version = digits.parse().ok()?;
    // one name per version: "v000000003.snap" is not v3's file
    (snapshot_file_name(version) == name).then_some(version)
}

/// Model names become directory names, so they are restricted to plain, visible ones.
pub(crate) fn validate_model_name(name: &str) -> Result<(), SnapshotError> {
    let refuse = |reason| {
        Err(SnapshotError::InvalidModelName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("is empty");
    }
    if name.len() > MAX_MODEL_NAME_BYTES {
        return refuse("is longer than 128 bytes");
    }
    if name.starts_with('.') {
        return refuse("starts with '.', which would hide it or climb out of the store");
    }
    if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    {
        return refuse("contains a character other than ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// Deletes the temporary files a crashed writer left in a model's directory. Only one store
/// writes to a directory at a time, so no temporary file there is still in use.
fn remove_leftover_temporaries(model_dir: &Path) {
    let Ok(entries) = fs::read_dir(model_dir) else {
        // Best effort, here and below: a leftover costs disk space, never correctness, since
        // `list` cannot mistake one for a snapshot.
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        // Only the store's own temporaries: a command-line tool may be writing another file
        // (the supervisor's control file) in the same directory right now.
        let is_temporary = name.to_str().is_some_and(|name| {
            name.strip_prefix('.')
                .and_then(|rest| rest.split_once(TEMPORARY_MARKER))
                .is_some_and(|(target, _)| {
                    target == MANIFEST_FILE_NAME || parse_snapshot_file_name(target).is_some()
                })
        });
        if is_temporary {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Makes the creations, renames and deletions in a directory durable.
fn sync_directory(dir: &Path) -> Result<(), SnapshotError> {
    // A directory can be opened and synced on Unix only; elsewhere renames are left to the OS.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(dir, "sync the directory"))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io {
        path,
        action,
        source,
    }
}

fn describe_byte_order(marker: [u8; 4]) -> String {
    if marker == BYTE_ORDER_MARKER.to_le_bytes() {
        "little-endian machine".to_owned()
    } else if marker == BYTE_ORDER_MARKER.to_be_bytes() {
        "big-endian machine".to_owned()
    } else {
        format!("machine of unknown byte order (marker {marker:02x?})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const NAN_WITH_PAYLOAD: u32 = 0x7fc0_1234;

    /// A model of `2^bits` weights, `bits >= 3`, with ordinary weights, zeros, and every value
    /// the store must keep bit for bit: a NaN with a payload, -0.0, both infinities and the
    /// smallest subnormal.
    fn model(version: u64, bits: u32) -> ModelVersion {
        let mut weights = vec![0.0f32; 1 << bits];
        for (index, weight) in weights.iter_mut().enumerate().step_by(3) {
            *weight = index as f32 * 0.25 + version as f32;
        }
        weights[1] = f32::from_bits(NAN_WITH_PAYLOAD);
        weights[2] = -0.0;
        weights[4] = f32::INFINITY;
        weights[5] = f32::NEG_INFINITY;
        weights[7] = f32::from_bits(1);
        ModelVersion {
            name: "pooch".to_owned(),
            version,
            epoch: version * 10,
            published_at: 1_700_000_000 + version,
            bits,
            weights: Arc::new(Weights::from_dense(&weights)),
            metrics: RoundMetrics {
                examples: 100 * version,
                logloss: 0.1 + 0.2 + version as f64,
            },
        }
    }

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            spec_hash: "9f2c4e01d3b5a7c8".to_owned(),
            source_offsets: BTreeMap::from([
                ("adoptions.csv".to_owned(), 4096),
                ("dogs.csv".to_owned(), 0),
            ]),
        }
    }

    /// Every weight's bits, dense.
    fn weight_bits(model: &ModelVersion) -> Vec<u32> {
        (0..1u32 << model.bits)
            .map(|index| model.weights.get(index).to_bits())
            .collect()
    }

    /// A store in a fresh directory, and the directory, which must outlive it.
    fn store(retain: usize) -> (tempfile::TempDir, SnapshotStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SnapshotStore::open(dir.path().join("snapshots"), retain).expect("open store");
        (dir, store)
    }

    /// The bytes of a small valid snapshot file, and a directory to try variations in.
    fn small_snapshot_bytes() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (bytes, _) = encode_file(&model(1, 3), &meta(), 1_700_000_000_000).expect("encode");
        (dir, bytes)
    }

    /// A file's metadata and payload sections, split by its header's lengths.
    fn sections(file: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let header: [u8; HEADER_BYTES] = file[..HEADER_BYTES].try_into().expect("header");
        let metadata_bytes = u64::from_le_bytes(field(&header, METADATA_LENGTH_RANGE)) as usize;
        let (metadata, payload) = file[HEADER_BYTES..].split_at(metadata_bytes);
        (metadata.to_vec(), payload.to_vec())
    }

    /// Reads `bytes` as if they were a snapshot file.
    fn read_bytes(dir: &Path, bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        let path = dir.join("probe.snap");
        fs::write(&path, bytes).expect("write probe file");
        read(&path)
    }

    /// Reads a file made of `metadata` and `payload` with a header and checksum that vouch for
    /// them: what a careless or hostile writer could produce.
    fn read_crafted(
        dir: &Path,
        metadata: &[u8],
        payload: &[u8],
    ) -> Result<Snapshot, SnapshotError> {
        read_bytes(dir, &assemble_file(metadata, payload).0)
    }

    #[test]
    fn a_written_version_reads_back_bit_for_bit() {
        let (_dir, mut store) = store(3);
        let original = model(7, 6);
        let path = store.write(&original, &meta()).expect("write");
        assert_eq!(path, store.dir().join("pooch").join("v00000007.snap"));

        let snapshot = read(&path).expect("read");
        let loaded = &snapshot.model;
        assert_eq!(loaded.name, original.name);
        assert_eq!(loaded.version, original.version);
        assert_eq!(loaded.epoch, original.epoch);
        assert_eq!(loaded.published_at, original.published_at);
        assert_eq!(loaded.bits, original.bits);
        assert_eq!(loaded.metrics, original.metrics);
        assert_eq!(weight_bits(loaded), weight_bits(&original));
        assert_eq!(loaded.weights.get(1).to_bits(), NAN_WITH_PAYLOAD);
        assert_eq!(snapshot.meta, meta());
        assert!(snapshot.created_unix_ms > 0);

        let feature_vectors: [&[(u32, f32)]; 5] = [
            &[(0, 1.0), (3, 2.0)],
            &[(9, -1.5), (12, 0.5), (1_000_000, 3.0)],
            &[(1, 1.0)],
            &[(4, 1.0), (6, -2.0)],
            &[(2, 1.0), (7, 1e30)],
        ];
        for features in feature_vectors {
            assert_eq!(
                loaded.predict(features).to_bits(),
                original.predict(features).to_bits(),
                "prediction on {features:?}"
            );
        }
    }

    #[test]
    fn non_finite_and_awkward_losses_read_back_exactly() {
        let (_dir, mut store) = store(3);
        for (version, logloss) in [
            (1, f64::NAN),
            (2, f64::INFINITY),
            (3, 5e-324),
            (4, 0.1 + 0.2),
            (5, 1e300),
        ] {
            let mut original = model(version, 3);
            original.metrics.logloss = logloss;
            let path = store
                .write(&original, &SnapshotMeta::default())
                .expect("write");
            let loaded = read(&path).expect("read").model.metrics.logloss;
            assert!(
                loaded.to_bits() == logloss.to_bits() || (logloss.is_nan() && loaded.is_nan()),
                "{logloss:?} read back as {loaded:?}"
            );
        }
    }

    #[test]
    fn an_all_zero_model_reads_back() {
        let (_dir, mut store) = store(1);
        let mut zero = model(1, 4);
        zero.weights = Arc::new(Weights::default());
        let path = store.write(&zero, &meta()).expect("write");
        assert_eq!(weight_bits(&read(&path).expect("read").model), vec![0; 16]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (dir, bytes) = small_snapshot_bytes();
        for length in 0..bytes.len() {
            match read_bytes(dir.path(), &bytes[..length]) {
                Err(SnapshotError::TooShort { .. }) if length < HEADER_BYTES => {}
                Err(SnapshotError::SizeMismatch { file_bytes, .. }) if length >= HEADER_BYTES => {
                    assert_eq!(file_bytes, length as u64);
                }
                other => panic!("truncated to {length} bytes: {other:?}"),
            }
        }
        assert!(read_bytes(dir.path(), &bytes).is_ok());
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let (dir, bytes) = small_snapshot_bytes();
        for position in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[position] ^= flip;
                let result = read_bytes(dir.path(), &damaged);
                match (&result, position) {
                    (Err(SnapshotError::ChecksumMismatch { .. }), HEADER_BYTES..) => {}
                    (Err(_), 0..HEADER_BYTES) => {}
                    _ => panic!("byte {position} ^ {flip:#04x}: {result:?}"),
                }
            }
        }
    }

    #[test]
    fn header_damage_gets_the_matching_error() {
        let (dir, bytes) = small_snapshot_bytes();
        let patched = |range: Range<usize>, value: &[u8]| {
            let mut patched = bytes.clone();
            patched[range].copy_from_slice(value);
            read_bytes(dir.path(), &patched)
        };

        let error = patched(FORMAT_VERSION_RANGE, &2u32.to_le_bytes()).unwrap_err();
        assert!(
            matches!(
                error,
                SnapshotError::UnsupportedFormatVersion { found: 2, .. }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("probe.snap: snapshot format version 2"),
            "{error}"
        );

        let mut swapped = BYTE_ORDER_MARKER.to_ne_bytes();
        swapped.reverse();
        let error = patched(BYTE_ORDER_RANGE, &swapped).unwrap_err();
        assert!(
            matches!(error, SnapshotError::ForeignByteOrder { .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains("big-endian") && message.contains("little-endian"),
            "{message}"
        );

        let other_width = if POINTER_WIDTH_BITS == 64 { 32u32 } else { 64 };
        let error = patched(POINTER_WIDTH_RANGE, &other_width.to_le_bytes()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::ForeignPointerWidth { found_bits, .. } if found_bits == other_width),
            "{error}"
        );

        let error = patched(MAGIC_RANGE, b"FWRE\0\0\0\0").unwrap_err();
        assert!(matches!(error, SnapshotError::BadMagic { .. }), "{error}");

        let error = patched(PAYLOAD_LENGTH_RANGE, &u64::MAX.to_le_bytes()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::SectionTooLarge { .. }),
            "{error}"
        );
    }

    #[test]
    fn a_checksum_mismatch_names_the_file_and_both_checksums() {
        let (_dir, mut store) = store(3);
        let path = store.write(&model(3, 3), &meta()).expect("write");
        let mut bytes = fs::read(&path).expect("read back");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&path, &bytes).expect("damage");
        let error = read(&path).unwrap_err();
        let SnapshotError::ChecksumMismatch {
            stored, computed, ..
        } = error
        else {
            panic!("{error}");
        };
        assert_eq!(
            error.to_string(),
            format!(
                "{}: checksum mismatch (file says {stored:#018x}, content hashes to {computed:#018x})",
                path.display()
            )
        );
        assert!(
            error
                .to_string()
                .contains("pooch/v00000003.snap: checksum mismatch (file says 0x")
        );
    }

    #[test]
    fn retention_keeps_the_newest_versions_and_a_manifest_of_them() {
        let (_dir, mut store) = store(3);
        for version in 1..=5 {
            store.write(&model(version, 4), &meta()).expect("write");
        }
        let versions: Vec<u64> = store
            .list("pooch")
            .expect("list")
            .iter()
            .map(|stored| stored.version)
            .collect();
        assert_eq!(versions, vec![3, 4, 5]);

        // nothing else is left behind: no temporary files, no expired snapshots
        let mut names: Vec<String> = fs::read_dir(store.dir().join("pooch"))
            .expect("read dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "MANIFEST.json",
                "v00000003.snap",
                "v00000004.snap",
                "v00000005.snap"
            ]
        );

        let manifest = store.manifest("pooch").expect("manifest").expect("present");
        assert_eq!(manifest.model, "pooch");
        assert_eq!(manifest.newest, 5);
        let listed: Vec<(u64, u64, &str)> = manifest
            .versions
            .iter()
            .map(|entry| (entry.version, entry.epoch, entry.file.as_str()))
            .collect();
        assert_eq!(
            listed,
            vec![
                (3, 30, "v00000003.snap"),
                (4, 40, "v00000004.snap"),
                (5, 50, "v00000005.snap")
            ]
        );
        for entry in &manifest.versions {
            let snapshot = read(&store.dir().join("pooch").join(&entry.file)).expect("read");
            assert_eq!(entry.checksum, snapshot.checksum);
        }

        assert_eq!(store.next_version("pooch").expect("next"), 6);
        assert_eq!(store.next_version("other").expect("next"), 1);

        let newest = store.newest_good("pooch").expect("newest");
        assert_eq!(newest.snapshot.expect("a good snapshot").model.version, 5);
        assert!(newest.skipped.is_empty());
    }

    #[test]
    fn newest_good_skips_a_damaged_newest_and_says_why() {
        let (_dir, mut store) = store(3);
        for version in 1..=5 {
            store.write(&model(version, 4), &meta()).expect("write");
        }
        let newest_path = store.dir().join("pooch").join("v00000005.snap");
        let mut bytes = fs::read(&newest_path).expect("read back");
        let middle = bytes.len() / 2 + HEADER_BYTES / 2;
        bytes[middle] ^= 0x40;
        fs::write(&newest_path, &bytes).expect("damage");

        let newest = store.newest_good("pooch").expect("newest");
        let snapshot = newest.snapshot.expect("v4 is good");
        assert_eq!(snapshot.model.version, 4);
        assert_eq!(weight_bits(&snapshot.model), weight_bits(&model(4, 4)));
        assert_eq!(newest.skipped.len(), 1);
        assert!(
            matches!(&newest.skipped[0], SnapshotError::ChecksumMismatch { path, .. } if *path == newest_path),
            "{:?}",
            newest.skipped
        );
        // the damaged file still holds its number
        assert_eq!(store.next_version("pooch").expect("next"), 6);
    }

    #[test]
    fn newest_good_reports_every_failure_when_none_loads() {
        let (_dir, mut store) = store(2);
        for version in 1..=2 {
            let path = store.write(&model(version, 3), &meta()).expect("write");
            fs::write(&path, b"not a snapshot").expect("damage");
        }
        let newest = store.newest_good("pooch").expect("newest");
        assert!(newest.snapshot.is_none());
        assert_eq!(newest.skipped.len(), 2);
        assert!(
            store
                .newest_good("never-written")
                .expect("newest")
                .skipped
                .is_empty()
        );
    }

    #[test]
    fn a_snapshot_under_the_wrong_name_is_skipped() {
        let (_dir, mut store) = store(3);
        let v1 = store.write(&model(1, 3), &meta()).expect("write");
        fs::copy(&v1, store.dir().join("pooch").join("v00000002.snap")).expect("copy");
        let newest = store.newest_good("pooch").expect("newest");
        assert_eq!(newest.snapshot.expect("v1").model.version, 1);
        assert!(
            matches!(
                newest.skipped.as_slice(),
                [SnapshotError::Misplaced {
                    found_version: 1,
                    expected_version: 2,
                    ..
                }]
            ),
            "{:?}",
            newest.skipped
        );
    }

    #[test]
    fn writes_that_would_break_the_store_are_refused() {
        let (_dir, mut store) = store(3);
        store.write(&model(4, 3), &meta()).expect("write");
        for version in [3, 4] {
            let error = store.write(&model(version, 3), &meta()).unwrap_err();
            assert!(
                matches!(
                    error,
                    SnapshotError::StaleVersion {
                        newest_present: 4,
                        ..
                    }
                ),
                "{error}"
            );
        }
        for name in ["", ".", "..", ".hidden", "a/b", "a\\b", "dog adoption", "é"] {
            let mut named = model(9, 3);
            named.name = name.to_owned();
            let error = store.write(&named, &meta()).unwrap_err();
            assert!(
                matches!(error, SnapshotError::InvalidModelName { .. }),
                "{name:?}: {error}"
            );
        }
        let mut lopsided = model(9, 3);
        // a weight beyond the model's 2^3 coordinates
        lopsided.weights = Arc::new(Weights::from_dense(&[1.0; 9]));
        let error = store.write(&lopsided, &meta()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::UnsupportedModel { .. }),
            "{error}"
        );

        let mut huge = model(9, 3);
        huge.bits = MAX_BITS + 1;
        let error = store.write(&huge, &meta()).unwrap_err();
        assert!(
            matches!(error, SnapshotError::UnsupportedModel { .. }),
            "{error}"
        );

        assert!(matches!(
            SnapshotStore::open(store.dir(), 0),
            Err(SnapshotError::InvalidRetain { retain: 0, .. })
        ));
    }

    #[test]
    fn a_lost_manifest_is_rebuilt_from_the_snapshots() {
        let (_dir, mut store) = store(2);
        store.write(&model(1, 3), &meta()).expect("write");
        let manifest_path = store.dir().join("pooch").join(MANIFEST_FILE_NAME);
        fs::write(&manifest_path, b"{ damaged").expect("damage");
        assert!(matches!(
            store.manifest("pooch"),
            Err(SnapshotError::ManifestInvalid { .. })
        ));

        store.write(&model(2, 3), &meta()).expect("write");
        let manifest = store.manifest("pooch").expect("manifest").expect("present");
        let listed: Vec<(u64, u64)> = manifest
            .versions
            .iter()
            .map(|entry| (entry.version, entry.epoch))
            .collect();
        assert_eq!(listed, vec![(1, 10), (2, 20)]);
        assert_eq!(manifest.newest, 2);
    }

    #[test]
    fn a_crashed_writers_temporary_files_are_removed() {
        let (_dir, mut store) = store(3);
        store.write(&model(1, 3), &meta()).expect("write");
        let leftover = store
            .dir()
            .join("pooch")
            .join(".v00000002.snap.tmp-999999-1");
        fs::write(&leftover, b"half a snapshot").expect("leftover");
        // another tool's temporary file in the same directory, possibly being written now
        let control = store.dir().join("pooch").join(".CONTROL.json.tmp-999999-1");
        fs::write(&control, b"{}").expect("control temporary");
        assert_eq!(store.next_version("pooch").expect("next"), 2);
        store.write(&model(2, 3), &meta()).expect("write");
        assert!(!leftover.exists());
        assert!(control.exists());
    }

    #[test]
    fn equal_models_give_equal_payloads() {
        // The writer zeroes the heap addresses abomonation copies, so content alone decides
        // the payload's bytes.
        let (_dir, mut first) = store(3);
        let (_other_dir, mut second) = store(3);
        let one = fs::read(first.write(&model(1, 5), &meta()).expect("write")).expect("read");
        let two = fs::read(second.write(&model(1, 5), &meta()).expect("write")).expect("read");
        assert_eq!(sections(&one).1, sections(&two).1);
    }

    #[test]
    fn vector_headers_in_the_file_are_never_trusted() {
        let (dir, bytes) = small_snapshot_bytes();
        let (metadata, mut payload) = sections(&bytes);
        // pointers and lengths a naive decode would follow off a cliff
        payload[PAYLOAD_VECTOR_HEADERS].fill(0xff);
        let snapshot = read_crafted(dir.path(), &metadata, &payload).expect("still loads");
        assert_eq!(weight_bits(&snapshot.model), weight_bits(&model(1, 3)));
    }

    #[test]
    fn payloads_with_valid_checksums_but_invalid_content_are_refused() {
        let (dir, bytes) = small_snapshot_bytes();
        let (metadata, _) = sections(&bytes);
        let payload = |bits: u32, entry_count: u32, indices: Vec<u32>, weights: Vec<f32>| {
            encode_payload(&SparsePayload {
                bits,
                entry_count,
                indices,
                weights,
            })
            .expect("encode")
        };
        let cases = [
            (
                "descending",
                payload(3, 2, vec![5, 2], vec![1.0, 2.0]),
                "not ascending",
            ),
            (
                "repeated",
                payload(3, 2, vec![2, 2], vec![1.0, 2.0]),
                "not ascending",
            ),
            (
                "outside",
                payload(3, 1, vec![8], vec![1.0]),
                "outside a model",
            ),
            (
                "explicit zero",
                payload(3, 1, vec![3], vec![0.0]),
                "stores +0.0",
            ),
            (
                "count too high",
                payload(3, 3, vec![1, 2], vec![1.0, 2.0]),
                "3 entries",
            ),
            (
                "count too low",
                payload(3, 1, vec![1, 2], vec![1.0, 2.0]),
                "1 entries",
            ),
            (
                "too many entries",
                payload(1, 3, vec![0, 1, 2], vec![1.0; 3]),
                "only 2 weights",
            ),
            ("huge bits", payload(31, 0, vec![], vec![]), "bits = 31"),
            (
                "other bits than the metadata",
                payload(4, 1, vec![1], vec![1.0]),
                "metadata says bits = 3",
            ),
            ("empty", Vec::new(), "shorter than its"),
        ];
        for (case, payload, expected) in cases {
            match read_crafted(dir.path(), &metadata, &payload) {
                Err(SnapshotError::Payload { reason, .. }) => {
                    assert!(reason.contains(expected), "{case}: {reason}");
                }
                other => panic!("{case}: {other:?}"),
            }
        }
        let (_, good_payload) = sections(&bytes);
        let error = read_crafted(dir.path(), b"{\"model\": 3}", &good_payload).unwrap_err();
        assert!(matches!(error, SnapshotError::Metadata { .. }), "{error}");
    }

    #[test]
    fn only_canonical_file_names_are_snapshots() {
        assert_eq!(parse_snapshot_file_name("v00000003.snap"), Some(3));
        assert_eq!(
            parse_snapshot_file_name("v123456789.snap"),
            Some(123_456_789)
        );
        for name in [
            "v3.snap",
            "v000000003.snap",
            "v0000000a.snap",
            "v+0000003.snap",
            "v00000003.snap.tmp-1-1",
            ".v00000003.snap.tmp-1-1",
            "MANIFEST.json",
            "v99999999999999999999.snap",
        ] {
            assert_eq!(parse_snapshot_file_name(name), None, "{name}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let dir = tempfile::tempdir().expect("temporary directory");
            prop_assert!(read_bytes(dir.path(), &bytes).is_err());
        }

        #[test]
        fn arbitrary_sections_behind_a_valid_header_never_panic(
            metadata in proptest::collection::vec(any::<u8>(), 0..64),
            payload in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let dir = tempfile::tempdir().expect("temporary directory");
            prop_assert!(read_crafted(dir.path(), &metadata, &payload).is_err());
        }

        #[test]
        fn edited_payloads_with_valid_checksums_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let (dir, bytes) = small_snapshot_bytes();
            let (metadata, mut payload) = sections(&bytes);
            for (position, value) in edits {
                let position = position.index(payload.len());
                payload[position] = value;
            }
            // An edit may happen to leave a valid model; then it must be a whole one.
            if let Ok(snapshot) = read_crafted(dir.path(), &metadata, &payload) {
                prop_assert_eq!(snapshot.model.weights.len(), 1usize << snapshot.model.bits);
            }
        }
    }
}
