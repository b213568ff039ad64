//! HTTP/2 streams whose client has stopped reading them. On one connection, other streams can keep
//! bytes moving while the client keeps one stream's flow-control window shut, and that stream holds
//! its backend for as long as the client likes. The connection's watcher looks at each open stream
//! and cuts one that has waited on the client for the stream idle timeout: its backend body is
//! dropped at once (freeing the backend), and hyper resets the stream if it ever asks for more.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::progress::Progress;
use crate::message::body::{BoxError, ProxyBody};

/// The open streams of one HTTP/2 connection.
#[derive(Debug, Default)]
pub(super) struct OpenStreams {
    streams: Mutex<Vec<Weak<Stream>>>,
}

struct Stream {
    /// The response body; taken away when the stream is cut.
    body: Mutex<Option<ProxyBody>>,
    /// Frames handed to hyper.
    sent: Progress,
    /// Whether hyper holds the last frame and has not come back for the next: what the stream
    /// waits on is the client's window, not the backend.
    waiting_on_client: AtomicBool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("sent", &self.sent)
            .field("waiting_on_client", &self.waiting_on_client)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding either lock leaves nothing half-done to guard against.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl OpenStreams {
    /// Follows `body`, a response on this connection from `now_ms` on.
    pub(super) fn watch(&self, body: ProxyBody, now_ms: u64) -> ProxyBody {
        let stream = Arc::new(Stream {
            body: Mutex::new(Some(body)),
            sent: Progress::since(now_ms),
            waiting_on_client: AtomicBool::new(false),
        });
        let mut streams = lock(&self.streams);
        // Ended streams leave their entries behind; sweep them out before the list would grow, so
        // it stays within twice the streams open at once.
        if streams.len() == streams.capacity() {
            streams.retain(|s| s.strong_count() > 0);
        }
        streams.push(Arc::downgrade(&stream));
        WatchedBody(stream).boxed()
    }

    /// Cuts the streams that have waited on the client for `stalled`, looking at `now_ms`; how many.
    pub(super) fn cut_stalled(&self, now_ms: u64, stalled: Duration) -> u64 {
        let stalled = u64::try_from(stalled.as_millis()).unwrap_or(u64::MAX);
        let mut cut = Vec::new();
        lock(&self.streams).retain(|weak| {
            let Some(stream) = weak.upgrade() else {
                return false;
            };
            let since = stream.sent.last_changed(now_ms);
            let waiting = stream.waiting_on_client.load(Ordering::Relaxed);
            if waiting && now_ms >= since.saturating_add(stalled) {
                cut.push(stream);
                return false;
            }
            true
        });
        // Dropping a body finishes its accounting: outside the list's lock.
        for stream in &cut {
            let body = lock(&stream.body).take();
            drop(body);
        }
        cut.len() as u64
    }
}

/// The client did not take the stream's next bytes for the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("the client read nothing of this stream for the stream idle timeout")]
pub struct StreamStalled;

/// A response body on an HTTP/2 connection, which the connection's watcher can cut.
struct WatchedBody(Arc<Stream>);

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let stream = &self.0;
        stream.waiting_on_client.store(false, Ordering::Relaxed);
        let mut body = lock(&stream.body);
        let Some(body) = body.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(StreamStalled))));
        };
        let polled = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            stream.sent.bump();
            stream.waiting_on_client.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        // A cut stream has not ended: hyper must ask, and be told it failed.
        lock(&self.0.body).as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.0.body)
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use http_body_util::{Full, StreamBody};

    use super::*;

    fn one_frame() -> ProxyBody {
        Full::new(Bytes::from_static(b"x"))
            .map_err(|e| match e {})
            .boxed()
    }

    fn never_ready() -> ProxyBody {
        StreamBody::new(futures_util::stream::pending::<Result<Frame<Bytes>, BoxError>>()).boxed()
    }

    #[test]
    fn a_stream_waiting_on_its_client_is_cut_and_one_waiting_on_its_backend_is_not() {
        let open = OpenStreams::default();
        let stalled = Duration::from_millis(500);
        let mut cx = Context::from_waker(Waker::noop());
        let mut to_client = open.watch(one_frame(), 0);
        let mut to_backend = open.watch(never_ready(), 0);
        assert!(matches!(
            Pin::new(&mut to_client).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(Pin::new(&mut to_backend).poll_frame(&mut cx).is_pending());

        assert_eq!(open.cut_stalled(100, stalled), 0, "this look sees the frame go");
        assert_eq!(open.cut_stalled(599, stalled), 0);
        assert_eq!(
            open.cut_stalled(600, stalled),
            1,
            "500 ms after the look that saw it"
        );
        assert!(!to_client.is_end_stream(), "a cut stream has not ended");
        let Poll::Ready(Some(Err(error))) = Pin::new(&mut to_client).poll_frame(&mut cx) else {
            panic!("a cut stream fails when polled");
        };
        assert!(error.is::<StreamStalled>(), "{error}");
        assert_eq!(
            open.cut_stalled(60_000, stalled),
            0,
            "waiting on the backend is not the client's stall"
        );
    }

    #[test]
    fn ended_streams_do_not_pile_up() {
        let open = OpenStreams::default();
        let live: Vec<_> = (0..100).map(|i| open.watch(one_frame(), i)).collect();
        for i in 0..10_000 {
            drop(open.watch(one_frame(), i));
        }
        let entries = lock(&open.streams).len();
        assert!(
            entries <= 2 * live.len() + 4,
            "{entries} entries for {} open streams",
            live.len()
        );
    }
}
