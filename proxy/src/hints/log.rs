//! The newest hints raised and what became of each at every sink, for the dashboard: when, to whom,
//! delivered or not. Bounded; the oldest go first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::event::CloudEvent;
use super::metrics::DeliveryOutcome;

/// Hints kept.
const KEPT: usize = 50;

/// One hint and its deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct HintRecord {
    /// The event id.
    pub id: String,
    /// When it was decided, RFC 3339.
    pub time: String,
    /// The pool.
    pub pool: String,
    /// Its sequence number in the pool.
    pub sequence: u64,
    /// `up` or `down`.
    pub direction: String,
    /// Replicas asked for before...
    pub from: u32,
    /// ...and now.
    pub to: u32,
    /// `model` or `fallback`.
    pub forecaster: String,
    /// Per sink URL: `queued`, `retrying`, or how it settled (`delivered`, `rejected`, `expired`,
    /// `dropped_queue_full`).
    pub deliveries: BTreeMap<String, &'static str>,
}

/// The log.
#[derive(Default)]
pub struct HintLog {
    records: Mutex<VecDeque<HintRecord>>,
}

impl HintLog {
    fn records(&self) -> std::sync::MutexGuard<'_, VecDeque<HintRecord>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A hint raised, queued at each of `sinks`.
    pub fn raised<'a>(&self, event: &CloudEvent, sinks: impl Iterator<Item = &'a str>) {
        let hint = &event.data;
        let mut records = self.records();
        if records.len() == KEPT {
            records.pop_front();
        }
        records.push_back(HintRecord {
            id: event.id.clone(),
            time: event.time.clone(),
            pool: hint.pool.clone(),
            sequence: hint.sequence,
            direction: hint.direction.clone(),
            from: hint.previous_desired_replicas,
            to: hint.desired_replicas,
            forecaster: hint.forecaster.clone(),
            deliveries: sinks.map(|s| (s.to_owned(), "queued")).collect(),
        });
    }

    /// What happened to hint `id` at `sink`.
    pub fn delivery(&self, id: &str, sink: &str, outcome: DeliveryOutcome) {
        let state = match outcome {
            DeliveryOutcome::Retried => "retrying",
            settled => settled.as_str(),
        };
        if let Some(record) = self.records().iter_mut().rev().find(|r| r.id == id) {
            if let Some(slot) = record.deliveries.get_mut(sink) {
                *slot = state;
            }
        }
    }

    /// The hints kept, oldest first.
    pub fn recent(&self) -> Vec<HintRecord> {
        self.records().iter().cloned().collect()
    }
}
