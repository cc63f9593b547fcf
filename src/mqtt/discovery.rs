//! Home Assistant MQTT discovery: one device per camera with its occupancy
//! per label, its connectivity, fps and detection latency, the latest
//! snapshot per label, an event entity for alerts and a detection switch.
//! Every entity is available while `<prefix>/available` says `online`.

use super::Message;
use crate::config::{Config, MqttConfig};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The labels a camera reports occupancy for: the classes of the rules
/// that watch it, and `person` always.
pub fn labels_for(config: &Config, camera: &str) -> BTreeSet<String> {
    let mut labels = BTreeSet::from(["person".to_owned()]);
    for rule in &config.alert_rules {
        if rule.cameras.is_empty() || rule.cameras.iter().any(|c| c == camera) {
            labels.extend(rule.conditions.classes.iter().cloned());
        }
    }
    labels
}

/// The node id under the discovery prefix: the topic prefix in the
/// characters Home Assistant accepts there.
fn node_id(mqtt: &MqttConfig) -> String {
    mqtt.topic_prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

/// Every discovery config for `config`, as retained messages.
pub fn configs(config: &Config, mqtt: &MqttConfig) -> Vec<Message> {
    let prefix = &mqtt.topic_prefix;
    let node = node_id(mqtt);
    let mut out = Vec::new();
    for camera in config.cameras.iter().filter(|c| c.enabled) {
        let id = &camera.id;
        let device = json!({
            "identifiers": [format!("{node}_{id}")],
            "name": id,
            "manufacturer": "smart-cctv",
            "model": "camera",
        });
        let mut entity = |component: &str, object: String, mut body: Value| {
            body["unique_id"] = json!(format!("{node}_{object}"));
            body["object_id"] = json!(format!("{node}_{object}"));
            body["device"] = device.clone();
            body["availability_topic"] = json!(format!("{prefix}/available"));
            body["payload_available"] = json!("online");
            body["payload_not_available"] = json!("offline");
            out.push(Message {
                topic: format!("{}/{component}/{node}/{object}/config", mqtt.discovery_prefix),
                payload: body.to_string().into_bytes(),
                retain: true,
            });
        };
        for label in labels_for(config, id) {
            entity(
                "binary_sensor",
                format!("{id}_{label}_occupancy"),
                json!({
                    "name": format!("{label} occupancy"),
                    "state_topic": format!("{prefix}/{id}/{label}"),
                    "value_template": "{{ 'ON' if value | int > 0 else 'OFF' }}",
                    "device_class": "occupancy",
                }),
            );
            entity(
                "image",
                format!("{id}_{label}_snapshot"),
                json!({
                    "name": format!("{label} snapshot"),
                    "image_topic": format!("{prefix}/{id}/{label}/snapshot"),
                    "content_type": "image/jpeg",
                }),
            );
        }
        entity(
            "binary_sensor",
            format!("{id}_status"),
            json!({
                "name": "connection",
                "state_topic": format!("{prefix}/{id}/status"),
                "value_template": "{{ 'ON' if value == 'online' else 'OFF' }}",
                "device_class": "connectivity",
            }),
        );
        for (object, name, field, unit) in [
            ("fps", "camera fps", "camera_fps", "fps"),
            ("detection_fps", "detection fps", "detection_fps", "fps"),
            ("detection_latency", "detection latency", "detection_latency_ms", "ms"),
        ] {
            entity(
                "sensor",
                format!("{id}_{object}"),
                json!({
                    "name": name,
                    "state_topic": format!("{prefix}/stats"),
                    "value_template": format!("{{{{ value_json.cameras['{id}'].{field} }}}}"),
                    "unit_of_measurement": unit,
                    "state_class": "measurement",
                }),
            );
        }
        entity(
            "event",
            format!("{id}_alert"),
            json!({
                "name": "alert",
                "state_topic": format!("{prefix}/{id}/alerts"),
                "event_types": ["alert"],
            }),
        );
        entity(
            "switch",
            format!("{id}_detect"),
            json!({
                "name": "detection",
                "command_topic": format!("{prefix}/{id}/detect/set"),
                "state_topic": format!("{prefix}/{id}/detect/state"),
                "payload_on": "ON",
                "payload_off": "OFF",
            }),
        );
    }
    out
}

/// Empty retained payloads for the discovery topics no longer configured:
/// Home Assistant removes those entities.
pub fn removals(before: &BTreeSet<String>, now: &[Message]) -> Vec<Message> {
    let kept: BTreeSet<&str> = now.iter().map(|m| m.topic.as_str()).collect();
    before
        .iter()
        .filter(|t| !kept.contains(t.as_str()))
        .map(|t| Message { topic: t.clone(), payload: Vec::new(), retain: true })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Config {
        serde_json::from_str(json).unwrap()
    }

    fn mqtt() -> MqttConfig {
        serde_json::from_str(r#"{"host": "localhost", "topic_prefix": "cctv"}"#).unwrap()
    }

    #[test]
    fn each_camera_is_a_device_with_its_entities_tied_to_availability() {
        let c = config(
            r#"{"cameras": [{"id": "front", "url": "file:///x.mp4"}, {"id": "off", "url": "file:///x.mp4", "enabled": false}],
                "alert_rules": [{"name": "cars", "conditions": {"classes": ["car"]}}]}"#,
        );
        let configs = configs(&c, &mqtt());
        let topics: Vec<&str> = configs.iter().map(|m| m.topic.as_str()).collect();
        for expected in [
            "homeassistant/binary_sensor/cctv/front_person_occupancy/config",
            "homeassistant/binary_sensor/cctv/front_car_occupancy/config",
            "homeassistant/binary_sensor/cctv/front_status/config",
            "homeassistant/sensor/cctv/front_fps/config",
            "homeassistant/sensor/cctv/front_detection_latency/config",
            "homeassistant/image/cctv/front_person_snapshot/config",
            "homeassistant/event/cctv/front_alert/config",
            "homeassistant/switch/cctv/front_detect/config",
        ] {
            assert!(topics.contains(&expected), "{expected} missing from {topics:?}");
        }
        assert!(topics.iter().all(|t| !t.contains("/off_")), "a disabled camera has no entities");
        for message in &configs {
            assert!(message.retain);
            let body: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(body["availability_topic"], "cctv/available");
            assert_eq!(body["device"]["identifiers"][0], "cctv_front");
            assert!(body.as_object().unwrap().values().all(|v| !v.is_null()));
        }
        let fps = configs.iter().find(|m| m.topic.ends_with("front_fps/config")).unwrap();
        let body: Value = serde_json::from_slice(&fps.payload).unwrap();
        assert_eq!(body["value_template"], "{{ value_json.cameras['front'].camera_fps }}");
    }

    #[test]
    fn a_removed_camera_leaves_empty_retained_configs() {
        let two = config(r#"{"cameras": [{"id": "a", "url": "file:///x.mp4"}, {"id": "b", "url": "file:///x.mp4"}]}"#);
        let one = config(r#"{"cameras": [{"id": "a", "url": "file:///x.mp4"}]}"#);
        let before: BTreeSet<String> = configs(&two, &mqtt()).into_iter().map(|m| m.topic).collect();
        let now = configs(&one, &mqtt());
        let removed = removals(&before, &now);
        assert!(!removed.is_empty());
        assert!(removed.iter().all(|m| m.topic.contains("/b_") && m.payload.is_empty() && m.retain));
        assert_eq!(removed.len(), before.len() - now.len());
    }
}
