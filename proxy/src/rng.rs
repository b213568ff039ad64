//! One small, fast rng per worker thread: picks, jitter and request ids never contend on a shared one.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::SeedableRng;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// Runs `f` with this thread's rng.
pub fn with_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with(|rng| f(&mut rng.borrow_mut()))
}
