//! The upgrade planner (owned by the planner work).
pub mod cli;
