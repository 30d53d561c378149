//! Storage-only cost of the hot write paths on the embedded default, without HTTP or crypto:
//! one full enrollment (challenge insert, challenge read, the enrollment transaction) and one
//! task cycle (post with escrow, claim, accepted submission with payout).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::{Duration, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use nervix_core::{Complexity, Role, TaskKind};
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        actor_id: None,
        actor_handle: None,
        action: action.into(),
        target: None,
        client_ip: Some("127.0.0.1".into()),
        details: json!({}),
    }
}

async fn enroll(store: &Arc<dyn Store>, n: u64, role: Role) -> AgentRecord {
    let now = Utc::now();
    let key = format!("{:0>43}=", n);
    let c = NewChallenge {
        id: Uuid::now_v7(),
        purpose: ChallengePurpose::Enroll,
        agent_id: None,
        public_key: key.clone(),
        challenge: format!("nervix-enroll-v1:{n}"),
        payload: Some(json!({"agent_id": format!("a{n}")})),
        expires_at: now + Duration::minutes(5),
        created_at: now,
    };
    assert!(store
        .insert_enrollment_challenge(&c, &format!("a{n}"))
        .await
        .unwrap()
        .is_none());
    let c = store.challenge(c.id).await.unwrap().unwrap();
    let agent = NewAgent {
        id: Uuid::now_v7(),
        handle: format!("a{n}"),
        name: format!("Agent {n}"),
        public_key: key,
        encryption_public_key: None,
        capabilities: vec!["bench".into()],
        metadata: json!({}),
        max_concurrent_tasks: 100,
        role,
        created_at: now,
    };
    let token = TokenRecord {
        jti: Uuid::new_v4(),
        agent_id: agent.id,
        kid: "k".into(),
        issued_at: now,
        expires_at: now + Duration::days(90),
    };
    store
        .complete_enrollment(c.id, &agent, &token, &audit("agent.enroll"))
        .await
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store: Arc<dyn Store> = rt.block_on(async {
        Arc::new(
            // As `nervix serve` runs it (pinning is opt-in): the measurements in
            // docs/PERFORMANCE.md were taken this way.
            SqliteStore::connect(
                &url,
                &ConnectOptions {
                    sqlite_writer_cpu: WriterCpu::Auto,
                    ..ConnectOptions::default()
                },
            )
            .await
            .unwrap(),
        )
    });
    // One statement's round trip through sqlx's SQLite worker thread (`SELECT 1`): the unit
    // the hot paths pay per statement.
    c.bench_function("sqlite_round_trip", |b| {
        b.iter(|| rt.block_on(store.ping()).unwrap())
    });
    let mut n = 0u64;
    c.bench_function("sqlite_enrollment", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(enroll(&store, n, Role::Agent))
        })
    });
    let admin = rt.block_on(enroll(&store, u64::MAX / 2, Role::Admin));
    let worker = rt.block_on(enroll(&store, u64::MAX / 2 + 1, Role::Agent));
    c.bench_function("sqlite_task_cycle", |b| {
        b.iter(|| {
            rt.block_on(async {
                let now = Utc::now();
                let task = NewTask {
                    id: Uuid::now_v7(),
                    title: "bench".into(),
                    description: String::new(),
                    capabilities: vec!["bench".into()],
                    min_reputation: 0,
                    reward_cents: 100,
                    complexity: Complexity::Simple,
                    kind: TaskKind::Text,
                    output_schema: None,
                    language: None,
                    min_words: Some(20),
                    deadline: now + Duration::hours(1),
                    depends_on: vec![],
                    workflow_key: None,
                    max_attempts: 3,
                };
                let post = NewPost {
                    poster: admin.id,
                    from_treasury: true,
                    workflow: None,
                    tasks: vec![task],
                    at: now,
                    audit: None,
                    notifies_first_round: true,
                    reserved_for: None,
                };
                let t = store.post_tasks(&post, None).await.unwrap().remove(0);
                let claim = ClaimRequest {
                    task_id: t.id,
                    agent_id: worker.id,
                    lease_seconds: 600,
                    at: now,
                };
                assert!(matches!(
                    store.claim_task(&claim).await.unwrap(),
                    ClaimOutcome::Claimed(_)
                ));
                let s = NewSubmission {
                    id: Uuid::now_v7(),
                    task_id: t.id,
                    agent_id: worker.id,
                    content: json!("done"),
                    notes: None,
                    quality_score: 100,
                    checks: json!([]),
                    decision: Decision::Accept,
                    feedback: None,
                    retry: RetryPolicy::default(),
                    at: now,
                    artifacts: Vec::new(),
                };
                assert!(matches!(
                    store.submit(&s, None).await.unwrap(),
                    SubmitOutcome::Done { .. }
                ));
            })
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
