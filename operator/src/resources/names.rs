//! Names of everything the operator creates for a cluster, in one place so the reconciler,
//! the builders and the tests agree. Pure functions of the cluster name (and versions).
//!
//! Names of per-cluster objects are the cluster name plus a fixed suffix. Names that also
//! carry versions (backup Job, Master Key copy) are cut to 63 characters and end in a
//! stable hash of everything they stand for, so they stay unique and valid however long the
//! inputs are. The hash is FNV-1a, written out here: it must never change between operator
//! releases, or an operator upgrade would lose track of a running backup.

use super::storage::SharedVolume;

/// The Octopus Server container in every node's pod.
pub const CONTAINER: &str = "octopus-server";
/// Pod volume holding a node's own server logs.
pub const SERVER_LOGS_VOLUME: &str = "server-logs";

/// Port of the web portal and REST API.
pub const WEB_PORT: i32 = 8080;
/// Port polling Tentacles connect to.
pub const TENTACLE_PORT: i32 = 10943;
/// Port of Octopus's gRPC services.
pub const GRPC_PORT: i32 = 8443;
/// Name of [`WEB_PORT`] on the container and the Services.
pub const WEB_PORT_NAME: &str = "web";
/// Name of [`TENTACLE_PORT`] on the container and the Services.
pub const TENTACLE_PORT_NAME: &str = "tentacle";
/// Name of [`GRPC_PORT`] on the container and the headless Service.
pub const GRPC_PORT_NAME: &str = "grpc";

/// Longest name that is also valid as a label value and a DNS label (Job names end up in
/// the pods' `job-name` label).
const MAX_LABEL: usize = 63;

/// The StatefulSet of the cluster's nodes: the cluster's own name.
pub fn statefulset(cluster: &str) -> String {
    cluster.to_owned()
}

/// The headless Service that gives every node a stable DNS name
/// (`<node>.<cluster>-nodes.<namespace>.svc`).
pub fn headless_service(cluster: &str) -> String {
    format!("{cluster}-nodes")
}

/// The client Service in front of all ready nodes: the cluster's own name, so the default
/// API URL is `http://<cluster>.<namespace>.svc:8080`.
pub fn client_service(cluster: &str) -> String {
    cluster.to_owned()
}

/// The pod of node `ordinal`, which is also its Octopus node name (OCTOPUS_SERVER_NODE_NAME).
pub fn node(cluster: &str, ordinal: i32) -> String {
    format!("{}-{ordinal}", statefulset(cluster))
}

/// Base URL of the Octopus API through the client Service (the `spec.api.url` default).
pub fn client_url(cluster: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{WEB_PORT}",
        client_service(cluster)
    )
}

/// Base URL of one node's own Octopus API, through the headless Service.
pub fn node_url(cluster: &str, namespace: &str, ordinal: i32) -> String {
    format!(
        "http://{}.{}.{namespace}.svc:{WEB_PORT}",
        node(cluster, ordinal),
        headless_service(cluster)
    )
}

/// The claim the operator creates for `volume` (unless the spec names an existing claim).
pub fn claim(cluster: &str, volume: SharedVolume) -> String {
    format!("{cluster}-{}", volume.name())
}

/// Identifies one upgrade attempt (`status.upgrade.attempt`): 8 hex digits of the
/// cluster's UID, the spec generation that began the attempt and its versions. The same
/// inputs give the same id, so a reconcile killed before recording it derives it again;
/// a later attempt of the same `from` -> `to` always follows a spec change, so it differs.
pub fn attempt(uid: &str, generation: i64, from: &str, to: &str) -> String {
    format!(
        "{:08x}",
        fnv1a(&[uid, &generation.to_string(), from, to, "attempt"])
    )
}

/// The backup Job taken before the schema upgrade `from` -> `to` by `attempt`:
/// `<cluster>-backup-<to with dashes>-<hash>`, at most 63 characters, one per attempt.
/// Without an attempt (an upgrade recorded by an operator before attempts existed) one
/// per (cluster, from, to), as those operators named it.
pub fn backup_job(cluster: &str, from: &str, to: &str, attempt: Option<&str>) -> String {
    bounded(
        &format!("{cluster}-backup-{to}"),
        &with_attempt(&[cluster, from, to, "backup"], attempt),
    )
}

/// The Secret holding the Master Key copy of the backup `from` -> `to` by `attempt`:
/// `<cluster>-master-key-<from with dashes>-<hash>`, at most 63 characters. Named after
/// `from` because that is the database the backup holds and the key decrypts.
pub fn master_key_copy(cluster: &str, from: &str, to: &str, attempt: Option<&str>) -> String {
    bounded(
        &format!("{cluster}-master-key-{from}"),
        &with_attempt(&[cluster, from, to, "master-key"], attempt),
    )
}

fn with_attempt<'a>(key: &[&'a str], attempt: Option<&'a str>) -> Vec<&'a str> {
    key.iter().copied().chain(attempt).collect()
}

/// `readable` as a DNS label (lowercase letters, digits, `-`), cut so that `-<hash of key>`
/// fits into 63 characters.
fn bounded(readable: &str, key: &[&str]) -> String {
    let hash = format!("{:08x}", fnv1a(key));
    let room = MAX_LABEL - hash.len() - 1;
    let cut: String = readable
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(room)
        .collect();
    let label = cut.trim_matches('-');
    if label.is_empty() {
        hash
    } else {
        format!("{label}-{hash}")
    }
}

/// 32-bit FNV-1a over the parts, each followed by a 0 byte so `("ab","c")` != `("a","bc")`.
fn fnv1a(parts: &[&str]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn per_cluster_names() {
        assert_eq!(statefulset("octo"), "octo");
        assert_eq!(headless_service("octo"), "octo-nodes");
        assert_eq!(client_service("octo"), "octo");
        assert_eq!(node("octo", 2), "octo-2");
        assert_eq!(claim("octo", SharedVolume::TaskLogs), "octo-task-logs");
        assert_eq!(client_url("octo", "deploy"), "http://octo.deploy.svc:8080");
        assert_eq!(
            node_url("octo", "deploy", 0),
            "http://octo-0.octo-nodes.deploy.svc:8080"
        );
    }

    #[test]
    fn fnv1a_matches_the_published_offset() {
        assert_eq!(fnv1a(&[]), 0x811c_9dc5);
    }

    /// Pinned literals (computed independently): a change here renames every backup Job and
    /// Master Key copy a running operator looks for.
    #[test]
    fn names_are_stable_across_releases() {
        assert_eq!(
            backup_job("octo", "2024.1.12345", "2024.2.100", None),
            "octo-backup-2024-2-100-db7e1875"
        );
        assert_eq!(
            master_key_copy("octo", "2024.1.12345", "2024.2.100", None),
            "octo-master-key-2024-1-12345-dedd05db"
        );
    }

    #[test]
    fn backup_job_is_readable_and_deterministic() {
        let name = backup_job("octo", "2024.1.12345", "2024.2.100", None);
        assert!(name.starts_with("octo-backup-2024-2-100-"), "{name}");
        assert!(is_dns_label(&name), "{name}");
        assert_eq!(name, backup_job("octo", "2024.1.12345", "2024.2.100", None));
    }

    #[test]
    fn backup_job_is_unique_per_from_and_to() {
        let a = backup_job("octo", "2024.1.1", "2024.2.1", None);
        let b = backup_job("octo", "2024.1.2", "2024.2.1", None);
        let c = backup_job("octo", "2024.1.1", "2024.3.1", None);
        let d = backup_job("other", "2024.1.1", "2024.2.1", None);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn long_names_are_cut_to_a_valid_label() {
        let cluster = format!("a{}", "b".repeat(70));
        for name in [
            backup_job(&cluster, "2024.1.12345", "2025.1.999999", None),
            master_key_copy(&cluster, "2024.1.12345", "2025.1.999999", None),
            backup_job("octo.example", "2024.1.1", "2024.2.1", None),
            backup_job("x", "2024.1.1", "2024.2.1-", None),
        ] {
            assert!(is_dns_label(&name), "{name} ({} chars)", name.len());
        }
        // Cutting must not make two different backups collide.
        assert_ne!(
            backup_job(&cluster, "2024.1.1", "2025.1.1", None),
            backup_job(&cluster, "2024.1.2", "2025.1.1", None)
        );
    }

    #[test]
    fn a_cut_never_leaves_a_dash_before_the_hash() {
        // 50 chars + "-backup-" puts a dash right at the cut point.
        let cluster = "c".repeat(46);
        let name = backup_job(&cluster, "1.0.0", "2024.2.1", None);
        assert!(is_dns_label(&name), "{name}");
        assert!(!name.contains("--"), "{name}");
    }

    /// Pinned like the names: an attempt recorded by one operator release must name the
    /// same Job in the next.
    #[test]
    fn attempts_are_stable_and_name_their_own_backup() {
        let a1 = attempt(
            "7c0a4e5e-1b7e-4a43-9d5f-2f1c0e6a9b11",
            4,
            "2024.1.12345",
            "2024.2.100",
        );
        assert_eq!(
            a1,
            attempt(
                "7c0a4e5e-1b7e-4a43-9d5f-2f1c0e6a9b11",
                4,
                "2024.1.12345",
                "2024.2.100"
            )
        );
        assert_eq!(a1, "abf01e1d");
        let a2 = attempt(
            "7c0a4e5e-1b7e-4a43-9d5f-2f1c0e6a9b11",
            9,
            "2024.1.12345",
            "2024.2.100",
        );
        let other_cluster = attempt(
            "0d6b3c1a-0000-4000-8000-000000000000",
            4,
            "2024.1.12345",
            "2024.2.100",
        );
        assert_ne!(a1, a2);
        assert_ne!(a1, other_cluster);
        let (from, to) = ("2024.1.12345", "2024.2.100");
        let jobs = [
            backup_job("octo", from, to, None),
            backup_job("octo", from, to, Some(&a1)),
            backup_job("octo", from, to, Some(&a2)),
        ];
        assert_ne!(jobs[0], jobs[1]);
        assert_ne!(jobs[1], jobs[2]);
        assert_ne!(
            master_key_copy("octo", from, to, Some(&a1)),
            master_key_copy("octo", from, to, Some(&a2))
        );
        for name in &jobs {
            assert!(name.starts_with("octo-backup-2024-2-100-"), "{name}");
            assert!(is_dns_label(name), "{name}");
        }
        assert_eq!(
            backup_job("octo", from, to, Some("0123abcd")),
            "octo-backup-2024-2-100-ab3773d3"
        );
    }

    #[test]
    fn master_key_copy_names_the_database_version() {
        let name = master_key_copy("octo", "2024.1.12345", "2024.2.100", None);
        assert!(name.starts_with("octo-master-key-2024-1-12345-"), "{name}");
        assert!(is_dns_label(&name), "{name}");
        assert_ne!(
            name,
            master_key_copy("octo", "2024.1.12345", "2024.3.1", None)
        );
        assert_ne!(name, backup_job("octo", "2024.1.12345", "2024.2.100", None));
    }
}
