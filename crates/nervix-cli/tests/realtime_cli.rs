//! The real-time commands end to end, as separate processes over real HTTP and WebSocket:
//! `nervix agent run` turning a shell script into a worker that completes a workflow, and
//! `nervix demo` running its whole story and exiting 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use nervix_client::{
    Client, Complexity, Decimal2, NewTask, NewWorkflow, NewWorkflowTask, TaskStatus,
};
use nervix_server::Config;
use serde_json::Value;
use tokio::io::AsyncReadExt as _;
use tokio::process::Command;

const SCRIPT: &str = r#"#!/bin/sh
# A worker: reads the task JSON, fails on purpose for tasks titled "broken", answers the rest.
task=$(cat)
case "$task" in
  *'"title":"broken'*) echo "cannot do this one" >&2; exit 3 ;;
esac
echo "The summary covers each region in turn, compares this quarter with last year, and ends with two concrete recommendations for the planning meeting next week."
"#;

fn nervix() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nervix"));
    c.env_remove("NERVIX_AGENT_CONFIG")
        .env_remove("NERVIX_SERVER");
    c
}

fn text_task(title: &str, deps: &[&str]) -> NewTask {
    NewTask {
        complexity: Complexity::Simple,
        deadline: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        ..NewTask::new(
            title,
            "Summarise the quarter for the planning meeting.",
            Decimal2::from_cents(1_000),
            &["writing"],
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_run_completes_a_workflow_with_a_shell_script() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.rate_limit_enroll_per_minute = 0;
    config.spot_check_rate = 0.0;
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = nervix_server::start(listener, config).await.unwrap();
    let url = format!("http://{}", server.addr);

    let script = dir.path().join("agent.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let cfg = dir.path().join("agent.json");
    let status = nervix()
        .args([
            "agent",
            "enroll",
            "--server",
            &url,
            "--agent-id",
            "script-agent",
        ])
        .args(["--capabilities", "research", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());

    // The runner advertises `writing` itself (--capabilities) before it starts listening.
    let mut runner = nervix()
        .args(["agent", "run", "--json", "--capabilities", "writing"])
        .args([
            "--max-concurrent",
            "2",
            "--max-tasks",
            "3",
            "--timeout",
            "20",
        ])
        .arg("--exec")
        .arg(format!("sh {}", script.display()))
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = runner.stdout.take().unwrap();
    // Wait until it is listening, so the offers below reach its stream.
    let admin = Client::new(&url).unwrap().with_token(admin_token);
    let me = |handle: &str| {
        let admin = admin.clone();
        let handle = handle.to_owned();
        async move { admin.agent(&handle).await.unwrap() }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !me("script-agent")
        .await
        .capabilities
        .contains(&"writing".to_owned())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runner never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let broken = admin
        .post_task(&text_task("broken task", &[]), None)
        .await
        .unwrap();
    let workflow = admin
        .post_workflow(
            &NewWorkflow {
                name: "three steps".into(),
                tasks: [("a", None), ("b", Some("a")), ("c", Some("b"))]
                    .into_iter()
                    .map(|(key, after)| NewWorkflowTask {
                        key: key.into(),
                        task: text_task(&format!("step {key}"), after.as_slice()),
                    })
                    .collect(),
            },
            None,
        )
        .await
        .unwrap();

    let exit = tokio::time::timeout(Duration::from_secs(90), runner.wait())
        .await
        .expect("the runner stops after --max-tasks")
        .unwrap();
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.unwrap();
    assert!(exit.success(), "{out}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    assert_eq!(of("submitted"), 3, "{out}");
    assert!(events
        .iter()
        .filter(|e| e["event"] == "submitted")
        .all(|e| e["status"] == "accepted" && e["quality_score"].as_f64().unwrap() > 0.0));
    // The failing command's task went back for someone else, and the runner did not retry it.
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "released" && e["task_id"] == broken.id.to_string()),
        "{out}"
    );
    assert_eq!(
        admin.task(broken.id).await.unwrap().status,
        TaskStatus::Available
    );

    let wf = admin.workflow(workflow.id).await.unwrap();
    assert_eq!(
        wf.status,
        nervix_client::WorkflowStatus::Completed,
        "{wf:?}"
    );
    let agent = me("script-agent").await;
    for t in &wf.tasks {
        assert_eq!(t.assigned_agent_id, Some(agent.id));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_its_story_and_exits_0() {
    let out = tokio::time::timeout(
        Duration::from_secs(150),
        nervix().arg("demo").stdin(Stdio::null()).output(),
    )
    .await
    .expect("the demo finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("workflow completed"), "{stdout}");
    // Every persona shows up in the summary, and messages went both ways encrypted.
    for handle in ["ada-coder", "ben-writer", "cy-analyst", "dee-generalist"] {
        assert!(stdout.contains(handle), "{stdout}");
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("messages:"))
        .expect("a messages line");
    assert!(!line.starts_with("messages: 0 sent"), "{line}");
    assert!(!line.contains(" 0 received"), "{line}");
}
