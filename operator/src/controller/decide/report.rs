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
    let desired = o.spec.replicas;
    let ready_on_target = o
        .pods
        .iter()
        .filter(|p| p.ready && !p.terminating && p.version.as_deref() == Some(&o.spec.version))
        .count();
    let upgrading = d.upgrade.as_ref().is_some_and(|u| u.finished_at.is_none());
    let running = upgrade.filter(|u| u.finished_at.is_none());
    let all_ready = i32::try_from(ready_on_target).unwrap_or(i32::MAX) >= desired && desired > 0;
    let scaling = o
        .statefulset
        .as_ref()
        .is_some_and(|s| s.replicas != desired)
        || !all_ready;

    let ready = all_ready && !upgrading && stop.is_none();
    let mut conditions = vec![CondWant {
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
            "{ready_on_target}/{desired} node(s) ready on {}",
            o.spec.version
        ),
    }];

    let progressing = match (progress, &stop) {
        (_, Some(_)) => None,
        (Some(p), None) => Some(p),
        (None, None) if !o.spec.paused && scaling && o.statefulset.is_some() => Some((
            Reason::NodesNotReady,
            format!("waiting for {desired} node(s) to be ready"),
        )),
        (None, None) => None,
    };
    conditions.push(match progressing {
        Some((reason, message)) => CondWant {
            type_: PROGRESSING,
            status: true,
            reason,
            message,
        },
        None if o.spec.paused => CondWant {
            type_: PROGRESSING,
            status: false,
            reason: Reason::Paused,
            message: match running {
                Some(u) => format!(
                    "paused during the upgrade to {} at step {}",
                    u.to,
                    u.step.map_or("-", StepKind::as_str)
                ),
                None => "paused".into(),
            },
        },
        None => CondWant {
            type_: PROGRESSING,
            status: false,
            reason: stop.as_ref().map_or(Reason::Idle, |s| s.reason),
            message: stop
                .as_ref()
                .map_or_else(|| "nothing to do".into(), |s| s.message.clone()),
        },
    });

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
    let degraded = stop
        .as_ref()
        .filter(|s| s.reason.degraded())
        .map(|s| (s.reason, s.message.clone()))
        .or(octopus_trouble);
    conditions.push(match degraded {
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
    });
    conditions.push(match stop.as_ref().filter(|s| s.reason.blocks()) {
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
    });
    conditions.push(if o.spec.paused {
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
    });
    if let Some(s) = stop {
        d.stop = Some((s.reason, s.message));
    }
    if o.spec.paused {
        d.statefulset = None;
        d.action = None;
        d.requeue = Requeue::Idle;
    }
    d.conditions = conditions;
    d
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
