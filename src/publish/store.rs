//! The snapshot store: a directory of published versions, one checked, atomically written file
//! per version, a manifest per model, and a limit on how many versions are kept.
//!
//! ```text
//! <dir>/<model>/v00000003.snap   one ModelVersion and what produced it
//! <dir>/<model>/MANIFEST.json    the retained versions, rewritten after every snapshot
//! ```
//!
//! A snapshot file's layout is the [`format`](mod@super::format)'s; the store decides where files
//! go, which are kept, and how they are written ([`crate::files::replace`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use dataflows::publish::model::ModelVersion;
use serde::{Deserialize, Serialize};

use crate::clock::now_unix_ms;
use crate::files::{self, io_error};
use crate::publish::SnapshotError;
use crate::publish::format::{self, Snapshot, SnapshotMeta, read};

/// The name of the per-model manifest.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST.json";

/// A model name becomes a directory name, so it is kept short and plain.
const MAX_MODEL_NAME_BYTES: usize = 128;

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

/// A directory of snapshots: `<dir>/<model>/v<version>.snap`, at most `retain` per model
/// besides the versions it is told to spare ([`SnapshotStore::sparing`]).
///
/// One store writes to a directory at a time: `write` reads and rewrites the manifest, and
/// takes `&mut self` so that a store shared in-process cannot interleave two of them.
pub struct SnapshotStore {
    dir: PathBuf,
    retain: usize,
    /// The versions of a model that retention must not delete, whatever their age.
    spared: Option<Box<dyn FnMut(&str) -> BTreeSet<u64> + Send>>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SnapshotStore")
            .field("dir", &self.dir)
            .field("retain", &self.retain)
            .field("sparing", &self.spared.is_some())
            .finish()
    }
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
            spared: None,
        })
    }

    /// Never deletes, past the retention limit, the versions `spared(model)` names when a
    /// version of `model` is written (the serving one, a pinned one: see
    /// [`crate::serve::supervisor::spare_served`]). They do not count against the limit.
    pub fn sparing(mut self, spared: impl FnMut(&str) -> BTreeSet<u64> + Send + 'static) -> Self {
        self.spared = Some(Box::new(spared));
        self
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
        format::check_encodable(model)?;
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
        let (file_bytes, checksum) = format::encode_file(model, meta, now_unix_ms())?;

        // write the snapshot
        let model_dir = self.dir.join(&model.name);
        if !model_dir.is_dir() {
            fs::create_dir_all(&model_dir).map_err(io_error(
                &model_dir,
                "create the model's snapshot directory",
            ))?;
            files::sync_directory(&self.dir)?;
        }
        let file_name = snapshot_file_name(model.version);
        let path = files::replace(&model_dir, &file_name, &file_bytes)?;

        // keep the newest `retain` versions on disk, this one included, and those spared
        let mut versions: Vec<u64> = present.iter().map(|stored| stored.version).collect();
        versions.push(model.version);
        let spared = self
            .spared
            .as_mut()
            .map(|spared| spared(&model.name))
            .unwrap_or_default();
        let (expired, kept) = expire(&versions, self.retain, &spared);
        let (expired, kept) = (expired.as_slice(), kept.as_slice());

        // the manifest of the kept versions
        let written = ManifestEntry {
            version: model.version,
            epoch: model.epoch,
            file: file_name,
            checksum,
        };
        let manifest = self.manifest_after(&model.name, written, kept);
        let manifest_bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|error| SnapshotError::Encode {
                model: model.name.clone(),
                version: model.version,
                reason: error.to_string(),
            })?;
        files::replace(&model_dir, MANIFEST_FILE_NAME, &manifest_bytes)?;

        // only now, with the new version durable, forget the old ones
        for &version in expired {
            let expired_path = model_dir.join(snapshot_file_name(version));
            fs::remove_file(&expired_path).map_err(io_error(
                &expired_path,
                "delete a snapshot past the retention limit (the new snapshot and manifest are durable)",
            ))?;
        }
        remove_leftover_temporaries(&model_dir);
        files::sync_directory(&model_dir)?;
        Ok(path)
    }

    /// The manifest once `written` is on disk and only the versions `kept` remain: old entries
    /// from the old manifest, or from the files themselves if it is lost or unreadable.
    fn manifest_after(&self, model: &str, written: ManifestEntry, kept: &[u64]) -> Manifest {
        let model_dir = self.dir.join(model);
        let mut known: BTreeMap<u64, ManifestEntry> = match self.manifest(model) {
            Ok(Some(old)) => old
                .versions
                .into_iter()
                .map(|entry| (entry.version, entry))
                .collect(),
            // An unreadable manifest is rebuilt from the snapshots themselves.
            Ok(None) | Err(_) => BTreeMap::new(),
        };
        let newest = written.version;
        known.insert(written.version, written);
        let versions = kept
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
        Manifest {
            model: model.to_owned(),
            newest,
            versions,
        }
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
                let listing = io_error(&model_dir, "list the model's snapshot directory");
                return Err(listing(error).into());
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
            Err(error) => return Err(io_error(&path, "read the manifest")(error).into()),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| SnapshotError::ManifestInvalid { path, source })
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

/// Splits versions (ascending) into those past the retention limit and those kept: the
/// newest `retain`, and every spared one.
fn expire(versions: &[u64], retain: usize, spared: &BTreeSet<u64>) -> (Vec<u64>, Vec<u64>) {
    let keep_from = versions.len().saturating_sub(retain);
    let mut expired = Vec::new();
    let mut kept = Vec::new();
    for (index, &version) in versions.iter().enumerate() {
        if index < keep_from && !spared.contains(&version) {
            expired.push(version);
        } else {
            kept.push(version);
        }
    }
    (expired, kept)
}

/// The file name of a version: `v` and at least eight digits, so names sort like versions.
pub fn snapshot_file_name(version: u64) -> String {
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
pub fn validate_model_name(name: &str) -> Result<(), SnapshotError> {
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
        let is_temporary = name
            .to_str()
            .and_then(files::temporary_target)
            .is_some_and(|target| {
                target == MANIFEST_FILE_NAME || parse_snapshot_file_name(target).is_some()
            });
        if is_temporary {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use dataflows::publish::model::Weights;

    use crate::publish::fixtures::{NAN_WITH_PAYLOAD, meta, model, weight_bits};
    use crate::publish::format::{HEADER_BYTES, MAX_BITS};

    /// A store in a fresh directory, and the directory, which must outlive it.
    fn store(retain: usize) -> (tempfile::TempDir, SnapshotStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SnapshotStore::open(dir.path().join("snapshots"), retain).expect("open store");
        (dir, store)
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
    fn retention_spares_the_versions_it_is_told_to() {
        let (_dir, store) = store(2);
        // version 2 serves from the third write on
        let mut store = store.sparing(|model| {
            assert_eq!(model, "pooch");
            BTreeSet::from([2])
        });
        for version in 1..=6 {
            store.write(&model(version, 4), &meta()).expect("write");
        }
        let versions: Vec<u64> = store
            .list("pooch")
            .expect("list")
            .iter()
            .map(|stored| stored.version)
            .collect();
        assert_eq!(versions, vec![2, 5, 6]);
        let manifest = store.manifest("pooch").expect("manifest").expect("present");
        let listed: Vec<u64> = manifest
            .versions
            .iter()
            .map(|entry| entry.version)
            .collect();
        assert_eq!(listed, vec![2, 5, 6]);
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
        let names = files::names_in(&store.dir().join("pooch"));
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
}
