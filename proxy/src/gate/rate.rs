//! Rate and concurrency limits, in process: GCRA (the generic cell rate algorithm) over one atomic
//! per limit, so checking a limit is a compare-and-swap, never a lock.
//!
//! A limit of `quota` per `window` spaces admissions `window / quota` apart (the emission interval)
//! and tolerates a burst of the whole quota at once: its state is the theoretical arrival time of
//! the next admission, and a request costing `n` is admitted when pushing that time `n` intervals on
//! keeps it within a window of now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::HeaderValue;

use crate::config::Limits;

/// One limit: `quota` per `window`.
#[derive(Debug)]
pub struct Gcra {
    /// Nanoseconds (on the proxy's clock) from which the next admission is theoretically due.
    tat: AtomicU64,
    interval_ns: u64,
    window_ns: u64,
    quota: u64,
    /// The policy's name in the `RateLimit` headers.
    name: &'static str,
    /// Its `RateLimit-Policy` header.
    policy: &'static HeaderValue,
}

/// What a limit says of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The limit's name, quota and window.
    pub name: &'static str,
    pub quota: u64,
    pub window: Duration,
    /// Its `RateLimit-Policy` header: `"name";q=quota;w=seconds`.
    pub policy: &'static HeaderValue,
    /// What is left of the quota now.
    pub remaining: u64,
    /// When admitted: zero; when refused: how long until it would be admitted.
    pub retry_after: Duration,
}

/// The `RateLimit-Policy` header of a limit, made once per distinct limit for the life of the
/// process: every admitted response carries one, and copying a `&'static` costs nothing. The table
/// holds as many as distinct limits were ever configured (a handful), reloads included.
fn policy_header(name: &'static str, quota: u64, window: Duration) -> &'static HeaderValue {
    type Table = HashMap<(&'static str, u64, u64), &'static HeaderValue>;
    static POLICIES: OnceLock<Mutex<Table>> = OnceLock::new();
    let mut table = POLICIES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    table.entry((name, quota, window.as_secs())).or_insert_with(|| {
        let text = format!("\"{name}\";q={quota};w={}", window.as_secs());
        Box::leak(Box::new(
            HeaderValue::from_str(&text).expect("names and numbers are valid header text"),
        ))
    })
}

impl Verdict {
    /// Whether this limit has less of its quota left than `other` has of its own.
    pub fn tighter_than(&self, other: &Verdict) -> bool {
        u128::from(self.remaining) * u128::from(other.quota)
            < u128::from(other.remaining) * u128::from(self.quota)
    }
}

impl Gcra {
    /// The limit's name (`requests_per_second`, `requests_per_minute`, `tokens_per_minute`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it limits tokens (rather than requests).
    pub fn counts_tokens(&self) -> bool {
        self.name == "tokens_per_minute"
    }

    /// Its quota per window.
    pub fn quota(&self) -> u64 {
        self.quota
    }

    /// How far apart it spaces admissions.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns)
    }

    /// Its window.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window_ns)
    }

    /// The verdict of a limit whose next admission is due `used` from now (what the shared
    /// limiter reports), `wait` being how long a refused request waits.
    pub fn verdict_after(&self, used: Duration, wait: Duration) -> Verdict {
        let used = used.as_nanos() as u64;
        self.verdict(used, 0, wait.as_nanos() as u64)
    }

    fn new(name: &'static str, quota: u64, window: Duration) -> Self {
        let window_ns = window.as_nanos() as u64;
        Self {
            tat: AtomicU64::new(0),
            interval_ns: (window_ns / quota.max(1)).max(1),
            window_ns,
            quota,
            name,
            policy: policy_header(name, quota, window),
        }
    }

    /// Charges `cost` at `now` (nanoseconds) if the limit allows it: the theoretical arrival time
    /// it moved to (of which [`Gcra::verdict`] tells what is left), or the refusal.
    fn charge(&self, cost: u64, now: u64) -> Result<u64, Verdict> {
        let step = cost.saturating_mul(self.interval_ns);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(step);
            if next > now.saturating_add(self.window_ns) {
                return Err(self.verdict(tat, now, next - now - self.window_ns));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(next),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Gives back `cost` charged earlier (another limit refused the request).
    fn refund(&self, cost: u64) {
        let step = cost.saturating_mul(self.interval_ns);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.saturating_sub(step))
            });
    }

    /// Charges `cost` at `now` whatever the limit says: what a request turned out to use beyond
    /// what it was charged at admission. The debt delays the admissions that follow.
    fn debit(&self, cost: u64, now: u64) {
        let step = cost.saturating_mul(self.interval_ns);
        let _ = self
            .tat
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |tat| {
                Some(tat.max(now).saturating_add(step))
            });
    }

    fn verdict(&self, tat: u64, now: u64, wait_ns: u64) -> Verdict {
        let used = tat.saturating_sub(now).div_ceil(self.interval_ns);
        Verdict {
            name: self.name,
            quota: self.quota,
            window: Duration::from_nanos(self.window_ns),
            policy: self.policy,
            remaining: self.quota.saturating_sub(used),
            retry_after: Duration::from_nanos(wait_ns),
        }
    }
}

/// The limits of one key, tenant or route, and their state.
#[derive(Debug)]
pub struct Scope {
    /// Request limits (per second, per minute), then the token limit.
    requests: Vec<Gcra>,
    tokens: Option<Gcra>,
    concurrent: Option<(u32, Arc<AtomicU32>)>,
}

/// Why a scope refused a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refused {
    /// A rate limit: the verdict says which and when to come back.
    Rate(Verdict),
    /// Too many requests of this scope in flight.
    Concurrency {
        /// The most allowed.
        limit: u32,
    },
}

/// A request counted in flight against a scope's concurrency limit until dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicU32>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Scope {
    /// State for `limits`; `previous` (the same scope under the last keys file) hands over its
    /// counts, so a reload neither resets nor doubles a limit.
    pub fn new(limits: &Limits, previous: Option<&Scope>) -> Self {
        let mut requests = Vec::new();
        if let Some(q) = limits.requests_per_second {
            requests.push(Gcra::new(
                "requests_per_second",
                u64::from(q),
                Duration::from_secs(1),
            ));
        }
        if let Some(q) = limits.requests_per_minute {
            requests.push(Gcra::new(
                "requests_per_minute",
                u64::from(q),
                Duration::from_secs(60),
            ));
        }
        let tokens = limits
            .tokens_per_minute
            .map(|q| Gcra::new("tokens_per_minute", q, Duration::from_secs(60)));
        let in_flight = previous
            .and_then(|p| p.concurrent.as_ref().map(|c| c.1.clone()))
            .unwrap_or_default();
        let scope = Self {
            requests,
            tokens,
            concurrent: limits.concurrent.map(|n| (n, in_flight)),
        };
        if let Some(previous) = previous {
            for gcra in scope.requests.iter().chain(&scope.tokens) {
                let carried = previous
                    .requests
                    .iter()
                    .chain(&previous.tokens)
                    .find(|p| p.name == gcra.name && p.quota == gcra.quota);
                if let Some(p) = carried {
                    gcra.tat.store(p.tat.load(Ordering::Relaxed), Ordering::Relaxed);
                }
            }
        }
        scope
    }

    /// Its rate limits and what a request costing `tokens` costs each: 1 for a request limit, the
    /// tokens for the token limit (none when the request says nothing of its tokens).
    pub fn rates(&self, tokens: u64) -> impl Iterator<Item = (&Gcra, u64)> {
        self.requests.iter().map(|g| (g, 1)).chain(
            self.tokens
                .iter()
                .filter(move |_| tokens > 0)
                .map(move |g| (g, tokens)),
        )
    }

    /// Its token limit, if it has one.
    pub fn token_limit(&self) -> Option<&Gcra> {
        self.tokens.as_ref()
    }

    /// Counts a request in flight against the concurrency limit, if there is one and it allows.
    pub fn hold(&self) -> Result<Option<InFlightGuard>, Refused> {
        match &self.concurrent {
            None => Ok(None),
            Some((limit, count)) => {
                if count.fetch_add(1, Ordering::Relaxed) >= *limit {
                    count.fetch_sub(1, Ordering::Relaxed);
                    return Err(Refused::Concurrency { limit: *limit });
                }
                Ok(Some(InFlightGuard(count.clone())))
            }
        }
    }

    /// Gives back what [`Scope::admit`] charged a request costing `tokens` (another scope refused
    /// it).
    pub fn refund(&self, tokens: u64) {
        for gcra in &self.requests {
            gcra.refund(1);
        }
        if let Some(gcra) = self.tokens.as_ref().filter(|_| tokens > 0) {
            gcra.refund(tokens);
        }
    }

    /// Settles the token limit of a request charged `charged` tokens at admission that used `used`:
    /// the difference is given back, or charged at `now` (a debt, not a refusal).
    pub fn settle_tokens(&self, charged: u64, used: u64, now: u64) {
        let Some(gcra) = &self.tokens else {
            return;
        };
        if used < charged {
            gcra.refund(charged - used);
        } else if used > charged {
            gcra.debit(used - charged, now);
        }
    }

    /// Admits a request costing `tokens` at `now` (nanoseconds): every limit charged, or none and
    /// the first refusal. With `tell`, the verdict of the limit with the least left comes back for
    /// the `RateLimit` headers (without, none is made: most routes send them on refusals only).
    pub fn admit(
        &self,
        tokens: u64,
        now: u64,
        tell: bool,
    ) -> Result<(Option<Verdict>, Option<InFlightGuard>), Refused> {
        let mut tightest: Option<Verdict> = None;
        let mut tell_of = |gcra: &Gcra, tat: u64| {
            if tell {
                let verdict = gcra.verdict(tat, now, 0);
                if tightest.as_ref().is_none_or(|t| verdict.tighter_than(t)) {
                    tightest = Some(verdict);
                }
            }
        };
        for (i, gcra) in self.requests.iter().enumerate() {
            match gcra.charge(1, now) {
                Ok(tat) => tell_of(gcra, tat),
                Err(verdict) => {
                    self.requests[..i].iter().for_each(|g| g.refund(1));
                    return Err(Refused::Rate(verdict));
                }
            }
        }
        if let Some(gcra) = self.tokens.as_ref().filter(|_| tokens > 0) {
            match gcra.charge(tokens, now) {
                Ok(tat) => tell_of(gcra, tat),
                Err(verdict) => {
                    // The request limits, all charged above (with no tokens, `refund` leaves the
                    // token limit, which was not).
                    self.refund(0);
                    return Err(Refused::Rate(verdict));
                }
            }
        }
        match self.hold() {
            Ok(guard) => Ok((tightest, guard)),
            Err(refused) => {
                self.refund(tokens);
                Err(refused)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn limits(per_second: Option<u32>, tokens_per_minute: Option<u64>, concurrent: Option<u32>) -> Limits {
        Limits {
            requests_per_second: per_second,
            requests_per_minute: None,
            tokens_per_minute,
            concurrent,
        }
    }

    #[test]
    fn a_burst_of_the_quota_then_one_per_interval() {
        let scope = Scope::new(&limits(Some(10), None, None), None);
        let now = 5_000 * MS;
        for i in 0..10 {
            let (verdict, _) = scope.admit(0, now, true).unwrap();
            assert_eq!(verdict.unwrap().remaining, 9 - i);
        }
        let Err(Refused::Rate(refused)) = scope.admit(0, now, true) else {
            panic!("the eleventh at once is refused")
        };
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.name, "requests_per_second");
        assert!(scope.admit(0, now + 99 * MS, true).is_err());
        assert!(
            scope.admit(0, now + 100 * MS, true).is_ok(),
            "one interval later, one more"
        );
    }

    #[test]
    fn tokens_are_charged_by_cost_and_a_refusal_charges_nothing() {
        let scope = Scope::new(&limits(Some(100), Some(1_000), None), None);
        let now = 1_000 * MS;
        assert!(scope.admit(600, now, true).is_ok());
        let Err(Refused::Rate(refused)) = scope.admit(600, now, true) else {
            panic!("1,200 tokens in a minute's quota of 1,000")
        };
        assert_eq!(refused.name, "tokens_per_minute");
        // The refused request's request-rate charge was given back: 99 requests are left.
        let (verdict, _) = scope.admit(0, now, true).unwrap();
        assert_eq!(verdict.unwrap().remaining, 98);
        assert!(
            scope.admit(400, now, true).is_ok(),
            "exactly the rest of the quota"
        );
    }

    #[test]
    fn settling_gives_back_what_was_not_used_and_charges_what_was() {
        let scope = Scope::new(&limits(None, Some(1_000), None), None);
        let now = 1_000 * MS;
        assert!(scope.admit(1_000, now, true).is_ok());
        assert!(
            scope.admit(1, now, true).is_err(),
            "the estimate took the whole quota"
        );
        scope.settle_tokens(1_000, 300, now);
        assert!(scope.admit(700, now, true).is_ok(), "700 unused tokens came back");
        scope.settle_tokens(700, 900, now);
        let Err(Refused::Rate(refused)) = scope.admit(1, now, true) else {
            panic!("the 200 tokens used beyond the charge are owed")
        };
        // 200 tokens owed at 60 ms each, plus the one asked for.
        assert_eq!(refused.retry_after, Duration::from_millis(201 * 60));
    }

    #[test]
    fn concurrency_counts_until_the_guard_drops_and_survives_a_reload() {
        let old = Scope::new(&limits(None, None, Some(2)), None);
        let a = old.admit(0, 0, true).unwrap().1;
        let reloaded = Scope::new(&limits(None, None, Some(2)), Some(&old));
        let b = reloaded.admit(0, 0, true).unwrap().1;
        assert_eq!(
            reloaded.admit(0, 0, true).unwrap_err(),
            Refused::Concurrency { limit: 2 }
        );
        drop(a);
        assert!(reloaded.admit(0, 0, true).is_ok());
        drop(b);
    }

    #[test]
    fn a_reload_keeps_the_rate_state_of_an_unchanged_limit() {
        let old = Scope::new(&limits(Some(2), None, None), None);
        assert!(old.admit(0, 0, true).is_ok() && old.admit(0, 0, true).is_ok());
        let reloaded = Scope::new(&limits(Some(2), None, None), Some(&old));
        assert!(
            reloaded.admit(0, 0, true).is_err(),
            "the burst was spent before the reload"
        );
        let raised = Scope::new(&limits(Some(4), None, None), Some(&old));
        assert!(raised.admit(0, 0, true).is_ok(), "a changed limit starts afresh");
    }
}
