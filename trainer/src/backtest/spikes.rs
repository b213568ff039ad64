//! Spikes in a trace, and how the hints did on them: caught in time, lead, false alarms, covered.

use super::{SpikeRule, SpikeScore};
use crate::demand::Series;
use crate::metrics::quantile;

/// Demand in the spike window ending with bucket `t`.
fn window_demand(series: &Series, t: usize, per_bucket: f64) -> f64 {
    let w = per_bucket.round().max(1.0) as usize;
    series.values[(t + 1).saturating_sub(w)..=t].iter().sum()
}

/// The median window demand over the reference period before the window ending at `t`, or `None`
/// without that much history.
fn reference(series: &Series, t: usize, rule: SpikeRule, per_bucket: f64) -> Option<f64> {
    let w = per_bucket.round().max(1.0) as usize;
    let span = (rule.reference_s / series.bucket_s) as usize;
    let end = t.checked_sub(w)?;
    let first = end.checked_sub(span)?;
    let mut windows: Vec<f64> = (first.max(w - 1)..=end)
        .map(|i| window_demand(series, i, per_bucket))
        .collect();
    quantile(&mut windows, 0.5)
}

fn is_spike(demand: f64, reference: f64, rule: SpikeRule) -> bool {
    demand >= rule.factor * reference && demand - reference >= rule.min_excess
}

/// Finds the spikes in the scored part of `series` and scores the scale-ups decided at the buckets
/// `hints` against them; `overloaded` marks the buckets whose demand outgrew the replicas asked for.
pub(super) fn score_spikes(
    series: &Series,
    start: usize,
    hints: &[usize],
    overloaded: &[bool],
    rule: SpikeRule,
    per_bucket: f64,
) -> SpikeScore {
    let bucket_s = f64::from(series.bucket_s);
    let mut spikes = Vec::new();
    for t in start..series.values.len() {
        let Some(reference) = reference(series, t, rule, per_bucket) else {
            continue;
        };
        let recent = spikes
            .last()
            .is_some_and(|&s: &usize| ((t - s) as f64) * bucket_s < f64::from(rule.refractory_s));
        if !recent && is_spike(window_demand(series, t, per_bucket), reference, rule) {
            spikes.push(t);
        }
    }
    // A spike starts at the first bucket of the window that crossed; leads are measured from there.
    let w = per_bucket.round().max(1.0) as usize;
    let spike_starts: Vec<usize> = spikes.iter().map(|&t| (t + 1).saturating_sub(w)).collect();
    let lead_s = |hint: usize, spike: usize| (spike as f64 - (hint + 1) as f64) * bucket_s;
    let mut leads = Vec::new();
    for &spike in &spike_starts {
        let timely = hints.iter().find(|&&o| {
            let lead = lead_s(o, spike);
            lead >= f64::from(rule.warm_up_s) && lead <= f64::from(rule.max_lead_s)
        });
        if let Some(&o) = timely {
            leads.push(lead_s(o, spike));
        }
    }
    let refractory_s = f64::from(rule.refractory_s);
    let false_alarms = hints
        .iter()
        .filter(|&&o| {
            !spike_starts.iter().any(|&s| {
                let lead = lead_s(o, s);
                lead <= f64::from(rule.max_lead_s) && lead >= -refractory_s
            })
        })
        .count();
    let covered = spike_starts
        .iter()
        .zip(&spikes)
        .filter(|&(&first, &last)| !overloaded[first..=last].iter().any(|&o| o))
        .count();
    let caught = leads.len();
    SpikeScore {
        covered,
        definition: rule.describe(),
        count: spike_starts.len(),
        caught,
        recall: (!spike_starts.is_empty()).then(|| caught as f64 / spike_starts.len() as f64),
        median_lead_s: quantile(&mut leads, 0.5),
        hints: hints.len(),
        false_alarms,
        false_alarm_rate: (!hints.is_empty()).then(|| false_alarms as f64 / hints.len() as f64),
    }
}
