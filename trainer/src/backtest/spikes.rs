//! Spikes in a trace, and how the hints did on them: caught in time, lead, false alarms, covered.
//! The spikes and the judgement of each scale-up are the engine's [`SpikeWatch`], the one the
//! proxy's ticker runs.

use augur_engine::scaling::{SpikeRule, SpikeWatch};

use super::SpikeScore;
use crate::demand::Series;
use crate::metrics::quantile;

/// Finds the spikes in the scored part of `series`, from bucket `start` on (rises of at least
/// `min_excess` requests per bucket), and scores the scale-ups decided at the buckets `hints`
/// (increasing) against them; `overloaded` marks the buckets whose demand outgrew the replicas
/// asked for.
pub(super) fn score_spikes(
    series: &Series,
    start: usize,
    hints: &[usize],
    overloaded: &[bool],
    rule: SpikeRule,
    min_excess: f64,
) -> SpikeScore {
    let mut watch = SpikeWatch::new(rule, series.bucket_s);
    let scale_ups = hints.len();
    let mut hints = hints.iter().peekable();
    let (mut spikes, mut false_alarms) = (Vec::new(), 0);
    for (t, &demand) in series.values.iter().enumerate() {
        // The buckets before the scored part only set the first spikes' level.
        let verdict = watch.observe(demand, (t >= start).then_some(min_excess));
        spikes.extend(verdict.spike);
        false_alarms += verdict.false_alarms;
        if hints.next_if_eq(&&t).is_some() {
            watch.scale_up();
        }
    }
    false_alarms += watch.finish();
    let mut leads: Vec<f64> = spikes.iter().filter_map(|s| s.lead_s.map(f64::from)).collect();
    let covered = spikes
        .iter()
        .filter(|s| {
            !overloaded[s.start as usize..=s.crossed as usize]
                .iter()
                .any(|&o| o)
        })
        .count();
    let caught = leads.len();
    SpikeScore {
        covered,
        definition: rule.describe(series.bucket_s, min_excess),
        count: spikes.len(),
        caught,
        recall: (!spikes.is_empty()).then(|| caught as f64 / spikes.len() as f64),
        median_lead_s: quantile(&mut leads, 0.5),
        hints: scale_ups,
        false_alarms,
        false_alarm_rate: (scale_ups > 0).then(|| false_alarms as f64 / scale_ups as f64),
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
            let score = score_spikes(&s, 20, &[5, timely], &overloaded, rule, 5.0);
            assert_eq!(score.count, 1, "bucket {bucket_s}s: {score:?}");
            assert_eq!(score.caught, 1, "bucket {bucket_s}s: {score:?}");
            assert_eq!(score.median_lead_s, Some(f64::from(lead_buckets * bucket_s)));
            assert_eq!(score.false_alarms, 1, "the hint long before is a false alarm");
            assert_eq!(score.covered, 1);
            let late = score_spikes(&s, 20, &[timely + 1], &overloaded, rule, 5.0);
            assert_eq!(late.caught, 0, "under the warm-up ahead is too late");
            assert_eq!(late.false_alarms, 0, "but it is about the spike");
        }
        let s = series(values.clone(), 10);
        let too_small = score_spikes(&s, 20, &[], &overloaded, rule, 31.0);
        assert_eq!(
            too_small.count, 0,
            "a rise of 30 per bucket is under an excess of 31"
        );
        let before_scoring = score_spikes(&s, 40, &[], &overloaded, rule, 5.0);
        assert_eq!(before_scoring.count, 0, "the spike is before the scored part");
        let mut overloaded = overloaded;
        overloaded[30] = true;
        assert_eq!(score_spikes(&s, 20, &[], &overloaded, rule, 5.0).covered, 0);
    }
}
