//! Kubernetes: the EndpointSlices of a Service, listed and then watched (kube's client).
//!
//! A backend is an address of an endpoint whose `ready` condition holds (absent means ready, as the
//! API defines it), on the named port; its zone and pod become the labels `zone` and `pod`. A
//! terminating pod turns not-ready, so it leaves the set and drains; only while no endpoint is
//! ready do the terminating ones that still serve stand in. The watch resumes from the last
//! resource version it saw (bookmarks included), and lists afresh when the server says that version
//! is gone (410).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client, Config};
use tokio::time::Instant;

use super::{Backoff, Source};
use crate::config::{BackendAddress, BackendEntry, BackendSpec, KubernetesSource};

/// The label every EndpointSlice of a Service carries.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// Backoff after a failure, doubling up to the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const LONGEST_BACKOFF: Duration = Duration::from_secs(30);

type Events = BoxStream<'static, kube::Result<WatchEvent<EndpointSlice>>>;

pub(super) struct EndpointSlices {
    config: KubernetesSource,
    api: Option<Api<EndpointSlice>>,
    /// The Service's slices by name, as of `version`.
    slices: BTreeMap<String, EndpointSlice>,
    version: Option<String>,
    events: Option<Events>,
    /// After a failure, when to try again.
    due: Option<Instant>,
    backoff: Backoff,
}

impl EndpointSlices {
    pub(super) fn new(config: KubernetesSource) -> Self {
        Self {
            config,
            api: None,
            slices: BTreeMap::new(),
            version: None,
            events: None,
            due: None,
            backoff: Backoff::default(),
        }
    }

    async fn api(&mut self) -> Result<Api<EndpointSlice>, String> {
        if self.api.is_none() {
            let config = match &self.config.api_server {
                Some(url) => Config::new(url.parse().map_err(|e| format!("api_server `{url}`: {e}"))?),
                None => Config::infer()
                    .await
                    .map_err(|e| format!("finding the Kubernetes API server: {e}"))?,
            };
            let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
            let namespace = self
                .config
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            self.api = Some(Api::namespaced(client, &namespace));
        }
        Ok(self.api.clone().expect("built above"))
    }

    fn selector(&self) -> String {
        format!("{SERVICE_LABEL}={}", self.config.service)
    }

    /// Lists the slices and opens a watch from the list's version.
    async fn list_and_watch(&mut self) -> Result<(), String> {
        let api = self.api().await?;
        let list = api
            .list(&ListParams::default().labels(&self.selector()))
            .await
            .map_err(|e| format!("listing EndpointSlices: {e}"))?;
        self.slices = list
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, s)))
            .collect();
        self.version = list.metadata.resource_version;
        self.watch(&api).await
    }

    async fn watch(&mut self, api: &Api<EndpointSlice>) -> Result<(), String> {
        let version = self.version.clone().unwrap_or_else(|| "0".to_owned());
        let events = api
            .watch(&WatchParams::default().labels(&self.selector()), &version)
            .await
            .map_err(|e| format!("watching EndpointSlices: {e}"))?;
        self.events = Some(events.boxed());
        Ok(())
    }

    /// Folds in watch events until one changes the slices. `Ok(false)` when the watch must be
    /// opened again (it ended, or its version is gone).
    async fn follow(&mut self) -> Result<bool, String> {
        let events = self.events.as_mut().expect("a watch is open");
        loop {
            let Some(event) = events.next().await else {
                // The server ends every watch after a while; resume from the last version.
                self.events = None;
                return Ok(false);
            };
            match event.map_err(|e| format!("watching EndpointSlices: {e}"))? {
                WatchEvent::Added(slice) | WatchEvent::Modified(slice) => {
                    self.version = slice.metadata.resource_version.clone();
                    if let Some(name) = slice.metadata.name.clone() {
                        self.slices.insert(name, slice);
                    }
                    return Ok(true);
                }
                WatchEvent::Deleted(slice) => {
                    self.version = slice.metadata.resource_version.clone();
                    if let Some(name) = &slice.metadata.name {
                        self.slices.remove(name);
                    }
                    return Ok(true);
                }
                WatchEvent::Bookmark(bookmark) => self.version = Some(bookmark.metadata.resource_version),
                WatchEvent::Error(status) if status.code == 410 => {
                    self.events = None;
                    self.version = None;
                    return Ok(false);
                }
                WatchEvent::Error(status) => {
                    return Err(format!("watch error {}: {}", status.code, status.message))
                }
            }
        }
    }

    /// The backends the slices give: the addresses of ready endpoints, on the configured port. When
    /// none is ready, those still serving while they terminate (as kube-proxy falls back to them), so
    /// a rollout that takes every pod down at once does not empty the pool before the new ones are up.
    fn backends(&self) -> Vec<BackendSpec> {
        let ready = self.endpoints(|c| c.ready.unwrap_or(true));
        if !ready.is_empty() {
            return ready;
        }
        self.endpoints(|c| c.serving.unwrap_or(false) && c.terminating.unwrap_or(false))
    }

    /// The addresses of the endpoints whose conditions pass `select` (absent conditions: all
    /// unknown, which the API reads as ready).
    fn endpoints(&self, select: impl Fn(&EndpointConditions) -> bool) -> Vec<BackendSpec> {
        let mut seen = BTreeSet::new();
        let mut backends = Vec::new();
        for slice in self.slices.values() {
            let ports = slice.ports.as_deref().unwrap_or_default();
            let port = match &self.config.port {
                Some(name) => ports.iter().find(|p| p.name.as_deref() == Some(name.as_str())),
                None => ports.first(),
            };
            let Some(port) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if !select(&endpoint.conditions.clone().unwrap_or_default()) {
                    continue;
                }
                let mut labels = BTreeMap::new();
                if let Some(zone) = &endpoint.zone {
                    labels.insert("zone".to_owned(), zone.clone());
                }
                if let Some(pod) = endpoint.target_ref.as_ref().and_then(|r| r.name.clone()) {
                    labels.insert("pod".to_owned(), pod);
                }
                for address in &endpoint.addresses {
                    let host = if address.contains(':') {
                        format!("[{address}]")
                    } else {
                        address.clone()
                    };
                    let Ok(address) = BackendAddress::try_from(format!("{host}:{port}")) else {
                        continue;
                    };
                    if seen.insert(address.clone()) {
                        backends.push(BackendEntry {
                            address,
                            weight: NonZeroU32::MIN,
                            labels: labels.clone(),
                            cost: 0.0,
                            max_concurrent: None,
                        });
                    }
                }
            }
        }
        backends
    }

    /// Backs off; the next look lists afresh.
    fn fail(&mut self, reason: String) -> Result<Vec<BackendSpec>, String> {
        self.events = None;
        self.version = None;
        self.due = Some(Instant::now() + self.backoff.failed(FIRST_BACKOFF, LONGEST_BACKOFF));
        Err(reason)
    }
}

impl Source for EndpointSlices {
    async fn next(&mut self) -> Result<Vec<BackendSpec>, String> {
        loop {
            if let Some(due) = self.due {
                tokio::time::sleep_until(due).await;
                self.due = None;
            }
            if self.events.is_none() {
                // A watch that ended resumes from the version it reached; otherwise list afresh.
                let resume = self.api.clone().filter(|_| self.version.is_some());
                let opened = match &resume {
                    Some(api) => self.watch(api).await,
                    None => self.list_and_watch().await,
                };
                if let Err(reason) = opened {
                    return self.fail(reason);
                }
                self.backoff.reset();
                if resume.is_none() {
                    return Ok(self.backends());
                }
            }
            match self.follow().await {
                Ok(true) => return Ok(self.backends()),
                Ok(false) => continue,
                Err(reason) => return self.fail(reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(slices: serde_json::Value) -> EndpointSlices {
        let mut source = EndpointSlices::new(KubernetesSource {
            service: "api".into(),
            namespace: None,
            port: Some("http".into()),
            api_server: None,
        });
        for slice in slices.as_array().unwrap() {
            let slice: EndpointSlice = serde_json::from_value(slice.clone()).unwrap();
            source.slices.insert(slice.metadata.name.clone().unwrap(), slice);
        }
        source
    }

    fn addresses(source: &EndpointSlices) -> Vec<String> {
        source.backends().iter().map(|b| b.address.to_string()).collect()
    }

    #[test]
    fn ready_endpoints_on_the_named_port_and_terminating_ones_only_when_none_is_ready() {
        let endpoint = |address: &str, ready: bool, serving: bool, terminating: bool| {
            serde_json::json!({ "addresses": [address],
                "conditions": { "ready": ready, "serving": serving, "terminating": terminating } })
        };
        let slices = |endpoints: Vec<serde_json::Value>| {
            serde_json::json!([
                { "metadata": { "name": "api-1" }, "addressType": "IPv4", "endpoints": endpoints,
                  "ports": [{ "name": "metrics", "port": 9090 }, { "name": "http", "port": 8080 }] },
                { "metadata": { "name": "api-2" }, "addressType": "IPv6",
                  "endpoints": [{ "addresses": ["fd00::7"] }],
                  "ports": [{ "name": "http", "port": 8080 }] },
            ])
        };
        let rolling = source(slices(vec![
            endpoint("10.0.0.1", true, true, false),
            endpoint("10.0.0.2", false, true, true),
            endpoint("10.0.0.3", false, false, false),
        ]));
        assert_eq!(addresses(&rolling), ["10.0.0.1:8080", "[fd00::7]:8080"]);

        let all_terminating = source(serde_json::json!([
            { "metadata": { "name": "api-1" }, "addressType": "IPv4",
              "endpoints": [endpoint("10.0.0.2", false, true, true), endpoint("10.0.0.3", false, false, true)],
              "ports": [{ "name": "http", "port": 8080 }] },
        ]));
        assert_eq!(
            addresses(&all_terminating),
            ["10.0.0.2:8080"],
            "serving while terminating stands in"
        );
    }
}
