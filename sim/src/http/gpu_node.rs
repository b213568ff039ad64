//! An LLM inference node with an OpenAI-compatible API (`/v1/completions`, `/v1/chat/completions`,
//! `stream: true` as server-sent events) and vLLM's metric names on `/metrics`.
//!
//! The scheduler is the discrete-event simulator's ([`GpuServer`]): a request waits until the batch
//! has room, its tokens fit in the KV cache and its LoRA adapter (the `model` `lora-N`) can be
//! resident; then the prefill of what its prompt does not find in the prefix cache, then one token
//! per step, each step as slow as the batch is large at that moment.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

use super::{full, Schedule, SimBody};
use crate::behaviour::{GpuBehaviour, RequestTokens};
use crate::gpu::{GpuRequest, GpuServer, Started};
use crate::prompt::{model_name, NodeBlocks, CHARS_PER_TOKEN};

/// Output tokens when a request names no `max_tokens` (OpenAI's legacy completions default).
const DEFAULT_MAX_TOKENS: u32 = 16;

struct Node {
    server: GpuServer,
    /// The adapters of the requests waiting (one entry per request; `None` for the base model).
    waiting: Vec<Option<u16>>,
}

/// One simulated GPU node.
pub struct GpuNode {
    name: String,
    node: Mutex<Node>,
    schedule: Schedule,
    freed: Notify,
    rng: Mutex<SmallRng>,
}

/// A request's place in the batch; leaving it frees its slot, its KV tokens and its adapter.
struct Slot<'a> {
    node: &'a GpuNode,
    size: RequestTokens,
    adapter: Option<u16>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.node.lock().server.finish(self.size, self.adapter);
        self.node.freed.notify_waiters();
    }
}

/// What a completion request asks for.
struct Ask {
    size: RequestTokens,
    adapter: Option<u16>,
    blocks: Vec<u64>,
}

impl GpuNode {
    pub(crate) fn new(name: &str, behaviour: GpuBehaviour, schedule: Schedule, seed: u64) -> Self {
        Self {
            name: name.to_owned(),
            node: Mutex::new(Node {
                server: GpuServer::new(behaviour),
                waiting: Vec::new(),
            }),
            schedule,
            freed: Notify::new(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn handle(
        self: std::sync::Arc<Self>,
        request: Request<hyper::body::Incoming>,
    ) -> Response<SimBody> {
        let path = request.uri().path().to_owned();
        match path.as_str() {
            "/healthz" => full(200, "text/plain", "ok\n"),
            "/metrics" => full(200, "text/plain; version=0.0.4", self.metrics()),
            "/v1/completions" | "/v1/chat/completions" => {
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                match serde_json::from_slice::<Value>(&body) {
                    Ok(json) => self.complete(json, path == "/v1/chat/completions").await,
                    Err(e) => error(400, &format!("request body is not JSON: {e}")),
                }
            }
            _ => error(404, &format!("no route {path}")),
        }
    }

    /// vLLM's metrics, under vLLM's names.
    fn metrics(&self) -> String {
        let n = self.lock();
        let server = &n.server;
        let label = format!("model_name=\"{}\"", self.name);
        let list = |adapters: &mut dyn Iterator<Item = u16>| {
            let mut names: Vec<String> = adapters.map(|a| model_name(Some(a))).collect();
            names.sort_unstable();
            names.dedup();
            names.join(",")
        };
        let running = list(&mut server.adapters().running());
        let waiting = list(&mut n.waiting.iter().filter_map(|a| *a));
        let (queries, hits) = server.prefix_counts();
        let (block_size, num_gpu_blocks) = server.cache_blocks();
        format!(
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
             # TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{{label}}} {}\n\
             # HELP vllm:num_requests_running Number of requests currently running on GPU.\n\
             # TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{{label}}} {}\n\
             # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
             # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{{label}}} {}\n\
             # HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.\n\
             # TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{{{label}}} {queries}\n\
             # HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.\n\
             # TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{{{label}}} {hits}\n\
             # HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n\
             # TYPE vllm:cache_config_info gauge\n\
             vllm:cache_config_info{{block_size=\"{block_size}\",enable_prefix_caching=\"True\",num_gpu_blocks=\"{num_gpu_blocks}\"}} 1.0\n\
             # HELP vllm:lora_requests_info Running stats on lora requests.\n\
             # TYPE vllm:lora_requests_info gauge\n\
             vllm:lora_requests_info{{max_lora=\"{}\",running_lora_adapters=\"{running}\",waiting_lora_adapters=\"{waiting}\"}} {}\n",
            n.waiting.len(),
            server.running(),
            server.kv_usage(),
            server.adapters().max(),
            self.schedule.now().as_secs_f64(),
        )
    }

    /// What a completion body asks for: its size, its adapter and its prompt's KV blocks.
    fn ask(json: &Value, chat: bool) -> Ask {
        let text_len = |v: &Value| match v {
            Value::String(s) => s.len(),
            Value::Array(parts) => parts
                .iter()
                .map(|p| p.as_str().or(p["text"].as_str()).map_or(0, str::len))
                .sum(),
            _ => 0,
        };
        let prompt_chars = if chat {
            json["messages"]
                .as_array()
                .map_or(0, |m| m.iter().map(|m| text_len(&m["content"])).sum())
        } else {
            text_len(&json["prompt"])
        };
        let model = json["model"].as_str().unwrap_or("base");
        let adapter = model.strip_prefix("lora-").and_then(|n| n.parse().ok());
        let mut blocks = NodeBlocks::new(model_name(adapter).as_bytes());
        blocks.push_openai(json);
        Ask {
            size: RequestTokens {
                prompt_tokens: (prompt_chars / CHARS_PER_TOKEN).max(1) as u32,
                output_tokens: json["max_tokens"]
                    .as_u64()
                    .map_or(DEFAULT_MAX_TOKENS, |n| n.clamp(1, 4096) as u32),
            },
            adapter,
            blocks: blocks.hashes().to_vec(),
        }
    }

    async fn complete(self: std::sync::Arc<Self>, json: Value, chat: bool) -> Response<SimBody> {
        let ask = Self::ask(&json, chat);
        let size = ask.size;
        let now = self.schedule.now();
        let draw: f64 = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        if draw < self.schedule.faults.error_rate(now) {
            return error(503, "the node is failing (error burst)");
        }
        let model_name = json["model"].as_str().unwrap_or(&self.name).to_owned();
        let stream = json["stream"].as_bool().unwrap_or(false);
        // As vLLM and OpenAI do: a last chunk with the usage, only when asked for.
        let usage_chunk = stream && json["stream_options"]["include_usage"].as_bool() == Some(true);
        let (tx, rx) = mpsc::channel::<String>(8);
        let node = self.clone();
        let generation =
            tokio::spawn(async move { node.generate(ask, chat, &model_name, usage_chunk, tx).await });
        if stream {
            let body = StreamBody::new(Events(rx)).boxed();
            return Response::builder()
                .status(200)
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(body)
                .expect("static parts are valid");
        }
        drop(rx);
        let text = generation.await.unwrap_or_default();
        let usage = usage(size);
        let choice = if chat {
            json!({ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "length" })
        } else {
            json!({ "index": 0, "text": text, "finish_reason": "length" })
        };
        let object = if chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        let reply =
            json!({ "id": "sim", "object": object, "model": self.name, "choices": [choice], "usage": usage });
        full(200, "application/json", reply.to_string())
    }

    /// Waits for a place in the batch, then produces the tokens at the model's pace. Streams each as
    /// an SSE event into `events` (if anyone listens), then the usage when `usage_chunk`, and
    /// returns the whole text.
    async fn generate(
        &self,
        ask: Ask,
        chat: bool,
        model: &str,
        usage_chunk: bool,
        events: mpsc::Sender<String>,
    ) -> String {
        let size = ask.size;
        let (slot, admitted) = self.admit(&ask).await;
        let started = self.schedule.now();
        if let Some(end) = self.schedule.faults.hung_until(started) {
            tokio::time::sleep(end.saturating_sub(started)).await;
        }
        let slowdown = || self.schedule.faults.slowdown(self.schedule.now());
        tokio::time::sleep(Duration::from_secs_f64(admitted.ttft_s * slowdown())).await;
        let mut text = String::new();
        for i in 0..size.output_tokens {
            if i > 0 {
                let step = self.lock().server.tpot_s();
                tokio::time::sleep(Duration::from_secs_f64(step * slowdown())).await;
            }
            let token = format!(" tok{i}");
            text.push_str(&token);
            let chunk = if chat {
                json!({ "object": "chat.completion.chunk", "model": model,
                        "choices": [{ "index": 0, "delta": { "content": token }, "finish_reason": null }] })
            } else {
                json!({ "object": "text_completion", "model": model,
                        "choices": [{ "index": 0, "text": token, "finish_reason": null }] })
            };
            let _ = events.send(format!("data: {chunk}\n\n")).await;
        }
        if usage_chunk {
            let chunk = json!({ "object": "chat.completion.chunk", "model": model, "choices": [],
                                "usage": usage(size) });
            let _ = events.send(format!("data: {chunk}\n\n")).await;
        }
        let _ = events.send("data: [DONE]\n\n".to_owned()).await;
        drop(slot);
        text
    }

    /// Waits for the scheduler to start the request: its place in the batch, and its timing.
    async fn admit(&self, ask: &Ask) -> (Slot<'_>, Started) {
        let request = GpuRequest {
            size: ask.size,
            blocks: &ask.blocks,
            adapter: ask.adapter,
        };
        let mut counted_waiting = false;
        loop {
            // Register for a wake-up before looking, so a slot freed in between is not missed.
            let freed = self.freed.notified();
            {
                let mut n = self.lock();
                let now_s = self.schedule.now().as_secs_f64();
                if let Ok(started) = n.server.try_start(&request, now_s) {
                    if counted_waiting {
                        if let Some(i) = n.waiting.iter().position(|a| *a == ask.adapter) {
                            n.waiting.swap_remove(i);
                        }
                    }
                    let slot = Slot {
                        node: self,
                        size: ask.size,
                        adapter: ask.adapter,
                    };
                    return (slot, started);
                }
                if !counted_waiting {
                    n.waiting.push(ask.adapter);
                    counted_waiting = true;
                }
            }
            freed.await;
        }
    }
}

/// OpenAI's `usage` of a request of `size`.
fn usage(size: RequestTokens) -> Value {
    json!({ "prompt_tokens": size.prompt_tokens, "completion_tokens": size.output_tokens,
            "total_tokens": size.prompt_tokens + size.output_tokens })
}

fn error(status: u16, message: &str) -> Response<SimBody> {
    full(
        status,
        "application/json",
        json!({ "error": { "message": message, "type": "sim_error" } }).to_string(),
    )
}

/// The SSE events a generation sends, as body frames.
struct Events(mpsc::Receiver<String>);

impl futures_core::Stream for Events {
    type Item = Result<Frame<Bytes>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|event| event.map(|e| Ok(Frame::data(Bytes::from(e)))))
    }
}
