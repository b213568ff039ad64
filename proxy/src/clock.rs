//! The proxy's clocks: a monotonic one, as the `now` the engine takes (time since the process's first
//! reading), and the wall clock, for timestamps others read.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock's origin, and the wall clock's reading at that moment.
struct Origin {
    instant: Instant,
    unix: Duration,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

fn origin() -> &'static Origin {
    ORIGIN.get_or_init(|| Origin {
        instant: Instant::now(),
        unix: unix_now(),
    })
}

/// Monotonic time since the clock's origin.
pub fn now() -> Duration {
    origin().instant.elapsed()
}

/// The wall-clock time of the monotonic reading `at` ([`now`]): the wall clock at the origin plus
/// the monotonic time since. One clock read then serves as both; the times of one process's
/// telemetry rows are spaced exactly as the requests were, even when the wall clock is stepped.
pub fn unix_at(at: Duration) -> Duration {
    origin().unix + at
}

/// Wall-clock time since the Unix epoch (zero for a clock set before 1970).
pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Time since the monotonic reading `since`.
pub fn elapsed(since: Duration) -> Duration {
    now().saturating_sub(since)
}
