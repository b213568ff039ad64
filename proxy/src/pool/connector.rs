//! How a pool reaches its backends: plain HTTP/1.1, HTTPS, HTTP/2 over TLS (ALPN `h2`) or h2c, with
//! the CAs, server name and client certificate its `tls` settings name. The TLS settings of every
//! pool are loaded before a config takes effect, so a bad file refuses the config (at start or on
//! reload) with the file's name instead of failing requests later.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tower_service::Service;

use super::tcp::BareConnector;
use crate::config::{Config, PoolConfig, UpstreamProtocol, UpstreamTls};
use crate::message::body::ProxyBody;
use crate::pem::{read_certificates, read_private_key, TlsError};

/// The client every request, health check and scrape of a pool goes through.
pub type UpstreamClient = Client<HttpsConnector<BareConnector<TimedResolver>>, ProxyBody>;

/// A pool whose TLS settings did not load.
#[derive(Debug, thiserror::Error)]
#[error("pools.{pool}.tls: {source}")]
pub struct UpstreamTlsError {
    /// The pool.
    pub pool: String,
    /// Why.
    pub source: TlsError,
}

/// The TLS client settings of every pool that speaks TLS, loaded from their files.
#[derive(Debug, Default)]
pub struct TlsClients(BTreeMap<String, Arc<ClientConfig>>);

impl TlsClients {
    /// Loads the TLS settings of every pool of `config`.
    pub fn load(config: &Config) -> Result<Self, UpstreamTlsError> {
        let mut clients = BTreeMap::new();
        for (name, pool) in &config.pools {
            if let Some(tls) = &pool.tls {
                let client = client_config(tls).map_err(|source| UpstreamTlsError {
                    pool: name.clone(),
                    source,
                })?;
                if tls.insecure_skip_verify {
                    tracing::warn!(pool = %name, "tls.insecure_skip_verify: backend certificates are not checked");
                }
                clients.insert(name.clone(), Arc::new(client));
            }
        }
        Ok(Self(clients))
    }

    /// The settings of pool `name`, if it speaks TLS.
    pub fn of(&self, name: &str) -> Option<Arc<ClientConfig>> {
        self.0.get(name).cloned()
    }
}

/// The URI scheme of a pool's backends.
pub fn scheme(config: &PoolConfig) -> http::uri::Scheme {
    if config.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    }
}

/// The HTTP version of a pool's requests.
pub fn version(config: &PoolConfig) -> http::Version {
    match config.protocol {
        UpstreamProtocol::Http1 => http::Version::HTTP_11,
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => http::Version::HTTP_2,
    }
}

/// The pool's client: TCP with its connect timeout, TLS when `tls` is given (the pool's loaded
/// settings), and HTTP/2 only for `h2` and `h2c` (one multiplexed connection per backend).
pub fn client(config: &PoolConfig, tls: Option<Arc<ClientConfig>>) -> UpstreamClient {
    let mut tcp = HttpConnector::new_with_resolver(TimedResolver {
        inner: GaiResolver::new(),
        timeout: config.timeouts.connect,
    });
    tcp.set_connect_timeout(Some(config.timeouts.connect));
    tcp.set_nodelay(true);
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    // Plain pools still go through the TLS connector type (it passes `http://` through untouched),
    // so every pool has one client type.
    tcp.enforce_http(false);
    let builder = match tls {
        Some(tls) => HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only(),
        None => HttpsConnectorBuilder::new()
            .with_tls_config(plain_placeholder())
            .https_or_http(),
    };
    // Checked when the pool's TLS settings were loaded.
    let server_name = config.tls.as_ref().and_then(|t| t.server_name.clone());
    let builder = match server_name.and_then(|name| ServerName::try_from(name).ok()) {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    let connector = match config.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(BareConnector(tcp)),
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => {
            builder.enable_http2().wrap_connector(BareConnector(tcp))
        }
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_idle_timeout(config.timeouts.idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if config.protocol != UpstreamProtocol::Http1 {
        client.http2_only(true);
    }
    client.build(connector)
}

/// Name lookups bounded by the connect timeout: a resolver that hangs must not hold a request (or a
/// health check) past it. Addresses that are IP literals are never looked up.
#[derive(Clone)]
pub struct TimedResolver {
    inner: GaiResolver,
    timeout: Duration,
}

impl Service<Name> for TimedResolver {
    type Response = GaiAddrs;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<GaiAddrs>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (lookup, timeout) = (self.inner.call(name.clone()), self.timeout);
        Box::pin(async move {
            tokio::time::timeout(timeout, lookup).await.unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("looking up {name} took longer than {timeout:?}"),
                ))
            })
        })
    }
}

/// How often an idle upstream connection is probed by TCP keep-alive, so a backend that vanished
/// (no FIN, no RST) is found before a request is sent down a dead connection.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS settings a plain pool's connector carries but never uses.
fn plain_placeholder() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, TlsError> {
    if let Some(name) = &tls.server_name {
        ServerName::try_from(name.as_str()).map_err(|e| TlsError::Content {
            path: "server_name".into(),
            reason: format!("`{name}` is not a DNS name or IP address: {e}"),
        })?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            context: "TLS versions".into(),
            source,
        })?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    // ALPN is set by the connector, from `protocol`.
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certificates(cert)?, read_private_key(key)?)
            .map_err(|source| TlsError::Rustls {
                context: format!("{} with {}", cert.display(), key.display()),
                source,
            })?,
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The CAs of `tls.ca`, else the system's.
fn roots(tls: &UpstreamTls) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(ca) => {
            for cert in read_certificates(ca)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    context: format!("CA {}", ca.display()),
                    source,
                })?;
            }
        }
        None => {
            let system = rustls_native_certs::load_native_certs();
            let (added, _unparsable) = roots.add_parsable_certificates(system.certs);
            if added == 0 {
                return Err(TlsError::Content {
                    path: "the system's CA store".into(),
                    reason: "no CA certificate found; give `ca`".into(),
                });
            }
        }
    }
    Ok(roots)
}

/// `insecure_skip_verify`: any certificate passes, but the handshake's signatures are still checked
/// (so the connection is at least to whoever holds the key it presented).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
