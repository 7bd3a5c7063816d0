//! Shard reading: one worker's share of a source file, line by line, through one reused
//! buffer, including files that are still being appended to.
//!
//! This is the first half of collection's hot path, so it does not allocate per line:
//! [`ShardReader`] hands out slices of its buffer. The second half, parsing a line into a row,
//! is [`crate::collect::row::parse_line`].
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

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use memchr::{memchr, memchr_iter};

/// The longest line returned whole. A longer line comes back truncated to this many bytes, with
/// its real length, so that one runaway line cannot take a worker's memory with it.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How much is read past a chunk's end at a time to finish the chunk's last line: a few typical
/// lines, so that the next chunk, which is another worker's, is barely touched.
const TAIL_READ_BYTES: usize = 4 << 10;

/// How much is read at a time while skipping the rest of an over-long line or counting lines.
const SCAN_READ_BYTES: usize = 64 << 10;

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

    /// Moves the reader on to `position`, a line start (or the end of the file) that an
    /// earlier reader of the same share of the same file returned as its
    /// [`ShardReader::position`]: the next line returned is the one starting there, if this
    /// worker's chunk holds it, else the first line of the next chunk this worker owns. A
    /// position before the data (nothing read yet) leaves the reader where it is.
    pub fn resume_at(&mut self, position: u64) {
        if position <= self.data_start || matches!(self.state, WalkState::AwaitingHeader) {
            return;
        }
        let chunk = position / self.chunk_bytes;
        let worker = self.next_chunk % self.peers;
        self.position = position;
        self.cursor = position;
        if chunk % self.peers == worker {
            let full_end = chunk.saturating_add(1).saturating_mul(self.chunk_bytes);
            let end = if self.following.is_some() {
                full_end
            } else {
                full_end.min(self.file.length)
            };
            self.next_chunk = chunk.saturating_add(self.peers);
            self.read_until = end;
            self.state = WalkState::InChunk { end };
        } else {
            // the next chunk of this worker's after the one holding `position`
            let ahead = (worker + self.peers - chunk % self.peers) % self.peers;
            self.next_chunk = chunk.saturating_add(ahead);
            self.state = WalkState::BetweenChunks;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    use std::fs::OpenOptions;

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
}
