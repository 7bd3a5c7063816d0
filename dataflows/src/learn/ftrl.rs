//! FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction: a View from the Trenches"):
//! online logistic regression that follows the regularised leader, per coordinate.
//!
//! Each coordinate keeps `z_i`, the sum of its gradients corrected for how its weight moved,
//! and `n_i`, the sum of its squared gradients. The weight is a closed form of the two:
//!
//! ```text
//! w_i = 0                                                   if |z_i| <= l1
//! w_i = -(z_i - sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)   otherwise
//! ```
//!
//! and a step with gradient `g_i = (p - y) x_i` does
//! `sigma = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha`, `z_i += g_i - sigma w_i`, `n_i += g_i^2`.
//! L1 makes weights exactly zero until a coordinate has earned one; the per-coordinate rate
//! `alpha / (beta + sqrt(n_i))` is AdaGrad's.

use serde::{Deserialize, Serialize};

use super::logistic::predict;

/// FTRL-Proximal's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FtrlHyper {
    /// The per-coordinate rate's numerator.
    pub alpha: f64,
    /// Added to `sqrt(n_i)` in the rate's denominator; keeps the first steps finite.
    pub beta: f64,
    /// L1 regularisation strength: `|z_i|` must exceed it for the weight to leave zero.
    pub l1: f64,
    /// L2 regularisation strength.
    pub l2: f64,
}

/// The learner's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ftrl {
    /// One weight per coordinate, always the closed form of `z` and `n`.
    pub weights: Vec<f32>,
    /// One `z` per coordinate.
    pub z: Vec<f32>,
    /// One sum of squared gradients per coordinate.
    pub n: Vec<f32>,
    /// Hyperparameters.
    pub hyper: FtrlHyper,
}

impl Ftrl {
    /// A zero model of `2^bits` coordinates.
    pub fn new(bits: u32, hyper: FtrlHyper) -> Self {
        let size = 1usize << bits;
        Ftrl {
            weights: vec![0.0; size],
            z: vec![0.0; size],
            n: vec![0.0; size],
            hyper,
        }
    }

    /// The current probability of a positive label.
    pub fn predict(&self, features: &[(u32, f32)]) -> f64 {
        predict(&self.weights, features)
    }

    /// The weight that `z` and `n` determine.
    pub fn weight(&self, z: f64, n: f64) -> f32 {
        let FtrlHyper {
            alpha,
            beta,
            l1,
            l2,
        } = self.hyper;
        if z.abs() <= l1 {
            return 0.0;
        }
        (-(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)) as f32
    }

    /// Takes one step on one labelled example, calling `touched` with every coordinate it
    /// changes. Returns the prediction made before the step.
    pub fn learn(
        &mut self,
        features: &[(u32, f32)],
        label: bool,
        mut touched: impl FnMut(u32),
    ) -> f64 {
        let probability = self.predict(features);
        let error = probability - if label { 1.0 } else { 0.0 };
        for &(index, value) in features {
            let slot = index as usize;
            if slot >= self.weights.len() {
                continue;
            }
            let gradient = error * f64::from(value);
            if gradient == 0.0 {
                continue;
            }
            let n = f64::from(self.n[slot]);
            let grown = n + gradient * gradient;
            let sigma = (grown.sqrt() - n.sqrt()) / self.hyper.alpha;
            let z = f64::from(self.z[slot]) + gradient - sigma * f64::from(self.weights[slot]);
            self.z[slot] = z as f32;
            self.n[slot] = grown as f32;
            self.weights[slot] = self.weight(f64::from(self.z[slot]), f64::from(self.n[slot]));
            touched(index);
        }
        probability
    }

    /// Sets a coordinate's state, and its weight from it.
    pub fn set(&mut self, slot: usize, z: f32, n: f32) {
        self.z[slot] = z;
        self.n[slot] = n;
        self.weights[slot] = self.weight(f64::from(z), f64::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::logistic::sigmoid;

    const HYPER: FtrlHyper = FtrlHyper {
        alpha: 0.5,
        beta: 1.0,
        l1: 0.0,
        l2: 0.0,
    };

    #[test]
    fn the_first_step_is_the_closed_form_of_one_gradient() {
        // From zero, p = 0.5 and the label is positive: g = -0.5 x.
        // Coordinate 0 (x = 1): g = -0.5, sigma = sqrt(0.25) / 0.5 = 1, z = -0.5 - 1 * 0 = -0.5,
        // n = 0.25, w = 0.5 / ((1 + 0.5) / 0.5) = 1/6.
        // Coordinate 3 (x = 2): g = -1, z = -1, n = 1, w = 1 / ((1 + 1) / 0.5) = 1/4.
        let mut model = Ftrl::new(4, HYPER);
        let before = model.learn(&[(0, 1.0), (3, 2.0)], true, |_| {});
        assert_eq!(before, 0.5);
        assert_eq!(model.z[0], -0.5);
        assert_eq!(model.n[0], 0.25);
        assert_eq!(model.weights[0], (1.0f64 / 6.0) as f32);
        assert_eq!(model.z[3], -1.0);
        assert_eq!(model.n[3], 1.0);
        assert_eq!(model.weights[3], 0.25);
    }

    #[test]
    fn the_second_step_corrects_z_by_how_far_the_weight_moved() {
        let mut model = Ftrl::new(2, HYPER);
        model.learn(&[(1, 1.0)], true, |_| {});
        // Now w = 1/6, p = sigmoid(1/6), g = p - 1, n' = 0.25 + g^2,
        // sigma = (sqrt(n') - 0.5) / 0.5, z' = -0.5 + g - sigma / 6,
        // w' = -z' / ((1 + sqrt(n')) / 0.5).
        let g = sigmoid(1.0 / 6.0) - 1.0;
        let n = 0.25 + g * g;
        let sigma = (n.sqrt() - 0.5) / 0.5;
        let z = -0.5 + g - sigma / 6.0;
        let expected = -z / ((1.0 + n.sqrt()) / 0.5);
        model.learn(&[(1, 1.0)], true, |_| {});
        assert!((f64::from(model.weights[1]) - expected).abs() < 1e-6);
        assert!((f64::from(model.z[1]) - z).abs() < 1e-6);
    }

    #[test]
    fn l1_holds_a_weight_at_zero_until_z_exceeds_it_and_l2_shrinks_it() {
        // One step as above leaves z = -0.5, n = 0.25: below l1 = 0.6 the weight stays zero.
        let mut sparse = Ftrl::new(2, FtrlHyper { l1: 0.6, ..HYPER });
        let mut touched = Vec::new();
        sparse.learn(&[(1, 1.0)], true, |index| touched.push(index));
        assert_eq!(
            touched,
            vec![1],
            "z and n changed even though the weight did not"
        );
        assert_eq!(sparse.weights[1], 0.0);
        assert_eq!(sparse.z[1], -0.5);
        // With l1 = 0.2: w = (0.5 - 0.2) / ((1 + 0.5) / 0.5) = 0.1.
        let mut shrunk = Ftrl::new(2, FtrlHyper { l1: 0.2, ..HYPER });
        shrunk.learn(&[(1, 1.0)], true, |_| {});
        assert!((shrunk.weights[1] - 0.1).abs() < 1e-7);
        // With l2 = 1: w = 0.5 / (3 + 1) = 0.125.
        let mut ridge = Ftrl::new(2, FtrlHyper { l2: 1.0, ..HYPER });
        ridge.learn(&[(1, 1.0)], true, |_| {});
        assert_eq!(ridge.weights[1], 0.125);
    }

    #[test]
    fn unseen_and_out_of_range_coordinates_are_harmless() {
        let mut model = Ftrl::new(2, HYPER);
        let mut touched = Vec::new();
        model.learn(&[(1_000_000, 5.0), (2, 1.0)], false, |index| {
            touched.push(index)
        });
        assert_eq!(touched, vec![2]);
        assert_eq!(model.weights[2], (-1.0f64 / 6.0) as f32);
    }
}
