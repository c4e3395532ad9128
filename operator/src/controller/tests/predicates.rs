//! The named safety predicates, one by one.

use super::fixtures::*;

// ------------------------------------------------------------------- safety predicates

#[test]
fn predicates_are_checked_in_their_table_order() {
    let names: Vec<&str> = Predicate::iter().map(Predicate::as_str).collect();
    assert_eq!(
        names,
        [
            "OctopusReachable",
            "OtherNodesServing",
            "NodeDrainedAndIdle",
            "TasksFinished",
            "BackupTaken",
            "NoOtherSchemaRunning",
            "NotBelowSchema",
        ]
    );
}

#[test]
fn each_predicate_holds_back_what_it_names() {
    let name2 = pod_name(2);
    let v1 = v(V1);
    let v2 = v(V2);
    // The world in which replacing octo-2 is fine.
    let replaceable = || {
        let mut o = steady(V1, 3);
        node_mut(&mut o, "octo-2").drained = true;
        o
    };
    // The world in which stopping every node for V1 -> V2 is fine.
    let stoppable = || {
        let mut o = steady(V1, 3);
        state_mut(&mut o).maintenance = true;
        o.status.upgrade = upgrade_record(V1, V2, 3, 6, t0());
        o.status.last_backup = Some(BackupStatus {
            job_name: "b".into(),
            from_version: V1.into(),
            to_version: V2.into(),
            attempt: None,
            master_key_secret: None,
            completed_at: None,
        });
        o
    };
    let take = Disruption::TakeNodeOut { node: &name2 };
    let replace = Disruption::ReplacePod { node: &name2 };
    let start_v1 = Disruption::StartVersion { version: &v1 };
    let start_v2 = Disruption::StartVersion { version: &v2 };

    type Base = Box<dyn Fn() -> Observed>;
    type Mutate = Box<dyn Fn(&mut Observed)>;
    let cases: Vec<(&str, Base, Disruption<'_>, Mutate, Option<&str>)> = vec![
        (
            "fine",
            Box::new(replaceable),
            replace,
            Box::new(|_| {}),
            None,
        ),
        ("fine", Box::new(replaceable), take, Box::new(|_| {}), None),
        (
            "fine",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|_| {}),
            None,
        ),
        (
            "fine",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|_| {}),
            None,
        ),
        (
            "patch of the running line",
            Box::new(|| steady(V1_PATCH, 3)),
            start_v1,
            Box::new(|_| {}),
            None,
        ),
        (
            "Octopus unreachable",
            Box::new(replaceable),
            take,
            Box::new(|o| o.octopus = unavailable()),
            Some("OctopusReachable"),
        ),
        (
            "Octopus unreachable",
            Box::new(replaceable),
            replace,
            Box::new(|o| o.octopus = OctopusView::NoReadyNode),
            Some("OctopusReachable"),
        ),
        (
            "Octopus unreachable",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| o.octopus = unavailable()),
            Some("OctopusReachable"),
        ),
        (
            "starting needs no Octopus",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|o| o.octopus = unavailable()),
            None,
        ),
        (
            "other pod not ready",
            Box::new(replaceable),
            take,
            Box::new(|o| pod_mut(o, "octo-0").ready = false),
            Some("OtherNodesServing"),
        ),
        (
            "other pod terminating",
            Box::new(replaceable),
            replace,
            Box::new(|o| pod_mut(o, "octo-1").terminating = true),
            Some("OtherNodesServing"),
        ),
        (
            "other pod missing",
            Box::new(replaceable),
            replace,
            Box::new(|o| o.pods.retain(|p| p.name != "octo-1")),
            Some("OtherNodesServing"),
        ),
        (
            "other node drained",
            Box::new(replaceable),
            take,
            Box::new(|o| node_mut(o, "octo-1").drained = true),
            Some("OtherNodesServing"),
        ),
        (
            "other node offline",
            Box::new(replaceable),
            take,
            Box::new(|o| node_mut(o, "octo-0").offline = true),
            Some("OtherNodesServing"),
        ),
        (
            "node not drained",
            Box::new(replaceable),
            replace,
            Box::new(|o| node_mut(o, "octo-2").drained = false),
            Some("NodeDrainedAndIdle"),
        ),
        (
            "node still runs a task",
            Box::new(replaceable),
            replace,
            Box::new(|o| state_mut(o).running_tasks.push(task("t1", Some(2)))),
            Some("NodeDrainedAndIdle"),
        ),
        (
            "a task on another node does not hold a drain",
            Box::new(replaceable),
            take,
            Box::new(|o| state_mut(o).running_tasks.push(task("t1", Some(0)))),
            None,
        ),
        (
            "maintenance mode off",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| state_mut(o).maintenance = false),
            Some("TasksFinished"),
        ),
        (
            "a task still runs",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| state_mut(o).running_tasks.push(task("t1", None))),
            Some("TasksFinished"),
        ),
        (
            "no backup recorded",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| o.status.last_backup = None),
            Some("BackupTaken"),
        ),
        (
            "backup of another upgrade",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| {
                if let Some(b) = o.status.last_backup.as_mut() {
                    b.from_version = "2023.4.1".into();
                }
            }),
            Some("BackupTaken"),
        ),
        (
            "backup skipped on purpose",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| {
                o.status.last_backup = None;
                o.spec.upgrade.backup = Some(BackupSpec {
                    job_template: None,
                    skip: Some(true),
                });
            }),
            None,
        ),
        (
            "no upgrade recorded",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| o.status.upgrade = None),
            Some("BackupTaken"),
        ),
        (
            "old line still runs",
            Box::new(|| steady(V1, 3)),
            start_v2,
            Box::new(|_| {}),
            Some("NoOtherSchemaRunning"),
        ),
        (
            "a terminating old pod still runs",
            Box::new(|| steady(V1, 1)),
            start_v2,
            Box::new(|o| pod_mut(o, "octo-0").terminating = true),
            Some("NoOtherSchemaRunning"),
        ),
        (
            "a pod of unknown version",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|o| pod_mut(o, "octo-1").version = None),
            Some("NoOtherSchemaRunning"),
        ),
        (
            "below the migrated schema",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|o| {
                o.pods.clear();
                o.status.schema_version = Some(V2.into());
            }),
            Some("NotBelowSchema"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, base, disruption, mutate, held) in cases {
        let mut o = base();
        mutate(&mut o);
        let got = safety::check(&o, disruption);
        let got_name = got.as_ref().err().map(|h| h.predicate.as_str());
        if got_name != held {
            failures.push(format!("{what} ({disruption:?}): {got:?}, want {held:?}"));
        }
        if let Err(h) = &got
            && h.message.is_empty()
        {
            failures.push(format!("{what}: {} says nothing", h.predicate.as_str()));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
