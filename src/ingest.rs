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

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use dataflows::fact::{Real, Row, Symbol, Value};
use dataflows::hashing::symbol;
use dataflows::plan::{FieldKind, Format, SourcePlan, TimeUnit};
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
/// start of its input, so the unquoted fast path in [`split_fields`] drops it too.
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
        /// The file's length when it was opened.
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
    /// The length when opened. Reads stop here, so that a file being appended to is read as it
    /// was when opened.
    length: u64,
    /// Where the next `read` would start, or `u64::MAX` when unknown after an error.
    cursor: u64,
}

impl SourceFile {
    /// Fills `into` with the file's bytes from `offset` on.
    fn read_exact_at(&mut self, offset: u64, into: &mut [u8]) -> Result<(), IngestError> {
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
}

/// Where a [`ShardReader`] is in its walk over its chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalkState {
    /// The next line is found by entering the next chunk this worker owns.
    BetweenChunks,
    /// Lines starting before `end` are this worker's; the next one starts at the cursor.
    InChunk {
        /// The chunk's end, at most the file's length.
        end: u64,
    },
    /// No chunk of this worker's is left.
    Finished,
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
    /// Buffer for counting lines, allocated on first use since dead letters are rare.
    scan_buffer: Vec<u8>,
}

impl ShardReader {
    /// Opens `path` to read the share of worker `worker` of `peers`, in chunks of `chunk_bytes`.
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
        )
    }

    /// [`ShardReader::open`] with other buffer and read sizes.
    fn open_with_limits(
        path: &Path,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        has_header: bool,
        limits: Limits,
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
        let length = file
            .metadata()
            .map_err(|source| IngestError::Metadata {
                path: path.to_path_buf(),
                source,
            })?
            .len();
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
            scan_buffer: Vec::new(),
        };
        if has_header && length > 0 {
            let (header, truncated_length) = {
                let line = reader.read_line()?;
                (line.bytes.to_vec(), line.truncated().then_some(line.length))
            };
            if let Some(length) = truncated_length {
                return Err(IngestError::HeaderTooLong {
                    path: path.to_path_buf(),
                    length,
                });
            }
            reader.header = Some(header);
            reader.data_start = reader.cursor;
            reader.position = reader.cursor;
            reader.line_checkpoint = LineCheckpoint {
                offset: reader.cursor,
                line: 2,
            };
        }
        Ok(reader)
    }

    /// The header line without its line end, when the file was opened with a header and is not
    /// empty. It is raw: a byte order mark at the file's start is still there.
    pub fn header(&self) -> Option<&[u8]> {
        self.header.as_deref()
    }

    /// The next line of this worker's share, in file order, or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, IngestError> {
        loop {
            match self.state {
                WalkState::Finished => return Ok(None),
                WalkState::InChunk { end } if self.cursor < end => {
                    return self.read_line().map(Some);
                }
                WalkState::InChunk { .. } | WalkState::BetweenChunks => {
                    self.enter_next_chunk()?;
                }
            }
        }
    }

    /// The 1-based line number (the header, if any, is line 1) of the line starting at `offset`.
    ///
    /// It counts line ends from a checkpoint left by the previous call, so calls with increasing
    /// offsets read each byte at most once; a smaller offset than last time counts from the
    /// start of the file again.
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

    /// Moves to the next chunk this worker owns and finds its first line, or finishes.
    fn enter_next_chunk(&mut self) -> Result<(), IngestError> {
        let start = self
            .next_chunk
            .checked_mul(self.chunk_bytes)
            .filter(|start| *start < self.file.length);
        let Some(start) = start else {
            self.state = WalkState::Finished;
            return Ok(());
        };
        let end = start.saturating_add(self.chunk_bytes).min(self.file.length);
        self.next_chunk = self.next_chunk.saturating_add(self.peers);
        self.read_until = end;
        self.state = match self.first_line_start(start, end)? {
            Some(line_start) => {
                self.cursor = line_start;
                WalkState::InChunk { end }
            }
            None => WalkState::BetweenChunks,
        };
        Ok(())
    }

    /// The offset of the first data line starting in `[start, end)`, if any.
    fn first_line_start(&mut self, start: u64, end: u64) -> Result<Option<u64>, IngestError> {
        // Only the header starts before the data, so the first data line is the first line.
        if start <= self.data_start {
            return Ok((self.data_start < end).then_some(self.data_start));
        }
        // A line starts just after a line end. Looking from the byte before the chunk tells
        // whether the chunk starts with a whole line; a line end at `end - 1` or later starts a
        // line in the next chunk, which is another worker's.
        let mut scan = start - 1;
        let scan_end = end - 1;
        while scan < scan_end {
            if (scan < self.buffer_start || scan >= self.buffer_end()) && self.fill(scan)? == 0 {
                return Ok(None);
            }
            let from = (scan - self.buffer_start) as usize;
            let to = (scan_end.min(self.buffer_end()) - self.buffer_start) as usize;
            if let Some(index) = memchr(b'\n', &self.buffer[from..to]) {
                return Ok(Some(scan + index as u64 + 1));
            }
            scan += (to - from) as u64;
        }
        Ok(None)
    }

    /// Keeps the buffered bytes from `keep_from` on (all of them if `keep_from` is not
    /// buffered, which starts the buffer afresh there) and reads more after them. Returns how
    /// many bytes were read: 0 only at the end of the file.
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
        let remaining = self.file.length.saturating_sub(read_from);
        let wanted = self
            .read_until
            .saturating_sub(read_from)
            .saturating_add(self.limits.tail_read_bytes as u64);
        let space = (self.buffer.len() - self.buffer_filled) as u64;
        let amount = remaining.min(wanted).min(space) as usize;
        if amount > 0 {
            let filled = self.buffer_filled;
            self.file
                .read_exact_at(read_from, &mut self.buffer[filled..filled + amount])?;
            self.buffer_filled += amount;
        }
        Ok(amount)
    }

    /// Reads the line starting at the cursor, which is a line start before the end of the file.
    fn read_line(&mut self) -> Result<Line<'_>, IngestError> {
        let line_start = self.cursor;
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
                    return Ok(self.finish_line(first, raw_length, next));
                }
                searched = self.buffer_filled - first;
                if self.buffer_end() >= self.file.length {
                    // The last line of a file needs no line end.
                    return Ok(self.finish_line(first, searched, self.file.length));
                }
                if searched >= self.limits.max_line_bytes + 2 {
                    return self.skip_long_line(first, searched);
                }
            }
            if self.fill(line_start)? == 0 {
                // Only at the end of the file, which the check above catches; end the line
                // rather than spin if the buffer is somehow full.
                let available = self.buffer_filled;
                let next = self.buffer_end();
                return Ok(self.finish_line(0, available, next));
            }
        }
    }

    /// Returns the buffered line at `first` of `raw_length` bytes (`\r` included, `\n` not), and
    /// moves the cursor to `next`.
    fn finish_line(&mut self, first: usize, raw_length: usize, next: u64) -> Line<'_> {
        let raw = &self.buffer[first..first + raw_length];
        let length = if raw.last() == Some(&b'\r') {
            raw_length - 1
        } else {
            raw_length
        };
        self.cursor = next;
        self.position = next;
        Line {
            offset: self.buffer_start + first as u64,
            bytes: &self.buffer[first..first + length.min(self.limits.max_line_bytes)],
            length: length as u64,
        }
    }

    /// Returns the start of a line too long to return whole, after reading on to its end
    /// through the room left after that start, so that the rest is never held in memory.
    /// `searched` bytes from `first` on are buffered and hold no `\n`.
    fn skip_long_line(&mut self, first: usize, searched: usize) -> Result<Line<'_>, IngestError> {
        let line_start = self.buffer_start + first as u64;
        let kept = self.limits.max_line_bytes;
        let mut previous_byte = self.buffer[first + searched - 1];
        // Keep the line's first bytes at the buffer's start: they are what is returned, and
        // still true file bytes for later chunks that begin inside them.
        self.buffer.copy_within(first..first + kept, 0);
        self.buffer_start = line_start;
        self.buffer_filled = kept;
        let mut scanned_to = line_start + searched as u64;
        let (line_end, next) = loop {
            if scanned_to >= self.file.length {
                break (self.file.length, self.file.length);
            }
            let amount = (self.file.length - scanned_to).min((self.buffer.len() - kept) as u64);
            let window = &mut self.buffer[kept..kept + amount as usize];
            self.file.read_exact_at(scanned_to, window)?;
            if let Some(index) = memchr(b'\n', window) {
                if index > 0 {
                    previous_byte = window[index - 1];
                }
                let newline = scanned_to + index as u64;
                break (newline, newline + 1);
            }
            previous_byte = window[window.len() - 1];
            scanned_to += amount;
        };
        let mut length = line_end - line_start;
        if previous_byte == b'\r' {
            length -= 1;
        }
        self.cursor = next;
        self.position = next;
        Ok(Line {
            offset: line_start,
            bytes: &self.buffer[..kept],
            length,
        })
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
/// Fields are split with csv-core for the source's format (RFC 4180 quotes for CSV, no quoting
/// for TSV) and trimmed of ASCII whitespace; an empty field is [`Value::Missing`] unless the
/// field is required. A line that was truncated by the reader should be dead-lettered by the
/// caller rather than passed here, but any bytes at all are safe to pass.
pub fn parse_line(
    bytes: &[u8],
    source: &SourcePlan,
    scratch: &mut LineScratch,
) -> Result<Row, Reject> {
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
        // Empty text, and a list of only empty items, are missing.
        let value = if field_text.is_empty() {
            Value::Missing
        } else {
            parse_field(field_text, &field.kind).map_err(|expected| Reject::Unreadable {
                field: field.name.clone(),
                text: excerpt(field_text),
                expected,
            })?
        };
        if field.required && matches!(value, Value::Missing) {
            return Err(Reject::RequiredEmpty {
                field: field.name.clone(),
            });
        }
        row.push(value);
    }
    Ok(row)
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
    let delimiter = format.delimiter();
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
        .delimiter(format.delimiter())
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    use dataflows::plan::FieldPlan;

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
            format,
            header: false,
            fields,
            time_field: 0,
            lateness_secs: 0,
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
}
