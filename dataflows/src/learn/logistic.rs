//! The logistic model every optimizer learns: hashed sparse features, a weight per
//! coordinate, the logistic link and the log loss. Plain Rust: no timely in here.

/// A sparse feature vector: `(coordinate, value)` pairs.
pub type Features = Vec<(u32, f32)>;

/// Predictions are clamped away from 0 and 1 by this much, so the log loss stays finite.
pub const PROBABILITY_EPSILON: f64 = 1e-15;

/// The logistic function.
pub fn sigmoid(logit: f64) -> f64 {
    1.0 / (1.0 + (-logit).exp())
}

/// The log loss of predicting `probability` for `label`.
pub fn log_loss(probability: f64, label: bool) -> f64 {
    let p = probability.clamp(PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON);
    if label { -p.ln() } else { -(1.0 - p).ln() }
}

/// The probability a weight vector assigns to a feature vector.
///
/// Coordinates outside the weights count as zero, so a feature the model has never seen
/// changes nothing, and never fails.
pub fn predict(weights: &[f32], features: &[(u32, f32)]) -> f64 {
    let logit: f64 = features
        .iter()
        .map(|&(index, value)| {
            let weight = weights.get(index as usize).copied().unwrap_or(0.0);
            f64::from(weight) * f64::from(value)
        })
        .sum();
    sigmoid(logit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_loss_is_finite_at_the_extremes() {
        assert!(log_loss(0.0, true).is_finite());
        assert!(log_loss(1.0, false).is_finite());
        assert!((log_loss(0.5, true) - std::f64::consts::LN_2).abs() < 1e-12);
    }

    #[test]
    fn unseen_coordinates_predict_nothing() {
        assert_eq!(predict(&[1.0, 2.0], &[(1_000_000, 5.0)]), 0.5);
        assert_eq!(predict(&[1.0, 2.0], &[(1, 0.5)]), sigmoid(1.0));
    }
}
