//! A worker's data path: set up, build the graph, read with backpressure, end the reading,
//! drain the graph, and (worker 0) write the summary.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataflows::checkpoint::{Checkpointing, WorkerState};
use dataflows::fact::Time;
use dataflows::learn::train::EndOfReading;
use dataflows::plan::Plan;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

use crate::collect::queries::{ProbeQuery, Queries};
use crate::collect::read::ReaderState;
use crate::collect::read::{Item, Next, Reader};
use crate::runtime::agree::{AgreedEnd, agree, agree_on_end};
use crate::runtime::checkpoint::{Checkpoint, CheckpointStore, WorkerCheckpoint};
use crate::runtime::feed::{Feeder, ask_live_queries};
use crate::runtime::graph::{self, Graph, Heard, Inputs};
use crate::runtime::leader::{Leader, ReadingEnd};
use crate::runtime::output::DeadLetter;
use crate::runtime::progress::ProgressLine;
use crate::runtime::summary::Summary;
use crate::runtime::{LiveQueries, LiveQuery, RunError, RunOptions};
use crate::spec::Spec;

/// What every worker of a process shares.
pub struct Job {
    spec: Spec,
    /// How to run.
    pub options: RunOptions,
    /// Process 0's outputs and queries, taken by worker 0.
    leader: Mutex<Option<(Leader, Queries)>>,
    /// Live queries, taken by worker 0.
    live: Mutex<Option<LiveQueries>>,
    /// Workers step the graph after reading this many lines: often enough for live queries
    /// to be answered promptly when there are any.
    step_lines: u32,
    /// Set by a signal: stop reading, and end cleanly.
    pub stop: Arc<AtomicBool>,
    /// The checkpoint the run goes on from.
    resume: Option<Checkpoint>,
}

impl Job {
    /// The job of a process: `leader` on process 0 only.
    pub fn new(
        spec: Spec,
        options: RunOptions,
        leader: Option<(Leader, Queries)>,
        live: Option<LiveQueries>,
        stop: Arc<AtomicBool>,
        resume: Option<Checkpoint>,
    ) -> Self {
        Job {
            resume,
            spec,
            options,
            leader: Mutex::new(leader),
            step_lines: if live.is_some() { 256 } else { 4096 },
            live: Mutex::new(live),
            stop,
        }
    }
}

/// Runs every worker of this process, and returns worker 0's summary (on process 0).
pub fn execute(config: timely::Config, job: &Arc<Job>) -> Result<Option<Summary>, RunError> {
    // for a cluster: join the other processes, and watch them while the workers run
    let communication =
        crate::cluster::communication(config.communication, job.options.cluster, &job.stop)?;
    let watch = communication.watch;
    let guards = timely::execute::execute_from(
        communication.builders,
        communication.guard,
        config.worker,
        {
            let job = Arc::clone(job);
            move |worker| worker_main(&job, worker)
        },
    )
    .map_err(RunError::Cluster)?;
    let mut summary = None;
    let results = guards.join();
    // every worker is done: the peers may close without alarm (after a failure here, the
    // watch stops without a goodbye, and the peers report this process lost)
    if results.iter().all(|result| matches!(result, Ok(Ok(_)))) {
        if let Some(watch) = watch {
            watch.finish();
        }
    } else {
        drop(watch);
    }
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(Ok(Some(report))) => summary = Some(report),
            Ok(Ok(None)) => {}
            Ok(Err(error)) => return Err(error),
            Err(panic) => {
                return Err(RunError::Worker {
                    worker: index,
                    message: panic,
                });
            }
        }
    }
    Ok(summary)
}

/// How reading ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// The input ran out.
    Input,
    /// A signal asked for a stop.
    Stop,
}

/// One worker's run.
fn worker_main(job: &Job, worker: &mut Worker) -> Result<Option<Summary>, RunError> {
    let started = Instant::now();
    let plan = Rc::new(job.spec.plan.clone());
    let index = worker.index();

    // set up: worker 0 owns the outputs, the queries and the live queries
    let share = take_share(job, index);
    // continue the version numbering of an existing snapshot store
    let next_version = share
        .leader
        .as_ref()
        .map_or(0, |leader| leader.next_version);
    // and whether any process serves: then every worker builds the serving feed
    let serves = u64::from(job.options.serving.is_some() || job.options.serving_feed.is_some());
    // and that every process resumes from the same cut, or none does
    let resumed_cut = job
        .resume
        .as_ref()
        .map_or(0, |checkpoint| checkpoint.cut + 1);
    let agreed = agree(
        worker,
        vec![next_version, serves, resumed_cut, u64::MAX - resumed_cut],
    );
    if agreed[2] != u64::MAX - agreed[3] {
        return Err(RunError::Checkpoint(format!(
            "the processes do not resume from the same checkpoint (process of worker {index} \
             {}): give every process the same --out, or start over with --fresh",
            match &job.resume {
                Some(checkpoint) => format!("has one at cut {}", checkpoint.cut),
                None => "has none".to_owned(),
            }
        )));
    }
    let first_version = agreed[0].max(1);
    let serve_features = agreed[1] == 1;
    let settings = dataflows::Settings { first_version };
    let leader = share.leader.map(|leader| Rc::new(RefCell::new(leader)));
    let resumed = match &job.resume {
        Some(checkpoint) => Some(resumed_share(checkpoint, index, worker.peers())?),
        None => None,
    };
    let checkpointing = Checkpointing::new(
        job.options.checkpoints.enabled(),
        resumed.as_ref().map(|share| share.state.clone()),
    );

    // build the graph
    let Graph {
        inputs,
        probe,
        learning,
        heard,
    } = graph::build(
        worker,
        &plan,
        settings,
        &checkpointing,
        &job.options,
        serve_features,
        &leader,
    );

    // read this worker's share of every file, merged by event time
    let reader = match &resumed {
        Some(share) => Reader::resume(
            &plan,
            &share.readers,
            &share.known,
            index,
            worker.peers(),
            job.options.chunk_bytes,
            job.options.follow,
        ),
        None => Reader::open(
            &plan,
            index,
            worker.peers(),
            job.options.chunk_bytes,
            job.options.follow,
        )
        .map_err(|(source, path, error)| (source, path, error.to_string())),
    }
    .map_err(|(source_name, path, reason)| RunError::Source {
        source_name,
        path,
        reason,
    })?;
    let mut feeder = Feeder::new(&plan, share.queries);
    let mut inputs = inputs;
    if let Some(cut) = checkpointing.resumed_at() {
        // nothing before the cut is given again; the readers' counts are sent again
        feeder.skip_queries_before(cut);
        inputs.advance_to(cut);
        for read in reader.progress(&plan, cut) {
            inputs.progress.send(read);
        }
    }
    let checkpoints = Checkpoints::new(job, &plan, checkpointing, index == 0)?;
    let mut reading = ReadLoop {
        job,
        index,
        plan: &plan,
        leader: leader.as_deref(),
        reader,
        feeder,
        checkpoints,
        inputs,
        learning,
        heard,
        live: share.live,
        progress_line: ProgressLine::new(job.options.progress, started),
        lines_since_step: 0,
        last_rescan: Instant::now(),
        stop_sent: false,
        max_read_ahead: 0,
        reported_failures: 0,
    };
    let ending = reading.run(worker);

    // end of reading: close the inputs, and agree on the horizon with the other workers
    let (agreed, max_read_ahead, mut progress_line) = reading.end(worker, ending, index == 0);
    let end = end_time(&plan, agreed);

    // drain: the graph works through what it was given
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(100)));
        progress_line.tick(leader.as_deref(), plan.epoch(end));
    }

    // the summary, from worker 0
    let Some(leader) = leader else {
        return Ok(None);
    };
    // the graph is done, but its sinks may still hold the leader until the dataflow is dropped
    let summary = leader.borrow_mut().finish(
        &plan,
        &job.options.out,
        worker.peers(),
        started,
        ReadingEnd {
            stopped_by_signal: agreed.stopped,
            horizon: agreed.horizon,
            max_read_ahead_epochs: max_read_ahead,
        },
    )?;
    Ok(Some(summary))
}

/// A worker's share of the checkpoint resumed from.
struct ResumedShare {
    /// The graph's state, re-partitioned for this layout.
    state: WorkerState,
    /// The readings this worker goes on with: its own, or at another layout those of the
    /// workers whose index it is modulo its number of workers.
    readers: Vec<ReaderState>,
    /// Every file of every reading of the checkpoint.
    known: BTreeSet<PathBuf>,
}

fn resumed_share(
    checkpoint: &Checkpoint,
    index: usize,
    peers: usize,
) -> Result<ResumedShare, RunError> {
    let states = checkpoint
        .workers
        .iter()
        .map(|part| part.state.clone())
        .collect();
    let state = WorkerState::rescale(states, peers)
        .map_err(RunError::Checkpoint)?
        .into_iter()
        .nth(index)
        .ok_or_else(|| RunError::Checkpoint(format!("no state for worker {index}")))?;
    let readers = checkpoint
        .workers
        .iter()
        .filter(|part| part.reader.worker % peers == index)
        .map(|part| part.reader.clone())
        .collect();
    let known = checkpoint
        .workers
        .iter()
        .flat_map(|part| &part.reader.files)
        .map(|file| file.path.clone())
        .collect();
    Ok(ResumedShare {
        state,
        readers,
        known,
    })
}

/// What worker 0 takes from the job; the other workers take nothing.
struct Share {
    leader: Option<Leader>,
    queries: Vec<ProbeQuery>,
    live: Option<Receiver<LiveQuery>>,
}

fn take_share(job: &Job, index: usize) -> Share {
    if index != 0 {
        return Share {
            leader: None,
            queries: Vec::new(),
            live: None,
        };
    }
    let taken = job.leader.lock().ok().and_then(|mut leader| leader.take());
    let (mut leader, queries) = match taken {
        Some((leader, queries)) => (Some(leader), queries.queries),
        None => (None, Vec::new()),
    };
    let live = job.live.lock().ok().and_then(|mut live| live.take());
    if let (Some(leader), Some(live)) = (leader.as_mut(), live.as_ref()) {
        leader.live_answers = Some(live.answers.clone());
    }
    Share {
        leader,
        queries,
        live: live.map(|live| live.queries),
    }
}

/// The time queries without a time are asked at: the horizon after a stop, else the start of
/// the epoch after the latest time read.
fn end_time(plan: &Plan, agreed: AgreedEnd) -> Time {
    if agreed.stopped {
        agreed.horizon
    } else {
        plan.epoch_start(plan.epoch(agreed.max_time) + 1)
    }
}

/// The dead letter reporting a file that stopped being readable.
fn failure_letter(failure: &crate::collect::read::FileFailure) -> DeadLetter {
    DeadLetter {
        source: failure.source.clone(),
        file: String::new(),
        line: 0,
        offset: 0,
        reason: failure.reason.clone(),
        raw: String::new(),
    }
}

/// A worker's reading: facts and corrections into the graph in event-time order, epochs
/// closed as reading moves past them, and no further ahead than training can follow.
struct ReadLoop<'a> {
    job: &'a Job,
    /// This worker's index.
    index: usize,
    plan: &'a Plan,
    leader: Option<&'a RefCell<Leader>>,
    reader: Reader,
    feeder: Feeder,
    checkpoints: Checkpoints,
    inputs: Inputs,
    learning: ProbeHandle<Time>,
    heard: Rc<RefCell<Heard>>,
    live: Option<Receiver<LiveQuery>>,
    progress_line: ProgressLine,
    lines_since_step: u32,
    last_rescan: Instant,
    /// This worker has told the others to stop.
    stop_sent: bool,
    /// How many epochs reading was at most ahead of training.
    max_read_ahead: u64,
    /// The reader's failures already dead-lettered.
    reported_failures: usize,
}

impl ReadLoop<'_> {
    /// Reads until the input ends or a stop is heard.
    fn run(&mut self, worker: &mut Worker) -> Ending {
        loop {
            // a signal here, or a stop heard from another worker
            if self.job.stop.load(Ordering::Relaxed) && !self.stop_sent {
                self.stop_sent = true;
                self.inputs
                    .tell_others(self.reader.max_time.unwrap_or(0), true);
            }
            if self.heard.borrow().stop {
                return Ending::Stop;
            }
            let open = self.inputs.open();
            let watermark = match self.reader.next(self.plan, open) {
                Next::Item(time, item) => {
                    self.feed(time, open, item);
                    self.feeder.watermark(self.reader.max_time)
                }
                Next::Pending => self.wait(worker, open),
                Next::End => return Ending::Input,
            };
            if watermark > open {
                self.close_epochs(worker, watermark);
            }
            self.lines_since_step += 1;
            if self.lines_since_step >= self.job.step_lines {
                self.lines_since_step = 0;
                if let Some(live) = &self.live {
                    ask_live_queries(live, &mut self.inputs.queries);
                }
                worker.step();
                let epoch = self.plan.epoch(self.inputs.open());
                self.progress_line.tick(self.leader, epoch);
            }
        }
    }

    /// Gives the graph one item read at `time`, the open epoch starting at `open`.
    fn feed(&mut self, time: Time, open: Time, item: Item) {
        let inputs = &mut self.inputs;
        match item {
            // a late fact admitted comes at the open epoch's time, its event time in the data
            Item::Fact(fact) => inputs.facts.update_at(fact, time.max(open), 1),
            // a correction takes effect at its own time, or at once if that has passed
            Item::Correction(correction) => {
                inputs.corrections.update_at(correction, time.max(open), 1)
            }
            Item::Dead(letter) => inputs.dead.send(letter),
        }
    }

    /// Nothing to read now: follows the other workers' progress, and waits for more. Returns
    /// the watermark the workers' reading allows.
    fn wait(&mut self, worker: &mut Worker, open: Time) -> Time {
        self.report_failures();
        if self.last_rescan.elapsed() >= Duration::from_secs(1) {
            self.last_rescan = Instant::now();
            for (source, path, error) in self.reader.rescan(self.plan) {
                eprintln!("pooch: source `{source}`: {}: {error}", path.display());
            }
        }
        if let Some(live) = &self.live {
            ask_live_queries(live, &mut self.inputs.queries);
        }
        worker.step_or_park(Some(self.job.options.poll_interval));
        self.progress_line.tick(self.leader, self.plan.epoch(open));
        let heard_max = self.heard.borrow().max_seen;
        self.feeder
            .watermark(Some(self.reader.max_time.unwrap_or(0).max(heard_max)))
    }

    /// Dead-letters the files that stopped being readable since the last call.
    fn report_failures(&mut self) {
        for failure in &self.reader.failures[self.reported_failures..] {
            eprintln!("pooch: source `{}`: {}", failure.source, failure.reason);
            self.inputs.dead.send(failure_letter(failure));
        }
        self.reported_failures = self.reader.failures.len();
    }

    /// Closes the epochs before `watermark`, tells the other workers, and waits while
    /// training is too far behind.
    fn close_epochs(&mut self, worker: &mut Worker, watermark: Time) {
        if self.inputs.open() == 0 && self.checkpoints.enabled {
            // the first close jumps to the first data: the cuts up to it are not taken here
            self.inputs.send_part((watermark, self.index, None));
        }
        while let Some(cut) = self.next_cut(watermark) {
            self.checkpoint_at(worker, cut);
        }
        self.decline_missed_cut();
        self.feeder
            .insert_queries_before(watermark, &mut self.inputs.queries);
        self.inputs.advance_to(watermark);
        for read in self.reader.progress(self.plan, watermark) {
            self.inputs.progress.send(read);
        }
        // tell the other workers at once: one waiting for its file to grow follows this
        self.inputs
            .tell_others(self.reader.max_time.unwrap_or(0), false);
        // backpressure: do not read further ahead than training can follow (answers
        // are not waited for: they depend on queries, which worker 0 may hold open)
        let behind = watermark.saturating_sub(
            self.job
                .options
                .max_epochs_behind
                .saturating_mul(self.plan.tick_secs),
        );
        while self.learning.less_than(&behind) && !self.heard.borrow().stop {
            worker.step();
        }
        let trained = self
            .learning
            .with_frontier(|frontier| frontier.first().copied().unwrap_or(watermark));
        let ahead = self
            .plan
            .epoch(watermark)
            .saturating_sub(self.plan.epoch(trained));
        self.max_read_ahead = self.max_read_ahead.max(ahead);
        self.announce_timed_cut(watermark);
    }

    /// The next cut to checkpoint at before closing the epochs up to `watermark`, if any: the
    /// first boundary of the epoch schedule after the open epoch, or the cut worker 0
    /// announced, whichever comes first. A run checkpoints only once it has closed an epoch.
    fn next_cut(&self, watermark: Time) -> Option<Time> {
        let open = self.inputs.open();
        if open == 0 {
            return None;
        }
        let period = self
            .checkpoints
            .every_epochs
            .saturating_mul(self.plan.tick_secs);
        // the first boundary after the open epoch: every worker takes every boundary, however
        // its watermark jumps
        let scheduled = (period > 0)
            .then(|| (open / period + 1).saturating_mul(period))
            .filter(|cut| *cut <= watermark);
        let announced =
            self.heard.borrow().announced_cut.filter(|cut| {
                *cut > open && *cut > self.checkpoints.done_through && *cut <= watermark
            });
        match (scheduled, announced) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A cut worker 0 announced that this worker's input had passed when it heard of it:
    /// worker 0 is told, and does not write that checkpoint.
    fn decline_missed_cut(&mut self) {
        let announced = self.heard.borrow().announced_cut;
        if let Some(cut) = announced
            && cut > self.checkpoints.done_through
            && cut <= self.inputs.open()
        {
            self.checkpoints.done_through = cut;
            self.inputs.send_part((cut, self.index, None));
        }
    }

    /// Worker 0, once the wall-clock period has passed: announces a cut a little ahead of
    /// what any worker is known to have read.
    fn announce_timed_cut(&mut self, watermark: Time) {
        let Some(every) = self.checkpoints.every else {
            return;
        };
        if self.leader.is_none() || self.checkpoints.last.elapsed() < every {
            return;
        }
        let max_seen = self
            .reader
            .max_time
            .unwrap_or(0)
            .max(self.heard.borrow().max_seen);
        let ahead = self.feeder.watermark(Some(max_seen)).max(watermark);
        let cut = ahead.saturating_add(2 * self.feeder.tick_secs());
        self.checkpoints.last = Instant::now();
        self.inputs.announce_cut(max_seen, cut);
    }

    /// Takes this worker's part of the checkpoint at `cut`: closes the epochs before it, takes
    /// the graph's state there and the reading's, and sends them to worker 0, which (here)
    /// gathers every part and writes the checkpoint.
    fn checkpoint_at(&mut self, worker: &mut Worker, cut: Time) {
        let checkpointing = Rc::clone(&self.checkpoints.checkpointing);
        self.feeder
            .insert_queries_before(cut, &mut self.inputs.queries);
        checkpointing.request(cut);
        let reading = self.reader.state();
        if let Some(leader) = self.leader {
            leader.borrow_mut().holding = Some(cut);
        }
        self.inputs.advance_to(cut);
        for read in self.reader.progress(self.plan, cut) {
            self.inputs.progress.send(read);
        }
        self.inputs
            .tell_others(self.reader.max_time.unwrap_or(0), false);
        let copying = Instant::now();
        let state = loop {
            worker.step();
            if let Some(state) = checkpointing.take() {
                break state;
            }
        };
        let part = match reading {
            Ok(reader) => Some(WorkerCheckpoint { state, reader }),
            Err(error) => {
                eprintln!("pooch: checkpoint at {cut} not taken: {error}");
                None
            }
        };
        self.checkpoints.done_through = cut;
        self.inputs.send_part((cut, self.index, part));
        if let Some(leader) = self.leader {
            self.checkpoints
                .gather_and_write(worker, leader, &self.heard, cut, copying);
        }
    }

    /// This worker's reading is over: tells the others, and closes what it feeds, so that
    /// workers still reading are not held back while this one waits for them. Then, with the
    /// horizon agreed, asks the queries without a time (on worker 0, which holds them).
    /// Returns the agreement, how far reading ran ahead, and the progress line for the drain.
    fn end(
        mut self,
        worker: &mut Worker,
        ending: Ending,
        holds_queries: bool,
    ) -> (AgreedEnd, u64, ProgressLine) {
        let open = self.inputs.open();
        for read in self.reader.progress(self.plan, open) {
            self.inputs.progress.send(read);
        }
        self.report_failures();
        self.feeder
            .insert_queries_before(Time::MAX, &mut self.inputs.queries);
        // this worker takes no more checkpoints
        self.inputs.send_part((Time::MAX, self.index, None));
        self.checkpoints.finish();
        let stopping = ending == Ending::Stop;
        let report = EndOfReading {
            stopping,
            read_before: if stopping { open } else { Time::MAX },
            max_time: self.reader.max_time.unwrap_or(0),
        };
        let queries = self.inputs.end_reading(report);
        let mut queries = if holds_queries {
            Some(queries)
        } else {
            drop(queries);
            None
        };
        let agreed = agree_on_end(worker, report);
        if let Some(input) = queries.as_mut() {
            self.feeder
                .insert_untimed_queries(end_time(self.plan, agreed), input);
        }
        drop(queries);
        (agreed, self.max_read_ahead, self.progress_line)
    }
}

/// Where the parts of a checkpoint stand at worker 0.
enum Gathered {
    /// Every worker's part is in.
    All,
    /// Some worker declined the cut.
    Declined,
    /// Some worker has not sent its part yet.
    Waiting,
}

/// Where the parts of the checkpoint at `cut` stand, among `parts` from `peers` workers.
fn parts_at(parts: &[graph::Part], cut: Time, peers: usize) -> Gathered {
    let mut taken = vec![false; peers];
    let mut declined = vec![false; peers];
    for (at, worker, part) in parts {
        if *worker >= peers {
            continue;
        }
        match part {
            Some(_) if *at == cut => taken[*worker] = true,
            None if *at >= cut => declined[*worker] = true,
            _ => {}
        }
    }
    if (0..peers).any(|index| declined[index] && !taken[index]) {
        Gathered::Declined
    } else if taken.iter().all(|taken| *taken) {
        Gathered::All
    } else {
        Gathered::Waiting
    }
}

/// A worker's checkpointing: when, and (worker 0) gathering the parts and writing them.
struct Checkpoints {
    checkpointing: Rc<Checkpointing>,
    /// Whether checkpoints are taken at all.
    enabled: bool,
    /// A cut at every multiple of this many epochs (0: none).
    every_epochs: u64,
    /// Worker 0 announces a cut once this much time has passed since the last.
    every: Option<Duration>,
    last: Instant,
    /// The latest cut taken or declined.
    done_through: Time,
    /// Worker 0's: the store, the spec's hash, and the thread writing the last checkpoint.
    store: Option<CheckpointStore>,
    spec_hash: String,
    writer: Option<std::thread::JoinHandle<()>>,
    written: Arc<std::sync::atomic::AtomicU64>,
    abort_after: Option<u64>,
    progress: bool,
    peers_expected: usize,
}

impl Checkpoints {
    fn new(
        job: &Job,
        plan: &Plan,
        checkpointing: Rc<Checkpointing>,
        leads: bool,
    ) -> Result<Self, RunError> {
        let options = &job.options.checkpoints;
        let enabled = options.enabled();
        let store = if leads && enabled {
            Some(
                CheckpointStore::open(&job.options.out, options.retain)
                    .map_err(|error| RunError::Checkpoint(error.to_string()))?,
            )
        } else {
            None
        };
        let _ = plan;
        Ok(Checkpoints {
            enabled,
            done_through: checkpointing.resumed_at().unwrap_or(0),
            checkpointing,
            every_epochs: if enabled { options.every_epochs } else { 0 },
            every: options.every.filter(|_| enabled),
            last: Instant::now(),
            store,
            spec_hash: job.spec.hash.clone(),
            writer: None,
            written: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            abort_after: options.abort_after,
            progress: job.options.progress,
            peers_expected: 0,
        })
    }

    /// Worker 0: waits for every worker's part of the checkpoint at `cut` and for every sink
    /// to pass it, then records the output files' lengths and hands the checkpoint to a
    /// thread that writes it. A worker that declined or had stopped reading, or a stop, means
    /// no checkpoint at this cut.
    fn gather_and_write(
        &mut self,
        worker: &mut Worker,
        leader: &RefCell<Leader>,
        heard: &Rc<RefCell<Heard>>,
        cut: Time,
        copying: Instant,
    ) {
        self.peers_expected = worker.peers();

        let complete = loop {
            match parts_at(&leader.borrow().parts, cut, self.peers_expected) {
                Gathered::Declined => break false,
                Gathered::All if leader.borrow().sinks_passed(cut) => break true,
                Gathered::All | Gathered::Waiting => {}
            }
            if heard.borrow().stop {
                break false;
            }
            worker.step();
        };
        let mut leader = leader.borrow_mut();
        let mut workers: Vec<WorkerCheckpoint> = Vec::new();
        // the parts of this cut are taken, and those of earlier cuts will never be
        leader.parts.retain_mut(|(at, _, part)| {
            if *at == cut {
                workers.extend(part.take());
            }
            *at > cut
        });
        let lengths = if complete {
            match leader.files.lengths() {
                Ok(lengths) => Some(lengths),
                Err(error) => {
                    eprintln!("pooch: checkpoint at {cut} not taken: {error}");
                    None
                }
            }
        } else {
            None
        };
        let collector = leader.collector.at_cut(cut);
        let next_version = leader.collector.model_version() + 1;
        leader.release_held();
        drop(leader);
        let (Some(outputs), Some(store)) = (lengths, self.store.clone()) else {
            return;
        };
        workers.sort_by_key(|part| part.state.worker);
        let checkpoint = Checkpoint {
            spec_hash: self.spec_hash.clone(),
            cut,
            workers,
            next_version,
            outputs,
            collector,
        };
        let copied = copying.elapsed();
        self.finish();
        let written = Arc::clone(&self.written);
        let progress = self.progress;
        let write = move || {
            let started = Instant::now();
            match store.write(&checkpoint) {
                Ok(path) => {
                    written.fetch_add(1, Ordering::SeqCst);
                    if progress {
                        let bytes = std::fs::metadata(&path).map_or(0, |meta| meta.len());
                        eprintln!(
                            "[pooch] checkpoint {} at cut {cut}: {bytes} bytes, state taken in \
                             {:.3} s, written in {:.3} s",
                            path.display(),
                            copied.as_secs_f64(),
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
                Err(error) => eprintln!("pooch: checkpoint at {cut} not written: {error}"),
            }
        };
        if self.abort_after.is_some() {
            // crash tests: written at once, so that the abort lands after a known checkpoint
            write();
            if self
                .abort_after
                .is_some_and(|after| self.written.load(Ordering::SeqCst) >= after)
            {
                std::process::abort();
            }
            return;
        }
        match std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(write)
        {
            Ok(handle) => self.writer = Some(handle),
            Err(error) => eprintln!("pooch: checkpoint at {cut} not written: {error}"),
        }
    }

    /// Waits for the checkpoint being written, if any.
    fn finish(&mut self) {
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            eprintln!("pooch: the checkpoint writer panicked");
        }
    }
}
