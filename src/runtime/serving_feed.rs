//! The serving feed: each complete epoch's feature changes, folded into the serving state
//! outside the graph (for the HTTP endpoint).

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflows::fact::{Symbol, Time};
use dataflows::fixed::Accum;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::serve::serving::ServingState;

/// A change to an aggregate's accumulator: (key, aggregate) and the change.
type Change = ((Symbol, u32), Accum);

/// The feature feed file (`pooch run --serving-feed FILE`, which `pooch cluster --http` gives
/// process 0): each complete epoch's changes as a JSON line, `{"epoch": e, "changes":
/// [[[key, aggregate], [count, sum]], ...]}`, for a serving process outside the run to fold
/// in. The file is made anew (a new inode) by every run, so a follower sees a restart.
pub struct FeedWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    written: Option<u64>,
    failed: bool,
}

impl FeedWriter {
    /// Replaces `path` with an empty feed.
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        Ok(FeedWriter {
            file: std::io::BufWriter::new(std::fs::File::create(path)?),
            path: path.to_owned(),
            written: None,
            failed: false,
        })
    }

    /// Appends a complete epoch's changes, once per epoch. A failure is reported once, and
    /// the feed stops (the run goes on: serving elsewhere falls behind, nothing else).
    fn write(&mut self, epoch: u64, changes: &[Change]) {
        use std::io::Write;
        if self.failed || self.written.is_some_and(|written| written >= epoch) {
            return;
        }
        let line = serde_json::json!({"epoch": epoch, "changes": changes});
        let result = writeln!(self.file, "{line}").and_then(|()| self.file.flush());
        match result {
            Ok(()) => self.written = Some(epoch),
            Err(error) => {
                self.failed = true;
                eprintln!(
                    "pooch: serving feed {}: {error}; the feed stops",
                    self.path.display()
                );
            }
        }
    }
}

/// Folds each complete epoch's feature changes into the serving state, at worker 0, once the
/// epoch has closed on every worker, and writes them to the feed file when there is one.
/// Every worker attaches it; `serving` and `feed` are worker 0's only (on process 0), the
/// others see nothing (changes go to worker 0).
pub fn attach_serving<'scope>(
    serving: Option<Arc<ServingState>>,
    mut feed: Option<FeedWriter>,
    tick: u64,
    changes: timely::dataflow::StreamVec<'scope, Time, Change>,
) {
    let mut pending: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
    changes.sink(
        Exchange::new(|_: &Change| 0u64),
        "Sink: serving features",
        move |(input, frontier)| {
            input.for_each_stamp(|capability, data| {
                let Some(&time) = capability.least() else {
                    return;
                };
                for container in data {
                    pending.entry(time / tick).or_default().append(container);
                }
            });
            // an epoch is complete once the frontier has passed its end
            while let Some((&epoch, _)) = pending.first_key_value() {
                let end = (epoch + 1).saturating_mul(tick);
                if frontier.less_than(&end) {
                    break;
                }
                if let Some(changes) = pending.remove(&epoch) {
                    if let Some(serving) = &serving {
                        serving.apply_epoch(epoch, &changes);
                    }
                    if let Some(feed) = feed.as_mut() {
                        feed.write(epoch, &changes);
                    }
                }
            }
            // epochs without changes are complete too
            // (an empty frontier is the end of the run, which closes no further epoch)
            if let Some(closed) = frontier.frontier().first().map(|&time| time / tick)
                && closed > 0
                && pending
                    .first_key_value()
                    .is_none_or(|(&epoch, _)| epoch >= closed)
            {
                if let Some(serving) = &serving {
                    serving.apply_epoch(closed - 1, &[]);
                }
                if let Some(feed) = feed.as_mut() {
                    feed.write(closed - 1, &[]);
                }
            }
        },
    );
}
