//! A CPU service node: a fair queue before `workers` permits, then the model's service time.

use std::sync::Mutex;
use std::time::Duration;

use hyper::{Request, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;

use super::{full, Schedule, SimBody};
use crate::behaviour::CpuBehaviour;

/// One simulated CPU service.
pub struct CpuNode {
    behaviour: CpuBehaviour,
    schedule: Schedule,
    workers: Semaphore,
    rng: Mutex<SmallRng>,
}

impl CpuNode {
    pub(crate) fn new(behaviour: CpuBehaviour, schedule: Schedule, seed: u64) -> Self {
        Self {
            workers: Semaphore::new(behaviour.workers as usize),
            behaviour,
            schedule,
            rng: Mutex::new(SmallRng::seed_from_u64(seed)),
        }
    }

    pub(crate) async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<SimBody> {
        if request.uri().path() == "/healthz" {
            return full(200, "text/plain", "ok\n");
        }
        let now = self.schedule.now();
        let (fail, service) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            (
                rng.random::<f64>() < self.schedule.faults.error_rate(now),
                self.behaviour.service.sample(&mut *rng),
            )
        };
        if fail {
            return full(503, "text/plain", "error burst\n");
        }
        // Tokio's semaphore is fair: waiters are served in arrival order, a FIFO queue.
        let Ok(_worker) = self.workers.acquire().await else {
            return full(503, "text/plain", "closed\n");
        };
        let started = self.schedule.now();
        if let Some(end) = self.schedule.faults.hung_until(started) {
            tokio::time::sleep(end.saturating_sub(started)).await;
        }
        let slowdown = self.schedule.faults.slowdown(self.schedule.now());
        tokio::time::sleep(Duration::from_secs_f64(service * slowdown)).await;
        full(200, "text/plain", "ok\n")
    }
}
