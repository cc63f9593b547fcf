//! The switches MQTT can flip: detection per camera and rules on or off.
//! They live in `data/mqtt-controls.json` so a restart keeps what Home
//! Assistant set, and they are read on the hot path (every frame, every
//! rule evaluation), so reads are one uncontended lock.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

pub const FILE: &str = "mqtt-controls.json";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Switched {
    /// Cameras whose detection is off.
    #[serde(default)]
    detect_off: BTreeSet<String>,
    /// Rules switched off (beside those with `enabled: false` in the config).
    #[serde(default)]
    rules_off: BTreeSet<String>,
}

/// Shared, persisted switches. The default (no file) has everything on.
#[derive(Clone, Default)]
pub struct Controls {
    file: Option<PathBuf>,
    switched: Arc<RwLock<Switched>>,
}

impl Controls {
    /// The switches saved under `data_dir`; a missing or unreadable file means
    /// everything on (said in the log: a bad file must not stop detection).
    pub fn load(data_dir: &Path) -> Self {
        let file = data_dir.join(FILE);
        let switched = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), "ignored, everything is on: {e}");
                Switched::default()
            }),
            Err(_) => Switched::default(),
        };
        Self { file: Some(file), switched: Arc::new(RwLock::new(switched)) }
    }

    pub fn detect_enabled(&self, camera: &str) -> bool {
        !self.switched.read().unwrap_or_else(PoisonError::into_inner).detect_off.contains(camera)
    }

    pub fn rule_enabled(&self, rule: &str) -> bool {
        !self.switched.read().unwrap_or_else(PoisonError::into_inner).rules_off.contains(rule)
    }

    pub fn set_detect(&self, camera: &str, on: bool) -> std::io::Result<()> {
        self.change(|s| set(&mut s.detect_off, camera, !on))
    }

    pub fn set_rule(&self, rule: &str, on: bool) -> std::io::Result<()> {
        self.change(|s| set(&mut s.rules_off, rule, !on))
    }

    fn change(&self, f: impl FnOnce(&mut Switched)) -> std::io::Result<()> {
        let saved = {
            let mut switched = self.switched.write().unwrap_or_else(PoisonError::into_inner);
            f(&mut switched);
            switched.clone()
        };
        let Some(file) = &self.file else { return Ok(()) };
        // Written aside and renamed: a crash leaves the old file or the new one.
        let part = file.with_extension("json.part");
        std::fs::write(&part, serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?)?;
        std::fs::rename(&part, file)
    }
}

fn set(off: &mut BTreeSet<String>, name: &str, is_off: bool) {
    if is_off {
        off.insert(name.to_owned());
    } else {
        off.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_survive_a_restart_and_a_bad_file_means_everything_on() {
        let dir = tempfile::tempdir().unwrap();
        let controls = Controls::load(dir.path());
        assert!(controls.detect_enabled("front") && controls.rule_enabled("night"));
        controls.set_detect("front", false).unwrap();
        controls.set_rule("night", false).unwrap();
        let again = Controls::load(dir.path());
        assert!(!again.detect_enabled("front") && !again.rule_enabled("night"));
        assert!(again.detect_enabled("back"));
        again.set_detect("front", true).unwrap();
        assert!(Controls::load(dir.path()).detect_enabled("front"));

        std::fs::write(dir.path().join(FILE), b"{ not json").unwrap();
        let broken = Controls::load(dir.path());
        assert!(broken.detect_enabled("front") && broken.rule_enabled("night"));
    }
}
