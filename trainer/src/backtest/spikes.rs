//! Spikes in a trace, and how the hints did on them: caught in time, lead, false alarms, covered.

use super::{SpikeRule, SpikeScore};
use crate::demand::Series;
use crate::metrics::quantile;

/// Mean demand of the spike window ending with bucket `t`.
fn window_demand(series: &Series, t: usize, rule: SpikeRule) -> f64 {
    let w = rule.window_buckets.max(1);
    let first = (t + 1).saturating_sub(w);
    series.values[first..=t].iter().sum::<f64>() / (t + 1 - first) as f64
}

/// The median window demand over the reference buckets before the window ending at `t`, or `None`
/// without that much history.
fn reference(series: &Series, t: usize, rule: SpikeRule) -> Option<f64> {
    let w = rule.window_buckets.max(1);
    let end = t.checked_sub(w)?;
    let first = end.checked_sub(rule.reference_buckets.max(1))?;
    let mut windows: Vec<f64> = (first.max(w - 1)..=end)
        .map(|i| window_demand(series, i, rule))
        .collect();
    quantile(&mut windows, 0.5)
}

/// Finds the spikes in the scored part of `series` (rises of at least `min_excess` requests per
/// bucket) and scores the scale-ups decided at the buckets `hints` against them; `overloaded` marks
/// the buckets whose demand outgrew the replicas asked for.
pub(super) fn score_spikes(
    series: &Series,
    start: usize,
    hints: &[usize],
    overloaded: &[bool],
    rule: SpikeRule,
    min_excess: f64,
) -> SpikeScore {
    let bucket_s = f64::from(series.bucket_s);
    let mut spikes = Vec::new();
    for t in start..series.values.len() {
        let Some(reference) = reference(series, t, rule) else {
            continue;
        };
        let recent = spikes
            .last()
            .is_some_and(|&(_, s): &(usize, usize)| t - s < rule.refractory_buckets);
        let demand = window_demand(series, t, rule);
        if !recent && demand >= rule.factor * reference && demand - reference >= min_excess {
            // The spike starts at the window's first bucket that rose above the level by the excess;
            // leads are measured from there.
            let first = (t + 1).saturating_sub(rule.window_buckets.max(1));
            let rise = (first..=t)
                .find(|&i| series.values[i] - reference >= min_excess)
                .unwrap_or(first);
            spikes.push((rise, t));
        }
    }
    let spike_starts: Vec<usize> = spikes.iter().map(|&(rise, _)| rise).collect();
    let lead_s = |hint: usize, spike: usize| (spike as f64 - (hint + 1) as f64) * bucket_s;
    let (min_lead, max_lead) = (
        f64::from(rule.min_lead_s(series.bucket_s)),
        f64::from(rule.max_lead_s(series.bucket_s)),
    );
    let mut leads = Vec::new();
    for &spike in &spike_starts {
        let timely = hints.iter().find(|&&o| {
            let lead = lead_s(o, spike);
            lead >= min_lead && lead <= max_lead
        });
        if let Some(&o) = timely {
            leads.push(lead_s(o, spike));
        }
    }
    let refractory_s = rule.refractory_buckets as f64 * bucket_s;
    let false_alarms = hints
        .iter()
        .filter(|&&o| {
            !spike_starts.iter().any(|&s| {
                let lead = lead_s(o, s);
                lead <= max_lead && lead >= -refractory_s
            })
        })
        .count();
    let covered = spikes
        .iter()
        .filter(|&&(rise, crossed)| !overloaded[rise..=crossed].iter().any(|&o| o))
        .count();
    let caught = leads.len();
    SpikeScore {
        covered,
        definition: rule.describe(series.bucket_s, min_excess),
        count: spike_starts.len(),
        caught,
        recall: (!spike_starts.is_empty()).then(|| caught as f64 / spike_starts.len() as f64),
        median_lead_s: quantile(&mut leads, 0.5),
        hints: hints.len(),
        false_alarms,
        false_alarm_rate: (!hints.is_empty()).then(|| false_alarms as f64 / hints.len() as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: Vec<f64>, bucket_s: u32) -> Series {
        Series {
            name: "test".into(),
            start_unix_s: 0,
            bucket_s,
            values,
        }
    }

    #[test]
    fn a_spike_is_a_rise_in_buckets_whatever_their_width_and_hints_are_judged_by_their_lead() {
        // A level of 10 per bucket, a rise to 40 at bucket 30 for three buckets.
        let mut values = vec![10.0; 60];
        values[30..33].fill(40.0);
        let rule = SpikeRule::default();
        let overloaded = vec![false; 60];
        for bucket_s in [10, 1_800] {
            let s = series(values.clone(), bucket_s);
            // The warm-up in whole buckets: 60 s is 6 buckets of 10 s, and one of 30 minutes.
            let lead_buckets = rule.min_lead_s(bucket_s) / bucket_s;
            let timely = 30 - 1 - lead_buckets as usize;
            let score = score_spikes(&s, 20, &[timely, 5], &overloaded, rule, 5.0);
            assert_eq!(score.count, 1, "bucket {bucket_s}s: {score:?}");
            assert_eq!(score.caught, 1, "bucket {bucket_s}s: {score:?}");
            assert_eq!(score.median_lead_s, Some(f64::from(lead_buckets * bucket_s)));
            assert_eq!(score.false_alarms, 1, "the hint long before is a false alarm");
            let late = score_spikes(&s, 20, &[timely + 1], &overloaded, rule, 5.0);
            assert_eq!(late.caught, 0, "under the warm-up ahead is too late");
        }
        let s = series(values, 10);
        let too_small = score_spikes(&s, 20, &[], &overloaded, rule, 31.0);
        assert_eq!(
            too_small.count, 0,
            "a rise of 30 per bucket is under an excess of 31"
        );
    }
}
