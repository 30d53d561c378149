//! Claims: eligibility, capacity, statuses, and the race.

use std::sync::Arc;
use std::time::Instant;

use chrono::Duration;
use nervix_core::matching::Ineligible;
use nervix_core::{Complexity, Level, TaskStatus};
use nervix_store::*;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    claim_eligibility,
    claim_capacity,
    claim_status_outcomes,
    claim_race [multi],
    claim_capacity_race [multi],
}

pub async fn claim_eligibility(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let novice = enroll(&store, &["python"]).await;
    lift_level_cap(&store, novice.id).await;
    let poster = enroll(&store, &["python"]).await;
    grant(&store, poster.id, 1000).await;

    let mut needs_rust = task(100);
    needs_rust.capabilities = vec!["python".to_owned(), "rust".to_owned()];
    let needs_rust = post_one(&store, &admin, needs_rust).await;
    assert_eq!(
        claim(&store, needs_rust.id, novice.id).await,
        ClaimOutcome::NotEligible(Ineligible::MissingCapability("rust".to_owned()))
    );

    let mut medium = task(100);
    medium.complexity = Complexity::Medium;
    let medium = post_one(&store, &admin, medium).await;
    assert_eq!(
        claim(&store, medium.id, novice.id).await,
        ClaimOutcome::NotEligible(Ineligible::LevelTooLow {
            level: Level::Novice,
            complexity: Complexity::Medium,
        })
    );

    let mut picky = task(100);
    picky.min_reputation = 6000;
    let picky = post_one(&store, &admin, picky).await;
    assert_eq!(
        claim(&store, picky.id, novice.id).await,
        ClaimOutcome::NotEligible(Ineligible::BelowMinReputation)
    );

    let own = post_one(&store, &poster, task(100)).await;
    assert_eq!(
        claim(&store, own.id, poster.id).await,
        ClaimOutcome::NotEligible(Ineligible::OwnTask)
    );

    assert_eq!(
        claim(&store, Uuid::now_v7(), novice.id).await,
        ClaimOutcome::TaskNotFound
    );
    assert_eq!(
        claim(&store, own.id, Uuid::now_v7()).await,
        ClaimOutcome::AgentNotFound
    );

    // The agent's own switches.
    store
        .update_agent_config(
            novice.id,
            &AgentConfigPatch {
                available: Some(false),
                at: now(),
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    assert_eq!(
        claim(&store, own.id, novice.id).await,
        ClaimOutcome::NotEligible(Ineligible::Unavailable)
    );
    store
        .update_agent_config(
            novice.id,
            &AgentConfigPatch {
                available: Some(true),
                at: now(),
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    store
        .set_suspended(novice.id, true, &audit("agent.suspended"))
        .await
        .unwrap();
    assert_eq!(
        claim(&store, own.id, novice.id).await,
        ClaimOutcome::NotEligible(Ineligible::Suspended)
    );
    store
        .set_suspended(novice.id, false, &audit("agent.unsuspended"))
        .await
        .unwrap();

    // Nothing above changed a task.
    for t in [&needs_rust, &medium, &picky, &own] {
        assert_eq!(task_of(&store, t.id).await.status, TaskStatus::Available);
    }

    // Learning the capability, finishing probation: the same tasks become claimable.
    store
        .update_agent_config(
            novice.id,
            &AgentConfigPatch {
                capabilities: Some(vec!["python".to_owned(), "rust".to_owned()]),
                at: now(),
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    claim_ok(&store, needs_rust.id, novice.id).await;
    finish_probation(&store, &admin, novice.id).await;
    let claimed = claim_ok(&store, medium.id, novice.id).await;
    assert_eq!(claimed.assigned_agent_id, Some(novice.id));
    assert_eq!(
        claim(&store, picky.id, novice.id).await,
        ClaimOutcome::NotEligible(Ineligible::BelowMinReputation),
        "reputation is still 50.00"
    );
    claim_ok(&store, own.id, novice.id).await;

    // The eligibility filter of list_tasks agrees.
    let mut picky2 = task(100);
    picky2.min_reputation = 4000;
    let picky2 = post_one(&store, &admin, picky2).await;
    let eligible = store
        .list_tasks(&TaskQuery {
            eligible_for: Some(EligibilityFilter {
                agent_id: poster.id,
                reputation: 5000,
                complexities: vec![Complexity::Simple],
                now: now(),
            }),
            limit: 100,
            ..TaskQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&eligible), vec![picky2.id]);

    // Capabilities stored in any order still match.
    let unsorted = enroll(&store, &["sql", "go", "python"]).await;
    let mut both = task(100);
    both.capabilities = vec!["python".to_owned(), "sql".to_owned()];
    let both = post_one(&store, &admin, both).await;
    claim_ok(&store, both.id, unsorted.id).await;
}

pub async fn claim_capacity(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let mut one = new_agent(&unique("single"), &[]);
    one.max_concurrent_tasks = 1;
    let one = enroll_with(&store, one).await;
    let t1 = post_one(&store, &admin, task(100)).await;
    let t2 = post_one(&store, &admin, task(100)).await;

    claim_ok(&store, t1.id, one.id).await;
    assert_eq!(claim(&store, t2.id, one.id).await, ClaimOutcome::AtCapacity);
    assert_eq!(task_of(&store, t2.id).await.status, TaskStatus::Available);
    assert_eq!(store.active_task_counts().await.unwrap(), vec![(one.id, 1)]);

    // Finishing the first frees the slot.
    submit_done(&store, t1.id, one.id, Decision::Accept, 100).await;
    assert!(store.active_task_counts().await.unwrap().is_empty());
    claim_ok(&store, t2.id, one.id).await;

    // Raising the limit allows more.
    store
        .update_agent_config(
            one.id,
            &AgentConfigPatch {
                max_concurrent_tasks: Some(2),
                at: now(),
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    let t3 = post_one(&store, &admin, task(100)).await;
    claim_ok(&store, t3.id, one.id).await;
    assert_eq!(store.active_task_counts().await.unwrap(), vec![(one.id, 2)]);
}

pub async fn claim_status_outcomes(store: Arc<dyn Store>) {
    let admin = admin(&store).await;
    let w1 = enroll(&store, &[]).await;
    let w2 = enroll(&store, &[]).await;

    let t = post_one(&store, &admin, task(100)).await;
    let mut dep = task(100);
    dep.depends_on = vec![t.id];
    let dep = post_one(&store, &admin, dep).await;
    assert_eq!(
        claim(&store, dep.id, w1.id).await,
        ClaimOutcome::NotAvailable(TaskStatus::Blocked)
    );

    // The lease is capped at the deadline.
    let at = now();
    let won = store
        .claim_task(&ClaimRequest {
            lease_seconds: 30 * 24 * 3600,
            ..claim_req(t.id, w1.id, at)
        })
        .await
        .unwrap();
    let ClaimOutcome::Claimed(won) = won else {
        panic!("claim failed: {won:?}")
    };
    assert_eq!(won.status, TaskStatus::Claimed);
    assert_eq!(won.assigned_agent_id, Some(w1.id));
    assert_eq!(won.lease_expires_at, Some(t.deadline));
    assert_eq!(won.updated_at, at);
    let short = post_one(&store, &admin, task(100)).await;
    let ClaimOutcome::Claimed(short) = store
        .claim_task(&ClaimRequest {
            lease_seconds: 60,
            ..claim_req(short.id, w2.id, at)
        })
        .await
        .unwrap()
    else {
        panic!("claim failed")
    };
    assert_eq!(short.lease_expires_at, Some(at + Duration::seconds(60)));

    // Second claimer, and the holder claiming again.
    assert_eq!(
        claim(&store, t.id, w2.id).await,
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        claim(&store, t.id, w1.id).await,
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(task_of(&store, t.id).await.assigned_agent_id, Some(w1.id));

    // Completed: still "already claimed"; cancelled: not available.
    submit_done(&store, t.id, w1.id, Decision::Accept, 100).await;
    assert_eq!(
        claim(&store, t.id, w2.id).await,
        ClaimOutcome::AlreadyClaimed
    );
    let gone = post_one(&store, &admin, task(100)).await;
    store
        .cancel_task(gone.id, now(), &audit("task.cancelled"))
        .await
        .unwrap();
    assert_eq!(
        claim(&store, gone.id, w2.id).await,
        ClaimOutcome::NotAvailable(TaskStatus::Cancelled)
    );

    // In retry back-off: not available until retry_at.
    let r = post_one(&store, &admin, task(100)).await;
    claim_ok(&store, r.id, w1.id).await;
    let at = now();
    store
        .submit(&submission(r.id, w1.id, Decision::Reject, 10, at), None)
        .await
        .unwrap();
    let retry_at = task_of(&store, r.id).await.retry_at.unwrap();
    assert!(retry_at > at);
    assert_eq!(
        store
            .claim_task(&claim_req(r.id, w2.id, retry_at - Duration::seconds(1)))
            .await
            .unwrap(),
        ClaimOutcome::NotAvailable(TaskStatus::Available)
    );
    assert!(matches!(
        store
            .claim_task(&claim_req(r.id, w2.id, retry_at))
            .await
            .unwrap(),
        ClaimOutcome::Claimed(_)
    ));
}

/// 50 agents race for one task, 200 times: exactly one wins each round.
pub async fn claim_race(store: Arc<dyn Store>) {
    const CLAIMERS: usize = 50;
    const ROUNDS: usize = 200;
    let started = Instant::now();
    let admin = admin(&store).await;
    let mut agents = Vec::with_capacity(CLAIMERS);
    for _ in 0..CLAIMERS {
        let mut a = new_agent(&unique("racer"), &[]);
        a.max_concurrent_tasks = i64::try_from(ROUNDS).unwrap();
        let a = enroll_with(&store, a).await.id;
        lift_level_cap(&store, a).await;
        agents.push(a);
    }
    let mut wins = vec![0usize; CLAIMERS];
    for round in 0..ROUNDS {
        let t = post_one(&store, &admin, task(100)).await;
        let barrier = Arc::new(Barrier::new(CLAIMERS));
        let mut handles = Vec::with_capacity(CLAIMERS);
        for (i, agent) in agents.iter().copied().enumerate() {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                (i, store.claim_task(&claim_req(t.id, agent, now())).await)
            }));
        }
        let mut winner = None;
        for h in handles {
            let (i, outcome) = h.await.unwrap();
            match outcome {
                Ok(ClaimOutcome::Claimed(task)) => {
                    assert_eq!(task.assigned_agent_id, Some(agents[i]));
                    assert!(winner.replace(i).is_none(), "round {round}: two winners");
                }
                Ok(ClaimOutcome::AlreadyClaimed) => {}
                other => panic!("round {round}: claimer {i} got {other:?}"),
            }
        }
        let Some(w) = winner else {
            panic!("round {round}: nobody won")
        };
        wins[w] += 1;
        let stored = task_of(&store, t.id).await;
        assert_eq!(stored.status, TaskStatus::Claimed);
        assert_eq!(stored.assigned_agent_id, Some(agents[w]));
    }
    assert_eq!(wins.iter().sum::<usize>(), ROUNDS);
    let counts: usize = store
        .active_task_counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, n)| usize::try_from(*n).unwrap())
        .sum();
    assert_eq!(counts, ROUNDS);
    assert_active_counts_consistent(&store).await;
    eprintln!(
        "claim race on {}: {ROUNDS} rounds × {CLAIMERS} claimers in {:.1?}, {} distinct winners",
        store.backend(),
        started.elapsed(),
        wins.iter().filter(|w| **w > 0).count()
    );
}

/// One agent claims many tasks at once: its capacity holds exactly, however the claims
/// interleave, and frees up as tasks are finished.
pub async fn claim_capacity_race(store: Arc<dyn Store>) {
    const LIMIT: usize = 3;
    const TASKS: usize = 24;
    let admin = admin(&store).await;
    let mut a = new_agent(&unique("greedy"), &[]);
    a.max_concurrent_tasks = i64::try_from(LIMIT).unwrap();
    let agent = enroll_with(&store, a).await;
    lift_level_cap(&store, agent.id).await;
    for round in 0..5 {
        let mut tasks = Vec::with_capacity(TASKS);
        for _ in 0..TASKS {
            tasks.push(post_one(&store, &admin, task(100)).await.id);
        }
        let barrier = Arc::new(Barrier::new(TASKS));
        let handles: Vec<_> = tasks
            .iter()
            .copied()
            .map(|t| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim_task(&claim_req(t, agent.id, now())).await
                })
            })
            .collect();
        let mut won = Vec::new();
        for h in handles {
            match h.await.unwrap() {
                Ok(ClaimOutcome::Claimed(t)) => won.push(t.id),
                Ok(ClaimOutcome::AtCapacity) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(won.len(), LIMIT, "round {round}: claims won");
        assert_eq!(
            store.agent(agent.id).await.unwrap().unwrap().active_tasks,
            i64::try_from(LIMIT).unwrap()
        );
        assert_active_counts_consistent(&store).await;
        for t in won {
            submit_done(&store, t, agent.id, Decision::Accept, 100).await;
        }
        assert_eq!(
            store.agent(agent.id).await.unwrap().unwrap().active_tasks,
            0
        );
    }
}
