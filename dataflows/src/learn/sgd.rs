//! Per-coordinate SGD in the manner of Vowpal Wabbit's default update
//! (`--adaptive --normalized --invariant`, Ross, Mineiro and Langford 2013; Karampatziakis and
//! Langford 2011), and plain SGD when those are switched off.
//!
//! For an example with logit `s` and label `y`, let `d = p - y` be the log loss's derivative
//! in the logit. Each coordinate `i` with value `x_i` keeps:
//! - `G_i`, the sum of `d^2 x_i^2` (when `adaptive`);
//! - `N_i`, the largest `|x_i|` seen (when `normalized`). When it grows, the weight is scaled
//!   by `(N_old / N_new)^(2 (1 - power_t))` (`^2` without `adaptive`), as if the new scale had
//!   always been the scale.
//!
//! Its rate is `r_i = G_i^-power_t * (N_i^2)^(power_t - 1)` (adaptive and normalized),
//! `G_i^-power_t` (adaptive), `1 / N_i^2` (normalized) or `1`. The model also keeps `t`, the
//! examples learned, and `S`, the sum over them of `sum_i x_i^2 / N_i^2`: normalised, the
//! whole step is multiplied by `m = (S / t)^(power_t - 1)` (`t / S` without `adaptive`), so
//! that the average example moves the logit as an unnormalised one would. The base rate is
//! `learning_rate`, times `t^-power_t` when not `adaptive` (with `adaptive` the decay is in
//! `G_i`): `power_t = 0` keeps the rate from decaying, which a drifting stream needs.
//!
//! The step on weight `i` is `u m r_i x_i`, where `u` is the step on the logit per unit of
//! `h = sum_i m r_i x_i^2`:
//! - plain: `u = -rate d`;
//! - `invariant`: the step that many infinitesimal steps of the same total rate would take,
//!   so that a large rate never jumps past the label. With `v = ±s` (the sign of the label),
//!   the logit moves until `v' + e^v' = v + e^v + rate h`, so `u = (s' - s) / h`.

use serde::{Deserialize, Serialize};

use super::logistic::{predict, sigmoid};

/// The hyperparameters of the update.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdHyper {
    /// The base learning rate (Vowpal Wabbit's `-l`).
    pub learning_rate: f64,
    /// How fast the rate decays (Vowpal Wabbit's `--power_t`); 0 keeps it constant.
    pub power_t: f64,
    /// Per-coordinate rates from the sums of squared gradients.
    pub adaptive: bool,
    /// Per-coordinate rates scaled by the largest value each coordinate has seen.
    pub normalized: bool,
    /// Importance-invariant steps (they never overshoot the label).
    pub invariant: bool,
}

/// The learner's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    /// One weight per coordinate.
    pub weights: Vec<f32>,
    /// One sum of squared gradients per coordinate (`adaptive`).
    pub squared_gradients: Vec<f32>,
    /// The largest `|x|` each coordinate has seen (`normalized`).
    pub normalizers: Vec<f32>,
    /// Examples learned from, `t`.
    pub examples: f64,
    /// The sum over examples of their normalised squared norm, `S`.
    pub norm_sum: f64,
    /// Hyperparameters.
    pub hyper: SgdHyper,
}

impl Sgd {
    /// A zero model of `2^bits` coordinates.
    pub fn new(bits: u32, hyper: SgdHyper) -> Self {
        let size = 1usize << bits;
        Sgd {
            weights: vec![0.0; size],
            squared_gradients: vec![0.0; size],
            normalizers: vec![0.0; size],
            examples: 0.0,
            norm_sum: 0.0,
            hyper,
        }
    }

    /// The current probability of a positive label.
    pub fn predict(&self, features: &[(u32, f32)]) -> f64 {
        predict(&self.weights, features)
    }

    /// The per-coordinate rate `r_i`.
    fn rate(&self, slot: usize) -> f64 {
        let SgdHyper {
            power_t,
            adaptive,
            normalized,
            ..
        } = self.hyper;
        let mut rate = 1.0;
        if adaptive {
            rate *= f64::from(self.squared_gradients[slot]).powf(-power_t);
        }
        if normalized {
            let scale = f64::from(self.normalizers[slot]);
            let power = if adaptive { power_t - 1.0 } else { -1.0 };
            rate *= (scale * scale).powf(power);
        }
        rate
    }

    /// Takes one step on one labelled example, calling `touched` with every coordinate it
    /// changes. Returns the prediction made before the step.
    pub fn learn(
        &mut self,
        features: &[(u32, f32)],
        label: bool,
        mut touched: impl FnMut(u32),
    ) -> f64 {
        let SgdHyper {
            learning_rate,
            power_t,
            adaptive,
            normalized,
            invariant,
        } = self.hyper;
        let size = self.weights.len();
        let logit: f64 = features
            .iter()
            .filter(|&&(index, _)| (index as usize) < size)
            .map(|&(index, value)| f64::from(self.weights[index as usize]) * f64::from(value))
            .sum();
        let probability = sigmoid(logit);
        let derivative = probability - if label { 1.0 } else { 0.0 };
        if derivative == 0.0 {
            return probability;
        }
        self.examples += 1.0;

        // grow the per-coordinate state, and sum the rates times x^2
        let mut per_update = 0.0;
        let mut norm = 0.0;
        for &(index, value) in features {
            let slot = index as usize;
            if slot >= size || value == 0.0 {
                continue;
            }
            let x = f64::from(value);
            if adaptive {
                let grown =
                    f64::from(self.squared_gradients[slot]) + derivative * derivative * x * x;
                self.squared_gradients[slot] = grown as f32;
            }
            if normalized {
                let old = f64::from(self.normalizers[slot]);
                let new = x.abs();
                if new > old {
                    if old > 0.0 {
                        // as if the new scale had always been the scale
                        let power = if adaptive { 2.0 * (1.0 - power_t) } else { 2.0 };
                        let rescaled = f64::from(self.weights[slot]) * (old / new).powf(power);
                        self.weights[slot] = rescaled as f32;
                    }
                    self.normalizers[slot] = value.abs();
                }
                let scale = f64::from(self.normalizers[slot]);
                norm += x * x / (scale * scale);
            }
            per_update += x * x * self.rate(slot);
        }

        // the whole step's multiplier and base rate
        let mut multiplier = 1.0;
        if normalized {
            self.norm_sum += norm;
            let power = if adaptive { power_t - 1.0 } else { -1.0 };
            multiplier = (self.norm_sum / self.examples).powf(power);
        }
        let mut rate = learning_rate;
        if !adaptive {
            rate *= self.examples.powf(-power_t);
        }
        let per_update = per_update * multiplier;
        let step = if invariant && per_update > 0.0 {
            invariant_logit_step(logit, label, rate * per_update) / per_update
        } else {
            -rate * derivative
        };

        for &(index, value) in features {
            let slot = index as usize;
            if slot >= size || value == 0.0 {
                continue;
            }
            let moved = step * multiplier * self.rate(slot) * f64::from(value);
            self.weights[slot] = (f64::from(self.weights[slot]) + moved) as f32;
            touched(index);
        }
        probability
    }
}

/// How far the logit `s` moves towards `label` under the log loss when gradient descent runs
/// with total rate `eta` in infinitesimal steps: with `v = s` for a positive label and `-s`
/// for a negative one, `dv/dh = 1 / (1 + e^v)`, so the end `v'` solves
/// `v' + e^v' = v + e^v + eta`. Returns `s' - s`.
pub fn invariant_logit_step(logit: f64, label: bool, eta: f64) -> f64 {
    let sign = if label { 1.0 } else { -1.0 };
    let start = sign * logit;
    let target = start + start.exp() + eta;
    if !target.is_finite() {
        // the logit is already far on the label's side: a first-order step is exact enough
        return sign * eta / (1.0 + start.exp());
    }
    // Newton's method on f(v) = v + e^v - target, which is increasing and convex: from a
    // point at or right of the root it descends to the root without overshooting. The
    // first-order step lands right of the root, and so does ln(target) when target > 1.
    let mut v = start + eta / (1.0 + start.exp());
    if target > 1.0 {
        v = v.min(target.ln());
    }
    for _ in 0..64 {
        let next = v - (v + v.exp() - target) / (1.0 + v.exp());
        if next.is_nan() || next >= v {
            break;
        }
        v = next;
    }
    sign * (v - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VW: SgdHyper = SgdHyper {
        learning_rate: 0.5,
        power_t: 0.5,
        adaptive: true,
        normalized: true,
        invariant: false,
    };

    const PLAIN: SgdHyper = SgdHyper {
        learning_rate: 0.1,
        power_t: 0.0,
        adaptive: false,
        normalized: false,
        invariant: false,
    };

    #[test]
    fn plain_sgd_steps_by_the_rate_times_the_gradient() {
        // From zero p = 0.5; positive label: d = -0.5, each weight moves by 0.1 * 0.5 x.
        let mut model = Sgd::new(4, PLAIN);
        assert_eq!(model.learn(&[(0, 1.0), (3, 2.0)], true, |_| {}), 0.5);
        assert_eq!(model.weights[0], 0.05);
        assert_eq!(model.weights[3], 0.1);
        // power_t = 0: the fourth example steps as far as the first would have.
        // With power_t = 0.5 the rate is 0.1 / sqrt(t): 0.05 at t = 4.
        let mut decaying = Sgd::new(
            2,
            SgdHyper {
                power_t: 0.5,
                ..PLAIN
            },
        );
        let mut constant = Sgd::new(2, PLAIN);
        for _ in 0..3 {
            decaying.learn(&[(1, 1.0)], true, |_| {});
            constant.learn(&[(1, 1.0)], true, |_| {});
        }
        let (w_decaying, w_constant) = (decaying.weights[1], constant.weights[1]);
        let p_decaying = decaying.learn(&[(1, 1.0)], true, |_| {});
        let p_constant = constant.learn(&[(1, 1.0)], true, |_| {});
        let moved_decaying = f64::from(decaying.weights[1] - w_decaying);
        let moved_constant = f64::from(constant.weights[1] - w_constant);
        assert!((moved_decaying - 0.05 * (1.0 - p_decaying)).abs() < 1e-7);
        assert!((moved_constant - 0.1 * (1.0 - p_constant)).abs() < 1e-7);
    }

    #[test]
    fn the_vowpal_wabbit_step_is_adaptive_and_normalised() {
        // From zero, positive label: d = -0.5, d^2 = 0.25.
        // Coordinate 0 (x = 1): G = 0.25, N = 1, r = 1 / (sqrt(0.25) * 1) = 2, x^2 r = 2.
        // Coordinate 3 (x = 2): G = 0.25 * 4 = 1, N = 2, r = 1 / (1 * 2) = 0.5, x^2 r = 2.
        // S = 1 + 4/4 = 2, t = 1, m = (S / t)^-0.5 = 1/sqrt(2).
        // Step on the logit per unit h: u = 0.5 * 0.5 = 0.25.
        // w_0 = 0.25 m 2 * 1 = 0.5/sqrt(2); w_3 = 0.25 m 0.5 * 2 = 0.25/sqrt(2).
        let mut model = Sgd::new(4, VW);
        model.learn(&[(0, 1.0), (3, 2.0)], true, |_| {});
        let root_half = std::f64::consts::FRAC_1_SQRT_2;
        assert_eq!(model.squared_gradients[0], 0.25);
        assert_eq!(model.squared_gradients[3], 1.0);
        assert_eq!(model.normalizers[3], 2.0);
        assert_eq!(model.norm_sum, 2.0);
        assert!((f64::from(model.weights[0]) - 0.5 * root_half).abs() < 1e-7);
        assert!((f64::from(model.weights[3]) - 0.25 * root_half).abs() < 1e-7);
    }

    #[test]
    fn a_larger_value_rescales_the_weight_as_if_it_had_been_the_scale() {
        // Step one with x = 1 (adaptive, normalised, power_t 0.5): G = 0.25, N = 1, r = 2,
        // S = 1, m = 1, w = 0.25 * 2 = 0.5.
        // Step two with x = 4 is scored with w = 0.5: logit 2, d = sigmoid(2) - 1. Then the
        // weight is rescaled by (1/4)^(2 * 0.5) to 0.125, which keeps the logit at 0.5 on the
        // new scale.
        let mut model = Sgd::new(2, VW);
        model.learn(&[(1, 1.0)], true, |_| {});
        assert_eq!(model.weights[1], 0.5);
        let before = model.learn(&[(1, 4.0)], true, |_| {});
        assert_eq!(
            before,
            sigmoid(2.0),
            "scored with the weight before rescaling"
        );
        // Then G = 0.25 + 16 d^2, N = 4, r = 1 / (sqrt(G) 4), S = 1 + 16/16 = 2, t = 2,
        // m = (2/2)^-0.5 = 1, and w = 0.125 + 0.5 (-d) r 4.
        let d = sigmoid(2.0) - 1.0;
        let g = 0.25 + 16.0 * d * d;
        let expected = 0.125 - 0.5 * d * 4.0 / (g.sqrt() * 4.0);
        assert!((f64::from(model.weights[1]) - expected).abs() < 1e-6);
        assert_eq!(model.normalizers[1], 4.0);
    }

    #[test]
    fn the_invariant_step_solves_the_logit_equation() {
        // One fresh coordinate with x = 1 under the VW rates above has h = 2 (r = 2, m = 1).
        // From logit 0 towards a positive label with learning rate e/2, eta = e: the end
        // v' solves v' + e^v' = 0 + 1 + e, so v' = 1, and the weight is 1 (h times 1/h).
        let e = std::f64::consts::E;
        let mut model = Sgd::new(
            2,
            SgdHyper {
                learning_rate: e / 2.0,
                invariant: true,
                ..VW
            },
        );
        model.learn(&[(1, 1.0)], true, |_| {});
        assert!((f64::from(model.weights[1]) - 1.0).abs() < 1e-6);
        // the same for a negative label, mirrored
        assert!((invariant_logit_step(0.0, false, e) + 1.0).abs() < 1e-12);
        // a tiny rate is the first-order step, and a huge one never passes the label's side
        let tiny = invariant_logit_step(0.3, true, 1e-9);
        assert!((tiny - 1e-9 * (1.0 - sigmoid(0.3))).abs() < 1e-15);
        for eta in [1.0, 10.0, 1e3, 1e6, 1e300] {
            let step = invariant_logit_step(-2.0, true, eta);
            let end = -2.0 + step;
            assert!(step > 0.0 && end.is_finite(), "eta {eta}: step {step}");
            if eta < 1e6 {
                assert!((end + end.exp() - (-2.0 + (-2.0f64).exp() + eta)).abs() < 1e-9 * eta);
            }
        }
    }

    #[test]
    fn unseen_and_out_of_range_coordinates_are_harmless() {
        let mut model = Sgd::new(2, VW);
        let mut touched = Vec::new();
        model.learn(&[(1_000_000, 5.0), (2, 1.0)], false, |index| {
            touched.push(index)
        });
        assert_eq!(touched, vec![2]);
        // x = 1: r = 2, S = 1, m = 1, u = -0.5 * 0.5: w = -0.5
        assert_eq!(model.weights[2], -0.5);
    }
}
