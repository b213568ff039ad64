//! The hint logic in simulated time: demand drawn from the simulator's traffic, counted into buckets,
//! forecast and decided on bucket by bucket exactly as the proxy's ticker does.

use std::time::Duration;

use augur_engine::model::DemandModel;
use augur_engine::scaling::{Change, Direction, ScalingPolicy};
use augur_sim::scenario::scenario;
use augur_sim::traffic::{Spike, Traffic};
use augur_trainer::demand::{train, DemandOptions, Series};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, LogNormal};

const BUCKET_S: u32 = 10;
const CAPACITY_RPS: f64 = 100.0;

/// Requests per bucket of `traffic` over `duration`, drawn with `seed`.
fn demand(traffic: &Traffic, duration: Duration, seed: u64) -> Vec<f64> {
    let sizes = scenario("steady").expect("steady exists").sizes;
    traffic.per_bucket(duration, BUCKET_S, &sizes, &mut SmallRng::seed_from_u64(seed))
}

fn policy() -> ScalingPolicy {
    ScalingPolicy {
        min_replicas: 1,
        max_replicas: 50,
        warm_up_s: 30.0,
        ..ScalingPolicy::default()
    }
}

/// Replays `buckets` through a forecaster and a scaler as the proxy's ticker does; every change.
fn replay(buckets: &[f64], model: Option<&DemandModel>) -> Vec<Change> {
    let horizons: Vec<u32> = [30, 60, 120, 300].map(|s| s / BUCKET_S).to_vec();
    augur_engine::scaling::replay(buckets, BUCKET_S, horizons, model, policy(), CAPACITY_RPS)
}

/// For each crowd of a flash-crowd `traffic`: the time the demand first outgrew the replicas desired
/// before the crowd began (at full utilisation), and the last scale-up decided before then.
fn leads(traffic: &Traffic, buckets: &[f64], changes: &[Change]) -> Vec<(f64, f64, Option<f64>)> {
    let Traffic::FlashCrowd { spikes, .. } = traffic else {
        panic!("a flash crowd")
    };
    spikes
        .iter()
        .filter_map(|crowd| {
            let start = crowd.start.as_secs_f64();
            let replicas_before = changes
                .iter()
                .take_while(|c| c.at_s <= start)
                .last()
                .map_or(1, |c| c.to);
            let outgrown = buckets
                .iter()
                .enumerate()
                .map(|(t, &r)| (f64::from(t as u32 * BUCKET_S), r / f64::from(BUCKET_S)))
                .find(|&(at, rps)| at >= start && rps > f64::from(replicas_before) * CAPACITY_RPS)
                .map(|(at, _)| at)?;
            let hint = changes
                .iter()
                .filter(|c| c.direction == Direction::Up && c.at_s >= start - 60.0 && c.at_s <= outgrown)
                .map(|c| c.at_s)
                .next();
            Some((start, outgrown, hint))
        })
        .collect()
}

/// Trains a demand model on `buckets` (another run of the same kind of traffic).
fn trained_on(buckets: Vec<f64>) -> DemandModel {
    let series = Series {
        name: "training".into(),
        start_unix_s: 0,
        bucket_s: BUCKET_S,
        values: buckets,
    };
    train(&[series], &DemandOptions::default())
        .expect("an hour of demand trains")
        .model
}

#[test]
fn a_flash_crowd_gets_its_scale_up_hint_at_least_the_warm_up_before_it_arrives() {
    let bursty = scenario("bursty").expect("bursty exists");
    let model = trained_on(demand(&bursty.traffic, bursty.duration, 8));
    let Traffic::FlashCrowd { base_rate, spikes } = &bursty.traffic else {
        panic!("bursty is a flash crowd")
    };
    let warm_up_s = policy().warm_up_s;
    // No forecaster sees a crowd before it begins, and it needs a couple of buckets of it to tell it
    // from noise: a crowd that outgrows the replicas sooner than the warm-up plus two buckets after
    // it begins is beyond foresight, and is left out (and counted).
    let foreseeable = warm_up_s + 2.0 * f64::from(BUCKET_S);
    for (forecaster, model) in [("fallback", None), ("model", Some(&model))] {
        let (mut judged, mut unforeseeable) = (0, 0);
        // Each of bursty's eight crowds alone, after ten calm minutes, so that each meets replicas
        // sized for the calm rather than for the crowd before it.
        for (i, crowd) in spikes.iter().enumerate() {
            let crowd = Spike {
                start: Duration::from_secs(600),
                ..*crowd
            };
            let length = crowd.start + crowd.ramp + crowd.duration;
            let traffic = Traffic::FlashCrowd {
                base_rate: *base_rate,
                spikes: vec![crowd],
            };
            let buckets = demand(&traffic, length, 7 + i as u64);
            let changes = replay(&buckets, model);
            let crowds = leads(&traffic, &buckets, &changes);
            eprintln!("{forecaster}, crowd {i}: (start, outgrew the replicas at, hint at) {crowds:?}");
            for (start, outgrown, hint) in crowds {
                if outgrown - start < foreseeable {
                    unforeseeable += 1;
                    continue;
                }
                judged += 1;
                let hint = hint.unwrap_or_else(|| {
                    panic!("{forecaster}: crowd {i} from {start}s outgrew its replicas at {outgrown}s with no scale-up before: {changes:?}")
                });
                assert!(
                    outgrown - hint >= warm_up_s,
                    "{forecaster}: crowd {i} from {start}s outgrew its replicas at {outgrown}s, the hint came at {hint}s, less than the {warm_up_s}s warm-up before"
                );
            }
        }
        eprintln!("{forecaster}: {judged} crowds hinted in time, {unforeseeable} outgrew the replicas too soon to foresee");
        assert!(judged >= 4, "{forecaster}: only {judged} crowds could be judged");
    }
}

/// At most one change in any stabilisation window, once the first sizing is done.
fn assert_calm(what: &str, changes: &[Change]) {
    let window = policy().stabilisation_s;
    for (i, change) in changes.iter().enumerate().skip(1) {
        let within = changes[i + 1..]
            .iter()
            .take_while(|c| c.at_s < change.at_s + window)
            .count();
        assert_eq!(
            within, 0,
            "{what}: {} more change(s) within {window}s of the one at {}s: {changes:?}",
            within, change.at_s
        );
    }
}

#[test]
fn noise_without_spikes_changes_the_replicas_at_most_once_per_stabilisation_window() {
    let hour = Duration::from_secs(3600);
    let steady = Traffic::Poisson { rate: 200.0 };
    // Much noisier than Poisson: every bucket's rate drawn lognormal with a 25% spread.
    let mut rng = SmallRng::seed_from_u64(11);
    let spread = LogNormal::new(0.0, 0.25).expect("valid parameters");
    let mut noisy = |seed| -> Vec<f64> {
        demand(&steady, hour, seed)
            .into_iter()
            .map(|requests| (requests * spread.sample(&mut rng)).round())
            .collect()
    };
    let (noisy_run, noisy_training) = (noisy(1), noisy(2));
    let runs = [
        (
            "poisson",
            demand(&steady, hour, 1),
            trained_on(demand(&steady, hour, 2)),
        ),
        ("lognormal", noisy_run, trained_on(noisy_training)),
    ];
    for (noise, buckets, model) in &runs {
        for (forecaster, model) in [("fallback", None), ("model", Some(model))] {
            let changes = replay(buckets, model);
            assert!(!changes.is_empty(), "the first tick sizes the pool");
            assert_calm(&format!("{noise} noise, {forecaster}"), &changes);
        }
    }
}
