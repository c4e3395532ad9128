//! Turns what a reconcile concluded (a stop, a progress note, the upgrade under way) into
//! the five conditions, and the conditions into the one-word phase.

use super::{Progress, Stop};
use crate::controller::conditions::{DEGRADED, PAUSED, PROGRESSING, READY, UPGRADE_BLOCKED};
use crate::controller::model::{CondWant, Decision, Observed, OctopusView, Requeue};
use crate::controller::reason::Reason;
use crate::controller::steps::{StepKind, Upgrade};

/// Fills the conditions of `d`. `upgrade` is the upgrade under way (typed), if any.
pub(super) fn finish(
    o: &Observed,
    mut d: Decision,
    upgrade: Option<&Upgrade>,
    stop: Option<Stop>,
    progress: Option<Progress>,
) -> Decision {
    let running = upgrade.filter(|u| u.finished_at.is_none());
    let upgrading = d.upgrade.as_ref().is_some_and(|u| u.finished_at.is_none());
    d.conditions = vec![
        ready(o, upgrading, stop.is_some()),
        progressing(o, running, stop.as_ref(), progress),
        degraded(o, running, stop.as_ref()),
        blocked(stop.as_ref()),
        paused(o),
    ];
    if let Some(s) = stop {
        d.stop = Some((s.reason, s.message));
    }
    if o.spec.paused {
        d.statefulset = None;
        d.action = None;
        d.requeue = Requeue::Idle;
    }
    d
}

/// Pods ready, not terminating, on spec.version.
fn ready_on_target(o: &Observed) -> usize {
    o.pods
        .iter()
        .filter(|p| p.ready && !p.terminating && p.version.as_deref() == Some(&o.spec.version))
        .count()
}

fn all_ready(o: &Observed) -> bool {
    let desired = o.spec.replicas;
    i32::try_from(ready_on_target(o)).unwrap_or(i32::MAX) >= desired && desired > 0
}

fn ready(o: &Observed, upgrading: bool, stopped: bool) -> CondWant {
    let ready = all_ready(o) && !upgrading && !stopped;
    CondWant {
        type_: READY,
        status: ready,
        reason: if ready {
            Reason::Ready
        } else if upgrading {
            Reason::Upgrading
        } else if o.statefulset.is_none() {
            Reason::Creating
        } else {
            Reason::NodesNotReady
        },
        message: format!(
            "{}/{} node(s) ready on {}",
            ready_on_target(o),
            o.spec.replicas,
            o.spec.version
        ),
    }
}

fn progressing(
    o: &Observed,
    running: Option<&Upgrade>,
    stop: Option<&Stop>,
    progress: Option<Progress>,
) -> CondWant {
    let desired = o.spec.replicas;
    let scaling = o
        .statefulset
        .as_ref()
        .is_some_and(|s| s.replicas != desired)
        || !all_ready(o);
    let progressing = match (progress, stop) {
        (_, Some(_)) => None,
        (Some(p), None) => Some(p),
        (None, None) if !o.spec.paused && scaling && o.statefulset.is_some() => Some((
            Reason::NodesNotReady,
            format!("waiting for {desired} node(s) to be ready"),
        )),
        (None, None) => None,
    };
    let (status, reason, message) = match progressing {
        Some((reason, message)) => (true, reason, message),
        None if o.spec.paused => (
            false,
            Reason::Paused,
            match running {
                Some(u) => format!(
                    "paused during the upgrade to {} at step {}",
                    u.to,
                    u.step.map_or("-", StepKind::as_str)
                ),
                None => "paused".into(),
            },
        ),
        None => match stop {
            Some(s) => (false, s.reason, s.message.clone()),
            None => (false, Reason::Idle, "nothing to do".into()),
        },
    };
    CondWant {
        type_: PROGRESSING,
        status,
        reason,
        message,
    }
}

fn degraded(o: &Observed, running: Option<&Upgrade>, stop: Option<&Stop>) -> CondWant {
    // While every node stops and the first one migrates, the API is down on purpose.
    let planned_outage = running
        .and_then(|u| u.step)
        .is_some_and(|s| s.traits().planned_outage);
    let octopus_trouble = match &o.octopus {
        OctopusView::Unavailable { reason, message }
            if o.pods.iter().any(|p| p.ready) && !planned_outage =>
        {
            Some((*reason, message.clone()))
        }
        _ => None,
    };
    let fault = stop
        .filter(|s| s.reason.degraded())
        .map(|s| (s.reason, s.message.clone()))
        .or(octopus_trouble);
    match fault {
        Some((reason, message)) => CondWant {
            type_: DEGRADED,
            status: true,
            reason,
            message,
        },
        None => CondWant {
            type_: DEGRADED,
            status: false,
            reason: Reason::AsExpected,
            message: "no fault observed".into(),
        },
    }
}

fn blocked(stop: Option<&Stop>) -> CondWant {
    match stop.filter(|s| s.reason.blocks()) {
        Some(s) => CondWant {
            type_: UPGRADE_BLOCKED,
            status: true,
            reason: s.reason,
            message: s.message.clone(),
        },
        None => CondWant {
            type_: UPGRADE_BLOCKED,
            status: false,
            reason: Reason::NotBlocked,
            message: "nothing holds the cluster from its spec".into(),
        },
    }
}

fn paused(o: &Observed) -> CondWant {
    if o.spec.paused {
        CondWant {
            type_: PAUSED,
            status: true,
            reason: Reason::Paused,
            message: "spec.paused is true: the operator takes no step until it is false".into(),
        }
    } else {
        CondWant {
            type_: PAUSED,
            status: false,
            reason: Reason::NotPaused,
            message: "reconciling".into(),
        }
    }
}

/// The one-word phase for `kubectl get`.
pub fn phase(conditions: &[CondWant]) -> String {
    let get = |t: &str| conditions.iter().find(|c| c.type_ == t);
    for t in [PAUSED, UPGRADE_BLOCKED, DEGRADED, PROGRESSING] {
        if let Some(c) = get(t).filter(|c| c.status) {
            return c.reason.as_str().to_string();
        }
    }
    get(READY)
        .map_or(Reason::Ready, |c| c.reason)
        .as_str()
        .to_string()
}
