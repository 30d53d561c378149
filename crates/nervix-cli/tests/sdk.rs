//! The SDK against the real server: every typed method whose route exists is called once and
//! its response decoded into the SDK's types, through a whole life of tasks and money (enroll,
//! post with an idempotency key, claim, submit, a spot check decided by a reviewer, history,
//! reputation, withdrawals approved and rejected, workflows, admin actions, token rotation and
//! revocation), plus token renewal with a short-lived token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use nervix_client::{
    AdminWithdrawalQuery, AgentKeys, AgentQuery, AuditQuery, ClaimRequest, Client, ConfigPatch,
    ContributionsQuery, Decimal2, EnrollRequest, NewReview, NewTask, NewWorkflow, NewWorkflowTask,
    ReputationHistoryQuery, ReviewQueueQuery, Role, SubmissionStatus, SubmitRequest, TaskQuery,
    TaskStatus, Transfer, WithdrawalQuery, WithdrawalRequest, WithdrawalStatus, WorkHistoryQuery,
    WorkflowStatus,
};
use nervix_server::Config;

const ANSWER: &str = "The figures for the quarter show steady growth in every region, \
    with the northern office ahead of plan and the southern office catching up after a slow \
    start. Costs stayed flat while revenue rose, so the margin improved by two points.";

fn money(text: &str) -> Decimal2 {
    text.parse().unwrap()
}

struct Server {
    _dir: tempfile::TempDir,
    url: String,
    admin: Client,
    running: nervix_server::Running,
}

async fn start(adjust: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.rate_limit_enroll_per_minute = 0;
    config.rate_limit_agent_per_second = 0;
    adjust(&mut config);
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = nervix_server::start(listener, config).await.unwrap();
    let url = format!("http://{}", running.addr);
    let admin = Client::new(&url).unwrap().with_token(admin_token);
    Server {
        _dir: dir,
        url,
        admin,
        running,
    }
}

async fn enroll(url: &str, handle: &str, capabilities: &[&str]) -> Client {
    let keys = Arc::new(AgentKeys::generate());
    let mut client = Client::new(url).unwrap();
    let request = EnrollRequest::new(handle, &keys)
        .name(format!("Agent {handle}"))
        .capabilities(capabilities.iter().copied());
    client.enroll(&keys, &request).await.unwrap();
    client.set_signing_key(keys, handle);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_typed_method_decodes_what_the_server_sends() {
    // Every accepted submission is held for a spot check, so a reviewer decides it.
    let s = start(|c| c.spot_check_rate = 1.0).await;
    let anon = Client::new(&s.url).unwrap();

    // Platform.
    assert_eq!(anon.health().await.unwrap().status, "ok");
    assert_eq!(
        anon.readiness().await.unwrap().database.as_deref(),
        Some("sqlite")
    );
    assert!(anon.metrics().await.unwrap().contains("# TYPE"));
    assert!(!anon.jwks().await.unwrap()["keys"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(anon.openapi().await.unwrap()["paths"]["/v1/tasks"].is_object());
    let stats = anon.platform_stats().await.unwrap();
    assert_eq!(stats.agents, 1, "the operator");
    assert_eq!(stats.total_paid_out, Decimal2::ZERO);

    // Agents.
    let poster = enroll(&s.url, "poster", &["planning"]).await;
    let worker = enroll(&s.url, "worker", &["writing"]).await;
    let reviewer = enroll(&s.url, "reviewer", &["writing"]).await;
    let v = worker.verify().await.unwrap();
    assert_eq!((v.agent_id.as_str(), v.role), ("worker", Role::Agent));
    let me = worker.me().await.unwrap();
    assert_eq!(me.config.as_ref().unwrap().max_concurrent_tasks, 3);
    assert_eq!(me.suspended, Some(false));
    assert!(me.encryption_public_key.is_some());
    let changed = worker
        .update_config(&ConfigPatch {
            max_concurrent_tasks: Some(4),
            agent_name: Some("The Worker".into()),
            ..ConfigPatch::default()
        })
        .await
        .unwrap();
    assert_eq!(changed.config.unwrap().max_concurrent_tasks, 4);
    assert_eq!(changed.agent_name.as_deref(), Some("The Worker"));
    let public = anon.agent("worker").await.unwrap();
    assert_eq!(public.id, me.id);
    assert!(public.config.is_none() && public.total_earnings.is_none());
    let writers = anon
        .agents(&AgentQuery {
            capability: Some("writing".into()),
            ..AgentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(writers.items.len(), 2);
    let everyone = anon
        .pages(AgentQuery {
            limit: Some(1),
            ..AgentQuery::default()
        })
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        everyone.len(),
        4,
        "three agents and the operator, a page each"
    );

    // Money from the operator.
    let granted = s
        .admin
        .grant("poster", &Transfer::new(money("50.00")).memo("seed"))
        .await
        .unwrap();
    assert_eq!(granted.amount, money("50.00"));
    let pool = s
        .admin
        .fund_bonus_pool(&Transfer::new(money("10.00")))
        .await
        .unwrap();
    assert_eq!(pool.balance, money("10.00"));
    assert_eq!(s.admin.bonus_pool().await.unwrap().balance, money("10.00"));

    // A task, posted twice with one idempotency key: one task, one escrow.
    let task = NewTask::new("Report", "Write it up.", money("8.00"), &["writing"])
        .due_in(chrono::Duration::hours(2));
    let a = poster.post_task(&task, Some("post-1")).await.unwrap();
    let b = poster.post_task(&task, Some("post-1")).await.unwrap();
    assert_eq!(a.id, b.id);
    assert_eq!(poster.earnings().await.unwrap().escrowed, money("8.00"));
    let open = worker.tasks(&TaskQuery::default()).await.unwrap();
    assert_eq!(open.items.iter().map(|t| t.id).collect::<Vec<_>>(), [a.id]);
    assert_eq!(worker.task(a.id).await.unwrap().title, "Report");

    // Claim, submit: held for the spot check.
    let claimed = worker.claim(a.id, &ClaimRequest::default()).await.unwrap();
    assert_eq!(claimed.task.status, TaskStatus::Claimed);
    assert!(claimed.lease_expires_at > chrono::Utc::now());
    let submitted = worker
        .submit(
            a.id,
            &SubmitRequest::text(ANSWER).notes("done"),
            Some("sub-1"),
        )
        .await
        .unwrap();
    let sub = submitted.submission;
    assert_eq!(sub.status, SubmissionStatus::PendingReview);
    assert!(sub.quality_score.unwrap() >= 60.0);
    assert!(sub.review_deadline.is_some() && sub.final_score.is_none());
    assert!(sub
        .checks
        .iter()
        .any(|c| c.name == "secret_scan" && c.passed));
    assert_eq!(poster.submission(sub.id).await.unwrap().id, sub.id);

    // A reviewer decides it.
    s.admin.set_role("reviewer", Role::Reviewer).await.unwrap();
    let queue = reviewer
        .review_queue(&ReviewQueueQuery::default())
        .await
        .unwrap();
    assert_eq!(queue.items[0].id, sub.id);
    let review = reviewer
        .review(&NewReview {
            submission_id: sub.id,
            score: 90,
            feedback: Some("Clear and complete.".into()),
        })
        .await
        .unwrap();
    assert_eq!(review.decision.as_deref(), Some("accepted"));
    let decided = review.submission.unwrap();
    assert_eq!(decided.status, SubmissionStatus::Accepted);
    let paid = decided.payout.unwrap();
    assert!(paid > Decimal2::ZERO);

    // What the worker sees of it.
    let history = worker
        .work_history(&WorkHistoryQuery::of("worker"))
        .await
        .unwrap();
    assert_eq!(history.items[0].payout, Some(paid));
    assert_eq!(history.items[0].task_title, "Report");
    let reputation = anon.reputation("worker").await.unwrap();
    assert_eq!(reputation.agent_id, "worker");
    assert!((reputation.weights.success - 0.4).abs() < 1e-9);
    anon.reputation_history(&ReputationHistoryQuery::of(me.id.to_string()))
        .await
        .unwrap();
    let earnings = worker.earnings().await.unwrap();
    assert_eq!((earnings.balance, earnings.total_earned), (paid, paid));
    let entries = worker
        .contributions(&ContributionsQuery::default())
        .await
        .unwrap();
    assert!(entries.items.iter().any(|e| e.kind == "payout"));

    // Withdrawals: one approved (requested twice with one key), one rejected.
    let request = WithdrawalRequest {
        amount: money("1.00"),
        destination: "iban:DE00".into(),
    };
    let w1 = worker
        .request_withdrawal(&request, Some("w-1"))
        .await
        .unwrap();
    let again = worker
        .request_withdrawal(&request, Some("w-1"))
        .await
        .unwrap();
    assert_eq!((w1.id, w1.status), (again.id, WithdrawalStatus::Pending));
    let w2 = worker.request_withdrawal(&request, None).await.unwrap();
    let pending = s
        .admin
        .admin_withdrawals(&AdminWithdrawalQuery {
            status: Some(WithdrawalStatus::Pending),
            ..AdminWithdrawalQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 2);
    assert_eq!(
        s.admin.approve_withdrawal(w1.id).await.unwrap().status,
        WithdrawalStatus::Paid
    );
    assert_eq!(
        s.admin.reject_withdrawal(w2.id).await.unwrap().status,
        WithdrawalStatus::Rejected
    );
    let mine = worker
        .withdrawals(&WithdrawalQuery::default())
        .await
        .unwrap();
    assert_eq!(mine.items.len(), 2);
    assert_eq!(
        worker.earnings().await.unwrap().total_withdrawn,
        money("1.00")
    );

    // Release and cancel.
    let t = poster
        .post_task(
            &NewTask::new("Another", "", money("1.00"), &[]).due_in(chrono::Duration::hours(1)),
            None,
        )
        .await
        .unwrap();
    reviewer
        .claim(t.id, &ClaimRequest::default())
        .await
        .unwrap();
    assert_eq!(
        reviewer.release(t.id).await.unwrap().status,
        TaskStatus::Available
    );
    assert_eq!(
        poster.cancel(t.id).await.unwrap().status,
        TaskStatus::Cancelled
    );

    // Workflows.
    let step = |key: &str, deps: &[&str]| NewWorkflowTask {
        key: key.into(),
        task: NewTask {
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            ..NewTask::new(format!("step {key}"), "", money("1.00"), &["writing"])
                .due_in(chrono::Duration::hours(1))
        },
    };
    let wf = poster
        .post_workflow(
            &NewWorkflow {
                name: "two steps".into(),
                tasks: vec![step("a", &[]), step("b", &["a"])],
            },
            Some("wf-1"),
        )
        .await
        .unwrap();
    assert_eq!(wf.status, WorkflowStatus::Active);
    assert_eq!(wf.tasks[1].key.as_deref(), Some("b"));
    assert_eq!(wf.tasks[1].depends_on, [wf.tasks[0].id]);
    let progress = poster.workflow(wf.id).await.unwrap().progress.unwrap();
    assert_eq!((progress.total, progress.completed), (2, 0));
    let cancelled = poster.cancel_workflow(wf.id).await.unwrap();
    assert_eq!(cancelled.status, WorkflowStatus::Cancelled);
    let last = poster
        .wait_for_workflow(wf.id, Duration::from_millis(10), |_| {})
        .await
        .unwrap();
    assert!(last.status.is_final());

    // Operator tools.
    let audit = s.admin.audit(&AuditQuery::default()).await.unwrap();
    let action = audit.items[0].action.clone();
    let only = s
        .admin
        .audit(&AuditQuery {
            action: Some(action.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(only.items.iter().all(|r| r.action == action));
    s.admin.suspend("worker").await.unwrap();
    let refused = worker.me().await.unwrap_err();
    assert_eq!(refused.status(), Some(403), "{refused}");
    s.admin.reinstate("worker").await.unwrap();
    worker.me().await.unwrap();
    let top = anon.leaderboard(Some(2)).await.unwrap();
    assert_eq!(top.items.len(), 2);
    assert_eq!(top.items[0].rank, 1);

    // Rotation revokes the old token for every clone sharing it; revocation ends it.
    let mut rotating = worker.clone();
    let old = worker.token().unwrap();
    let fresh = rotating.rotate().await.unwrap();
    assert_ne!(fresh.token, old);
    assert_eq!(worker.token().unwrap(), fresh.token, "the clone follows");
    worker.me().await.unwrap();
    let stale = Client::new(&s.url).unwrap().with_token(old);
    assert_eq!(stale.me().await.unwrap_err().status(), Some(401));
    worker.revoke().await.unwrap();
    assert_eq!(worker.me().await.unwrap_err().status(), Some(401));

    s.running.shutdown().await;
}

/// With the signing key, a client renews a token in the last part of its life by itself,
/// against the real server's challenge and token routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_renewed_before_it_expires() {
    let s = start(|c| c.token_ttl = chrono::Duration::seconds(20)).await;
    let keys = Arc::new(AgentKeys::generate());
    let mut client = Client::new(&s.url)
        .unwrap()
        // Due once less than 18 s of its 20 s remain.
        .with_renew_margin(Duration::from_secs(18));
    client
        .enroll(&keys, &EnrollRequest::new("brief", &keys))
        .await
        .unwrap();
    client.set_signing_key(keys.clone(), "brief");
    let first = client.token().unwrap();
    let first_expiry = client.token_expires_at().unwrap();

    client.me().await.unwrap();
    assert_eq!(client.token().unwrap(), first, "fresh: kept");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    client.me().await.unwrap();
    let second = client.token().unwrap();
    assert_ne!(second, first, "renewed");
    assert!(client.token_expires_at().unwrap() > first_expiry);
    // Renewal is a new login: the old token stays valid until it expires.
    let old = Client::new(&s.url).unwrap().with_token(first);
    old.verify().await.unwrap();
    assert_eq!(client.verify().await.unwrap().agent_id, "brief");

    s.running.shutdown().await;
}
