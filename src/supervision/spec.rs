//! What a supervisor needs to know about its children, and the pure arithmetic
//! of backoff and restart intensity.

use ractor::{ActorCell, SpawnErr};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Which siblings restart with a failed child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the failed child.
    OneForOne,
    /// Every child.
    OneForAll,
    /// The failed child and every child started after it.
    RestForOne,
}

/// When a child that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only when it failed (error or panic), not when it finished normally.
    Transient,
    /// Never.
    Temporary,
}

/// What a supervisor does when a child cannot start at all when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFailure {
    /// The supervisor fails too (OTP's rule): for what the service cannot
    /// exist without.
    #[default]
    Fail,
    /// The supervisor starts the rest and keeps trying this one after its
    /// backoff, showing it as down meanwhile: for what the alarm does not
    /// need in order to sound (the store, the detector, speakers).
    Retry,
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Backoff {
    #[serde(with = "crate::base::duration")]
    pub initial: Duration,
    #[serde(with = "crate::base::duration")]
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction of the delay added or removed at random, so that many children
    /// failing together (a switch reboot) do not reconnect in lockstep.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(500), max: Duration::from_secs(30), multiplier: 2.0, jitter: 0.2 }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1 for the first restart).
    /// `unit` is a random number in `[0, 1)`; jitter spreads the delay over
    /// `[d * (1 - jitter), d * (1 + jitter)]`, never beyond `max`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        // Large exponents overflow to infinity, which the cap below absorbs.
        let exponent = attempt.saturating_sub(1).min(i32::MAX as u32) as i32;
        let max = self.max.as_secs_f64();
        let base = (self.initial.as_secs_f64() * self.multiplier.powi(exponent)).min(max);
        let spread = self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((base * (1.0 + spread)).clamp(0.0, max))
    }
}

/// Restart intensity: at most `max_restarts` restarts within `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Intensity {
    pub max_restarts: u32,
    #[serde(with = "crate::base::duration")]
    pub period: Duration,
}

/// The restarts a supervisor made within its intensity period.
#[derive(Debug, Clone)]
pub struct RestartWindow {
    intensity: Intensity,
    restarts: VecDeque<Instant>,
}

impl RestartWindow {
    pub fn new(intensity: Intensity) -> Self {
        Self { intensity, restarts: VecDeque::new() }
    }

    /// Records a restart at `now`. Returns `false` when it is one too many:
    /// more than `max_restarts` within the last `period`, counting this one.
    /// Times must not go backwards.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.intensity.max_restarts as usize
    }

    /// Restarts currently inside the window.
    pub fn len(&self) -> usize {
        self.restarts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.restarts.is_empty()
    }
}

/// Starts a child linked to the given supervisor and returns its cell.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>> + Send + Sync>;

/// One child of a supervisor.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among its siblings; its health path is `supervisor/id`.
    pub id: String,
    pub restart: Restart,
    pub backoff: Backoff,
    /// How long a graceful stop may take before the child is killed.
    pub shutdown: Duration,
    /// A child that ran this long without failing starts its backoff over.
    pub reset_after: Duration,
    /// When it cannot start as its supervisor starts.
    pub on_start_failure: StartFailure,
    pub start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("backoff", &self.backoff)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A spec with default timing; adjust fields as needed.
    pub fn new<F, Fut>(id: impl Into<String>, restart: Restart, start: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            restart,
            backoff: Backoff::default(),
            shutdown: Duration::from_secs(5),
            reset_after: Duration::from_secs(60),
            on_start_failure: StartFailure::Fail,
            start: Arc::new(move |sup| Box::pin(start(sup))),
        }
    }
}
