//! A route's fallback: the pools a request moves on to, in order, when the one it was sent to could
//! not serve it, and the body each of them gets (its `model` as that pool names it).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response};

use super::record::AttemptDone;
use super::upstream::RequestBody;
use crate::error::ProxyError;
use crate::message::body::ProxyBody;
use crate::outcome::UpstreamError;
use crate::pool::Pool;
use crate::router::Route;

/// Why a request left a pool for the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveOn {
    /// The pool is cooling down after a `Retry-After`: nothing was sent.
    Cooling,
    /// No backend could take the request (none healthy, all at their limit, or the pool shed it):
    /// nothing was sent.
    Saturated,
    /// No connection to the backend: nothing was sent.
    Connect,
    /// The backend did not answer in time.
    Timeout,
    /// The backend broke the connection off.
    Reset,
    /// The backend answered 429.
    RateLimited,
    /// The backend answered 5xx.
    ServerError,
}

impl MoveOn {
    /// Its label in `augur_route_fallbacks_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cooling => "cooling",
            Self::Saturated => "saturated",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
        }
    }

    /// Whether the request reached a backend (so moving on sends it a second time).
    fn sent(self) -> bool {
        !matches!(self, Self::Cooling | Self::Saturated | Self::Connect)
    }

    /// Why the outcome of a pool's attempts would move a request on, if it would.
    pub fn after(result: &Result<(Response<ProxyBody>, Option<AttemptDone>), ProxyError>) -> Option<Self> {
        match result {
            Ok((response, Some(_))) if response.status() == http::StatusCode::TOO_MANY_REQUESTS => {
                Some(Self::RateLimited)
            }
            Ok((response, Some(_))) if response.status().is_server_error() => Some(Self::ServerError),
            Ok(_) => None,
            Err(ProxyError::NoBackend { .. } | ProxyError::AtCapacity { .. } | ProxyError::Shed { .. }) => {
                Some(Self::Saturated)
            }
            Err(ProxyError::Upstream(UpstreamError::Connect { .. })) => Some(Self::Connect),
            Err(ProxyError::Upstream(UpstreamError::Timeout { .. })) => Some(Self::Timeout),
            Err(ProxyError::Upstream(UpstreamError::Reset { .. })) => Some(Self::Reset),
            Err(_) => None,
        }
    }
}

/// The pools of one request, in the order it tries them: the one its route picked, then the
/// route's fallbacks (without a second go at the first). Made for every request, so it borrows
/// and never allocates.
pub struct Chain<'a> {
    first: &'a Arc<Pool>,
    fallback: &'a [Arc<Pool>],
    /// How many pools have been handed out: 0 before the first.
    taken: usize,
    /// Methods besides the idempotent ones that may be sent again.
    resend: bool,
}

impl<'a> Chain<'a> {
    /// The chain of a request with `method` that `route` sent to `first`.
    pub fn new(route: &'a Route, first: &'a Arc<Pool>, method: &Method) -> Self {
        Self {
            first,
            fallback: &route.fallback,
            taken: 0,
            resend: method.is_idempotent() || route.fallback_methods.contains(method),
        }
    }

    /// The pool at `position` (0: the first), unless it repeats the first.
    fn at(&self, position: usize) -> Option<&'a Arc<Pool>> {
        match position {
            0 => Some(self.first),
            n => self.fallback.get(n - 1).filter(|p| !Arc::ptr_eq(p, self.first)),
        }
    }

    /// Whether a pool is left after the ones handed out.
    fn has_next(&self) -> bool {
        (self.taken..=self.fallback.len()).any(|i| self.at(i).is_some())
    }

    /// Whether the request may move on at all (keep its body for that).
    pub fn may_move_on(&self) -> bool {
        (1..=self.fallback.len()).any(|i| self.at(i).is_some())
    }

    /// The next pool to try, passing over (and telling `skipped` of) the ones cooling down, unless
    /// none after them is left.
    pub fn next_pool(&mut self, mut skipped: impl FnMut(&Pool)) -> Option<&'a Arc<Pool>> {
        while self.taken <= self.fallback.len() {
            let position = self.taken;
            self.taken += 1;
            let Some(pool) = self.at(position) else {
                continue;
            };
            if pool.cool_down.is_cooling() && self.has_next() {
                skipped(pool);
                continue;
            }
            return Some(pool);
        }
        None
    }

    /// Whether a request that left its last pool for `why`, with `body` as it now stands, goes on
    /// to the next: there must be one, the body must still be whole, and a request that reached a
    /// backend must be safe to send again.
    pub fn moves_on(&self, why: MoveOn, body: &RequestBody) -> bool {
        self.has_next() && body.is_intact() && (!why.sent() || self.resend)
    }
}

/// The body `pool` gets: the kept body with its `model` renamed as the pool's `model_map` says,
/// or `None` when the pool takes it as it is.
pub fn body_for(pool: &Pool, model: Option<&str>, body: &RequestBody) -> Result<Option<Bytes>, ProxyError> {
    let Some(renamed) = model.and_then(|m| pool.config.model_map.get(m)) else {
        return Ok(None);
    };
    let RequestBody::Replayable(bytes) = body else {
        // Only a kept body can be rewritten.
        return Err(ProxyError::BodyTooLarge {
            limit: pool.config.retries.max_body_bytes as u64,
        });
    };
    let mut json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ProxyError::BadRequest(format!("the JSON body does not parse: {e}")))?;
    json["model"] = serde_json::Value::String(renamed.clone());
    let bytes = serde_json::to_vec(&json).expect("a parsed value serializes");
    Ok(Some(Bytes::from(bytes)))
}
