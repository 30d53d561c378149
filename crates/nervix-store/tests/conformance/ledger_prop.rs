//! The ledger property: whatever happens to tasks, money is conserved and every escrow is
//! settled exactly once.
//!
//! Random sequences of post / post workflow / claim / submit (accept or reject, random quality) /
//! cancel / cancel workflow / expire (deadlines or leases) / release run over three agents and
//! the treasury. Alongside, a model of every owner's `available` and `escrow` balance is kept
//! from the task statuses alone (settlement per `nervix_core::reputation::settle`), and compared
//! with the store after every operation.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nervix_core::reputation::settle;
use nervix_core::{Level, Money, Reputation, TaskStatus};
use nervix_store::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use crate::support::*;

const AGENTS: usize = 3;
/// A `poster` index of `AGENTS` means the admin, posting from the treasury.
const ADMIN: usize = AGENTS;
const DEFAULT_CASES: u32 = 24;

#[derive(Debug, Clone)]
enum Op {
    Post {
        poster: usize,
        reward: i64,
        deadline_min: i64,
        dep: Option<usize>,
        max_attempts: i64,
    },
    PostWorkflow {
        poster: usize,
        rewards: Vec<i64>,
        fan: bool,
        deadline_min: i64,
    },
    Claim {
        task: usize,
        agent: usize,
        lease_s: i64,
    },
    Submit {
        task: usize,
        accept: bool,
        quality: u8,
    },
    Cancel {
        task: usize,
    },
    CancelWorkflow {
        workflow: usize,
    },
    ExpireDeadlines {
        minutes: i64,
    },
    ExpireLeases {
        minutes: i64,
    },
    Release {
        task: usize,
        by_assignee: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=ADMIN, 1i64..=800, 5i64..=240, prop::option::weighted(0.3, 0usize..1000), 1i64..=3)
            .prop_map(|(poster, reward, deadline_min, dep, max_attempts)| Op::Post { poster, reward, deadline_min, dep, max_attempts }),
        1 => (0..=ADMIN, prop::collection::vec(1i64..=500, 2..=4), any::<bool>(), 5i64..=240)
            .prop_map(|(poster, rewards, fan, deadline_min)| Op::PostWorkflow { poster, rewards, fan, deadline_min }),
        5 => (0usize..1000, 0..AGENTS, 60i64..=3600).prop_map(|(task, agent, lease_s)| Op::Claim { task, agent, lease_s }),
        5 => (0usize..1000, prop::bool::weighted(0.6), 0u8..=100).prop_map(|(task, accept, quality)| Op::Submit { task, accept, quality }),
        1 => (0usize..1000).prop_map(|task| Op::Cancel { task }),
        1 => (0usize..1000).prop_map(|workflow| Op::CancelWorkflow { workflow }),
        1 => (0i64..=300).prop_map(|minutes| Op::ExpireDeadlines { minutes }),
        1 => (0i64..=90).prop_map(|minutes| Op::ExpireLeases { minutes }),
        1 => (0usize..1000, prop::bool::weighted(0.7)).prop_map(|(task, by_assignee)| Op::Release { task, by_assignee }),
    ]
}

pub async fn ledger_property(store: Arc<dyn Store>) {
    let cases = std::env::var("NERVIX_LEDGER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let started = std::time::Instant::now();
    let admin = admin(&store).await;
    let rt = tokio::runtime::Handle::current();
    let backend = store.backend();
    let result = tokio::task::spawn_blocking(move || {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        });
        let strategy = (
            prop::array::uniform3(0i64..=3000),
            prop::collection::vec(op(), 15..=30),
        );
        runner.run(&strategy, |(grants, ops)| {
            rt.block_on(run_sequence(&store, &admin, grants, ops))
        })
    })
    .await
    .unwrap();
    if let Err(e) = result {
        panic!("ledger property on {backend}: {e}");
    }
    eprintln!(
        "ledger property on {backend}: {cases} sequences in {:.1?}",
        started.elapsed()
    );
}

fn db<T>(r: Result<T>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("store error: {e:?}")))
}

/// What the balances should be, derived from task statuses only.
#[derive(Default)]
struct Model {
    available: HashMap<Uuid, i64>,
    escrow: HashMap<Uuid, i64>,
}

impl Model {
    fn move_available(&mut self, owner: Uuid, cents: i64) {
        *self.available.entry(owner).or_default() += cents;
    }

    fn move_escrow(&mut self, owner: Uuid, cents: i64) {
        *self.escrow.entry(owner).or_default() += cents;
    }
}

struct Run<'a> {
    store: &'a Arc<dyn Store>,
    admin: &'a AgentRecord,
    agents: Vec<AgentRecord>,
    tasks: Vec<Uuid>,
    workflows: Vec<Uuid>,
    /// Last seen state of every task.
    seen: HashMap<Uuid, TaskRecord>,
    model: Model,
    clock: DateTime<Utc>,
}

async fn run_sequence(
    store: &Arc<dyn Store>,
    admin: &AgentRecord,
    grants: [i64; AGENTS],
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut run = Run {
        store,
        admin,
        agents: Vec::new(),
        tasks: Vec::new(),
        workflows: Vec::new(),
        seen: HashMap::new(),
        model: Model::default(),
        clock: now(),
    };
    // The treasury carries over from earlier sequences: start the model from its balance.
    let platform = db(store.balances(PLATFORM).await)?;
    run.model.available.insert(PLATFORM, platform.available);
    run.model.escrow.insert(PLATFORM, platform.escrow);
    for g in grants {
        let mut a = new_agent(&unique("prop"), &[]);
        a.max_concurrent_tasks = 2;
        let a = db(try_enroll(store, &a).await)?.0;
        run.model.available.insert(a.id, 0);
        run.model.escrow.insert(a.id, 0);
        if g > 0 {
            db(store
                .grant(a.id, g, "prop grant", &audit("ledger.grant"))
                .await)?;
            run.model.move_available(a.id, g);
            run.model.move_available(PLATFORM, -g);
        }
        run.agents.push(a);
    }
    let result = run.run(ops).await;
    // Sequences share the store (and its treasury): close every task this one left open, so
    // that the expiry runs of later sequences only ever touch their own tasks.
    for id in &run.tasks {
        match store
            .cancel_task(*id, run.clock, &audit("task.cancelled"))
            .await
        {
            Ok(_) | Err(StoreError::Conflict(Conflict::InvalidState)) => {}
            Err(e) => return Err(TestCaseError::fail(format!("clean-up: {e:?}"))),
        }
    }
    result
}

/// The settlement an accepted submission should get: (task, worker, payout, bonus, refund).
type Expected = Option<(Uuid, Uuid, i64, i64, i64)>;

impl Run<'_> {
    async fn run(&mut self, ops: Vec<Op>) -> Result<(), TestCaseError> {
        for (i, op) in ops.into_iter().enumerate() {
            self.clock += Duration::seconds(30);
            let settled = self
                .apply(&op)
                .await
                .map_err(|e| TestCaseError::fail(format!("op #{i} {op:?}: {e}")))?;
            self.observe(settled)
                .await
                .map_err(|e| TestCaseError::fail(format!("after op #{i} {op:?}: {e}")))?;
        }
        self.final_checks().await
    }

    fn poster(&self, i: usize) -> &AgentRecord {
        if i >= AGENTS {
            self.admin
        } else {
            &self.agents[i]
        }
    }

    fn pick_task(&self, i: usize) -> Option<&TaskRecord> {
        if self.tasks.is_empty() {
            return None;
        }
        self.seen.get(&self.tasks[i % self.tasks.len()])
    }

    async fn apply(&mut self, op: &Op) -> Result<Expected, TestCaseError> {
        let store = self.store;
        let at = self.clock;
        match op {
            Op::Post {
                poster,
                reward,
                deadline_min,
                dep,
                max_attempts,
            } => {
                let mut t = task(*reward);
                t.deadline = at + Duration::minutes(*deadline_min);
                t.max_attempts = *max_attempts;
                let mut dep_status = None;
                if let (Some(d), false) = (dep, self.tasks.is_empty()) {
                    let upstream = self.tasks[d % self.tasks.len()];
                    dep_status = Some(self.seen[&upstream].status);
                    t.depends_on = vec![upstream];
                }
                let mut p = post(self.poster(*poster), vec![t]);
                p.at = at;
                self.post(p, dep_status).await?;
            }
            Op::PostWorkflow {
                poster,
                rewards,
                fan,
                deadline_min,
            } => {
                let mut tasks: Vec<NewTask> = Vec::new();
                let n = rewards.len();
                for (i, r) in rewards.iter().enumerate() {
                    let mut t = task(*r);
                    t.deadline = at + Duration::minutes(*deadline_min);
                    t.workflow_key = Some(format!("k{i}"));
                    if i > 0 {
                        t.depends_on = if *fan && i == n - 1 && n > 2 {
                            tasks[1..n - 1].iter().map(|t| t.id).collect()
                        } else if *fan {
                            vec![tasks[0].id]
                        } else {
                            vec![tasks[i - 1].id]
                        };
                    }
                    tasks.push(t);
                }
                let mut p = post(self.poster(*poster), tasks);
                p.at = at;
                p.workflow = Some(NewWorkflow {
                    id: Uuid::now_v7(),
                    name: "prop".to_owned(),
                });
                self.post(p, None).await?;
            }
            Op::Claim {
                task,
                agent,
                lease_s,
            } => {
                let Some(t) = self.pick_task(*task).cloned() else {
                    return Ok(None);
                };
                let agent = self.agents[*agent].id;
                let outcome = db(store
                    .claim_task(&ClaimRequest {
                        task_id: t.id,
                        agent_id: agent,
                        lease_seconds: *lease_s,
                        at,
                    })
                    .await)?;
                match outcome {
                    ClaimOutcome::Claimed(c) => {
                        prop_assert_eq!(
                            t.status,
                            TaskStatus::Available,
                            "claimed a task that was not available"
                        );
                        prop_assert_eq!(c.assigned_agent_id, Some(agent));
                    }
                    ClaimOutcome::AlreadyClaimed => {
                        prop_assert!(
                            matches!(t.status, TaskStatus::Claimed | TaskStatus::Completed),
                            "already claimed: {}",
                            t.status
                        );
                    }
                    ClaimOutcome::NotAvailable(s) => {
                        prop_assert!(s == t.status, "not available: {s} vs {}", t.status);
                    }
                    ClaimOutcome::NotEligible(_) | ClaimOutcome::AtCapacity => {}
                    other => {
                        return Err(TestCaseError::fail(format!(
                            "unexpected claim outcome {other:?}"
                        )))
                    }
                }
            }
            Op::Submit {
                task,
                accept,
                quality,
            } => {
                let Some(t) = self.pick_task(*task).cloned() else {
                    return Ok(None);
                };
                let by = t
                    .assigned_agent_id
                    .unwrap_or(self.agents[*task % AGENTS].id);
                let decision = if *accept {
                    Decision::Accept
                } else {
                    Decision::Reject
                };
                let worker =
                    db(store.agent(by).await)?.ok_or_else(|| TestCaseError::fail("no worker"))?;
                let outcome = db(store
                    .submit(&submission(t.id, by, decision, *quality, at), None)
                    .await)?;
                if t.status != TaskStatus::Claimed {
                    prop_assert_eq!(outcome, SubmitOutcome::NotAssignee);
                    return Ok(None);
                }
                let SubmitOutcome::Done {
                    submission,
                    task: after,
                    ..
                } = outcome
                else {
                    return Err(TestCaseError::fail(format!(
                        "submit by the assignee: {outcome:?}"
                    )));
                };
                if *accept {
                    prop_assert_eq!(after.status, TaskStatus::Completed);
                    let level = Level::of(
                        Reputation::from_hundredths(worker.reputation),
                        worker.tasks_completed,
                    );
                    let s = settle(Money::from_cents(t.reward_cents), *quality, level);
                    prop_assert_eq!(submission.payout_cents, Some(s.payout().cents()));
                    return Ok(Some((
                        t.id,
                        by,
                        s.payout().cents(),
                        s.bonus.cents(),
                        s.refund.cents(),
                    )));
                }
                prop_assert!(
                    after.status == TaskStatus::Available || after.status == TaskStatus::Failed,
                    "rejected task is {}",
                    after.status
                );
                prop_assert_eq!(after.attempts, t.attempts + 1);
            }
            Op::Cancel { task } => {
                let Some(t) = self.pick_task(*task).cloned() else {
                    return Ok(None);
                };
                let r = store.cancel_task(t.id, at, &audit("task.cancelled")).await;
                match r {
                    Ok((c, _)) => {
                        prop_assert!(!t.status.is_terminal(), "cancelled a {} task", t.status);
                        prop_assert_eq!(c.status, TaskStatus::Cancelled);
                    }
                    Err(StoreError::Conflict(Conflict::InvalidState)) => {
                        prop_assert!(
                            t.status.is_terminal(),
                            "could not cancel a {} task",
                            t.status
                        );
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("cancel: {e:?}"))),
                }
            }
            Op::CancelWorkflow { workflow } => {
                if self.workflows.is_empty() {
                    return Ok(None);
                }
                let id = self.workflows[workflow % self.workflows.len()];
                let before = db(store.workflow(id).await)?
                    .ok_or_else(|| TestCaseError::fail("workflow gone"))?;
                match store
                    .cancel_workflow(id, at, &audit("workflow.cancelled"))
                    .await
                {
                    Ok((w, _)) => {
                        prop_assert_eq!(before.status, WorkflowStatus::Active);
                        prop_assert_eq!(w.status, WorkflowStatus::Cancelled);
                    }
                    Err(StoreError::Conflict(Conflict::InvalidState)) => {
                        prop_assert!(
                            before.status != WorkflowStatus::Active,
                            "could not cancel an active workflow"
                        );
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("cancel workflow: {e:?}"))),
                }
            }
            Op::ExpireDeadlines { minutes } => {
                db(store
                    .expire_deadlines(at + Duration::minutes(*minutes), 1000)
                    .await)?;
            }
            Op::ExpireLeases { minutes } => {
                db(store
                    .expire_leases(
                        at + Duration::minutes(*minutes),
                        &RetryPolicy::default(),
                        1000,
                    )
                    .await)?;
            }
            Op::Release { task, by_assignee } => {
                let Some(t) = self.pick_task(*task).cloned() else {
                    return Ok(None);
                };
                let by = match (by_assignee, t.assigned_agent_id) {
                    (true, Some(a)) => a,
                    _ => self.agents[*task % AGENTS].id,
                };
                let mine = t.status == TaskStatus::Claimed && t.assigned_agent_id == Some(by);
                match store.release_task(t.id, by, at).await {
                    Ok(r) => {
                        prop_assert!(
                            mine,
                            "released a {} task held by {:?}",
                            t.status,
                            t.assigned_agent_id
                        );
                        prop_assert_eq!(r.status, TaskStatus::Available);
                        prop_assert_eq!(r.attempts, t.attempts);
                    }
                    Err(StoreError::Conflict(Conflict::InvalidState)) => {
                        prop_assert!(!mine, "the assignee could not release")
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("release: {e:?}"))),
                }
            }
        }
        Ok(None)
    }

    async fn post(
        &mut self,
        p: NewPost,
        dep_status: Option<TaskStatus>,
    ) -> Result<(), TestCaseError> {
        let funder = if p.from_treasury { PLATFORM } else { p.poster };
        let total: i64 = p.tasks.iter().map(|t| t.reward_cents).sum();
        let have = self.model.available[&funder];
        let wf = p.workflow.as_ref().map(|w| w.id);
        match self.store.post_tasks(&p, None).await {
            Ok(created) => {
                prop_assert!(
                    funder == PLATFORM || have >= total,
                    "posted {total} with {have} available"
                );
                for t in created {
                    self.model.move_available(funder, -t.reward_cents);
                    self.model.move_escrow(funder, t.reward_cents);
                    self.tasks.push(t.id);
                    self.seen.insert(t.id, t);
                }
                self.workflows.extend(wf);
            }
            Err(StoreError::InsufficientFunds) => {
                prop_assert!(
                    funder != PLATFORM && have < total,
                    "insufficient funds with {have} for {total}"
                );
            }
            Err(StoreError::Invalid { field, .. }) => {
                prop_assert_eq!(field.as_str(), "depends_on");
                let s = dep_status
                    .ok_or_else(|| TestCaseError::fail("invalid post without a dependency"))?;
                prop_assert!(
                    s.is_terminal() && s != TaskStatus::Completed,
                    "dependency is {s}"
                );
            }
            Err(e) => return Err(TestCaseError::fail(format!("post: {e:?}"))),
        }
        Ok(())
    }

    /// Applies to the model whatever settled since the last look, and compares it with the store.
    async fn observe(&mut self, accepted: Expected) -> Result<(), TestCaseError> {
        let now = db(self.store.tasks_by_ids(&self.tasks).await)?;
        prop_assert_eq!(now.len(), self.tasks.len());
        for t in now {
            let before = self.seen[&t.id].clone();
            if before.status.is_terminal() {
                // Only its count of dependents may still grow (a completed task can be depended on).
                prop_assert!(t.dependents >= before.dependents);
                let unchanged = TaskRecord {
                    dependents: before.dependents,
                    ..t.clone()
                };
                prop_assert_eq!(&unchanged, &before, "a finished task changed");
                self.seen.insert(t.id, t);
                continue;
            }
            if t.status.is_terminal() {
                let funder = t.funder();
                self.model.move_escrow(funder, -t.reward_cents);
                if t.status == TaskStatus::Completed {
                    let Some((task_id, worker, payout, bonus, refund)) = accepted else {
                        return Err(TestCaseError::fail(format!(
                            "task {} completed without an accepted submission",
                            t.id
                        )));
                    };
                    prop_assert_eq!(task_id, t.id);
                    self.model.move_available(worker, payout);
                    self.model.move_available(PLATFORM, -bonus);
                    self.model.move_available(funder, refund);
                } else {
                    self.model.move_available(funder, t.reward_cents);
                }
            }
            self.seen.insert(t.id, t);
        }
        if let Some((task_id, ..)) = accepted {
            prop_assert_eq!(self.seen[&task_id].status, TaskStatus::Completed);
        }
        db_ok(self.store.ledger_total().await, 0, "ledger total")?;
        let mismatches = db(self.store.ledger_mismatches().await)?;
        prop_assert!(mismatches.is_empty(), "ledger mismatches: {mismatches:?}");
        let held: HashMap<Uuid, i64> = db(self.store.active_task_counts().await)?
            .into_iter()
            .collect();
        for agent in db(self.store.all_agents().await)? {
            prop_assert_eq!(
                agent.active_tasks,
                held.get(&agent.id).copied().unwrap_or(0),
                "active_tasks of {}",
                agent.handle
            );
        }
        let owners: Vec<Uuid> = self.model.available.keys().copied().collect();
        for owner in owners {
            let b = db(self.store.balances(owner).await)?;
            prop_assert_eq!(
                b.available,
                self.model.available[&owner],
                "available of {}",
                owner
            );
            prop_assert_eq!(b.escrow, self.model.escrow[&owner], "escrow of {}", owner);
            if owner != PLATFORM {
                prop_assert!(b.available >= 0 && b.escrow >= 0, "negative balance {b:?}");
            }
        }
        Ok(())
    }

    async fn final_checks(&self) -> Result<(), TestCaseError> {
        let store = self.store;
        for id in &self.tasks {
            let t = &self.seen[id];
            let (holds, releases) = escrow_entries(store, t).await;
            prop_assert_eq!(
                &holds,
                &vec![t.reward_cents],
                "escrow hold of {} ({})",
                t.id,
                t.status
            );
            if t.status.is_terminal() {
                prop_assert!(t.settled, "terminal {} task {} not settled", t.status, t.id);
                prop_assert_eq!(
                    &releases,
                    &vec![-t.reward_cents],
                    "escrow release of {} ({})",
                    t.id,
                    t.status
                );
            } else {
                prop_assert!(!t.settled, "open task {} settled", t.id);
                prop_assert!(
                    releases.is_empty(),
                    "escrow of open {} task {} released",
                    t.status,
                    t.id
                );
            }
            // The status agrees with the assignment and with the dependencies.
            match t.status {
                TaskStatus::Claimed => prop_assert!(t.assigned_agent_id.is_some()),
                TaskStatus::Available | TaskStatus::Blocked => {
                    prop_assert!(t.assigned_agent_id.is_none())
                }
                _ => {}
            }
            let deps = db(store.task_dependencies(t.id).await)?;
            let dep_status: Vec<TaskStatus> = deps.iter().map(|d| self.seen[d].status).collect();
            match t.status {
                TaskStatus::Available | TaskStatus::Claimed => prop_assert!(
                    dep_status.iter().all(|s| *s == TaskStatus::Completed),
                    "{} task {} with unfinished dependencies {dep_status:?}",
                    t.status,
                    t.id
                ),
                TaskStatus::Blocked => prop_assert!(
                    dep_status.iter().any(|s| *s != TaskStatus::Completed)
                        && dep_status
                            .iter()
                            .all(|s| !s.is_terminal() || *s == TaskStatus::Completed),
                    "blocked task {} waits on {dep_status:?}",
                    t.id
                ),
                _ => {}
            }
        }
        for id in &self.workflows {
            let wf = db(store.workflow(*id).await)?
                .ok_or_else(|| TestCaseError::fail("workflow gone"))?;
            let tasks = db(store.workflow_tasks(*id).await)?;
            let all_done = tasks.iter().all(|t| t.status == TaskStatus::Completed);
            prop_assert_eq!(
                wf.status == WorkflowStatus::Completed,
                all_done,
                "workflow {} is {:?}",
                id,
                wf.status
            );
            // A workflow that can no longer complete is not reported as running.
            let doomed = tasks
                .iter()
                .any(|t| t.status.is_terminal() && t.status != TaskStatus::Completed);
            prop_assert!(
                !(doomed && wf.status == WorkflowStatus::Active),
                "workflow {} is active with tasks {:?}",
                id,
                tasks.iter().map(|t| t.status).collect::<Vec<_>>()
            );
        }
        Ok(())
    }
}

fn db_ok(r: Result<i64>, want: i64, what: &str) -> Result<(), TestCaseError> {
    let got = db(r)?;
    prop_assert_eq!(got, want, "{}", what);
    Ok(())
}
