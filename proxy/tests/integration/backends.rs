//! Test backends: real HTTP/1.1 servers on 127.0.0.1 whose behaviour the request path picks and a
//! shared [`Control`] changes while a test runs. Every response names its backend in `x-backend`.
//!
//! Paths: `/echo` answers the request's headers as JSON; `/sse` streams three events 300 ms apart;
//! `/stall` sends a head and one chunk, then nothing; `/hang` never answers; `/healthz` answers
//! `health_status`; `/vllm-metrics` answers vLLM-format metrics while `health_status` is 200 and hangs
//! otherwise; `/ws` accepts an upgrade and echoes bytes. Anything else answers `status` with
//! the backend's name as body, after `delay_ms`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Knobs a test turns while the backend runs.
pub struct Control {
    /// Status of ordinary requests.
    pub status: AtomicU16,
    /// Whether ordinary answers promise more body than they send, then end the connection: a
    /// backend that breaks off mid-body.
    pub truncate: AtomicBool,
    /// Delay before answering ordinary requests, in ms.
    pub delay_ms: AtomicU64,
    /// Status of `/healthz`.
    pub health_status: AtomicU16,
    /// Ordinary requests received.
    pub hits: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
}

/// A running test backend; stops accepting when dropped.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub control: Arc<Control>,
    task: JoinHandle<()>,
}

impl TestBackend {
    pub fn hits(&self) -> usize {
        self.control.hits.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> usize {
        self.control.connections.load(Ordering::SeqCst)
    }
    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }
    pub fn set_truncate(&self, truncate: bool) {
        self.control.truncate.store(truncate, Ordering::SeqCst);
    }
    pub fn set_health(&self, status: u16) {
        self.control.health_status.store(status, Ordering::SeqCst);
    }
    pub fn set_delay(&self, delay: Duration) {
        self.control
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

/// Starts a backend named `name` on a free port.
pub async fn spawn(name: &str) -> TestBackend {
    spawn_at(name, "127.0.0.1:0").await
}

/// Starts a backend named `name` on `address` (another loopback address, say, for DNS records that
/// give one port to several backends).
pub async fn spawn_at(name: &str, address: &str) -> TestBackend {
    let listener = TcpListener::bind(address).await.expect("bind a test backend");
    let addr = listener.local_addr().unwrap();
    let control = Arc::new(Control {
        status: AtomicU16::new(200),
        truncate: AtomicBool::new(false),
        delay_ms: AtomicU64::new(0),
        health_status: AtomicU16::new(200),
        hits: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
    });
    let (c, n) = (control.clone(), name.to_owned());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.connections.fetch_add(1, Ordering::SeqCst);
            let (c, n) = (c.clone(), n.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (c, n) = (c.clone(), n.clone());
                    async move { Ok::<_, Infallible>(answer(req, &c, &n).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestBackend { addr, control, task }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn named(status: u16, name: &str, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("x-backend", name)
        .body(body)
        .unwrap()
}

async fn answer(mut req: Request<Incoming>, control: &Control, name: &str) -> Response<Body> {
    match req.uri().path() {
        "/healthz" => named(control.health_status.load(Ordering::SeqCst), name, full("health")),
        "/vllm-metrics" => {
            if control.health_status.load(Ordering::SeqCst) != 200 {
                std::future::pending::<()>().await;
            }
            let text = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 4\n\
                        # TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n";
            named(200, name, full(text))
        }
        "/echo" => {
            control.hits.fetch_add(1, Ordering::SeqCst);
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let json = serde_json::json!({ "headers": headers, "body": String::from_utf8_lossy(&body) });
            named(200, name, full(json.to_string()))
        }
        "/sse" => {
            control.hits.fetch_add(1, Ordering::SeqCst);
            let events = futures_stream(3, Duration::from_millis(300));
            let body = StreamBody::new(events).boxed();
            let mut r = named(200, name, body);
            r.headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            r
        }
        "/stall" => {
            control.hits.fetch_add(1, Ordering::SeqCst);
            named(
                200,
                name,
                StreamBody::new(futures_stream(1, Duration::from_secs(3600))).boxed(),
            )
        }
        "/flood" => {
            // 200 with a body that never ends, as fast as the reader takes it.
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                while tx
                    .send(Ok::<_, Infallible>(Frame::data(chunk.clone())))
                    .await
                    .is_ok()
                {}
            });
            let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            named(200, name, StreamBody::new(frames).boxed())
        }
        "/hang" => {
            control.hits.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            unreachable!()
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .header("x-backend", name)
                .body(full(""))
                .unwrap()
        }
        _ => {
            control.hits.fetch_add(1, Ordering::SeqCst);
            let delay = control.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let _ = req.into_body().collect().await;
            let status = control.status.load(Ordering::SeqCst);
            if !control.truncate.load(Ordering::SeqCst) {
                return named(status, name, full(name.to_owned()));
            }
            // A streamed body of unknown length, so hyper believes the header. It sends the head
            // and one frame while the body waits, then finds it short and closes the connection.
            let (tx, mut rx) = tokio::sync::mpsc::channel(1);
            let frame = Frame::data(Bytes::from(name.to_owned()));
            tokio::spawn(async move {
                if tx.send(Ok::<_, Infallible>(frame)).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let mut response = named(status, name, StreamBody::new(frames).boxed());
            response
                .headers_mut()
                .insert("content-length", (name.len() + 1000).into());
            response
        }
    }
}

/// `count` SSE events, the first at once and the rest `gap` apart, then (for a long gap) silence.
fn futures_stream(
    count: usize,
    gap: Duration,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        for i in 0..count {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let event = Frame::data(Bytes::from(format!("data: event {i}\n\n")));
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if gap > Duration::from_secs(60) {
            // Keep the stream open without data: a stalled backend.
            tokio::time::sleep(gap).await;
        }
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// An address that accepts no connection: a listener whose accept queue is full, so SYNs go
/// unanswered and a connect hangs until the client's own timeout. Keep the value alive while used.
pub struct BlackHole {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

pub fn black_hole() -> BlackHole {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
    }
    BlackHole {
        addr,
        _listener: socket,
        _fillers: fillers,
    }
}

/// Serves HTTP/1.1 on a free loopback port, answering every request with `answer`, for as long as
/// the test runs: a backend whose behaviour one test writes for itself.
pub async fn serve_fn<F, Fut, B>(answer: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a test backend");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let answer = answer.clone();
                    async move { Ok::<_, Infallible>(answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}
