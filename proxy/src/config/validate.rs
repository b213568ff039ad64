//! Checks that span fields: a route's pool exists, a pool's backends are distinct, and so on.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use augur_engine::PolicySpec;

use super::{Config, ConnectionLimits, RouteAuth, MIN_REQUEST_HEADER_BYTES};

/// A failed check: why, and where (a byte span of the source) when known.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    /// The byte span of the value at fault.
    pub span: Option<Range<usize>>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl Invalid {
    /// A failed check whose place in the source is not known.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            span: None,
            message: message.into(),
        }
    }

    /// A failed check of the value at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }
}

impl Config {
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        self.validate_listeners()?;
        self.validate_routes()?;
        self.validate_pools()?;
        if let Some(hints) = &self.hints {
            hints.check()?;
        }
        self.validate_telemetry()
    }

    fn validate_listeners(&self) -> Result<(), Invalid> {
        if self.listeners.is_empty() {
            return Err(Invalid::new("no `[[listeners]]`: at least one is needed"));
        }
        // Port 0 asks the OS for any free port, so only fixed ports can clash.
        let mut addresses = BTreeSet::new();
        let fixed = self
            .listeners
            .iter()
            .map(|l| l.address)
            .chain(self.admin.as_ref().map(|a| a.address));
        for address in fixed.filter(|a| a.port() != 0) {
            if !addresses.insert(address) {
                return Err(Invalid::new(format!(
                    "address {address} is used by two listeners (admin included)"
                )));
            }
        }
        for (i, listener) in self.listeners.iter().enumerate() {
            check_limits(&listener.limits, &format!("listeners[{i}].limits"))?;
            if listener
                .tls
                .as_ref()
                .is_some_and(|tls| tls.certificates.is_empty())
            {
                return Err(Invalid::new(format!(
                    "listeners[{i}].tls.certificates: a TLS listener needs at least one certificate"
                )));
            }
        }
        if let Some(admin) = &self.admin {
            check_limits(&admin.limits, "admin.limits")?;
            let (token, read_token) = (admin.token()?, admin.read_token()?);
            if read_token.is_some() && read_token == token {
                return Err(Invalid::new(
                    "admin.read_token is the admin token: a read-only token must differ from it",
                ));
            }
        }
        if let Some(telemetry) = &self.telemetry {
            telemetry.client_hash_key()?;
        }
        if let Some(tracing) = &self.tracing {
            tracing.check().map_err(Invalid::new)?;
        }
        self.usage.check().map_err(Invalid::new)?;
        if let Some(cache) = &self.cache {
            cache.check().map_err(Invalid::new)?;
        }
        if let Some(i) = self
            .routes
            .iter()
            .position(|r| (r.cache || r.cache_llm) && self.cache.is_none())
        {
            return Err(Invalid::new(format!(
                "routes[{i}] asks for the cache: add a [cache] section"
            )));
        }
        if let Some(compression) = &self.compression {
            compression.check().map_err(Invalid::new)?;
        }
        if let Some(limiter) = &self.limiter {
            limiter.check().map_err(Invalid::new)?;
        }
        if let Some(jwt) = self.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
            jwt.check().map_err(Invalid::new)?;
        }
        if self.proxy.upgrades.iter().any(|u| u.eq_ignore_ascii_case("h2c")) {
            return Err(Invalid::new(
                "proxy.upgrades: `h2c` would hand the client a raw HTTP/2 connection to the backend, \
                 past routing; HTTP/2 clients use prior knowledge or ALPN instead",
            ));
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), Invalid> {
        for (i, route) in self.routes.iter().enumerate() {
            let auth = self.auth.as_ref();
            if route.auth == RouteAuth::Key && auth.and_then(|a| a.keys_file.as_ref()).is_none() {
                return Err(Invalid::new(format!(
                    "routes[{i}].auth = \"key\" needs `auth.keys_file`"
                )));
            }
            if route.auth == RouteAuth::Jwt && auth.and_then(|a| a.jwt.as_ref()).is_none() {
                return Err(Invalid::new(format!(
                    "routes[{i}].auth = \"jwt\" needs an [auth.jwt] section"
                )));
            }
            route
                .limits
                .check()
                .map_err(|e| Invalid::new(format!("routes[{i}].limits: {e}")))?;
        }
        if self.routes.is_empty() {
            return Err(Invalid::new("no `[[routes]]`: at least one is needed"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let has_split = !route.split.is_empty();
            if route.pool.is_some() == has_split {
                return Err(Invalid::new(format!(
                    "routes[{i}]: give either `pool` or `split`, not both or neither"
                )));
            }
            if !route.split.is_empty() && route.split.iter().all(|t| t.weight == 0) {
                return Err(Invalid::new(format!(
                    "routes[{i}].split: at least one weight must be > 0"
                )));
            }
            let named = route
                .targets()
                .into_iter()
                .map(|(pool, _)| pool)
                .chain(&route.fallback);
            for pool in named {
                if !self.pools.contains_key(pool.get_ref()) {
                    let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
                    return Err(Invalid::at(
                        pool.span(),
                        format!(
                            "routes[{i}]: no pool named `{}` (pools: {})",
                            pool.get_ref(),
                            known.join(", ")
                        ),
                    ));
                }
            }
            if let Some(prefix) = &route.matches.path_prefix {
                if !prefix.starts_with('/') {
                    return Err(Invalid::new(format!(
                        "routes[{i}].match.path_prefix `{prefix}` must start with `/`"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_pools(&self) -> Result<(), Invalid> {
        for (name, pool) in &self.pools {
            if pool.backends.is_empty() && pool.discovery.is_empty() {
                return Err(Invalid::new(format!(
                    "pools.{name}.backends: a pool needs at least one backend, or a `discovery` source"
                )));
            }
            if let Some(credentials) = &pool.credentials {
                credentials.resolve(name)?;
            }
            if let Some(price) = &pool.price {
                price
                    .check()
                    .map_err(|e| Invalid::new(format!("pools.{name}.price: {e}")))?;
            }
            let mut seen = BTreeSet::new();
            for backend in &pool.backends {
                if !seen.insert(backend.address.get_ref()) {
                    return Err(Invalid::at(
                        backend.address.span(),
                        format!(
                            "pools.{name}: backend {} appears twice",
                            backend.address.get_ref()
                        ),
                    ));
                }
                if let Err(reason) = backend.check() {
                    return Err(Invalid::at(
                        backend.address.span(),
                        format!("pools.{name}: {reason}"),
                    ));
                }
            }
            check_upstream_tls(name, pool)?;
            if let Some(shedding) = &pool.shedding {
                if pool.metrics.is_none() {
                    return Err(Invalid::new(format!(
                        "pools.{name}.shedding needs the pool's `metrics`: saturation is read from the backends' queues and KV caches"
                    )));
                }
                if !(shedding.queue_depth > 0.0
                    && shedding.kv_cache_usage > 0.0
                    && shedding.kv_cache_usage <= 1.0)
                {
                    return Err(Invalid::new(format!(
                        "pools.{name}.shedding: `queue_depth` must be above 0 and `kv_cache_usage` in (0, 1]"
                    )));
                }
            }
            if let Some(queue) = &pool.queue {
                if !matches!(pool.policy, PolicySpec::PredictiveTtft { .. }) {
                    return Err(Invalid::new(format!(
                        "pools.{name}.queue needs `policy = {{ kind = \"predictive_ttft\" }}`: a request waits only while no backend is predicted to meet its objective"
                    )));
                }
                if queue.max == 0 || queue.max_wait.is_zero() || queue.max_wait > Duration::from_secs(60) {
                    return Err(Invalid::new(format!(
                        "pools.{name}.queue: `max` must be at least 1 and `max_wait` in (0s, 60s]"
                    )));
                }
            }
            if let Some(check) = &pool.health_check {
                match (&check.path, &check.grpc_service) {
                    (Some(path), None) if !path.starts_with('/') => {
                        return Err(Invalid::new(format!(
                            "pools.{name}.health_check.path must start with `/`"
                        )));
                    }
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => {
                        return Err(Invalid::new(format!(
                            "pools.{name}.health_check: give either `path` (HTTP) or `grpc_service` (gRPC), not both or neither"
                        )));
                    }
                }
                if check.interval.is_zero() || check.timeout.is_zero() {
                    return Err(Invalid::new(format!(
                        "pools.{name}.health_check: interval and timeout must be > 0"
                    )));
                }
            }
            if let Some(m) = &pool.metrics {
                let has_custom = !m.custom.is_empty();
                if m.preset.is_some() == has_custom {
                    return Err(Invalid::new(format!(
                        "pools.{name}.metrics: give either `preset` or `custom`, not both or neither"
                    )));
                }
                if !m.path.starts_with('/') || m.interval.is_zero() || m.timeout.is_some_and(|t| t.is_zero())
                {
                    return Err(Invalid::new(format!(
                        "pools.{name}.metrics: path must start with `/` and interval/timeout be > 0"
                    )));
                }
            }
            pool.scaling.check(name)?;
            let t = &pool.timeouts;
            if t.connect.is_zero() || t.request.is_zero() || t.idle.is_zero() {
                return Err(Invalid::new(format!(
                    "pools.{name}.timeouts: every timeout must be > 0"
                )));
            }
        }
        Ok(())
    }

    fn validate_telemetry(&self) -> Result<(), Invalid> {
        if let Some(t) = &self.telemetry {
            if t.queue_rows == 0 || t.batch_rows == 0 || t.rotate_rows == 0 || t.rotate_bytes == 0 {
                return Err(Invalid::new(
                    "telemetry: queue_rows, batch_rows, rotate_rows and rotate_bytes must be > 0",
                ));
            }
            if t.rotate_age.is_zero() || t.flush_interval.is_zero() {
                return Err(Invalid::new(
                    "telemetry: rotate_age and flush_interval must be > 0",
                ));
            }
        }
        Ok(())
    }
}

/// Limits that would refuse every connection or request, or that hyper cannot enforce.
fn check_limits(limits: &ConnectionLimits, at: &str) -> Result<(), Invalid> {
    if limits.max_connections == 0 {
        return Err(Invalid::new(format!("{at}.max_connections must be at least 1")));
    }
    let timeouts = [
        ("header_read_timeout", limits.header_read_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("stream_idle_timeout", limits.stream_idle_timeout),
        ("h2_keepalive_interval", limits.h2_keepalive_interval),
        ("h2_keepalive_timeout", limits.h2_keepalive_timeout),
    ];
    if let Some((name, _)) = timeouts.iter().find(|(_, t)| t.is_zero()) {
        return Err(Invalid::new(format!("{at}.{name} must be longer than 0s")));
    }
    if limits.max_request_header_bytes < MIN_REQUEST_HEADER_BYTES {
        return Err(Invalid::new(format!(
            "{at}.max_request_header_bytes = {} is below the smallest enforceable limit, {MIN_REQUEST_HEADER_BYTES}",
            limits.max_request_header_bytes
        )));
    }
    Ok(())
}

/// A pool's protocol and TLS settings fit together.
fn check_upstream_tls(name: &str, pool: &super::PoolConfig) -> Result<(), Invalid> {
    use super::UpstreamProtocol;
    match (pool.protocol, &pool.tls) {
        (UpstreamProtocol::H2, None) => {
            return Err(Invalid::new(format!(
                "pools.{name}: protocol = \"h2\" needs `tls` (HTTP/2 without TLS is `h2c`)"
            )));
        }
        (UpstreamProtocol::H2c, Some(_)) => {
            return Err(Invalid::new(format!(
                "pools.{name}: protocol = \"h2c\" is HTTP/2 without TLS; with `tls`, say `h2`"
            )));
        }
        _ => {}
    }
    if let Some(tls) = &pool.tls {
        if tls.client_cert.is_some() != tls.client_key.is_some() {
            return Err(Invalid::new(format!(
                "pools.{name}.tls: give both `client_cert` and `client_key`, or neither"
            )));
        }
        if tls.insecure_skip_verify && tls.ca.is_some() {
            return Err(Invalid::new(format!(
                "pools.{name}.tls: `insecure_skip_verify` ignores `ca`; give one or the other"
            )));
        }
    }
    Ok(())
}
