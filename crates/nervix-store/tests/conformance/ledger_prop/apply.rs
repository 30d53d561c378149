//! The ledger property's operations, applied to the store and to the model.

use super::*;

impl Run<'_> {
    pub(super) async fn apply(&mut self, op: &Op) -> Result<Expected, TestCaseError> {
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
                        prop_assert!(
                            !self.lost.contains(&(t.id, agent)),
                            "claimed again a task it released or failed"
                        );
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
                    ClaimOutcome::Excluded(_) => {
                        let excluded = db(store.excluded_agents(t.id).await)?;
                        prop_assert!(excluded.contains(&agent), "excluded without a record");
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
                    let wanted = settle(Money::from_cents(t.reward_cents), *quality, level);
                    let (s, _) = wanted.discount_for_pair(self.pair_history(&t, by));
                    let (s, _) = s.cap_bonus(Money::from_cents(self.model.bonus_pool));
                    prop_assert_eq!(submission.payout_cents, Some(s.payout().cents()));
                    return Ok(Some((
                        t.id,
                        by,
                        s.payout().cents(),
                        s.bonus.cents(),
                        s.refund.cents(),
                    )));
                }
                self.lost.insert((t.id, by));
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
                        self.lost.insert((t.id, by));
                    }
                    Err(StoreError::Conflict(Conflict::InvalidState)) => {
                        prop_assert!(!mine, "the assignee could not release")
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("release: {e:?}"))),
                }
            }
            Op::FundPool { cents } => {
                let pool = db(store
                    .fund_bonus_pool(*cents, "prop funding", &audit("admin.bonus_pool.fund"))
                    .await)?;
                self.model.bonus_pool += cents;
                self.model.move_available(PLATFORM, -cents);
                prop_assert_eq!(pool, self.model.bonus_pool);
            }
            Op::Withdraw { agent, cents } => {
                let agent = self.agents[*agent].id;
                let have = self.model.available[&agent];
                let w = NewWithdrawal {
                    id: Uuid::now_v7(),
                    agent_id: agent,
                    amount_cents: *cents,
                    destination: "prop".to_owned(),
                    at,
                };
                match store.request_withdrawal(&w, None).await {
                    Ok(w) => {
                        prop_assert!(have >= *cents, "withdrew {cents} of {have}");
                        self.model.move_available(agent, -cents);
                        *self.model.pending.entry(agent).or_default() += cents;
                        self.withdrawals.push((w, false));
                    }
                    Err(StoreError::InsufficientFunds) => {
                        prop_assert!(have < *cents, "refused {cents} of {have}");
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("withdraw: {e:?}"))),
                }
            }
            Op::Decide {
                withdrawal,
                approve,
            } => {
                if self.withdrawals.is_empty() {
                    return Ok(None);
                }
                let i = withdrawal % self.withdrawals.len();
                let (w, decided) = self.withdrawals[i].clone();
                let d = WithdrawalDecision {
                    id: w.id,
                    approve: *approve,
                    by: self.admin.id,
                    at,
                };
                match store
                    .decide_withdrawal(&d, &audit("admin.withdrawal"))
                    .await
                {
                    Ok(after) => {
                        prop_assert!(!decided, "decided twice");
                        prop_assert_eq!(after.status == WithdrawalStatus::Paid, *approve);
                        *self.model.pending.entry(w.agent_id).or_default() -= w.amount_cents;
                        if !approve {
                            self.model.move_available(w.agent_id, w.amount_cents);
                        }
                        self.withdrawals[i].1 = true;
                    }
                    Err(StoreError::Conflict(Conflict::InvalidState)) => {
                        prop_assert!(decided, "a pending withdrawal could not be decided");
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("decide: {e:?}"))),
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
}
