//! Durable file writes: replacing a file atomically, and I/O errors that name the path and the action.
//!
//! [`replace`] and [`replace_with`] write a file so that its name holds either the old content
//! or the whole new content, durably, even across a crash of the machine: a temporary file in
//! the same directory, synced, renamed over the name, then the directory synced so that the
//! rename itself survives. The snapshot store, the supervisor's control file and the data
//! generators all write this way.
//!
//! A temporary file is named `.<name>.tmp-<process>-<sequence>`: hidden (so a reader listing
//! the directory never takes it for a finished file), and unique across processes and across
//! writers in one process. [`temporary_target`] recognises one, so that an owner of a
//! directory can clean up what a crashed writer left behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Part of every temporary file's name, after the leading dot and the target's name.
const TEMPORARY_MARKER: &str = ".tmp-";

/// The buffer [`replace_with`] writes through: large, since its callers stream big files.
const STREAM_BUFFER_BYTES: usize = 1 << 20;

/// Makes temporary file names unique within this process.
static TEMPORARY_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A file-system operation that failed, with the file or directory and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{}: could not {action}: {source}", path.display())]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was being done, as a verb phrase: "read the manifest".
    pub action: &'static str,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

/// Turns an [`io::Error`] into a [`FileError`] naming `path` and `action`, as `map_err` wants
/// it: `fs::read(&path).map_err(io_error(&path, "read the manifest"))?`, where `?` converts it
/// into the caller's own error type.
pub fn io_error(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError {
        path,
        action,
        source,
    }
}

/// Replaces `dir/file_name` with `bytes`, atomically and durably (see the module doc), and
/// returns the file's path.
pub fn replace(dir: &Path, file_name: &str, bytes: &[u8]) -> Result<PathBuf, FileError> {
    replace_by(dir, file_name, |file| file.write_all(bytes))
}

/// Replaces `dir/file_name` with what `write` writes, through a large buffer, atomically and
/// durably (see the module doc), and returns the file's path.
pub fn replace_with(
    dir: &Path,
    file_name: &str,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> io::Result<()>,
) -> Result<PathBuf, FileError> {
    replace_by(dir, file_name, |file| {
        let mut writer = BufWriter::with_capacity(STREAM_BUFFER_BYTES, file);
        write(&mut writer)?;
        writer.flush()
    })
}

/// The one atomic replace: temporary file, `write`, sync, rename, sync the directory.
fn replace_by(
    dir: &Path,
    file_name: &str,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<PathBuf, FileError> {
    let unique = TEMPORARY_SEQUENCE.fetch_add(1, Ordering::Relaxed);
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
            write(&mut file).map_err(io_error(&temporary, "write a temporary file"))?;
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
        // Best effort: the temporary name is hidden, so a leftover costs disk space, not
        // correctness, and the original error is the one worth reporting.
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    sync_directory(dir)?;
    Ok(destination)
}

/// Makes the creations, renames and deletions in a directory durable.
pub fn sync_directory(dir: &Path) -> Result<(), FileError> {
    // A directory can be opened and synced on Unix only; elsewhere renames are left to the OS.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(dir, "sync the directory"))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The name of the file a temporary file of [`replace`] was meant to become, if `name` is
/// the name of such a temporary file.
pub fn temporary_target(name: &str) -> Option<&str> {
    name.strip_prefix('.')
        .and_then(|rest| rest.split_once(TEMPORARY_MARKER))
        .map(|(target, _)| target)
}

/// The names in a directory, sorted: what tests of writers check is left behind.
#[cfg(test)]
pub(crate) fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list the directory")
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_content_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = replace(dir.path(), "a.json", b"old").expect("write");
        assert_eq!(path, dir.path().join("a.json"));
        replace(dir.path(), "a.json", b"new").expect("replace");
        replace_with(dir.path(), "b.csv", |writer| writer.write_all(b"x,y\n")).expect("stream");
        assert_eq!(fs::read(&path).expect("read"), b"new");
        assert_eq!(fs::read(dir.path().join("b.csv")).expect("read"), b"x,y\n");
        assert_eq!(names_in(dir.path()), ["a.json", "b.csv"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_names_the_temporary() {
        let dir = tempfile::tempdir().expect("temporary directory");
        replace(dir.path(), "a.json", b"old").expect("write");
        let error = replace_with(dir.path(), "a.json", |writer| {
            writer.write_all(b"half")?;
            Err(io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert_eq!(error.action, "write a temporary file");
        assert_eq!(
            temporary_target(&error.path.file_name().unwrap().to_string_lossy()),
            Some("a.json")
        );
        assert!(
            error
                .to_string()
                .ends_with(": could not write a temporary file: disk on fire")
        );
        assert_eq!(fs::read(dir.path().join("a.json")).expect("read"), b"old");
        assert_eq!(names_in(dir.path()), ["a.json"]);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_temporary_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let missing = dir.path().join("missing");
        let error = replace(&missing, "a.json", b"x").unwrap_err();
        assert_eq!(error.action, "create a temporary file");
        assert!(error.path.starts_with(&missing), "{error}");
    }

    #[test]
    fn only_temporary_names_have_a_target() {
        assert_eq!(
            temporary_target(".v00000002.snap.tmp-12-3"),
            Some("v00000002.snap")
        );
        assert_eq!(
            temporary_target(".CONTROL.json.tmp-1-1"),
            Some("CONTROL.json")
        );
        for name in ["v00000002.snap", "a.tmp", ".hidden", "v1.snap.tmp-1-1"] {
            assert_eq!(temporary_target(name), None, "{name}");
        }
    }
}
