//! The front door of a route: who may use it (client keys from the keys file) and how much (rate,
//! token and concurrency limits per key, per tenant and per route), decided before a request
//! reaches a pool. In process: the limits' state is atomics in the keys and routes themselves.
//!
//! A key is looked up by its SHA-256, so the proxy never holds one; logs, metrics and the access
//! log name its `id` and tenant. The keys file reloads on SIGHUP and when it changes; one that does
//! not load is refused and the keys in force stay.

mod charge;
pub mod jwt;
pub mod keyring;
mod metrics;
pub mod rate;
mod shared;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

use charge::{Charged, Limited};
pub use jwt::Jwks;
pub use keyring::{Key, Keyring, Tenant};
pub use metrics::GateMetrics;
pub use rate::{InFlightGuard, Refused, Scope, Verdict};
pub use shared::SharedLimiter;

use crate::clock;
use crate::config::{AuthConfig, JwtConfig, RateLimitHeaders, RouteAuth};

/// The header a key may also come in.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Why a request was turned away at the door.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The route needs a key and none came (401).
    MissingKey,
    /// The key is not in the keys file (401).
    UnknownKey,
    /// The route needs a token and none came (401).
    MissingToken,
    /// The token does not verify: why (401).
    InvalidToken(String),
    /// The shared limiter did not answer and `on_error = "closed"` (503).
    LimiterUnavailable,
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
    /// Whether the client did not say who it is (401).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::MissingKey | Self::UnknownKey | Self::MissingToken | Self::InvalidToken(_)
        )
    }

    /// The label of the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_key",
            Self::UnknownKey => "unknown_key",
            Self::MissingToken => "missing_token",
            Self::InvalidToken(_) => "invalid_token",
            Self::LimiterUnavailable => "limiter_unavailable",
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

/// A request let in. On an open route without limits it is empty (a pointer's worth, which every
/// request carries to its end); otherwise it says whose the request is, holds it in flight, and
/// keeps the limit to tell it about.
#[derive(Debug, Default)]
pub struct Admission(Option<Box<Admitted>>);

#[derive(Debug, Default)]
struct Admitted {
    /// The key it came with, on a route that asks for one.
    key: Option<Arc<Key>>,
    /// Its tenant: its key's, or the one its token names.
    tenant: Option<Arc<Tenant>>,
    /// What admitting it took: its places in flight (until dropped, when the response ends), the
    /// limit with the least left (for the `RateLimit` headers), the token limits charged in the
    /// shared limiter.
    charged: Charged,
    /// The route's limits, when it has any.
    route_scope: Option<Arc<Scope>>,
    /// Tokens charged at admission (the request's estimate), settled when its usage is known.
    charged_tokens: u64,
}

impl Admission {
    /// The key the request came with, on a route that asks for one.
    pub fn key(&self) -> Option<&Arc<Key>> {
        self.0.as_ref()?.key.as_ref()
    }

    /// The request's tenant: its key's, or the one its token names.
    pub fn tenant(&self) -> Option<&Arc<Tenant>> {
        self.0.as_ref()?.tenant.as_ref()
    }

    /// Settles the token limits with what the request used (its response's usage): the estimate
    /// it was charged at admission is replaced by `used`.
    pub fn settle_tokens(&self, used: u64) {
        let Some(admitted) = self.0.as_ref() else {
            return;
        };
        if let Some(shared) = &admitted.charged.shared_tokens {
            let delta = used as i64 - admitted.charged_tokens as i64;
            if delta != 0 {
                for (key, interval) in &shared.limits {
                    shared.limiter.settle(key.clone(), *interval, delta);
                }
            }
            return;
        }
        let now = clock::now().as_nanos() as u64;
        let scopes = [
            admitted.key.as_deref().map(|k| &k.scope),
            admitted.tenant.as_deref().map(|t| &t.scope),
            admitted.route_scope.as_deref(),
        ];
        for scope in scopes.into_iter().flatten() {
            scope.settle_tokens(admitted.charged_tokens, used, now);
        }
    }

    /// Tells the client the limit with the least left (`RateLimit` and `RateLimit-Policy`), on
    /// routes with `rate_limit_headers = "always"`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(verdict) = self.0.as_ref().and_then(|a| a.charged.tightest.as_ref()) {
            write_rate_headers(verdict, headers);
        }
    }
}

const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `RateLimit-Policy: "name";q=quota;w=window` and `RateLimit: "name";r=remaining;t=seconds`, as
/// the IETF's RateLimit header fields draft writes them. Where every admitted response carries
/// them, the policy is made once per limit and the state without the formatting machinery.
pub fn write_rate_headers(verdict: &Verdict, headers: &mut HeaderMap) {
    let mut state = Vec::with_capacity(48);
    state.push(b'"');
    state.extend_from_slice(verdict.name.as_bytes());
    state.extend_from_slice(b"\";r=");
    push_decimal(&mut state, verdict.remaining);
    state.extend_from_slice(b";t=");
    push_decimal(&mut state, verdict.retry_after.as_secs_f64().ceil() as u64);
    headers.insert(RATELIMIT_POLICY, verdict.policy.clone());
    if let Ok(state) = HeaderValue::from_bytes(&state) {
        headers.insert(RATELIMIT, state);
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Who a request is: its key, on a route that asks for one, and its tenant (the key's, or the one
/// its token names).
type Identity = (Option<Arc<Key>>, Option<Arc<Tenant>>);

/// The door: the keys and token keys in force, and the refusal counts.
pub struct Gate {
    keys_file: Option<PathBuf>,
    keyring: ArcSwap<Keyring>,
    /// How tokens are checked, and the provider's keys in force.
    jwt: Option<(JwtConfig, ArcSwap<Jwks>)>,
    /// The fleet's shared limiter, when `[limiter]` names one.
    shared: Option<Arc<SharedLimiter>>,
    metrics: GateMetrics,
    /// The count of requests let in without a key (routes with limits only).
    anonymous: std::sync::OnceLock<prometheus::IntCounter>,
}

impl Gate {
    /// The door for `config`, with `keyring` and `jwks` (the keys file and the token keys as
    /// loaded at start: see [`Keyring::load`] and [`Jwks::load`]).
    pub fn new(
        config: Option<&AuthConfig>,
        (keyring, jwks): (Keyring, Option<Jwks>),
        shared: Option<Arc<SharedLimiter>>,
        registry: &prometheus::Registry,
    ) -> Arc<Self> {
        let metrics = GateMetrics::register(registry);
        metrics.keys_loaded(keyring.len(), true);
        let jwt = config.and_then(|c| c.jwt.clone()).zip(jwks);
        Arc::new(Self {
            keys_file: config.and_then(|c| c.keys_file.clone()),
            keyring: ArcSwap::from_pointee(keyring),
            jwt: jwt.map(|(config, jwks)| (config, ArcSwap::from_pointee(jwks))),
            shared,
            metrics,
            anonymous: std::sync::OnceLock::new(),
        })
    }

    /// Reads the keys file and the token keys again; a file that does not load is refused (logged
    /// and counted) and the keys in force stay. Blocking file I/O: off the request path.
    pub fn reload(&self) -> Result<usize, String> {
        if let Some((config, jwks)) = &self.jwt {
            match Jwks::load(&config.jwks_file) {
                Ok(loaded) => jwks.store(Arc::new(loaded)),
                Err(e) => {
                    self.metrics.keys_loaded(self.keyring.load().len(), false);
                    tracing::error!(error = %e, "JWKS file refused; the token keys in force stay");
                    return Err(e);
                }
            }
        }
        let Some(path) = &self.keys_file else {
            self.metrics.keys_loaded(0, true);
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

    /// Reloads the keys file and the token keys when either changes (file events, and a check
    /// every `interval`), until `stop`. Each check compares the files' bytes, so unchanged files
    /// are not reloaded.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration, stop: CancellationToken) {
        let files = self
            .keys_file
            .iter()
            .chain(self.jwt.as_ref().map(|(c, _)| &c.jwks_file));
        for path in files {
            let path = path.clone();
            let dir = path
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            let (gate, last) = (
                self.clone(),
                Arc::new(std::sync::Mutex::new(std::fs::read(&path).ok())),
            );
            crate::files::follow(&dir, "the keys files", interval, stop.clone(), move || {
                let now = std::fs::read(&path).ok();
                let mut last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if now.is_some() && *last != now {
                    let _ = gate.reload();
                    *last = now;
                }
            });
        }
    }

    /// Lets a request to a route with `auth` and route-wide `limits` in, or says why not: its key
    /// (from `headers`), what the key may use (`route` by name, `model` as asked), then the key's,
    /// its tenant's and the route's limits, charged `tokens` (its estimate) against the token
    /// limits. A refused request is charged nothing. `rate_limit_headers` says whether the
    /// admission keeps the limit to tell of in its response.
    pub async fn admit(
        &self,
        route: &str,
        (auth, rate_limit_headers): (RouteAuth, RateLimitHeaders),
        route_limits: Option<&Arc<Scope>>,
        headers: &HeaderMap,
        model: Option<&str>,
        tokens: u64,
    ) -> Result<Admission, Box<Refusal>> {
        // An open route with no limits has nothing to check, and costs nothing: not even a count.
        if auth == RouteAuth::None && route_limits.is_none() {
            return Ok(Admission::default());
        }
        let tell = rate_limit_headers == RateLimitHeaders::Always;
        match self
            .decide(route, auth, route_limits, headers, model, (tokens, tell))
            .await
        {
            Ok(admitted) => {
                self.metrics.admitted(admitted.tenant.as_deref(), &self.anonymous);
                Ok(Admission(Some(Box::new(admitted))))
            }
            Err(refusal) => {
                self.metrics.refused(route, &refusal);
                Err(Box::new(refusal))
            }
        }
    }

    async fn decide(
        &self,
        route: &str,
        auth: RouteAuth,
        route_limits: Option<&Arc<Scope>>,
        headers: &HeaderMap,
        model: Option<&str>,
        (tokens, tell): (u64, bool),
    ) -> Result<Admitted, Refusal> {
        let (key, tenant) = self.identify(route, auth, headers, model)?;
        let scopes = [
            key.as_deref().map(|k| Limited {
                scope: "key",
                name: &k.id,
                limits: &k.scope,
            }),
            tenant.as_deref().map(|t| Limited {
                scope: "tenant",
                name: &t.name,
                limits: &t.scope,
            }),
            route_limits.map(|s| Limited {
                scope: "route",
                name: route,
                limits: s,
            }),
        ];
        let charged = match &self.shared {
            // Boxed: the shared limiter's call would otherwise make every request's future larger.
            Some(limiter) => Box::pin(charge::shared(limiter, &scopes, tokens, tell)).await?,
            None => charge::local(&scopes, tokens, tell)?,
        };
        Ok(Admitted {
            key,
            tenant,
            charged,
            route_scope: route_limits.cloned(),
            charged_tokens: tokens,
        })
    }

    /// Who the request is, as its route asks: its key (which may use this route and `model`), or
    /// the tenant its token names.
    fn identify(
        &self,
        route: &str,
        auth: RouteAuth,
        headers: &HeaderMap,
        model: Option<&str>,
    ) -> Result<Identity, Refusal> {
        match auth {
            RouteAuth::None => Ok((None, None)),
            RouteAuth::Jwt => {
                let (config, jwks) = self.jwt.as_ref().ok_or(Refusal::MissingToken)?;
                let token = bearer(headers).ok_or(Refusal::MissingToken)?;
                let token =
                    std::str::from_utf8(token).map_err(|_| Refusal::InvalidToken("not text".to_owned()))?;
                let name = jwks.load().verify(token, config).map_err(Refusal::InvalidToken)?;
                Ok((None, Some(self.keyring.load().tenant(&name))))
            }
            RouteAuth::Key => {
                let presented = presented_key(headers).ok_or(Refusal::MissingKey)?;
                let key = self.keyring.load().find(presented).ok_or(Refusal::UnknownKey)?;
                if key.routes.as_ref().is_some_and(|r| !r.contains(route)) {
                    return Err(Refusal::RouteNotAllowed);
                }
                if let (Some(allowed), Some(model)) = (&key.models, model) {
                    if !allowed.contains(model) {
                        return Err(Refusal::ModelNotAllowed);
                    }
                }
                let tenant = key.tenant.clone();
                Ok((Some(key), Some(tenant)))
            }
        }
    }
}

/// The key a request presents: `Authorization: Bearer KEY`, else `x-api-key: KEY`. Bytes, not
/// text: a key is compared with what the keys file holds, never shown, so checking that it is
/// text would be work for nothing on every request.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    bearer(headers).or_else(|| {
        headers
            .get(X_API_KEY)
            .map(|v| v.as_bytes().trim_ascii())
            .filter(|k| !k.is_empty())
    })
}

/// The credential of `Authorization: Bearer CREDENTIAL`.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, credential) = value.split_at_checked(b"Bearer ".len())?;
    Some(credential.trim_ascii()).filter(|c| scheme.eq_ignore_ascii_case(b"Bearer ") && !c.is_empty())
}

/// Whether `name` is a header a client's key or token comes in, which the request leaves behind
/// on routes that read one: a backend (a hosted provider, say) must never see it.
pub fn is_client_key(name: &HeaderName) -> bool {
    name == AUTHORIZATION || name == X_API_KEY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn a_key_comes_as_a_bearer_credential_in_any_case_or_as_x_api_key() {
        let key = |pairs| presented_key(&headers(pairs)).map(|k| k.to_vec());
        assert_eq!(key(&[("authorization", "Bearer  sk-1 ")]), Some(b"sk-1".to_vec()));
        assert_eq!(key(&[("authorization", "bearer sk-1")]), Some(b"sk-1".to_vec()));
        assert_eq!(key(&[("authorization", "BEARER sk-1")]), Some(b"sk-1".to_vec()));
        // Another scheme is not a key; the other header still may hold one.
        assert_eq!(key(&[("authorization", "Basic c2stMQ==")]), None);
        assert_eq!(
            key(&[("authorization", "Basic c2stMQ=="), ("x-api-key", "sk-2")]),
            Some(b"sk-2".to_vec())
        );
        assert_eq!(key(&[("authorization", "Bearer "), ("x-api-key", " ")]), None);
        assert_eq!(key(&[("authorization", "Bear")]), None);
    }
}
