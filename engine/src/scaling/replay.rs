//! A pool's demand replayed bucket by bucket through a forecaster and a scaler, exactly as the
//! proxy's ticker runs them, in simulated time: for tests and the demo.

use super::{Direction, ForecastSource, Forecaster, Scaler, ScalingPolicy};
use crate::model::DemandModel;

/// A scale change the replay decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// When: the end of the newest bucket the decision saw, in seconds from the replay's start.
    pub at_s: f64,
    /// Replicas asked for from then on.
    pub to: u32,
    /// Which way.
    pub direction: Direction,
    /// The horizon whose forecast set it (`None`: the demand observed did), in seconds.
    pub horizon_s: Option<u32>,
    /// The model's method at that horizon; `None` when the fallback forecast.
    pub method: Option<&'static str>,
}

impl Change {
    /// Who decided it, in words: `model (ridge at +60s)`, `fallback (...)`, or `observed demand`.
    pub fn decided_by(&self) -> String {
        match (self.horizon_s, self.method) {
            (None, _) => "observed demand".into(),
            (Some(h), Some(method)) => format!("model ({method} at +{h}s)"),
            (Some(h), None) => format!("fallback (trend and level at +{h}s)"),
        }
    }
}

/// Replays `buckets` (requests per `bucket_s` seconds) through a forecaster (with `model` when
/// given, else the fallback over `fallback_horizons` buckets) and a scaler of `policy` for
/// replicas of `capacity_rps`, starting from one replica; returns every change.
pub fn replay(
    buckets: &[f64],
    bucket_s: u32,
    fallback_horizons: Vec<u32>,
    model: Option<&DemandModel>,
    policy: ScalingPolicy,
    capacity_rps: f64,
) -> Vec<Change> {
    let mut forecaster = Forecaster::new(bucket_s, fallback_horizons);
    let mut scaler = Scaler::new(policy, 1);
    let mut changes = Vec::new();
    for (t, &requests) in buckets.iter().enumerate() {
        let now = (t as f64 + 1.0) * f64::from(bucket_s);
        forecaster.observe(requests, 1);
        let forecast = forecaster.forecast(model.map(|m| (m, "replay")), "replay", now);
        let current_rps = requests / f64::from(bucket_s);
        let d = scaler.decide(now, capacity_rps, current_rps, &forecast.horizons, bucket_s);
        if d.direction != Direction::Hold {
            let method = match &forecast.source {
                ForecastSource::Model { methods, .. } => forecast
                    .horizons
                    .iter()
                    .position(|f| Some(f.horizon_s) == d.horizon_s)
                    .and_then(|i| methods.get(i).copied()),
                ForecastSource::Fallback { .. } => None,
            };
            changes.push(Change {
                at_s: now,
                to: d.desired,
                direction: d.direction,
                horizon_s: d.horizon_s,
                method,
            });
        }
    }
    changes
}
