//! Responses stored under an Idempotency-Key in the transaction of the work they answer.

use std::sync::Arc;

use chrono::Duration;
use nervix_store::*;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    response_commits_with_the_work,
    failed_work_leaves_no_key,
    key_is_scoped_by_agent_method_and_path,
    concurrent_duplicates_run_once [multi],
    concurrent_duplicate_submits_pay_once [multi],
    unrendered_outcome_saves_nothing,
    old_responses_are_purged,
}

fn scope(agent_id: Uuid, method: &str, path: &str, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        agent_id,
        method: method.to_owned(),
        path: path.to_owned(),
        key: key.to_owned(),
    }
}

fn posting(agent_id: Uuid, key: &str) -> IdempotencyScope {
    scope(agent_id, "POST", "/v1/tasks", key)
}

/// The body a post's response carries here: the ids of its tasks.
fn body_of(tasks: &[TaskRecord]) -> String {
    serde_json::to_string(&tasks.iter().map(|t| t.id).collect::<Vec<_>>()).unwrap()
}

fn save_post(scope: IdempotencyScope) -> SaveResponse<Vec<TaskRecord>> {
    SaveResponse {
        scope,
        request_hash: "post-hash".to_owned(),
        created_at: now(),
        render: Arc::new(|tasks: &Vec<TaskRecord>| Some((201, body_of(tasks)))),
    }
}

fn save_submit(scope: IdempotencyScope) -> SaveResponse<SubmitOutcome> {
    SaveResponse {
        scope,
        request_hash: "submit-hash".to_owned(),
        created_at: now(),
        render: Arc::new(|o: &SubmitOutcome| match o {
            SubmitOutcome::Done { submission, .. } => Some((202, submission.id.to_string())),
            _ => None,
        }),
    }
}

fn key_used<T: std::fmt::Debug>(r: Result<T>) -> bool {
    match r {
        Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed)) => true,
        other => panic!("expected the key to be used: {other:?}"),
    }
}

async fn stored(store: &Arc<dyn Store>, scope: &IdempotencyScope) -> Option<IdempotentResponse> {
    store.idempotent_response(scope).await.unwrap()
}

fn submit_path(task: Uuid) -> String {
    format!("/v1/tasks/{task}/submit")
}

pub async fn response_commits_with_the_work(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1_000).await;
    let sc = posting(poster.id, "k1");
    let save = save_post(sc.clone());
    let created = store
        .post_tasks(&post(&poster, vec![task(100)]), Some(save.clone()))
        .await
        .unwrap();
    assert_eq!(
        stored(&store, &sc).await,
        Some(IdempotentResponse {
            request_hash: "post-hash".to_owned(),
            status: 201,
            body: body_of(&created),
            created_at: save.created_at,
        })
    );
    // The key answered: a second post with it writes nothing.
    let again = store
        .post_tasks(&post(&poster, vec![task(100)]), Some(save))
        .await;
    assert!(key_used(again));
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (900, 100));
    assert_eq!(stored(&store, &sc).await.unwrap().body, body_of(&created));

    // A submit stores its response too; a retry after it went through (the task is now
    // completed, which alone would refuse it) is told the key is used, and pays nothing more.
    let worker = enroll(&store, &[]).await;
    let t = &created[0];
    claim_ok(&store, t.id, worker.id).await;
    let sc = scope(worker.id, "POST", &submit_path(t.id), "s1");
    let s = submission(t.id, worker.id, Decision::Accept, 90, now());
    let done = store
        .submit(&s, Some(save_submit(sc.clone())))
        .await
        .unwrap();
    assert!(matches!(done, SubmitOutcome::Done { .. }));
    let response = stored(&store, &sc).await.unwrap();
    assert_eq!((response.status, response.body), (202, s.id.to_string()));
    let paid = balances(&store, worker.id).await.available;
    assert!(paid > 0);
    let retry = submission(t.id, worker.id, Decision::Accept, 90, now());
    assert!(key_used(
        store.submit(&retry, Some(save_submit(sc.clone()))).await
    ));
    assert_eq!(balances(&store, worker.id).await.available, paid);
    assert_ledger_consistent(&store).await;
}

pub async fn failed_work_leaves_no_key(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 50).await;
    let sc = posting(poster.id, "k");
    // Refused before anything was written.
    let r = store
        .post_tasks(&post(&poster, vec![task(100)]), Some(save_post(sc.clone())))
        .await;
    assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{r:?}");
    assert_eq!(stored(&store, &sc).await, None);
    // Failed after the key was claimed and tasks were written.
    let mut orphan = task(10);
    orphan.depends_on = vec![Uuid::now_v7()];
    let r = store
        .post_tasks(
            &post(&poster, vec![task(10), orphan]),
            Some(save_post(sc.clone())),
        )
        .await;
    assert!(matches!(r, Err(StoreError::Invalid { .. })), "{r:?}");
    assert_eq!(stored(&store, &sc).await, None);
    // The key is free: once there is money, it posts.
    grant(&store, poster.id, 50).await;
    let created = store
        .post_tasks(&post(&poster, vec![task(100)]), Some(save_post(sc.clone())))
        .await
        .unwrap();
    assert_eq!(stored(&store, &sc).await.unwrap().body, body_of(&created));
    // A refused submit stores nothing.
    let stranger = enroll(&store, &[]).await;
    let sc = scope(stranger.id, "POST", &submit_path(created[0].id), "s");
    let s = submission(created[0].id, stranger.id, Decision::Accept, 90, now());
    let r = store
        .submit(&s, Some(save_submit(sc.clone())))
        .await
        .unwrap();
    assert_eq!(r, SubmitOutcome::NotAssignee);
    assert_eq!(stored(&store, &sc).await, None);
    let mine = store
        .list_tasks(&TaskQuery {
            posted_by: Some(poster.id),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 1, "nothing of the failed posts remains");
    assert_ledger_consistent(&store).await;
}

pub async fn key_is_scoped_by_agent_method_and_path(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    let other = enroll(&store, &[]).await;
    grant(&store, poster.id, 1_000).await;
    grant(&store, other.id, 1_000).await;
    let scopes = [
        (&poster, scope(poster.id, "POST", "/v1/tasks", "same")),
        (&poster, scope(poster.id, "POST", "/v1/workflows", "same")),
        (&poster, scope(poster.id, "PUT", "/v1/tasks", "same")),
        (&other, scope(other.id, "POST", "/v1/tasks", "same")),
    ];
    let mut bodies = Vec::new();
    for (who, sc) in &scopes {
        let created = store
            .post_tasks(&post(who, vec![task(100)]), Some(save_post(sc.clone())))
            .await
            .unwrap();
        bodies.push(body_of(&created));
    }
    for ((_, sc), body) in scopes.iter().zip(&bodies) {
        assert_eq!(&stored(&store, sc).await.unwrap().body, body);
    }
    assert_eq!(balances(&store, poster.id).await.escrow, 300);
    assert_eq!(balances(&store, other.id).await.escrow, 100);
}

/// Identical requests racing with one key (a client retrying while the first is in flight):
/// the work runs once, the others are told the key is used, and every one of them can then
/// read the one stored response.
pub async fn concurrent_duplicates_run_once(store: Arc<dyn Store>) {
    const RACERS: usize = 12;
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1_000).await;
    let sc = posting(poster.id, "once");
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            // Each request carries its own task id, as the server makes one per request.
            let p = post(&poster, vec![task(100)]);
            let save = save_post(sc.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.post_tasks(&p, Some(save)).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            Ok(created) => winners.push(created),
            other => assert!(key_used(other)),
        }
    }
    assert_eq!(winners.len(), 1, "the work ran once");
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (900, 100), "the money moved once");
    let readers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, sc) = (Arc::clone(&store), sc.clone());
            tokio::spawn(async move { store.idempotent_response(&sc).await })
        })
        .collect();
    for r in readers {
        let response = r.await.unwrap().unwrap().unwrap();
        assert_eq!(
            (response.status, &response.body),
            (201, &body_of(&winners[0]))
        );
    }
    assert_ledger_consistent(&store).await;
}

/// The same for a submit: the task is paid for once.
pub async fn concurrent_duplicate_submits_pay_once(store: Arc<dyn Store>) {
    const RACERS: usize = 8;
    let admin = admin(&store).await;
    let worker = enroll(&store, &[]).await;
    let t = post_one(&store, &admin, task(500)).await;
    claim_ok(&store, t.id, worker.id).await;
    let sc = scope(worker.id, "POST", &submit_path(t.id), "once");
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
            let s = submission(t.id, worker.id, Decision::Accept, 90, now());
            let save = save_submit(sc.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.submit(&s, Some(save)).await
            })
        })
        .collect();
    let mut done = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            Ok(SubmitOutcome::Done { submission, .. }) => done.push(submission),
            other => assert!(key_used(other)),
        }
    }
    assert_eq!(done.len(), 1, "the work ran once");
    assert_eq!(
        stored(&store, &sc).await.unwrap().body,
        done[0].id.to_string()
    );
    assert_eq!(
        balances(&store, worker.id).await.available,
        done[0].payout_cents.unwrap()
    );
    assert_ledger_consistent(&store).await;
}

/// An outcome the render function does not store (not a success): the work commits, the key
/// stays free.
pub async fn unrendered_outcome_saves_nothing(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1_000).await;
    let sc = posting(poster.id, "k");
    let nothing = SaveResponse {
        render: Arc::new(|_: &Vec<TaskRecord>| None),
        ..save_post(sc.clone())
    };
    for _ in 0..2 {
        store
            .post_tasks(&post(&poster, vec![task(100)]), Some(nothing.clone()))
            .await
            .unwrap();
        assert_eq!(stored(&store, &sc).await, None);
    }
    assert_eq!(balances(&store, poster.id).await.escrow, 200);
}

pub async fn old_responses_are_purged(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1_000).await;
    let (old, recent) = (posting(poster.id, "old"), posting(poster.id, "recent"));
    let aged = SaveResponse {
        created_at: now() - Duration::days(2),
        ..save_post(old.clone())
    };
    for save in [aged, save_post(recent.clone())] {
        store
            .post_tasks(&post(&poster, vec![task(100)]), Some(save))
            .await
            .unwrap();
    }
    let purged = store
        .purge_idempotent_responses(now() - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(stored(&store, &old).await, None);
    assert!(stored(&store, &recent).await.is_some());
}
