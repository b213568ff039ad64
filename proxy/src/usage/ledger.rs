//! Usage totals by tenant and model, per minute, kept for the retention: what `GET /admin/usage`
//! sums over the window it is asked for.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use super::{Metered, UsageSource};

/// The name model names beyond the budget are counted under.
pub const OTHER_MODEL: &str = "other";

/// One tenant's use of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Requests with an OpenAI-style body that got a response.
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// What they cost, where a price is configured.
    pub cost: f64,
    /// Requests whose response reported its usage.
    pub reported: u64,
    /// Requests whose usage the proxy counted (streams without a `usage` chunk; prompt estimated).
    pub counted: u64,
    /// Requests whose response said nothing of its usage (not counted in the tokens).
    pub unmetered: u64,
}

impl Totals {
    fn add(&mut self, usage: Option<&Metered>) {
        self.requests += 1;
        let Some(usage) = usage else {
            self.unmetered += 1;
            return;
        };
        self.input_tokens += u64::from(usage.input_tokens);
        self.output_tokens += u64::from(usage.output_tokens);
        self.cost += usage.cost.unwrap_or(0.0);
        match usage.source {
            UsageSource::Reported => self.reported += 1,
            UsageSource::Counted => self.counted += 1,
        }
    }

    /// Adds `other` in.
    pub fn merge(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cost += other.cost;
        self.reported += other.reported;
        self.counted += other.counted;
        self.unmetered += other.unmetered;
    }
}

type Account = (Option<Arc<str>>, Arc<str>);

/// Per-minute totals for the retention, and the model names told apart so far.
#[derive(Debug)]
pub struct Ledger {
    /// Oldest first; each the Unix minute it covers and the totals in it.
    minutes: VecDeque<(u64, HashMap<Account, Totals>)>,
    retention_minutes: u64,
    models: HashSet<Arc<str>>,
    max_models: usize,
    other: Arc<str>,
}

/// One row of a summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    /// The tenant (absent for requests on routes without keys).
    pub tenant: Option<Arc<str>>,
    /// The model asked for.
    pub model: Arc<str>,
    /// What it used.
    #[serde(flatten)]
    pub totals: Totals,
}

impl Ledger {
    /// An empty ledger keeping `retention_minutes` and telling `max_models` names apart.
    pub fn new(retention_minutes: u64, max_models: usize) -> Self {
        Self {
            minutes: VecDeque::new(),
            retention_minutes: retention_minutes.max(1),
            models: HashSet::new(),
            max_models,
            other: Arc::from(OTHER_MODEL),
        }
    }

    /// Keeps `retention_minutes` from now on, telling `max_models` names apart (names already told
    /// apart stay so).
    pub fn configure(&mut self, retention_minutes: u64, max_models: usize) {
        self.retention_minutes = retention_minutes.max(1);
        self.max_models = max_models;
    }

    /// The name `model` is counted under: itself while the budget of names lasts, then
    /// [`OTHER_MODEL`].
    pub fn model_name(&mut self, model: &str) -> Arc<str> {
        if let Some(name) = self.models.get(model) {
            return name.clone();
        }
        if self.models.len() >= self.max_models {
            return self.other.clone();
        }
        let name: Arc<str> = Arc::from(model);
        self.models.insert(name.clone());
        name
    }

    /// Adds one request of `tenant` to `model` (as [`Ledger::model_name`] named it) in `minute`.
    pub fn add(&mut self, minute: u64, tenant: Option<&Arc<str>>, model: Arc<str>, usage: Option<&Metered>) {
        if self.minutes.back().is_none_or(|(m, _)| *m < minute) {
            self.minutes.push_back((minute, HashMap::new()));
        }
        let oldest_kept = minute.saturating_sub(self.retention_minutes - 1);
        while self.minutes.front().is_some_and(|(m, _)| *m < oldest_kept) {
            self.minutes.pop_front();
        }
        // A clock stepped back lands in the newest minute rather than reopening an old one.
        let (_, totals) = self.minutes.back_mut().expect("just pushed");
        totals.entry((tenant.cloned(), model)).or_default().add(usage);
    }

    /// The totals of the `minutes` minutes up to and including `now_minute`, by tenant and model,
    /// of `tenant` only when given; the largest cost first, then the most tokens.
    pub fn summary(&self, now_minute: u64, minutes: u64, tenant: Option<&str>) -> Vec<SummaryRow> {
        let from = now_minute.saturating_sub(minutes.saturating_sub(1));
        let mut sums: BTreeMap<(Option<Arc<str>>, Arc<str>), Totals> = BTreeMap::new();
        for (_, accounts) in self.minutes.iter().filter(|(m, _)| *m >= from) {
            for ((t, model), totals) in accounts {
                if tenant.is_some_and(|want| t.as_deref() != Some(want)) {
                    continue;
                }
                sums.entry((t.clone(), model.clone())).or_default().merge(totals);
            }
        }
        let mut rows: Vec<SummaryRow> = sums
            .into_iter()
            .map(|((tenant, model), totals)| SummaryRow {
                tenant,
                model,
                totals,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.totals.cost.total_cmp(&a.totals.cost).then(
                (b.totals.input_tokens + b.totals.output_tokens)
                    .cmp(&(a.totals.input_tokens + a.totals.output_tokens)),
            )
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered(input: u32, output: u32, cost: f64) -> Metered {
        Metered {
            input_tokens: input,
            output_tokens: output,
            source: UsageSource::Reported,
            cost: Some(cost),
        }
    }

    #[test]
    fn sums_the_window_asked_for_by_tenant_and_model() {
        let mut ledger = Ledger::new(60, 10);
        let a: Arc<str> = Arc::from("team-a");
        let m = ledger.model_name("llama");
        ledger.add(100, Some(&a), m.clone(), Some(&metered(10, 20, 0.5)));
        ledger.add(130, Some(&a), m.clone(), Some(&metered(1, 2, 0.25)));
        ledger.add(130, None, m.clone(), None);
        let last_hour = ledger.summary(130, 60, None);
        assert_eq!(last_hour.len(), 2);
        assert_eq!(last_hour[0].tenant.as_deref(), Some("team-a"));
        assert_eq!(
            (last_hour[0].totals.requests, last_hour[0].totals.output_tokens),
            (2, 22)
        );
        assert_eq!(last_hour[0].totals.cost, 0.75);
        assert_eq!(last_hour[1].totals.unmetered, 1);
        let last_minute = ledger.summary(130, 1, Some("team-a"));
        assert_eq!(last_minute.len(), 1);
        assert_eq!(last_minute[0].totals.input_tokens, 1);
    }

    #[test]
    fn forgets_what_is_older_than_the_retention() {
        let mut ledger = Ledger::new(5, 10);
        let m = ledger.model_name("m");
        ledger.add(10, None, m.clone(), Some(&metered(1, 1, 0.0)));
        ledger.add(20, None, m, Some(&metered(1, 1, 0.0)));
        assert_eq!(ledger.minutes.len(), 1);
        assert_eq!(ledger.summary(20, 60, None)[0].totals.requests, 1);
    }

    #[test]
    fn model_names_past_the_budget_count_as_other() {
        let mut ledger = Ledger::new(5, 2);
        assert_eq!(&*ledger.model_name("a"), "a");
        assert_eq!(&*ledger.model_name("b"), "b");
        assert_eq!(&*ledger.model_name("c"), OTHER_MODEL);
        assert_eq!(&*ledger.model_name("a"), "a");
    }
}
