//! Prefix-aware picking over a pool of LLM servers: the weighted scorer finds the backend a long
//! prompt's prefix was sent to among many, and a pick allocates nothing.

mod support;
#[path = "support/ttft_models.rs"]
mod ttft_models;

use std::sync::Arc;
use std::time::Duration;

use augur_engine::prefix::{PromptBlocks, DEFAULT_INDEX_BLOCKS, INDEX_BLOCK_BYTES};
use augur_engine::{hash, BackendLoad, Endpoint, PickRequest, PolicySpec, RequestSize, Selector};
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn llm_servers(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            let load = BackendLoad::new(Duration::from_millis(30), Duration::ZERO)
                .with_prefix_index(DEFAULT_INDEX_BLOCKS);
            Endpoint::new(hash::endpoint_id(&format!("gpu-{i}")), 1, Arc::new(load))
        })
        .collect()
}

/// A 24 KB chat prompt: tenant `tenant`'s document, then a question.
fn prompt(tenant: u32, question: u32) -> Vec<u64> {
    let mut blocks = PromptBlocks::<INDEX_BLOCK_BYTES>::new(b"llama");
    let document: String = (0..6_000)
        .map(|i| format!("{:03x} ", (i * 7 + tenant * 131) % 4096))
        .collect();
    blocks.push_message(b"system", document.as_bytes());
    blocks.push_message(b"user", format!("question {question}?").as_bytes());
    blocks.hashes().to_vec()
}

#[test]
fn a_long_prompt_goes_where_its_document_went_and_the_pick_allocates_nothing() {
    let eps = llm_servers(16);
    // 150 tenants' documents, each sent to one of the servers.
    for tenant in 0..150 {
        eps[tenant as usize % 16].load.record_prompt(&prompt(tenant, 0));
    }
    let policies = [
        Selector::build(&PolicySpec::weighted_scorer(0.0), &eps),
        Selector::build_with_models(
            &PolicySpec::predictive_ttft(),
            &eps,
            Some(ttft_models::ttft_models()),
        ),
    ];
    let mut rng = SmallRng::seed_from_u64(3);
    let asked = prompt(37, 1);
    let request = PickRequest {
        prompt: Some(&asked),
        size: RequestSize {
            prompt_tokens: Some(6_000),
            ..RequestSize::default()
        },
        ..PickRequest::default()
    };
    for selector in policies {
        // Warm up (the first use of thread-locals allocates), then count.
        selector.pick_predicted(&eps, &request, &[], Duration::ZERO, &mut rng);
        let mut picks = Vec::with_capacity(100);
        let allocations = support::allocations_in(|| {
            for _ in 0..100 {
                let pick = selector.pick_predicted(&eps, &request, &[], Duration::ZERO, &mut rng);
                picks.push(pick.map(|(i, _)| i));
            }
        });
        assert!(
            picks.iter().all(|&p| p == Some(37 % 16)),
            "{selector:?}: the server holding tenant 37's document: {picks:?}"
        );
        assert_eq!(allocations, 0, "{selector:?}: picks allocated");
    }
}
