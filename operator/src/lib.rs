//! octopus-operator: runs Octopus Deploy Server HA clusters on Kubernetes and upgrades
//! them by Octopus's own rules.
//!
//! One way through the code: observe -> decide (pure: [`planner`] and
//! `controller::{decide, safety}`) -> act (one idempotent step) -> record (status via
//! server-side apply, Events). Why a cluster stopped is answered in
//! `controller/decide.rs` (reasons) and `controller/safety.rs` (named predicates).
//!
//! - [`api`]: the `OctopusCluster` resource. [`version`], [`planner`]: Octopus's upgrade
//!   rules. [`octopus`]: the REST client. [`resources`]: the owned Kubernetes objects.
//!   [`controller`]: the reconciler. [`process`]: probes, metrics server and leader
//!   election around it. [`inspect`]: `octopus-operator status`.

pub mod api;
pub mod controller;
pub mod inspect;
pub mod octopus;
pub mod planner;
pub mod process;
pub mod resources;
pub mod version;
