//! The supervisor actor.
//!
//! Parent: another supervisor, or nobody for the root (whose failure is sent
//! to `on_escalate` so the process can exit non-zero).
//! Inputs: supervision events from its linked children, timer messages that
//! end a backoff, and requests to add, remove or list children.
//! Outputs: transitions on the [`HealthBoard`] and restart metrics.

use super::spec::{ChildSpec, Intensity, Restart, RestartWindow, StartFailure, Strategy};
use crate::base::clock::Clock;
use crate::health::{ChildState, HealthBoard};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a child that ignored its graceful stop gets to die after a kill.
const KILL_GRACE: Duration = Duration::from_secs(1);

pub struct Supervisor;

pub struct SupervisorArgs {
    /// This supervisor's path in the tree (`root`, `root/cameras`); children
    /// appear on the health board as `path/id`.
    pub path: String,
    pub strategy: Strategy,
    pub intensity: Intensity,
    /// Started in this order, stopped in the reverse.
    pub children: Vec<ChildSpec>,
    pub board: HealthBoard,
    pub clock: Arc<dyn Clock>,
    /// Told why when this supervisor gives up. Only the root needs it: any
    /// other supervisor's failure reaches its parent as a supervision event.
    pub on_escalate: Option<mpsc::UnboundedSender<String>>,
}

pub enum SupervisorMsg {
    /// A backoff ended: start every child waiting on this token, in order.
    Restart { token: u64 },
    /// Adds a dynamic child and starts it. Fails if the id is taken.
    StartChild(ChildSpec, RpcReplyPort<Result<(), String>>),
    /// Stops a child and forgets it. Answers whether it existed.
    StopChild(String, RpcReplyPort<bool>),
    /// Stops a child and starts it again from its spec (which reads the
    /// configuration afresh): how a reload applies a changed section.
    /// Answers whether it started; if not, it is retried after its backoff.
    RestartChild(String, RpcReplyPort<Result<(), String>>),
    /// Lists the children; also serves as a liveness ping for the watchdog.
    Children(RpcReplyPort<Vec<ChildReport>>),
}

impl ractor::Message for SupervisorMsg {}

/// One child as `Children` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ChildReport {
    pub id: String,
    pub state: ChildState,
    /// How many times it has been started.
    pub starts: u64,
}

struct Child {
    spec: ChildSpec,
    /// The running actor, if any. Events from any other cell are stale.
    cell: Option<ActorCell>,
    state: ChildState,
    /// Consecutive failures, which set the backoff.
    attempt: u32,
    started_at: Option<Instant>,
    starts: u64,
    /// The scheduled restart this child is waiting for.
    pending: Option<u64>,
}

impl Child {
    fn new(spec: ChildSpec) -> Self {
        Self { spec, cell: None, state: ChildState::Starting, attempt: 0, started_at: None, starts: 0, pending: None }
    }
}

pub struct SupervisorState {
    path: String,
    strategy: Strategy,
    window: RestartWindow,
    /// Kept for messages; the window holds the same value.
    intensity_period: Duration,
    children: Vec<Child>,
    board: HealthBoard,
    clock: Arc<dyn Clock>,
    on_escalate: Option<mpsc::UnboundedSender<String>>,
    next_token: u64,
}

impl SupervisorState {
    fn child_path(&self, id: &str) -> String {
        format!("{}/{}", self.path, id)
    }

    fn mark(&self, idx: usize, state: ChildState, error: Option<String>) {
        let child = &self.children[idx];
        self.board.set(&self.child_path(&child.spec.id), child.spec.restart, state, error);
    }

    fn set_state(&mut self, idx: usize, state: ChildState, error: Option<String>) {
        self.children[idx].state = state;
        self.mark(idx, state, error);
    }

    fn index_of_cell(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children.iter().position(|c| c.cell.as_ref().is_some_and(|own| own.get_id() == id))
    }

    /// The children that restart when child `idx` fails.
    fn group(&self, idx: usize) -> Vec<usize> {
        match self.strategy {
            Strategy::OneForOne => vec![idx],
            Strategy::OneForAll => (0..self.children.len()).collect(),
            Strategy::RestForOne => (idx..self.children.len()).collect(),
        }
    }

    async fn start_child(&mut self, myself: &ActorCell, idx: usize) -> Result<(), String> {
        self.set_state(idx, ChildState::Starting, None);
        let path = self.child_path(&self.children[idx].spec.id);
        if crate::faults::take_start_failure(&path) {
            return Err(format!("start failed: injected start failure of {path}"));
        }
        let start = self.children[idx].spec.start.clone();
        match start(myself.clone()).await {
            Ok(cell) => {
                let now = self.clock.now();
                let child = &mut self.children[idx];
                child.cell = Some(cell);
                child.started_at = Some(now);
                child.starts += 1;
                self.set_state(idx, ChildState::Up, None);
                tracing::info!(child = %self.child_path(&self.children[idx].spec.id), "started");
                Ok(())
            }
            Err(e) => Err(format!("start failed: {e}")),
        }
    }

    /// Stops child `idx` gracefully within its shutdown timeout, then kills it.
    async fn stop_child(&mut self, idx: usize) {
        let Some(cell) = self.children[idx].cell.take() else {
            return;
        };
        let timeout = self.children[idx].spec.shutdown;
        if cell.stop_and_wait(Some("supervisor stop".into()), Some(timeout)).await.is_err() {
            tracing::warn!(
                child = %self.child_path(&self.children[idx].spec.id),
                timeout = %humantime::format_duration(timeout),
                "did not stop within its shutdown timeout; killing it"
            );
            let _ = cell.kill_and_wait(Some(KILL_GRACE)).await;
        }
    }

    /// Stops every child, last started first.
    async fn stop_all(&mut self, final_state: ChildState) {
        for idx in (0..self.children.len()).rev() {
            self.children[idx].pending = None;
            self.stop_child(idx).await;
            self.set_state(idx, final_state, None);
        }
    }

    /// Child `idx` ended; `failure` is why, or `None` for a normal exit.
    async fn on_child_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        failure: Option<String>,
    ) -> Result<(), ActorProcessingErr> {
        self.children[idx].cell = None;
        let path = self.child_path(&self.children[idx].spec.id);
        match (self.children[idx].spec.restart, &failure) {
            (Restart::Temporary, _) => {
                tracing::info!(child = %path, reason = ?failure, "temporary child ended; not restarted");
                self.children.remove(idx);
                self.board.remove(&path);
                Ok(())
            }
            (Restart::Transient, None) => {
                tracing::info!(child = %path, "transient child finished normally; not restarted");
                self.set_state(idx, ChildState::Stopped, None);
                Ok(())
            }
            _ => {
                let reason = failure.unwrap_or_else(|| "exited".to_owned());
                tracing::warn!(child = %path, %reason, "child ended");
                self.schedule_restart(myself, idx, reason).await
            }
        }
    }

    /// Restarts child `idx` and its strategy group after its backoff, or
    /// gives up when the restart intensity is exceeded.
    async fn schedule_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let now = self.clock.now();
        if !self.window.record(now) {
            return Err(self.escalate(&reason).await);
        }
        let group = self.group(idx);
        for &j in group.iter().rev() {
            if j != idx {
                self.stop_child(j).await;
            }
        }

        let child = &mut self.children[idx];
        if child.started_at.is_some_and(|t| now.saturating_duration_since(t) >= child.spec.reset_after) {
            child.attempt = 0;
        }
        child.attempt += 1;
        let delay = child.spec.backoff.delay(child.attempt, fastrand::f64());

        let token = self.next_token;
        self.next_token += 1;
        for &j in &group {
            self.children[j].pending = Some(token);
            let error = (j == idx).then(|| reason.clone());
            self.set_state(j, ChildState::Backoff, error);
            self.board.count_restart(&self.child_path(&self.children[j].spec.id));
        }
        // Temporary siblings stopped by the strategy are not restarted.
        let removed: Vec<String> = group
            .iter()
            .filter(|&&j| j != idx && self.children[j].spec.restart == Restart::Temporary)
            .map(|&j| self.children[j].spec.id.clone())
            .collect();
        for id in removed {
            self.board.remove(&self.child_path(&id));
            self.children.retain(|c| c.spec.id != id);
        }
        tracing::info!(
            supervisor = %self.path,
            child = %self.children.iter().find(|c| c.pending == Some(token)).map(|c| c.spec.id.as_str()).unwrap_or(""),
            restarting = group.len(),
            delay = %humantime::format_duration(round_ms(delay)),
            "restart scheduled"
        );
        myself.send_after(delay, move || SupervisorMsg::Restart { token });
        Ok(())
    }

    /// Child `idx` has never started: try again after its backoff, without
    /// counting towards the restart intensity (nothing was running to
    /// restart, so nothing is crash-looping).
    fn retry_start(&mut self, myself: &ActorRef<SupervisorMsg>, idx: usize, reason: String) {
        let child = &mut self.children[idx];
        child.attempt += 1;
        let delay = child.spec.backoff.delay(child.attempt, fastrand::f64());
        let token = self.next_token;
        self.next_token += 1;
        self.children[idx].pending = Some(token);
        self.set_state(idx, ChildState::Backoff, Some(reason));
        myself.send_after(delay, move || SupervisorMsg::Restart { token });
    }

    /// Starts child `idx` for a caller that waits for the answer; one that
    /// does not start is retried after its backoff.
    async fn start_and_answer(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        idx: usize,
        reply: RpcReplyPort<Result<(), String>>,
    ) -> Result<(), ActorProcessingErr> {
        match self.start_child(&myself.get_cell(), idx).await {
            Ok(()) => {
                let _ = reply.send(Ok(()));
                Ok(())
            }
            Err(reason) => {
                let _ = reply.send(Err(reason.clone()));
                self.schedule_restart(myself, idx, reason).await
            }
        }
    }

    /// Stops everything and reports the failure upwards.
    async fn escalate(&mut self, reason: &str) -> ActorProcessingErr {
        let message = format!(
            "supervisor {} exceeded its restart intensity ({} restarts within {}); last failure: {reason}",
            self.path,
            self.window.len() - 1,
            humantime::format_duration(self.window_period()),
        );
        tracing::error!("{message}");
        self.stop_all(ChildState::Failed).await;
        if let Some(tx) = &self.on_escalate {
            let _ = tx.send(message.clone());
        }
        message.into()
    }

    fn window_period(&self) -> Duration {
        self.intensity_period
    }

    async fn run_restart(&mut self, myself: &ActorRef<SupervisorMsg>, token: u64) -> Result<(), ActorProcessingErr> {
        let mut idx = 0;
        while idx < self.children.len() {
            if self.children[idx].pending == Some(token) {
                self.children[idx].pending = None;
                if let Err(reason) = self.start_child(&myself.get_cell(), idx).await {
                    tracing::warn!(child = %self.child_path(&self.children[idx].spec.id), %reason, "restart failed");
                    if self.children[idx].starts == 0 && self.children[idx].spec.on_start_failure == StartFailure::Retry
                    {
                        self.retry_start(myself, idx, reason);
                        idx += 1;
                        continue;
                    }
                    return self.schedule_restart(myself, idx, reason).await;
                }
            }
            idx += 1;
        }
        Ok(())
    }

    fn report(&self) -> Vec<ChildReport> {
        self.children.iter().map(|c| ChildReport { id: c.spec.id.clone(), state: c.state, starts: c.starts }).collect()
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            path: args.path,
            strategy: args.strategy,
            window: RestartWindow::new(args.intensity),
            intensity_period: args.intensity.period,
            children: args.children.into_iter().map(Child::new).collect(),
            board: args.board,
            clock: args.clock,
            on_escalate: args.on_escalate,
            next_token: 0,
        };
        for idx in 0..state.children.len() {
            state.mark(idx, ChildState::Starting, None);
        }
        // As in OTP, a child that cannot start at all fails its supervisor:
        // there is no earlier good state to return to. Unless its policy says
        // to retry: then it waits out its backoff, shown as down, while the
        // rest of the tree runs (a full disk at boot must not stop the cameras).
        for idx in 0..state.children.len() {
            if let Err(reason) = state.start_child(&myself.get_cell(), idx).await {
                let id = state.children[idx].spec.id.clone();
                if state.children[idx].spec.on_start_failure == StartFailure::Retry {
                    tracing::warn!(child = %state.child_path(&id), %reason, "cannot start yet; retrying in the background");
                    state.retry_start(&myself, idx, reason);
                    continue;
                }
                state.set_state(idx, ChildState::Failed, Some(reason.clone()));
                state.stop_all(ChildState::Stopped).await;
                return Err(format!("{}: child {id}: {reason}", state.path).into());
            }
        }
        Ok(state)
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.stop_all(ChildState::Stopped).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart { token } => state.run_restart(&myself, token).await?,
            SupervisorMsg::StartChild(spec, reply) => {
                if state.children.iter().any(|c| c.spec.id == spec.id) {
                    let _ = reply.send(Err(format!("{}: child {} already exists", state.path, spec.id)));
                    return Ok(());
                }
                state.children.push(Child::new(spec));
                let idx = state.children.len() - 1;
                state.start_and_answer(&myself, idx, reply).await?;
            }
            SupervisorMsg::StopChild(id, reply) => {
                let found = state.children.iter().position(|c| c.spec.id == id);
                if let Some(idx) = found {
                    state.children[idx].pending = None;
                    state.stop_child(idx).await;
                    state.board.remove(&state.child_path(&id));
                    state.children.remove(idx);
                }
                let _ = reply.send(found.is_some());
            }
            SupervisorMsg::Children(reply) => {
                let _ = reply.send(state.report());
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let Some(idx) = state.children.iter().position(|c| c.spec.id == id) else {
                    let _ = reply.send(Err(format!("{}: no child {id}", state.path)));
                    return Ok(());
                };
                state.children[idx].pending = None;
                state.stop_child(idx).await;
                state.start_and_answer(&myself, idx, reply).await?;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            _ => return Ok(()),
        };
        // Children this supervisor stopped itself were detached first, so
        // their events match nothing here.
        match state.index_of_cell(&cell) {
            Some(idx) => state.on_child_exit(&myself, idx, failure).await,
            None => Ok(()),
        }
    }
}
