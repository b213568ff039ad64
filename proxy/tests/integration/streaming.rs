//! Bodies stream both ways: server-sent events reach the client event by event, upgrades become
//! tunnels, and HTTP/2 clients (prior knowledge) are served.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backends::spawn;
use crate::harness::*;

fn one_backend(address: std::net::SocketAddr) -> String {
    format!("[[routes]]\npool = \"p\"\n[pools.p]\nbackends = [{{ address = \"{address}\" }}]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_before_the_response_ends() {
    let backend = spawn("sse").await;
    let proxy = start_proxy(&one_backend(backend.addr)).await;
    let started = Instant::now();
    let request = Request::get(url(&proxy, "/sse"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(EXCHANGE_LIMIT, client().request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = tokio::time::timeout(EXCHANGE_LIMIT, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push((started.elapsed(), String::from_utf8_lossy(&data).into_owned()));
        }
    }
    let end = started.elapsed();
    assert_eq!(
        arrivals.len(),
        3,
        "three separate events, not one buffered blob: {arrivals:?}"
    );
    assert_eq!(arrivals[0].1, "data: event 0\n\n");
    // The backend spaces events 300 ms apart: the first must arrive well before the last was sent.
    assert!(
        arrivals[0].0 + Duration::from_millis(450) < end,
        "{arrivals:?} end {end:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_becomes_a_two_way_tunnel() {
    let backend = spawn("ws").await;
    let proxy = start_proxy(&one_backend(backend.addr)).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.listeners[0]).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(EXCHANGE_LIMIT, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for message in ["ping", "second message"] {
        stream.write_all(message.as_bytes()).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(EXCHANGE_LIMIT, stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message.as_bytes());
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_clients_are_served() {
    let backend = spawn("h1-backend").await;
    let proxy = start_proxy(&one_backend(backend.addr)).await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let request = Request::post(url(&proxy, "/echo"))
        .body(Full::new(Bytes::from("over h2")))
        .unwrap();
    let response = tokio::time::timeout(EXCHANGE_LIMIT, h2.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        echoed["body"], "over h2",
        "the request body streams through to the HTTP/1.1 backend"
    );
    assert_eq!(
        echoed["headers"]["host"],
        proxy.listeners[0].to_string(),
        "h2 :authority becomes Host"
    );
    proxy.shutdown().await;
}
