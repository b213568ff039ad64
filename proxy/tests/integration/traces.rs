//! Traces over OTLP/HTTP to a collector stand-in on loopback: the spans of a request and of its
//! attempts arrive with the routing decision on them, parented on the client's `traceparent`, and
//! the backend gets the attempt's context.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

use crate::backends::spawn;
use crate::harness::*;

/// The stand-in: answers every POST to `/v1/traces` with 200 and keeps the spans it decoded.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
    let kept = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        let mut kept = kept.lock().unwrap();
                        for resource in export.resource_spans {
                            for scope in resource.scope_spans {
                                kept.extend(scope.spans);
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

fn attribute(span: &Span, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

fn text(span: &Span, key: &str) -> String {
    match attribute(span, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?} on {span:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_carry_the_decision_and_join_the_clients_trace() {
    let (a, b) = (spawn("a").await, spawn("b").await);
    let (address, spans) = collector().await;
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let proxy = start_proxy(&format!(
        "[[routes]]\nname = \"api\"\npool = \"p\"\n[pools.p]\npolicy = {{ kind = \"predictive\" }}\nbackends = {}\n\
         [models]\ndir = \"{}\"\n\
         [tracing]\notlp_endpoint = \"http://{address}/v1/traces\"\nservice_name = \"augur-test\"\nflush_interval = \"100ms\"\n",
        backends_toml(&[(&a, 1), (&b, 1)]),
        models.display()
    ))
    .await;
    let client = client();
    eventually(
        Duration::from_secs(5),
        "the pool scores with the models",
        async || {
            admin(&client, &proxy, "GET", "/admin/models").await.json()["predictive_pools"]["p"]
                ["scoring_with_models"]
                == true
        },
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let echoed = get(
        &client,
        &url(&proxy, "/echo"),
        &[("traceparent", &format!("00-{trace_id}-{client_span}-01"))],
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the request's two spans reach the collector",
        async || spans.lock().unwrap().len() >= 2,
    )
    .await;
    let spans = spans.lock().unwrap().clone();
    let request = spans
        .iter()
        .find(|s| s.name == "GET api")
        .expect("the request's span");
    let attempt = spans
        .iter()
        .find(|s| s.name == "attempt 1")
        .expect("the attempt's span");

    // The request joins the client's trace; the attempt is its child.
    assert_eq!(hex(&request.trace_id), trace_id);
    assert_eq!(hex(&request.parent_span_id), client_span);
    assert_eq!(attempt.trace_id, request.trace_id);
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert_eq!(text(request, "augur.policy"), "predictive");
    assert_eq!(text(request, "augur.pool"), "p");
    assert_eq!(
        attribute(request, "http.response.status_code"),
        Some(Value::IntValue(200))
    );

    // The decision: every candidate's score, the pick, its propensity and the model version.
    let Some(Value::ArrayValue(candidates)) = attribute(attempt, "augur.candidates") else {
        panic!("no candidates on {attempt:?}");
    };
    let candidates: Vec<String> = candidates
        .values
        .into_iter()
        .filter_map(|v| match v.value {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(candidates.len(), 2, "{candidates:?}");
    for backend in [a.addr, b.addr] {
        assert!(
            candidates.iter().any(|c| c.starts_with(&format!("{backend}="))),
            "{candidates:?}"
        );
    }
    let pick = text(attempt, "augur.pick");
    assert!(pick == a.addr.to_string() || pick == b.addr.to_string(), "{pick}");
    assert!(
        matches!(attribute(attempt, "augur.propensity"), Some(Value::DoubleValue(p)) if p > 0.0 && p <= 1.0)
    );
    assert!(!text(attempt, "augur.model_version").is_empty());

    // The backend got the attempt's context, not the client's.
    let sent: serde_json::Value = serde_json::from_str(&echoed.body).unwrap();
    let forwarded = sent["headers"]["traceparent"]
        .as_str()
        .expect("a traceparent reached the backend");
    assert_eq!(forwarded, format!("00-{trace_id}-{}-01", hex(&attempt.span_id)));
    assert_eq!(metric(&proxy, "augur_tracing_spans_dropped_total").await, 0.0);
    proxy.shutdown().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
