//! The real-time commands end to end, as separate processes over real HTTP and WebSocket:
//! `nervix agent run` turning a shell script into a worker that completes a workflow (in its
//! default sandbox), the sandbox keeping a command from the agent's secrets, the rest of the
//! file system and the network and stopping it at its limits, and `nervix demo` running its
//! whole story and exiting 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use nervix_client::{Complexity, Decimal2, NewTask, NewWorkflow, NewWorkflowTask, TaskStatus};
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

/// Whether `agent run` can sandbox its command here (a kernel with Landlock); the runner checks
/// that before it reads its profile, so a missing one tells. Without it the `agent run` tests
/// skip, except under `CI=true`, where they fail.
async fn sandbox_available() -> bool {
    let out = nervix()
        .args([
            "agent",
            "run",
            "--exec",
            "true",
            "--config",
            "/nonexistent/agent.json",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.contains("no Landlock") {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI needs a kernel with Landlock for the agent run tests: {stderr}"
    );
    eprintln!("SKIP agent run: {stderr}");
    false
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
    if !sandbox_available().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let common::Embedded { server, url, admin } = common::embedded(dir.path()).await;

    // The script lives apart from the agent's key: the sandbox may read its folder only.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = bin.join("agent.sh");
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
        .arg("--allow-read")
        .arg(&bin)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = runner.stdout.take().unwrap();
    // Wait until it is listening, so the offers below reach its stream.
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

/// The sandbox's probe: `$1` the agent's key, `$2` its profile, `$3` a folder outside the
/// sandbox, `$4` the server's port, `$5` the folder it may write its report to. Tasks titled
/// `cpu`, `memory` and `file size` overrun the corresponding limit instead.
const PROBE: &str = r#"#!/bin/sh
task=$(cat)
case "$task" in
  *'"title":"cpu'*) while :; do :; done ;;
  *'"title":"memory'*) exec awk 'BEGIN { s = "x"; while (1) s = s s }' ;;
  *'"title":"file size'*) exec head -c 4000000 /dev/zero > big ;;
esac
{
  if cat "$1" >/dev/null 2>&1; then echo "key=read"; else echo "key=denied"; fi
  if cat "$2" >/dev/null 2>&1; then echo "profile=read"; else echo "profile=denied"; fi
  if echo x 2>/dev/null > "$3/escaped"; then echo "outside=written"; else echo "outside=denied"; fi
  if echo x 2>/dev/null > /tmp/nervix-escaped-$$; then echo "tmp=written"; else echo "tmp=denied"; fi
  if echo x 2>/dev/null > inside; then echo "inside=written"; else echo "inside=denied"; fi
  if bash -c "exec 3<>/dev/tcp/127.0.0.1/$4" 2>/dev/null; then echo "net=open"; else echo "net=closed"; fi
  echo "pwd=$(pwd)"
  echo "home=$HOME"
} > "$5/report"
env > "$5/env"
echo "The summary covers each region in turn, compares this quarter with last year, and ends with two concrete recommendations for the planning meeting next week."
"#;

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_run_sandbox_keeps_the_command_in_its_folder_and_limits() {
    if !sandbox_available().await {
        return;
    }
    use tokio::io::AsyncBufReadExt as _;

    let dir = tempfile::tempdir().unwrap();
    let common::Embedded { server, url, admin } = common::embedded(dir.path()).await;

    let private = dir.path().join("profile");
    let tools = dir.path().join("tools");
    let reports = dir.path().join("reports");
    let outside = dir.path().join("outside");
    for d in [&private, &tools, &reports, &outside] {
        std::fs::create_dir(d).unwrap();
    }
    let cfg = private.join("agent.json");
    let key = private.join("sandboxed.key");
    std::fs::write(tools.join("probe.sh"), PROBE).unwrap();
    let status = nervix()
        .args([
            "agent",
            "enroll",
            "--server",
            &url,
            "--agent-id",
            "sandboxed",
        ])
        .args(["--capabilities", "writing", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let token = serde_json::from_str::<Value>(&std::fs::read_to_string(&cfg).unwrap()).unwrap()
        ["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // The profile comes from the environment, beside a made-up secret: neither may reach the
    // command.
    let mut runner = nervix()
        .args(["agent", "run", "--json", "--max-concurrent", "2"])
        .args(["--max-tasks", "1", "--timeout", "30"])
        .args(["--max-cpu-seconds", "1", "--max-memory-mb", "256"])
        .args(["--max-file-size-mb", "1"])
        .arg("--allow-read")
        .arg(&tools)
        .arg("--allow-write")
        .arg(&reports)
        .arg("--exec")
        .arg(format!(
            "sh {} {} {} {} {} {}",
            tools.join("probe.sh").display(),
            key.display(),
            cfg.display(),
            outside.display(),
            server.addr.port(),
            reports.display()
        ))
        .env("NERVIX_AGENT_CONFIG", &cfg)
        .env("SECRET_CANARY", "hunter2-canary")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(runner.stdout.take().unwrap()).lines();
    let mut stderr = runner.stderr.take().unwrap();
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut seen = Vec::new();
    let mut next_event = async |kind: &str| -> Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no {kind} event: {seen:#?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("the runner stopped before {kind}: {seen:#?}"));
            let event: Value = serde_json::from_str(&line).unwrap();
            seen.push(event.clone());
            if event["event"] == kind {
                return event;
            }
        }
    };
    let sandbox = next_event("sandbox").await;
    assert_eq!(sandbox["sandboxed"], true, "{sandbox}");

    // Each limit stops its command; the task is released for someone else. Two at a time: a
    // novice holds at most two tasks, and a third offer would wait for the runner's next look.
    let mut reasons = std::collections::HashMap::new();
    for batch in [&["cpu", "memory"][..], &["file size"]] {
        let mut limited = std::collections::HashMap::new();
        for title in batch {
            let task = admin.post_task(&text_task(title, &[]), None).await.unwrap();
            limited.insert(task.id.to_string(), *title);
        }
        for _ in batch {
            let released = next_event("released").await;
            let title = limited[released["task_id"].as_str().unwrap()];
            reasons.insert(title, released["reason"].as_str().unwrap().to_owned());
        }
    }
    assert!(reasons["cpu"].contains("CPU time limit"), "{reasons:?}");
    assert!(
        reasons["file size"].contains("file size limit"),
        "{reasons:?}"
    );
    assert!(reasons["memory"].contains("failed"), "{reasons:?}");

    // A normal task still completes, and its report says what the command could reach.
    let probe = admin
        .post_task(&text_task("probe", &[]), None)
        .await
        .unwrap();
    let submitted = next_event("submitted").await;
    assert_eq!(submitted["task_id"], probe.id.to_string());
    assert_eq!(submitted["status"], "accepted", "{submitted}");
    let exit = tokio::time::timeout(Duration::from_secs(30), runner.wait())
        .await
        .expect("the runner stops after --max-tasks")
        .unwrap();
    let stderr = stderr.await.unwrap();
    assert!(exit.success(), "{stderr}");
    // The memory hog's own words: its allocation was refused.
    assert!(stderr.contains("allocate"), "{stderr}");
    assert_eq!(
        admin.task(probe.id).await.unwrap().status,
        TaskStatus::Completed
    );

    let report = std::fs::read_to_string(reports.join("report")).unwrap();
    for line in [
        "key=denied",
        "profile=denied",
        "outside=denied",
        "tmp=denied",
        "inside=written",
        "net=closed",
    ] {
        assert!(report.lines().any(|l| l == line), "{line}:\n{report}");
    }
    assert!(!outside.join("escaped").exists());
    let field = |name: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    let workdir = field("pwd=");
    assert_eq!(field("home="), workdir);
    assert!(
        !std::path::Path::new(&workdir).exists(),
        "the task's folder is removed afterwards: {workdir}"
    );

    let env = std::fs::read_to_string(reports.join("env")).unwrap();
    for secret in [
        "hunter2-canary",
        token.as_str(),
        cfg.to_str().unwrap(),
        key.to_str().unwrap(),
        "NERVIX_AGENT_CONFIG",
        "NERVIX_TOKEN",
    ] {
        assert!(!env.contains(secret), "{secret} leaked:\n{env}");
    }
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for name in &names {
        assert!(
            [
                "PATH",
                "HOME",
                "TMPDIR",
                "LANG",
                "NERVIX_TASK_ID",
                "PWD",
                "OLDPWD",
                "SHLVL",
                "_"
            ]
            .contains(name),
            "unexpected variable {name}:\n{env}"
        );
    }
    assert!(
        env.contains(&format!("NERVIX_TASK_ID={}", probe.id)),
        "{env}"
    );
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
