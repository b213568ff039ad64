//! The request path's handle on telemetry: hand a row over without ever waiting.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use augur_engine::telemetry::TelemetryRow;

use crate::stats::TelemetryStats;

/// What the writer thread receives.
pub enum Message {
    /// A finished row. Boxed: the queue preallocates every slot, and a row is about 400 bytes, so
    /// unboxed a 64K-row queue would pin 27 MB whether busy or idle.
    Row(Box<TelemetryRow>),
    /// Write out everything and stop.
    Close,
}

/// Hands rows to the writer over a bounded queue; a full queue drops the row and counts it.
#[derive(Clone)]
pub struct TelemetrySink {
    tx: SyncSender<Message>,
    stats: Arc<TelemetryStats>,
}

impl TelemetrySink {
    /// A sink and the receiving end of its queue of `capacity` rows. The writer uses this; so can a
    /// test that wants a writer which never keeps up.
    pub fn channel(capacity: usize, stats: Arc<TelemetryStats>) -> (Self, Receiver<Message>) {
        let (tx, rx) = sync_channel(capacity);
        (Self { tx, stats }, rx)
    }

    /// Queues `row` for writing; never blocks.
    pub fn record(&self, row: TelemetryRow) {
        match self.tx.try_send(Message::Row(Box::new(row))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.rows_dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Queues `row`, waiting for room: for offline producers (the simulator), which must lose nothing
    /// and may wait. Never call this on a request path. Returns false when the writer has stopped.
    pub fn record_waiting(&self, row: TelemetryRow) -> bool {
        self.tx.send(Message::Row(Box::new(row))).is_ok()
    }

    /// The writer's counters.
    pub fn stats(&self) -> &Arc<TelemetryStats> {
        &self.stats
    }

    pub(crate) fn sender(&self) -> SyncSender<Message> {
        self.tx.clone()
    }
}
