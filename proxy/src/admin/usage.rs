//! `GET /admin/usage`: tokens and cost by tenant and model over a window.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::error;
use crate::clock;
use crate::state::Shared;
use crate::usage::Totals;

/// The query: `?window=1h&tenant=team-a` (both optional).
#[derive(Deserialize)]
pub struct UsageQuery {
    window: Option<String>,
    tenant: Option<String>,
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// The totals of the window asked for (default the last hour, in whole minutes, the current one
/// included), by tenant and model, the costliest first, with their sum.
pub async fn summary(State(shared): State<Arc<Shared>>, Query(query): Query<UsageQuery>) -> Response {
    let retention = shared.config.load().usage.retention;
    let window = match query.window.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_WINDOW.min(retention),
        Some(Ok(w)) if !w.is_zero() && w <= retention => w,
        Some(Ok(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "window must be more than 0 and at most usage.retention ({})",
                    humantime::format_duration(retention)
                ),
            )
        }
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, &format!("window: {e}")),
    };
    let rows = shared.usage.summary(window, query.tenant.as_deref());
    let mut total = Totals::default();
    for row in &rows {
        total.merge(&row.totals);
    }
    let until = clock::unix_now().as_secs();
    let minutes = window.as_secs().div_ceil(60);
    Json(json!({
        "window_seconds": minutes * 60,
        "from_unix": (until / 60 + 1).saturating_sub(minutes) * 60,
        "until_unix": until,
        "tenant": query.tenant,
        "total": total,
        "by_tenant_and_model": rows,
    }))
    .into_response()
}
