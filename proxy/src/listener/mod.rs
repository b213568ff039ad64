//! The listeners, the client-facing ones and the admin one alike: accept connections (plain or TLS)
//! up to a limit, serve HTTP/1.1 and HTTP/2 on each under the listener's timeouts, and on shutdown
//! stop accepting and let requests in flight finish within the grace period.

mod activity;
mod connection;
mod metrics;
mod progress;
mod streams;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::activity::{Activity, RequestActivity, Tracked, LOOKS_PER_TIMEOUT};
pub use self::metrics::{ListenerHandles, ListenerMetrics};
pub use self::tls::{TlsError, TlsTerminator};
use crate::config::{ConnectionLimits, ListenerTls};
use crate::message::body::ProxyBody;

/// How long to pause accepting after an accept error (file descriptors exhausted, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// What a request knows of the listener it came in on.
pub struct ListenerContext {
    /// The bound address (the metrics' `listener` label).
    pub address: SocketAddr,
    /// The limits on its connections and requests.
    pub limits: ConnectionLimits,
    /// Its certificates, when it terminates TLS.
    pub tls: Option<Arc<TlsTerminator>>,
    /// Its metrics.
    pub metrics: ListenerHandles,
}

/// Where a request came from: the peer, the listener, and the request's place on its connection.
pub struct Downstream {
    /// The peer's address.
    pub client: SocketAddr,
    /// The listener it connected to.
    pub listener: Arc<ListenerContext>,
    /// The request counts in flight on its connection while this lives: keep it until the response
    /// body is done.
    pub activity: RequestActivity,
}

impl Downstream {
    /// Whether the request came over TLS.
    pub fn is_tls(&self) -> bool {
        self.listener.tls.is_some()
    }
}

/// Answers the requests of a listener's connections.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The response to `request`.
    fn handle(
        &self,
        request: Request<Incoming>,
        downstream: Downstream,
    ) -> impl Future<Output = Response<ProxyBody>> + Send;
}

/// A bound listener, not yet serving.
pub struct Listener {
    tcp: TcpListener,
    context: Arc<ListenerContext>,
}

/// A listener that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Its certificates did not load.
    #[error("listener {address}: {source}")]
    Tls {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: TlsError,
    },
}

impl Listener {
    /// Loads `tls`'s certificates, if any, and binds `address`.
    pub async fn bind(
        address: SocketAddr,
        tls: Option<&ListenerTls>,
        limits: &ConnectionLimits,
        metrics: &ListenerMetrics,
    ) -> Result<Self, ListenError> {
        let tls = tls
            .map(TlsTerminator::load)
            .transpose()
            .map_err(|source| ListenError::Tls { address, source })?;
        let bind_error = |source| ListenError::Bind { address, source };
        let tcp = TcpListener::bind(address).await.map_err(bind_error)?;
        let local = tcp.local_addr().map_err(bind_error)?;
        let context = ListenerContext {
            address: local,
            limits: limits.clone(),
            tls: tls.map(Arc::new),
            metrics: metrics.of(&local.to_string()),
        };
        Ok(Self {
            tcp,
            context: Arc::new(context),
        })
    }

    /// The address it got (the real port for port 0).
    pub fn address(&self) -> SocketAddr {
        self.context.address
    }

    /// Its settings, certificates and metrics, shared with its requests.
    pub fn context(&self) -> &Arc<ListenerContext> {
        &self.context
    }
}

impl ListenerContext {
    /// Reads this listener's certificates again (a no-op without TLS); on failure the ones in force
    /// keep serving. Counted either way.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let result = tls.reload();
        match &result {
            Ok(()) => {
                self.metrics.tls_reloaded.inc();
                tracing::info!(listener = %self.address, "certificates reloaded");
            }
            Err(e) => {
                self.metrics.tls_reload_failed.inc();
                tracing::error!(listener = %self.address, error = %e, "certificate reload refused; the previous certificates keep serving");
            }
        }
        result
    }
}

/// Reloads the listener's certificates whenever their files change, until `stop`.
pub fn spawn_certificate_watch(context: Arc<ListenerContext>, stop: CancellationToken) {
    let Some(tls) = context.tls.clone() else { return };
    tokio::spawn(async move {
        // Files are read off the runtime's threads: a slow disk must not stall requests.
        let fingerprint = |tls: Arc<TlsTerminator>| tokio::task::spawn_blocking(move || tls.fingerprint());
        let Ok(mut seen) = fingerprint(tls.clone()).await else {
            return;
        };
        let mut tick = tokio::time::interval(tls.watch_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(now) = fingerprint(tls.clone()).await else {
                return;
            };
            // Tried once per change: a bad pair is reported once, not at every tick.
            if now != seen {
                seen = now;
                let context = context.clone();
                let _ = tokio::task::spawn_blocking(move || context.reload_tls()).await;
            }
        }
    });
}

/// Serves `listener` with `handler` until `shutdown`, then drains its connections for at most
/// `grace` and closes the rest.
pub async fn serve<H: Handler>(listener: Listener, handler: H, shutdown: CancellationToken, grace: Duration) {
    let Listener { tcp, context } = listener;
    let builder = Arc::new(http_builder(&context.limits));
    let slots = Arc::new(Semaphore::new(context.limits.max_connections));
    let connections = TaskTracker::new();
    let close = CancellationToken::new();
    loop {
        let (stream, client) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = %context.address, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        context.metrics.accepted.inc();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Closing at once tells the client to go elsewhere; leaving it in the backlog would not.
            context.metrics.closed(metrics::CloseReason::Limit);
            drop(stream);
            continue;
        };
        let serving = connection::Serving {
            context: context.clone(),
            builder: builder.clone(),
            handler: handler.clone(),
            drain: shutdown.clone(),
            close: close.clone(),
        };
        connections.spawn(connection::serve(stream, client, permit, serving));
    }
    drop(tcp);
    connections.close();
    let open = connections.len();
    tokio::select! {
        () = connections.wait() => tracing::info!(listener = %context.address, open, "listener drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!(listener = %context.address, ?grace, "grace period over; closing remaining connections");
            close.cancel();
            connections.wait().await;
        }
    }
}

/// HTTP/1.1 and HTTP/2 as `limits` bound them.
fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // The read buffer's ceiling: a head that does not fit is answered 431.
        .max_buf_size(limits.max_request_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_header_list_size(u32::try_from(limits.max_request_header_bytes).unwrap_or(u32::MAX));
    builder
}
