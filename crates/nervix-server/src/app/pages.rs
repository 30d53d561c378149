//! Reads for the website: what one page shows, gathered in one operation so a page handler
//! calls exactly one function here, like every other handler. Nothing here writes.

use nervix_core::agent::ONLINE_WINDOW;
use nervix_core::Role;
use nervix_store::{
    AgentRecord, Balances, ChannelRecord, HistoryEntry, LedgerEntry, LedgerQuery, MessageRecord,
    NotificationQuery, NotificationRecord, PageQuery, ReputationSnapshot, Stats, SubmissionRecord,
    TaskQuery, TaskRecord, WithdrawalQuery, WithdrawalRecord, WithdrawalStatus, WorkflowRecord,
};
use uuid::Uuid;

use super::messages::{self, HistoryOf};
use super::{tasks, App, Caller, Error, Result};

/// How many reputation snapshots a chart draws (newest first from the store).
const CHART_POINTS: i64 = 200;

/// A public profile: the agent, its score over time (newest first), its recent work.
pub struct Profile {
    pub agent: AgentRecord,
    pub history: Vec<ReputationSnapshot>,
    pub work: Vec<HistoryEntry>,
}

pub async fn profile(app: &App, handle: &str) -> Result<Profile> {
    let agent = app.find_agent(handle).await?;
    if agent.role == Role::Admin {
        // The operator's identity is not an agent anyone should browse to.
        return Err(Error::not_found("agent"));
    }
    let history = app
        .store
        .reputation_history(agent.id, &first(CHART_POINTS))
        .await?;
    let work = app.store.work_history(agent.id, &first(20)).await?;
    Ok(Profile {
        agent,
        history,
        work,
    })
}

/// Everything the agent's dashboard shows about the signed-in agent.
pub struct Dashboard {
    pub agent: AgentRecord,
    pub balances: Balances,
    /// Newest first.
    pub ledger: Vec<LedgerEntry>,
    pub history: Vec<ReputationSnapshot>,
    pub work: Vec<HistoryEntry>,
    pub eligible: Vec<TaskRecord>,
    pub held: Vec<TaskRecord>,
    pub notifications: Vec<NotificationRecord>,
    pub withdrawals: Vec<WithdrawalRecord>,
}

pub async fn dashboard(app: &App, caller: &Caller) -> Result<Dashboard> {
    let agent = app
        .store
        .agent(caller.id)
        .await?
        .ok_or_else(|| Error::not_found("agent"))?;
    let store = &app.store;
    let balances = store.balances(caller.id).await?;
    let ledger = store
        .ledger_entries(&LedgerQuery {
            owner: Some(caller.id),
            task_id: None,
            before: None,
            limit: 100,
        })
        .await?;
    let history = store
        .reputation_history(caller.id, &first(CHART_POINTS))
        .await?;
    let work = store.work_history(caller.id, &first(20)).await?;
    // The same eligibility the task list applies for this agent.
    let eligible = if caller.role == Role::Admin {
        Vec::new()
    } else {
        tasks::list(app, caller, tasks::Filter::default(), None, 10).await?
    };
    let held = store
        .list_tasks(&TaskQuery {
            assigned_to: Some(caller.id),
            limit: 20,
            ..TaskQuery::default()
        })
        .await?;
    let notifications = store
        .notifications(&NotificationQuery {
            agent_id: caller.id,
            unread_only: false,
            cursor: None,
            limit: 20,
        })
        .await?;
    let withdrawals = store
        .withdrawals(&WithdrawalQuery {
            agent_id: Some(caller.id),
            limit: 10,
            ..WithdrawalQuery::default()
        })
        .await?;
    Ok(Dashboard {
        agent,
        balances,
        ledger,
        history,
        work,
        eligible,
        held,
        notifications,
        withdrawals,
    })
}

/// The agent's message threads: its channels, and the thread it opened (a channel, or the
/// direct messages with one agent), newest first.
pub struct Threads {
    pub channels: Vec<ChannelRecord>,
    pub thread: Vec<MessageRecord>,
}

pub async fn threads(app: &App, caller: &Caller, open: Option<HistoryOf>) -> Result<Threads> {
    let channels = messages::channels(app, caller, None, 100).await?;
    let thread = match open {
        Some(of) => messages::history(app, caller, of, None, 50).await?,
        None => Vec::new(),
    };
    Ok(Threads { channels, thread })
}

/// The admin's overview of the platform's state.
pub struct System {
    pub backend: &'static str,
    pub multi_node: bool,
    pub stats: Stats,
    pub review_queue: usize,
    pub pending_withdrawals: usize,
    pub bonus_pool_cents: i64,
    pub ledger_balanced: bool,
}

/// Depths are counted up to this many (a page, not a table scan).
const DEPTH_CAP: i64 = 1000;

pub async fn system(app: &App, caller: &Caller) -> Result<System> {
    caller.require_admin()?;
    let store = &app.store;
    let review_queue = store.review_queue(&first(DEPTH_CAP)).await?.len();
    let pending_withdrawals = store
        .withdrawals(&WithdrawalQuery {
            status: Some(WithdrawalStatus::Pending),
            limit: DEPTH_CAP,
            ..WithdrawalQuery::default()
        })
        .await?
        .len();
    Ok(System {
        backend: store.backend(),
        multi_node: app.config.redis_url.is_some(),
        stats: app.stats.current().stats.clone(),
        review_queue,
        pending_withdrawals,
        bonus_pool_cents: store.bonus_pool().await?,
        ledger_balanced: store.ledger_total().await? == 0,
    })
}

/// Agents for the admin's list: by handle when one is searched for, else the newest.
pub async fn admin_agents(
    app: &App,
    caller: &Caller,
    search: Option<&str>,
) -> Result<Vec<AgentRecord>> {
    caller.require_admin()?;
    let all = app.store.all_agents().await?;
    let needle = search.map(str::to_lowercase).unwrap_or_default();
    let mut found: Vec<AgentRecord> = all
        .into_iter()
        .filter(|a| {
            needle.is_empty()
                || a.handle.contains(&needle)
                || a.name.to_lowercase().contains(&needle)
        })
        .collect();
    found.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    found.truncate(200);
    Ok(found)
}

/// A held submission with its task, for the spot-check queue.
pub struct Held {
    pub submission: SubmissionRecord,
    pub task: Option<TaskRecord>,
    pub agent: Option<AgentRecord>,
}

pub async fn review_queue(app: &App, caller: &Caller) -> Result<Vec<Held>> {
    caller.require_admin()?;
    let subs = app.store.review_queue(&first(50)).await?;
    let ids: Vec<Uuid> = subs.iter().map(|s| s.task_id).collect();
    let tasks = app.store.tasks_by_ids(&ids).await?;
    let mut out = Vec::with_capacity(subs.len());
    for s in subs {
        let task = tasks.iter().find(|t| t.id == s.task_id).cloned();
        let agent = app.store.agent(s.agent_id).await?;
        out.push(Held {
            submission: s,
            task,
            agent,
        });
    }
    Ok(out)
}

/// Withdrawals for the admin, pending first, with their agents' handles.
pub async fn admin_withdrawals(
    app: &App,
    caller: &Caller,
) -> Result<Vec<(WithdrawalRecord, String)>> {
    caller.require_admin()?;
    let mut list = app
        .store
        .withdrawals(&WithdrawalQuery {
            limit: 100,
            ..WithdrawalQuery::default()
        })
        .await?;
    list.sort_by_key(|w| w.status != WithdrawalStatus::Pending);
    let mut out = Vec::with_capacity(list.len());
    for w in list {
        let handle = app
            .store
            .agent(w.agent_id)
            .await?
            .map_or_else(|| w.agent_id.to_string(), |a| a.handle);
        out.push((w, handle));
    }
    Ok(out)
}

/// The newest tasks, and the workflows they belong to.
pub struct TaskBoard {
    pub tasks: Vec<TaskRecord>,
    pub workflows: Vec<WorkflowRecord>,
}

pub async fn admin_tasks(app: &App, caller: &Caller) -> Result<TaskBoard> {
    caller.require_admin()?;
    let tasks = app
        .store
        .list_tasks(&TaskQuery {
            limit: 100,
            ..TaskQuery::default()
        })
        .await?;
    let mut workflows = Vec::new();
    for id in tasks.iter().filter_map(|t| t.workflow_id) {
        if workflows.iter().any(|w: &WorkflowRecord| w.id == id) {
            continue;
        }
        if let Some(w) = app.store.workflow(id).await? {
            workflows.push(w);
        }
    }
    Ok(TaskBoard { tasks, workflows })
}

/// A workflow and its tasks (for its DAG).
pub async fn admin_workflow(
    app: &App,
    caller: &Caller,
    id: Uuid,
) -> Result<(WorkflowRecord, Vec<TaskRecord>)> {
    caller.require_admin()?;
    let w = app
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| Error::not_found("workflow"))?;
    let tasks = app.store.workflow_tasks(id).await?;
    Ok((w, tasks))
}

/// Whether an agent counts as online now.
pub fn online(a: &AgentRecord) -> bool {
    a.last_seen_at
        .is_some_and(|t| t >= chrono::Utc::now() - ONLINE_WINDOW)
}

fn first(limit: i64) -> PageQuery {
    PageQuery {
        cursor: None,
        limit,
    }
}
