//! The Octopus Server twin: plays any number of Octopus HA clusters on 127.0.0.1 for the
//! end-to-end scenarios and benchmarks.
//!
//! Layers, each usable without the next:
//! - [`model`]: the pure domain (installations = shared databases, node processes,
//!   schema, drain, maintenance mode, tasks), driven by explicit time;
//! - [`api`] + [`server`]: Octopus's REST API on `/{namespace}/{service}/api/...`,
//!   routed like a load balancer in front of the pods, plus `/_twin/...` admin routes;
//! - [`kubelet`]: watches Pods and Services on a real API server and plays the kubelet
//!   for Octopus pods (patches their status).
//!
//! The twin never looks at operator types, labels or annotations: it sees pods, their
//! images and env, Secrets, Services, and HTTP requests — what Octopus itself would see.

pub mod config;
pub mod events;
pub mod model;
pub mod version;
pub mod api;
pub mod json;
