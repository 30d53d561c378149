//! Crash safety: `nervix serve` is killed with SIGKILL 20 times at random moments while agents
//! work through DAG workflows, and restarted each time on the same storage. Afterwards every
//! acknowledged workflow has finished, each task was posted once and paid once, no escrow is
//! left, and `nervix admin verify-ledger` is clean. On the embedded default and on PostgreSQL.
//!
//! The clients do what a careful client does when its server vanishes mid-request: they
//! retry posts and submits under the same `Idempotency-Key`, and look up the tasks they hold
//! (a claim can commit and its answer be lost).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Node, ANSWER};
use nervix_client::{
    ClaimRequest, Client, ClientError, Complexity, Decimal2, NewTask, NewWorkflow, NewWorkflowTask,
    SubmissionStatus, SubmitRequest, TaskQuery, TaskStatus, WorkflowStatus,
};
use nix::sys::signal::Signal;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const KILLS: usize = 20;
const WORKERS: usize = 4;
const REWARD_CENTS: i64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_workflows_loses_nothing_on_sqlite() {
    survive_kills(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_workflows_loses_nothing_on_postgres() {
    survive_kills(Backend::Postgres).await;
}

/// A diamond: `a` first, then `b` and `c` side by side, then `d`.
fn diamond(n: usize) -> NewWorkflow {
    let step = |key: &str, after: &[&str]| NewWorkflowTask {
        key: key.into(),
        task: NewTask {
            complexity: Complexity::Simple,
            deadline: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            depends_on: after.iter().map(|d| (*d).to_owned()).collect(),
            ..NewTask::new(
                format!("report {n} part {key}"),
                "Summarise the quarter for the planning meeting.",
                Decimal2::from_cents(REWARD_CENTS),
                &["writing"],
            )
        },
    };
    NewWorkflow {
        name: format!("report {n}"),
        tasks: vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["a"]),
            step("d", &["b", "c"]),
        ],
    }
}

/// A refusal is a bug here; anything else (no connection, a reset, a 5xx while the server
/// comes back) is the crash, and the request is retried.
fn refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status, .. } if *status < 500)
}

async fn survive_kills(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(node) = Node::fresh(dir.path(), backend).await else {
        return;
    };
    let seed: u64 = std::env::var("NERVIX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash test on {backend:?}: NERVIX_CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let admin = node.admin_client();
    let mut server = node.start().await;
    let url = node.url();
    let mut workers = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for i in 0..WORKERS {
        let client = common::enroll(&url, &format!("crash-worker-{i}"), &["writing"]).await;
        let me = client.me().await.unwrap().id;
        workers.push(tokio::spawn(work(client, me, stop.clone())));
    }
    let posting = Arc::new(AtomicBool::new(true));
    let poster = tokio::spawn(post_workflows(admin.clone(), posting.clone()));

    let started = std::time::Instant::now();
    for kill in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..900))).await;
        let status =
            common::signal_and_wait(&mut server, Signal::SIGKILL, Duration::from_secs(10)).await;
        assert!(!status.success(), "kill {kill}: {status}");
        server = node.start().await;
    }
    eprintln!("{KILLS} kills and restarts in {:?}", started.elapsed());
    posting.store(false, Ordering::SeqCst);
    let workflows = poster.await.unwrap();
    assert!(
        workflows.len() >= KILLS,
        "the workload ran through the kills: {} workflows",
        workflows.len()
    );

    // Every acknowledged workflow finishes once the server stays up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for id in &workflows {
        loop {
            let wf = admin.workflow(*id).await.unwrap();
            if wf.status == WorkflowStatus::Completed {
                break;
            }
            assert!(
                !wf.status.is_final() && tokio::time::Instant::now() < deadline,
                "workflow {id} did not complete: {wf:#?}\n{}",
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut submitted = 0;
    for w in workers {
        submitted += w.await.unwrap();
    }
    let status =
        common::signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;
    assert!(status.success(), "graceful stop after the run: {status}");

    let (ok, stdout, stderr) = node.admin("verify-ledger", &[]);
    assert!(ok, "verify-ledger:\n{stdout}{stderr}");
    assert!(stdout.contains("ledger OK"), "{stdout}");

    let store = node.store().await;
    let tasks = 4 * i64::try_from(workflows.len()).unwrap();
    let stats = store.stats(chrono::Utc::now()).await.unwrap();
    // A retried post under its key did not post again.
    assert_eq!(stats.workflows, i64::try_from(workflows.len()).unwrap());
    assert_eq!(stats.tasks_total, tasks);
    assert_eq!(stats.tasks_completed, tasks);
    for id in &workflows {
        for task in store.workflow_tasks(*id).await.unwrap() {
            assert_eq!(task.status, nervix_core::TaskStatus::Completed);
            let entries = store
                .ledger_entries(&nervix_store::LedgerQuery {
                    task_id: Some(task.id),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            let count = |kind: &str| entries.iter().filter(|e| e.kind == kind).count();
            assert_eq!(count("escrow_release"), 1, "task {}: {entries:#?}", task.id);
            assert_eq!(count("payout"), 1, "task {}: {entries:#?}", task.id);
            // Held once: the escrowing side and the escrow itself.
            assert_eq!(count("escrow_hold"), 2, "task {}: {entries:#?}", task.id);
        }
    }
    let report = store.verify_ledger().await.unwrap();
    let escrow: i64 = report
        .per_kind
        .iter()
        .filter(|k| k.kind == "escrow")
        .map(|k| k.balance)
        .sum();
    assert_eq!(escrow, 0, "no escrow stranded: {report:#?}");
    assert!(report.problems().is_empty(), "{:?}", report.problems());
    store.close().await;
    eprintln!(
        "{} workflows, {tasks} tasks, {submitted} submits acknowledged to the workers",
        workflows.len()
    );
}

/// Posts a diamond workflow every ~200 ms while `posting`, each retried under its own key
/// until acknowledged; returns the ids of every acknowledged workflow.
async fn post_workflows(admin: Client, posting: Arc<AtomicBool>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    while posting.load(Ordering::SeqCst) {
        let workflow = diamond(ids.len());
        let key = nervix_client::new_idempotency_key();
        loop {
            match admin.post_workflow(&workflow, Some(&key)).await {
                Ok(wf) => {
                    ids.push(wf.id);
                    break;
                }
                Err(e) if refused(&e) => panic!("posting a workflow: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ids
}

/// One agent: hands in what it holds (a claim may have committed without its answer reaching
/// us), else claims something; every submit carries the same key for the same task. Returns
/// how many submits were acknowledged to it.
async fn work(client: Client, me: Uuid, stop: Arc<AtomicBool>) -> usize {
    let mut acknowledged = 0;
    while !stop.load(Ordering::SeqCst) {
        let held = client
            .tasks(&TaskQuery {
                status: Some(TaskStatus::Claimed),
                eligible: Some(false),
                limit: Some(100),
                ..Default::default()
            })
            .await;
        let mut todo: Vec<Uuid> = match held {
            Ok(page) => page
                .items
                .into_iter()
                .filter(|t| t.assigned_agent_id == Some(me))
                .map(|t| t.id)
                .collect(),
            Err(e) if refused(&e) => panic!("listing held tasks: {e}"),
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if todo.is_empty() {
            if let Ok(page) = client
                .tasks(&TaskQuery {
                    limit: Some(20),
                    ..Default::default()
                })
                .await
            {
                for task in page.items {
                    // Losing a race (409) or the server (a transport error) is normal here.
                    if client
                        .claim(task.id, &ClaimRequest::default())
                        .await
                        .is_ok()
                    {
                        todo.push(task.id);
                        break;
                    }
                }
            }
        }
        for id in todo {
            let key = format!("crash-submit-{id}");
            match client
                .submit(id, &SubmitRequest::text(ANSWER), Some(&key))
                .await
            {
                Ok(done) => {
                    assert_eq!(
                        done.submission.status,
                        SubmissionStatus::Accepted,
                        "{done:?}"
                    );
                    acknowledged += 1;
                }
                Err(e) if refused(&e) => panic!("submitting {id}: {e}"),
                // Still held: found and handed in again on the next pass.
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged
}
