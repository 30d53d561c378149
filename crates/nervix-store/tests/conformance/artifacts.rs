//! Artifacts' metadata: a submission takes only the submitter's own unreferenced uploads for
//! its task, all or nothing, and the orphan sweep never removes a file a submission took.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::TaskStatus;
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    an_upload_round_trips,
    a_submission_takes_only_its_own_uploads,
    the_orphan_sweep_deletes_nothing_referenced,
}

fn upload(task: Uuid, by: Uuid, at: chrono::DateTime<chrono::Utc>) -> NewArtifact {
    let id = Uuid::now_v7();
    NewArtifact {
        id,
        task_id: task,
        uploaded_by: by,
        filename: Some("report.md".to_owned()),
        content_type: "text/markdown; charset=utf-8".to_owned(),
        size_bytes: 42,
        sha256: "ab".repeat(32),
        object_key: format!("tasks/{task}/{id}"),
        checks: json!([{"name": "secret_scan", "passed": true, "score": 100, "details": "none"}]),
        at,
    }
}

async fn claimed_task(store: &Arc<dyn Store>) -> (TaskRecord, AgentRecord, AgentRecord) {
    let poster = enroll(store, &[]).await;
    grant(store, poster.id, 10_000).await;
    let worker = enroll(store, &[]).await;
    let t = post_one(store, &poster, task(1000)).await;
    claim_ok(store, t.id, worker.id).await;
    (t, poster, worker)
}

async fn an_upload_round_trips(store: Arc<dyn Store>) {
    let (t, _, worker) = claimed_task(&store).await;
    let new = upload(t.id, worker.id, now());
    let stored = store.insert_artifact(&new).await.unwrap();
    assert_eq!(stored.id, new.id);
    assert_eq!(stored.submission_id, None);
    assert_eq!(stored.filename.as_deref(), Some("report.md"));
    assert_eq!(stored.checks, new.checks);
    assert_eq!(stored.created_at, new.at);
    assert_eq!(store.artifact(new.id).await.unwrap(), Some(stored));
    assert_eq!(store.artifact(Uuid::now_v7()).await.unwrap(), None);
}

async fn a_submission_takes_only_its_own_uploads(store: Arc<dyn Store>) {
    let (t, poster, worker) = claimed_task(&store).await;
    let mine = store
        .insert_artifact(&upload(t.id, worker.id, now()))
        .await
        .unwrap();
    // The poster's file for the same task is not the worker's to reference.
    let theirs = store
        .insert_artifact(&upload(t.id, poster.id, now()))
        .await
        .unwrap();

    let with_theirs = NewSubmission {
        artifacts: vec![mine.id, theirs.id],
        ..submission(t.id, worker.id, Decision::Accept, 80, now())
    };
    let err = store.submit(&with_theirs, None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid { field, .. } if field == "submission_data.artifacts"),
        "{err:?}"
    );
    // All or nothing: the refused submit linked nothing and left the task claimed.
    assert_eq!(
        store
            .artifact(mine.id)
            .await
            .unwrap()
            .unwrap()
            .submission_id,
        None
    );
    assert_eq!(
        store.task(t.id).await.unwrap().unwrap().status,
        TaskStatus::Claimed
    );

    let s = NewSubmission {
        artifacts: vec![mine.id],
        ..submission(t.id, worker.id, Decision::Accept, 80, now())
    };
    let SubmitOutcome::Done {
        submission: sub, ..
    } = store.submit(&s, None).await.unwrap()
    else {
        panic!("submit not applied")
    };
    let linked = store.submission_artifacts(sub.id).await.unwrap();
    assert_eq!(linked.iter().map(|a| a.id).collect::<Vec<_>>(), [mine.id]);
    assert_eq!(linked[0].submission_id, Some(sub.id));
    assert_eq!(
        store
            .artifact(theirs.id)
            .await
            .unwrap()
            .unwrap()
            .submission_id,
        None
    );
}

async fn the_orphan_sweep_deletes_nothing_referenced(store: Arc<dyn Store>) {
    let (t, _, worker) = claimed_task(&store).await;
    let long_ago = now() - Duration::days(2);
    let kept = store
        .insert_artifact(&upload(t.id, worker.id, long_ago))
        .await
        .unwrap();
    let orphan = store
        .insert_artifact(&upload(t.id, worker.id, long_ago))
        .await
        .unwrap();
    let fresh = store
        .insert_artifact(&upload(t.id, worker.id, now()))
        .await
        .unwrap();
    let s = NewSubmission {
        artifacts: vec![kept.id],
        ..submission(t.id, worker.id, Decision::Accept, 80, now())
    };
    assert!(matches!(
        store.submit(&s, None).await.unwrap(),
        SubmitOutcome::Done { .. }
    ));

    let cutoff = now() - Duration::days(1);
    let orphans = store.orphan_artifacts(cutoff, 100).await.unwrap();
    assert_eq!(
        orphans.iter().map(|a| a.id).collect::<Vec<_>>(),
        [orphan.id]
    );
    // The conditional delete refuses a referenced file and a fresh one even when asked.
    assert!(!store.delete_orphan_artifact(kept.id, cutoff).await.unwrap());
    assert!(!store
        .delete_orphan_artifact(fresh.id, cutoff)
        .await
        .unwrap());
    assert!(store
        .delete_orphan_artifact(orphan.id, cutoff)
        .await
        .unwrap());
    assert!(!store
        .delete_orphan_artifact(orphan.id, cutoff)
        .await
        .unwrap());
    assert!(store.artifact(kept.id).await.unwrap().is_some());
    assert!(store.artifact(fresh.id).await.unwrap().is_some());
    assert_eq!(store.artifact(orphan.id).await.unwrap(), None);
    assert!(store
        .orphan_artifacts(cutoff, 100)
        .await
        .unwrap()
        .is_empty());
}
