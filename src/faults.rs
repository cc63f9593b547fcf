//! Fault injection for tests: the cargo feature `fault-injection`.
//!
//! Every actor's message type has a `Fault` variant, and its handler fails on
//! it as asked (a panic, or an error returned to ractor), exactly as a bug
//! or a failed dependency would. Without the feature nothing can send one:
//! the registry below is empty, the routes do not exist, and the store is
//! never held back. `ops/test` builds with the feature; a release build
//! (`cargo build --release`) has none of it.
//!
//! With the feature, `/api/faults/...` (loopback, like the rest of the API):
//! - `POST /api/faults/actor/{name}/{panic|error}`: the actor registered as
//!   `name` (`store`, `alerts`, `camera/front`, `rule/person`, `worker-0`,
//!   ...; `GET /api/faults/actors` lists them) fails on its next message;
//! - `POST /api/faults/store-block?seconds=N`: every store write waits N s,
//!   as on a dying SD card;
//! - `POST /api/faults/start-failure/root/{child}`: that child's next start
//!   fails (a reload must then roll back);
//! - `POST /api/faults/stall?seconds=N`: every runtime worker is blocked.

use ractor::ActorProcessingErr;

/// How an injected fault makes an actor fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The handler panics (a bug).
    Panic,
    /// The handler returns an error (a dependency it cannot do without).
    Error,
}

impl Fault {
    /// Fails the handler that received it.
    pub fn strike(self, actor: &str) -> Result<(), ActorProcessingErr> {
        tracing::warn!(actor, fault = ?self, "injected fault");
        match self {
            Fault::Panic => panic!("injected panic in {actor}"),
            Fault::Error => Err(format!("injected error in {actor}").into()),
        }
    }
}

#[cfg(feature = "fault-injection")]
mod enabled {
    use super::Fault;
    use ractor::ActorRef;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Instant;

    type Sender = Box<dyn Fn(Fault) -> bool + Send + Sync>;

    /// How to reach a registered actor, and the actor (to skip dead ones).
    struct Target {
        send: Sender,
        cell: ractor::ActorCell,
    }

    impl Target {
        /// Registered in `pre_start`, so still starting counts as alive.
        fn alive(&self) -> bool {
            !matches!(self.cell.get_status(), ractor::ActorStatus::Stopping | ractor::ActorStatus::Stopped)
        }
    }

    static TARGETS: Mutex<Option<HashMap<String, Target>>> = Mutex::new(None);
    static STORE_BLOCKED_UNTIL: Mutex<Option<Instant>> = Mutex::new(None);
    /// Children (by tree path) whose next start fails.
    static START_FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub fn fail_next_start(path: &str) {
        START_FAILURES.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_owned());
    }

    pub fn take_start_failure(path: &str) -> bool {
        let mut failures = START_FAILURES.lock().unwrap_or_else(|e| e.into_inner());
        match failures.iter().position(|p| p == path) {
            Some(i) => {
                failures.remove(i);
                true
            }
            None => false,
        }
    }

    pub fn register<M: ractor::Message>(name: &str, actor: &ActorRef<M>, wrap: fn(Fault) -> M) {
        let cell = actor.get_cell();
        let actor = actor.clone();
        let send: Sender = Box::new(move |fault| actor.cast(wrap(fault)).is_ok());
        let mut targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
        let targets = targets.get_or_insert_with(HashMap::new);
        // Forget the dead (restarted workers register under new names).
        targets.retain(|_, t| t.alive());
        targets.insert(name.to_owned(), Target { send, cell });
    }

    pub fn inject(name: &str, fault: Fault) -> bool {
        let targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
        targets.as_ref().and_then(|t| t.get(name)).is_some_and(|t| t.alive() && (t.send)(fault))
    }

    /// The names of the live registered actors.
    pub fn names() -> Vec<String> {
        let targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = targets
            .as_ref()
            .map(|t| t.iter().filter(|(_, t)| t.alive()).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn block_store(seconds: f64) {
        let until = std::time::Duration::try_from_secs_f64(seconds).ok().map(|d| Instant::now() + d);
        *STORE_BLOCKED_UNTIL.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    pub fn store_blocked_until() -> Option<Instant> {
        STORE_BLOCKED_UNTIL.lock().unwrap_or_else(|e| e.into_inner()).filter(|t| *t > Instant::now())
    }
}

/// Makes `actor` reachable by name for injected faults (feature only).
#[cfg(feature = "fault-injection")]
pub fn register<M: ractor::Message>(name: &str, actor: &ractor::ActorRef<M>, wrap: fn(Fault) -> M) {
    enabled::register(name, actor, wrap);
}

/// Without the feature nothing is registered.
#[cfg(not(feature = "fault-injection"))]
pub fn register<M: ractor::Message>(_: &str, _: &ractor::ActorRef<M>, _: fn(Fault) -> M) {}

/// Whether the next start of the child at `path` (`root/detector`) is to
/// fail (feature only; always `false` without).
pub fn take_start_failure(path: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    return enabled::take_start_failure(path);
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = path;
        false
    }
}

/// Until when store writes are held back (feature only; always `None` without).
pub fn store_blocked_until() -> Option<std::time::Instant> {
    #[cfg(feature = "fault-injection")]
    return enabled::store_blocked_until();
    #[cfg(not(feature = "fault-injection"))]
    None
}

/// The fault routes, merged into the API router (feature only).
#[cfg(feature = "fault-injection")]
pub fn routes<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    use axum::extract::{Path, Query};
    use axum::http::StatusCode;
    use axum::routing::{get, post};
    use std::collections::HashMap;

    fn seconds(q: &HashMap<String, String>) -> f64 {
        q.get("seconds").and_then(|s| s.parse::<f64>().ok()).filter(|s| s.is_finite()).unwrap_or(3.0).clamp(0.0, 600.0)
    }

    fn inject(name: String, fault: &str) -> (StatusCode, String) {
        let fault = match fault {
            "panic" => Fault::Panic,
            "error" => Fault::Error,
            other => return (StatusCode::BAD_REQUEST, format!("`{other}`: expected panic or error")),
        };
        if enabled::inject(&name, fault) {
            (StatusCode::OK, format!("{fault:?} sent to {name}"))
        } else {
            (StatusCode::NOT_FOUND, format!("no actor `{name}`"))
        }
    }

    tracing::warn!("built with the fault-injection feature: /api/faults/... is open (never in production)");
    axum::Router::new()
        .route("/api/faults/actors", get(|| async { axum::Json(enabled::names()) }))
        // `store`, `worker-0`, ...
        .route(
            "/api/faults/actor/{name}/{fault}",
            post(|Path((name, fault)): Path<(String, String)>| async move { inject(name, &fault) }),
        )
        // `camera/front`, `rule/person`, `speaker/porch`.
        .route(
            "/api/faults/actor/{kind}/{id}/{fault}",
            post(|Path((kind, id, fault)): Path<(String, String, String)>| async move {
                inject(format!("{kind}/{id}"), &fault)
            }),
        )
        // `root/detector`: its next start fails (a reload's rollback path).
        .route(
            "/api/faults/start-failure/{parent}/{child}",
            post(|Path((parent, child)): Path<(String, String)>| async move {
                enabled::fail_next_start(&format!("{parent}/{child}"));
                StatusCode::OK
            }),
        )
        .route(
            "/api/faults/store-block",
            post(|Query(q): Query<HashMap<String, String>>| async move {
                enabled::block_store(seconds(&q));
                StatusCode::OK
            }),
        )
        .route(
            "/api/faults/stall",
            post(|Query(q): Query<HashMap<String, String>>| async move {
                stall_runtime(std::time::Duration::from_secs_f64(seconds(&q)));
                StatusCode::OK
            }),
        )
}

/// Blocks every worker thread of the runtime for `how_long`: a wedged
/// runtime, which the watchdog must notice. More blockers than workers, so
/// every worker ends up holding one; each blocks until the same moment.
#[cfg(feature = "fault-injection")]
fn stall_runtime(how_long: std::time::Duration) {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::warn!(?how_long, workers, "injected fault: stalling the runtime");
    let until = std::time::Instant::now() + how_long;
    for _ in 0..workers * 2 {
        tokio::spawn(async move { std::thread::sleep(until.saturating_duration_since(std::time::Instant::now())) });
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// The API router answers the fault routes with the feature and 404
    /// without it: `ops/test` runs this with the feature, and CI runs it
    /// once more without, as a release build is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_fault_routes_exist_only_with_the_feature() {
        let config = crate::config::load(None).unwrap().config;
        let (_tx, rx) = tokio::sync::watch::channel(std::sync::Arc::new(config));
        let state = crate::http::routes::ApiState {
            data_dir: std::env::temp_dir(),
            board: crate::health::HealthBoard::new(),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle(),
            config: rx,
            store: crate::store::SharedStore::default(),
            auth: crate::web::auth::WebAuth::new(&std::env::temp_dir()),
            latest: crate::web::latest::LatestFrames::default(),
            history: crate::resources::History::default(),
            cluster: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, crate::http::routes::router(state)).await });
        let status = |method: &'static str, path: &'static str| {
            tokio::task::spawn_blocking(move || {
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                write!(
                    stream,
                    "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                response.split_whitespace().nth(1).unwrap_or("").to_owned()
            })
        };
        let want = if cfg!(feature = "fault-injection") { "200" } else { "404" };
        assert_eq!(status("GET", "/api/faults/actors").await.unwrap(), want);
        assert_eq!(status("POST", "/api/faults/store-block?seconds=0").await.unwrap(), want);
        assert_eq!(status("POST", "/api/faults/stall?seconds=0").await.unwrap(), want);
        // The rest of the API is there either way.
        assert_eq!(status("GET", "/healthz").await.unwrap(), "200");
        server.abort();
        let _ = server.await;
    }
}
