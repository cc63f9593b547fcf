//! Route handlers.

use crate::config::Config;
use crate::health::HealthBoard;
use crate::store::Query;
use crate::store::actor::{NAME as STORE, StoreMsg};
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
    /// The event store for reading, off the store actor.
    pub store: crate::store::SharedStore,
    /// The web page's users and sessions.
    pub auth: std::sync::Arc<crate::web::auth::WebAuth>,
    /// Every camera's last analysed frame.
    pub latest: crate::web::latest::LatestFrames,
    /// CPU and RSS over the last hour.
    pub history: crate::resources::History,
    /// This node and its peers, when the config has a `cluster` section.
    pub cluster: Option<crate::cluster::ClusterView>,
}

pub fn router(state: ApiState) -> Router {
    #[cfg(feature = "fault-injection")]
    let router = crate::faults::routes::<ApiState>();
    #[cfg(not(feature = "fault-injection"))]
    let router = Router::new();
    router
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/config", get(config))
        .route("/api/status", get(status))
        .route("/api/alerts", get(alerts))
        .route("/api/events", get(events))
        .route("/api/cluster/alerts", get(cluster_alerts))
        .route("/api/cluster/events", get(cluster_events))
        .route("/api/snapshots/{*path}", get(snapshot))
        .merge(crate::web::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::web::auth::require_login))
        .layer(axum::middleware::from_fn_with_state(state.clone(), same_machine))
        .layer(axum::middleware::from_fn(bounded_time))
        .with_state(state)
}

/// The longest a request on the TCP listener may take.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers 503 for a request that takes longer than [`REQUEST_TIMEOUT`].
async fn bounded_time(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the request took too long"),
    }
}

/// The ops routes, and the reads the CLI makes: served only on the Unix socket [`OPS_SOCKET`] in the
/// data directory, which only root, the service's user and its group reach
/// (file mode 0660, and each peer checked with `SO_PEERCRED`), never on TCP.
pub fn ops_router(state: ApiState) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/config", get(config))
        .route("/api/alerts", get(alerts))
        .route("/api/events", get(events))
        .route("/api/cluster/alerts", get(cluster_alerts))
        .route("/api/cluster/events", get(cluster_events))
        .route("/api/ops/db-copy", axum::routing::post(db_copy))
        .route("/api/ops/compact", axum::routing::post(compact))
        .with_state(state)
}

/// The ops socket's name in the data directory.
pub const OPS_SOCKET: &str = "ops.sock";

/// Whether a `Host` or `Origin` host names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    // `localhost:9810`, `127.0.0.1`, `[::1]:9810`
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuses what a web page elsewhere could make a browser send: a `Host`
/// that is not this machine's loopback (DNS rebinding), unless the listener
/// is deliberately opened with `http.allow_non_loopback`, and any request
/// that changes something from a foreign `Origin`.
async fn same_machine(
    State(state): State<ApiState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (host, origin) = {
        let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        (header(header::HOST), header(header::ORIGIN))
    };
    let reads = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let open = state.config.borrow().http.allow_non_loopback;
    if !open && !host.as_deref().is_some_and(is_loopback_host) {
        return error(StatusCode::FORBIDDEN, "this API answers only requests addressed to the loopback address");
    }
    if let Some(origin) = origin.filter(|_| !reads) {
        let from = url::Url::parse(&origin).ok().and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        });
        let same = from.is_some_and(|h| is_loopback_host(&h) || host.as_deref() == Some(h.as_str()));
        if !same {
            return error(StatusCode::FORBIDDEN, "requests that change something must not come from another site");
        }
    }
    next.run(request).await
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
        "cluster": state.cluster.as_ref().map(|c| c.status()),
    }))
}

/// `/api/alerts?since=7d&camera=front&rule=r&class=person&limit=100`, and
/// the same for `/api/events` (which has no rule).
#[derive(Debug, serde::Deserialize)]
pub struct ListParams {
    since: Option<String>,
    camera: Option<String>,
    rule: Option<String>,
    class: Option<String>,
    limit: Option<usize>,
}

/// Records one request answers when it does not say (`limit`).
pub const DEFAULT_LIMIT: usize = 100;
/// The most records one request can ask for.
pub const MAX_LIMIT: usize = 10_000;

impl ListParams {
    fn query(self) -> Result<Query, String> {
        let since = self.since.as_deref().map(crate::base::duration::parse).transpose();
        let since = since.map_err(|e| format!("since: {e}"))?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit > MAX_LIMIT {
            return Err(format!("limit: {limit} is more than {MAX_LIMIT}; page with since"));
        }
        Ok(Query { camera: self.camera, rule: self.rule, class: self.class, limit: Some(limit), ..Query::default() }
            .since(since))
    }
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": message.to_string() }))).into_response()
}

/// Asks the store actor, wherever it runs now; its error, or its absence,
/// as the response to give.
pub(crate) async fn call_store<T: Send + 'static>(
    timeout_ms: u64,
    request: impl FnOnce(ractor::RpcReplyPort<Result<T, String>>) -> StoreMsg,
) -> Result<T, Response> {
    let Some(cell) = ractor::registry::where_is(STORE) else {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "the event store is down"));
    };
    let store: ractor::ActorRef<StoreMsg> = cell.into();
    match ractor::call_t!(store, request, timeout_ms) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

/// [`call_store`], its reply as JSON.
async fn ask_store<T: serde::Serialize + Send + 'static>(
    timeout_ms: u64,
    request: impl FnOnce(ractor::RpcReplyPort<Result<T, String>>) -> StoreMsg,
) -> Response {
    call_store(timeout_ms, request).await.map_or_else(|e| e, |value| Json(value).into_response())
}

/// A read of the store in its own read transaction, off the store actor;
/// a store that is down is a 503, a failed read a 500.
pub(crate) async fn store_read<T: Send + 'static>(
    state: &ApiState,
    read: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    state.store.read(read).await.map_err(|e| match e {
        crate::store::shared::ReadError::Down => error(StatusCode::SERVICE_UNAVAILABLE, e),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    })
}

/// [`store_read`], its answer as JSON.
async fn read_store<T: serde::Serialize + Send + 'static>(
    state: &ApiState,
    read: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Response {
    store_read(state, read).await.map_or_else(|e| e, |value| Json(value).into_response())
}

/// Stored alerts, oldest first, as JSON.
async fn alerts(State(state): State<ApiState>, axum::extract::Query(p): axum::extract::Query<ListParams>) -> Response {
    match p.query() {
        Ok(query) => read_store(&state, move |store| store.alerts(&query)).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Stored events (track summaries), oldest first, as JSON.
async fn events(State(state): State<ApiState>, axum::extract::Query(p): axum::extract::Query<ListParams>) -> Response {
    match p.query() {
        Ok(query) => read_store(&state, move |store| store.events(&query)).await,
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// `/api/cluster/alerts`: this node's alerts and every other edge's, each
/// with its `node`, and what each edge answered (`nodes`).
async fn cluster_alerts(
    State(state): State<ApiState>,
    axum::extract::Query(p): axum::extract::Query<ListParams>,
) -> Response {
    cluster_list(state, p, crate::cluster::records::RecordKind::Alerts).await
}

/// `/api/cluster/events`: as [`cluster_alerts`], for events.
async fn cluster_events(
    State(state): State<ApiState>,
    axum::extract::Query(p): axum::extract::Query<ListParams>,
) -> Response {
    cluster_list(state, p, crate::cluster::records::RecordKind::Events).await
}

async fn cluster_list(state: ApiState, p: ListParams, kind: crate::cluster::records::RecordKind) -> Response {
    let query = match p.query() {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let name = state.cluster.as_ref().map_or("local", |c| c.config.node_name.as_str());
    let peers = state.cluster.as_ref().map(|c| &c.peers);
    Json(crate::cluster::records::merged(kind, &query, (name, &state.store), peers).await).into_response()
}

/// A consistent copy of the database for `ops backup` while the service
/// runs, written under `data/backup-tmp/`; answers its path.
async fn db_copy(State(state): State<ApiState>) -> Response {
    // One copy at a time: each is the whole database, and repeated calls
    // must not fill the disk.
    static COPYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let Ok(_one) = COPYING.try_lock() else {
        return error(StatusCode::CONFLICT, "a copy of the database is being made; try again when it is done");
    };
    let dir = state.data_dir.join(crate::store::backup::COPY_DIR);
    // Copies the CLI did not delete (it was killed, say) go after an hour.
    crate::store::backup::remove_stale_copies(&dir, std::time::Duration::from_secs(3600));
    let dest = dir.join(format!("events-{}.redb", chrono::Local::now().format("%Y%m%d-%H%M%S%.3f")));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    ask_store(120_000, |reply| StoreMsg::CopyTo(dest, reply)).await
}

/// `ops compact` while the service runs: answers whether the file shrank.
async fn compact() -> Response {
    ask_store(600_000, StoreMsg::Compact).await
}

/// `/api/snapshots/2026-01-15/front-...jpg`: a snapshot file. Only plain
/// names under `snapshots/` are served: no `..`, no absolute paths, no links
/// out of the folder.
async fn snapshot(State(state): State<ApiState>, axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    let relative = std::path::Path::new(&path);
    let plain = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || !path.ends_with(".jpg") {
        return error(StatusCode::BAD_REQUEST, "not a snapshot path");
    }
    let root = state.data_dir.join("snapshots");
    let file = root.join(relative);
    let inside = match (std::fs::canonicalize(&root), std::fs::canonicalize(&file)) {
        (Ok(root), Ok(file)) => file.starts_with(root),
        _ => false,
    };
    if !inside {
        return error(StatusCode::NOT_FOUND, "no such snapshot");
    }
    match tokio::fs::read(&file).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, "no such snapshot"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_names_are_this_machine() {
        for host in ["localhost", "localhost:9810", "127.0.0.1", "127.0.0.1:9810", "127.9.9.9", "[::1]", "[::1]:9810"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example", "evil.example:9810", "192.168.1.5:9810", "localhost.evil.example", "[::2]:80", ""]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
