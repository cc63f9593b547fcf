//! The supervision tree.
//!
//! OTP semantics on ractor actors:
//! - a supervisor starts its children in order and stops them in reverse order,
//!   each within its `shutdown` timeout (then it is killed);
//! - a failed child is restarted after its backoff, together with the siblings
//!   its strategy names (`one_for_one`, `one_for_all`, `rest_for_one`);
//! - `permanent` children always restart, `transient` ones only after a failure,
//!   `temporary` ones never;
//! - more than `max_restarts` restarts within `period` makes the supervisor stop
//!   its children and fail, so its parent applies its own policy; when the root
//!   fails, the process exits non-zero and systemd restarts it.
//!
//! `policy.rs` reads `supervision.toml`; `spec.rs` holds the pure arithmetic
//! (backoff, restart window); `supervisor.rs` is the actor.

pub mod policy;
pub mod spec;
pub mod supervisor;

pub use policy::{PolicyError, SupervisionPolicy};
pub use spec::{Backoff, ChildSpec, Intensity, Restart, RestartWindow, StartFailure, StartFn, Strategy};
pub use supervisor::{ChildReport, Supervisor, SupervisorArgs, SupervisorMsg};

#[cfg(test)]
mod tests;
