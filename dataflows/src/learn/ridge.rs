//! Exact ridge regression: sufficient statistics kept in fixed point, and their solution.
//!
//! Plain Rust, no timely: [`super::exact`] drives it from the dataflow.
//!
//! Every example contributes its moments `x xᵀ`, `x y`, `y²` and a count of 1, computed on
//! values rounded to [`FIXED_POINT`] and multiplied as `i128`. Sums of integers are exact and
//! the same in any order, so a retraction subtracts exactly what its insertion added, and the
//! totals are identical however the examples were spread over workers. Solving
//! `(XᵀX + λI) w = Xᵀy` from the totals converted to `f64` in a fixed order then gives
//! bit-identical weights on every layout.
//!
//! Totals are summed with wrapping arithmetic: intermediate overflow cancels out, and the
//! result is exact whenever the true total fits in an `i128`. Values are limited to
//! [`MAX_ABS_VALUE`], so a product is below 2^100 and 2^27 examples of the largest values
//! still fit.

use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::fact::Value;
use crate::fixed::{FIXED_POINT, to_fixed};
use crate::plan::ExactPlan;

/// The largest magnitude of a target or input value; an example with a larger one is skipped.
pub const MAX_ABS_VALUE: f64 = 1.0e9;

/// One example's values in fixed point: the inputs (then 1 for the intercept) and the target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FixedRow {
    /// The inputs, in weight order, times [`FIXED_POINT`].
    pub x: Vec<i64>,
    /// The target, times [`FIXED_POINT`].
    pub y: i64,
}

impl FixedRow {
    /// Reads an example's fields: a missing input counts as 0. `None` when the target is
    /// missing or not a number, or a value is not finite or beyond [`MAX_ABS_VALUE`].
    pub fn from_fields(plan: &ExactPlan, row: &[Value]) -> Option<Self> {
        let fixed = |value: f64| {
            (value.is_finite() && value.abs() <= MAX_ABS_VALUE)
                .then(|| to_fixed(value))
                .flatten()
        };
        let y = fixed(row.get(plan.target_field)?.number()?)?;
        let mut x = Vec::with_capacity(plan.weights());
        for &field in &plan.input_fields {
            match row.get(field).and_then(Value::number) {
                Some(value) => x.push(fixed(value)?),
                None => x.push(0),
            }
        }
        if plan.intercept {
            x.push(FIXED_POINT as i64);
        }
        Some(FixedRow { x, y })
    }

    /// The inputs as numbers.
    pub fn inputs(&self) -> Vec<f64> {
        self.x.iter().map(|&x| x as f64 / FIXED_POINT).collect()
    }

    /// The target as a number.
    pub fn target(&self) -> f64 {
        self.y as f64 / FIXED_POINT
    }
}

/// Exact sums of the moments of a set of examples, each counted with its multiplicity.
///
/// Layout of `sums`: the upper triangle of `XᵀX` row by row, then `Xᵀy`, then `yᵀy`, then
/// the count; all in units of [`FIXED_POINT`] squared, but the count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moments {
    weights: usize,
    sums: Vec<i128>,
}

impl Moments {
    /// No examples, for `weights` weights.
    pub fn new(weights: usize) -> Self {
        let triangle = weights * (weights + 1) / 2;
        Moments {
            weights,
            sums: vec![0; triangle + weights + 2],
        }
    }

    fn triangle(&self) -> usize {
        self.weights * (self.weights + 1) / 2
    }

    /// Adds `times` copies of an example (a negative `times` withdraws them).
    pub fn add_row(&mut self, row: &FixedRow, times: i64) {
        let times = i128::from(times);
        let y = i128::from(row.y);
        let mut slot = 0;
        for (i, &xi) in row.x.iter().enumerate() {
            let xi = i128::from(xi);
            for &xj in &row.x[i..] {
                let product = xi * i128::from(xj);
                self.sums[slot] = self.sums[slot].wrapping_add(product.wrapping_mul(times));
                slot += 1;
            }
        }
        let triangle = self.triangle();
        for (i, &xi) in row.x.iter().enumerate() {
            let product = i128::from(xi) * y;
            self.sums[triangle + i] =
                self.sums[triangle + i].wrapping_add(product.wrapping_mul(times));
        }
        let yy = triangle + self.weights;
        self.sums[yy] = self.sums[yy].wrapping_add((y * y).wrapping_mul(times));
        self.sums[yy + 1] = self.sums[yy + 1].wrapping_add(times);
    }

    /// Adds another set of moments over the same weights.
    pub fn add(&mut self, other: &Moments) {
        for (sum, more) in self.sums.iter_mut().zip(&other.sums) {
            *sum = sum.wrapping_add(*more);
        }
    }

    /// Whether no example has been counted (or every one has been withdrawn).
    pub fn is_zero(&self) -> bool {
        self.sums.iter().all(|&sum| sum == 0)
    }

    /// `Σ xᵢ xⱼ`, in fixed point squared.
    pub fn xx(&self, i: usize, j: usize) -> i128 {
        let (i, j) = (i.min(j), i.max(j));
        // rows before `i` hold weights, weights - 1, ... entries
        let row_start = i * self.weights - i * (i.saturating_sub(1)) / 2;
        self.sums[row_start + (j - i)]
    }

    /// `Σ xᵢ y`, in fixed point squared.
    pub fn xy(&self, i: usize) -> i128 {
        self.sums[self.triangle() + i]
    }

    /// `Σ y²`, in fixed point squared.
    pub fn yy(&self) -> i128 {
        self.sums[self.triangle() + self.weights]
    }

    /// The number of examples counted.
    pub fn count(&self) -> i128 {
        self.sums[self.triangle() + self.weights + 1]
    }

    /// The normal equations `(XᵀX + l2 I, Xᵀy)` in the values' own units.
    pub fn normal_equations(&self, l2: f64) -> (Array2<f64>, Array1<f64>) {
        let scale = FIXED_POINT * FIXED_POINT;
        let d = self.weights;
        let a = Array2::from_shape_fn((d, d), |(i, j)| {
            self.xx(i, j) as f64 / scale + if i == j { l2 } else { 0.0 }
        });
        let b = Array1::from_shape_fn(d, |i| self.xy(i) as f64 / scale);
        (a, b)
    }

    /// Root mean squared error of `weights` over the examples counted; `None` without any.
    ///
    /// It expands `Σ (y - w·x)²` over the sums, so it is computed in `f64` and may lose
    /// digits when the fit is close; it is never negative.
    pub fn rmse(&self, weights: &[f64]) -> Option<f64> {
        let count = self.count();
        if count <= 0 {
            return None;
        }
        let scale = FIXED_POINT * FIXED_POINT;
        let mut sse = self.yy() as f64 / scale;
        for (i, &wi) in weights.iter().enumerate() {
            sse -= 2.0 * wi * (self.xy(i) as f64 / scale);
            for (j, &wj) in weights.iter().enumerate() {
                sse += wi * wj * (self.xx(i, j) as f64 / scale);
            }
        }
        Some((sse.max(0.0) / count as f64).sqrt())
    }
}

/// Solves `a w = b` for a symmetric positive definite `a` by Cholesky factorisation, in a
/// fixed order of operations. `None` if `a` is not numerically positive definite.
pub fn solve_spd(a: &Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let d = b.len();
    // a = l lᵀ, l lower triangular
    let mut l = Array2::<f64>::zeros((d, d));
    for j in 0..d {
        let mut diagonal = a[[j, j]];
        for k in 0..j {
            diagonal -= l[[j, k]] * l[[j, k]];
        }
        if !(diagonal > 0.0 && diagonal.is_finite()) {
            return None;
        }
        let pivot = diagonal.sqrt();
        l[[j, j]] = pivot;
        for i in j + 1..d {
            let mut value = a[[i, j]];
            for k in 0..j {
                value -= l[[i, k]] * l[[j, k]];
            }
            l[[i, j]] = value / pivot;
        }
    }
    // l z = b, then lᵀ w = z
    let mut z = Array1::<f64>::zeros(d);
    for i in 0..d {
        let mut value = b[i];
        for k in 0..i {
            value -= l[[i, k]] * z[k];
        }
        z[i] = value / l[[i, i]];
    }
    let mut w = Array1::<f64>::zeros(d);
    for i in (0..d).rev() {
        let mut value = z[i];
        for k in i + 1..d {
            value -= l[[k, i]] * w[k];
        }
        w[i] = value / l[[i, i]];
    }
    w.iter().all(|value| value.is_finite()).then_some(w)
}

/// The exact regression as it stands after an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactModel {
    /// The weights, in input order, the intercept last.
    pub weights: Vec<f64>,
    /// The live examples the weights were solved from.
    pub examples: i64,
    /// Root mean squared error of the weights over those examples.
    pub rmse_train: Option<f64>,
    /// False if the system could not be solved numerically; the weights are then the
    /// previous epoch's.
    pub solved: bool,
}

/// Progressive root mean squared error over a set of examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegressionScores {
    /// Examples scored.
    pub examples: u64,
    /// Root mean squared error of their predictions; `None` without examples.
    pub rmse: Option<f64>,
}

/// What the exact regression reports at the close of an epoch in which its examples changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExactReport {
    /// The epoch.
    pub epoch: u64,
    /// The model solved from every live example up to the epoch's end.
    pub model: ExactModel,
    /// The epoch's new examples, each scored by the model of the previous epochs before it
    /// learned from them.
    pub epoch_scores: RegressionScores,
    /// The same over every epoch so far.
    pub running: RegressionScores,
    /// Live examples left out because their target is missing or a value is out of range.
    pub skipped: i64,
}

/// One epoch's changes: the moments added and withdrawn, the new examples to score, and the
/// examples skipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochDelta {
    /// The epoch.
    pub epoch: u64,
    /// The moments of the epoch's insertions minus its withdrawals.
    pub moments: Moments,
    /// The examples inserted in the epoch, with their ids, to score.
    pub inserted: Vec<(u64, FixedRow)>,
    /// Skipped examples inserted minus withdrawn.
    pub skipped: i64,
}

impl EpochDelta {
    /// No changes yet, for a regression of `weights` weights.
    pub fn new(epoch: u64, weights: usize) -> Self {
        EpochDelta {
            epoch,
            moments: Moments::new(weights),
            inserted: Vec::new(),
            skipped: 0,
        }
    }

    /// Records an example (`times` > 0) or its withdrawal (`times` < 0); `row` is `None` for
    /// an example without a usable target or inputs.
    pub fn record(&mut self, id: u64, row: Option<FixedRow>, times: i64) {
        let Some(row) = row else {
            self.skipped += times;
            return;
        };
        self.moments.add_row(&row, times);
        for _ in 0..times.max(0) {
            self.inserted.push((id, row.clone()));
        }
    }

    /// Folds in another part of the same epoch.
    pub fn merge(&mut self, mut other: EpochDelta) {
        self.moments.add(&other.moments);
        self.inserted.append(&mut other.inserted);
        self.skipped += other.skipped;
    }
}

/// The learner: the exact totals, the current weights, and the running score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ridge {
    l2: f64,
    totals: Moments,
    weights: Vec<f64>,
    skipped: i64,
    squared_error: f64,
    scored: u64,
}

impl Ridge {
    /// A learner with no examples, whose weights are all zero.
    pub fn new(plan: &ExactPlan) -> Self {
        let weights = plan.weights();
        Ridge {
            l2: plan.l2,
            totals: Moments::new(weights),
            weights: vec![0.0; weights],
            skipped: 0,
            squared_error: 0.0,
            scored: 0,
        }
    }

    /// The current weights.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The exact totals so far.
    pub fn totals(&self) -> &Moments {
        &self.totals
    }

    /// The prediction of the current weights for one example.
    pub fn predict(&self, row: &FixedRow) -> f64 {
        self.weights
            .iter()
            .zip(row.inputs())
            .map(|(w, x)| w * x)
            .sum()
    }

    /// Closes an epoch: scores its new examples with the current weights (in id order, so the
    /// sums do not depend on the layout), adds its changes to the totals, and solves again.
    pub fn close_epoch(&mut self, mut delta: EpochDelta) -> ExactReport {
        delta.inserted.sort();
        let mut squared_error = 0.0;
        for (_, row) in &delta.inserted {
            let error = row.target() - self.predict(row);
            squared_error += error * error;
        }
        let examples = delta.inserted.len() as u64;
        self.squared_error += squared_error;
        self.scored += examples;
        let rmse = |sum: f64, count: u64| (count > 0).then(|| (sum / count as f64).sqrt());

        self.totals.add(&delta.moments);
        self.skipped += delta.skipped;
        let (a, b) = self.totals.normal_equations(self.l2);
        let solved = match solve_spd(&a, &b) {
            Some(weights) => {
                self.weights = weights.to_vec();
                true
            }
            None => false,
        };
        ExactReport {
            epoch: delta.epoch,
            model: ExactModel {
                weights: self.weights.clone(),
                examples: i64::try_from(self.totals.count()).unwrap_or(i64::MAX),
                rmse_train: self.totals.rmse(&self.weights),
                solved,
            },
            epoch_scores: RegressionScores {
                examples,
                rmse: rmse(squared_error, examples),
            },
            running: RegressionScores {
                examples: self.scored,
                rmse: rmse(self.squared_error, self.scored),
            },
            skipped: self.skipped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact::Real;

    fn plan(inputs: usize, intercept: bool, l2: f64) -> ExactPlan {
        ExactPlan {
            name: "r".into(),
            target_field: 0,
            input_fields: (1..=inputs).collect(),
            intercept,
            l2,
        }
    }

    fn row(plan: &ExactPlan, y: f64, x: &[f64]) -> FixedRow {
        let mut fields = vec![Value::Real(Real(y))];
        fields.extend(x.iter().map(|&x| Value::Real(Real(x))));
        FixedRow::from_fields(plan, &fields).expect("usable row")
    }

    #[test]
    fn rows_are_read_in_fixed_point() {
        let plan = plan(2, true, 1.0);
        let fields = [Value::Int(3), Value::Real(Real(0.5)), Value::Missing];
        let row = FixedRow::from_fields(&plan, &fields).expect("usable");
        assert_eq!(row.x, vec![500_000, 0, 1_000_000]);
        assert_eq!(row.y, 3_000_000);
        // no target, a text target, an out-of-range input, a non-finite input
        assert_eq!(FixedRow::from_fields(&plan, &[Value::Missing]), None);
        assert_eq!(FixedRow::from_fields(&plan, &[Value::Text(7)]), None);
        let huge = [Value::Int(1), Value::Real(Real(2e9))];
        assert_eq!(FixedRow::from_fields(&plan, &huge), None);
        let nan = [Value::Int(1), Value::Real(Real(f64::NAN))];
        assert_eq!(FixedRow::from_fields(&plan, &nan), None);
    }

    #[test]
    fn moments_are_exact_sums_of_products() {
        let plan = plan(2, false, 1.0);
        let mut moments = Moments::new(2);
        // (x1, x2, y) = (1, 2, 3) and (0.5, -1, 2)
        moments.add_row(&row(&plan, 3.0, &[1.0, 2.0]), 1);
        moments.add_row(&row(&plan, 2.0, &[0.5, -1.0]), 1);
        let unit = 1_000_000_000_000i128; // 1.0 in fixed point squared
        assert_eq!(moments.xx(0, 0), unit + unit / 4);
        assert_eq!(moments.xx(0, 1), 2 * unit - unit / 2);
        assert_eq!(moments.xx(1, 0), moments.xx(0, 1));
        assert_eq!(moments.xx(1, 1), 5 * unit);
        assert_eq!(moments.xy(0), 4 * unit);
        assert_eq!(moments.xy(1), 4 * unit);
        assert_eq!(moments.yy(), 13 * unit);
        assert_eq!(moments.count(), 2);
        // withdrawing both leaves nothing, in either order
        moments.add_row(&row(&plan, 3.0, &[1.0, 2.0]), -1);
        moments.add_row(&row(&plan, 2.0, &[0.5, -1.0]), -1);
        assert!(moments.is_zero());
    }

    #[test]
    fn wrapping_sums_are_exact_when_the_total_fits() {
        let plan = plan(1, false, 1.0);
        let big = row(&plan, MAX_ABS_VALUE, &[MAX_ABS_VALUE]);
        let mut moments = Moments::new(1);
        // far more than fits at once, then all but one withdrawn: exactly one remains
        moments.add_row(&big, 1_000_000_000);
        moments.add_row(&big, -999_999_999);
        let mut one = Moments::new(1);
        one.add_row(&big, 1);
        assert_eq!(moments, one);
    }

    #[test]
    fn cholesky_solves_a_hand_worked_system() {
        // [[4, 2], [2, 3]] w = [2, 1]  =>  w = [0.5, 0]
        let a = ndarray::arr2(&[[4.0, 2.0], [2.0, 3.0]]);
        let b = ndarray::arr1(&[2.0, 1.0]);
        assert_eq!(solve_spd(&a, &b), Some(ndarray::arr1(&[0.5, 0.0])));
        // [[4, 2], [2, 5]] w = [8, 12]  =>  w = [1, 2]
        let a = ndarray::arr2(&[[4.0, 2.0], [2.0, 5.0]]);
        assert_eq!(
            solve_spd(&a, &ndarray::arr1(&[8.0, 12.0])),
            Some(ndarray::arr1(&[1.0, 2.0]))
        );
        // not positive definite
        let a = ndarray::arr2(&[[1.0, 2.0], [2.0, 1.0]]);
        assert_eq!(solve_spd(&a, &ndarray::arr1(&[1.0, 1.0])), None);
    }

    #[test]
    fn ridge_on_a_hand_worked_case() {
        // y = x for x = 1, 2 with an intercept and l2 = 1:
        // XᵀX + I = [[5+1, 3], [3, 2+1]] = [[6, 3], [3, 3]], Xᵀy = [5, 3]
        // => w = [2/3, 1/3]: the prediction at x = 1 is 1, at x = 2 is 5/3
        let plan = plan(1, true, 1.0);
        let mut ridge = Ridge::new(&plan);
        let mut delta = EpochDelta::new(0, 2);
        delta.record(1, Some(row(&plan, 1.0, &[1.0])), 1);
        delta.record(2, Some(row(&plan, 2.0, &[2.0])), 1);
        delta.record(3, None, 1);
        let report = ridge.close_epoch(delta);
        let weights = &report.model.weights;
        assert!((weights[0] - 2.0 / 3.0).abs() < 1e-15, "{weights:?}");
        assert!((weights[1] - 1.0 / 3.0).abs() < 1e-15, "{weights:?}");
        assert_eq!(report.model.examples, 2);
        assert_eq!(report.skipped, 1);
        // scored by the zero model before learning: errors 1 and 2
        assert_eq!(report.epoch_scores.examples, 2);
        assert_eq!(report.epoch_scores.rmse, Some((5.0f64 / 2.0).sqrt()));
        // in-sample residuals 0 and 1/3
        let rmse_train = report.model.rmse_train.expect("examples");
        assert!((rmse_train - (1.0f64 / 18.0).sqrt()).abs() < 1e-12);

        // next epoch: x = 3, y = 2 is scored by w = [2/3, 1/3] (prediction 7/3, error -1/3)
        let mut delta = EpochDelta::new(1, 2);
        delta.record(4, Some(row(&plan, 2.0, &[3.0])), 1);
        let report = ridge.close_epoch(delta);
        let epoch_rmse = report.epoch_scores.rmse.expect("scored");
        assert!((epoch_rmse - 1.0 / 3.0).abs() < 1e-15);
        let running = report.running.rmse.expect("scored");
        assert!((running - ((5.0 + 1.0 / 9.0) / 3.0f64).sqrt()).abs() < 1e-15);
        // XᵀX + I = [[15, 6], [6, 4]], Xᵀy = [11, 5] => w = [7/12, 3/8]
        let weights = &report.model.weights;
        assert!((weights[0] - 7.0 / 12.0).abs() < 1e-15, "{weights:?}");
        assert!((weights[1] - 3.0 / 8.0).abs() < 1e-15, "{weights:?}");
    }

    #[test]
    fn a_withdrawal_restores_the_weights_bit_for_bit() {
        let plan = plan(2, true, 0.5);
        let rows = [(0.3, [1.25, -0.5]), (1.7, [0.1, 2.0]), (-0.4, [3.0, 0.7])];
        let solve = |with_extra: bool, withdraw: bool| {
            let mut ridge = Ridge::new(&plan);
            let mut delta = EpochDelta::new(0, 3);
            for (id, (y, x)) in rows.iter().enumerate() {
                delta.record(id as u64, Some(row(&plan, *y, x)), 1);
            }
            if with_extra {
                delta.record(9, Some(row(&plan, 100.0, &[-7.0, 0.001])), 1);
            }
            ridge.close_epoch(delta);
            let mut delta = EpochDelta::new(1, 3);
            if withdraw {
                delta.record(9, Some(row(&plan, 100.0, &[-7.0, 0.001])), -1);
            }
            ridge.close_epoch(delta).model.weights
        };
        let clean = solve(false, false);
        let withdrawn = solve(true, true);
        assert_eq!(
            clean.iter().map(|w| w.to_bits()).collect::<Vec<_>>(),
            withdrawn.iter().map(|w| w.to_bits()).collect::<Vec<_>>()
        );
        assert_ne!(solve(true, false), clean);
    }
}
