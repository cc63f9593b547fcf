//! The one HTTP listener: `/metrics`, `/healthz` and the read-only API.
//!
//! A supervised actor owns the listener, so a failed server is restarted like
//! any other child; the routes only read shared state and never call into
//! actors, so a busy tree cannot make `/healthz` hang.

pub mod actor;
pub mod routes;

pub use actor::{HttpArgs, HttpServer};
pub use routes::ApiState;
