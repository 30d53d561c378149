//! `nervix agent run --exec CMD`: turns any program into a federated worker.
//!
//! The runner listens on the agent's event stream for `task_available` offers (and looks for
//! open tasks at start and every half minute, for offers made while it was away), claims what it
//! may within `--max-concurrent`, runs CMD with the task's JSON on stdin, submits CMD's stdout and
//! prints the quality feedback. A command that fails or overruns `--timeout` gets its task
//! released for someone else. Ctrl-C stops claiming and lets running tasks finish; a second
//! Ctrl-C stops them and releases their tasks before exiting.
//!
//! CMD runs sandboxed by default (see `sandbox.rs`): a fresh folder per task, no file outside
//! it and the system's programs, no network, limits on CPU, memory and file size, and none of
//! the runner's environment (its token, its key).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use nervix_client::{
    ClaimRequest, Client, ServerEvent, SubmitRequest, Task, TaskKind, TaskQuery, TaskStatus,
};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::profile::ConnectArgs;
use crate::sandbox::{describe_exit, kill_group, Prepared, Sandbox, SandboxArgs};

/// How often the runner looks for open tasks besides the offers pushed to it.
const POLL_EVERY: Duration = Duration::from_secs(30);
/// The most of a command's output that is submitted; more is a failure, not a truncation.
const MAX_OUTPUT: usize = 4 << 20;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The worker command, run through `sh -c` for each task: the task JSON on stdin, the
    /// result on stdout. The task id is also in `$NERVIX_TASK_ID`.
    #[arg(long)]
    exec: String,
    /// Advertise these capabilities (comma-separated) before starting, so matching offers
    /// the tasks this command can do.
    #[arg(long, value_delimiter = ',')]
    capabilities: Option<Vec<String>>,
    /// Tasks held at once (also sent as the agent's `max_concurrent_tasks`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_concurrent: u32,
    /// Seconds a command may run before it is stopped and its task released.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Exit after this many tasks were submitted (for scripts and tests).
    #[arg(long)]
    max_tasks: Option<u64>,
    /// Print one JSON object per event instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything else: a runner that cannot confine its command does not start.
    let sandbox = Sandbox::new(&args.sandbox)?;
    // The profile's client holds the agent's signing key, so it renews its token before expiry
    // by itself: for its requests and for each reconnection of the stream.
    let connected = args.connect.connect()?;
    let client = connected.client.clone();
    let agent_id = connected
        .agent
        .as_ref()
        .map_or_else(|| "the agent".to_owned(), |a| a.agent_id.clone());
    let server = client.base_url().to_string();
    let mut patch = json!({"max_concurrent_tasks": args.max_concurrent});
    if let Some(caps) = &args.capabilities {
        patch["capabilities"] = json!(caps);
    }
    client
        .patch_config(&patch)
        .await
        .context("cannot update the agent's capabilities and capacity")?;
    let mut events = client
        .event_stream(None)
        .await
        .context("cannot open the event stream")?;
    let out = Output { json: args.json };
    out.event(
        "started",
        &format!(
            "working as {agent_id} on {server} (up to {} at once); Ctrl-C to stop",
            args.max_concurrent
        ),
        json!({"agent_id": agent_id}),
    );
    out.event(
        "sandbox",
        &sandbox.describe(),
        json!({"sandboxed": !args.sandbox.no_sandbox}),
    );

    let runner = Arc::new(Runner {
        client,
        exec: args.exec,
        sandbox,
        timeout: Duration::from_secs(args.timeout),
        out,
        refused: Mutex::new(HashSet::new()),
    });
    let stop_claiming = CancellationToken::new();
    let kill = CancellationToken::new();
    tokio::spawn(watch_ctrl_c(stop_claiming.clone(), kill.clone(), out));

    let mut jobs: JoinSet<Outcome> = JoinSet::new();
    let mut done = 0u64;
    let mut poll = tokio::time::interval(POLL_EVERY);
    let capacity = args.max_concurrent as usize;
    loop {
        if args.max_tasks.is_some_and(|max| done >= max) {
            stop_claiming.cancel();
        }
        if stop_claiming.is_cancelled() && jobs.is_empty() {
            break;
        }
        tokio::select! {
            _ = stop_claiming.cancelled(), if !stop_claiming.is_cancelled() => {}
            Some(joined) = jobs.join_next(), if !jobs.is_empty() => {
                if matches!(joined, Ok(Outcome::Submitted)) {
                    done += 1;
                }
            }
            _ = poll.tick(), if !stop_claiming.is_cancelled() && jobs.len() < capacity => {
                for task in runner.open_tasks().await {
                    if jobs.len() >= capacity {
                        break;
                    }
                    runner.clone().try_start(task, &mut jobs, &kill).await;
                }
            }
            event = events.next() => match event {
                Some(Ok(ev)) => match ev.event {
                    ServerEvent::TaskAvailable(offer)
                        if !stop_claiming.is_cancelled() && jobs.len() < capacity =>
                    {
                        runner.clone().try_start(offer.task_id, &mut jobs, &kill).await;
                    }
                    ServerEvent::Notification(n) => {
                        runner.out.event("notification", &format!("{}: {}", n.title, n.body), json!({"kind": n.kind, "data": n.data}));
                    }
                    ServerEvent::Earning(e) => {
                        runner.out.event("earning", &format!("earned {} for {}", e.amount, e.task_id), json!({"task_id": e.task_id, "amount": e.amount.to_string()}));
                    }
                    _ => {}
                },
                Some(Err(e)) => return Err(e).context("the event stream failed"),
                None => break,
            },
        }
    }
    events.close().await;
    runner.out.event(
        "stopped",
        &format!("stopped after {done} submitted task(s)"),
        json!({"submitted": done}),
    );
    // The client may have renewed the token: keep the new one for next time.
    connected.finish()
}

/// First Ctrl-C: stop claiming and let running tasks finish. Second: stop them too (their
/// tasks are released).
async fn watch_ctrl_c(stop_claiming: CancellationToken, kill: CancellationToken, out: Output) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    out.event(
        "stopping",
        "finishing the tasks in hand (Ctrl-C again to release them and quit)",
        json!({}),
    );
    stop_claiming.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        kill.cancel();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Submitted,
    Released,
}

struct Runner {
    client: Client,
    exec: String,
    sandbox: Sandbox,
    timeout: Duration,
    out: Output,
    /// Tasks this agent may not claim (not eligible): not tried again.
    refused: Mutex<HashSet<Uuid>>,
}

impl Runner {
    async fn open_tasks(&self) -> Vec<Uuid> {
        let query = TaskQuery {
            status: Some(TaskStatus::Available),
            eligible: Some(true),
            limit: Some(50),
            ..Default::default()
        };
        match self.client.tasks(&query).await {
            Ok(page) => {
                let refused = self.refused.lock();
                page.items
                    .into_iter()
                    .map(|t| t.id)
                    .filter(|id| !refused.contains(id))
                    .collect()
            }
            Err(e) => {
                self.out.warn(&format!("cannot list open tasks: {e}"));
                Vec::new()
            }
        }
    }

    /// Claims `task` and, when that wins, starts working on it.
    async fn try_start(
        self: Arc<Self>,
        task: Uuid,
        jobs: &mut JoinSet<Outcome>,
        kill: &CancellationToken,
    ) {
        if self.refused.lock().contains(&task) {
            return;
        }
        let client = self.client.clone();
        let request = ClaimRequest {
            // The lease covers the command's timeout (the server's minimum lease is a minute).
            estimated_duration: Some(self.timeout.as_secs().max(60)),
            agent_capabilities: None,
        };
        match client.claim(task, &request).await {
            Ok(claim) => {
                self.out.event(
                    "claimed",
                    &format!("claimed {} \"{}\"", claim.task.id, claim.task.title),
                    json!({"task_id": claim.task.id, "title": claim.task.title}),
                );
                let kill = kill.clone();
                jobs.spawn(async move { self.work(client, claim.task, kill).await });
            }
            // Someone was faster, or we are full: nothing to do.
            Err(e)
                if matches!(
                    e.code(),
                    Some("already_claimed" | "not_available" | "at_capacity")
                ) => {}
            // Not eligible, or a claim this task cannot take: do not try it again.
            Err(e) if matches!(e.status(), Some(403 | 404 | 422)) => {
                self.out.warn(&format!("not claiming {task}: {e}"));
                self.refused.lock().insert(task);
            }
            Err(e) => self.out.warn(&format!("claiming {task} failed: {e}")),
        }
    }

    async fn work(&self, client: Client, task: Task, kill: CancellationToken) -> Outcome {
        let result = run_command(&self.sandbox, &self.exec, &task, self.timeout, &kill).await;
        let output = match result {
            Ok(output) => output,
            Err(why) => return self.release(&client, &task, &why).await,
        };
        let request = match task.kind {
            // A JSON task's answer is JSON; anything else the server parses or rejects itself.
            TaskKind::Json => match serde_json::from_str::<Value>(&output) {
                Ok(v) => SubmitRequest::json(v),
                Err(_) => SubmitRequest::text(output),
            },
            _ => SubmitRequest::text(output),
        };
        let key = format!("agent-run-{}-{}", task.id, task.attempts);
        match client.submit(task.id, &request, Some(&key)).await {
            Ok(r) => {
                let s = &r.submission;
                let score = s
                    .quality_score
                    .map_or("-".to_owned(), |q| format!("{q:.1}"));
                let paid = s.payout.map(|p| format!(", paid {p}")).unwrap_or_default();
                self.out.event(
                    "submitted",
                    &format!("submitted {}: {}, quality {score}{paid}", task.id, s.status),
                    json!({"task_id": task.id, "status": s.status.to_string(),
                           "quality_score": s.quality_score, "feedback": s.feedback}),
                );
                if let Some(feedback) = s.feedback.as_deref().filter(|f| !f.is_empty()) {
                    self.out.text(&format!("  feedback: {feedback}"));
                }
                Outcome::Submitted
            }
            Err(e) => {
                self.release(&client, &task, &format!("submit failed: {e}"))
                    .await
            }
        }
    }

    async fn release(&self, client: &Client, task: &Task, why: &str) -> Outcome {
        match client.release(task.id).await {
            Ok(_) => self.out.event(
                "released",
                &format!("released {}: {why}", task.id),
                json!({"task_id": task.id, "reason": why}),
            ),
            Err(e) => self
                .out
                .warn(&format!("{}: {why}; releasing it failed too: {e}", task.id)),
        }
        Outcome::Released
    }
}

/// Runs the worker command with the task on stdin, in the sandbox and its own folder; its
/// stdout on success, or why not.
async fn run_command(
    sandbox: &Sandbox,
    exec: &str,
    task: &Task,
    timeout: Duration,
    kill: &CancellationToken,
) -> Result<String, String> {
    let input = serde_json::to_vec(task).map_err(|e| e.to_string())?;
    let Prepared {
        mut command,
        workdir,
    } = sandbox
        .command(exec, &task.id.to_string())
        .map_err(|e| format!("{e:#}"))?;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the command: {e}"))?;
    let group = child.id();
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let work = async move {
        // A command that does not read its input must not block the runner.
        let feed = async move {
            let _ = stdin.write_all(&input).await;
        };
        let mut buf = Vec::new();
        let read = async {
            let mut limited = (&mut stdout).take(MAX_OUTPUT as u64 + 1);
            limited.read_to_end(&mut buf).await
        };
        let ((), read) = tokio::join!(feed, read);
        read.map_err(|e| format!("reading its output: {e}"))?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        if buf.len() > MAX_OUTPUT {
            return Err(format!("its output is over {MAX_OUTPUT} bytes"));
        }
        if !status.success() {
            return Err(describe_exit(status));
        }
        let text = String::from_utf8(buf).map_err(|_| "its output is not UTF-8".to_owned())?;
        if text.trim().is_empty() {
            return Err("the command printed nothing".to_owned());
        }
        Ok(text)
    };
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, work) => {
            r.unwrap_or_else(|_| Err(format!("timed out after {}s", timeout.as_secs())))
        }
        _ = kill.cancelled() => Err("stopped by Ctrl-C".to_owned()),
    };
    // Whatever happened, nothing the command started outlives its task (or its folder).
    kill_group(group);
    drop(workdir);
    result
}

/// Progress lines for people, or JSON lines for programs.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn event(&self, kind: &str, text: &str, mut data: Value) {
        if self.json {
            data["event"] = json!(kind);
            data["at"] = json!(now());
            println!("{data}");
        } else {
            println!("{} {text}", now().format("%H:%M:%S"));
        }
    }

    fn text(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }
}

fn now() -> DateTime<Utc> {
    Utc::now()
}
