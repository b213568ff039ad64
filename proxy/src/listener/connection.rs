//! One client connection from accept to close: the TLS handshake, HTTP/1.1 or HTTP/2 on top, and the
//! listener's limits (header read, idle, stalled streams) watched by one timer per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use http::{Request, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::activity::{Activity, Tracked, Verdict};
use super::metrics::{CloseReason, ListenerHandles};
use super::tls::TlsTerminator;
use super::{Downstream, Handler, ListenerContext};
use crate::message::body::BoxError;

/// What a connection's task needs besides its socket.
pub(super) struct Serving<H> {
    pub context: Arc<ListenerContext>,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    pub handler: H,
    /// Cancelled when the listener drains: finish what is in flight, take nothing new.
    pub drain: CancellationToken,
    /// Cancelled when the grace period is over: close now.
    pub close: CancellationToken,
}

/// Counts the connection open while it lives; its permit is the listener's connection limit.
struct Open {
    metrics: ListenerHandles,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.open.dec();
    }
}

/// Serves one accepted connection until it ends, a limit closes it, or the listener does.
pub(super) async fn serve<H: Handler>(
    stream: TcpStream,
    client: SocketAddr,
    permit: OwnedSemaphorePermit,
    serving: Serving<H>,
) {
    let metrics = &serving.context.metrics;
    metrics.open.inc();
    let _open = Open {
        metrics: metrics.clone(),
        _permit: permit,
    };
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let stream = Tracked::new(stream, activity.clone());
    let ending = match serving.context.tls.clone() {
        None => run(stream, client, &activity, &serving).await,
        // Boxed: a TLS connection's state is twice a plain one's, and every connection's task
        // would otherwise be that large, idle or not.
        Some(tls) => Box::pin(serve_tls(&tls, stream, client, &activity, &serving)).await,
    };
    match ending {
        Ending::Done => {}
        Ending::Closed(reason) => metrics.closed(reason),
        Ending::Failed(e) => {
            match e.downcast_ref::<hyper::Error>() {
                // hyper answered 431 and closed.
                Some(e) if e.is_parse_too_large() => metrics.header_too_large.inc(),
                // A later request head (or the wait for it, on HTTP/1 keep-alive) took too long.
                Some(e) if e.is_timeout() => metrics.closed(CloseReason::HeaderTimeout),
                _ => {}
            }
            tracing::debug!(%client, error = %e, "client connection ended with an error");
        }
    }
}

/// Completes the TLS handshake on `stream`, then serves the connection as [`run`] does.
async fn serve_tls<H: Handler>(
    tls: &TlsTerminator,
    stream: Tracked<TcpStream>,
    client: SocketAddr,
    activity: &Arc<Activity>,
    serving: &Serving<H>,
) -> Ending {
    // The handshake counts against the time to the first request head.
    let deadline = Instant::now() + serving.context.limits.header_read_timeout;
    let handshake = tokio::time::timeout_at(deadline, tls.acceptor().accept(stream));
    let accepted = tokio::select! {
        accepted = handshake => accepted,
        () = serving.close.cancelled() => return Ending::Closed(CloseReason::Shutdown),
    };
    match accepted {
        Err(_elapsed) => Ending::Closed(CloseReason::HeaderTimeout),
        Ok(Err(e)) => {
            tracing::debug!(%client, error = %e, "TLS handshake failed");
            Ending::Closed(CloseReason::TlsHandshake)
        }
        Ok(Ok(stream)) => run(stream, client, activity, serving).await,
    }
}

/// How a connection ended.
enum Ending {
    /// The client closed it, or it finished a graceful shutdown.
    Done,
    /// The proxy closed it.
    Closed(CloseReason),
    /// It broke (or hyper answered a malformed request and closed it).
    Failed(BoxError),
}

/// Speaks HTTP on `io` until the connection ends, closing it when a limit comes due.
async fn run<I, H>(io: I, client: SocketAddr, activity: &Arc<Activity>, serving: &Serving<H>) -> Ending
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
{
    let service = {
        let (activity, context, handler) =
            (activity.clone(), serving.context.clone(), serving.handler.clone());
        service_fn(move |request: Request<Incoming>| {
            let downstream = Downstream {
                client,
                listener: context.clone(),
                activity: activity.begin(),
            };
            let (handler, activity) = (handler.clone(), activity.clone());
            let h2 = request.version() == Version::HTTP_2;
            async move {
                // Boxed: the handler's future is kilobytes, and hyper moves the future it is given
                // (into its h1 slot, or into a task per h2 stream, and out again when it ends).
                let response = Box::pin(handler.handle(request, downstream)).await;
                Ok::<_, Infallible>(response.map(|body| if h2 { activity.watch_stream(body) } else { body }))
            }
        })
    };
    let connection = serving
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    watch(connection, activity, serving).await
}

/// Drives `connection`, waking only when one of its limits may have come due.
async fn watch<C, H>(connection: C, activity: &Activity, serving: &Serving<H>) -> Ending
where
    C: GracefulConnection<Error = BoxError>,
{
    let limits = &serving.context.limits;
    let mut connection = pin!(connection);
    let mut timer = pin!(tokio::time::sleep_until(Instant::now()));
    // Whether the connection was asked to wind down (GOAWAY on HTTP/2, no keep-alive on HTTP/1).
    let mut winding_down = false;
    // Set when it went idle: a client that has not closed by then is closed.
    let mut idle_close_at = None;
    loop {
        let cut = activity.cut_stalled_streams(limits);
        if cut > 0 {
            serving.context.metrics.streams_stalled.inc_by(cut);
        }
        let awaiting_first = !activity.has_requests();
        match idle_close_at {
            Some(at) => timer.as_mut().reset(at),
            None => match activity.verdict(limits) {
                Verdict::Wait(until) => timer.as_mut().reset(until),
                Verdict::HeaderTimeout => return Ending::Closed(CloseReason::HeaderTimeout),
                Verdict::Stalled => return Ending::Closed(CloseReason::StreamIdle),
                Verdict::Idle => {
                    if !std::mem::replace(&mut winding_down, true) {
                        connection.as_mut().graceful_shutdown();
                    }
                    let at = Instant::now() + limits.header_read_timeout;
                    idle_close_at = Some(at);
                    timer.as_mut().reset(at);
                }
            },
        }
        tokio::select! {
            ended = connection.as_mut() => return match ended {
                Ok(()) if idle_close_at.is_some() => Ending::Closed(CloseReason::Idle),
                Ok(()) => Ending::Done,
                Err(e) => Ending::Failed(e),
            },
            () = serving.close.cancelled() => return Ending::Closed(CloseReason::Shutdown),
            () = serving.drain.cancelled(), if !winding_down => {
                winding_down = true;
                connection.as_mut().graceful_shutdown();
            }
            () = timer.as_mut() => {
                if idle_close_at.is_some_and(|at| Instant::now() >= at) {
                    return Ending::Closed(CloseReason::Idle);
                }
            }
            // The header deadline no longer applies: look at the limits again. (Later requests
            // starting and ending wake nothing; the watcher looks again a few times per timeout.)
            () = activity.first_request(), if awaiting_first => {}
        }
    }
}
