//! Who may claim a task, how well an agent fits it, and an in-memory index that ranks agents
//! for a task without scanning all of them.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

use uuid::Uuid;

use crate::reputation::{Level, Reputation};
use crate::task::Complexity;

/// Weight of capability fit in [`match_score`]. The largest term: the right skills matter most.
pub const CAPABILITY_WEIGHT: f64 = 0.40;
/// Weight of the reputation score in [`match_score`].
pub const REPUTATION_WEIGHT: f64 = 0.30;
/// Weight of availability (online now, free capacity) in [`match_score`].
pub const AVAILABILITY_WEIGHT: f64 = 0.15;
/// Weight of the recent acceptance rate in [`match_score`].
pub const SUCCESS_WEIGHT: f64 = 0.15;

/// Capability fit of an agent covering the requirement with many unrelated capabilities, as a
/// share of a pure specialist's. Specialists rank first, but generalists are never scored out.
pub const GENERALIST_FLOOR: f64 = 0.5;
/// Share of the availability term earned by being connected right now; the rest is capacity
/// headroom. An online agent can start at once, an offline one only polls.
pub const ONLINE_SHARE: f64 = 0.5;

/// What matching needs to know about an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProfile {
    pub id: Uuid,
    /// Sorted and deduplicated (as `ids::parse_capabilities` returns them); lookups rely on it.
    /// [`CapabilityIndex`] normalises profiles it stores.
    pub capabilities: Vec<String>,
    pub reputation: Reputation,
    pub completed_tasks: i64,
    /// Connected over the WebSocket right now.
    pub online: bool,
    /// The agent's own `available` switch: off means "send me no work".
    pub available: bool,
    pub suspended: bool,
    /// Tasks currently claimed by the agent.
    pub active_tasks: u32,
    pub max_concurrent_tasks: u32,
    /// Share of recent submissions accepted, 0..=1000; 500 when there is no history.
    pub recent_success_permille: u32,
}

impl AgentProfile {
    pub fn level(&self) -> Level {
        Level::of(self.reputation, self.completed_tasks)
    }

    fn has_capability(&self, cap: &str) -> bool {
        self.capabilities
            .binary_search_by(|c| c.as_str().cmp(cap))
            .is_ok()
    }

    fn normalize(&mut self) {
        self.capabilities.sort_unstable();
        self.capabilities.dedup();
    }
}

/// What matching needs to know about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProfile {
    pub capabilities: Vec<String>,
    pub complexity: Complexity,
    pub min_reputation: Reputation,
    pub posted_by: Uuid,
}

/// Why an agent may not claim a task.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ineligible {
    #[error("the agent is suspended")]
    Suspended,
    #[error("the agent is not available for work")]
    Unavailable,
    #[error("agents cannot claim tasks they posted")]
    OwnTask,
    #[error("the agent lacks the required capability '{0}'")]
    MissingCapability(String),
    #[error("level {level} may not claim {complexity} tasks")]
    LevelTooLow {
        level: Level,
        complexity: Complexity,
    },
    #[error("the agent's reputation is below the task's minimum")]
    BelowMinReputation,
    #[error("the agent is at its limit of concurrent tasks")]
    AtCapacity,
}

/// The claim rules of the contract. Order of checks: Suspended, OwnTask, Unavailable,
/// MissingCapability (the first missing one in the task's order), LevelTooLow,
/// BelowMinReputation, AtCapacity.
///
/// Being online is not required: agents may work by polling the REST API.
pub fn check_eligibility(agent: &AgentProfile, task: &TaskProfile) -> Result<(), Ineligible> {
    check_standing(agent, task)?;
    if let Some(missing) = task.capabilities.iter().find(|c| !agent.has_capability(c)) {
        return Err(Ineligible::MissingCapability(missing.clone()));
    }
    check_headroom(agent, task)
}

/// The rules checked before capabilities.
fn check_standing(agent: &AgentProfile, task: &TaskProfile) -> Result<(), Ineligible> {
    if agent.suspended {
        return Err(Ineligible::Suspended);
    }
    if agent.id == task.posted_by {
        return Err(Ineligible::OwnTask);
    }
    if !agent.available {
        return Err(Ineligible::Unavailable);
    }
    Ok(())
}

/// The rules checked after capabilities.
fn check_headroom(agent: &AgentProfile, task: &TaskProfile) -> Result<(), Ineligible> {
    let level = agent.level();
    if !level.allows(task.complexity) {
        return Err(Ineligible::LevelTooLow {
            level,
            complexity: task.complexity,
        });
    }
    if agent.reputation < task.min_reputation {
        return Err(Ineligible::BelowMinReputation);
    }
    if agent.active_tasks >= agent.max_concurrent_tasks {
        return Err(Ineligible::AtCapacity);
    }
    Ok(())
}

/// Score in [0.0, 1.0] of how well an agent fits a task, meant for agents that passed
/// [`check_eligibility`] (others get a score too, but it ranks nothing meaningful).
///
/// A weighted sum of four terms, each in [0, 1]:
/// - capability fit ([`CAPABILITY_WEIGHT`]): the share of required capabilities the agent has,
///   scaled from [`GENERALIST_FLOOR`] (the requirement is a sliver of what the agent does) up to
///   1 (the agent does exactly what is required). A task with no requirement fits everyone fully.
/// - reputation ([`REPUTATION_WEIGHT`]): the score over its maximum.
/// - availability ([`AVAILABILITY_WEIGHT`]): [`ONLINE_SHARE`] for being online, the rest for the
///   share of concurrent-task slots still free.
/// - recent success ([`SUCCESS_WEIGHT`]): the recent acceptance rate.
pub fn match_score(agent: &AgentProfile, task: &TaskProfile) -> f64 {
    // Requirements are short (at most 64), so an O(k²) distinctness test beats allocating a set.
    let mut required = 0usize;
    let mut covered = 0usize;
    for (i, cap) in task.capabilities.iter().enumerate() {
        if task.capabilities[..i].contains(cap) {
            continue;
        }
        required += 1;
        if agent.has_capability(cap) {
            covered += 1;
        }
    }
    score_with_coverage(agent, covered, required)
}

/// [`match_score`] once it is known that the agent has `covered` of the task's `required`
/// distinct capabilities; lets [`CapabilityIndex::rank`] skip the string lookups.
fn score_with_coverage(agent: &AgentProfile, covered: usize, required: usize) -> f64 {
    let score = CAPABILITY_WEIGHT * capability_fit(covered, required, agent.capabilities.len())
        + REPUTATION_WEIGHT * ratio(agent.reputation.hundredths(), Reputation::MAX.hundredths())
        + AVAILABILITY_WEIGHT * availability(agent)
        + SUCCESS_WEIGHT * ratio(i64::from(agent.recent_success_permille), 1000);
    score.clamp(0.0, 1.0)
}

/// `part / whole` clamped to [0, 1]; 0 when `whole` is not positive.
fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        return 0.0;
    }
    // Scores, counts and permilles are far below 2^53, so the conversions are exact.
    (part.clamp(0, whole) as f64) / (whole as f64)
}

fn capability_fit(covered: usize, required: usize, declared: usize) -> f64 {
    if required == 0 {
        return 1.0;
    }
    let coverage = covered as f64 / required as f64;
    let specificity = if declared == 0 {
        0.0
    } else {
        (covered as f64 / declared as f64).min(1.0)
    };
    coverage * (GENERALIST_FLOOR + (1.0 - GENERALIST_FLOOR) * specificity)
}

fn availability(agent: &AgentProfile) -> f64 {
    let online = if agent.online { 1.0 } else { 0.0 };
    let free = i64::from(agent.max_concurrent_tasks) - i64::from(agent.active_tasks);
    let headroom = ratio(free, i64::from(agent.max_concurrent_tasks));
    ONLINE_SHARE * online + (1.0 - ONLINE_SHARE) * headroom
}

/// In-memory index of agents by capability so ranking a task is not a full scan.
///
/// Profiles live in a slab (`slots`, with holes reused through `free`) so that posting lists can
/// refer to agents by a small stable slot number instead of hashing ids. Ranking a task walks
/// the shortest posting list among its required capabilities and keeps the agents found on all
/// the others, which is usually a small fraction of all agents. Tasks with no requirement or
/// one rank agents in an order that does not depend on the task (every candidate covers the
/// requirement fully, so only the agent's own terms differ): `by_score` and `by_capability`
/// keep those orders, and ranking walks one from the top until `n` eligible agents are found
/// instead of scoring every candidate.
#[derive(Debug, Clone, Default)]
pub struct CapabilityIndex {
    slots: Vec<Option<AgentProfile>>,
    free: Vec<usize>,
    by_id: HashMap<Uuid, usize>,
    /// Capability → slots of the agents declaring it, ascending, so that lists can be
    /// intersected by search and are walked in memory order. Empty lists are dropped so the map
    /// does not grow with every capability name ever seen.
    postings: HashMap<String, Vec<usize>>,
    /// Every agent with its score for a task without requirements, and its slot. Kept in step
    /// with every profile change (scores move with load and presence, so often).
    by_score: BTreeSet<(Ranked, usize)>,
    /// Capability → its agents with their score for a task requiring just that capability.
    by_capability: HashMap<String, BTreeSet<(Ranked, usize)>>,
}

/// An agent's score for a task requiring `required` capabilities it all has (0 or 1 here).
fn rank_covering(agent: &AgentProfile, required: usize) -> Ranked {
    Ranked {
        score: score_with_coverage(agent, required, required),
        id: agent.id,
    }
}

impl CapabilityIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `agent`, or replaces the stored profile with the same id (fixing the postings).
    pub fn upsert(&mut self, mut agent: AgentProfile) {
        agent.normalize();
        if let Some(&slot) = self.by_id.get(&agent.id) {
            let same_capabilities = self.slots[slot]
                .as_ref()
                .is_some_and(|old| old.capabilities == agent.capabilities);
            let old = self.slots[slot].replace(agent);
            if let Some(old) = &old {
                self.unorder(old, slot);
            }
            self.order(slot);
            if !same_capabilities {
                let old_capabilities = old.map(|o| o.capabilities).unwrap_or_default();
                self.repost(slot, &old_capabilities);
            }
            return;
        }
        let id = agent.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(agent);
                slot
            }
            None => {
                self.slots.push(Some(agent));
                self.slots.len() - 1
            }
        };
        self.by_id.insert(id, slot);
        self.post(slot);
        self.order(slot);
    }

    /// Enters the profile in `slot` into the score orders.
    fn order(&mut self, slot: usize) {
        let Some(agent) = &self.slots[slot] else {
            return;
        };
        self.by_score.insert((rank_covering(agent, 0), slot));
        let single = rank_covering(agent, 1);
        for cap in &agent.capabilities {
            self.by_capability
                .entry(cap.clone())
                .or_default()
                .insert((single, slot));
        }
    }

    /// Takes `old`, the profile that was in `slot`, out of the score orders.
    fn unorder(&mut self, old: &AgentProfile, slot: usize) {
        self.by_score.remove(&(rank_covering(old, 0), slot));
        let single = rank_covering(old, 1);
        for cap in &old.capabilities {
            if let Some(set) = self.by_capability.get_mut(cap) {
                set.remove(&(single, slot));
                if set.is_empty() {
                    self.by_capability.remove(cap);
                }
            }
        }
    }

    pub fn remove(&mut self, id: Uuid) -> Option<AgentProfile> {
        let slot = self.by_id.remove(&id)?;
        let agent = self.slots[slot].take()?;
        self.free.push(slot);
        self.unpost(slot, &agent.capabilities);
        self.unorder(&agent, slot);
        Some(agent)
    }

    pub fn get(&self, id: Uuid) -> Option<&AgentProfile> {
        let &slot = self.by_id.get(&id)?;
        self.slots[slot].as_ref()
    }

    /// Applies `f` to the stored profile; returns false when `id` is not indexed.
    ///
    /// `f` may change anything but the id (a changed id is put back: the index is keyed by it).
    /// Postings are rebuilt only if the capabilities actually changed, so the frequent updates
    /// (task counts, online flag) stay cheap.
    pub fn update<F: FnOnce(&mut AgentProfile)>(&mut self, id: Uuid, f: F) -> bool {
        let Some(&slot) = self.by_id.get(&id) else {
            return false;
        };
        let Some(agent) = self.slots[slot].as_mut() else {
            return false;
        };
        let before = agent.clone();
        f(agent);
        agent.id = id;
        agent.normalize();
        let changed_capabilities = agent.capabilities != before.capabilities;
        self.unorder(&before, slot);
        self.order(slot);
        if changed_capabilities {
            self.repost(slot, &before.capabilities);
        }
        true
    }

    /// Every capability some agent declares, with how many agents declare it, by name.
    pub fn capabilities(&self) -> Vec<(String, usize)> {
        let mut caps: Vec<(String, usize)> = self
            .postings
            .iter()
            .map(|(c, slots)| (c.clone(), slots.len()))
            .collect();
        caps.sort();
        caps
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Top `n` eligible agents by [`match_score`], best first; equal scores are ordered by id so
    /// the result is deterministic. Agents in `exclude` (say, ones that already failed the task)
    /// are skipped.
    pub fn rank(&self, task: &TaskProfile, exclude: &HashSet<Uuid>, n: usize) -> Vec<(Uuid, f64)> {
        if n == 0 {
            return Vec::new();
        }
        let mut required: Vec<&[usize]> = Vec::with_capacity(task.capabilities.len());
        let mut distinct: Vec<&str> = Vec::with_capacity(task.capabilities.len());
        for cap in &task.capabilities {
            if distinct.contains(&cap.as_str()) {
                continue;
            }
            distinct.push(cap);
            match self.postings.get(cap) {
                Some(list) => required.push(list),
                // Nobody declares it, so nobody is eligible.
                None => return Vec::new(),
            }
        }
        // Probe the longer lists from the shortest one: its agents are the only candidates.
        required.sort_unstable_by_key(|list| list.len());

        let mut top = TopN::new(n);
        let mut consider = |agent: &AgentProfile| {
            // Capabilities are settled by the postings, so only the other rules remain, and the
            // fit needs no string lookups: the agent has every required capability.
            if check_standing(agent, task).is_err() || check_headroom(agent, task).is_err() {
                return;
            }
            let candidate = Ranked {
                score: score_with_coverage(agent, distinct.len(), distinct.len()),
                id: agent.id,
            };
            // Hashing is the dearest step per agent, so look at `exclude` only for agents that
            // would make the cut.
            if top.admits(&candidate) && !exclude.contains(&agent.id) {
                top.push(candidate);
            }
        };

        match (required.split_first(), distinct.as_slice()) {
            (None, _) => return self.walk(&self.by_score, task, exclude, n),
            (Some(_), [only]) => {
                return match self.by_capability.get(*only) {
                    Some(order) => self.walk(order, task, exclude, n),
                    None => Vec::new(),
                }
            }
            (Some((shortest, others)), _) => {
                // Posting lists are sorted, so each probe only searches past the previous hit.
                let mut rests: Vec<&[usize]> = others.to_vec();
                for &slot in *shortest {
                    let in_all = rests.iter_mut().all(|rest| {
                        *rest = &rest[rest.partition_point(|&s| s < slot)..];
                        rest.first() == Some(&slot)
                    });
                    if in_all {
                        if let Some(agent) = &self.slots[slot] {
                            consider(agent);
                        }
                    }
                }
            }
        }
        top.into_sorted()
    }

    /// The first `n` eligible agents of `order`, best first: the ranking when every agent in
    /// `order` covers the task's requirement.
    fn walk(
        &self,
        order: &BTreeSet<(Ranked, usize)>,
        task: &TaskProfile,
        exclude: &HashSet<Uuid>,
        n: usize,
    ) -> Vec<(Uuid, f64)> {
        let mut picked = Vec::with_capacity(n.min(64));
        for &(ranked, slot) in order.iter().rev() {
            let Some(agent) = &self.slots[slot] else {
                continue;
            };
            if check_standing(agent, task).is_ok()
                && check_headroom(agent, task).is_ok()
                && !exclude.contains(&agent.id)
            {
                picked.push((ranked.id, ranked.score));
                if picked.len() == n {
                    break;
                }
            }
        }
        picked
    }

    fn post(&mut self, slot: usize) {
        let Some(agent) = &self.slots[slot] else {
            return;
        };
        for cap in &agent.capabilities {
            let list = self.postings.entry(cap.clone()).or_default();
            // Joining agents get the highest slot, so this is usually a push; reused slots and
            // capability edits shift the tail instead.
            let pos = list.partition_point(|&s| s < slot);
            list.insert(pos, slot);
        }
    }

    fn unpost(&mut self, slot: usize, capabilities: &[String]) {
        for cap in capabilities {
            let Some(list) = self.postings.get_mut(cap) else {
                continue;
            };
            // Removing from a sorted vector shifts its tail: postings change only when an agent
            // joins, leaves or edits its capabilities, which is rare next to ranking, and sorted
            // plain vectors are what make ranking fast.
            if let Ok(pos) = list.binary_search(&slot) {
                list.remove(pos);
            }
            if list.is_empty() {
                self.postings.remove(cap);
            }
        }
    }

    fn repost(&mut self, slot: usize, old_capabilities: &[String]) {
        self.unpost(slot, old_capabilities);
        self.post(slot);
    }
}

/// A scored agent, ordered so that greater means ranked higher.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    score: f64,
    id: Uuid,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

/// The best `n` items seen so far: a min-heap whose top is the weakest kept item, so each new
/// item costs one comparison unless it displaces that one (O(log n)).
struct TopN {
    n: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl TopN {
    fn new(n: usize) -> Self {
        Self {
            n,
            // `n` comes from the caller and may be huge; let the heap grow as items arrive.
            heap: BinaryHeap::with_capacity(n.min(64)),
        }
    }

    fn admits(&self, candidate: &Ranked) -> bool {
        self.heap.len() < self.n
            || self
                .heap
                .peek()
                .is_some_and(|Reverse(worst)| candidate > worst)
    }

    /// Call only after [`TopN::admits`] said yes.
    fn push(&mut self, candidate: Ranked) {
        if self.heap.len() < self.n {
            self.heap.push(Reverse(candidate));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            *worst = Reverse(candidate);
        }
    }

    fn into_sorted(self) -> Vec<(Uuid, f64)> {
        // Ascending in `Reverse` is descending in rank.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(r)| (r.id, r.score))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| (*c).to_owned()).collect()
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// An intermediate-level agent, idle and willing, with `capabilities`.
    fn agent(n: u128, capabilities: &[&str]) -> AgentProfile {
        AgentProfile {
            id: id(n),
            capabilities: caps(capabilities),
            reputation: Reputation::from_hundredths(6000),
            completed_tasks: 10,
            online: true,
            available: true,
            suspended: false,
            active_tasks: 0,
            max_concurrent_tasks: 3,
            recent_success_permille: 500,
        }
    }

    fn task(capabilities: &[&str]) -> TaskProfile {
        TaskProfile {
            capabilities: caps(capabilities),
            complexity: Complexity::Simple,
            min_reputation: Reputation::from_hundredths(0),
            posted_by: id(u128::MAX),
        }
    }

    #[test]
    fn weights_sum_to_one() {
        let sum = CAPABILITY_WEIGHT + REPUTATION_WEIGHT + AVAILABILITY_WEIGHT + SUCCESS_WEIGHT;
        assert!((sum - 1.0).abs() < 1e-12, "{sum}");
    }

    #[test]
    fn eligible_agent() {
        assert_eq!(
            check_eligibility(&agent(1, &["coding"]), &task(&["coding"])),
            Ok(())
        );
        assert_eq!(check_eligibility(&agent(1, &[]), &task(&[])), Ok(()));
    }

    #[test]
    fn eligibility_rules_each() {
        let t = task(&["coding", "rust"]);
        let ok = agent(1, &["coding", "rust", "sql"]);
        assert_eq!(check_eligibility(&ok, &t), Ok(()));

        let a = AgentProfile {
            suspended: true,
            ..ok.clone()
        };
        assert_eq!(check_eligibility(&a, &t), Err(Ineligible::Suspended));

        let own = TaskProfile {
            posted_by: ok.id,
            ..t.clone()
        };
        assert_eq!(check_eligibility(&ok, &own), Err(Ineligible::OwnTask));

        let a = AgentProfile {
            available: false,
            ..ok.clone()
        };
        assert_eq!(check_eligibility(&a, &t), Err(Ineligible::Unavailable));

        let a = AgentProfile {
            online: false,
            ..ok.clone()
        };
        assert_eq!(
            check_eligibility(&a, &t),
            Ok(()),
            "polling agents may claim"
        );

        let a = agent(1, &["coding", "sql"]);
        assert_eq!(
            check_eligibility(&a, &t),
            Err(Ineligible::MissingCapability("rust".into()))
        );

        let medium = TaskProfile {
            complexity: Complexity::Medium,
            ..t.clone()
        };
        assert_eq!(check_eligibility(&ok, &medium), Ok(()));
        let complex = TaskProfile {
            complexity: Complexity::Complex,
            ..t.clone()
        };
        let err = check_eligibility(&ok, &complex).unwrap_err();
        assert_eq!(
            err,
            Ineligible::LevelTooLow {
                level: Level::Intermediate,
                complexity: Complexity::Complex
            }
        );
        assert_eq!(
            err.to_string(),
            "level intermediate may not claim complex tasks"
        );
        let probation = AgentProfile {
            completed_tasks: 2,
            reputation: Reputation::MAX,
            ..ok.clone()
        };
        assert!(matches!(
            check_eligibility(&probation, &medium),
            Err(Ineligible::LevelTooLow {
                level: Level::Novice,
                ..
            })
        ));

        let picky = TaskProfile {
            min_reputation: Reputation::from_hundredths(6001),
            ..t.clone()
        };
        assert_eq!(
            check_eligibility(&ok, &picky),
            Err(Ineligible::BelowMinReputation)
        );
        let exact = TaskProfile {
            min_reputation: Reputation::from_hundredths(6000),
            ..t.clone()
        };
        assert_eq!(check_eligibility(&ok, &exact), Ok(()));

        let busy = AgentProfile {
            active_tasks: 3,
            ..ok.clone()
        };
        assert_eq!(check_eligibility(&busy, &t), Err(Ineligible::AtCapacity));
        let none = AgentProfile {
            max_concurrent_tasks: 0,
            ..ok.clone()
        };
        assert_eq!(check_eligibility(&none, &t), Err(Ineligible::AtCapacity));
    }

    #[test]
    fn eligibility_check_order() {
        // Fails every rule at once; each fix reveals the next rule in contract order.
        let t = TaskProfile {
            complexity: Complexity::Expert,
            min_reputation: Reputation::MAX,
            ..task(&["coding"])
        };
        let mut a = AgentProfile {
            id: t.posted_by,
            suspended: true,
            available: false,
            capabilities: vec![],
            active_tasks: 5,
            ..agent(1, &[])
        };
        assert_eq!(check_eligibility(&a, &t), Err(Ineligible::Suspended));
        a.suspended = false;
        assert_eq!(check_eligibility(&a, &t), Err(Ineligible::OwnTask));
        a.id = id(1);
        assert_eq!(check_eligibility(&a, &t), Err(Ineligible::Unavailable));
        a.available = true;
        assert_eq!(
            check_eligibility(&a, &t),
            Err(Ineligible::MissingCapability("coding".into()))
        );
        a.capabilities = caps(&["coding"]);
        assert!(matches!(
            check_eligibility(&a, &t),
            Err(Ineligible::LevelTooLow { .. })
        ));
        a.reputation = Reputation::from_hundredths(9500);
        assert_eq!(
            check_eligibility(&a, &t),
            Err(Ineligible::BelowMinReputation)
        );
        a.reputation = Reputation::MAX;
        assert_eq!(check_eligibility(&a, &t), Err(Ineligible::AtCapacity));
        a.active_tasks = 0;
        assert_eq!(check_eligibility(&a, &t), Ok(()));
    }

    #[test]
    fn score_terms() {
        let t = task(&["coding"]);
        let base = agent(1, &["coding"]);
        let s = match_score(&base, &t);
        // fit 1, reputation 0.6, availability 1, success 0.5
        let expected = 0.40 + 0.30 * 0.6 + 0.15 + 0.15 * 0.5;
        assert!((s - expected).abs() < 1e-12, "{s} vs {expected}");

        // Covers 1 of its 4 capabilities: fit = floor + (1 - floor) * 1/4 = 0.625.
        let generalist = match_score(&agent(1, &["coding", "research", "sql", "writing"]), &t);
        assert!((s - generalist - CAPABILITY_WEIGHT * (1.0 - 0.625)).abs() < 1e-12);

        let better = AgentProfile {
            reputation: Reputation::from_hundredths(9000),
            ..base.clone()
        };
        assert!(match_score(&better, &t) > s);
        let offline = AgentProfile {
            online: false,
            ..base.clone()
        };
        assert!(match_score(&offline, &t) < s);
        let busy = AgentProfile {
            active_tasks: 2,
            ..base.clone()
        };
        assert!(match_score(&busy, &t) < s);
        let reliable = AgentProfile {
            recent_success_permille: 1000,
            ..base.clone()
        };
        assert!(match_score(&reliable, &t) > s);

        let perfect = AgentProfile {
            reputation: Reputation::MAX,
            recent_success_permille: 1000,
            ..base.clone()
        };
        assert!((match_score(&perfect, &t) - 1.0).abs() < 1e-12);
        let worst = AgentProfile {
            capabilities: vec![],
            reputation: Reputation::from_hundredths(0),
            online: false,
            active_tasks: 3,
            recent_success_permille: 0,
            ..base
        };
        assert_eq!(match_score(&worst, &t), 0.0);
    }

    #[test]
    fn duplicate_requirements_do_not_change_fit() {
        let a = agent(1, &["coding", "rust"]);
        assert_eq!(
            match_score(&a, &task(&["coding", "coding"])),
            match_score(&a, &task(&["coding"]))
        );
    }

    #[test]
    fn rank_orders_by_score_then_id() {
        let mut index = CapabilityIndex::new();
        index.upsert(agent(3, &["coding"]));
        index.upsert(agent(2, &["coding"]));
        index.upsert(agent(1, &["coding", "research", "sql"]));
        index.upsert(AgentProfile {
            reputation: Reputation::from_hundredths(7000),
            ..agent(4, &["coding"])
        });
        index.upsert(agent(5, &["research"]));
        index.upsert(AgentProfile {
            suspended: true,
            ..agent(6, &["coding"])
        });

        let ranked = index.rank(&task(&["coding"]), &HashSet::new(), 10);
        let ids: Vec<Uuid> = ranked.iter().map(|r| r.0).collect();
        assert_eq!(ids, [id(4), id(2), id(3), id(1)]);
        assert_eq!(
            ranked[1].1, ranked[2].1,
            "2 and 3 tie and are ordered by id"
        );
        assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1));

        assert_eq!(index.rank(&task(&["coding"]), &HashSet::new(), 2).len(), 2);
        assert!(index
            .rank(&task(&["coding"]), &HashSet::new(), 0)
            .is_empty());
        assert!(index
            .rank(&task(&["nobody-has-this"]), &HashSet::new(), 5)
            .is_empty());
        assert_eq!(index.rank(&task(&[]), &HashSet::new(), usize::MAX).len(), 5);
        let both = index.rank(&task(&["research", "coding"]), &HashSet::new(), 5);
        assert_eq!(both.iter().map(|r| r.0).collect::<Vec<_>>(), [id(1)]);
    }

    #[test]
    fn rank_skips_excluded_and_fills_from_the_rest() {
        let mut index = CapabilityIndex::new();
        for n in 1..=5 {
            index.upsert(AgentProfile {
                reputation: Reputation::from_hundredths(5000 + 100 * n as i64),
                ..agent(n, &["coding"])
            });
        }
        let exclude: HashSet<Uuid> = [id(5), id(3)].into();
        let ids: Vec<Uuid> = index
            .rank(&task(&["coding"]), &exclude, 2)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(ids, [id(4), id(2)]);
    }

    #[test]
    fn upsert_replaces_and_fixes_postings() {
        let mut index = CapabilityIndex::new();
        assert!(index.is_empty());
        index.upsert(agent(1, &["coding", "rust"]));
        index.upsert(agent(1, &["writing"]));
        assert_eq!(index.len(), 1);
        assert!(index
            .rank(&task(&["coding"]), &HashSet::new(), 5)
            .is_empty());
        assert!(index.rank(&task(&["rust"]), &HashSet::new(), 5).is_empty());
        assert_eq!(index.rank(&task(&["writing"]), &HashSet::new(), 5).len(), 1);
        assert!(
            !index.postings.contains_key("coding"),
            "empty postings are dropped"
        );
    }

    #[test]
    fn upsert_normalizes_capabilities() {
        let mut index = CapabilityIndex::new();
        index.upsert(agent(1, &["rust", "coding", "rust"]));
        assert_eq!(index.get(id(1)).unwrap().capabilities, ["coding", "rust"]);
        assert_eq!(index.postings["rust"], [0]);
        assert_eq!(
            index
                .rank(&task(&["rust", "coding"]), &HashSet::new(), 5)
                .len(),
            1
        );
    }

    #[test]
    fn update_keeps_postings_right() {
        let mut index = CapabilityIndex::new();
        index.upsert(agent(1, &["coding"]));
        index.upsert(agent(2, &["coding"]));

        assert!(index.update(id(1), |a| a.active_tasks = 3));
        assert_eq!(index.get(id(1)).unwrap().active_tasks, 3);
        let ids: Vec<Uuid> = index
            .rank(&task(&["coding"]), &HashSet::new(), 5)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(ids, [id(2)], "agent 1 is at capacity");

        assert!(index.update(id(2), |a| a.capabilities = caps(&["sql", "research"])));
        assert_eq!(index.get(id(2)).unwrap().capabilities, ["research", "sql"]);
        assert!(index
            .rank(&task(&["coding"]), &HashSet::new(), 5)
            .is_empty());
        assert_eq!(index.rank(&task(&["sql"]), &HashSet::new(), 5).len(), 1);

        assert!(
            index.update(id(2), |a| a.id = id(99)),
            "id changes are undone"
        );
        assert!(index.get(id(2)).is_some());
        assert!(index.get(id(99)).is_none());

        assert!(!index.update(id(42), |_| {}));
    }

    #[test]
    fn remove_keeps_postings_right_and_reuses_slots() {
        let mut index = CapabilityIndex::new();
        index.upsert(agent(1, &["coding"]));
        index.upsert(agent(2, &["coding", "sql"]));
        let removed = index.remove(id(1)).unwrap();
        assert_eq!(removed.id, id(1));
        assert_eq!(index.remove(id(1)), None);
        assert_eq!(index.len(), 1);
        assert!(index.get(id(1)).is_none());
        let ids: Vec<Uuid> = index
            .rank(&task(&["coding"]), &HashSet::new(), 5)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(ids, [id(2)]);

        index.upsert(agent(3, &["sql"]));
        assert_eq!(index.slots.len(), 2, "the freed slot was reused");
        assert_eq!(index.rank(&task(&["sql"]), &HashSet::new(), 5).len(), 2);
        assert_eq!(index.rank(&task(&[]), &HashSet::new(), 5).len(), 2);
    }

    /// Every posting points at a live agent that declares the capability, and every declared
    /// capability has the agent's posting exactly once.
    fn assert_postings_consistent(index: &CapabilityIndex) {
        for (cap, list) in &index.postings {
            assert!(!list.is_empty());
            assert!(
                list.windows(2).all(|w| w[0] < w[1]),
                "{cap}: {list:?} not ascending"
            );
            for &slot in list {
                let a = index.slots[slot].as_ref().unwrap();
                assert!(a.capabilities.contains(cap));
            }
        }
        assert_eq!(index.by_score.len(), index.by_id.len());
        for (cap, order) in &index.by_capability {
            assert!(!order.is_empty());
            assert_eq!(order.len(), index.postings[cap].len(), "{cap}");
        }
        assert_eq!(index.by_capability.len(), index.postings.len());
        for (slot, a) in index.slots.iter().enumerate() {
            let Some(a) = a else { continue };
            assert_eq!(index.by_id[&a.id], slot);
            assert!(index.by_score.contains(&(rank_covering(a, 0), slot)));
            for cap in &a.capabilities {
                assert!(index.by_capability[cap].contains(&(rank_covering(a, 1), slot)));
            }
            for cap in &a.capabilities {
                assert_eq!(
                    index.postings[cap].iter().filter(|&&s| s == slot).count(),
                    1
                );
            }
        }
    }

    const VOCAB: &[&str] = &["coding", "research", "rust", "sql", "writing", "design"];

    /// Agents skewed towards eligibility so that rankings are rarely empty.
    fn arb_agent() -> impl Strategy<Value = AgentProfile> {
        (
            0u128..24,
            proptest::sample::subsequence(VOCAB, 1..=VOCAB.len()),
            0i64..=10_000,
            0i64..12,
            (
                any::<bool>(),
                proptest::bool::weighted(0.9),
                proptest::bool::weighted(0.1),
            ),
            0u32..3,
            0u32..6,
            0u32..=1000,
        )
            .prop_map(
                |(n, caps, rep, done, (online, available, suspended), active, max, succ)| {
                    AgentProfile {
                        id: id(n),
                        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
                        reputation: Reputation::from_hundredths(rep),
                        completed_tasks: done,
                        online,
                        available,
                        suspended,
                        active_tasks: active,
                        max_concurrent_tasks: max,
                        recent_success_permille: succ,
                    }
                },
            )
    }

    fn arb_task() -> impl Strategy<Value = TaskProfile> {
        (
            proptest::sample::subsequence(VOCAB, 0..=2),
            any::<bool>(),
            prop_oneof![
                3 => Just(Complexity::Simple),
                1 => proptest::sample::select(Complexity::ALL),
            ],
            0i64..=6000,
            0u128..24,
        )
            .prop_map(|(caps, repeat_one, complexity, min, poster)| {
                let mut capabilities: Vec<String> = caps.iter().map(|c| (*c).to_owned()).collect();
                // Tasks may list a capability twice; ranking and scoring must not care.
                if repeat_one {
                    if let Some(first) = capabilities.first().cloned() {
                        capabilities.push(first);
                    }
                }
                TaskProfile {
                    capabilities,
                    complexity,
                    min_reputation: Reputation::from_hundredths(min),
                    posted_by: id(poster),
                }
            })
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(AgentProfile),
        Remove(u128),
        SetCaps(u128, Vec<&'static str>),
        SetLoad(u128, u32),
        SetOnline(u128, bool),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => arb_agent().prop_map(Op::Upsert),
            1 => (0u128..24).prop_map(Op::Remove),
            1 => (0u128..24, proptest::sample::subsequence(VOCAB, 0..=4)).prop_map(|(n, c)| Op::SetCaps(n, c)),
            1 => (0u128..24, 0u32..4).prop_map(|(n, l)| Op::SetLoad(n, l)),
            1 => (0u128..24, any::<bool>()).prop_map(|(n, o)| Op::SetOnline(n, o)),
        ]
    }

    proptest! {
        #[test]
        fn rank_equals_brute_force(
            ops in proptest::collection::vec(arb_op(), 0..100),
            t in arb_task(),
            excluded in proptest::collection::hash_set(0u128..24, 0..4),
            n in 0usize..10,
        ) {
            let mut index = CapabilityIndex::new();
            // The model: a plain map of id → profile.
            let mut model: HashMap<Uuid, AgentProfile> = HashMap::new();
            for op in ops {
                match op {
                    Op::Upsert(a) => {
                        let mut normalized = a.clone();
                        normalized.normalize();
                        model.insert(a.id, normalized);
                        index.upsert(a);
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(index.remove(id(k)), model.remove(&id(k)));
                    }
                    Op::SetCaps(k, c) => {
                        let c: Vec<String> = c.iter().map(|s| (*s).to_owned()).collect();
                        if let Some(a) = model.get_mut(&id(k)) {
                            a.capabilities = c.clone();
                            a.normalize();
                        }
                        prop_assert_eq!(index.update(id(k), |a| a.capabilities = c), model.contains_key(&id(k)));
                    }
                    Op::SetLoad(k, l) => {
                        if let Some(a) = model.get_mut(&id(k)) {
                            a.active_tasks = l;
                        }
                        prop_assert_eq!(index.update(id(k), |a| a.active_tasks = l), model.contains_key(&id(k)));
                    }
                    Op::SetOnline(k, o) => {
                        if let Some(a) = model.get_mut(&id(k)) {
                            a.online = o;
                        }
                        prop_assert_eq!(index.update(id(k), |a| a.online = o), model.contains_key(&id(k)));
                    }
                }
            }
            assert_postings_consistent(&index);
            prop_assert_eq!(index.len(), model.len());

            let exclude: HashSet<Uuid> = excluded.into_iter().map(id).collect();
            let mut expected: Vec<(Uuid, f64)> = model
                .values()
                .filter(|a| !exclude.contains(&a.id) && check_eligibility(a, &t).is_ok())
                .map(|a| (a.id, match_score(a, &t)))
                .collect();
            expected.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            expected.truncate(n);
            prop_assert_eq!(index.rank(&t, &exclude, n), expected);
        }

        #[test]
        fn score_is_in_unit_interval(a in arb_agent(), t in arb_task()) {
            let s = match_score(&a, &t);
            prop_assert!((0.0..=1.0).contains(&s), "{}", s);
        }
    }
}
