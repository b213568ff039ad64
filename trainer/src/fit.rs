//! The fits: ridge and logistic regression with linfa, on standardised inputs, returned as engine
//! [`Linear`] functions of the raw inputs.

use augur_engine::model::Linear;
use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use linfa_linalg::cholesky::SolveCInplace;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, ShapeBuilder};

use crate::error::FitError;

/// Ridge penalty on standardised inputs: enough to keep collinear features (a count and its logarithm)
/// from trading huge weights, too little to bias a fit on thousands of rows.
pub const RIDGE_PENALTY: f64 = 1e-3;
/// L2 penalty of the logistic fit.
const LOGISTIC_PENALTY: f64 = 1e-2;

/// Per-column mean and spread, to standardise inputs before fitting and to fold the scaling back into
/// the weights after.
struct Standardizer {
    mean: Array1<f64>,
    scale: Array1<f64>,
}

impl Standardizer {
    fn fit(x: ArrayView2<f64>) -> Self {
        let mean = x.mean_axis(Axis(0)).expect("rows");
        let scale = x.std_axis(Axis(0), 0.0).mapv(|s| if s > 1e-12 { s } else { 1.0 });
        Self { mean, scale }
    }

    fn apply(&self, x: &mut Array2<f64>) {
        for ((mut column, mean), scale) in x.columns_mut().into_iter().zip(&self.mean).zip(&self.scale) {
            column.mapv_inplace(|v| (v - mean) / scale);
        }
    }

    /// The function of raw inputs equal to `intercept + weights · standardised(x)`.
    fn unscale(&self, intercept: f64, weights: &Array1<f64>) -> Linear {
        let raw = weights / &self.scale;
        Linear {
            intercept: intercept - raw.dot(&self.mean),
            weights: raw.to_vec(),
        }
    }
}

/// Ridge regression of `y` on `x` with the default penalty, the weights of the `nonnegative`
/// columns held at 0 or above. Active set: a column whose weight comes out negative is left out
/// (weight 0) and the rest refitted, the most negative first, until none is negative.
pub fn ridge(
    mut x: Array2<f64>,
    y: ArrayView1<f64>,
    nonnegative: &[usize],
    what: &str,
) -> Result<Linear, FitError> {
    loop {
        let fit = ridge_with_penalty(x.view(), y, RIDGE_PENALTY, what)?;
        let most_negative = nonnegative
            .iter()
            .copied()
            .filter(|&column| fit.weights[column] < 0.0)
            .min_by(|&a, &b| fit.weights[a].total_cmp(&fit.weights[b]));
        match most_negative {
            // A constant column gets no weight: the column is left out.
            Some(column) => x.column_mut(column).fill(0.0),
            None => return Ok(fit),
        }
    }
}

fn ridge_with_penalty(
    x: ArrayView2<f64>,
    y: ArrayView1<f64>,
    penalty: f64,
    what: &str,
) -> Result<Linear, FitError> {
    let standardizer = Standardizer::fit(x);
    // Coordinate descent walks the matrix column by column: give it columns that are contiguous.
    let mut columns = Array2::zeros(x.raw_dim().f());
    columns.assign(&x);
    standardizer.apply(&mut columns);
    let data = Dataset::new(columns, y.to_owned());
    let fitted = ElasticNet::params()
        .penalty(penalty)
        .l1_ratio(0.0)
        .tolerance(1e-6)
        .fit(&data)
        .map_err(|e| FitError::Solver {
            what: what.to_owned(),
            method: "ridge",
            reason: e.to_string(),
        })?;
    Ok(standardizer.unscale(fitted.intercept(), fitted.hyperplane()))
}

/// Logistic regression of `positive` on `x`; returns the log-odds of the positive class. The rows
/// are a case-control sample, every positive and one negative in `class_weight`, so the intercept is
/// corrected by `-ln(class_weight)` afterwards (King and Zeng's prior correction) and the
/// probabilities stay calibrated.
pub fn logistic(
    mut x: Array2<f64>,
    positive: &[bool],
    class_weight: f64,
    what: &str,
) -> Result<Linear, FitError> {
    let standardizer = Standardizer::fit(x.view());
    standardizer.apply(&mut x);
    let y: Array1<usize> = positive.iter().map(|&p| usize::from(p)).collect();
    let fitted = LogisticRegression::default()
        .alpha(LOGISTIC_PENALTY)
        .max_iterations(200)
        .fit(&Dataset::new(x, y))
        .map_err(|e| FitError::Solver {
            what: what.to_owned(),
            method: "logistic",
            reason: e.to_string(),
        })?;
    // linfa models the larger label (1, a failure); flip the sign should that ever change.
    let sign = if fitted.labels().pos.class == 1 { 1.0 } else { -1.0 };
    let mut linear = standardizer.unscale(sign * fitted.intercept(), &(fitted.params() * sign));
    linear.intercept -= class_weight.ln();
    Ok(linear)
}

/// The sums that determine a ridge regression, added to one row at a time: a walk-forward refit
/// solves them in time set by the number of features, however long the history has grown.
#[derive(Debug, Clone)]
pub struct NormalEquations {
    rows: usize,
    sum_x: Array1<f64>,
    sum_xx: Array2<f64>,
    sum_y: f64,
    sum_xy: Array1<f64>,
}

impl NormalEquations {
    /// No rows yet, of `features` columns.
    pub fn new(features: usize) -> Self {
        Self {
            rows: 0,
            sum_x: Array1::zeros(features),
            sum_xx: Array2::zeros((features, features)),
            sum_y: 0.0,
            sum_xy: Array1::zeros(features),
        }
    }

    /// Rows added.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds the row `x` with target `y`.
    pub fn add(&mut self, x: &[f64], y: f64) {
        self.rows += 1;
        self.sum_y += y;
        for (i, &xi) in x.iter().enumerate() {
            self.sum_x[i] += xi;
            self.sum_xy[i] += xi * y;
            let mut row = self.sum_xx.row_mut(i);
            for (j, &xj) in x.iter().enumerate().skip(i) {
                row[j] += xi * xj;
            }
        }
    }

    /// The ridge fit of the rows with `penalty` on standardised inputs: the minimum of
    /// `|y - Xw|² / 2n + penalty |w|² / 2`, as the coordinate-descent fit above defines it.
    pub fn solve(&self, penalty: f64, what: &str) -> Result<Linear, FitError> {
        let d = self.sum_x.len();
        let n = self.rows.max(1) as f64;
        let mean = &self.sum_x / n;
        let mean_y = self.sum_y / n;
        let covariance = |i: usize, j: usize| {
            let (a, b) = if i <= j { (i, j) } else { (j, i) };
            self.sum_xx[[a, b]] / n - mean[a] * mean[b]
        };
        let scale = Array1::from_shape_fn(d, |i| {
            let s = covariance(i, i).max(0.0).sqrt();
            if s > 1e-12 {
                s
            } else {
                1.0
            }
        });
        let mut gram = Array2::from_shape_fn((d, d), |(i, j)| {
            covariance(i, j) / (scale[i] * scale[j]) + if i == j { penalty } else { 0.0 }
        });
        let rhs = Array2::from_shape_fn((d, 1), |(i, _)| {
            (self.sum_xy[i] / n - mean[i] * mean_y) / scale[i]
        });
        let standardised = gram.solvec_into(rhs).map_err(|e| FitError::Solver {
            what: what.to_owned(),
            method: "ridge (normal equations)",
            reason: e.to_string(),
        })?;
        let weights = standardised.column(0).to_owned() / &scale;
        Ok(Linear {
            intercept: mean_y - weights.dot(&mean),
            weights: weights.to_vec(),
        })
    }
}

/// A design matrix of `rows` rows and `columns` columns, row `k` filled by `fill(k, row)`.
pub fn design(rows: usize, columns: usize, mut fill: impl FnMut(usize, &mut [f64])) -> Array2<f64> {
    let mut x = Array2::zeros((rows, columns));
    for (k, mut row) in x.rows_mut().into_iter().enumerate() {
        fill(
            k,
            row.as_slice_mut()
                .expect("rows of a standard-layout matrix are contiguous"),
        );
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows where `y = 1 + 2·x0 − 0.5·x1` exactly, over a grid.
    fn plane() -> (Array2<f64>, Array1<f64>) {
        let x = design(400, 2, |k, row| {
            row[0] = (k % 20) as f64 / 10.0;
            row[1] = (k / 20) as f64 / 10.0;
        });
        let y = x
            .rows()
            .into_iter()
            .map(|r| 1.0 + 2.0 * r[0] - 0.5 * r[1])
            .collect();
        (x, y)
    }

    #[test]
    fn normal_equations_solve_the_same_ridge_as_coordinate_descent() {
        let (x, mut y) = plane();
        // Noise, so that the penalty matters.
        for (k, v) in y.iter_mut().enumerate() {
            *v += ((k * 7919) % 13) as f64 / 13.0 - 0.5;
        }
        let mut equations = NormalEquations::new(2);
        for (row, &target) in x.rows().into_iter().zip(&y) {
            equations.add(row.as_slice().unwrap(), target);
        }
        assert_eq!(equations.rows(), 400);
        for penalty in [1e-3, 1.0] {
            let direct = equations.solve(penalty, "test").unwrap();
            let descent = ridge_with_penalty(x.view(), y.view(), penalty, "test").unwrap();
            for (a, b) in direct.weights.iter().zip(&descent.weights) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "penalty {penalty}: {direct:?} vs {descent:?}"
                );
            }
            assert!((direct.intercept - descent.intercept).abs() < 1e-4);
        }
    }

    #[test]
    fn ridge_recovers_a_plane_and_holds_a_constrained_weight_at_zero() {
        let (x, y) = plane();
        let free = ridge(x.clone(), y.view(), &[], "test").unwrap();
        assert!(
            (free.weights[0] - 2.0).abs() < 1e-2 && (free.weights[1] + 0.5).abs() < 1e-2,
            "{free:?}"
        );
        let held = ridge(x, y.view(), &[1], "test").unwrap();
        assert_eq!(held.weights[1], 0.0, "{held:?}");
        // The grid's columns are uncorrelated: the other weight is the same, the intercept absorbs
        // the mean of what the held column explained.
        assert!((held.weights[0] - 2.0).abs() < 1e-2, "{held:?}");
        let at_mean = held.eval(&[0.95, 0.95]);
        assert!(
            (at_mean - (1.0 + 2.0 * 0.95 - 0.5 * 0.95)).abs() < 1e-2,
            "{held:?}"
        );
    }
}
