//! `[compression]`: responses compressed for clients that accept it.

use serde::Deserialize;

/// `[compression]`: absent means responses go as the backends sent them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Encodings offered, in the proxy's order of preference; a client gets the first it accepts.
    pub encodings: Vec<Encoding>,
    /// Bodies whose `Content-Length` says fewer bytes go as they are (compression would not pay).
    pub min_length: u64,
    /// Media types compressed (`text/*` matches every text type); anything else, images and
    /// archives say, goes as it is. Event streams never are: each event must reach the client
    /// when it is sent.
    pub content_types: Vec<String>,
    /// Compression level: 1 (fastest) to 9 (smallest), mapped onto each encoding's own scale.
    pub level: u32,
}

/// A content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Zstandard (RFC 8878).
    Zstd,
    /// Brotli (RFC 7932).
    Br,
    /// gzip (RFC 1952).
    Gzip,
}

impl Encoding {
    /// Its name in `Accept-Encoding` and `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            encodings: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
            min_length: 1024,
            content_types: [
                "text/*",
                "application/json",
                "application/javascript",
                "application/xml",
                "application/x-ndjson",
                "image/svg+xml",
            ]
            .map(String::from)
            .to_vec(),
            level: 4,
        }
    }
}

impl CompressionConfig {
    /// What parsing alone cannot check.
    pub fn check(&self) -> Result<(), String> {
        if self.encodings.is_empty() {
            return Err("compression.encodings must list at least one of zstd, br, gzip".into());
        }
        if !(1..=9).contains(&self.level) {
            return Err(format!("compression.level must be 1 to 9, not {}", self.level));
        }
        Ok(())
    }
}
