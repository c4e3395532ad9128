//! Octopus versions (owned by the planner work).
