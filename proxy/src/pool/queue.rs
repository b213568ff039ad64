//! A pool's queue (`queue`): a request that no backend is predicted to serve within its
//! time-to-first-token objective waits here, up to a deadline, for one that is, rather than in a
//! server's own queue, where it is committed to that server however the others free up (the
//! inference extension's flow control does the same in front of its pick). Each request that
//! finishes at a backend, or gets its first token, wakes the longest waiting one to pick again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::QueueConfig;

/// The requests of one pool waiting for a backend predicted to meet their objective.
pub struct WaitQueue {
    config: QueueConfig,
    waiting: AtomicUsize,
    freed: Arc<Notify>,
}

impl WaitQueue {
    /// An empty queue with `config`'s bounds.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            waiting: AtomicUsize::new(0),
            freed: Arc::new(Notify::new()),
        }
    }

    /// What a request in flight signals when it frees room at its backend.
    pub fn freed(&self) -> &Arc<Notify> {
        &self.freed
    }

    /// A place in the queue from now until the queue's `max_wait` has passed, or `None` when
    /// `max` requests already wait.
    pub fn enter(&self) -> Option<Waiting<'_>> {
        let max = self.config.max;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        let entered = Instant::now();
        Some(Waiting {
            queue: self,
            entered,
            deadline: entered + self.config.max_wait,
        })
    }

    /// Requests waiting now.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// A request's place in a [`WaitQueue`], given up when dropped.
pub struct Waiting<'a> {
    queue: &'a WaitQueue,
    entered: Instant,
    deadline: Instant,
}

impl Waiting<'_> {
    /// How long it has waited so far.
    pub fn waited(&self) -> Duration {
        self.entered.elapsed()
    }

    /// Waits until a backend frees room (true: pick again) or the deadline passes (false).
    pub async fn until_freed(&self) -> bool {
        tokio::time::timeout_at(self.deadline, self.queue.freed.notified())
            .await
            .is_ok()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(max: usize) -> WaitQueue {
        WaitQueue::new(QueueConfig {
            max,
            max_wait: Duration::from_millis(300),
        })
    }

    #[test]
    fn a_full_queue_takes_no_one_and_a_place_is_given_back_when_dropped() {
        let queue = queue(2);
        let (a, b) = (queue.enter().unwrap(), queue.enter().unwrap());
        assert!(queue.enter().is_none(), "two wait already");
        drop(a);
        assert_eq!(queue.waiting(), 1);
        let _c = queue.enter().expect("a place came free");
        drop(b);
        assert_eq!(queue.waiting(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_is_woken_by_freed_room_and_otherwise_leaves_at_its_deadline() {
        let queue = queue(4);
        let waiting = queue.enter().unwrap();
        assert!(!waiting.until_freed().await, "nothing freed room");
        assert_eq!(waiting.waited(), Duration::from_millis(300));
        let waiting = queue.enter().unwrap();
        let freed = queue.freed().clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            freed.notify_one();
        });
        let started = Instant::now();
        assert!(waiting.until_freed().await);
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }
}
