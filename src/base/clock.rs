//! Injectable time.
//!
//! Everything that measures intervals takes a [`Clock`] so tests can run on
//! tokio's paused clock (`#[tokio::test(start_paused = true)]`) instead of
//! sleeping for real. The production clock is tokio's, which is the same clock
//! ractor's `send_after` timers use, so supervision arithmetic and the timers
//! that drive it can never disagree.

use std::sync::Arc;
use tokio::time::Instant;

/// A source of monotonic time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Instant;
}

/// tokio's monotonic clock: real time in production, virtual time in tests
/// that pause the runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The clock most callers want.
pub fn tokio_clock() -> Arc<dyn Clock> {
    Arc::new(TokioClock)
}
