//! Octopus Server REST API client (owned by the client work).
