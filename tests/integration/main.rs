//! Integration tests: the real `smart-cctv` binary, as users and systemd run it.
//! One test crate, several modules, to keep link time down on small machines.

mod config_validate;
mod service;
mod support;
