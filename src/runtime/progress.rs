//! The progress line worker 0 prints on stderr, at most once a second.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::runtime::collector::Collector;
use crate::runtime::leader::Leader;

/// When the progress line was last printed, and whether it is printed at all.
pub struct ProgressLine {
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl ProgressLine {
    /// A progress line for a run started at `started`, printed only if `enabled`.
    pub fn new(enabled: bool, started: Instant) -> Self {
        ProgressLine {
            enabled,
            started,
            last: started,
        }
    }

    /// Prints the line for `epoch` if a second has passed since the last (worker 0 only: the
    /// other workers have no leader).
    pub fn tick(&mut self, leader: Option<&RefCell<Leader>>, epoch: u64) {
        let Some(leader) =
            leader.filter(|_| self.enabled && self.last.elapsed() >= Duration::from_secs(1))
        else {
            return;
        };
        self.last = Instant::now();
        let line = progress_line(
            &leader.borrow().collector,
            epoch,
            self.started.elapsed().as_secs_f64(),
        );
        eprintln!("{line}");
    }
}

/// The progress line at `epoch`, `elapsed_secs` into the run.
pub fn progress_line(collector: &Collector, epoch: u64, elapsed_secs: f64) -> String {
    let facts = collector.facts();
    let rate = facts as f64 / elapsed_secs.max(1e-9);
    let logloss = |value: Option<f64>| value.map_or("-".to_owned(), |value| format!("{value:.4}"));
    let (running, last) = match &collector.last_epoch {
        Some(metrics) => (
            logloss(metrics.running.logloss),
            logloss(metrics.epoch_scores.logloss),
        ),
        None => ("-".into(), "-".into()),
    };
    format!(
        "[pooch] epoch {epoch} | {facts} facts ({rate:.0}/s) | {} dead letters | model v{} | logloss {running} (last epoch {last})",
        collector.dead_letters,
        collector.model_version(),
    )
}

#[cfg(test)]
mod tests {
    use dataflows::learn::evaluate::{EpochMetrics, Scores};

    use super::*;
    use crate::runtime::output::ReadProgress;

    #[test]
    fn before_any_metrics_the_line_shows_dashes() {
        let collector = Collector::default();
        assert_eq!(
            progress_line(&collector, 7, 2.0),
            "[pooch] epoch 7 | 0 facts (0/s) | 0 dead letters | model v0 | logloss - (last epoch -)"
        );
    }

    #[test]
    fn the_line_shows_facts_rate_and_both_loglosses() {
        let mut collector = Collector::default();
        for (worker, facts) in [(0, 1500), (1, 500)] {
            collector.record_progress(ReadProgress {
                worker,
                source: 0,
                facts,
                malformed: 0,
                late_dropped: 0,
                late_admitted: 0,
                time_range: None,
                open: 0,
                digest: 0,
                positions: Default::default(),
            });
        }
        collector.dead_letters = 3;
        collector.last_epoch = Some(EpochMetrics {
            epoch: 12,
            epoch_scores: Scores {
                logloss: Some(0.5),
                ..Scores::default()
            },
            running: Scores {
                logloss: Some(0.123_456),
                ..Scores::default()
            },
        });
        assert_eq!(
            progress_line(&collector, 12, 4.0),
            "[pooch] epoch 12 | 2000 facts (500/s) | 3 dead letters | model v0 | logloss 0.1235 (last epoch 0.5000)"
        );
    }
}
