//! Building and sending one attempt's request to a backend, and classifying what went wrong.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, HOST};
use http::uri::{self, PathAndQuery};
use http::{Method, Request, Response, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::headers;
use super::record::{ByteCounter, BytesIn};
use crate::error::ProxyError;
use crate::message::body::{BodyTooLarge, Guarded, IdleTimeout, ProxyBody};
use crate::message::reply;
use crate::outcome::UpstreamError;
use crate::pool::{connector, Backend, Pool};

/// The parts of the upstream request that stay the same across attempts.
pub struct UpstreamHead {
    method: Method,
    path_and_query: PathAndQuery,
    headers: HeaderMap,
    host: Option<HeaderValue>,
}

impl UpstreamHead {
    /// Method, path and prepared headers of `request` as `pool` forwards it for `downstream`;
    /// `renamed_len` is the length of its body when the pool gets it rewritten (`model_map`).
    pub fn new(
        request: &http::request::Parts,
        pool: &Pool,
        downstream: &headers::Forwarded<'_>,
        upgrade: bool,
        renamed_len: Option<usize>,
    ) -> Self {
        let mut h = headers::upstream(&request.headers, downstream, upgrade);
        if let Some((name, value)) = &pool.credentials {
            h.insert(name.clone(), value.clone());
        }
        if let Some(len) = renamed_len {
            h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let host = match (&pool.config.host_rewrite, pool.config.preserve_host) {
            (Some(rewrite), _) => HeaderValue::from_str(rewrite).ok(),
            (None, true) => downstream.host.cloned(),
            (None, false) => None,
        };
        Self {
            method: request.method.clone(),
            path_and_query: request
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            headers: h,
            host,
        }
    }
}

/// The request body: kept in memory when it may have to be sent again, else streamed once.
pub enum RequestBody {
    /// Small enough to keep; every attempt sends a copy.
    Replayable(Bytes),
    /// Streamed to the first attempt only.
    Streaming(Option<ProxyBody>, Duration),
}

impl RequestBody {
    /// Reads a retryable request's body into memory when it is known to be at most `max_bytes`.
    pub async fn prepare(
        body: ProxyBody,
        retryable: bool,
        max_bytes: usize,
        idle: Duration,
    ) -> Result<Self, ProxyError> {
        let small = body.size_hint().exact().is_some_and(|n| n <= max_bytes as u64);
        if !retryable || !(body.is_end_stream() || small) {
            return Ok(Self::Streaming(Some(body), idle));
        }
        // Known to be at most `max_bytes`: read it whole.
        let prefix = super::body_peek::read_prefix(body, max_bytes + 1, idle).await?;
        match prefix.rest {
            None => Ok(Self::Replayable(prefix.bytes)),
            // Longer than its Content-Length claimed: send what is there and stream the rest, once.
            Some(_) => Ok(Self::Streaming(Some(prefix.into_body()), idle)),
        }
    }

    /// Whether a second attempt can send the body again.
    pub fn is_replayable(&self) -> bool {
        matches!(self, Self::Replayable(_))
    }

    /// Whether the next attempt gets the whole body: it is kept, or no attempt has taken it yet.
    pub fn is_intact(&self) -> bool {
        matches!(self, Self::Replayable(_) | Self::Streaming(Some(_), _))
    }

    /// The body for the next attempt, and how many of its bytes reach the backend.
    pub fn for_attempt(&mut self) -> (ProxyBody, BytesIn) {
        match self {
            Self::Replayable(bytes) => (reply::full(bytes.clone()), BytesIn::Known(bytes.len() as u64)),
            Self::Streaming(body, idle) => match body.take() {
                Some(body) => {
                    let sent = Arc::new(AtomicU64::new(0));
                    let counted = Guarded::new(IdleTimeout::new(body, *idle), ByteCounter(sent.clone()));
                    (counted.boxed(), BytesIn::Counted(sent))
                }
                None => (reply::full(Bytes::new()), BytesIn::Known(0)),
            },
        }
    }
}

/// Sends one attempt to `backend` over the pool's pooled connections; `trace_context` (the
/// attempt span's `traceparent`) replaces what the client sent, when the attempt is traced.
pub async fn send(
    pool: &Pool,
    backend: &Backend,
    head: &UpstreamHead,
    body: ProxyBody,
    trace_context: Option<&HeaderMap>,
) -> Result<Response<Incoming>, UpstreamError> {
    let address = || backend.address.to_string();
    let cannot_build = |e: &dyn std::fmt::Display| UpstreamError::Connect {
        backend: address(),
        reason: format!("cannot build the upstream request: {e}"),
    };
    let (authority, host_header) = backend
        .authority
        .clone()
        .ok_or_else(|| cannot_build(&"the address is not host:port"))?;
    // From parts the request already has: no formatting, no parsing, no allocation.
    let mut uri = uri::Parts::default();
    uri.scheme = Some(connector::scheme(&pool.config));
    uri.authority = Some(authority);
    uri.path_and_query = Some(head.path_and_query.clone());
    let uri = Uri::from_parts(uri).map_err(|e| cannot_build(&e))?;
    let mut request = Request::builder()
        .method(head.method.clone())
        .uri(uri)
        .version(connector::version(&pool.config))
        .body(body)
        .map_err(|e| cannot_build(&e))?;
    *request.headers_mut() = head.headers.clone();
    if let Some(context) = trace_context {
        for (name, value) in context {
            request.headers_mut().insert(name, value.clone());
        }
    }
    let host = head.host.clone().unwrap_or(host_header);
    request.headers_mut().insert(HOST, host);
    let timeout = pool.config.timeouts.request;
    match tokio::time::timeout(timeout, pool.client.request(request)).await {
        Err(_) => Err(UpstreamError::Timeout {
            backend: address(),
            timeout,
        }),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect {
            backend: address(),
            reason: error_chain(&e),
        }),
        Ok(Err(e)) if failed_on_request_body(&e) => Err(UpstreamError::ClientBody {
            backend: address(),
            too_large: caused_by::<BodyTooLarge>(&e),
            reason: error_chain(&e),
        }),
        Ok(Err(e)) => Err(UpstreamError::Reset {
            backend: address(),
            reason: error_chain(&e),
        }),
    }
}

/// Whether the request failed because its body did (hyper's "user body" errors): the client's
/// doing, not the backend's.
fn failed_on_request_body(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source())
        .filter_map(|e| e.downcast_ref::<hyper::Error>())
        .any(hyper::Error::is_user)
}

/// Whether an `E` is among the causes of `e`.
fn caused_by<E: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| e.is::<E>())
}

/// An error and its causes on one line (hyper's own message is only the outermost layer).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    message
}
