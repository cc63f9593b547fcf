//! The HTTP server actor.
//!
//! Parent: the root supervisor. Input: nothing but its own serve task ending.
//! Output: HTTP responses. It binds in `pre_start`, so a taken port is a
//! failed start that the supervisor retries with backoff.

use super::routes::{ApiState, router};
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
}

pub enum HttpMsg {
    /// The serve task ended on its own: the listener is broken.
    ServeEnded(String),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

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
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(args.api);
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            let why = match served {
                Ok(()) => "server stopped".to_owned(),
                Err(e) => e.to_string(),
            };
            let _ = myself.cast(HttpMsg::ServeEnded(why));
        });
        Ok(HttpState { shutdown: Some(tx), task: AbortOnDrop(task) })
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
        Ok(())
    }
}
