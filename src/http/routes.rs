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
