//! MQTT and Home Assistant: Frigate's topic layout under `mqtt.topic_prefix`,
//! camera availability as first-class state, and Home Assistant discovery.
//!
//! Producers (the tracker, the alerts actor, the motion gate) hand finished
//! messages to the [`Bus`], which never blocks: it is a bounded outbox that
//! drops its oldest message when full. The `mqtt` actor (`actor.rs`) owns the
//! connection and drains the outbox while connected, so a dead broker costs
//! the alarm path one mutex push and nothing more. Message shapes are plain
//! code beside it: `objects.rs` (tracked objects, counts), `discovery.rs`
//! (Home Assistant), `status.rs` (debounced camera status, stats).

pub mod actor;
pub mod controls;
pub mod discovery;
pub mod objects;
pub mod status;

pub use controls::Controls;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

/// Messages the outbox holds while the broker is away; older ones go first.
pub const OUTBOX_CAPACITY: usize = 2000;

/// One message for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Where producers put messages for the broker. Cheap to clone; disabled
/// (every publish a no-op) when the config has no `mqtt` section.
#[derive(Clone, Default)]
pub struct Bus(Arc<BusInner>);

#[derive(Default)]
struct BusInner {
    /// `mqtt.topic_prefix` while MQTT is configured.
    prefix: RwLock<Option<String>>,
    outbox: Mutex<VecDeque<Message>>,
    waker: tokio::sync::Notify,
    /// Per camera: frames analysed, and capture-to-detection latency
    /// (a moving mean), for `<prefix>/stats`.
    analysed: Mutex<std::collections::BTreeMap<String, (u64, f64)>>,
}

impl Bus {
    /// A bus for `config`: enabled with its prefix when it has `mqtt`.
    pub fn new(config: &crate::config::Config) -> Self {
        let bus = Self::default();
        bus.configure(config.mqtt.as_ref().map(|m| m.topic_prefix.clone()));
        bus
    }

    /// Enables the bus under `prefix`, or disables it (and empties it).
    pub fn configure(&self, prefix: Option<String>) {
        if prefix.is_none() {
            self.outbox().clear();
        }
        *self.0.prefix.write().unwrap_or_else(PoisonError::into_inner) = prefix;
    }

    pub fn prefix(&self) -> Option<String> {
        self.0.prefix.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn enabled(&self) -> bool {
        self.0.prefix.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    fn outbox(&self) -> MutexGuard<'_, VecDeque<Message>> {
        // A push or pop cannot leave the queue torn: take it over a poison.
        self.0.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `payload` on `<prefix>/<subtopic>`; never waits.
    pub fn publish(&self, subtopic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let Some(prefix) = self.prefix() else { return };
        self.push(Message { topic: format!("{prefix}/{subtopic}"), payload: payload.into(), retain });
    }

    /// Queues a message under its full topic; never waits.
    pub fn push(&self, message: Message) {
        if !self.enabled() {
            return;
        }
        let dropped = {
            let mut outbox = self.outbox();
            let dropped = if outbox.len() >= OUTBOX_CAPACITY { outbox.pop_front() } else { None };
            outbox.push_back(message);
            dropped
        };
        if dropped.is_some() {
            metrics::counter!("smart_cctv_mqtt_dropped_total").increment(1);
        }
        self.0.waker.notify_one();
    }

    /// The oldest queued message.
    pub(crate) fn pop(&self) -> Option<Message> {
        self.outbox().pop_front()
    }

    /// Puts back a message that could not be handed on, at the front.
    pub(crate) fn unpop(&self, message: Message) {
        let mut outbox = self.outbox();
        if outbox.len() < OUTBOX_CAPACITY {
            outbox.push_front(message);
        } else {
            metrics::counter!("smart_cctv_mqtt_dropped_total").increment(1);
        }
    }

    pub fn queued(&self) -> usize {
        self.outbox().len()
    }

    /// Waits until something is queued (at once if something already is).
    pub(crate) async fn ready(&self) {
        loop {
            let notified = self.0.waker.notified();
            if self.queued() > 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Bus {
    /// Counts one analysed frame of `camera` and its latency.
    pub fn note_analysed(&self, camera: &str, latency_seconds: f64) {
        if !self.enabled() {
            return;
        }
        let mut analysed = self.0.analysed.lock().unwrap_or_else(PoisonError::into_inner);
        match analysed.get_mut(camera) {
            Some((count, latency)) => {
                *count += 1;
                *latency += (latency_seconds - *latency) * 0.1;
            }
            None => {
                analysed.insert(camera.to_owned(), (1, latency_seconds));
            }
        }
    }

    pub fn analysed(&self) -> std::collections::BTreeMap<String, (u64, f64)> {
        self.0.analysed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// `frame_time`, `start_time` and `time` fields: Unix seconds, as Frigate has them.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Bus {
        let bus = Bus::default();
        bus.configure(Some("cctv".into()));
        bus
    }

    #[test]
    fn a_disabled_bus_takes_nothing() {
        let bus = Bus::default();
        bus.publish("front/motion", "ON", false);
        assert_eq!(bus.queued(), 0);
        assert!(bus.pop().is_none());
    }

    #[test]
    fn messages_go_under_the_prefix_in_order_and_the_oldest_are_dropped_when_full() {
        let bus = configured();
        for i in 0..OUTBOX_CAPACITY + 5 {
            bus.publish("front/all", i.to_string(), false);
        }
        assert_eq!(bus.queued(), OUTBOX_CAPACITY);
        let first = bus.pop().unwrap();
        assert_eq!(first.topic, "cctv/front/all");
        assert_eq!(first.payload, b"5");
        bus.unpop(first.clone());
        assert_eq!(bus.pop(), Some(first));
        // Disabling empties it: a removed `mqtt` section sends nothing later.
        bus.configure(None);
        assert_eq!(bus.queued(), 0);
    }

    #[tokio::test]
    async fn ready_returns_once_something_is_queued() {
        let bus = configured();
        let waiter = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.ready().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        bus.publish("x", "1", false);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    }
}
