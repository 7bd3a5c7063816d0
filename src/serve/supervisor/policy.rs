//! The supervisor's policy: which version serves, by rules on published and live metrics.
//!
//! The dataflow publishes a version at every training round and keeps training whatever
//! serves. The supervisor sees each version once, as it is published, and decides:
//!
//! - **Promotion.** A version is promoted (it becomes the supervisor's choice, which serves
//!   unless a pin overrides it) when its weights are all finite and its *window logloss* is no
//!   worse than the reference by more than `promote_margin`, relatively:
//!   `window <= reference * (1 + promote_margin)`. The window logloss is the example-weighted
//!   mean of the round loglosses of the versions published in the last `window_epochs` epochs,
//!   this one included: one round of a few examples is noise. The reference is the chosen
//!   version's live logloss over the window when it serves and has scored at least
//!   `min_live_examples` there (so a world that got harder for every model does not freeze
//!   the old one in place), and otherwise its *baseline*, its own window logloss when it was
//!   published. The first version with finite weights and a finite logloss is promoted.
//! - **Rejection.** A version with a non-finite weight, a non-finite round or window logloss,
//!   or a window logloss past the margin is rejected, and stays listed with the reason.
//! - **Rollback.** The caller reports live progressive metrics per epoch, with the version
//!   that scored them. Those scored by the serving version, over the last `window_epochs`
//!   epochs, once they cover `min_live_examples`, are compared with its baseline: past
//!   `baseline * (1 + rollback_threshold)` (or not finite), the serving version is marked
//!   rolled back and the last good version before it (promoted, never rolled back) serves.
//! - **Operators** pin a version (it serves until unpinned, whatever the rules would do;
//!   new versions are still evaluated, and one that passes becomes the choice, which serves
//!   on unpin), unpin, or roll back by hand.
//!
//! Each rule's outcome is a [`Decision`], for the caller to log ([`super::DecisionLog`]).

use std::collections::{BTreeMap, VecDeque};

use dataflows::publish::model::{ModelVersion, RoundMetrics};
use serde::Serialize;
use serde_json::{Value as Json, json};

use super::SupervisorError;
use super::decisions::{
    Action, Actor, Decision, DecisionMetrics, Reference, ReferenceKind, WindowMetrics,
};

/// The supervisor's rules, in numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SupervisorConfig {
    /// How much worse, relatively, a new version's window logloss may be than the reference
    /// and still be promoted: `0.05` allows 5% worse. Relative, so that one setting suits a
    /// data set whose logloss is 0.69 and one whose logloss is 0.2. Default 0.05: a newer
    /// version has learned from more data, and a window of a few hundred examples moves by a
    /// few percent on its own.
    pub promote_margin: f64,
    /// How much worse, relatively, the serving version's live logloss may become than its
    /// baseline before it is rolled back: `0.25` is 25% worse. Default 0.25, several times the
    /// noise of a window of `min_live_examples`, because a rollback is disruptive.
    pub rollback_threshold: f64,
    /// Epochs over which round and live loglosses are averaged, weighted by examples.
    /// Default 8.
    pub window_epochs: usize,
    /// Live metrics are trusted (for a rollback, or as the promotion reference) once the
    /// window holds at least this many examples scored by the serving version. Default 500.
    pub min_live_examples: u64,
    /// Versions whose status is remembered; older ones are forgotten (never the serving, the
    /// chosen or the pinned one), and can then no longer be pinned or rolled back to.
    /// Default 1000.
    pub keep_versions: usize,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            promote_margin: 0.05,
            rollback_threshold: 0.25,
            window_epochs: 8,
            min_live_examples: 500,
            keep_versions: 1000,
        }
    }
}

impl SupervisorConfig {
    /// Checks that the numbers make sense: margins finite and not negative, a window of at
    /// least one epoch, at least one version kept.
    pub fn validate(&self) -> Result<(), SupervisorError> {
        let invalid = |field: &'static str, reason: String| {
            Err(SupervisorError::InvalidConfig { field, reason })
        };
        for (field, value) in [
            ("promote_margin", self.promote_margin),
            ("rollback_threshold", self.rollback_threshold),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return invalid(field, format!("must be a finite number >= 0, got {value}"));
            }
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

// The window arithmetic is the policy's; the struct is a record, in `decisions`.
impl WindowMetrics {
    /// The example-weighted mean of `(epoch, examples, logloss)` entries within
    /// `first_epoch..=last_epoch`. Entries without examples carry no evidence and are left out
    /// (a round with none reports a logloss of 0).
    fn over<'a>(
        entries: impl IntoIterator<Item = &'a Round>,
        first_epoch: u64,
        last_epoch: u64,
    ) -> WindowMetrics {
        let mut examples = 0u64;
        let mut loss_sum = 0.0f64;
        for round in entries {
            if round.examples > 0 && (first_epoch..=last_epoch).contains(&round.epoch) {
                examples += round.examples;
                loss_sum += round.examples as f64 * round.logloss;
            }
        }
        WindowMetrics {
            first_epoch,
            last_epoch,
            examples,
            logloss: if examples > 0 {
                loss_sum / examples as f64
            } else {
                f64::NAN
            },
        }
    }

    /// One round's metrics as a window of one epoch.
    fn of_round(epoch: u64, metrics: RoundMetrics) -> WindowMetrics {
        WindowMetrics {
            first_epoch: epoch,
            last_epoch: epoch,
            examples: metrics.examples,
            logloss: metrics.logloss,
        }
    }
}

/// A version as the supervisor needs to know it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Published {
    /// The version number.
    pub version: u64,
    /// The epoch whose close produced it.
    pub epoch: u64,
    /// How the round that produced it went.
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
            metrics: model.metrics,
            finite: model.is_finite(),
        }
    }
}

/// Where a version stands.
#[derive(Clone, Debug, PartialEq)]
pub enum VersionStatus {
    /// Published, not decided: there was no evidence to compare.
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

/// One round's or one epoch's metrics.
#[derive(Clone, Copy, Debug)]
struct Round {
    epoch: u64,
    examples: u64,
    logloss: f64,
}

/// What the supervisor remembers of a version.
#[derive(Clone, Debug)]
struct VersionRecord {
    epoch: u64,
    round: WindowMetrics,
    window: WindowMetrics,
    finite: bool,
    status: VersionStatus,
}

impl VersionRecord {
    /// The figure the version's live metrics are compared with: its window when published.
    fn baseline(&self) -> Option<f64> {
        (self.window.examples > 0).then_some(self.window.logloss)
    }

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
    /// Round metrics of the versions published in the last `window_epochs` epochs.
    rounds: VecDeque<Round>,
    /// Live metrics scored by the serving version, since it started serving, in the window.
    live: VecDeque<Round>,
    newest_live_epoch: Option<u64>,
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
            rounds: VecDeque::new(),
            live: VecDeque::new(),
            newest_live_epoch: None,
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

    /// Evaluates a newly published version once: promotes it, rejects it, holds it behind a
    /// pin, or leaves it a candidate when there is nothing to compare. Versions must come in
    /// increasing order.
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

        // the version's window: the rounds of the last `window_epochs` epochs, its own included
        let window_epochs = self.config.window_epochs as u64;
        self.rounds.push_back(Round {
            epoch: published.epoch,
            examples: published.metrics.examples,
            logloss: published.metrics.logloss,
        });
        let newest_epoch = self.rounds.iter().map(|round| round.epoch).max();
        if let Some(newest_epoch) = newest_epoch {
            self.rounds
                .retain(|round| round.epoch + window_epochs > newest_epoch);
        }
        let first_epoch = (published.epoch + 1).saturating_sub(window_epochs);
        let window = WindowMetrics::over(&self.rounds, first_epoch, published.epoch);
        let round = WindowMetrics::of_round(published.epoch, published.metrics);
        let mut metrics = DecisionMetrics {
            round: Some(round),
            window: Some(window),
            ..DecisionMetrics::default()
        };

        // decide
        let before = self.serving();
        let (status, action, reason) = self.judge(&published, round, window, &mut metrics);
        self.versions.insert(
            published.version,
            VersionRecord {
                epoch: published.epoch,
                round,
                window,
                finite: published.finite,
                status,
            },
        );
        self.after_serving_change(before);
        self.forget_old_versions();
        Ok(vec![self.decision(
            now_unix_ms,
            Some(published.version),
            action,
            Actor::Supervisor,
            reason,
            metrics,
        )])
    }

    /// Decides about a new version, given its round and its window: its status, the action
    /// and why. A version that passes becomes the choice; `metrics` gets what it was compared
    /// with.
    fn judge(
        &mut self,
        published: &Published,
        round: WindowMetrics,
        window: WindowMetrics,
        metrics: &mut DecisionMetrics,
    ) -> (VersionStatus, Action, String) {
        if !published.finite {
            return rejection("its weights are not all finite".to_owned());
        }
        if !round.logloss.is_finite() || (window.examples > 0 && !window.logloss.is_finite()) {
            return rejection(format!(
                "its logloss is not a number (round {}, window {})",
                round.logloss, window.logloss
            ));
        }
        if self.chosen.is_none() {
            let reason = "the first version with finite weights and logloss".to_owned();
            return self.promote(published.version, reason);
        }
        if window.examples == 0 {
            let reason = format!(
                "no examples in epochs {}..={} to compare with the chosen version",
                window.first_epoch, published.epoch
            );
            let status = VersionStatus::Candidate {
                reason: reason.clone(),
            };
            return (status, Action::Candidate, reason);
        }
        let Some(reference) = self.reference() else {
            let reason = "the chosen version has no metrics to compare with".to_owned();
            return self.promote(published.version, reason);
        };
        let limit = reference.metrics.logloss * (1.0 + self.config.promote_margin);
        metrics.reference = Some(reference);
        metrics.limit = Some(limit);
        let comparison = format!(
            "window logloss {:.4} over {} examples against {:.4} ({} of version {}), limit {:.4} (margin {})",
            window.logloss,
            window.examples,
            reference.metrics.logloss,
            match reference.kind {
                ReferenceKind::Live => "live",
                ReferenceKind::Baseline => "baseline",
            },
            reference.version,
            limit,
            self.config.promote_margin
        );
        if window.logloss <= limit {
            self.promote(published.version, comparison)
        } else {
            rejection(format!("worse than allowed: {comparison}"))
        }
    }

    /// Makes `version` the choice: promoted, and serving unless a pin holds it back.
    fn promote(&mut self, version: u64, reason: String) -> (VersionStatus, Action, String) {
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

    /// What a new version is compared with: the chosen version's live window if it serves
    /// and the window holds enough examples, else its baseline; `None` without either.
    fn reference(&self) -> Option<Reference> {
        let chosen = self.chosen?;
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
        let record = self.versions.get(&chosen)?;
        record.baseline().map(|_| Reference {
            version: chosen,
            kind: ReferenceKind::Baseline,
            metrics: record.window,
        })
    }

    /// The serving version's live metrics over the window.
    fn live_window(&self) -> WindowMetrics {
        let last_epoch = self.newest_live_epoch.unwrap_or(0);
        let first_epoch = (last_epoch + 1).saturating_sub(self.config.window_epochs as u64);
        WindowMetrics::over(&self.live, first_epoch, last_epoch)
    }

    /// Reports live progressive metrics of one epoch: `examples` answered and scored by
    /// `scored_by`, with mean logloss `logloss`. Only those scored by the serving version
    /// count towards it. Rolls the serving version back when its live window has degraded past
    /// the threshold (or reports it once, when pinned or with nothing to roll back to).
    pub fn on_live_metrics(
        &mut self,
        epoch: u64,
        examples: u64,
        logloss: f64,
        scored_by: u64,
        now_unix_ms: u64,
    ) -> Vec<Decision> {
        let newest_epoch = self
            .newest_live_epoch
            .map_or(epoch, |newest| newest.max(epoch));
        self.newest_live_epoch = Some(newest_epoch);
        let window_epochs = self.config.window_epochs as u64;
        self.live
            .retain(|round| round.epoch + window_epochs > newest_epoch);
        let Some(serving) = self.serving() else {
            return Vec::new();
        };
        if scored_by != serving || examples == 0 || epoch + window_epochs <= newest_epoch {
            return Vec::new();
        }
        self.live.push_back(Round {
            epoch,
            examples,
            logloss,
        });
        if self.degradation_reported {
            return Vec::new();
        }
        let live = self.live_window();
        let Some(baseline) = self
            .versions
            .get(&serving)
            .and_then(VersionRecord::baseline)
        else {
            return Vec::new();
        };
        if live.examples < self.config.min_live_examples {
            return Vec::new();
        }
        let limit = baseline * (1.0 + self.config.rollback_threshold);
        if live.logloss <= limit {
            return Vec::new();
        }
        let metrics = DecisionMetrics {
            live: Some(live),
            baseline: Some(baseline),
            limit: Some(limit),
            ..DecisionMetrics::default()
        };
        let degradation = format!(
            "live logloss {:.4} over {} examples in epochs {}..={} exceeds the baseline {:.4} by more than {} (limit {:.4})",
            live.logloss,
            live.examples,
            live.first_epoch,
            live.last_epoch,
            baseline,
            self.config.rollback_threshold,
            limit
        );
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
                    "round": record.round,
                    "window": record.window,
                })
            })
            .collect();
        json!({
            "model": self.model,
            "serving": serving,
            "chosen": self.chosen,
            "pinned": self.pinned,
            "live": serving.map(|_| self.live_window()),
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

    use super::super::fixtures::{NOW, close, config, publish, published, supervisor};

    #[test]
    fn a_nan_version_is_never_promoted_and_the_last_good_keeps_serving() {
        let mut supervisor = supervisor();
        let first = publish(&mut supervisor, published(1, 0, 100, 0.5));
        assert_eq!(first.action, Action::Promoted);
        assert_eq!(first.serving, Some(1));

        let nan_weights = publish(
            &mut supervisor,
            Published {
                finite: false,
                ..published(2, 1, 100, 0.4)
            },
        );
        assert_eq!(nan_weights.action, Action::Rejected);
        assert_eq!(nan_weights.reason, "its weights are not all finite");
        assert_eq!(nan_weights.serving, Some(1));

        let nan_loss = publish(&mut supervisor, published(3, 5, 100, f64::NAN));
        assert_eq!(nan_loss.action, Action::Rejected);
        assert!(
            nan_loss.reason.contains("not a number"),
            "{}",
            nan_loss.reason
        );
        let infinite_loss = publish(&mut supervisor, published(4, 10, 100, f64::INFINITY));
        assert_eq!(infinite_loss.action, Action::Rejected);

        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(supervisor.status(1), Some(&VersionStatus::Promoted));
        for version in [2, 3, 4] {
            assert_eq!(
                supervisor.status(version).map(VersionStatus::name),
                Some("rejected")
            );
        }
        // a version with non-finite weights cannot be pinned either
        assert!(matches!(
            supervisor.pin(2, NOW),
            Err(SupervisorError::NotFinite { version: 2, .. })
        ));
        assert_eq!(supervisor.serving(), Some(1));
    }

    #[test]
    fn the_first_finite_version_is_promoted_after_non_finite_ones() {
        let mut supervisor = supervisor();
        let nan = Published {
            finite: false,
            ..published(1, 0, 100, 0.5)
        };
        assert_eq!(publish(&mut supervisor, nan).action, Action::Rejected);
        assert_eq!(supervisor.serving(), None);
        let first = publish(&mut supervisor, published(2, 1, 100, 2.0));
        assert_eq!(first.action, Action::Promoted);
        assert_eq!(supervisor.serving(), Some(2));
    }

    #[test]
    fn a_diverging_learner_is_rejected() {
        let mut supervisor = supervisor();
        assert_eq!(
            publish(&mut supervisor, published(1, 0, 100, 0.50)).action,
            Action::Promoted
        );
        // window (0.50 + 0.52) / 2 = 0.51 <= 0.50 * 1.05
        assert_eq!(
            publish(&mut supervisor, published(2, 1, 100, 0.52)).action,
            Action::Promoted
        );
        // window (0.52 + 0.60) / 2 = 0.56 > 0.51 * 1.05 = 0.5355
        let rising = publish(&mut supervisor, published(3, 2, 100, 0.60));
        assert_eq!(rising.action, Action::Rejected);
        let window = rising.metrics.window.expect("window");
        assert_eq!(
            (window.first_epoch, window.last_epoch, window.examples),
            (1, 2, 200)
        );
        assert!(close(window.logloss, 0.56));
        let reference = rising.metrics.reference.expect("reference");
        assert_eq!(
            (reference.version, reference.kind),
            (2, ReferenceKind::Baseline)
        );
        assert!(close(reference.metrics.logloss, 0.51));
        assert!(close(rising.metrics.limit.expect("limit"), 0.51 * 1.05));
        // (0.60 + 0.80) / 2 = 0.70
        assert_eq!(
            publish(&mut supervisor, published(4, 3, 100, 0.80)).action,
            Action::Rejected
        );
        assert_eq!(supervisor.serving(), Some(2));
        assert_eq!(
            supervisor.status(3).map(VersionStatus::name),
            Some("rejected")
        );
        assert_eq!(
            supervisor.status(4).map(VersionStatus::name),
            Some("rejected")
        );
    }

    #[test]
    fn rounds_are_weighted_by_examples() {
        let mut supervisor = supervisor();
        publish(&mut supervisor, published(1, 0, 900, 0.50));
        // 100 examples at 0.9 move the window to (900 * 0.5 + 100 * 0.9) / 1000 = 0.54,
        // past the limit of 0.5 * 1.05 = 0.525
        let noisy = publish(&mut supervisor, published(2, 1, 100, 0.90));
        assert!(close(noisy.metrics.window.expect("window").logloss, 0.54));
        assert_eq!(noisy.action, Action::Rejected);
        // ... while 16 examples at 0.9 leave it within the margin: 0.5063
        let mut supervisor = Supervisor::new("m", config()).expect("config");
        publish(&mut supervisor, published(1, 0, 900, 0.50));
        let small = publish(&mut supervisor, published(2, 1, 16, 0.90));
        assert!(close(
            small.metrics.window.expect("window").logloss,
            (900.0 * 0.5 + 16.0 * 0.9) / 916.0
        ));
        assert_eq!(small.action, Action::Promoted);
    }

    #[test]
    fn live_degradation_rolls_back_to_the_last_good_version() {
        let mut supervisor = supervisor();
        publish(&mut supervisor, published(1, 0, 100, 0.5));
        publish(&mut supervisor, published(2, 1, 100, 0.5));
        assert_eq!(supervisor.serving(), Some(2));

        // within the threshold: 0.55 <= 0.5 * 1.25
        assert!(supervisor.on_live_metrics(2, 100, 0.55, 2, NOW).is_empty());
        // scored by another version: not attributed to the serving one
        assert!(supervisor.on_live_metrics(3, 1_000, 5.0, 1, NOW).is_empty());
        // (0.55 + 0.9) / 2 = 0.725 > 0.625
        let decisions = supervisor.on_live_metrics(3, 100, 0.9, 2, NOW);
        assert_eq!(decisions.len(), 1);
        let rollback = &decisions[0];
        assert_eq!(
            (
                rollback.action,
                rollback.by,
                rollback.version,
                rollback.serving
            ),
            (Action::RolledBack, Actor::Supervisor, Some(2), Some(1))
        );
        let live = rollback.metrics.live.expect("live");
        assert_eq!(
            (live.first_epoch, live.last_epoch, live.examples),
            (2, 3, 200)
        );
        assert!(close(live.logloss, 0.725));
        assert!(close(rollback.metrics.limit.expect("limit"), 0.625));
        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(
            supervisor.status(2).map(VersionStatus::name),
            Some("rolled_back")
        );

        // version 1 starts afresh; when it degrades too there is nothing before it: reported once
        let kept = supervisor.on_live_metrics(4, 100, 0.9, 1, NOW);
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].action, kept[0].serving), (Action::Kept, Some(1)));
        assert!(supervisor.on_live_metrics(5, 100, 0.95, 1, NOW).is_empty());
        assert!(matches!(
            supervisor.rollback(NOW),
            Err(SupervisorError::NoEarlierGoodVersion {
                serving: Some(1),
                ..
            })
        ));
        // version 3 is compared with what serves, version 1, by its live figure over epochs
        // 4..=5, (0.9 + 0.95) / 2 = 0.925: 0.9 is within 0.925 * 1.05
        let third = publish(&mut supervisor, published(3, 5, 100, 0.9));
        let reference = third.metrics.reference.expect("reference");
        assert_eq!(
            (reference.version, reference.kind),
            (1, ReferenceKind::Live)
        );
        assert!(close(reference.metrics.logloss, 0.925));
        assert_eq!(third.action, Action::Promoted);
    }

    #[test]
    fn too_few_live_examples_never_roll_back() {
        let mut supervisor = supervisor();
        publish(&mut supervisor, published(1, 0, 100, 0.5));
        publish(&mut supervisor, published(2, 1, 100, 0.5));
        assert!(supervisor.on_live_metrics(2, 99, 3.0, 2, NOW).is_empty());
        assert_eq!(supervisor.serving(), Some(2));
        assert_eq!(supervisor.on_live_metrics(3, 1, 3.0, 2, NOW).len(), 1);
        assert_eq!(supervisor.serving(), Some(1));
    }

    #[test]
    fn a_world_that_got_harder_is_judged_by_the_live_figure() {
        let mut supervisor = supervisor();
        publish(&mut supervisor, published(1, 0, 100, 0.5));
        // live 0.6 over 200 examples: worse than the baseline, short of a rollback (0.625)
        assert!(supervisor.on_live_metrics(1, 100, 0.6, 1, NOW).is_empty());
        assert!(supervisor.on_live_metrics(2, 100, 0.6, 1, NOW).is_empty());
        // 0.62 is past the baseline's limit (0.525) but within the live one (0.63)
        let decision = publish(&mut supervisor, published(2, 2, 100, 0.62));
        let reference = decision.metrics.reference.expect("reference");
        assert_eq!(reference.kind, ReferenceKind::Live);
        assert!(close(reference.metrics.logloss, 0.6));
        assert_eq!(decision.action, Action::Promoted);
    }

    #[test]
    fn a_pin_holds_across_better_versions_until_unpinned() {
        let mut supervisor = supervisor();
        publish(&mut supervisor, published(1, 0, 100, 0.5));
        publish(&mut supervisor, published(2, 1, 100, 0.5));
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
        for (version, logloss) in [(3, 0.4), (4, 0.3)] {
            let held = publish(
                &mut supervisor,
                published(version, version - 1, 100, logloss),
            );
            assert_eq!(held.action, Action::HeldByPin);
            assert_eq!(held.serving, Some(1));
            assert_eq!(supervisor.chosen(), Some(version));
        }
        // degradation of the pinned version is reported, once, and changes nothing
        let degraded = supervisor.on_live_metrics(4, 200, 2.0, 1, NOW);
        assert_eq!(degraded.len(), 1);
        assert_eq!(
            (degraded[0].action, degraded[0].serving),
            (Action::HeldByPin, Some(1))
        );
        assert!(supervisor.on_live_metrics(4, 200, 2.0, 1, NOW).is_empty());
        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(supervisor.status(1), Some(&VersionStatus::Promoted));

        let state = supervisor.state();
        assert_eq!(state["serving"], 1);
        assert_eq!(state["chosen"], 4);
        assert_eq!(state["pinned"], 1);
        assert_eq!(state["versions"][0]["status"], "serving");
        assert_eq!(state["versions"][3]["status"], "promoted");

        let unpinned = supervisor.unpin(NOW).expect("unpin");
        assert_eq!(
            (unpinned[0].action, unpinned[0].serving),
            (Action::Unpinned, Some(4))
        );
        assert_eq!(supervisor.serving(), Some(4));
        assert!(matches!(
            supervisor.unpin(NOW),
            Err(SupervisorError::NotPinned { .. })
        ));
        assert!(matches!(
            supervisor.pin(99, NOW),
            Err(SupervisorError::UnknownVersion { version: 99, .. })
        ));
    }

    #[test]
    fn a_manual_rollback_needs_a_good_version_before_the_serving_one() {
        let mut supervisor = supervisor();
        assert!(matches!(
            supervisor.rollback(NOW),
            Err(SupervisorError::NoEarlierGoodVersion { serving: None, .. })
        ));
        publish(&mut supervisor, published(1, 0, 100, 0.5));
        assert!(supervisor.rollback(NOW).is_err());
        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(supervisor.status(1), Some(&VersionStatus::Promoted));

        publish(&mut supervisor, published(2, 1, 100, 0.5));
        publish(&mut supervisor, published(3, 2, 100, 0.9)); // rejected: window 0.7
        publish(&mut supervisor, published(4, 5, 100, 0.5)); // window 0.5: promoted
        assert_eq!(supervisor.serving(), Some(4));
        // pinned at 4 or not, a rollback goes to the good version before it and releases the pin
        supervisor.pin(4, NOW).expect("pin");
        let rollback = supervisor.rollback(NOW).expect("rollback");
        assert_eq!(
            (
                rollback[0].action,
                rollback[0].version,
                rollback[0].serving,
                rollback[0].pinned
            ),
            (Action::RolledBack, Some(4), Some(2), None)
        );
        assert!(supervisor.rollback(NOW).is_ok());
        assert_eq!(supervisor.serving(), Some(1));
        assert!(supervisor.rollback(NOW).is_err());
    }

    #[test]
    fn versions_must_increase() {
        let mut supervisor = supervisor();
        publish(&mut supervisor, published(5, 0, 100, 0.5));
        assert!(matches!(
            supervisor.on_published(published(5, 1, 100, 0.5), NOW),
            Err(SupervisorError::VersionNotNewer { newest: 5, .. })
        ));
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
        publish(&mut supervisor, published(1, 0, 100, 0.5));
        for version in 2..=10 {
            publish(&mut supervisor, published(version, version, 100, 5.0));
        }
        assert_eq!(supervisor.serving(), Some(1));
        assert_eq!(supervisor.status(1), Some(&VersionStatus::Promoted));
        let held: Vec<u64> = supervisor.versions.keys().copied().collect();
        assert_eq!(held, [1, 9, 10]);
        assert_eq!(
            supervisor.state()["versions"].as_array().map(Vec::len),
            Some(3)
        );
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let error = Supervisor::new(
            "m",
            SupervisorConfig {
                promote_margin: -0.1,
                ..config()
            },
        )
        .expect_err("negative margin");
        assert!(error.to_string().contains("`promote_margin`"), "{error}");
        let error = Supervisor::new(
            "m",
            SupervisorConfig {
                window_epochs: 0,
                ..config()
            },
        )
        .expect_err("empty window");
        assert!(error.to_string().contains("`window_epochs`"), "{error}");
        assert!(SupervisorConfig::default().validate().is_ok());
    }
}
