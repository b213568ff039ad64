//! How long one pick takes for each policy over pools of 4, 16 and 64 backends, and a pick with
//! prefix scoring over 16 LLM servers.
//!
//! Run: `cargo bench -p augur-engine --bench policies`. Results are recorded in `bench/README.md`.
//! The predictive policy scores with the model set committed in `models/` (trained on `datasets/`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use augur_engine::model::{ModelSet, MANIFEST_FILE};
use augur_engine::policy::{ActiveModels, HashAlgorithm, HashKey};
use augur_engine::prefix::{PromptBlocks, DEFAULT_INDEX_BLOCKS, INDEX_BLOCK_BYTES};
use augur_engine::{hash, BackendLoad, Endpoint, PickRequest, PolicySpec, RequestSize, Selector};
#[path = "../tests/support/ttft_models.rs"]
mod ttft_models;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use ttft_models::ttft_models;

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let load = Arc::new(BackendLoad::new(Duration::from_millis(30), Duration::ZERO));
            load.observe_rtt(
                Duration::from_millis(5 + i as u64 % 7),
                Duration::ZERO,
                Duration::from_secs(10),
            );
            for _ in 0..i % 3 {
                load.try_start(None);
            }
            Endpoint::new(
                hash::endpoint_id(&format!("10.0.0.{i}:80")),
                1 + (i % 4) as u32,
                load,
            )
        })
        .collect()
}

fn specs() -> Vec<PolicySpec> {
    vec![
        PolicySpec::RoundRobin,
        PolicySpec::WeightedRoundRobin,
        PolicySpec::LeastConn,
        PolicySpec::Random,
        PolicySpec::ConsistentHash {
            key: HashKey::ClientAddress,
            algorithm: HashAlgorithm::Ring,
        },
        PolicySpec::ConsistentHash {
            key: HashKey::ClientAddress,
            algorithm: HashAlgorithm::Maglev,
        },
        PolicySpec::StickyCookie {
            cookie: "s".into(),
            decay: Duration::from_secs(10),
        },
        PolicySpec::default(),
    ]
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for spec in specs() {
        for n in [4, 16, 64] {
            let eps = endpoints(n);
            let selector = Selector::build(&spec, &eps);
            let mut rng = SmallRng::seed_from_u64(42);
            let mut key = 0u64;
            let now = Duration::from_secs(1);
            group.bench_with_input(BenchmarkId::new(spec.name(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let request = PickRequest {
                        hash_key: Some(key),
                        sticky_endpoint: None,
                        ..PickRequest::default()
                    };
                    black_box(selector.pick(&eps, &request, now, &mut rng))
                })
            });
        }
    }
    let models = committed_models();
    for n in [4, 16, 64] {
        let eps = endpoints(n);
        let selector = Selector::build_with_models(&PolicySpec::predictive(), &eps, Some(models.clone()));
        let mut rng = SmallRng::seed_from_u64(42);
        let now = Duration::from_secs(1);
        let request = PickRequest::default();
        group.bench_with_input(BenchmarkId::new("predictive", n), &n, |b, _| {
            b.iter(|| black_box(selector.pick_predicted(&eps, &request, &[], now, &mut rng)))
        });
        // As under load: before each pick one backend's state changes (a request starts and another
        // ends), so its cached part of the scores is stale and is recomputed.
        let mut turn = 0;
        group.bench_with_input(BenchmarkId::new("predictive_churn", n), &n, |b, _| {
            b.iter(|| {
                turn = (turn + 1) % n;
                eps[turn].load.try_start(None);
                eps[turn].load.finish();
                black_box(selector.pick_predicted(&eps, &request, &[], now, &mut rng))
            })
        });
    }
    group.finish();
}

/// A pick with prefix scoring: a 24 KB chat prompt over 16 LLM servers whose indexes hold 150
/// tenants' documents. `prefix_hash` is the prompt's block hashes (once per request), `prefix_pick`
/// the pick that scores them, `prefix_request` both.
fn prefix(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefix");
    let eps: Vec<Endpoint> = (0..16)
        .map(|i| {
            let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO)
                .with_prefix_index(DEFAULT_INDEX_BLOCKS);
            Endpoint::new(hash::endpoint_id(&format!("gpu-{i}")), 1, Arc::new(load))
        })
        .collect();
    let document = |tenant: usize| -> String {
        (0..6_000)
            .map(|i| format!("{:03x} ", (i * 7 + tenant * 131) % 4096))
            .collect()
    };
    let hash = |document: &str, blocks: &mut PromptBlocks<INDEX_BLOCK_BYTES>| {
        blocks.reset(b"llama");
        blocks.push_message(b"system", document.as_bytes());
        blocks.push_message(b"user", b"What does section 4 say about retention?");
    };
    let mut blocks = PromptBlocks::new(b"");
    for tenant in 0..150 {
        hash(&document(tenant), &mut blocks);
        eps[tenant % 16].load.record_prompt(blocks.hashes());
    }
    let asked = document(37);
    let selector = Selector::build(&PolicySpec::weighted_scorer(0.0), &eps);
    let mut rng = SmallRng::seed_from_u64(42);
    let now = Duration::from_secs(1);
    group.bench_function("prefix_hash", |b| {
        b.iter(|| {
            hash(black_box(&asked), &mut blocks);
            black_box(blocks.hashes().len())
        })
    });
    hash(&asked, &mut blocks);
    let prompt = blocks.hashes().to_vec();
    group.bench_function("prefix_pick", |b| {
        let request = PickRequest {
            prompt: Some(&prompt),
            ..PickRequest::default()
        };
        b.iter(|| black_box(selector.pick(&eps, &request, now, &mut rng)))
    });
    let ttft = Selector::build_with_models(&PolicySpec::predictive_ttft(), &eps, Some(ttft_models()));
    group.bench_function("prefix_pick_ttft", |b| {
        let request = PickRequest {
            prompt: Some(&prompt),
            size: RequestSize {
                prompt_tokens: Some(6_000),
                ..RequestSize::default()
            },
            ..PickRequest::default()
        };
        b.iter(|| black_box(ttft.pick_predicted(&eps, &request, &[], now, &mut rng)))
    });
    group.bench_function("prefix_request", |b| {
        b.iter(|| {
            hash(black_box(&asked), &mut blocks);
            let request = PickRequest {
                prompt: Some(blocks.hashes()),
                ..PickRequest::default()
            };
            black_box(selector.pick(&eps, &request, now, &mut rng))
        })
    });
    group.finish();
}

fn committed_models() -> Arc<ActiveModels> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).expect("models/manifest.json");
    let set = ModelSet::load(&manifest, |f| std::fs::read(dir.join(f))).expect("a valid set");
    Arc::new(ActiveModels::new(&set, 0.9).expect("a latency model"))
}

criterion_group!(benches, pick, prefix);
criterion_main!(benches);
