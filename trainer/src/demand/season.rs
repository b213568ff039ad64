//! The seasons a demand series shows in its history.

use crate::metrics::mean;

const DAY_S: usize = 86_400;
const WEEK_S: usize = 7 * DAY_S;
/// The name of a season found by autocorrelation.
const AUTOCORRELATION: &str = "lag";

/// A season of a series: its name in reports and its period in buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Season {
    /// `day`, `week`, or `lag` for a period found by autocorrelation.
    pub name: &'static str,
    /// Period in buckets.
    pub period: usize,
}

impl Season {
    /// Whether it is the day or the week rather than a lag found by autocorrelation, which on short
    /// history is too fragile to fit weights to.
    pub fn is_calendar(&self) -> bool {
        self.name != AUTOCORRELATION
    }

    /// The name of the seasonal naive baseline over this season.
    pub fn baseline_name(&self) -> String {
        format!("seasonal_naive_{}", self.name)
    }
}

/// The seasons `history` (buckets of `bucket_s` seconds, oldest first) shows: the day once it covers
/// two days, and the week once it covers two weeks. With less than two days, the lag between one
/// minute and a third of the history whose autocorrelation is highest, when that is positive.
pub fn seasons(history: &[f64], bucket_s: u32) -> Vec<Season> {
    let bucket_s = bucket_s.max(1) as usize;
    let span_s = history.len() * bucket_s;
    let mut found = Vec::new();
    for (name, period_s) in [("day", DAY_S), ("week", WEEK_S)] {
        if span_s >= 2 * period_s && period_s >= 2 * bucket_s {
            found.push(Season {
                name,
                period: period_s / bucket_s,
            });
        }
    }
    if found.is_empty() {
        found.extend(
            autocorrelation_peak(history, (60 / bucket_s).max(2)).map(|period| Season {
                name: AUTOCORRELATION,
                period,
            }),
        );
    }
    found
}

/// The lag from `first` to a third of `values`' length with the highest positive autocorrelation.
fn autocorrelation_peak(values: &[f64], first: usize) -> Option<usize> {
    let last = values.len() / 3;
    if last <= first {
        return None;
    }
    let m = mean(values.iter().copied());
    let variance: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
    if variance == 0.0 {
        return None;
    }
    (first..=last)
        .map(|lag| {
            let covariance: f64 = values[lag..]
                .iter()
                .zip(values)
                .map(|(a, b)| (a - m) * (b - m))
                .sum();
            (lag, covariance / variance)
        })
        .filter(|&(_, correlation)| correlation > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(lag, _)| lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_day_and_week_from_the_span_and_a_short_cycle_by_autocorrelation() {
        let two_weeks = vec![1.0; 2 * WEEK_S / 300];
        let found = seasons(&two_weeks, 300);
        assert_eq!(
            found,
            [
                Season {
                    name: "day",
                    period: 288
                },
                Season {
                    name: "week",
                    period: 2016
                }
            ]
        );
        // An hour of 10 s buckets with a 5-minute cycle.
        let cycle: Vec<f64> = (0..360).map(|t| ((t % 30) as f64 - 15.0).abs()).collect();
        assert_eq!(
            seasons(&cycle, 10),
            [Season {
                name: "lag",
                period: 30
            }]
        );
        assert!(seasons(&[3.0; 360], 10).is_empty(), "a flat series has no season");
    }
}
