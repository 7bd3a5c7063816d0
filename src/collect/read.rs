//! A worker's reading: its share of every source file, merged by event time into facts,
//! corrections and dead letters.
//!
//! Each file is shared among the workers in strided chunks (see [`crate::collect::shard`]), except the
//! files of a source timed by its order, which one worker reads whole so that it can count.
//! A worker merges its shares of all files by event time, ties broken by fact id, so that it
//! feeds the graph in time order and can close epochs as its input moves past them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;

use dataflows::collect::Correction;
use dataflows::fact::{Fact, SourceId, Symbol, Time, Value, key_id, position_id};
use dataflows::hashing::symbol;
use dataflows::plan::{LatePolicy, Plan, SourcePlan};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::collect::delimited::LineScratch;
use crate::collect::row::parse_line;
use crate::collect::shard::{IngestError, MAX_LINE_BYTES, ShardReader};
use crate::runtime::checkpoint::FileIdentity;
use crate::runtime::output::{DeadLetter, RAW_LIMIT, ReadProgress};

/// What a line became.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Item {
    /// A fact.
    Fact(Fact),
    /// A retraction of the fact its key names, taking effect at the time given with it.
    Correction(Correction),
    /// A line that could not be read, and why.
    Dead(DeadLetter),
}

/// What reading has to offer now.
#[derive(Debug)]
pub enum Next {
    /// The next item, with its event time (dead letters carry the time of the last fact read).
    Item(Time, Item),
    /// Nothing yet: every share that is not finished is waiting for its file to grow.
    Pending,
    /// Every share is finished.
    End,
}

/// A file that stopped being readable during the run.
#[derive(Clone, Debug)]
pub struct FileFailure {
    /// The source.
    pub source: String,
    /// Why, naming the file.
    pub reason: String,
}

/// Running counts of one source on this worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceCounts {
    /// Lines that became facts (or corrections).
    pub facts: u64,
    /// Lines dead-lettered as malformed.
    pub malformed: u64,
    /// Facts later than the lateness allows, dead-lettered.
    pub late_dropped: u64,
    /// Facts later than the lateness allows, admitted to the open epoch.
    pub late_admitted: u64,
    /// The earliest and latest event times read.
    pub time_range: Option<(Time, Time)>,
}

enum State {
    /// A fact (or correction) read and waiting its turn in the merge.
    Waiting,
    /// Nothing complete to read now; the file may grow.
    Pending,
    /// The share is finished.
    Ended,
}

struct Cursor {
    source: SourceId,
    /// The file's part of position-based fact ids.
    file_index: u32,
    /// For files found by a glob, the seed of hashed fact ids (indexes could disagree between
    /// workers that find the files at different moments).
    hashed_ids: Option<u64>,
    path: PathBuf,
    /// The share of the file this cursor reads: worker `share.0` of `share.1`.
    share: (usize, usize),
    shard: ShardReader,
    scratch: LineScratch,
    state: State,
    /// The item waiting its turn, its time, and the offset of the line it came from.
    waiting: Option<(Time, Item, u64)>,
    /// The digest of the waiting item's line.
    line_digest: u64,
}

/// This worker's share of every source, merged by event time.
pub struct Reader {
    worker: usize,
    peers: usize,
    chunk_bytes: u64,
    follow: bool,
    cursors: Vec<Cursor>,
    /// Cursors with an item waiting, by (time, id, cursor).
    heap: BinaryHeap<Reverse<(Time, u64, usize)>>,
    started: bool,
    /// Per source: counts, and for order-timed sources the next fact's time.
    counts: Vec<SourceCounts>,
    order_time: Vec<Time>,
    /// The latest event time given to the graph.
    pub max_time: Option<Time>,
    /// An order-independent digest of every fact and correction read: equal digests mean the
    /// same set was read, whatever the layout.
    pub digest: u64,
    /// Files that stopped being readable (truncated or replaced while followed).
    pub failures: Vec<FileFailure>,
    since_poll: u32,
}

impl Reader {
    /// A reader of no file yet, for `worker` of `peers`; `started` when it goes on from a
    /// checkpoint rather than from the files' starts.
    fn empty(
        plan: &Plan,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        follow: bool,
        started: bool,
    ) -> Self {
        Reader {
            worker,
            peers,
            chunk_bytes,
            follow,
            cursors: Vec::new(),
            heap: BinaryHeap::new(),
            started,
            counts: vec![SourceCounts::default(); plan.sources.len()],
            order_time: vec![0; plan.sources.len()],
            max_time: None,
            digest: 0,
            failures: Vec::new(),
            since_poll: 0,
        }
    }

    /// Opens this worker's share of every file of the plan's sources.
    pub fn open(
        plan: &Plan,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        follow: bool,
    ) -> Result<Self, (String, PathBuf, IngestError)> {
        let mut reader = Reader::empty(plan, worker, peers, chunk_bytes, follow, false);
        let mut file_index = 0u32;
        for (index, source) in plan.sources.iter().enumerate() {
            for path in &source.paths {
                let hashed = source
                    .glob
                    .as_ref()
                    .map(|_| symbol(path.to_string_lossy().as_bytes()));
                reader.add_file(plan, index as SourceId, file_index, hashed, path.clone())?;
                file_index += 1;
            }
        }
        Ok(reader)
    }

    fn add_file(
        &mut self,
        plan: &Plan,
        source: SourceId,
        file_index: u32,
        hashed_ids: Option<u64>,
        path: PathBuf,
    ) -> Result<(), (String, PathBuf, IngestError)> {
        let plan_source = &plan.sources[usize::from(source)];
        // an order-timed source is read whole by one worker, which counts its facts
        let (worker, peers) = if plan_source.time_field.is_none() {
            if usize::from(source) % self.peers != self.worker {
                return Ok(());
            }
            (0, 1)
        } else {
            (self.worker, self.peers)
        };
        let open = if self.follow {
            ShardReader::open_following
        } else {
            ShardReader::open
        };
        let shard = open(&path, worker, peers, self.chunk_bytes, plan_source.header)
            .map_err(|error| (plan_source.name.clone(), path.clone(), error))?;
        if self.worker == 0 {
            warn_on_header_mismatch(plan_source, &path, shard.header());
        }
        self.cursors.push(Cursor {
            source,
            file_index,
            hashed_ids,
            path,
            share: (worker, peers),
            shard,
            scratch: LineScratch::default(),
            state: State::Pending,
            waiting: None,
            line_digest: 0,
        });
        let cursor = self.cursors.len() - 1;
        if self.started {
            self.refill(plan, cursor);
        }
        Ok(())
    }

    /// Picks up files that have appeared since the run started and match a source's glob,
    /// in name order (following only).
    pub fn rescan(&mut self, plan: &Plan) -> Vec<(String, PathBuf, IngestError)> {
        let mut errors = Vec::new();
        for (index, source) in plan.sources.iter().enumerate() {
            let Some(pattern) = &source.glob else {
                continue;
            };
            let Ok(matches) = glob::glob(pattern) else {
                continue;
            };
            let mut found: Vec<PathBuf> = matches
                .filter_map(Result::ok)
                .filter(|path| path.is_file())
                .collect();
            found.sort();
            for path in found {
                let known = self
                    .cursors
                    .iter()
                    .any(|cursor| cursor.source == index as SourceId && cursor.path == path)
                    || plan.sources[index].paths.contains(&path);
                if known {
                    continue;
                }
                let hashed = Some(symbol(path.to_string_lossy().as_bytes()));
                if let Err(error) = self.add_file(plan, index as SourceId, 0, hashed, path) {
                    errors.push(error);
                }
            }
        }
        errors
    }

    /// The next item in event-time order (ties by fact id). A fact earlier than `open`, the
    /// start of the epoch the graph's input is in, is late: by its source's policy it is
    /// dead-lettered, or admitted with the time `open` (keeping its event time in the data).
    pub fn next(&mut self, plan: &Plan, open: Time) -> Next {
        if !self.started {
            self.started = true;
            for cursor in 0..self.cursors.len() {
                self.refill(plan, cursor);
            }
        }
        // while following, look at waiting files now and then, and whenever nothing else is left
        self.since_poll += 1;
        if self.follow && (self.heap.is_empty() || self.since_poll >= 4096) {
            self.since_poll = 0;
            for cursor in 0..self.cursors.len() {
                if matches!(self.cursors[cursor].state, State::Pending) {
                    self.refill(plan, cursor);
                }
            }
        }
        let Some(Reverse((_, _, cursor))) = self.heap.pop() else {
            let pending = self
                .cursors
                .iter()
                .any(|cursor| matches!(cursor.state, State::Pending));
            return if pending { Next::Pending } else { Next::End };
        };
        let next = self.cursors[cursor].waiting.take();
        self.cursors[cursor].state = State::Pending;
        let next = match next {
            Some((time, Item::Fact(fact), offset)) if time < open => {
                Next::Item(open, self.late(plan, cursor, fact, offset, open))
            }
            Some((time, item, _)) => Next::Item(time, item),
            None => Next::Pending,
        };
        // what is given to the graph (not merely read ahead into the merge) is counted, and
        // drives the watermark
        if let Next::Item(time, Item::Fact(_) | Item::Correction(_)) = &next {
            let counts = &mut self.counts[usize::from(self.cursors[cursor].source)];
            counts.facts += 1;
            counts.time_range = Some(counts.time_range.map_or((*time, *time), |(min, max)| {
                (min.min(*time), max.max(*time))
            }));
            self.max_time = Some(self.max_time.map_or(*time, |max| max.max(*time)));
            self.digest = self.digest.wrapping_add(self.cursors[cursor].line_digest);
        }
        self.refill(plan, cursor);
        next
    }

    /// Reads the cursor's next item into its waiting slot, or notes that it must wait or is done.
    fn refill(&mut self, plan: &Plan, index: usize) {
        let cursor = &mut self.cursors[index];
        let source = &plan.sources[usize::from(cursor.source)];
        let line = match cursor.shard.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                cursor.state = if self.follow {
                    State::Pending
                } else {
                    State::Ended
                };
                return;
            }
            Err(error) => {
                self.failures.push(FileFailure {
                    source: source.name.clone(),
                    reason: error.to_string(),
                });
                cursor.state = State::Ended;
                return;
            }
        };
        let (offset, length) = (line.offset, line.length);
        let parsed = if line.truncated() {
            Err(format!(
                "line of {length} bytes is longer than the limit of {MAX_LINE_BYTES} bytes"
            ))
        } else {
            parse_line(line.bytes, source, &mut cursor.scratch).map_err(|reject| reject.to_string())
        };
        let line_digest = xxh3_64_with_seed(line.bytes, offset);
        let raw =
            || String::from_utf8_lossy(&line.bytes[..line.bytes.len().min(RAW_LIMIT)]).into_owned();
        let counts = &mut self.counts[usize::from(cursor.source)];
        let item = match parsed.and_then(|row| {
            let time = match source.time_field {
                Some(field) => match row.get(field) {
                    Some(&Value::Time(time)) => time,
                    _ => {
                        return Err(format!(
                            "field `{}` holds no event time",
                            source.fields[field].name
                        ));
                    }
                },
                None => self.order_time[usize::from(cursor.source)],
            };
            Ok((time, row))
        }) {
            Ok((time, row)) => {
                if source.time_field.is_none() {
                    self.order_time[usize::from(cursor.source)] += 1;
                }
                let position = match cursor.hashed_ids {
                    Some(seed) => xxh3_64_with_seed(&offset.to_le_bytes(), seed),
                    None => position_id(cursor.file_index, offset),
                };
                let item = classify(plan, cursor.source, time, position, row);
                let order = match &item {
                    Item::Fact(fact) => fact.id,
                    _ => position,
                };
                cursor.waiting = Some((time, item, offset));
                cursor.line_digest = line_digest ^ u64::from(cursor.source);
                cursor.state = State::Waiting;
                self.heap.push(Reverse((time, order, index)));
                return;
            }
            Err(reason) => {
                counts.malformed += 1;
                let raw = raw();
                let line_number = cursor.shard.line_number(offset).unwrap_or(0);
                Item::Dead(DeadLetter {
                    source: source.name.clone(),
                    file: cursor.path.display().to_string(),
                    line: line_number,
                    offset,
                    reason,
                    raw,
                })
            }
        };
        // a dead line takes its turn at once, at the latest time read
        let time = self.max_time.unwrap_or(0);
        cursor.waiting = Some((time, item, offset));
        cursor.state = State::Waiting;
        self.heap.push(Reverse((time, 0, index)));
    }

    /// A fact later than its source's lateness allows, admitted or dead-lettered.
    fn late(&mut self, plan: &Plan, cursor: usize, fact: Fact, offset: u64, open: Time) -> Item {
        let source = &plan.sources[usize::from(fact.source)];
        let counts = &mut self.counts[usize::from(fact.source)];
        match source.late {
            LatePolicy::Admit => {
                counts.late_admitted += 1;
                Item::Fact(fact)
            }
            LatePolicy::Drop => {
                counts.late_dropped += 1;
                let cursor = &mut self.cursors[cursor];
                Item::Dead(DeadLetter {
                    source: source.name.clone(),
                    file: cursor.path.display().to_string(),
                    line: cursor.shard.line_number(offset).unwrap_or(0),
                    offset,
                    reason: format!(
                        "late: event time {} is before the open epoch, which starts at {open} (source `{}` allows {} s of lateness)",
                        fact.time, source.name, source.lateness_secs
                    ),
                    raw: String::new(),
                })
            }
        }
    }

    /// Where this worker's reading stands in each of its files: the offset just past the
    /// last line it read, keyed `source:file@worker/peers`.
    pub fn positions(&self, plan: &Plan) -> BTreeMap<String, u64> {
        self.cursors
            .iter()
            .map(|cursor| {
                let name = &plan.sources[usize::from(cursor.source)].name;
                // a waiting line has been read, but not given to the graph yet
                let position = cursor
                    .waiting
                    .as_ref()
                    .map_or(cursor.shard.position(), |(_, _, offset)| *offset);
                (
                    format!(
                        "{name}:{}@{}/{}",
                        cursor.path.display(),
                        self.worker,
                        self.peers
                    ),
                    position,
                )
            })
            .collect()
    }

    /// This worker's running counts, per source.
    pub fn progress(&self, plan: &Plan, open: Time) -> Vec<ReadProgress> {
        let positions = self.positions(plan);
        self.counts
            .iter()
            .enumerate()
            .map(|(source, counts)| {
                let prefix = format!("{}:", plan.sources[source].name);
                ReadProgress {
                    worker: self.worker as u32,
                    source: source as SourceId,
                    facts: counts.facts,
                    malformed: counts.malformed,
                    late_dropped: counts.late_dropped,
                    late_admitted: counts.late_admitted,
                    time_range: counts.time_range,
                    open,
                    digest: if source == 0 { self.digest } else { 0 },
                    positions: positions
                        .iter()
                        .filter(|(key, _)| key.starts_with(&prefix))
                        .map(|(key, value)| (key.clone(), *value))
                        .collect(),
                }
            })
            .collect()
    }

    /// Whether any file is still being followed.
    pub fn following(&self) -> bool {
        self.follow
            && self
                .cursors
                .iter()
                .any(|cursor| !matches!(cursor.state, State::Ended))
    }
}

/// A worker's reading as it stood at a checkpoint's cut: every file's share, where its
/// reading stood, and the line read but not yet given to the graph; the running counts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReaderState {
    /// The worker of how many that read.
    pub worker: usize,
    /// How many workers there were.
    pub peers: usize,
    /// Every file's share.
    pub files: Vec<FileState>,
    /// Per source: the running counts.
    pub counts: Vec<SourceCounts>,
    /// Per source timed by its order: the next fact's time.
    pub order_time: Vec<Time>,
    /// The latest event time given to the graph.
    pub max_time: Option<Time>,
    /// The digest of every fact and correction given to the graph.
    pub digest: u64,
}

/// One file's share at a cut.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileState {
    /// The source.
    pub source: SourceId,
    /// The file's part of position-based fact ids.
    pub file_index: u32,
    /// The seed of hashed fact ids, for files found by a glob.
    pub hashed_ids: Option<u64>,
    /// The file.
    pub path: PathBuf,
    /// The share read: worker `share.0` of `share.1`.
    pub share: (usize, usize),
    /// Just past the last line read (the waiting one included).
    pub position: u64,
    /// The file as it was at the cut.
    pub identity: FileIdentity,
    /// The item read and waiting its turn: its time, the item, its line's offset.
    pub waiting: Option<(Time, Item, u64)>,
    /// The waiting item's place among items of its time.
    pub order: u64,
    /// The digest of the waiting item's line.
    pub line_digest: u64,
    /// The share is finished (or its file failed).
    pub ended: bool,
}

impl Reader {
    /// The reading as it stands, for a checkpoint. An error names a file that cannot be
    /// identified.
    pub fn state(&self) -> Result<ReaderState, crate::files::FileError> {
        let mut heap_order: BTreeMap<usize, u64> = BTreeMap::new();
        for Reverse((_, order, cursor)) in self.heap.iter() {
            heap_order.insert(*cursor, *order);
        }
        let mut files = Vec::with_capacity(self.cursors.len());
        for (index, cursor) in self.cursors.iter().enumerate() {
            files.push(FileState {
                source: cursor.source,
                file_index: cursor.file_index,
                hashed_ids: cursor.hashed_ids,
                path: cursor.path.clone(),
                share: cursor.share,
                position: cursor.shard.position(),
                identity: FileIdentity::of(&cursor.path)?,
                waiting: cursor.waiting.clone(),
                order: heap_order.get(&index).copied().unwrap_or(0),
                line_digest: cursor.line_digest,
                ended: matches!(cursor.state, State::Ended),
            });
        }
        Ok(ReaderState {
            worker: self.worker,
            peers: self.peers,
            files,
            counts: self.counts.clone(),
            order_time: self.order_time.clone(),
            max_time: self.max_time,
            digest: self.digest,
        })
    }

    /// A reader that goes on from the readings `mine` stood at, as worker `worker` of
    /// `peers`: each file's share is read on as it was shared then (so a checkpoint of
    /// another layout is read on by the workers its states are handed to). `known` is every
    /// file of every state of the checkpoint: a file a source's glob matches that none knew
    /// is opened as new. An error names a file that was replaced or truncated since, or
    /// cannot be opened.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        plan: &Plan,
        mine: &[ReaderState],
        known: &std::collections::BTreeSet<PathBuf>,
        worker: usize,
        peers: usize,
        chunk_bytes: u64,
        follow: bool,
    ) -> Result<Self, (String, PathBuf, String)> {
        let mut reader = Reader::empty(plan, worker, peers, chunk_bytes, follow, true);
        for state in mine {
            reader.absorb(plan, state)?;
        }
        for (index, source) in plan.sources.iter().enumerate() {
            if source.glob.is_none() {
                continue;
            }
            for path in source.paths.iter().filter(|path| !known.contains(*path)) {
                let hashed = Some(symbol(path.to_string_lossy().as_bytes()));
                reader
                    .add_file(plan, index as SourceId, 0, hashed, path.clone())
                    .map_err(|(source, path, error)| (source, path, error.to_string()))?;
            }
        }
        Ok(reader)
    }

    /// Takes on the files of one reading at a cut.
    fn absorb(
        &mut self,
        plan: &Plan,
        state: &ReaderState,
    ) -> Result<(), (String, PathBuf, String)> {
        for (source, counts) in state.counts.iter().enumerate() {
            let Some(mine) = self.counts.get_mut(source) else {
                continue;
            };
            mine.facts += counts.facts;
            mine.malformed += counts.malformed;
            mine.late_dropped += counts.late_dropped;
            mine.late_admitted += counts.late_admitted;
            mine.time_range = match (mine.time_range, counts.time_range) {
                (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                (a, b) => a.or(b),
            };
        }
        for (source, time) in state.order_time.iter().enumerate() {
            if let Some(mine) = self.order_time.get_mut(source) {
                *mine = (*mine).max(*time);
            }
        }
        self.max_time = self.max_time.max(state.max_time);
        self.digest = self.digest.wrapping_add(state.digest);
        for file in &state.files {
            let name = plan
                .sources
                .get(usize::from(file.source))
                .map_or_else(String::new, |source| source.name.clone());
            if let Some(why) = file.identity.differs(&file.path) {
                return Err((name, file.path.clone(), why));
            }
            let header = plan.sources[usize::from(file.source)].header;
            let open = if self.follow {
                ShardReader::open_following
            } else {
                ShardReader::open
            };
            let (share_worker, share_peers) = file.share;
            let mut shard = open(
                &file.path,
                share_worker,
                share_peers,
                self.chunk_bytes,
                header,
            )
            .map_err(|error| (name.clone(), file.path.clone(), error.to_string()))?;
            shard.resume_at(file.position);
            let index = self.cursors.len();
            let state = if file.waiting.is_some() {
                State::Waiting
            } else if file.ended {
                State::Ended
            } else {
                State::Pending
            };
            if let Some((time, _, _)) = &file.waiting {
                self.heap.push(Reverse((*time, file.order, index)));
            }
            self.cursors.push(Cursor {
                source: file.source,
                file_index: file.file_index,
                hashed_ids: file.hashed_ids,
                path: file.path.clone(),
                share: file.share,
                shard,
                scratch: LineScratch::default(),
                state,
                waiting: file.waiting.clone(),
                line_digest: file.line_digest,
            });
            if matches!(self.cursors[index].state, State::Pending) {
                self.refill(plan, index);
            }
        }
        Ok(())
    }
}

/// Whether an `op` field asks for a retraction.
fn is_retraction(value: Option<&Value>) -> bool {
    let Some(Value::Text(op)) = value else {
        return false;
    };
    ["retract", "delete", "remove"]
        .iter()
        .any(|word| symbol(word.as_bytes()) == *op)
}

/// The key symbols of a row.
fn key_symbols(source: &SourcePlan, row: &[Value]) -> Vec<Option<Symbol>> {
    source
        .key_fields
        .iter()
        .map(|&field| row.get(field).and_then(Value::symbol))
        .collect()
}

/// What a parsed row is: a fact, or the correction of one.
fn classify(plan: &Plan, source_id: SourceId, time: Time, position: u64, row: Vec<Value>) -> Item {
    let source = &plan.sources[usize::from(source_id)];
    if let Some(target) = source.corrects {
        return Item::Correction((target, key_id(target, &key_symbols(source, &row))));
    }
    if !source.retractable() {
        return Item::Fact(Fact {
            id: position,
            source: source_id,
            time,
            row,
        });
    }
    let id = key_id(source_id, &key_symbols(source, &row));
    if is_retraction(source.op_field.and_then(|field| row.get(field))) {
        return Item::Correction((source_id, id));
    }
    Item::Fact(Fact {
        id,
        source: source_id,
        time,
        row,
    })
}

fn warn_on_header_mismatch(source: &SourcePlan, path: &std::path::Path, header: Option<&[u8]>) {
    let (Some(header), Some(delimiter)) = (header, source.format.delimiter()) else {
        return;
    };
    let expected = source
        .fields
        .iter()
        .map(|field| field.name.as_str())
        .collect::<Vec<_>>();
    let text = String::from_utf8_lossy(header);
    let found: Vec<&str> = text
        .trim_start_matches('\u{feff}')
        .split(char::from(delimiter))
        .map(str::trim)
        .collect();
    if found != expected {
        eprintln!(
            "pooch: warning: {}: the header names [{}], the spec's source `{}` names [{}]; columns are read by position",
            path.display(),
            found.join(", "),
            source.name,
            expected.join(", ")
        );
    }
}
