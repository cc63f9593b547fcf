//! Where the forward pass spends its time, layer by layer: `bench detector
//! --profile`. Off unless asked for; when off it costs one atomic load per
//! convolution. candle's CPU ops run synchronously, so wall time per op is
//! the op's own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<BTreeMap<String, (u64, Duration)>> = Mutex::new(BTreeMap::new());

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Runs `f`, adding its time under `label` when profiling is on.
pub fn time<T>(label: impl FnOnce() -> String, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let started = Instant::now();
    let out = f();
    let elapsed = started.elapsed();
    let mut times = TIMES.lock().unwrap_or_else(|p| p.into_inner());
    let entry = times.entry(label()).or_default();
    entry.0 += 1;
    entry.1 += elapsed;
    out
}

/// Everything timed since the last call: label → (calls, total time).
pub fn take() -> BTreeMap<String, (u64, Duration)> {
    std::mem::take(&mut *TIMES.lock().unwrap_or_else(|p| p.into_inner()))
}
