//! The economy: bonus pool under concurrent payouts, withdrawals (decided once, never
//! overdrawn), the re-claim rule and the ledger's verification.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::{Level, Reputation, TaskStatus};
use nervix_store::*;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    bonus_pool_funding,
    concurrent_bonuses_never_overdraw_the_pool [multi],
    withdrawals_are_decided_once,
    concurrent_withdrawals_never_overdraw [multi],
    released_task_is_not_claimed_again,
    lost_lease_is_not_claimed_again,
    rejected_task_is_not_claimed_again,
    reciprocal_pair_gains_no_money,
    repeated_pair_bonus_decays,
}

fn assert_clean(report: &LedgerReport) {
    assert!(report.is_clean(), "{:?}", report.problems());
}

pub async fn bonus_pool_funding(store: Arc<dyn Store>) {
    assert_eq!(store.bonus_pool().await.unwrap(), 0);
    let treasury = balances(&store, PLATFORM).await.available;
    let r = store
        .fund_bonus_pool(0, "nothing", &audit("admin.bonus_pool.fund"))
        .await;
    assert!(
        matches!(r, Err(StoreError::Invalid { ref field, .. }) if field == "amount"),
        "{r:?}"
    );
    let a = store
        .fund_bonus_pool(1000, "first", &audit("admin.bonus_pool.fund"))
        .await
        .unwrap();
    let b = store
        .fund_bonus_pool(234, "second", &audit("admin.bonus_pool.fund"))
        .await
        .unwrap();
    assert_eq!((a, b), (1000, 1234));
    assert_eq!(store.bonus_pool().await.unwrap(), 1234);
    assert_eq!(balances(&store, PLATFORM).await.available, treasury - 1234);
    let audited = store
        .list_audit(&AuditQuery {
            action: Some("admin.bonus_pool.fund".to_owned()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), 2);
    let report = store.verify_ledger().await.unwrap();
    assert_clean(&report);
    let pool = report
        .per_kind
        .iter()
        .find(|k| k.kind == "bonus_pool")
        .unwrap();
    assert_eq!(pool.balance, 1234);
}

/// Many level bonuses settled at once against a pool that covers only some: the pool ends at
/// zero, never below, and exactly what it held was paid out as bonuses.
pub async fn concurrent_bonuses_never_overdraw_the_pool(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    const WORKERS: usize = 6;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let w = enroll(&store, &[]).await;
        finish_probation(&store, &admin, w.id).await;
        workers.push(w);
    }
    // Each wants a 200 bonus (1000 at ×1.2, quality 100); the pool holds 2½ of them.
    store
        .fund_bonus_pool(500, "scarce", &audit("admin.bonus_pool.fund"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in &workers {
        let t = post_one(&store, &admin, task(1000)).await;
        claim_ok(&store, t.id, w.id).await;
        tasks.push(t);
    }
    let barrier = Arc::new(Barrier::new(WORKERS));
    let mut handles = Vec::new();
    for (w, t) in workers.iter().zip(&tasks) {
        let (store, barrier, w, t) = (Arc::clone(&store), Arc::clone(&barrier), w.id, t.id);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            submit_done(&store, t, w, Decision::Accept, 100).await.0
        }));
    }
    let mut bonuses = 0;
    for h in handles {
        let sub = h.await.unwrap();
        let payout = sub.payout_cents.unwrap();
        assert!((1000..=1200).contains(&payout), "payout {payout}");
        bonuses += payout - 1000;
    }
    assert_eq!(bonuses, 500);
    assert_eq!(store.bonus_pool().await.unwrap(), 0);
    assert_clean(&store.verify_ledger().await.unwrap());
}

fn withdrawal(agent: Uuid, cents: i64) -> NewWithdrawal {
    NewWithdrawal {
        id: Uuid::now_v7(),
        agent_id: agent,
        amount_cents: cents,
        destination: "iban:DE00 1234".to_owned(),
        at: now(),
    }
}

fn decision(id: Uuid, approve: bool) -> WithdrawalDecision {
    WithdrawalDecision {
        id,
        approve,
        by: Uuid::nil(),
        at: now(),
    }
}

pub async fn withdrawals_are_decided_once(store: Arc<dyn Store>) {
    let agent = enroll(&store, &[]).await;
    grant(&store, agent.id, 1000).await;

    let w = store
        .request_withdrawal(&withdrawal(agent.id, 300), None)
        .await
        .unwrap();
    assert_eq!(
        (w.amount_cents, w.status, w.agent_id),
        (300, WithdrawalStatus::Pending, agent.id)
    );
    let b = balances(&store, agent.id).await;
    assert_eq!(
        (b.available, b.pending_withdrawal, b.total_withdrawn),
        (700, 300, 0)
    );
    let r = store
        .request_withdrawal(&withdrawal(agent.id, 701), None)
        .await;
    assert!(matches!(r, Err(StoreError::InsufficientFunds)), "{r:?}");
    let other = store
        .request_withdrawal(&withdrawal(agent.id, 200), None)
        .await
        .unwrap();

    let paid = store
        .decide_withdrawal(&decision(w.id, true), &audit("admin.withdrawal.approve"))
        .await
        .unwrap();
    assert_eq!(paid.status, WithdrawalStatus::Paid);
    assert!(paid.decided_at.is_some());
    for approve in [true, false] {
        let r = store
            .decide_withdrawal(&decision(w.id, approve), &audit("admin.withdrawal.approve"))
            .await;
        assert!(is_conflict(&r, Conflict::InvalidState), "{r:?}");
    }
    let b = balances(&store, agent.id).await;
    assert_eq!(
        (b.available, b.pending_withdrawal, b.total_withdrawn),
        (500, 200, 300)
    );

    let rejected = store
        .decide_withdrawal(
            &decision(other.id, false),
            &audit("admin.withdrawal.reject"),
        )
        .await
        .unwrap();
    assert_eq!(rejected.status, WithdrawalStatus::Rejected);
    let b = balances(&store, agent.id).await;
    assert_eq!(
        (b.available, b.pending_withdrawal, b.total_withdrawn),
        (700, 0, 300)
    );
    let r = store
        .decide_withdrawal(&decision(Uuid::now_v7(), true), &audit("x"))
        .await;
    assert!(matches!(r, Err(StoreError::NotFound)), "{r:?}");

    assert_eq!(store.withdrawal(w.id).await.unwrap(), Some(paid.clone()));
    let mine = store
        .withdrawals(&WithdrawalQuery {
            agent_id: Some(agent.id),
            limit: 10,
            ..WithdrawalQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(mine, vec![rejected.clone(), paid.clone()], "newest first");
    let pending = store
        .withdrawals(&WithdrawalQuery {
            status: Some(WithdrawalStatus::Pending),
            limit: 10,
            ..WithdrawalQuery::default()
        })
        .await
        .unwrap();
    assert!(pending.is_empty());
    let page = store
        .withdrawals(&WithdrawalQuery {
            agent_id: Some(agent.id),
            before: Some(rejected.id),
            limit: 10,
            ..WithdrawalQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page, vec![paid]);

    let report = store.verify_ledger().await.unwrap();
    assert_clean(&report);
    let withdrawn = report
        .per_kind
        .iter()
        .find(|k| k.kind == "withdrawn")
        .unwrap();
    assert_eq!(withdrawn.balance, 300);
    assert_ledger_consistent(&store).await;
}

/// Requests whose sum exceeds the balance, all at once: the ones that fit succeed, the rest
/// are refused, and the balance never goes below zero.
pub async fn concurrent_withdrawals_never_overdraw(store: Arc<dyn Store>) {
    let agent = enroll(&store, &[]).await;
    grant(&store, agent.id, 1000).await;
    const N: usize = 24;
    let barrier = Arc::new(Barrier::new(N));
    let mut handles = Vec::new();
    for _ in 0..N {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        let w = withdrawal(agent.id, 100);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store.request_withdrawal(&w, None).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::InsufficientFunds) => refused += 1,
            Err(e) => panic!("withdrawal: {e:?}"),
        }
    }
    assert_eq!((ok, refused), (10, N - 10));
    let b = balances(&store, agent.id).await;
    assert_eq!((b.available, b.pending_withdrawal), (0, 1000));
    assert_clean(&store.verify_ledger().await.unwrap());
}

/// The agent that lost the task is refused with the reason, the task is not listed for it,
/// and someone else can still take it.
async fn assert_excluded(
    store: &Arc<dyn Store>,
    task: &TaskRecord,
    loser: &AgentRecord,
    reason: ExclusionReason,
    other: &AgentRecord,
    at: chrono::DateTime<chrono::Utc>,
) {
    let outcome = store
        .claim_task(&claim_req(task.id, loser.id, at))
        .await
        .unwrap();
    assert_eq!(outcome, ClaimOutcome::Excluded(reason));
    assert_eq!(
        store.excluded_agents(task.id).await.unwrap(),
        vec![loser.id]
    );
    let listed = store
        .list_tasks(&TaskQuery {
            eligible_for: Some(EligibilityFilter {
                agent_id: loser.id,
                reputation: loser.reputation,
                complexities: nervix_core::Complexity::ALL.to_vec(),
                now: at,
            }),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert!(
        listed.iter().all(|t| t.id != task.id),
        "offered back to the loser"
    );
    match store
        .claim_task(&claim_req(task.id, other.id, at))
        .await
        .unwrap()
    {
        ClaimOutcome::Claimed(t) => assert_eq!(t.assigned_agent_id, Some(other.id)),
        o => panic!("another agent could not claim: {o:?}"),
    }
}

pub async fn released_task_is_not_claimed_again(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let (w1, w2) = (enroll(&store, &[]).await, enroll(&store, &[]).await);
    let t = post_one(&store, &admin, task(100)).await;
    claim_ok(&store, t.id, w1.id).await;
    let released = store.release_task(t.id, w1.id, now()).await.unwrap();
    assert_eq!(released.status, TaskStatus::Available);
    assert_excluded(&store, &t, &w1, ExclusionReason::Released, &w2, now()).await;
}

pub async fn lost_lease_is_not_claimed_again(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let (w1, w2) = (enroll(&store, &[]).await, enroll(&store, &[]).await);
    let t = post_one(&store, &admin, task(100)).await;
    let at = now();
    store
        .claim_task(&ClaimRequest {
            lease_seconds: 60,
            ..claim_req(t.id, w1.id, at)
        })
        .await
        .unwrap();
    let later = at + Duration::minutes(5);
    let reaped = store
        .expire_leases(later, &RetryPolicy::default(), 100)
        .await
        .unwrap();
    assert_eq!(ids(&reaped.changed), vec![t.id]);
    assert_eq!(reaped.lost, vec![(t.id, w1.id)]);
    // After the retry back-off.
    assert_excluded(
        &store,
        &t,
        &w1,
        ExclusionReason::LeaseLost,
        &w2,
        later + Duration::minutes(10),
    )
    .await;
}

pub async fn rejected_task_is_not_claimed_again(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let (w1, w2) = (enroll(&store, &[]).await, enroll(&store, &[]).await);
    let t = post_one(&store, &admin, task(100)).await;
    claim_ok(&store, t.id, w1.id).await;
    let (_, after, _, _) = submit_done(&store, t.id, w1.id, Decision::Reject, 10).await;
    assert_eq!(after.status, TaskStatus::Available);
    assert_excluded(
        &store,
        &t,
        &w1,
        ExclusionReason::Rejected,
        &w2,
        now() + Duration::minutes(10),
    )
    .await;
}

/// `poster` posts a task of `reward` and `worker` completes it at quality 100: the submission
/// and the memo of the worker's payout entry.
async fn exchange(
    store: &Arc<dyn Store>,
    poster: &AgentRecord,
    worker: &AgentRecord,
    reward: i64,
) -> (SubmissionRecord, String) {
    let t = post_one(store, poster, task(reward)).await;
    let (sub, _, _) = complete(store, t.id, worker.id, 100).await;
    (sub, payout_memo(store, t.id).await)
}

async fn payout_memo(store: &Arc<dyn Store>, task: Uuid) -> String {
    store
        .ledger_entries(&LedgerQuery {
            task_id: Some(task),
            limit: 100,
            ..LedgerQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "payout")
        .expect("a payout entry")
        .memo
}

/// What `owner` holds on the platform: available, escrowed and pending withdrawal.
async fn holdings(store: &Arc<dyn Store>, owner: Uuid) -> i64 {
    let b = balances(store, owner).await;
    b.available + b.escrow + b.pending_withdrawal
}

/// Two agents posting tasks to each other and doing them draw nothing from the bonus pool,
/// however far past novice they are; a third agent's work for one of them does.
pub async fn reciprocal_pair_gains_no_money(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    store
        .fund_bonus_pool(100_000, "bonuses", &audit("admin.bonus_pool.fund"))
        .await
        .unwrap();
    let (a, b) = (enroll(&store, &[]).await, enroll(&store, &[]).await);
    grant(&store, a.id, 50_000).await;
    grant(&store, b.id, 50_000).await;
    let level =
        |r: AgentRecord| Level::of(Reputation::from_hundredths(r.reputation), r.tasks_completed);
    // In alternation until both are past probation (novices earn no bonus).
    let mut rounds = 0;
    loop {
        for (poster, worker) in [(&a, &b), (&b, &a)] {
            let (sub, _) = exchange(&store, poster, worker, 1000).await;
            assert_eq!(sub.payout_cents, Some(1000), "novice pay");
        }
        rounds += 1;
        let (ra, rb) = (
            store.agent(a.id).await.unwrap().unwrap(),
            store.agent(b.id).await.unwrap().unwrap(),
        );
        if level(ra) != Level::Novice && level(rb) != Level::Novice {
            break;
        }
        assert!(rounds < 10, "never left probation");
    }
    assert_eq!(rounds, nervix_core::reputation::PROBATION_TASKS);
    // Six more exchanges at ×1.2: the bonus is withheld, and each payout says why.
    for _ in 0..6 {
        for (poster, worker) in [(&a, &b), (&b, &a)] {
            let (sub, memo) = exchange(&store, poster, worker, 1000).await;
            assert_eq!(sub.payout_cents, Some(1000));
            assert_eq!(
                memo,
                "task completed: payout; level bonus cut from 2.00 to 0.00: reciprocal pair (the \
                 poster completed a task this worker posted)"
            );
        }
    }
    assert_eq!(
        holdings(&store, a.id).await + holdings(&store, b.id).await,
        100_000,
        "the pair holds what it was granted"
    );
    assert_eq!(store.bonus_pool().await.unwrap(), 100_000);
    // The same work for a third agent, past probation, is paid the bonus the pair was refused.
    let c = enroll(&store, &[]).await;
    finish_probation(&store, &admin, c.id).await;
    let (sub, memo) = exchange(&store, &a, &c, 1000).await;
    assert_eq!(sub.payout_cents, Some(1200));
    assert_eq!(memo, "task completed: payout");
    assert_eq!(store.bonus_pool().await.unwrap(), 100_000 - 200);
    assert_clean(&store.verify_ledger().await.unwrap());
}

/// One worker doing one poster's tasks again and again: the level bonus halves with each
/// earlier task of that poster (rounded down), for decisions by review too; the operator's
/// tasks and other posters' are no repeat; once the poster has worked for the worker, nothing.
pub async fn repeated_pair_bonus_decays(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    store
        .fund_bonus_pool(100_000, "bonuses", &audit("admin.bonus_pool.fund"))
        .await
        .unwrap();
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 100_000).await;
    let worker = enroll(&store, &[]).await;
    finish_probation(&store, &admin, worker.id).await;
    // 1010 at ×1.2 and quality 100: a bonus of 2.02.
    let mut bonuses = Vec::new();
    let mut memos = Vec::new();
    for _ in 0..4 {
        let (sub, memo) = exchange(&store, &poster, &worker, 1010).await;
        bonuses.push(sub.payout_cents.unwrap() - 1010);
        memos.push(memo);
    }
    assert_eq!(bonuses, [202, 101, 50, 25]);
    assert_eq!(memos[0], "task completed: payout");
    assert_eq!(
        memos[2],
        "task completed: payout; level bonus cut from 2.02 to 0.50: 2 earlier tasks for this \
         poster (×0.5 each)"
    );

    // A spot-checked fifth, decided by a reviewer's review, is settled by the same rule.
    let t = post_one(&store, &poster, task(1010)).await;
    claim_ok(&store, t.id, worker.id).await;
    let hold = Decision::Hold {
        review_deadline: now() + Duration::hours(72),
    };
    let (sub, _, _, _) = submit_done(&store, t.id, worker.id, hold, 100).await;
    let reviewer = enroll(&store, &[]).await;
    let outcome = store
        .review(&NewReview {
            id: Uuid::now_v7(),
            submission_id: sub.id,
            reviewer_id: reviewer.id,
            score: 100,
            feedback: "fine".to_owned(),
            may_decide: true,
            accept_threshold: 60,
            retry: RetryPolicy::default(),
            at: now(),
        })
        .await
        .unwrap();
    let ReviewOutcome::Done {
        settled: Some(settled),
        ..
    } = outcome
    else {
        panic!("review did not decide: {outcome:?}")
    };
    assert_eq!(settled.submission.payout_cents, Some(1010 + 12));

    // The operator's tasks are no pair (the worker did five in probation), nor is another
    // poster a repeat of this one.
    let (sub, _) = exchange(&store, &admin, &worker, 1010).await;
    assert_eq!(sub.payout_cents, Some(1010 + 202));
    let other = enroll(&store, &[]).await;
    grant(&store, other.id, 10_000).await;
    let (sub, _) = exchange(&store, &other, &worker, 1010).await;
    assert_eq!(sub.payout_cents, Some(1010 + 202));

    // The poster does a task of the worker's; from then on the two are a reciprocal pair.
    let (sub, _) = exchange(&store, &worker, &poster, 500).await;
    assert_eq!(sub.payout_cents, Some(500), "the poster is a novice");
    let (sub, memo) = exchange(&store, &poster, &worker, 1010).await;
    assert_eq!(sub.payout_cents, Some(1010));
    assert!(memo.contains("reciprocal pair"), "{memo}");

    let paid = 202 + 101 + 50 + 25 + 12 + 202 + 202;
    assert_eq!(store.bonus_pool().await.unwrap(), 100_000 - paid);
    assert_clean(&store.verify_ledger().await.unwrap());
}
