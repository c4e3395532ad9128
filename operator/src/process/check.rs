//! `octopus-operator check`: whether an installed operator works, seen from outside it.
//! The chart's `helm test` hook runs it in a pod of the operator's own image, under the
//! operator's ServiceAccount, so it needs nothing the operator does not already have.
//!
//! It passes when, at one moment, all of these hold ([`verdict`], pure):
//! - `/readyz` answers 200 through the operator's metrics Service (a ready replica sits
//!   behind it: the leader with its watch cache filled, or a hot standby);
//! - with leader election, the Lease has a holder that renewed it within its duration (a
//!   leader is alive, not only standbys);
//! - the OctopusCluster API is served and the ServiceAccount may list it where the
//!   operator watches (the CRD is installed and RBAC lets the operator see its clusters).
//!
//! It retries for `--retry-for` (a leader handing over, a replica restarting) and then
//! fails, naming every check that did not pass.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;

use crate::api::OctopusCluster;

/// Arguments of `octopus-operator check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Base URL of the operator's metrics Service, e.g.
    /// http://octopus-operator-metrics.octopus-operator.svc:8080.
    #[arg(long)]
    pub url: String,
    /// The Lease the replicas elect their leader with, NAMESPACE/NAME (unset: the
    /// operator runs without leader election).
    #[arg(long)]
    pub lease: Option<String>,
    /// The namespace whose OctopusClusters the operator watches (unset: every namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// How long to keep trying before failing, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub retry_for: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Ok(d.into())
}

/// The operator's Lease as read from the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed: Option<Timestamp>,
    pub duration_seconds: Option<i32>,
}

/// What one round of checks saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `/readyz` through the Service: its status and body, or why there was no answer.
    pub readyz: Result<(u16, String), String>,
    /// The Lease, when leader election is checked: `Ok(None)` when it does not exist.
    pub lease: Option<Result<Option<LeaseView>, String>>,
    /// How many OctopusClusters the ServiceAccount can list, or why it cannot.
    pub clusters: Result<usize, String>,
}

/// A check that did not pass, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// No answer from the metrics Service (no ready replica behind it, or none running).
    Unreachable(String),
    /// `/readyz` answered, but not 200.
    NotReady { status: u16, body: String },
    /// The Lease could not be read.
    LeaseUnreadable(String),
    /// The Lease does not exist: no replica ever took part in the election.
    NoLease,
    /// The Lease has no holder (released, and nobody took it).
    NoLeader,
    /// The holder stopped renewing: no leader is alive.
    LeaseExpired {
        holder: String,
        renewed_ago: SignedDuration,
    },
    /// The OctopusCluster API is not served or not readable by the ServiceAccount.
    ClustersUnreadable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(f, "the metrics Service does not answer: {why}"),
            Self::NotReady { status, body } => {
                write!(f, "/readyz answered {status}: {}", body.trim())
            }
            Self::LeaseUnreadable(why) => write!(f, "cannot read the Lease: {why}"),
            Self::NoLease => {
                f.write_str("the Lease does not exist: no replica takes part in the election")
            }
            Self::NoLeader => f.write_str("the Lease has no holder: no leader"),
            Self::LeaseExpired {
                holder,
                renewed_ago,
            } => write!(
                f,
                "the leader {holder} last renewed the Lease {}s ago, longer than its duration",
                renewed_ago.as_secs()
            ),
            Self::ClustersUnreadable(why) => write!(f, "cannot list OctopusClusters: {why}"),
        }
    }
}

/// What passed, for the log of a successful check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passed {
    pub readyz: String,
    pub leader: Option<String>,
    pub clusters: usize,
}

/// The checks' outcome for what was observed at `now`.
pub fn verdict(observed: &Observed, now: Timestamp) -> Result<Passed, Vec<Problem>> {
    let mut problems = Vec::new();
    let readyz = match &observed.readyz {
        Ok((200, body)) => body.trim().to_owned(),
        Ok((status, body)) => {
            problems.push(Problem::NotReady {
                status: *status,
                body: body.clone(),
            });
            String::new()
        }
        Err(why) => {
            problems.push(Problem::Unreachable(why.clone()));
            String::new()
        }
    };
    let leader = match &observed.lease {
        None => None,
        Some(Err(why)) => {
            problems.push(Problem::LeaseUnreadable(why.clone()));
            None
        }
        Some(Ok(None)) => {
            problems.push(Problem::NoLease);
            None
        }
        Some(Ok(Some(lease))) => match lease_leader(lease, now) {
            Ok(holder) => Some(holder),
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
    };
    let clusters = match &observed.clusters {
        Ok(n) => *n,
        Err(why) => {
            problems.push(Problem::ClustersUnreadable(why.clone()));
            0
        }
    };
    if problems.is_empty() {
        Ok(Passed {
            readyz,
            leader,
            clusters,
        })
    } else {
        Err(problems)
    }
}

/// The holder of a Lease renewed within its duration.
fn lease_leader(lease: &LeaseView, now: Timestamp) -> Result<String, Problem> {
    let holder = lease
        .holder
        .clone()
        .filter(|h| !h.is_empty())
        .ok_or(Problem::NoLeader)?;
    let renewed_ago = lease
        .renewed
        .map_or(SignedDuration::MAX, |renewed| now.duration_since(renewed));
    let duration = SignedDuration::from_secs(i64::from(lease.duration_seconds.unwrap_or(0)));
    if renewed_ago > duration {
        return Err(Problem::LeaseExpired {
            holder,
            renewed_ago,
        });
    }
    Ok(holder)
}

/// Runs `octopus-operator check`: 0 when every check passed, 1 otherwise.
pub fn run(args: &CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("check: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(check(args))
}

async fn check(args: &CheckArgs) -> ExitCode {
    let lease = match args.lease.as_deref().map(split_lease).transpose() {
        Ok(lease) => lease,
        Err(e) => {
            eprintln!("check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match kube::Config::infer().await.map(kube::Client::try_from) {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            eprintln!("check: cannot reach the Kubernetes API: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("check: no Kubernetes API configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            eprintln!("check: HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    let readyz = format!("{}/readyz", args.url.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + args.retry_for;
    loop {
        let observed = Observed {
            readyz: get(&http, &readyz).await,
            lease: match &lease {
                Some((namespace, name)) => Some(read_lease(&client, namespace, name).await),
                None => None,
            },
            clusters: count_clusters(&client, args.namespace.as_deref()).await,
        };
        match verdict(&observed, Timestamp::now()) {
            Ok(passed) => {
                println!("ok: {readyz} answered 200 ({})", passed.readyz);
                if let Some(leader) = passed.leader {
                    println!("ok: {leader} leads and renews the Lease");
                }
                println!(
                    "ok: the ServiceAccount lists OctopusClusters ({} in scope)",
                    passed.clusters
                );
                return ExitCode::SUCCESS;
            }
            Err(problems) if tokio::time::Instant::now() >= deadline => {
                for problem in problems {
                    println!("FAILED: {problem}");
                }
                return ExitCode::FAILURE;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

fn split_lease(lease: &str) -> Result<(String, String), String> {
    match lease.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("--lease {lease:?}: expected NAMESPACE/NAME")),
    }
}

async fn get(http: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = http.get(url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

async fn read_lease(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<Option<LeaseView>, String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases.get_opt(name).await.map_err(|e| e.to_string())?;
    Ok(lease.map(|lease| {
        let spec = lease.spec.unwrap_or_default();
        LeaseView {
            holder: spec.holder_identity,
            renewed: spec.renew_time.map(|t| t.0),
            duration_seconds: spec.lease_duration_seconds,
        }
    }))
}

async fn count_clusters(client: &kube::Client, namespace: Option<&str>) -> Result<usize, String> {
    let api: Api<OctopusCluster> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn lease(holder: &str, renewed_ago: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.to_owned()),
            renewed: Some(now() - SignedDuration::from_secs(renewed_ago)),
            duration_seconds: Some(15),
        }
    }

    fn healthy() -> Observed {
        Observed {
            readyz: Ok((200, "standby\n".to_owned())),
            lease: Some(Ok(Some(lease("operator-0", 3)))),
            clusters: Ok(2),
        }
    }

    #[test]
    fn a_ready_service_a_live_leader_and_a_listable_api_pass() {
        let passed = verdict(&healthy(), now());
        assert_eq!(
            passed,
            Ok(Passed {
                readyz: "standby".to_owned(),
                leader: Some("operator-0".to_owned()),
                clusters: 2
            })
        );
        let no_election = Observed {
            lease: None,
            ..healthy()
        };
        assert!(verdict(&no_election, now()).is_ok_and(|p| p.leader.is_none()));
    }

    #[test]
    fn each_broken_part_is_named() {
        let cases = [
            (
                Observed {
                    readyz: Err("connection refused".to_owned()),
                    ..healthy()
                },
                Problem::Unreachable("connection refused".to_owned()),
            ),
            (
                Observed {
                    readyz: Ok((503, "leader, watch cache not synced yet".to_owned())),
                    ..healthy()
                },
                Problem::NotReady {
                    status: 503,
                    body: "leader, watch cache not synced yet".to_owned(),
                },
            ),
            (
                Observed {
                    lease: Some(Ok(None)),
                    ..healthy()
                },
                Problem::NoLease,
            ),
            (
                Observed {
                    lease: Some(Ok(Some(LeaseView::default()))),
                    ..healthy()
                },
                Problem::NoLeader,
            ),
            (
                Observed {
                    lease: Some(Ok(Some(lease("operator-0", 16)))),
                    ..healthy()
                },
                Problem::LeaseExpired {
                    holder: "operator-0".to_owned(),
                    renewed_ago: SignedDuration::from_secs(16),
                },
            ),
            (
                Observed {
                    clusters: Err("forbidden".to_owned()),
                    ..healthy()
                },
                Problem::ClustersUnreadable("forbidden".to_owned()),
            ),
        ];
        for (observed, problem) in cases {
            assert_eq!(verdict(&observed, now()), Err(vec![problem]));
        }
    }

    #[test]
    fn a_lease_renewed_exactly_at_its_duration_still_counts() {
        let observed = Observed {
            lease: Some(Ok(Some(lease("operator-1", 15)))),
            ..healthy()
        };
        assert!(verdict(&observed, now()).is_ok());
    }

    #[test]
    fn every_failure_is_reported_at_once() {
        let observed = Observed {
            readyz: Err("no route".to_owned()),
            lease: Some(Err("forbidden".to_owned())),
            clusters: Err("not found".to_owned()),
        };
        let problems = verdict(&observed, now()).err().unwrap_or_default();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn lease_argument_is_namespace_and_name() {
        assert_eq!(
            split_lease("ops/octopus-operator"),
            Ok(("ops".to_owned(), "octopus-operator".to_owned()))
        );
        assert!(split_lease("octopus-operator").is_err());
        assert!(split_lease("/x").is_err());
    }
}
