//! Body wrappers: an idle timeout on streamed bodies, and guards that live exactly as long as a body.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// Boxed error of any body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the proxy sends, both ways.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body stream that stalled for longer than the idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("body idle for more than {0:?}")]
pub struct IdleTimeoutError(pub Duration);

pin_project! {
    /// Fails a body that yields no frame for `idle`; the timer restarts with every frame.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        timer: Sleep,
        idle: Duration,
    }
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            timer: tokio::time::sleep(idle),
            idle,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            this.timer.as_mut().reset(Instant::now() + *this.idle);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        ready!(this.timer.poll(cx));
        Poll::Ready(Some(Err(Box::new(IdleTimeoutError(*this.idle)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body longer than the listener allows.
#[derive(Debug, thiserror::Error)]
#[error("the request body is longer than {0} bytes")]
pub struct BodyTooLarge(pub u64);

pin_project! {
    /// Fails a body once more than `limit` bytes of it have passed, and counts that in `refused`.
    pub struct Capped<B> {
        #[pin]
        inner: B,
        left: u64,
        limit: u64,
        refused: prometheus::IntCounter,
    }
}

impl<B> Capped<B> {
    /// Wraps `inner`, allowing it `limit` bytes.
    pub fn new(inner: B, limit: u64, refused: prometheus::IntCounter) -> Self {
        Self {
            inner,
            left: limit,
            limit,
            refused,
        }
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let len = data.map_or(0, |d| d.len() as u64);
            match this.left.checked_sub(len) {
                Some(left) => *this.left = left,
                None => {
                    this.refused.inc();
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge(*this.limit)))));
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Told about a body's frames as they pass, and dropped with the body: the place to count bytes and
/// to finish accounting (in-flight counts, latency, telemetry) when the body ends, fails or is dropped.
pub trait BodyObserver {
    /// A data frame passed.
    fn data(&mut self, _data: &[u8]) {}
    /// The body failed.
    fn failed(&mut self, _error: &BoxError) {}
    /// The body's last frame passed: it arrived whole.
    fn ended(&mut self) {}
}

pin_project! {
    /// A body that keeps `guard` alive until the body is finished or dropped, so in-flight counts and
    /// latency include the whole streamed body, not only the response head.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: G,
    }
}

impl<B, G> Guarded<B, G> {
    /// Ties `guard` to `inner`.
    pub fn new(inner: B, guard: G) -> Self {
        Self { inner, guard }
    }
}

impl<B, G> Body for Guarded<B, G>
where
    B: Body<Data = Bytes, Error = BoxError>,
    G: BodyObserver,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.guard.data(data);
                }
                // hyper stops polling a body that says it has ended, so this may be the last poll.
                if this.inner.is_end_stream() {
                    this.guard.ended();
                }
            }
            Poll::Ready(Some(Err(error))) => this.guard.failed(error),
            Poll::Ready(None) => this.guard.ended(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A body that yields a frame every `gap`, `frames` times, then ends.
    struct Trickle {
        gap: Duration,
        frames: u32,
        timer: Pin<Box<Sleep>>,
    }

    impl Trickle {
        fn new(gap: Duration, frames: u32) -> Self {
            Self {
                gap,
                frames,
                timer: Box::pin(tokio::time::sleep(gap)),
            }
        }
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.frames == 0 {
                return Poll::Ready(None);
            }
            ready!(self.timer.as_mut().poll(cx));
            self.frames -= 1;
            let next = Instant::now() + self.gap;
            self.timer.as_mut().reset(next);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_coming_never_idles_out() {
        let body = IdleTimeout::new(Trickle::new(Duration::from_secs(20), 5), Duration::from_secs(30));
        let collected = body.collect().await.expect("no gap reaches the idle timeout");
        assert_eq!(collected.to_bytes().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_once_the_idle_time_has_passed() {
        let started = Instant::now();
        let mut body = Box::pin(IdleTimeout::new(
            Trickle::new(Duration::from_secs(40), 1),
            Duration::from_secs(30),
        ));
        let error = body.frame().await.expect("a frame or an error").unwrap_err();
        assert!(error.is::<IdleTimeoutError>(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
