//! Test fixtures shared by the policy's, the decisions' and the control file's tests: a
//! supervisor with small windows, and versions to publish to it with the evidence of their
//! rounds.

use dataflows::publish::model::{Evidence, RoundMetrics};

use super::decisions::Decision;
use super::policy::{Published, Supervisor, SupervisorConfig};

/// The time every test decision is stamped with.
pub const NOW: u64 = 1_770_000_000_000;

/// Rules with a window of two epochs and trust in 100 live examples.
pub fn config() -> SupervisorConfig {
    SupervisorConfig {
        promote_margin: 0.05,
        baseline_margin: 0.02,
        rollback_threshold: 0.25,
        window_epochs: 2,
        min_live_examples: 100,
        keep_versions: 1000,
        fallback: super::policy::Fallback::None,
    }
}

/// A supervisor of model `m` under [`config`].
pub fn supervisor() -> Supervisor {
    Supervisor::new("m", config()).expect("valid config")
}

/// `examples` scored by `scored_by`, half of them positive, with mean `logloss`, and
/// predictions spread over 0.1..=0.9. The constant model scores half positives at ln 2.
pub fn evidence(scored_by: u64, examples: u64, logloss: f64) -> Evidence {
    Evidence {
        scored_by,
        examples,
        positives: examples / 2,
        loss_sum: logloss * examples as f64,
        min_probability: 0.1,
        max_probability: 0.9,
        extreme: 0,
    }
}

/// A version with finite weights whose round holds `scored`.
pub fn published(version: u64, epoch: u64, scored: Vec<Evidence>) -> Published {
    let examples: u64 = scored.iter().map(|evidence| evidence.examples).sum();
    let loss: f64 = scored.iter().map(|evidence| evidence.loss_sum).sum();
    Published {
        version,
        epoch,
        metrics: RoundMetrics {
            examples,
            logloss: if examples > 0 {
                loss / examples as f64
            } else {
                0.0
            },
            scored,
        },
        finite: true,
    }
}

/// Publishes a version and returns its decisions: the new version's first, then those its
/// round's evidence led to.
pub fn publish(supervisor: &mut Supervisor, version: Published) -> Vec<Decision> {
    supervisor
        .on_published(version, NOW)
        .expect("newer version")
}

/// Whether two figures agree but for rounding.
pub fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-9
}

/// Publishes versions 1, 2 and 3, one an epoch, each round holding 100 examples scored by the
/// version before at logloss 0.5 (the constant model's is ln 2): versions 1 and 2 are
/// promoted on their own evidence, 2 serves, and 3 is a candidate.
pub fn two_good(supervisor: &mut Supervisor) {
    publish(supervisor, published(1, 0, vec![evidence(0, 100, 0.69)]));
    publish(supervisor, published(2, 1, vec![evidence(1, 100, 0.5)]));
    publish(supervisor, published(3, 2, vec![evidence(2, 100, 0.5)]));
    assert_eq!(supervisor.serving(), Some(2));
}
