//! Blast radius (`--max-concurrent-upgrades`): a cluster over the cap waits with
//! `WaitingForUpgradeSlot` (not blocked, not degraded), an upgrade under way never does,
//! and a fleet of simulated clusters bumped at once never has more upgrades recorded
//! than the cap, yet every cluster converges.

use std::num::NonZeroU32;

use super::fixtures::*;
use super::sim::*;

fn slots(cap: u32, taken: u32) -> UpgradeSlots {
    UpgradeSlots {
        cap: NonZeroU32::new(cap),
        taken,
    }
}

/// A steady cluster whose spec now wants the patch `V1_PATCH`.
fn wants_patch() -> Observed {
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    o.generation = 2;
    o
}

#[test]
fn over_the_cap_a_new_upgrade_waits_for_a_slot_and_touches_nothing() {
    let mut o = wants_patch();
    o.upgrade_slots = slots(2, 2);
    let d = decide(&o);
    assert!(d.upgrade.is_none(), "no upgrade recorded: {:?}", d.upgrade);
    assert!(d.action.is_none());
    // The StatefulSet keeps what the cluster runs.
    assert_eq!(d.statefulset, want(V1, 3));
    assert_cond(&d, PROGRESSING, true, "WaitingForUpgradeSlot");
    assert_cond(&d, UPGRADE_BLOCKED, false, "NotBlocked");
    assert_cond(&d, DEGRADED, false, "AsExpected");
    assert_cond(&d, READY, false, "NodesNotReady");
    assert_eq!(phase(&d.conditions), "WaitingForUpgradeSlot");
    let message = &cond(&d, PROGRESSING).message;
    assert!(
        message.contains(&format!("{V1} -> {V1_PATCH}")),
        "{message}"
    );
    assert!(message.contains("2 cluster(s) upgrade now"), "{message}");
    assert_eq!(d.stop, None, "a wait, not a stop: no Warning Event");
}

#[test]
fn below_the_cap_or_without_one_the_upgrade_is_recorded() {
    for s in [slots(2, 1), slots(0, 50), UpgradeSlots::default()] {
        let mut o = wants_patch();
        o.upgrade_slots = s;
        let d = decide(&o);
        assert!(
            d.upgrade.as_ref().is_some_and(|u| u.to == V1_PATCH),
            "{s:?}: {:?}",
            d.upgrade
        );
        assert_cond(&d, PROGRESSING, true, "Upgrading");
    }
}

#[test]
fn the_gates_before_the_cap_keep_their_own_reason() {
    // An unapproved schema upgrade says so, whatever the slots.
    let mut o = steady(V1, 3);
    o.spec.version = V2.into();
    o.generation = 2;
    o.upgrade_slots = slots(1, 1);
    let d = decide(&o);
    assert_cond(&d, UPGRADE_BLOCKED, true, "SchemaUpgradeNotApproved");
}

#[test]
fn an_upgrade_under_way_is_never_stopped_by_the_cap() {
    // Recorded with slots free; then the cap is full (lowered, or others took slots).
    let o = planned(wants_patch());
    let free = decide(&o);
    let mut full = o.clone();
    full.upgrade_slots = slots(1, 7);
    let d = decide(&full);
    assert_eq!(d.action, free.action);
    assert_eq!(d.statefulset, free.statefulset);
    assert_eq!(d.upgrade, free.upgrade);
    assert_cond(&d, PROGRESSING, true, "Upgrading");
}

#[test]
fn a_scale_down_is_not_held_by_the_cap() {
    let mut o = steady(V1, 3);
    o.spec.replicas = 2;
    o.generation = 2;
    o.upgrade_slots = slots(1, 1);
    let d = decide(&o);
    assert!(
        d.upgrade.as_ref().is_some_and(|u| u.change == "scale-down"),
        "{:?}",
        d.upgrade
    );
}

// ------------------------------------------------------------------- a simulated fleet

/// Reconciles every sim once per round, in a rotating order, each seeing the slots the
/// others' status holds (what the ledger reads from the API); counts the most upgrades
/// recorded at once.
struct Fleet {
    sims: Vec<Sim>,
    cap: u32,
    most_holding: u32,
    waits_seen: u32,
}

impl Fleet {
    fn holding(&self, except: Option<usize>) -> u32 {
        let n = self
            .sims
            .iter()
            .enumerate()
            .filter(|(i, s)| Some(*i) != except && slots::holds_slot(s.status.upgrade.as_ref()))
            .count();
        u32::try_from(n).expect("few")
    }

    fn round(&mut self, round: usize) {
        let n = self.sims.len();
        for k in 0..n {
            let i = (k + round) % n;
            self.sims[i].slots = slots(self.cap, self.holding(Some(i)));
            let d = self.sims[i].reconcile(Kill::Never);
            if cond(&d, PROGRESSING).reason == Reason::WaitingForUpgradeSlot {
                self.waits_seen += 1;
            }
            let holding = self.holding(None);
            self.most_holding = self.most_holding.max(holding);
            assert!(
                self.cap == 0 || holding <= self.cap,
                "{holding} upgrades recorded at once, cap {}\n{}",
                self.cap,
                self.sims[i].story()
            );
        }
        for sim in &mut self.sims {
            sim.tick();
        }
    }

    fn run(&mut self, rounds: usize) {
        for r in 0..rounds {
            self.round(r);
            if self.sims.iter().all(Sim::settled) {
                return;
            }
        }
        let stuck: Vec<String> = self
            .sims
            .iter()
            .filter(|s| !s.settled())
            .map(Sim::story)
            .collect();
        panic!(
            "the fleet did not settle in {rounds} rounds:\n{}",
            stuck.join("\n\n")
        );
    }
}

fn bumped_fleet(clusters: usize, cap: u32) -> Fleet {
    let sims = (0..clusters)
        .map(|_| {
            let mut sim = Sim::steady(V1, 3);
            sim.change_spec(|s| s.version = V1_PATCH.into());
            sim.expect = Expect::new(Strategy::Rolling, V1, V1_PATCH, 3);
            sim
        })
        .collect();
    Fleet {
        sims,
        cap,
        most_holding: 0,
        waits_seen: 0,
    }
}

#[test]
fn a_fleet_bumped_at_once_upgrades_at_most_cap_clusters_at_a_time() {
    let mut fleet = bumped_fleet(7, 2);
    fleet.run(400);
    for sim in &fleet.sims {
        sim.assert_converged(V1_PATCH);
    }
    assert_eq!(fleet.most_holding, 2, "the cap is used, not undercut");
    assert!(fleet.waits_seen > 0, "clusters waited their turn");
}

#[test]
fn without_a_cap_the_whole_fleet_upgrades_together() {
    let mut fleet = bumped_fleet(5, 0);
    fleet.run(200);
    for sim in &fleet.sims {
        sim.assert_converged(V1_PATCH);
    }
    assert_eq!(fleet.most_holding, 5);
    assert_eq!(fleet.waits_seen, 0);
}

#[test]
fn after_a_restart_with_a_lower_cap_upgrades_under_way_finish_and_newcomers_wait() {
    // Three clusters mid-roll (the operator restarted with cap 1), and a fourth bumped.
    let mut fleet = bumped_fleet(4, 0);
    for sim in &mut fleet.sims[..3] {
        sim.run_until(40, |d| matches!(step_of(d).0, Some(StepKind::Replace)));
    }
    assert_eq!(fleet.holding(None), 3);
    fleet.cap = 1;
    let fourth = 3;
    let mut started_at = None;
    for r in 0..400 {
        // The cap holds the newcomer; the three run on (holding may exceed it until then).
        fleet.sims[fourth].slots = slots(1, fleet.holding(Some(fourth)));
        let others_done = fleet.holding(Some(fourth)) == 0;
        let d = fleet.sims[fourth].reconcile(Kill::Never);
        let recorded = slots::holds_slot(d.upgrade.as_ref());
        if recorded && started_at.is_none() {
            assert!(
                others_done,
                "the newcomer began while others held every slot"
            );
            started_at = Some(r);
        }
        for i in 0..fourth {
            fleet.sims[i].slots = slots(1, fleet.holding(Some(i)));
            fleet.sims[i].reconcile(Kill::Never);
        }
        for sim in &mut fleet.sims {
            sim.tick();
        }
        if fleet.sims.iter().all(Sim::settled) {
            break;
        }
    }
    assert!(started_at.is_some(), "the newcomer never began");
    for sim in &fleet.sims {
        sim.assert_converged(V1_PATCH);
    }
}

// ------------------------------------------------------------------------- the ledger

mod ledger {
    use futures::channel::mpsc::{UnboundedReceiver, unbounded};
    use kube::runtime::reflector::{self, ObjectRef};
    use kube::runtime::watcher;

    use super::*;
    use crate::api::OctopusCluster;
    use crate::controller::ledger::Ledger;

    fn object(name: &str, upgrading: bool) -> OctopusCluster {
        let mut c = OctopusCluster::new(name, spec(V1, 3));
        c.metadata.namespace = Some("fleet".into());
        if upgrading {
            let o = planned(wants_patch());
            c.status = Some(o.status);
        }
        c
    }

    /// A ledger capped at `cap` over a cache holding `clusters`.
    fn ledger(
        cap: u32,
        clusters: &[&OctopusCluster],
    ) -> (Ledger, UnboundedReceiver<ObjectRef<OctopusCluster>>) {
        let (store, mut writer) = reflector::store();
        for c in clusters {
            writer.apply_watcher_event(&watcher::Event::Apply((*c).clone()));
        }
        let (wake, woken) = unbounded();
        (Ledger::new(NonZeroU32::new(cap), store, wake), woken)
    }

    #[test]
    fn two_clusters_racing_for_the_last_slot_do_not_both_take_it() {
        // The cache has not seen either status write yet: the ledger remembers its own.
        let (a, b) = (object("a", false), object("b", false));
        let (ledger, mut woken) = ledger(1, &[&a, &b]);
        let da = ledger.decide(&a, &mut wants_patch(), decide);
        assert!(slots::holds_slot(da.upgrade.as_ref()), "a takes the slot");
        let db = ledger.decide(&b, &mut wants_patch(), decide);
        assert!(db.upgrade.is_none(), "b waits: {:?}", db.upgrade);
        assert_cond(&db, PROGRESSING, true, "WaitingForUpgradeSlot");
        assert!(
            woken.try_recv().is_err(),
            "nobody is woken while the slot is held"
        );

        // a finishes: its next decision holds no slot, but until the status saying so is
        // written the API still shows it upgrading, so b waits.
        let mut done = steady(V1_PATCH, 3);
        let d = ledger.decide(&a, &mut done, decide);
        assert!(!slots::holds_slot(d.upgrade.as_ref()));
        assert!(woken.try_recv().is_err(), "a's finish is not written yet");
        let db = ledger.decide(&b, &mut wants_patch(), decide);
        assert_cond(&db, PROGRESSING, true, "WaitingForUpgradeSlot");
        // Written: b is woken and takes the slot.
        ledger.written(&a);
        let next = woken.try_recv().ok();
        assert_eq!(next, Some(ObjectRef::from_obj(&b)));
        let db = ledger.decide(&b, &mut wants_patch(), decide);
        assert!(
            slots::holds_slot(db.upgrade.as_ref()),
            "b takes the freed slot"
        );
    }

    #[test]
    fn after_a_restart_the_slots_come_from_status() {
        // A new operator process: nothing decided yet, the cache shows a mid-upgrade.
        let (a, b) = (object("a", true), object("b", false));
        let (ledger, _woken) = ledger(1, &[&a, &b]);
        let db = ledger.decide(&b, &mut wants_patch(), decide);
        assert_cond(&db, PROGRESSING, true, "WaitingForUpgradeSlot");
        // a itself goes on: its upgrade is under way.
        let mut mid = planned(wants_patch());
        let da = ledger.decide(&a, &mut mid, decide);
        assert!(slots::holds_slot(da.upgrade.as_ref()));
        assert!(da.action.is_some() || da.statefulset.is_some());
    }

    #[test]
    fn waiters_are_woken_oldest_first_one_per_free_slot() {
        let (a, b, c) = (object("a", false), object("b", false), object("c", false));
        let (ledger, mut woken) = ledger(1, &[&a, &b, &c]);
        ledger.decide(&a, &mut wants_patch(), decide);
        ledger.decide(&c, &mut wants_patch(), decide);
        ledger.decide(&b, &mut wants_patch(), decide);
        // b waits again (woken by something else): it keeps its place behind c.
        ledger.decide(&b, &mut wants_patch(), decide);
        ledger.decide(&a, &mut steady(V1_PATCH, 3), decide);
        ledger.written(&a);
        assert_eq!(woken.try_recv().ok(), Some(ObjectRef::from_obj(&c)));
        assert!(woken.try_recv().is_err(), "one free slot, one woken");
    }

    #[test]
    fn without_a_cap_the_ledger_only_decides() {
        let (a, b) = (object("a", true), object("b", false));
        let (ledger, _woken) = ledger(0, &[&a, &b]);
        let mut o = wants_patch();
        let d = ledger.decide(&b, &mut o, decide);
        assert_eq!(o.upgrade_slots, UpgradeSlots::default());
        assert!(slots::holds_slot(d.upgrade.as_ref()));
    }
}
