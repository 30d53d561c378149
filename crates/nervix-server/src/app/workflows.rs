//! DAG workflows: a set of tasks with dependencies by key, posted (and escrowed) at once.

use std::collections::HashMap;

use chrono::{SubsecRound, Utc};
use nervix_core::dag::{topo_order, DagNode};
use nervix_core::{FieldErrors, TaskSpec, TaskStatus};
use nervix_store::{NewPost, NewWorkflow, TaskRecord, WorkflowRecord, WorkflowStatus};
use serde_json::json;
use uuid::Uuid;

use super::idempotency::{self, Outcome, Render};
use super::tasks::new_task;
use super::{audit, events, App, Caller, Error, Result};

/// A workflow name: 1–200 characters after trimming.
pub fn parse_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(Error::field("name", "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// One task of a workflow as posted: its key, the keys it depends on, and its fields.
pub struct Node<'a, F> {
    pub key: &'a str,
    pub depends_on: &'a [String],
    pub fields: F,
}

/// A workflow and its tasks, in dependency order.
#[derive(Debug)]
pub struct Workflow {
    pub workflow: WorkflowRecord,
    pub tasks: Vec<TaskRecord>,
}

/// Posts a workflow: the graph is checked first (cycles, unknown keys, self-dependencies, size:
/// `invalid_dag`), then every task's fields, all reported at once; then the whole workflow is
/// escrowed and created in one transaction.
pub async fn post<F>(
    app: &App,
    caller: &Caller,
    name: String,
    nodes: &[Node<'_, F>],
    parse: impl Fn(&F, &str) -> std::result::Result<TaskSpec, FieldErrors>,
    key: Option<&idempotency::Key>,
    render: Render<Workflow>,
) -> Result<Outcome<Workflow>> {
    let dag: Vec<DagNode<'_>> = nodes
        .iter()
        .map(|n| DagNode {
            key: n.key,
            depends_on: n.depends_on,
        })
        .collect();
    let order = topo_order(&dag).map_err(|e| Error::invalid("invalid_dag", e.to_string()))?;
    let mut errs = FieldErrors::default();
    let mut ids: HashMap<&str, Uuid> = HashMap::new();
    let mut tasks = Vec::with_capacity(order.len());
    for i in order {
        let node = &nodes[i];
        match parse(&node.fields, &format!("tasks[{i}].")) {
            Ok(spec) => {
                let mut t = new_task(&spec);
                t.workflow_key = Some(node.key.to_owned());
                t.depends_on = node
                    .depends_on
                    .iter()
                    .filter_map(|k| ids.get(k.as_str()).copied())
                    .collect();
                ids.insert(node.key, t.id);
                tasks.push(t);
            }
            Err(e) => {
                errs.0.extend(e.0);
                // Keep dependents resolvable so every task's own errors are reported.
                ids.insert(node.key, Uuid::nil());
            }
        }
    }
    errs.into_result()?;
    idempotency::once(app, caller, key, |saver| async {
        let wf_id = Uuid::now_v7();
        // At the precision the databases keep: the response rendered in the post's
        // transaction must say what a later read says.
        let at = Utc::now().trunc_subsecs(6);
        // The workflow as the post stores it.
        let workflow = WorkflowRecord {
            id: wf_id,
            name: name.clone(),
            status: WorkflowStatus::Active,
            posted_by: caller.id,
            created_at: at,
            updated_at: at,
        };
        let post = NewPost {
            poster: caller.id,
            from_treasury: caller.is_admin(),
            workflow: Some(NewWorkflow {
                id: wf_id,
                name: name.clone(),
            }),
            tasks: tasks.clone(),
            at,
            audit: Some(audit::by(
                caller,
                "workflow.post",
                Some(wf_id.to_string()),
                json!({"tasks": nodes.len()}),
            )),
            notifies_first_round: true,
            reserved_for: None,
        };
        let save = saver.map(|s| {
            let (workflow, render) = (workflow.clone(), render.clone());
            s.save(move |created: &Vec<TaskRecord>| {
                let posted = Workflow {
                    workflow: workflow.clone(),
                    tasks: created.clone(),
                };
                render(&posted).ok()
            })
        });
        let created = app.store.post_tasks(&post, save).await?;
        for t in created.iter().filter(|t| t.status == TaskStatus::Available) {
            events::announce(app, t.clone());
        }
        Ok(Workflow {
            workflow,
            tasks: created,
        })
    })
    .await
}

pub async fn get(app: &App, id: Uuid) -> Result<Workflow> {
    let workflow = app
        .store
        .workflow(id)
        .await?
        .ok_or_else(|| Error::not_found("workflow"))?;
    let tasks = app.store.workflow_tasks(id).await?;
    Ok(Workflow { workflow, tasks })
}

/// Cancels a workflow (poster or admin): every open task is cancelled and refunded.
pub async fn cancel(app: &App, caller: &Caller, id: Uuid) -> Result<Workflow> {
    let wf = get(app, id).await?;
    if wf.workflow.posted_by != caller.id && !caller.is_admin() {
        return Err(Error::forbidden(
            "forbidden",
            "only the poster or an admin may cancel a workflow",
        ));
    }
    let entry = audit::by(caller, "workflow.cancel", Some(id.to_string()), json!({}));
    let (workflow, changed) = app.store.cancel_workflow(id, Utc::now(), &entry).await?;
    // Holders of cancelled tasks have a free slot again.
    for t in &wf.tasks {
        if let Some(holder) = t
            .assigned_agent_id
            .filter(|_| changed.iter().any(|c| c.id == t.id))
        {
            events::agent_changed(app, holder).await;
        }
    }
    events::tasks_changed(app, &changed).await;
    let tasks = app.store.workflow_tasks(id).await?;
    Ok(Workflow { workflow, tasks })
}
