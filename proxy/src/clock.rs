//! The proxy's monotonic clock, as the `now` the engine takes: time since the process's first reading.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Monotonic time since the clock's origin.
pub fn now() -> Duration {
    ORIGIN.get_or_init(Instant::now).elapsed()
}
