//! The proxy's clocks: a monotonic one, as the `now` the engine takes (time since the process's first
//! reading), and the wall clock, for timestamps others read.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Monotonic time since the clock's origin.
pub fn now() -> Duration {
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// Wall-clock time since the Unix epoch (zero for a clock set before 1970).
pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}
