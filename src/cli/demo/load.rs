//! The demo's load: the arrival pattern of the Azure LLM trace (or a synthetic flash crowd), squeezed
//! into one phase and thinned to the cluster's size, sent open-loop through the proxy.

use std::path::Path;
use std::time::{Duration, Instant};

use augur_sim::trace::{load, TraceColumns};
use augur_sim::traffic::{Sizes, Spike, Traffic};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Where the demo looks for the real trace (the repository's shared traces, beside the checkout).
pub const TRACE: &str = "../shared/traces/azure_llm_2023_code.csv";
/// A client gives up on a request after this long.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// When each request of a phase is sent, from the phase's start.
pub struct Schedule {
    /// Send times, in order.
    pub offsets: Vec<Duration>,
    /// Where the shape came from, for the printout.
    pub source: String,
}

/// `requests` send times over `phase`: the trace's arrival pattern compressed into it and thinned at
/// random, or a synthetic flash crowd where the trace is missing.
pub fn schedule(trace: &Path, phase: Duration, requests: usize, seed: u64) -> Schedule {
    let mut rng = SmallRng::seed_from_u64(seed);
    if let Ok(trace) = load(trace, &TraceColumns::default()) {
        let squeeze = phase.as_secs_f64() / trace.span().as_secs_f64().max(1e-9);
        let keep = requests as f64 / trace.len() as f64;
        let offsets = trace
            .offsets
            .iter()
            .filter(|_| rng.random::<f64>() < keep)
            .map(|o| Duration::from_secs_f64(o.as_secs_f64() * squeeze))
            .collect();
        let source = format!(
            "the Azure LLM code trace (Patel et al., ISCA 2024; CC-BY 4.0), {} requests squeezed x{:.0}",
            trace.len(),
            1.0 / squeeze
        );
        return Schedule { offsets, source };
    }
    let mean_rate = requests as f64 / phase.as_secs_f64();
    let spike = Spike {
        start: phase.mul_f64(0.4),
        duration: phase.mul_f64(0.15),
        multiplier: 3.0,
        ramp: Duration::ZERO,
    };
    let base_rate = mean_rate / (1.0 + 2.0 * 0.15);
    let traffic = Traffic::FlashCrowd {
        base_rate,
        spikes: vec![spike],
    };
    let offsets = traffic
        .arrivals(phase, &Sizes::Fixed(Default::default()), &mut rng)
        .into_iter()
        .map(|a| a.at)
        .collect();
    Schedule {
        offsets,
        source: format!("a synthetic flash crowd ({TRACE} not found)"),
    }
}

/// One answered (or failed) request, as the client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When it was sent, from the phase's start.
    pub sent: Duration,
    /// Time to the end of the response.
    pub latency: Duration,
    /// Whether it got a 2xx.
    pub ok: bool,
}

/// Sends one GET per offset to `url`, each at its time, without waiting for earlier ones (open loop:
/// a slow backend does not slow the arrivals down). `progress` is called after each answer.
pub async fn drive(url: &str, offsets: &[Duration], progress: impl Fn()) -> Vec<Outcome> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(offsets.len());
    for &offset in offsets {
        tokio::time::sleep_until(start + offset).await;
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let request = hyper::Request::get(url)
                .body(Full::new(Bytes::new()))
                .expect("valid request");
            let exchange = async {
                let response = client.request(request).await.ok()?;
                let ok = response.status().is_success();
                response.into_body().collect().await.ok()?;
                Some(ok)
            };
            let ok = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
                .await
                .ok()
                .flatten()
                .unwrap_or(false);
            Outcome {
                sent: offset,
                latency: sent.elapsed(),
                ok,
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(outcome) = task.await {
            progress();
            outcomes.push(outcome);
        }
    }
    outcomes
}
