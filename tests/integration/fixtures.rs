//! The shared test fixtures (`../shared/fixtures`): AGPL weights and media
//! that are never committed. `SMART_CCTV_FIXTURES` points elsewhere.
//!
//! Without them, tests that need them say so and pass on a developer machine;
//! under CI (`CI=true`) their absence is a failure.

use std::path::PathBuf;

pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SMART_CCTV_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    if dir.join("yolov8n/yolov8n.safetensors").is_file() {
        return Some(dir);
    }
    assert!(std::env::var("CI").is_err(), "fixtures not found at {} (set SMART_CCTV_FIXTURES)", dir.display());
    eprintln!("skipping: fixtures not found at {}", dir.display());
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
