//! A simulated server's LoRA adapters: at most `max_lora` resident at once (vLLM's `--max-loras`), an
//! idle one swapped out, least recently used first, for one that is asked for.

/// One resident adapter.
#[derive(Debug, Clone, Copy)]
struct Resident {
    adapter: u16,
    running: u32,
    last_used: u64,
}

/// The adapters resident on one server.
#[derive(Debug, Clone, Default)]
pub struct AdapterSlots {
    max: u32,
    resident: Vec<Resident>,
    clock: u64,
}

/// Why a request cannot start now for its adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterBusy;

impl AdapterSlots {
    /// Room for `max` adapters; 0 serves every adapter as if resident.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// Starts a request for `adapter`: whether the adapter had to be loaded for it.
    pub fn start(&mut self, adapter: Option<u16>) -> Result<bool, AdapterBusy> {
        let Some(a) = adapter.filter(|_| self.max > 0) else {
            return Ok(false);
        };
        self.clock += 1;
        let clock = self.clock;
        if let Some(r) = self.resident.iter_mut().find(|r| r.adapter == a) {
            r.running += 1;
            r.last_used = clock;
            return Ok(false);
        }
        let loaded = Resident {
            adapter: a,
            running: 1,
            last_used: clock,
        };
        if self.resident.len() < self.max as usize {
            self.resident.push(loaded);
            return Ok(true);
        }
        let idle = self
            .resident
            .iter_mut()
            .filter(|r| r.running == 0)
            .min_by_key(|r| r.last_used)
            .ok_or(AdapterBusy)?;
        *idle = loaded;
        Ok(true)
    }

    /// Ends a request for `adapter`.
    pub fn finish(&mut self, adapter: Option<u16>) {
        if let Some(r) = adapter.and_then(|a| self.resident.iter_mut().find(|r| r.adapter == a)) {
            r.running = r.running.saturating_sub(1);
        }
    }

    /// Adapters with requests running, in load order.
    pub fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.resident.iter().filter(|r| r.running > 0).map(|r| r.adapter)
    }

    /// The most adapters resident at once.
    pub fn max(&self) -> u32 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_adapter_is_swapped_out_and_a_busy_one_never() {
        let mut slots = AdapterSlots::new(2);
        assert_eq!(slots.start(Some(1)), Ok(true));
        assert_eq!(slots.start(Some(1)), Ok(false), "resident: no load");
        assert_eq!(slots.start(Some(2)), Ok(true));
        assert_eq!(slots.start(Some(3)), Err(AdapterBusy));
        assert_eq!(slots.start(None), Ok(false), "the base model needs no slot");
        slots.finish(Some(2));
        assert_eq!(slots.start(Some(3)), Ok(true), "2 was idle");
        assert_eq!(
            slots.resident.iter().map(|r| r.adapter).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(slots.running().collect::<Vec<_>>(), [1, 3]);
        assert_eq!(AdapterSlots::new(0).start(Some(9)), Ok(false));
    }
}
