//! The demo's forecasting part, in simulated time: the trainer fits a demand model on an hour of
//! flash-crowd demand, and another hour of the same kind of traffic is replayed through the proxy's
//! forecaster and scaler twice, with that model and with the trend-and-level fallback, so that the
//! two can be compared on the same crowds. An hour of 10 s buckets is what a demand model needs
//! and more than a demo can wait for in real time.

use std::time::Duration;

use augur_engine::scaling::{replay, Change, Direction, ScalingPolicy};
use augur_sim::scenario::scenario;
use augur_trainer::demand::{train, DemandOptions, Series};
use rand::rngs::SmallRng;
use rand::SeedableRng;

const BUCKET_S: u32 = 10;
/// Requests per second one replica serves.
const CAPACITY_RPS: f64 = 100.0;
const WARM_UP_S: f64 = 30.0;

fn policy() -> ScalingPolicy {
    ScalingPolicy {
        min_replicas: 1,
        max_replicas: 50,
        warm_up_s: WARM_UP_S,
        ..ScalingPolicy::default()
    }
}

/// The part in one sentence, printed before it runs.
pub fn describe() -> String {
    format!(
        "Demand forecasts in simulated time: the trainer fits a demand model on an hour of the bursty scenario's demand in {BUCKET_S} s buckets; a second hour of it is replayed through the proxy's forecaster and scaler with that model and with the fallback, for replicas of {CAPACITY_RPS:.0} req/s and a {WARM_UP_S:.0} s warm-up."
    )
}

/// Runs it; one line per finding.
pub fn run(seed: u64) -> Result<Vec<String>, String> {
    let bursty = scenario("bursty").ok_or("the bursty scenario is missing")?;
    let hour = Duration::from_secs(3600);
    let draw = |seed: u64| {
        bursty.traffic.per_bucket(
            hour.min(bursty.duration),
            BUCKET_S,
            &bursty.sizes,
            &mut SmallRng::seed_from_u64(seed),
        )
    };
    let history = Series {
        name: "demo".into(),
        start_unix_s: 0,
        bucket_s: BUCKET_S,
        values: draw(seed),
    };
    let options = DemandOptions {
        bucket_s: BUCKET_S,
        ..DemandOptions::default()
    };
    let fitted = train(&[history], &options).map_err(|e| format!("training the demand model: {e}"))?;
    let model = fitted.model;
    let mut lines = Vec::new();
    let methods: Vec<String> = model
        .shared
        .horizons
        .iter()
        .map(|h| format!("+{}s {}", h.horizon_buckets * BUCKET_S, h.method.label()))
        .collect();
    let evaluation = &fitted.evaluation;
    let mae = evaluation.model.get("mae_mean").copied().unwrap_or(f64::NAN);
    let (baseline, best) = evaluation.best_baseline().unwrap_or(("none", f64::NAN));
    lines.push(format!(
        "demand model: {}; validation MAE {mae:.1} requests per bucket against {baseline}'s {best:.1} ({:.2}x)",
        methods.join(", "),
        mae / best
    ));
    let run = draw(seed + 1);
    let horizons: Vec<u32> = options.horizons_s.iter().map(|s| s / BUCKET_S).collect();
    for (name, model) in [("model", Some(&model)), ("fallback", None)] {
        let changes = replay(&run, BUCKET_S, horizons.clone(), model, policy(), CAPACITY_RPS);
        lines.push(summary(name, &run, &changes));
    }
    Ok(lines)
}

/// How one replay's changes served the demand: scale-ups and who decided them, the replicas asked
/// for against those needed in hindsight, and the buckets whose demand outgrew the replicas asked
/// for a warm-up earlier.
fn summary(name: &str, buckets: &[f64], changes: &[Change]) -> String {
    let bucket = f64::from(BUCKET_S);
    let target = policy().target_utilisation;
    let warm_up = (WARM_UP_S / bucket) as usize;
    let desired_at = |t: usize| {
        let end = (t as f64 + 1.0) * bucket;
        changes
            .iter()
            .take_while(|c| c.at_s <= end)
            .last()
            .map_or(1, |c| c.to)
    };
    let desired: Vec<u32> = (0..buckets.len()).map(desired_at).collect();
    let needed = buckets
        .iter()
        .map(|r| (r / bucket / (CAPACITY_RPS * target)).ceil().max(1.0))
        .sum::<f64>()
        / buckets.len() as f64;
    let asked = desired.iter().map(|&d| f64::from(d)).sum::<f64>() / desired.len() as f64;
    let overloaded = (warm_up..buckets.len())
        .filter(|&t| buckets[t] / bucket > f64::from(desired[t - warm_up]) * CAPACITY_RPS)
        .count();
    let ups: Vec<&Change> = changes.iter().filter(|c| c.direction == Direction::Up).collect();
    let mut deciders: Vec<(String, usize)> = Vec::new();
    for up in &ups {
        let who = up.decided_by();
        match deciders.iter_mut().find(|(d, _)| *d == who) {
            Some((_, n)) => *n += 1,
            None => deciders.push((who, 1)),
        }
    }
    let deciders: Vec<String> = deciders.iter().map(|(who, n)| format!("{n} by {who}")).collect();
    format!(
        "{name}: {} scale-ups ({}); mean {asked:.1} replicas asked for, {needed:.1} needed in hindsight; demand over the replicas asked for {WARM_UP_S:.0} s earlier in {:.1}% of buckets",
        ups.len(),
        deciders.join(", "),
        overloaded as f64 * 100.0 / (buckets.len() - warm_up) as f64,
    )
}
