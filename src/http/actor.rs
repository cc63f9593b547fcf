//! The HTTP server actor.
//!
//! Parent: the root supervisor. Input: nothing but its own serve tasks ending.
//! Output: HTTP responses: the read-only API on TCP, and the ops routes on a
//! Unix socket in the data directory that only root, the service's user and
//! its group may use. It binds in `pre_start`, so a taken port is a failed
//! start that the supervisor retries with backoff.

use super::routes::{ApiState, OPS_SOCKET, ops_router, router};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct HttpServer;

pub struct HttpArgs {
    pub listen: SocketAddr,
    pub api: ApiState,
}

pub struct HttpState {
    /// Asks the serve task to finish in-flight requests and stop.
    shutdown: Option<oneshot::Sender<()>>,
    /// Aborted on drop, so a killed actor cannot leave the port bound.
    task: AbortOnDrop,
    /// The ops socket's serve task, and its stop, when it could be bound.
    ops: Option<(oneshot::Sender<()>, AbortOnDrop)>,
}

pub enum HttpMsg {
    /// The serve task ended on its own: the listener is broken.
    ServeEnded(String),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for HttpMsg {}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for HttpServer {
    type Msg = HttpMsg;
    type State = HttpState;
    type Arguments = HttpArgs;

    async fn pre_start(&self, myself: ActorRef<HttpMsg>, args: HttpArgs) -> Result<HttpState, ActorProcessingErr> {
        crate::faults::register("http", &myself, HttpMsg::Fault);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        tracing::info!(listen = %args.listen, "http listening: /metrics /healthz /api/config");
        let ops = serve_ops(&args.api);
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(args.api);
        let task = tokio::spawn(async move {
            serve_bounded(listener, app, rx).await;
            let _ = myself.cast(HttpMsg::ServeEnded("server stopped".to_owned()));
        });
        Ok(HttpState { shutdown: Some(tx), task: AbortOnDrop(task), ops })
    }

    async fn handle(&self, _: ActorRef<HttpMsg>, msg: HttpMsg, _: &mut HttpState) -> Result<(), ActorProcessingErr> {
        match msg {
            HttpMsg::ServeEnded(why) => Err(format!("http server ended: {why}").into()),
            HttpMsg::Fault(fault) => fault.strike("http"),
        }
    }

    async fn post_stop(&self, _: ActorRef<HttpMsg>, state: &mut HttpState) -> Result<(), ActorProcessingErr> {
        if let Some(tx) = state.shutdown.take() {
            let _ = tx.send(());
        }
        // Scrapes finish in milliseconds; don't let a stuck client hold shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut state.task.0).await;
        if let Some((stop, mut task)) = state.ops.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut task.0).await;
        }
        Ok(())
    }
}

/// Connections served at once on TCP; past this, new ones are closed at once
/// (and counted), so no client can take all of the process's files.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a client may take to send a request's head, and how long a kept
/// connection may sit idle before the next one: idle sockets are closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The TCP accept loop: hyper's HTTP/1.1 with a header-read timeout, at most
/// [`MAX_CONNECTIONS`] at once, every connection a task of this loop's own
/// set, which it stops (after 2 s for the ones in flight) when told to.
async fn serve_bounded(listener: tokio::net::TcpListener, app: axum::Router, mut stop: oneshot::Receiver<()>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of files, say: wait a little rather than spin.
                    tracing::warn!("http accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("smart_cctv_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let with_peer =
            tower::ServiceExt::map_request(app.clone(), move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(crate::web::auth::Peer(peer));
                request
            });
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        connections.spawn(async move {
            let _slot = slot;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("http connection: {e}");
            }
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(Duration::from_secs(2), async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        connections.shutdown().await;
    }
}

/// Binds the ops socket (mode 0660) and serves the ops routes on it. A
/// socket that cannot be bound is logged: the CLI then says so, and the
/// rest of the service runs.
fn serve_ops(api: &ApiState) -> Option<(oneshot::Sender<()>, AbortOnDrop)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = api.data_dir.join(OPS_SOCKET);
    // A socket left by a killed process is replaced; anything else is not touched.
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(&path);
    }
    let bound = std::fs::create_dir_all(&api.data_dir)
        .and_then(|()| tokio::net::UnixListener::bind(&path))
        .and_then(|l| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map(|()| l));
    let listener = match bound {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(
                "cannot serve the ops socket {}: {e}; ops backup and compact need the service stopped",
                path.display()
            );
            return None;
        }
    };
    let (tx, rx) = oneshot::channel::<()>();
    let app = ops_router(api.clone());
    let task = tokio::spawn(async move {
        let served = axum::serve(OwnPeers(listener), app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = served.await {
            tracing::error!("the ops socket stopped: {e}");
        }
    });
    Some((tx, AbortOnDrop(task)))
}

/// A Unix listener that serves only root, this process's user, or a member
/// of its group (by the peer's credentials, `SO_PEERCRED`).
struct OwnPeers(tokio::net::UnixListener);

impl axum::serve::Listener for OwnPeers {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(peer) if peer_allowed(peer.uid(), peer.gid()) => return (stream, addr),
                    Ok(peer) => {
                        tracing::warn!(
                            uid = peer.uid(),
                            gid = peer.gid(),
                            "ops socket: refused a peer that is not root, this user or its group"
                        );
                    }
                    Err(e) => tracing::warn!("ops socket: cannot read the peer's credentials: {e}"),
                },
                Err(e) => {
                    tracing::warn!("ops socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

fn peer_allowed(uid: u32, gid: u32) -> bool {
    // SAFETY: getuid(2) and getgid(2) have no preconditions and cannot fail.
    let (own_uid, own_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    uid == 0 || uid == own_uid || gid == own_gid
}
