//! The ledger property: whatever happens to tasks, money is conserved and every escrow is
//! settled exactly once.
//!
//! Random sequences of post / post workflow / claim / submit (accept or reject, random quality) /
//! cancel / cancel workflow / expire (deadlines or leases) / release / bonus pool funding /
//! withdrawal requests and decisions run over three agents (the first past probation, so that
//! it earns level bonuses) and the treasury. Alongside, a model of every owner's `available`,
//! `escrow` and pending withdrawals and of the bonus pool is kept from the task statuses alone
//! (settlement per `nervix_core::reputation::settle`, the bonus discounted for the pair of
//! poster and worker, then cut to the pool), and compared with the store after every
//! operation; `verify_ledger` must find nothing, and agents together never hold more than the
//! operator put in.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use nervix_core::reputation::{settle, PairHistory};
use nervix_core::{Level, Money, Reputation, TaskStatus};
use nervix_store::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use crate::support::*;

// Applying the operations to the store and the model.
mod apply;
// Comparing the model with the store.
mod check;

nervix_store::backend_matrix! {
    run = crate::support::run;
    ledger_property [multi],
}

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
    FundPool {
        cents: i64,
    },
    Withdraw {
        agent: usize,
        cents: i64,
    },
    Decide {
        withdrawal: usize,
        approve: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..=ADMIN, 1i64..=800, 5i64..=240, prop::option::weighted(0.3, 0usize..1000), 1i64..=3)
            .prop_map(|(poster, reward, deadline_min, dep, max_attempts)| Op::Post { poster, reward, deadline_min, dep, max_attempts }),
        1 => (0..=ADMIN, prop::collection::vec(1i64..=500, 2..=4), any::<bool>(), 5i64..=240)
            .prop_map(|(poster, rewards, fan, deadline_min)| Op::PostWorkflow { poster, rewards, fan, deadline_min }),
        5 => (0usize..1000, 0..AGENTS, 60i64..=3600).prop_map(|(task, agent, lease_s)| Op::Claim { task, agent, lease_s }),
        // Half the qualities high enough (above 83) for a ×1.2 level to want a bonus.
        5 => (0usize..1000, prop::bool::weighted(0.6), prop_oneof![0u8..=100, 84u8..=100]).prop_map(|(task, accept, quality)| Op::Submit { task, accept, quality }),
        1 => (0usize..1000).prop_map(|task| Op::Cancel { task }),
        1 => (0usize..1000).prop_map(|workflow| Op::CancelWorkflow { workflow }),
        1 => (0i64..=300).prop_map(|minutes| Op::ExpireDeadlines { minutes }),
        1 => (0i64..=90).prop_map(|minutes| Op::ExpireLeases { minutes }),
        1 => (0usize..1000, prop::bool::weighted(0.7)).prop_map(|(task, by_assignee)| Op::Release { task, by_assignee }),
        1 => (1i64..=300).prop_map(|cents| Op::FundPool { cents }),
        2 => (0..AGENTS, 1i64..=1500).prop_map(|(agent, cents)| Op::Withdraw { agent, cents }),
        2 => (0usize..1000, any::<bool>()).prop_map(|(withdrawal, approve)| Op::Decide { withdrawal, approve }),
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
    pending: HashMap<Uuid, i64>,
    bonus_pool: i64,
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
    /// Withdrawals requested, with whether they were decided yet.
    withdrawals: Vec<(WithdrawalRecord, bool)>,
    /// (task, agent) pairs where the agent released the task or had a submission rejected.
    lost: std::collections::HashSet<(Uuid, Uuid)>,
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
        withdrawals: Vec::new(),
        lost: Default::default(),
        seen: HashMap::new(),
        model: Model::default(),
        clock: now(),
    };
    // The treasury carries over from earlier sequences: start the model from its balance.
    let platform = db(store.balances(PLATFORM).await)?;
    run.model.available.insert(PLATFORM, platform.available);
    run.model.escrow.insert(PLATFORM, platform.escrow);
    run.model.bonus_pool = db(store.bonus_pool().await)?;
    for g in grants {
        let mut a = new_agent(&unique("prop"), &[]);
        a.max_concurrent_tasks = 2;
        let a = db(try_enroll(store, &a).await)?.0;
        run.model.available.insert(a.id, 0);
        run.model.escrow.insert(a.id, 0);
        run.model.pending.insert(a.id, 0);
        if g > 0 {
            db(store
                .grant(a.id, g, "prop grant", &audit("ledger.grant"))
                .await)?;
            run.model.move_available(a.id, g);
            run.model.move_available(PLATFORM, -g);
        }
        run.agents.push(a);
    }
    // The first agent finishes probation (five treasury tasks at quality 100, novice pay), so
    // that its work wants a level bonus.
    let veteran = run.agents[0].id;
    for _ in 0..nervix_core::reputation::PROBATION_TASKS {
        let mut p = post(admin, vec![task(100)]);
        p.at = run.clock;
        let t = db(store.post_tasks(&p, None).await)?.remove(0);
        db(store.claim_task(&claim_req(t.id, veteran, run.clock)).await)?;
        db(store
            .submit(
                &submission(t.id, veteran, Decision::Accept, 100, run.clock),
                None,
            )
            .await)?;
        run.model.move_available(PLATFORM, -100);
        run.model.move_available(veteran, 100);
    }
    // Something in the bonus pool from the start, so that the veteran's bonuses (and their
    // pair discounts) are paid often, not only after a random funding.
    db(store
        .fund_bonus_pool(1000, "prop start", &audit("admin.bonus_pool.fund"))
        .await)?;
    run.model.bonus_pool += 1000;
    run.model.move_available(PLATFORM, -1000);
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

    /// The pair `worker` and `t`'s poster form, from the tasks completed so far (each one
    /// accepted submission); the treasury's tasks are no pair.
    fn pair_history(&self, t: &TaskRecord, worker: Uuid) -> PairHistory {
        if t.funded_by_treasury {
            return PairHistory::default();
        }
        let completed = |poster: Uuid, by: Uuid| {
            self.seen
                .values()
                .filter(|x| {
                    x.status == TaskStatus::Completed
                        && !x.funded_by_treasury
                        && x.posted_by == poster
                        && x.assigned_agent_id == Some(by)
                })
                .count()
        };
        PairHistory {
            earlier: u32::try_from(completed(t.posted_by, worker)).unwrap_or(u32::MAX),
            reciprocal: completed(worker, t.posted_by) > 0,
        }
    }

    fn pick_task(&self, i: usize) -> Option<&TaskRecord> {
        if self.tasks.is_empty() {
            return None;
        }
        self.seen.get(&self.tasks[i % self.tasks.len()])
    }
}
