//! `[[listeners]]` and the limits every listener (the admin one included) puts on its connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[[listeners]]`: one address clients connect to (HTTP/1.1, and HTTP/2 by prior knowledge or ALPN).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Socket address, e.g. `"0.0.0.0:8080"`.
    pub address: SocketAddr,
    /// Terminate TLS here; absent means plain TCP.
    pub tls: Option<ListenerTls>,
    /// Limits on this listener's connections.
    #[serde(default)]
    pub limits: ConnectionLimits,
}

/// `[listeners.tls]`: the certificates a TLS listener presents, and whom it asks for one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chains with their keys (PEM files). A client's SNI name picks the first whose
    /// certificate is valid for it; a client without SNI, or with a name none covers, gets the first.
    pub certificates: Vec<CertificatePair>,
    /// PEM file of the CAs whose client certificates are accepted; set, every client must present
    /// one (mutual TLS). Absent: no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes (a renewed certificate is picked up without a
    /// SIGHUP); SIGHUP reloads them at once.
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(5)
}

/// One certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    /// PEM file: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM file of the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[listeners.limits]` (and `[admin.limits]`): how many connections, how long each may sit idle or
/// silent, and how large a request may be. Every value has a default safe at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections open at once; a connection over the limit is accepted and closed at once, and
    /// counted.
    pub max_connections: usize,
    /// From accept to the end of the first request's head, TLS handshake and protocol detection
    /// included; on HTTP/1 also each later request head, counted from the end of the response before
    /// it (so an idle HTTP/1 keep-alive connection closes after this long, as HAProxy's
    /// `timeout http-request` does).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 with a GOAWAY).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A connection with requests in flight on which no byte moves either way for this long is
    /// closed: a client that stopped reading a response (or sending its body) cannot hold a backend.
    /// On HTTP/2, a stream whose client takes nothing of it for this long is cut on its own.
    #[serde(with = "humantime_serde")]
    pub stream_idle_timeout: Duration,
    /// HTTP/2 PING sent after this long without a frame from the client...
    #[serde(with = "humantime_serde")]
    pub h2_keepalive_interval: Duration,
    /// ...and the connection closed when its answer takes longer than this.
    #[serde(with = "humantime_serde")]
    pub h2_keepalive_timeout: Duration,
    /// Bytes of a request head (request line and headers); larger ones get 431.
    pub max_request_header_bytes: usize,
    /// Bytes of a request body; a larger one gets 413 (by its `Content-Length`, or as it streams).
    /// Absent: unlimited.
    pub max_request_body_bytes: Option<u64>,
}

/// The smallest head limit hyper's HTTP/1 reader can enforce (its read buffer's floor).
pub const MIN_REQUEST_HEADER_BYTES: usize = 8 * 1024;

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            h2_keepalive_interval: Duration::from_secs(30),
            h2_keepalive_timeout: Duration::from_secs(20),
            max_request_header_bytes: 60 * 1024,
            max_request_body_bytes: None,
        }
    }
}
