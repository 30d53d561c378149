//! Operating `nervix serve` as a process: SIGTERM drains it (an in-flight request finishes,
//! agent WebSockets close with 1001 and a reason telling them to reconnect, the process exits
//! 0), and `nervix admin backup` / `restore` carry a running platform into a fresh data folder
//! where a new server serves the same agents, tokens, balances and tasks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{Backend, Node, ANSWER};
use futures::StreamExt as _;
use nervix_client::{ClaimRequest, Client, Decimal2, NewTask, SubmitRequest, TaskStatus, Transfer};
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn task(title: &str) -> NewTask {
    NewTask::new(
        title,
        "Summarise the quarter for the planning meeting.",
        Decimal2::from_cents(1_000),
        &["writing"],
    )
    .deadline(chrono::Utc::now() + chrono::TimeDelta::hours(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_closes_streams_with_1001_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::fresh(dir.path(), Backend::Sqlite).await.unwrap();
    let admin = node.admin_client();
    let mut server = node.start().await;
    let agent = common::enroll(&node.url(), "drain-agent", &["writing"]).await;

    let mut request = format!("ws://127.0.0.1:{}/v1/agent/connect", node.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", agent.token().unwrap())
            .parse()
            .unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    // A request in flight: its head and half its body are in, the rest comes after SIGTERM.
    let body = serde_json::to_vec(&task("posted while stopping")).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut http = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    write!(
        http,
        "POST /v1/tasks HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        admin.token().unwrap(),
        body.len()
    )
    .unwrap();
    http.write_all(first).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.id()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();

    // The agent hears why and what to do.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame;
            }
        }
        None
    })
    .await
    .expect("the WebSocket is closed on SIGTERM")
    .expect("with a close frame");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert!(close.reason.contains("reconnect"), "{close:?}");

    // The server waits for the request it is in the middle of.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.try_wait().unwrap().is_none(),
        "exited with a request in flight:\n{}",
        node.log_text()
    );
    http.write_all(rest).unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let posted: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();

    let status =
        common::signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;
    assert!(status.success(), "{status}\n{}", node.log_text());
    // No new connection is taken once it stops.
    assert!(std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err());

    let mut server = node.start().await;
    let id = posted["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(admin.task(id).await.unwrap().status, TaskStatus::Available);
    common::signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;
}

/// What a backup must carry over, read through the API.
#[derive(Debug, PartialEq)]
struct Seen {
    me: String,
    earnings: (Decimal2, Decimal2),
    tasks: Vec<(TaskStatus, Option<uuid::Uuid>)>,
    admin_handle: String,
}

async fn seen(worker: &Client, admin: &Client, tasks: &[uuid::Uuid]) -> Seen {
    let me = worker.me().await.unwrap();
    let earnings = worker.earnings().await.unwrap();
    let mut states = Vec::new();
    for id in tasks {
        let t = admin.task(*id).await.unwrap();
        states.push((t.status, t.assigned_agent_id));
    }
    Seen {
        me: format!("{} {} {:?}", me.id, me.agent_id, me.capabilities),
        earnings: (earnings.balance, earnings.total_earned),
        tasks: states,
        admin_handle: admin.verify().await.unwrap().agent_id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restored_into_a_fresh_folder_serves_the_same_platform() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::fresh(dir.path(), Backend::Sqlite).await.unwrap();
    let admin = node.admin_client();
    let mut server = node.start().await;
    let worker = common::enroll(&node.url(), "backup-worker", &["writing"]).await;
    admin
        .grant(
            "backup-worker",
            &Transfer::new("5.00".parse().unwrap()).memo("welcome"),
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for title in ["done", "held", "open"] {
        tasks.push(admin.post_task(&task(title), None).await.unwrap().id);
    }
    worker
        .claim(tasks[0], &ClaimRequest::default())
        .await
        .unwrap();
    worker
        .submit(tasks[0], &SubmitRequest::text(ANSWER), None)
        .await
        .unwrap();
    worker
        .claim(tasks[1], &ClaimRequest::default())
        .await
        .unwrap();
    let before = seen(&worker, &admin, &tasks).await;
    assert_eq!(before.tasks[0].0, TaskStatus::Completed);

    // Online: the server keeps serving writes while the copy is taken.
    let busy = Arc::new(AtomicBool::new(true));
    let writes = tokio::spawn({
        let (admin, busy) = (admin.clone(), busy.clone());
        async move {
            let mut n = 0;
            while busy.load(Ordering::SeqCst) {
                admin.post_task(&task("busy"), None).await.unwrap();
                n += 1;
            }
            n
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let backup = dir.path().join("backup");
    let backup_s = backup.to_str().unwrap().to_owned();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let (node_data, backup_s) = (node.data.clone(), backup_s.clone());
        move || {
            let out = common::nervix()
                .args(["admin", "backup", &backup_s, "--data-dir"])
                .arg(node_data)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    busy.store(false, Ordering::SeqCst);
    assert!(writes.await.unwrap() > 0, "writes ran during the backup");
    assert!(ok, "{stdout}{stderr}");
    // The signing keys live in the database (sealed when a master key is set), so the copy
    // carries them; no key files are left in a data folder that started with the keys there.
    assert!(stdout.contains("Database copied"), "{stdout}");
    assert!(stdout.contains("0 signing key file(s)"), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&backup), 0o700);
        assert_eq!(mode(&backup.join("nervix.db")), 0o600);
        for key in std::fs::read_dir(backup.join("keys")).into_iter().flatten() {
            assert_eq!(mode(&key.unwrap().path()), 0o600);
        }
    }
    // A second backup into the same folder is refused rather than mixed in.
    let (ok, _, stderr) = node.admin("backup", &[&backup_s]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    common::signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;

    let restored = Node::at(dir.path(), dir.path().join("restored"), None);
    let (ok, stdout, stderr) = restored.admin("restore", &[&backup_s]);
    assert!(ok, "{stdout}{stderr}");
    let (ok, _, stderr) = restored.admin("restore", &[&backup_s]);
    assert!(!ok && stderr.contains("fresh data folder"), "{stderr}");
    let (ok, stdout, stderr) = restored.admin("verify-ledger", &[]);
    assert!(ok, "{stdout}{stderr}");

    // The same tokens (the keys came along), agents, balances and tasks, over HTTP.
    let mut server = restored.start().await;
    let url = restored.url();
    let worker2 = Client::new(&url)
        .unwrap()
        .with_token(worker.token().unwrap());
    let admin2 = Client::new(&url)
        .unwrap()
        .with_token(admin.token().unwrap());
    let after = seen(&worker2, &admin2, &tasks).await;
    assert_eq!(after, before);
    // And it goes on working: the held task is handed in on the restored server.
    let done = worker2
        .submit(tasks[1], &SubmitRequest::text(ANSWER), None)
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Completed);
    common::signal_and_wait(&mut server, Signal::SIGTERM, Duration::from_secs(30)).await;
}

/// On PostgreSQL nothing is half-done quietly: the command shows the `pg_dump` route and
/// fails, so a script cannot mistake it for a database copy.
#[tokio::test]
async fn a_postgres_backup_explains_the_pg_dump_route() {
    let dir = tempfile::tempdir().unwrap();
    let Some(node) = Node::fresh(dir.path(), Backend::Postgres).await else {
        return;
    };
    let backup = dir.path().join("backup");
    let (ok, stdout, stderr) = node.admin("backup", &[backup.to_str().unwrap()]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("pg_dump --format=custom"), "{stdout}");
    assert!(stdout.contains("pg_restore"), "{stdout}");
    assert!(stderr.contains("not copied"), "{stderr}");
}
