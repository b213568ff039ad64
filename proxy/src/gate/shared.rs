//! Rate and token limits shared by a fleet of proxies through Redis: the same GCRA as in process,
//! its state (each limit's theoretical arrival time) kept in Redis and charged by one Lua script per
//! request, all of a request's limits at once, on Redis's clock (so the proxies' clocks need not
//! agree).
//!
//! Redis being down or slow must never stall the door: a call gets `[limiter] timeout`, and a
//! failed one is counted and answered as `on_error` says. The connection is made (and remade) in
//! the background; until it is up, every call fails fast.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::{IntCounterVec, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::rate::{Gcra, Verdict};
use crate::config::{LimiterConfig, OnLimiterError};
use crate::metrics::counter;

/// Charges every limit given (`KEYS[i]`, with `ARGV` holding interval, window and cost per limit,
/// in microseconds and units) or none: returns `{1, used_1, ..., used_n}` (each limit's next
/// admission, microseconds from now) or `{0, i, wait, used_i}` for the first limit that refuses.
/// Times are formatted with `%.0f`: Lua's own number formatting would round a microsecond clock.
const CHARGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nexts = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local window = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local nxt = tat + cost * interval
  if nxt > now + window then
    return {0, i, nxt - now - window, tat - now}
  end
  nexts[i] = nxt
end
local used = {1}
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', nexts[i]), 'PX', math.ceil((nexts[i] - now) / 1000) + 1000)
  used[i + 1] = nexts[i] - now
end
return used
";

/// Moves one limit's state by `ARGV[1]` microseconds (negative: gives back), never before now.
const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local nxt = tat + tonumber(ARGV[1])
if nxt <= now then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
end
return 1
";

/// One limit of a request, as the shared limiter charges it.
pub struct SharedCharge<'a> {
    /// Its Redis key.
    pub key: String,
    /// The limit.
    pub gcra: &'a Gcra,
    /// What the request costs it.
    pub cost: u64,
}

/// What Redis said of a request's limits.
pub enum SharedVerdict {
    /// Every limit was charged; each one's verdict, in the order given.
    Admitted(Vec<Verdict>),
    /// The limit at this index refused: nothing was charged.
    Refused(usize, Verdict),
}

/// The fleet's limiter.
pub struct SharedLimiter {
    connection: Arc<ArcSwapOption<ConnectionManager>>,
    charge: Script,
    settle: Script,
    /// What a request meets while Redis does not answer.
    pub on_error: OnLimiterError,
    timeout: Duration,
    prefix: String,
    calls: IntCounterVec,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("prefix", &self.prefix)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// The limiter for `config`, connecting in the background until `stop`.
    pub fn start(
        config: &LimiterConfig,
        registry: &Registry,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let client =
            redis::Client::open(config.redis_url.as_str()).map_err(|e| format!("limiter.redis_url: {e}"))?;
        let limiter = Arc::new(Self {
            connection: Arc::default(),
            charge: Script::new(CHARGE),
            settle: Script::new(SETTLE),
            on_error: config.on_error,
            timeout: config.timeout,
            prefix: config.prefix.clone(),
            calls: counter(
                registry,
                "augur_limiter_redis_calls_total",
                "Calls to the shared limiter in Redis, by result (admitted, refused, error: the request met `on_error`) and what an error did",
                &["result", "on_error"],
            ),
        });
        tokio::spawn(connect(client, config.timeout, limiter.connection.clone(), stop));
        Ok(limiter)
    }

    /// The Redis key of limit `gcra` of `scope` (`key`, `tenant` or `route`) `name`. The quota and
    /// window are in it, so a changed limit starts afresh, as in process.
    pub fn key(&self, scope: &str, name: &str, gcra: &Gcra) -> String {
        format!(
            "{}{scope}:{name}:{}:{}:{}",
            self.prefix,
            gcra.name(),
            gcra.quota(),
            gcra.window().as_secs()
        )
    }

    /// Charges `limits` (all or none), within the timeout; `Err` says why Redis gave no answer.
    pub async fn charge(&self, limits: &[SharedCharge<'_>]) -> Result<SharedVerdict, String> {
        let result = self.try_charge(limits).await;
        let label = match &result {
            Ok(SharedVerdict::Admitted(_)) => "admitted",
            Ok(SharedVerdict::Refused(..)) => "refused",
            Err(_) => "error",
        };
        let action = if result.is_err() {
            self.on_error.as_str()
        } else {
            ""
        };
        self.calls.with_label_values(&[label, action]).inc();
        result
    }

    async fn try_charge(&self, limits: &[SharedCharge<'_>]) -> Result<SharedVerdict, String> {
        let connection = self.connection.load_full().ok_or("not connected to Redis")?;
        let mut connection = ConnectionManager::clone(&connection);
        let mut invocation = self.charge.prepare_invoke();
        for limit in limits {
            invocation
                .key(&limit.key)
                .arg(micros(limit.gcra.interval()))
                .arg(micros(limit.gcra.window()))
                .arg(limit.cost);
        }
        let call = invocation.invoke_async::<Vec<i64>>(&mut connection);
        let reply = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("Redis did not answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())?;
        let us = |n: i64| Duration::from_micros(n.max(0) as u64);
        match reply.as_slice() {
            [1, used @ ..] if used.len() == limits.len() => Ok(SharedVerdict::Admitted(
                used.iter()
                    .zip(limits)
                    .map(|(used, limit)| limit.gcra.verdict_after(us(*used), Duration::ZERO))
                    .collect(),
            )),
            [0, index, wait, used] if (1..=limits.len() as i64).contains(index) => {
                let i = (*index - 1) as usize;
                Ok(SharedVerdict::Refused(
                    i,
                    limits[i].gcra.verdict_after(us(*used), us(*wait)),
                ))
            }
            other => Err(format!("unexpected answer from the limiter script: {other:?}")),
        }
    }

    /// Moves the limit at `key`, spacing admissions `interval` apart, by `delta` units (negative:
    /// gives them back), in the background: settling a request's usage is never its wait.
    pub fn settle(self: &Arc<Self>, key: String, interval: Duration, delta: i64) {
        let Some(connection) = self.connection.load_full() else {
            return;
        };
        let mut connection = ConnectionManager::clone(&connection);
        let shift = delta.saturating_mul(micros(interval) as i64);
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut invocation = limiter.settle.key(key);
            invocation.arg(shift);
            let call = invocation.invoke_async::<i64>(&mut connection);
            if !matches!(tokio::time::timeout(limiter.timeout, call).await, Ok(Ok(_))) {
                limiter.calls.with_label_values(&["settle_error", ""]).inc();
            }
        });
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Connects to Redis, retrying every second until it answers; the connection manager then
/// reconnects by itself.
async fn connect(
    client: redis::Client,
    timeout: Duration,
    slot: Arc<ArcSwapOption<ConnectionManager>>,
    stop: CancellationToken,
) {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_secs(1))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(1));
    let mut logged = false;
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = client.get_connection_manager_with_config(config.clone()) => attempt,
        };
        match attempt {
            Ok(manager) => {
                tracing::info!("connected to the shared limiter's Redis");
                slot.store(Some(Arc::new(manager)));
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot reach the shared limiter's Redis; retrying every second");
                    logged = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}
