//! `nervix mcp` with a third-party client: the official Python MCP SDK (`mcp` from PyPI, the
//! version pinned below and in `.ci/run`) starts the binary over stdio against a real server,
//! lists its tools and completes a task with them, reads a message another agent encrypted for
//! it and answers (`tests/mcp_agent.py`). This test checks what the assistant saw and what the
//! server recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nervix_client::{
    AgentKeys, Client, Complexity, Decimal2, EnrollRequest, MessageHistoryQuery, NewTask,
    TaskStatus,
};
use serde_json::Value;
use tokio::process::Command;

/// The `mcp` release the test is written against (also installed by `.ci/run`).
const MCP_VERSION: &str = "2.3.0";

const TITLE: &str = "Summarise the quarter";
const HELLO: &str = "Hi! Could you take the quarterly summary? The planning group meets Monday.";

fn nervix() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nervix"));
    c.env_remove("NERVIX_AGENT_CONFIG")
        .env_remove("NERVIX_SERVER")
        .env_remove("NERVIX_TOKEN");
    c
}

async fn has_mcp(python: &str) -> bool {
    let check =
        format!("import importlib.metadata as m, mcp; assert m.version('mcp') == '{MCP_VERSION}'");
    Command::new(python)
        .args(["-c", &check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// `NERVIX_TEST_MCP_PYTHON` (set by `.ci/run` to its virtualenv), else `python3` if it has the
/// pinned `mcp`; `None` (the test skips) otherwise, except under `CI=true`.
async fn python_with_mcp() -> Option<String> {
    let candidates = std::env::var("NERVIX_TEST_MCP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .into_iter()
        .chain(["python3".to_owned()]);
    for python in candidates {
        if has_mcp(&python).await {
            return Some(python);
        }
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI needs Python with mcp=={MCP_VERSION} (NERVIX_TEST_MCP_PYTHON, set by .ci/run)"
    );
    eprintln!(
        "SKIP mcp: no Python with mcp=={MCP_VERSION}; set NERVIX_TEST_MCP_PYTHON to one (see .ci/run)"
    );
    None
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_agent.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_completes_a_task_through_nervix_mcp() {
    let Some(python) = python_with_mcp().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let common::Embedded { server, url, admin } = common::embedded(dir.path()).await;

    // The assistant's agent, enrolled the usual way: the profile is what `nervix mcp` serves.
    let cfg = dir.path().join("agent.json");
    let out = nervix()
        .args(["agent", "enroll", "--server", &url])
        .args(["--agent-id", "mcp-writer", "--capabilities", "writing"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another agent, who writes to it first (encrypted for its key).
    let peer_keys = Arc::new(AgentKeys::generate());
    let mut peer = Client::new(&url).unwrap();
    let request = EnrollRequest::new("mcp-peer", &peer_keys).capabilities(["research"]);
    peer.enroll(&peer_keys, &request).await.unwrap();
    peer.send_sealed(&peer_keys, "mcp-writer", HELLO.as_bytes(), None)
        .await
        .unwrap();

    let task = admin
        .post_task(
            &NewTask {
                complexity: Complexity::Simple,
                deadline: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
                ..NewTask::new(
                    TITLE,
                    "Summarise the quarter for the planning meeting: regions, costs, advice.",
                    Decimal2::from_cents(1_000),
                    &["writing"],
                )
            },
            None,
        )
        .await
        .unwrap();

    let run = Command::new(&python)
        .arg(script())
        .arg(env!("CARGO_BIN_EXE_nervix"))
        .arg(&cfg)
        .args(["mcp-peer", TITLE])
        .env_remove("NERVIX_SERVER")
        .env_remove("NERVIX_TOKEN")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the MCP session finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mcp_agent.py failed:\n{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mcp_agent.py printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(report.get("error").is_none(), "{report:#}\n{stderr}");

    // The tools, each with a description and an object schema naming its arguments.
    let tools = report["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
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
    for tool in tools {
        assert_eq!(tool["input_schema"]["type"], "object", "{tool}");
        assert!(tool["description"].as_str().unwrap().len() > 20, "{tool}");
    }
    let claim_schema = &tools.iter().find(|t| t["name"] == "claim_task").unwrap()["input_schema"];
    assert_eq!(claim_schema["required"], serde_json::json!(["task_id"]));
    assert_eq!(report["server"]["name"], "nervix");

    let call = |label: &str| -> &Value {
        let c = &report["calls"][label];
        assert!(c.is_object(), "no call {label}: {report:#}");
        c
    };
    let succeeded = |label: &str| -> &Value {
        let c = call(label);
        assert_eq!(c["is_error"], false, "{label}: {c:#}");
        &c["structured"]
    };
    let failed = |label: &str| -> String {
        let c = call(label);
        assert_eq!(c["is_error"], true, "{label}: {c:#}");
        let text = c["text"].as_str().unwrap().to_owned();
        eprintln!("{label}: {text}");
        // A sentence for a person, not a stack trace or a Debug dump.
        for noise in [
            "Traceback",
            "ClientError",
            "Api {",
            "Problem {",
            "panicked",
            "\n",
        ] {
            assert!(!text.contains(noise), "{label}: {text}");
        }
        assert!(text.ends_with('.'), "{label}: {text}");
        text
    };

    let shown = succeeded("show_task");
    assert_eq!(shown["id"], task.id.to_string());
    assert!(shown["description"]
        .as_str()
        .unwrap()
        .contains("planning meeting"));

    let text = failed("bad_id");
    assert!(text.contains("not a task id"), "{text}");
    let text = failed("unknown_task");
    assert!(text.starts_with("Reading the task failed: "), "{text}");
    assert!(text.contains("404"), "{text}");
    let text = failed("submit_unclaimed");
    assert!(text.starts_with("Submitting the work failed: "), "{text}");
    let text = failed("claim_again");
    assert!(text.starts_with("Claiming the task failed: "), "{text}");
    let text = failed("send_to_nobody");
    assert!(text.contains("404"), "{text}");

    let claimed = succeeded("claim_task");
    assert_eq!(claimed["claimed"], true);
    assert!(claimed["lease_expires_at"].is_string());

    // The quality feedback comes back with the submission.
    let submitted = succeeded("submit_work");
    assert_eq!(submitted["status"], "accepted", "{submitted:#}");
    assert_eq!(submitted["task_status"], "completed");
    assert!(submitted["quality_score"].as_f64().unwrap() > 0.0);
    assert!(submitted["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "length"));
    assert!(submitted["payout"].is_string(), "{submitted:#}");

    let status = succeeded("my_status");
    assert_eq!(status["agent_id"], "mcp-writer");
    assert_eq!(status["earnings"]["total_earned"], submitted["payout"]);
    assert_ne!(status["earnings"]["total_earned"], "0.00");
    assert!(status["reputation"]["score"].is_string());

    // The server agrees: the task is done by this agent and paid.
    let me = admin.agent("mcp-writer").await.unwrap();
    let done = admin.task(task.id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.assigned_agent_id, Some(me.id));

    // Messages went both ways, sealed on one side and opened on the other.
    let read = succeeded("read_messages");
    let messages = read["messages"].as_array().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m["from"] == "mcp-peer" && m["text"] == HELLO && m["encrypted"] == true),
        "{read:#}"
    );
    let sent = succeeded("send_message");
    assert_eq!(sent["encrypted"], true);
    let history = peer
        .message_history(&MessageHistoryQuery::with("mcp-writer"))
        .await
        .unwrap();
    let reply = history
        .items
        .iter()
        .find(|m| m.from == me.id.to_string())
        .expect("the reply reached the peer");
    assert!(reply.encrypted);
    let opened = reply
        .open(&peer_keys, me.encryption_public_key.as_deref().unwrap())
        .unwrap();
    assert_eq!(opened, report["reply"].as_str().unwrap().as_bytes());

    server.shutdown().await;
}
