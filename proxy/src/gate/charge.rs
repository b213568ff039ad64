//! Charging a request to the limits of its key, tenant and route: in process, or in the fleet's
//! shared limiter (rates and tokens; concurrency is always counted in process).

use std::sync::Arc;
use std::time::Duration;

use super::rate::{InFlightGuard, Refused, Scope, Verdict};
use super::shared::{SharedCharge, SharedLimiter, SharedVerdict};
use super::Refusal;
use crate::clock;
use crate::config::OnLimiterError;

/// One scope a request counts against: `key`, `tenant` or `route`, its name, and its limits.
pub struct Limited<'a> {
    pub scope: &'static str,
    pub name: &'a str,
    pub limits: &'a Scope,
}

/// What admitting a request took.
#[derive(Debug, Default)]
pub struct Charged {
    /// Counted in flight against each scope's concurrency limit until dropped.
    pub in_flight: [Option<InFlightGuard>; 3],
    /// The limit with the least left, for the `RateLimit` headers.
    pub tightest: Option<Verdict>,
    /// The token limits charged in the shared limiter, to settle there.
    pub shared_tokens: Option<SharedTokens>,
}

/// Token limits charged in the shared limiter: their keys and intervals.
#[derive(Debug)]
pub struct SharedTokens {
    pub limiter: Arc<SharedLimiter>,
    pub limits: Vec<(String, Duration)>,
}

fn keep_tightest(tightest: &mut Option<Verdict>, verdict: Verdict) {
    if tightest.as_ref().is_none_or(|t| verdict.tighter_than(t)) {
        *tightest = Some(verdict);
    }
}

/// Charges the request, costing `tokens`, to every scope's limits in process, or to none; with
/// `tell`, keeps the limit with the least left for the `RateLimit` headers.
pub fn local(scopes: &[Option<Limited<'_>>; 3], tokens: u64, tell: bool) -> Result<Charged, Refusal> {
    let now = clock::now().as_nanos() as u64;
    let mut charged = Charged::default();
    let mut admitted: [Option<&Scope>; 3] = [None; 3];
    for (i, limited) in scopes.iter().enumerate() {
        let Some(limited) = limited else { continue };
        match limited.limits.admit(tokens, now, tell) {
            Ok((verdict, guard)) => {
                admitted[i] = Some(limited.limits);
                charged.in_flight[i] = guard;
                if let Some(v) = verdict {
                    keep_tightest(&mut charged.tightest, v);
                }
            }
            Err(refused) => {
                for scope in admitted.into_iter().flatten() {
                    scope.refund(tokens);
                }
                return Err(Refusal::Limited {
                    scope: limited.scope,
                    refused,
                });
            }
        }
    }
    Ok(charged)
}

/// Charges the request's rates and tokens in the shared limiter (all or none), then its
/// concurrency in process. When Redis gives no answer, `on_error` decides.
pub async fn shared(
    limiter: &Arc<SharedLimiter>,
    scopes: &[Option<Limited<'_>>; 3],
    tokens: u64,
    tell: bool,
) -> Result<Charged, Refusal> {
    let mut charges = Vec::new();
    let mut owners = Vec::new();
    for limited in scopes.iter().flatten() {
        for (gcra, cost) in limited.limits.rates(tokens) {
            charges.push(SharedCharge {
                key: limiter.key(limited.scope, limited.name, gcra),
                gcra,
                cost,
            });
            owners.push(limited.scope);
        }
    }
    let mut charged = Charged::default();
    if !charges.is_empty() {
        match limiter.charge(&charges).await {
            Ok(SharedVerdict::Admitted(verdicts)) => {
                for verdict in verdicts.into_iter().filter(|_| tell) {
                    keep_tightest(&mut charged.tightest, verdict);
                }
                let limits = charges
                    .iter()
                    .filter(|c| c.gcra.counts_tokens())
                    .map(|c| (c.key.clone(), c.gcra.interval()))
                    .collect::<Vec<_>>();
                if !limits.is_empty() {
                    charged.shared_tokens = Some(SharedTokens {
                        limiter: limiter.clone(),
                        limits,
                    });
                }
            }
            Ok(SharedVerdict::Refused(i, verdict)) => {
                return Err(Refusal::Limited {
                    scope: owners[i],
                    refused: Refused::Rate(verdict),
                })
            }
            Err(error) => {
                tracing::debug!(%error, on_error = limiter.on_error.as_str(), "shared limiter unavailable");
                match limiter.on_error {
                    OnLimiterError::Local => return local(scopes, tokens, tell),
                    OnLimiterError::Closed => return Err(Refusal::LimiterUnavailable),
                    OnLimiterError::Open => charges.clear(),
                }
            }
        }
    }
    for (i, limited) in scopes.iter().enumerate() {
        let Some(limited) = limited else { continue };
        match limited.limits.hold() {
            Ok(guard) => charged.in_flight[i] = guard,
            Err(refused) => {
                // Give back what the shared limiter was charged for a request that goes no further.
                for charge in charges {
                    let interval = charge.gcra.interval();
                    limiter.settle(charge.key, interval, -(charge.cost as i64));
                }
                return Err(Refusal::Limited {
                    scope: limited.scope,
                    refused,
                });
            }
        }
    }
    Ok(charged)
}
