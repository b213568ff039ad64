//! `[pools.NAME.credentials]`: what the proxy presents to a pool's backends (a hosted provider's
//! API key), taken from the environment and never from the client.

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;

use super::validate::Invalid;

/// `credentials = { env = "OPENAI_API_KEY" }`: sent as `Authorization: Bearer $OPENAI_API_KEY`;
/// `{ header = "x-api-key", env = "ANTHROPIC_API_KEY" }`: as `x-api-key: $ANTHROPIC_API_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The header that carries it.
    #[serde(default = "default_header")]
    pub header: String,
    /// The environment variable that holds it (a Kubernetes Secret, say): never in the file.
    pub env: String,
    /// Written before the value; by default `"Bearer "` for `Authorization`, nothing otherwise.
    pub prefix: Option<String>,
}

fn default_header() -> String {
    AUTHORIZATION.as_str().to_owned()
}

impl Credentials {
    /// The header to send, read from the environment now; the value is marked sensitive, so
    /// HTTP/2's header compression never indexes it.
    pub fn resolve(&self, pool: &str) -> Result<(HeaderName, HeaderValue), Invalid> {
        let field = format!("pools.{pool}.credentials");
        let name = HeaderName::from_bytes(self.header.as_bytes())
            .map_err(|_| Invalid::new(format!("{field}.header `{}` is not a header name", self.header)))?;
        let secret = std::env::var(&self.env).map_err(|_| {
            Invalid::new(format!(
                "{field}.env: the environment variable `{}` is not set (or not UTF-8)",
                self.env
            ))
        })?;
        if secret.trim().is_empty() {
            return Err(Invalid::new(format!(
                "{field}.env: the environment variable `{}` is empty",
                self.env
            )));
        }
        let prefix = match &self.prefix {
            Some(prefix) => prefix.as_str(),
            None if name == AUTHORIZATION => "Bearer ",
            None => "",
        };
        let mut value = HeaderValue::from_str(&format!("{prefix}{}", secret.trim())).map_err(|_| {
            Invalid::new(format!(
                "{field}.env: `{}` holds characters a header cannot carry",
                self.env
            ))
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    }
}
