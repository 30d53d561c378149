//! The side effects of a change, published on the event bus: task updates to the agents a
//! task concerns, matching rounds for tasks that became available, and agent changes for the
//! matching index on every node. A failed publish is logged and never fails the operation:
//! the change is committed, and the matching loop and the index rebuild catch up.

use chrono::Utc;
use nervix_core::TaskStatus;
use nervix_store::{StoredEvent, TaskRecord};
use uuid::Uuid;

use super::App;
use crate::bus::{Event, Frame};

/// Queues `frame` for the agent: stored as its next event, then published with its `seq`.
pub async fn to_agent(app: &App, agent_id: Uuid, frame: Frame) {
    to_agents(app, vec![(agent_id, frame)]).await;
}

/// Queues frames for several agents, in this order (see `crate::outbox`: they are stored
/// and published off the request path, after the operation that produced them committed).
pub async fn to_agents(app: &App, frames: Vec<(Uuid, Frame)>) {
    app.outbox.frames(frames).await;
}

/// Publishes `frame` to the agents of `events`, which an operation stored in its own
/// transaction (a message's), each under its `seq`. A publish that fails is caught up from
/// the store: the connection reads what it missed when the next frame skips a `seq`, or on
/// reconnect.
pub async fn publish_stored(app: &App, events: &[StoredEvent], frame: &Frame) {
    for e in events {
        let event = Event::ToAgent {
            agent_id: e.agent_id,
            seq: e.seq,
            frame: frame.clone(),
        };
        if let Err(err) = app.bus.publish(event).await {
            tracing::warn!(error = %err, agent = %e.agent_id, seq = e.seq, "publishing a stored event failed");
        }
    }
}

/// An agent's profile or workload changed: every node's matching index reads it back.
pub async fn agent_changed(app: &App, agent_id: Uuid) {
    if let Err(e) = app.bus.publish(Event::AgentChanged { agent_id }).await {
        tracing::warn!(error = %e, %agent_id, "publishing an agent change failed");
    }
}

/// An agent's tokens or standing changed (revoked, rotated, suspended): its open connections
/// on every node check their token again at once.
pub async fn access_changed(app: &App, agent_id: Uuid) {
    if let Err(e) = app.bus.publish(Event::AccessChanged { agent_id }).await {
        tracing::warn!(error = %e, %agent_id, "publishing an access change failed");
    }
}

/// The receipts of these tasks' accepted work were issued.
pub async fn receipts_issued(app: &App, task_ids: Vec<Uuid>) {
    if task_ids.is_empty() {
        return;
    }
    if let Err(e) = app.bus.publish(Event::ReceiptsIssued { task_ids }).await {
        tracing::warn!(error = %e, "publishing issued receipts failed");
    }
}

/// Workloads changed for agents the caller cannot name: every node's matching index
/// re-reads them from storage.
pub async fn workloads_changed(app: &App) {
    if let Err(e) = app.bus.publish(Event::WorkloadsChanged).await {
        tracing::warn!(error = %e, "publishing a workload change failed");
    }
}

/// A task changed status: tell its poster and assignee, and offer it if it is claimable now.
pub async fn task_changed(app: &App, t: &TaskRecord) {
    tasks_changed(app, std::slice::from_ref(t)).await;
}

/// [`task_changed`] for several tasks (a cascade of unblocked, cancelled or failed
/// dependents), their frames stored in one write.
pub async fn tasks_changed(app: &App, tasks: &[TaskRecord]) {
    let mut frames = Vec::with_capacity(tasks.len() * 2);
    for t in tasks {
        let frame = Frame::TaskUpdate {
            task_id: t.id,
            status: t.status,
            assigned_agent_id: t.assigned_agent_id,
            updated_at: t.updated_at,
        };
        if let Some(assignee) = t.assigned_agent_id.filter(|a| *a != t.posted_by) {
            frames.push((assignee, frame.clone()));
        }
        frames.push((t.posted_by, frame));
    }
    to_agents(app, frames).await;
    for t in tasks {
        if t.status == TaskStatus::Available && t.retry_at.is_none_or(|r| r <= Utc::now()) {
            offer(app, t.clone());
        }
    }
}

/// Publishes the first matching round of a freshly posted task (stored as already in round 1,
/// see `NewPost::notifies_first_round`): no database write stands between post and notify.
pub fn announce(app: &App, t: TaskRecord) {
    let app = app.clone();
    tokio::spawn(async move {
        app.matcher
            // Freshly posted: nobody has lost it yet.
            .publish_round(
                &app.outbox,
                &app.metrics,
                &t,
                0,
                t.created_at,
                &Default::default(),
            )
            .await;
    });
}

/// Runs the next matching round of a task that became available again, in the background.
pub fn offer(app: &App, t: TaskRecord) {
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = app
            .matcher
            .notify(
                app.store.as_ref(),
                &app.outbox,
                &app.metrics,
                &t,
                t.updated_at,
            )
            .await
        {
            tracing::warn!(task = %t.id, error = %e, "matching failed; the matching loop will retry");
        }
    });
}
