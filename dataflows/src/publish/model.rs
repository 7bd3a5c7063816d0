//! Published models: immutable versions of a learner's weights, with what produced them.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fact::Time;
use crate::learn::logistic;

/// Progressive metrics of the training round that produced a version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundMetrics {
    /// Examples learned from in the round.
    pub examples: u64,
    /// Their mean progressive log loss (each scored before it was learned).
    pub logloss: f64,
    /// The same examples, split by the version that scored them (the one servable at their
    /// event time; `0` before any), ascending by version. With delayed labels, a round's
    /// examples were scored by versions published a label horizon earlier: this is how a
    /// version's own evidence reaches the supervisor.
    #[serde(default)]
    pub scored: Vec<Evidence>,
}

/// The examples of a round that one version scored: what they say about that version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The version that scored them (`0`: none was servable yet).
    pub scored_by: u64,
    /// Examples.
    pub examples: u64,
    /// Of which positive.
    pub positives: u64,
    /// The sum of their log losses.
    pub loss_sum: f64,
    /// The smallest probability given.
    pub min_probability: f64,
    /// The largest probability given.
    pub max_probability: f64,
    /// Probabilities within `1e-6` of 0 or 1.
    pub extreme: u64,
}

impl Evidence {
    /// One example scored by `scored_by` with `probability`.
    pub fn of(scored_by: u64, probability: f64, label: bool, loss: f64) -> Evidence {
        Evidence {
            scored_by,
            examples: 1,
            positives: u64::from(label),
            loss_sum: loss,
            min_probability: probability,
            max_probability: probability,
            extreme: u64::from(!(1e-6..=1.0 - 1e-6).contains(&probability)),
        }
    }

    /// Adds `other` (of the same version) in. Sums, minimum and maximum: any order of
    /// workers gives the same counts; the loss sum is added in the caller's (worker) order.
    pub fn absorb(&mut self, other: &Evidence) {
        self.examples += other.examples;
        self.positives += other.positives;
        self.loss_sum += other.loss_sum;
        self.min_probability = self.min_probability.min(other.min_probability);
        self.max_probability = self.max_probability.max(other.max_probability);
        self.extreme += other.extreme;
    }

    /// Adds `entry` into an ascending list of evidence by version.
    pub fn add_to(list: &mut Vec<Evidence>, entry: &Evidence) {
        match list.binary_search_by_key(&entry.scored_by, |evidence| evidence.scored_by) {
            Ok(at) => list[at].absorb(entry),
            Err(at) => list.insert(at, *entry),
        }
    }
}

/// A model's weights, sparse: the coordinates whose weight is not `+0.0`, ascending, with
/// their weights. Hashed models touch few of their coordinates, so a published version costs
/// what the model has learned, not what it could hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    indices: Vec<u32>,
    values: Vec<f32>,
}

impl Weights {
    /// The weights of a dense vector. `-0.0` and NaN are kept bit for bit; only `+0.0` is
    /// left out.
    pub fn from_dense(dense: &[f32]) -> Self {
        let (indices, values) = dense
            .iter()
            .enumerate()
            .filter(|(_, weight)| weight.to_bits() != 0)
            .map(|(index, &weight)| (index as u32, weight))
            .unzip();
        Weights { indices, values }
    }

    /// The weights of a dense vector at `candidates` (ascending), leaving out `+0.0`. Every
    /// coordinate not among the candidates must hold `+0.0`.
    pub fn gather(dense: &[f32], candidates: &[u32]) -> Self {
        let (indices, values) = candidates
            .iter()
            .filter_map(|&index| dense.get(index as usize).map(|&weight| (index, weight)))
            .filter(|(_, weight)| weight.to_bits() != 0)
            .unzip();
        Weights { indices, values }
    }

    /// Weights from coordinates and values, which must be as [`Weights::from_dense`] makes
    /// them: as many of each, coordinates strictly ascending, no `+0.0` value.
    pub fn from_sorted(indices: Vec<u32>, values: Vec<f32>) -> Result<Self, String> {
        if indices.len() != values.len() {
            return Err(format!(
                "{} coordinates but {} weights",
                indices.len(),
                values.len()
            ));
        }
        for (position, pair) in indices.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                return Err(format!(
                    "coordinates are not ascending: entry {} is {}, after {}",
                    position + 1,
                    pair[1],
                    pair[0]
                ));
            }
        }
        if let Some(position) = values.iter().position(|value| value.to_bits() == 0) {
            return Err(format!(
                "entry {position} (coordinate {}) stores +0.0, which the sparse form leaves out",
                indices[position]
            ));
        }
        Ok(Weights { indices, values })
    }

    /// The coordinates with a weight, ascending.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Their weights.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The weight of a coordinate; zero for one the model has never changed.
    pub fn get(&self, index: u32) -> f32 {
        self.indices
            .binary_search(&index)
            .map_or(0.0, |position| self.values[position])
    }

    /// How many coordinates have a weight.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether no coordinate has a weight.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
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
    /// The weights.
    pub weights: Arc<Weights>,
    /// How the round that produced it went.
    pub metrics: RoundMetrics,
}

impl ModelVersion {
    /// The probability the version assigns to a feature vector.
    pub fn predict(&self, features: &[(u32, f32)]) -> f64 {
        let logit: f64 = features
            .iter()
            .map(|&(index, value)| f64::from(self.weights.get(index)) * f64::from(value))
            .sum();
        logistic::sigmoid(logit)
    }

    /// Whether every weight is a finite number.
    pub fn is_finite(&self) -> bool {
        self.weights
            .values()
            .iter()
            .all(|weight| weight.is_finite())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_weights_predict_as_the_dense_ones() {
        let dense = vec![0.5, 0.0, -0.0, 2.0, 0.0, f32::NAN, 0.0, -1.25];
        let weights = Weights::from_dense(&dense);
        assert_eq!(weights.indices(), &[0, 2, 3, 5, 7]);
        for (index, value) in dense.iter().enumerate() {
            assert_eq!(weights.get(index as u32).to_bits(), value.to_bits());
        }
        assert_eq!(weights.get(1_000), 0.0);
        let features = [(0, 1.0), (3, 0.5), (7, 2.0), (1_000, 9.0)];
        let dense_prediction = logistic::predict(&dense, &features);
        let version = ModelVersion {
            name: "m".into(),
            version: 1,
            epoch: 0,
            published_at: 0,
            bits: 3,
            weights: Arc::new(weights),
            metrics: RoundMetrics::default(),
        };
        assert_eq!(version.predict(&features), dense_prediction);
        assert!(!version.is_finite());
    }

    #[test]
    fn only_the_canonical_sparse_form_is_accepted() {
        assert!(Weights::from_sorted(vec![1, 4], vec![0.5, -1.0]).is_ok());
        assert!(Weights::from_sorted(vec![4, 1], vec![0.5, -1.0]).is_err());
        assert!(Weights::from_sorted(vec![1, 1], vec![0.5, -1.0]).is_err());
        assert!(Weights::from_sorted(vec![1], vec![0.0]).is_err());
        assert!(Weights::from_sorted(vec![1, 2], vec![0.5]).is_err());
    }
}
