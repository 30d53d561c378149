//! Submissions and their settlement: payouts, bonuses, retries, concurrent settlements.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::reputation::settle;
use nervix_core::{Level, Money, TaskStatus};
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    submit_accept_pays_per_settle,
    submit_accept_bonus_from_pool,
    submit_treasury_funded,
    submit_not_assignee,
    submit_reject_retries_then_fails,
    concurrent_cross_settlements [multi],
}

pub async fn submit_accept_pays_per_settle(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;

    let t = post_one(&store, &poster, task(1000)).await;
    claim_ok(&store, t.id, worker.id).await;
    let at = now();
    let s = NewSubmission {
        feedback: Some("good".to_owned()),
        ..submission(t.id, worker.id, Decision::Accept, 80, at)
    };
    let SubmitOutcome::Done {
        submission: sub,
        task: done,
        unblocked,
        cancelled,
    } = store.submit(&s, None).await.unwrap()
    else {
        panic!("submit not applied")
    };
    // Novice: ×1.0; quality 80 pays 80 %, 20 % goes back to the poster.
    let expected = settle(Money::from_cents(1000), 80, Level::Novice);
    assert_eq!(
        (
            expected.from_escrow.cents(),
            expected.bonus.cents(),
            expected.refund.cents()
        ),
        (800, 0, 200)
    );
    assert_eq!(
        sub,
        SubmissionRecord {
            id: s.id,
            task_id: t.id,
            agent_id: worker.id,
            content: json!("the work"),
            notes: Some("notes".to_owned()),
            quality_score: 80,
            checks: s.checks.clone(),
            status: SubmissionStatus::Accepted,
            feedback: Some("good".to_owned()),
            payout_cents: Some(800),
            created_at: at,
            decided_at: Some(at),
            review_deadline: None,
            final_score: Some(80),
        }
    );
    assert_eq!(store.submission(s.id).await.unwrap().as_ref(), Some(&sub));
    assert_eq!(store.submission(Uuid::now_v7()).await.unwrap(), None);
    assert_eq!(done.status, TaskStatus::Completed);
    assert!(done.settled);
    assert_eq!(done.lease_expires_at, None);
    assert!(unblocked.is_empty() && cancelled.is_empty());
    assert_eq!(task_of(&store, t.id).await, done);

    let w = balances(&store, worker.id).await;
    assert_eq!((w.available, w.escrow, w.total_earned), (800, 0, 800));
    let p = balances(&store, poster.id).await;
    assert_eq!((p.available, p.escrow), (10_000 - 1000 + 200, 0));
    assert_eq!(
        balances(&store, PLATFORM).await.available,
        -10_000,
        "no bonus for a novice"
    );
    let agent = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!((agent.tasks_completed, agent.tasks_failed), (1, 0));
    assert_settled_once(&store, &done).await;

    // The worker's ledger view.
    let entries = store
        .ledger_entries(&LedgerQuery {
            owner: Some(worker.id),
            limit: 10,
            ..LedgerQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0].amount,
            entries[0].kind.as_str(),
            entries[0].task_id
        ),
        (800, "payout", Some(t.id))
    );

    // Quality 100 pays the whole reward; quality 0 pays nothing and refunds all.
    let full = post_one(&store, &poster, task(500)).await;
    let (sub, _, _) = complete(&store, full.id, worker.id, 100).await;
    assert_eq!(sub.payout_cents, Some(500));
    let zero = post_one(&store, &poster, task(500)).await;
    let (sub, _, _) = complete(&store, zero.id, worker.id, 0).await;
    assert_eq!(sub.payout_cents, Some(0));
    let w = balances(&store, worker.id).await;
    assert_eq!((w.available, w.total_earned), (1300, 1300));
    let p = balances(&store, poster.id).await;
    assert_eq!((p.available, p.escrow), (9200 - 500, 0));
    assert_eq!(store.stats(now()).await.unwrap().paid_out_cents, 1300);
    assert_ledger_consistent(&store).await;
}

pub async fn submit_accept_bonus_from_pool(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;
    finish_probation(&store, &admin, worker.id).await;
    let before = balances(&store, worker.id).await;
    let treasury = balances(&store, PLATFORM).await.available;
    let pool = store
        .fund_bonus_pool(250, "test funding", &audit("admin.bonus_pool.fund"))
        .await
        .unwrap();
    assert_eq!(pool, 250);
    assert_eq!(balances(&store, PLATFORM).await.available, treasury - 250);
    let treasury = treasury - 250;

    // Intermediate: ×1.2. Quality 100 on 1000: 1000 from escrow, 200 bonus from the pool.
    let t = post_one(&store, &poster, task(1000)).await;
    let (sub, done, _) = complete(&store, t.id, worker.id, 100).await;
    assert_eq!(sub.payout_cents, Some(1200));
    assert_eq!(
        balances(&store, worker.id).await.available,
        before.available + 1200
    );
    assert_eq!(store.bonus_pool().await.unwrap(), 50);
    assert_eq!(
        balances(&store, PLATFORM).await.available,
        treasury,
        "never the treasury"
    );
    let p = balances(&store, poster.id).await;
    assert_eq!((p.available, p.escrow), (9000, 0));
    assert_settled_once(&store, &done).await;

    // Quality 90: all of the escrow plus an 80 bonus wanted, cut to the 50 the pool holds
    // (from another poster: a repeat for the same one halves the bonus, see `economy`).
    let other = enroll(&store, &[]).await;
    grant(&store, other.id, 1000).await;
    let treasury = treasury - 1000;
    let t = post_one(&store, &other, task(1000)).await;
    let (sub, _, _) = complete(&store, t.id, worker.id, 90).await;
    assert_eq!(sub.payout_cents, Some(1050));
    assert_eq!(store.bonus_pool().await.unwrap(), 0);
    assert_eq!(balances(&store, PLATFORM).await.available, treasury);
    let memo = |entries: Vec<LedgerEntry>| {
        entries
            .into_iter()
            .find(|e| e.kind == "payout")
            .map(|e| e.memo)
            .unwrap()
    };
    let entries = store
        .ledger_entries(&LedgerQuery {
            task_id: Some(t.id),
            limit: 100,
            ..LedgerQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        memo(entries),
        "task completed: payout; level bonus cut from 0.80 to 0.50: bonus pool exhausted"
    );
    // An empty pool pays no bonus at all: quality 100 gets the reward only.
    let t = post_one(&store, &poster, task(1000)).await;
    let (sub, _, _) = complete(&store, t.id, worker.id, 100).await;
    assert_eq!(sub.payout_cents, Some(1000));
    // Quality 50: 600 from escrow (no bonus wanted: the escrow covers it), 400 back.
    let t = post_one(&store, &poster, task(1000)).await;
    let (sub, _, _) = complete(&store, t.id, worker.id, 50).await;
    assert_eq!(sub.payout_cents, Some(600));
    assert_eq!(
        balances(&store, poster.id).await.available,
        8000 - 1000 + 400
    );
    assert_eq!(
        balances(&store, worker.id).await.total_earned,
        before.total_earned + 1200 + 1050 + 1000 + 600
    );
    assert_eq!(store.bonus_pool().await.unwrap(), 0);
    assert_ledger_consistent(&store).await;
    let report = store.verify_ledger().await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems());
}

pub async fn submit_treasury_funded(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let worker = enroll(&store, &[]).await;
    let t = post_one(&store, &admin, task(500)).await;
    assert!(t.funded_by_treasury);
    let (sub, done, _) = complete(&store, t.id, worker.id, 100).await;
    assert_eq!(sub.payout_cents, Some(500));
    assert_eq!(balances(&store, worker.id).await.available, 500);
    let platform = balances(&store, PLATFORM).await;
    assert_eq!((platform.available, platform.escrow), (-500, 0));
    assert_settled_once(&store, &done).await;
    assert_eq!(
        balances(&store, admin.id).await,
        Balances::default(),
        "the admin's own money is untouched"
    );

    // A partial payout returns the rest to the treasury.
    let t = post_one(&store, &admin, task(500)).await;
    let (sub, _, _) = complete(&store, t.id, worker.id, 50).await;
    assert_eq!(sub.payout_cents, Some(250));
    let platform = balances(&store, PLATFORM).await;
    assert_eq!((platform.available, platform.escrow), (-750, 0));
    assert_ledger_consistent(&store).await;
}

pub async fn submit_not_assignee(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let w1 = enroll(&store, &[]).await;
    let w2 = enroll(&store, &[]).await;
    let t = post_one(&store, &admin, task(100)).await;

    // Not claimed yet: nobody may submit.
    assert_eq!(
        submit(&store, t.id, w1.id, Decision::Accept, 100).await,
        SubmitOutcome::NotAssignee
    );
    claim_ok(&store, t.id, w1.id).await;
    let before = task_of(&store, t.id).await;
    assert_eq!(
        submit(&store, t.id, w2.id, Decision::Accept, 100).await,
        SubmitOutcome::NotAssignee
    );
    assert_eq!(
        submit(&store, t.id, w2.id, Decision::Reject, 0).await,
        SubmitOutcome::NotAssignee
    );
    assert_eq!(
        submit(&store, Uuid::now_v7(), w1.id, Decision::Accept, 100).await,
        SubmitOutcome::TaskNotFound
    );
    assert_eq!(task_of(&store, t.id).await, before, "nothing changed");
    assert_eq!(store.agent(w2.id).await.unwrap().unwrap().tasks_failed, 0);
    assert_eq!(balances(&store, w2.id).await, Balances::default());

    // Once done, not even the assignee may submit again.
    submit_done(&store, t.id, w1.id, Decision::Accept, 100).await;
    let s = submission(t.id, w1.id, Decision::Accept, 100, now());
    assert_eq!(
        store.submit(&s, None).await.unwrap(),
        SubmitOutcome::NotAssignee
    );
    assert_eq!(
        store.submission(s.id).await.unwrap(),
        None,
        "no submission stored"
    );
    assert_eq!(balances(&store, w1.id).await.available, 100, "paid once");
    assert_ledger_consistent(&store).await;
}

pub async fn submit_reject_retries_then_fails(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;

    // a → b → c, plus d → c; a has two attempts.
    let wf = NewWorkflow {
        id: Uuid::now_v7(),
        name: "chain".to_owned(),
    };
    let a = NewTask {
        max_attempts: 2,
        ..task(1000)
    };
    let b = NewTask {
        depends_on: vec![a.id],
        ..task(200)
    };
    let d = task(300);
    let c = NewTask {
        depends_on: vec![b.id, d.id],
        ..task(400)
    };
    let (a_id, b_id, c_id, d_id) = (a.id, b.id, c.id, d.id);
    let mut p = post(&poster, vec![a, b, d, c]);
    p.workflow = Some(wf.clone());
    store.post_tasks(&p, None).await.unwrap();
    assert_eq!(balances(&store, poster.id).await.available, 10_000 - 1900);

    // First rejection: back to the pool after a back-off, attempt counted.
    claim_ok(&store, a_id, worker.id).await;
    let at = now();
    let s = NewSubmission {
        feedback: Some("empty".to_owned()),
        ..submission(a_id, worker.id, Decision::Reject, 20, at)
    };
    let SubmitOutcome::Done {
        submission: sub,
        task: after,
        unblocked,
        cancelled,
    } = store.submit(&s, None).await.unwrap()
    else {
        panic!("reject not applied")
    };
    assert_eq!(sub.status, SubmissionStatus::Rejected);
    assert_eq!(sub.payout_cents, None);
    assert_eq!(sub.quality_score, 20);
    assert_eq!(sub.feedback.as_deref(), Some("empty"));
    assert_eq!(after.status, TaskStatus::Available);
    assert_eq!(after.attempts, 1);
    assert_eq!(after.assigned_agent_id, None);
    assert_eq!(after.lease_expires_at, None);
    let retry_at = after.retry_at.expect("retry_at set");
    assert!(retry_at > at, "retry_at in the future");
    assert_eq!(
        retry_at,
        at + Duration::seconds(RetryPolicy::default().delay_seconds(1))
    );
    assert!(!after.settled);
    assert!(unblocked.is_empty() && cancelled.is_empty());
    assert_eq!(task_of(&store, a_id).await, after);
    assert_escrow_held(&store, &after).await;
    assert_eq!(
        store.agent(worker.id).await.unwrap().unwrap().tasks_failed,
        1
    );
    assert_eq!(balances(&store, worker.id).await.available, 0);

    // The rejected worker may not claim it again; the last attempt is another's.
    assert_eq!(
        store
            .claim_task(&claim_req(a_id, worker.id, retry_at))
            .await
            .unwrap(),
        ClaimOutcome::Excluded(ExclusionReason::Rejected)
    );
    let second = enroll(&store, &[]).await;
    // Last attempt rejected: failed for good, escrow back, everything downstream cancelled.
    assert!(matches!(
        store
            .claim_task(&claim_req(a_id, second.id, retry_at))
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    let (sub, failed, unblocked, cancelled) =
        submit_done(&store, a_id, second.id, Decision::Reject, 10).await;
    assert_eq!(sub.status, SubmissionStatus::Rejected);
    assert_eq!(failed.status, TaskStatus::Failed);
    assert_eq!(failed.attempts, 2);
    assert!(failed.settled);
    assert!(unblocked.is_empty());
    assert_eq!(
        ids(&cancelled),
        sorted(vec![b_id, c_id]),
        "b and, through it, c"
    );
    assert!(cancelled
        .iter()
        .all(|t| t.status == TaskStatus::Cancelled && t.settled));
    assert_eq!(
        task_of(&store, d_id).await.status,
        TaskStatus::Available,
        "d is upstream of c, not down"
    );
    assert_eq!(
        store.workflow(wf.id).await.unwrap().unwrap().status,
        WorkflowStatus::Failed
    );
    for id in [a_id, b_id, c_id] {
        assert_settled_once(&store, &task_of(&store, id).await).await;
    }
    assert_escrow_held(&store, &task_of(&store, d_id).await).await;
    let p = balances(&store, poster.id).await;
    assert_eq!((p.available, p.escrow), (10_000 - 300, 300));
    for w in [worker.id, second.id] {
        assert_eq!(store.agent(w).await.unwrap().unwrap().tasks_failed, 1);
    }
    assert_ledger_consistent(&store).await;
}

/// Two agents settle each other's work at the same time, both ways, accepting most and failing
/// some for good: every submission goes through. Each settlement touches both agents' accounts
/// and the worker's agent row, in different orders depending on the direction and decision.
pub async fn concurrent_cross_settlements(store: Arc<dyn Store>) {
    const EACH: usize = 40;
    let mut pair = Vec::new();
    for _ in 0..2 {
        let mut a = new_agent(&unique("cross"), &[]);
        a.max_concurrent_tasks = i64::try_from(EACH).unwrap();
        let a = enroll_with(&store, a).await;
        lift_level_cap(&store, a.id).await;
        grant(&store, a.id, 100_000).await;
        pair.push(a);
    }
    let mut jobs = Vec::new();
    for (poster, worker) in [(&pair[0], &pair[1]), (&pair[1], &pair[0])] {
        for i in 0..EACH {
            let t = post_one(
                &store,
                poster,
                NewTask {
                    max_attempts: 1,
                    ..task(1000)
                },
            )
            .await;
            claim_ok(&store, t.id, worker.id).await;
            let decision = if i % 3 == 2 {
                Decision::Reject
            } else {
                Decision::Accept
            };
            jobs.push((t, worker.id, decision));
        }
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .iter()
        .map(|(t, worker, decision)| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            let s = submission(t.id, *worker, *decision, 50, now());
            tokio::spawn(async move {
                barrier.wait().await;
                store.submit(&s, None).await
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (h, (_, _, decision)) in handles.into_iter().zip(&jobs) {
        let want = match decision {
            Decision::Accept => TaskStatus::Completed,
            Decision::Reject => TaskStatus::Failed,
            Decision::Hold { .. } => TaskStatus::Submitted,
        };
        match h.await.unwrap() {
            Ok(SubmitOutcome::Done { task, .. }) => assert_eq!(task.status, want),
            other => failures.push(format!("{other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} concurrent submits failed: {failures:?}",
        failures.len(),
        jobs.len()
    );
    for (t, _, _) in &jobs {
        assert_settled_once(&store, &task_of(&store, t.id).await).await;
    }
    // Quality 50 pays 500 of 1000 (600 once out of probation), the rest and the escrow of
    // failed tasks go back to the poster.
    let accepted = (0..EACH).filter(|i| i % 3 != 2).count();
    let accepted = i64::try_from(accepted).unwrap();
    let b0 = balances(&store, pair[0].id).await;
    let b1 = balances(&store, pair[1].id).await;
    for (mine, theirs) in [(b0, b1), (b1, b0)] {
        assert_eq!(mine.escrow, 0);
        assert!(
            (accepted * 500..=accepted * 600).contains(&mine.total_earned),
            "{mine:?}"
        );
        assert_eq!(
            mine.available,
            100_000 - theirs.total_earned + mine.total_earned
        );
    }
    for a in &pair {
        let rec = store.agent(a.id).await.unwrap().unwrap();
        assert_eq!(
            (rec.tasks_completed, rec.tasks_failed),
            (accepted, i64::try_from(EACH).unwrap() - accepted)
        );
    }
    assert_ledger_consistent(&store).await;
}
