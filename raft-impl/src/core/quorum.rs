//! Every "is this a majority?" question of the protocol, answered in one place.
//!
//! A [`Quorum`] is the set of voters whose majority decides, or two such sets while a
//! membership change is in its joint phase (Raft thesis §4.3): then a decision needs a
//! majority of *each*. Learners are never in it. The same type counts votes (granted and
//! refused, so a lost election is seen as lost), finds the commit index (the highest
//! index a majority holds durably), and checks contact (whether a majority answered
//! recently, for check-quorum and for confirming a read).

use std::collections::BTreeSet;

use raft_traits::NodeId;

/// The voters whose majorities decide: one set, or an incoming and an outgoing set while
/// joint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quorum {
    incoming: BTreeSet<NodeId>,
    outgoing: Option<BTreeSet<NodeId>>,
}

/// Where an election stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Every voter set has a majority of grants.
    Won,
    /// Some voter set can no longer reach a majority of grants.
    Lost,
    /// Neither yet.
    Pending,
}

/// The answers of one election or pre-vote round: who granted, who refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballot {
    granted: BTreeSet<NodeId>,
    refused: BTreeSet<NodeId>,
}

impl Ballot {
    /// A round opened by `me`, who grants itself.
    pub(super) fn opened_by(me: NodeId) -> Ballot {
        Ballot {
            granted: BTreeSet::from([me]),
            refused: BTreeSet::new(),
        }
    }

    /// Records `from`'s answer, if `from` votes in `quorum`, and returns where the round
    /// stands.
    pub(super) fn record(&mut self, quorum: &Quorum, from: NodeId, granted: bool) -> VoteResult {
        if quorum.contains(from) {
            if granted {
                self.granted.insert(from);
            } else {
                self.refused.insert(from);
            }
        }
        self.result(quorum)
    }

    /// Where the round stands under `quorum`.
    pub(super) fn result(&self, quorum: &Quorum) -> VoteResult {
        quorum.vote_result(&self.granted, &self.refused)
    }

    /// The voters that granted, the one that opened the round included.
    pub fn granted(&self) -> &BTreeSet<NodeId> {
        &self.granted
    }

    /// The voters that refused.
    pub fn refused(&self) -> &BTreeSet<NodeId> {
        &self.refused
    }
}

impl Quorum {
    /// A single voter set.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Quorum {
        Quorum {
            incoming: voters.into_iter().collect(),
            outgoing: None,
        }
    }

    /// A joint quorum: decisions need a majority of `incoming` and of `outgoing`.
    pub fn joint(
        incoming: impl IntoIterator<Item = NodeId>,
        outgoing: impl IntoIterator<Item = NodeId>,
    ) -> Quorum {
        Quorum {
            incoming: incoming.into_iter().collect(),
            outgoing: Some(outgoing.into_iter().collect()),
        }
    }

    /// Whether `id` votes in either set.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.as_ref().is_some_and(|o| o.contains(&id))
    }

    /// Every voter of either set, once, in id order.
    pub fn voters(&self) -> BTreeSet<NodeId> {
        let mut all = self.incoming.clone();
        if let Some(outgoing) = &self.outgoing {
            all.extend(outgoing.iter().copied());
        }
        all
    }

    /// Whether this is a joint quorum.
    pub fn is_joint(&self) -> bool {
        self.outgoing.is_some()
    }

    fn sets(&self) -> impl Iterator<Item = &BTreeSet<NodeId>> {
        std::iter::once(&self.incoming).chain(self.outgoing.as_ref())
    }

    /// Tallies an election from the voters that granted and those that refused.
    /// Answers from non-voters do not count.
    pub fn vote_result(
        &self,
        granted: &BTreeSet<NodeId>,
        refused: &BTreeSet<NodeId>,
    ) -> VoteResult {
        let mut result = VoteResult::Won;
        for set in self.sets() {
            let majority = set.len() / 2 + 1;
            let yes = set.intersection(granted).count();
            let no = set.intersection(refused).count();
            if set.len() - no < majority {
                return VoteResult::Lost;
            }
            if yes < majority {
                result = VoteResult::Pending;
            }
        }
        result
    }

    /// Whether the voters for which `agrees` holds form a majority of every set.
    pub fn is_met_by(&self, agrees: impl Fn(NodeId) -> bool) -> bool {
        self.sets().all(|set| {
            let yes = set.iter().filter(|&&id| agrees(id)).count();
            yes > set.len() / 2
        })
    }

    /// The highest value that a majority of every set has reached, where `value` says
    /// what each voter has reached: the commit index over match indices, or the newest
    /// request a majority has answered. `None` when no set has a voter.
    ///
    /// Per set, that is the majority-th largest value; while joint, the smaller of the
    /// two sets' answers, since both must agree.
    pub fn agreed_value<T: Ord + Copy>(&self, value: impl Fn(NodeId) -> T) -> Option<T> {
        self.sets()
            .filter_map(|set| majority_th_largest(set, &value))
            .min()
    }
}

/// The value a majority of `set` has reached: the majority-th largest of theirs.
///
/// A leader asks on every acknowledgement, so the values of a set of usual size are
/// sorted on the stack: a `Vec` per call showed in the profiles of a write.
fn majority_th_largest<T: Ord + Copy>(
    set: &BTreeSet<NodeId>,
    value: &impl Fn(NodeId) -> T,
) -> Option<T> {
    const ON_STACK: usize = 16;
    let mut ids = set.iter();
    let first = value(*ids.next()?);
    let mut on_stack = [first; ON_STACK];
    let mut on_heap = Vec::new();
    let values: &mut [T] = if set.len() <= ON_STACK {
        for (slot, &id) in on_stack[1..].iter_mut().zip(ids) {
            *slot = value(id);
        }
        &mut on_stack[..set.len()]
    } else {
        on_heap.reserve_exact(set.len());
        on_heap.push(first);
        on_heap.extend(ids.map(|&id| value(id)));
        &mut on_heap
    };
    values.sort_unstable_by(|a, b| b.cmp(a));
    values.get(set.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[u64]) -> BTreeSet<NodeId> {
        list.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn a_majority_of_one_set_decides() {
        let q = Quorum::new(ids(&[1, 2, 3]));
        assert_eq!(q.vote_result(&ids(&[1]), &ids(&[])), VoteResult::Pending);
        assert_eq!(q.vote_result(&ids(&[1, 3]), &ids(&[])), VoteResult::Won);
        assert_eq!(q.vote_result(&ids(&[1]), &ids(&[2, 3])), VoteResult::Lost);
        assert_eq!(
            q.vote_result(&ids(&[1, 9]), &ids(&[])),
            VoteResult::Pending,
            "a non-voter's grant does not count"
        );
        let four = Quorum::new(ids(&[1, 2, 3, 4]));
        assert_eq!(
            four.vote_result(&ids(&[1, 2]), &ids(&[3])),
            VoteResult::Pending
        );
        assert_eq!(
            four.vote_result(&ids(&[1]), &ids(&[3, 4])),
            VoteResult::Lost
        );
        assert_eq!(
            four.vote_result(&ids(&[1, 2, 3]), &ids(&[])),
            VoteResult::Won
        );
    }

    #[test]
    fn a_joint_quorum_needs_both_majorities() {
        // Old {1,2,3}, new {3,4,5}.
        let q = Quorum::joint(ids(&[3, 4, 5]), ids(&[1, 2, 3]));
        assert_eq!(
            q.vote_result(&ids(&[1, 2, 3]), &ids(&[])),
            VoteResult::Pending,
            "the old majority alone is not enough"
        );
        assert_eq!(q.vote_result(&ids(&[1, 3, 4]), &ids(&[])), VoteResult::Won);
        assert_eq!(
            q.vote_result(&ids(&[1, 2, 3]), &ids(&[4, 5])),
            VoteResult::Lost,
            "the new set refused"
        );
        assert!(q.contains(NodeId(1)) && q.contains(NodeId(5)) && !q.contains(NodeId(6)));
        assert_eq!(q.voters(), ids(&[1, 2, 3, 4, 5]));
    }

    #[test]
    fn the_agreed_value_is_the_majority_th_largest_of_each_set() {
        let matched = |id: NodeId| [0u64, 10, 7, 3, 9, 1][id.0 as usize];
        assert_eq!(Quorum::new(ids(&[1, 2, 3])).agreed_value(matched), Some(7));
        assert_eq!(
            Quorum::new(ids(&[1, 2, 3, 4])).agreed_value(matched),
            Some(7)
        );
        assert_eq!(Quorum::new(ids(&[1])).agreed_value(matched), Some(10));
        // Joint: {1,2,3} agrees on 7, {3,4,5} on 3: both must hold it, so 3.
        let joint = Quorum::joint(ids(&[3, 4, 5]), ids(&[1, 2, 3]));
        assert_eq!(joint.agreed_value(matched), Some(3));
        assert_eq!(Quorum::new(ids(&[])).agreed_value(matched), None);
    }

    #[test]
    fn the_agreed_value_is_the_same_for_sets_sorted_on_the_stack_and_on_the_heap() {
        // Sets of up to 16 voters are sorted on the stack, larger ones in a Vec.
        let matched = |id: NodeId| id.0.wrapping_mul(7919) % 101;
        for size in 1..=40u64 {
            let voters = (1..=size).collect::<Vec<_>>();
            let mut values: Vec<u64> = voters.iter().map(|&i| matched(NodeId(i))).collect();
            values.sort_unstable();
            let expected = values[(values.len() - 1) / 2];
            assert_eq!(
                Quorum::new(ids(&voters)).agreed_value(matched),
                Some(expected),
                "{size} voters"
            );
        }
    }

    #[test]
    fn contact_needs_a_majority_of_every_set() {
        let heard = ids(&[1, 2]);
        let q = Quorum::new(ids(&[1, 2, 3]));
        assert!(q.is_met_by(|id| heard.contains(&id)));
        let joint = Quorum::joint(ids(&[3, 4, 5]), ids(&[1, 2, 3]));
        assert!(!joint.is_met_by(|id| heard.contains(&id)));
        assert!(joint.is_met_by(|id| [1, 2, 4, 5].contains(&id.0)));
    }
}
