//! The listener's limits, tried as an attacker would through raw sockets: silent and trickling
//! connections, too many connections, clients that stop reading, oversized heads and bodies, loops
//! and idle tunnels. Each limit answers with its status or closes, and counts in a metric.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backends::spawn;
use crate::harness::*;

fn one_pool(address: &str) -> String {
    format!("[[routes]]\npool = \"web\"\n[pools.web]\nbackends = [{{ address = \"{address}\" }}]\n")
}

/// A proxy in front of one backend, its listener under `limits` (lines of `[listeners.limits]`).
async fn limited_proxy(limits: &str) -> (crate::backends::TestBackend, augur_proxy::Running) {
    let a = spawn("a").await;
    let limits = format!("[listeners.limits]\n{limits}");
    let proxy = start_proxy_with_listener(&limits, &one_pool(&a.addr.to_string())).await;
    (a, proxy)
}

/// How many connections the proxy's first listener closed for `reason`, once at least `expected`
/// are counted: a client sees the close a moment before the proxy's task counts it.
async fn closed_for(proxy: &augur_proxy::Running, reason: &str, expected: f64) -> f64 {
    let series = format!(
        "augur_listener_connections_closed_total{{listener=\"{}\",reason=\"{reason}\"}}",
        proxy.listeners[0]
    );
    let mut count = 0.0;
    eventually(
        Duration::from_secs(5),
        &format!("{expected} closed for {reason}"),
        async || {
            count = metric(proxy, &series).await;
            count >= expected
        },
    )
    .await;
    count
}

/// Reads until the proxy closes the connection (or resets it); fails if it is still open at `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the proxy closed the connection in time");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_from_accept() {
    let (a, proxy) = limited_proxy("header_read_timeout = \"400ms\"").await;
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
        if i % 2 == 1 {
            // One byte: not yet enough to tell HTTP/1 from HTTP/2.
            stream.write_all(b"P").await.unwrap();
        }
        silent.push(stream);
    }
    // A client that trickles a head a byte at a time never finishes it in time either.
    let mut trickler = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    let trickle = async {
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if trickler.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the trickling client was cut off");
    for stream in &mut silent {
        let answer = closed_within(stream, Duration::from_secs(5)).await;
        assert!(answer.is_empty(), "closed without an answer");
    }
    let closed = closed_for(&proxy, "header_timeout", 21.0).await;
    assert!(closed >= 21.0, "{closed} header timeouts counted");
    assert_eq!(a.hits(), 0);
    // The listener still serves.
    assert_eq!(get(&client(), &url(&proxy, "/"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once_and_counted() {
    let (_backend, proxy) = limited_proxy("max_connections = 4\nheader_read_timeout = \"30s\"").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(proxy.listeners[0]).await.unwrap());
    }
    // The four are accepted once the proxy has counted them; the fifth is closed unanswered.
    let open = format!(
        "augur_listener_connections_open{{listener=\"{}\"}}",
        proxy.listeners[0]
    );
    eventually(Duration::from_secs(5), "four connections open", async || {
        metric(&proxy, &open).await >= 4.0
    })
    .await;
    let mut extra = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(closed_within(&mut extra, Duration::from_secs(5)).await.is_empty());
    let refused = closed_for(&proxy, "limit", 1.0).await;
    assert!(refused >= 1.0);
    drop(held);
    // With the slots free again, requests are served.
    eventually(
        Duration::from_secs(5),
        "a request served after the others closed",
        async || {
            let mut stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
            let _ = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            closed_within(&mut stream, Duration::from_secs(5))
                .await
                .starts_with(b"HTTP/1.1 200")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_sent_away() {
    let (_backend, proxy) = limited_proxy("idle_timeout = \"300ms\"").await;
    let stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 by prior knowledge");
    let connection = tokio::spawn(connection);
    let request = Request::get(url(&proxy, "/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("served over h2");
    assert_eq!(response.status(), 200);
    let _ = response.into_body().collect().await;
    // No request for the idle timeout: a GOAWAY, then the connection ends.
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("the idle connection was closed")
        .unwrap()
        .expect("closed cleanly, with a GOAWAY");
    let idle = closed_for(&proxy, "idle", 1.0).await;
    assert_eq!(idle, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_frees_its_backend() {
    let (a, proxy) = limited_proxy("stream_idle_timeout = \"500ms\"").await;
    let mut stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    stream
        .write_all(b"GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The backend's endless body fills every buffer between it and this client, which reads nothing.
    let in_flight = format!("augur_in_flight_requests{{backend=\"{}\",pool=\"web\"}}", a.addr);
    eventually(Duration::from_secs(5), "the flood is in flight", async || {
        metric(&proxy, &in_flight).await == 1.0
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the stalled stream was closed",
        async || metric(&proxy, &in_flight).await == 0.0,
    )
    .await;
    let stalled = closed_for(&proxy, "stream_idle", 1.0).await;
    assert_eq!(stalled, 1.0);
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_the_client_stops_reading_is_cut_while_its_connection_goes_on() {
    let (a, proxy) = limited_proxy("stream_idle_timeout = \"500ms\"").await;
    let stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    // The stream window is the protocol's default 64 KiB, so the unread stream stalls soon.
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .expect("h2 by prior knowledge");
    tokio::spawn(connection);
    let get = |path: &str| {
        Request::get(url(&proxy, path))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let unread = tokio::time::timeout(EXCHANGE_LIMIT, sender.clone().send_request(get("/flood")))
        .await
        .expect("in time")
        .expect("the flood's head");
    let in_flight = format!("augur_in_flight_requests{{backend=\"{}\",pool=\"web\"}}", a.addr);
    // Another stream on the same connection keeps bytes moving all the while.
    let mut served = 0;
    let started = tokio::time::Instant::now();
    loop {
        let response = tokio::time::timeout(EXCHANGE_LIMIT, sender.clone().send_request(get("/")))
            .await
            .expect("in time")
            .expect("served over the same connection");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("a whole body");
        served += 1;
        // Only the flood can be in flight now.
        if metric(&proxy, &in_flight).await == 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the unread stream was never cut"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served >= 3,
        "the connection went on while the stream stalled ({served} requests)"
    );
    let cut = format!(
        "augur_listener_streams_reset_total{{listener=\"{}\",reason=\"stream_idle\"}}",
        proxy.listeners[0]
    );
    assert_eq!(metric(&proxy, &cut).await, 1.0);
    assert_eq!(
        closed_for(&proxy, "stream_idle", 0.0).await,
        0.0,
        "the connection was not closed"
    );
    // Read now, the cut stream fails rather than passing for a whole body.
    let read = tokio::time::timeout(EXCHANGE_LIMIT, unread.into_body().collect())
        .await
        .expect("in time");
    assert!(read.is_err(), "the cut stream was reset");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_gets_431_and_an_oversized_body_413() {
    let (a, proxy) = limited_proxy("max_request_header_bytes = 16384\nmax_request_body_bytes = 1000").await;
    let client = client();
    let big = "x".repeat(20_000);
    let mut stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    let head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = closed_within(&mut stream, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let fits = get(&client, &url(&proxy, "/echo"), &[("x-fits", &"y".repeat(8_000))]).await;
    assert_eq!(fits.status, 200, "a head under the limit passes");

    // Declared too long: refused before the backend sees it.
    let declared = Request::post(url(&proxy, "/echo"))
        .body(Full::new(Bytes::from(vec![b'a'; 2_000])))
        .unwrap();
    let reply = send(&client, declared).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.json()["error"], "body_too_large");
    assert_eq!(a.hits(), 1, "only the request that fit reached the backend");

    // Streamed without a length: cut off once it passes the limit.
    let chunks = (0..4).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'b'; 400]))));
    let streamed = StreamBody::new(futures_util::stream::iter(chunks));
    let raw = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = Request::post(url(&proxy, "/echo")).body(streamed).unwrap();
    let response = tokio::time::timeout(EXCHANGE_LIMIT, raw.request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 413);
    let under = Request::post(url(&proxy, "/echo"))
        .body(Full::new(Bytes::from(vec![b'c'; 900])))
        .unwrap();
    assert_eq!(send(&client, under).await.status, 200);
    let rejected = |reason: &str| {
        format!(
            "augur_listener_requests_rejected_total{{listener=\"{}\",reason=\"{reason}\"}}",
            proxy.listeners[0]
        )
    };
    assert_eq!(metric(&proxy, &rejected("header_too_large")).await, 1.0);
    assert_eq!(metric(&proxy, &rejected("body_too_large")).await, 2.0);
    // Neither the too-long body nor its cut counts against the backend.
    let failures = metric(
        &proxy,
        &format!(
            "augur_upstream_attempts_total{{backend=\"{}\",outcome=\"reset\",pool=\"web\"}}",
            a.addr
        ),
    )
    .await;
    assert_eq!(failures, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_comes_back_is_refused_as_a_loop() {
    let a = spawn("a").await;
    let proxy = start_proxy(&one_pool(&a.addr.to_string())).await;
    let client = client();
    let echoed = get(&client, &url(&proxy, "/echo"), &[("via", "1.0 upstream-lb")]).await;
    // The backend saw this proxy's entry last; sent back to the proxy, the request has gone round.
    let via = echoed.json()["headers"]["via"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(via.starts_with("1.1 "), "the proxy adds itself to Via: {via}");
    let round = format!("1.0 upstream-lb, {via}");
    let looped = get(&client, &url(&proxy, "/echo"), &[("via", &round)]).await;
    assert_eq!(looped.status, 508);
    assert_eq!(looped.json()["error"], "loop_detected");
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_and_frees_its_backend() {
    let a = spawn("a").await;
    let proxy = start_proxy(&format!(
        "{}timeouts = {{ tunnel_idle = \"400ms\" }}\n",
        one_pool(&a.addr.to_string())
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.listeners[0]).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: WebSocket\r\n\r\n")
        .await
        .unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(EXCHANGE_LIMIT, stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(EXCHANGE_LIMIT, stream.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping", "the tunnel carries bytes both ways");
    closed_within(&mut stream, Duration::from_secs(5)).await;
    let in_flight = format!("augur_in_flight_requests{{backend=\"{}\",pool=\"web\"}}", a.addr);
    eventually(
        Duration::from_secs(5),
        "the tunnel's backend slot is free",
        async || metric(&proxy, &in_flight).await == 0.0,
    )
    .await;
}
