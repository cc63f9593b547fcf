//! The health board: one shared table of every supervised child's state.
//!
//! Supervisors write to it on every transition; `/healthz`, `/api/status` and
//! the metrics read it. It is a plain mutex-guarded map rather than an actor
//! because readers must get an answer even when the tree is busy restarting.

use crate::store::{CameraStatusRecord, HealthRecord, Record, unix_micros};
use crate::supervision::Restart;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

/// Where a supervised child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    Starting,
    Up,
    /// Failed and waiting out its backoff before the next start.
    Backoff,
    /// Stopped on purpose (shutdown, or a transient child that finished).
    Stopped,
    /// Its supervisor gave up on it.
    Failed,
}

/// One child's row.
#[derive(Debug, Clone, Serialize)]
pub struct ChildHealth {
    pub state: ChildState,
    pub restart: Restart,
    /// Restarts since the process started.
    pub restarts: u64,
    #[serde(with = "unix_seconds")]
    pub since: SystemTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The condition of something that is not a supervised child but matters to
/// health: a camera that is running but not streaming, say.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    pub ok: bool,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One thing that is down, as `/healthz` names it.
#[derive(Debug, Clone, Serialize)]
pub struct Down {
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `/healthz` says.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// Permanent children that are not up and components that are not ok,
    /// by path, with why.
    pub down: BTreeMap<String, Down>,
}

/// Shared table of child states, keyed by tree path (`root/http`), and of
/// component conditions (`camera/front`).
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    children: Arc<Mutex<BTreeMap<String, ChildHealth>>>,
    components: Arc<Mutex<BTreeMap<String, ComponentHealth>>>,
    /// Free-form status of components (a camera's frame count, say) for
    /// `/api/status`, refreshed by their actors.
    details: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    /// Transitions not yet handed to the store, oldest first (bounded).
    transitions: Arc<Mutex<VecDeque<Record>>>,
}

/// Transitions kept while nobody collects them.
const TRANSITIONS_MAX: usize = 1000;

impl HealthBoard {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ChildHealth>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every write is a single insert), so a poisoned lock is still usable.
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a transition and mirrors it into the metrics.
    pub fn set(&self, path: &str, restart: Restart, state: ChildState, error: Option<String>) {
        let mut children = self.lock();
        let previous = children.get(path).map(|row| row.state);
        let row = children.entry(path.to_owned()).or_insert_with(|| ChildHealth {
            state,
            restart,
            restarts: 0,
            since: SystemTime::now(),
            last_error: None,
        });
        if row.state != state {
            row.since = SystemTime::now();
        }
        row.state = state;
        row.restart = restart;
        if error.is_some() {
            row.last_error = error.clone();
        }
        drop(children);
        metrics::gauge!("smart_cctv_child_up", "child" => path.to_owned()).set(if state == ChildState::Up {
            1.0
        } else {
            0.0
        });
        if previous != Some(state) && state != ChildState::Starting {
            let name = serde_json::to_value(state).ok().and_then(|v| v.as_str().map(str::to_owned));
            self.note(Record::Health(HealthRecord {
                time_us: unix_micros(SystemTime::now()),
                component: path.to_owned(),
                ok: state == ChildState::Up,
                state: name.unwrap_or_default(),
                error,
            }));
        }
    }

    fn note(&self, record: Record) {
        let mut queue = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= TRANSITIONS_MAX {
            queue.pop_front();
            metrics::counter!("smart_cctv_store_dropped_total", "kind" => record.kind()).increment(1);
        }
        queue.push_back(record);
    }

    /// Hands over the transitions recorded since the last call, oldest first.
    pub fn take_transitions(&self) -> Vec<Record> {
        self.transitions.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }

    /// Counts one restart of `path`.
    pub fn count_restart(&self, path: &str) {
        if let Some(row) = self.lock().get_mut(path) {
            row.restarts += 1;
        }
        metrics::counter!("smart_cctv_child_restarts_total", "child" => path.to_owned()).increment(1);
    }

    /// Forgets a child that was removed for good (a dynamic child).
    pub fn remove(&self, path: &str) {
        self.lock().remove(path);
        metrics::gauge!("smart_cctv_child_up", "child" => path.to_owned()).set(0.0);
    }

    /// Records a component's condition (`camera/front`: streaming or not).
    /// A change of state is kept for the store: cameras' as camera status,
    /// the rest as health events.
    pub fn set_component(&self, path: &str, ok: bool, state: &str, error: Option<String>) {
        let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let changed = components.get(path).is_none_or(|c| c.ok != ok || c.state != state);
        components.insert(path.to_owned(), ComponentHealth { ok, state: state.to_owned(), error: error.clone() });
        drop(components);
        if !changed {
            return;
        }
        let time_us = unix_micros(SystemTime::now());
        self.note(match path.strip_prefix("camera/") {
            Some(camera) => Record::CameraStatus(CameraStatusRecord {
                time_us,
                camera: camera.to_owned(),
                state: state.to_owned(),
                error,
            }),
            None => {
                Record::Health(HealthRecord { time_us, component: path.to_owned(), ok, state: state.to_owned(), error })
            }
        });
    }

    pub fn remove_component(&self, path: &str) {
        self.components.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
        self.details.lock().unwrap_or_else(|p| p.into_inner()).remove(path);
    }

    /// Publishes a component's status for `/api/status`.
    pub fn set_detail(&self, path: &str, detail: serde_json::Value) {
        self.details.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_owned(), detail);
    }

    pub fn details(&self) -> BTreeMap<String, serde_json::Value> {
        self.details.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn components(&self) -> BTreeMap<String, ComponentHealth> {
        self.components.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn snapshot(&self) -> BTreeMap<String, ChildHealth> {
        self.lock().clone()
    }

    pub fn get(&self, path: &str) -> Option<ChildHealth> {
        self.lock().get(path).cloned()
    }

    /// Healthy when every permanent child is up and every component is ok.
    pub fn report(&self) -> HealthReport {
        let mut down: BTreeMap<String, Down> = self
            .lock()
            .iter()
            .filter(|(_, c)| c.restart == Restart::Permanent && c.state != ChildState::Up)
            .map(|(k, c)| {
                let state = serde_json::to_value(c.state).ok().and_then(|v| v.as_str().map(str::to_owned));
                (k.clone(), Down { state: state.unwrap_or_default(), error: c.last_error.clone() })
            })
            .collect();
        for (k, c) in self.components().into_iter().filter(|(_, c)| !c.ok) {
            down.insert(k, Down { state: c.state, error: c.error });
        }
        HealthReport { healthy: down.is_empty(), down }
    }
}

pub(crate) mod unix_seconds {
    use serde::Serializer;
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        s.serialize_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_when_every_permanent_child_is_up() {
        let board = HealthBoard::new();
        board.set("root/a", Restart::Permanent, ChildState::Up, None);
        board.set("root/t", Restart::Transient, ChildState::Stopped, None);
        assert!(board.report().healthy);
        board.set("root/a", Restart::Permanent, ChildState::Backoff, Some("boom".into()));
        let report = board.report();
        assert!(!report.healthy);
        assert_eq!(report.down.keys().collect::<Vec<_>>(), vec!["root/a"]);
        assert_eq!(report.down["root/a"].error.as_deref(), Some("boom"));
        assert_eq!(report.down["root/a"].state, "backoff");
        board.set("root/a", Restart::Permanent, ChildState::Up, None);
        board.set_component("camera/front", false, "auth_failed", Some("401".into()));
        let report = board.report();
        assert_eq!(report.down.keys().collect::<Vec<_>>(), vec!["camera/front"]);
        board.set_component("camera/front", true, "streaming", None);
        board.set_component("camera/front", true, "streaming", None);
        assert!(board.report().healthy);
        // Every change once, in order; repeats and `starting` are not changes.
        let kept: Vec<String> = board
            .take_transitions()
            .into_iter()
            .map(|r| match r {
                Record::Health(h) => format!("{} {}", h.component, h.state),
                Record::CameraStatus(c) => format!("camera {} {}", c.camera, c.state),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            kept,
            [
                "root/a up",
                "root/t stopped",
                "root/a backoff",
                "root/a up",
                "camera front auth_failed",
                "camera front streaming"
            ]
        );
        assert!(board.take_transitions().is_empty());
    }
}
