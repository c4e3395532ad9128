//! The `OctopusCluster` custom resource (group `octopusoperator.dev`, `v1alpha1`).
