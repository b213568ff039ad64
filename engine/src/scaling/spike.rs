//! Demand spikes, defined in buckets so that the definition means the same at any bucket width, and
//! a watch that finds them as the buckets arrive and judges the scale-ups against them. The proxy's
//! ticker runs the watch on live demand and the backtest on a trace, so "spike", "caught" and
//! "false alarm" mean the same in both.

use std::collections::VecDeque;

/// How a spike and a timely scale-up are defined, in buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeRule {
    /// Demand is the mean over windows of this many buckets.
    pub window_buckets: usize,
    /// The recent level is the median window demand over this many buckets before the window.
    pub reference_buckets: usize,
    /// A spike: window demand at least this many times the recent level...
    pub factor: f64,
    /// ...and above it by at least this many requests per bucket; `None`: what one replica serves
    /// in a bucket at the target utilisation, so that a spike is a rise that takes another replica.
    pub min_excess: Option<f64>,
    /// After a spike is found, no new one is counted for this many buckets.
    pub refractory_buckets: usize,
    /// A scale-up is timely when it comes at least this long before the spike (instance warm-up;
    /// also the scaling policy's)...
    pub warm_up_s: u32,
    /// ...and at most this many buckets earlier than that.
    pub lead_slack_buckets: usize,
}

impl Default for SpikeRule {
    fn default() -> Self {
        Self {
            window_buckets: 3,
            reference_buckets: 12,
            factor: 2.0,
            min_excess: None,
            refractory_buckets: 12,
            warm_up_s: 60,
            lead_slack_buckets: 6,
        }
    }
}

impl SpikeRule {
    /// The earliest a timely scale-up may come before a spike, in seconds: the warm-up, in whole
    /// buckets.
    pub fn min_lead_s(&self, bucket_s: u32) -> u32 {
        self.warm_up_s.div_ceil(bucket_s.max(1)) * bucket_s
    }

    /// The latest, in seconds.
    pub fn max_lead_s(&self, bucket_s: u32) -> u32 {
        self.min_lead_s(bucket_s) + self.lead_slack_buckets as u32 * bucket_s
    }

    /// The excess a spike needs, in requests per bucket: the rule's own, else what one replica
    /// serves in a bucket (`one_replica`); `None` when neither is known.
    pub fn excess(&self, one_replica: Option<f64>) -> Option<f64> {
        self.min_excess.or(one_replica)
    }

    /// The definition in words for `bucket_s` buckets and an excess of `min_excess` requests per
    /// bucket, as the backtest's report and the README state it.
    pub fn describe(&self, bucket_s: u32, min_excess: f64) -> String {
        format!(
            "a spike starts when the mean demand over {w} buckets ({w_s}s) reaches {f}x the median {w}-bucket demand of the {r} buckets before it and exceeds it by at least {m:.1} requests per bucket (one spike per {rf} buckets); it starts at the first bucket of that window above the level by that much; a hint is a scale-up decided by the proxy's scaler on the forecasts; it is timely when it comes between {max}s and {min}s (the warm-up in whole buckets) before the spike starts; a false alarm is a scale-up neither within {max}s before a spike start nor within {rf} buckets after one",
            w = self.window_buckets,
            w_s = self.window_buckets as u32 * bucket_s,
            f = self.factor,
            r = self.reference_buckets,
            m = min_excess,
            rf = self.refractory_buckets,
            max = self.max_lead_s(bucket_s),
            min = self.min_lead_s(bucket_s),
        )
    }

    fn window(&self) -> usize {
        self.window_buckets.max(1)
    }

    /// The timely leads in buckets, `(min, max)`: a scale-up decided at the end of bucket `o` is
    /// `s - o - 1` buckets ahead of a spike starting at `s`.
    fn lead_buckets(&self, bucket_s: u32) -> (u64, u64) {
        let b = bucket_s.max(1);
        (
            u64::from(self.min_lead_s(b) / b),
            u64::from(self.max_lead_s(b) / b),
        )
    }
}

/// A spike the watch found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// The bucket it starts at: the first of its window above the level by the excess. Buckets are
    /// counted from the watch's first.
    pub start: u64,
    /// The bucket whose window met the rule.
    pub crossed: u64,
    /// The recent level, requests per bucket.
    pub level: f64,
    /// The window's mean demand, requests per bucket.
    pub demand: f64,
    /// How long before the start the first timely scale-up came, in seconds; `None`: none did.
    pub lead_s: Option<u32>,
}

/// What one bucket told the watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpikeVerdict {
    /// The spike that bucket's window met the rule with, if any.
    pub spike: Option<Spike>,
    /// Scale-ups that turned out false alarms with this bucket: no spike started soon enough after
    /// them, nor shortly before.
    pub false_alarms: usize,
}

/// A scale-up not yet past the time a spike could still justify it.
#[derive(Debug, Clone, Copy)]
struct ScaleUp {
    /// The bucket it was decided at the end of.
    bucket: u64,
    /// A spike started close enough around it.
    justified: bool,
}

/// Finds spikes by a [`SpikeRule`] as buckets arrive, and judges the scale-ups decided between
/// them: timely, false alarm, or neither (just after a spike).
#[derive(Debug, Clone)]
pub struct SpikeWatch {
    rule: SpikeRule,
    bucket_s: u32,
    /// The newest buckets, as many as one window and its reference need.
    values: VecDeque<f64>,
    /// The index of the next bucket.
    next: u64,
    /// The bucket the last spike was found at.
    last_crossed: Option<u64>,
    /// Starts of spikes recent enough to justify a scale-up decided now.
    recent_starts: VecDeque<u64>,
    /// Scale-ups recent enough to be timely for a spike found from now on, oldest first.
    scale_ups: VecDeque<ScaleUp>,
}

impl SpikeWatch {
    /// A watch over `bucket_s`-second buckets, by `rule`.
    pub fn new(rule: SpikeRule, bucket_s: u32) -> Self {
        Self {
            rule,
            bucket_s: bucket_s.max(1),
            values: VecDeque::with_capacity(Self::span(&rule)),
            next: 0,
            last_crossed: None,
            recent_starts: VecDeque::new(),
            scale_ups: VecDeque::new(),
        }
    }

    /// The rule it watches by.
    pub fn rule(&self) -> &SpikeRule {
        &self.rule
    }

    /// Replaces the rule (a config reload); the history carries on.
    pub fn set_rule(&mut self, rule: SpikeRule) {
        self.rule = rule;
        while self.values.len() > Self::span(&rule) {
            self.values.pop_front();
        }
    }

    /// Buckets one window and its reference need: the window, and the `reference_buckets + 1`
    /// windows that end in the buckets before it.
    fn span(rule: &SpikeRule) -> usize {
        2 * rule.window() + rule.reference_buckets.max(1)
    }

    /// Takes in the newest bucket's `demand` (requests). With `min_excess` (requests per bucket; see
    /// [`SpikeRule::excess`]) it looks for a spike; without, the bucket is only recorded. Also says
    /// which scale-ups this bucket made false alarms.
    pub fn observe(&mut self, demand: f64, min_excess: Option<f64>) -> SpikeVerdict {
        let t = self.next;
        self.next += 1;
        if self.values.len() == Self::span(&self.rule) {
            self.values.pop_front();
        }
        self.values.push_back(demand);
        let spike = min_excess.and_then(|excess| self.spike_at(t, excess));
        if let Some(spike) = &spike {
            self.last_crossed = Some(spike.crossed);
            self.recent_starts.push_back(spike.start);
            let (_, max_lead) = self.rule.lead_buckets(self.bucket_s);
            let refractory = self.rule.refractory_buckets as u64;
            for scale_up in &mut self.scale_ups {
                let o = scale_up.bucket + 1;
                if spike.start + refractory >= o && spike.start <= o + max_lead {
                    scale_up.justified = true;
                }
            }
        }
        SpikeVerdict {
            spike,
            false_alarms: self.expire(t),
        }
    }

    /// Records a scale-up decided at the end of the newest bucket.
    pub fn scale_up(&mut self) {
        let Some(bucket) = self.next.checked_sub(1) else {
            return;
        };
        let refractory = self.rule.refractory_buckets as u64;
        let justified = self.recent_starts.iter().any(|&s| s + refractory > bucket);
        self.scale_ups.push_back(ScaleUp { bucket, justified });
    }

    /// Judges the scale-ups still waiting once no spike can come to justify them (the end of a
    /// trace); returns how many were false alarms.
    pub fn finish(&mut self) -> usize {
        self.scale_ups.drain(..).filter(|s| !s.justified).count()
    }

    /// Drops the scale-ups no spike found after bucket `t` can justify or be caught by, counting
    /// the unjustified ones, and the spike starts too old to justify a new scale-up.
    fn expire(&mut self, t: u64) -> usize {
        let (_, max_lead) = self.rule.lead_buckets(self.bucket_s);
        // A spike found at `t + 1` or later starts at `t + 2 - window` or later.
        let earliest_start = (t + 2).saturating_sub(self.rule.window() as u64);
        let mut false_alarms = 0;
        while let Some(&oldest) = self.scale_ups.front() {
            if oldest.bucket + 1 + max_lead >= earliest_start {
                break;
            }
            false_alarms += usize::from(!oldest.justified);
            self.scale_ups.pop_front();
        }
        let refractory = self.rule.refractory_buckets as u64;
        while self
            .recent_starts
            .front()
            .is_some_and(|&s| s + refractory < t + 1)
        {
            self.recent_starts.pop_front();
        }
        false_alarms
    }

    /// The spike whose window ends with bucket `t`, the newest, if it meets the rule.
    fn spike_at(&self, t: u64, min_excess: f64) -> Option<Spike> {
        let rule = &self.rule;
        if self.values.len() < Self::span(rule) {
            return None;
        }
        if self
            .last_crossed
            .is_some_and(|s| t - s < rule.refractory_buckets as u64)
        {
            return None;
        }
        let w = rule.window();
        let n = self.values.len();
        let mean_ending = |end: usize| self.values.range(end + 1 - w..=end).sum::<f64>() / w as f64;
        let demand = mean_ending(n - 1);
        // The reference windows end from `reference_buckets` buckets before the window's first
        // bucket up to the bucket just before it.
        let newest = n - 1 - w;
        let mut windows: Vec<f64> = (newest - rule.reference_buckets.max(1)..=newest)
            .map(mean_ending)
            .collect();
        windows.sort_by(f64::total_cmp);
        let level = median(&windows);
        if !(demand >= rule.factor * level && demand - level >= min_excess) {
            return None;
        }
        let first = n - w;
        let rise = (first..n)
            .find(|&i| self.values[i] - level >= min_excess)
            .unwrap_or(first);
        let start = t - (n - 1 - rise) as u64;
        Some(Spike {
            start,
            crossed: t,
            level,
            demand,
            lead_s: self.timely_lead_s(start),
        })
    }

    /// The lead of the earliest scale-up timely for a spike starting at `start`, in seconds.
    fn timely_lead_s(&self, start: u64) -> Option<u32> {
        let (min_lead, max_lead) = self.rule.lead_buckets(self.bucket_s);
        self.scale_ups
            .iter()
            .map(|s| start as i64 - s.bucket as i64 - 1)
            .find(|&lead| lead >= min_lead as i64 && lead <= max_lead as i64)
            .map(|lead| lead as u32 * self.bucket_s)
    }
}

/// The median of sorted, non-empty `values`: the mean of the middle two when their count is even.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10-second buckets: the warm-up of 60 s is 6 buckets, a timely lead 6 to 12.
    fn watch() -> SpikeWatch {
        SpikeWatch::new(SpikeRule::default(), 10)
    }

    #[test]
    fn finds_a_rise_over_the_recent_level_once_and_only_with_an_excess() {
        let mut w = watch();
        let mut found = Vec::new();
        for t in 0..60u64 {
            let demand = if (30..34).contains(&t) { 40.0 } else { 10.0 };
            found.extend(w.observe(demand, Some(5.0)).spike);
        }
        assert_eq!(
            found.len(),
            1,
            "one spike, the refractory span keeps it one: {found:?}"
        );
        let spike = found[0];
        // The 3-bucket mean reaches twice the level of 10 with bucket 30 (10, 10, 40), and the
        // first bucket of that window above the level by the excess is bucket 30 itself.
        assert_eq!((spike.start, spike.crossed), (30, 30));
        assert_eq!((spike.level, spike.demand), (10.0, 20.0));
        assert_eq!(spike.lead_s, None, "no scale-up came before it");

        let mut unknown = watch();
        let spikes = (0..60u64)
            .filter_map(|t| unknown.observe(if t == 30 { 100.0 } else { 10.0 }, None).spike)
            .count();
        assert_eq!(
            spikes, 0,
            "without an excess (no capacity known) buckets are only recorded"
        );
        let mut small = watch();
        let spikes = (0..60u64)
            .filter_map(|t| {
                small
                    .observe(if (30..33).contains(&t) { 40.0 } else { 10.0 }, Some(31.0))
                    .spike
            })
            .count();
        assert_eq!(spikes, 0, "a rise of 30 is under an excess of 31");
    }

    #[test]
    fn judges_scale_ups_as_they_age_timely_false_alarm_or_after_a_spike() {
        let mut w = watch();
        let mut false_alarms = Vec::new();
        let mut spike = None;
        for t in 0..120u64 {
            let demand = if (60..64).contains(&t) { 40.0 } else { 10.0 };
            let verdict = w.observe(demand, Some(5.0));
            if verdict.false_alarms > 0 {
                false_alarms.push((t, verdict.false_alarms));
            }
            spike = spike.or(verdict.spike);
            // At 20: long before the spike. At 51: 8 buckets ahead of the start at 60, timely. At
            // 62: just after it, neither.
            if [20, 51, 62].contains(&t) {
                w.scale_up();
            }
        }
        assert_eq!(spike.map(|s| s.lead_s), Some(Some(80)), "8 buckets of 10 s ahead");
        // The scale-up at 20 could be justified by a spike starting up to 1 + 12 buckets after it,
        // at 33; a spike found with bucket 35 may still start there, one found later may not.
        assert_eq!(
            false_alarms,
            vec![(35, 1)],
            "only the early one, as soon as it is settled"
        );
        assert_eq!(w.finish(), 0, "nothing left unjudged is a false alarm");
    }

    #[test]
    fn a_scale_up_waiting_at_the_end_without_a_spike_is_a_false_alarm() {
        let mut w = watch();
        for _ in 0..30 {
            w.observe(10.0, Some(5.0));
        }
        w.scale_up();
        assert_eq!(w.observe(10.0, Some(5.0)).false_alarms, 0, "too early to tell");
        assert_eq!(w.finish(), 1);
    }

    #[test]
    fn the_definition_is_in_buckets_so_leads_follow_the_bucket_width() {
        let rule = SpikeRule::default();
        assert_eq!((rule.min_lead_s(10), rule.max_lead_s(10)), (60, 120));
        assert_eq!(
            (rule.min_lead_s(1_800), rule.max_lead_s(1_800)),
            (1_800, 12_600),
            "the warm-up in whole buckets"
        );
        assert_eq!(rule.excess(Some(7.0)), Some(7.0));
        let fixed = SpikeRule {
            min_excess: Some(3.0),
            ..rule
        };
        assert_eq!(fixed.excess(Some(7.0)), Some(3.0), "the rule's own wins");
        assert_eq!(rule.excess(None), None);
    }
}
