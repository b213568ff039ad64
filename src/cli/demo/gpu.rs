//! The demo's GPU phase: LLM nodes that cache prompt prefixes, behind the real proxy, serving many
//! tenants' long documents; first spread by load (P2C over Peak-EWMA), then sent where each prompt's
//! prefix went (the inference extension's scorer over the proxy's prefix index). The same requests,
//! side by side: time to first token, and how much of the prompts the nodes found cached.

use std::path::Path;
use std::time::{Duration, Instant};

use augur_sim::behaviour::{BackendBehaviour, GpuBehaviour};
use augur_sim::prompt::Prompt;
use augur_sim::report::Tally;
use augur_sim::scenario::SimBackend;
use augur_sim::Scenario;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::load::Outcome;
use super::PhaseResult;

/// The policies compared.
pub const POLICIES: [&str; 2] = ["p2c_ewma", "weighted_scorer"];
const NODES: usize = 4;
const TENANTS: u32 = 16;
const DOCUMENT_TOKENS: u32 = 2_000;
const OUTPUT_TOKENS: u32 = 20;
/// Requests per second, measured ones.
const RATE: f64 = 30.0;
/// A client gives up on a request after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Four nodes that prefill 10,000 tokens a second between them each (a document from scratch takes
/// 0.2 s of a node) and cache 16,000 tokens: half the tenants' documents fit on each node, a quarter
/// when every node sees every tenant.
fn cluster() -> Scenario {
    let node = GpuBehaviour {
        max_batch: 16,
        kv_capacity_tokens: 16_000,
        prefill_us_per_token: 100.0,
        tpot_base_us: 10_000.0,
        tpot_per_running_us: 200.0,
        shared_prefill: true,
        max_lora: 0,
        lora_load_us: 0.0,
    };
    let backends = (0..NODES)
        .map(|i| SimBackend {
            name: format!("gpu-{i}"),
            behaviour: BackendBehaviour::Gpu(node),
            weight: 1,
        })
        .collect();
    Scenario::serving("demo-gpu", "LLM nodes with prefix caches", backends)
}

/// What the phase says about itself, for the printout and the report.
pub fn describe(short: bool) -> String {
    format!(
        "GPU phase: {NODES} simulated LLM nodes with prefix caches; {TENANTS} tenants, each asking questions about its own {DOCUMENT_TOKENS}-token document, {RATE:.0} requests/s for {} s per policy (after one warm-up request per tenant); {} against {}.",
        phase(short).as_secs(),
        POLICIES[0],
        POLICIES[1]
    )
}

fn phase(short: bool) -> Duration {
    Duration::from_secs(if short { 4 } else { 20 })
}

/// Runs both policies over the same requests.
pub async fn run(short: bool, seed: u64) -> Result<Vec<PhaseResult>, String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let phase = phase(short);
    let requests = (RATE * phase.as_secs_f64()) as usize;
    // Tenant and question of each request, and when it is sent.
    let plan: Vec<(Duration, u32)> = (0..requests)
        .map(|i| {
            let at = Duration::from_secs_f64(i as f64 / RATE);
            (at, rng.random_range(0..TENANTS))
        })
        .collect();
    let mut results = Vec::new();
    for policy in POLICIES {
        results.push(run_policy(policy, &plan, phase, seed).await?);
    }
    Ok(results)
}

async fn run_policy(
    policy: &'static str,
    plan: &[(Duration, u32)],
    phase: Duration,
    seed: u64,
) -> Result<PhaseResult, String> {
    let scenario = cluster();
    let cluster = augur_sim::http::serve(&scenario, [127, 0, 0, 1].into(), seed)
        .await
        .map_err(|e| e.to_string())?;
    let config = format!(
        "[proxy]\nid = \"demo-gpu-{policy}\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"gpu\"\n\
         [pools.gpu]\npolicy = {{ kind = \"{policy}\" }}\nbackends = {}\ntimeouts = {{ request = \"20s\" }}\n\
         metrics = {{ preset = \"vllm\", interval = \"250ms\" }}\n",
        cluster.backends_toml(),
    );
    let config = augur_proxy::Config::parse(&config, Path::new("<demo>")).map_err(|e| e.to_string())?;
    let proxy = augur_proxy::start(config, None)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!("http://{}/v1/chat/completions", proxy.listeners[0]);
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    // One request per tenant first, one at a time: every document is somewhere before the clock
    // starts, so both policies are measured warm.
    for tenant in 0..TENANTS {
        ask(&client, &url, tenant, u64::from(tenant)).await;
    }
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(plan.len());
    for (i, &(at, tenant)) in plan.iter().enumerate() {
        tokio::time::sleep_until(start + at).await;
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let asked = ask(&client, &url, tenant, 1_000 + i as u64).await;
            (at, asked)
        }));
    }
    let mut tally = Tally::new(NODES, tasks.len());
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        let Ok((sent, asked)) = task.await else {
            continue;
        };
        tally.record(asked.total.as_micros() as u64, !asked.ok, None);
        tally.record_llm(
            asked.first_token.unwrap_or(asked.total).as_micros() as u64,
            if asked.ok { OUTPUT_TOKENS } else { 0 },
        );
        // The report's chart follows time to first token here.
        outcomes.push(Outcome {
            sent,
            latency: asked.first_token.unwrap_or(asked.total),
            ok: asked.ok,
        });
    }
    let mut counts = (0, 0);
    for backend in &cluster.backends {
        let (prompt, cached) = prefix_counts(&client, backend.addr).await;
        counts = (counts.0 + prompt, counts.1 + cached);
    }
    proxy.shutdown().await;
    drop(cluster);
    let llm = tally.llm(phase.as_secs_f64(), counts);
    let names: Vec<String> = scenario.backends.iter().map(|b| b.name.clone()).collect();
    Ok(PhaseResult {
        report: tally.finish(policy, &names, llm),
        outcomes,
    })
}

/// One streamed request as its client saw it.
struct Asked {
    first_token: Option<Duration>,
    total: Duration,
    ok: bool,
}

/// Asks question `question` about `tenant`'s document, streamed.
async fn ask(client: &Client<HttpConnector, Full<Bytes>>, url: &str, tenant: u32, question: u64) -> Asked {
    let prompt = Prompt::Document {
        tenant,
        document_tokens: DOCUMENT_TOKENS,
        question,
        question_tokens: 30,
    };
    let mut messages = Vec::new();
    prompt.for_each_message(&mut String::new(), |role, content| {
        messages.push(serde_json::json!({ "role": role, "content": content }));
    });
    let body = serde_json::json!({
        "model": "demo", "stream": true, "max_tokens": OUTPUT_TOKENS, "messages": messages,
    });
    let request = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request");
    let sent = Instant::now();
    let mut first_token = None;
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let ok = response.status().is_success();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.ok()?;
            if frame.data_ref().is_some_and(|d| !d.is_empty()) && first_token.is_none() {
                first_token = Some(sent.elapsed());
            }
        }
        Some(ok)
    };
    let ok = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    Asked {
        first_token,
        total: sent.elapsed(),
        ok,
    }
}

/// A node's prompt tokens and the ones it found cached, from its vLLM counters.
async fn prefix_counts(
    client: &Client<HttpConnector, Full<Bytes>>,
    node: std::net::SocketAddr,
) -> (u64, u64) {
    let request = hyper::Request::get(format!("http://{node}/metrics"))
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(5), client.request(request)).await else {
        return (0, 0);
    };
    let Ok(body) = response.into_body().collect().await else {
        return (0, 0);
    };
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    let counter = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (
        counter("vllm:prefix_cache_queries_total"),
        counter("vllm:prefix_cache_hits_total"),
    )
}
