//! What one client connection is doing: requests in flight, whether bytes are moving, and so which
//! of the listener's limits comes due next.
//!
//! The request path only counts (an atomic add per socket read or write, per request begun or
//! ended); it never reads the clock. The connection's watcher, which wakes a few times per timeout,
//! notes when it saw each count change, so a timeout measured this way fires late by at most
//! `1 / LOOKS_PER_TIMEOUT` of itself, and never early.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Duration, Instant};

use super::progress::Progress;
use super::streams::OpenStreams;
use crate::config::ConnectionLimits;
use crate::message::body::{BodyObserver, ProxyBody};

/// How often, per timeout, a watcher looks at the counts while that timeout runs.
pub const LOOKS_PER_TIMEOUT: u32 = 4;

/// One connection's activity.
#[derive(Debug)]
pub struct Activity {
    accepted: Instant,
    requests: AtomicU64,
    in_flight: AtomicU32,
    /// Requests that have ended.
    ended: Progress,
    /// Socket reads and writes that moved bytes.
    io: Progress,
    /// On HTTP/2, the responses being sent (none on HTTP/1, where the socket's progress is the
    /// one stream's).
    streams: OpenStreams,
    /// Told when the first request arrives, so the watcher stops waiting for the header deadline.
    first_request: Notify,
}

/// What the connection's limits say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing is due before this instant: look again then.
    Wait(Instant),
    /// No first request head within the header read timeout (from accept).
    HeaderTimeout,
    /// No request in flight for the idle timeout.
    Idle,
    /// Requests in flight, but no byte moved for the stream idle timeout.
    Stalled,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            accepted: Instant::now(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            ended: Progress::default(),
            io: Progress::default(),
            streams: OpenStreams::default(),
            first_request: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        millis(self.accepted.elapsed())
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    /// A request arrived; it counts in flight until the returned guard is dropped (with its
    /// response body).
    pub fn begin(self: &Arc<Self>) -> RequestActivity {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        // A new request is progress, whatever the socket counts say (a stream's head may have come
        // in the same read as an earlier one's).
        self.io.bump();
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

    /// Follows `body`, the response to an HTTP/2 request on this connection, so that the watcher
    /// can cut it if the client stops reading it while the connection's other streams go on.
    pub fn watch_stream(&self, body: ProxyBody) -> ProxyBody {
        self.streams.watch(body, self.now_ms())
    }

    /// Cuts the HTTP/2 streams whose client has taken nothing for the stream idle timeout; how
    /// many. Only the connection's watcher calls it.
    pub fn cut_stalled_streams(&self, limits: &ConnectionLimits) -> u64 {
        self.streams
            .cut_stalled(self.now_ms(), limits.stream_idle_timeout)
    }

    /// Whether no byte has moved for `idle`, looking now; otherwise when to look again. For a
    /// watcher that has no requests to follow (a tunnel), the only one that looks.
    pub fn quiet_for(&self, idle: Duration) -> Result<(), Instant> {
        let now = self.now_ms();
        let due = self.io.last_changed(now).saturating_add(millis(idle));
        if now >= due {
            return Ok(());
        }
        Err(self.at(due.min(now.saturating_add(millis(idle / LOOKS_PER_TIMEOUT)))))
    }

    /// Which limit, if any, the connection has run into. Only the connection's watcher calls it.
    pub fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let now = self.now_ms();
        let (due, verdict, step) = if self.requests.load(Ordering::Relaxed) == 0 {
            let due = millis(limits.header_read_timeout);
            (due, Verdict::HeaderTimeout, due)
        } else if self.in_flight.load(Ordering::Relaxed) == 0 {
            let idle = millis(limits.idle_timeout);
            let step = idle / u64::from(LOOKS_PER_TIMEOUT);
            (
                self.ended.last_changed(now).saturating_add(idle),
                Verdict::Idle,
                step,
            )
        } else {
            // Nothing wakes the watcher when the last request in flight ends, so while requests
            // are in flight it looks often enough for the idle timeout to stay in bounds too.
            let stalled = millis(limits.stream_idle_timeout);
            let step = stalled.min(millis(limits.idle_timeout)) / u64::from(LOOKS_PER_TIMEOUT);
            (
                self.io.last_changed(now).saturating_add(stalled),
                Verdict::Stalled,
                step,
            )
        };
        if now >= due {
            return verdict;
        }
        Verdict::Wait(self.at(due.min(now.saturating_add(step.max(1)))))
    }
}

/// One request in flight on a connection; dropping it ends the request there.
#[derive(Debug)]
pub struct RequestActivity(Arc<Activity>);

impl Drop for RequestActivity {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.ended.bump();
    }
}

/// Kept alive by a response body that carries no other accounting.
impl BodyObserver for RequestActivity {}

pin_project! {
    /// A socket that counts in its connection's [`Activity`] each read or write that moves bytes.
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

fn count_write(activity: &Activity, poll: &Poll<io::Result<usize>>) {
    if matches!(poll, Poll::Ready(Ok(n)) if *n > 0) {
        activity.io.bump();
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.io.bump();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        count_write(this.activity, &polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write_vectored(cx, bufs);
        count_write(this.activity, &polled);
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

    /// Looks as the watcher does, at each instant the last verdict named, until one is not a wait.
    async fn follow(activity: &Activity) -> Verdict {
        loop {
            match activity.verdict(&limits()) {
                Verdict::Wait(until) => tokio::time::sleep_until(until).await,
                verdict => return verdict,
            }
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
        assert_eq!(follow(&activity).await, Verdict::HeaderTimeout);
        assert_eq!(
            accepted.elapsed(),
            Duration::from_secs(10),
            "the header deadline is exact"
        );

        let request = activity.begin();
        let began = Instant::now();
        assert_eq!(
            activity.verdict(&limits()),
            Verdict::Wait(began + Duration::from_secs(15)),
            "in flight, the watcher looks each quarter of the shorter timeout"
        );
        assert_eq!(follow(&activity).await, Verdict::Stalled, "no byte moved");
        assert_eq!(began.elapsed(), Duration::from_secs(300));

        drop(request);
        let ended = Instant::now();
        assert_eq!(follow(&activity).await, Verdict::Idle);
        let idle = ended.elapsed();
        assert!(
            idle >= Duration::from_secs(60) && idle <= Duration::from_secs(75),
            "idle {idle:?} after the last request: within a quarter of the timeout late"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_moving_keep_a_request_alive_and_a_stall_is_seen_within_bounds() {
        let activity = Activity::new();
        let _request = activity.begin();
        // Bytes move every 100 s for 20 minutes: never a stall.
        for _ in 0..12 {
            tokio::time::advance(Duration::from_secs(100)).await;
            activity.io.bump();
            assert!(matches!(activity.verdict(&limits()), Verdict::Wait(_)));
        }
        let last_byte = Instant::now();
        assert_eq!(follow(&activity).await, Verdict::Stalled);
        let stalled = last_byte.elapsed();
        assert!(
            stalled >= Duration::from_secs(300) && stalled <= Duration::from_secs(315),
            "stalled {stalled:?} after the last byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tunnel_is_seen_within_a_quarter_of_its_timeout() {
        let activity = Activity::new();
        let idle = Duration::from_secs(40);
        tokio::time::advance(Duration::from_secs(25)).await;
        activity.io.bump();
        let last_byte = Instant::now();
        while let Err(until) = activity.quiet_for(idle) {
            tokio::time::sleep_until(until).await;
        }
        let quiet = last_byte.elapsed();
        assert!(
            quiet >= idle && quiet <= idle + idle / 4,
            "closed {quiet:?} after the last byte"
        );
    }
}
