//! Spot checks and peer reviews: held submissions, deciding reviews, the review reaper, and
//! the reputation bookkeeping their evidence drives.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::{Level, TaskStatus};
use nervix_store::*;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    held_submission_waits_for_a_deciding_review,
    deciding_review_below_threshold_rejects,
    review_refusals,
    review_deadline_accepts_on_automated_score,
    review_and_reaper_race_decide_once [multi],
    reputation_follows_evidence_versions,
    level_caps_capacity,
    evidence_and_histories,
}

fn review(sub: Uuid, reviewer: Uuid, score: u8, may_decide: bool) -> NewReview {
    NewReview {
        id: Uuid::now_v7(),
        submission_id: sub,
        reviewer_id: reviewer,
        score,
        feedback: "checked".to_owned(),
        may_decide,
        accept_threshold: 60,
        retry: RetryPolicy::default(),
        at: now(),
    }
}

fn hold(deadline_in: Duration) -> Decision {
    Decision::Hold {
        review_deadline: now() + deadline_in,
    }
}

/// A poster with funds, a worker, and a task of `reward` the worker holds.
async fn held(
    store: &Arc<dyn Store>,
    reward: i64,
    deadline_in: Duration,
) -> (AgentRecord, AgentRecord, TaskRecord, SubmissionRecord) {
    let poster = enroll(store, &[]).await;
    grant(store, poster.id, 10_000).await;
    let worker = enroll(store, &[]).await;
    let t = post_one(store, &poster, task(reward)).await;
    claim_ok(store, t.id, worker.id).await;
    let (sub, task, unblocked, cancelled) =
        submit_done(store, t.id, worker.id, hold(deadline_in), 80).await;
    assert_eq!(sub.status, SubmissionStatus::PendingReview);
    assert_eq!(sub.payout_cents, None);
    assert_eq!(sub.decided_at, None);
    assert_eq!(sub.final_score, None);
    assert!(sub.review_deadline.is_some());
    assert_eq!(task.status, TaskStatus::Submitted);
    assert!(unblocked.is_empty() && cancelled.is_empty());
    (poster, worker, task, sub)
}

pub async fn held_submission_waits_for_a_deciding_review(store: Arc<dyn Store>) {
    let (poster, worker, t, sub) = held(&store, 1000, Duration::hours(72)).await;
    // The held task no longer counts against the worker's capacity, and nothing is paid.
    let w = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!(w.active_tasks, 0);
    assert_eq!(balances(&store, worker.id).await.available, 0);
    assert_eq!(balances(&store, poster.id).await.escrow, 1000);
    let page = PageQuery {
        cursor: None,
        limit: 10,
    };
    let queue = store.review_queue(&page).await.unwrap();
    assert_eq!(queue.iter().map(|s| s.id).collect::<Vec<_>>(), [sub.id]);

    // The poster's review is peer evidence only.
    let ReviewOutcome::Done { review: r, settled } = store
        .review(&review(sub.id, poster.id, 70, false))
        .await
        .unwrap()
    else {
        panic!("poster's review refused")
    };
    assert!(settled.is_none());
    assert_eq!((r.subject_id, r.score, r.decision), (worker.id, 70, None));
    assert_eq!(task_of(&store, t.id).await.status, TaskStatus::Submitted);

    // A reviewer's review decides it, and pays at the review's score.
    let reviewer = enroll(&store, &[]).await;
    let ReviewOutcome::Done { review: r, settled } = store
        .review(&review(sub.id, reviewer.id, 90, true))
        .await
        .unwrap()
    else {
        panic!("reviewer's review refused")
    };
    let s = settled.expect("decided");
    assert_eq!(r.decision, Some(SubmissionStatus::Accepted));
    assert_eq!(s.submission.status, SubmissionStatus::Accepted);
    assert_eq!(s.submission.final_score, Some(90));
    assert_eq!(s.submission.quality_score, 80);
    assert_eq!(s.submission.payout_cents, Some(900));
    assert_eq!(s.submission.review_deadline, None);
    assert_eq!(s.task.status, TaskStatus::Completed);
    assert_eq!(balances(&store, worker.id).await.available, 900);
    let p = balances(&store, poster.id).await;
    assert_eq!((p.available, p.escrow), (9100, 0));
    assert_eq!(store.review_queue(&page).await.unwrap(), []);
    assert_eq!(store.reviews_of(sub.id).await.unwrap().len(), 2);
    let w = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!(w.tasks_completed, 1);
    assert!(store.ledger_mismatches().await.unwrap().is_empty());
}

pub async fn deciding_review_below_threshold_rejects(store: Arc<dyn Store>) {
    let (poster, worker, t, sub) = held(&store, 1000, Duration::hours(72)).await;
    let admin = admin(&store).await;
    let ReviewOutcome::Done { settled, .. } = store
        .review(&review(sub.id, admin.id, 30, true))
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    let s = settled.expect("decided");
    assert_eq!(s.submission.status, SubmissionStatus::Rejected);
    assert_eq!(s.submission.final_score, Some(30));
    assert_eq!(s.submission.payout_cents, None);
    // Back to the pool with the attempt counted; the escrow still holds the reward.
    assert_eq!(s.task.status, TaskStatus::Available);
    assert_eq!(s.task.assigned_agent_id, None);
    assert_eq!(s.task.attempts, t.attempts + 1);
    assert_eq!(balances(&store, poster.id).await.escrow, 1000);
    assert_eq!(balances(&store, worker.id).await.available, 0);
    let w = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!(w.tasks_failed, 1);
}

pub async fn review_refusals(store: Arc<dyn Store>) {
    let (poster, worker, _, sub) = held(&store, 1000, Duration::hours(72)).await;
    assert_eq!(
        store
            .review(&review(sub.id, worker.id, 100, true))
            .await
            .unwrap(),
        ReviewOutcome::OwnSubmission
    );
    assert_eq!(
        store
            .review(&review(Uuid::now_v7(), poster.id, 100, false))
            .await
            .unwrap(),
        ReviewOutcome::SubmissionNotFound
    );
    assert!(matches!(
        store
            .review(&review(sub.id, poster.id, 50, false))
            .await
            .unwrap(),
        ReviewOutcome::Done { .. }
    ));
    assert_eq!(
        store
            .review(&review(sub.id, poster.id, 90, true))
            .await
            .unwrap(),
        ReviewOutcome::AlreadyReviewed
    );
    assert_eq!(store.reviews_of(sub.id).await.unwrap().len(), 1);
}

pub async fn review_deadline_accepts_on_automated_score(store: Arc<dyn Store>) {
    let (_, worker, _, late) = held(&store, 1000, Duration::seconds(-1)).await;
    let (_, _, _, waiting) = held(&store, 1000, Duration::hours(1)).await;
    let retry = RetryPolicy::default();
    let settled = store.expire_reviews(now(), &retry, 10).await.unwrap();
    assert_eq!(settled.len(), 1);
    let s = &settled[0];
    assert_eq!(s.submission.id, late.id);
    assert_eq!(s.submission.status, SubmissionStatus::Accepted);
    assert_eq!(s.submission.final_score, Some(80));
    assert_eq!(s.submission.payout_cents, Some(800));
    assert_eq!(balances(&store, worker.id).await.available, 800);
    assert_eq!(store.expire_reviews(now(), &retry, 10).await.unwrap(), []);
    let still = store.submission(waiting.id).await.unwrap().unwrap();
    assert_eq!(still.status, SubmissionStatus::PendingReview);
}

pub async fn review_and_reaper_race_decide_once(store: Arc<dyn Store>) {
    for _ in 0..5 {
        let (_, worker, _, sub) = held(&store, 1000, Duration::seconds(-1)).await;
        let reviewer = enroll(&store, &[]).await;
        let (a, b) = (store.clone(), store.clone());
        let r = review(sub.id, reviewer.id, 100, true);
        let (reviewed, reaped) = tokio::join!(
            tokio::spawn(async move { a.review(&r).await.unwrap() }),
            tokio::spawn(async move {
                b.expire_reviews(now(), &RetryPolicy::default(), 10)
                    .await
                    .unwrap()
            }),
        );
        let by_review = match reviewed.unwrap() {
            ReviewOutcome::Done { settled, .. } => settled.is_some(),
            other => panic!("{other:?}"),
        };
        let by_reaper = reaped.unwrap().iter().any(|s| s.submission.id == sub.id);
        assert!(by_review ^ by_reaper, "decided exactly once");
        let paid = balances(&store, worker.id).await.available;
        assert_eq!(paid, if by_review { 1000 } else { 800 });
        assert!(store.ledger_mismatches().await.unwrap().is_empty());
    }
}

fn update(s: StaleReputation, score: i64, level: Level, max: i64) -> ReputationUpdate {
    ReputationUpdate {
        id: Uuid::now_v7(),
        agent_id: s.agent_id,
        version: s.version,
        score,
        automated: score,
        success: score,
        peer: score,
        level,
        level_max_tasks: max,
        at: now(),
    }
}

async fn stale_of(store: &Arc<dyn Store>, agent: Uuid) -> Option<StaleReputation> {
    store
        .stale_reputations(10_000)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.agent_id == agent)
}

pub async fn reputation_follows_evidence_versions(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;
    // A new agent is stale once: its first score and snapshot.
    let first = stale_of(&store, worker.id)
        .await
        .expect("new agent is stale");
    assert_eq!(first.tasks_completed, 0);
    let t = post_one(&store, &poster, task(1000)).await;
    complete(&store, t.id, worker.id, 90).await;
    let s = stale_of(&store, worker.id)
        .await
        .expect("stale after evidence");
    assert!(s.version > first.version);
    assert_eq!(s.tasks_completed, 1);
    // A computation of older evidence is not recorded.
    assert_eq!(
        store
            .record_reputation(&update(first, 5100, Level::Novice, 2))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .record_reputation(&update(s, 5500, Level::Novice, 2))
            .await
            .unwrap(),
        Some(Level::Novice)
    );
    assert!(stale_of(&store, worker.id).await.is_none());
    // Another node recording the same version: no second record.
    assert_eq!(
        store
            .record_reputation(&update(s, 5500, Level::Novice, 2))
            .await
            .unwrap(),
        None
    );
    let a = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!(a.reputation, 5500);
    // A review is evidence too.
    let reviewer = enroll(&store, &[]).await;
    let (sub, ..) = {
        let t = post_one(&store, &poster, task(100)).await;
        complete(&store, t.id, worker.id, 90).await
    };
    let s = stale_of(&store, worker.id).await.unwrap();
    store
        .record_reputation(&update(s, 5600, Level::Intermediate, 5))
        .await
        .unwrap();
    store
        .review(&review(sub.id, reviewer.id, 90, false))
        .await
        .unwrap();
    let s2 = stale_of(&store, worker.id)
        .await
        .expect("stale after a review");
    assert!(s2.version > s.version);
    assert_eq!(
        store
            .record_reputation(&update(s2, 5600, Level::Intermediate, 5))
            .await
            .unwrap(),
        Some(Level::Intermediate)
    );
    let page = PageQuery {
        cursor: None,
        limit: 10,
    };
    // Snapshots: the first, each change of score and the level change; not the repeat.
    let history = store.reputation_history(worker.id, &page).await.unwrap();
    let scores: Vec<i64> = history.iter().map(|h| h.score).collect();
    assert_eq!(scores, [5600, 5500]);
    assert_eq!(history[0].level, Level::Intermediate);
}

pub async fn level_caps_capacity(store: Arc<dyn Store>) {
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let mut w = new_agent(&unique("capped"), &[]);
    w.max_concurrent_tasks = 3;
    let worker = enroll_with(&store, w).await;
    let a = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!((a.level_max_tasks, a.capacity()), (2, 2), "novice: 2");
    let tasks: Vec<TaskRecord> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(post_one(&store, &poster, task(100)).await);
        }
        v
    };
    claim_ok(&store, tasks[0].id, worker.id).await;
    claim_ok(&store, tasks[1].id, worker.id).await;
    assert_eq!(
        claim(&store, tasks[2].id, worker.id).await,
        ClaimOutcome::AtCapacity
    );
    // A level that allows more lifts the cap up to the agent's own setting.
    let s = stale_of(&store, worker.id).await.unwrap();
    store
        .record_reputation(&update(s, 6000, Level::Intermediate, 5))
        .await
        .unwrap()
        .expect("recorded");
    claim_ok(&store, tasks[2].id, worker.id).await;
    let a = store.agent(worker.id).await.unwrap().unwrap();
    assert_eq!((a.level_max_tasks, a.capacity(), a.active_tasks), (5, 3, 3));
}

pub async fn evidence_and_histories(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let poster = enroll(&store, &[]).await;
    grant(&store, poster.id, 10_000).await;
    let worker = enroll(&store, &[]).await;
    let t1 = post_one(&store, &poster, task(1000)).await;
    complete(&store, t1.id, worker.id, 90).await;
    let t2 = post_one(&store, &admin, task(500)).await;
    claim_ok(&store, t2.id, worker.id).await;
    submit_done(&store, t2.id, worker.id, Decision::Reject, 20).await;
    // The worker posts to the poster once: reciprocity is seen from both sides.
    grant(&store, worker.id, 1000).await;
    let t3 = post_one(&store, &worker, task(100)).await;
    complete(&store, t3.id, poster.id, 70).await;
    let (sub1, ..) = {
        let t = post_one(&store, &poster, task(100)).await;
        complete(&store, t.id, worker.id, 95).await
    };
    store
        .review(&review(sub1.id, poster.id, 80, false))
        .await
        .unwrap();

    // Giving a task back is evidence too.
    let t4 = post_one(&store, &poster, task(100)).await;
    claim_ok(&store, t4.id, worker.id).await;
    let before = stale_of(&store, worker.id).await.map_or(0, |s| s.version);
    store.release_task(t4.id, worker.id, now()).await.unwrap();
    assert!(stale_of(&store, worker.id).await.unwrap().version > before);

    let e = store.reputation_evidence(worker.id).await.unwrap();
    let outcomes: Vec<(Option<Uuid>, WorkOutcome)> =
        e.work.iter().map(|w| (w.poster, w.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (
                Some(poster.id),
                WorkOutcome::Accepted {
                    score: 95,
                    on_time: true
                }
            ),
            (None, WorkOutcome::Rejected { score: 20 }),
            (
                Some(poster.id),
                WorkOutcome::Accepted {
                    score: 90,
                    on_time: true
                }
            ),
            (Some(poster.id), WorkOutcome::Released),
        ]
    );
    assert_eq!(
        e.posted_work.iter().map(|p| p.0).collect::<Vec<_>>(),
        [poster.id]
    );
    assert_eq!(e.reviews.len(), 1);
    assert_eq!(
        (
            e.reviews[0].reviewer,
            e.reviews[0].reviewer_score,
            e.reviews[0].score
        ),
        (poster.id, 5000, 80)
    );
    let given = store.reputation_evidence(poster.id).await.unwrap();
    assert_eq!(
        given.reviews_given.iter().map(|g| g.0).collect::<Vec<_>>(),
        [worker.id]
    );

    let page = PageQuery {
        cursor: None,
        limit: 2,
    };
    let h = store.work_history(worker.id, &page).await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].submission_id, sub1.id);
    assert_eq!(h[0].payout_cents, Some(95));
    assert_eq!(h[1].status, SubmissionStatus::Rejected);
    assert_eq!(h[1].task_title, t2.title);
    let rest = store
        .work_history(
            worker.id,
            &PageQuery {
                cursor: Some(h[1].submission_id),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].reward_cents, 1000);
}
