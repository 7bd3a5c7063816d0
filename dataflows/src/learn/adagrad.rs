//! AdaGrad (Duchi et al. 2011): online logistic regression with an adaptive per-coordinate
//! learning rate.
//!
//! A coordinate `i` with feature value `x_i` takes the gradient `g_i = (p - y) x_i + l2 w_i` of
//! the log loss and moves by `-rate g_i / sqrt(G_i)`, where `G_i` is the sum of the squared
//! gradients it has seen, this one included. Rare coordinates (one dog among thousands) keep
//! large steps; common ones (the intercept, the hour of day) settle.

use serde::{Deserialize, Serialize};

use super::logistic::predict;

/// Hyperparameters of the update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaGradHyper {
    /// The base learning rate.
    pub learning_rate: f64,
    /// L2 regularisation strength.
    pub l2: f64,
}

/// The learner's state: weights and per-coordinate sums of squared gradients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaGrad {
    /// One weight per coordinate.
    pub weights: Vec<f32>,
    /// One sum of squared gradients per coordinate.
    pub squared_gradients: Vec<f32>,
    /// Hyperparameters.
    pub hyper: AdaGradHyper,
}

impl AdaGrad {
    /// A zero model of `2^bits` coordinates.
    pub fn new(bits: u32, hyper: AdaGradHyper) -> Self {
        let size = 1usize << bits;
        AdaGrad {
            weights: vec![0.0; size],
            squared_gradients: vec![0.0; size],
            hyper,
        }
    }

    /// The current probability of a positive label.
    pub fn predict(&self, features: &[(u32, f32)]) -> f64 {
        predict(&self.weights, features)
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
            let (Some(weight), Some(squared)) = (
                self.weights.get_mut(slot),
                self.squared_gradients.get_mut(slot),
            ) else {
                continue;
            };
            let gradient = error * f64::from(value) + self.hyper.l2 * f64::from(*weight);
            if gradient == 0.0 {
                continue;
            }
            let sum = f64::from(*squared) + gradient * gradient;
            *squared = sum as f32;
            *weight -= (self.hyper.learning_rate * gradient / sum.sqrt()) as f32;
            touched(index);
        }
        probability
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::logistic::sigmoid;

    const HYPER: AdaGradHyper = AdaGradHyper {
        learning_rate: 0.5,
        l2: 0.0,
    };

    #[test]
    fn the_first_step_moves_each_coordinate_by_the_learning_rate() {
        // From zero weights p = 0.5, so for a positive label the gradient of a coordinate with
        // value x is -0.5 x, and G = 0.25 x^2: the step is 0.5 * 0.5 x / (0.5 |x|) = 0.5.
        let mut model = AdaGrad::new(4, HYPER);
        let before = model.learn(&[(0, 1.0), (3, 2.0)], true, |_| {});
        assert_eq!(before, 0.5);
        assert_eq!(model.weights[0], 0.5);
        assert_eq!(model.weights[3], 0.5);
        assert_eq!(model.squared_gradients[0], 0.25);
        assert_eq!(model.squared_gradients[3], 1.0);
    }

    #[test]
    fn the_second_step_shrinks_with_the_accumulated_gradient() {
        let mut model = AdaGrad::new(2, HYPER);
        model.learn(&[(1, 1.0)], true, |_| {});
        // Now w = 0.5, p = sigmoid(0.5); gradient g = p - 1, G = 0.25 + g^2.
        let p = sigmoid(0.5);
        let g = p - 1.0;
        let expected = 0.5 - 0.5 * g / (0.25 + g * g).sqrt();
        model.learn(&[(1, 1.0)], true, |_| {});
        assert!((f64::from(model.weights[1]) - expected).abs() < 1e-6);
    }

    #[test]
    fn unseen_and_out_of_range_coordinates_are_harmless() {
        let mut model = AdaGrad::new(2, HYPER);
        assert_eq!(model.predict(&[(1_000_000, 5.0)]), 0.5);
        let mut touched = Vec::new();
        model.learn(&[(1_000_000, 5.0), (2, 1.0)], false, |index| {
            touched.push(index)
        });
        assert_eq!(touched, vec![2]);
        assert_eq!(model.weights[2], -0.5);
    }
}
