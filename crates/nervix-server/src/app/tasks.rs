//! Tasks: post (escrowed), list, claim (one conditional write), submit (checked, then paid or
//! retried), release, cancel; and submissions.

use chrono::Utc;
use nervix_core::dag::MAX_WORKFLOW_TASKS;
use nervix_core::quality::{
    feedback, normalize_content, quality_score, CheckResult, Submission, DEFAULT_MIN_WORDS,
};
use nervix_core::reputation::Reputation;
use nervix_core::{Complexity, Lease, Level, Money, Notes, Role, TaskSpec, TaskStatus};
use nervix_store::{
    ClaimOutcome, ClaimRequest, Decision, EligibilityFilter, NewPost, NewSubmission, NewTask,
    SubmissionRecord, SubmitOutcome, TaskQuery, TaskRecord,
};
use serde_json::Value;
use uuid::Uuid;

use super::idempotency::{self, Outcome, Render};

use super::{
    artifacts, audit, events, notifications, receipts, App, Caller, Error, ErrorKind, Result,
};
use crate::bus::Frame;

/// The row a spec becomes; its place in a workflow (key, dependencies) is the caller's.
pub fn new_task(spec: &TaskSpec) -> NewTask {
    NewTask {
        id: Uuid::now_v7(),
        title: spec.title().to_owned(),
        description: spec.description().to_owned(),
        capabilities: spec.capabilities().as_slice().to_vec(),
        min_reputation: spec.min_reputation().hundredths(),
        reward_cents: spec.reward().money().cents(),
        complexity: spec.complexity(),
        kind: spec.kind(),
        output_schema: spec.output_schema().cloned(),
        language: spec.language().map(str::to_owned),
        min_words: spec.min_words().map(i64::from),
        deadline: spec.deadline(),
        depends_on: Vec::new(),
        workflow_key: None,
        max_attempts: spec.max_attempts(),
    }
}

/// Parses `depends_on` of a single task: upstream task UUIDs, sorted and deduplicated.
pub fn parse_dependencies(raw: &[String]) -> Result<Vec<Uuid>> {
    if raw.len() > MAX_WORKFLOW_TASKS {
        return Err(Error::field("depends_on", "too many dependencies"));
    }
    let mut deps = raw
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Uuid::parse_str(d.trim())
                .map_err(|_| Error::field(format!("depends_on[{i}]"), "must be a task UUID"))
        })
        .collect::<Result<Vec<_>>>()?;
    deps.sort_unstable();
    deps.dedup();
    Ok(deps)
}

/// Posts one task; its reward is escrowed from the poster (admins: the platform treasury).
/// With `reserved_for`, only that agent is offered it and may claim it.
pub async fn post(
    app: &App,
    caller: &Caller,
    spec: &TaskSpec,
    depends_on: Vec<Uuid>,
    reserved_for: Option<Uuid>,
    key: Option<&idempotency::Key>,
    render: Render<TaskRecord>,
) -> Result<Outcome<TaskRecord>> {
    idempotency::once(app, caller, key, |saver| async {
        let mut task = new_task(spec);
        task.depends_on = depends_on;
        let post = NewPost {
            poster: caller.id,
            from_treasury: caller.is_admin(),
            workflow: None,
            tasks: vec![task],
            at: Utc::now(),
            audit: None,
            notifies_first_round: true,
            reserved_for,
        };
        let save = saver.map(|s| {
            s.save(move |created: &Vec<TaskRecord>| created.first().and_then(|t| render(t).ok()))
        });
        let created = app.store.post_tasks(&post, save).await?;
        let t = created
            .into_iter()
            .next()
            .ok_or_else(|| Error::internal("post created no task"))?;
        if t.status == TaskStatus::Available {
            events::announce(app, t.clone());
        }
        Ok(t)
    })
    .await
}

/// Filters of the task list, parsed.
#[derive(Debug, Default)]
pub struct Filter {
    pub status: Option<TaskStatus>,
    pub capability: Option<String>,
    pub complexity: Option<Complexity>,
    /// Only tasks the caller may claim now. Default: true for agents, false for others.
    pub eligible: Option<bool>,
}

/// Up to `limit` tasks after the cursor, newest first.
pub async fn list(
    app: &App,
    caller: &Caller,
    f: Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskRecord>> {
    let eligible_for = if f.eligible.unwrap_or(caller.role == Role::Agent) {
        let me = app
            .store
            .agent(caller.id)
            .await?
            .ok_or_else(|| Error::not_found("agent"))?;
        let level = Level::of(
            Reputation::from_hundredths(me.reputation),
            me.tasks_completed,
        );
        Some(EligibilityFilter {
            agent_id: me.id,
            reputation: me.reputation,
            complexities: Complexity::ALL
                .iter()
                .copied()
                .filter(|c| level.allows(*c))
                .collect(),
            now: Utc::now(),
        })
    } else {
        None
    };
    let q = TaskQuery {
        status: f.status,
        capability: f.capability,
        complexity: f.complexity,
        posted_by: None,
        assigned_to: None,
        eligible_for,
        before,
        limit,
    };
    Ok(app.store.list_tasks(&q).await?)
}

pub async fn get(app: &App, id: Uuid) -> Result<TaskRecord> {
    app.store
        .task(id)
        .await?
        .ok_or_else(|| Error::not_found("task"))
}

/// Claims a task for the caller. Exactly one of any number of concurrent claimers wins.
pub async fn claim(app: &App, caller: &Caller, id: Uuid, lease: Lease) -> Result<TaskRecord> {
    let outcome = app
        .store
        .claim_task(&ClaimRequest {
            task_id: id,
            agent_id: caller.id,
            lease_seconds: lease.seconds(),
            at: Utc::now(),
        })
        .await?;
    match outcome {
        ClaimOutcome::Claimed(t) => {
            events::agent_changed(app, caller.id).await;
            events::task_changed(app, &t).await;
            Ok(t)
        }
        ClaimOutcome::AlreadyClaimed => Err(Error::conflict(
            "already_claimed",
            "another agent claimed this task first",
        )),
        ClaimOutcome::NotAvailable(TaskStatus::Available) => Err(Error::conflict(
            "not_available",
            "task is in retry back-off; try again later",
        )),
        ClaimOutcome::NotAvailable(s) => {
            Err(Error::conflict("not_available", format!("task is {s}")))
        }
        ClaimOutcome::NotEligible(why) => Err(Error::forbidden("not_eligible", why.to_string())),
        ClaimOutcome::Excluded(why) => Err(Error::forbidden("not_eligible", why.detail())),
        ClaimOutcome::Reserved => Err(Error::forbidden(
            "not_eligible",
            "this task is offered to another agent only",
        )),
        ClaimOutcome::AtCapacity => Err(Error::new(
            ErrorKind::AtCapacity,
            "at_capacity",
            "you hold max_concurrent_tasks tasks already",
        )),
        ClaimOutcome::TaskNotFound => Err(Error::not_found("task")),
        ClaimOutcome::AgentNotFound => Err(Error::unauthenticated("unknown agent")),
    }
}

/// Work handed in for a claimed task.
#[derive(Debug, Clone)]
pub struct Work {
    /// A string; for `kind: json` a JSON value (a string holding JSON is parsed too).
    pub content: Value,
    pub notes: Option<Notes>,
    /// Uploaded artifacts the submission references (`POST /v1/tasks/{id}/artifacts`).
    pub artifacts: Vec<Uuid>,
}

/// A decided submission and the task after it.
#[derive(Debug)]
pub struct Submitted {
    pub submission: SubmissionRecord,
    pub task: TaskRecord,
}

/// Submits work (assignee only). The checks run before the decision, which is stored with
/// its payout (or retry) in one transaction.
pub async fn submit(
    app: &App,
    caller: &Caller,
    id: Uuid,
    work: Work,
    key: Option<&idempotency::Key>,
    render: Render<Submitted>,
) -> Result<Outcome<Submitted>> {
    idempotency::once(app, caller, key, |saver| async {
        let task = get(app, id).await?;
        if task.assigned_agent_id != Some(caller.id) || task.status != TaskStatus::Claimed {
            return Err(if task.assigned_agent_id == Some(caller.id) {
                Error::conflict("invalid_state", format!("task is {}", task.status))
            } else {
                Error::forbidden("not_assignee", "only the agent holding the task may submit")
            });
        }
        let content = normalize_content(task.kind, &work.content)?;
        let checks = app.checks.run(&Submission {
            kind: task.kind,
            output_schema: task.output_schema.as_ref(),
            language: task.language.as_deref(),
            // Set for every text and markdown task (migration 0006 filled older rows).
            min_words: task
                .min_words
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(DEFAULT_MIN_WORDS),
            content: &content,
        });
        // The files' checks count with the content's: a secret in an attachment is as
        // much a leak as one in the text.
        let files = artifacts::for_submission(app, caller, id, &work.artifacts).await?;
        let mut checks = checks;
        for file in &files {
            checks.extend(artifact_checks(file));
        }
        let score = quality_score(&checks);
        let threshold = app.config.accept_threshold;
        let now = Utc::now();
        let decision = app.spot_checks.decide(score, threshold, now);
        let feedback = match decision {
            Decision::Hold { review_deadline } => format!(
                "{}; held for a spot check: payment waits for a reviewer, or is made on this \
                 score after {}",
                feedback(&checks, score, threshold),
                review_deadline.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            _ => feedback(&checks, score, threshold),
        };
        let save = saver.map(|s| {
            s.save(move |outcome: &SubmitOutcome| match outcome {
                SubmitOutcome::Done {
                    submission, task, ..
                } => render(&Submitted {
                    submission: submission.clone(),
                    task: task.clone(),
                })
                .ok(),
                _ => None,
            })
        });
        let submission = NewSubmission {
            id: Uuid::now_v7(),
            task_id: id,
            agent_id: caller.id,
            content,
            notes: work.notes.map(Notes::into_inner),
            quality_score: score,
            checks: serde_json::to_value(&checks).map_err(Error::internal)?,
            decision,
            feedback: Some(feedback),
            retry: app.config.retry,
            at: now,
            artifacts: work.artifacts,
        };
        let outcome = app.store.submit(&submission, save).await?;
        let SubmitOutcome::Done {
            submission,
            task,
            unblocked,
            cancelled,
        } = outcome
        else {
            return Err(Error::conflict(
                "invalid_state",
                "the task is no longer held by you",
            ));
        };
        receipts::decided(app, &submission);
        events::agent_changed(app, caller.id).await;
        events::task_changed(app, &task).await;
        events::tasks_changed(app, &unblocked).await;
        events::tasks_changed(app, &cancelled).await;
        if let Some(payout) = submission.payout_cents {
            let frame = Frame::Earning {
                task_id: task.id,
                amount: Money::from_cents(payout),
            };
            events::to_agent(app, caller.id, frame).await;
        }
        notifications::submission_decided(app, &submission, &task).await;
        Ok(Submitted { submission, task })
    })
    .await
}

/// Gives a claimed task back (assignee only); no attempt is counted.
pub async fn release(app: &App, caller: &Caller, id: Uuid) -> Result<TaskRecord> {
    let t = get(app, id).await?;
    if t.assigned_agent_id != Some(caller.id) {
        return Err(Error::forbidden(
            "not_assignee",
            "only the agent holding the task may release it",
        ));
    }
    let t = app.store.release_task(id, caller.id, Utc::now()).await?;
    events::agent_changed(app, caller.id).await;
    events::task_changed(app, &t).await;
    Ok(t)
}

/// Cancels a task (poster or admin): the escrow is refunded and open dependents are cancelled
/// (and refunded) with it; every task whose status changed is announced.
pub async fn cancel(app: &App, caller: &Caller, id: Uuid) -> Result<TaskRecord> {
    let t = get(app, id).await?;
    if t.posted_by != caller.id && !caller.is_admin() {
        return Err(Error::forbidden(
            "forbidden",
            "only the poster or an admin may cancel a task",
        ));
    }
    let entry = audit::by(
        caller,
        "task.cancel",
        Some(id.to_string()),
        serde_json::json!({}),
    );
    let (cancelled, cascaded) = app.store.cancel_task(id, Utc::now(), &entry).await?;
    if let Some(holder) = t.assigned_agent_id {
        events::agent_changed(app, holder).await;
    }
    events::task_changed(app, &cancelled).await;
    events::tasks_changed(app, &cascaded).await;
    Ok(cancelled)
}

/// A submission: visible to its submitter, the task's poster, reviewers and admins. Anyone
/// else is told it does not exist.
/// An artifact's stored checks, their details naming the file.
fn artifact_checks(file: &nervix_store::ArtifactRecord) -> Vec<CheckResult> {
    let name = file
        .filename
        .clone()
        .unwrap_or_else(|| format!("artifact {}", file.id));
    serde_json::from_value::<Vec<CheckResult>>(file.checks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            c.details = format!("{name}: {}", c.details);
            c
        })
        .collect()
}

pub async fn submission(app: &App, caller: &Caller, id: Uuid) -> Result<SubmissionRecord> {
    let s = app
        .store
        .submission(id)
        .await?
        .ok_or_else(|| Error::not_found("submission"))?;
    let allowed =
        s.agent_id == caller.id || matches!(caller.role, Role::Admin | Role::Reviewer) || {
            let t = app.store.task(s.task_id).await?;
            t.is_some_and(|t| t.posted_by == caller.id)
        };
    if !allowed {
        return Err(Error::not_found("submission"));
    }
    Ok(s)
}
