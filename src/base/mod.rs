//! Small shared pieces: injectable time and duration parsing.

pub mod clock;
pub mod duration;
