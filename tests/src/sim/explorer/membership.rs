//! The nemesis' membership changes (Raft thesis ch. 4): add a learner, promote one, add a
//! voter, remove a member or the leader itself, replace a voter by a new server, and move
//! to an arbitrary target through `change_membership` (joint consensus when more than one
//! voter changes).
//!
//! Each change is asked of the leader of the highest term, from the configuration it has
//! in effect, in a task of its own, so that the nemesis and its faults go on meanwhile.
//! It ends within [`CHANGE_TIMEOUT`] as succeeded (the handle reported its configuration
//! committed), refused (by the leader, with a typed reason) or unknown (leadership lost,
//! no answer in time). Requests are not coordinated with each other or with the faults:
//! a change in progress, a leader not yet ready or a learner that has not caught up is
//! refused, and that is counted too.
//!
//! A server joins from blank storage with an empty configuration: a spare started for
//! the first time, or a removed server started again from its storage. A removed server
//! is shut down for good half the time and left running otherwise, where it must not
//! disturb the cluster (a disruptive election is checked as everywhere).
//!
//! A change reported done is checked against the storages: a configuration that carries
//! it was seen committed, with its quorum (see [`Observations::record_commit`]).
//!
//! [`Observations::record_commit`]: super::super::invariants::Observations

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use raft_impl::MembershipChangeError;
use raft_impl::core::MembershipRefused;
use raft_traits::{LogIndex, Membership, NodeId, Runtime, timeout};

use crate::sim::invariants::Observations;

use super::{ChangeCounts, KvRaft, Stats, World, index_of, leader_of, node_id};

/// How long a change may take before its outcome counts as unknown. Adding a voter waits
/// for the learner to catch up, perhaps through a snapshot.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a request refused for a learner not caught up yet is asked again.
const RETRY_EVERY: Duration = Duration::from_millis(100);
/// The most voters the nemesis gives the cluster.
const MAX_VOTERS: usize = 7;
/// The fewest voters the nemesis leaves (outside joint targets drawn from fewer members).
const MIN_VOTERS: usize = 3;
/// The most members, voters and learners.
const MAX_MEMBERS: usize = 9;

/// The kinds of change, as [`Stats`] counts them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AddLearner,
    Promote,
    AddVoter,
    Remove,
    RemoveLeader,
    Replace,
    Joint,
}

impl Kind {
    fn counts(self, stats: &mut Stats) -> &mut ChangeCounts {
        match self {
            Kind::AddLearner => &mut stats.add_learner,
            Kind::Promote => &mut stats.promote,
            Kind::AddVoter => &mut stats.add_voter,
            Kind::Remove => &mut stats.remove,
            Kind::RemoveLeader => &mut stats.remove_leader,
            Kind::Replace => &mut stats.replace,
            Kind::Joint => &mut stats.joint,
        }
    }
}

/// One request to the leader's handle.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ask {
    AddLearner(NodeId),
    Promote(NodeId),
    AddVoter(NodeId),
    Remove(NodeId),
    Set(Membership),
}

impl Ask {
    /// Whether `committed` (a committed configuration) carries out this request: what
    /// the handle promises once it reports the change done.
    fn is_done(&self, committed: &Membership) -> bool {
        if committed.is_joint() {
            return false;
        }
        match self {
            Ask::AddLearner(id) => committed.contains(*id),
            Ask::Promote(id) | Ask::AddVoter(id) => committed.is_voter(*id),
            Ask::Remove(id) => !committed.contains(*id),
            Ask::Set(target) => committed == target,
        }
    }

    async fn send(&self, raft: &KvRaft) -> Result<(), MembershipChangeError> {
        match self {
            Ask::AddLearner(id) => raft.add_learner(*id, "").await,
            Ask::Promote(id) => raft.promote_learner(*id).await,
            Ask::AddVoter(id) => raft.add_voter(*id, "").await,
            Ask::Remove(id) => raft.remove_node(*id).await,
            Ask::Set(target) => raft.change_membership(target.clone()).await,
        }
    }
}

impl fmt::Display for Ask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ask::AddLearner(id) => write!(f, "add learner {id}"),
            Ask::Promote(id) => write!(f, "promote {id}"),
            Ask::AddVoter(id) => write!(f, "add voter {id}"),
            Ask::Remove(id) => write!(f, "remove {id}"),
            Ask::Set(target) => write!(
                f,
                "change to voters {:?}, learners {:?}",
                target.voters, target.learners
            ),
        }
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Refused(MembershipRefused),
    Unknown,
}

impl Outcome {
    fn count(&self, counts: &mut ChangeCounts) {
        match self {
            Outcome::Done => counts.succeeded += 1,
            Outcome::Refused(_) => counts.refused += 1,
            Outcome::Unknown => counts.unknown += 1,
        }
    }
}

/// One membership action of the nemesis.
pub(super) async fn step(world: &Arc<World>) {
    let Some(leader) = leader_of(world) else {
        world.event("membership: no leader to ask".into());
        return;
    };
    let Some(raft) = world.handle(leader) else {
        return;
    };
    let current = raft.status().membership;
    let leader_id = node_id(leader);
    let voters = current.voters.len();
    let members = current.nodes.len();
    let learners: Vec<NodeId> = current.learners().collect();
    let mut kind = match world.random_range(0..18) {
        0..=2 => Kind::AddLearner,
        3..=5 => Kind::Promote,
        6..=8 => Kind::AddVoter,
        9..=10 => Kind::Remove,
        11 => Kind::RemoveLeader,
        12..=14 => Kind::Replace,
        _ => Kind::Joint,
    };
    // Fall back to a kind that makes sense in this configuration.
    if kind == Kind::Promote && learners.is_empty() {
        kind = Kind::AddVoter;
    }
    if kind == Kind::RemoveLeader && (voters <= MIN_VOTERS || !current.is_voter(leader_id)) {
        kind = Kind::Remove;
    }
    if matches!(kind, Kind::AddLearner | Kind::AddVoter) && members >= MAX_MEMBERS {
        kind = Kind::Remove;
    }
    if matches!(kind, Kind::AddVoter | Kind::Promote) && voters >= MAX_VOTERS {
        kind = Kind::Replace;
    }
    match kind {
        Kind::AddLearner | Kind::AddVoter => {
            let Some(newcomer) = newcomer(world, &current) else {
                world.event("membership: no server to add".into());
                return;
            };
            let ask = if kind == Kind::AddLearner {
                Ask::AddLearner(newcomer)
            } else {
                Ask::AddVoter(newcomer)
            };
            spawn_change(world, kind, raft, vec![ask], &current);
        }
        Kind::Promote => {
            let Some(&learner) = pick(world, &learners) else {
                return;
            };
            spawn_change(world, kind, raft, vec![Ask::Promote(learner)], &current);
        }
        Kind::Remove => {
            let mut removable = learners.clone();
            if voters > MIN_VOTERS {
                removable.extend(current.voters.iter().copied().filter(|&v| v != leader_id));
            }
            let Some(&victim) = pick(world, &removable) else {
                world.event("membership: nothing to remove".into());
                return;
            };
            spawn_change(world, kind, raft, vec![Ask::Remove(victim)], &current);
        }
        Kind::RemoveLeader => {
            spawn_change(world, kind, raft, vec![Ask::Remove(leader_id)], &current);
        }
        Kind::Replace => {
            let Some(newcomer) = newcomer(world, &current) else {
                world.event("membership: no server to replace with".into());
                return;
            };
            // Preferably a voter that is down: replacing a dead machine.
            let others: Vec<NodeId> = current
                .voters
                .iter()
                .copied()
                .filter(|&v| v != leader_id)
                .collect();
            let down: Vec<NodeId> = others
                .iter()
                .copied()
                .filter(|&v| world.handle(index_of(v)).is_none())
                .collect();
            let old = if !down.is_empty() && world.chance(0.7) {
                pick(world, &down).copied()
            } else {
                pick(world, &others).copied()
            };
            let Some(old) = old else {
                return;
            };
            let asks = if world.chance(0.5) {
                // Two single-server changes.
                vec![Ask::AddVoter(newcomer), Ask::Remove(old)]
            } else {
                // The newcomer learns first, then one joint change swaps the two.
                let mut swapped = current.clone().with_learner(newcomer, "");
                swapped.outgoing = None;
                swapped.learners.remove(&newcomer);
                swapped.voters.insert(newcomer);
                swapped.voters.remove(&old);
                swapped.nodes.remove(&old);
                swapped.learners.remove(&old);
                vec![Ask::AddLearner(newcomer), Ask::Set(swapped)]
            };
            spawn_change(world, kind, raft, asks, &current);
        }
        Kind::Joint => {
            let target = joint_target(world, &current);
            spawn_change(world, kind, raft, vec![Ask::Set(target)], &current);
        }
    }
}

fn pick<'a, T>(world: &World, among: &'a [T]) -> Option<&'a T> {
    if among.is_empty() {
        return None;
    }
    among.get(world.random_range(0..among.len() as u64) as usize)
}

/// A server outside `current` to add: most often a spare never started (a new machine
/// with blank storage), else one removed before.
fn newcomer(world: &World, current: &Membership) -> Option<NodeId> {
    let (fresh, removed): (Vec<NodeId>, Vec<NodeId>) = {
        let state = world.lock();
        (0..world.n)
            .map(node_id)
            .filter(|&id| !current.contains(id))
            .partition(|&id| state.nodes[index_of(id)].incarnation == 0)
    };
    if !fresh.is_empty() && (removed.is_empty() || world.chance(0.7)) {
        pick(world, &fresh).copied()
    } else {
        pick(world, &removed).copied()
    }
}

/// An arbitrary target: 3 to 7 voters drawn from the members (voters and learners), most
/// often at least two of them changed (so a joint change); the other members kept as
/// learners or dropped at random; perhaps a newcomer, as a learner or (not caught up, so
/// refused) as a voter.
fn joint_target(world: &World, current: &Membership) -> Membership {
    let pool: Vec<NodeId> = current.nodes.keys().copied().collect();
    let size = if pool.len() <= MIN_VOTERS {
        pool.len()
    } else {
        MIN_VOTERS
            + world.random_range(0..(pool.len().min(MAX_VOTERS) - MIN_VOTERS + 1) as u64) as usize
    };
    let mut voters = BTreeSet::new();
    for _attempt in 0..4 {
        let mut order = pool.clone();
        for k in (1..order.len()).rev() {
            let j = world.random_range(0..k as u64 + 1) as usize;
            order.swap(k, j);
        }
        voters = order.into_iter().take(size).collect();
        if voters.symmetric_difference(&current.voters).count() >= 2 {
            break;
        }
    }
    let mut target = Membership::from_voters(voters.iter().copied());
    for &id in &pool {
        if !voters.contains(&id) && world.chance(0.5) {
            target = target.with_learner(id, "");
        }
    }
    if world.chance(0.4)
        && let Some(id) = newcomer(world, current)
    {
        target = target.with_learner(id, "");
        if world.chance(0.2) {
            target.learners.remove(&id);
            target.voters.insert(id);
        }
    }
    target
}

/// Runs `asks` one after the other (each of the leader of the highest term at its time;
/// the first of `raft`) in a task of its own, counting them as one change of `kind`:
/// done if the last is done, refused or unknown as the first that is not. A request
/// after the first, refused because a learner it promotes has not caught up yet, is
/// asked again every [`RETRY_EVERY`] until [`CHANGE_TIMEOUT`] has passed.
fn spawn_change(
    world: &Arc<World>,
    kind: Kind,
    raft: KvRaft,
    asks: Vec<Ask>,
    current: &Membership,
) {
    kind.counts(&mut world.lock().stats).requested += 1;
    let before = current.clone();
    let world = Arc::clone(world);
    let _change = world.runtime.clone().spawn(async move {
        let mut raft = Some(raft);
        let mut outcome = Outcome::Unknown;
        for (step, ask) in asks.iter().enumerate() {
            if world.healing.load(Ordering::Acquire) {
                outcome = Outcome::Unknown;
                break;
            }
            let asked = match raft.take() {
                Some(raft) => Some(raft),
                None => leader_of(&world).and_then(|l| world.handle(l)),
            };
            let Some(asked) = asked else {
                outcome = Outcome::Unknown;
                break;
            };
            let give_up = world.runtime.now() + CHANGE_TIMEOUT;
            outcome = ask_once(&world, &asked, ask).await;
            while matches!(
                outcome,
                Outcome::Refused(MembershipRefused::NotCaughtUp { .. })
            ) && step > 0
                && world.runtime.now() < give_up
                && !world.healing.load(Ordering::Acquire)
            {
                world.runtime.sleep(RETRY_EVERY).await;
                outcome = ask_once(&world, &asked, ask).await;
            }
            if outcome != Outcome::Done {
                break;
            }
        }
        outcome.count(kind.counts(&mut world.lock().stats));
        if outcome == Outcome::Done {
            let final_ask = asks.last();
            let removed: Vec<NodeId> = before
                .nodes
                .keys()
                .copied()
                .filter(|&id| final_ask.is_some_and(|ask| removes(ask, id)))
                .collect();
            for id in removed {
                retire_or_keep(&world, index_of(id)).await;
            }
        }
    });
}

/// Whether `ask` takes `id` out of the cluster.
fn removes(ask: &Ask, id: NodeId) -> bool {
    match ask {
        Ask::Remove(removed) => *removed == id,
        Ask::Set(target) => !target.contains(id),
        Ask::AddLearner(_) | Ask::Promote(_) | Ask::AddVoter(_) => false,
    }
}

/// A removed server: shut down for good half the time, else left running.
async fn retire_or_keep(world: &Arc<World>, i: usize) {
    if world.healing.load(Ordering::Acquire) {
        return;
    }
    if world.chance(0.5) {
        world.crash(i).await;
        let mut state = world.lock();
        state.nodes[i].retired = true;
        state.stats.removed_shut_down += 1;
        drop(state);
        world.event(format!("membership: {} removed, shut down", node_id(i)));
    } else {
        world.lock().stats.removed_kept_running += 1;
        world.event(format!("membership: {} removed, left running", node_id(i)));
    }
}

/// Asks `raft` for one change, first starting the servers it adds that are down (a
/// joining server waits for the leader, so it is started before it is added). When the
/// change is reported done, checks that a configuration carrying it was seen committed
/// on its quorum's storage. Once the heal phase has begun, asks nothing (the heal settles
/// on the members it finds).
async fn ask_once(world: &Arc<World>, raft: &KvRaft, ask: &Ask) -> Outcome {
    if world.healing.load(Ordering::Acquire) {
        return Outcome::Unknown;
    }
    let added: Vec<NodeId> = match ask {
        Ask::AddLearner(id) | Ask::AddVoter(id) => vec![*id],
        Ask::Set(target) => target.nodes.keys().copied().collect(),
        Ask::Promote(_) | Ask::Remove(_) => Vec::new(),
    };
    for id in added {
        let i = index_of(id);
        let (down, retired, never_started) = {
            let state = world.lock();
            let slot = &state.nodes[i];
            (slot.raft.is_none(), slot.retired, slot.incarnation == 0)
        };
        // A server down because of a crash stays down: the nemesis restarts it.
        if down && (retired || never_started) {
            world.start(i).await;
        }
    }
    let since = world.lock().observations.committed_upto();
    world.event(format!("membership: {ask}, asked of {}", raft.id()));
    let outcome = match timeout(&world.runtime, CHANGE_TIMEOUT, ask.send(raft)).await {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(MembershipChangeError::Refused(refused))) => Outcome::Refused(refused),
        Ok(Err(_)) | Err(_) => Outcome::Unknown,
    };
    world.event(format!("membership: {ask}: {outcome:?}"));
    if outcome == Outcome::Done {
        // The leader's commit index is published before its answer can be read. Its own
        // copy of what it committed may still be being written (a leader commits through
        // its followers while its append runs, thesis §10.2.1), and the entries are read
        // from its storage: the check waits until that index has been seen committed.
        let check = ChangeCheck {
            asked_of: raft.id(),
            ask: ask.clone(),
            since,
            reported: raft.status().commit_index,
        };
        world.observe_commit(raft.id(), raft.status().commit_index);
        let mut state = world.lock();
        state.change_checks.push(check);
        state.run_change_checks();
    }
    outcome
}

/// A change reported done, to check once everything up to the commit index its server
/// then reported has been seen committed: a configuration carrying it must be among
/// what committed since the change was asked.
pub(super) struct ChangeCheck {
    asked_of: NodeId,
    ask: Ask,
    since: LogIndex,
    reported: LogIndex,
}

impl ChangeCheck {
    /// Whether the commits it waits for were all seen.
    pub(super) fn is_due(&self, observations: &Observations) -> bool {
        observations.committed_upto() >= self.reported
    }

    /// The violation, if no configuration that carries the change was seen committed.
    pub(super) fn violation(&self, observations: &Observations) -> Option<String> {
        let seen =
            observations.committed_config_since(self.since, |config| self.ask.is_done(config));
        (seen == Some(false)).then(|| {
            format!(
                "membership: {} reported \"{}\" done, but no configuration seen committed since {} carries it",
                self.asked_of, self.ask, self.since
            )
        })
    }

    /// The violation if the run ended before the commits it waits for were seen.
    pub(super) fn never_due(&self) -> String {
        format!(
            "membership: {} reported \"{}\" done at commit index {}, which was never seen committed",
            self.asked_of, self.ask, self.reported
        )
    }
}
