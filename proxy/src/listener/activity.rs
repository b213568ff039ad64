//! What one client connection is doing: requests in flight, when bytes last moved, and so which of
//! the listener's limits comes due next.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use crate::config::ConnectionLimits;
use crate::message::body::BodyObserver;

/// One connection's activity, in milliseconds since it was accepted.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// When the last request started or ended.
    last_request: AtomicU64,
    /// When a byte was last read from or written to the socket.
    last_io: AtomicU64,
    /// Told when the first request arrives, so the watcher stops waiting for the header deadline.
    first_request: Notify,
}

/// What the connection's limits say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing is due before this instant.
    Wait(Instant),
    /// No first request head within the header read timeout (from accept).
    HeaderTimeout,
    /// No request in flight for the idle timeout.
    Idle,
    /// Requests in flight, but no byte moved for the stream idle timeout.
    Stalled,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            last_request: AtomicU64::new(0),
            last_io: AtomicU64::new(0),
            first_request: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    /// A request arrived; it counts in flight until the returned guard is dropped (with its
    /// response body).
    pub fn begin(self: &Arc<Self>) -> RequestActivity {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_request.store(self.now_ms(), Ordering::Relaxed);
        if self.requests.fetch_add(1, Ordering::Relaxed) == 0 {
            self.first_request.notify_one();
        }
        RequestActivity(self.clone())
    }

    /// Whether a request has arrived yet.
    pub fn has_requests(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Resolves once the first request has arrived (at once if it has).
    pub async fn first_request(&self) {
        if self.requests.load(Ordering::Relaxed) == 0 {
            self.first_request.notified().await;
        }
    }

    /// When a byte last moved (the accept, if none has).
    pub fn last_moved(&self) -> Instant {
        self.at(self.last_io.load(Ordering::Relaxed))
    }

    /// Which limit, if any, the connection has run into.
    pub fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (due, verdict) = if self.requests.load(Ordering::Relaxed) == 0 {
            (ms(limits.header_read_timeout), Verdict::HeaderTimeout)
        } else if self.in_flight.load(Ordering::Relaxed) == 0 {
            let since = self.last_request.load(Ordering::Relaxed);
            (since.saturating_add(ms(limits.idle_timeout)), Verdict::Idle)
        } else {
            let since = self
                .last_io
                .load(Ordering::Relaxed)
                .max(self.last_request.load(Ordering::Relaxed));
            (
                since.saturating_add(ms(limits.stream_idle_timeout)),
                Verdict::Stalled,
            )
        };
        let now = self.now_ms();
        if now >= due {
            return verdict;
        }
        // Nothing wakes the watcher when the last request in flight ends, so while requests are in
        // flight it looks again each idle timeout: an idle connection closes between one and two
        // idle timeouts after its last request.
        let look_again = match verdict {
            Verdict::Stalled => due.min(now.saturating_add(ms(limits.idle_timeout))),
            _ => due,
        };
        Verdict::Wait(self.at(look_again))
    }
}

/// One request in flight on a connection; dropping it ends the request there.
#[derive(Debug)]
pub struct RequestActivity(Arc<Activity>);

impl Drop for RequestActivity {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.last_request.store(self.0.now_ms(), Ordering::Relaxed);
    }
}

/// Kept alive by a response body that carries no other accounting.
impl BodyObserver for RequestActivity {}

pin_project! {
    /// A socket that notes in its connection's [`Activity`] each time bytes move.
    pub struct Tracked<I> {
        #[pin]
        inner: I,
        activity: Arc<Activity>,
    }
}

impl<I> Tracked<I> {
    /// Wraps `inner`, reporting to `activity`.
    pub fn new(inner: I, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

fn moved(activity: &Activity, poll: &Poll<io::Result<usize>>) {
    if matches!(poll, Poll::Ready(Ok(n)) if *n > 0) {
        activity.last_io.store(activity.now_ms(), Ordering::Relaxed);
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity
                .last_io
                .store(this.activity.now_ms(), Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        moved(this.activity, &polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        moved(this.activity, &polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stream_idle_timeout: Duration::from_secs(300),
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_of_a_connection_answers_to_its_own_limit() {
        let activity = Activity::new();
        let accepted = Instant::now();
        assert_eq!(
            activity.verdict(&limits()),
            Verdict::Wait(accepted + Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(activity.verdict(&limits()), Verdict::HeaderTimeout);

        let request = activity.begin();
        assert_eq!(
            activity.verdict(&limits()),
            Verdict::Wait(Instant::now() + Duration::from_secs(60)),
            "in flight, the watcher looks again each idle timeout"
        );
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(matches!(activity.verdict(&limits()), Verdict::Wait(_)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            activity.verdict(&limits()),
            Verdict::Stalled,
            "no byte moved in 300 s"
        );

        drop(request);
        let ended = Instant::now();
        assert_eq!(
            activity.verdict(&limits()),
            Verdict::Wait(ended + Duration::from_secs(60)),
            "idle counts from the end of the last request"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(activity.verdict(&limits()), Verdict::Idle);
    }
}
