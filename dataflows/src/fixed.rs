//! Fixed point: real values as exact integers, and the accumulator of an aggregate.
//!
//! Sums of integers are exact and the same in any order, so an aggregate (or the exact
//! regression's statistics) kept in fixed point equals a from-scratch recomputation on every
//! worker layout, after any insertions and retractions.

/// The running state of one aggregate: `(facts counted, sum of values in fixed point)`.
///
/// It is the difference type of the feature store, so insertions and retractions add up
/// exactly, in any order and on any worker layout.
pub type Accum = (i64, i64);

/// Fixed-point scale of aggregated values: six decimal places.
pub const FIXED_POINT: f64 = 1_000_000.0;

/// A value in fixed point, rounded to the nearest unit; `None` if it does not fit.
pub fn to_fixed(value: f64) -> Option<i64> {
    let scaled = (value * FIXED_POINT).round();
    (scaled.is_finite() && scaled.abs() < 9.0e18).then_some(scaled as i64)
}
