//! Test fixtures shared by the policy's, the decisions' and the control file's tests: a
//! supervisor with small windows, and versions to publish to it.

use dataflows::publish::model::RoundMetrics;

use super::decisions::Decision;
use super::policy::{Published, Supervisor, SupervisorConfig};

/// The time every test decision is stamped with.
pub const NOW: u64 = 1_770_000_000_000;

/// Rules with a window of two epochs and trust in 100 live examples.
pub fn config() -> SupervisorConfig {
    SupervisorConfig {
        promote_margin: 0.05,
        rollback_threshold: 0.25,
        window_epochs: 2,
        min_live_examples: 100,
        keep_versions: 1000,
    }
}

/// A supervisor of model `m` under [`config`].
pub fn supervisor() -> Supervisor {
    Supervisor::new("m", config()).expect("valid config")
}

/// A version with finite weights and the given round.
pub fn published(version: u64, epoch: u64, examples: u64, logloss: f64) -> Published {
    Published {
        version,
        epoch,
        metrics: RoundMetrics { examples, logloss },
        finite: true,
    }
}

/// Publishes a version and returns its one decision.
pub fn publish(supervisor: &mut Supervisor, version: Published) -> Decision {
    let mut decisions = supervisor
        .on_published(version, NOW)
        .expect("newer version");
    assert_eq!(decisions.len(), 1);
    decisions.remove(0)
}

/// Whether two figures agree but for rounding.
pub fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-12
}
