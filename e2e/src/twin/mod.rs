//! The Octopus Server twin (owned by the twin work).
