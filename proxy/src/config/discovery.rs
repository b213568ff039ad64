//! `[[pools.NAME.discovery]]`: where a pool's backends come from besides its static list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::types::BackendAddress;

/// One source of a pool's backends, checked while parsing: exactly one kind, and only the settings
/// that kind reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawDiscovery")]
pub struct DiscoveryConfig {
    /// What to watch.
    pub source: DiscoverySource,
    /// An answer with no backends empties this source's set only after it has held this long, so a
    /// transient empty answer (a deploy that replaced every record at once, a file being rewritten)
    /// never empties a pool.
    pub empty_grace: Duration,
}

/// The kinds of source.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySource {
    /// DNS: A/AAAA or SRV records, re-resolved as their TTL runs out.
    Dns(DnsSource),
    /// A file of backends, re-read when it changes.
    File(FileSource),
    /// A Kubernetes Service's EndpointSlices, watched.
    Kubernetes(KubernetesSource),
}

/// `dns = "host:port"` or `srv = "_service._proto.name"`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSource {
    /// What to ask for.
    pub query: DnsQuery,
    /// Name servers to ask; empty means those of `/etc/resolv.conf`.
    pub resolvers: Vec<SocketAddr>,
    /// An answer is asked for again after its TTL, but never sooner than this...
    pub min_ttl: Duration,
    /// ...and never later than this.
    pub max_ttl: Duration,
}

/// A DNS question.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsQuery {
    /// The host's A and AAAA records, each address a backend on `port`.
    Host {
        /// The name asked for.
        name: String,
        /// The backends' port.
        port: u16,
    },
    /// SRV records, each target and port a backend, weighted by the record's weight.
    Srv {
        /// The name asked for, e.g. `_http._tcp.api.internal`.
        name: String,
    },
}

/// `file = "backends.json"`.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSource {
    /// A JSON (`.json`) or TOML (any other extension) file: `{"backends": [{"address": "10.0.0.5:8080",
    /// "weight": 2, "labels": {"zone": "a"}}]}`, or in JSON a bare list.
    pub path: PathBuf,
    /// Re-read this often even without a file event (events are missed on some network file systems).
    pub interval: Duration,
}

/// `kubernetes = { service = "api", namespace = "prod", port = "http" }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSource {
    /// The Service whose EndpointSlices are watched (label `kubernetes.io/service-name`).
    pub service: String,
    /// Its namespace; default: the proxy's own (in a cluster), else `default`.
    pub namespace: Option<String>,
    /// The port, by the name the EndpointSlice gives it; default: the slices' only (or first) port.
    pub port: Option<String>,
    /// The API server; default: in the cluster, the one its service account reaches, else the
    /// current context of `KUBECONFIG` / `~/.kube/config`.
    pub api_server: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    dns: Option<String>,
    srv: Option<String>,
    file: Option<PathBuf>,
    kubernetes: Option<KubernetesSource>,
    #[serde(default)]
    resolvers: Vec<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    min_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    empty_grace: Option<Duration>,
}

/// Defaults: DNS answers are kept between 1 s and 1 min whatever their TTL; files re-read every 5 s
/// without events; an empty answer must hold 30 s.
const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60);
const DEFAULT_FILE_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_EMPTY_GRACE: Duration = Duration::from_secs(30);

impl TryFrom<RawDiscovery> for DiscoveryConfig {
    type Error = String;

    fn try_from(raw: RawDiscovery) -> Result<Self, String> {
        Self::from_raw(raw).map_err(|e| format!("a discovery source: {e}"))
    }
}

impl DiscoveryConfig {
    fn from_raw(raw: RawDiscovery) -> Result<Self, String> {
        let kinds = [
            raw.dns.is_some(),
            raw.srv.is_some(),
            raw.file.is_some(),
            raw.kubernetes.is_some(),
        ];
        if kinds.iter().filter(|&&k| k).count() != 1 {
            return Err("give exactly one of `dns`, `srv`, `file` or `kubernetes`".into());
        }
        let is_dns = raw.dns.is_some() || raw.srv.is_some();
        if !is_dns && (!raw.resolvers.is_empty() || raw.min_ttl.is_some() || raw.max_ttl.is_some()) {
            return Err("`resolvers`, `min_ttl` and `max_ttl` apply to `dns` and `srv` only".into());
        }
        if raw.file.is_none() && raw.interval.is_some() {
            return Err("`interval` applies to `file` only".into());
        }
        let source = if let Some(path) = raw.file {
            let interval = raw.interval.unwrap_or(DEFAULT_FILE_INTERVAL);
            if interval.is_zero() {
                return Err("`interval` must be > 0".into());
            }
            DiscoverySource::File(FileSource { path, interval })
        } else if let Some(kubernetes) = raw.kubernetes {
            if kubernetes.service.is_empty() {
                return Err("`kubernetes.service` must name a Service".into());
            }
            DiscoverySource::Kubernetes(kubernetes)
        } else {
            let query = match (raw.dns, raw.srv) {
                (Some(host_port), _) => {
                    let address = BackendAddress::try_from(host_port)?;
                    let (name, port) = address
                        .as_str()
                        .rsplit_once(':')
                        .expect("a backend address has a port");
                    DnsQuery::Host {
                        name: name.trim_start_matches('[').trim_end_matches(']').to_owned(),
                        port: port.parse().map_err(|_| format!("`{port}` is not a port"))?,
                    }
                }
                (None, Some(name)) if !name.is_empty() => DnsQuery::Srv { name },
                _ => return Err("`srv` must name the records, e.g. `_http._tcp.api.internal`".into()),
            };
            let min_ttl = raw.min_ttl.unwrap_or(DEFAULT_MIN_TTL);
            let max_ttl = raw.max_ttl.unwrap_or(DEFAULT_MAX_TTL.max(min_ttl));
            if min_ttl.is_zero() || max_ttl < min_ttl {
                return Err("`min_ttl` must be > 0 and at most `max_ttl`".into());
            }
            DiscoverySource::Dns(DnsSource {
                query,
                resolvers: raw.resolvers,
                min_ttl,
                max_ttl,
            })
        };
        Ok(Self {
            source,
            empty_grace: raw.empty_grace.unwrap_or(DEFAULT_EMPTY_GRACE),
        })
    }
}

impl DiscoverySource {
    /// A short name for logs and metric labels, e.g. `dns api.internal:8080`.
    pub fn describe(&self) -> String {
        match self {
            Self::Dns(DnsSource {
                query: DnsQuery::Host { name, port },
                ..
            }) => format!("dns {name}:{port}"),
            Self::Dns(DnsSource {
                query: DnsQuery::Srv { name },
                ..
            }) => format!("srv {name}"),
            Self::File(f) => format!("file {}", f.path.display()),
            Self::Kubernetes(k) => format!(
                "kubernetes {}/{}",
                k.namespace.as_deref().unwrap_or("-"),
                k.service
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    /// A config whose pool `p` has `discovery = [<entries>]`, the entries starting on line 6.
    fn parse(entries: &str) -> Result<Config, String> {
        let text = format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[routes]]\npool = \"p\"\n[pools.p]\ndiscovery = [\n{entries}\n]\n"
        );
        Config::parse(&text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    fn sources(entries: &str) -> Vec<DiscoveryConfig> {
        parse(entries).unwrap().pools["p"].discovery.clone()
    }

    #[test]
    fn each_kind_reads_with_its_defaults() {
        let got = sources(
            "{ dns = \"api.internal:8080\" },\n\
             { srv = \"_http._tcp.api.internal\", resolvers = [\"10.0.0.2:53\"], min_ttl = \"5s\", max_ttl = \"5m\" },\n\
             { file = \"/etc/augur/api.json\", empty_grace = \"0s\" },\n\
             { kubernetes = { service = \"api\", port = \"http\" } },",
        );
        assert_eq!(
            got[0],
            DiscoveryConfig {
                source: DiscoverySource::Dns(DnsSource {
                    query: DnsQuery::Host {
                        name: "api.internal".into(),
                        port: 8080
                    },
                    resolvers: vec![],
                    min_ttl: Duration::from_secs(1),
                    max_ttl: Duration::from_secs(60),
                }),
                empty_grace: Duration::from_secs(30),
            }
        );
        let DiscoverySource::Dns(srv) = &got[1].source else {
            panic!("{:?}", got[1])
        };
        assert_eq!(
            srv.query,
            DnsQuery::Srv {
                name: "_http._tcp.api.internal".into()
            }
        );
        assert_eq!(
            (srv.min_ttl, srv.max_ttl),
            (Duration::from_secs(5), Duration::from_secs(300))
        );
        assert_eq!(srv.resolvers, vec!["10.0.0.2:53".parse().unwrap()]);
        assert_eq!(
            got[2].source,
            DiscoverySource::File(FileSource {
                path: "/etc/augur/api.json".into(),
                interval: Duration::from_secs(5)
            })
        );
        assert_eq!(got[2].empty_grace, Duration::ZERO);
        assert_eq!(got[3].source.describe(), "kubernetes -/api");
    }

    #[test]
    fn a_bad_source_is_refused_naming_its_line() {
        let cases = [
            ("{ dns = \"a:1\", file = \"b.json\" }", "exactly one of"),
            ("{ }", "exactly one of"),
            ("{ dns = \"api.internal\" }", "no port"),
            (
                "{ file = \"b.json\", resolvers = [\"10.0.0.2:53\"] }",
                "apply to `dns` and `srv` only",
            ),
            ("{ dns = \"a:1\", interval = \"1s\" }", "applies to `file` only"),
            (
                "{ dns = \"a:1\", min_ttl = \"1m\", max_ttl = \"1s\" }",
                "at most `max_ttl`",
            ),
            ("{ dns = \"a:1\", ttl = \"1s\" }", "unknown field `ttl`"),
            ("{ kubernetes = { service = \"\" } }", "must name a Service"),
        ];
        for (entry, expected) in cases {
            let error = parse(entry).unwrap_err();
            // toml places errors raised while converting an entry at the list that holds it.
            assert!(
                error.starts_with("t.toml:6:") || error.starts_with("t.toml:7:"),
                "{entry}: {error}"
            );
            assert!(error.contains(expected), "{entry}: {error}");
        }
    }

    #[test]
    fn a_pool_needs_backends_or_discovery() {
        let error = parse("").unwrap_err();
        assert!(
            error.contains("needs at least one backend, or a `discovery` source"),
            "{error}"
        );
    }
}
