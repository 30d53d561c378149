//! The ledger property's checks: the model against the store, after every operation and at
//! the end of a sequence.

use super::*;

impl Run<'_> {
    /// Applies to the model whatever settled since the last look, and compares it with the store.
    pub(super) async fn observe(&mut self, accepted: Expected) -> Result<(), TestCaseError> {
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
                    self.model.bonus_pool -= bonus;
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
        let pool = db(self.store.bonus_pool().await)?;
        prop_assert_eq!(pool, self.model.bonus_pool, "bonus pool");
        prop_assert!(pool >= 0);
        let report = db(self.store.verify_ledger().await)?;
        prop_assert!(report.is_clean(), "verify_ledger: {:?}", report.problems());
        prop_assert!(
            report.agents_total <= report.operator_put_in,
            "agents hold {} of {} put in",
            report.agents_total,
            report.operator_put_in
        );
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
                prop_assert_eq!(
                    b.pending_withdrawal,
                    self.model.pending[&owner],
                    "pending withdrawals of {}",
                    owner
                );
            }
            if owner != PLATFORM {
                prop_assert!(b.available >= 0 && b.escrow >= 0, "negative balance {b:?}");
            }
        }
        Ok(())
    }

    pub(super) async fn final_checks(&self) -> Result<(), TestCaseError> {
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
