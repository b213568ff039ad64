//! A stand-in Kubernetes API server on 127.0.0.1 for the EndpointSlices of one namespace: a list
//! answered with its resource version, and watches that stream newline-delimited events from a
//! version on, as the API server does (including the 410 "Expired" that makes a client list again).
//! The bodies have the API's own shapes, as `kubectl get endpointslices -o json` and `--watch -o
//! json` show them: list items without `kind`, event objects with it, versions as strings.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    version: u64,
    slices: BTreeMap<String, Value>,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    lists: usize,
    watch_versions: Vec<String>,
}

/// The running server; stops when dropped.
pub struct KubeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An EndpointSlice of Service `api` in namespace `prod`: `endpoints` are (address, ready, pod,
/// zone), all on port `port` named `http`.
pub fn slice(name: &str, port: u16, endpoints: &[(&str, bool, &str, &str)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, ready, pod, zone)| {
            json!({
                "addresses": [address],
                "conditions": { "ready": ready, "serving": ready, "terminating": !ready },
                "targetRef": { "kind": "Pod", "name": pod, "namespace": "prod", "uid": format!("uid-{pod}") },
                "nodeName": "node-1",
                "zone": zone,
            })
        })
        .collect();
    json!({
        "metadata": {
            "name": name,
            "generateName": "api-",
            "namespace": "prod",
            "uid": format!("uid-{name}"),
            "labels": { "kubernetes.io/service-name": "api", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" },
            "ownerReferences": [{ "apiVersion": "v1", "kind": "Service", "name": "api", "uid": "uid-svc", "controller": true, "blockOwnerDeletion": true }],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
    })
}

impl KubeApi {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            version: 100,
            ..State::default()
        }));
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &s)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// Creates or replaces a slice, as the EndpointSlice controller does when pods change.
    pub fn apply(&self, slice: Value) {
        let mut state = self.state.lock().unwrap();
        let name = slice["metadata"]["name"].as_str().unwrap().to_owned();
        let kind = if state.slices.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let object = state.stamp(slice);
        state.slices.insert(name, object.clone());
        state.send(json!({ "type": kind, "object": with_kind(object) }));
    }

    /// Deletes a slice.
    pub fn delete(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        if let Some(slice) = state.slices.remove(name) {
            let object = state.stamp(slice);
            state.send(json!({ "type": "DELETED", "object": with_kind(object) }));
        }
    }

    /// Sends every watch a bookmark at a new version, then ends it, as the server does when a
    /// watch's `timeoutSeconds` runs out.
    pub fn bookmark_and_end_watches(&self) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let version = state.version.to_string();
        state.send(json!({
            "type": "BOOKMARK",
            "object": { "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                        "metadata": { "resourceVersion": version } },
        }));
        state.watchers.clear();
    }

    /// Watches opened so far, and the version each asked to start from.
    pub fn watch_versions(&self) -> Vec<String> {
        self.state.lock().unwrap().watch_versions.clone()
    }

    /// Ends every watch with 410 Expired, as a compacted etcd makes the server do.
    pub fn expire_watches(&self) {
        let mut state = self.state.lock().unwrap();
        state.send(json!({
            "type": "ERROR",
            "object": { "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "too old resource version: 100 (150)", "reason": "Expired", "code": 410 },
        }));
        state.watchers.clear();
    }

    /// Lists served so far.
    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }
}

impl State {
    /// Gives `slice` the next resource version.
    fn stamp(&mut self, mut slice: Value) -> Value {
        self.version += 1;
        slice["metadata"]["resourceVersion"] = json!(self.version.to_string());
        slice
    }

    fn send(&mut self, event: Value) {
        let line = Bytes::from(format!("{event}\n"));
        self.watchers.retain(|w| w.send(line.clone()).is_ok());
    }
}

fn with_kind(mut object: Value) -> Value {
    object["kind"] = json!("EndpointSlice");
    object["apiVersion"] = json!("discovery.k8s.io/v1");
    object
}

type Body = BoxBody<Bytes, Infallible>;

fn answer(req: &Request<Incoming>, state: &Mutex<State>) -> Response<Body> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if path != "/apis/discovery.k8s.io/v1/namespaces/prod/endpointslices"
        || !query.contains("labelSelector=kubernetes.io%2Fservice-name%3Dapi")
    {
        let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("unexpected request {path}?{query}"), "reason": "NotFound", "code": 404 });
        return json_response(StatusCode::NOT_FOUND, &status);
    }
    let mut state = state.lock().unwrap();
    if query.contains("watch=true") {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        state.watchers.push(tx);
        let version = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("resourceVersion="))
            .unwrap_or("")
            .to_owned();
        state.watch_versions.push(version);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let line = rx.recv().await?;
            Some((Ok::<_, Infallible>(Frame::data(line)), rx))
        });
        return Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(frames).boxed())
            .unwrap();
    }
    state.lists += 1;
    let list = json!({
        "kind": "EndpointSliceList",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": { "resourceVersion": state.version.to_string() },
        "items": state.slices.values().collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, &list)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .unwrap()
}
