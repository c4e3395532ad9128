//! The OctopusCluster API on a real API server: the CRD installs and becomes Established,
//! the samples are accepted, every malformed sample is refused by the server with a
//! message naming the field and saying what to write (no regex, no CEL rule, no CEL runtime
//! error), and kubectl reads the descriptions and printer columns.

use std::path::PathBuf;

use octopus_e2e::cluster::TestCluster;
use octopus_e2e::scenario::install_crd;

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/samples")
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_samples_and_kubectl_views() {
    let cluster = must(TestCluster::shared().await);
    must(install_crd(&cluster).await);
    let ns = must(cluster.namespace("crd").await);
    let n = ns.name().to_string();

    for valid in ["secrets.yaml", "minimal.yaml", "full.yaml"] {
        let path = samples().join(valid);
        let out = must(
            cluster
                .kubectl([
                    "-n",
                    &n,
                    "apply",
                    "--server-side",
                    "-f",
                    path.to_str().unwrap_or_default(),
                ])
                .await,
        );
        assert!(out.success(), "{valid} was refused: {}", out.stderr);
    }

    let mut invalid: Vec<PathBuf> = must(std::fs::read_dir(samples().join("invalid")))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    invalid.sort();
    assert!(
        invalid.len() >= 10,
        "at least 10 invalid samples, found {}",
        invalid.len()
    );
    for path in &invalid {
        let text = must(std::fs::read_to_string(path));
        // "# REJECT spec.field.path: why" names the field the server must blame.
        let field = text
            .lines()
            .find_map(|l| l.strip_prefix("# REJECT "))
            .and_then(|l| l.split(':').next())
            .unwrap_or_else(|| panic!("{} has no '# REJECT <field>:' line", path.display()));
        let out = must(
            cluster
                .kubectl([
                    "-n",
                    &n,
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "-f",
                    path.to_str().unwrap_or_default(),
                ])
                .await,
        );
        assert!(!out.success(), "{} was accepted", path.display());
        assert!(
            out.stderr.contains(field),
            "{}: the refusal does not name {field}:\n{}",
            path.display(),
            out.stderr
        );
        // A person must read what to write, not a regex, a CEL rule or a CEL runtime error.
        for unreadable in [
            "type conversion error",
            "should match",
            "failed rule",
            "self.matches",
            "[0-9]",
        ] {
            assert!(
                !out.stderr.contains(unreadable),
                "{}: the refusal shows {unreadable:?} instead of what to write:\n{}",
                path.display(),
                out.stderr
            );
        }
    }

    let explain = must(
        cluster
            .kubectl(["explain", "octopuscluster.spec.upgrade"])
            .await,
    );
    assert!(explain.success(), "{}", explain.stderr);
    // kubectl wraps descriptions: compare with whitespace folded.
    let folded = explain
        .stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for words in [
        "approvedMajorVersion",
        "schemaUpgrades",
        "maintenanceWindow",
        "backup",
        "Major upgrades change",
        "restoredBackup",
        "the backup you restored the database and Master Key from",
    ] {
        assert!(
            folded.contains(words),
            "kubectl explain lacks {words}:\n{}",
            explain.stdout
        );
    }

    let get = must(cluster.kubectl(["-n", &n, "get", "octc"]).await);
    assert!(get.success(), "{}", get.stderr);
    let header = get.stdout.lines().next().unwrap_or_default().to_string();
    for column in ["NAME", "DESIRED", "CURRENT", "READY", "STATUS", "AGE"] {
        assert!(
            header.contains(column),
            "kubectl get octc lacks {column}: {header}"
        );
    }
    assert!(get.stdout.contains("octopus-ha") && get.stdout.contains("2024.1.12345"));
    must(ns.cleanup().await);
}
