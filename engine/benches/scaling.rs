//! How long one hint tick takes for one pool: fold in the newest bucket, forecast every horizon, and
//! decide. The proxy runs this once per pool per bucket (10 s by default), off the request path.
//!
//! Run: `cargo bench -p augur-engine --bench scaling`. Results are recorded in `bench/README.md`.
//! The model case forecasts with the demand model committed in `models/` (trained on `datasets/`).

use std::hint::black_box;

use augur_engine::model::{ModelSet, MANIFEST_FILE};
use augur_engine::scaling::{Forecaster, Scaler, ScalingPolicy};
use criterion::{criterion_group, criterion_main, Criterion};

fn tick(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).expect("models/manifest.json");
    let set = ModelSet::load(&manifest, |f| std::fs::read(dir.join(f))).expect("the committed models load");
    let model = set.demand().expect("the committed set has a demand model");
    let bucket_s = model.bucket_s;
    let mut group = c.benchmark_group("hint_tick");
    for (name, with_model) in [("fallback", false), ("model", true)] {
        let mut forecaster = Forecaster::new(bucket_s, vec![3, 6, 12, 30]);
        for i in 0..400 {
            forecaster.observe(1000.0 + f64::from(i % 17) * 10.0, 1);
        }
        let source = forecaster
            .forecast(with_model.then_some((model, "v")), "pool", 4000.0)
            .source;
        assert_eq!(source.label(), name, "the case measures what it names");
        let mut scaler = Scaler::new(ScalingPolicy::default(), 4);
        let mut now = 4000.0;
        group.bench_function(name, |b| {
            b.iter(|| {
                now += f64::from(bucket_s);
                forecaster.observe(black_box(1100.0), 1);
                let forecast =
                    forecaster.forecast(with_model.then_some((model, set.version.as_str())), "pool", now);
                black_box(scaler.decide(now, 50.0, 110.0, &forecast.horizons, bucket_s))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, tick);
criterion_main!(benches);
