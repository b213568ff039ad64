//! What a run shows: latency percentiles, error rate and each backend's share, per policy.

use std::collections::BTreeMap;

use augur_engine::shedding::{Priority, QueueOutcome};
use serde::Serialize;

/// The outcome of one policy over one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Mean end-to-end latency, in milliseconds.
    pub mean_ms: f64,
    /// Median end-to-end latency (retries included), in milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Share of requests that failed (after retries).
    pub error_rate: f64,
    /// Share of requests each backend finally served.
    pub share: BTreeMap<String, f64>,
    /// What LLM servers add: time to first token, output rate, prefix-cache hits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmReport>,
    /// Time-to-first-token objectives met and requests shed, by priority, where the scenario sets
    /// an objective.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloReport>,
    /// What the pool's queue did, where it held any request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueReport>,
}

/// Shares of attempts the pool's queue held and placed, held until their wait ran out, or found it
/// full.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueueReport {
    /// Placed on a backend predicted in time after waiting.
    pub placed: f64,
    /// Sent as things stood once their wait ran out.
    pub expired: f64,
    /// Sent at once, the queue full.
    pub full: f64,
}

/// How requests fared against their time-to-first-token objective, by priority (sheddable,
/// standard, critical). A shed request counts as not meeting it; shed requests are left out of the
/// latency figures (they never reached a backend).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SloReport {
    /// Share of all requests that met the objective.
    pub attainment: f64,
    /// Share of each priority's requests that met it.
    pub attainment_by_priority: [f64; 3],
    /// Share of each priority's requests that were shed.
    pub shed_by_priority: [f64; 3],
}

/// The LLM side of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LlmReport {
    /// Median time to first token, in milliseconds (a request that never got one counts with the
    /// time it waited before failing).
    pub ttft_p50_ms: f64,
    /// 90th percentile.
    pub ttft_p90_ms: f64,
    /// 99th percentile.
    pub ttft_p99_ms: f64,
    /// Output tokens of the requests that succeeded, per second of the run.
    pub output_tokens_per_s: f64,
    /// Share of prompt tokens the servers found in their prefix caches.
    pub prefix_hit_ratio: f64,
    /// Share of the requests whose predicted TTFT (at the policy's quantile) their first token
    /// came within; `None` unless the policy predicted first tokens.
    pub ttft_prediction_coverage: Option<f64>,
    /// Share of the answered requests of two or more output tokens whose time per output token
    /// met the scenario's objective; `None` without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpot_objective_met: Option<f64>,
}

/// The `q` quantile (nearest rank) of latencies in microseconds, sorted ascending, in milliseconds.
pub fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    sorted_us[rank] as f64 / 1e3
}

/// A whole comparison, as `augur replay --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Requests per policy run.
    pub requests: usize,
    /// One entry per policy.
    pub policies: Vec<PolicyReport>,
}

/// Collects one policy's results.
pub struct Tally {
    latencies_us: Vec<u64>,
    failures: usize,
    served: Vec<usize>,
    ttfts_us: Vec<u64>,
    output_tokens: u64,
    /// Requests with a predicted first token, and those whose first token came within it.
    ttft_predictions: [u64; 2],
    /// Requests judged against a time-per-output-token objective, and those that met it.
    tpot_objective: [u64; 2],
    /// By priority: requests, those that met the objective, those shed.
    slo: [[u64; 3]; 3],
    /// By [`QueueOutcome`]: how attempts left the pool's queue.
    held: [u64; 3],
}

impl Tally {
    /// A tally over `backends` backends, sized for `expected` requests.
    pub fn new(backends: usize, expected: usize) -> Self {
        Self {
            latencies_us: Vec::with_capacity(expected),
            failures: 0,
            served: vec![0; backends],
            ttfts_us: Vec::new(),
            output_tokens: 0,
            ttft_predictions: [0; 2],
            tpot_objective: [0; 2],
            slo: [[0; 3]; 3],
            held: [0; 3],
        }
    }

    /// Records how an attempt left the pool's queue.
    pub fn record_held(&mut self, result: QueueOutcome) {
        self.held[result as usize] += 1;
    }

    /// Records how a request of `priority` fared against its objective: `met`, or `shed`.
    pub fn record_slo(&mut self, priority: Priority, met: bool, shed: bool) {
        let counts = &mut self.slo[priority as usize];
        counts[0] += 1;
        counts[1] += u64::from(met);
        counts[2] += u64::from(shed);
    }

    /// The objective's side of what was recorded; `None` when nothing was.
    pub fn slo(&self) -> Option<SloReport> {
        let total: u64 = self.slo.iter().map(|c| c[0]).sum();
        if total == 0 {
            return None;
        }
        let share = |part: u64, whole: u64| part as f64 / whole.max(1) as f64;
        Some(SloReport {
            attainment: share(self.slo.iter().map(|c| c[1]).sum(), total),
            attainment_by_priority: self.slo.map(|c| share(c[1], c[0])),
            shed_by_priority: self.slo.map(|c| share(c[2], c[0])),
        })
    }

    /// Records an LLM request's time to first token and the output tokens it got.
    pub fn record_llm(&mut self, ttft_us: u64, output_tokens: u32) {
        self.ttfts_us.push(ttft_us);
        self.output_tokens += u64::from(output_tokens);
    }

    /// Records whether a request's time per output token met the objective.
    pub fn record_tpot(&mut self, met: bool) {
        self.tpot_objective[0] += 1;
        self.tpot_objective[1] += u64::from(met);
    }

    /// Records whether a request's first token came within its predicted TTFT.
    pub fn record_ttft_prediction(&mut self, covered: bool) {
        self.ttft_predictions[0] += 1;
        self.ttft_predictions[1] += u64::from(covered);
    }

    /// The LLM side of what was recorded, over a run of `duration_s` seconds whose servers found
    /// `cached` of `prompt` prompt tokens in their caches; `None` when no LLM request was recorded.
    pub fn llm(&mut self, duration_s: f64, (prompt, cached): (u64, u64)) -> Option<LlmReport> {
        if self.ttfts_us.is_empty() {
            return None;
        }
        self.ttfts_us.sort_unstable();
        let share = |[judged, met]: [u64; 2]| (judged > 0).then(|| met as f64 / judged as f64);
        Some(LlmReport {
            ttft_p50_ms: percentile_ms(&self.ttfts_us, 0.5),
            ttft_p90_ms: percentile_ms(&self.ttfts_us, 0.9),
            ttft_p99_ms: percentile_ms(&self.ttfts_us, 0.99),
            output_tokens_per_s: self.output_tokens as f64 / duration_s.max(1e-9),
            prefix_hit_ratio: cached as f64 / prompt.max(1) as f64,
            ttft_prediction_coverage: share(self.ttft_predictions),
            tpot_objective_met: share(self.tpot_objective),
        })
    }

    /// Records one request: its end-to-end latency, whether it failed, and the backend that finally
    /// served it, where known.
    pub fn record(&mut self, latency_us: u64, failed: bool, backend: Option<usize>) {
        self.latencies_us.push(latency_us);
        self.failures += usize::from(failed);
        if let Some(b) = backend {
            self.served[b] += 1;
        }
    }

    /// The report of what was recorded; `names` are the backends' names, in index order; `llm` from
    /// [`Tally::llm`].
    pub fn finish(mut self, policy: &str, names: &[String], llm: Option<LlmReport>) -> PolicyReport {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let quantile = |q: f64| percentile_ms(&self.latencies_us, q);
        let total = n.max(1) as f64;
        let mean_ms = self.latencies_us.iter().map(|&l| l as f64).sum::<f64>() / n.max(1) as f64 / 1e3;
        PolicyReport {
            policy: policy.to_owned(),
            mean_ms,
            p50_ms: quantile(0.5),
            p90_ms: quantile(0.9),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            error_rate: self.failures as f64 / total,
            share: names
                .iter()
                .cloned()
                .zip(self.served.iter().map(|&s| s as f64 / total))
                .collect(),
            llm,
            slo: self.slo(),
            queue: (self.held.iter().sum::<u64>() > 0).then(|| {
                let share = |count: u64| count as f64 / total;
                QueueReport {
                    placed: share(self.held[QueueOutcome::Placed as usize]),
                    expired: share(self.held[QueueOutcome::Expired as usize]),
                    full: share(self.held[QueueOutcome::Full as usize]),
                }
            }),
        }
    }
}

impl Report {
    /// A plain-text table, one line per policy.
    pub fn table(&self) -> String {
        let mut out = format!(
            "scenario {} ({} requests per policy)\n{:<22} {:>9} {:>9} {:>9} {:>9} {:>8}  share\n",
            self.scenario, self.requests, "policy", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "errors"
        );
        let llm = self.policies.iter().any(|p| p.llm.is_some());
        if llm {
            out = format!(
                "scenario {} ({} requests per policy)\n{:<22} {:>9} {:>9} {:>9} {:>11} {:>11} {:>8} {:>9} {:>8}\n",
                self.scenario,
                self.requests,
                "policy",
                "p50 ms",
                "p99 ms",
                "ttft p50",
                "ttft p90 ms",
                "ttft p99 ms",
                "tok/s",
                "prefix hit",
                "errors"
            );
        }
        for p in &self.policies {
            if let (true, Some(l)) = (llm, &p.llm) {
                out.push_str(&format!(
                    "{:<22} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>8.0} {:>9.1}% {:>7.2}%\n",
                    p.policy,
                    p.p50_ms,
                    p.p99_ms,
                    l.ttft_p50_ms,
                    l.ttft_p90_ms,
                    l.ttft_p99_ms,
                    l.output_tokens_per_s,
                    l.prefix_hit_ratio * 100.0,
                    p.error_rate * 100.0
                ));
                continue;
            }
            let share: Vec<String> = p
                .share
                .iter()
                .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
                .collect();
            out.push_str(&format!(
                "{:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7.2}%  {}\n",
                p.policy,
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.p999_ms,
                p.error_rate * 100.0,
                share.join(", ")
            ));
        }
        for p in &self.policies {
            if let Some(met) = p.llm.and_then(|l| l.tpot_objective_met) {
                out.push_str(&format!(
                    "{}: time per output token within the objective for {:.1}% of requests\n",
                    p.policy,
                    met * 100.0
                ));
            }
            if let Some(coverage) = p.llm.and_then(|l| l.ttft_prediction_coverage) {
                out.push_str(&format!(
                    "{}: first token within its predicted TTFT for {:.1}% of requests\n",
                    p.policy,
                    coverage * 100.0
                ));
            }
            if let Some(slo) = &p.slo {
                let [sheddable, standard, critical] = slo.attainment_by_priority.map(|a| a * 100.0);
                let [shed_s, shed_st, shed_c] = slo.shed_by_priority.map(|a| a * 100.0);
                out.push_str(&format!(
                    "{}: TTFT objective met by {:.1}% (sheddable {sheddable:.1}%, standard {standard:.1}%, critical {critical:.1}%); shed {shed_s:.1}% / {shed_st:.1}% / {shed_c:.1}%\n",
                    p.policy,
                    slo.attainment * 100.0
                ));
            }
            if let Some(queue) = &p.queue {
                out.push_str(&format!(
                    "{}: held in the pool's queue: placed {:.1}%, sent when the wait ran out {:.1}%, queue full {:.1}%\n",
                    p.policy,
                    queue.placed * 100.0,
                    queue.expired * 100.0,
                    queue.full * 100.0
                ));
            }
        }
        out
    }
}
