//! The response cache: exact-match, in memory, bounded in bytes (least recently used out first),
//! shared by the routes that ask for it. Two kinds of entry:
//!
//! - a GET (route `cache = true`): keyed by host, path and query (and the tenant, on routes with
//!   keys or tokens, so one tenant never gets another's answer), stored while its `Cache-Control`
//!   or `Expires` says it is fresh, matched again on the request headers it `Vary`s on;
//! - a deterministic LLM request (route `cache_llm = true`, a JSON body with `temperature` 0):
//!   keyed by its body in canonical form and its tenant, stored for `cache.llm_ttl`.
//!
//! A response is copied as it streams to the client, and stored once it has arrived whole.

pub mod freshness;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue, AGE, VARY};
use http::{Method, Request, Response, StatusCode};
use moka::sync::Cache;
use prometheus::{IntCounterVec, IntGauge, Registry};
use sha2::{Digest, Sha256};

use crate::config::CacheConfig;
use crate::message::body::{BodyObserver, ProxyBody};
use crate::message::reply;
use crate::metrics::{counter, registered};

/// `x-augur-cache`: `hit` on a stored answer, `miss` on one that went to a backend.
pub const X_AUGUR_CACHE: HeaderName = HeaderName::from_static("x-augur-cache");

/// Which kind of entry a request may find or make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A GET, by `Cache-Control`.
    Http,
    /// A deterministic LLM request, for `llm_ttl`.
    Llm,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Llm => "llm",
        }
    }
}

/// A request's place in the cache.
#[derive(Debug, Clone)]
pub struct CacheKey {
    digest: [u8; 32],
    kind: Kind,
    /// The request asked not to be answered from the cache (`no-cache`), though it may be stored.
    fresh_only: bool,
}

/// A stored response.
struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    /// Its `Age` when it was stored.
    age: Duration,
    ttl: Duration,
    /// The request headers it varied on, with the values its request had.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl Entry {
    fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        u32::try_from(self.body.len() + headers + 256).unwrap_or(u32::MAX)
    }
}

struct ByTtl;

impl moka::Expiry<[u8; 32], Arc<Entry>> for ByTtl {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        entry: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// The cache and its counts.
pub struct ResponseCache {
    store: Cache<[u8; 32], Arc<Entry>>,
    max_entry_bytes: usize,
    llm_ttl: Duration,
    requests: IntCounterVec,
    stored: IntCounterVec,
    bytes: IntGauge,
}

impl ResponseCache {
    /// An empty cache as `config` says, its metrics in `registry`.
    pub fn new(config: &CacheConfig, registry: &Registry) -> Arc<Self> {
        Arc::new(Self {
            store: Cache::builder()
                .max_capacity(config.max_bytes)
                .weigher(|_, entry: &Arc<Entry>| entry.weight())
                .expire_after(ByTtl)
                .build(),
            max_entry_bytes: config.max_entry_bytes,
            llm_ttl: config.llm_ttl,
            requests: counter(
                registry,
                "augur_cache_requests_total",
                "Requests that could be answered from the response cache, by route, kind (http, llm) and result (hit, miss, bypass: the request asked for a fresh answer)",
                &["route", "kind", "result"],
            ),
            stored: counter(
                registry,
                "augur_cache_stored_total",
                "Responses stored in the cache, by kind",
                &["kind"],
            ),
            bytes: registered(
                registry,
                IntGauge::new("augur_cache_bytes", "Bytes the response cache holds (bodies and headers)"),
            ),
        })
    }

    /// Where `request` for `host` (its `Host`, or its HTTP/2 authority), with the `model` body's
    /// `digest` when it is deterministic, may find or leave its answer on a route that caches as
    /// `http` and `llm` say; `tenant` keeps tenants apart. `None`: the cache does not apply.
    pub fn key<B>(
        (http, llm): (bool, bool),
        request: &Request<B>,
        host: Option<&HeaderValue>,
        tenant: Option<&str>,
        digest: Option<&[u8; 32]>,
    ) -> Option<CacheKey> {
        let headers = request.headers();
        if freshness::request_forbids_store(headers) {
            return None;
        }
        let kind = match (request.method(), digest) {
            (&Method::GET, _) if http => Kind::Http,
            (&Method::POST, Some(_)) if llm => Kind::Llm,
            _ => return None,
        };
        let mut hash = Sha256::new();
        hash.update(kind.as_str());
        hash.update([0]);
        hash.update(tenant.unwrap_or_default());
        hash.update([0]);
        match kind {
            Kind::Http => {
                hash.update(host.map_or(&b""[..], HeaderValue::as_bytes));
                hash.update([0]);
                hash.update(request.uri().path_and_query().map_or("/", |p| p.as_str()));
            }
            Kind::Llm => {
                hash.update(request.uri().path());
                hash.update([0]);
                hash.update(digest.expect("matched above"));
            }
        }
        Some(CacheKey {
            digest: hash.finalize().into(),
            kind,
            fresh_only: freshness::request_wants_fresh(headers),
        })
    }

    /// The stored answer for `key`, as the client gets it, if there is a fresh one that matches
    /// the request's `headers` on what it varied on; counted under `route` either way.
    pub fn get(&self, route: &str, key: &CacheKey, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
        let count = |result| {
            self.requests
                .with_label_values(&[route, key.kind.as_str(), result])
                .inc()
        };
        if key.fresh_only {
            count("bypass");
            return None;
        }
        let entry = self.store.get(&key.digest).filter(|e| {
            e.vary
                .iter()
                .all(|(name, value)| headers.get(name) == value.as_ref())
        });
        let Some(entry) = entry else {
            count("miss");
            return None;
        };
        count("hit");
        let mut response = Response::new(reply::full(entry.body.clone()));
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        let age = (entry.age + entry.stored.elapsed()).as_secs();
        response.headers_mut().insert(AGE, HeaderValue::from(age));
        response
            .headers_mut()
            .insert(X_AUGUR_CACHE, HeaderValue::from_static("hit"));
        Some(response)
    }

    /// A recorder that stores the response with `status` and `headers` under `key` once its body
    /// has arrived whole, if it may be stored; `request` holds the headers it may vary on.
    pub fn recorder(
        self: &Arc<Self>,
        key: CacheKey,
        request: &HeaderMap,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Recorder> {
        let storable_status = match key.kind {
            Kind::Http => matches!(status.as_u16(), 200 | 203 | 204 | 300 | 301 | 404 | 410),
            Kind::Llm => status == StatusCode::OK,
        };
        if !storable_status {
            return None;
        }
        let default = (key.kind == Kind::Llm).then_some(self.llm_ttl);
        let ttl = freshness::fresh_for(headers, default, SystemTime::now())?;
        let mut vary = Vec::new();
        for field in headers.get_all(VARY).iter().filter_map(|v| v.to_str().ok()) {
            for name in field.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                if name.as_str() == "*" {
                    return None;
                }
                vary.push((name.clone(), request.get(&name).cloned()));
            }
        }
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_entry_bytes) {
            return None;
        }
        let mut stored_headers = headers.clone();
        // What belongs to the request that made it, not to the answer.
        stored_headers.remove(AGE);
        stored_headers.remove(crate::message::X_REQUEST_ID);
        Some(Recorder {
            cache: self.clone(),
            key: key.digest,
            kind: key.kind,
            entry: Some(Entry {
                status,
                age: headers
                    .get(AGE)
                    .and_then(|a| a.to_str().ok()?.trim().parse().ok())
                    .map_or(Duration::ZERO, Duration::from_secs),
                headers: stored_headers,
                body: Bytes::new(),
                stored: Instant::now(),
                ttl,
                vary,
            }),
            body: BytesMut::new(),
        })
    }

    fn insert(&self, key: [u8; 32], kind: Kind, entry: Entry) {
        self.store.insert(key, Arc::new(entry));
        self.stored.with_label_values(&[kind.as_str()]).inc();
        self.store.run_pending_tasks();
        self.bytes.set(self.store.weighted_size() as i64);
    }
}

/// Copies a response's body as it passes, and stores it when it has arrived whole (not when it
/// failed, was cut short, or outgrew `max_entry_bytes`).
pub struct Recorder {
    cache: Arc<ResponseCache>,
    key: [u8; 32],
    kind: Kind,
    entry: Option<Entry>,
    body: BytesMut,
}

impl BodyObserver for Recorder {
    fn data(&mut self, data: &[u8]) {
        if self.entry.is_none() {
            return;
        }
        if self.body.len() + data.len() > self.cache.max_entry_bytes {
            self.entry = None;
            self.body = BytesMut::new();
            return;
        }
        self.body.extend_from_slice(data);
    }

    fn failed(&mut self, _error: &crate::message::body::BoxError) {
        self.entry = None;
    }

    fn ended(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.body = std::mem::take(&mut self.body).freeze();
            entry.stored = Instant::now();
            self.cache.insert(self.key, self.kind, entry);
        }
    }
}
