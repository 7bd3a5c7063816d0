//! Published models: immutable versions of a learner's weights, with what produced them.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fact::Time;
use crate::learn::logistic;

/// Progressive metrics of the training round that produced a version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Examples learned from in the round.
    pub examples: u64,
    /// Their mean progressive log loss (each scored before it was learned).
    pub logloss: f64,
}

/// One immutable published version of a model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The model's name.
    pub name: String,
    /// Versions count up from 1 as training rounds change the weights.
    pub version: u64,
    /// The epoch whose close produced this version.
    pub epoch: u64,
    /// The event time from which the version is servable.
    pub published_at: Time,
    /// The model has `2^bits` weights.
    pub bits: u32,
    /// The weights, dense.
    pub weights: Arc<Vec<f32>>,
    /// How the round that produced it went.
    pub metrics: RoundMetrics,
}

impl ModelVersion {
    /// The probability the version assigns to a feature vector.
    pub fn predict(&self, features: &[(u32, f32)]) -> f64 {
        logistic::predict(&self.weights, features)
    }

    /// Whether every weight is a finite number.
    pub fn is_finite(&self) -> bool {
        self.weights.iter().all(|weight| weight.is_finite())
    }
}

// Versions are identified by name and number; the weights are never compared.
impl PartialEq for ModelVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ModelVersion {}
impl PartialOrd for ModelVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ModelVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.name, self.version).cmp(&(&other.name, other.version))
    }
}
