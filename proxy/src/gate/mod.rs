//! The front door of a route: who may use it (client keys from the keys file) and how much (rate,
//! token and concurrency limits per key, per tenant and per route), decided before a request
//! reaches a pool. In process: the limits' state is atomics in the keys and routes themselves.
//!
//! A key is looked up by its SHA-256, so the proxy never holds one; logs, metrics and the access
//! log name its `id` and tenant. The keys file reloads on SIGHUP and when it changes; one that does
//! not load is refused and the keys in force stay.

pub mod keyring;
mod metrics;
pub mod rate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

pub use keyring::{Key, Keyring};
pub use metrics::GateMetrics;
pub use rate::{InFlightGuard, Refused, Scope, Verdict};

use crate::clock;
use crate::config::{AuthConfig, RouteAuth};

/// The header a key may also come in.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Why a request was turned away at the door.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The route needs a key and none came (401).
    MissingKey,
    /// The key is not in the keys file (401).
    UnknownKey,
    /// The key may not use this route (403).
    RouteNotAllowed,
    /// The key may not ask for this model (403).
    ModelNotAllowed,
    /// A limit of the key, its tenant or the route (429).
    Limited {
        /// `key`, `tenant` or `route`.
        scope: &'static str,
        /// Which limit, and when to come back.
        refused: Refused,
    },
}

impl Refusal {
    /// The label of the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::UnknownKey => "unknown_key",
            Self::RouteNotAllowed => "route_not_allowed",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::Limited {
                refused: Refused::Concurrency { .. },
                ..
            } => "concurrency",
            Self::Limited {
                refused: Refused::Rate(v),
                ..
            } => v.name,
        }
    }
}

/// A request let in: whose it is, what it holds in flight, and the limit to tell it about.
#[derive(Debug, Default)]
pub struct Admission {
    /// The key it came with, on a route that asks for one.
    pub key: Option<Arc<Key>>,
    /// Counted against the concurrency limits until dropped (when the response ends).
    _in_flight: Vec<InFlightGuard>,
    /// The limit with the least left, for the `RateLimit` headers.
    tightest: Option<Verdict>,
}

impl Admission {
    /// Tells the client the limit with the least left (`RateLimit` and `RateLimit-Policy`).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(verdict) = &self.tightest {
            write_rate_headers(verdict, headers);
        }
    }
}

/// `RateLimit-Policy: "name";q=quota;w=window` and `RateLimit: "name";r=remaining;t=seconds`, as
/// the IETF's RateLimit header fields draft writes them.
pub fn write_rate_headers(verdict: &Verdict, headers: &mut HeaderMap) {
    let window = verdict.window.as_secs();
    let policy = format!("\"{}\";q={};w={window}", verdict.name, verdict.quota);
    let reset = verdict.retry_after.as_secs_f64().ceil() as u64;
    let state = format!("\"{}\";r={};t={reset}", verdict.name, verdict.remaining);
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

/// The door: the keys in force and the refusal counts.
pub struct Gate {
    keys_file: Option<PathBuf>,
    keyring: ArcSwap<Keyring>,
    metrics: GateMetrics,
}

impl Gate {
    /// The door for `config`, with `keyring` (the keys file as loaded at start: see
    /// [`Keyring::load`]).
    pub fn new(config: Option<&AuthConfig>, keyring: Keyring, registry: &prometheus::Registry) -> Arc<Self> {
        let metrics = GateMetrics::register(registry);
        metrics.keys_loaded(keyring.len(), true);
        Arc::new(Self {
            keys_file: config.map(|c| c.keys_file.clone()),
            keyring: ArcSwap::from_pointee(keyring),
            metrics,
        })
    }

    /// Reads the keys file again; a file that does not load is refused (logged and counted) and the
    /// keys in force stay. Blocking file I/O: off the request path.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.keys_file else {
            return Ok(0);
        };
        match Keyring::load(path, &self.keyring.load()) {
            Ok(keyring) => {
                let n = keyring.len();
                self.keyring.store(Arc::new(keyring));
                self.metrics.keys_loaded(n, true);
                Ok(n)
            }
            Err(e) => {
                self.metrics.keys_loaded(self.keyring.load().len(), false);
                tracing::error!(error = %e, "keys file refused; the keys in force stay");
                Err(e)
            }
        }
    }

    /// Reloads the keys file when it changes (file events, and a check every `interval`), until
    /// `stop`. Each check compares the file's bytes, so an unchanged file is not reloaded.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        let Some(path) = self.keys_file.clone() else {
            return;
        };
        let dir = path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let (gate, last) = (
            self.clone(),
            Arc::new(std::sync::Mutex::new(std::fs::read(&path).ok())),
        );
        crate::files::follow(&dir, "the keys file", interval, stop, move || {
            let now = std::fs::read(&path).ok();
            let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.is_some() && *last != now {
                let _ = gate.reload();
                *last = now;
            }
        });
    }

    /// Lets a request to a route with `auth` and route-wide `limits` in, or says why not: its key
    /// (from `headers`), what the key may use (`route` by name, `model` as asked), then the key's,
    /// its tenant's and the route's limits, charged `tokens` (its estimate) against the token
    /// limits. A refused request is charged nothing.
    pub fn admit(
        &self,
        route: &str,
        auth: RouteAuth,
        route_limits: Option<&Scope>,
        headers: &HeaderMap,
        model: Option<&str>,
        tokens: u64,
    ) -> Result<Admission, Refusal> {
        // An open route with no limits has nothing to check, and costs nothing: not even a count.
        if auth == RouteAuth::None && route_limits.is_none() {
            return Ok(Admission::default());
        }
        let result = self.decide(route, auth, route_limits, headers, model, tokens);
        match &result {
            Ok(admission) => self.metrics.admitted(route, admission.key.as_deref()),
            Err(refusal) => self.metrics.refused(route, refusal),
        }
        result
    }

    fn decide(
        &self,
        route: &str,
        auth: RouteAuth,
        route_limits: Option<&Scope>,
        headers: &HeaderMap,
        model: Option<&str>,
        tokens: u64,
    ) -> Result<Admission, Refusal> {
        let key = match auth {
            RouteAuth::None => None,
            RouteAuth::Key => {
                let presented = presented_key(headers).ok_or(Refusal::MissingKey)?;
                let key = self
                    .keyring
                    .load()
                    .find(presented)
                    .cloned()
                    .ok_or(Refusal::UnknownKey)?;
                if key.routes.as_ref().is_some_and(|r| !r.contains(route)) {
                    return Err(Refusal::RouteNotAllowed);
                }
                if let (Some(allowed), Some(model)) = (&key.models, model) {
                    if !allowed.contains(model) {
                        return Err(Refusal::ModelNotAllowed);
                    }
                }
                Some(key)
            }
        };
        let scopes = [
            key.as_deref().map(|k| ("key", &k.scope)),
            key.as_deref().map(|k| ("tenant", &k.tenant.scope)),
            route_limits.map(|s| ("route", s)),
        ];
        let now = clock::now().as_nanos() as u64;
        let mut admission = Admission {
            key: key.clone(),
            ..Admission::default()
        };
        let mut admitted: Vec<&Scope> = Vec::with_capacity(3);
        for (scope_name, scope) in scopes.into_iter().flatten() {
            match scope.admit(tokens, now) {
                Ok((verdict, guard)) => {
                    admitted.push(scope);
                    admission._in_flight.extend(guard);
                    if let Some(v) = verdict {
                        let tighter = admission
                            .tightest
                            .is_none_or(|t| v.remaining * t.quota < t.remaining * v.quota);
                        if tighter {
                            admission.tightest = Some(v);
                        }
                    }
                }
                Err(refused) => {
                    for scope in admitted {
                        scope.refund(tokens);
                    }
                    return Err(Refusal::Limited {
                        scope: scope_name,
                        refused,
                    });
                }
            }
        }
        Ok(admission)
    }
}

/// The key a request presents: `Authorization: Bearer KEY`, else `x-api-key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    bearer
        .or_else(|| headers.get(X_API_KEY).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Takes the client's key off a request before it goes on: a backend (a hosted provider, say)
/// must never see it.
pub fn strip_key(headers: &mut HeaderMap) {
    headers.remove(AUTHORIZATION);
    headers.remove(X_API_KEY);
}
