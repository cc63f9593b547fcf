//! What a reload changes, in the manner of Vector's `config/diff.rs`: keyed
//! components (cameras, rules, speakers) are added, removed or changed by id,
//! so only those are rebuilt; process-level keys cannot change without a
//! restart, and a reload that tries is rejected whole.

use super::load::Problem;
use super::model::Config;
use std::collections::BTreeMap;

/// Ids to add, remove and change in one keyed section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Difference {
    pub to_add: Vec<String>,
    pub to_remove: Vec<String>,
    pub to_change: Vec<String>,
}

impl Difference {
    fn new<T: PartialEq>(old: &[T], new: &[T], id: impl Fn(&T) -> &str) -> Self {
        let old: BTreeMap<&str, &T> = old.iter().map(|t| (id(t), t)).collect();
        let new: BTreeMap<&str, &T> = new.iter().map(|t| (id(t), t)).collect();
        Self {
            to_add: new.keys().filter(|k| !old.contains_key(*k)).map(|k| k.to_string()).collect(),
            to_remove: old.keys().filter(|k| !new.contains_key(*k)).map(|k| k.to_string()).collect(),
            to_change: new
                .iter()
                .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
                .map(|(k, _)| k.to_string())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.to_add.is_empty() && self.to_remove.is_empty() && self.to_change.is_empty()
    }

    /// The way back (Vector's `flip`): what was added is removed, what was
    /// removed is added, and what changed changes back.
    pub fn flip(&self) -> Self {
        Self { to_add: self.to_remove.clone(), to_remove: self.to_add.clone(), to_change: self.to_change.clone() }
    }
}

/// The changes between the running config and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    pub cameras: Difference,
    pub rules: Difference,
    pub speakers: Difference,
    /// Top-level sections that changed and are applied as a whole.
    pub sections: Vec<&'static str>,
    /// Children of the root that read the changed settings when they start,
    /// and so are restarted to apply them (the rest read the running config
    /// live). Every changed setting is applied one way or the other.
    pub restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// Diffs `old` against `new`, or says which process-level keys changed.
    pub fn new(old: &Config, new: &Config) -> Result<Self, Vec<Problem>> {
        let mut fixed = Vec::new();
        if old.http.listen != new.http.listen || old.http.allow_non_loopback != new.http.allow_non_loopback {
            fixed.push(Problem::new("http.listen", "the listen address cannot change on reload; restart the service"));
        }
        if old.storage != new.storage {
            fixed.push(Problem::new(
                "storage.data_dir",
                "the data directory cannot change on reload; restart the service",
            ));
        }
        if old.cluster != new.cluster {
            fixed.push(Problem::new(
                "cluster",
                "the cluster section cannot change on reload (nodes, roles and the cookie): needs a restart",
            ));
        }
        if !fixed.is_empty() {
            return Err(fixed);
        }
        let mut sections = Vec::new();
        for (name, changed) in [
            ("processing", old.processing != new.processing),
            ("performance", old.performance != new.performance),
            ("retention", old.retention != new.retention),
            ("monitoring", old.monitoring != new.monitoring),
            ("health", old.health != new.health),
            ("mqtt", old.mqtt != new.mqtt),
        ] {
            if changed {
                sections.push(name);
            }
        }
        Ok(Self {
            restart: restarted_by(old, new),
            cameras: Difference::new(&old.cameras, &new.cameras, |c| &c.id),
            rules: Difference::new(&old.alert_rules, &new.alert_rules, |r| &r.name),
            speakers: Difference::new(&old.speakers, &new.speakers, |s| &s.id),
            sections,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.cameras.is_empty() && self.rules.is_empty() && self.speakers.is_empty() && self.sections.is_empty()
    }
}

/// Which root children must restart to apply what changed between `old` and
/// `new`. Retention, health and the log level are read live and need none.
fn restarted_by(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut restart = Vec::new();
    let (d_old, d_new) = (&old.processing.detection, &new.processing.detection);
    // Model, size, device, threshold: the loader builds a new detector, which
    // the workers pick up with their next frame.
    let mut same_workers = d_new.clone();
    same_workers.workers = d_old.workers;
    if *d_old != same_workers {
        restart.push("detector");
    }
    if d_old.workers != d_new.workers {
        restart.push("inference");
    }
    // The motion gate and frame rate limits are set up with each camera.
    if old.processing.motion != new.processing.motion || old.performance != new.performance {
        restart.push("cameras");
    }
    // Email settings are the alerts actor's.
    let mut same_level = new.monitoring.clone();
    same_level.log_level = old.monitoring.log_level.clone();
    if old.monitoring != same_level {
        restart.push("alerts");
    }
    if old.mqtt != new.mqtt {
        restart.push("mqtt");
    }
    restart
}

impl std::fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        for (what, d) in [("camera", &self.cameras), ("rule", &self.rules), ("speaker", &self.speakers)] {
            for (verb, ids) in [("added", &d.to_add), ("removed", &d.to_remove), ("changed", &d.to_change)] {
                if !ids.is_empty() {
                    parts.push(format!("{what}s {verb}: {}", ids.join(", ")));
                }
            }
        }
        if !self.sections.is_empty() {
            parts.push(format!("sections changed: {}", self.sections.join(", ")));
        }
        if !self.restart.is_empty() {
            parts.push(format!("restarting: {}", self.restart.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CameraConfig;

    fn cam(id: &str, url: &str) -> CameraConfig {
        serde_json::from_value(serde_json::json!({ "id": id, "url": url })).unwrap()
    }

    #[test]
    fn cameras_are_diffed_by_id() {
        let old = Config {
            cameras: vec![cam("a", "rtsp://h/1"), cam("b", "rtsp://h/2"), cam("c", "rtsp://h/3")],
            ..Config::default()
        };
        let new = Config {
            cameras: vec![cam("a", "rtsp://h/1"), cam("b", "rtsp://h/22"), cam("d", "rtsp://h/4")],
            ..Config::default()
        };
        let diff = ConfigDiff::new(&old, &new).unwrap();
        assert_eq!(diff.cameras.to_add, ["d"]);
        assert_eq!(diff.cameras.to_remove, ["c"]);
        assert_eq!(diff.cameras.to_change, ["b"]);
        assert_eq!(diff.to_string(), "cameras added: d; cameras removed: c; cameras changed: b");
    }

    #[test]
    fn each_changed_setting_restarts_what_reads_it() {
        let old = Config::default();
        let restart = |change: &dyn Fn(&mut Config)| {
            let mut new = old.clone();
            change(&mut new);
            ConfigDiff::new(&old, &new).unwrap().restart
        };
        assert_eq!(restart(&|c| c.processing.detection.size = 320), ["detector"]);
        assert_eq!(restart(&|c| c.processing.detection.confidence_threshold = 0.6), ["detector"]);
        assert_eq!(restart(&|c| c.processing.detection.model = "yolov8s".into()), ["detector"]);
        assert_eq!(restart(&|c| c.processing.detection.workers = 3), ["inference"]);
        assert_eq!(restart(&|c| c.processing.motion.min_area = 0.2), ["cameras"]);
        assert_eq!(restart(&|c| c.performance.frame_skip = 2), ["cameras"]);
        assert_eq!(restart(&|c| c.monitoring.email_to = Some("a@b.test".into())), ["alerts"]);
        assert!(restart(&|c| c.monitoring.log_level = "debug".into()).is_empty());
        assert!(restart(&|c| c.retention.snapshots_days = 3).is_empty());
    }

    #[test]
    fn a_flipped_difference_undoes_it() {
        let d = Difference { to_add: vec!["a".into()], to_remove: vec!["b".into()], to_change: vec!["c".into()] };
        let back = d.flip();
        assert_eq!(
            (back.to_add, back.to_remove, back.to_change),
            (vec!["b".into()], vec!["a".into()], vec!["c".into()])
        );
    }

    #[test]
    fn process_level_keys_are_rejected() {
        let old = Config::default();
        let mut new = Config::default();
        new.http.listen = "127.0.0.1:1".into();
        assert_eq!(ConfigDiff::new(&old, &new).unwrap_err()[0].key, "http.listen");
        let cluster = Some(crate::config::ClusterConfig {
            node_name: "edge-1".into(),
            listen: "127.0.0.1:9820".into(),
            peers: Vec::new(),
            cookie: crate::config::secret::Secret::new("0123456789abcdef"),
            role: crate::config::Role::All,
            tls: None,
            inference_deadline: std::time::Duration::from_secs(2),
            in_flight: 4,
            frame_encoding: Default::default(),
        });
        let clustered = Config { cluster, ..Config::default() };
        let refused = ConfigDiff::new(&old, &clustered).unwrap_err();
        assert_eq!(refused[0].key, "cluster");
        assert!(refused[0].message.contains("needs a restart"), "{}", refused[0].message);
    }
}
