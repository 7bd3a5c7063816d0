//! The supervisor's policy: which version serves, by rules on the evidence of each version.
//!
//! The dataflow publishes a version at every training round and keeps training whatever
//! serves. Every example is scored by the version servable at its event time before anything
//! learns from it, and each round reports its examples split by the version that scored them
//! ([`RoundMetrics::scored`]). With delayed labels, a version's *own evidence* (the examples
//! it scored) arrives rounds after it was published. The supervisor decides:
//!
//! - **Publication.** A version with a non-finite weight is rejected at once. Any other is a
//!   *candidate* until evidence of its own arrives: a window holding only what earlier
//!   versions scored says nothing about it.
//! - **Promotion**, when its own evidence first arrives. Its *window* is the evidence scored by
//!   the versions published in the last `window_epochs` epochs up to it, its own included, and
//!   every figure in it is compared with the *constant model* (the running positive rate of
//!   all rounds before, a model nothing can game) scored on the same examples. It is promoted
//!   (it becomes the choice, which serves unless a pin overrides it) when its window logloss
//!   is finite, its own predictions have not collapsed (all the same, or all within 1e-6 of 0
//!   or 1), the window logloss is at most `constant × (1 − baseline_margin)`, and, when a
//!   version is already chosen, at most `reference × (1 + promote_margin)`. The reference is
//!   the chosen version's live window when it holds `min_live_examples`, else its own window
//!   when it was promoted (its *figure*).
//! - **Rollback.** Evidence scored by the serving version after it started serving is its
//!   live window. Once that holds `min_live_examples`, the serving version is rolled back
//!   (the last good version before it serves) when the live logloss is not finite, exceeds
//!   its figure by more than `rollback_threshold`, or is no better than the constant model on
//!   the same examples.
//! - **Operators** pin a version (it serves until unpinned, whatever the rules would do;
//!   new versions are still evaluated, and one that passes becomes the choice, which serves
//!   on unpin), unpin, or roll back by hand.
//! - **Restart.** [`Supervisor::restore`] takes the decisions of earlier runs: statuses,
//!   figures, the choice and the pin come back, so a rejected version stays rejected and the
//!   old choice serves until a new version beats it on evidence of its own.
//!
//! Each rule's outcome is a [`Decision`], for the caller to log ([`super::DecisionLog`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use dataflows::publish::model::{Evidence, ModelVersion, RoundMetrics};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::SupervisorError;
use super::decisions::{
    Action, Actor, Decision, DecisionMetrics, Reference, ReferenceKind, WindowMetrics,
};

/// A prediction this close to 0 or 1 counts as extreme (as [`Evidence::extreme`] counts).
const EXTREME: f64 = 1e-6;

/// Predictions whose range is narrower than this are all the same.
const SAME: f64 = 1e-9;

/// The supervisor's rules, in numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SupervisorConfig {
    /// How much worse, relatively, a new version's window logloss may be than the reference
    /// and still be promoted: `0.05` allows 5% worse. Relative, so that one setting suits a
    /// data set whose logloss is 0.69 and one whose logloss is 0.2. Default 0.05.
    pub promote_margin: f64,
    /// How much better, relatively, a version's window logloss must be than the constant
    /// model's on the same examples to be promoted: `0.02` asks for 2% better. Default 0.02.
    pub baseline_margin: f64,
    /// How much worse, relatively, the serving version's live logloss may become than its
    /// figure before it is rolled back: `0.25` is 25% worse. Default 0.25.
    pub rollback_threshold: f64,
    /// Epochs over which evidence is averaged, weighted by examples. Default 8.
    pub window_epochs: usize,
    /// Live evidence is trusted (for a rollback, or as the promotion reference) once the
    /// window holds at least this many examples scored by the serving version. Default 500.
    pub min_live_examples: u64,
    /// Versions whose status is remembered; older ones are forgotten (never the serving, the
    /// chosen or the pinned one), and can then no longer be pinned or rolled back to.
    /// Default 1000.
    pub keep_versions: usize,
    /// What `/v1/predict` answers with when no version serves. Default: nothing (503).
    pub fallback: Fallback,
}

/// What answers a query when no version serves (`[serving] fallback`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Nothing: the query gets 503 with the reason.
    #[default]
    None,
    /// The constant model, the running positive rate ([`Supervisor::constant_probability`]),
    /// named `"constant"` in the answer, with no version.
    Constant,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            promote_margin: 0.05,
            baseline_margin: 0.02,
            rollback_threshold: 0.25,
            window_epochs: 8,
            min_live_examples: 500,
            keep_versions: 1000,
            fallback: Fallback::None,
        }
    }
}

impl SupervisorConfig {
    /// Checks that the numbers make sense: margins finite and not negative (the baseline
    /// margin below 1), a window of at least one epoch, at least one version kept.
    pub fn validate(&self) -> Result<(), SupervisorError> {
        let invalid = |field: &'static str, reason: String| {
            Err(SupervisorError::InvalidConfig { field, reason })
        };
        for (field, value) in [
            ("promote_margin", self.promote_margin),
            ("rollback_threshold", self.rollback_threshold),
            ("baseline_margin", self.baseline_margin),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return invalid(field, format!("must be a finite number >= 0, got {value}"));
            }
        }
        if self.baseline_margin >= 1.0 {
            return invalid(
                "baseline_margin",
                format!("must be below 1, got {}", self.baseline_margin),
            );
        }
        if self.window_epochs == 0 {
            return invalid("window_epochs", "must be at least 1".to_owned());
        }
        if self.keep_versions == 0 {
            return invalid("keep_versions", "must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// A version as the supervisor needs to know it.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The version number.
    pub version: u64,
    /// The epoch whose close produced it.
    pub epoch: u64,
    /// How the round that produced it went, with its evidence by scoring version.
    pub metrics: RoundMetrics,
    /// Whether every weight is finite ([`ModelVersion::is_finite`]).
    pub finite: bool,
}

impl Published {
    /// What the supervisor needs of a model version.
    pub fn of(model: &ModelVersion) -> Published {
        Published {
            version: model.version,
            epoch: model.epoch,
            metrics: model.metrics.clone(),
            finite: model.is_finite(),
        }
    }
}

/// Where a version stands.
#[derive(Clone, Debug, PartialEq)]
pub enum VersionStatus {
    /// Published, not decided: no evidence of its own yet.
    Candidate {
        /// Why it was not decided.
        reason: String,
    },
    /// Promoted at some point, and never rolled back: a good version.
    Promoted,
    /// Never promoted.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Served and then rolled back; it never serves again unless pinned.
    RolledBack {
        /// Why.
        reason: String,
    },
}

impl VersionStatus {
    /// The status's name in JSON: `candidate`, `promoted`, `rejected` or `rolled_back`.
    pub fn name(&self) -> &'static str {
        match self {
            VersionStatus::Candidate { .. } => "candidate",
            VersionStatus::Promoted => "promoted",
            VersionStatus::Rejected { .. } => "rejected",
            VersionStatus::RolledBack { .. } => "rolled_back",
        }
    }

    /// Why, for every status but `promoted`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            VersionStatus::Promoted => None,
            VersionStatus::Candidate { reason }
            | VersionStatus::Rejected { reason }
            | VersionStatus::RolledBack { reason } => Some(reason),
        }
    }
}

/// Evidence scored by one version in one round, with the constant model's loss on it.
#[derive(Clone, Copy, Debug)]
struct Scored {
    /// The version that scored it.
    version: u64,
    /// The epoch of the version that scored it (for the live window: of its arrival).
    epoch: u64,
    /// The epoch of the round it arrived in.
    arrived: u64,
    examples: u64,
    loss_sum: f64,
    /// The constant model's loss sum on the same examples.
    constant_sum: f64,
}

/// Sums of evidence, and its window.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    examples: u64,
    loss_sum: f64,
    constant_sum: f64,
}

impl Tally {
    fn over<'a>(entries: impl IntoIterator<Item = &'a Scored>) -> Tally {
        let mut tally = Tally::default();
        for entry in entries {
            tally.examples += entry.examples;
            tally.loss_sum += entry.loss_sum;
            tally.constant_sum += entry.constant_sum;
        }
        tally
    }

    fn mean(sum: f64, examples: u64) -> f64 {
        if examples > 0 {
            sum / examples as f64
        } else {
            f64::NAN
        }
    }

    fn window(&self, first_epoch: u64, last_epoch: u64) -> WindowMetrics {
        WindowMetrics {
            first_epoch,
            last_epoch,
            examples: self.examples,
            logloss: Tally::mean(self.loss_sum, self.examples),
        }
    }

    fn constant(&self) -> f64 {
        Tally::mean(self.constant_sum, self.examples)
    }
}

/// What the supervisor remembers of a version.
#[derive(Clone, Debug)]
struct VersionRecord {
    epoch: u64,
    round: WindowMetrics,
    finite: bool,
    status: VersionStatus,
    /// Every example it scored, over all rounds so far.
    own: Evidence,
    /// Its window when it was judged, what it is held to when it serves.
    figure: Option<WindowMetrics>,
    /// Its predictions collapsed (all the same, or all at 0 or 1).
    collapsed: bool,
}

impl VersionRecord {
    fn is_good(&self) -> bool {
        self.finite && self.status == VersionStatus::Promoted
    }
}

/// Decides which version of one model serves. Plain state, no I/O: every method returns the
/// decisions it made, for the caller to log ([`super::DecisionLog`]) and act on ([`Self::serving`]).
#[derive(Clone, Debug)]
pub struct Supervisor {
    model: String,
    config: SupervisorConfig,
    versions: BTreeMap<u64, VersionRecord>,
    newest_version: Option<u64>,
    /// Evidence that arrived in the last `window_epochs` epochs.
    evidence: VecDeque<Scored>,
    /// Evidence scored by the serving version since it started serving, in the window.
    live: VecDeque<Scored>,
    newest_epoch: Option<u64>,
    /// Examples and positives of every round seen: the constant model's running rate.
    seen_examples: u64,
    seen_positives: u64,
    /// The version the rules choose; it serves unless a pin overrides it.
    chosen: Option<u64>,
    pinned: Option<u64>,
    /// Whether the serving version's degradation was already reported without a rollback
    /// (pinned, or nothing to roll back to), so that it is reported once, not every epoch.
    degradation_reported: bool,
}

impl Supervisor {
    /// A supervisor of `model` with no version yet.
    pub fn new(
        model: impl Into<String>,
        config: SupervisorConfig,
    ) -> Result<Self, SupervisorError> {
        config.validate()?;
        Ok(Supervisor {
            model: model.into(),
            config,
            versions: BTreeMap::new(),
            newest_version: None,
            evidence: VecDeque::new(),
            live: VecDeque::new(),
            newest_epoch: None,
            seen_examples: 0,
            seen_positives: 0,
            chosen: None,
            pinned: None,
            degradation_reported: false,
        })
    }

    /// The model supervised.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The rules.
    pub fn config(&self) -> &SupervisorConfig {
        &self.config
    }

    /// The version that serves: the pinned one, else the supervisor's choice; `None` until a
    /// version has been promoted or pinned.
    pub fn serving(&self) -> Option<u64> {
        self.pinned.or(self.chosen)
    }

    /// The supervisor's own choice, which serves when nothing is pinned.
    pub fn chosen(&self) -> Option<u64> {
        self.chosen
    }

    /// The pinned version, if any.
    pub fn pinned(&self) -> Option<u64> {
        self.pinned
    }

    /// A held version's status; `None` for one never seen or forgotten.
    pub fn status(&self, version: u64) -> Option<&VersionStatus> {
        self.versions.get(&version).map(|record| &record.status)
    }

    /// How many held versions have each status, by status name.
    pub fn status_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for record in self.versions.values() {
            *counts.entry(record.status.name()).or_insert(0) += 1;
        }
        counts
    }

    /// Whether a held version's predictions were found collapsed.
    pub fn collapsed(&self, version: u64) -> bool {
        self.versions
            .get(&version)
            .is_some_and(|record| record.collapsed)
    }

    /// The constant model's prediction now: the running positive rate of every round seen,
    /// with one positive and one negative imagined, so that it is never 0 or 1.
    pub fn constant_probability(&self) -> f64 {
        (self.seen_positives as f64 + 1.0) / (self.seen_examples as f64 + 2.0)
    }

    /// Takes back the state of earlier runs from their decisions, in file order: each
    /// version's last status, the figure it was promoted on, the choice and the pin. Call it
    /// before any version is published. Decisions about other models, and requests by the
    /// command line (carried out, or not, by the supervisor that read them), are passed over,
    /// and so are versions in `foreign` (snapshots made for another spec). Only a version in
    /// `servable` (its snapshot loads and fits the spec) can be the choice or the pin.
    /// Returns how many versions were restored.
    pub fn restore(
        &mut self,
        decisions: &[Decision],
        servable: &BTreeSet<u64>,
        foreign: &BTreeSet<u64>,
    ) -> usize {
        let mut pinned = None;
        let mut serving = None;
        for decision in decisions {
            if decision.model != self.model || decision.by == Actor::Cli {
                continue;
            }
            pinned = decision.pinned;
            serving = decision.serving;
            let Some(version) = decision
                .version
                .filter(|version| !foreign.contains(version))
            else {
                continue;
            };
            let record = self
                .versions
                .entry(version)
                .or_insert_with(|| VersionRecord {
                    epoch: decision.metrics.round.map_or(0, |round| round.last_epoch),
                    round: decision.metrics.round.unwrap_or(WindowMetrics {
                        first_epoch: 0,
                        last_epoch: 0,
                        examples: 0,
                        logloss: f64::NAN,
                    }),
                    finite: true,
                    status: VersionStatus::Candidate {
                        reason: "restored from an earlier run".to_owned(),
                    },
                    own: Evidence::default(),
                    figure: None,
                    collapsed: false,
                });
            let reason = decision.reason.clone();
            match decision.action {
                Action::Promoted | Action::HeldByPin
                    if decision.by == Actor::Supervisor && decision.metrics.window.is_some() =>
                {
                    record.status = VersionStatus::Promoted;
                    record.figure = decision.metrics.window;
                }
                Action::Rejected => {
                    if reason.contains("weights are not all finite") {
                        record.finite = false;
                    }
                    record.collapsed = decision.metrics.collapsed.unwrap_or(false);
                    record.status = VersionStatus::Rejected { reason };
                }
                Action::RolledBack => record.status = VersionStatus::RolledBack { reason },
                Action::Candidate => {
                    if !matches!(record.status, VersionStatus::Candidate { .. }) {
                        continue;
                    }
                    record.status = VersionStatus::Candidate { reason };
                }
                _ => {}
            }
            self.newest_version = Some(self.newest_version.map_or(version, |n| n.max(version)));
        }
        if let Some(newest) = self.versions.keys().next_back() {
            self.newest_version = Some(self.newest_version.map_or(*newest, |n| n.max(*newest)));
        }
        self.pinned = pinned
            .filter(|version| self.versions.contains_key(version) && servable.contains(version));
        // the choice: what served, unless pinned; else the newest good version that can serve
        self.chosen = match (self.pinned, serving) {
            (None, Some(serving))
                if servable.contains(&serving)
                    && self
                        .versions
                        .get(&serving)
                        .is_some_and(VersionRecord::is_good) =>
            {
                Some(serving)
            }
            _ => self
                .versions
                .iter()
                .rev()
                .find(|(version, record)| record.is_good() && servable.contains(version))
                .map(|(&version, _)| version),
        };
        self.forget_old_versions();
        self.versions.len()
    }

    /// Takes a version from the store of an earlier run that left no decisions about it (one
    /// run without a supervisor): it becomes the choice, held to its stored round as its
    /// figure, and serves until a version beats it on evidence of its own. A version with a
    /// non-finite weight or round logloss is rejected instead.
    pub fn adopt(
        &mut self,
        model: &ModelVersion,
        now_unix_ms: u64,
    ) -> Result<Vec<Decision>, SupervisorError> {
        if model.name != self.model {
            return Err(SupervisorError::WrongModel {
                model: self.model.clone(),
                offered: model.name.clone(),
            });
        }
        let published = Published::of(model);
        let mut decisions = self.on_published(published.clone(), now_unix_ms)?;
        let round = WindowMetrics {
            first_epoch: published.epoch,
            last_epoch: published.epoch,
            examples: published.metrics.examples,
            logloss: published.metrics.logloss,
        };
        if !published.finite || !round.logloss.is_finite() || round.examples == 0 {
            return Ok(decisions);
        }
        decisions.clear();
        let before = self.serving();
        if let Some(record) = self.versions.get_mut(&published.version) {
            record.status = VersionStatus::Promoted;
            record.figure = Some(round);
        }
        self.chosen = Some(published.version);
        self.after_serving_change(before);
        let reason = format!(
            "adopted from the store: no decisions about it were recorded; it serves until a version beats its stored round (logloss {:.4} over {} examples) on evidence of its own",
            round.logloss, round.examples
        );
        decisions.push(self.decision(
            now_unix_ms,
            Some(published.version),
            Action::Promoted,
            Actor::Supervisor,
            reason,
            DecisionMetrics {
                round: Some(round),
                window: Some(round),
                ..DecisionMetrics::default()
            },
        ));
        Ok(decisions)
    }

    /// Evaluates a newly published model version (see [`Self::on_published`]).
    pub fn on_version(
        &mut self,
        model: &ModelVersion,
        now_unix_ms: u64,
    ) -> Result<Vec<Decision>, SupervisorError> {
        if model.name != self.model {
            return Err(SupervisorError::WrongModel {
                model: self.model.clone(),
                offered: model.name.clone(),
            });
        }
        self.on_published(Published::of(model), now_unix_ms)
    }

    /// Takes a newly published version: its round's evidence is credited to the versions that
    /// scored it (judging those that had none before, and checking the serving one), and the
    /// new version is recorded, a candidate (or rejected, with a non-finite weight). Versions
    /// must come in increasing order.
    pub fn on_published(
        &mut self,
        published: Published,
        now_unix_ms: u64,
    ) -> Result<Vec<Decision>, SupervisorError> {
        if let Some(newest) = self.newest_version
            && published.version <= newest
        {
            return Err(SupervisorError::VersionNotNewer {
                model: self.model.clone(),
                version: published.version,
                newest,
            });
        }
        self.newest_version = Some(published.version);
        let epoch = published.epoch;
        let newest_epoch = self.newest_epoch.map_or(epoch, |newest| newest.max(epoch));
        self.newest_epoch = Some(newest_epoch);
        let window_epochs = self.config.window_epochs as u64;

        // credit the evidence, each part with the constant model's loss on it
        let constant = self.constant_probability();
        let mut first_evidence = BTreeSet::new();
        let mut serving_evidence = false;
        let serving = self.serving();
        for evidence in &published.metrics.scored {
            self.seen_examples += evidence.examples;
            self.seen_positives += evidence.positives;
            let Some(record) = self.versions.get_mut(&evidence.scored_by) else {
                continue; // scored by no version (0), or by one forgotten or never seen
            };
            if record.own.examples == 0 && evidence.examples > 0 {
                first_evidence.insert(evidence.scored_by);
            }
            if record.own.examples == 0 {
                record.own = *evidence;
            } else {
                record.own.absorb(evidence);
            }
            let negatives = evidence.examples.saturating_sub(evidence.positives);
            let scored = Scored {
                version: evidence.scored_by,
                epoch: record.epoch,
                arrived: epoch,
                examples: evidence.examples,
                loss_sum: evidence.loss_sum,
                constant_sum: -(evidence.positives as f64 * constant.ln()
                    + negatives as f64 * (1.0 - constant).ln()),
            };
            self.evidence.push_back(scored);
            if Some(evidence.scored_by) == serving && !first_evidence.contains(&evidence.scored_by)
            {
                self.live.push_back(Scored { epoch, ..scored });
                serving_evidence = true;
            }
        }
        // the evidence of a window's versions arrives within a window of epochs of each other
        self.evidence
            .retain(|scored| scored.arrived + window_epochs > newest_epoch);
        self.live
            .retain(|scored| scored.arrived + window_epochs > newest_epoch);

        // the new version
        let round = WindowMetrics {
            first_epoch: epoch,
            last_epoch: epoch,
            examples: published.metrics.examples,
            logloss: published.metrics.logloss,
        };
        let (status, action, reason) = if published.finite {
            let reason =
                "no evidence of its own yet: it is judged on the examples it scores".to_owned();
            (
                VersionStatus::Candidate {
                    reason: reason.clone(),
                },
                Action::Candidate,
                reason,
            )
        } else {
            rejection("its weights are not all finite".to_owned())
        };
        self.versions.insert(
            published.version,
            VersionRecord {
                epoch,
                round,
                finite: published.finite,
                status,
                own: Evidence::default(),
                figure: None,
                collapsed: false,
            },
        );
        let mut decisions = vec![self.decision(
            now_unix_ms,
            Some(published.version),
            action,
            Actor::Supervisor,
            reason,
            DecisionMetrics {
                round: Some(round),
                ..DecisionMetrics::default()
            },
        )];

        // the versions whose own evidence just arrived, oldest first
        for version in first_evidence {
            if matches!(
                self.versions.get(&version).map(|record| &record.status),
                Some(VersionStatus::Candidate { .. })
            ) {
                decisions.push(self.judge(version, now_unix_ms));
            }
        }
        if serving_evidence {
            decisions.extend(self.check_serving(now_unix_ms));
        }
        self.forget_old_versions();
        Ok(decisions)
    }

    /// Judges a candidate on its window, now that it holds evidence of its own.
    fn judge(&mut self, version: u64, now_unix_ms: u64) -> Decision {
        let Some(record) = self.versions.get(&version) else {
            unreachable!("judged versions are held");
        };
        let first_epoch = (record.epoch + 1).saturating_sub(self.config.window_epochs as u64);
        let tally = Tally::over(self.evidence.iter().filter(|scored| {
            scored.version <= version && (first_epoch..=record.epoch).contains(&scored.epoch)
        }));
        let window = tally.window(first_epoch, record.epoch);
        let constant = tally.constant();
        let own_tally = Tally::over(
            self.evidence
                .iter()
                .filter(|scored| scored.version == version),
        );
        let own_logloss = Tally::mean(own_tally.loss_sum, own_tally.examples);
        let own_constant = own_tally.constant();
        let own = record.own;
        let mut metrics = DecisionMetrics {
            round: Some(record.round),
            window: Some(window),
            constant: Some(constant),
            ..DecisionMetrics::default()
        };
        let collapsed = own.examples > 0
            && (own.extreme == own.examples
                || (own.examples > 1 && own.max_probability - own.min_probability < SAME)
                || !own.max_probability.is_finite());
        let (status, action, reason) = if !window.logloss.is_finite() {
            rejection(format!(
                "its window logloss is not a number ({} over {} examples)",
                window.logloss, window.examples
            ))
        } else if collapsed {
            metrics.collapsed = Some(true);
            rejection(format!(
                "collapsed: its {} predictions all lie in {:.6}..={:.6}{}",
                own.examples,
                own.min_probability,
                own.max_probability,
                if own.extreme == own.examples {
                    format!(", within {EXTREME} of 0 or 1")
                } else {
                    String::new()
                }
            ))
        } else if own_logloss >= own_constant {
            rejection(format!(
                "no better than the constant model on the examples it scored: logloss {:.4} over {} examples against {:.4} for the running positive rate",
                own_logloss, own_tally.examples, own_constant
            ))
        } else if window.logloss > constant * (1.0 - self.config.baseline_margin) {
            let limit = constant * (1.0 - self.config.baseline_margin);
            metrics.limit = Some(limit);
            rejection(format!(
                "no better than the constant model: window logloss {:.4} over {} examples against {:.4} for the running positive rate on the same examples, limit {:.4} (margin {})",
                window.logloss, window.examples, constant, limit, self.config.baseline_margin
            ))
        } else {
            match self.reference(version) {
                None => self.promote(
                    version,
                    format!(
                        "window logloss {:.4} over {} examples beats the constant model's {:.4}; {}",
                        window.logloss,
                        window.examples,
                        constant,
                        match self.chosen {
                            None => "no version was chosen before".to_owned(),
                            Some(chosen) => format!(
                                "version {chosen}'s figure holds fewer than {} examples, too few to compare with",
                                self.config.min_live_examples
                            ),
                        }
                    ),
                ),
                Some(reference) => {
                    let limit = reference.metrics.logloss * (1.0 + self.config.promote_margin);
                    metrics.reference = Some(reference);
                    metrics.limit = Some(limit);
                    let comparison = format!(
                        "window logloss {:.4} over {} examples (constant model {:.4}) against {:.4} ({} of version {}), limit {:.4} (margin {})",
                        window.logloss,
                        window.examples,
                        constant,
                        reference.metrics.logloss,
                        match reference.kind {
                            ReferenceKind::Live => "live",
                            ReferenceKind::Baseline => "figure",
                        },
                        reference.version,
                        limit,
                        self.config.promote_margin
                    );
                    if window.logloss <= limit {
                        self.promote(version, comparison)
                    } else {
                        rejection(format!("worse than allowed: {comparison}"))
                    }
                }
            }
        };
        let before = self.serving();
        if let Some(record) = self.versions.get_mut(&version) {
            record.collapsed = collapsed;
            if status == VersionStatus::Promoted {
                record.figure = Some(window);
            }
            record.status = status;
        }
        self.after_serving_change(before);
        self.decision(
            now_unix_ms,
            Some(version),
            action,
            Actor::Supervisor,
            reason,
            metrics,
        )
    }

    /// Makes `version` the choice if it is newer than the choice: promoted, and serving
    /// unless a pin holds it back.
    fn promote(&mut self, version: u64, reason: String) -> (VersionStatus, Action, String) {
        if self.chosen.is_some_and(|chosen| chosen > version) {
            let reason = format!(
                "{reason}; version {} is newer and stays the choice",
                self.chosen.unwrap_or_default()
            );
            return (VersionStatus::Promoted, Action::Promoted, reason);
        }
        self.chosen = Some(version);
        match self.pinned {
            None => (VersionStatus::Promoted, Action::Promoted, reason),
            Some(pinned) => (
                VersionStatus::Promoted,
                Action::HeldByPin,
                format!(
                    "passes promotion ({reason}), but version {pinned} is pinned; it serves on unpin unless superseded"
                ),
            ),
        }
    }

    /// What a version being judged is compared with: the chosen version's live window if it
    /// serves and the window holds enough examples, else its figure; `None` without either.
    fn reference(&self, judged: u64) -> Option<Reference> {
        let chosen = self.chosen.filter(|&chosen| chosen != judged)?;
        if self.serving() == Some(chosen) {
            let live = self.live_window();
            if live.examples >= self.config.min_live_examples.max(1) && live.logloss.is_finite() {
                return Some(Reference {
                    version: chosen,
                    kind: ReferenceKind::Live,
                    metrics: live,
                });
            }
        }
        // a figure over fewer examples than live evidence needs is noise, not a reference
        let figure = self.versions.get(&chosen)?.figure?;
        (figure.examples >= self.config.min_live_examples.max(1) && figure.logloss.is_finite())
            .then_some(Reference {
                version: chosen,
                kind: ReferenceKind::Baseline,
                metrics: figure,
            })
    }

    /// The serving version's live evidence over the window.
    fn live_tally(&self) -> (Tally, u64, u64) {
        let last_epoch = self.newest_epoch.unwrap_or(0);
        let first_epoch = (last_epoch + 1).saturating_sub(self.config.window_epochs as u64);
        (Tally::over(&self.live), first_epoch, last_epoch)
    }

    fn live_window(&self) -> WindowMetrics {
        let (tally, first_epoch, last_epoch) = self.live_tally();
        tally.window(first_epoch, last_epoch)
    }

    /// Rolls the serving version back when its live window, once it holds
    /// `min_live_examples`, is not finite, past its figure by `rollback_threshold`, or no
    /// better than the constant model on the same examples (or reports it once, when pinned
    /// or with nothing to roll back to).
    fn check_serving(&mut self, now_unix_ms: u64) -> Vec<Decision> {
        let Some(serving) = self.serving() else {
            return Vec::new();
        };
        if self.degradation_reported {
            return Vec::new();
        }
        let (tally, first_epoch, last_epoch) = self.live_tally();
        if tally.examples < self.config.min_live_examples.max(1) {
            return Vec::new();
        }
        let live = tally.window(first_epoch, last_epoch);
        let constant = tally.constant();
        let figure = self
            .versions
            .get(&serving)
            .and_then(|record| record.figure)
            .filter(|figure| figure.examples > 0 && figure.logloss.is_finite())
            .map(|figure| figure.logloss);
        let limit = figure.map(|figure| figure * (1.0 + self.config.rollback_threshold));
        let degradation = if !live.logloss.is_finite() {
            format!("live logloss {} is not a number", live.logloss)
        } else if live.logloss >= constant {
            format!(
                "live logloss {:.4} over {} examples in epochs {}..={} is no better than the constant model's {:.4} on the same examples",
                live.logloss, live.examples, live.first_epoch, live.last_epoch, constant
            )
        } else if let (Some(figure), Some(limit)) = (figure, limit)
            && live.logloss > limit
        {
            format!(
                "live logloss {:.4} over {} examples in epochs {}..={} exceeds its figure {:.4} by more than {} (limit {:.4})",
                live.logloss,
                live.examples,
                live.first_epoch,
                live.last_epoch,
                figure,
                self.config.rollback_threshold,
                limit
            )
        } else {
            return Vec::new();
        };
        let metrics = DecisionMetrics {
            live: Some(live),
            baseline: figure,
            constant: Some(constant),
            limit,
            ..DecisionMetrics::default()
        };
        if self.pinned.is_some() {
            self.degradation_reported = true;
            let reason = format!("{degradation}; pinned, so no automatic rollback");
            return vec![self.decision(
                now_unix_ms,
                Some(serving),
                Action::HeldByPin,
                Actor::Supervisor,
                reason,
                metrics,
            )];
        }
        match self.last_good_before(serving) {
            Some(target) => {
                let reason = format!("{degradation}; version {target} serves again");
                self.roll_back_to(serving, target, reason.clone());
                vec![self.decision(
                    now_unix_ms,
                    Some(serving),
                    Action::RolledBack,
                    Actor::Supervisor,
                    reason,
                    metrics,
                )]
            }
            None => {
                self.degradation_reported = true;
                let reason =
                    format!("{degradation}; no good version before it, so it keeps serving");
                vec![self.decision(
                    now_unix_ms,
                    Some(serving),
                    Action::Kept,
                    Actor::Supervisor,
                    reason,
                    metrics,
                )]
            }
        }
    }

    /// Pins a held version with finite weights: it serves until [`Self::unpin`], whatever the
    /// rules decide meanwhile.
    pub fn pin(
        &mut self,
        version: u64,
        now_unix_ms: u64,
    ) -> Result<Vec<Decision>, SupervisorError> {
        let record = self.held(version)?;
        if !record.finite {
            return Err(SupervisorError::NotFinite {
                model: self.model.clone(),
                version,
            });
        }
        let status = record.status.name();
        let before = self.serving();
        self.pinned = Some(version);
        self.after_serving_change(before);
        let reason = format!(
            "pinned by an operator (its status: {status}; the supervisor's choice: {})",
            self.chosen
                .map_or("none".to_owned(), |chosen| format!("version {chosen}"))
        );
        Ok(vec![self.decision(
            now_unix_ms,
            Some(version),
            Action::Pinned,
            Actor::Operator,
            reason,
            DecisionMetrics::default(),
        )])
    }

    /// Releases the pin: the supervisor's choice serves again.
    pub fn unpin(&mut self, now_unix_ms: u64) -> Result<Vec<Decision>, SupervisorError> {
        let Some(pinned) = self.pinned else {
            return Err(SupervisorError::NotPinned {
                model: self.model.clone(),
            });
        };
        let before = self.serving();
        self.pinned = None;
        self.after_serving_change(before);
        let reason = format!(
            "unpinned by an operator; {}",
            self.chosen.map_or(
                "no version has been promoted, so none serves".to_owned(),
                |chosen| format!("the supervisor's choice, version {chosen}, serves")
            )
        );
        Ok(vec![self.decision(
            now_unix_ms,
            Some(pinned),
            Action::Unpinned,
            Actor::Operator,
            reason,
            DecisionMetrics::default(),
        )])
    }

    /// Rolls back by hand: the serving version is marked rolled back and the last good version
    /// before it serves, as the supervisor's choice. A pin is released, since the operator
    /// has said what should serve. An error, changing nothing, when there is no such version.
    pub fn rollback(&mut self, now_unix_ms: u64) -> Result<Vec<Decision>, SupervisorError> {
        let serving = self.serving();
        let target = serving.and_then(|serving| self.last_good_before(serving));
        let (Some(serving), Some(target)) = (serving, target) else {
            return Err(SupervisorError::NoEarlierGoodVersion {
                model: self.model.clone(),
                serving,
            });
        };
        let released = self.pinned.map_or(String::new(), |pinned| {
            format!("; the pin on version {pinned} is released")
        });
        let reason = format!("rolled back by an operator; version {target} serves again{released}");
        self.roll_back_to(serving, target, reason.clone());
        Ok(vec![self.decision(
            now_unix_ms,
            Some(serving),
            Action::RolledBack,
            Actor::Operator,
            reason,
            DecisionMetrics::default(),
        )])
    }

    /// The state for `GET /v1/models`: what serves, what the rules chose, the pin, the
    /// serving version's live window, and every held version with its status and metrics.
    pub fn state(&self) -> Json {
        let serving = self.serving();
        let versions: Vec<Json> = self
            .versions
            .iter()
            .map(|(&version, record)| {
                let status = if serving == Some(version) {
                    "serving"
                } else {
                    record.status.name()
                };
                json!({
                    "version": version,
                    "epoch": record.epoch,
                    "status": status,
                    "promoted": record.status == VersionStatus::Promoted,
                    "reason": record.status.reason(),
                    "finite": record.finite,
                    "collapsed": record.collapsed,
                    "round": record.round,
                    "figure": record.figure,
                    "evidence": {
                        "examples": record.own.examples,
                        "positives": record.own.positives,
                        "logloss": (record.own.examples > 0)
                            .then(|| record.own.loss_sum / record.own.examples as f64)
                            .filter(|logloss| logloss.is_finite()),
                    },
                })
            })
            .collect();
        json!({
            "model": self.model,
            "serving": serving,
            "chosen": self.chosen,
            "pinned": self.pinned,
            "live": serving.map(|_| self.live_window()),
            "constant_probability": self.constant_probability(),
            "config": self.config,
            "versions": versions,
        })
    }

    /// A held version, or the error naming what is held.
    fn held(&self, version: u64) -> Result<&VersionRecord, SupervisorError> {
        self.versions
            .get(&version)
            .ok_or_else(|| SupervisorError::UnknownVersion {
                model: self.model.clone(),
                version,
                held: match (self.versions.keys().next(), self.versions.keys().last()) {
                    (Some(first), Some(last)) => {
                        format!("{} versions from {first} to {last}", self.versions.len())
                    }
                    _ => "none".to_owned(),
                },
            })
    }

    /// The newest good version older than `version`.
    fn last_good_before(&self, version: u64) -> Option<u64> {
        self.versions
            .range(..version)
            .rev()
            .find(|(_, record)| record.is_good())
            .map(|(&good, _)| good)
    }

    /// Marks `from` rolled back and makes `to` the choice, with no pin.
    fn roll_back_to(&mut self, from: u64, to: u64, reason: String) {
        let before = self.serving();
        if let Some(record) = self.versions.get_mut(&from) {
            record.status = VersionStatus::RolledBack { reason };
        }
        self.chosen = Some(to);
        self.pinned = None;
        self.after_serving_change(before);
    }

    /// A version that starts serving starts with no live metrics and no reported degradation.
    fn after_serving_change(&mut self, before: Option<u64>) {
        if self.serving() != before {
            self.live.clear();
            self.degradation_reported = false;
        }
    }

    /// Forgets the oldest versions past `keep_versions`, never the serving, chosen or pinned one.
    fn forget_old_versions(&mut self) {
        let protected = [self.serving(), self.chosen, self.pinned];
        while self.versions.len() > self.config.keep_versions {
            let oldest = self
                .versions
                .keys()
                .copied()
                .find(|version| !protected.contains(&Some(*version)));
            match oldest {
                Some(version) => {
                    self.versions.remove(&version);
                }
                None => break,
            }
        }
    }

    /// A decision about this supervisor's model, stamped with what serves after it.
    pub(super) fn decision(
        &self,
        time_unix_ms: u64,
        version: Option<u64>,
        action: Action,
        by: Actor,
        reason: String,
        metrics: DecisionMetrics,
    ) -> Decision {
        Decision {
            time_unix_ms,
            model: self.model.clone(),
            version,
            action,
            by,
            reason,
            metrics,
            serving: self.serving(),
            pinned: self.pinned,
        }
    }
}

/// The status, action and reason of a version refused for `reason`.
fn rejection(reason: String) -> (VersionStatus, Action, String) {
    let status = VersionStatus::Rejected {
        reason: reason.clone(),
    };
    (status, Action::Rejected, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::fixtures::{
        NOW, close, config, evidence, publish, published, supervisor, two_good,
    };

    /// The decision about `version` among `decisions`.
    fn about(decisions: &[Decision], version: u64) -> &Decision {
        decisions
            .iter()
            .find(|decision| decision.version == Some(version))
            .unwrap_or_else(|| panic!("no decision about version {version}: {decisions:?}"))
    }

    #[test]
    fn a_version_waits_for_evidence_of_its_own() {
        let mut supervisor = supervisor();
        // rounds scored by no version (the untrained start) say nothing about versions 1..=3
        for version in 1..=3 {
            let decisions = publish(
                &mut supervisor,
                published(version, version - 1, vec![evidence(0, 100, 0.3)]),
            );
            assert_eq!(decisions.len(), 1);
            assert_eq!(decisions[0].action, Action::Candidate);
            assert!(decisions[0].reason.contains("no evidence of its own"));
        }
        assert_eq!(supervisor.serving(), None);
        // the examples version 1 scored arrive: it is judged on them
        let decisions = publish(
            &mut supervisor,
            published(4, 3, vec![evidence(1, 100, 0.4)]),
        );
        let first = about(&decisions, 1);
        assert_eq!(first.action, Action::Promoted, "{}", first.reason);
        let window = first.metrics.window.expect("window");
        assert_eq!(window.examples, 100);
        assert!(close(window.logloss, 0.4));
        // the running rate of 200 examples, 100 positive, before the round: ln 2
        assert!(close(first.metrics.constant.expect("constant"), 2f64.ln()));
        assert_eq!(supervisor.serving(), Some(1));
    }

    #[test]
    fn a_collapsed_model_is_flagged_and_never_promoted() {
        let mut supervisor = supervisor();
        publish(
            &mut supervisor,
            published(1, 0, vec![evidence(0, 100, 0.69)]),
        );
        // version 1 gives 0.0 to everyone: a finite logloss, since losses are clamped
        let zero = Evidence {
            min_probability: 0.0,
            max_probability: 0.0,
            extreme: 100,
            ..evidence(1, 100, 17.0)
        };
        let decisions = publish(&mut supervisor, published(2, 1, vec![zero]));
        let collapsed = about(&decisions, 1);
        assert_eq!(collapsed.action, Action::Rejected);
        assert!(
            collapsed.reason.starts_with("collapsed"),
            "{}",
            collapsed.reason
        );
        assert_eq!(collapsed.metrics.collapsed, Some(true));
        assert!(supervisor.collapsed(1));
        // all the same, away from 0 and 1, is collapsed too, even with a good logloss
        let same = Evidence {
            min_probability: 0.3,
            max_probability: 0.3,
            ..evidence(2, 100, 0.1)
        };
        let decisions = publish(&mut supervisor, published(3, 2, vec![same]));
        assert_eq!(about(&decisions, 2).action, Action::Rejected);
        assert_eq!(supervisor.serving(), None);
        assert_eq!(supervisor.state()["versions"][0]["collapsed"], true);
    }

    #[test]
    fn a_version_no_better_than_the_constant_model_is_rejected() {
        let mut supervisor = supervisor();
        publish(
            &mut supervisor,
            published(1, 0, vec![evidence(0, 100, 0.69)]),
        );
        // ln 2 = 0.6931 is the constant model's; 0.69 is within its 2% margin (0.6793)
        let decisions = publish(
            &mut supervisor,
            published(2, 1, vec![evidence(1, 100, 0.69)]),
        );
        let judged = about(&decisions, 1);
        assert_eq!(judged.action, Action::Rejected);
        assert!(
            judged.reason.contains("no better than the constant model"),
            "{}",
            judged.reason
        );
        assert!(close(
            judged.metrics.limit.expect("limit"),
            2f64.ln() * 0.98
        ));
        // the constant model follows the positive rate: with 10% positives it scores 0.325,
        // so 0.45 does not beat it either
        let mut rarely = Supervisor::new("m", config()).expect("config");
        let rare = |scored_by, logloss| Evidence {
            positives: 10,
            ..evidence(scored_by, 100, logloss)
        };
        publish(&mut rarely, published(1, 0, vec![rare(0, 0.69)]));
        publish(&mut rarely, published(2, 1, vec![rare(0, 0.69)]));
        let decisions = publish(&mut rarely, published(3, 2, vec![rare(1, 0.45)]));
        let judged = about(&decisions, 1);
        assert_eq!(judged.action, Action::Rejected, "{}", judged.reason);
        let constant = judged.metrics.constant.expect("constant");
        let rate: f64 = 21.0 / 202.0;
        let expected = -(0.1 * rate.ln() + 0.9 * (1.0 - rate).ln());
        assert!(close(constant, expected), "{constant} against {expected}");
    }

    #[test]
    fn non_finite_weights_or_losses_never_serve() {
        let mut supervisor = supervisor();
        two_good(&mut supervisor);
        let nan_weights = Published {
            finite: false,
            ..published(4, 3, vec![evidence(3, 100, 0.4)])
        };
        let decisions = publish(&mut supervisor, nan_weights);
        assert_eq!(about(&decisions, 4).action, Action::Rejected);
        assert_eq!(
            about(&decisions, 4).reason,
            "its weights are not all finite"
        );
        assert_eq!(about(&decisions, 3).action, Action::Promoted);
        // version 4 scored NaN: it was already rejected; version 5 scores NaN too
        publish(
            &mut supervisor,
            published(5, 4, vec![evidence(4, 100, f64::NAN)]),
        );
        let decisions = publish(
            &mut supervisor,
            published(6, 5, vec![evidence(5, 100, f64::NAN)]),
        );
        assert_eq!(about(&decisions, 5).action, Action::Rejected);
        assert!(about(&decisions, 5).reason.contains("not a number"));
        assert_eq!(supervisor.serving(), Some(3));
        assert!(matches!(
            supervisor.pin(4, NOW),
            Err(SupervisorError::NotFinite { version: 4, .. })
        ));
    }

    #[test]
    fn a_worse_version_is_rejected_against_the_chosen_figure() {
        let mut supervisor = supervisor();
        two_good(&mut supervisor);
        // version 3's window: (v2's 0.5 + v3's 0.65) / 2 = 0.575 > 0.5 * 1.05
        let decisions = publish(
            &mut supervisor,
            published(4, 3, vec![evidence(3, 100, 0.65)]),
        );
        let judged = about(&decisions, 3);
        assert_eq!(judged.action, Action::Rejected, "{}", judged.reason);
        let reference = judged.metrics.reference.expect("reference");
        assert_eq!(
            (reference.version, reference.kind),
            (2, ReferenceKind::Baseline)
        );
        assert!(close(judged.metrics.window.expect("window").logloss, 0.575));
        assert!(close(judged.metrics.limit.expect("limit"), 0.525));
        assert_eq!(supervisor.serving(), Some(2));
    }

    #[test]
    fn live_evidence_no_better_than_the_constant_model_rolls_back() {
        let mut supervisor = supervisor();
        two_good(&mut supervisor);
        // version 2 keeps scoring (nothing newer is promoted); its first evidence judged it,
        // later evidence is live: 0.6 is within its figure's limit (0.625) and beats ln 2
        let decisions = publish(
            &mut supervisor,
            published(4, 3, vec![evidence(2, 100, 0.6)]),
        );
        assert!(
            decisions
                .iter()
                .all(|decision| decision.action != Action::RolledBack)
        );
        // live (0.6 + 0.8) / 2 = 0.7 >= the constant model's ln 2 on the same examples
        let decisions = publish(
            &mut supervisor,
            published(5, 4, vec![evidence(2, 100, 0.8)]),
        );
        let rollback = decisions
            .iter()
            .find(|decision| decision.action == Action::RolledBack)
            .expect("a rollback");
        assert_eq!((rollback.version, rollback.serving), (Some(2), Some(1)));
        assert!(
            rollback
                .reason
                .contains("no better than the constant model"),
            "{}",
            rollback.reason
        );
        let live = rollback.metrics.live.expect("live");
        assert_eq!(live.examples, 200);
        assert!(close(live.logloss, 0.7));
        assert_eq!(
            supervisor.status(2).map(VersionStatus::name),
            Some("rolled_back")
        );
        // a manual rollback needs a good version before version 1
        assert!(matches!(
            supervisor.rollback(NOW),
            Err(SupervisorError::NoEarlierGoodVersion {
                serving: Some(1),
                ..
            })
        ));
    }

    #[test]
    fn live_evidence_past_the_figure_rolls_back() {
        let mut supervisor = supervisor();
        two_good(&mut supervisor);
        // (0.6 + 0.72) / 2 = 0.66 beats ln 2 but is past 0.5 * 1.25
        publish(
            &mut supervisor,
            published(4, 3, vec![evidence(2, 100, 0.6)]),
        );
        let decisions = publish(
            &mut supervisor,
            published(5, 4, vec![evidence(2, 100, 0.72)]),
        );
        let rollback = decisions
            .iter()
            .find(|decision| decision.action == Action::RolledBack)
            .expect("a rollback");
        assert!(
            rollback.reason.contains("exceeds its figure"),
            "{}",
            rollback.reason
        );
        assert!(close(rollback.metrics.limit.expect("limit"), 0.625));
        assert_eq!(supervisor.serving(), Some(1));
    }

    #[test]
    fn a_pin_holds_across_better_versions_until_unpinned() {
        let mut supervisor = supervisor();
        two_good(&mut supervisor);
        let pinned = supervisor.pin(1, NOW).expect("pin");
        assert_eq!(
            (
                pinned[0].action,
                pinned[0].by,
                pinned[0].serving,
                pinned[0].pinned
            ),
            (Action::Pinned, Actor::Operator, Some(1), Some(1))
        );
        let decisions = publish(
            &mut supervisor,
            published(4, 3, vec![evidence(3, 100, 0.4)]),
        );
        assert_eq!(about(&decisions, 3).action, Action::HeldByPin);
        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(supervisor.chosen(), Some(3));
        let state = supervisor.state();
        assert_eq!(state["serving"], 1);
        assert_eq!(state["chosen"], 3);
        assert_eq!(state["pinned"], 1);
        let unpinned = supervisor.unpin(NOW).expect("unpin");
        assert_eq!(
            (unpinned[0].action, unpinned[0].serving),
            (Action::Unpinned, Some(3))
        );
        assert!(matches!(
            supervisor.unpin(NOW),
            Err(SupervisorError::NotPinned { .. })
        ));
        assert!(matches!(
            supervisor.pin(99, NOW),
            Err(SupervisorError::UnknownVersion { version: 99, .. })
        ));
        // a manual rollback goes to the good version before
        let rollback = supervisor.rollback(NOW).expect("rollback");
        assert_eq!(
            (rollback[0].version, rollback[0].serving),
            (Some(3), Some(2))
        );
    }

    #[test]
    fn a_restored_supervisor_keeps_rejections_and_the_old_choice_until_beaten() {
        let mut first = supervisor();
        let mut decisions = Vec::new();
        for version in [
            published(1, 0, vec![evidence(0, 100, 0.69)]),
            published(2, 1, vec![evidence(1, 100, 0.5)]),
            published(3, 2, vec![evidence(2, 100, 0.9)]),
            published(4, 3, vec![evidence(3, 100, 0.5)]),
        ] {
            decisions.extend(publish(&mut first, version));
        }
        assert_eq!(first.serving(), Some(1));
        assert_eq!(first.status(2).map(VersionStatus::name), Some("rejected"));

        // a new run: versions 1..=4 are in the store and fit the spec
        let mut restarted = supervisor();
        let servable = BTreeSet::from([1, 2, 3, 4]);
        assert_eq!(
            restarted.restore(&decisions, &servable, &BTreeSet::new()),
            4
        );
        assert_eq!(restarted.serving(), Some(1));
        assert_eq!(
            restarted.status(2).map(VersionStatus::name),
            Some("rejected")
        );
        assert_eq!(restarted.status(1), Some(&VersionStatus::Promoted));
        assert!(matches!(
            restarted.on_published(published(4, 0, vec![]), NOW),
            Err(SupervisorError::VersionNotNewer { newest: 4, .. })
        ));
        // the new run starts from scratch: version 5 scores worse than version 1's figure
        publish(
            &mut restarted,
            published(5, 0, vec![evidence(0, 100, 0.69)]),
        );
        publish(
            &mut restarted,
            published(6, 1, vec![evidence(0, 100, 0.69)]),
        );
        let decisions = publish(&mut restarted, published(7, 2, vec![evidence(5, 100, 0.6)]));
        assert_eq!(about(&decisions, 5).action, Action::Rejected);
        assert_eq!(restarted.serving(), Some(1));
        // version 6 beats it on evidence of its own: it serves
        let decisions = publish(
            &mut restarted,
            published(8, 3, vec![evidence(6, 100, 0.45)]),
        );
        let promoted = about(&decisions, 6);
        assert_eq!(promoted.action, Action::Promoted, "{}", promoted.reason);
        assert_eq!(promoted.metrics.reference.expect("reference").version, 1);
        assert_eq!(restarted.serving(), Some(6));

        // a store whose versions were all rejected serves none of them after a restart
        let mut rejected = supervisor();
        let mut decisions = Vec::new();
        decisions.extend(publish(
            &mut rejected,
            published(1, 0, vec![evidence(0, 100, 0.69)]),
        ));
        decisions.extend(publish(
            &mut rejected,
            published(2, 1, vec![evidence(1, 100, 3.84)]),
        ));
        assert_eq!(rejected.serving(), None);
        let mut restarted = supervisor();
        restarted.restore(&decisions, &BTreeSet::from([1, 2]), &BTreeSet::new());
        assert_eq!(restarted.serving(), None);
        assert_eq!(
            restarted.status(1).map(VersionStatus::name),
            Some("rejected")
        );
    }

    #[test]
    fn a_restore_never_chooses_a_foreign_or_missing_version() {
        let mut first = supervisor();
        let mut decisions = Vec::new();
        for version in [
            published(1, 0, vec![evidence(0, 100, 0.69)]),
            published(2, 1, vec![evidence(1, 100, 0.5)]),
            published(3, 2, vec![evidence(2, 100, 0.5)]),
        ] {
            decisions.extend(publish(&mut first, version));
        }
        assert_eq!(first.serving(), Some(2));
        let mut restarted = supervisor();
        // version 2's snapshot was made for another spec: version 1 is the choice
        restarted.restore(&decisions, &BTreeSet::from([1, 3]), &BTreeSet::from([2]));
        assert_eq!(restarted.serving(), Some(1));
        assert_eq!(restarted.status(2), None);
        // neither loads: nothing serves
        let mut restarted = supervisor();
        restarted.restore(&decisions, &BTreeSet::new(), &BTreeSet::new());
        assert_eq!(restarted.serving(), None);
    }

    #[test]
    fn an_adopted_version_serves_until_beaten() {
        let mut supervisor = supervisor();
        let stored = ModelVersion {
            name: "m".into(),
            version: 10,
            epoch: 40,
            published_at: 0,
            bits: 4,
            weights: std::sync::Arc::new(dataflows::publish::model::Weights::from_dense(&[0.5])),
            metrics: RoundMetrics {
                examples: 100,
                logloss: 0.5,
                scored: Vec::new(),
            },
        };
        let adopted = supervisor.adopt(&stored, NOW).expect("adopt");
        assert_eq!(adopted[0].action, Action::Promoted);
        assert!(adopted[0].reason.starts_with("adopted from the store"));
        assert_eq!(supervisor.serving(), Some(10));
        publish(
            &mut supervisor,
            published(11, 0, vec![evidence(0, 100, 0.69)]),
        );
        let decisions = publish(
            &mut supervisor,
            published(12, 1, vec![evidence(11, 100, 0.6)]),
        );
        assert_eq!(about(&decisions, 11).action, Action::Rejected);
        assert_eq!(supervisor.serving(), Some(10));
    }

    #[test]
    fn memory_is_bounded_but_the_serving_version_is_kept() {
        let mut supervisor = Supervisor::new(
            "m",
            SupervisorConfig {
                keep_versions: 3,
                ..config()
            },
        )
        .expect("config");
        two_good(&mut supervisor);
        for version in 4..=12 {
            publish(
                &mut supervisor,
                published(version, version, vec![evidence(version - 1, 100, 5.0)]),
            );
        }
        assert_eq!(supervisor.serving(), Some(2));
        let held: Vec<u64> = supervisor.versions.keys().copied().collect();
        assert_eq!(held, [2, 11, 12]);
        assert!(supervisor.evidence.len() <= 2 * config().window_epochs);
    }

    #[test]
    fn bad_configurations_name_the_field() {
        for (config, field) in [
            (
                SupervisorConfig {
                    promote_margin: -0.1,
                    ..config()
                },
                "`promote_margin`",
            ),
            (
                SupervisorConfig {
                    window_epochs: 0,
                    ..config()
                },
                "`window_epochs`",
            ),
            (
                SupervisorConfig {
                    baseline_margin: 1.0,
                    ..config()
                },
                "`baseline_margin`",
            ),
        ] {
            let error = Supervisor::new("m", config).expect_err("invalid");
            assert!(error.to_string().contains(field), "{error}");
        }
        assert!(SupervisorConfig::default().validate().is_ok());
    }
}
