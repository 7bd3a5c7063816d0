//! Checkpoints on disk: what a run needs to continue exactly from an epoch boundary, in
//! versioned, checksummed files under `OUT/checkpoints/`, each written atomically and listed
//! in a manifest written after it.
//!
//! A checkpoint file is a header of our own, then a `bincode` payload:
//!
//! | bytes | what |
//! |---|---|
//! | 0..8 | magic, `POOCHCKP` |
//! | 8..12 | format version, little-endian |
//! | 12..20 | payload length, little-endian |
//! | 20..28 | XXH3-64 of the payload, little-endian |
//! | 28.. | the payload: a [`Checkpoint`] |
//!
//! The manifest (`MANIFEST.json`) lists the complete checkpoints, oldest first, with each
//! one's cut, length and checksum. A file the manifest does not list was never finished (the
//! writer died before the manifest named it) and is never read. Reading takes the newest
//! listed checkpoint that verifies and was written from the same spec; every one it passes
//! over is reported with the reason ([`Refusal`]), never used silently. The last `retain`
//! checkpoints are kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use dataflows::checkpoint::WorkerState;
use dataflows::fact::Time;
use serde::{Deserialize, Serialize};

use crate::collect::read::ReaderState;
use crate::files::{self, FileError, io_error};
use crate::runtime::collector::Collector;

/// The first bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"POOCHCKP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The length of the header.
pub const HEADER_BYTES: usize = 28;
/// The manifest's name.
pub const MANIFEST: &str = "MANIFEST.json";
/// How many checkpoints are kept by default.
pub const DEFAULT_RETAIN: usize = 3;
/// A checkpoint every this many epochs by default: none (0). Checkpoints are opt-in until
/// the state is compacted: today it keeps every fact, about 110 MB a checkpoint on the
/// default Sniffable data, which would double a default run's time.
pub const DEFAULT_EPOCHS: u64 = 0;
/// And at least once every this many seconds of wall time by default: none (0), as above.
pub const DEFAULT_SECS: u64 = 0;

/// The wall-clock trigger for a setting in seconds: none for 0 (not a checkpoint at every
/// epoch).
pub fn interval(secs: u64) -> Option<std::time::Duration> {
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}
/// How many bytes of a file's start its identity hashes.
const PREFIX_BYTES: usize = 4096;

/// Everything a continuation from a cut needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The hash of the spec the run was started from.
    pub spec_hash: String,
    /// The cut: an epoch boundary; everything before it is in the state.
    pub cut: Time,
    /// Each worker's graph state and reading, in worker order.
    pub workers: Vec<WorkerCheckpoint>,
    /// The number the next published version takes.
    pub next_version: u64,
    /// The length of every output file at the cut, by name under `OUT/`: a resumed run cuts
    /// each back to it.
    pub outputs: BTreeMap<String, u64>,
    /// What worker 0 had gathered from the outputs before the cut (the summary's counts),
    /// without the readers' counts, which the workers' readings carry.
    pub collector: Collector,
}

/// One worker's part of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerCheckpoint {
    /// The graph's state.
    pub state: WorkerState,
    /// Where the worker's reading stood in each of its files, and which files they were.
    pub reader: ReaderState,
}

/// What tells a file from another that took its name: its inode, its length then, and a hash
/// of its first bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    /// The inode number (0 where there is none).
    pub inode: u64,
    /// Its length when identified.
    pub len: u64,
    /// XXH3-64 of its first 4 KiB (or all of it, when shorter).
    pub prefix_hash: u64,
}

impl FileIdentity {
    /// The identity of the file at `path` now.
    pub fn of(path: &Path) -> Result<Self, FileError> {
        let mut file = fs::File::open(path).map_err(io_error(path, "open the file"))?;
        let metadata = file
            .metadata()
            .map_err(io_error(path, "read its metadata"))?;
        let mut prefix = Vec::with_capacity(PREFIX_BYTES);
        (&mut file)
            .take(PREFIX_BYTES as u64)
            .read_to_end(&mut prefix)
            .map_err(io_error(path, "read its first bytes"))?;
        Ok(FileIdentity {
            inode: inode(&metadata),
            len: metadata.len(),
            prefix_hash: xxhash_rust::xxh3::xxh3_64(&prefix),
        })
    }

    /// Why the file now at `path` is not the one identified (replaced, truncated), if it is
    /// not. A file that grew is the same file.
    pub fn differs(&self, path: &Path) -> Option<String> {
        let now = match FileIdentity::of(path) {
            Ok(now) => now,
            Err(error) => return Some(error.to_string()),
        };
        if now.inode != self.inode {
            return Some(format!(
                "{}: replaced since the checkpoint (inode {} then, {} now)",
                path.display(),
                self.inode,
                now.inode
            ));
        }
        if now.len < self.len {
            return Some(format!(
                "{}: truncated since the checkpoint ({} bytes then, {} now)",
                path.display(),
                self.len,
                now.len
            ));
        }
        // a file shorter than the prefix then has grown into it: hash the same length
        let same_prefix = if (self.len as usize) < PREFIX_BYTES {
            fs::read(path).ok().is_some_and(|bytes| {
                let end = (self.len as usize).min(bytes.len());
                xxhash_rust::xxh3::xxh3_64(&bytes[..end]) == self.prefix_hash
            })
        } else {
            now.prefix_hash == self.prefix_hash
        };
        (!same_prefix).then(|| {
            format!(
                "{}: its first bytes changed since the checkpoint",
                path.display()
            )
        })
    }
}

#[cfg(unix)]
fn inode(metadata: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(metadata)
}

#[cfg(not(unix))]
fn inode(_: &fs::Metadata) -> u64 {
    0
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file operation failed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The manifest is not what this build writes.
    #[error("{}: not a checkpoint manifest: {reason}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The state could not be encoded.
    #[error("could not encode the checkpoint: {0}")]
    Encode(String),
}

/// A checkpoint passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Its file.
    pub path: PathBuf,
    /// Why it was not used.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: checkpoint refused: {}",
            self.path.display(),
            self.reason
        )
    }
}

/// One listed checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// Its file, in the store's directory.
    pub file: String,
    /// Its cut.
    pub cut: Time,
    /// The file's length.
    pub bytes: u64,
    /// The payload's XXH3-64, in hex.
    pub checksum: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    checkpoints: Vec<Listed>,
}

/// The checkpoints of one output directory.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    retain: usize,
}

impl CheckpointStore {
    /// The store under `out/checkpoints`, created if missing, keeping the last `retain`.
    pub fn open(out: &Path, retain: usize) -> Result<Self, CheckpointError> {
        let dir = out.join("checkpoints");
        fs::create_dir_all(&dir).map_err(io_error(&dir, "create the checkpoint directory"))?;
        Ok(CheckpointStore {
            dir,
            retain: retain.max(1),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoints the manifest lists, oldest first.
    pub fn list(&self) -> Result<Vec<Listed>, CheckpointError> {
        Ok(self.manifest()?.checkpoints)
    }

    fn manifest(&self) -> Result<Manifest, CheckpointError> {
        let path = self.dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Manifest {
                    format: FORMAT_VERSION,
                    checkpoints: Vec::new(),
                });
            }
            Err(error) => return Err(io_error(&path, "read the manifest")(error).into()),
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|error| CheckpointError::Manifest {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if manifest.format != FORMAT_VERSION {
            return Err(CheckpointError::Manifest {
                path,
                reason: format!(
                    "format {} (this build reads {FORMAT_VERSION})",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }

    /// Writes a checkpoint: its file atomically, then the manifest naming it, then removes
    /// the checkpoints beyond the last `retain`. Returns the file's path.
    pub fn write(&self, checkpoint: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let bytes = encode(checkpoint)?;
        let file = format!("c{:020}.ckpt", checkpoint.cut);
        let path = files::replace(&self.dir, &file, &bytes)?;
        let mut manifest = self.manifest()?;
        manifest.checkpoints.retain(|listed| listed.file != file);
        manifest.checkpoints.push(Listed {
            file,
            cut: checkpoint.cut,
            bytes: bytes.len() as u64,
            checksum: format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(&bytes[HEADER_BYTES..])
            ),
        });
        manifest.checkpoints.sort_by_key(|listed| listed.cut);
        let excess = manifest.checkpoints.len().saturating_sub(self.retain);
        let dropped: Vec<Listed> = manifest.checkpoints.drain(..excess).collect();
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|error| CheckpointError::Encode(error.to_string()))?;
        files::replace(&self.dir, MANIFEST, text.as_bytes())?;
        // only once the manifest no longer names them
        for listed in dropped {
            let old = self.dir.join(&listed.file);
            fs::remove_file(&old).map_err(io_error(&old, "remove an old checkpoint"))?;
        }
        Ok(path)
    }

    /// The newest listed checkpoint that verifies and was written from the spec of
    /// `spec_hash`, with the newer ones passed over and why; `None` when none qualifies.
    pub fn newest(
        &self,
        spec_hash: &str,
    ) -> Result<(Option<Checkpoint>, Vec<Refusal>), CheckpointError> {
        let mut refusals = Vec::new();
        for listed in self.list()?.iter().rev() {
            let path = self.dir.join(&listed.file);
            match read(&path) {
                Ok(checkpoint) if checkpoint.spec_hash != spec_hash => refusals.push(Refusal {
                    path,
                    reason: format!(
                        "written from another spec (hash {}, this run's is {spec_hash})",
                        checkpoint.spec_hash
                    ),
                }),
                Ok(checkpoint) if checkpoint.cut != listed.cut => refusals.push(Refusal {
                    path,
                    reason: format!(
                        "its cut is {}, the manifest says {}",
                        checkpoint.cut, listed.cut
                    ),
                }),
                Ok(checkpoint) => return Ok((Some(checkpoint), refusals)),
                Err(reason) => refusals.push(Refusal { path, reason }),
            }
        }
        Ok((None, refusals))
    }

    /// Removes every checkpoint, for a run that starts over on purpose (`--fresh`).
    pub fn clear(&self) -> Result<(), CheckpointError> {
        for listed in self.list()? {
            let path = self.dir.join(&listed.file);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&path, "remove a checkpoint")(error).into()),
            }
        }
        let manifest = self.dir.join(MANIFEST);
        match fs::remove_file(&manifest) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(io_error(&manifest, "remove the manifest")(error).into()),
        }
    }
}

/// A checkpoint's file contents: the header, then the payload.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let payload = bincode::serialize(checkpoint)
        .map_err(|error| CheckpointError::Encode(error.to_string()))?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

/// Reads and verifies a checkpoint file; the reason, naming what failed, when it does not.
pub fn read(path: &Path) -> Result<Checkpoint, String> {
    let bytes = fs::read(path).map_err(|error| format!("could not read it: {error}"))?;
    decode(&bytes)
}

/// Verifies and decodes a checkpoint's file contents.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_BYTES}-byte header",
            bytes.len()
        ));
    }
    if bytes[0..8] != MAGIC {
        return Err("not a checkpoint file (bad magic)".to_owned());
    }
    let word = |range: std::ops::Range<usize>| {
        let mut buffer = [0u8; 8];
        buffer[..range.len()].copy_from_slice(&bytes[range]);
        u64::from_le_bytes(buffer)
    };
    let version = word(8..12);
    if version != u64::from(FORMAT_VERSION) {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    let length = word(12..20);
    let payload = &bytes[HEADER_BYTES..];
    if payload.len() as u64 != length {
        return Err(format!(
            "truncated or extended: the header says {length} payload bytes, the file holds {}",
            payload.len()
        ));
    }
    let checksum = word(20..28);
    let computed = xxhash_rust::xxh3::xxh3_64(payload);
    if computed != checksum {
        return Err(format!(
            "checksum mismatch (header {checksum:016x}, payload {computed:016x}): the file is damaged"
        ));
    }
    bincode::deserialize(payload).map_err(|error| format!("could not decode the payload: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(cut: Time, spec_hash: &str) -> Checkpoint {
        let state = WorkerState {
            cut,
            worker: 0,
            peers: 1,
            ..WorkerState::default()
        };
        Checkpoint {
            spec_hash: spec_hash.to_owned(),
            cut,
            workers: vec![WorkerCheckpoint {
                state,
                reader: ReaderState {
                    worker: 0,
                    peers: 1,
                    files: Vec::new(),
                    counts: Vec::new(),
                    order_time: Vec::new(),
                    max_time: Some(cut),
                    digest: 9,
                },
            }],
            next_version: 12,
            outputs: BTreeMap::from([("metrics.jsonl".to_owned(), 4096)]),
            collector: Collector::default(),
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let out = tempfile::tempdir().expect("a temporary directory");
        let store = CheckpointStore::open(out.path(), 3).expect("a store");
        store.write(&checkpoint(600, "abc")).expect("written");
        let (newest, refusals) = store.newest("abc").expect("a manifest");
        let bytes = |checkpoint: &Checkpoint| encode(checkpoint).expect("encoded");
        assert_eq!(
            newest.as_ref().map(bytes),
            Some(bytes(&checkpoint(600, "abc")))
        );
        assert!(refusals.is_empty());
    }

    #[test]
    fn the_last_n_are_kept_and_the_newest_is_read() {
        let out = tempfile::tempdir().expect("a temporary directory");
        let store = CheckpointStore::open(out.path(), 2).expect("a store");
        for cut in [100, 200, 300] {
            store.write(&checkpoint(cut, "abc")).expect("written");
        }
        let cuts: Vec<Time> = store
            .list()
            .expect("listed")
            .iter()
            .map(|l| l.cut)
            .collect();
        assert_eq!(cuts, vec![200, 300]);
        assert!(!store.dir().join(format!("c{:020}.ckpt", 100)).exists());
        assert_eq!(
            store.newest("abc").expect("read").0.map(|c| c.cut),
            Some(300)
        );
    }

    #[test]
    fn a_damaged_or_truncated_or_foreign_checkpoint_is_refused_and_the_previous_used() {
        let out = tempfile::tempdir().expect("a temporary directory");
        let store = CheckpointStore::open(out.path(), 5).expect("a store");
        store.write(&checkpoint(100, "abc")).expect("written");
        let damaged = store.write(&checkpoint(200, "abc")).expect("written");
        let truncated = store.write(&checkpoint(300, "abc")).expect("written");
        store.write(&checkpoint(400, "other")).expect("written");
        let mut bytes = fs::read(&damaged).expect("readable");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&damaged, bytes).expect("writable");
        let bytes = fs::read(&truncated).expect("readable");
        fs::write(&truncated, &bytes[..bytes.len() - 3]).expect("writable");

        let (newest, refusals) = store.newest("abc").expect("a manifest");
        assert_eq!(newest.map(|c| c.cut), Some(100));
        let reasons: Vec<&str> = refusals.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].contains("another spec"), "{}", reasons[0]);
        assert!(reasons[1].contains("truncated"), "{}", reasons[1]);
        assert!(reasons[2].contains("checksum mismatch"), "{}", reasons[2]);
        assert!(refusals[0].to_string().contains("checkpoint refused"));
    }

    #[test]
    fn a_file_the_manifest_does_not_list_is_never_read() {
        let out = tempfile::tempdir().expect("a temporary directory");
        let store = CheckpointStore::open(out.path(), 3).expect("a store");
        store.write(&checkpoint(100, "abc")).expect("written");
        // a writer that died after its file and before the manifest
        let bytes = encode(&checkpoint(200, "abc")).expect("encoded");
        fs::write(store.dir().join(format!("c{:020}.ckpt", 200)), bytes).expect("writable");
        assert_eq!(
            store.newest("abc").expect("read").0.map(|c| c.cut),
            Some(100)
        );
    }

    #[test]
    fn fresh_clears_the_store() {
        let out = tempfile::tempdir().expect("a temporary directory");
        let store = CheckpointStore::open(out.path(), 3).expect("a store");
        store.write(&checkpoint(100, "abc")).expect("written");
        store.clear().expect("cleared");
        assert!(store.newest("abc").expect("read").0.is_none());
        assert!(store.list().expect("listed").is_empty());
    }

    #[test]
    fn a_replaced_or_truncated_file_is_detected_and_a_grown_one_is_not() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("posts.csv");
        fs::write(&path, b"a,1\nb,2\n").expect("writable");
        let identity = FileIdentity::of(&path).expect("identified");
        fs::write(&path, b"a,1\nb,2\nc,3\n").expect("writable");
        assert_eq!(identity.differs(&path), None, "grown in place");
        fs::write(&path, b"a,1\n").expect("writable");
        assert!(
            identity
                .differs(&path)
                .expect("differs")
                .contains("truncated")
        );
        let other = dir.path().join("other.csv");
        fs::write(&other, b"x,9\ny,8\nz,7\n").expect("writable");
        fs::rename(&other, &path).expect("renamed");
        let why = identity.differs(&path).expect("differs");
        assert!(
            why.contains("replaced") || why.contains("first bytes"),
            "{why}"
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert!(decode(b"short").unwrap_err().contains("shorter"));
        let mut bytes = encode(&checkpoint(1, "abc")).expect("encoded");
        bytes[0] = b'X';
        assert!(decode(&bytes).unwrap_err().contains("magic"));
        let mut bytes = encode(&checkpoint(1, "abc")).expect("encoded");
        bytes[8] = 9;
        assert!(decode(&bytes).unwrap_err().contains("format version 9"));
    }
}
