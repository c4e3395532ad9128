//! Tests of the reconciler's decision core: `decide` and the named `safety` predicates.
//! Nothing here touches Kubernetes or Octopus. (`conditions`, `window`, `steps` and
//! `reason` keep their own tests beside them.)
//!
//! - [`fixtures`]: builders of observations and upgrade records, decision assertions.
//! - [`cases`]: table-driven single decisions on hand-built observations.
//! - [`predicates`]: each safety predicate.
//! - [`sim`]: a tiny simulated world; [`walks`], [`stops`] and [`restarts`] walk whole
//!   upgrades through it, checking invariants at every moment.
//! - [`properties`]: properties over random observations and randomised walks.
//! - [`drift`]: drift within a schema line is corrected once, then nothing is written.
//! - [`resume`]: status written by an earlier operator (JSON fixtures) decodes and resumes.
//! - [`replans`]: a patch roll whose node cannot start, and a new target mid-roll.
//! - [`timers`]: every node's readiness timer runs from that node's own start.
//! - [`evictions`], [`scale_down`]: the PodDisruptionBudget against evictions, and the
//!   drained scale-down, walked through the simulated world.
//! - [`slots`]: the cap on concurrent upgrades, decided once and walked by a fleet.
//! - [`way_back`]: after a failed migration: a backup per attempt, the acknowledged way
//!   back, a template edited below the schema.
//! - [`conflicts`]: every spec edit at every moment of a patch roll and a schema upgrade,
//!   against the README's conflicting-edits table.

mod cases;
mod conflicts;
mod drift;
mod evictions;
pub(super) mod fixtures;
mod predicates;
mod properties;
mod replans;
mod restarts;
mod resume;
mod scale_down;
mod sim;
mod slots;
mod stops;
mod timers;
mod walks;
mod way_back;
