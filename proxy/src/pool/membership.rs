//! Which backends a pool should have, from its static list and what each discovery source found,
//! and how that differs from the backends it has.

use std::collections::HashSet;

use crate::config::{BackendAddress, BackendSpec};

/// What each discovery source last found, by its place in the pool's `discovery` list: `None` until
/// it first answers.
pub type DiscoveredSets = Vec<Option<Vec<BackendSpec>>>;

/// The backends wanted: the static list, then each source's set in order; an address listed twice
/// keeps its first listing.
pub(super) fn wanted(static_backends: &[BackendSpec], discovered: &DiscoveredSets) -> Vec<BackendSpec> {
    let mut seen = HashSet::new();
    static_backends
        .iter()
        .chain(discovered.iter().flatten().flatten())
        .filter(|spec| seen.insert(spec.address.clone()))
        .cloned()
        .collect()
}

/// A backend the pool has now, as the diff sees it.
pub(super) struct Member<'a> {
    pub address: &'a BackendAddress,
    pub leaving: bool,
    /// Whether `wanted`'s entry for it would change nothing.
    pub is_specified_by: &'a dyn Fn(&BackendSpec) -> bool,
}

/// How to get from the members to the wanted backends.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Changes {
    /// New backends, to join.
    pub join: Vec<BackendSpec>,
    /// Members whose settings changed, by index, with their new settings.
    pub respecify: Vec<(usize, BackendSpec)>,
    /// Members no source lists any more, by index: they drain, then go.
    pub leave: Vec<usize>,
    /// Members that were leaving and are listed again, by index.
    pub stay: Vec<usize>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.join.is_empty() && self.respecify.is_empty() && self.leave.is_empty() && self.stay.is_empty()
    }
}

/// The changes that turn `members` into `wanted`.
pub(super) fn diff(members: &[Member<'_>], wanted: Vec<BackendSpec>) -> Changes {
    let mut changes = Changes::default();
    let mut listed = HashSet::new();
    for spec in wanted {
        listed.insert(spec.address.clone());
        match members.iter().position(|m| *m.address == spec.address) {
            None => changes.join.push(spec),
            Some(i) => {
                if members[i].leaving {
                    changes.stay.push(i);
                }
                if !(members[i].is_specified_by)(&spec) {
                    changes.respecify.push((i, spec));
                }
            }
        }
    }
    changes.leave = (0..members.len())
        .filter(|&i| !members[i].leaving && !listed.contains(members[i].address))
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendEntry;
    use std::num::NonZeroU32;

    fn spec(address: &str, weight: u32) -> BackendSpec {
        BackendEntry {
            address: BackendAddress::try_from(address.to_owned()).unwrap(),
            weight: NonZeroU32::new(weight).unwrap(),
            labels: Default::default(),
            cost: 0.0,
            max_concurrent: None,
        }
    }

    #[test]
    fn the_first_listing_of_an_address_wins_and_silent_sources_add_nothing() {
        let static_backends = [spec("a:1", 1)];
        let discovered = vec![
            None,
            Some(vec![spec("b:1", 2), spec("a:1", 5)]),
            Some(vec![spec("b:1", 3)]),
        ];
        let got = wanted(&static_backends, &discovered);
        assert_eq!(got, vec![spec("a:1", 1), spec("b:1", 2)]);
    }

    #[test]
    fn joins_leaves_returns_and_respecifications() {
        let (a, b, c) = (spec("a:1", 1), spec("b:1", 1), spec("c:1", 1));
        let same = |s: &BackendSpec| s.weight.get() == 1;
        let members = [
            Member {
                address: &a.address,
                leaving: false,
                is_specified_by: &same,
            },
            Member {
                address: &b.address,
                leaving: true,
                is_specified_by: &same,
            },
            Member {
                address: &c.address,
                leaving: false,
                is_specified_by: &same,
            },
        ];
        let changes = diff(&members, vec![spec("b:1", 1), spec("c:1", 4), spec("d:1", 1)]);
        assert_eq!(
            changes,
            Changes {
                join: vec![spec("d:1", 1)],
                respecify: vec![(2, spec("c:1", 4))],
                leave: vec![0],
                stay: vec![1],
            }
        );
        let unchanged = diff(&members[..1], vec![spec("a:1", 1)]);
        assert!(unchanged.is_empty(), "{unchanged:?}");
    }
}
