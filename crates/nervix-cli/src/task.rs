//! `nervix task post|list|show|cancel`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use chrono::Utc;
use nervix_client::{
    new_idempotency_key, Client, ClientError, Complexity, Decimal2, NewTask, Task, TaskKind,
    TaskQuery, TaskStatus,
};
use serde_json::Value;
use uuid::Uuid;

use crate::output::{
    check_fields, clip, opt_time, parse_deadline, print_json, resolve_deadline, rfc3339, Format,
    Table, TASK_FIELDS,
};
use crate::profile::ConnectArgs;

#[derive(clap::Args)]
pub struct TaskArgs {
    #[command(subcommand)]
    command: TaskCommand,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(flatten)]
    format: Format,
}

#[derive(clap::Subcommand)]
enum TaskCommand {
    /// Post a task from flags or a JSON/YAML file; its reward is escrowed from your balance.
    Post(Box<PostArgs>),
    /// List tasks: by default those you may claim (`--all` for every task).
    List(ListArgs),
    /// Show one task.
    Show {
        /// The task's UUID.
        id: Uuid,
    },
    /// Cancel a task you posted (admins: any); its escrow is refunded.
    Cancel {
        /// The task's UUID.
        id: Uuid,
    },
}

#[derive(clap::Args)]
struct PostArgs {
    /// A file with the task's body as `POST /v1/tasks` takes it (JSON, or YAML unless it ends
    /// in .json); `deadline` may be a duration such as `24h`. Flags override its fields.
    #[arg(long, short)]
    file: Option<PathBuf>,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// e.g. 12.50
    #[arg(long)]
    reward: Option<Decimal2>,
    /// Comma-separated capabilities a claimant must have.
    #[arg(long, value_delimiter = ',')]
    capabilities: Vec<String>,
    /// simple | medium | complex | expert
    #[arg(long)]
    complexity: Option<Complexity>,
    /// An RFC 3339 time or a duration from now (`2h`, `3d`). [default: 24h]
    #[arg(long)]
    deadline: Option<String>,
    /// text | json | markdown | code
    #[arg(long)]
    kind: Option<TaskKind>,
    /// Programming language of a code task.
    #[arg(long)]
    language: Option<String>,
    /// Fewest words of a text or markdown answer.
    #[arg(long)]
    min_words: Option<u32>,
    /// Attempts before the task fails.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Least reputation (0–100) a claimant must have.
    #[arg(long)]
    min_reputation: Option<f64>,
    /// Comma-separated UUIDs of tasks that must complete first.
    #[arg(long, value_delimiter = ',')]
    depends_on: Vec<Uuid>,
    /// Sent as `Idempotency-Key`: posting again with the same key and body returns the first
    /// task instead of a second one. [default: a fresh key, reused for one retry after a
    /// connection failure]
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(clap::Args)]
struct ListArgs {
    /// blocked | available | claimed | submitted | completed | failed | expired | cancelled
    #[arg(long)]
    status: Option<TaskStatus>,
    #[arg(long)]
    capability: Option<String>,
    #[arg(long)]
    complexity: Option<Complexity>,
    /// Every task, not only those you may claim.
    #[arg(long)]
    all: bool,
    /// Most tasks to show (newest first).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

pub async fn run(args: TaskArgs) -> anyhow::Result<()> {
    let connected = args.connect.connect()?;
    let result = match args.command {
        TaskCommand::Post(post) => post_task(&connected.client, *post, args.format).await,
        TaskCommand::List(list) => list_tasks(&connected.client, list, args.format).await,
        TaskCommand::Show { id } => {
            let task = connected
                .client
                .task(id)
                .await
                .with_context(|| format!("cannot show task {id}"))?;
            show(&task, args.format)
        }
        TaskCommand::Cancel { id } => {
            let task = connected
                .client
                .cancel(id)
                .await
                .with_context(|| format!("cannot cancel task {id}"))?;
            if args.format.json {
                print_json(&task)
            } else {
                println!(
                    "cancelled {} ({}); its escrow is refunded",
                    task.id, task.title
                );
                Ok(())
            }
        }
    };
    connected.finish()?;
    result
}

async fn post_task(client: &Client, args: PostArgs, format: Format) -> anyhow::Result<()> {
    let task = build_task(&args)?;
    let key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(new_idempotency_key);
    let posted = match client.post_task(&task, Some(&key)).await {
        // The request may have arrived: the same key makes the retry return that task.
        Err(ClientError::Http(_)) => client.post_task(&task, Some(&key)).await,
        other => other,
    }
    .context("posting the task failed")?;
    if format.json {
        return print_json(&posted);
    }
    println!("posted {}  {}", posted.id, posted.title);
    println!("  status    {}", posted.status);
    println!("  reward    {} (escrowed)", posted.reward);
    println!("  deadline  {}", opt_time(posted.deadline));
    Ok(())
}

fn build_task(args: &PostArgs) -> anyhow::Result<NewTask> {
    let now = Utc::now();
    let mut body = match &args.file {
        Some(path) => read_body(path)?,
        None => serde_json::Map::new(),
    };
    check_fields(&body, TASK_FIELDS, &[], "the task file")?;
    let default_deadline = now + chrono::Duration::hours(24);
    if let Some(text) = &args.deadline {
        body.insert(
            "deadline".into(),
            Value::String(rfc3339(parse_deadline(text, now)?)),
        );
    }
    resolve_deadline(&mut body, default_deadline, now)?;
    // Flags may stand in for what the file lacks: fill the two required fields before parsing.
    if let Some(title) = &args.title {
        body.insert("title".into(), Value::String(title.clone()));
    }
    if let Some(reward) = args.reward {
        body.insert("reward".into(), Value::String(reward.to_string()));
    }
    if !body.contains_key("title") {
        bail!("a task needs a title: pass --title or a --file with one");
    }
    if !body.contains_key("reward") {
        bail!("a task needs a reward: pass --reward (e.g. 12.50) or a --file with one");
    }
    let mut task: NewTask =
        serde_json::from_value(Value::Object(body)).context("the task is not valid")?;
    if let Some(d) = &args.description {
        task.description.clone_from(d);
    }
    if !args.capabilities.is_empty() {
        task.requirements
            .capabilities
            .clone_from(&args.capabilities);
    }
    if let Some(c) = args.complexity {
        task.complexity = c;
    }
    if let Some(k) = args.kind {
        task.kind = Some(k);
    }
    if let Some(l) = &args.language {
        task.language = Some(l.clone());
    }
    if args.min_words.is_some() {
        task.min_words = args.min_words;
    }
    if args.max_attempts.is_some() {
        task.max_attempts = args.max_attempts;
    }
    if args.min_reputation.is_some() {
        task.requirements.min_reputation = args.min_reputation;
    }
    if !args.depends_on.is_empty() {
        task.depends_on = args.depends_on.iter().map(Uuid::to_string).collect();
    }
    Ok(task)
}

/// A JSON or YAML file holding one object.
pub fn read_body(path: &Path) -> anyhow::Result<serde_json::Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?
    } else {
        serde_norway::from_str(&text)
            .with_context(|| format!("{} is not YAML (or JSON)", path.display()))?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => bail!("{} must hold a map of fields", path.display()),
    }
}

async fn list_tasks(client: &Client, args: ListArgs, format: Format) -> anyhow::Result<()> {
    let query = TaskQuery {
        status: args.status,
        capability: args.capability,
        complexity: args.complexity,
        eligible: args.all.then_some(false),
        limit: Some(u32::try_from(args.limit.clamp(1, 200)).unwrap_or(200)),
        cursor: None,
    };
    let mut pages = client.pages(query);
    let mut tasks = Vec::new();
    let mut more = false;
    while let Some(task) = pages.try_next().await.context("listing tasks failed")? {
        if tasks.len() == args.limit {
            more = true;
            break;
        }
        tasks.push(task);
    }
    if format.json {
        return print_json(&tasks);
    }
    if tasks.is_empty() {
        println!("no tasks");
        return Ok(());
    }
    let mut table = Table::new(&["ID", "STATUS", "REWARD", "COMPLEXITY", "DEADLINE", "TITLE"]);
    for t in &tasks {
        table.row(vec![
            t.id.to_string(),
            t.status.to_string(),
            t.reward.to_string(),
            t.complexity.to_string(),
            opt_time(t.deadline),
            clip(&t.title, 60),
        ]);
    }
    table.print();
    if more {
        println!("(first {}; --limit shows more)", tasks.len());
    }
    Ok(())
}

fn show(task: &Task, format: Format) -> anyhow::Result<()> {
    if format.json {
        return print_json(task);
    }
    let line = |k: &str, v: String| println!("{k:<13}{v}");
    line("id", task.id.to_string());
    line("title", task.title.clone());
    line("status", task.status.to_string());
    line("reward", task.reward.to_string());
    line("complexity", task.complexity.to_string());
    line("kind", task.kind.to_string());
    if let Some(lang) = &task.language {
        line("language", lang.clone());
    }
    line(
        "capabilities",
        if task.requirements.capabilities.is_empty() {
            "-".to_owned()
        } else {
            task.requirements.capabilities.join(", ")
        },
    );
    if let Some(min) = task.requirements.min_reputation.filter(|m| *m > 0.0) {
        line("min rep.", format!("{min:.2}"));
    }
    line("deadline", opt_time(task.deadline));
    line(
        "attempts",
        format!("{} of {}", task.attempts, task.max_attempts),
    );
    line(
        "assigned to",
        task.assigned_agent_id
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
    );
    if task.lease_expires_at.is_some() {
        line("lease until", opt_time(task.lease_expires_at));
    }
    if !task.depends_on.is_empty() {
        let deps: Vec<String> = task.depends_on.iter().map(Uuid::to_string).collect();
        line("depends on", deps.join(", "));
    }
    if let Some(wf) = task.workflow_id {
        line(
            "workflow",
            match &task.key {
                Some(key) => format!("{wf} (key {key})"),
                None => wf.to_string(),
            },
        );
    }
    line("posted", rfc3339(task.created_at));
    line("updated", rfc3339(task.updated_at));
    if !task.description.is_empty() {
        println!();
        println!("{}", task.description);
    }
    Ok(())
}
