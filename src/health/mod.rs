//! Health: what is up, what is down, the disk, and the systemd watchdog.

pub mod actor;
pub mod board;
pub mod disk;

pub use board::{ChildState, HealthBoard, HealthReport};
