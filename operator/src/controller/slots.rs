//! Blast radius: how many clusters may upgrade at once (`--max-concurrent-upgrades`).
//! Pure: the reconciler's [`ledger`](super::ledger) counts the slots other clusters hold,
//! from their status as the API shows it; [`admit`] decides whether this cluster may
//! begin an upgrade now.
//!
//! A cluster holds a slot from the moment its upgrade is recorded in `status.upgrade`
//! (its first step runs from that record) until the record is finished: a stopped or held
//! upgrade keeps its slot, since its cluster is not steady. The cap only ever gates the
//! start of an upgrade: a recorded one runs to its end whatever the cap says, so lowering
//! the cap (or an operator restart) never stops a cluster mid-upgrade.

use std::num::NonZeroU32;

use crate::api::UpgradeStatus;

/// The slots as one reconcile sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpgradeSlots {
    /// At most this many clusters upgrade at once; `None`: no cap.
    pub cap: Option<NonZeroU32>,
    /// Slots held by other clusters (not the one being reconciled).
    pub taken: u32,
}

/// Whether a cluster may begin an upgrade now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Every slot is taken: wait for one to free (`WaitingForUpgradeSlot`).
    Wait {
        taken: u32,
        cap: NonZeroU32,
    },
}

impl Admission {
    /// Why the cluster waits, for the Progressing condition.
    pub fn message(self, what: &str) -> Option<String> {
        match self {
            Self::Admit => None,
            Self::Wait { taken, cap } => Some(format!(
                "{what} waits for an upgrade slot: {taken} cluster(s) upgrade now and the \
                 operator runs at most {cap} at once (--max-concurrent-upgrades); it begins \
                 when one of them finishes"
            )),
        }
    }
}

/// Whether a cluster whose `status.upgrade` reads so holds an upgrade slot: an upgrade
/// (or scale-down) is recorded and not finished.
pub fn holds_slot(upgrade: Option<&UpgradeStatus>) -> bool {
    upgrade.is_some_and(|u| u.finished_at.is_none())
}

/// Whether a cluster that wants to begin an upgrade may, given the slots others hold.
pub fn admit(slots: UpgradeSlots) -> Admission {
    match slots.cap {
        Some(cap) if slots.taken >= cap.get() => Admission::Wait {
            taken: slots.taken,
            cap,
        },
        _ => Admission::Admit,
    }
}

/// How many waiting clusters to wake when `holding` clusters (this one included) hold a
/// slot: the free slots, or none without a cap.
pub fn free(cap: Option<NonZeroU32>, holding: u32) -> usize {
    cap.map_or(0, |c| {
        usize::try_from(c.get().saturating_sub(holding)).unwrap_or(usize::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn cap(n: u32) -> Option<NonZeroU32> {
        NonZeroU32::new(n)
    }

    #[test]
    fn no_cap_always_admits() {
        for taken in [0, 1, 1000] {
            assert_eq!(admit(UpgradeSlots { cap: None, taken }), Admission::Admit);
        }
    }

    #[test]
    fn admits_below_the_cap_and_waits_at_or_above_it() {
        let slots = |taken| UpgradeSlots { cap: cap(2), taken };
        assert_eq!(admit(slots(0)), Admission::Admit);
        assert_eq!(admit(slots(1)), Admission::Admit);
        let two = NonZeroU32::new(2).expect("2");
        assert_eq!(admit(slots(2)), Admission::Wait { taken: 2, cap: two });
        // A lowered cap with more clusters mid-upgrade than it allows: the newcomer waits.
        assert_eq!(admit(slots(5)), Admission::Wait { taken: 5, cap: two });
    }

    #[test]
    fn the_wait_names_the_flag_and_the_counts() {
        let message = admit(UpgradeSlots {
            cap: cap(1),
            taken: 1,
        })
        .message("2024.1.100 -> 2024.1.200")
        .expect("waits");
        assert!(message.contains("1 cluster(s) upgrade now"), "{message}");
        assert!(message.contains("at most 1"), "{message}");
        assert!(message.contains("--max-concurrent-upgrades"), "{message}");
        assert_eq!(Admission::Admit.message("x"), None);
    }

    #[test]
    fn a_slot_is_held_from_the_record_until_it_finishes() {
        assert!(!holds_slot(None));
        let mut upgrade = UpgradeStatus {
            from: "2024.1.100".into(),
            to: "2024.1.200".into(),
            ..UpgradeStatus::default()
        };
        assert!(holds_slot(Some(&upgrade)), "recorded, not finished");
        upgrade.stopped_reason = Some("NodeNotReady".into());
        assert!(
            holds_slot(Some(&upgrade)),
            "a stopped upgrade keeps its slot"
        );
        upgrade.finished_at = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert!(!holds_slot(Some(&upgrade)), "finished");
    }

    #[test]
    fn free_slots_to_wake() {
        assert_eq!(free(None, 0), 0);
        assert_eq!(free(cap(3), 1), 2);
        assert_eq!(free(cap(3), 3), 0);
        assert_eq!(free(cap(3), 7), 0);
    }
}
