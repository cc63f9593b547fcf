//! smart-cctv: a long-lived CCTV service.
//!
//! Module map:
//! - [`base`]: injectable time, duration parsing.
//! - [`config`]: `config.yaml` (typed, layered, validated, redacted) and reload diffs.
//! - [`supervision`]: the OTP-style supervision tree declared in `supervision.toml`.
//! - [`health`]: the health board, disk use, and the health actor (watchdog, transitions).
//! - [`http`]: `/metrics`, `/healthz` and the read-only API.
//! - [`telemetry`]: logs in the old `time | LEVEL | target | message` layout, and metrics.
//! - [`service`]: builds the tree from config and runs it until a signal stops it.
//! - [`cmds`]: one module per CLI subcommand.
//! - [`web`]: the web page (live view, alerts, system, config) and its login.

pub mod alerts;
pub mod base;
pub mod calibration;
pub mod camera;
pub mod cluster;
pub mod cmds;
pub mod coco;
pub mod config;
pub mod detect;
pub mod draw;
pub mod faults;
pub mod health;
pub mod http;
pub mod mqtt;
pub mod pipeline;
pub mod resources;
pub mod retention;
pub mod rules;
pub mod service;
pub mod speaker;
pub mod store;
pub mod supervision;
pub mod telemetry;
pub mod tracker;
pub mod web;
