//! Fixtures shared by the conformance cases: fresh stores, enrolled agents, posted tasks.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use nervix_core::{Complexity, Role, TaskKind, TaskStatus};
use nervix_store::testing::{self, Backend, TestStore};
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

/// The runner of [`nervix_store::backend_matrix!`] for conformance cases: a fresh store on
/// `backend` for `case`, torn down after it. Returns at once when PostgreSQL tests skip.
pub async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(ts) = backend.test_store().await else {
        return;
    };
    case(Arc::clone(&ts.store)).await;
    teardown(ts).await;
}

/// Closes the store and, for PostgreSQL, drops its private schema (best effort).
pub async fn teardown(ts: TestStore) {
    ts.store.close().await;
    if ts.store.backend() != "postgres" {
        return;
    }
    let (Some(base), Some(schema)) = (
        testing::postgres_url(),
        ts.url.rsplit("search_path%3D").next(),
    ) else {
        return;
    };
    if !schema.starts_with("t_")
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return;
    }
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// Now, at the precision both backends keep (microseconds), so stored times compare equal.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A name nobody else in this test process uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        at: now(),
        actor_id: None,
        actor_handle: None,
        action: action.to_owned(),
        target: None,
        client_ip: Some("127.0.0.1".to_owned()),
        details: json!({}),
    }
}

pub fn new_agent(handle: &str, capabilities: &[&str]) -> NewAgent {
    NewAgent {
        id: Uuid::now_v7(),
        handle: handle.to_owned(),
        name: format!("Agent {handle}"),
        public_key: format!("pk-{}", Uuid::new_v4().simple()),
        encryption_public_key: None,
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        metadata: json!({"model": "test"}),
        max_concurrent_tasks: 5,
        role: Role::Agent,
        created_at: now(),
    }
}

pub fn token_for(agent_id: Uuid) -> TokenRecord {
    let at = now();
    TokenRecord {
        jti: Uuid::now_v7(),
        agent_id,
        kid: "k1".to_owned(),
        issued_at: at,
        expires_at: at + Duration::hours(1),
    }
}

pub fn enroll_challenge(public_key: &str, expires_at: DateTime<Utc>) -> NewChallenge {
    NewChallenge {
        id: Uuid::now_v7(),
        purpose: ChallengePurpose::Enroll,
        agent_id: None,
        public_key: public_key.to_owned(),
        challenge: format!("nonce-{}", Uuid::new_v4().simple()),
        payload: Some(json!({"pending": true})),
        expires_at,
        created_at: now(),
    }
}

/// Runs the whole enrollment of `agent` through a fresh challenge.
pub async fn try_enroll(
    store: &Arc<dyn Store>,
    agent: &NewAgent,
) -> Result<(AgentRecord, TokenRecord)> {
    let challenge = enroll_challenge(&agent.public_key, now() + Duration::minutes(5));
    store.insert_challenge(&challenge).await?;
    let token = token_for(agent.id);
    let record = store
        .complete_enrollment(challenge.id, agent, &token, &enroll_audit(agent))
        .await?;
    Ok((record, token))
}

pub fn enroll_audit(agent: &NewAgent) -> AuditEntry {
    AuditEntry {
        actor_id: Some(agent.id),
        actor_handle: Some(agent.handle.clone()),
        target: Some(agent.id.to_string()),
        details: json!({"handle": agent.handle}),
        ..audit("agent.enrolled")
    }
}

pub async fn enroll_with(store: &Arc<dyn Store>, agent: NewAgent) -> AgentRecord {
    try_enroll(store, &agent).await.expect("enroll").0
}

/// A fresh agent with a unique handle and these capabilities.
pub async fn enroll(store: &Arc<dyn Store>, capabilities: &[&str]) -> AgentRecord {
    enroll_with(store, new_agent(&unique("agent"), capabilities)).await
}

/// The operator's admin identity (posts from the treasury).
pub async fn admin(store: &Arc<dyn Store>) -> AgentRecord {
    let mut a = new_agent("admin", &[]);
    a.role = Role::Admin;
    store
        .ensure_agent(&a, &audit("admin.ensure"))
        .await
        .expect("ensure admin")
}

pub async fn grant(store: &Arc<dyn Store>, to: Uuid, cents: i64) {
    store
        .grant(to, cents, "test grant", &audit("ledger.grant"))
        .await
        .expect("grant");
}

pub fn task(reward_cents: i64) -> NewTask {
    NewTask {
        id: Uuid::now_v7(),
        title: "Summarise".to_owned(),
        description: "Summarise the text".to_owned(),
        capabilities: Vec::new(),
        min_reputation: 0,
        reward_cents,
        complexity: Complexity::Simple,
        kind: TaskKind::Text,
        output_schema: None,
        language: None,
        min_words: Some(20),
        deadline: now() + Duration::hours(1),
        depends_on: Vec::new(),
        workflow_key: None,
        max_attempts: 3,
    }
}

pub fn post(poster: &AgentRecord, tasks: Vec<NewTask>) -> NewPost {
    NewPost {
        poster: poster.id,
        from_treasury: poster.role == Role::Admin,
        workflow: None,
        tasks,
        at: now(),
        audit: Some(audit("task.posted")),
        notifies_first_round: false,
        reserved_for: None,
    }
}

pub async fn post_one(store: &Arc<dyn Store>, poster: &AgentRecord, t: NewTask) -> TaskRecord {
    let mut created = store
        .post_tasks(&post(poster, vec![t]), None)
        .await
        .expect("post task");
    created.remove(0)
}

pub fn claim_req(task_id: Uuid, agent_id: Uuid, at: DateTime<Utc>) -> ClaimRequest {
    ClaimRequest {
        task_id,
        agent_id,
        lease_seconds: 600,
        at,
    }
}

pub async fn claim(store: &Arc<dyn Store>, task_id: Uuid, agent_id: Uuid) -> ClaimOutcome {
    store
        .claim_task(&claim_req(task_id, agent_id, now()))
        .await
        .expect("claim")
}

pub async fn claim_ok(store: &Arc<dyn Store>, task_id: Uuid, agent_id: Uuid) -> TaskRecord {
    match claim(store, task_id, agent_id).await {
        ClaimOutcome::Claimed(t) => t,
        other => panic!("claim of {task_id} by {agent_id}: {other:?}"),
    }
}

pub fn submission(
    task_id: Uuid,
    agent_id: Uuid,
    decision: Decision,
    quality: u8,
    at: DateTime<Utc>,
) -> NewSubmission {
    NewSubmission {
        id: Uuid::now_v7(),
        task_id,
        agent_id,
        content: json!("the work"),
        notes: Some("notes".to_owned()),
        quality_score: quality,
        checks: json!([{"name": "non_empty", "passed": true}]),
        decision,
        feedback: None,
        retry: RetryPolicy::default(),
        at,
        artifacts: Vec::new(),
    }
}

pub async fn submit(
    store: &Arc<dyn Store>,
    task_id: Uuid,
    agent_id: Uuid,
    decision: Decision,
    quality: u8,
) -> SubmitOutcome {
    store
        .submit(
            &submission(task_id, agent_id, decision, quality, now()),
            None,
        )
        .await
        .expect("submit")
}

/// Submits and expects the decision to be applied; returns (submission, task, unblocked, cancelled).
pub async fn submit_done(
    store: &Arc<dyn Store>,
    task_id: Uuid,
    agent_id: Uuid,
    decision: Decision,
    quality: u8,
) -> (
    SubmissionRecord,
    TaskRecord,
    Vec<TaskRecord>,
    Vec<TaskRecord>,
) {
    match submit(store, task_id, agent_id, decision, quality).await {
        SubmitOutcome::Done {
            submission,
            task,
            unblocked,
            cancelled,
        } => (submission, task, unblocked, cancelled),
        other => panic!("submit of {task_id} by {agent_id}: {other:?}"),
    }
}

/// Claims and completes `task_id` as `agent_id` with the given quality.
pub async fn complete(
    store: &Arc<dyn Store>,
    task_id: Uuid,
    agent_id: Uuid,
    quality: u8,
) -> (SubmissionRecord, TaskRecord, Vec<TaskRecord>) {
    claim_ok(store, task_id, agent_id).await;
    let (s, t, unblocked, _) =
        submit_done(store, task_id, agent_id, Decision::Accept, quality).await;
    assert_eq!(t.status, TaskStatus::Completed);
    (s, t, unblocked)
}

/// Lets `agent` finish probation: five treasury-funded tasks completed.
pub async fn finish_probation(store: &Arc<dyn Store>, admin: &AgentRecord, agent: Uuid) {
    for _ in 0..nervix_core::reputation::PROBATION_TASKS {
        let t = post_one(store, admin, task(100)).await;
        complete(store, t.id, agent, 100).await;
    }
}

pub async fn task_of(store: &Arc<dyn Store>, id: Uuid) -> TaskRecord {
    store
        .task(id)
        .await
        .expect("read task")
        .expect("task exists")
}

pub async fn balances(store: &Arc<dyn Store>, owner: Uuid) -> Balances {
    store.balances(owner).await.expect("balances")
}

/// Escrow entries of a task on its funder's escrow account: (holds, releases).
pub async fn escrow_entries(store: &Arc<dyn Store>, task: &TaskRecord) -> (Vec<i64>, Vec<i64>) {
    let escrow = account_id(task.funder(), AccountKind::Escrow);
    let entries = store
        .ledger_entries(&LedgerQuery {
            task_id: Some(task.id),
            limit: 1000,
            ..LedgerQuery::default()
        })
        .await
        .expect("ledger entries");
    let pick = |kind: &str| {
        entries
            .iter()
            .filter(|e| e.account_id == escrow && e.kind == kind)
            .map(|e| e.amount)
            .collect::<Vec<_>>()
    };
    (pick("escrow_hold"), pick("escrow_release"))
}

/// The escrow of `task` was held once and released exactly once, in full.
pub async fn assert_settled_once(store: &Arc<dyn Store>, task: &TaskRecord) {
    let (holds, releases) = escrow_entries(store, task).await;
    assert_eq!(holds, vec![task.reward_cents], "escrow hold of {}", task.id);
    assert_eq!(
        releases,
        vec![-task.reward_cents],
        "escrow release of {} ({})",
        task.id,
        task.status
    );
}

/// The escrow of `task` is still held.
pub async fn assert_escrow_held(store: &Arc<dyn Store>, task: &TaskRecord) {
    let (holds, releases) = escrow_entries(store, task).await;
    assert_eq!(holds, vec![task.reward_cents], "escrow hold of {}", task.id);
    assert!(
        releases.is_empty(),
        "escrow of {} ({}) released: {releases:?}",
        task.id,
        task.status
    );
}

/// The books balance and every cached balance matches its entries.
pub async fn assert_ledger_consistent(store: &Arc<dyn Store>) {
    assert_eq!(
        store.ledger_total().await.expect("ledger total"),
        0,
        "ledger total"
    );
    assert_eq!(
        store.ledger_mismatches().await.expect("mismatches"),
        Vec::<Uuid>::new(),
        "ledger mismatches"
    );
}

pub fn ids(tasks: &[TaskRecord]) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    v.sort();
    v
}

pub fn sorted(mut v: Vec<Uuid>) -> Vec<Uuid> {
    v.sort();
    v
}

pub fn is_conflict(r: &Result<impl std::fmt::Debug>, c: Conflict) -> bool {
    matches!(r, Err(StoreError::Conflict(got)) if *got == c)
}

/// Every agent's stored `active_tasks` (kept by the database) equals the tasks it holds.
pub async fn assert_active_counts_consistent(store: &Arc<dyn Store>) {
    let held: std::collections::HashMap<Uuid, i64> = store
        .active_task_counts()
        .await
        .expect("active task counts")
        .into_iter()
        .collect();
    for agent in store.all_agents().await.expect("agents") {
        assert_eq!(
            agent.active_tasks,
            held.get(&agent.id).copied().unwrap_or(0),
            "active_tasks of {}",
            agent.handle
        );
    }
}

/// Lifts the level's cap on how many tasks `agent` may hold, leaving its own
/// `max_concurrent_tasks` as the limit: for cases about claims rather than levels. Records
/// the agent's current evidence version with an unchanged score.
pub async fn lift_level_cap(store: &Arc<dyn Store>, agent: Uuid) {
    let stale = store
        .stale_reputations(100_000)
        .await
        .expect("stale reputations")
        .into_iter()
        .find(|s| s.agent_id == agent)
        .expect("a new agent has no score recorded yet");
    let a = store.agent(agent).await.expect("read").expect("agent");
    let recorded = store
        .record_reputation(&ReputationUpdate {
            id: Uuid::now_v7(),
            agent_id: agent,
            version: stale.version,
            score: a.reputation,
            automated: a.rep_automated,
            success: a.rep_success,
            peer: a.rep_peer,
            level: nervix_core::Level::Novice,
            level_max_tasks: 1_000_000,
            at: now(),
        })
        .await
        .expect("record");
    assert!(recorded.is_some(), "recorded");
}
