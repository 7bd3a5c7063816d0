//! Ingest: this worker's share of a source file, read line by line, and each line parsed into a
//! typed [`Row`].
//!
//! This is the hot path of collection, so neither half allocates per line: [`ShardReader`] hands
//! out slices of one reused buffer, and [`parse_line`] splits fields into a reused
//! [`LineScratch`] and allocates only the row it returns.
//!
//! # Sharding
//!
//! A file is cut into chunks of `chunk_bytes`. Chunk `k`, bytes `[k * chunk_bytes, (k + 1) *
//! chunk_bytes)`, belongs to worker `k % peers`, and a line belongs to the chunk that holds its
//! first byte. So every line is read by exactly one worker, and because the chunks interleave,
//! all workers move through the file (and so through event time, in a time-sorted file) at about
//! the same pace, which lets the shared frontier advance. A worker reads past its chunk's end to
//! finish the chunk's last line, and skips the partial line at its chunk's start, which the
//! previous chunk's owner reads.
//!
//! # Following
//!
//! A reader opened with [`ShardReader::open_following`] reads a file that is still being
//! appended to (`pooch run --follow`). The chunk layout is fixed by byte offsets, so as the file
//! grows into new chunks each goes to its worker by the same rule; a line is returned only once
//! its `\n` is written, and a file that shrinks or is replaced stops the reader with an error
//! rather than have any line read twice.
//!
//! # Formats
//!
//! CSV and TSV lines are split into fields by position; a JSON Lines line is an object whose
//! keys name the fields. Either way a field's text reads the same: see [`parse_line`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use dataflows::fact::{Real, Row, Symbol, Value};
use dataflows::hashing::symbol;
use dataflows::plan::{FieldKind, FieldPlan, Format, SourcePlan, TimeUnit};
use memchr::{memchr, memchr_iter};

/// The longest line returned whole. A longer line comes back truncated to this many bytes, with
/// its real length, so that one runaway line cannot take a worker's memory with it.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How much is read past a chunk's end at a time to finish the chunk's last line: a few typical
/// lines, so that the next chunk, which is another worker's, is barely touched.
const TAIL_READ_BYTES: usize = 4 << 10;

/// How much is read at a time while skipping the rest of an over-long line or counting lines.
const SCAN_READ_BYTES: usize = 64 << 10;

/// How much of an unreadable field a [`Reject`] quotes, in characters.
const EXCERPT_CHARS: usize = 64;

/// The byte order mark some tools write at the start of a UTF-8 file. csv-core drops it from the
/// start of its input, so the unquoted fast path in [`split_fields`] drops it too, and so does
/// the JSON Lines parser.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Why a source file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The sharding parameters cannot describe a share of the file.
    #[error(
        "cannot read `{path}` as worker {worker} of {peers} in chunks of {chunk_bytes} bytes: \
         need at least one peer, a worker below the number of peers, and chunks of at least one \
         byte"
    )]
    InvalidShard {
        /// The file.
        path: PathBuf,
        /// The worker index asked for.
        worker: usize,
        /// The number of workers asked for.
        peers: usize,
        /// The chunk size asked for.
        chunk_bytes: u64,
    },
    /// The file could not be opened.
    #[error("cannot open `{path}`: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file's length could not be read.
    #[error("cannot read the length of `{path}`: {source}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// Moving to a position in the file failed.
    #[error("cannot seek to byte {offset} of `{path}`: {source}")]
    Seek {
        /// The file.
        path: PathBuf,
        /// Where the seek was going.
        offset: u64,
        /// What the operating system said.
        source: io::Error,
    },
    /// Reading the file failed.
    #[error("cannot read `{path}` at byte {offset}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// What the operating system said.
        source: io::Error,
    },
    /// The file got shorter while it was being read.
    #[error(
        "`{path}` ended before byte {wanted_end}, although it was {length} bytes long when opened"
    )]
    Shrunk {
        /// The file.
        path: PathBuf,
        /// The end of the read that came up short.
        wanted_end: u64,
        /// The file's length when it was opened.
        length: u64,
    },
    /// A followed file got shorter than what had already been seen of it, as when a log is
    /// truncated to be rewritten. Reading on could return lines twice, or skip some.
    #[error(
        "`{path}` shrank to {now_bytes} bytes after {seen_bytes} bytes of it had been seen; \
         stopped following it, as reading on could return lines twice"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// How long the file was known to be.
        seen_bytes: u64,
        /// How long it is now.
        now_bytes: u64,
    },
    /// The path of a followed file now names another file, or none, as when a log is rotated.
    #[error(
        "`{path}` no longer names the file being followed (it was replaced or removed); \
         stopped following it, as reading the new file from its start could return lines twice"
    )]
    Replaced {
        /// The path.
        path: PathBuf,
    },
    /// The header line is too long to be a header.
    #[error("the header line of `{path}` is {length} bytes long, more than {MAX_LINE_BYTES}")]
    HeaderTooLong {
        /// The file.
        path: PathBuf,
        /// The header line's length in bytes.
        length: u64,
    },
    /// A line number was asked for a position outside the file.
    #[error("byte {offset} is past the end of `{path}`, which is {length} bytes long")]
    OffsetPastEnd {
        /// The file.
        path: PathBuf,
        /// The position asked about.
        offset: u64,
        /// The file's length when it was opened (for a followed file: the length seen so far).
        length: u64,
    },
}

/// One line of a file, borrowed from the reader's buffer until the next call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// Byte offset of the line's first byte in the file: the line's identity.
    pub offset: u64,
    /// The line without its `\n` and without a trailing `\r`, at most [`MAX_LINE_BYTES`] long.
    pub bytes: &'a [u8],
    /// The line's full length in bytes, without its line end.
    pub length: u64,
}

impl Line<'_> {
    /// Whether [`Line::bytes`] holds only the start of the line. Such a line is dead-lettered
    /// by the caller rather than parsed.
    pub fn truncated(&self) -> bool {
        self.length > self.bytes.len() as u64
    }
}

/// Where a line read into the reader's buffer is. A [`Line`] is made from it only on the way
/// out of [`ShardReader::next_line`], so that the reader can still be used when no line is
/// complete yet.
#[derive(Clone, Copy, Debug)]
struct LineSpan {
    /// The line's offset in the file.
    offset: u64,
    /// The index in the buffer of the line's first byte.
    first: usize,
    /// How many of its bytes are returned: its length, up to the longest line returned whole.
    kept: usize,
    /// The line's full length, without its line end.
    length: u64,
}

impl LineSpan {
    fn truncated(self) -> bool {
        self.length > self.kept as u64
    }
}

/// Buffer and read sizes. They are constants in use; tests shrink them to reach every buffer
/// boundary with small files.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// The longest line returned whole.
    max_line_bytes: usize,
    /// How much to read at a time past a chunk's end.
    tail_read_bytes: usize,
    /// How much to read at a time while skipping or counting; also the room the buffer keeps
    /// beyond the longest line.
    scan_read_bytes: usize,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        max_line_bytes: MAX_LINE_BYTES,
        tail_read_bytes: TAIL_READ_BYTES,
        scan_read_bytes: SCAN_READ_BYTES,
    };

    /// The reader's buffer holds a longest line with its `\r\n` (so that such a line is seen to
    /// end) and room to scan past it.
    fn buffer_bytes(self) -> usize {
        self.max_line_bytes + 2 + self.scan_read_bytes
    }
}

/// An open file read with positioned reads, remembering where the operating system's cursor is
/// so that reading on from where the last read ended costs no seek.
struct SourceFile {
    file: File,
    path: PathBuf,
    /// The length when opened. Reads of a file that is not followed stop here, so that a file
    /// being appended to is read as it was when opened. For a followed file, the most it is
    /// known to hold: it grows with every read and look at the file that finds more.
    length: u64,
    /// Where the next `read` would start, or `u64::MAX` when unknown after an error.
    cursor: u64,
}

impl SourceFile {
    /// Moves the operating system's cursor to `offset`, unless it is there already.
    fn seek_to(&mut self, offset: u64) -> Result<(), IngestError> {
        if self.cursor != offset {
            self.cursor = u64::MAX;
            self.file
                .seek(SeekFrom::Start(offset))
                .map_err(|source| IngestError::Seek {
                    path: self.path.clone(),
                    offset,
                    source,
                })?;
        }
        Ok(())
    }

    /// Fills `into` with the file's bytes from `offset` on.
    fn read_exact_at(&mut self, offset: u64, into: &mut [u8]) -> Result<(), IngestError> {
        self.seek_to(offset)?;
        match self.file.read_exact(into) {
            Ok(()) => {
                self.cursor = offset + into.len() as u64;
                Ok(())
            }
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                self.cursor = u64::MAX;
                Err(IngestError::Shrunk {
                    path: self.path.clone(),
                    wanted_end: offset + into.len() as u64,
                    length: self.length,
                })
            }
            Err(source) => {
                self.cursor = u64::MAX;
                Err(IngestError::Read {
                    path: self.path.clone(),
                    offset,
                    source,
                })
            }
        }
    }

    /// Reads the file's bytes from `offset` on into `into`, as many as there are now: fewer
    /// than asked only at what is, for now, the end of a growing file. Returns how many.
    fn read_available_at(&mut self, offset: u64, into: &mut [u8]) -> Result<usize, IngestError> {
        if into.is_empty() {
            return Ok(0);
        }
        self.seek_to(offset)?;
        let mut read = 0;
        while read < into.len() {
            match self.file.read(&mut into[read..]) {
                Ok(0) => break,
                Ok(amount) => read += amount,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.cursor = u64::MAX;
                    return Err(IngestError::Read {
                        path: self.path.clone(),
                        offset,
                        source,
                    });
                }
            }
        }
        self.cursor = offset + read as u64;
        // A read from past the end finds nothing, which says nothing about the length.
        if read > 0 {
            self.length = self.length.max(self.cursor);
        }
        Ok(read)
    }
}

/// What names a file on its machine (device and inode), so that a followed path can be seen to
/// name another file after a rotation. `None` where the platform gives no such thing; then only
/// shrinking is noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
}

#[cfg(unix)]
fn file_identity(metadata: &std::fs::Metadata) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    Some(FileIdentity {
        device: metadata.dev(),
        inode: metadata.ino(),
    })
}

#[cfg(not(unix))]
fn file_identity(_metadata: &std::fs::Metadata) -> Option<FileIdentity> {
    None
}

/// Why a following [`ShardReader`] stopped for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopReason {
    /// The file became shorter than `seen_bytes`.
    Truncated { seen_bytes: u64, now_bytes: u64 },
    /// The path names another file, or none.
    Replaced,
}

/// How far the end of an over-long line of a followed file was looked for before the file
/// ran out, so that the next poll looks on from there rather than from the line's start.
#[derive(Clone, Copy, Debug)]
struct LongLineScan {
    line_start: u64,
    /// The bytes before this offset hold no `\n`.
    scanned_to: u64,
    /// The byte just before `scanned_to`, which is the line's last if a `\n` comes next.
    previous_byte: u8,
}

/// What a reader opened with [`ShardReader::open_following`] keeps to follow its file.
#[derive(Clone, Copy, Debug)]
struct Following {
    /// The file's identity when it was opened.
    identity: Option<FileIdentity>,
    long_line: Option<LongLineScan>,
}

/// Where a [`ShardReader`] is in its walk over its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkState {
    /// The header line is not read yet: only while a followed file is shorter than its header.
    AwaitingHeader,
    /// The next line is found by entering the next chunk this worker owns.
    BetweenChunks,
    /// Looking for the first line that starts in the chunk `[start, end)`; the bytes from
    /// `start - 1` to `scanned_to` hold no `\n`. A reader stays here across polls while a
    /// followed file has not grown far enough to tell.
    Seeking {
        start: u64,
        end: u64,
        scanned_to: u64,
    },
    /// Lines starting before `end` are this worker's; the next one starts at the cursor.
    InChunk {
        /// The chunk's end: at most the file's length, unless the file is followed.
        end: u64,
    },
    /// No chunk of this worker's is left.
    Finished,
    /// A followed file was truncated or replaced; nothing more is read.
    Stopped(StopReason),
}

/// Where a chunk's first line is, as far as the bytes read so far tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkEntry {
    /// It starts here.
    FirstLine(u64),
    /// No line starts in the chunk.
    NoLine,
    /// A followed file does not reach far enough yet; the bytes before `scanned_to` hold no
    /// line start.
    NotYet { scanned_to: u64 },
}

/// A known line start and its 1-based number, from which [`ShardReader::line_number`] counts on.
#[derive(Clone, Copy, Debug)]
struct LineCheckpoint {
    offset: u64,
    line: u64,
}

/// Reads one worker's share of a file's lines (see the module doc), in file order, through one
/// reused buffer.
pub struct ShardReader {
    file: SourceFile,
    limits: Limits,
    peers: u64,
    /// The chunk size; with one peer every chunk is this worker's, so the whole file is read as
    /// one chunk.
    chunk_bytes: u64,
    /// The index of the next chunk this worker owns.
    next_chunk: u64,
    state: WalkState,
    /// The offset of the next line to return, while in a chunk.
    cursor: u64,
    /// The file's bytes `[buffer_start, buffer_start + buffer_filled)`, always contiguous.
    buffer: Vec<u8>,
    buffer_start: u64,
    buffer_filled: usize,
    /// Reads aim to stop here (plus a tail), so that other workers' chunks are not read.
    read_until: u64,
    /// The header line, when the file has one.
    header: Option<Vec<u8>>,
    /// The offset of the first line that can be data: just past the header, if any.
    data_start: u64,
    /// Just past the last line returned.
    position: u64,
    line_checkpoint: LineCheckpoint,
    /// How many bytes [`ShardReader::line_number`] has read to count line ends, for the test
    /// that counting in order reads each byte once.
    #[cfg(test)]
    line_count_bytes: u64,
    /// Buffer for counting lines, allocated on first use since dead letters are rare.
    scan_buffer: Vec<u8>,
    /// Set when the file is followed as it grows.
    following: Option<Following>,
}

impl ShardReader {
    /// Opens `path` to read the share of worker `worker` of `peers`, in chunks of `chunk_bytes`.
    ///
    /// The file is read as long as it was when opened; a last line without a `\n` is a line.
    ///
    /// `has_header`: the first line of the file is a header; it is never returned as a data
    /// line, but every worker reads it and exposes it via [`ShardReader::header`].
    pub fn open(
        path: &Path,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        has_header: bool,
    ) -> Result<ShardReader, IngestError> {
        ShardReader::open_with_limits(
            path,
            worker,
            peers,
            chunk_bytes,
            has_header,
            Limits::DEFAULT,
            false,
        )
    }

    /// Opens a share of a file that may still be growing: lines are returned only once complete.
    ///
    /// The share is the same as [`ShardReader::open`]'s, but [`ShardReader::next_line`] returns
    /// `Ok(None)` whenever no complete line of it is there *yet*, and the caller polls again
    /// later. A line is complete once its `\n` is written, so a partial last line is never
    /// returned, and a line written in pieces comes back once, whole. With a header, no data
    /// line is returned until the header line is complete, and [`ShardReader::header`] is
    /// `None` until then.
    ///
    /// A poll that finds nothing new checks that the path still names the file opened, no
    /// shorter than it was seen to be; if not, it fails with [`IngestError::Truncated`] or
    /// [`IngestError::Replaced`], and so does every later call: nothing is read twice. (A file
    /// truncated and rewritten past its old length between two polls cannot be told from one
    /// that grew.) Only such polls look at the path, so a file that keeps growing costs no
    /// look per line.
    pub fn open_following(
        path: &Path,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        has_header: bool,
    ) -> Result<ShardReader, IngestError> {
        ShardReader::open_with_limits(
            path,
            worker,
            peers,
            chunk_bytes,
            has_header,
            Limits::DEFAULT,
            true,
        )
    }

    /// [`ShardReader::open`] or, when `follow`, [`ShardReader::open_following`], with other
    /// buffer and read sizes.
    fn open_with_limits(
        path: &Path,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        has_header: bool,
        limits: Limits,
        follow: bool,
    ) -> Result<ShardReader, IngestError> {
        if peers == 0 || worker >= peers || chunk_bytes == 0 {
            return Err(IngestError::InvalidShard {
                path: path.to_path_buf(),
                worker,
                peers,
                chunk_bytes,
            });
        }
        let file = File::open(path).map_err(|source| IngestError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let metadata = file.metadata().map_err(|source| IngestError::Metadata {
            path: path.to_path_buf(),
            source,
        })?;
        let length = metadata.len();
        let peers = peers as u64;
        let chunk_bytes = if peers == 1 { u64::MAX } else { chunk_bytes };
        let mut reader = ShardReader {
            file: SourceFile {
                file,
                path: path.to_path_buf(),
                length,
                cursor: 0,
            },
            limits,
            peers,
            chunk_bytes,
            next_chunk: worker as u64,
            state: WalkState::BetweenChunks,
            cursor: 0,
            buffer: vec![0; limits.buffer_bytes()],
            buffer_start: 0,
            buffer_filled: 0,
            // Worker 0 goes on to read the first chunk, so reading the header may as well read
            // that chunk; the others need only the header.
            read_until: if worker == 0 { chunk_bytes } else { 0 },
            header: None,
            data_start: 0,
            position: 0,
            line_checkpoint: LineCheckpoint { offset: 0, line: 1 },
            #[cfg(test)]
            line_count_bytes: 0,
            scan_buffer: Vec::new(),
            following: follow.then(|| Following {
                identity: file_identity(&metadata),
                long_line: None,
            }),
        };
        // An empty file has no header, unless it is followed: then the header is yet to come.
        if has_header && (follow || length > 0) {
            reader.state = WalkState::AwaitingHeader;
            reader.read_header()?;
        }
        Ok(reader)
    }

    /// The header line without its line end, when the file was opened with a header and is not
    /// empty (for a followed file: once the header line is complete). It is raw: a byte order
    /// mark at the file's start is still there.
    pub fn header(&self) -> Option<&[u8]> {
        self.header.as_deref()
    }

    /// The next line of this worker's share, in file order, or `None` at the end. For a
    /// followed file `None` means "nothing new yet": poll again later.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, IngestError> {
        loop {
            match self.state {
                WalkState::Finished => return Ok(None),
                WalkState::Stopped(reason) => return Err(self.stop_error(reason)),
                WalkState::AwaitingHeader => {
                    if !self.read_header()? {
                        return self.nothing_new();
                    }
                }
                WalkState::InChunk { end } if self.cursor < end => {
                    return match self.read_line()? {
                        Some(span) => Ok(Some(self.line(span))),
                        None => self.nothing_new(),
                    };
                }
                WalkState::InChunk { .. } | WalkState::BetweenChunks => self.enter_next_chunk(),
                WalkState::Seeking {
                    start,
                    end,
                    scanned_to,
                } => match self.first_line_start(start, end, scanned_to)? {
                    ChunkEntry::FirstLine(line_start) => {
                        self.cursor = line_start;
                        self.state = WalkState::InChunk { end };
                    }
                    ChunkEntry::NoLine => self.state = WalkState::BetweenChunks,
                    ChunkEntry::NotYet { scanned_to } => {
                        self.state = WalkState::Seeking {
                            start,
                            end,
                            scanned_to,
                        };
                        return self.nothing_new();
                    }
                },
            }
        }
    }

    /// The 1-based line number (the header, if any, is line 1) of the line starting at `offset`.
    ///
    /// It counts line ends from a checkpoint left by the previous call, so calls with increasing
    /// offsets read each byte at most once, however many lines they ask about: numbering every
    /// line of a source in order (as a source timed by its order does) costs one more pass
    /// over the file in all. A smaller offset than last time counts from the start of the file
    /// again.
    pub fn line_number(&mut self, offset: u64) -> Result<u64, IngestError> {
        if offset > self.file.length {
            return Err(IngestError::OffsetPastEnd {
                path: self.file.path.clone(),
                offset,
                length: self.file.length,
            });
        }
        if offset < self.line_checkpoint.offset {
            self.line_checkpoint = LineCheckpoint { offset: 0, line: 1 };
        }
        if self.scan_buffer.is_empty() {
            self.scan_buffer = vec![0; self.limits.scan_read_bytes];
        }
        let LineCheckpoint {
            offset: mut counted_to,
            mut line,
        } = self.line_checkpoint;
        while counted_to < offset {
            let amount = (offset - counted_to).min(self.scan_buffer.len() as u64) as usize;
            let window = &mut self.scan_buffer[..amount];
            self.file.read_exact_at(counted_to, window)?;
            line += memchr_iter(b'\n', window).count() as u64;
            counted_to += amount as u64;
            #[cfg(test)]
            {
                self.line_count_bytes += amount as u64;
            }
        }
        self.line_checkpoint = LineCheckpoint { offset, line };
        Ok(line)
    }

    /// Byte offset just past the last line returned, line end included: what a restart would
    /// resume from. Before any line is returned, it is the start of the data (past the header).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The file offset just past the buffered bytes.
    fn buffer_end(&self) -> u64 {
        self.buffer_start + self.buffer_filled as u64
    }

    /// The line a span of the buffer holds.
    fn line(&self, span: LineSpan) -> Line<'_> {
        Line {
            offset: span.offset,
            bytes: &self.buffer[span.first..span.first + span.kept],
            length: span.length,
        }
    }

    /// Reads the header line at the start of the file. Returns false, leaving the reader
    /// awaiting it, while a followed file does not hold the whole line yet.
    fn read_header(&mut self) -> Result<bool, IngestError> {
        let Some(span) = self.read_line()? else {
            return Ok(false);
        };
        if span.truncated() {
            return Err(IngestError::HeaderTooLong {
                path: self.file.path.clone(),
                length: span.length,
            });
        }
        self.header = Some(self.line(span).bytes.to_vec());
        self.data_start = self.cursor;
        self.position = self.cursor;
        self.line_checkpoint = LineCheckpoint {
            offset: self.cursor,
            line: 2,
        };
        self.state = WalkState::BetweenChunks;
        Ok(true)
    }

    /// Called when a followed file holds no new complete line of this share: checks, with one
    /// look at the path, that it still names the file opened and that the file is no shorter
    /// than it was seen to be. Either way there is no line to return.
    ///
    /// Only polls that find nothing look, so reading a file that keeps growing costs no look
    /// per line.
    fn nothing_new(&mut self) -> Result<Option<Line<'static>>, IngestError> {
        let Some(following) = self.following else {
            return Ok(None);
        };
        let reason = match std::fs::metadata(&self.file.path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Some(StopReason::Replaced),
            Err(source) => {
                return Err(IngestError::Metadata {
                    path: self.file.path.clone(),
                    source,
                });
            }
            Ok(now) if file_identity(&now) != following.identity => Some(StopReason::Replaced),
            Ok(now) if now.len() < self.file.length => Some(StopReason::Truncated {
                seen_bytes: self.file.length,
                now_bytes: now.len(),
            }),
            Ok(now) => {
                self.file.length = now.len();
                None
            }
        };
        match reason {
            Some(reason) => {
                self.state = WalkState::Stopped(reason);
                Err(self.stop_error(reason))
            }
            None => Ok(None),
        }
    }

    /// The error a stopped reader returns, every time it is asked for a line.
    fn stop_error(&self, reason: StopReason) -> IngestError {
        let path = self.file.path.clone();
        match reason {
            StopReason::Truncated {
                seen_bytes,
                now_bytes,
            } => IngestError::Truncated {
                path,
                seen_bytes,
                now_bytes,
            },
            StopReason::Replaced => IngestError::Replaced { path },
        }
    }

    /// Moves to the next chunk this worker owns, to look for its first line, or finishes.
    fn enter_next_chunk(&mut self) {
        let following = self.following.is_some();
        // A followed file may yet grow into any chunk.
        let start = self
            .next_chunk
            .checked_mul(self.chunk_bytes)
            .filter(|start| following || *start < self.file.length);
        let Some(start) = start else {
            self.state = WalkState::Finished;
            return;
        };
        let full_end = start.saturating_add(self.chunk_bytes);
        let end = if following {
            full_end
        } else {
            full_end.min(self.file.length)
        };
        self.next_chunk = self.next_chunk.saturating_add(self.peers);
        self.read_until = end;
        self.state = WalkState::Seeking {
            start,
            end,
            scanned_to: start.saturating_sub(1),
        };
    }

    /// Where the first data line starting in `[start, end)` is, looking on from `scan`, before
    /// which the chunk holds no line start.
    fn first_line_start(
        &mut self,
        start: u64,
        end: u64,
        mut scan: u64,
    ) -> Result<ChunkEntry, IngestError> {
        // Only the header starts before the data, so the first data line is the first line.
        if start <= self.data_start {
            return Ok(if self.data_start < end {
                ChunkEntry::FirstLine(self.data_start)
            } else {
                ChunkEntry::NoLine
            });
        }
        // A line starts just after a line end. Looking from the byte before the chunk tells
        // whether the chunk starts with a whole line; a line end at `end - 1` or later starts a
        // line in the next chunk, which is another worker's.
        let scan_end = end - 1;
        while scan < scan_end {
            if (scan < self.buffer_start || scan >= self.buffer_end()) && self.fill(scan)? == 0 {
                return Ok(if self.following.is_some() {
                    ChunkEntry::NotYet { scanned_to: scan }
                } else {
                    ChunkEntry::NoLine
                });
            }
            let from = (scan - self.buffer_start) as usize;
            let to = (scan_end.min(self.buffer_end()) - self.buffer_start) as usize;
            if let Some(index) = memchr(b'\n', &self.buffer[from..to]) {
                return Ok(ChunkEntry::FirstLine(scan + index as u64 + 1));
            }
            scan += (to - from) as u64;
        }
        Ok(ChunkEntry::NoLine)
    }

    /// Keeps the buffered bytes from `keep_from` on (all of them if `keep_from` is not
    /// buffered, which starts the buffer afresh there) and reads more after them. Returns how
    /// many bytes were read: 0 only at the end of the file (for a followed file, its end for
    /// now).
    fn fill(&mut self, keep_from: u64) -> Result<usize, IngestError> {
        if keep_from < self.buffer_start || keep_from > self.buffer_end() {
            self.buffer_start = keep_from;
            self.buffer_filled = 0;
        } else {
            let discarded = (keep_from - self.buffer_start) as usize;
            if discarded > 0 {
                self.buffer.copy_within(discarded..self.buffer_filled, 0);
                self.buffer_filled -= discarded;
                self.buffer_start = keep_from;
            }
        }
        let read_from = self.buffer_end();
        let wanted = self
            .read_until
            .saturating_sub(read_from)
            .saturating_add(self.limits.tail_read_bytes as u64);
        let space = (self.buffer.len() - self.buffer_filled) as u64;
        let filled = self.buffer_filled;
        let amount = if self.following.is_some() {
            // A followed file has no known end: read what is there now.
            let asked = wanted.min(space) as usize;
            self.file
                .read_available_at(read_from, &mut self.buffer[filled..filled + asked])?
        } else {
            let remaining = self.file.length.saturating_sub(read_from);
            let amount = remaining.min(wanted).min(space) as usize;
            if amount > 0 {
                self.file
                    .read_exact_at(read_from, &mut self.buffer[filled..filled + amount])?;
            }
            amount
        };
        self.buffer_filled += amount;
        Ok(amount)
    }

    /// Reads the line starting at the cursor, which is a line start before the end of the file,
    /// and moves the cursor past it. `None` only for a followed file whose line is not complete
    /// yet; the cursor then stays.
    fn read_line(&mut self) -> Result<Option<LineSpan>, IngestError> {
        let line_start = self.cursor;
        let following = self.following.is_some();
        // Bytes from the line's start known to hold no `\n`, so a refill does not search them
        // again.
        let mut searched = 0;
        loop {
            if line_start >= self.buffer_start && line_start <= self.buffer_end() {
                let first = (line_start - self.buffer_start) as usize;
                let unsearched = &self.buffer[first + searched..self.buffer_filled];
                if let Some(index) = memchr(b'\n', unsearched) {
                    let raw_length = searched + index;
                    let next = line_start + raw_length as u64 + 1;
                    return Ok(Some(self.finish_line(first, raw_length, next)));
                }
                searched = self.buffer_filled - first;
                if !following && self.buffer_end() >= self.file.length {
                    // The last line of a file needs no line end, unless the file is followed:
                    // then the rest of the line may still be on its way.
                    return Ok(Some(self.finish_line(first, searched, self.file.length)));
                }
                if searched >= self.limits.max_line_bytes + 2 {
                    return self.skip_long_line(first, searched);
                }
            }
            if self.fill(line_start)? == 0 {
                if following {
                    return Ok(None);
                }
                // Only at the end of the file, which the check above catches; end the line
                // rather than spin if the buffer is somehow full.
                let available = self.buffer_filled;
                let next = self.buffer_end();
                return Ok(Some(self.finish_line(0, available, next)));
            }
        }
    }

    /// The buffered line at `first` of `raw_length` bytes (`\r` included, `\n` not); moves the
    /// cursor to `next`.
    fn finish_line(&mut self, first: usize, raw_length: usize, next: u64) -> LineSpan {
        let raw = &self.buffer[first..first + raw_length];
        let length = if raw.last() == Some(&b'\r') {
            raw_length - 1
        } else {
            raw_length
        };
        self.cursor = next;
        self.position = next;
        LineSpan {
            offset: self.buffer_start + first as u64,
            first,
            kept: length.min(self.limits.max_line_bytes),
            length: length as u64,
        }
    }

    /// The start of a line too long to return whole, after reading on to its end through the
    /// room left after that start, so that the rest is never held in memory. `searched` bytes
    /// from `first` on are buffered and hold no `\n`. `None` when a followed file does not hold
    /// the line's end yet; how far it was scanned is kept for the next poll.
    fn skip_long_line(
        &mut self,
        first: usize,
        searched: usize,
    ) -> Result<Option<LineSpan>, IngestError> {
        let line_start = self.buffer_start + first as u64;
        let kept = self.limits.max_line_bytes;
        let mut previous_byte = self.buffer[first + searched - 1];
        // Keep the line's first bytes at the buffer's start: they are what is returned, and
        // still true file bytes for later chunks that begin inside them.
        self.buffer.copy_within(first..first + kept, 0);
        self.buffer_start = line_start;
        self.buffer_filled = kept;
        let mut scanned_to = line_start + searched as u64;
        let earlier_scan = self
            .following
            .as_mut()
            .and_then(|following| following.long_line.take());
        if let Some(scan) = earlier_scan
            && scan.line_start == line_start
            && scan.scanned_to > scanned_to
        {
            scanned_to = scan.scanned_to;
            previous_byte = scan.previous_byte;
        }
        let (line_end, next) = loop {
            let window_bytes = if let Some(following) = &mut self.following {
                let read = self
                    .file
                    .read_available_at(scanned_to, &mut self.buffer[kept..])?;
                if read == 0 {
                    following.long_line = Some(LongLineScan {
                        line_start,
                        scanned_to,
                        previous_byte,
                    });
                    return Ok(None);
                }
                read
            } else {
                if scanned_to >= self.file.length {
                    break (self.file.length, self.file.length);
                }
                let amount =
                    (self.file.length - scanned_to).min((self.buffer.len() - kept) as u64) as usize;
                self.file
                    .read_exact_at(scanned_to, &mut self.buffer[kept..kept + amount])?;
                amount
            };
            let window = &self.buffer[kept..kept + window_bytes];
            if let Some(index) = memchr(b'\n', window) {
                if index > 0 {
                    previous_byte = window[index - 1];
                }
                let newline = scanned_to + index as u64;
                break (newline, newline + 1);
            }
            previous_byte = window[window.len() - 1];
            scanned_to += window_bytes as u64;
        };
        let mut length = line_end - line_start;
        if previous_byte == b'\r' {
            length -= 1;
        }
        self.cursor = next;
        self.position = next;
        Ok(Some(LineSpan {
            offset: line_start,
            first: 0,
            kept,
            length,
        }))
    }
}

/// Why a line is not a fact. Display gives a message naming the field, e.g.
/// "field `time`: cannot read \"12ab\" as a timestamp in seconds".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// The line is not UTF-8.
    #[error("invalid UTF-8 at byte {byte}")]
    InvalidUtf8 {
        /// Where in the line the first invalid sequence starts.
        byte: usize,
    },
    /// The line holds a `\n`; a fact is one line, so a quoted field cannot span lines.
    #[error("line break at byte {byte}: a fact must fit on one line")]
    LineBreak {
        /// Where in the line the `\n` is.
        byte: usize,
    },
    /// The line has more or fewer fields than the source.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// The number of fields of the source.
        expected: usize,
        /// The number of fields in the line.
        found: usize,
    },
    /// A required field is empty.
    #[error("field `{field}` is required but empty")]
    RequiredEmpty {
        /// The field's name.
        field: String,
    },
    /// A field's text does not read as its kind.
    #[error("field `{field}`: cannot read {text:?} as {expected}")]
    Unreadable {
        /// The field's name.
        field: String,
        /// The field's text, cut to 64 characters.
        text: String,
        /// What the field should hold, e.g. "a timestamp in seconds".
        expected: &'static str,
    },
    /// A JSON Lines line is not JSON.
    #[error("invalid JSON at column {column}: {problem}")]
    InvalidJson {
        /// The 1-based column, in bytes, where the JSON parser gave up; 0 for an empty line.
        column: usize,
        /// What the JSON parser found wrong, e.g. "expected `,` or `}`".
        problem: String,
    },
    /// A JSON Lines line is JSON, but not an object.
    #[error("expected a JSON object, found {found}")]
    NotJsonObject {
        /// What the line holds instead, e.g. "a JSON array".
        found: &'static str,
    },
    /// A field of a JSON Lines line holds a JSON value of a type that cannot be its kind.
    #[error("field `{field}`: expected {expected}, found {found}")]
    JsonType {
        /// The field's name.
        field: String,
        /// What the field should hold, e.g. "an integer".
        expected: &'static str,
        /// What it holds, e.g. "a JSON array".
        found: &'static str,
    },
}

/// Reusable buffers for [`parse_line`], so that parsing a line allocates only its row. Keep one
/// per reading thread and pass it to every call.
#[derive(Debug, Default)]
pub struct LineScratch {
    /// The CSV parser for lines with quotes, and the format it was built for; built on first
    /// use, as building it is far dearer than a line.
    quoted: Option<(Format, Box<csv_core::Reader>)>,
    /// Field bytes with quoting undone, as csv-core writes them.
    unquoted: Vec<u8>,
    /// Where each field ends in `unquoted`, as csv-core writes them.
    ends: Vec<usize>,
    /// Each field's bytes: a range of the line, or of `unquoted` (see [`FieldBytes`]).
    spans: Vec<Range<usize>>,
}

impl LineScratch {
    /// Empty buffers; they grow to fit the lines parsed.
    pub fn new() -> LineScratch {
        LineScratch::default()
    }
}

/// Which bytes [`LineScratch::spans`] index after [`split_fields`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldBytes {
    /// The line itself: nothing was quoted.
    Line,
    /// [`LineScratch::unquoted`].
    Unquoted,
}

/// Parses one line of `source` into a row, one value per field.
///
/// CSV and TSV fields are split with csv-core for the source's format (RFC 4180 quotes for CSV,
/// no quoting for TSV) and trimmed of ASCII whitespace; an empty field is [`Value::Missing`]
/// unless the field is required. A line that was truncated by the reader should be
/// dead-lettered by the caller rather than passed here, but any bytes at all are safe to pass.
///
/// A JSON Lines line is one object, each field read from the key of its name. Keys outside the
/// schema are ignored, as real logs carry more than a source reads. A key given twice counts
/// as its last value (each must still be readable). An absent key, `null`, and a string that is
/// empty or all whitespace are missing. A string reads as the same text in a CSV field would
/// (`"42"` is an integer, `"a|b"` a list). A number reads as an integer (whole, within `i64`),
/// a real (finite), a timestamp in seconds or milliseconds (whole, not negative) or a string:
/// the hash of its text, so that `196` keys as `"196"` and the integer 196 do. An array of
/// strings is a list, its items trimmed and empty ones skipped; `true` and `false` are strings.
/// Anything else, such as a nested object, is a [`Reject::JsonType`].
pub fn parse_line(
    bytes: &[u8],
    source: &SourcePlan,
    scratch: &mut LineScratch,
) -> Result<Row, Reject> {
    if source.format == Format::JsonLines {
        return parse_json_line(bytes, &source.fields);
    }
    let field_bytes = split_fields(bytes, source.format, scratch)?;
    if scratch.spans.len() != source.fields.len() {
        return Err(Reject::FieldCount {
            expected: source.fields.len(),
            found: scratch.spans.len(),
        });
    }
    let text = match field_bytes {
        FieldBytes::Line => bytes,
        FieldBytes::Unquoted => &scratch.unquoted[..],
    };
    let mut row = Vec::with_capacity(source.fields.len());
    for (field, span) in source.fields.iter().zip(&scratch.spans) {
        let field_text = text[span.clone()].trim_ascii();
        let value = parse_text(field_text, field)?;
        if field.required && matches!(value, Value::Missing) {
            return Err(Reject::RequiredEmpty {
                field: field.name.clone(),
            });
        }
        row.push(value);
    }
    Ok(row)
}

/// Reads a field's trimmed text as its kind: empty text is missing.
fn parse_text(text: &[u8], field: &FieldPlan) -> Result<Value, Reject> {
    // Empty text, and a list of only empty items, are missing.
    if text.is_empty() {
        return Ok(Value::Missing);
    }
    parse_field(text, &field.kind).map_err(|expected| Reject::Unreadable {
        field: field.name.clone(),
        text: excerpt(text),
        expected,
    })
}

/// Checks that a line is UTF-8 and has no line break, and splits it into fields, leaving their
/// ranges in `scratch.spans`.
///
/// A line without quotes (any line, for TSV) splits at every delimiter, which is what csv-core
/// would do, only without copying; a line with quotes goes through csv-core. The common case
/// is one pass over the line: it finds the delimiters, and the UTF-8 check runs only for lines
/// with non-ASCII bytes. Lines are short, so one pass beats several `memchr` calls, each with
/// its own set-up.
fn split_fields(
    bytes: &[u8],
    format: Format,
    scratch: &mut LineScratch,
) -> Result<FieldBytes, Reject> {
    match split_plain(bytes, format, &mut scratch.spans) {
        PlainSplit::Ascii => Ok(FieldBytes::Line),
        PlainSplit::NonAscii => {
            check_utf8(bytes)?;
            Ok(FieldBytes::Line)
        }
        PlainSplit::NeedsParser => {
            check_utf8(bytes)?;
            if let Some(byte) = memchr(b'\n', bytes) {
                return Err(Reject::LineBreak { byte });
            }
            split_quoted(bytes, format, scratch)?;
            Ok(FieldBytes::Unquoted)
        }
    }
}

/// What [`split_plain`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlainSplit {
    /// The line is ASCII and split.
    Ascii,
    /// The line is split but has non-ASCII bytes, so it may not be UTF-8.
    NonAscii,
    /// The line has a quote (in CSV) or a line break, which the plain split cannot handle.
    NeedsParser,
}

/// Splits a line at each delimiter, as ranges of the line, unless it has a quote (in CSV) or a
/// line break.
///
/// It looks at eight bytes at a time (SWAR): a word with no delimiter, quote or line break,
/// which is most words, costs a few arithmetic operations and no unpredictable branch.
fn split_plain(bytes: &[u8], format: Format, spans: &mut Vec<Range<usize>>) -> PlainSplit {
    spans.clear();
    // Only delimited formats are split: JSON Lines never get here (see `parse_line`).
    let delimiter = format.delimiter().unwrap_or(b',');
    // Quoting off means no byte is a quote: looking for `\n` twice finds nothing new.
    let quote = if format == Format::Csv { b'"' } else { b'\n' };
    let body_start = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let (words, rest) = bytes[body_start..].as_chunks::<8>();
    let (delimiters, quotes, line_breaks) = (
        repeat_byte(delimiter),
        repeat_byte(quote),
        repeat_byte(b'\n'),
    );
    let mut start = body_start;
    let mut word_start = body_start;
    let mut high_bits = 0;
    for word in words {
        let word = u64::from_le_bytes(*word);
        high_bits |= word;
        if zero_bytes(word ^ quotes) | zero_bytes(word ^ line_breaks) != 0 {
            return PlainSplit::NeedsParser;
        }
        // One high bit per delimiter byte, lowest address lowest.
        let mut found = zero_bytes(word ^ delimiters);
        while found != 0 {
            let end = word_start + (found.trailing_zeros() / 8) as usize;
            spans.push(start..end);
            start = end + 1;
            found &= found - 1;
        }
        word_start += 8;
    }
    for (index, &byte) in rest.iter().enumerate() {
        if byte == delimiter {
            let end = word_start + index;
            spans.push(start..end);
            start = end + 1;
        } else if byte == quote || byte == b'\n' {
            return PlainSplit::NeedsParser;
        }
        high_bits |= u64::from(byte);
    }
    spans.push(start..bytes.len());
    if high_bits & repeat_byte(0x80) == 0 {
        PlainSplit::Ascii
    } else {
        PlainSplit::NonAscii
    }
}

/// A word with `byte` in each of its eight bytes.
const fn repeat_byte(byte: u8) -> u64 {
    u64::from_le_bytes([byte; 8])
}

/// A word with the high bit set in exactly the bytes of `word` that are zero. Unlike the
/// shorter `(word - 0x01..) & !word & 0x80..`, it has no false positives after a zero byte.
const fn zero_bytes(word: u64) -> u64 {
    let low_bits = repeat_byte(0x7f);
    !(((word & low_bits) + low_bits) | word | low_bits)
}

/// Checks that the whole line is UTF-8.
fn check_utf8(bytes: &[u8]) -> Result<(), Reject> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(()),
        Err(error) => Err(Reject::InvalidUtf8 {
            byte: error.valid_up_to(),
        }),
    }
}

/// Splits a line without line breaks with csv-core, as ranges of `scratch.unquoted`.
fn split_quoted(bytes: &[u8], format: Format, scratch: &mut LineScratch) -> Result<(), Reject> {
    scratch.spans.clear();
    // csv-core reads no record from empty input, but an empty line is one empty field, as it
    // is on the unquoted path.
    if bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes).is_empty() {
        scratch.spans.push(0..0);
        return Ok(());
    }
    let reader = match &mut scratch.quoted {
        Some((built_for, reader)) if *built_for == format => reader,
        slot => &mut slot.insert((format, Box::new(csv_reader(format)))).1,
    };
    reader.reset();
    // Quoting only removes bytes, so the fields fit in the line's length; the loop below
    // grows the buffers anyway rather than trust that.
    if scratch.unquoted.len() < bytes.len() {
        scratch.unquoted.resize(bytes.len(), 0);
    }
    if scratch.ends.len() < 16 {
        scratch.ends.resize(16, 0);
    }
    let mut input = bytes;
    let mut written = 0;
    let mut ended = 0;
    loop {
        let (result, read, wrote, ends_written) = reader.read_record(
            input,
            &mut scratch.unquoted[written..],
            &mut scratch.ends[ended..],
        );
        input = &input[read..];
        written += wrote;
        ended += ends_written;
        match result {
            // An empty input next tells csv-core the line is over.
            csv_core::ReadRecordResult::InputEmpty => {}
            csv_core::ReadRecordResult::OutputFull => {
                let grown = (scratch.unquoted.len() * 2).max(16);
                scratch.unquoted.resize(grown, 0);
            }
            csv_core::ReadRecordResult::OutputEndsFull => {
                let grown = scratch.ends.len() * 2;
                scratch.ends.resize(grown, 0);
            }
            csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
        }
    }
    if !input.is_empty() {
        // The only record terminator is `\n`, which `split_fields` has ruled out; report the
        // record's end as a line break rather than drop the rest silently.
        return Err(Reject::LineBreak {
            byte: (bytes.len() - input.len()).saturating_sub(1),
        });
    }
    let mut start = 0;
    for &end in &scratch.ends[..ended] {
        scratch.spans.push(start..end);
        start = end;
    }
    Ok(())
}

/// A csv-core reader for one line of `format`.
fn csv_reader(format: Format) -> csv_core::Reader {
    csv_core::ReaderBuilder::new()
        .delimiter(format.delimiter().unwrap_or(b','))
        .quoting(format == Format::Csv)
        // Lines arrive without `\n`, and `\r` inside a line is data, not the end of a record.
        .terminator(csv_core::Terminator::Any(b'\n'))
        .build()
}

/// Reads one field's bytes as its kind, or says what it should have held. The error is a
/// pointer-sized `&'static str` rather than a [`Reject`], which keeps every return on this hot
/// path small; [`parse_line`] builds the message on the rare rejected line.
fn parse_field(text: &[u8], kind: &FieldKind) -> Result<Value, &'static str> {
    match *kind {
        FieldKind::Int => parse_i64(text).map(Value::Int).ok_or("an integer"),
        FieldKind::Real => parse_finite_f64(text)
            .map(|real| Value::Real(Real(real)))
            .ok_or("a finite real number"),
        FieldKind::Text => Ok(Value::Text(symbol(text))),
        FieldKind::List { separator } => {
            let items = list_symbols(text, separator);
            Ok(if items.is_empty() {
                Value::Missing
            } else {
                Value::List(items)
            })
        }
        FieldKind::Time {
            unit: TimeUnit::Seconds,
        } => parse_u64(text)
            .map(Value::Time)
            .ok_or("a timestamp in seconds"),
        FieldKind::Time {
            unit: TimeUnit::Milliseconds,
        } => parse_u64(text)
            .map(|milliseconds| Value::Time(milliseconds / 1000))
            .ok_or("a timestamp in milliseconds"),
        FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        } => std::str::from_utf8(text)
            .ok()
            .and_then(|text| {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .and_then(|moment| u64::try_from(moment.unix_timestamp()).ok())
            .map(Value::Time)
            .ok_or("an RFC 3339 time at or after 1970"),
    }
}

/// The symbols of a list's items, each trimmed, skipping empty ones.
fn list_symbols(text: &[u8], separator: u8) -> Vec<Symbol> {
    // Most lists are short; starting at the capacity the first push would pick saves a grow.
    let mut items = Vec::with_capacity(4);
    let mut push = |item: &[u8]| {
        let item = item.trim_ascii();
        if !item.is_empty() {
            items.push(symbol(item));
        }
    };
    let mut start = 0;
    for (index, &byte) in text.iter().enumerate() {
        if byte == separator {
            push(&text[start..index]);
            start = index + 1;
        }
    }
    push(&text[start..]);
    items
}

/// Reads an optionally signed decimal integer, refusing anything else and any overflow.
fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    // 18 digits cannot overflow, so only the rest need checked arithmetic. Accumulate
    // downwards, so that `i64::MIN`, which has no positive counterpart, reads.
    let (unchecked, checked) = digits.split_at(digits.len().min(18));
    let mut value: i64 = 0;
    for &byte in unchecked {
        value = value * 10 - i64::from(decimal_digit(byte)?);
    }
    for &byte in checked {
        value = value
            .checked_mul(10)?
            .checked_sub(i64::from(decimal_digit(byte)?))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Reads an unsigned decimal integer (digits only), refusing overflow.
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    // 19 digits cannot overflow, so only the rest need checked arithmetic.
    let (unchecked, checked) = text.split_at(text.len().min(19));
    let mut value: u64 = 0;
    for &byte in unchecked {
        value = value * 10 + u64::from(decimal_digit(byte)?);
    }
    for &byte in checked {
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(decimal_digit(byte)?))?;
    }
    Some(value)
}

/// The value of an ASCII decimal digit.
fn decimal_digit(byte: u8) -> Option<u8> {
    let digit = byte.wrapping_sub(b'0');
    (digit <= 9).then_some(digit)
}

/// Reads a real number, refusing infinities and NaN, which no feature can use.
fn parse_finite_f64(text: &[u8]) -> Option<f64> {
    if let Some(real) = parse_plain_decimal(text) {
        return Some(real);
    }
    std::str::from_utf8(text)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|real| real.is_finite())
}

/// The powers of ten that are exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Reads the common `[+-]digits[.digits]` of at most 19 bytes after the sign quickly, or gives
/// up.
///
/// When the digits as an integer fit in 53 bits and there are at most 22 after the point, both
/// the integer and the power of ten are exact doubles, so one correctly rounded division gives
/// the correctly rounded value (Clinger's fast path): the same bits as `str::parse`.
fn parse_plain_decimal(text: &[u8]) -> Option<f64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, text),
    };
    // At most 19 digits, which cannot overflow a `u64`.
    if digits.len() > 19 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut digit_count = 0;
    let mut fraction_digits: Option<usize> = None;
    for &byte in digits {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                digit_count += 1;
                if let Some(count) = &mut fraction_digits {
                    *count += 1;
                }
            }
            b'.' if fraction_digits.is_none() => fraction_digits = Some(0),
            _ => return None,
        }
    }
    let power = EXACT_POWERS_OF_TEN.get(fraction_digits.unwrap_or(0))?;
    if digit_count == 0 || mantissa >= 1 << 53 {
        return None;
    }
    let magnitude = mantissa as f64 / power;
    Some(if negative { -magnitude } else { magnitude })
}

/// The start of an unreadable field's text, for a message.
fn excerpt(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Parses a JSON Lines line, as [`parse_line`] says.
///
/// The object is read with serde_json straight into the row, without building a JSON value:
/// keys are matched and strings hashed in place, and only strings with escapes are decoded,
/// into serde_json's own reused buffer. Ignored keys are skipped without being kept. The
/// number text a string field hashes is [`JsonNumber::text`].
///
/// Kept out of line, so that the CSV path through [`parse_line`] stays as small as it was.
#[inline(never)]
fn parse_json_line(bytes: &[u8], fields: &[FieldPlan]) -> Result<Row, Reject> {
    // The first line of a file may start with a byte order mark, which is no JSON.
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let bom_bytes = bytes.len() - body.len();
    let text = std::str::from_utf8(body).map_err(|error| Reject::InvalidUtf8 {
        byte: bom_bytes + error.valid_up_to(),
    })?;
    // JSON takes a line break for blank space, but a fact is one line, as it is in CSV.
    if let Some(byte) = memchr(b'\n', body) {
        return Err(Reject::LineBreak {
            byte: bom_bytes + byte,
        });
    }
    let mut row = vec![Value::Missing; fields.len()];
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let object = JsonObject {
        fields,
        row: &mut row,
    };
    let read = serde::de::DeserializeSeed::deserialize(object, &mut deserializer)
        .and_then(|read| deserializer.end().map(|()| read));
    match read {
        Err(error) => return Err(invalid_json(&error, bom_bytes)),
        Ok(Err(reject)) => return Err(reject),
        Ok(Ok(())) => {}
    }
    let empty_required = fields
        .iter()
        .zip(&row)
        .find(|(field, value)| field.required && matches!(value, Value::Missing));
    if let Some((field, _)) = empty_required {
        return Err(Reject::RequiredEmpty {
            field: field.name.clone(),
        });
    }
    Ok(row)
}

/// The reject for a line serde_json could not read, with its message and column apart.
fn invalid_json(error: &serde_json::Error, bom_bytes: usize) -> Reject {
    let message = error.to_string();
    // serde_json ends its message with where it gave up; a line has only one line.
    let position = format!(" at line {} column {}", error.line(), error.column());
    let problem = message
        .strip_suffix(&position)
        .unwrap_or(&message)
        .to_string();
    let column = match error.column() {
        0 => 0,
        column => column + bom_bytes,
    };
    Reject::InvalidJson { column, problem }
}

/// What a field of a JSON Lines source holds, for a [`Reject::JsonType`].
fn json_expectation(kind: &FieldKind) -> &'static str {
    match kind {
        FieldKind::Int => "an integer",
        FieldKind::Real => "a real number",
        FieldKind::Text => "a string, number or boolean",
        FieldKind::List { .. } => "a list of strings",
        FieldKind::Time {
            unit: TimeUnit::Seconds,
        } => "a timestamp in seconds",
        FieldKind::Time {
            unit: TimeUnit::Milliseconds,
        } => "a timestamp in milliseconds",
        FieldKind::Time {
            unit: TimeUnit::Rfc3339,
        } => "an RFC 3339 time in a string",
    }
}

/// Reads a JSON Lines object into a row. Its value is the first field that could not be read,
/// if any; a line that is not JSON is a serde_json error instead, so that it reads as one.
struct JsonObject<'a> {
    fields: &'a [FieldPlan],
    row: &'a mut [Value],
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonObject<'_> {
    type Value = Result<(), Reject>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        // Any value, so that a line holding something else says what it holds.
        deserializer.deserialize_any(self)
    }
}

impl JsonObject<'_> {
    fn not_an_object(found: &'static str) -> Result<(), Reject> {
        Err(Reject::NotJsonObject { found })
    }
}

impl<'de> serde::de::Visitor<'de> for JsonObject<'_> {
    type Value = Result<(), Reject>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut first_reject = None;
        while let Some(index) = map.next_key_seed(JsonKey {
            fields: self.fields,
        })? {
            let Some(index) = index else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            let field = &self.fields[index];
            match map.next_value_seed(JsonField { field })? {
                Ok(value) => self.row[index] = value,
                Err(reject) => {
                    // Read on all the same: a line that is not JSON says so first.
                    first_reject.get_or_insert(reject);
                }
            }
        }
        Ok(first_reject.map_or(Ok(()), Err))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
        Ok(Self::not_an_object("a JSON array"))
    }

    fn visit_str<E: serde::de::Error>(self, _text: &str) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON string"))
    }

    fn visit_bool<E: serde::de::Error>(self, _value: bool) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON boolean"))
    }

    fn visit_i64<E: serde::de::Error>(self, _value: i64) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON number"))
    }

    fn visit_u64<E: serde::de::Error>(self, _value: u64) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _value: f64) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("a JSON number"))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Self::not_an_object("null"))
    }
}

/// Reads a key of a JSON Lines object as the index of the field it names, if any.
struct JsonKey<'a> {
    fields: &'a [FieldPlan],
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonKey<'_> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonKey<'_> {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        // Schemas are short, so a scan beats hashing the key.
        Ok(self.fields.iter().position(|field| field.name == key))
    }
}

/// Reads the value of one field of a JSON Lines object as its kind, or says why it cannot be.
struct JsonField<'a> {
    field: &'a FieldPlan,
}

impl JsonField<'_> {
    fn wrong_type(&self, found: &'static str) -> Result<Value, Reject> {
        Err(Reject::JsonType {
            field: self.field.name.clone(),
            expected: json_expectation(&self.field.kind),
            found,
        })
    }

    fn number(self, number: JsonNumber) -> Result<Value, Reject> {
        let (read, expected) = match self.field.kind {
            FieldKind::Int => (number.as_i64().map(Value::Int), "an integer"),
            FieldKind::Real => (
                number.as_finite_f64().map(|real| Value::Real(Real(real))),
                "a finite real number",
            ),
            FieldKind::Text => {
                return Ok(Value::Text(symbol(number.text().as_bytes())));
            }
            FieldKind::List { .. }
            | FieldKind::Time {
                unit: TimeUnit::Rfc3339,
            } => return self.wrong_type("a JSON number"),
            FieldKind::Time {
                unit: TimeUnit::Seconds,
            } => (
                number.as_u64().map(Value::Time),
                "a whole, non-negative timestamp in seconds",
            ),
            FieldKind::Time {
                unit: TimeUnit::Milliseconds,
            } => (
                number
                    .as_u64()
                    .map(|milliseconds| Value::Time(milliseconds / 1000)),
                "a whole, non-negative timestamp in milliseconds",
            ),
        };
        read.ok_or_else(|| Reject::Unreadable {
            field: self.field.name.clone(),
            text: number.text(),
            expected,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for JsonField<'_> {
    type Value = Result<Value, Reject>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonField<'_> {
    type Value = Result<Value, Reject>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "the value of field `{}`", self.field.name)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Value::Missing))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(parse_text(text.as_bytes().trim_ascii(), self.field))
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(match self.field.kind {
            FieldKind::Text => Ok(Value::Text(symbol(if value { b"true" } else { b"false" }))),
            _ => self.wrong_type("a JSON boolean"),
        })
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(self.number(JsonNumber::Signed(value)))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(self.number(JsonNumber::Unsigned(value)))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(self.number(JsonNumber::Fraction(value)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !matches!(self.field.kind, FieldKind::List { .. }) {
            serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
            return Ok(self.wrong_type("a JSON array"));
        }
        let mut items = Vec::with_capacity(4);
        while let Some(item) = seq.next_element_seed(JsonListItem)? {
            match item {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(found) => {
                    serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
                    return Ok(self.wrong_type(found));
                }
            }
        }
        Ok(Ok(if items.is_empty() {
            Value::Missing
        } else {
            Value::List(items)
        }))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_map(serde::de::IgnoredAny, map)?;
        Ok(self.wrong_type("a JSON object"))
    }
}

/// Reads an item of a JSON array given for a list: the symbol of its trimmed text, `None` when
/// that is empty, or what it holds instead of a string.
struct JsonListItem;

impl<'de> serde::de::DeserializeSeed<'de> for JsonListItem {
    type Value = Result<Option<Symbol>, &'static str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonListItem {
    type Value = Result<Option<Symbol>, &'static str>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
        let item = text.as_bytes().trim_ascii();
        Ok(Ok((!item.is_empty()).then(|| symbol(item))))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err("a JSON array holding null"))
    }

    fn visit_bool<E: serde::de::Error>(self, _value: bool) -> Result<Self::Value, E> {
        Ok(Err("a JSON array holding a boolean"))
    }

    fn visit_i64<E: serde::de::Error>(self, _value: i64) -> Result<Self::Value, E> {
        Ok(Err("a JSON array holding a number"))
    }

    fn visit_u64<E: serde::de::Error>(self, _value: u64) -> Result<Self::Value, E> {
        Ok(Err("a JSON array holding a number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _value: f64) -> Result<Self::Value, E> {
        Ok(Err("a JSON array holding a number"))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_seq(serde::de::IgnoredAny, seq)?;
        Ok(Err("a JSON array holding an array"))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        serde::de::Visitor::visit_map(serde::de::IgnoredAny, map)?;
        Ok(Err("a JSON array holding an object"))
    }
}

/// A JSON number as serde_json reads it: an integer when written without a fraction or an
/// exponent (and within 64 bits), otherwise the nearest double.
#[derive(Clone, Copy, Debug)]
enum JsonNumber {
    Unsigned(u64),
    Signed(i64),
    Fraction(f64),
}

/// 2^63, just past the largest `i64`, as a double (exactly).
const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
/// 2^64, just past the largest `u64`, as a double (exactly).
const TWO_TO_64: f64 = 18_446_744_073_709_551_616.0;

impl JsonNumber {
    /// The number, when it is whole and within `i64`.
    fn as_i64(self) -> Option<i64> {
        match self {
            JsonNumber::Unsigned(value) => i64::try_from(value).ok(),
            JsonNumber::Signed(value) => Some(value),
            JsonNumber::Fraction(value) => (value.fract() == 0.0
                && (-TWO_TO_63..TWO_TO_63).contains(&value))
            .then_some(value as i64),
        }
    }

    /// The number, when it is whole, not negative, and within `u64`.
    fn as_u64(self) -> Option<u64> {
        match self {
            JsonNumber::Unsigned(value) => Some(value),
            JsonNumber::Signed(value) => u64::try_from(value).ok(),
            JsonNumber::Fraction(value) => {
                (value.fract() == 0.0 && (0.0..TWO_TO_64).contains(&value)).then_some(value as u64)
            }
        }
    }

    /// The number as a finite double. serde_json refuses numbers out of a double's range, but
    /// its reading of a double may differ from the exactly rounded one in the last bit.
    fn as_finite_f64(self) -> Option<f64> {
        let value = match self {
            JsonNumber::Unsigned(value) => value as f64,
            JsonNumber::Signed(value) => value as f64,
            JsonNumber::Fraction(value) => value,
        };
        value.is_finite().then_some(value)
    }

    /// The number's text, which a string field hashes: an integer as written, so that `196`
    /// keys as `"196"` and as the integer 196 do; other numbers as serde_json writes them,
    /// shortest first (`0.5`, `1.0`, `1e+21`), which is how most writers write them.
    fn text(self) -> String {
        match self {
            JsonNumber::Unsigned(value) => value.to_string(),
            JsonNumber::Signed(value) => value.to_string(),
            JsonNumber::Fraction(value) => serde_json::Number::from_f64(value)
                .map_or_else(|| value.to_string(), |number| number.to_string()),
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    use std::fs::OpenOptions;

    use dataflows::plan::LatePolicy;

    use proptest::prelude::*;

    /// Limits small enough that a few bytes cross every buffer boundary.
    const TINY: Limits = Limits {
        max_line_bytes: 5,
        tail_read_bytes: 3,
        scan_read_bytes: 4,
    };

    fn write_file(contents: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("create a temporary file");
        file.write_all(contents).expect("write the temporary file");
        file.flush().expect("flush the temporary file");
        file
    }

    /// A line as the reader should return it: offset, kept bytes and full length.
    type ExpectedLine = (u64, Vec<u8>, u64);

    /// The file's lines by a plain split at `\n`, dropping one trailing `\r`.
    fn reference_lines(contents: &[u8], max_line_bytes: usize) -> Vec<ExpectedLine> {
        let mut lines = Vec::new();
        let mut start = 0;
        while start < contents.len() {
            let end = contents[start..]
                .iter()
                .position(|byte| *byte == b'\n')
                .map_or(contents.len(), |index| start + index);
            let mut line = &contents[start..end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let kept = &line[..line.len().min(max_line_bytes)];
            lines.push((start as u64, kept.to_vec(), line.len() as u64));
            start = end + 1;
        }
        lines
    }

    /// Reads the file at every worker and checks the union against the plain split.
    fn check_sharding(
        contents: &[u8],
        has_header: bool,
        peers: usize,
        chunk_bytes: u64,
        limits: Limits,
    ) {
        let file = write_file(contents);
        let mut expected = reference_lines(contents, limits.max_line_bytes);
        let header = if has_header && !expected.is_empty() {
            Some(expected.remove(0))
        } else {
            None
        };
        if let Some((_, _, length)) = &header
            && *length > limits.max_line_bytes as u64
        {
            let opened = ShardReader::open_with_limits(
                file.path(),
                0,
                peers,
                chunk_bytes,
                has_header,
                limits,
                false,
            );
            assert!(matches!(opened, Err(IngestError::HeaderTooLong { .. })));
            return;
        }
        let data_start = expected
            .first()
            .map_or(contents.len() as u64, |line| line.0);
        let first_data_line = if header.is_some() { 2 } else { 1 };
        let line_number_of = |offset: u64| {
            let index = expected
                .iter()
                .position(|line| line.0 == offset)
                .expect("a line the reference has");
            (index + first_data_line) as u64
        };
        let mut read = Vec::new();
        let mut end_positions = Vec::new();
        for worker in 0..peers {
            let mut reader = ShardReader::open_with_limits(
                file.path(),
                worker,
                peers,
                chunk_bytes,
                has_header,
                limits,
                false,
            )
            .expect("open the file");
            assert_eq!(
                reader.header(),
                header.as_ref().map(|(_, bytes, _)| &bytes[..])
            );
            let mut own = Vec::new();
            while let Some(line) = reader.next_line().expect("read a line") {
                assert_eq!(line.truncated(), line.length > limits.max_line_bytes as u64);
                own.push((line.offset, line.bytes.to_vec(), line.length));
            }
            // Every line this worker read starts in one of its chunks.
            for (offset, _, _) in &own {
                assert_eq!((offset / chunk_bytes) as usize % peers, worker);
            }
            // The position is just past this worker's last line: where the next line starts.
            let expected_position = match own.last() {
                None => data_start,
                Some((last, _, _)) => expected
                    .iter()
                    .find(|line| line.0 > *last)
                    .map_or(contents.len() as u64, |line| line.0),
            };
            assert_eq!(reader.position(), expected_position);
            end_positions.push((own.last().map(|line| line.0), reader.position()));
            // Line numbers at increasing offsets, then at an earlier one, which counts afresh.
            for (offset, _, _) in &own {
                assert_eq!(
                    reader.line_number(*offset).ok(),
                    Some(line_number_of(*offset))
                );
            }
            if let Some((offset, _, _)) = own.first() {
                assert_eq!(
                    reader.line_number(*offset).ok(),
                    Some(line_number_of(*offset))
                );
            }
            read.extend(own);
        }
        read.sort_by_key(|line| line.0);
        assert_eq!(read, expected);
        // The worker that read the last line ends at the end of the file.
        if let Some((last, _, _)) = expected.last() {
            assert!(end_positions.contains(&(Some(*last), contents.len() as u64)));
        }
    }

    fn file_contents() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let line = prop::collection::vec(prop::sample::select(b"ab,\r\"".to_vec()), 0..12);
        let ending = prop::sample::select(vec![&b"\n"[..], &b"\r\n"[..]]);
        (
            prop::collection::vec((line, ending), 0..12),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(lines, final_newline, has_header)| {
                let mut contents = Vec::new();
                let count = lines.len();
                for (index, (line, ending)) in lines.into_iter().enumerate() {
                    contents.extend_from_slice(&line);
                    if index + 1 < count || final_newline {
                        contents.extend_from_slice(ending);
                    }
                }
                (contents, has_header)
            })
    }

    proptest! {
        #[test]
        fn every_line_is_read_once_by_its_chunk_owner(
            (contents, has_header) in file_contents(),
            peers in 1..=5usize,
            chunk_bytes in 1..=64u64,
        ) {
            check_sharding(&contents, has_header, peers, chunk_bytes, Limits::DEFAULT);
            check_sharding(&contents, has_header, peers, chunk_bytes, TINY);
        }
    }

    #[test]
    fn long_lines_come_back_truncated_and_the_next_line_intact() {
        let mut contents = vec![b'x'; MAX_LINE_BYTES + 100];
        contents.extend_from_slice(b"\r\nnext\n");
        contents.extend(vec![b'y'; MAX_LINE_BYTES]);
        contents.extend_from_slice(b"\r\n");
        contents.extend(vec![b'z'; MAX_LINE_BYTES + 1]);
        contents.extend_from_slice(b"\nlast");
        let file = write_file(&contents);
        let mut reader = ShardReader::open(file.path(), 0, 1, 1 << 20, false).expect("open");

        let line = reader.next_line().expect("read").expect("a line");
        assert!(line.truncated());
        assert_eq!(line.offset, 0);
        assert_eq!(line.length, MAX_LINE_BYTES as u64 + 100);
        assert_eq!(line.bytes.len(), MAX_LINE_BYTES);

        let line = reader.next_line().expect("read").expect("a line");
        assert_eq!(line.bytes, b"next");
        assert_eq!(line.offset, MAX_LINE_BYTES as u64 + 102);

        let line = reader.next_line().expect("read").expect("a line");
        assert!(!line.truncated(), "a line of exactly the limit is whole");
        assert_eq!(line.length, MAX_LINE_BYTES as u64);

        let line = reader.next_line().expect("read").expect("a line");
        assert!(line.truncated());
        assert_eq!(line.length, MAX_LINE_BYTES as u64 + 1);

        let line = reader.next_line().expect("read").expect("a line");
        assert_eq!(line.bytes, b"last");
        assert_eq!(reader.next_line().expect("read"), None);
        assert_eq!(reader.position(), contents.len() as u64);
        assert_eq!(
            reader.line_number(line_offset_of(&contents, b"last")).ok(),
            Some(5)
        );
    }

    fn line_offset_of(contents: &[u8], needle: &[u8]) -> u64 {
        contents
            .windows(needle.len())
            .position(|window| window == needle)
            .expect("the needle is in the file") as u64
    }

    #[test]
    fn long_lines_shard_across_workers() {
        let mut contents = Vec::new();
        for index in 0..6 {
            contents.extend_from_slice(format!("short {index}\n").as_bytes());
            contents.extend(vec![b'a' + index as u8; 2 * MAX_LINE_BYTES + 7 * index]);
            contents.extend_from_slice(b"\r\n");
        }
        for peers in [2, 3] {
            check_sharding(&contents, true, peers, 300_000, Limits::DEFAULT);
            check_sharding(&contents, false, peers, 1 << 20, Limits::DEFAULT);
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let path = Path::new("/no/such/dir/facts.csv");
        let error = ShardReader::open(path, 0, 1, 1024, true)
            .err()
            .expect("opening a missing file fails");
        assert!(matches!(error, IngestError::Open { .. }));
        assert!(
            error.to_string().contains("/no/such/dir/facts.csv"),
            "{error}"
        );
    }

    #[test]
    fn impossible_shards_are_errors() {
        let file = write_file(b"a\n");
        for (worker, peers, chunk_bytes) in [(0, 0, 10), (2, 2, 10), (0, 2, 0)] {
            let error = ShardReader::open(file.path(), worker, peers, chunk_bytes, false)
                .err()
                .expect("an impossible shard fails");
            assert!(matches!(error, IngestError::InvalidShard { .. }), "{error}");
        }
    }

    #[test]
    fn line_numbers_past_the_end_are_errors() {
        let file = write_file(b"a\nb\n");
        let mut reader = ShardReader::open(file.path(), 0, 1, 1024, false).expect("open");
        assert_eq!(reader.line_number(4).ok(), Some(3));
        assert!(matches!(
            reader.line_number(5),
            Err(IngestError::OffsetPastEnd { .. })
        ));
    }

    #[test]
    fn a_header_only_file_has_no_data() {
        let file = write_file(b"dog,time\n");
        let mut reader = ShardReader::open(file.path(), 0, 1, 1024, true).expect("open");
        assert_eq!(reader.header(), Some(&b"dog,time"[..]));
        assert_eq!(reader.next_line().expect("read"), None);
        assert_eq!(reader.position(), 9);
    }

    fn field(name: &str, kind: FieldKind, required: bool) -> FieldPlan {
        FieldPlan {
            name: name.to_string(),
            kind,
            required,
        }
    }

    fn source(format: Format, fields: Vec<FieldPlan>) -> SourcePlan {
        SourcePlan {
            name: "posts".to_string(),
            paths: Vec::new(),
            glob: None,
            format,
            header: false,
            fields,
            // Parsing does not look at how a source is timed or keyed.
            time_field: None,
            lateness_secs: 0,
            late: LatePolicy::Drop,
            key_fields: Vec::new(),
            op_field: None,
            corrects: None,
        }
    }

    /// A source with one field of every kind, none required.
    fn every_kind(format: Format) -> SourcePlan {
        source(
            format,
            vec![
                field("count", FieldKind::Int, false),
                field("score", FieldKind::Real, false),
                field("dog", FieldKind::Text, false),
                field("tags", FieldKind::List { separator: b'|' }, false),
                field(
                    "time",
                    FieldKind::Time {
                        unit: TimeUnit::Seconds,
                    },
                    false,
                ),
                field(
                    "time_ms",
                    FieldKind::Time {
                        unit: TimeUnit::Milliseconds,
                    },
                    false,
                ),
            ],
        )
    }

    fn parse(bytes: &[u8], source: &SourcePlan) -> Result<Row, Reject> {
        parse_line(bytes, source, &mut LineScratch::new())
    }

    #[test]
    fn a_line_parses_into_typed_values() {
        let row = parse(
            b" 42 ,0.5,\"rex, jr\", ball | park ||,1767225600,1767225600999",
            &every_kind(Format::Csv),
        );
        assert_eq!(
            row,
            Ok(vec![
                Value::Int(42),
                Value::Real(Real(0.5)),
                Value::Text(symbol(b"rex, jr")),
                Value::List(vec![symbol(b"ball"), symbol(b"park")]),
                Value::Time(1_767_225_600),
                Value::Time(1_767_225_600),
            ])
        );
    }

    #[test]
    fn empty_fields_are_missing_unless_required() {
        let schema = every_kind(Format::Csv);
        assert_eq!(parse(b",, ,| |,,", &schema), Ok(vec![Value::Missing; 6]));
        let required = source(
            Format::Csv,
            vec![
                field("dog", FieldKind::Text, true),
                field("tags", FieldKind::List { separator: b'|' }, true),
            ],
        );
        let reject = parse(b" ,a", &required).expect_err("an empty required field");
        assert_eq!(reject.to_string(), "field `dog` is required but empty");
        let reject = parse(b"a,||", &required).expect_err("an empty required list");
        assert_eq!(reject.to_string(), "field `tags` is required but empty");
    }

    #[test]
    fn rejects_name_the_field_and_quote_the_text() {
        let schema = source(
            Format::Csv,
            vec![field(
                "time",
                FieldKind::Time {
                    unit: TimeUnit::Seconds,
                },
                true,
            )],
        );
        let reject = parse(b"12ab", &schema).expect_err("not a time");
        assert_eq!(
            reject.to_string(),
            "field `time`: cannot read \"12ab\" as a timestamp in seconds"
        );
        assert!(parse(b"-5", &schema).is_err());

        let long = "9".repeat(30) + &"x".repeat(100);
        let reject = parse(long.as_bytes(), &schema).expect_err("not a time");
        let Reject::Unreadable { text, .. } = reject else {
            panic!("expected an unreadable field, got {reject:?}");
        };
        assert_eq!(text.chars().count(), EXCERPT_CHARS + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn numbers_are_checked() {
        let ints = source(Format::Csv, vec![field("n", FieldKind::Int, true)]);
        assert_eq!(
            parse(b"-9223372036854775808", &ints),
            Ok(vec![Value::Int(i64::MIN)])
        );
        assert_eq!(parse(b"+7", &ints), Ok(vec![Value::Int(7)]));
        for bad in [&b"9223372036854775808"[..], b"1.0", b"-", b"1e3", b"0x10"] {
            assert!(
                parse(bad, &ints).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let reals = source(Format::Csv, vec![field("x", FieldKind::Real, true)]);
        assert_eq!(parse(b"1e3", &reals), Ok(vec![Value::Real(Real(1000.0))]));
        for bad in [&b"inf"[..], b"NaN", b"-infinity", b"1e400", b"1,5"] {
            assert!(
                parse(bad, &reals).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let reject = parse(b"nan", &reals).expect_err("NaN is no feature");
        assert_eq!(
            reject.to_string(),
            "field `x`: cannot read \"nan\" as a finite real number"
        );
    }

    #[test]
    fn line_shape_is_checked() {
        let schema = source(
            Format::Csv,
            vec![
                field("a", FieldKind::Text, false),
                field("b", FieldKind::Text, false),
                field("c", FieldKind::Text, false),
            ],
        );
        let reject = parse(b"x,y", &schema).expect_err("too few fields");
        assert_eq!(reject.to_string(), "expected 3 fields, found 2");
        let reject = parse(b"x,\"y,z\",w,v", &schema).expect_err("too many fields");
        assert_eq!(
            reject,
            Reject::FieldCount {
                expected: 3,
                found: 4
            }
        );
        let reject = parse(b"x,\xff,z", &schema).expect_err("not UTF-8");
        assert_eq!(reject.to_string(), "invalid UTF-8 at byte 2");
        let reject = parse(b"x,\"y\nz\",w", &schema).expect_err("two lines");
        assert_eq!(reject, Reject::LineBreak { byte: 4 });
        // An empty line is one empty field.
        let single = source(Format::Csv, vec![field("a", FieldKind::Text, false)]);
        assert_eq!(parse(b"", &single), Ok(vec![Value::Missing]));
        assert_eq!(parse(b"\xef\xbb\xbf", &single), Ok(vec![Value::Missing]));
    }

    #[test]
    fn tsv_has_no_quoting() {
        let schema = source(
            Format::Tsv,
            vec![
                field("a", FieldKind::Text, false),
                field("b", FieldKind::Text, false),
            ],
        );
        // A quoted tab still separates fields.
        assert_eq!(
            parse(b"\"x\ty\"\t,z", &schema),
            Err(Reject::FieldCount {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(
            parse(b"\"x,y\"\t z ", &schema),
            Ok(vec![
                Value::Text(symbol(b"\"x,y\"")),
                Value::Text(symbol(b"z"))
            ])
        );
    }

    #[test]
    fn a_byte_order_mark_is_not_data() {
        let schema = source(Format::Csv, vec![field("n", FieldKind::Int, true)]);
        assert_eq!(parse(b"\xef\xbb\xbf12", &schema), Ok(vec![Value::Int(12)]));
        assert_eq!(
            parse(b"\xef\xbb\xbf\"12\"", &schema),
            Ok(vec![Value::Int(12)])
        );
    }

    /// One field's value as the round-trip test writes it.
    #[derive(Clone, Debug)]
    enum Cell {
        Missing,
        Int(i64),
        Real(f64, bool),
        Text(String, bool),
        List(Vec<String>, bool),
        Seconds(u64),
        Milliseconds(u64),
    }

    fn cells() -> impl Strategy<Value = Vec<Cell>> {
        let text = "[a-z é,\"|\t]{0,8}";
        let quote = any::<bool>();
        (
            prop::option::weighted(0.8, any::<i64>().prop_map(Cell::Int)),
            prop::option::weighted(
                0.8,
                (
                    any::<f64>().prop_filter("finite", |real| real.is_finite()),
                    any::<bool>(),
                )
                    .prop_map(|(real, scientific)| Cell::Real(real, scientific)),
            ),
            prop::option::weighted(
                0.8,
                (text, quote).prop_map(|(text, quote)| Cell::Text(text, quote)),
            ),
            prop::option::weighted(
                0.8,
                (prop::collection::vec("[a-z é,\"\t]{0,5}", 0..4), quote)
                    .prop_map(|(items, quote)| Cell::List(items, quote)),
            ),
            prop::option::weighted(0.8, any::<u64>().prop_map(Cell::Seconds)),
            prop::option::weighted(0.8, any::<u64>().prop_map(Cell::Milliseconds)),
        )
            .prop_map(|(int, real, text, list, seconds, milliseconds)| {
                [int, real, text, list, seconds, milliseconds]
                    .into_iter()
                    .map(|cell| cell.unwrap_or(Cell::Missing))
                    .collect()
            })
    }

    /// Writes a field as a CSV writer would (quoting when needed or asked), or as TSV.
    fn write_field(text: &str, quote: bool, format: Format) -> String {
        let needs_quotes = text.contains([',', '"']);
        if format == Format::Csv && (quote || needs_quotes) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        }
    }

    fn text_value(text: &str) -> Value {
        let trimmed = text.as_bytes().trim_ascii();
        if trimmed.is_empty() {
            Value::Missing
        } else {
            Value::Text(symbol(trimmed))
        }
    }

    fn write_row(cells: &[Cell], format: Format) -> (String, Row) {
        let mut fields = Vec::new();
        let mut row = Vec::new();
        for cell in cells {
            let (text, value) = match cell {
                Cell::Missing => (String::new(), Value::Missing),
                Cell::Int(int) => (format!(" {int}"), Value::Int(*int)),
                Cell::Real(real, true) => (format!("{real:e} "), Value::Real(Real(*real))),
                Cell::Real(real, false) => (format!("{real}"), Value::Real(Real(*real))),
                Cell::Text(text, quote) => (write_field(text, *quote, format), text_value(text)),
                Cell::List(items, quote) => {
                    let symbols: Vec<Symbol> = items
                        .iter()
                        .map(|item| item.as_bytes().trim_ascii())
                        .filter(|item| !item.is_empty())
                        .map(symbol)
                        .collect();
                    let value = if symbols.is_empty() {
                        Value::Missing
                    } else {
                        Value::List(symbols)
                    };
                    (write_field(&items.join("|"), *quote, format), value)
                }
                Cell::Seconds(seconds) => (seconds.to_string(), Value::Time(*seconds)),
                Cell::Milliseconds(milliseconds) => {
                    (milliseconds.to_string(), Value::Time(milliseconds / 1000))
                }
            };
            fields.push(text);
            row.push(value);
        }
        let delimiter = if format == Format::Csv { "," } else { "\t" };
        (fields.join(delimiter), row)
    }

    proptest! {
        #[test]
        fn parsing_never_panics(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), prop::sample::select(b",\t\"\r\n| 0123456789.-e".to_vec())],
                0..80,
            ),
        ) {
            let mut scratch = LineScratch::new();
            for format in [Format::Csv, Format::Tsv] {
                if let Err(reject) = parse_line(&bytes, &every_kind(format), &mut scratch) {
                    let _ = reject.to_string();
                }
            }
        }

        #[test]
        fn written_rows_parse_back(cells in cells()) {
            let mut scratch = LineScratch::new();
            let (line, row) = write_row(&cells, Format::Csv);
            prop_assert_eq!(parse_line(line.as_bytes(), &every_kind(Format::Csv), &mut scratch), Ok(row));
        }

        #[test]
        fn written_tsv_rows_parse_back(cells in cells()) {
            // TSV has no quoting, so its texts hold no tabs.
            let cells: Vec<Cell> = cells.into_iter().map(|cell| match cell {
                Cell::Text(text, quote) => Cell::Text(text.replace('\t', " "), quote),
                Cell::List(items, quote) => Cell::List(items.iter().map(|item| item.replace('\t', " ")).collect(), quote),
                other => other,
            }).collect();
            let mut scratch = LineScratch::new();
            let (line, row) = write_row(&cells, Format::Tsv);
            prop_assert_eq!(parse_line(line.as_bytes(), &every_kind(Format::Tsv), &mut scratch), Ok(row));
        }

        /// The decimal fast path reads exactly what the standard library reads.
        #[test]
        fn plain_decimals_read_as_the_standard_library_reads(
            text in "[+-]?[0-9]{0,21}(\\.[0-9]{0,24})?",
            real in any::<f64>(),
        ) {
            for text in [text, real.to_string(), format!("{real:.3}")] {
                let standard = text.parse::<f64>().ok().filter(|real| real.is_finite());
                let ours = parse_finite_f64(text.as_bytes());
                prop_assert_eq!(ours.map(f64::to_bits), standard.map(f64::to_bits), "{}", text);
            }
        }

        /// The unquoted fast path splits exactly as csv-core would.
        #[test]
        fn unquoted_lines_split_as_csv_core_does(
            bom in any::<bool>(),
            body in prop::collection::vec(prop::sample::select(b"ab,\t \r\xef\xbb\xbf".to_vec()), 0..30),
        ) {
            let mut bytes = if bom { UTF8_BOM.to_vec() } else { Vec::new() };
            bytes.extend(body);
            for format in [Format::Csv, Format::Tsv] {
                let mut scratch = LineScratch::new();
                prop_assert_ne!(split_plain(&bytes, format, &mut scratch.spans), PlainSplit::NeedsParser);
                let plain: Vec<Vec<u8>> = scratch.spans.iter().map(|span| bytes[span.clone()].to_vec()).collect();
                split_quoted(&bytes, format, &mut scratch).expect("no line break");
                let quoted: Vec<Vec<u8>> = scratch.spans.iter().map(|span| scratch.unquoted[span.clone()].to_vec()).collect();
                prop_assert_eq!(plain, quoted);
            }
        }
    }

    /// Numbering every line of a source in order, as a source timed by its order is, reads
    /// each byte once: the checkpoint carries the count from one call to the next.
    #[test]
    fn numbering_every_line_in_order_reads_each_byte_once() {
        let mut contents = Vec::new();
        for index in 0..100_000 {
            contents.extend_from_slice(format!("dog-{index},{}\n", index % 7).as_bytes());
        }
        let file = write_file(&contents);
        let mut reader = ShardReader::open(file.path(), 0, 1, 1 << 20, false).expect("open");
        let mut offsets = Vec::new();
        while let Some(line) = reader.next_line().expect("read") {
            offsets.push(line.offset);
        }
        assert_eq!(offsets.len(), 100_000);
        for (index, offset) in offsets.iter().enumerate() {
            assert_eq!(reader.line_number(*offset).ok(), Some(index as u64 + 1));
        }
        let last = *offsets.last().expect("lines");
        assert_eq!(reader.line_count_bytes, last);
    }

    /// A file in a temporary directory, which a test can append to, truncate or replace.
    struct GrowingFile {
        directory: tempfile::TempDir,
        path: PathBuf,
    }

    impl GrowingFile {
        fn new(contents: &[u8]) -> GrowingFile {
            let directory = tempfile::tempdir().expect("a temporary directory");
            let path = directory.path().join("facts.csv");
            std::fs::write(&path, contents).expect("write the file");
            GrowingFile { directory, path }
        }

        fn append(&self, bytes: &[u8]) {
            let mut file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .expect("open for appending");
            file.write_all(bytes).expect("append");
        }
    }

    /// Polls a reader until it has nothing new, returning what it read.
    fn poll(reader: &mut ShardReader) -> Result<Vec<ExpectedLine>, IngestError> {
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line()? {
            lines.push((line.offset, line.bytes.to_vec(), line.length));
        }
        Ok(lines)
    }

    /// The lines of `written` that are complete, with their `\n`, by a plain split.
    fn complete_lines(written: &[u8], max_line_bytes: usize) -> Vec<ExpectedLine> {
        let complete = written
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |index| index + 1);
        reference_lines(&written[..complete], max_line_bytes)
    }

    /// Writes `contents` in pieces ending at `boundaries`, and after each piece polls every
    /// following reader dry and checks that together they have returned exactly the complete
    /// data lines written so far, each by its chunk's owner, in order.
    fn check_following(
        contents: &[u8],
        boundaries: &[usize],
        has_header: bool,
        peers: usize,
        chunk_bytes: u64,
        limits: Limits,
    ) {
        let file = GrowingFile::new(b"");
        let mut readers: Vec<ShardReader> = (0..peers)
            .map(|worker| {
                ShardReader::open_with_limits(
                    &file.path,
                    worker,
                    peers,
                    chunk_bytes,
                    has_header,
                    limits,
                    true,
                )
                .expect("open the file")
            })
            .collect();
        let mut read: Vec<Vec<ExpectedLine>> = vec![Vec::new(); peers];
        let mut written = 0;
        for &boundary in boundaries.iter().chain([&contents.len()]) {
            file.append(&contents[written..boundary]);
            written = boundary;
            let mut expected = complete_lines(&contents[..written], limits.max_line_bytes);
            let header = if has_header && !expected.is_empty() {
                Some(expected.remove(0))
            } else {
                None
            };
            let header_too_long = header
                .as_ref()
                .is_some_and(|(_, _, length)| *length > limits.max_line_bytes as u64);
            for (worker, reader) in readers.iter_mut().enumerate() {
                let polled = poll(reader);
                if header_too_long {
                    assert!(
                        matches!(polled, Err(IngestError::HeaderTooLong { .. })),
                        "{polled:?}"
                    );
                    return;
                }
                read[worker].extend(polled.expect("read the growing file"));
                assert_eq!(
                    reader.header(),
                    header.as_ref().map(|(_, bytes, _)| &bytes[..])
                );
            }
            let mut union: Vec<ExpectedLine> = read.iter().flatten().cloned().collect();
            union.sort_by_key(|line| line.0);
            assert_eq!(union, expected, "after {written} bytes");
        }
        for (worker, (own, reader)) in read.iter().zip(&mut readers).enumerate() {
            assert!(own.windows(2).all(|pair| pair[0].0 < pair[1].0));
            for (offset, _, _) in own {
                assert_eq!((offset / chunk_bytes) as usize % peers, worker);
            }
            if let Some((offset, _, _)) = own.last() {
                let line_end = contents[*offset as usize..]
                    .iter()
                    .position(|byte| *byte == b'\n')
                    .map(|index| offset + index as u64 + 1);
                assert_eq!(Some(reader.position()), line_end);
                let number = contents[..*offset as usize]
                    .iter()
                    .filter(|byte| **byte == b'\n')
                    .count() as u64
                    + 1;
                assert_eq!(reader.line_number(*offset).ok(), Some(number));
            }
        }
    }

    fn growing_file() -> impl Strategy<Value = (Vec<u8>, Vec<usize>, bool)> {
        (
            file_contents(),
            prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        )
            .prop_map(|((contents, has_header), cuts)| {
                let mut boundaries: Vec<usize> = cuts
                    .iter()
                    .map(|cut| cut.index(contents.len() + 1))
                    .collect();
                boundaries.sort_unstable();
                (contents, boundaries, has_header)
            })
    }

    proptest! {
        #[test]
        fn following_readers_return_each_complete_line_once(
            (contents, boundaries, has_header) in growing_file(),
            peers in 1..=4usize,
            chunk_bytes in 1..=48u64,
        ) {
            check_following(&contents, &boundaries, has_header, peers, chunk_bytes, Limits::DEFAULT);
            check_following(&contents, &boundaries, has_header, peers, chunk_bytes, TINY);
        }
    }

    #[test]
    fn a_line_written_in_pieces_is_returned_once_whole() {
        let file = GrowingFile::new(b"");
        let mut reader = ShardReader::open_following(&file.path, 0, 1, 1024, false).expect("open");
        assert_eq!(reader.next_line().expect("poll"), None);
        file.append(b"rex,ba");
        assert_eq!(reader.next_line().expect("poll"), None);
        file.append(b"ll\r");
        assert_eq!(reader.next_line().expect("poll"), None);
        assert_eq!(reader.position(), 0);
        file.append(b"\nfi");
        let line = reader.next_line().expect("poll").expect("a complete line");
        assert_eq!((line.offset, line.bytes), (0, &b"rex,ball"[..]));
        assert_eq!(reader.next_line().expect("poll"), None);
        assert_eq!(reader.position(), 10);
        file.append(b"do\n");
        let line = reader.next_line().expect("poll").expect("a complete line");
        assert_eq!((line.offset, line.bytes), (10, &b"fido"[..]));
    }

    #[test]
    fn a_long_line_written_in_pieces_comes_back_truncated_once() {
        let file = GrowingFile::new(b"");
        let mut reader = ShardReader::open_following(&file.path, 0, 1, 1024, false).expect("open");
        let piece = vec![b'x'; MAX_LINE_BYTES / 2 + 7];
        for _ in 0..4 {
            file.append(&piece);
            assert_eq!(reader.next_line().expect("poll"), None);
        }
        file.append(b"\r\nnext\n");
        let line = reader.next_line().expect("poll").expect("the long line");
        assert!(line.truncated());
        assert_eq!(line.length, 4 * piece.len() as u64);
        let line = reader.next_line().expect("poll").expect("the next line");
        assert_eq!(line.bytes, b"next");
        assert_eq!(reader.next_line().expect("poll"), None);
    }

    #[test]
    fn a_file_that_starts_empty_gets_its_header_later() {
        let file = GrowingFile::new(b"");
        let mut readers: Vec<ShardReader> = (0..2)
            .map(|worker| {
                ShardReader::open_following(&file.path, worker, 2, 8, true).expect("open")
            })
            .collect();
        for reader in &mut readers {
            assert_eq!(reader.next_line().expect("poll"), None);
            assert_eq!(reader.header(), None);
        }
        file.append(b"dog,ti");
        for reader in &mut readers {
            assert_eq!(reader.next_line().expect("poll"), None);
            assert_eq!(reader.header(), None);
            assert_eq!(reader.position(), 0);
        }
        file.append(b"me\nrex,1\nfido,2\n");
        let mut lines = Vec::new();
        for reader in &mut readers {
            lines.extend(poll(reader).expect("poll"));
            assert_eq!(reader.header(), Some(&b"dog,time"[..]));
        }
        lines.sort();
        assert_eq!(
            lines,
            vec![(9, b"rex,1".to_vec(), 5), (15, b"fido,2".to_vec(), 6)]
        );
    }

    /// A worker whose chunks are all past the end of the file looks there and finds nothing,
    /// which must not pass for the file having been longer.
    #[test]
    fn polling_past_the_end_is_not_truncation() {
        let file = GrowingFile::new(b"");
        let mut reader = ShardReader::open_following(&file.path, 1, 2, 2, false).expect("open");
        for _ in 0..3 {
            assert_eq!(reader.next_line().expect("nothing yet"), None);
        }
        file.append(b"a\nbb\nc");
        let line = reader
            .next_line()
            .expect("poll")
            .expect("the line in chunk 1");
        assert_eq!((line.offset, line.bytes), (2, &b"bb"[..]));
        assert_eq!(reader.next_line().expect("nothing yet"), None);
    }

    #[test]
    fn a_truncated_file_stops_the_reader() {
        let file = GrowingFile::new(b"rex,1\nfido,2\n");
        let mut reader = ShardReader::open_following(&file.path, 0, 1, 1024, false).expect("open");
        assert_eq!(poll(&mut reader).expect("read").len(), 2);
        OpenOptions::new()
            .write(true)
            .open(&file.path)
            .expect("open for writing")
            .set_len(6)
            .expect("truncate");
        let error = reader.next_line().expect_err("truncation is reported");
        assert!(
            matches!(
                error,
                IngestError::Truncated {
                    seen_bytes: 13,
                    now_bytes: 6,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&file.path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("stopped"), "{message}");
        // Growing again past where it was changes nothing: nothing is read twice.
        file.append(b"rex,3\nfido,4\nrex,5\n");
        for _ in 0..3 {
            assert!(matches!(
                reader.next_line(),
                Err(IngestError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn a_file_truncated_before_it_is_read_stops_the_reader() {
        let file = GrowingFile::new(b"rex,1\nfido,2\n");
        let mut reader = ShardReader::open_following(&file.path, 0, 1, 1024, false).expect("open");
        std::fs::write(&file.path, b"").expect("truncate");
        assert!(matches!(
            reader.next_line(),
            Err(IngestError::Truncated {
                seen_bytes: 13,
                now_bytes: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_replaced_file_stops_the_reader_after_its_last_lines() {
        let file = GrowingFile::new(b"rex,1\nfido,2\n");
        let mut reader = ShardReader::open_following(&file.path, 0, 1, 1024, false).expect("open");
        let line = reader.next_line().expect("read").expect("a line");
        assert_eq!(line.bytes, b"rex,1");
        // Rotated: a new file, longer than the old one, renamed over its path.
        let rotated = file.directory.path().join("facts.csv.new");
        std::fs::write(
            &rotated,
            b"a longer file that is not the one being followed\n",
        )
        .expect("write the new file");
        std::fs::rename(&rotated, &file.path).expect("rename over the followed file");
        // The file that was opened is still read to its end.
        let line = reader.next_line().expect("read").expect("a line");
        assert_eq!(line.bytes, b"fido,2");
        let error = reader.next_line().expect_err("replacement is reported");
        assert!(matches!(error, IngestError::Replaced { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(&file.path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("stopped"), "{message}");
        for _ in 0..3 {
            assert!(matches!(
                reader.next_line(),
                Err(IngestError::Replaced { .. })
            ));
        }
    }

    #[test]
    fn a_removed_file_stops_the_reader() {
        let file = GrowingFile::new(b"rex,1\n");
        let mut reader = ShardReader::open_following(&file.path, 0, 1, 1024, false).expect("open");
        assert_eq!(poll(&mut reader).expect("read").len(), 1);
        std::fs::remove_file(&file.path).expect("remove");
        assert!(matches!(
            reader.next_line(),
            Err(IngestError::Replaced { .. })
        ));
    }

    #[test]
    fn a_file_that_is_not_followed_keeps_its_length_at_open() {
        let file = GrowingFile::new(b"rex,1\nfido");
        let mut reader = ShardReader::open(&file.path, 0, 1, 1024, false).expect("open");
        file.append(b",2\nlater,3\n");
        let lines = poll(&mut reader).expect("read");
        assert_eq!(
            lines,
            vec![(0, b"rex,1".to_vec(), 5), (6, b"fido".to_vec(), 4)]
        );
    }

    /// [`every_kind`] for JSON Lines, with an RFC 3339 time as well.
    fn every_json_kind() -> SourcePlan {
        let mut source = every_kind(Format::JsonLines);
        source.fields.push(field(
            "when",
            FieldKind::Time {
                unit: TimeUnit::Rfc3339,
            },
            false,
        ));
        source
    }

    /// A JSON string holding `text`.
    fn json_string(text: &str) -> String {
        serde_json::to_string(text).expect("a string is JSON")
    }

    /// An RFC 3339 time for `seconds` since 1970, with a fraction of a second when asked.
    fn rfc3339(seconds: u64, with_fraction: bool) -> String {
        let moment = time::OffsetDateTime::from_unix_timestamp(seconds as i64)
            .expect("a time before the year 10000");
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}Z",
            moment.year(),
            u8::from(moment.month()),
            moment.day(),
            moment.hour(),
            moment.minute(),
            moment.second(),
            if with_fraction { ".25" } else { "" }
        )
    }

    /// One cell of [`cells`] as a JSON value (`None`: the key is left out) and the value it
    /// should read as. `style` picks among the ways to write it.
    fn json_cell(cell: &Cell, style: u8) -> (Option<String>, Value) {
        let in_string = style % 2 == 1;
        match cell {
            Cell::Missing => (
                [None, Some("null".to_string()), Some("\"\"".to_string())][usize::from(style % 3)]
                    .clone(),
                Value::Missing,
            ),
            Cell::Int(int) if in_string => (Some(format!("\" {int}\"")), Value::Int(*int)),
            Cell::Int(int) => (Some(int.to_string()), Value::Int(*int)),
            Cell::Real(real, scientific) => {
                let text = if *scientific {
                    format!("{real:e}")
                } else {
                    format!("{real}")
                };
                if in_string {
                    (Some(json_string(&text)), Value::Real(Real(*real)))
                } else {
                    // What serde_json reads the number as, which can differ from `real` in
                    // the last bit.
                    let read: f64 = serde_json::from_str(&text).expect("a JSON number");
                    (Some(text), Value::Real(Real(read)))
                }
            }
            Cell::Text(text, _) => (Some(json_string(text)), text_value(text)),
            Cell::List(items, _) => {
                let symbols: Vec<Symbol> = items
                    .iter()
                    .map(|item| item.as_bytes().trim_ascii())
                    .filter(|item| !item.is_empty())
                    .map(symbol)
                    .collect();
                let value = if symbols.is_empty() {
                    Value::Missing
                } else {
                    Value::List(symbols)
                };
                let written = if in_string {
                    json_string(&items.join("|"))
                } else {
                    serde_json::to_string(items).expect("strings are JSON")
                };
                (Some(written), value)
            }
            Cell::Seconds(seconds) if in_string => {
                (Some(format!("\"{seconds}\"")), Value::Time(*seconds))
            }
            Cell::Seconds(seconds) => (Some(seconds.to_string()), Value::Time(*seconds)),
            Cell::Milliseconds(milliseconds) => {
                let written = if in_string {
                    format!("\"{milliseconds}\"")
                } else {
                    milliseconds.to_string()
                };
                (Some(written), Value::Time(milliseconds / 1000))
            }
        }
    }

    /// A JSON value of any shape, for keys the schema does not read.
    fn any_json() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|value| value.to_string()),
            any::<i64>().prop_map(|value| value.to_string()),
            "[a-z \"\\\\é]{0,6}".prop_map(|text| json_string(&text)),
            Just("[1, \"two\", [3], {\"four\": null}]".to_string()),
            Just("{\"nested\": {\"deep\": [true, false, 1.5e3]}}".to_string()),
        ]
    }

    /// A JSON Lines line for a random row of [`every_json_kind`], with extra keys, in random
    /// key order and spacing, and the row it should read as.
    fn json_rows() -> impl Strategy<Value = (String, Row)> {
        (
            cells(),
            prop::option::weighted(0.8, (0..253_402_300_800u64, any::<bool>())),
            prop::collection::vec(any::<u8>(), 7),
            prop::collection::vec(("extra_[a-z]{0,4}", any_json()), 0..4),
            prop::collection::vec(any::<u32>(), 11),
            any::<bool>(),
        )
            .prop_map(|(cells, when, styles, extras, order, spaced)| {
                let names = ["count", "score", "dog", "tags", "time", "time_ms"];
                let mut entries = Vec::new();
                let mut row = Vec::new();
                for ((name, cell), style) in names.iter().zip(&cells).zip(&styles) {
                    let (written, value) = json_cell(cell, *style);
                    if let Some(written) = written {
                        entries.push(format!("\"{name}\":{written}"));
                    }
                    row.push(value);
                }
                match when {
                    Some((seconds, with_fraction)) => {
                        let text = rfc3339(seconds, with_fraction);
                        entries.push(format!("\"when\":{}", json_string(&text)));
                        row.push(Value::Time(seconds));
                    }
                    None if styles[6] % 2 == 0 => row.push(Value::Missing),
                    None => {
                        entries.push("\"when\":\"  \"".to_string());
                        row.push(Value::Missing);
                    }
                }
                entries.extend(
                    extras
                        .into_iter()
                        .map(|(name, value)| format!("\"{name}\":{value}")),
                );
                let mut keyed: Vec<(u32, String)> = order.into_iter().zip(entries).collect();
                keyed.sort();
                let separator = if spaced { " , " } else { "," };
                let body: Vec<String> = keyed.into_iter().map(|(_, entry)| entry).collect();
                (format!("{{{}}}", body.join(separator)), row)
            })
    }

    proptest! {
        #[test]
        fn written_json_rows_parse_back((line, row) in json_rows()) {
            let mut scratch = LineScratch::new();
            prop_assert_eq!(parse_line(line.as_bytes(), &every_json_kind(), &mut scratch), Ok(row), "{}", line);
        }

        #[test]
        fn json_parsing_never_panics(
            bytes in prop::collection::vec(
                prop_oneof![any::<u8>(), prop::sample::select(b"{}[]:,\"\\ 0123456789.-eEtrufalsn|".to_vec())],
                0..80,
            ),
        ) {
            if let Err(reject) = parse_line(&bytes, &every_json_kind(), &mut LineScratch::new()) {
                let _ = reject.to_string();
            }
        }

        #[test]
        fn mutated_json_lines_never_panic(
            (line, _) in json_rows(),
            mutations in prop::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(b"{}[]:,\"\\ 0-.e\xff\n".to_vec()), 0..3u8),
                1..6,
            ),
        ) {
            let mut bytes = line.into_bytes();
            for (at, byte, how) in mutations {
                let at = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => bytes[at] = byte,
                    _ if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => bytes.push(byte),
                }
            }
            if let Err(reject) = parse_line(&bytes, &every_json_kind(), &mut LineScratch::new()) {
                let _ = reject.to_string();
            }
        }
    }

    fn parse_json(line: &str) -> Result<Row, Reject> {
        parse(line.as_bytes(), &every_json_kind())
    }

    /// The message of a JSON line's reject.
    fn json_reject(line: &str) -> String {
        match parse_json(line) {
            Ok(row) => panic!("{line} parsed as {row:?}"),
            Err(reject) => reject.to_string(),
        }
    }

    #[test]
    fn a_json_line_parses_into_typed_values() {
        let row = parse_json(
            r#"{"user": {"id": 9}, "time_ms": 1767225600999, "dog": "r\u00e9x", "count": 42,
                "score": 0.5, "tags": [" ball ", "", "park"], "time": "1767225600",
                "when": "2026-01-01T01:00:00+01:00", "extra": [1, 2]}"#
                .replace('\n', "")
                .as_str(),
        );
        assert_eq!(
            row,
            Ok(vec![
                Value::Int(42),
                Value::Real(Real(0.5)),
                Value::Text(symbol("réx".as_bytes())),
                Value::List(vec![symbol(b"ball"), symbol(b"park")]),
                Value::Time(1_767_225_600),
                Value::Time(1_767_225_600),
                Value::Time(1_767_225_600),
            ])
        );
        // A byte order mark, escaped keys, and strings for every kind.
        let row = parse_json(
            "\u{feff}{\"c\\u006funt\": \" 7 \", \"score\": \"1e3\", \"tags\": \"a| b |\", \
             \"time_ms\": \"1500\"}",
        );
        assert_eq!(
            row,
            Ok(vec![
                Value::Int(7),
                Value::Real(Real(1000.0)),
                Value::Missing,
                Value::List(vec![symbol(b"a"), symbol(b"b")]),
                Value::Missing,
                Value::Time(1),
                Value::Missing,
            ])
        );
    }

    #[test]
    fn json_numbers_read_as_their_field_kinds() {
        let row = parse_json(r#"{"count": 1e3, "score": -7, "time": 12.0, "time_ms": 2000.0}"#)
            .expect("whole numbers in any notation");
        assert_eq!(
            &row[..6],
            &[
                Value::Int(1000),
                Value::Real(Real(-7.0)),
                Value::Missing,
                Value::Missing,
                Value::Time(12),
                Value::Time(2),
            ]
        );
        // A number or boolean in a string field is its text, so that 196 keys as "196" and as
        // the integer 196 do.
        for (json, text) in [
            ("196", "196"),
            ("-3", "-3"),
            ("0.5", "0.5"),
            ("true", "true"),
            ("false", "false"),
        ] {
            let row = parse_json(&format!("{{\"dog\": {json}}}")).expect("a string field");
            assert_eq!(row[2], Value::Text(symbol(text.as_bytes())), "{json}");
        }
        let row = parse_json(r#"{"dog": 196}"#).expect("a string field");
        assert_eq!(row[2].symbol(), Value::Int(196).symbol());
        assert_eq!(
            parse_json(r#"{"count": -9223372036854775808}"#).map(|row| row[0].clone()),
            Ok(Value::Int(i64::MIN))
        );
    }

    #[test]
    fn absent_null_and_empty_json_fields_are_missing_unless_required() {
        assert_eq!(
            parse_json(r#"{"dog": null, "tags": [], "when": " ", "count": "", "other": 1}"#),
            Ok(vec![Value::Missing; 7])
        );
        assert_eq!(parse_json("{}"), Ok(vec![Value::Missing; 7]));
        let required = source(
            Format::JsonLines,
            vec![
                field("dog", FieldKind::Text, true),
                field("tags", FieldKind::List { separator: b'|' }, true),
            ],
        );
        for (line, field) in [
            (r#"{"tags": ["a"]}"#, "dog"),
            (r#"{"dog": null, "tags": ["a"]}"#, "dog"),
            (r#"{"dog": "  ", "tags": ["a"]}"#, "dog"),
            (r#"{"dog": "rex", "tags": ["", " "]}"#, "tags"),
            (r#"{"dog": "rex", "tags": "||"}"#, "tags"),
        ] {
            let reject = parse(line.as_bytes(), &required).expect_err(line);
            assert_eq!(
                reject.to_string(),
                format!("field `{field}` is required but empty"),
                "{line}"
            );
        }
    }

    #[test]
    fn a_json_key_given_twice_counts_as_its_last_value() {
        let row = parse_json(r#"{"count": 1, "count": null, "dog": "a", "dog": "b"}"#);
        assert_eq!(
            row.map(|row| (row[0].clone(), row[2].clone())),
            Ok((Value::Missing, Value::Text(symbol(b"b"))))
        );
        assert!(parse_json(r#"{"count": "x", "count": 1}"#).is_err());
    }

    #[test]
    fn lines_that_are_not_json_objects_are_rejected() {
        assert_eq!(
            json_reject(r#"{"count": 1, "dog" "rex"}"#),
            "invalid JSON at column 20: expected `:`"
        );
        assert_eq!(
            json_reject(r#"{"count": 1 "dog": "rex"}"#),
            "invalid JSON at column 13: expected `,` or `}`"
        );
        assert_eq!(
            json_reject(r#"{"count": 1} {"count": 2}"#),
            "invalid JSON at column 14: trailing characters"
        );
        assert_eq!(
            json_reject(""),
            "invalid JSON at column 0: EOF while parsing a value"
        );
        assert_eq!(
            json_reject(r#"{"count": 1, "#),
            "invalid JSON at column 13: EOF while parsing a value"
        );
        // A line that is not JSON says so before any field is read.
        assert_eq!(
            json_reject(r#"{"count": "x", "dog": tru}"#),
            "invalid JSON at column 26: expected ident"
        );
        // Columns count from the line's start, byte order mark included.
        assert_eq!(
            json_reject("\u{feff}{,}"),
            "invalid JSON at column 5: key must be a string"
        );
        for (line, found) in [
            ("[1, 2]", "a JSON array"),
            (r#""rex""#, "a JSON string"),
            ("42", "a JSON number"),
            ("-4.5", "a JSON number"),
            ("null", "null"),
            (" true ", "a JSON boolean"),
        ] {
            assert_eq!(
                json_reject(line),
                format!("expected a JSON object, found {found}"),
                "{line}"
            );
        }
        let reject = parse(b"{\"dog\": \"r\xffx\"}", &every_json_kind()).expect_err("not UTF-8");
        assert_eq!(reject, Reject::InvalidUtf8 { byte: 10 });
        let reject = parse(b"{\"dog\":\n\"rex\"}", &every_json_kind()).expect_err("two lines");
        assert_eq!(reject, Reject::LineBreak { byte: 7 });
    }

    #[test]
    fn json_values_of_the_wrong_type_are_rejected() {
        for (line, message) in [
            (
                r#"{"count": [1]}"#,
                "field `count`: expected an integer, found a JSON array",
            ),
            (
                r#"{"count": true}"#,
                "field `count`: expected an integer, found a JSON boolean",
            ),
            (
                r#"{"score": {"value": 1}}"#,
                "field `score`: expected a real number, found a JSON object",
            ),
            (
                r#"{"dog": {"name": "rex"}}"#,
                "field `dog`: expected a string, number or boolean, found a JSON object",
            ),
            (
                r#"{"dog": ["rex"]}"#,
                "field `dog`: expected a string, number or boolean, found a JSON array",
            ),
            (
                r#"{"tags": 5}"#,
                "field `tags`: expected a list of strings, found a JSON number",
            ),
            (
                r#"{"tags": ["a", 5, "b"]}"#,
                "field `tags`: expected a list of strings, found a JSON array holding a number",
            ),
            (
                r#"{"tags": ["a", null]}"#,
                "field `tags`: expected a list of strings, found a JSON array holding null",
            ),
            (
                r#"{"tags": [["a"]]}"#,
                "field `tags`: expected a list of strings, found a JSON array holding an array",
            ),
            (
                r#"{"time": false}"#,
                "field `time`: expected a timestamp in seconds, found a JSON boolean",
            ),
            (
                r#"{"when": 1767225600}"#,
                "field `when`: expected an RFC 3339 time in a string, found a JSON number",
            ),
        ] {
            assert_eq!(json_reject(line), message, "{line}");
        }
    }

    #[test]
    fn json_numbers_and_strings_are_checked() {
        for (line, message) in [
            (
                r#"{"count": 1.5}"#,
                "field `count`: cannot read \"1.5\" as an integer",
            ),
            (
                r#"{"count": 9223372036854775808}"#,
                "field `count`: cannot read \"9223372036854775808\" as an integer",
            ),
            (
                r#"{"count": 1e19}"#,
                "field `count`: cannot read \"1e+19\" as an integer",
            ),
            (
                r#"{"time": -1}"#,
                "field `time`: cannot read \"-1\" as a whole, non-negative timestamp in seconds",
            ),
            (
                r#"{"time_ms": 0.5}"#,
                "field `time_ms`: cannot read \"0.5\" as a whole, non-negative timestamp in \
                 milliseconds",
            ),
            (
                r#"{"time": "12ab"}"#,
                "field `time`: cannot read \"12ab\" as a timestamp in seconds",
            ),
            (
                r#"{"count": "1.0"}"#,
                "field `count`: cannot read \"1.0\" as an integer",
            ),
            (
                r#"{"score": "NaN"}"#,
                "field `score`: cannot read \"NaN\" as a finite real number",
            ),
            (
                r#"{"when": "2026-01-01"}"#,
                "field `when`: cannot read \"2026-01-01\" as an RFC 3339 time at or after 1970",
            ),
            (
                r#"{"when": "1969-12-31T23:59:59Z"}"#,
                "field `when`: cannot read \"1969-12-31T23:59:59Z\" as an RFC 3339 time at or \
                 after 1970",
            ),
        ] {
            assert_eq!(json_reject(line), message, "{line}");
        }
        // serde_json refuses a number no double can hold, as not JSON it can read.
        assert_eq!(
            json_reject(r#"{"score": 1e400}"#),
            "invalid JSON at column 15: number out of range"
        );
        // The first unreadable field is the one named.
        assert_eq!(
            json_reject(r#"{"time": -1, "count": 1.5}"#),
            "field `time`: cannot read \"-1\" as a whole, non-negative timestamp in seconds"
        );
    }
}
