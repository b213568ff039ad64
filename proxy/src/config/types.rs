//! Config value types that check themselves while parsing, so a bad value's error names its line.

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::uri::Authority;
use serde::Deserialize;

/// A backend's `host:port`, checked to be a valid authority with a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct BackendAddress(String);

impl BackendAddress {
    /// The address as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BackendAddress {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let authority: Authority = s
            .parse()
            .map_err(|e| format!("backend address `{s}` is not `host:port`: {e}"))?;
        if authority.port_u16().is_none() {
            return Err(format!("backend address `{s}` has no port (write `host:port`)"));
        }
        if s.contains('@') {
            return Err(format!("backend address `{s}` must not carry credentials"));
        }
        Ok(Self(s))
    }
}

impl fmt::Display for BackendAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Deserialize)]
#[serde(try_from = "f64")]
pub struct Fraction(pub f64);

impl TryFrom<f64> for Fraction {
    type Error = String;

    fn try_from(v: f64) -> Result<Self, Self::Error> {
        if (0.0..=1.0).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("{v} is not a fraction between 0 and 1"))
        }
    }
}

/// An HTTP method name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MethodName(pub http::Method);

impl TryFrom<String> for MethodName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        http::Method::from_bytes(s.to_ascii_uppercase().as_bytes())
            .map(Self)
            .map_err(|_| format!("`{s}` is not an HTTP method"))
    }
}

/// `{ name = "...", value = "..." }`: a header that must be present with this exact value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawHeaderMatch")]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: HeaderName,
    /// Exact value.
    pub value: HeaderValue,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderMatch {
    name: String,
    value: String,
}

impl TryFrom<RawHeaderMatch> for HeaderMatch {
    type Error = String;

    fn try_from(raw: RawHeaderMatch) -> Result<Self, Self::Error> {
        let name = HeaderName::from_bytes(raw.name.as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", raw.name))?;
        let value = HeaderValue::from_str(&raw.value)
            .map_err(|_| format!("`{}` is not a valid header value", raw.value))?;
        Ok(Self { name, value })
    }
}

/// A proxy id: letters, digits, `.`, `_` and `-` (it becomes part of file names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyId(String);

impl ProxyId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The machine's host name, made safe for file names; `augur` when it cannot be read.
    pub fn from_host_name() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let safe: String = host
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        Self(if safe.is_empty() { "augur".to_owned() } else { safe })
    }
}

impl TryFrom<String> for ProxyId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            Ok(Self(s))
        } else {
            Err(format!(
                "proxy id `{s}` may hold only letters, digits, `.`, `_` and `-`"
            ))
        }
    }
}
