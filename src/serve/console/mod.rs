//! The operator's console: a page at `/` of the HTTP endpoint, its assets built into the
//! binary, and the journal of recent epochs and dead letters that it polls
//! (`GET /v1/console`).
//!
//! The page (`index.html`, `console.js`, `console.css`) draws with uPlot, kept in `uplot/`
//! under its MIT licence (`uplot/LICENSE`), as its npm package ships it: no build step. It
//! polls `/v1/console` for the epochs it has not seen, the counters, the dead letters and
//! the latency histogram, and `/v1/models` for the versions and decisions; the buttons post
//! to `/v1/models/{name}/pin`, `unpin` and `rollback`.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::{Value as Json, json};

/// One asset of the console: its path under `/`, content type and bytes.
pub struct Asset {
    /// The path it is served at, such as `/console/console.js`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every file of the console, the page first.
pub static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("index.html"),
    },
    Asset {
        path: "/console/console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("console.js"),
    },
    Asset {
        path: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("console.css"),
    },
    Asset {
        path: "/console/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("uplot/uPlot.iife.min.js"),
    },
    Asset {
        path: "/console/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("uplot/uPlot.min.css"),
    },
    Asset {
        path: "/console/uPlot.LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("uplot/LICENSE"),
    },
];

/// The asset served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.path == path)
}

/// Epochs the journal keeps, newest last: a page that opens late sees this much history.
pub const EPOCHS_KEPT: usize = 20_000;

/// Dead letters the journal keeps, newest last.
pub const DEAD_LETTERS_KEPT: usize = 20;

/// Epochs one answer carries at most; the page asks again for the rest.
pub const EPOCHS_PER_ANSWER: usize = 5_000;

/// One epoch as the console plots it: the progressive scores of the epoch and of the run so
/// far, the version that scored it, and how reading stood.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochPoint {
    /// Its place in the journal, from 1: the page asks for the points after the last it has.
    pub seq: u64,
    /// The epoch.
    pub epoch: u64,
    /// Seconds since the run started when the epoch was reported.
    pub elapsed_secs: f64,
    /// Labelled examples of the epoch.
    pub examples: u64,
    /// The epoch's progressive logloss and AUC: the servable model's, the replicas', the truth's.
    pub logloss: Option<f64>,
    /// See `logloss`.
    pub auc: Option<f64>,
    /// See `logloss`.
    pub online_logloss: Option<f64>,
    /// See `logloss`.
    pub online_auc: Option<f64>,
    /// See `logloss`.
    pub truth_logloss: Option<f64>,
    /// See `logloss`.
    pub truth_auc: Option<f64>,
    /// The same over the run so far.
    pub running_logloss: Option<f64>,
    /// See `running_logloss`.
    pub running_auc: Option<f64>,
    /// See `running_logloss`.
    pub running_online_logloss: Option<f64>,
    /// See `running_logloss`.
    pub running_truth_logloss: Option<f64>,
    /// See `running_logloss`.
    pub running_truth_auc: Option<f64>,
    /// Examples labelled over the run so far.
    pub running_examples: u64,
    /// The newest version published when the epoch was reported.
    pub model_version: u64,
    /// The reading frontier (event time every worker has closed up to).
    pub frontier: Option<u64>,
    /// Facts read so far, over every source.
    pub facts: u64,
}

/// A dead letter as the console lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetterNote {
    /// The source's name.
    pub source: String,
    /// The file and 1-based line.
    pub file: String,
    /// See `file`.
    pub line: u64,
    /// Why the line was set aside.
    pub reason: String,
}

/// Recent epochs and dead letters, for the console. Bounded: the oldest are forgotten.
#[derive(Debug, Default)]
pub struct ConsoleJournal {
    epochs: VecDeque<EpochPoint>,
    next_seq: u64,
    dead_letters: VecDeque<DeadLetterNote>,
}

impl ConsoleJournal {
    /// Appends an epoch, numbering it.
    pub fn record_epoch(&mut self, mut point: EpochPoint) {
        self.next_seq += 1;
        point.seq = self.next_seq;
        if self.epochs.len() == EPOCHS_KEPT {
            self.epochs.pop_front();
        }
        self.epochs.push_back(point);
    }

    /// Appends a dead letter.
    pub fn record_dead_letter(&mut self, note: DeadLetterNote) {
        if self.dead_letters.len() == DEAD_LETTERS_KEPT {
            self.dead_letters.pop_front();
        }
        self.dead_letters.push_back(note);
    }

    /// The epochs after `since` (at most [`EPOCHS_PER_ANSWER`]), the journal's last number,
    /// and the dead letters newest first.
    pub fn json(&self, since: u64) -> Json {
        // numbers are consecutive: the first wanted is at a known offset
        let first = self.epochs.front().map_or(0, |point| point.seq);
        let skip = (since + 1).saturating_sub(first) as usize;
        let epochs: Vec<&EpochPoint> = self
            .epochs
            .iter()
            .skip(skip)
            .take(EPOCHS_PER_ANSWER)
            .collect();
        let dead: Vec<&DeadLetterNote> = self.dead_letters.iter().rev().collect();
        json!({
            "last_seq": self.next_seq,
            "epochs": epochs,
            "dead_letters": dead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(epoch: u64) -> EpochPoint {
        EpochPoint {
            seq: 0,
            epoch,
            elapsed_secs: 0.0,
            examples: 1,
            logloss: Some(0.5),
            auc: None,
            online_logloss: None,
            online_auc: None,
            truth_logloss: None,
            truth_auc: None,
            running_logloss: None,
            running_auc: None,
            running_online_logloss: None,
            running_truth_logloss: None,
            running_truth_auc: None,
            running_examples: 1,
            model_version: 0,
            frontier: None,
            facts: 0,
        }
    }

    #[test]
    fn the_page_gets_the_epochs_after_the_last_it_has() {
        let mut journal = ConsoleJournal::default();
        for epoch in 10..15 {
            journal.record_epoch(point(epoch));
        }
        let all = journal.json(0);
        assert_eq!(all["last_seq"], json!(5));
        assert_eq!(all["epochs"].as_array().unwrap().len(), 5);
        let later = journal.json(3);
        let epochs: Vec<u64> = later["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|point| point["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs, [13, 14]);
        assert!(journal.json(5)["epochs"].as_array().unwrap().is_empty());
        assert!(journal.json(99)["epochs"].as_array().unwrap().is_empty());
    }

    #[test]
    fn the_journal_forgets_the_oldest() {
        let mut journal = ConsoleJournal::default();
        for epoch in 0..(EPOCHS_KEPT as u64 + 3) {
            journal.record_epoch(point(epoch));
        }
        let answer = journal.json(0);
        assert_eq!(answer["epochs"][0]["epoch"], json!(3));
        assert_eq!(
            answer["epochs"].as_array().unwrap().len(),
            EPOCHS_PER_ANSWER
        );
        for line in 0..(DEAD_LETTERS_KEPT as u64 + 2) {
            journal.record_dead_letter(DeadLetterNote {
                source: "posts".into(),
                file: "posts.csv".into(),
                line,
                reason: format!("bad line {line}"),
            });
        }
        let dead = &journal.json(0)["dead_letters"];
        assert_eq!(dead.as_array().unwrap().len(), DEAD_LETTERS_KEPT);
        assert_eq!(dead[0]["line"], json!(DEAD_LETTERS_KEPT as u64 + 1));
    }

    #[test]
    fn every_asset_is_found_at_its_path() {
        for each in ASSETS {
            assert!(std::ptr::eq(asset(each.path).unwrap(), each));
            assert!(!each.body.is_empty(), "{}", each.path);
        }
        assert!(asset("/console/missing.js").is_none());
    }
}
