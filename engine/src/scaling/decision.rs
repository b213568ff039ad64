//! The scaling decision: desired replicas from a forecast, with the hysteresis of the Kubernetes HPA.
//! Scale-ups act at once on the forecast at horizons that cover the warm-up; scale-downs wait until
//! the highest recommendation of a whole stabilisation window allows them and go in bounded steps; a
//! cooldown after every change keeps noise from reversing it.

use std::collections::VecDeque;

use serde::Serialize;

use crate::model::DemandForecast;

/// How a pool scales.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingPolicy {
    /// Fewest replicas ever asked for.
    pub min_replicas: u32,
    /// Most replicas ever asked for.
    pub max_replicas: u32,
    /// Share of a replica's capacity the expected demand may fill, in (0, 1].
    pub target_utilisation: f64,
    /// Share of a replica's capacity the forecast's upper bound may fill, in
    /// [[`Self::target_utilisation`], 1]. The bound is the rare high outcome and may need less
    /// headroom than the expected demand; but the less headroom the replicas keep, the sooner a flash
    /// crowd outgrows them, and the fallback forecaster needs a few buckets of a crowd to see it. The
    /// default, the target utilisation, keeps that headroom.
    pub bound_utilisation: f64,
    /// Seconds a new replica takes to serve: the forecast at the shortest horizon at least this long
    /// drives the decisions.
    pub warm_up_s: f64,
    /// Seconds of recommendations whose highest bounds a scale-down.
    pub stabilisation_s: f64,
    /// Seconds after any change before the next, unless the demand observed already exceeds what the
    /// desired replicas serve at full load.
    pub cooldown_s: f64,
    /// Largest share of the desired replicas one scale-down removes (at least one replica).
    pub max_scale_down_share: f64,
    /// Changes smaller than this share of the desired capacity are not made.
    pub tolerance: f64,
}

impl Default for ScalingPolicy {
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: 100,
            target_utilisation: 0.7,
            bound_utilisation: 0.7,
            warm_up_s: 60.0,
            stabilisation_s: 300.0,
            cooldown_s: 60.0,
            max_scale_down_share: 0.5,
            tolerance: 0.1,
        }
    }
}

/// Which way a decision moved the desired replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// No change.
    Hold,
}

impl Direction {
    /// `up`, `down` or `hold`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Hold => "hold",
        }
    }
}

/// The outcome of one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// Desired replicas before this tick.
    pub previous: u32,
    /// Desired replicas after it.
    pub desired: u32,
    /// Replicas the demand alone asks for now, before hysteresis.
    pub recommended: u32,
    /// The request rate the recommendation plans for, per second.
    pub planned_rps: f64,
    /// The horizon whose forecast set it, in seconds (`None`: the rate observed now did).
    pub horizon_s: Option<u32>,
    /// Which way the desired replicas moved.
    pub direction: Direction,
    /// Why, in words.
    pub reason: String,
}

/// The decision state of one pool.
#[derive(Debug, Clone)]
pub struct Scaler {
    policy: ScalingPolicy,
    desired: u32,
    started_unix_s: Option<f64>,
    last_change_unix_s: Option<f64>,
    /// `(time, replicas needed)` of the recommendations within the stabilisation window.
    recent: VecDeque<(f64, f64)>,
}

impl Scaler {
    /// A scaler that starts from `replicas` (clamped to the policy's bounds).
    pub fn new(policy: ScalingPolicy, replicas: u32) -> Self {
        let desired = replicas.clamp(policy.min_replicas, policy.max_replicas.max(policy.min_replicas));
        Self {
            policy,
            desired,
            started_unix_s: None,
            last_change_unix_s: None,
            recent: VecDeque::new(),
        }
    }

    /// The replicas asked for now.
    pub fn desired(&self) -> u32 {
        self.desired
    }

    /// The policy in force.
    pub fn policy(&self) -> &ScalingPolicy {
        &self.policy
    }

    /// Replaces the policy (a config reload); the state carries on.
    pub fn set_policy(&mut self, policy: ScalingPolicy) {
        self.desired = self
            .desired
            .clamp(policy.min_replicas, policy.max_replicas.max(policy.min_replicas));
        self.policy = policy;
    }

    /// Replicas, clamped to the policy's bounds, for a need of `need` replicas (fractional).
    fn bounded(&self, need: f64) -> u32 {
        // A hair under a whole number of replicas is that number, not one more.
        let raw = (need - 1e-9).ceil().max(0.0);
        let bounded = raw.min(f64::from(self.policy.max_replicas)) as u32;
        bounded.clamp(
            self.policy.min_replicas,
            self.policy.max_replicas.max(self.policy.min_replicas),
        )
    }

    /// Decides at `now_unix_s` from the rate observed in the newest bucket (`current_rps`) and the
    /// forecasts (requests per `bucket_s`-second bucket, with upper bounds), for replicas that each
    /// serve `capacity_rps`.
    pub fn decide(
        &mut self,
        now_unix_s: f64,
        capacity_rps: f64,
        current_rps: f64,
        forecasts: &[DemandForecast],
        bucket_s: u32,
    ) -> Decision {
        let started = *self.started_unix_s.get_or_insert(now_unix_s);
        let plan = self.plan(capacity_rps, current_rps.max(0.0), forecasts, bucket_s);
        let recommended = self.bounded(plan.need);
        self.recent.push_back((now_unix_s, plan.need));
        while self
            .recent
            .front()
            .is_some_and(|&(t, _)| t <= now_unix_s - self.policy.stabilisation_s)
        {
            self.recent.pop_front();
        }
        let previous = self.desired;
        let mut decision = Decision {
            previous,
            desired: previous,
            recommended,
            planned_rps: plan.rps,
            horizon_s: plan.horizon_s,
            direction: Direction::Hold,
            reason: String::new(),
        };
        let what = match plan.horizon_s {
            Some(h) => format!("the forecast {} {:.1} req/s at +{h}s", plan.what, plan.rps),
            None => format!("the observed {:.1} req/s", plan.rps),
        };
        let because = format!(
            "{what} needs {recommended} replicas of {capacity_rps:.1} req/s at {:.0}% utilisation",
            plan.utilisation * 100.0
        );
        let since_change = now_unix_s - self.last_change_unix_s.unwrap_or(f64::NEG_INFINITY);
        // Within the cooldown only demand the replicas cannot serve even at full load scales up.
        let overloaded = current_rps > f64::from(previous) * capacity_rps;
        let cooled = since_change >= self.policy.cooldown_s || overloaded;
        if recommended > previous && plan.need > f64::from(previous) * (1.0 + self.policy.tolerance) && cooled
        {
            decision.desired = recommended;
            decision.direction = Direction::Up;
            decision.reason = because;
        } else {
            let stable_need = self.recent.iter().map(|&(_, need)| need).fold(0.0, f64::max);
            // Down to replicas with the tolerance to spare, so that the next high sample of the same
            // noise does not scale straight back up.
            let stable = self.bounded(stable_need / (1.0 - self.policy.tolerance));
            let settled =
                now_unix_s - started >= self.policy.stabilisation_s && since_change >= self.policy.cooldown_s;
            if stable < previous && settled {
                let step = ((f64::from(previous) * self.policy.max_scale_down_share) as u32).max(1);
                decision.desired = stable.max(previous.saturating_sub(step));
                decision.direction = Direction::Down;
                decision.reason = format!(
                    "the highest plan of the last {:.0}s needs {stable} replicas; stepping down at most {step}",
                    self.policy.stabilisation_s
                );
            } else {
                decision.reason = because;
            }
        }
        if decision.desired != previous {
            self.desired = decision.desired;
            self.last_change_unix_s = Some(now_unix_s);
        }
        decision
    }

    /// What the demand needs: the expected rate at the target utilisation or the upper bound at the
    /// bound utilisation, whichever needs more replicas; each at least the rate observed now. The
    /// forecast is the one at the shortest horizon that covers the warm-up: capacity asked for now
    /// serves from then on, and longer horizons, with their wider bounds, can be acted on later.
    fn plan(&self, capacity_rps: f64, current_rps: f64, forecasts: &[DemandForecast], bucket_s: u32) -> Plan {
        let policy = &self.policy;
        let lead = forecasts
            .iter()
            .filter(|f| f64::from(f.horizon_s) >= policy.warm_up_s)
            .min_by_key(|f| f.horizon_s);
        let per_second = |requests: f64| requests / f64::from(bucket_s);
        let candidates = [
            (
                lead.map(|f| per_second(f.mean)),
                "mean",
                policy.target_utilisation,
            ),
            (
                lead.map(|f| per_second(f.upper)),
                "upper bound",
                policy.bound_utilisation,
            ),
        ];
        let observed = Plan {
            need: current_rps / (capacity_rps * policy.target_utilisation),
            rps: current_rps,
            horizon_s: None,
            what: "observed",
            utilisation: policy.target_utilisation,
        };
        candidates
            .into_iter()
            .filter_map(|(rps, what, utilisation)| {
                let rps = rps?;
                (rps > current_rps).then(|| Plan {
                    need: rps / (capacity_rps * utilisation),
                    rps,
                    horizon_s: lead.map(|f| f.horizon_s),
                    what,
                    utilisation,
                })
            })
            .fold(observed, |best, p| if p.need > best.need { p } else { best })
    }
}

/// What a decision plans for.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Replicas needed, fractional.
    need: f64,
    /// The rate planned for, per second.
    rps: f64,
    /// The forecast's horizon, `None` for the rate observed.
    horizon_s: Option<u32>,
    /// `mean`, `upper bound` or `observed`.
    what: &'static str,
    /// The share of capacity it may fill.
    utilisation: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(horizon_s: u32, upper: f64) -> DemandForecast {
        DemandForecast {
            horizon_s,
            mean: upper,
            upper,
        }
    }

    /// 10 req/s per replica at 50%: 5 req/s each.
    fn scaler() -> Scaler {
        let policy = ScalingPolicy {
            min_replicas: 2,
            max_replicas: 10,
            target_utilisation: 0.5,
            bound_utilisation: 0.5,
            warm_up_s: 30.0,
            stabilisation_s: 300.0,
            cooldown_s: 60.0,
            max_scale_down_share: 0.5,
            tolerance: 0.1,
        };
        Scaler::new(policy, 2)
    }

    #[test]
    fn scales_up_on_a_forecast_beyond_the_warm_up_only() {
        let mut s = scaler();
        // 10-second buckets: 300 requests per bucket is 30 req/s, 6 replicas.
        let short = s.decide(0.0, 10.0, 8.0, &[at(10, 300.0)], 10);
        assert_eq!(
            (short.desired, short.direction),
            (2, Direction::Hold),
            "10 s is inside the warm-up"
        );
        let long = s.decide(
            10.0,
            10.0,
            8.0,
            &[at(10, 50.0), at(60, 300.0), at(120, 900.0)],
            10,
        );
        assert_eq!(
            (long.desired, long.horizon_s),
            (6, Some(60)),
            "the shortest horizon past the warm-up"
        );
        assert_eq!(long.direction, Direction::Up);
        let cooling = s.decide(20.0, 10.0, 8.0, &[at(60, 3000.0)], 10);
        assert_eq!(cooling.direction, Direction::Hold, "within the cooldown");
        let overloaded = s.decide(30.0, 10.0, 61.0, &[at(60, 3000.0)], 10);
        assert_eq!(
            overloaded.desired, 10,
            "demand beyond the replicas' full capacity skips the cooldown; clamped to the maximum"
        );
    }

    #[test]
    fn scales_down_after_the_stabilisation_window_in_bounded_steps_with_a_cooldown() {
        let mut s = scaler();
        s.decide(0.0, 10.0, 0.0, &[at(60, 500.0)], 10);
        assert_eq!(s.desired(), 10);
        let mut changes = Vec::new();
        for t in (10..=900).step_by(10) {
            let d = s.decide(f64::from(t), 10.0, 1.0, &[at(60, 10.0)], 10);
            if d.direction != Direction::Hold {
                changes.push((t, d.desired));
            }
        }
        // The 500-request plan leaves the window at 300 s; then halving every cooldown, to the minimum.
        assert_eq!(changes, vec![(300, 5), (360, 3), (420, 2)]);
    }

    #[test]
    fn plans_the_mean_at_the_target_and_the_bound_at_its_own_utilisation() {
        let policy = ScalingPolicy {
            bound_utilisation: 1.0,
            ..scaler().policy().clone()
        };
        let forecast = |mean, upper| DemandForecast {
            horizon_s: 60,
            mean,
            upper,
        };
        // 10-second buckets, 10 req/s replicas: a mean of 20 req/s at 50% needs 4 replicas, an upper
        // bound of 30 req/s at full load 3.
        let mut s = Scaler::new(policy.clone(), 2);
        let d = s.decide(0.0, 10.0, 1.0, &[forecast(200.0, 300.0)], 10);
        assert_eq!((d.desired, d.planned_rps), (4, 20.0), "{}", d.reason);
        assert!(
            d.reason.contains("mean 20.0 req/s at +60s needs 4 replicas"),
            "{}",
            d.reason
        );
        // A bound of 70 req/s needs 7 at full load, more than the mean's 4.
        let mut s = Scaler::new(policy, 2);
        let d = s.decide(0.0, 10.0, 1.0, &[forecast(200.0, 700.0)], 10);
        assert_eq!((d.desired, d.planned_rps), (7, 70.0));
        assert!(d.reason.contains("at 100% utilisation"), "{}", d.reason);
        // Planned at the target, as by default, 70 req/s at 50% needs 14, clamped to 10.
        let d = scaler().decide(0.0, 10.0, 1.0, &[forecast(200.0, 700.0)], 10);
        assert_eq!(d.desired, 10);
    }

    #[test]
    fn ignores_changes_within_the_tolerance() {
        let mut s = scaler();
        s.decide(0.0, 10.0, 0.0, &[at(60, 200.0)], 10);
        assert_eq!(s.desired(), 4);
        // 21 req/s is 5% over 4 replicas' 20: within tolerance, no change.
        let d = s.decide(10.0, 10.0, 21.0, &[], 10);
        assert_eq!(d.direction, Direction::Hold);
    }
}
