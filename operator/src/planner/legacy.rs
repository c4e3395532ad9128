//! Legacy upgrade paths: old Octopus versions reach modern ones only through fixed
//! intermediate versions. Data, so a new gateway is one more table row.
//!
//! Sources: Octopus's "Upgrading from Octopus 2.6" (3.x is reachable only from 2.6; older
//! versions go to 2.6 first) and the current "supported upgrade paths": 1.x -> 1.6 -> 2.6.5
//! -> 2018.10 LTS -> any newer version; 2.6.5 is the 2.6 release the current docs name.

use crate::version::OctopusVersion;

/// One intermediate version Octopus requires: moving from below `from_below` to
/// `to_at_least` or later must pass through `via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Versions below this cannot jump past the gateway.
    pub from_below: OctopusVersion,
    /// Targets at or above this lie past the gateway.
    pub to_at_least: OctopusVersion,
    /// The version to go to first (the lowest that qualifies).
    pub via: OctopusVersion,
    /// How Octopus's docs name `via`, for messages.
    pub via_name: &'static str,
    /// The rule in one sentence, for messages.
    pub rule: &'static str,
}

/// The gateways, ordered by `from_below` so one pass collects every hop.
pub static GATEWAYS: [Gateway; 3] = [
    Gateway {
        from_below: OctopusVersion::new(1, 6, 0),
        to_at_least: OctopusVersion::new(2, 0, 0),
        via: OctopusVersion::new(1, 6, 0),
        via_name: "1.6",
        rule: "Octopus 2.x is reachable only from 1.6",
    },
    Gateway {
        from_below: OctopusVersion::new(2, 6, 5),
        to_at_least: OctopusVersion::new(3, 0, 0),
        via: OctopusVersion::new(2, 6, 5),
        via_name: "2.6.5",
        rule: "Octopus 3.0 and later is reachable only from 2.6.5",
    },
    Gateway {
        from_below: OctopusVersion::new(3, 0, 0),
        to_at_least: OctopusVersion::new(2018, 11, 0),
        via: OctopusVersion::new(2018, 10, 0),
        via_name: "2018.10 LTS",
        rule: "from 2.x, versions after 2018.10 LTS are reachable only through 2018.10 LTS",
    },
];

/// The first gateway the move from `from` to `to` must pass, if any: the version to go to
/// before anything else. [`super::route`] chains these with the known bad paths' hops.
pub fn gateway(from: &OctopusVersion, to: &OctopusVersion) -> Option<&'static Gateway> {
    GATEWAYS
        .iter()
        .find(|gateway| *from < gateway.from_below && *to >= gateway.to_at_least)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway must lead forward, or a path could loop or go backwards.
    #[test]
    fn gateways_are_ordered_and_lead_forward() {
        for gateway in &GATEWAYS {
            assert!(gateway.via >= gateway.from_below, "{gateway:?}");
            assert!(gateway.via < gateway.to_at_least, "{gateway:?}");
            assert!(gateway.to_at_least >= gateway.from_below, "{gateway:?}");
        }
        for pair in GATEWAYS.windows(2) {
            assert!(pair[0].from_below < pair[1].from_below);
        }
    }
}
