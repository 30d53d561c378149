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
        assert_eq!(store.insert_receipt(&r).await.unwrap(), r);
        // A second issue for the same submission keeps the first.
        let again = NewReceipt {
            id: Uuid::now_v7(),
            jws: "another".to_owned(),
            ..r.clone()
        };
        assert_eq!(store.insert_receipt(&again).await.unwrap(), r);
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
        .insert_receipt(&NewReceipt {
            id: Uuid::now_v7(),
            submission_id: s.id,
            task_id: t.id,
            agent_id: worker.id,
            kid: "signed-a-receipt".to_owned(),
            jws: "jws".to_owned(),
            created_at: at,
        })
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
