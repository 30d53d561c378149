//! Business refusals inside a commit group: the group still commits, and every job in it runs
//! once. The writer is held by a job that waits for a signal while the jobs under test queue
//! up behind it in a known order; released, it takes them as one group.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nervix_core::{Complexity, Role, TaskKind, TaskStatus};
use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::SqliteStore;
use crate::model::*;
use crate::{ConnectOptions, Store, StoreError};

struct Fixture {
    store: Arc<SqliteStore>,
    poster: AgentRecord,
    /// Holds at most one task at a time.
    worker: AgentRecord,
    other: AgentRecord,
    t1: TaskRecord,
    t2: TaskRecord,
    _dir: tempfile::TempDir,
}

fn audit() -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        actor_id: None,
        actor_handle: None,
        action: "test".to_owned(),
        target: None,
        client_ip: None,
        details: json!({}),
    }
}

async fn agent(store: &SqliteStore, handle: &str, max_concurrent_tasks: i64) -> AgentRecord {
    let a = NewAgent {
        id: Uuid::now_v7(),
        handle: handle.to_owned(),
        name: handle.to_owned(),
        public_key: format!("pk-{handle}"),
        encryption_public_key: None,
        capabilities: Vec::new(),
        metadata: json!({}),
        max_concurrent_tasks,
        role: Role::Agent,
        created_at: Utc::now(),
    };
    store.ensure_agent(&a, &audit()).await.unwrap()
}

fn task(reward_cents: i64) -> NewTask {
    NewTask {
        id: Uuid::now_v7(),
        title: "t".to_owned(),
        description: "d".to_owned(),
        capabilities: Vec::new(),
        min_reputation: 0,
        reward_cents,
        complexity: Complexity::Simple,
        kind: TaskKind::Text,
        output_schema: None,
        language: None,
        min_words: Some(20),
        deadline: Utc::now() + chrono::Duration::hours(1),
        depends_on: Vec::new(),
        workflow_key: None,
        max_attempts: 3,
    }
}

fn post(poster: Uuid, tasks: Vec<NewTask>) -> NewPost {
    NewPost {
        poster,
        from_treasury: false,
        workflow: None,
        tasks,
        at: Utc::now(),
        audit: None,
        notifies_first_round: false,
        reserved_for: None,
    }
}

fn submission(task_id: Uuid, agent_id: Uuid, decision: Decision) -> NewSubmission {
    NewSubmission {
        id: Uuid::now_v7(),
        task_id,
        agent_id,
        content: json!("work"),
        notes: None,
        quality_score: 90,
        checks: json!([]),
        decision,
        feedback: None,
        retry: RetryPolicy::default(),
        at: Utc::now(),
        artifacts: Vec::new(),
    }
}

fn claim(task_id: Uuid, agent_id: Uuid) -> ClaimRequest {
    ClaimRequest {
        task_id,
        agent_id,
        lease_seconds: 600,
        at: Utc::now(),
    }
}

/// A poster with 10.00 who posted two tasks of 1.00, and two agents.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = SqliteStore::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    let poster = agent(&store, "poster", 5).await;
    let worker = agent(&store, "worker", 1).await;
    let other = agent(&store, "other", 5).await;
    store.grant(poster.id, 1000, "g", &audit()).await.unwrap();
    let mut tasks = store
        .post_tasks(&post(poster.id, vec![task(100), task(100)]), None)
        .await
        .unwrap();
    let t2 = tasks.pop().unwrap();
    let t1 = tasks.pop().unwrap();
    Fixture {
        store: Arc::new(store),
        poster,
        worker,
        other,
        t1,
        t2,
        _dir: dir,
    }
}

/// Runs one write job that waits for `release` (the writer runs nothing else meanwhile).
async fn hold(store: &Arc<SqliteStore>, release: Arc<Notify>) -> JoinHandle<()> {
    let started = Arc::new(Notify::new());
    let data = (started.clone(), release);
    let store2 = store.clone();
    let held = tokio::spawn(async move {
        store2
            .write_one(data, |_, (started, release)| {
                Box::pin(async move {
                    started.notify_one();
                    release.notified().await;
                    Ok(())
                })
            })
            .await
            .unwrap();
    });
    started.notified().await;
    held
}

/// Starts `call` and returns once its write waits in the writer's queue, so that jobs queue
/// in the order they are started.
async fn queue<T: Send + 'static>(
    store: &Arc<SqliteStore>,
    call: impl Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    let before = store.writer.queued();
    let handle = tokio::spawn(call);
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while store.writer.queued() == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    waited.await.expect("the call queued a write");
    handle
}

/// A write that counts its runs and inserts an audit row; with `fail`, it then gives up
/// without committing (a real error, which spoils the group).
fn counted(
    store: &Arc<SqliteStore>,
    runs: &Arc<AtomicUsize>,
    fail: bool,
) -> impl Future<Output = crate::Result<()>> + Send + 'static {
    let (store, runs) = (store.clone(), runs.clone());
    async move {
        store
            .write(runs, move |mut tx, runs| {
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    sqlx::query(
                        "INSERT INTO audit_log (id, at, action, details) \
                         VALUES ($1, $2, 'counted', '{}')",
                    )
                    .bind(Uuid::now_v7())
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    if fail {
                        return Err(StoreError::Corrupt("gives up after writing".into()));
                    }
                    tx.commit().await?;
                    Ok(())
                })
            })
            .await
    }
}

/// The same, as a single-statement write.
fn counted_one(
    store: &Arc<SqliteStore>,
    runs: &Arc<AtomicUsize>,
) -> impl Future<Output = crate::Result<()>> + Send + 'static {
    let (store, runs) = (store.clone(), runs.clone());
    async move {
        store
            .write_one(runs, |conn, runs| {
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    sqlx::query(
                        "INSERT INTO audit_log (id, at, action, details) \
                         VALUES ($1, $2, 'counted', '{}')",
                    )
                    .bind(Uuid::now_v7())
                    .bind(Utc::now())
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }
}

/// Queues, behind a held writer: a counted write, a successful claim, business refusals of
/// every kind (the capacity trigger, a non-assignee's and an unknown task's submit, a post
/// without funds, a post whose key is used, a non-assignee's release, a rotation of an unknown token, a used challenge),
/// optionally a real error, a counted single-statement write, and a submit that pays. Returns
/// how often each counted write ran.
async fn group_with_refusals(spoil: bool) -> (usize, usize) {
    let f = fixture().await;
    let s = &f.store;
    let (first, last) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let login = NewChallenge {
        id: Uuid::now_v7(),
        purpose: ChallengePurpose::Auth,
        agent_id: Some(f.other.id),
        public_key: f.other.public_key.clone(),
        challenge: "nonce".to_owned(),
        payload: None,
        expires_at: Utc::now() - chrono::Duration::minutes(1),
        created_at: Utc::now() - chrono::Duration::minutes(6),
    };
    s.insert_challenge(&login).await.unwrap();
    let token = TokenRecord {
        jti: Uuid::now_v7(),
        agent_id: f.other.id,
        kid: "k".to_owned(),
        issued_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
    };

    // A post whose key the group's duplicate finds used.
    let keyed = SaveResponse {
        scope: IdempotencyScope {
            agent_id: f.poster.id,
            method: "POST".to_owned(),
            path: "/v1/tasks".to_owned(),
            key: "k".to_owned(),
        },
        request_hash: "h".to_owned(),
        created_at: Utc::now(),
        render: Arc::new(|_: &Vec<TaskRecord>| Some((201, "{}".to_owned()))),
    };
    let p = f.poster.id;
    s.post_tasks(&post(p, vec![task(100)]), Some(keyed.clone()))
        .await
        .unwrap();

    let release = Arc::new(Notify::new());
    let held = hold(s, release.clone()).await;
    let counted_first = queue(s, counted(s, &first, false)).await;
    let (s1, t1, w) = (s.clone(), f.t1.id, f.worker.id);
    let claimed = queue(s, async move { s1.claim_task(&claim(t1, w)).await }).await;
    // Judged eligible on a snapshot from before the group: refused by the capacity trigger.
    let (s1, t2) = (s.clone(), f.t2.id);
    let at_capacity = queue(s, async move { s1.claim_task(&claim(t2, w)).await }).await;
    let (s1, o) = (s.clone(), f.other.id);
    let not_assignee = queue(s, async move {
        s1.submit(&submission(t1, o, Decision::Accept), None).await
    })
    .await;
    let s1 = s.clone();
    let unknown = queue(s, async move {
        s1.submit(&submission(Uuid::now_v7(), o, Decision::Reject), None)
            .await
    })
    .await;
    let s1 = s.clone();
    let no_funds = queue(s, async move {
        s1.post_tasks(&post(p, vec![task(5000)]), None).await
    })
    .await;
    let (s1, save) = (s.clone(), keyed.clone());
    let key_used = queue(s, async move {
        s1.post_tasks(&post(p, vec![task(100)]), Some(save)).await
    })
    .await;
    let s1 = s.clone();
    let release_refused = queue(s, async move { s1.release_task(t2, o, Utc::now()).await }).await;
    let (s1, tok) = (s.clone(), token.clone());
    let rotated = queue(s, async move {
        s1.rotate_token(Uuid::now_v7(), &tok, &audit()).await
    })
    .await;
    let (s1, tok, c) = (s.clone(), token.clone(), login.id);
    let used = queue(s, async move { s1.complete_login(c, &tok, &audit()).await }).await;
    let spoiler = if spoil {
        Some(queue(s, counted(s, &Arc::new(AtomicUsize::new(0)), true)).await)
    } else {
        None
    };
    let counted_last = queue(s, counted_one(s, &last)).await;
    let s1 = s.clone();
    let paid = queue(s, async move {
        s1.submit(&submission(t1, w, Decision::Accept), None).await
    })
    .await;
    release.notify_one();
    held.await.unwrap();

    counted_first.await.unwrap().unwrap();
    assert!(matches!(
        claimed.await.unwrap().unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    assert_eq!(
        at_capacity.await.unwrap().unwrap(),
        ClaimOutcome::AtCapacity
    );
    assert_eq!(
        not_assignee.await.unwrap().unwrap(),
        SubmitOutcome::NotAssignee
    );
    assert_eq!(unknown.await.unwrap().unwrap(), SubmitOutcome::TaskNotFound);
    assert!(matches!(
        no_funds.await.unwrap(),
        Err(StoreError::InsufficientFunds)
    ));
    assert!(matches!(
        key_used.await.unwrap(),
        Err(StoreError::Conflict(crate::Conflict::IdempotencyKeyUsed))
    ));
    assert!(matches!(
        release_refused.await.unwrap(),
        Err(StoreError::Conflict(crate::Conflict::InvalidState))
    ));
    assert!(!rotated.await.unwrap().unwrap());
    assert!(matches!(
        used.await.unwrap(),
        Err(StoreError::Conflict(crate::Conflict::ChallengeUsed))
    ));
    if let Some(spoiler) = spoiler {
        assert!(matches!(
            spoiler.await.unwrap(),
            Err(StoreError::Corrupt(_))
        ));
    }
    counted_last.await.unwrap().unwrap();
    let SubmitOutcome::Done { task, .. } = paid.await.unwrap().unwrap() else {
        panic!("the assignee's submit was refused");
    };
    assert_eq!(task.status, TaskStatus::Completed);
    // What the group kept: the claim and the payout, and nothing of the refusals.
    let t2 = s.task(f.t2.id).await.unwrap().unwrap();
    assert_eq!(t2.status, TaskStatus::Available);
    assert_eq!(s.balances(f.poster.id).await.unwrap().escrow, 200);
    assert!(s.balances(f.worker.id).await.unwrap().available > 0);
    assert_eq!(s.ledger_total().await.unwrap(), 0);
    s.close().await;
    (first.load(Ordering::SeqCst), last.load(Ordering::SeqCst))
}

/// Refusals leave the group clean: it commits once, and nothing in it runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_the_group() {
    assert_eq!(group_with_refusals(false).await, (1, 1));
}

/// The control: a job that fails after writing undoes the group, whose jobs then run again
/// alone (the counted write before it runs twice), and every caller still gets its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_error_replays_the_group() {
    assert_eq!(group_with_refusals(true).await, (2, 1));
}

/// Debug builds check what a refusal claims: one that wrote is stopped (its caller gets an
/// error), and nothing it wrote is kept.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_that_wrote_is_caught() {
    let f = fixture().await;
    let s = &f.store;
    let runs = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let held = hold(s, release.clone()).await;
    let before = queue(s, counted(s, &runs, false)).await;
    let s1 = s.clone();
    let liar = queue(s, async move {
        s1.write((), |mut tx, _| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO audit_log (id, at, action, details) \
                     VALUES ($1, $2, 'liar', '{}')",
                )
                .bind(Uuid::now_v7())
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
                tx.refuse(Ok(()))
            })
        })
        .await
    })
    .await;
    release.notify_one();
    held.await.unwrap();
    before.await.unwrap().unwrap();
    assert!(matches!(
        liar.await.unwrap(),
        Err(StoreError::WriterStopped)
    ));
    let lies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'liar'")
        .fetch_one(s.reader())
        .await
        .unwrap();
    assert_eq!(lies, 0);
    s.close().await;
}
