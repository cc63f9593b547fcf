//! `config.yaml`: what users of the old Python system know, typed and checked.
//!
//! - `model.rs`: the typed shape (`deny_unknown_fields` everywhere);
//! - `limits.rs`: size, encoding, nesting and alias-expansion caps, checked
//!   before any parser expands the file;
//! - `load.rs`: the file, then `SMART_CCTV__SECTION__KEY` environment
//!   overrides, layered with the `config` crate, and the embedded default;
//! - `validate.rs`: every semantic problem, each with its key path;
//! - `secret.rs`: camera URLs that never print their password;
//! - `diff.rs`: what a reload changes;
//! - `cluster.rs`: this box's place among several.

pub mod cluster;
pub mod diff;
pub mod limits;
pub mod load;
pub mod model;
pub mod secret;
pub mod validate;

pub use cluster::{ClusterConfig, Role};
pub use diff::ConfigDiff;
pub use load::{ConfigError, LoadedConfig, Problem, load};
pub use model::*;
pub use secret::{CameraUrl, redact_url};
