//! DNS: a host's A and AAAA records, or SRV records, asked for again when the answer's TTL runs out
//! (held between `min_ttl` and `max_ttl`).
//!
//! NXDOMAIN and an answer without records are an empty set (which the guard holds back for the
//! source's grace); SERVFAIL, REFUSED, timeouts and unreachable servers are failures that keep the
//! last good set, retried with backoff from `min_ttl` up to `max_ttl`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use super::{Backoff, Source};
use crate::config::{BackendAddress, BackendEntry, BackendSpec, DnsQuery, DnsSource};

pub(super) struct Dns {
    config: DnsSource,
    /// Built at the first look; an error (an unreadable `/etc/resolv.conf`) is that look's failure.
    resolver: Option<TokioResolver>,
    /// When the next look is due; `None` at start.
    due: Option<Instant>,
    backoff: Backoff,
}

impl Dns {
    pub(super) fn new(config: DnsSource) -> Self {
        Self {
            config,
            resolver: None,
            due: None,
            backoff: Backoff::default(),
        }
    }

    fn resolver(&mut self) -> Result<&TokioResolver, String> {
        if self.resolver.is_none() {
            let mut builder = if self.config.resolvers.is_empty() {
                TokioResolver::builder_tokio().map_err(|e| format!("reading the system's DNS config: {e}"))?
            } else {
                let servers = self.config.resolvers.iter().map(name_server).collect();
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(servers),
                    TokioRuntimeProvider::default(),
                )
            };
            let options = builder.options_mut();
            // The source decides when to ask again; a cache would answer from the last answer.
            options.cache_size = 0;
            options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            options.timeout = Duration::from_secs(2);
            options.attempts = 1;
            let resolver = builder
                .build()
                .map_err(|e| format!("building the resolver: {e}"))?;
            self.resolver = Some(resolver);
        }
        Ok(self.resolver.as_ref().expect("built above"))
    }

    /// One look: the set and how long it holds, or why there is none.
    async fn look(&mut self) -> Result<(Vec<BackendSpec>, Duration), String> {
        let query = self.config.query.clone();
        let resolver = self.resolver()?;
        let answer = match &query {
            DnsQuery::Host { name, port } => resolver.lookup_ip(name.as_str()).await.map(|found| {
                let backends = found
                    .iter()
                    .map(|ip| backend(&SocketAddr::new(ip, *port).to_string(), 1))
                    .collect::<Result<Vec<_>, _>>();
                (backends, found.valid_until())
            }),
            DnsQuery::Srv { name } => resolver.srv_lookup(name.as_str()).await.map(|found| {
                // Only the most preferred priority: the others are for when all of those are gone,
                // which health checks and outlier detection handle within the pool.
                let records: Vec<_> = found
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some(srv.clone()),
                        _ => None,
                    })
                    .collect();
                let best = records.iter().map(|srv| srv.priority).min();
                let backends = records
                    .iter()
                    .filter(|srv| Some(srv.priority) == best)
                    .map(|srv| {
                        let target = srv.target.to_utf8();
                        let host = target.trim_end_matches('.');
                        // Weight 0 means "rarely, when others exist"; the lowest weight stands in.
                        backend(&format!("{host}:{}", srv.port), u32::from(srv.weight).max(1))
                    })
                    .collect::<Result<Vec<_>, _>>();
                (backends, found.valid_until())
            }),
        };
        match answer {
            Ok((backends, valid_until)) => Ok((backends?, self.hold(valid_until))),
            Err(e) if is_empty_answer(&e) => Ok((Vec::new(), self.config.min_ttl)),
            Err(e) => Err(format!("{}: {e}", describe(&query))),
        }
    }

    /// How long an answer valid until `valid_until` is kept, within the configured bounds.
    fn hold(&self, valid_until: std::time::Instant) -> Duration {
        valid_until
            .saturating_duration_since(std::time::Instant::now())
            .clamp(self.config.min_ttl, self.config.max_ttl)
    }
}

impl Source for Dns {
    async fn next(&mut self) -> Result<Vec<BackendSpec>, String> {
        if let Some(due) = self.due {
            tokio::time::sleep_until(due).await;
        }
        match self.look().await {
            Ok((backends, hold)) => {
                self.backoff.reset();
                self.due = Some(Instant::now() + hold);
                Ok(backends)
            }
            Err(reason) => {
                let wait = self.backoff.failed(self.config.min_ttl, self.config.max_ttl);
                self.due = Some(Instant::now() + wait);
                Err(reason)
            }
        }
    }
}

/// NXDOMAIN, or a name without records of the type asked for: the source lists no backends.
fn is_empty_answer(error: &NetError) -> bool {
    matches!(
        error,
        NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        }))
    )
}

fn name_server(address: &SocketAddr) -> NameServerConfig {
    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
        .into_iter()
        .map(|mut c| {
            c.port = address.port();
            c
        })
        .collect();
    NameServerConfig::new(address.ip(), true, connections)
}

fn backend(address: &str, weight: u32) -> Result<BackendSpec, String> {
    Ok(BackendEntry {
        address: BackendAddress::try_from(address.to_owned())?,
        weight: NonZeroU32::new(weight).expect("weights here are at least 1"),
        labels: Default::default(),
        cost: 0.0,
        max_concurrent: None,
    })
}

fn describe(query: &DnsQuery) -> String {
    match query {
        DnsQuery::Host { name, .. } => format!("A/AAAA {name}"),
        DnsQuery::Srv { name } => format!("SRV {name}"),
    }
}
