//! Backends over HTTPS, HTTP/2 (ALPN) and h2c, with certificates the tests make; gRPC end to end
//! with its trailers; gRPC health checks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpStream;

use crate::harness::*;
use crate::tls::{Authority, Pair};

/// A backend on 127.0.0.1 that answers with the HTTP version it was reached over (`x-version`) and
/// whether it saw `te: trailers`; `/grpc` answers like a gRPC server, with `grpc-status` in trailers.
/// Over TLS when `tls` is given (offering `alpn`), else h2c by prior knowledge.
async fn versioned_backend(tls: Option<(&Pair, &[&[u8]])>) -> std::net::SocketAddr {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let acceptor = tls.map(|(pair, alpn)| {
        let key = PrivateKeyDer::from_pem_slice(pair.key.as_bytes()).unwrap();
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![pair.der()], key)
                .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        let te = request
                            .headers()
                            .get("te")
                            .map(|v| v.to_str().unwrap_or("").to_owned());
                        let path = request.uri().path().to_owned();
                        let grpc = path.starts_with("/grpc");
                        let asked = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        trailers.insert("grpc-message", "done".parse().unwrap());
                        // The health service: every service is SERVING but one named `sick` (NOT_SERVING).
                        let health = if asked.windows(4).any(|w| w == b"sick") {
                            2
                        } else {
                            1
                        };
                        let message = match path.as_str() {
                            "/grpc.health.v1.Health/Check" => Bytes::from(vec![0, 0, 0, 0, 2, 0x08, health]),
                            _ => Bytes::from_static(b"\0\0\0\0\x02hi"),
                        };
                        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = if grpc {
                            vec![Ok(Frame::data(message)), Ok(Frame::trailers(trailers))]
                        } else {
                            vec![Ok(Frame::data(Bytes::from(version.clone())))]
                        };
                        let body = StreamBody::new(futures_util::stream::iter(frames));
                        let response = hyper::Response::builder()
                            .header("x-version", version)
                            .header("x-te", te.unwrap_or_default())
                            .header(
                                "content-type",
                                if grpc { "application/grpc" } else { "text/plain" },
                            )
                            .body(body)
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                        Err(_) => return,
                    },
                    None => builder.serve_connection(TokioIo::new(stream), service).await,
                };
            });
        }
    });
    address
}

fn tls_pool(address: std::net::SocketAddr, settings: &str) -> String {
    format!("[[routes]]\npool = \"up\"\n[pools.up]\nbackends = [{{ address = \"{address}\" }}]\n{settings}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_over_https_http2_and_h2c() {
    let authority = Authority::new();
    let ca = temp_path("upstream-ca.pem");
    std::fs::write(&ca, authority.pem()).unwrap();
    let named = authority.issue(&["backend.test"]);
    let by_ip = authority.issue(&["127.0.0.1"]);
    let https = versioned_backend(Some((&named, &[b"http/1.1"]))).await;
    let h2 = versioned_backend(Some((&by_ip, &[b"h2"]))).await;
    let h2c = versioned_backend(None).await;
    let client = client();
    let cases = [
        (
            https,
            format!(
                "tls = {{ ca = \"{}\", server_name = \"backend.test\" }}",
                ca.display()
            ),
            "HTTP/1.1",
        ),
        (
            h2,
            format!("protocol = \"h2\"\ntls = {{ ca = \"{}\" }}", ca.display()),
            "HTTP/2.0",
        ),
        (h2c, "protocol = \"h2c\"".to_owned(), "HTTP/2.0"),
    ];
    for (address, settings, version) in cases {
        let proxy = start_proxy(&tls_pool(address, &settings)).await;
        let reply = get(&client, &url(&proxy, "/"), &[]).await;
        assert_eq!(reply.status, 200, "{settings}: {}", reply.body);
        assert_eq!(reply.headers["x-version"], version, "{settings}");
        proxy.shutdown().await;
    }
    // A backend whose certificate no configured CA signed is not trusted: 502, and nothing sent.
    let stranger = Authority::new();
    let other_ca = temp_path("other-ca.pem");
    std::fs::write(&other_ca, stranger.pem()).unwrap();
    let proxy = start_proxy(&tls_pool(
        https,
        &format!(
            "tls = {{ ca = \"{}\", server_name = \"backend.test\" }}",
            other_ca.display()
        ),
    ))
    .await;
    let reply = get(&client, &url(&proxy, "/"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_end_to_end_with_its_trailers() {
    let backend = versioned_backend(None).await;
    let proxy = start_proxy(&tls_pool(backend, "protocol = \"h2c\"")).await;
    let stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::post(url(&proxy, "/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02yo")))
        .unwrap();
    let response = tokio::time::timeout(EXCHANGE_LIMIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-te"],
        "trailers",
        "the backend got `te: trailers`"
    );
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_ca_file_is_missing_does_not_start() {
    let missing = temp_path("no-such-ca.pem");
    let text = config_text(&tls_pool(
        "127.0.0.1:9".parse().unwrap(),
        &format!("tls = {{ ca = \"{}\" }}", missing.display()),
    ));
    let config = augur_proxy::Config::parse(&text, std::path::Path::new("<test>")).unwrap();
    let error = augur_proxy::start(config, None)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains("pools.up.tls") && error.contains(&missing.display().to_string()),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_pass_a_serving_service_and_fail_the_rest() {
    let backend = versioned_backend(None).await;
    let client = client();
    for (service, healthy) in [("", true), ("sick", false)] {
        let settings = format!(
            "protocol = \"h2c\"\nhealth_check = {{ grpc_service = \"{service}\", interval = \"50ms\", \
             healthy_threshold = 1, unhealthy_threshold = 1 }}"
        );
        let proxy = start_proxy(&tls_pool(backend, &settings)).await;
        let checks = format!(
            "augur_health_checks_total{{backend=\"{backend}\",pool=\"up\",result=\"{}\"}}",
            if healthy { "passed" } else { "failed" }
        );
        eventually(
            Duration::from_secs(5),
            "a health check of each kind",
            async || metric(&proxy, &checks).await >= 1.0,
        )
        .await;
        eventually(
            Duration::from_secs(5),
            "the backend's health as its service says",
            async || {
                let state = admin(&client, &proxy, "GET", "/admin/backends").await.json();
                state["pools"][0]["backends"][0]["healthy"] == healthy
            },
        )
        .await;
        proxy.shutdown().await;
    }
}
