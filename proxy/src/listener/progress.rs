//! A count bumped on the hot path without reading the clock, and when a watcher that looks at it
//! now and then last saw it change.

use std::sync::atomic::{AtomicU64, Ordering};

/// A count bumped on the hot path, and when (in milliseconds since accept) a look last found it
/// changed.
#[derive(Debug, Default)]
pub(super) struct Progress {
    count: AtomicU64,
    looked: AtomicU64,
    changed_ms: AtomicU64,
}

impl Progress {
    /// A count that starts at `now_ms` (the default starts at the accept).
    pub(super) fn since(now_ms: u64) -> Self {
        Self {
            changed_ms: AtomicU64::new(now_ms),
            ..Self::default()
        }
    }

    pub(super) fn bump(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// When the count was last seen to change, looking at `now_ms`: no earlier than the change
    /// itself, and no later than the first look after it.
    pub(super) fn last_changed(&self, now_ms: u64) -> u64 {
        let count = self.count.load(Ordering::Relaxed);
        if self.looked.swap(count, Ordering::Relaxed) != count {
            self.changed_ms.store(now_ms, Ordering::Relaxed);
        }
        self.changed_ms.load(Ordering::Relaxed)
    }
}
