//! Who holds an upgrade slot, for `--max-concurrent-upgrades` (the decision itself is
//! [`slots::admit`], pure). Built from what the API shows, so it survives restarts and
//! leader changes: a cluster holds a slot while its `status.upgrade` is unfinished
//! ([`slots::holds_slot`]), read from the controller's cache of OctopusClusters.
//!
//! The cache lags the operator's own status writes, and reconciles of different clusters
//! run at once: two clusters could each see one free slot and both take it. So the count
//! and the decision are made under one lock, and each decision's outcome is remembered
//! (the operator is the only writer of status, so what it last decided for a cluster is
//! what that cluster's status says, or is about to). A finished upgrade frees its slot
//! only once the status saying so is written, so the API never shows more upgrades than
//! the cap. When slots are free, the clusters waiting longest are woken through the
//! controller's trigger stream.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};

use super::conditions::PROGRESSING;
use super::model::{Decision, Observed};
use super::reason::Reason;
use super::slots::{self, UpgradeSlots};
use crate::api::OctopusCluster;

type Key = ObjectRef<OctopusCluster>;

/// What the last decision for a cluster meant for the slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Holds,
    /// Decided finished, but the status write saying so has not landed yet: until it has,
    /// the API still shows the slot held, so it counts as held.
    Releasing,
    /// Waits for a slot; the number orders waiters, oldest first.
    Waits(u64),
    Free,
}

#[derive(Default)]
struct Book {
    seen: HashMap<Key, Seen>,
    next_waiter: u64,
}

/// The slots of every cluster this operator reconciles.
pub struct Ledger {
    cap: Option<NonZeroU32>,
    clusters: Store<OctopusCluster>,
    book: Mutex<Book>,
    wake: UnboundedSender<Key>,
}

impl Ledger {
    /// `clusters` is the controller's cache; woken clusters are sent to `wake`.
    pub fn new(
        cap: Option<NonZeroU32>,
        clusters: Store<OctopusCluster>,
        wake: UnboundedSender<Key>,
    ) -> Self {
        Self {
            cap,
            clusters,
            book: Mutex::default(),
            wake,
        }
    }

    /// Decides for `cluster` with the slots others hold, and remembers the outcome.
    /// Without a cap it only decides.
    pub fn decide(
        &self,
        cluster: &OctopusCluster,
        observed: &mut Observed,
        decide: impl FnOnce(&Observed) -> Decision,
    ) -> Decision {
        let Some(cap) = self.cap else {
            return decide(observed);
        };
        let me = ObjectRef::from_obj(cluster);
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = self.taken(&book, &me);
        observed.upgrade_slots = UpgradeSlots {
            cap: Some(cap),
            taken,
        };
        let decision = decide(observed);
        let before = book.seen.get(&me).copied();
        let now = if slots::holds_slot(decision.upgrade.as_ref()) {
            Seen::Holds
        } else if matches!(before, Some(Seen::Holds | Seen::Releasing)) {
            Seen::Releasing
        } else if waits(&decision) {
            match before {
                Some(Seen::Waits(since)) => Seen::Waits(since),
                _ => {
                    book.next_waiter += 1;
                    Seen::Waits(book.next_waiter)
                }
            }
        } else {
            Seen::Free
        };
        book.seen.insert(me.clone(), now);
        let holding = taken + u32::from(matches!(now, Seen::Holds | Seen::Releasing));
        self.wake_waiters(&book, &me, slots::free(Some(cap), holding));
        decision
    }

    /// The status of the last decision for `cluster` is written: a slot it released is
    /// free now, and the oldest waiter is woken for it.
    pub fn written(&self, cluster: &OctopusCluster) {
        let Some(cap) = self.cap else {
            return;
        };
        let me = ObjectRef::from_obj(cluster);
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if book.seen.get(&me) == Some(&Seen::Releasing) {
            book.seen.insert(me.clone(), Seen::Free);
            let taken = self.taken(&book, &me);
            self.wake_waiters(&book, &me, slots::free(Some(cap), taken));
        }
    }

    /// Wakes the `free` longest-waiting clusters other than `me`.
    fn wake_waiters(&self, book: &Book, me: &Key, free: usize) {
        if free == 0 {
            return;
        }
        let mut waiters: Vec<(u64, &Key)> = book
            .seen
            .iter()
            .filter_map(|(k, s)| match s {
                Seen::Waits(since) if k != me => Some((*since, k)),
                _ => None,
            })
            .collect();
        waiters.sort_unstable_by_key(|(since, _)| *since);
        for (_, key) in waiters.into_iter().take(free) {
            // A closed channel means the controller is stopping: nobody to wake.
            let _ = self.wake.unbounded_send(key.clone());
        }
    }

    /// Forgets a deleted cluster.
    pub fn forget(&self, cluster: &OctopusCluster) {
        if self.cap.is_some() {
            self.book
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .seen
                .remove(&ObjectRef::from_obj(cluster));
        }
    }

    /// Slots held by clusters other than `me`: as this operator last decided for them,
    /// else as their status in the cache says (after a restart, before their reconcile).
    fn taken(&self, book: &Book, me: &Key) -> u32 {
        let holding = self
            .clusters
            .state()
            .iter()
            .filter(|c| {
                let key = ObjectRef::from_obj(c.as_ref());
                key != *me
                    && match book.seen.get(&key) {
                        Some(seen) => matches!(seen, Seen::Holds | Seen::Releasing),
                        None => {
                            slots::holds_slot(c.status.as_ref().and_then(|s| s.upgrade.as_ref()))
                        }
                    }
            })
            .count();
        u32::try_from(holding).unwrap_or(u32::MAX)
    }
}

/// The decision holds the cluster back for a slot.
fn waits(decision: &Decision) -> bool {
    decision
        .conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.reason == Reason::WaitingForUpgradeSlot)
}
