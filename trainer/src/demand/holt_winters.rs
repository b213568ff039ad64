//! Holt-Winters' smoothing weights, chosen on the history before the forecasts they are scored on.
//! The smoothing itself is the engine's, which the proxy runs when a horizon's model is Holt-Winters.

use augur_engine::model::{HoltWinters, HoltWintersParams};

/// The weights, from a small grid, whose one-step forecasts over `history` had the least absolute
/// error (after the first period, which only initialises); a smoothing of them with nothing seen.
pub fn fit(history: &[f64], period: Option<usize>) -> HoltWinters {
    let gammas: &[f64] = if period.is_some() { &[0.05, 0.2] } else { &[0.0] };
    let mut best: Option<(f64, HoltWintersParams)> = None;
    for alpha in [0.05, 0.2, 0.5, 0.8] {
        for beta in [0.0, 0.05] {
            for &gamma in gammas {
                let params = HoltWintersParams {
                    alpha,
                    beta,
                    gamma,
                    period,
                };
                let mut smoothing = HoltWinters::new(params);
                let skip = period.unwrap_or(1);
                let mut error = 0.0;
                for (t, &v) in history.iter().enumerate() {
                    if t >= skip {
                        error += (v - smoothing.forecast(1)).abs();
                    }
                    smoothing.observe(v);
                }
                if best.is_none_or(|(e, _)| error < e) {
                    best = Some((error, params));
                }
            }
        }
    }
    let (_, params) = best.expect("the grid is not empty");
    HoltWinters::new(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_the_weights_whose_one_step_forecasts_followed_the_history_best() {
        // A level that steps from 10 to 50 halfway: the fastest level weight follows it soonest.
        let history: Vec<f64> = (0..40).map(|t| if t < 20 { 10.0 } else { 50.0 }).collect();
        let params = fit(&history, None).params();
        assert_eq!(params.alpha, 0.8, "{params:?}");
    }
}
