//! Challenges, enrollment, login.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::Role;
use nervix_store::*;
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    enrollment_creates_agent,
    challenge_single_use,
    login_challenge_single_use,
    duplicate_handle_and_public_key,
    concurrent_enrollment_same_handle [multi],
}

pub async fn enrollment_creates_agent(store: Arc<dyn Store>) {
    let mut agent = new_agent("alice", &["python", "rust"]);
    agent.encryption_public_key = Some("x25519-key".to_owned());
    agent.max_concurrent_tasks = 3;
    agent.role = Role::Reviewer;
    let challenge = enroll_challenge(&agent.public_key, now() + Duration::minutes(5));
    store.insert_challenge(&challenge).await.unwrap();

    let stored = store
        .challenge(challenge.id)
        .await
        .unwrap()
        .expect("challenge stored");
    assert_eq!(stored.purpose, ChallengePurpose::Enroll);
    assert_eq!(stored.public_key, agent.public_key);
    assert_eq!(stored.challenge, challenge.challenge);
    assert_eq!(stored.payload, challenge.payload);
    assert_eq!(stored.failures, 0);
    assert_eq!(stored.expires_at, challenge.expires_at);
    assert!(stored.consumed_at.is_none());

    let token = token_for(agent.id);
    let rec = store
        .complete_enrollment(challenge.id, &agent, &token, &enroll_audit(&agent))
        .await
        .unwrap();
    assert_eq!(rec.id, agent.id);
    assert_eq!(rec.handle, "alice");
    assert_eq!(rec.name, agent.name);
    assert_eq!(rec.public_key, agent.public_key);
    assert_eq!(rec.encryption_public_key.as_deref(), Some("x25519-key"));
    assert_eq!(
        rec.capabilities,
        vec!["python".to_owned(), "rust".to_owned()]
    );
    assert_eq!(rec.metadata, json!({"model": "test"}));
    assert_eq!(rec.max_concurrent_tasks, 3);
    assert!(rec.available);
    assert_eq!(rec.role, Role::Reviewer);
    assert!(!rec.suspended);
    assert_eq!(rec.reputation, 5000);
    assert_eq!(
        (rec.rep_automated, rec.rep_success, rec.rep_peer),
        (5000, 5000, 5000)
    );
    assert_eq!((rec.tasks_completed, rec.tasks_failed), (0, 0));
    assert_eq!(rec.last_seen_at, None);
    assert_eq!(rec.created_at, agent.created_at);
    assert_eq!(rec.updated_at, agent.created_at);

    // Read back the same record by id and by handle.
    assert_eq!(store.agent(agent.id).await.unwrap().as_ref(), Some(&rec));
    assert_eq!(
        store.agent_by_handle("alice").await.unwrap().as_ref(),
        Some(&rec)
    );
    assert_eq!(store.agent_by_handle("nobody").await.unwrap(), None);
    assert!(store.all_agents().await.unwrap().contains(&rec));

    // The challenge is consumed.
    let consumed = store.challenge(challenge.id).await.unwrap().unwrap();
    assert!(consumed.consumed_at.is_some());

    // Ledger accounts exist, empty; money can land in and move through them.
    assert_eq!(balances(&store, agent.id).await, Balances::default());
    grant(&store, agent.id, 1000).await;
    assert_eq!(balances(&store, agent.id).await.available, 1000);
    let mut poster = rec.clone();
    poster.role = Role::Agent; // post from its own balance
    post_one(&store, &poster, task(400)).await;
    let b = balances(&store, agent.id).await;
    assert_eq!((b.available, b.escrow, b.total_earned), (600, 400, 0));
    assert_ledger_consistent(&store).await;

    // The token is live and carries the role.
    assert_eq!(
        store.auth_state(token.jti, agent.id).await.unwrap(),
        Some(AuthState {
            handle: "alice".to_owned(),
            role: Role::Reviewer,
            suspended: false,
            revoked: false,
        })
    );
    // ... but only for its own agent.
    assert_eq!(
        store.auth_state(token.jti, Uuid::now_v7()).await.unwrap(),
        None
    );

    // The audit record.
    let rows = store
        .list_audit(&AuditQuery {
            action: Some("agent.enrolled".to_owned()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor_id, Some(agent.id));
    assert_eq!(rows[0].actor_handle.as_deref(), Some("alice"));
    assert_eq!(
        rows[0].target.as_deref(),
        Some(agent.id.to_string().as_str())
    );
    assert_eq!(rows[0].client_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(rows[0].details, json!({"handle": "alice"}));
    let by_actor = store
        .list_audit(&AuditQuery {
            actor_id: Some(agent.id),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_actor, rows);
    let none = store
        .list_audit(&AuditQuery {
            action: Some("agent.nothing".to_owned()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    let stats = store.stats(now() - Duration::minutes(5)).await.unwrap();
    assert_eq!(stats.agents, 1);
    assert_eq!(stats.agents_online, 0);
    assert_eq!((stats.tasks_total, stats.tasks_open), (1, 1));
}

pub async fn challenge_single_use(store: Arc<dyn Store>) {
    // Used once: a second enrollment with the same challenge fails and creates nothing.
    let first = new_agent("first", &[]);
    let c = enroll_challenge(&first.public_key, now() + Duration::minutes(5));
    store.insert_challenge(&c).await.unwrap();
    store
        .complete_enrollment(c.id, &first, &token_for(first.id), &enroll_audit(&first))
        .await
        .unwrap();
    let second = new_agent("second", &[]);
    let r = store
        .complete_enrollment(c.id, &second, &token_for(second.id), &enroll_audit(&second))
        .await;
    assert!(is_conflict(&r, Conflict::ChallengeUsed), "{r:?}");
    assert_eq!(store.agent_by_handle("second").await.unwrap(), None);

    // Unknown challenge.
    let r = store
        .complete_enrollment(
            Uuid::now_v7(),
            &second,
            &token_for(second.id),
            &enroll_audit(&second),
        )
        .await;
    assert!(is_conflict(&r, Conflict::ChallengeUsed), "{r:?}");

    // Expired.
    let expired = enroll_challenge(&second.public_key, now() - Duration::seconds(1));
    store.insert_challenge(&expired).await.unwrap();
    let r = store
        .complete_enrollment(
            expired.id,
            &second,
            &token_for(second.id),
            &enroll_audit(&second),
        )
        .await;
    assert!(is_conflict(&r, Conflict::ChallengeUsed), "{r:?}");
    assert_eq!(store.agent_by_handle("second").await.unwrap(), None);

    // One failure short of the limit: still usable.
    let almost = enroll_challenge(&second.public_key, now() + Duration::minutes(5));
    store.insert_challenge(&almost).await.unwrap();
    for n in 1..MAX_CHALLENGE_FAILURES {
        assert_eq!(store.record_challenge_failure(almost.id).await.unwrap(), n);
    }
    store
        .complete_enrollment(
            almost.id,
            &second,
            &token_for(second.id),
            &enroll_audit(&second),
        )
        .await
        .unwrap();

    // Locked after MAX_CHALLENGE_FAILURES bad signatures.
    let third = new_agent("third", &[]);
    let locked = enroll_challenge(&third.public_key, now() + Duration::minutes(5));
    store.insert_challenge(&locked).await.unwrap();
    for n in 1..=MAX_CHALLENGE_FAILURES {
        assert_eq!(store.record_challenge_failure(locked.id).await.unwrap(), n);
    }
    assert_eq!(
        store.challenge(locked.id).await.unwrap().unwrap().failures,
        MAX_CHALLENGE_FAILURES
    );
    let r = store
        .complete_enrollment(
            locked.id,
            &third,
            &token_for(third.id),
            &enroll_audit(&third),
        )
        .await;
    assert!(is_conflict(&r, Conflict::ChallengeUsed), "{r:?}");
    assert_eq!(store.agent_by_handle("third").await.unwrap(), None);

    assert!(matches!(
        store.record_challenge_failure(Uuid::now_v7()).await,
        Err(StoreError::NotFound)
    ));

    // Purge drops only challenges that expired before the cut-off.
    assert_eq!(store.purge_challenges(now()).await.unwrap(), 1);
    assert!(store.challenge(expired.id).await.unwrap().is_none());
    assert!(store.challenge(locked.id).await.unwrap().is_some());
}

pub async fn login_challenge_single_use(store: Arc<dyn Store>) {
    let agent = enroll(&store, &[]).await;
    let c = NewChallenge {
        purpose: ChallengePurpose::Auth,
        agent_id: Some(agent.id),
        payload: None,
        ..enroll_challenge(&agent.public_key, now() + Duration::minutes(5))
    };
    store.insert_challenge(&c).await.unwrap();
    let stored = store.challenge(c.id).await.unwrap().unwrap();
    assert_eq!(stored.purpose, ChallengePurpose::Auth);
    assert_eq!(stored.agent_id, Some(agent.id));
    assert_eq!(stored.payload, None);

    let token = token_for(agent.id);
    store
        .complete_login(c.id, &token, &audit("agent.login"))
        .await
        .unwrap();
    assert_eq!(
        store
            .auth_state(token.jti, agent.id)
            .await
            .unwrap()
            .map(|s| s.revoked),
        Some(false)
    );
    let again = token_for(agent.id);
    let r = store
        .complete_login(c.id, &again, &audit("agent.login"))
        .await;
    assert!(is_conflict(&r, Conflict::ChallengeUsed), "{r:?}");
    assert_eq!(
        store.auth_state(again.jti, agent.id).await.unwrap(),
        None,
        "no token for a used challenge"
    );
}

pub async fn duplicate_handle_and_public_key(store: Arc<dyn Store>) {
    let alice = new_agent("alice", &[]);
    enroll_with(&store, alice.clone()).await;

    // Same handle, new key.
    let dup_handle = new_agent("alice", &[]);
    let c = enroll_challenge(&dup_handle.public_key, now() + Duration::minutes(5));
    store.insert_challenge(&c).await.unwrap();
    let r = store
        .complete_enrollment(
            c.id,
            &dup_handle,
            &token_for(dup_handle.id),
            &enroll_audit(&dup_handle),
        )
        .await;
    assert!(is_conflict(&r, Conflict::DuplicateHandle), "{r:?}");

    // The failed attempt rolled back whole: the challenge is still usable.
    assert!(store
        .challenge(c.id)
        .await
        .unwrap()
        .unwrap()
        .consumed_at
        .is_none());
    assert_eq!(store.agent(dup_handle.id).await.unwrap(), None);
    let renamed = NewAgent {
        handle: "alice2".to_owned(),
        ..dup_handle.clone()
    };
    store
        .complete_enrollment(
            c.id,
            &renamed,
            &token_for(renamed.id),
            &enroll_audit(&renamed),
        )
        .await
        .unwrap();

    // Same key, new handle.
    let dup_key = NewAgent {
        public_key: alice.public_key.clone(),
        ..new_agent("bob", &[])
    };
    let r = try_enroll(&store, &dup_key).await;
    assert!(is_conflict(&r, Conflict::DuplicatePublicKey), "{r:?}");
    assert_eq!(store.agent_by_handle("bob").await.unwrap(), None);

    assert_eq!(
        store
            .enrollment_conflict("alice", "pk-unused")
            .await
            .unwrap(),
        Some(Conflict::DuplicateHandle)
    );
    assert_eq!(
        store
            .enrollment_conflict("carol", &alice.public_key)
            .await
            .unwrap(),
        Some(Conflict::DuplicatePublicKey)
    );
    assert_eq!(
        store
            .enrollment_conflict("alice", &alice.public_key)
            .await
            .unwrap(),
        Some(Conflict::DuplicateHandle)
    );
    assert_eq!(
        store
            .enrollment_conflict("carol", "pk-unused")
            .await
            .unwrap(),
        None
    );

    // ensure_agent returns the existing agent for a taken handle.
    let existing = store
        .ensure_agent(&new_agent("alice", &[]), &audit("admin.ensure"))
        .await
        .unwrap();
    assert_eq!(existing.id, alice.id);
}

pub async fn concurrent_enrollment_same_handle(store: Arc<dyn Store>) {
    const N: usize = 20;
    let barrier = Arc::new(Barrier::new(N));
    let mut handles = Vec::new();
    for _ in 0..N {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let agent = new_agent("contested", &[]);
        let c = enroll_challenge(&agent.public_key, now() + Duration::minutes(5));
        store.insert_challenge(&c).await.unwrap();
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .complete_enrollment(c.id, &agent, &token_for(agent.id), &enroll_audit(&agent))
                .await
                .map(|a| a.id)
        }));
    }
    let mut winners = Vec::new();
    for h in handles {
        match h.await.unwrap() {
            Ok(id) => winners.push(id),
            Err(StoreError::Conflict(Conflict::DuplicateHandle)) => {}
            Err(e) => panic!("unexpected enrollment error: {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one enrollment wins");
    let agent = store.agent_by_handle("contested").await.unwrap().unwrap();
    assert_eq!(agent.id, winners[0]);
    assert_eq!(store.all_agents().await.unwrap().len(), 1);
    assert_eq!(
        store
            .list_audit(&AuditQuery {
                action: Some("agent.enrolled".to_owned()),
                limit: 100,
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .len(),
        1,
        "one audit row, from the winner"
    );
}
