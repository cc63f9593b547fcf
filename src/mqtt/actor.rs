//! The `mqtt` actor: the connection to the broker.
//!
//! Parent: the root supervisor. It owns two tasks and stops and awaits both:
//! the connection (rumqttc's event loop: reconnects with backoff, reports
//! connects, drops and incoming messages here) and the pump (drains the
//! [`Bus`] into the client while connected). On every connect it subscribes,
//! publishes the discovery configs and retained switch states, then
//! `<prefix>/available` = `online`; the broker's last will says `offline`,
//! and a clean stop says `stopped`. Once a second it publishes camera status
//! changes (debounced) and, every `stats_interval`, `<prefix>/stats`.
//!
//! Without an `mqtt` section it does nothing at all.

use super::status::{CameraTotals, Rates, StatusDebouncer};
use super::{Bus, Controls, Message, discovery};
use crate::config::{Config, MqttConfig, MqttTlsConfig};
use crate::health::HealthBoard;
use crate::supervision::spec::Backoff;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct MqttActor;

pub struct MqttArgs {
    pub config: watch::Receiver<Arc<Config>>,
    pub bus: Bus,
    pub controls: Controls,
    pub board: HealthBoard,
}

pub struct MqttState {
    args: MqttArgs,
    link: Option<Link>,
}

/// A configured connection and what it keeps between ticks.
struct Link {
    settings: MqttConfig,
    client: AsyncClient,
    connected: Arc<AtomicBool>,
    connection: tokio::task::JoinHandle<()>,
    pump: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
    statuses: StatusDebouncer,
    rates: Rates,
    last_stats: Option<Instant>,
    /// Discovery topics published, to clear those a reload removes.
    discovery: BTreeSet<String>,
    /// The config the discovery was built from.
    config: Arc<Config>,
    last_error: Option<String>,
}

pub enum MqttMsg {
    Connected,
    Disconnected(String),
    Incoming(String, Vec<u8>),
    Tick,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for MqttMsg {}

/// How long a stopping actor waits for `stopped` and the disconnect to go out.
const STOP_BUDGET: Duration = Duration::from_secs(2);
/// Requests rumqttc holds between the pump and the socket.
const CLIENT_QUEUE: usize = 256;

impl Actor for MqttActor {
    type Msg = MqttMsg;
    type State = MqttState;
    type Arguments = MqttArgs;

    async fn pre_start(&self, myself: ActorRef<MqttMsg>, args: MqttArgs) -> Result<MqttState, ActorProcessingErr> {
        crate::faults::register("mqtt", &myself, MqttMsg::Fault);
        let config = args.config.borrow().clone();
        let Some(settings) = config.mqtt.clone() else {
            args.bus.configure(None);
            args.board.remove_component("mqtt");
            return Ok(MqttState { args, link: None });
        };
        let options = options(&settings).map_err(|e| format!("mqtt: {e}"))?;
        args.bus.configure(Some(settings.topic_prefix.clone()));
        args.board.set_component("mqtt", false, "connecting", None);
        metrics::gauge!("smart_cctv_mqtt_connected").set(0.0);
        let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        // Wakes the pump when a connection is up (a permit, so none is missed).
        let online = Arc::new(tokio::sync::Notify::new());
        let connection = tokio::spawn(drive(eventloop, myself.clone(), connected.clone(), online.clone()));
        let pump = tokio::spawn(pump(client.clone(), args.bus.clone(), connected.clone(), online));
        let ticker = myself.send_interval(Duration::from_secs(1), || MqttMsg::Tick);
        tracing::info!(host = %settings.host, port = settings.port, prefix = %settings.topic_prefix, "mqtt starting");
        let link = Link {
            statuses: StatusDebouncer::new(settings.status_debounce),
            settings,
            client,
            connected,
            connection,
            pump,
            ticker,
            rates: Rates::default(),
            last_stats: None,
            discovery: BTreeSet::new(),
            config,
            last_error: None,
        };
        Ok(MqttState { args, link: Some(link) })
    }

    async fn post_stop(&self, _: ActorRef<MqttMsg>, state: &mut MqttState) -> Result<(), ActorProcessingErr> {
        let Some(link) = state.link.take() else { return Ok(()) };
        link.ticker.abort();
        link.pump.abort();
        if link.connected.load(Ordering::SeqCst) {
            // In order on the one connection: `stopped`, then a clean
            // disconnect, so the broker does not send the last will.
            let topic = format!("{}/available", link.settings.topic_prefix);
            let _ = link.client.try_publish(topic, QoS::AtLeastOnce, true, "stopped");
            let _ = link.client.try_disconnect();
        }
        let mut connection = link.connection;
        if tokio::time::timeout(STOP_BUDGET, &mut connection).await.is_err() {
            connection.abort();
            let _ = connection.await;
        }
        let _ = link.pump.await;
        let _ = link.ticker.await;
        metrics::gauge!("smart_cctv_mqtt_connected").set(0.0);
        state.args.board.remove_component("mqtt");
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<MqttMsg>,
        msg: MqttMsg,
        state: &mut MqttState,
    ) -> Result<(), ActorProcessingErr> {
        if let MqttMsg::Fault(fault) = msg {
            return fault.strike("mqtt");
        }
        let Some(link) = state.link.as_mut() else { return Ok(()) };
        let args = &state.args;
        match msg {
            MqttMsg::Fault(_) => {}
            MqttMsg::Connected => {
                tracing::info!(host = %link.settings.host, "mqtt connected");
                link.last_error = None;
                metrics::gauge!("smart_cctv_mqtt_connected").set(1.0);
                args.board.set_component("mqtt", true, "connected", None);
                link.config = args.config.borrow().clone();
                birth(link, &args.controls);
            }
            MqttMsg::Disconnected(error) => {
                if link.last_error.as_deref() != Some(&error) {
                    tracing::warn!(host = %link.settings.host, "mqtt down: {error}");
                }
                metrics::gauge!("smart_cctv_mqtt_connected").set(0.0);
                args.board.set_component("mqtt", false, "disconnected", Some(error.clone()));
                link.last_error = Some(error);
            }
            MqttMsg::Incoming(topic, payload) => incoming(link, &args.controls, &topic, &payload),
            MqttMsg::Tick => tick(link, args),
        }
        Ok(())
    }
}

/// The client options for `settings`: identity, credentials, the last will,
/// packet sizes that fit a snapshot, and TLS when asked.
fn options(settings: &MqttConfig) -> Result<MqttOptions, String> {
    let client_id = settings.client_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("smart-cctv-{}", host.trim())
    });
    let mut options = MqttOptions::new(client_id, settings.host.clone(), settings.port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_clean_session(true);
    // Snapshots are JPEGs of tens to hundreds of kB.
    options.set_max_packet_size(1 << 20, 8 << 20);
    options.set_last_will(LastWill::new(
        format!("{}/available", settings.topic_prefix),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &settings.user {
        let password = settings.password.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    if let Some(tls) = &settings.tls {
        let config = tls_config(tls)?;
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(Arc::new(config))));
    }
    Ok(options)
}

fn tls_config(tls: &MqttTlsConfig) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&tls.ca_file)? {
        roots.add(cert).map_err(|e| format!("mqtt.tls.ca_file: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(certs(cert)?, key).map_err(|e| format!("mqtt.tls.client_cert: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Polls rumqttc's event loop for as long as the actor lives: every error
/// is a dropped connection, retried after a backoff on the next poll.
async fn drive(
    mut eventloop: EventLoop,
    actor: ActorRef<MqttMsg>,
    connected: Arc<AtomicBool>,
    online: Arc<tokio::sync::Notify>,
) {
    let backoff = Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30), ..Backoff::default() };
    let mut attempt = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                attempt = 0;
                connected.store(true, Ordering::SeqCst);
                online.notify_one();
                let _ = actor.cast(MqttMsg::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let _ = actor.cast(MqttMsg::Incoming(publish.topic, publish.payload.to_vec()));
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                metrics::counter!("smart_cctv_mqtt_published_total").increment(1)
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Our own clean stop: let the disconnect reach the socket.
                let _ = tokio::time::timeout(STOP_BUDGET, eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, Ordering::SeqCst);
                let _ = actor.cast(MqttMsg::Disconnected(crate::config::load::redact_text(&e.to_string())));
                attempt += 1;
                tokio::time::sleep(backoff.delay(attempt, fastrand::f64())).await;
            }
        }
    }
}

/// Hands the bus's messages to the client while connected; while not, they
/// wait in the bus, which drops the oldest when full.
async fn pump(client: AsyncClient, bus: Bus, connected: Arc<AtomicBool>, online: Arc<tokio::sync::Notify>) {
    loop {
        bus.ready().await;
        if !connected.load(Ordering::SeqCst) {
            // Until the next connect; a stale wake just checks again.
            online.notified().await;
            continue;
        }
        while connected.load(Ordering::SeqCst) {
            let Some(message) = bus.pop() else { break };
            if let Err(e) =
                client.try_publish(message.topic.clone(), QoS::AtLeastOnce, message.retain, message.payload.clone())
            {
                // rumqttc's own queue is full: wait for the socket to drain it.
                bus.unpop(message);
                tracing::debug!("mqtt queue full: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sends `message` now, ahead of the bus, or queues it when the client's
/// own queue is full.
fn send_now(link: &Link, bus_fallback: &mut Vec<Message>, message: Message) {
    if link
        .client
        .try_publish(message.topic.clone(), QoS::AtLeastOnce, message.retain, message.payload.clone())
        .is_err()
    {
        bus_fallback.push(message);
    }
}

/// After every connect: subscriptions, discovery, switch states, then `online`.
fn birth(link: &mut Link, controls: &Controls) {
    let prefix = link.settings.topic_prefix.clone();
    let mut subscriptions = vec![format!("{prefix}/+/detect/set"), format!("{prefix}/rules/+/enabled/set")];
    if link.settings.ha_discovery {
        subscriptions.push(format!("{}/status", link.settings.discovery_prefix));
    }
    for topic in subscriptions {
        if let Err(e) = link.client.try_subscribe(topic, QoS::AtLeastOnce) {
            tracing::warn!("mqtt subscribe: {e}");
        }
    }
    let mut later = Vec::new();
    for message in discovery_messages(link) {
        send_now(link, &mut later, message);
    }
    for camera in &link.config.cameras {
        let on = controls.detect_enabled(&camera.id);
        let state =
            Message { topic: format!("{prefix}/{}/detect/state", camera.id), payload: on_off(on).into(), retain: true };
        send_now(link, &mut later, state);
    }
    for rule in &link.config.alert_rules {
        let state = Message {
            topic: format!("{prefix}/rules/{}/enabled/state", rule.name),
            payload: on_off(rule.enabled && controls.rule_enabled(&rule.name)).into(),
            retain: true,
        };
        send_now(link, &mut later, state);
    }
    send_now(
        link,
        &mut later,
        Message { topic: format!("{prefix}/available"), payload: b"online".to_vec(), retain: true },
    );
    if !later.is_empty() {
        tracing::warn!(count = later.len(), "mqtt: birth messages did not fit the client queue");
    }
}

/// The discovery configs for the current config, and empty retained configs
/// for what a reload removed.
fn discovery_messages(link: &mut Link) -> Vec<Message> {
    if !link.settings.ha_discovery {
        return Vec::new();
    }
    let now = discovery::configs(&link.config, &link.settings);
    let mut out = discovery::removals(&link.discovery, &now);
    link.discovery = now.iter().map(|m| m.topic.clone()).collect();
    out.extend(now);
    out
}

fn on_off(on: bool) -> &'static str {
    if on { "ON" } else { "OFF" }
}

fn incoming(link: &mut Link, controls: &Controls, topic: &str, payload: &[u8]) {
    let prefix = link.settings.topic_prefix.clone();
    let text = String::from_utf8_lossy(payload).trim().to_ascii_uppercase();
    let mut later = Vec::new();
    if link.settings.ha_discovery && topic == format!("{}/status", link.settings.discovery_prefix) {
        // Home Assistant restarted: it asks for the configs again.
        if text == "ONLINE" {
            tracing::info!("mqtt: Home Assistant is back; discovery republished");
            for message in discovery_messages(link) {
                send_now(link, &mut later, message);
            }
        }
    } else if let Some(switch) = switch_for(&prefix, topic) {
        let known = match &switch {
            Switch::Detect(camera) => link.config.cameras.iter().any(|c| &c.id == camera),
            Switch::Rule(rule) => link.config.alert_rules.iter().any(|r| &r.name == rule),
        };
        if !known {
            tracing::warn!(topic, "mqtt: no such camera or rule");
            return;
        }
        let Some(on) = parse_switch(&text) else {
            tracing::warn!(topic, "mqtt: expected ON or OFF");
            return;
        };
        let (saved, state_topic, shown) = match &switch {
            Switch::Detect(camera) => (controls.set_detect(camera, on), format!("{prefix}/{camera}/detect/state"), on),
            Switch::Rule(rule) => {
                // A rule the config disables stays off whatever MQTT says.
                let enabled = link.config.alert_rules.iter().any(|r| &r.name == rule && r.enabled);
                (controls.set_rule(rule, on), format!("{prefix}/rules/{rule}/enabled/state"), on && enabled)
            }
        };
        if let Err(e) = saved {
            tracing::error!(topic, "cannot save the switch: {e}");
        }
        tracing::info!(topic, state = on_off(on), "switched over MQTT");
        send_now(link, &mut later, Message { topic: state_topic, payload: on_off(shown).into(), retain: true });
    }
    if !later.is_empty() {
        tracing::warn!(count = later.len(), "mqtt: answers did not fit the client queue");
    }
}

/// What a `.../set` topic switches.
enum Switch {
    Detect(String),
    Rule(String),
}

/// `<prefix>/<camera>/detect/set` or `<prefix>/rules/<rule>/enabled/set`.
fn switch_for(prefix: &str, topic: &str) -> Option<Switch> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    if let Some(rule) = rest.strip_prefix("rules/").and_then(|r| r.strip_suffix("/enabled/set")) {
        return Some(Switch::Rule(rule.to_owned()));
    }
    let camera = rest.strip_suffix("/detect/set")?;
    (!camera.contains('/')).then(|| Switch::Detect(camera.to_owned()))
}

fn parse_switch(text: &str) -> Option<bool> {
    match text {
        "ON" | "TRUE" | "1" => Some(true),
        "OFF" | "FALSE" | "0" => Some(false),
        _ => None,
    }
}

/// Once a second: camera statuses, discovery after a reload, and stats.
fn tick(link: &mut Link, args: &MqttArgs) {
    let now = Instant::now();
    let components = args.board.components();
    let phases: BTreeMap<String, String> = components
        .iter()
        .filter_map(|(path, c)| Some((path.strip_prefix("camera/")?.to_owned(), c.state.clone())))
        .collect();
    for (camera, status) in link.statuses.observe(now, &phases) {
        tracing::info!(camera, status, "mqtt camera status");
        args.bus.publish(&format!("{camera}/status"), status, true);
    }
    let config = args.config.borrow().clone();
    if !Arc::ptr_eq(&config, &link.config) && link.connected.load(Ordering::SeqCst) {
        link.config = config;
        let mut later = Vec::new();
        for message in discovery_messages(link) {
            send_now(link, &mut later, message);
        }
        for message in later {
            args.bus.push(message);
        }
    }
    if link.last_stats.is_none_or(|t| now.saturating_duration_since(t) >= link.settings.stats_interval) {
        link.last_stats = Some(now);
        let details = args.board.details();
        let analysed = args.bus.analysed();
        let totals: BTreeMap<String, CameraTotals> = phases
            .keys()
            .map(|id| {
                let decoded = details.get(&format!("camera/{id}")).and_then(|d| d["frames"].as_u64()).unwrap_or(0);
                let (analysed, latency) = analysed.get(id).copied().unwrap_or((0, 0.0));
                (id.clone(), CameraTotals { decoded, analysed, latency_seconds: latency })
            })
            .collect();
        let stats = link.rates.stats(now, &totals, &details);
        args.bus.publish("stats", stats.to_string(), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_topics_name_a_camera_or_a_rule_and_nothing_else() {
        let detect = |t| matches!(switch_for("cctv", t), Some(Switch::Detect(c)) if c == "door");
        let rule = |t| matches!(switch_for("cctv", t), Some(Switch::Rule(r)) if r == "night");
        assert!(detect("cctv/door/detect/set"));
        assert!(rule("cctv/rules/night/enabled/set"));
        for other in [
            "cctv/door/detect/state",
            "cctv/a/b/detect/set",
            "other/door/detect/set",
            "cctvx/door/detect/set",
            "cctv/available",
        ] {
            assert!(switch_for("cctv", other).is_none(), "{other}");
        }
        assert_eq!(parse_switch("ON"), Some(true));
        assert_eq!(parse_switch("OFF"), Some(false));
        assert_eq!(parse_switch("maybe"), None);
    }
}
