//! `[auth]`, the routes' `auth` and `limits`: who may use the proxy, and how much.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[auth]`: where the client keys are, and how JSON Web Tokens are checked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The keys file (TOML, or JSON when it ends in `.json`): the keys, stored as SHA-256 digests,
    /// each naming a tenant, what it may use and its limits; and the tenants' limits (which apply
    /// to tenants named by tokens too). Reloaded on SIGHUP and when it changes; a file that does
    /// not load is refused and the keys in force stay. Needed by routes with `auth = "key"`.
    pub keys_file: Option<PathBuf>,
    /// The files are checked this often besides file events (which some file systems lack).
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub check_interval: Duration,
    /// `[auth.jwt]`: how tokens are verified, for routes with `auth = "jwt"`.
    pub jwt: Option<JwtConfig>,
}

/// `[auth.jwt]`: JSON Web Tokens signed by an identity provider whose public keys are in a JWKS
/// file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The provider's public keys, as a JSON Web Key Set (what its `jwks_uri` serves). Reloaded
    /// with the keys file; a set that does not load is refused and the keys in force stay.
    pub jwks_file: PathBuf,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// Audiences of which a token's `aud` must name one.
    pub audience: Vec<String>,
    /// The claim that names the token's tenant (whose limits in the keys file apply).
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
}

impl JwtConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        if self.issuer.trim().is_empty() {
            return Err("auth.jwt.issuer must name the issuer tokens carry in `iss`".into());
        }
        if self.audience.is_empty() || self.audience.iter().any(|a| a.trim().is_empty()) {
            return Err("auth.jwt.audience must list at least one audience, none empty".into());
        }
        if self.tenant_claim.is_empty() {
            return Err("auth.jwt.tenant_claim must name a claim".into());
        }
        Ok(())
    }
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}

/// `[limiter]`: where the rate and token limits keep their state. Absent: in this proxy (a fleet
/// of N proxies lets N times the rates through).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimiterConfig {
    /// The Redis server the fleet's proxies share, `redis://[user:password@]host:port[/db]` (or
    /// `rediss://` for TLS). Every rate and token limit is then one count across the fleet.
    pub redis_url: String,
    /// What a request meets while Redis does not answer: `local` (this proxy's own limits),
    /// `open` (no rate limits), or `closed` (503).
    #[serde(default)]
    pub on_error: OnLimiterError,
    /// Longest a request waits for Redis before `on_error` applies.
    #[serde(default = "default_limiter_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Prefix of the limiter's Redis keys.
    #[serde(default = "default_limiter_prefix")]
    pub prefix: String,
}

/// `[limiter] on_error`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimiterError {
    /// This proxy's own limits, as without Redis.
    #[default]
    Local,
    /// No rate or token limit: every request goes on (concurrency limits still hold).
    Open,
    /// Every request on a limited route is refused with 503.
    Closed,
}

impl OnLimiterError {
    /// Its name in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }
}

fn default_limiter_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_limiter_prefix() -> String {
    "augur:".to_owned()
}

impl LimiterConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        let url = self.redis_url.as_str();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "limiter.redis_url `{url}` must start with redis:// or rediss://"
            ));
        }
        redis::Client::open(url).map_err(|e| format!("limiter.redis_url `{url}`: {e}"))?;
        if self.timeout.is_zero() {
            return Err("limiter.timeout must be > 0".into());
        }
        Ok(())
    }
}

/// A route's `auth`: what a client must present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuth {
    /// Nothing: anyone who reaches the listener.
    #[default]
    None,
    /// A key of the keys file, as `Authorization: Bearer KEY` or `x-api-key: KEY`.
    Key,
    /// A JSON Web Token that `[auth.jwt]` verifies, as `Authorization: Bearer TOKEN`.
    Jwt,
}

/// Which of a route's responses carry the `RateLimit` and `RateLimit-Policy` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHeaders {
    /// Refusals (429) only, as Envoy's rate limit filters do by default: what a client needs to
    /// back off, at no cost to the requests let in.
    #[default]
    Refused,
    /// Every response of a request with limits too, telling the limit with the least left (about
    /// 2,500 instructions a response more, 3.6% of a proxied request: mostly growing the response's
    /// header map).
    Always,
}

/// Limits of a key, a tenant or a route. Each one given is enforced on its own; a request must pass
/// them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per second (a burst of this many at once is allowed).
    pub requests_per_second: Option<u32>,
    /// Requests per minute (a burst of this many at once is allowed).
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute, charged when a request is admitted: its prompt's estimate plus its
    /// `max_tokens`.
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    pub concurrent: Option<u32>,
}

impl Limits {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        let zero = self.requests_per_second == Some(0)
            || self.requests_per_minute == Some(0)
            || self.tokens_per_minute == Some(0)
            || self.concurrent == Some(0);
        if zero {
            return Err("a limit of 0 would refuse everything; leave it out for no limit".into());
        }
        Ok(())
    }

    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}
