//! The reapers: expired leases go back to the queue (or fail), expired deadlines refund and
//! cascade.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::TaskStatus;
use nervix_store::*;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    expire_leases_retry_or_fail,
    expire_deadlines_refund_and_cascade,
}

pub async fn expire_leases_retry_or_fail(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;
    lift_level_cap(&store, worker.id).await;
    let retry = RetryPolicy {
        base_seconds: 10,
        max_seconds: 60,
    };

    let t0 = now();
    let lease = |task_id: Uuid| ClaimRequest {
        lease_seconds: 60,
        ..claim_req(task_id, worker.id, t0)
    };
    let twice = post_one(
        &store,
        &poster,
        NewTask {
            max_attempts: 2,
            ..task(100)
        },
    )
    .await;
    let once = post_one(
        &store,
        &poster,
        NewTask {
            max_attempts: 1,
            ..task(200)
        },
    )
    .await;
    let dep = post_one(
        &store,
        &poster,
        NewTask {
            depends_on: vec![once.id],
            ..task(300)
        },
    )
    .await;
    let long = post_one(&store, &poster, task(400)).await;
    for id in [twice.id, once.id] {
        assert!(matches!(
            store.claim_task(&lease(id)).await.unwrap(),
            ClaimOutcome::Claimed(_)
        ));
    }
    assert!(matches!(
        store
            .claim_task(&ClaimRequest {
                lease_seconds: 3000,
                ..lease(long.id)
            })
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));

    // Before the leases end nothing happens.
    assert!(store
        .expire_leases(t0 + Duration::seconds(30), &retry, 100)
        .await
        .unwrap()
        .changed
        .is_empty());

    let later = t0 + Duration::seconds(120);
    let reaped = store.expire_leases(later, &retry, 100).await.unwrap();
    assert_eq!(
        ids(&reaped.changed),
        sorted(vec![twice.id, once.id, dep.id])
    );
    // The reaped records no longer name the agent (back in the pool); the pass does.
    let mut lost = reaped.lost.clone();
    lost.sort();
    assert_eq!(lost, {
        let mut want = vec![(twice.id, worker.id), (once.id, worker.id)];
        want.sort();
        want
    });

    // Attempts left: back to the pool, attempt counted, back-off.
    let back = task_of(&store, twice.id).await;
    assert_eq!(back.status, TaskStatus::Available);
    assert_eq!(back.attempts, 1);
    assert_eq!(back.assigned_agent_id, None);
    assert_eq!(back.lease_expires_at, None);
    assert_eq!(
        back.retry_at,
        Some(later + Duration::seconds(retry.delay_seconds(1)))
    );
    assert_escrow_held(&store, &back).await;

    // Out of attempts: failed, refunded, dependents cancelled.
    let failed = task_of(&store, once.id).await;
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.attempts, 1);
    assert_settled_once(&store, &failed).await;
    let dep = task_of(&store, dep.id).await;
    assert_eq!(dep.status, TaskStatus::Cancelled);
    assert_settled_once(&store, &dep).await;

    // The long lease is untouched.
    assert_eq!(task_of(&store, long.id).await.status, TaskStatus::Claimed);
    assert_eq!(
        store.active_task_counts().await.unwrap(),
        vec![(worker.id, 1)]
    );
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (10_000 - 500, 500));

    // The worker that lost the lease may not claim it again; another one's lease of `twice`
    // runs out too: now it fails.
    assert_eq!(
        store
            .claim_task(&claim_req(twice.id, worker.id, back.retry_at.unwrap()))
            .await
            .unwrap(),
        ClaimOutcome::Excluded(ExclusionReason::LeaseLost)
    );
    let second = enroll(&store, &[]).await;
    assert!(matches!(
        store
            .claim_task(&claim_req(twice.id, second.id, back.retry_at.unwrap()))
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    let reaped = store
        .expire_leases(later + Duration::hours(1), &retry, 100)
        .await
        .unwrap();
    assert_eq!(ids(&reaped.changed), sorted(vec![twice.id, long.id]));
    let mut lost = reaped.lost.clone();
    lost.sort();
    let mut want = vec![(twice.id, second.id), (long.id, worker.id)];
    want.sort();
    assert_eq!(lost, want);
    assert_eq!(task_of(&store, twice.id).await.status, TaskStatus::Failed);
    assert_eq!(task_of(&store, long.id).await.status, TaskStatus::Available);
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (10_000 - 400, 400));
    assert!(store
        .expire_leases(later + Duration::hours(2), &retry, 100)
        .await
        .unwrap()
        .changed
        .is_empty());
    assert_ledger_consistent(&store).await;
}

pub async fn expire_deadlines_refund_and_cascade(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;
    let t0 = now();

    let soon = post_one(
        &store,
        &poster,
        NewTask {
            deadline: t0 + Duration::minutes(10),
            ..task(100)
        },
    )
    .await;
    let claimed = post_one(
        &store,
        &poster,
        NewTask {
            deadline: t0 + Duration::minutes(20),
            ..task(200)
        },
    )
    .await;
    let dep = post_one(
        &store,
        &poster,
        NewTask {
            depends_on: vec![soon.id],
            deadline: t0 + Duration::days(2),
            ..task(300)
        },
    )
    .await;
    let late = post_one(
        &store,
        &poster,
        NewTask {
            deadline: t0 + Duration::days(1),
            ..task(400)
        },
    )
    .await;
    claim_ok(&store, claimed.id, worker.id).await;

    assert!(store.expire_deadlines(t0, 100).await.unwrap().is_empty());
    let changed = store
        .expire_deadlines(t0 + Duration::hours(1), 100)
        .await
        .unwrap();
    assert_eq!(ids(&changed), sorted(vec![soon.id, claimed.id, dep.id]));
    for t in &changed {
        let expected = if t.id == dep.id {
            TaskStatus::Cancelled
        } else {
            TaskStatus::Expired
        };
        assert_eq!(t.status, expected, "{}", t.id);
        assert_eq!(task_of(&store, t.id).await.status, expected);
        assert_settled_once(&store, t).await;
    }
    assert!(
        store.active_task_counts().await.unwrap().is_empty(),
        "the assignee lost the expired task"
    );
    assert_eq!(
        submit(&store, claimed.id, worker.id, Decision::Accept, 100).await,
        SubmitOutcome::NotAssignee
    );
    assert_eq!(task_of(&store, late.id).await.status, TaskStatus::Available);
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (10_000 - 400, 400));

    // Running again changes nothing; a later run takes the rest.
    assert!(store
        .expire_deadlines(t0 + Duration::hours(1), 100)
        .await
        .unwrap()
        .is_empty());
    let changed = store
        .expire_deadlines(t0 + Duration::days(3), 100)
        .await
        .unwrap();
    assert_eq!(ids(&changed), vec![late.id]);
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (10_000, 0));
    // Finished tasks are left alone.
    let done = post_one(
        &store,
        &poster,
        NewTask {
            deadline: t0 + Duration::minutes(5),
            ..task(100)
        },
    )
    .await;
    complete(&store, done.id, worker.id, 100).await;
    assert!(store
        .expire_deadlines(t0 + Duration::days(4), 100)
        .await
        .unwrap()
        .is_empty());
    assert_ledger_consistent(&store).await;
}
