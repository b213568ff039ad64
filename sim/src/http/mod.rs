//! The HTTP front end: each backend of a scenario as a real server on loopback, behaving by the same
//! models and faults as the discrete-event front end, in real time from the moment it starts.

mod cpu_node;
mod gpu_node;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::behaviour::BackendBehaviour;
use crate::faults::FaultSchedule;
use crate::scenario::Scenario;

pub use cpu_node::CpuNode;
pub use gpu_node::GpuNode;

/// Response body of the simulated servers.
pub type SimBody = BoxBody<Bytes, Infallible>;

pub(crate) fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<SimBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).boxed())
        .expect("static parts are valid")
}

/// A node's clock and faults: where in the scenario it is now.
#[derive(Clone)]
pub(crate) struct Schedule {
    started: Instant,
    faults: FaultSchedule,
}

impl Schedule {
    pub(crate) fn now(&self) -> Duration {
        self.started.elapsed()
    }
}

/// One served backend.
#[derive(Debug, Clone)]
pub struct ServedBackend {
    /// Name in the scenario.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A scenario's backends, served until dropped.
pub struct Cluster {
    /// The backends, in scenario order.
    pub backends: Vec<ServedBackend>,
    _tasks: JoinSet<()>,
}

impl Cluster {
    /// The backends as a proxy config's `backends` array: `[{ address = "127.0.0.1:40001" }, ...]`.
    pub fn backends_toml(&self) -> String {
        let items: Vec<String> = self
            .backends
            .iter()
            .map(|b| format!("{{ address = \"{}\" }}", b.addr))
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// Serves every backend of `scenario` on `ip`, each on a free port.
pub async fn serve(scenario: &Scenario, ip: IpAddr, seed: u64) -> std::io::Result<Cluster> {
    let mut tasks = JoinSet::new();
    let mut backends = Vec::new();
    let started = Instant::now();
    for (i, backend) in scenario.backends.iter().enumerate() {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let schedule = Schedule {
            started,
            faults: FaultSchedule::for_backend(&scenario.faults, i, scenario.epoch_unix_s),
        };
        let node = match backend.behaviour {
            BackendBehaviour::Cpu(model) => {
                Node::Cpu(Arc::new(CpuNode::new(model, schedule.clone(), seed ^ i as u64)))
            }
            BackendBehaviour::Gpu(model) => Node::Gpu(Arc::new(GpuNode::new(
                &backend.name,
                model,
                schedule.clone(),
                seed ^ i as u64,
            ))),
        };
        backends.push(ServedBackend {
            name: backend.name.clone(),
            addr,
        });
        tasks.spawn(accept_loop(listener, node, schedule, backend.name.clone()));
    }
    Ok(Cluster {
        backends,
        _tasks: tasks,
    })
}

#[derive(Clone)]
enum Node {
    Cpu(Arc<CpuNode>),
    Gpu(Arc<GpuNode>),
}

/// Header naming the backend that answered, so clients behind a proxy can see the spread.
pub const BACKEND_HEADER: &str = "x-sim-backend";

async fn accept_loop(listener: TcpListener, node: Node, schedule: Schedule, name: String) {
    let name =
        hyper::header::HeaderValue::from_str(&name).unwrap_or(hyper::header::HeaderValue::from_static("sim"));
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if schedule.faults.crashed(schedule.now()) {
            // A crashed process: the connection is closed before a byte is read.
            drop(stream);
            continue;
        }
        let (node, name) = (node.clone(), name.clone());
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let (node, name) = (node.clone(), name.clone());
            async move {
                let mut response = match node {
                    Node::Cpu(n) => n.handle(request).await,
                    Node::Gpu(n) => n.handle(request).await,
                };
                response.headers_mut().insert(BACKEND_HEADER, name);
                Ok::<_, Infallible>(response)
            }
        });
        connections.spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}
