//! A small webhook receiver for hints (`augur hints listen`): it verifies each request's signature and
//! timestamp, drops events whose id it has already accepted (senders retry, so the same hint may
//! arrive twice), and hands the rest on in arrival order.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::event::{CloudEvent, EVENT_TYPE};
use super::signature::{verify, Rejection, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Ids remembered for de-duplication.
const REMEMBERED_IDS: usize = 10_000;

/// What arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A new hint, verified.
    Hint(Box<CloudEvent>),
    /// A hint accepted before (a retry whose first answer was lost); acknowledged, not acted on.
    Duplicate(String),
    /// A request refused, and why.
    Rejected(String),
}

/// How the receiver checks requests.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// The shared HMAC key.
    pub secret: Vec<u8>,
    /// Most seconds between a request's signing and its arrival.
    pub max_age: Duration,
}

struct Receiver {
    config: ReceiverConfig,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    on_event: Box<dyn Fn(Received) + Send + Sync>,
}

impl Receiver {
    /// Records `id`; false when it was seen already.
    fn first_sighting(&self, id: &str) -> bool {
        let mut guard = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if !set.insert(id.to_owned()) {
            return false;
        }
        order.push_back(id.to_owned());
        if order.len() > REMEMBERED_IDS {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// The receiver's routes: a POST to any path is a hint.
pub fn router(config: ReceiverConfig, on_event: impl Fn(Received) + Send + Sync + 'static) -> Router {
    let receiver = Arc::new(Receiver {
        config,
        seen: Mutex::new((HashSet::new(), VecDeque::new())),
        on_event: Box::new(on_event),
    });
    Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(receiver)
}

/// Serves the receiver on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    config: ReceiverConfig,
    on_event: impl Fn(Received) + Send + Sync + 'static,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(config, on_event))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

fn refuse(receiver: &Receiver, status: StatusCode, message: String) -> Response {
    (receiver.on_event)(Received::Rejected(message.clone()));
    (status, Json(json!({ "error": message }))).into_response()
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = crate::clock::unix_now().as_secs();
    let checked = verify(
        &receiver.config.secret,
        header(TIMESTAMP_HEADER),
        header(SIGNATURE_HEADER),
        &body,
        now,
        receiver.config.max_age.as_secs(),
    );
    if let Err(rejection) = checked {
        let status = match rejection {
            Rejection::Malformed(_) => StatusCode::BAD_REQUEST,
            Rejection::BadSignature | Rejection::Stale { .. } => StatusCode::UNAUTHORIZED,
        };
        return refuse(&receiver, status, rejection.to_string());
    }
    let event: CloudEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => {
            return refuse(
                &receiver,
                StatusCode::BAD_REQUEST,
                format!("the body is not a hint CloudEvent: {e}"),
            )
        }
    };
    if event.specversion != "1.0" || event.kind != EVENT_TYPE {
        return refuse(
            &receiver,
            StatusCode::BAD_REQUEST,
            format!(
                "expected a CloudEvents 1.0 event of type {EVENT_TYPE}, got specversion {} type {}",
                event.specversion, event.kind
            ),
        );
    }
    if !receiver.first_sighting(&event.id) {
        (receiver.on_event)(Received::Duplicate(event.id.clone()));
        return Json(json!({ "status": "duplicate", "id": event.id })).into_response();
    }
    let id = event.id.clone();
    (receiver.on_event)(Received::Hint(Box::new(event)));
    Json(json!({ "status": "accepted", "id": id })).into_response()
}
