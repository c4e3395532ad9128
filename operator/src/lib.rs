//! octopus-operator: runs Octopus Deploy Server HA clusters on Kubernetes and upgrades
//! them by Octopus's own rules.
//!
//! One way through the code: observe -> decide (pure: `planner`) -> act (one idempotent
//! step) -> record (status via server-side apply).

pub mod api;
pub mod controller;
pub mod octopus;
pub mod planner;
pub mod resources;
pub mod version;
