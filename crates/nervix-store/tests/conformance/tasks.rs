//! Posting tasks and workflows, dependencies, notification rounds.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::{Complexity, TaskKind, TaskStatus};
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    post_from_treasury_and_from_agent,
    post_is_all_or_nothing,
    concurrent_posts_all_or_nothing [multi],
    depends_on_must_be_completable,
    dependent_posted_during_upstream_completion [multi],
    workflow_diamond,
    notify_rounds,
}

pub async fn post_from_treasury_and_from_agent(store: Arc<dyn Store>) {
    let admin = admin(&store).await;

    // From the treasury: the treasury goes below zero, the platform escrow holds the reward.
    let mut t = task(2500);
    t.capabilities = vec!["rust".to_owned()];
    t.min_reputation = 1000;
    t.complexity = Complexity::Medium;
    t.kind = TaskKind::Json;
    t.output_schema = Some(json!({"type": "object"}));
    t.language = Some("rust".to_owned());
    t.min_words = None;
    t.max_attempts = 2;
    let spec = t.clone();
    let p = post(&admin, vec![t]);
    let created = store.post_tasks(&p, None).await.unwrap();
    assert_eq!(created.len(), 1);
    let rec = &created[0];
    assert_eq!(rec.id, spec.id);
    assert_eq!(rec.title, spec.title);
    assert_eq!(rec.description, spec.description);
    assert_eq!(rec.capabilities, spec.capabilities);
    assert_eq!(rec.min_reputation, 1000);
    assert_eq!(rec.reward_cents, 2500);
    assert_eq!(rec.complexity, Complexity::Medium);
    assert_eq!(rec.kind, TaskKind::Json);
    assert_eq!(rec.output_schema, spec.output_schema);
    assert_eq!(rec.language.as_deref(), Some("rust"));
    assert_eq!(rec.min_words, None);
    assert_eq!(rec.deadline, spec.deadline);
    assert_eq!(rec.status, TaskStatus::Available);
    assert_eq!(rec.workflow_id, None);
    assert_eq!(rec.posted_by, admin.id);
    assert!(rec.funded_by_treasury);
    assert_eq!(rec.funder(), PLATFORM);
    assert_eq!(rec.assigned_agent_id, None);
    assert_eq!((rec.attempts, rec.max_attempts), (0, 2));
    assert_eq!((rec.lease_expires_at, rec.retry_at), (None, None));
    assert_eq!((rec.notify_round, rec.notified_at), (0, None));
    assert!(!rec.settled);
    assert_eq!(rec.created_at, p.at);
    assert_eq!(store.task(rec.id).await.unwrap().as_ref(), Some(rec));
    assert_eq!(store.task(Uuid::now_v7()).await.unwrap(), None);
    let platform = balances(&store, PLATFORM).await;
    assert_eq!((platform.available, platform.escrow), (-2500, 2500));
    assert_escrow_held(&store, rec).await;
    assert_eq!(
        store
            .list_audit(&AuditQuery {
                action: Some("task.posted".to_owned()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );

    // From an agent with no money: nothing happens.
    let poster = enroll(&store, &[]).await;
    let r = store
        .post_tasks(&post(&poster, vec![task(300)]), None)
        .await;
    assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{r:?}");
    assert!(store
        .list_tasks(&TaskQuery {
            posted_by: Some(poster.id),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap()
        .is_empty());
    assert_eq!(balances(&store, poster.id).await, Balances::default());

    // After a grant it works: available down, escrow up.
    grant(&store, poster.id, 1000).await;
    assert_eq!(balances(&store, poster.id).await.available, 1000);
    assert_eq!(balances(&store, PLATFORM).await.available, -3500);
    let own = post_one(&store, &poster, task(300)).await;
    assert!(!own.funded_by_treasury);
    assert_eq!(own.funder(), poster.id);
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (700, 300));
    assert_escrow_held(&store, &own).await;
    // Exactly what is left can be spent; one cent more cannot.
    let r = store
        .post_tasks(&post(&poster, vec![task(701)]), None)
        .await;
    assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{r:?}");
    post_one(&store, &poster, task(700)).await;
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (0, 1000));

    let listed = store
        .list_tasks(&TaskQuery {
            posted_by: Some(poster.id),
            limit: 10,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        store
            .tasks_by_ids(&[own.id, rec.id, Uuid::now_v7()])
            .await
            .unwrap()
            .len(),
        2
    );
    let stats = store.stats(now()).await.unwrap();
    assert_eq!(
        (stats.tasks_total, stats.tasks_open, stats.tasks_completed),
        (3, 3, 0)
    );
    assert_ledger_consistent(&store).await;

    // A text task keeps its min_words.
    let mut prose = task(100);
    prose.min_words = Some(350);
    let rec = &store
        .post_tasks(&post(&admin, vec![prose]), None)
        .await
        .unwrap()[0];
    assert_eq!(rec.min_words, Some(350));
    assert_eq!(
        store.task(rec.id).await.unwrap().unwrap().min_words,
        Some(350)
    );
}

pub async fn post_is_all_or_nothing(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1000).await;
    // Three tasks, 1200 in all: the third cannot be paid, so none is created.
    let tasks = vec![task(400), task(400), task(400)];
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let r = store.post_tasks(&post(&poster, tasks), None).await;
    assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{r:?}");
    assert!(store.tasks_by_ids(&ids).await.unwrap().is_empty());
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (1000, 0));

    // A workflow that cannot be paid leaves no workflow behind.
    let wf = NewWorkflow {
        id: Uuid::now_v7(),
        name: "too big".to_owned(),
    };
    let a = task(600);
    let mut b2 = task(600);
    b2.depends_on = vec![a.id];
    let mut p = post(&poster, vec![a, b2]);
    p.workflow = Some(wf.clone());
    let r = store.post_tasks(&p, None).await;
    assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{r:?}");
    assert_eq!(store.workflow(wf.id).await.unwrap(), None);
    assert_ledger_consistent(&store).await;
}

pub async fn depends_on_must_be_completable(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let worker = enroll(&store, &[]).await;

    let mut orphan = task(100);
    orphan.depends_on = vec![Uuid::now_v7()];
    let r = store
        .post_tasks(&post(&admin, vec![task(100), orphan.clone()]), None)
        .await;
    assert!(
        matches!(&r, Err(StoreError::Invalid { field, .. }) if field == "depends_on"),
        "{r:?}"
    );
    assert!(store.task(orphan.id).await.unwrap().is_none());
    assert_eq!(
        balances(&store, PLATFORM).await,
        Balances::default(),
        "nothing escrowed"
    );

    // Upstream already completed: the new task starts available.
    let done = post_one(&store, &admin, task(100)).await;
    complete(&store, done.id, worker.id, 100).await;
    let mut after_done = task(100);
    after_done.depends_on = vec![done.id];
    let t = post_one(&store, &admin, after_done).await;
    assert_eq!(t.status, TaskStatus::Available);

    // Upstream still open: blocked, and unblocked once it completes.
    let open = post_one(&store, &admin, task(100)).await;
    let mut after_open = task(100);
    after_open.depends_on = vec![open.id];
    let waiting = post_one(&store, &admin, after_open).await;
    assert_eq!(waiting.status, TaskStatus::Blocked);
    assert_eq!(task_of(&store, open.id).await.dependents, 1);
    assert_eq!(
        store.task_dependencies(waiting.id).await.unwrap(),
        vec![open.id]
    );
    let (_, _, unblocked) = complete(&store, open.id, worker.id, 100).await;
    assert_eq!(ids(&unblocked), vec![waiting.id]);
    assert_eq!(
        task_of(&store, waiting.id).await.status,
        TaskStatus::Available
    );

    // Upstream cancelled: can never complete.
    let gone = post_one(&store, &admin, task(100)).await;
    store
        .cancel_task(gone.id, now(), &audit("task.cancelled"))
        .await
        .unwrap();
    let mut after_gone = task(100);
    after_gone.depends_on = vec![gone.id];
    let r = store
        .post_tasks(&post(&admin, vec![after_gone]), None)
        .await;
    assert!(
        matches!(&r, Err(StoreError::Invalid { field, .. }) if field == "depends_on"),
        "{r:?}"
    );
    assert_ledger_consistent(&store).await;
}

pub async fn workflow_diamond(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let w1 = enroll(&store, &[]).await;
    let w2 = enroll(&store, &[]).await;

    // a → (b, c) → d
    let wf = NewWorkflow {
        id: Uuid::now_v7(),
        name: "diamond".to_owned(),
    };
    let keyed = |key: &str, reward: i64, deps: Vec<Uuid>| NewTask {
        workflow_key: Some(key.to_owned()),
        depends_on: deps,
        ..task(reward)
    };
    let a = keyed("a", 100, vec![]);
    let b = keyed("b", 200, vec![a.id]);
    let c = keyed("c", 300, vec![a.id]);
    let d = keyed("d", 400, vec![b.id, c.id]);
    let (a_id, b_id, c_id, d_id) = (a.id, b.id, c.id, d.id);
    let mut p = post(&poster, vec![a, b, c, d]);
    p.workflow = Some(wf.clone());
    let created = store.post_tasks(&p, None).await.unwrap();
    let status: Vec<_> = created
        .iter()
        .map(|t| (t.workflow_key.clone().unwrap(), t.status))
        .collect();
    assert_eq!(
        status,
        vec![
            ("a".to_owned(), TaskStatus::Available),
            ("b".to_owned(), TaskStatus::Blocked),
            ("c".to_owned(), TaskStatus::Blocked),
            ("d".to_owned(), TaskStatus::Blocked),
        ]
    );
    assert!(created.iter().all(|t| t.workflow_id == Some(wf.id)));
    let dependents: Vec<i64> = created.iter().map(|t| t.dependents).collect();
    assert_eq!(
        dependents,
        vec![2, 1, 1, 0],
        "dependents counted within the post"
    );
    let record = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(
        (record.name.as_str(), record.status, record.posted_by),
        ("diamond", WorkflowStatus::Active, poster.id)
    );
    assert_eq!(
        ids(&store.workflow_tasks(wf.id).await.unwrap()),
        sorted(vec![a_id, b_id, c_id, d_id])
    );
    assert_eq!(
        store.task_dependencies(d_id).await.unwrap(),
        sorted(vec![b_id, c_id])
    );
    assert_eq!(
        task_of(&store, d_id).await.depends_on,
        sorted(vec![b_id, c_id])
    );
    assert_eq!(
        store.task_dependencies(a_id).await.unwrap(),
        Vec::<Uuid>::new()
    );
    assert_eq!(balances(&store, poster.id).await.escrow, 1000);

    // Blocked tasks cannot be claimed.
    assert_eq!(
        claim(&store, d_id, w1.id).await,
        ClaimOutcome::NotAvailable(TaskStatus::Blocked)
    );

    // a done: both branches open at once, and two agents hold them in parallel.
    let (_, _, unblocked) = complete(&store, a_id, w1.id, 100).await;
    assert_eq!(ids(&unblocked), sorted(vec![b_id, c_id]));
    assert!(unblocked.iter().all(|t| t.status == TaskStatus::Available));
    assert_eq!(task_of(&store, d_id).await.status, TaskStatus::Blocked);
    claim_ok(&store, b_id, w1.id).await;
    claim_ok(&store, c_id, w2.id).await;
    assert_eq!(task_of(&store, b_id).await.status, TaskStatus::Claimed);
    assert_eq!(task_of(&store, c_id).await.status, TaskStatus::Claimed);

    // b done: d still waits for c.
    let (_, _, unblocked, _) = submit_done(&store, b_id, w1.id, Decision::Accept, 100).await;
    assert!(unblocked.is_empty());
    assert_eq!(task_of(&store, d_id).await.status, TaskStatus::Blocked);
    assert_eq!(
        store.workflow(wf.id).await.unwrap().unwrap().status,
        WorkflowStatus::Active
    );

    // c done: d opens.
    let (_, _, unblocked, _) = submit_done(&store, c_id, w2.id, Decision::Accept, 100).await;
    assert_eq!(ids(&unblocked), vec![d_id]);
    assert_eq!(task_of(&store, d_id).await.status, TaskStatus::Available);

    // d done: the workflow completes.
    let (_, _, unblocked) = complete(&store, d_id, w2.id, 100).await;
    assert!(unblocked.is_empty());
    let done = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert!(store
        .workflow_tasks(wf.id)
        .await
        .unwrap()
        .iter()
        .all(|t| t.status == TaskStatus::Completed && t.settled));
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (9000, 0));
    assert_eq!(balances(&store, w1.id).await.available, 300);
    assert_eq!(balances(&store, w2.id).await.available, 700);
    let stats = store.stats(now()).await.unwrap();
    assert_eq!(
        (stats.workflows, stats.tasks_completed, stats.paid_out_cents),
        (1, 4, 1000)
    );
    assert_ledger_consistent(&store).await;
}

pub async fn notify_rounds(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let worker = enroll(&store, &[]).await;
    let t0 = now();
    let fresh = post_one(&store, &admin, task(100)).await;
    let mut blocked = task(100);
    blocked.depends_on = vec![fresh.id];
    let blocked = post_one(&store, &admin, blocked).await;

    let due = |at: chrono::DateTime<chrono::Utc>, window_start: chrono::DateTime<chrono::Utc>| {
        let store = Arc::clone(&store);
        async move { ids(&store.tasks_to_notify(at, window_start, 100).await.unwrap()) }
    };
    // Never notified: due; blocked tasks are not.
    assert_eq!(due(t0, t0).await, vec![fresh.id]);

    // A post whose node announces round 0 itself is stored in round 1 and not due until the
    // window has passed; its blocked siblings still start at round 0.
    let mut announced = post(&admin, vec![task(100)]);
    announced.notifies_first_round = true;
    let announced = store.post_tasks(&announced, None).await.unwrap().remove(0);
    assert_eq!(announced.notify_round, 1);
    assert!(announced.notified_at.is_some());
    assert!(!store.mark_notified(announced.id, 0, t0).await.unwrap());
    assert!(!due(now(), t0 - Duration::seconds(1))
        .await
        .contains(&announced.id));
    store
        .cancel_task(announced.id, now(), &audit("task.cancel"))
        .await
        .unwrap();

    assert!(store.mark_notified(fresh.id, 0, t0).await.unwrap());
    assert!(
        !store.mark_notified(fresh.id, 0, t0).await.unwrap(),
        "round 0 is over"
    );
    let after = task_of(&store, fresh.id).await;
    assert_eq!((after.notify_round, after.notified_at), (1, Some(t0)));
    assert!(
        !store.mark_notified(fresh.id, 5, t0).await.unwrap(),
        "not round 5 yet"
    );
    assert!(!store.mark_notified(Uuid::now_v7(), 0, t0).await.unwrap());

    // Notified at t0: not due again within the window, due once the window starts after it.
    assert!(due(t0, t0).await.is_empty());
    assert_eq!(
        due(t0 + Duration::minutes(1), t0 + Duration::seconds(1)).await,
        vec![fresh.id]
    );
    assert!(store
        .mark_notified(fresh.id, 1, t0 + Duration::minutes(1))
        .await
        .unwrap());
    assert_eq!(task_of(&store, fresh.id).await.notify_round, 2);

    // Claimed tasks are not due; a rejected one is due again only after its back-off.
    claim_ok(&store, fresh.id, worker.id).await;
    let far = t0 + Duration::days(1);
    assert!(due(far, far).await.is_empty());
    let s = submission(
        fresh.id,
        worker.id,
        Decision::Reject,
        10,
        t0 + Duration::minutes(2),
    );
    store.submit(&s, None).await.unwrap();
    let retried = task_of(&store, fresh.id).await;
    assert_eq!(
        retried.notify_round, 0,
        "a task back in the pool starts over"
    );
    let retry_at = retried.retry_at.unwrap();
    assert!(due(retry_at - Duration::seconds(1), far).await.is_empty());
    assert_eq!(due(retry_at, far).await, vec![fresh.id]);
    assert_eq!(
        task_of(&store, blocked.id).await.status,
        TaskStatus::Blocked
    );
}

/// Concurrent posts by an agent who can fund only some of them: each post is all or
/// nothing on its own, whatever else commits alongside it (SQLite commit groups).
pub async fn concurrent_posts_all_or_nothing(store: Arc<dyn Store>) {
    const POSTS: usize = 40;
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1_000).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(POSTS));
    let handles: Vec<_> = (0..POSTS)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let p = post(&poster, vec![task(100)]);
            tokio::spawn(async move {
                barrier.wait().await;
                store.post_tasks(&p, None).await
            })
        })
        .collect();
    let (mut posted, mut refused) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(tasks) => posted += tasks.len(),
            Err(StoreError::InsufficientFunds) => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((posted, refused), (10, POSTS - 10));
    let mine = store
        .list_tasks(&TaskQuery {
            posted_by: Some(poster.id),
            limit: 1_000,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(mine.len(), 10, "no task of a refused post remains");
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (0, 1_000));
    assert_ledger_consistent(&store).await;
}

/// A dependent posted while its upstream is being completed never stays blocked: either the
/// post sees the completion (and starts available) or the completion sees the dependent (and
/// unblocks it). Raced for real, many rounds; also checks the dependents count.
pub async fn dependent_posted_during_upstream_completion(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let worker = enroll(&store, &[]).await;
    for round in 0..40 {
        let upstream = post_one(&store, &admin, task(100)).await;
        claim_ok(&store, upstream.id, worker.id).await;
        let mut dependent = task(100);
        dependent.depends_on = vec![upstream.id];
        let dependent_id = dependent.id;
        let (posting, completing) = {
            let (s1, s2) = (store.clone(), store.clone());
            let p = post(&admin, vec![dependent]);
            tokio::join!(
                tokio::spawn(async move { s1.post_tasks(&p, None).await }),
                tokio::spawn(async move {
                    s2.submit(
                        &submission(upstream.id, worker.id, Decision::Accept, 100, now()),
                        None,
                    )
                    .await
                })
            )
        };
        let posted = posting.expect("post task").expect("post");
        let completed = completing.expect("submit task").expect("submit");
        assert!(
            matches!(completed, SubmitOutcome::Done { .. }),
            "{completed:?}"
        );
        assert_eq!(posted.len(), 1);
        assert_eq!(
            task_of(&store, dependent_id).await.status,
            TaskStatus::Available,
            "round {round}: the dependent is stuck"
        );
        assert_eq!(task_of(&store, upstream.id).await.dependents, 1);
    }
    assert_ledger_consistent(&store).await;
}
