//! Route handlers.

use crate::config::Config;
use crate::health::HealthBoard;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use tokio::sync::watch;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// Where `/api/ops/db-copy` may write (under the data directory only).
    pub data_dir: std::path::PathBuf,
    pub board: HealthBoard,
    pub metrics: PrometheusHandle,
    /// The running configuration, replaced on every applied reload.
    pub config: watch::Receiver<Arc<Config>>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/config", get(config))
        .route("/api/status", get(status))
        .route("/api/alerts", get(alerts))
        .route("/api/ops/db-copy", axum::routing::post(db_copy))
        .with_state(state)
}

async fn metrics(State(state): State<ApiState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

/// 200 when every permanent child is up; 503 naming what is down.
async fn healthz(State(state): State<ApiState>) -> Response {
    let report = state.board.report();
    let status = if report.healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report)).into_response()
}

/// The running configuration, with every password redacted.
async fn config(State(state): State<ApiState>) -> Json<Config> {
    Json(state.config.borrow().as_ref().clone())
}

/// Everything the health board knows: supervised children, components and
/// their details (cameras' phase, frame counts, last error).
async fn status(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let report = state.board.report();
    Json(serde_json::json!({
        "healthy": report.healthy,
        "down": report.down,
        "children": state.board.snapshot(),
        "components": state.board.components(),
        "details": state.board.details(),
    }))
}

/// `/api/alerts?since=7d&camera=front&rule=r&class=person&limit=100`
#[derive(Debug, serde::Deserialize)]
pub struct AlertsParams {
    since: Option<String>,
    camera: Option<String>,
    rule: Option<String>,
    class: Option<String>,
    limit: Option<usize>,
}

/// Stored alerts, oldest first, as JSON.
async fn alerts(axum::extract::Query(p): axum::extract::Query<AlertsParams>) -> Response {
    use crate::store::actor::{NAME, StoreMsg};
    let since = match p.since.as_deref().map(crate::base::duration::parse).transpose() {
        Ok(since) => since,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": format!("since: {e}") })))
                .into_response();
        }
    };
    let query =
        crate::store::AlertQuery { camera: p.camera, rule: p.rule, class: p.class, limit: p.limit, since_us: None }
            .since(since);
    let Some(cell) = ractor::registry::where_is(NAME) else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "the event store is down" })))
            .into_response();
    };
    let store: ractor::ActorRef<StoreMsg> = cell.into();
    match ractor::call_t!(store, StoreMsg::Alerts, 10_000, query) {
        Ok(Ok(alerts)) => Json(alerts).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e }))).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}

/// A consistent copy of the database for `ops backup` while the service
/// runs, written under `data/backup-tmp/`; answers its path.
async fn db_copy(State(state): State<ApiState>) -> Response {
    use crate::store::actor::{NAME, StoreMsg};
    let dest = state
        .data_dir
        .join("backup-tmp")
        .join(format!("events-{}.redb", chrono::Local::now().format("%Y%m%d-%H%M%S%.3f")));
    if let Some(dir) = dest.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e.to_string() })))
            .into_response();
    }
    let Some(cell) = ractor::registry::where_is(NAME) else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "the event store is down" })))
            .into_response();
    };
    let store: ractor::ActorRef<StoreMsg> = cell.into();
    match ractor::call_t!(store, StoreMsg::CopyTo, 120_000, dest) {
        Ok(Ok(path)) => Json(serde_json::json!({ "path": path })).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({ "error": e }))).into_response(),
        Err(e) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
