//! From policy to running children: each leaf in `supervision.toml` names a
//! component, and this is the one place that knows how to start each.

use crate::config::Config;
use crate::health::HealthBoard;
use crate::health::watchdog::{Watchdog, WatchdogArgs, interval_from_env};
use crate::http::{ApiState, HttpArgs, HttpServer};
use crate::supervision::policy::SupervisorPolicy;
use crate::supervision::{ChildSpec, StartFn, Supervisor, SupervisorArgs};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, SpawnErr};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Component ids a `supervision.toml` leaf may name.
pub const COMPONENTS: &[&str] = &["health", "http"];

/// What components are built from.
#[derive(Clone)]
pub struct Components {
    pub board: HealthBoard,
    pub metrics: PrometheusHandle,
    pub config: watch::Receiver<Arc<Config>>,
}

/// Specs for a supervisor's children, nested supervisors included.
/// Ids were checked against [`COMPONENTS`] when the policy was loaded.
pub fn child_specs(
    policy: &SupervisorPolicy,
    path: &str,
    components: &Components,
) -> Vec<ChildSpec> {
    policy
        .children
        .iter()
        .filter_map(|child| {
            let start = match &child.supervisor {
                Some(sub) => Some(start_supervisor(
                    sub.clone(),
                    format!("{path}/{}", child.id),
                    components.clone(),
                )),
                None => start_component(&child.id, components),
            };
            start.map(|s| child.spec(s))
        })
        .collect()
}

fn start_supervisor(policy: SupervisorPolicy, path: String, components: Components) -> StartFn {
    Arc::new(move |parent| {
        let args = SupervisorArgs {
            path: path.clone(),
            strategy: policy.strategy,
            intensity: policy.intensity,
            children: child_specs(&policy, &path, &components),
            board: components.board.clone(),
            clock: crate::base::clock::tokio_clock(),
            on_escalate: None,
        };
        Box::pin(async move {
            Ok(Actor::spawn_linked(None, Supervisor, args, parent)
                .await?
                .0
                .get_cell())
        })
    })
}

fn start_component(id: &str, components: &Components) -> Option<StartFn> {
    let c = components.clone();
    let start: StartFn = match id {
        "health" => Arc::new(move |parent| {
            let (interval, systemd) = interval_from_env();
            let args = WatchdogArgs {
                tree: parent.clone(),
                interval,
                systemd,
            };
            Box::pin(async move {
                Ok(Actor::spawn_linked(None, Watchdog, args, parent)
                    .await?
                    .0
                    .get_cell())
            })
        }),
        "http" => Arc::new(move |parent| {
            let listen = c.config.borrow().http.listen.parse::<SocketAddr>();
            let api = ApiState {
                board: c.board.clone(),
                metrics: c.metrics.clone(),
                config: c.config.clone(),
            };
            Box::pin(async move {
                // Validation already parsed it; this only guards a programming error.
                let listen = listen
                    .map_err(|e| SpawnErr::StartupFailed(format!("http.listen: {e}").into()))?;
                Ok(
                    Actor::spawn_linked(None, HttpServer, HttpArgs { listen, api }, parent)
                        .await?
                        .0
                        .get_cell(),
                )
            })
        }),
        _ => return None,
    };
    Some(start)
}
