//! The versions a move must pass through: Octopus's legacy gateways ([`legacy`]) and the
//! hop chains of known bad paths ([`known_bad`]), chained until the target is reachable.

use super::{known_bad, legacy};
use crate::version::OctopusVersion;

/// More hops than any real route has; a bound so a bad table row cannot loop.
const MAX_HOPS: usize = 16;

/// The versions to pass through from `from` to `to`, both included: two entries when the
/// move is direct.
pub fn path(from: &OctopusVersion, to: &OctopusVersion) -> Vec<OctopusVersion> {
    let mut path = vec![from.clone()];
    while path.len() <= MAX_HOPS {
        let current = &path[path.len() - 1];
        let next: Vec<OctopusVersion> = match legacy::gateway(current, to) {
            Some(gateway) => vec![gateway.via.clone()],
            None => known_bad::hops(current, to).to_vec(),
        };
        // Only forward hops that stay below the target count; anything else ends the route.
        if next.is_empty() || next[0] <= *current || next[next.len() - 1] >= *to {
            break;
        }
        path.extend(next);
    }
    path.push(to.clone());
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> OctopusVersion {
        OctopusVersion::parse(s).expect("a version")
    }

    fn route(from: &str, to: &str) -> Vec<String> {
        path(&v(from), &v(to))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn gateways_and_known_bad_hops_chain() {
        assert_eq!(route("2024.1.1", "2024.2.1"), ["2024.1.1", "2024.2.1"]);
        assert_eq!(
            route("1.2.0", "3.0.0"),
            ["1.2.0", "1.6.0", "2.6.5", "3.0.0"]
        );
        assert_eq!(
            route("3.3.8", "2018.4.0"),
            ["3.3.8", "3.4.15", "3.17.14", "2018.4.0"]
        );
        // Legacy gateway first, then the known bad path's hop from where it lands.
        assert_eq!(
            route("2.5.0", "2018.8.6"),
            ["2.5.0", "2.6.5", "2018.7.14", "2018.8.6"]
        );
        assert_eq!(
            route("2.6.5", "2020.5.0"),
            ["2.6.5", "2018.10.0", "2020.5.0"]
        );
        assert_eq!(
            route("3.17.14", "2020.5.0"),
            ["3.17.14", "2020.4.0", "2020.5.0"]
        );
        // A replacement target is not a hop.
        assert_eq!(route("2018.5.7", "2018.7.0"), ["2018.5.7", "2018.7.0"]);
    }
}
