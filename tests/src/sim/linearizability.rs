//! A linearizability checker for key-value histories.
//!
//! The algorithm is Wing and Gong's search, with the memoization Lowe added: find an
//! order of the operations that respects real time (an operation that returned before
//! another was invoked comes first) and in which every read sees the latest write. The
//! state of a key-value store is the product of its keys, so each key is checked on its
//! own (Herlihy and Wing's locality), which keeps the search small.
//!
//! Operations whose outcome the client never learned (a timeout, a lost leader) are
//! *pending*: they may have taken effect at any time after their invocation, or never.
//!
//! ```
//! use raft_tests::sim::linearizability::{Event, History, check};
//!
//! let mut history = History::default();
//! let put = history.invoke(1, "x", Event::Put("a".into()), 0);
//! history.complete(put, None, 10);
//! let get = history.invoke(2, "x", Event::Get, 20);
//! history.complete(get, Some("b".into()), 30); // a value nobody wrote
//! assert!(check(&history).is_err());
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

/// What an operation did to a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// Set the key to a value.
    Put(String),
    /// Remove the key.
    Delete,
    /// Read the key.
    Get,
}

/// One client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it.
    pub client: u64,
    /// The key.
    pub key: String,
    /// What it did.
    pub event: Event,
    /// When it was invoked.
    pub invoked: u64,
    /// When it returned, and the value it observed: what a `Get` read, or what a `Put`
    /// or `Delete` replaced. `None` while pending.
    pub completed: Option<(u64, Option<String>)>,
    /// Whether it certainly had no effect and is left out of the check.
    pub discarded: bool,
}

/// A recorded history of client operations.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
}

/// An operation being recorded, to complete later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(usize);

impl History {
    /// Records that `client` invoked `event` on `key` at time `at`.
    pub fn invoke(&mut self, client: u64, key: &str, event: Event, at: u64) -> Ticket {
        self.operations.push(Operation {
            client,
            key: key.to_string(),
            event,
            invoked: at,
            completed: None,
            discarded: false,
        });
        Ticket(self.operations.len() - 1)
    }

    /// Records that the operation returned at time `at`, having observed `seen`: the
    /// value a `Get` read, or the value a `Put` or `Delete` replaced.
    pub fn complete(&mut self, ticket: Ticket, seen: Option<String>, at: u64) {
        if let Some(op) = self.operations.get_mut(ticket.0) {
            op.completed = Some((at, seen));
        }
    }

    /// Forgets an operation that certainly had no effect (it was refused before being
    /// applied anywhere).
    pub fn discard(&mut self, ticket: Ticket) {
        if let Some(op) = self.operations.get_mut(ticket.0) {
            op.discarded = true;
        }
    }

    /// Every operation recorded.
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// How many operations completed.
    pub fn completed(&self) -> usize {
        self.operations
            .iter()
            .filter(|op| op.completed.is_some())
            .count()
    }
}

/// A key whose history has no linearization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// Its operations, in invocation order.
    pub operations: Vec<Operation>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "no linearization for key {:?}:", self.key)?;
        for op in &self.operations {
            match &op.completed {
                Some((at, read)) => writeln!(
                    f,
                    "  client {} {:?} [{}, {}] -> {:?}",
                    op.client, op.event, op.invoked, at, read
                )?,
                None => writeln!(
                    f,
                    "  client {} {:?} [{}, pending]",
                    op.client, op.event, op.invoked
                )?,
            }
        }
        Ok(())
    }
}

/// Checks that the history is linearizable for a key-value store whose keys all start
/// absent. Reads whose outcome is unknown constrain nothing and are left out.
pub fn check(history: &History) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in &history.operations {
        let unknown_read = op.event == Event::Get && op.completed.is_none();
        if !unknown_read && !op.discarded {
            by_key.entry(op.key.as_str()).or_default().push(op);
        }
    }
    for (key, operations) in by_key {
        if !linearizable(&operations) {
            let mut operations: Vec<Operation> = operations.into_iter().cloned().collect();
            operations.sort_by_key(|op| op.invoked);
            return Err(Violation {
                key: key.to_string(),
                operations,
            });
        }
    }
    Ok(())
}

/// The search for one key. `done` is the set of operations already placed; `value` the
/// key's value after them.
fn linearizable(operations: &[&Operation]) -> bool {
    let must_place: BTreeSet<usize> = (0..operations.len())
        .filter(|&i| operations[i].completed.is_some())
        .collect();
    let mut seen = HashSet::new();
    search(
        operations,
        &must_place,
        &mut BTreeSet::new(),
        None,
        &mut seen,
    )
}

fn search(
    operations: &[&Operation],
    must_place: &BTreeSet<usize>,
    done: &mut BTreeSet<usize>,
    value: Option<String>,
    seen: &mut HashSet<(Vec<usize>, Option<String>)>,
) -> bool {
    if must_place.is_subset(done) {
        return true;
    }
    if !seen.insert((done.iter().copied().collect(), value.clone())) {
        return false;
    }
    // An operation may go next only if no unplaced operation returned before it was
    // invoked.
    let earliest_return = (0..operations.len())
        .filter(|i| !done.contains(i))
        .filter_map(|i| operations[i].completed.as_ref().map(|(at, _)| *at))
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..operations.len() {
        let op = operations[i];
        if done.contains(&i) || op.invoked > earliest_return {
            continue;
        }
        // A completed operation must have seen the value at its place in the order.
        if let Some((_, seen)) = &op.completed
            && *seen != value
        {
            continue;
        }
        let next = match &op.event {
            Event::Put(written) => Some(written.clone()),
            Event::Delete => None,
            Event::Get => value.clone(),
        };
        done.insert(i);
        if search(operations, must_place, done, next, seen) {
            return true;
        }
        done.remove(&i);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(history: &mut History, client: u64, event: Event, span: (u64, u64), read: Option<&str>) {
        let ticket = history.invoke(client, "k", event, span.0);
        history.complete(ticket, read.map(str::to_string), span.1);
    }

    #[test]
    fn sequential_reads_see_the_last_write() {
        let mut h = History::default();
        op(&mut h, 1, Event::Put("a".into()), (0, 1), None);
        op(&mut h, 1, Event::Get, (2, 3), Some("a"));
        op(&mut h, 1, Event::Delete, (4, 5), Some("a"));
        op(&mut h, 1, Event::Get, (6, 7), None);
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_write_must_replace_the_value_before_it() {
        let mut h = History::default();
        op(&mut h, 1, Event::Put("a".into()), (0, 1), None);
        op(&mut h, 2, Event::Put("b".into()), (2, 3), None);
        assert!(
            check(&h).is_err(),
            "the second put replaced \"a\", not nothing"
        );
    }

    #[test]
    fn discarded_operations_are_left_out() {
        let mut h = History::default();
        let refused = h.invoke(1, "k", Event::Put("x".into()), 0);
        h.discard(refused);
        op(&mut h, 2, Event::Get, (5, 6), None);
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let mut h = History::default();
        op(&mut h, 1, Event::Put("a".into()), (0, 1), None);
        op(&mut h, 1, Event::Put("b".into()), (2, 3), Some("a"));
        op(&mut h, 2, Event::Get, (4, 5), Some("a"));
        assert!(check(&h).is_err());
    }

    #[test]
    fn concurrent_operations_may_go_either_way() {
        let mut h = History::default();
        op(&mut h, 1, Event::Put("a".into()), (0, 10), None);
        op(&mut h, 2, Event::Get, (1, 2), None);
        op(&mut h, 3, Event::Get, (3, 4), Some("a"));
        assert!(check(&h).is_ok());
    }

    #[test]
    fn reads_that_go_back_in_time_are_caught() {
        // Both writes overlap both reads, but once a read saw "b", a later read cannot
        // see "a" again unless "a" was written after "b".
        let mut h = History::default();
        h.invoke(1, "k", Event::Put("a".into()), 0);
        h.invoke(2, "k", Event::Put("b".into()), 0);
        op(&mut h, 3, Event::Get, (10, 20), Some("a"));
        op(&mut h, 3, Event::Get, (30, 40), Some("b"));
        op(&mut h, 3, Event::Get, (50, 60), Some("a"));
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_pending_write_may_or_may_not_have_happened() {
        let mut h = History::default();
        h.invoke(1, "k", Event::Put("a".into()), 0);
        op(&mut h, 2, Event::Get, (5, 6), None);
        op(&mut h, 2, Event::Get, (7, 8), Some("a"));
        assert!(check(&h).is_ok());
        op(&mut h, 2, Event::Get, (9, 10), None);
        assert!(check(&h).is_err(), "once seen, a write cannot be undone");
    }

    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let mut h = History::default();
        op(&mut h, 1, Event::Put("a".into()), (0, 1), None);
        op(&mut h, 2, Event::Get, (2, 3), None);
        assert!(check(&h).is_err());
    }

    #[test]
    fn keys_are_independent() {
        let mut h = History::default();
        let a = h.invoke(1, "x", Event::Put("1".into()), 0);
        h.complete(a, None, 1);
        let c = h.invoke(1, "x", Event::Get, 4);
        h.complete(c, Some("1".into()), 5);
        let b = h.invoke(1, "y", Event::Get, 2);
        h.complete(b, None, 3);
        assert!(check(&h).is_ok());
    }
}
