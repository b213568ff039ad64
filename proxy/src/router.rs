//! The routing table: routes matched in order, each naming a pool. Rebuilt as a whole on reload and
//! swapped atomically; requests in flight keep the table they started with.

use std::collections::BTreeMap;
use std::sync::Arc;

use augur_engine::shedding::Priority;
use http::{HeaderValue, Request};

use crate::config::{Config, MatchConfig, RateLimitHeaders, RouteAuth};
use crate::gate::Scope;
use crate::metrics::Metrics;
use crate::models::ModelStore;
use crate::pool::{Pool, TlsClients};
use crate::rng::with_rng;
use rand::Rng;

/// One generation of routes and pools.
pub struct Router {
    /// 1 for the config the proxy started with, +1 per successful reload.
    pub generation: u64,
    routes: Vec<Route>,
    /// Pools by name.
    pub pools: BTreeMap<String, Arc<Pool>>,
    /// Whether some route matches on the request body's `model`.
    pub routes_by_model: bool,
    /// Whether some pool scores requests with the models (which read the body's size hints).
    pub scores_requests: bool,
    /// Whether some pool scores prompt prefixes (which hash the body's prompt).
    pub scores_prefixes: bool,
    /// Whether some pool sheds by priority (which reads the request's).
    pub sheds: bool,
    /// Whether some pool holds requests predicted to miss their objective (`queue`), which
    /// reads the request's objective.
    pub holds: bool,
    /// Whether some pool's policy weighs a request's time-per-output-token objective.
    pub scores_decoding: bool,
    /// Whether some route checks keys or limits (which may read the body's `model` and size).
    pub guards_requests: bool,
    /// Whether some pool renames the body's `model` (`model_map`).
    pub maps_models: bool,
}

/// A route: conditions and the pool (or weighted pools) that serve what matches them.
pub struct Route {
    /// Name for logs and telemetry.
    pub name: Arc<str>,
    matches: MatchConfig,
    /// The pools and their weights (one pool with weight 1 for a plain route).
    targets: Vec<(Arc<Pool>, u32)>,
    total_weight: u32,
    /// What a client must present.
    pub auth: RouteAuth,
    /// Which responses tell the client its limit.
    pub rate_limit_headers: RateLimitHeaders,
    /// Priority of its requests where a pool sheds.
    pub priority: Priority,
    /// Time-to-first-token objective of its requests that state none.
    pub slo_ttft: Option<std::time::Duration>,
    /// Time-per-output-token objective of its requests that state none.
    pub slo_tpot: Option<std::time::Duration>,
    /// The route's own limits and their state, if it has any.
    pub limits: Option<Arc<Scope>>,
    /// Pools a request moves on to, in order, when the one it was sent to cannot serve it.
    pub fallback: Vec<Arc<Pool>>,
    /// Methods besides the idempotent ones that move on after they reached a backend.
    pub fallback_methods: Vec<http::Method>,
    /// Whether GETs (`cache`) and deterministic LLM requests (`cache_llm`) use the cache.
    pub cache: (bool, bool),
}

impl Route {
    /// The pool for one request: the route's pool, or one drawn by weight from its split.
    pub fn pick_pool(&self) -> &Arc<Pool> {
        if self.targets.len() == 1 {
            return &self.targets[0].0;
        }
        let mut draw = with_rng(|rng| rng.random_range(0..self.total_weight));
        for (pool, weight) in &self.targets {
            if draw < *weight {
                return pool;
            }
            draw -= weight;
        }
        &self.targets[self.targets.len() - 1].0
    }
}

impl Router {
    /// Builds the pools and routes of `config`, starting the pools' background tasks. Backends that
    /// carry on from `previous` keep their live load (in flight, round-trip estimate), and its
    /// pools' discovered backends carry on until the new pools' sources answer.
    pub fn build(
        config: &Config,
        previous: Option<&Router>,
        metrics: &Arc<Metrics>,
        models: &Arc<ModelStore>,
        tls: &TlsClients,
        generation: u64,
    ) -> Self {
        let pools: BTreeMap<String, Arc<Pool>> = config
            .pools
            .iter()
            .map(|(name, pool_config)| {
                let old = previous.and_then(|p| p.pools.get(name)).map(|p| &**p);
                (
                    name.clone(),
                    Pool::spawn(name, pool_config, old, metrics, models, tls),
                )
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let targets: Vec<(Arc<Pool>, u32)> = r
                    .targets()
                    .into_iter()
                    .map(|(pool, weight)| (pools[pool.get_ref()].clone(), weight))
                    .collect();
                let first = r.targets()[0].0.get_ref().clone();
                let name: Arc<str> = Arc::from(r.name.as_deref().unwrap_or(&first));
                // A route that carries on keeps the state of its limits across the reload.
                let carried = previous
                    .and_then(|p| p.routes.iter().find(|old| old.name == name))
                    .and_then(|old| old.limits.as_deref());
                Route {
                    limits: r.limits.any().then(|| Arc::new(Scope::new(&r.limits, carried))),
                    auth: r.auth,
                    rate_limit_headers: r.rate_limit_headers,
                    priority: r.priority,
                    slo_ttft: r.slo_ttft,
                    slo_tpot: r.slo_tpot,
                    fallback: r.fallback.iter().map(|p| pools[p.get_ref()].clone()).collect(),
                    fallback_methods: r.fallback_methods.iter().map(|m| m.0.clone()).collect(),
                    cache: (r.cache, r.cache_llm),
                    name,
                    matches: r.matches.clone(),
                    total_weight: targets.iter().map(|t| t.1).sum(),
                    targets,
                }
            })
            .collect();
        let routes_by_model = config.routes.iter().any(|r| !r.matches.models.is_empty());
        let guards_requests = config
            .routes
            .iter()
            .any(|r| r.auth != RouteAuth::None || r.limits.any());
        Self {
            generation,
            routes,
            pools,
            routes_by_model,
            guards_requests,
            maps_models: config.pools.values().any(|p| !p.model_map.is_empty()),
            scores_requests: config
                .pools
                .values()
                .any(|p| p.policy.learned_quantile().is_some()),
            scores_prefixes: config.pools.values().any(|p| p.policy.scores_prefixes()),
            sheds: config.pools.values().any(|p| p.shedding.is_some()),
            holds: config.pools.values().any(|p| p.queue.is_some()),
            scores_decoding: config.pools.values().any(|p| p.policy.scores_decoding()),
        }
    }

    /// The first route whose conditions all hold; `host` is the request's
    /// ([`crate::forward::headers::original_host`]) and `model` the one its body asks for.
    pub fn route<B>(
        &self,
        request: &Request<B>,
        host: Option<&HeaderValue>,
        model: Option<&str>,
    ) -> Option<&Route> {
        let host = host.and_then(|h| h.to_str().ok()).map(strip_port);
        self.routes.iter().find(|r| {
            matches(&r.matches, request, host)
                && (r.matches.models.is_empty()
                    || model.is_some_and(|m| r.matches.models.iter().any(|x| x == m)))
        })
    }

    /// Stops every pool's background tasks.
    pub fn stop(&self) {
        self.pools.values().for_each(|p| p.stop());
    }
}

fn matches<B>(m: &MatchConfig, request: &Request<B>, host: Option<&str>) -> bool {
    let host_ok = match (&m.host, host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(pattern), Some(host)) => match pattern.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
                    && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
            }
            None => pattern.eq_ignore_ascii_case(host),
        },
    };
    host_ok
        && m.path_prefix
            .as_deref()
            .is_none_or(|p| request.uri().path().starts_with(p))
        && (m.methods.is_empty() || m.methods.iter().any(|x| x.0 == request.method()))
        && m.headers
            .iter()
            .all(|h| request.headers().get_all(&h.name).iter().any(|v| v == h.value))
}

/// `host:port` -> `host`, keeping IPv6 literals (`[::1]:80` -> `[::1]`) whole.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HeaderMatch, MethodName};

    fn request(host: &str, path: &str) -> Request<()> {
        Request::get(path)
            .header("host", host)
            .header("x-canary", "1")
            .body(())
            .unwrap()
    }

    #[test]
    fn matches_host_path_method_and_headers() {
        let m = MatchConfig {
            host: Some("*.example.com".into()),
            path_prefix: Some("/v1/".into()),
            methods: vec![MethodName(http::Method::GET)],
            headers: vec![HeaderMatch {
                name: "x-canary".parse().unwrap(),
                value: "1".parse().unwrap(),
            }],
            models: vec![],
        };
        let r = request("api.example.com:8080", "/v1/x");
        assert!(matches(&m, &r, Some(strip_port("api.example.com:8080"))));
        assert!(!matches(&m, &r, Some("example.com")));
        assert!(!matches(&m, &r, Some("badexample.com")));
        let other_path = request("api.example.com", "/v2/x");
        assert!(!matches(&m, &other_path, Some("api.example.com")));
    }

    #[test]
    fn strips_ports_but_not_ipv6_literals() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
