//! Test fixtures shared by the format's and the store's tests: a model with every awkward
//! weight, and what the store keeps beside it.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataflows::publish::model::{ModelVersion, RoundMetrics, Weights};

use crate::publish::SnapshotMeta;

/// A quiet NaN with a payload, which the store must keep bit for bit.
pub const NAN_WITH_PAYLOAD: u32 = 0x7fc0_1234;

/// A model of `2^bits` weights, `bits >= 3`, with ordinary weights, zeros, and every value
/// the store must keep bit for bit: a NaN with a payload, -0.0, both infinities and the
/// smallest subnormal.
pub fn model(version: u64, bits: u32) -> ModelVersion {
    let mut weights = vec![0.0f32; 1 << bits];
    for (index, weight) in weights.iter_mut().enumerate().step_by(3) {
        *weight = index as f32 * 0.25 + version as f32;
    }
    weights[1] = f32::from_bits(NAN_WITH_PAYLOAD);
    weights[2] = -0.0;
    weights[4] = f32::INFINITY;
    weights[5] = f32::NEG_INFINITY;
    weights[7] = f32::from_bits(1);
    ModelVersion {
        name: "pooch".to_owned(),
        version,
        epoch: version * 10,
        published_at: 1_700_000_000 + version,
        bits,
        weights: Arc::new(Weights::from_dense(&weights)),
        metrics: RoundMetrics {
            examples: 100 * version,
            logloss: 0.1 + 0.2 + version as f64,
            scored: Vec::new(),
        },
    }
}

/// What a pipeline knows of a version's origin.
pub fn meta() -> SnapshotMeta {
    SnapshotMeta {
        spec_hash: "9f2c4e01d3b5a7c8".to_owned(),
        features_hash: "1c2d3e4f5a6b7c8d".to_owned(),
        source_offsets: BTreeMap::from([
            ("adoptions.csv".to_owned(), 4096),
            ("dogs.csv".to_owned(), 0),
        ]),
    }
}

/// Every weight's bits, dense.
pub fn weight_bits(model: &ModelVersion) -> Vec<u32> {
    (0..1u32 << model.bits)
        .map(|index| model.weights.get(index).to_bits())
        .collect()
}
