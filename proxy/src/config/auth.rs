//! `[auth]`, the routes' `auth` and `limits`: who may use the proxy, and how much.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[auth]`: where the client keys are.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The keys file (TOML, or JSON when it ends in `.json`): the keys, stored as SHA-256 digests,
    /// each naming a tenant, what it may use and its limits; and the tenants' limits. Reloaded on
    /// SIGHUP and when it changes; a file that does not load is refused and the keys in force stay.
    pub keys_file: PathBuf,
    /// The file is checked this often besides file events (which some file systems lack).
    #[serde(default = "default_check_interval", with = "humantime_serde")]
    pub check_interval: Duration,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
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
