//! Real control plane harness (owned by the harness work).
