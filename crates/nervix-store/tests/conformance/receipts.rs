//! Interoperability (migration 0014): tasks reserved for one agent, and signed receipts.

use std::sync::Arc;

use nervix_core::Complexity;
use nervix_store::*;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    reserved_tasks_are_for_their_agent_only,
    receipts_are_stored_once_and_paged,
    keys_that_signed_receipts_are_kept,
    accepted_work_makes_its_receipt_due_until_issued,
}

pub async fn reserved_tasks_are_for_their_agent_only(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1000).await;
    let chosen = enroll(&store, &["writing"]).await;
    let other = enroll(&store, &["writing"]).await;
    let mut p = post(&poster, vec![task(100)]);
    p.reserved_for = Some(chosen.id);
    let t = store.post_tasks(&p, None).await.unwrap().remove(0);
    assert_eq!(t.reserved_for, Some(chosen.id));
    assert_eq!(task_of(&store, t.id).await.reserved_for, Some(chosen.id));

    let eligible = |agent: Uuid| {
        let store = store.clone();
        async move {
            store
                .list_tasks(&TaskQuery {
                    status: None,
                    capability: None,
                    complexity: None,
                    posted_by: None,
                    assigned_to: None,
                    eligible_for: Some(EligibilityFilter {
                        agent_id: agent,
                        reputation: 5000,
                        complexities: vec![Complexity::Simple],
                        now: now(),
                    }),
                    before: None,
                    limit: 10,
                })
                .await
                .unwrap()
                .iter()
                .any(|x| x.id == t.id)
        }
    };
    assert!(!eligible(other.id).await);
    assert!(eligible(chosen.id).await);
    assert_eq!(claim(&store, t.id, other.id).await, ClaimOutcome::Reserved);
    let claimed = claim_ok(&store, t.id, chosen.id).await;
    assert_eq!(claimed.assigned_agent_id, Some(chosen.id));

    // The claim statement itself refuses another agent, whatever a snapshot said.
    let mut p = post(&poster, vec![task(100)]);
    p.reserved_for = Some(chosen.id);
    let open = post_one(&store, &poster, task(100)).await;
    assert_eq!(open.reserved_for, None);
    let reserved = store.post_tasks(&p, None).await.unwrap().remove(0);
    assert_eq!(
        claim(&store, reserved.id, other.id).await,
        ClaimOutcome::Reserved
    );
    claim_ok(&store, open.id, other.id).await;
}

pub async fn receipts_are_stored_once_and_paged(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1000).await;
    let worker = enroll(&store, &[]).await;
    assert_eq!(
        store.receipt_summary(worker.id).await.unwrap(),
        ReceiptSummary {
            count: 0,
            latest: None
        }
    );
    let mut issued = Vec::new();
    for kid in ["k1", "k2"] {
        let t = post_one(&store, &poster, task(100)).await;
        let (s, t, _) = complete(&store, t.id, worker.id, 90).await;
        assert_eq!(
            store.accepted_submission(t.id).await.unwrap().map(|a| a.id),
            Some(s.id)
        );
        let r = NewReceipt {
            id: Uuid::now_v7(),
            submission_id: s.id,
            task_id: t.id,
            agent_id: worker.id,
            kid: kid.to_owned(),
            jws: format!("jws-{kid}"),
            created_at: now(),
        };
        store
            .insert_receipts(std::slice::from_ref(&r))
            .await
            .unwrap();
        assert_eq!(store.receipt_for_task(t.id).await.unwrap(), Some(r.clone()));
        // A second issue for the same submission keeps the first.
        let again = NewReceipt {
            id: Uuid::now_v7(),
            jws: "another".to_owned(),
            ..r.clone()
        };
        store.insert_receipts(&[again]).await.unwrap();
        assert_eq!(store.receipt_for_task(t.id).await.unwrap(), Some(r.clone()));
        issued.push(r);
    }
    let page = store
        .receipts_of(
            worker.id,
            &PageQuery {
                cursor: None,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(page, vec![issued[1].clone()]);
    let page = store
        .receipts_of(
            worker.id,
            &PageQuery {
                cursor: Some(issued[1].id),
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(page, vec![issued[0].clone()]);
    let summary = store.receipt_summary(worker.id).await.unwrap();
    assert_eq!(summary.count, 2);
    assert!(summary.latest.is_some());
    assert_eq!(store.receipt_kids().await.unwrap(), ["k1", "k2"]);
    assert!(store
        .receipts_of(
            poster.id,
            &PageQuery {
                cursor: None,
                limit: 5
            }
        )
        .await
        .unwrap()
        .is_empty());
    let open = post_one(&store, &poster, task(100)).await;
    assert_eq!(store.accepted_submission(open.id).await.unwrap(), None);
    assert_eq!(store.receipt_for_task(open.id).await.unwrap(), None);
}

/// Pruning retired signing keys keeps every key a receipt names, however old: receipts must
/// go on verifying against the live JWKS.
pub async fn keys_that_signed_receipts_are_kept(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 1000).await;
    let worker = enroll(&store, &[]).await;
    let t = post_one(&store, &poster, task(100)).await;
    let (s, t, _) = complete(&store, t.id, worker.id, 90).await;
    let at = now();
    let key = |kid: &str, days_ago: i64, fill: u8| SigningKeyRecord {
        kid: kid.to_owned(),
        created_at: at - chrono::Duration::days(days_ago),
        seal: KeySeal::None,
        secret: vec![fill; 32],
    };
    store
        .insert_signing_keys(
            &[
                key("signed-a-receipt", 300, 1),
                key("signed-nothing", 200, 2),
                // Retires `signed-nothing` long enough ago for no token to name it.
                key("next", 150, 3),
                key("current", 1, 4),
            ],
            false,
        )
        .await
        .unwrap();
    store
        .insert_receipts(&[NewReceipt {
            id: Uuid::now_v7(),
            submission_id: s.id,
            task_id: t.id,
            agent_id: worker.id,
            kid: "signed-a-receipt".to_owned(),
            jws: "jws".to_owned(),
            created_at: at,
        }])
        .await
        .unwrap();
    let pruned = store
        .prune_signing_keys(at - chrono::Duration::days(90))
        .await
        .unwrap();
    assert_eq!(pruned, ["signed-nothing"]);
    let left: Vec<String> = store
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(left.contains(&"signed-a-receipt".to_owned()), "{left:?}");
    assert!(left.contains(&"next".to_owned()), "{left:?}");
    assert!(left.contains(&"current".to_owned()), "{left:?}");
}

/// Every way work is accepted makes its receipt due, in the acceptance's own transaction
/// (migration 0016); rejected or held work does not; storing the receipt, alone or in a
/// batch, settles it, and a second issue changes nothing.
pub async fn accepted_work_makes_its_receipt_due_until_issued(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;
    assert_eq!(store.receipts_due(10).await.unwrap(), []);

    let t = post_one(&store, &poster, task(725)).await;
    let (accepted, t, _) = complete(&store, t.id, worker.id, 90).await;
    let rejected = post_one(&store, &poster, task(100)).await;
    claim_ok(&store, rejected.id, worker.id).await;
    let (refused, ..) = submit_done(&store, rejected.id, worker.id, Decision::Reject, 20).await;
    let held = post_one(&store, &poster, task(100)).await;
    claim_ok(&store, held.id, worker.id).await;
    let deadline = now() - chrono::Duration::seconds(1);
    let (pending, ..) = submit_done(
        &store,
        held.id,
        worker.id,
        Decision::Hold {
            review_deadline: deadline,
        },
        80,
    )
    .await;

    let due = store.receipts_due(10).await.unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    let d = &due[0];
    assert_eq!(d.submission_id, accepted.id);
    assert_eq!(d.agent_id, worker.id);
    assert_eq!(d.task_id, t.id);
    assert_eq!(d.task_title, t.title);
    assert_eq!(d.posted_by, poster.id);
    assert_eq!(d.poster_handle.as_deref(), Some(poster.handle.as_str()));
    assert_eq!(d.quality_score, 90);
    assert_eq!(d.payout_cents, accepted.payout_cents);
    assert!(d.payout_cents.is_some());
    assert_eq!(Some(d.decided_at), accepted.decided_at);
    assert!(store.receipt_is_due(accepted.id).await.unwrap());
    assert!(!store.receipt_is_due(refused.id).await.unwrap());
    assert!(!store.receipt_is_due(pending.id).await.unwrap());

    // The review deadline accepts the held work: due too.
    let settled = store
        .expire_reviews(now(), &RetryPolicy::default(), 10)
        .await
        .unwrap();
    assert_eq!(settled.len(), 1);
    assert!(store.receipt_is_due(pending.id).await.unwrap());
    let due = store.receipts_due(10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.submission_id).collect::<Vec<_>>(),
        [accepted.id, pending.id]
    );
    assert_eq!(store.receipts_due(1).await.unwrap().len(), 1);

    let receipt = |d: &DueReceipt| NewReceipt {
        id: Uuid::now_v7(),
        submission_id: d.submission_id,
        task_id: d.task_id,
        agent_id: d.agent_id,
        kid: "k".to_owned(),
        jws: format!("jws-{}", d.submission_id),
        created_at: now(),
    };
    let issued: Vec<NewReceipt> = due.iter().map(receipt).collect();
    store.insert_receipts(&issued).await.unwrap();
    assert_eq!(store.receipts_due(10).await.unwrap(), []);
    assert!(!store.receipt_is_due(accepted.id).await.unwrap());
    assert_eq!(
        store.receipt_for_task(t.id).await.unwrap(),
        Some(issued[0].clone())
    );
    // Issued again (another node's pass): the first stays.
    let again: Vec<NewReceipt> = due.iter().map(receipt).collect();
    store.insert_receipts(&again).await.unwrap();
    store.insert_receipts(&[]).await.unwrap();
    assert_eq!(
        store.receipt_for_task(held.id).await.unwrap(),
        Some(issued[1].clone())
    );
    assert_eq!(store.receipt_summary(worker.id).await.unwrap().count, 2);
}
