//! End-to-end proving ground: the Octopus Server twin, the real control plane harness
//! and the scenarios' shared helpers.

pub mod chart;
pub mod cluster;
pub mod helm;
pub mod jobs;
pub mod operator_process;
pub mod process;
pub mod real_node;
pub mod scenario;
pub mod storage;
pub mod twin;
