//! Giving work back: release by the assignee, cancellation of tasks and workflows.

use std::sync::Arc;

use nervix_core::TaskStatus;
use nervix_store::*;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    release_task_only_assignee,
    cancel_task_refunds,
    cancel_workflow_cascades,
}

pub async fn release_task_only_assignee(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let w1 = enroll(&store, &[]).await;
    let w2 = enroll(&store, &[]).await;
    let t = post_one(&store, &admin, task(100)).await;

    let r = store.release_task(t.id, w1.id, now()).await;
    assert!(
        is_conflict(&r, Conflict::InvalidState),
        "not claimed: {r:?}"
    );
    claim_ok(&store, t.id, w1.id).await;
    let r = store.release_task(t.id, w2.id, now()).await;
    assert!(
        is_conflict(&r, Conflict::InvalidState),
        "not the assignee: {r:?}"
    );
    assert_eq!(task_of(&store, t.id).await.assigned_agent_id, Some(w1.id));

    let released = store.release_task(t.id, w1.id, now()).await.unwrap();
    assert_eq!(released.status, TaskStatus::Available);
    assert_eq!(released.assigned_agent_id, None);
    assert_eq!(released.lease_expires_at, None);
    assert_eq!(released.attempts, 0, "a release is not a failed attempt");
    assert_eq!(released.retry_at, None);
    assert_eq!(task_of(&store, t.id).await, released);
    assert_escrow_held(&store, &released).await;
    // Anyone may take it at once.
    claim_ok(&store, t.id, w2.id).await;
    assert!(store.active_task_counts().await.unwrap() == vec![(w2.id, 1)]);
    assert_ledger_consistent(&store).await;
}

pub async fn cancel_task_refunds(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1000).await;
    let worker = enroll(&store, &[]).await;

    // An open task.
    let t = post_one(&store, &poster, task(300)).await;
    let mut dep = task(200);
    dep.depends_on = vec![t.id];
    let dep = post_one(&store, &poster, dep).await;
    assert_eq!(balances(&store, poster.id).await.available, 500);
    let at = now();
    let (cancelled, cascaded) = store
        .cancel_task(
            t.id,
            at,
            &AuditEntry {
                target: Some(t.id.to_string()),
                ..audit("task.cancelled")
            },
        )
        .await
        .unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert!(cancelled.settled);
    assert_eq!(cancelled.updated_at, at);
    assert_eq!(
        task_of(&store, dep.id).await.status,
        TaskStatus::Cancelled,
        "dependents go too"
    );
    // The cascade is reported, so its changes can be announced.
    assert_eq!(cascaded, vec![task_of(&store, dep.id).await]);
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (1000, 0));
    assert_settled_once(&store, &cancelled).await;
    assert_settled_once(&store, &task_of(&store, dep.id).await).await;
    let audited = store
        .list_audit(&AuditQuery {
            action: Some("task.cancelled".to_owned()),
            target: Some(t.id.to_string()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), 1);

    // Twice: invalid; unknown: not found.
    let r = store
        .cancel_task(t.id, now(), &audit("task.cancelled"))
        .await;
    assert!(is_conflict(&r, Conflict::InvalidState), "{r:?}");
    let r = store
        .cancel_task(Uuid::now_v7(), now(), &audit("task.cancelled"))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");

    // A claimed task can be cancelled; its assignee is freed.
    let claimed = post_one(&store, &poster, task(400)).await;
    claim_ok(&store, claimed.id, worker.id).await;
    store
        .cancel_task(claimed.id, now(), &audit("task.cancelled"))
        .await
        .unwrap();
    assert!(store.active_task_counts().await.unwrap().is_empty());
    assert_eq!(
        submit(&store, claimed.id, worker.id, Decision::Accept, 100).await,
        SubmitOutcome::NotAssignee
    );
    assert_eq!(balances(&store, poster.id).await.available, 1000);

    // A completed task cannot be cancelled, and nothing moves.
    let done = post_one(&store, &poster, task(500)).await;
    complete(&store, done.id, worker.id, 100).await;
    let r = store
        .cancel_task(done.id, now(), &audit("task.cancelled"))
        .await;
    assert!(is_conflict(&r, Conflict::InvalidState), "{r:?}");
    assert_eq!(task_of(&store, done.id).await.status, TaskStatus::Completed);
    assert_settled_once(&store, &task_of(&store, done.id).await).await;
    assert_eq!(balances(&store, poster.id).await.available, 500);
    assert_eq!(balances(&store, worker.id).await.available, 500);
    assert_ledger_consistent(&store).await;
}

pub async fn cancel_workflow_cascades(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;

    let wf = NewWorkflow {
        id: Uuid::now_v7(),
        name: "to cancel".to_owned(),
    };
    let a = task(100);
    let b = NewTask {
        depends_on: vec![a.id],
        ..task(200)
    };
    let c = NewTask {
        depends_on: vec![a.id],
        ..task(300)
    };
    let d = NewTask {
        depends_on: vec![b.id, c.id],
        ..task(400)
    };
    let (a_id, b_id, c_id, d_id) = (a.id, b.id, c.id, d.id);
    let mut p = post(&poster, vec![a, b, c, d]);
    p.workflow = Some(wf.clone());
    store.post_tasks(&p, None).await.unwrap();

    // A standalone task posted on top of the workflow's last task.
    let outside = post_one(
        &store,
        &poster,
        NewTask {
            depends_on: vec![d_id],
            ..task(500)
        },
    )
    .await;
    assert_eq!(outside.status, TaskStatus::Blocked);

    // a done (paid), b claimed, c available, d blocked.
    complete(&store, a_id, worker.id, 100).await;
    claim_ok(&store, b_id, worker.id).await;
    let at = now();
    let (cancelled, changed) = store
        .cancel_workflow(wf.id, at, &audit("workflow.cancelled"))
        .await
        .unwrap();
    // Every task whose status changed, inside the workflow and downstream of it, and no other.
    let mut changed_ids: Vec<_> = changed.iter().map(|t| t.id).collect();
    changed_ids.sort();
    let mut expected = vec![b_id, c_id, d_id, outside.id];
    expected.sort();
    assert_eq!(changed_ids, expected);
    assert!(changed.iter().all(|t| t.status == TaskStatus::Cancelled));
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    assert_eq!(cancelled.updated_at, at);
    assert_eq!(
        store.workflow(wf.id).await.unwrap().as_ref(),
        Some(&cancelled)
    );
    let statuses: Vec<_> = store
        .tasks_by_ids(&[a_id, b_id, c_id, d_id])
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.id, t.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (a_id, TaskStatus::Completed),
            (b_id, TaskStatus::Cancelled),
            (c_id, TaskStatus::Cancelled),
            (d_id, TaskStatus::Cancelled),
        ]
    );
    for id in [a_id, b_id, c_id, d_id] {
        assert_settled_once(&store, &task_of(&store, id).await).await;
    }
    // The dependent outside the workflow could never run: cancelled and refunded too.
    let outside = task_of(&store, outside.id).await;
    assert_eq!(outside.status, TaskStatus::Cancelled);
    assert_settled_once(&store, &outside).await;
    let b = balances(&store, poster.id).await;
    assert_eq!((b.available, b.escrow), (10_000 - 100, 0));
    assert_eq!(balances(&store, worker.id).await.available, 100);
    assert!(store.active_task_counts().await.unwrap().is_empty());
    assert_eq!(
        store
            .list_audit(&AuditQuery {
                action: Some("workflow.cancelled".to_owned()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .len(),
        1
    );

    let r = store
        .cancel_workflow(wf.id, now(), &audit("workflow.cancelled"))
        .await;
    assert!(is_conflict(&r, Conflict::InvalidState), "{r:?}");
    let r = store
        .cancel_workflow(Uuid::now_v7(), now(), &audit("workflow.cancelled"))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");
    assert_ledger_consistent(&store).await;
}
