//! Integration tests: the real `smart-cctv` binary and library, as users and
//! systemd run them. One test crate, several modules, to keep link time down.

mod alerts;
mod cameras;
mod config_validate;
mod detect;
mod fixtures;
mod health;
mod models;
mod motion;
mod ops_files;
mod service;
mod speakers;
mod store;
mod support;
mod testbed;
