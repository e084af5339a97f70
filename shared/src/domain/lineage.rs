//! Which of two commits of a pipeline is newer, by git's own word.
//!
//! Git hosts deliver webhooks out of order and retry late, so the order in which pushes
//! arrive says little about the order of the commits. Each push says more: the ref moved
//! from `before` to `after`, and it lists the commits it brought. A pipeline's [`Lineage`]
//! keeps those facts (newest last, bounded) and answers "is X an ancestor of Y" by following
//! them, however many pushes apart X and Y are and whatever order the pushes came in.
//!
//! The rule every environment decision uses ([`Lineage::is_newer`]): when git's facts say
//! which of two commits comes later on the branch, that one is newer; only when they say
//! nothing (a push never delivered, a history rewritten both ways) does arrival order decide.
//! So a run whose order is unknown never replaces one that git says is newer.
//!
//! Pure: the engine reads a pipeline's lineage from the state store, learns a push into it
//! with a conditional write before the push's run is created, and hands it to the decisions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::OnceLock;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{CommitSha, RunId};

/// How many pushes a lineage remembers, newest last: months of history for most teams.
/// Older facts are dropped; comparisons of commits that old fall back to arrival order.
pub const LINKS_KEPT: usize = 500;

/// How many parents one push records: `before` and the newest listed commits. Hosts cap
/// the list they send (GitHub and GitLab at 20).
pub const PARENTS_KEPT: usize = 21;

/// A lineage (de)serialized as its links alone, for a record that keeps them among fields of
/// its own (`#[serde(with = "lineage::as_links")]`): read directly, where `#[serde(flatten)]`
/// would first copy the whole record into an intermediate tree.
pub mod as_links {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Lineage, Link};

    pub fn serialize<S: Serializer>(lineage: &Lineage, serializer: S) -> Result<S::Ok, S::Error> {
        lineage.links.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Lineage, D::Error> {
        Ok(Lineage {
            links: Vec::<Link>::deserialize(deserializer)?,
            index: std::sync::OnceLock::new(),
        })
    }
}

/// What slipway learned of one pipeline's git history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// One per commit that a push moved the branch to, oldest first. Changed only by
    /// [`Lineage::learn`], which keeps `index` true to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) links: Vec<Link>,
    /// Where each commit's link is in `links`: built by the first comparison and kept until
    /// `links` changes, so the many comparisons of one decision (superseding, settling, the
    /// newest of several runs) do not each index 500 links again.
    #[serde(skip)]
    index: OnceLock<HashMap<CommitSha, usize>>,
}

impl PartialEq for Lineage {
    fn eq(&self, other: &Self) -> bool {
        self.links == other.links
    }
}

impl Eq for Lineage {}

/// A commit a push moved the branch to, and the commits that push says came before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub sha: CommitSha,
    pub parents: Vec<CommitSha>,
}

/// A run's place in line: its commit, and when it arrived (the fallback order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    pub run: &'a RunId,
    pub opened_at: Timestamp,
}

impl<'a> Place<'a> {
    pub fn new(run: &'a RunId, opened_at: Timestamp) -> Self {
        Self { run, opened_at }
    }
}

impl super::Run {
    /// The run's place in line: its commit, and when it opened.
    pub fn place(&self) -> Place<'_> {
        Place::new(&self.id, self.created_at)
    }
}

impl super::Release {
    /// The release's place in line: its run's commit, and when that run opened.
    pub fn place(&self) -> Place<'_> {
        Place::new(&self.run, self.opened_at)
    }
}

impl Lineage {
    /// A lineage that knows nothing yet.
    pub const fn new() -> Self {
        Self {
            links: Vec::new(),
            index: OnceLock::new(),
        }
    }

    /// Learns that the branch moved to `sha`, which comes after each of `parents` (a push's
    /// `before` and the other commits it listed). `true` if anything was new, so a
    /// redelivered push writes nothing.
    pub fn learn(&mut self, sha: &CommitSha, parents: &[CommitSha]) -> bool {
        let parents: Vec<&CommitSha> = parents.iter().filter(|p| *p != sha && !p.is_zero()).collect();
        if let Some(link) = self.links.iter_mut().find(|l| l.sha == *sha) {
            let mut changed = false;
            for parent in parents {
                if !link.parents.contains(parent) && link.parents.len() < PARENTS_KEPT {
                    link.parents.push(parent.clone());
                    changed = true;
                }
            }
            // Positions are unchanged; only what is at them.
            return changed;
        }
        self.index = OnceLock::new();
        self.links.push(Link {
            sha: sha.clone(),
            parents: parents.into_iter().take(PARENTS_KEPT).cloned().collect(),
        });
        super::keep_newest(&mut self.links, LINKS_KEPT);
        true
    }

    /// Does git say `older` comes before `newer` on the branch (by any chain of pushes)?
    pub fn is_ancestor(&self, older: &CommitSha, newer: &CommitSha) -> bool {
        if older == newer {
            return false;
        }
        let index = self.index.get_or_init(|| {
            self.links
                .iter()
                .enumerate()
                .map(|(at, link)| (link.sha.clone(), at))
                .collect()
        });
        let parents_of =
            |sha: &CommitSha| -> &[CommitSha] { index.get(sha).map_or(&[], |at| self.links[*at].parents.as_slice()) };
        let mut seen: HashSet<&CommitSha> = HashSet::new();
        let mut todo: VecDeque<&CommitSha> = VecDeque::from([newer]);
        while let Some(sha) = todo.pop_front() {
            for parent in parents_of(sha) {
                if parent == older {
                    return true;
                }
                if seen.insert(parent) {
                    todo.push_back(parent);
                }
            }
        }
        false
    }

    /// Is `a` newer than `b`? Git's facts first; when they say nothing, or contradict
    /// each other (a history rewritten back and forth), the later arrival (then the greater
    /// run id, so the answer never depends on who asks first).
    pub fn is_newer(&self, a: Place<'_>, b: Place<'_>) -> bool {
        if a.run == b.run {
            return false;
        }
        let (a_sha, b_sha) = (a.run.sha(), b.run.sha());
        match (self.is_ancestor(&b_sha, &a_sha), self.is_ancestor(&a_sha, &b_sha)) {
            (true, false) => true,
            (false, true) => false,
            _ => (a.opened_at, a.run) > (b.opened_at, b.run),
        }
    }

    /// No links: nothing learned yet.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Does git itself say `a` is older than `b` (no fallback)?
    pub fn known_older(&self, a: &RunId, b: &RunId) -> bool {
        let (a_sha, b_sha) = (a.sha(), b.sha());
        self.is_ancestor(&a_sha, &b_sha) && !self.is_ancestor(&b_sha, &a_sha)
    }

    /// The newest of `items` by [`Lineage::is_newer`].
    pub fn newest<T>(&self, items: impl IntoIterator<Item = T>, place: impl Fn(&T) -> Place<'_>) -> Option<T> {
        items.into_iter().fold(None, |best, item| match best {
            Some(best) if !self.is_newer(place(&item), place(&best)) => Some(best),
            _ => Some(item),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PipelineName;

    fn sha(n: u8) -> CommitSha {
        CommitSha::parse(&format!("{n:02x}").repeat(20)).unwrap()
    }

    fn run(n: u8) -> RunId {
        RunId::new(&PipelineName::parse("shop").unwrap(), &sha(n))
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    /// Pushes `(after, before)` learned in the order given.
    fn learned(pushes: &[(u8, u8)]) -> Lineage {
        let mut lineage = Lineage::default();
        for (after, before) in pushes {
            lineage.learn(&sha(*after), &[sha(*before)]);
        }
        lineage
    }

    #[test]
    fn ancestry_follows_chains_of_pushes_in_any_order() {
        // History 1 → 2 → 3 → 4, pushes delivered 4, 2, 3.
        let lineage = learned(&[(4, 3), (2, 1), (3, 2)]);
        assert!(lineage.is_ancestor(&sha(1), &sha(4)));
        assert!(lineage.is_ancestor(&sha(2), &sha(4)));
        assert!(!lineage.is_ancestor(&sha(4), &sha(2)));
        assert!(!lineage.is_ancestor(&sha(4), &sha(4)));
        assert!(!lineage.is_ancestor(&sha(9), &sha(4)));
    }

    #[test]
    fn git_order_beats_arrival_order_and_arrival_decides_only_when_git_is_silent() {
        // B (2) arrived first, A (1) later; B's push said it came after A.
        let lineage = learned(&[(2, 1)]);
        let (a, b) = (run(1), run(2));
        let table = [
            // (a arrives at, b arrives at, is a newer?)
            (10, 5, false),
            (5, 10, false),
        ];
        for (a_at, b_at, expected) in table {
            assert_eq!(
                lineage.is_newer(Place::new(&a, at(a_at)), Place::new(&b, at(b_at))),
                expected
            );
            assert_eq!(
                lineage.is_newer(Place::new(&b, at(b_at)), Place::new(&a, at(a_at))),
                !expected
            );
        }
        // Nothing known of 3 and 4: the later arrival is newer.
        let (c, d) = (run(3), run(4));
        assert!(lineage.is_newer(Place::new(&c, at(9)), Place::new(&d, at(8))));
        assert!(!lineage.is_newer(Place::new(&c, at(8)), Place::new(&d, at(9))));
        // A run is never newer than itself.
        assert!(!lineage.is_newer(Place::new(&c, at(9)), Place::new(&c, at(8))));
    }

    #[test]
    fn contradicting_facts_fall_back_to_arrival() {
        // 1 → 2, then a force push back: 2 → 1.
        let lineage = learned(&[(2, 1), (1, 2)]);
        let (a, b) = (run(1), run(2));
        assert!(lineage.is_newer(Place::new(&a, at(2)), Place::new(&b, at(1))));
        assert!(!lineage.known_older(&a, &b));
    }

    #[test]
    fn listed_commits_are_ancestors_too() {
        let mut lineage = Lineage::default();
        // One push of 2, 3, 4 on top of 1.
        assert!(lineage.learn(&sha(4), &[sha(1), sha(2), sha(3), sha(4)]));
        assert!(lineage.is_ancestor(&sha(3), &sha(4)));
        assert!(lineage.is_ancestor(&sha(1), &sha(4)));
        assert_eq!(lineage.links[0].parents.len(), 3, "the head is not its own parent");
    }

    #[test]
    fn learning_the_same_push_again_changes_nothing() {
        let mut lineage = learned(&[(2, 1)]);
        assert!(!lineage.learn(&sha(2), &[sha(1)]));
        assert!(
            lineage.learn(&sha(2), &[sha(9)]),
            "a new fact about a known commit is kept"
        );
        assert!(!lineage.learn(&sha(2), &[]));
    }

    #[test]
    fn only_the_newest_pushes_are_kept() {
        let mut many = Lineage::default();
        for n in 0..(LINKS_KEPT + 10) {
            let (a, b) = (format!("{n:040x}"), format!("{:040x}", n + 1));
            many.learn(&CommitSha::parse(&b).unwrap(), &[CommitSha::parse(&a).unwrap()]);
        }
        assert_eq!(many.links.len(), LINKS_KEPT);
        assert_eq!(
            many.links.last().unwrap().sha.as_str(),
            format!("{:040x}", LINKS_KEPT + 10)
        );
    }

    #[test]
    fn newest_picks_by_git_then_arrival() {
        let lineage = learned(&[(2, 1), (3, 2)]);
        let runs = [(run(3), at(1)), (run(1), at(9)), (run(2), at(5))];
        let newest = lineage.newest(runs.iter(), |(r, t)| Place::new(r, *t)).unwrap();
        assert_eq!(newest.0, run(3));
        assert!(
            lineage
                .newest(std::iter::empty::<(RunId, Timestamp)>(), |(r, t)| Place::new(r, *t))
                .is_none()
        );
    }
}
