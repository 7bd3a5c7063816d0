//! The optimizers a logistic model learns with, behind one enum: what each predicts and
//! learns, what a worker's replica contributes to the merge of a round, and how a merged
//! coordinate is applied. Plain Rust: no timely in here.
//!
//! How each optimizer's state merges across workers (see [`super::merge`] for the operator):
//!
//! | optimizer | weight | additive state (summed deltas) | other |
//! |---|---|---|---|
//! | AdaGrad | the rule of [`WeightMerge`] | `G` | – |
//! | FTRL-Proximal | recomputed from the merged `z` and `n` | `z`, `n` | – |
//! | SGD | the rule of [`WeightMerge`] | `G` | `N`: the max; `t`, `S`: summed deltas |
//!
//! FTRL's `z` is a sum of (corrected) gradients and `n` a sum of squared gradients, so adding
//! the replicas' deltas is what one learner that saw every gradient would hold, except that
//! each gradient was taken against a model up to one round stale. Its weight, a closed form
//! of `z` and `n`, needs no rule of its own.

use serde::{Deserialize, Serialize};

use crate::learn::adagrad::{AdaGrad, AdaGradHyper};
use crate::learn::ftrl::{Ftrl, FtrlHyper};
use crate::learn::logistic::predict;
use crate::learn::sgd::{Sgd, SgdHyper};

/// Which optimizer, with its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimizerPlan {
    /// AdaGrad ([`crate::learn::adagrad`]).
    AdaGrad(AdaGradHyper),
    /// FTRL-Proximal ([`crate::learn::ftrl`]).
    Ftrl(FtrlHyper),
    /// Per-coordinate SGD, adaptive and normalised or plain ([`crate::learn::sgd`]).
    Sgd(SgdHyper),
}

/// How the weight of a coordinate that several replicas changed in a round is merged, for
/// the optimizers that carry weights (AdaGrad and SGD; FTRL derives its weight from its state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightMerge {
    /// The average of the replicas' weights, each weighted by the updates it made: shared
    /// coordinates move by the average step, which cannot overshoot.
    #[default]
    Average,
    /// The base weight plus the sum of the replicas' steps: shared coordinates move as far as
    /// one learner taking every step would (against a model up to a round stale).
    SumSteps,
}

/// What one replica did to one coordinate in a round, relative to the round's base.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The replica's weight.
    pub weight: f32,
    /// The replica's weight minus the base's.
    pub step: f64,
    /// The growth of the additive state: AdaGrad and SGD `[G, 0]`, FTRL `[z, n]`.
    pub sums: [f64; 2],
    /// SGD's largest `|x|` seen; 0 for the others.
    pub normalizer: f32,
}

/// A coordinate's merged weight, by the [`WeightMerge`] rule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum MergedWeight {
    /// The new weight.
    Value(f32),
    /// The sum of the steps, to add to the base weight.
    Step(f64),
}

/// A coordinate's merged state, as every worker applies it to its base.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergedCoordinate {
    /// The weight.
    pub weight: MergedWeight,
    /// The summed growth of the additive state.
    pub sums: [f64; 2],
    /// The largest normaliser of any replica.
    pub normalizer: f32,
}

/// A learner of any kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    /// AdaGrad.
    AdaGrad(AdaGrad),
    /// FTRL-Proximal.
    Ftrl(Ftrl),
    /// Per-coordinate SGD.
    Sgd(Sgd),
}

impl Optimizer {
    /// A zero model of `2^bits` coordinates.
    pub fn new(bits: u32, plan: &OptimizerPlan) -> Self {
        match *plan {
            OptimizerPlan::AdaGrad(hyper) => Optimizer::AdaGrad(AdaGrad::new(bits, hyper)),
            OptimizerPlan::Ftrl(hyper) => Optimizer::Ftrl(Ftrl::new(bits, hyper)),
            OptimizerPlan::Sgd(hyper) => Optimizer::Sgd(Sgd::new(bits, hyper)),
        }
    }

    /// The weights, one per coordinate.
    pub fn weights(&self) -> &[f32] {
        match self {
            Optimizer::AdaGrad(model) => &model.weights,
            Optimizer::Ftrl(model) => &model.weights,
            Optimizer::Sgd(model) => &model.weights,
        }
    }

    /// The current probability of a positive label.
    pub fn predict(&self, features: &[(u32, f32)]) -> f64 {
        predict(self.weights(), features)
    }

    /// Takes one step on one labelled example, calling `touched` with every coordinate whose
    /// state it changes. Returns the prediction made before the step.
    pub fn learn(&mut self, features: &[(u32, f32)], label: bool, touched: impl FnMut(u32)) -> f64 {
        match self {
            Optimizer::AdaGrad(model) => model.learn(features, label, touched),
            Optimizer::Ftrl(model) => model.learn(features, label, touched),
            Optimizer::Sgd(model) => model.learn(features, label, touched),
        }
    }

    /// What this replica did to coordinate `slot` since `base`, a model of the same kind.
    pub fn contribution(&self, base: &Optimizer, slot: usize) -> Contribution {
        let growth = |now: &[f32], then: &[f32]| f64::from(now[slot]) - f64::from(then[slot]);
        let weight = self.weights()[slot];
        let step = f64::from(weight) - f64::from(base.weights()[slot]);
        let (sums, normalizer) = match (self, base) {
            (Optimizer::AdaGrad(now), Optimizer::AdaGrad(then)) => (
                [growth(&now.squared_gradients, &then.squared_gradients), 0.0],
                0.0,
            ),
            (Optimizer::Ftrl(now), Optimizer::Ftrl(then)) => {
                ([growth(&now.z, &then.z), growth(&now.n, &then.n)], 0.0)
            }
            (Optimizer::Sgd(now), Optimizer::Sgd(then)) => (
                [growth(&now.squared_gradients, &then.squared_gradients), 0.0],
                now.normalizers[slot],
            ),
            _ => unreachable!("a replica and its base are of one kind"),
        };
        Contribution {
            weight,
            step,
            sums,
            normalizer,
        }
    }

    /// The growth of the model-wide state since `base`: SGD's examples `t` and norm sum `S`.
    pub fn totals_growth(&self, base: &Optimizer) -> [f64; 2] {
        match (self, base) {
            (Optimizer::Sgd(now), Optimizer::Sgd(then)) => {
                [now.examples - then.examples, now.norm_sum - then.norm_sum]
            }
            _ => [0.0, 0.0],
        }
    }

    /// Applies a merged coordinate to this model, the base it was merged against.
    pub fn apply(&mut self, slot: usize, merged: &MergedCoordinate) {
        let add = |value: f32, delta: f64| (f64::from(value) + delta) as f32;
        let weight = |old: f32| match merged.weight {
            MergedWeight::Value(weight) => weight,
            MergedWeight::Step(step) => add(old, step),
        };
        match self {
            Optimizer::AdaGrad(model) => {
                model.weights[slot] = weight(model.weights[slot]);
                model.squared_gradients[slot] = add(model.squared_gradients[slot], merged.sums[0]);
            }
            Optimizer::Ftrl(model) => {
                let z = add(model.z[slot], merged.sums[0]);
                let n = add(model.n[slot], merged.sums[1]);
                model.set(slot, z, n);
            }
            Optimizer::Sgd(model) => {
                model.weights[slot] = weight(model.weights[slot]);
                model.squared_gradients[slot] = add(model.squared_gradients[slot], merged.sums[0]);
                model.normalizers[slot] = model.normalizers[slot].max(merged.normalizer);
            }
        }
    }

    /// Adds the summed growth of the model-wide state.
    pub fn apply_totals(&mut self, growth: [f64; 2]) {
        if let Optimizer::Sgd(model) = self {
            model.examples += growth[0];
            model.norm_sum += growth[1];
        }
    }

    /// Copies coordinate `slot` (weight and state) from `other`, a model of the same kind.
    pub fn copy_coordinate(&mut self, other: &Optimizer, slot: usize) {
        match (self, other) {
            (Optimizer::AdaGrad(to), Optimizer::AdaGrad(from)) => {
                to.weights[slot] = from.weights[slot];
                to.squared_gradients[slot] = from.squared_gradients[slot];
            }
            (Optimizer::Ftrl(to), Optimizer::Ftrl(from)) => {
                to.weights[slot] = from.weights[slot];
                to.z[slot] = from.z[slot];
                to.n[slot] = from.n[slot];
            }
            (Optimizer::Sgd(to), Optimizer::Sgd(from)) => {
                to.weights[slot] = from.weights[slot];
                to.squared_gradients[slot] = from.squared_gradients[slot];
                to.normalizers[slot] = from.normalizers[slot];
            }
            _ => unreachable!("a replica and its base are of one kind"),
        }
    }

    /// Copies the model-wide state from `other`.
    pub fn copy_totals(&mut self, other: &Optimizer) {
        if let (Optimizer::Sgd(to), Optimizer::Sgd(from)) = (self, other) {
            to.examples = from.examples;
            to.norm_sum = from.norm_sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANS: [OptimizerPlan; 3] = [
        OptimizerPlan::AdaGrad(AdaGradHyper {
            learning_rate: 0.5,
            l2: 0.0,
        }),
        OptimizerPlan::Ftrl(FtrlHyper {
            alpha: 0.5,
            beta: 1.0,
            l1: 0.0,
            l2: 0.0,
        }),
        OptimizerPlan::Sgd(SgdHyper {
            learning_rate: 0.5,
            power_t: 0.5,
            adaptive: true,
            normalized: true,
            invariant: true,
        }),
    ];

    #[test]
    fn one_contribution_applied_to_the_base_is_the_replica() {
        // A merge of one worker's round must be sequential training, for every optimizer.
        for plan in &PLANS {
            let base = {
                let mut base = Optimizer::new(4, plan);
                base.learn(&[(0, 1.0), (5, 3.0)], true, |_| {});
                base
            };
            let mut replica = base.clone();
            let mut touched = Vec::new();
            for label in [false, true, false] {
                replica.learn(&[(0, 1.0), (5, 2.0), (9, 0.5)], label, |index| {
                    touched.push(index)
                });
            }
            touched.sort_unstable();
            touched.dedup();
            let mut merged = base.clone();
            for &coordinate in &touched {
                let slot = coordinate as usize;
                let contribution = replica.contribution(&base, slot);
                let applied = MergedCoordinate {
                    weight: MergedWeight::Value(contribution.weight),
                    sums: contribution.sums,
                    normalizer: contribution.normalizer,
                };
                merged.apply(slot, &applied);
            }
            merged.apply_totals(replica.totals_growth(&base));
            assert_eq!(merged, replica, "{plan:?}");
        }
    }
}
