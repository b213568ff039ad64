//! The least a proxy on augur's stack can do per request, as a yardstick for the data plane's
//! benchmarks (`bench/data-plane.sh`, issue 14): one current-thread tokio runtime, hyper's HTTP/1.1
//! server, and hyper-util's pooled client forwarding every request to one backend, with nothing
//! else: no routing, limits, headers, metrics, logs, timeouts or policy. What it costs per request
//! is what augur's own work comes on top of.
//!
//!   cargo run --release -p augur-proxy --example bare_hyper_proxy -- LISTEN_ADDR BACKEND_ADDR

use std::convert::Infallible;
use std::net::SocketAddr;

use http::uri::{Authority, Scheme, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_hyper_proxy LISTEN_ADDR BACKEND_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is host:port");
    let backend: Authority = backend.parse().expect("BACKEND_ADDR is host:port");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(serve(listen, backend));
}

async fn serve(listen: SocketAddr, backend: Authority) {
    let listener = TcpListener::bind(listen)
        .await
        .expect("the listen address is free");
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, backend) = (client.clone(), backend.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (client, backend) = (client.clone(), backend.clone());
                async move { Ok::<_, Infallible>(forward(&client, backend, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: &Client<HttpConnector, Incoming>,
    backend: Authority,
    request: Request<Incoming>,
) -> Response<http_body_util::Either<Incoming, String>> {
    let (mut parts, body) = request.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(backend);
    parts.uri = Uri::from_parts(uri).expect("scheme, authority and the request's path");
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(http_body_util::Either::Left),
        Err(e) => Response::builder()
            .status(502)
            .body(http_body_util::Either::Right(e.to_string()))
            .expect("a plain response"),
    }
}
