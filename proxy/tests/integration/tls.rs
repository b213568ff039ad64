//! TLS termination with certificates the tests make (rcgen): HTTP/2 by ALPN, a certificate chosen by
//! SNI, a reload that refuses a bad pair and keeps serving, a renewed pair picked up from disk, and
//! mutual TLS that turns away a client without a certificate. The certificate helpers serve the
//! upstream tests too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::backends::spawn;
use crate::harness::*;

/// A throwaway certificate authority.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A certificate and its key, as PEM.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Authority {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { params, key, cert }
    }

    /// A leaf for `names`, signed by this authority.
    pub fn issue(&self, names: &[&str]) -> Pair {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }
}

impl Pair {
    /// Writes the pair to fresh files; returns their paths.
    fn write(&self, name: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            temp_path(&format!("{name}.crt")),
            temp_path(&format!("{name}.key")),
        );
        std::fs::write(&cert, &self.cert).unwrap();
        std::fs::write(&key, &self.key).unwrap();
        (cert, key)
    }

    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap()
    }
}

fn certificates_toml(pairs: &[&(PathBuf, PathBuf)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(cert, key)| format!("{{ cert = \"{}\", key = \"{}\" }}", cert.display(), key.display()))
        .collect();
    format!("[{}]", items.join(", "))
}

fn echo_pool(address: &str) -> String {
    format!("[[routes]]\npool = \"web\"\n[pools.web]\nbackends = [{{ address = \"{address}\" }}]\n")
}

/// A client that trusts `authority` and offers h2 and HTTP/1.1, with `identity` as its certificate.
fn client_config(authority: &Authority, identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(authority.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
            builder.with_client_auth_cert(vec![pair.der()], key).unwrap()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What one request over TLS saw.
struct Seen {
    alpn: Option<Vec<u8>>,
    server_cert: CertificateDer<'static>,
    status: u16,
    body: String,
}

/// Connects to `address` as `sni`, sends GET `path` over whatever ALPN chose, reads the answer.
async fn tls_get(
    address: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
    path: &str,
) -> Result<Seen, String> {
    let exchange = async {
        let tcp = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let server_cert = session.peer_certificates().unwrap()[0].clone();
        let io = TokioIo::new(tls);
        let request = Request::get(format!("https://{sni}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = if alpn.as_deref() == Some(b"h2") {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender.send_request(request).await
        }
        .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Seen {
            alpn,
            server_cert,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(EXCHANGE_LIMIT, exchange)
        .await
        .expect("exchange within the test limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_and_the_certificate_that_sni_names() {
    let a = spawn("a").await;
    let authority = Authority::new();
    let (first, second) = (authority.issue(&["a.test"]), authority.issue(&["*.b.test"]));
    let (first_files, second_files) = (first.write("a"), second.write("b"));
    let listener = format!(
        "[listeners.tls]\ncertificates = {}",
        certificates_toml(&[&first_files, &second_files])
    );
    let proxy = start_proxy_with_listener(&listener, &echo_pool(&a.addr.to_string())).await;
    let address = proxy.listeners[0];
    let config = client_config(&authority, None);

    let seen = tls_get(address, config.clone(), "a.test", "/echo").await.unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]), "ALPN chose h2");
    assert_eq!(seen.status, 200, "{}", seen.body);
    assert_eq!(seen.server_cert, first.der());
    let echoed: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

    let seen = tls_get(address, config.clone(), "api.b.test", "/echo")
        .await
        .unwrap();
    assert_eq!(
        seen.server_cert,
        second.der(),
        "SNI picked the wildcard certificate"
    );

    // HTTP/1.1 only: ALPN settles on it.
    let mut h1_only = (*config).clone();
    h1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
    let seen = tls_get(address, Arc::new(h1_only), "a.test", "/echo")
        .await
        .unwrap();
    assert_eq!(seen.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(seen.status, 200);

    // Plain HTTP on a TLS listener gets no answer.
    let plain = tokio::time::timeout(EXCHANGE_LIMIT, client().get(url(&proxy, "/").parse().unwrap())).await;
    assert!(plain.unwrap().is_err(), "plain HTTP is not served on a TLS port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pair_is_refused_on_reload_and_a_renewed_one_is_picked_up() {
    let a = spawn("a").await;
    let authority = Authority::new();
    let original = authority.issue(&["a.test"]);
    let (cert, key) = original.write("reload");
    let listener = format!(
        "[listeners.tls]\ncertificates = {}\nwatch_interval = \"100ms\"",
        certificates_toml(&[&(cert.clone(), key.clone())])
    );
    let proxy = start_proxy_with_listener(&listener, &echo_pool(&a.addr.to_string())).await;
    let address = proxy.listeners[0];
    let config = client_config(&authority, None);

    // A key that is not the certificate's: refused, and the old pair keeps serving.
    let other = authority.issue(&["a.test"]);
    std::fs::write(&key, &other.key).unwrap();
    let refused = proxy
        .reload_certificates()
        .await
        .expect_err("a mismatched pair is refused");
    assert!(
        refused.to_string().contains(&cert.display().to_string()),
        "{refused}"
    );
    let seen = tls_get(address, config.clone(), "a.test", "/").await.unwrap();
    assert_eq!(
        seen.server_cert,
        original.der(),
        "the previous certificate still serves"
    );
    let failures = format!("augur_listener_tls_reloads_total{{listener=\"{address}\",result=\"failure\"}}");
    assert!(metric(&proxy, &failures).await >= 1.0);

    // The matching certificate arrives: the watcher loads the pair without a SIGHUP.
    std::fs::write(&cert, &other.cert).unwrap();
    eventually(
        Duration::from_secs(5),
        "the renewed certificate is served",
        async || {
            tls_get(address, config.clone(), "a.test", "/")
                .await
                .is_ok_and(|seen| seen.server_cert == other.der())
        },
    )
    .await;
    let reloads = format!("augur_listener_tls_reloads_total{{listener=\"{address}\",result=\"success\"}}");
    assert!(metric(&proxy, &reloads).await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_turns_away_a_client_without_a_certificate() {
    let a = spawn("a").await;
    let servers = Authority::new();
    let clients = Authority::new();
    let files = servers.issue(&["a.test"]).write("mtls");
    let client_ca = temp_path("clients.pem");
    std::fs::write(&client_ca, clients.pem()).unwrap();
    let listener = format!(
        "[listeners.tls]\ncertificates = {}\nclient_ca = \"{}\"",
        certificates_toml(&[&files]),
        client_ca.display()
    );
    let proxy = start_proxy_with_listener(&listener, &echo_pool(&a.addr.to_string())).await;
    let address = proxy.listeners[0];

    let anonymous = tls_get(address, client_config(&servers, None), "a.test", "/").await;
    assert!(anonymous.is_err(), "no client certificate, no request");
    let stranger = servers.issue(&["client.test"]);
    let wrong_ca = tls_get(address, client_config(&servers, Some(&stranger)), "a.test", "/").await;
    assert!(wrong_ca.is_err(), "a certificate from another CA is refused");
    assert_eq!(a.hits(), 0);

    let known = clients.issue(&["client.test"]);
    let seen = tls_get(address, client_config(&servers, Some(&known)), "a.test", "/")
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
    let failed =
        format!("augur_listener_connections_closed_total{{listener=\"{address}\",reason=\"tls_handshake\"}}");
    assert!(metric(&proxy, &failed).await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_certificate_does_not_load_does_not_start() {
    let authority = Authority::new();
    let (cert, key) = authority.issue(&["a.test"]).write("broken");
    std::fs::write(&cert, "not a certificate").unwrap();
    let text = config_with_listener(
        &format!(
            "[listeners.tls]\ncertificates = {}",
            certificates_toml(&[&(cert.clone(), key)])
        ),
        &echo_pool("127.0.0.1:9"),
    );
    let config = augur_proxy::Config::parse(&text, std::path::Path::new("<test>")).unwrap();
    let error = augur_proxy::start(config, None).await.err().expect("refused");
    let message = error.to_string();
    assert!(
        message.contains(&cert.display().to_string()) && message.contains("BEGIN CERTIFICATE"),
        "{message}"
    );
}
