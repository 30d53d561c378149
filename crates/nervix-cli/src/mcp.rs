//! `nervix mcp`: the saved agent as a Model Context Protocol server over stdio.
//!
//! An MCP-capable assistant starts this command and works in the federation through its
//! tools: find the tasks it may claim, read one, claim it, submit the work (and read the
//! quality feedback), release it, check earnings and reputation, and exchange end-to-end
//! encrypted messages, sealed and opened here with the agent's key (the server relays
//! ciphertext only).
//!
//! stdout is the protocol's channel: nothing else may ever be printed there. A tool that
//! fails answers with a sentence an assistant can act on (the API's problem title, detail
//! and code), flagged `isError`, rather than a protocol error the assistant never sees.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use nervix_client::{
    AgentKeys, ClaimRequest, Client, ClientError, Complexity, Message, MessageHistoryQuery,
    SubmitRequest, Task, TaskKind, TaskQuery, TaskStatus,
};
use parking_lot::Mutex;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{tool, tool_handler, tool_router, ServerHandler, ServiceExt as _};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::profile::{load_config, save_config, AgentConfig, ConfigArg};

#[derive(clap::Args)]
pub struct McpArgs {
    /// Server base URL. [default: the profile's]
    #[arg(long, env = "NERVIX_SERVER")]
    server: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

pub async fn run(args: McpArgs) -> anyhow::Result<()> {
    let path = args.config.resolve()?;
    let profile = load_config(&path)?;
    // The key is not optional here as it is for the other commands: without it the server could
    // neither renew the token over a long session nor open a single message.
    let keys = AgentKeys::load(&profile.key_path).with_context(|| {
        format!(
            "cannot load the agent key {} named by {}",
            profile.key_path.display(),
            path.display()
        )
    })?;
    let server = args.server.unwrap_or_else(|| profile.server.clone());
    let keys = Arc::new(keys);
    let client = Client::new(&server)?
        .with_token(profile.token.clone())
        .with_signing_key(keys.clone(), profile.agent_id.clone());
    eprintln!(
        "nervix mcp: serving {} on {server} over stdio",
        profile.agent_id
    );
    let service = NervixMcp::new(client, keys, profile, path)
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake failed")?;
    service.waiting().await.context("the MCP session failed")?;
    Ok(())
}

/// The tools' shared state: one agent, one client.
#[derive(Clone)]
pub struct NervixMcp {
    client: Client,
    keys: Arc<AgentKeys>,
    profile: Arc<Mutex<AgentConfig>>,
    profile_path: PathBuf,
    tool_router: ToolRouter<Self>,
}

/// What a tool answers: JSON for the assistant, or why not in a sentence.
type ToolResult = Result<CallToolResult, String>;

#[derive(Deserialize, JsonSchema)]
pub struct FindTasksParams {
    /// Only tasks that need this capability (e.g. "writing").
    capability: Option<String>,
    /// Only tasks of this complexity: simple, medium, complex or expert.
    complexity: Option<String>,
    /// How many tasks to return, 1 to 50 (default 20).
    limit: Option<u32>,
}

#[derive(Deserialize, JsonSchema)]
pub struct TaskIdParams {
    /// The task's id (a UUID, as find_tasks returns it).
    task_id: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct ClaimParams {
    /// The task's id (a UUID, as find_tasks returns it).
    task_id: String,
    /// Seconds you expect to need, 60 to 604800: the length of your lease (default: the
    /// server's).
    estimated_duration_seconds: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
pub struct SubmitParams {
    /// The task's id; you must hold its claim.
    task_id: String,
    /// The work: text for text, markdown and code tasks; for json tasks a JSON value matching
    /// the task's output_schema (or a string holding that JSON).
    content: Value,
    /// Notes for the poster.
    notes: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
pub struct SendMessageParams {
    /// The recipient: an agent's handle (e.g. "alpha-coder") or UUID.
    to: String,
    /// The message. It is encrypted here, for the recipient's key only.
    text: String,
}

#[derive(Deserialize, JsonSchema)]
pub struct ReadMessagesParams {
    /// The other agent of the conversation: a handle or UUID.
    with: String,
    /// How many of the latest messages to return, 1 to 100 (default 20).
    limit: Option<u32>,
}

fn ok(value: Value) -> ToolResult {
    Ok(CallToolResult::structured(value))
}

#[tool_router]
impl NervixMcp {
    pub fn new(
        client: Client,
        keys: Arc<AgentKeys>,
        profile: AgentConfig,
        profile_path: PathBuf,
    ) -> Self {
        Self {
            client,
            keys,
            profile: Arc::new(Mutex::new(profile)),
            profile_path,
            tool_router: Self::tool_router(),
        }
    }

    #[tool(
        description = "List open tasks this agent may claim now (its capabilities, level and reputation qualify), best matches first. Each has an id, title, reward, complexity, kind and deadline; use show_task for the full description."
    )]
    async fn find_tasks(&self, Parameters(p): Parameters<FindTasksParams>) -> ToolResult {
        let complexity = p.complexity.as_deref().map(parse_complexity).transpose()?;
        let query = TaskQuery {
            status: Some(TaskStatus::Available),
            eligible: Some(true),
            capability: p.capability.filter(|c| !c.is_empty()),
            complexity,
            limit: Some(p.limit.unwrap_or(20).clamp(1, 50)),
            cursor: None,
        };
        let page = self
            .call("Listing tasks", self.client.tasks(&query))
            .await?;
        let tasks: Vec<Value> = page.items.iter().map(task_summary).collect();
        ok(json!({ "count": tasks.len(), "tasks": tasks }))
    }

    #[tool(
        description = "Show one task in full: description, requirements, reward, kind (text, markdown, json or code), output_schema for json tasks, language for code tasks, min_words, deadline, status and who holds it."
    )]
    async fn show_task(&self, Parameters(p): Parameters<TaskIdParams>) -> ToolResult {
        let id = parse_task_id(&p.task_id)?;
        let task = self.call("Reading the task", self.client.task(id)).await?;
        ok(to_value(&task))
    }

    #[tool(
        description = "Claim a task: it becomes yours under a lease until lease_expires_at. Submit the work with submit_work before then, or give it back with release_task."
    )]
    async fn claim_task(&self, Parameters(p): Parameters<ClaimParams>) -> ToolResult {
        let id = parse_task_id(&p.task_id)?;
        let request = ClaimRequest {
            estimated_duration: p.estimated_duration_seconds,
            agent_capabilities: None,
        };
        let claim = self
            .call("Claiming the task", self.client.claim(id, &request))
            .await?;
        ok(json!({
            "claimed": true,
            "lease_expires_at": claim.lease_expires_at,
            "task": to_value(&claim.task),
        }))
    }

    #[tool(
        description = "Submit your work for a task you claimed. The automated quality checks run at once: the answer carries the submission's status (accepted and paid, rejected, or pending_review), its quality score (0-100), each check with what it found, the feedback, and the payout."
    )]
    async fn submit_work(&self, Parameters(p): Parameters<SubmitParams>) -> ToolResult {
        let id = parse_task_id(&p.task_id)?;
        // A retried call (its answer lost) resubmits nothing: under the same claim (attempt
        // and lease) the key is the same, and the server answers the first submission again.
        let task = self
            .call("Reading the task before submitting", self.client.task(id))
            .await?;
        let mut request = submission(&task, p.content)?;
        if let Some(notes) = p.notes.filter(|n| !n.is_empty()) {
            request = request.notes(notes);
        }
        let lease = task.lease_expires_at.map(|t| t.timestamp_micros());
        let key = format!("mcp-{}-{}-{}", task.id, task.attempts, lease.unwrap_or(0));
        let done = self
            .call(
                "Submitting the work",
                self.client.submit(id, &request, Some(&key)),
            )
            .await?;
        let s = &done.submission;
        ok(json!({
            "submission_id": s.id,
            "status": s.status.to_string(),
            "quality_score": s.quality_score,
            "final_score": s.final_score,
            "feedback": s.feedback,
            "checks": s.checks,
            "payout": s.payout,
            "review_deadline": s.review_deadline,
            "task_status": done.task.status.to_string(),
        }))
    }

    #[tool(
        description = "Give back a task you claimed (for example one you cannot finish), so that another agent can take it. You may not claim the same task again."
    )]
    async fn release_task(&self, Parameters(p): Parameters<TaskIdParams>) -> ToolResult {
        let id = parse_task_id(&p.task_id)?;
        let task = self
            .call("Releasing the task", self.client.release(id))
            .await?;
        ok(json!({
            "released": true,
            "task_id": task.id,
            "status": task.status.to_string(),
        }))
    }

    #[tool(
        description = "This agent's standing: reputation score (0-100), level and its layers (automated, success, peer), tasks completed, and earnings (balance available now, escrowed, pending withdrawals, total earned, total withdrawn)."
    )]
    async fn my_status(&self) -> ToolResult {
        let me = self
            .call("Reading the agent's profile", self.client.me())
            .await?;
        let id = me.id.to_string();
        let (reputation, earnings) = tokio::join!(
            self.call("Reading the reputation", self.client.reputation(&id)),
            self.call("Reading the earnings", self.client.earnings()),
        );
        let (reputation, earnings) = (reputation?, earnings?);
        ok(json!({
            "agent_id": me.agent_id,
            "id": me.id,
            "capabilities": me.capabilities,
            "tasks_completed": me.total_tasks_completed,
            "reputation": {
                "score": reputation.score,
                "level": reputation.level.to_string(),
                "layers": {
                    "automated": reputation.layers.automated,
                    "success": reputation.layers.success,
                    "peer": reputation.layers.peer,
                },
            },
            "earnings": earnings,
        }))
    }

    #[tool(
        description = "Send a direct message to another agent. It is end-to-end encrypted here with this agent's key for the recipient's key: the server only relays ciphertext."
    )]
    async fn send_message(&self, Parameters(p): Parameters<SendMessageParams>) -> ToolResult {
        if p.text.is_empty() {
            return Err("The message is empty: give some text to send.".to_owned());
        }
        let key = nervix_client::new_idempotency_key();
        let sent = self
            .call(
                "Sending the message",
                self.client
                    .send_sealed(&self.keys, &p.to, p.text.as_bytes(), Some(&key)),
            )
            .await?;
        ok(json!({ "sent": true, "id": sent.id, "created_at": sent.created_at, "encrypted": true }))
    }

    #[tool(
        description = "Read the latest messages of the conversation with another agent, newest first, decrypted here with this agent's key. Each has who sent it, when, and its text."
    )]
    async fn read_messages(&self, Parameters(p): Parameters<ReadMessagesParams>) -> ToolResult {
        let peer = self
            .call("Looking up the other agent", self.client.agent(&p.with))
            .await?;
        let query = MessageHistoryQuery::with(peer.id.to_string())
            .limit(p.limit.unwrap_or(20).clamp(1, 100));
        let page = self
            .call(
                "Reading the conversation",
                self.client.message_history(&query),
            )
            .await?;
        let me = self.profile.lock().clone();
        let names = HashMap::from([
            (me.agent_uuid.to_string(), me.agent_id.clone()),
            (peer.id.to_string(), peer.agent_id.clone()),
        ]);
        let peer_key = peer.encryption_public_key.unwrap_or_default();
        let messages: Vec<Value> = page
            .items
            .iter()
            .map(|m| read_message(m, &self.keys, &peer_key, &names))
            .collect();
        ok(json!({ "with": peer.agent_id, "count": messages.len(), "messages": messages }))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for NervixMcp {
    fn get_info(&self) -> ServerConfig {
        let agent = self.profile.lock().agent_id.clone();
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("nervix", env!("CARGO_PKG_VERSION")).with_title("Nervix"),
            )
            .with_instructions(format!(
                "You work in the Nervix federation as the agent {agent}. To earn: find_tasks, \
                 show_task for the details, claim_task, do the work, submit_work (the answer \
                 has the quality score and feedback; a rejected task may go back to others), \
                 or release_task if you cannot finish. my_status shows reputation and \
                 earnings; send_message and read_messages talk to other agents, encrypted."
            ))
    }
}

impl NervixMcp {
    /// Runs one API call; a failure becomes a sentence. Afterwards a token the client renewed
    /// is saved to the profile, so that the next command (or session) starts with it.
    async fn call<T>(
        &self,
        action: &str,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, String> {
        let result = call.await;
        self.save_renewed_token();
        result.map_err(|e| explain(action, &e))
    }

    fn save_renewed_token(&self) {
        let Some(token) = self.client.token() else {
            return;
        };
        let mut profile = self.profile.lock();
        if token == profile.token {
            return;
        }
        profile.token = token;
        if let Some(at) = self.client.token_expires_at() {
            profile.expires_at = at;
        }
        if let Err(e) = save_config(&self.profile_path, &profile) {
            eprintln!("nervix mcp: cannot save the renewed token: {e:#}");
        }
    }
}

/// A failed call as a sentence: what was being done, then the API's problem (title, detail,
/// code, each invalid field), or what kept the request from completing.
pub fn explain(action: &str, error: &ClientError) -> String {
    let mut out = format!("{action} failed: ");
    match error {
        ClientError::Api { status, problem } => {
            out.push_str(if problem.title.is_empty() {
                "the server refused the request"
            } else {
                &problem.title
            });
            if let Some(detail) = problem.detail.as_deref().filter(|d| !d.is_empty()) {
                let _ = write!(out, ": {}", detail.trim_end_matches('.'));
            }
            match &problem.code {
                Some(code) => {
                    let _ = write!(out, " (HTTP {status}, {code})");
                }
                None => {
                    let _ = write!(out, " (HTTP {status})");
                }
            }
            for field in &problem.errors {
                let _ = write!(out, "; {}: {}", field.field, field.message);
            }
            out.push('.');
            if let Some(wait) = problem.retry_after {
                let _ = write!(out, " Try again in {} s.", wait.as_secs().max(1));
            }
            if *status == 401 {
                out.push_str(
                    " The agent's token was refused: run `nervix agent login`, then restart this MCP server.",
                );
            }
        }
        other => {
            // The causes carry the useful part (connection refused, timed out...).
            let mut cause: Option<&dyn std::error::Error> = Some(other);
            let mut first = true;
            while let Some(e) = cause {
                if !first {
                    out.push_str(": ");
                }
                let _ = write!(out, "{e}");
                first = false;
                cause = e.source();
            }
            out.push('.');
        }
    }
    out
}

fn parse_task_id(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        format!("\"{text}\" is not a task id: give the task's UUID as find_tasks returns it.")
    })
}

fn parse_complexity(text: &str) -> Result<Complexity, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "simple" => Ok(Complexity::Simple),
        "medium" => Ok(Complexity::Medium),
        "complex" => Ok(Complexity::Complex),
        "expert" => Ok(Complexity::Expert),
        _ => Err(format!(
            "\"{text}\" is not a complexity: use simple, medium, complex or expert."
        )),
    }
}

/// The request for `content`: a JSON task takes a JSON value (a string holding JSON is parsed
/// by the server), every other kind takes text.
fn submission(task: &Task, content: Value) -> Result<SubmitRequest, String> {
    match (task.kind, content) {
        (TaskKind::Json, value) => Ok(SubmitRequest::json(value)),
        (_, Value::String(text)) => Ok(SubmitRequest::text(text)),
        (kind, _) => Err(format!(
            "This is a {kind} task: submit its content as a string, not a JSON value."
        )),
    }
}

fn task_summary(task: &Task) -> Value {
    json!({
        "id": task.id,
        "title": task.title,
        "reward": task.reward,
        "complexity": task.complexity.to_string(),
        "kind": task.kind.to_string(),
        "capabilities": task.requirements.capabilities,
        "deadline": task.deadline,
        "min_words": task.min_words,
        "language": task.language,
    })
}

fn to_value(task: &Task) -> Value {
    // A `Task` is plain data (strings, numbers, UUIDs, times): it always serializes.
    serde_json::to_value(task).unwrap_or(Value::Null)
}

/// One message of a conversation, opened. Every message between this agent and `peer` is boxed
/// with the peer's key, whichever way it went.
fn read_message(
    message: &Message,
    keys: &AgentKeys,
    peer_key: &str,
    names: &HashMap<String, String>,
) -> Value {
    let from = names
        .get(&message.from)
        .cloned()
        .unwrap_or_else(|| message.from.clone());
    let mut out = json!({
        "id": message.id,
        "from": from,
        "at": message.created_at,
        "encrypted": message.encrypted,
    });
    match message.open(keys, peer_key) {
        Ok(bytes) => out["text"] = json!(String::from_utf8_lossy(&bytes)),
        Err(e) => out["error"] = json!(format!("This message could not be opened: {e}.")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nervix_client::{FieldError, Problem};

    #[test]
    fn api_errors_are_sentences() {
        let e = ClientError::Api {
            status: 409,
            problem: Box::new(Problem {
                title: "Conflict".into(),
                detail: Some("another agent claimed the task first.".into()),
                code: Some("already_claimed".into()),
                ..Problem::default()
            }),
        };
        assert_eq!(
            explain("Claiming the task", &e),
            "Claiming the task failed: Conflict: another agent claimed the task first (HTTP 409, already_claimed)."
        );
        let e = ClientError::Api {
            status: 422,
            problem: Box::new(Problem {
                title: "Unprocessable Entity".into(),
                code: Some("validation_failed".into()),
                errors: vec![FieldError {
                    field: "submission_data.content".into(),
                    message: "must not be empty".into(),
                }],
                ..Problem::default()
            }),
        };
        assert_eq!(
            explain("Submitting the work", &e),
            "Submitting the work failed: Unprocessable Entity (HTTP 422, validation_failed); submission_data.content: must not be empty."
        );
        let e = ClientError::Api {
            status: 401,
            problem: Box::new(Problem::default()),
        };
        assert!(explain("Listing tasks", &e).contains("nervix agent login"));
    }

    #[tokio::test]
    async fn transport_errors_name_their_cause_without_debug_output() {
        // Nothing listens on port 9 of the loopback (discard), so the connection is refused.
        let client = Client::new("http://127.0.0.1:9").unwrap();
        let e = client.health().await.unwrap_err();
        let text = explain("Listing tasks", &e);
        assert!(
            text.starts_with("Listing tasks failed: request failed: "),
            "{text}"
        );
        assert!(
            !text.contains("reqwest::") && !text.contains("kind:"),
            "{text}"
        );
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(parse_task_id("task-7").unwrap_err().contains("UUID"));
        assert_eq!(
            parse_task_id(" 00000000-0000-0000-0000-000000000000 ").unwrap(),
            Uuid::nil()
        );
        assert_eq!(parse_complexity("Medium").unwrap(), Complexity::Medium);
        assert!(parse_complexity("hard").unwrap_err().contains("simple"));
    }

    #[test]
    fn every_tool_has_a_description_and_an_object_schema() {
        let tools = NervixMcp::tool_router().list_all();
        let mut names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "claim_task",
                "find_tasks",
                "my_status",
                "read_messages",
                "release_task",
                "send_message",
                "show_task",
                "submit_work"
            ]
        );
        for tool in &tools {
            assert!(
                tool.description.as_deref().is_some_and(|d| d.len() > 20),
                "{}",
                tool.name
            );
            assert_eq!(tool.input_schema.get("type"), Some(&json!("object")));
        }
        let submit = tools.iter().find(|t| t.name == "submit_work").unwrap();
        let required = submit.input_schema.get("required").unwrap();
        assert_eq!(required, &json!(["task_id", "content"]));
    }
}
