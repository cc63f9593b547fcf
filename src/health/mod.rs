//! Health: what is up, what is down, and the systemd watchdog.

pub mod board;
pub mod watchdog;

pub use board::{ChildState, HealthBoard, HealthReport};
