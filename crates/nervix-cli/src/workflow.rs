//! `nervix workflow post FILE.yaml` (and `show`): a DAG of tasks in one file, with progress
//! until it is done.
//!
//! The file is the body of `POST /v1/workflows` written as YAML (or JSON):
//!
//! ```yaml
//! name: quarterly-report
//! tasks:
//!   - key: research
//!     title: Collect the figures
//!     reward: 5.00
//!     requirements: {capabilities: [research]}
//!     deadline: 2h            # an RFC 3339 time or a duration from now; default --deadline
//!   - key: write
//!     title: Write the report
//!     reward: 8.00
//!     depends_on: [research]  # keys of this file's tasks
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use nervix_client::{
    new_idempotency_key, Client, ClientError, NewWorkflow, Workflow, WorkflowStatus,
};
use serde_json::Value;
use uuid::Uuid;

use crate::output::{
    check_fields, clip, parse_deadline, parse_duration, print_json, resolve_deadline, Format,
    Table, TASK_FIELDS,
};
use crate::profile::ConnectArgs;
use crate::task::read_body;

#[derive(clap::Args)]
pub struct WorkflowArgs {
    #[command(subcommand)]
    command: WorkflowCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Subcommand)]
enum WorkflowCommand {
    /// Post a workflow from a YAML (or JSON) file and follow it until it is done.
    Post(PostArgs),
    /// Show a workflow's progress and tasks.
    Show {
        /// The workflow's UUID.
        id: Uuid,
    },
}

#[derive(clap::Args)]
struct PostArgs {
    /// The workflow file: `name` and `tasks` (each with a `key`; `depends_on` names keys).
    file: PathBuf,
    /// Return once posted instead of following the workflow to its end.
    #[arg(long)]
    no_wait: bool,
    /// Deadline of the tasks that set none: an RFC 3339 time or a duration from now.
    #[arg(long, default_value = "24h")]
    deadline: String,
    /// How often to look at the workflow while waiting.
    #[arg(long, default_value = "1s", value_parser = parse_std_duration)]
    interval: Duration,
    /// Give up waiting after this long (the workflow goes on). [default: no limit]
    #[arg(long, value_parser = parse_std_duration)]
    timeout: Option<Duration>,
    /// Sent as `Idempotency-Key` (see `nervix task post`).
    #[arg(long)]
    idempotency_key: Option<String>,
}

fn parse_std_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .map_err(|e| e.to_string())?
        .to_std()
        .map_err(|_| format!("{text:?} must not be negative"))
}

pub async fn run(args: WorkflowArgs) -> anyhow::Result<()> {
    let connected = args.connect.connect()?;
    let result = match args.command {
        WorkflowCommand::Post(post) => post_workflow(&connected.client, post, args.format).await,
        WorkflowCommand::Show { id } => {
            let wf = connected
                .client
                .workflow(id)
                .await
                .with_context(|| format!("cannot show workflow {id}"))?;
            if args.format.json {
                print_json(&wf)
            } else {
                summary(&wf);
                Ok(())
            }
        }
    };
    connected.finish()?;
    result
}

/// Reads a workflow file into the request body, checking its fields.
fn read_workflow(args: &PostArgs) -> anyhow::Result<NewWorkflow> {
    let now = Utc::now();
    let default_deadline = parse_deadline(&args.deadline, now)?;
    let mut body = read_body(&args.file)?;
    check_fields(&body, &["name", "tasks"], &[], "the workflow file")?;
    let Some(Value::Array(tasks)) = body.get_mut("tasks") else {
        bail!("the workflow file needs `tasks`: a list of tasks");
    };
    for (i, task) in tasks.iter_mut().enumerate() {
        let Value::Object(task) = task else {
            bail!("tasks[{i}]: must be a map of fields");
        };
        let at = format!("tasks[{i}]");
        check_fields(task, TASK_FIELDS, &["key"], &at)?;
        resolve_deadline(task, default_deadline, now).with_context(|| at.clone())?;
    }
    serde_json::from_value(Value::Object(body))
        .with_context(|| format!("{} is not a valid workflow", args.file.display()))
}

async fn post_workflow(client: &Client, args: PostArgs, format: Format) -> anyhow::Result<()> {
    let workflow = read_workflow(&args)?;
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(new_idempotency_key);
    let posted = match client.post_workflow(&workflow, Some(&key)).await {
        Err(ClientError::Http(_)) => client.post_workflow(&workflow, Some(&key)).await,
        other => other,
    }
    .context("posting the workflow failed")?;
    if args.no_wait {
        if format.json {
            return print_json(&posted);
        }
        println!(
            "posted workflow {} ({}): {} tasks",
            posted.id,
            posted.name,
            posted.tasks.len()
        );
        println!("follow it with `nervix workflow show {}`", posted.id);
        return Ok(());
    }

    let bar = if format.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(posted.tasks.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30.cyan/blue}] {pos}/{len} done  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    if !format.json {
        bar.println(format!("posted workflow {} ({})", posted.id, posted.name));
    }
    let update = |wf: &Workflow| {
        if let Some(p) = &wf.progress {
            bar.set_length(u64::from(p.total));
            bar.set_position(u64::from(p.completed + p.failed));
            bar.set_message(format!(
                "{} running, {} failed, {}",
                p.running, p.failed, wf.status
            ));
        }
    };
    let wait = client.wait_for_workflow(posted.id, args.interval, update);
    let done = match args.timeout {
        Some(limit) => match tokio::time::timeout(limit, wait).await {
            Ok(done) => done,
            Err(_) => {
                bar.abandon_with_message("still running");
                bail!(
                    "workflow {} not done after {}s; follow it with `nervix workflow show {}`",
                    posted.id,
                    limit.as_secs(),
                    posted.id
                );
            }
        },
        None => wait.await,
    }
    .with_context(|| format!("following workflow {} failed", posted.id))?;
    bar.finish_and_clear();

    if format.json {
        print_json(&done)?;
    } else {
        summary(&done);
    }
    if done.status != WorkflowStatus::Completed {
        bail!("workflow {} ended {}", done.id, done.status);
    }
    Ok(())
}

fn summary(wf: &Workflow) {
    println!("workflow {}  {}  {}", wf.id, wf.name, wf.status);
    if let Some(p) = &wf.progress {
        println!(
            "progress {}/{} completed ({:.0} %), {} running, {} failed",
            p.completed, p.total, p.percent, p.running, p.failed
        );
    }
    let mut table = Table::new(&["KEY", "STATUS", "REWARD", "ASSIGNED TO", "TITLE"]);
    for t in &wf.tasks {
        table.row(vec![
            t.key.clone().unwrap_or_else(|| "-".into()),
            t.status.to_string(),
            t.reward.to_string(),
            t.assigned_agent_id
                .map_or_else(|| "-".into(), |a| a.to_string()),
            clip(&t.title, 50),
        ]);
    }
    table.print();
}
