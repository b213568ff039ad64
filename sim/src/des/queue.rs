//! The pool's queue as the proxy keeps it (`[pools.NAME] queue`): a request that no backend is
//! predicted to serve within its objective waits, up to a deadline, for one that is. Each first
//! token or end at a backend wakes the longest waiting request to pick again; one still late goes
//! to the back, as the proxy's waiter does when it waits again. A full queue, or a wait run out,
//! sends the request to the best backend as things stand.

use augur_engine::shedding::{QueueConfig, QueueOutcome};

use super::{Dispatched, Kind, Simulation};

impl Simulation<'_> {
    fn queue(&self) -> Option<QueueConfig> {
        self.scenario.slo.and_then(|slo| slo.queue)
    }

    /// Sends the request's next attempt, or holds it in the pool's queue when the pool has one and
    /// no backend is predicted to serve it in time.
    pub(super) fn admit(&mut self, id: u32, now_ns: u64) {
        self.requests[id as usize].queue_wait_ns = None;
        let Some(queue) = self.queue() else {
            self.dispatch(id, now_ns, false);
            return;
        };
        if self.dispatch(id, now_ns, true) != Dispatched::Late {
            return;
        }
        if self.held.len() >= queue.max {
            self.tally.record_held(QueueOutcome::Full);
            self.dispatch(id, now_ns, false);
            return;
        }
        self.requests[id as usize].held_since_ns = Some(now_ns);
        self.held.push_back(id);
        self.schedule(now_ns + queue.max_wait.as_nanos() as u64, Kind::QueueDeadline, id);
    }

    /// A backend freed room: the longest waiting request picks again.
    pub(super) fn wake_held(&mut self, now_ns: u64) {
        let Some(id) = self.held.pop_front() else {
            return;
        };
        self.record_wait(id, now_ns);
        if self.dispatch(id, now_ns, true) == Dispatched::Late {
            self.requests[id as usize].queue_wait_ns = None;
            self.held.push_back(id);
        } else {
            self.requests[id as usize].held_since_ns = None;
            self.tally.record_held(QueueOutcome::Placed);
        }
    }

    /// The wait of a request held at `since` + `max_wait` has run out: it goes as things stand. (A
    /// deadline of an earlier wait, which it has left, is ignored.)
    pub(super) fn queue_deadline(&mut self, id: u32, now_ns: u64) {
        let max_wait = self.queue().map_or(0, |q| q.max_wait.as_nanos() as u64);
        let deadline = self.requests[id as usize]
            .held_since_ns
            .map(|since| since + max_wait);
        if deadline != Some(now_ns) {
            return;
        }
        if let Some(position) = self.held.iter().position(|&held| held == id) {
            self.held.remove(position);
        }
        self.record_wait(id, now_ns);
        self.requests[id as usize].held_since_ns = None;
        self.tally.record_held(QueueOutcome::Expired);
        self.dispatch(id, now_ns, false);
    }

    /// The wait so far, for the row of the attempt about to be dispatched.
    fn record_wait(&mut self, id: u32, now_ns: u64) {
        let r = &mut self.requests[id as usize];
        r.queue_wait_ns = r.held_since_ns.map(|since| now_ns - since);
    }
}
