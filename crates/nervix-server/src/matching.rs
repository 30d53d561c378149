//! The matching service: an in-memory capability index of agents, ranked per task, with the
//! top N notified as `task_available` through the outbox (stored as their events, published
//! on the event bus), widening to the next N each window nobody claims.
//!
//! Each node keeps its own index, warmed from storage at start and kept fresh by
//! `AgentChanged` events on the bus. It is advisory: the claim re-checks eligibility against
//! storage, so a stale index can only cost a wasted notification, never a wrong claim.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nervix_core::agent::ONLINE_WINDOW;
use nervix_core::matching::{AgentProfile, CapabilityIndex, TaskProfile};
use nervix_core::reputation::Reputation;
use nervix_core::Money;
use nervix_store::{AgentRecord, Store, TaskRecord};
use parking_lot::RwLock;
use uuid::Uuid;

use crate::bus::{Event, EventBus, Frame};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

const REBUILD_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

pub struct Matcher {
    index: RwLock<CapabilityIndex>,
    top_n: usize,
}

/// The agent as matching sees it. Its workload is the database's count of the tasks it holds
/// (`agents.active_tasks`, kept by a trigger): the index copies it and never counts on its own.
pub fn profile(a: &AgentRecord, now: DateTime<Utc>) -> AgentProfile {
    a.profile(a.last_seen_at.is_some_and(|t| t >= now - ONLINE_WINDOW))
}

pub fn task_profile(t: &TaskRecord) -> TaskProfile {
    TaskProfile {
        capabilities: t.capabilities.clone(),
        complexity: t.complexity,
        min_reputation: Reputation::from_hundredths(t.min_reputation),
        posted_by: t.posted_by,
    }
}

impl Matcher {
    pub fn new(top_n: usize) -> Self {
        Matcher {
            index: RwLock::new(CapabilityIndex::new()),
            top_n: top_n.max(1),
        }
    }

    /// Rebuilds the index from storage.
    pub async fn warm(&self, store: &dyn Store) -> Result<usize, nervix_store::StoreError> {
        let agents = store.all_agents().await?;
        let now = Utc::now();
        let mut index = CapabilityIndex::new();
        for a in &agents {
            index.upsert(profile(a, now));
        }
        let len = index.len();
        *self.index.write() = index;
        Ok(len)
    }

    pub fn upsert(&self, agent: &AgentRecord) {
        self.index.write().upsert(profile(agent, Utc::now()));
    }

    pub fn remove(&self, agent: Uuid) {
        self.index.write().remove(agent);
    }

    pub fn set_online(&self, agent: Uuid, online: bool) {
        self.index.write().update(agent, |p| p.online = online);
    }

    /// How many tasks the index believes `agent` holds (`None`: not indexed).
    pub fn active_tasks(&self, agent: Uuid) -> Option<u32> {
        self.index.read().get(agent).map(|p| p.active_tasks)
    }

    /// The capabilities present in the federation (this node's index), with their agent counts.
    pub fn capabilities(&self) -> Vec<(String, usize)> {
        self.index.read().capabilities()
    }

    pub fn len(&self) -> usize {
        self.index.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Agents of notification round `round` (0-based) for `task`, best first, leaving out
    /// `excluded` (agents that may not claim it again).
    pub fn round(
        &self,
        task: &TaskRecord,
        round: usize,
        excluded: &HashSet<Uuid>,
    ) -> Vec<(Uuid, f64)> {
        if let Some(only) = task.reserved_for {
            // Posted at that agent's own A2A interface: nobody else is offered it.
            return if round == 0 && !excluded.contains(&only) {
                vec![(only, 1.0)]
            } else {
                Vec::new()
            };
        }
        let wanted = task_profile(task);
        let upto = self.top_n.saturating_mul(round + 1);
        let ranked = self.index.read().rank(&wanted, excluded, upto);
        ranked
            .into_iter()
            .skip(self.top_n.saturating_mul(round))
            .collect()
    }

    /// Runs one notification round for an available task, if this node wins it.
    pub async fn notify(
        &self,
        store: &dyn Store,
        outbox: &Outbox,
        metrics: &Metrics,
        task: &TaskRecord,
        became_available: DateTime<Utc>,
    ) -> Result<usize, nervix_store::StoreError> {
        let round = task.notify_round;
        if !store.mark_notified(task.id, round, Utc::now()).await? {
            return Ok(0);
        }
        // A task back in the pool may have agents that lost it before: they may not claim it
        // again, so they are not offered it (one indexed read per round).
        let excluded: HashSet<Uuid> = store.excluded_agents(task.id).await?.into_iter().collect();
        Ok(self
            .publish_round(
                outbox,
                metrics,
                task,
                usize::try_from(round).unwrap_or(0),
                became_available,
                &excluded,
            )
            .await)
    }

    /// Hands `task_available` for the agents of `round` to the outbox, which stores and
    /// publishes them with other operations' frames in one write. Returns how many were told.
    pub async fn publish_round(
        &self,
        outbox: &Outbox,
        metrics: &Metrics,
        task: &TaskRecord,
        round: usize,
        became_available: DateTime<Utc>,
        excluded: &HashSet<Uuid>,
    ) -> usize {
        let picks = self.round(task, round, excluded);
        let frames: Vec<(Uuid, Frame)> = picks
            .iter()
            .map(|(agent_id, score)| {
                let frame = Frame::TaskAvailable {
                    task_id: task.id,
                    title: task.title.clone(),
                    reward: Money::from_cents(task.reward_cents),
                    deadline: task.deadline,
                    complexity: task.complexity,
                    match_score: (score * 1000.0).round() / 1000.0,
                };
                (*agent_id, frame)
            })
            .collect();
        outbox.frames(frames).await;
        metrics.notifications.inc_by(picks.len() as u64);
        if round == 0 {
            let secs = (Utc::now() - became_available)
                .num_microseconds()
                .unwrap_or(0) as f64
                / 1e6;
            metrics.match_latency.observe(secs.max(0.0));
        }
        picks.len()
    }
}

/// Keeps the index in step with agent changes published by any node (profile edits,
/// suspensions, and every claim, submission, release or cancellation that changes a workload),
/// reading each changed agent back from storage, and rebuilds it from storage every few minutes
/// and whenever it missed events.
pub async fn follow_agent_changes(
    matcher: Arc<Matcher>,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), nervix_store::StoreError> {
    let mut rx = bus.subscribe();
    let mut rebuild = tokio::time::interval(REBUILD_EVERY);
    rebuild.tick().await;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = rebuild.tick() => {
                matcher.warm(store.as_ref()).await?;
                continue;
            }
            e = rx.recv() => e,
        };
        match event {
            Ok(Event::AgentChanged { agent_id }) => match store.agent(agent_id).await? {
                Some(a) => matcher.upsert(&a),
                None => matcher.remove(agent_id),
            },
            Ok(Event::WorkloadsChanged) => {
                matcher.warm(store.as_ref()).await?;
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "matcher lagged behind the bus; rebuilding the index"
                );
                matcher.warm(store.as_ref()).await?;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}
