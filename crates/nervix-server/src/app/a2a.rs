//! A2A (Agent2Agent v1.0): the platform, and each agent, as an A2A agent.
//!
//! An A2A task is a Nervix task the caller posted: `SendMessage` posts one (escrowed from the
//! caller like `POST /v1/tasks`), `GetTask`/`ListTasks` read the caller's own, `CancelTask`
//! is the REST cancel (refunded likewise), and the streaming methods follow the task through
//! the `task_update` frames its poster is sent anyway (the bus), re-reading the task from the
//! store on each (the store is the record; the frame only says "look now").
//!
//! At an agent's own interface (`/a2a/agents/{handle}`) the posted task is reserved for that
//! agent: offered to it alone and claimable by it alone (`tasks.reserved_for`).

use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use nervix_core::receipt::{canonical, protected_header, signing_input};
use nervix_core::{TaskSpec, TaskStatus};
use nervix_store::{
    AgentRecord, ArtifactRecord, ReceiptRecord, ReceiptSummary, SubmissionRecord, TaskQuery,
    TaskRecord,
};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use super::idempotency::Outcome;
use super::{receipts, tasks, App, Caller, Error, Result};
use crate::bus::{Event, Frame};

/// The longest a blocking `SendMessage` waits for its task to end before it answers with the
/// task as it stands (below the server's request timeout, 30 s by default). Nervix tasks are
/// done by other agents and may take hours: a client that wants to follow one streams it
/// (`SendStreamingMessage`, `SubscribeToTask`) or polls `GetTask`.
pub const BLOCKING_WAIT_CAP: Duration = Duration::from_secs(20);

/// How often a stream re-reads its task even when no frame arrived (a bus that dropped one).
const RESYNC: Duration = Duration::from_secs(5);

/// A task as an A2A client sees it: the task, its accepted work, and that work's receipt.
#[derive(Debug, Clone)]
pub struct A2aTask {
    pub task: TaskRecord,
    pub work: Option<SubmissionRecord>,
    /// The files the accepted work references (uploaded as artifacts), oldest first.
    pub files: Vec<ArtifactRecord>,
    pub receipt: Option<ReceiptRecord>,
    /// Completed, and its receipt is still being issued (a moment after the acceptance): to
    /// A2A the task is still working, so that a client's "completed" always carries the
    /// receipt.
    pub receipt_pending: bool,
}

impl A2aTask {
    fn bare(task: TaskRecord) -> A2aTask {
        A2aTask {
            task,
            work: None,
            files: Vec::new(),
            receipt: None,
            receipt_pending: false,
        }
    }

    /// Over for A2A: a terminal state, with its receipt if it completed.
    pub fn is_over(&self) -> bool {
        is_over(self.task.status) && !self.receipt_pending
    }
}

/// Posts the task a message asks for. `to`: the handle of the agent whose interface was
/// called (the task is reserved for it), or `None` at the platform's.
pub async fn send(
    app: &App,
    caller: &Caller,
    spec: &TaskSpec,
    to: Option<&str>,
) -> Result<A2aTask> {
    let reserved_for = match to {
        Some(handle) => {
            let agent = app.find_agent(handle).await?;
            if agent.id == caller.id {
                return Err(Error::invalid(
                    "own_task",
                    "an agent cannot post a task to its own interface",
                ));
            }
            Some(agent.id)
        }
        None => None,
    };
    // No idempotency key: nothing is stored to replay, so the renderer is never called.
    let render: super::idempotency::Render<TaskRecord> =
        Arc::new(|_| Err(Error::internal("no idempotent response to render")));
    match tasks::post(app, caller, spec, Vec::new(), reserved_for, None, render).await? {
        Outcome::Done(task) => Ok(A2aTask::bare(task)),
        Outcome::Replayed(_) => Err(Error::internal("replayed without a key")),
    }
}

/// The caller's task (its poster's, or any for an admin); anyone else is told it does not
/// exist.
pub async fn task(app: &App, caller: &Caller, id: Uuid) -> Result<A2aTask> {
    let t = app
        .store
        .task(id)
        .await?
        .filter(|t| t.posted_by == caller.id || caller.is_admin())
        .ok_or_else(|| Error::not_found("task"))?;
    with_work(app, t).await
}

async fn with_work(app: &App, task: TaskRecord) -> Result<A2aTask> {
    if task.status != TaskStatus::Completed {
        return Ok(A2aTask::bare(task));
    }
    let work = app.store.accepted_submission(task.id).await?;
    // Due first, then the receipt: the write that stores a receipt also settles its due row,
    // so a receipt that is no longer due is there to read (the other order could see neither).
    // Work accepted before receipts were issued this way (migration 0016) has none, and none
    // is due: that task is simply completed.
    let receipt_pending = match &work {
        Some(w) => app.store.receipt_is_due(w.id).await?,
        None => false,
    };
    let receipt = if receipt_pending {
        None
    } else {
        receipts::for_task(app, task.id).await?
    };
    let files = match &work {
        Some(w) => app.store.submission_artifacts(w.id).await?,
        None => Vec::new(),
    };
    Ok(A2aTask {
        task,
        work,
        files,
        receipt,
        receipt_pending,
    })
}

/// Up to `limit` of the caller's tasks after the cursor, newest first, in one of `status`
/// (all when `None`); with their work when asked.
pub async fn list(
    app: &App,
    caller: &Caller,
    status: Option<Vec<TaskStatus>>,
    mut before: Option<Uuid>,
    limit: i64,
    with_artifacts: bool,
) -> Result<Vec<A2aTask>> {
    // An A2A state stands for one or two Nervix statuses, so the caller's tasks are read in
    // pages and filtered until `limit` are found or there are no more.
    let mut out = Vec::new();
    loop {
        let q = TaskQuery {
            status: None,
            capability: None,
            complexity: None,
            posted_by: Some(caller.id),
            assigned_to: None,
            eligible_for: None,
            before,
            limit,
        };
        let rows = app.store.list_tasks(&q).await?;
        let exhausted = (rows.len() as i64) < limit;
        before = rows.last().map(|t| t.id);
        for t in rows {
            if out.len() as i64 == limit {
                return Ok(out);
            }
            if status.as_ref().is_some_and(|s| !s.contains(&t.status)) {
                continue;
            }
            out.push(if with_artifacts {
                with_work(app, t).await?
            } else {
                A2aTask::bare(t)
            });
        }
        if exhausted || out.len() as i64 == limit {
            return Ok(out);
        }
    }
}

/// Cancels the caller's task like `POST /v1/tasks/{id}/cancel` (escrow refunded).
pub async fn cancel(app: &App, caller: &Caller, id: Uuid) -> Result<A2aTask> {
    let current = task(app, caller, id).await?;
    if !matches!(
        current.task.status,
        TaskStatus::Blocked | TaskStatus::Available | TaskStatus::Claimed
    ) {
        return Err(Error::conflict(
            "not_cancelable",
            format!("task is {}", current.task.status),
        ));
    }
    let t = tasks::cancel(app, caller, id).await?;
    with_work(app, t).await
}

/// Is the task over (A2A: a terminal state)?
fn is_over(s: TaskStatus) -> bool {
    matches!(
        s,
        TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Expired | TaskStatus::Cancelled
    )
}

/// The caller's task now, then each time its status changes, until it is over.
pub async fn watch(
    app: &App,
    caller: &Caller,
    id: Uuid,
) -> Result<impl Stream<Item = Result<A2aTask>> + Send + 'static> {
    // Subscribed before the first read, so no change between the two is missed.
    let events = app.bus.subscribe();
    let first = task(app, caller, id).await?;
    let state = Watch {
        app: app.clone(),
        caller: caller.clone(),
        id,
        poster: first.task.posted_by,
        events,
        last: None,
        first: Some(first),
        done: false,
    };
    Ok(futures::stream::unfold(state, |mut w| async move {
        let next = w.next().await?;
        Some((next, w))
    }))
}

struct Watch {
    app: App,
    caller: Caller,
    id: Uuid,
    /// Task updates are sent to the poster; they are what wakes the stream.
    poster: Uuid,
    events: tokio::sync::broadcast::Receiver<Event>,
    last: Option<(TaskStatus, bool)>,
    first: Option<A2aTask>,
    done: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<A2aTask>> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some(Ok(self.emit(first)));
        }
        let id = self.id;
        loop {
            let wake = tokio::time::timeout(RESYNC, self.events.recv()).await;
            let relevant = match wake {
                Ok(Ok(Event::ToAgent {
                    agent_id,
                    frame: Frame::TaskUpdate { task_id, .. },
                    ..
                })) => task_id == id && agent_id == self.poster,
                Ok(Ok(Event::ReceiptsIssued { task_ids })) => task_ids.contains(&id),
                Ok(Ok(_)) => false,
                // Lagged: frames were dropped, one may be ours. Timeout: look anyway.
                Ok(Err(RecvError::Lagged(_))) | Err(_) => true,
                Ok(Err(RecvError::Closed)) => return None,
            };
            if !relevant {
                continue;
            }
            match task(&self.app, &self.caller, id).await {
                Ok(t) if Some((t.task.status, t.receipt_pending)) != self.last => {
                    return Some(Ok(self.emit(t)))
                }
                Ok(_) => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    fn emit(&mut self, t: A2aTask) -> A2aTask {
        self.last = Some((t.task.status, t.receipt_pending));
        self.done = t.is_over();
        t
    }
}

/// Waits (at most `cap`) for the caller's task to be over; the task as it then stands.
pub async fn wait(app: &App, caller: &Caller, id: Uuid, cap: Duration) -> Result<A2aTask> {
    use futures::StreamExt;
    let stream = watch(app, caller, id).await?;
    futures::pin_mut!(stream);
    let mut latest = None;
    let deadline = tokio::time::Instant::now() + cap;
    while let Ok(Some(t)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let t = t?;
        let over = t.is_over();
        latest = Some(t);
        if over {
            break;
        }
    }
    match latest {
        Some(t) => Ok(t),
        None => task(app, caller, id).await,
    }
}

/// The federation's capabilities (skills of the platform card), with their agent counts.
pub fn capabilities(app: &App) -> Vec<(String, usize)> {
    app.matcher.capabilities()
}

/// An agent of the per-agent card, with its receipts' summary.
pub async fn agent(app: &App, handle: &str) -> Result<(AgentRecord, ReceiptSummary)> {
    let a = app.find_agent(handle).await?;
    let summary = receipts::summary(app, a.id).await?;
    Ok((a, summary))
}

/// Signs an Agent Card (A2A §8.4): a JWS with the active key over the RFC 8785 canonical form
/// of `canonical_card` (the card without `signatures` and without default values). Returns the
/// `AgentCardSignature` (`protected`, `signature`).
pub fn sign_card(app: &App, canonical_card: &Value) -> Result<Value> {
    let keys = app.keys();
    let key = keys.active();
    let protected = protected_header(&key.kid, "JOSE");
    let input = signing_input(&protected, &canonical(canonical_card));
    let signature = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &key.encoding,
        jsonwebtoken::Algorithm::EdDSA,
    )
    .map_err(Error::internal)?;
    Ok(serde_json::json!({"protected": protected, "signature": signature}))
}
