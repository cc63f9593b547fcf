//! The shared test fixtures (`../shared/fixtures`): AGPL weights and media
//! that are never committed. `SMART_CCTV_FIXTURES` points elsewhere.
//!
//! Without them, tests that need them say so and pass on a developer machine;
//! under CI (`CI=true`) their absence is a failure.

use std::path::PathBuf;

pub fn dir() -> Option<PathBuf> {
    shared_dir("SMART_CCTV_FIXTURES", "fixtures", "yolov8n/yolov8n.safetensors")
}

/// `$env`, or `../shared/<relative>`, when it holds `marker`. Missing is a
/// failure under CI and a skip elsewhere.
pub fn shared_dir(env: &str, relative: &str, marker: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(relative));
    if dir.join(marker).is_file() {
        return Some(dir);
    }
    assert!(std::env::var("CI").is_err(), "{relative} not found at {} (set {env})", dir.display());
    eprintln!("skipping: {relative} not found at {}", dir.display());
    None
}

/// `Some(dir)` or return from the test.
#[macro_export]
macro_rules! fixtures_or_skip {
    () => {
        match $crate::fixtures::dir() {
            Some(dir) => dir,
            None => return,
        }
    };
}
