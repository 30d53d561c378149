//! Two `nervix serve` processes on one PostgreSQL database (a fresh schema) and one Redis,
//! driven over real HTTP and WebSocket connections, the way a load balancer would spread
//! agents over them: tokens and key rotations cross nodes, every agent's stream carries each
//! event exactly once and in `seq` order whichever node caused it, a claim race across nodes
//! has one winner, background workers running on both nodes do their work once (one lease
//! expiry, one refund, one payout), and when a node is killed its agents resume on the other
//! from their last `seq` without loss or repeat. The signing keys are sealed with a master key
//! both nodes share.
//!
//! Needs `NERVIX_TEST_POSTGRES_URL` and `NERVIX_TEST_REDIS_URL` (SKIP without, fails in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use futures::StreamExt;
use nervix_client::{AgentKeys, Client, EnrollRequest, Method};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// The text of a submission that passes the automated checks of a `writing` task.
const WORK: &str = "The summary covers each region in turn, compares this quarter with last \
    year, and ends with two concrete recommendations for the planning meeting next week.";

/// A running `nervix serve`.
struct Node {
    name: &'static str,
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl Node {
    async fn start(name: &'static str, dir: &Path, env: &Env, extra: &[(&str, &str)]) -> Node {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nervix"));
        cmd.args(["serve", "--bind", "127.0.0.1:0"])
            .env("NERVIX_DATA_DIR", dir.join(name))
            .envs(env.vars())
            .env("NERVIX_RATE_LIMIT_ENROLL", "0")
            .env("NERVIX_RATE_LIMIT_AGENT", "0")
            .env("NERVIX_RATE_LIMIT_MESSAGES", "0")
            .env("NERVIX_SPOT_CHECK_RATE", "0")
            .env("NERVIX_SQLITE_WRITER_CPU", "off")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("run nervix serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // "  API:       http://127.0.0.1:PORT/v1  (OpenAPI: …)"
                if let Some(rest) = line.trim().strip_prefix("API:") {
                    let url = rest.split_whitespace().next().unwrap();
                    return Some(url.trim_end_matches("/v1").to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some(url) = url else {
            panic!(
                "node {name} did not start:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        // Keep reading so the pipe never fills.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Node {
            name,
            child,
            url,
            stderr,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// haproxy in front of both nodes (round robin, WebSockets passed through, a node that
/// refuses connections skipped), when it is installed; `None` (SKIP) when not, outside CI.
async fn load_balancer(dir: &Path, nodes: [&Node; 2]) -> Option<Node> {
    let bin = [
        "/usr/sbin/haproxy",
        "/usr/local/sbin/haproxy",
        "/usr/bin/haproxy",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists());
    let Some(bin) = bin else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "haproxy must be installed in CI (.ci/run installs it)"
        );
        eprintln!("SKIP: haproxy is not installed; the cluster test runs without a load balancer");
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let servers: String = nodes
        .iter()
        .map(|n| {
            format!(
                "  server {} {} check inter 300ms fall 2 rise 1\n",
                n.name,
                n.url.trim_start_matches("http://")
            )
        })
        .collect();
    let config = format!(
        "global\n  maxconn 2000\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n  \
         timeout server 120s\n  timeout tunnel 1h\n  retries 3\n  option redispatch\n\
         frontend agents\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n  option httpchk GET /healthz\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let stderr = dir.join("haproxy.stderr");
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("run haproxy");
    let lb = Node {
        name: "lb",
        child,
        url: format!("http://127.0.0.1:{port}"),
        stderr,
    };
    let client = Client::new(&lb.url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.health().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy did not start: {}",
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(lb)
}

/// An agent's stream through the SDK (`EventStream`, which reconnects and resumes by itself):
/// the `seq` of every event it hands out, with how often it had reconnected by then.
fn sdk_stream(mut stream: nervix_client::EventStream) -> mpsc::UnboundedReceiver<(i64, u64)> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(event)) = stream.next().await {
            if let Some(seq) = event.seq {
                if tx.send((seq, stream.reconnects())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// What both nodes (and the admin commands) share.
struct Env {
    database_url: String,
    redis_url: String,
    master_key: String,
}

impl Env {
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NERVIX_DATABASE_URL", self.database_url.clone()),
            ("NERVIX_REDIS_URL", self.redis_url.clone()),
            ("NERVIX_MASTER_KEY", self.master_key.clone()),
        ]
    }
}

fn redis_url() -> Option<String> {
    match std::env::var("NERVIX_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "NERVIX_TEST_REDIS_URL must be set in CI"
            );
            eprintln!("SKIP: NERVIX_TEST_REDIS_URL is not set; the cluster test skips");
            None
        }
    }
}

/// `nervix admin …` with the cluster's configuration; its stdout.
async fn admin(env: &Env, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nervix"))
        .arg("admin")
        .args(args)
        .env("NERVIX_DATA_DIR", dir.join("admin"))
        .envs(env.vars())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "nervix admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// An enrolled agent.
#[derive(Clone)]
struct Agent {
    id: Uuid,
    handle: String,
    keys: Arc<AgentKeys>,
    token: String,
}

async fn enroll(node: &Node, handle: &str, capabilities: &[&str]) -> Agent {
    let keys = Arc::new(AgentKeys::generate());
    let mut client = Client::new(&node.url).unwrap();
    let request = EnrollRequest::new(handle, &keys).capabilities(capabilities.iter().copied());
    let token = client.enroll(&keys, &request).await.unwrap().token;
    let id = client.me().await.unwrap().id;
    Agent {
        id,
        handle: handle.to_owned(),
        keys,
        token,
    }
}

/// A request with `token` to `node`: the status and the JSON body.
async fn call(
    node: &Node,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    Client::new(&node.url)
        .unwrap()
        .with_token(token.to_owned())
        .request(method, path, body.as_ref())
        .await
        .unwrap()
}

async fn ok(node: &Node, token: &str, method: Method, path: &str, body: Option<Value>) -> Value {
    let (status, body) = call(node, token, method, path, body).await;
    assert!(
        (200..300).contains(&status),
        "{path} on {}: {status} {body}",
        node.name
    );
    body
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

fn task(title: &str, capability: &str) -> Value {
    json!({
        "title": title,
        "description": "Summarise the quarter for the planning meeting.",
        "reward": "5.00",
        "requirements": {"capabilities": [capability]},
        "complexity": "simple",
        "deadline": (chrono::Utc::now() + chrono::TimeDelta::hours(1)).to_rfc3339(),
    })
}

fn id(v: &Value) -> Uuid {
    v["id"].as_str().unwrap().parse().unwrap()
}

/// An agent's WebSocket, read by a task of its own (which also answers the server's pings):
/// every frame that arrives, in arrival order. The channel closes with the connection.
struct Stream {
    frames: mpsc::UnboundedReceiver<Value>,
    /// Every stored frame received so far (those with a `seq`), in arrival order.
    log: Vec<Value>,
}

impl Stream {
    async fn connect(node: &Node, token: &str, since: Option<i64>) -> Stream {
        let mut url = format!("{}/v1/agent/connect", node.url.replacen("http", "ws", 1));
        if let Some(since) = since {
            url.push_str(&format!("?since={since}"));
        }
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (_sink, mut read) = socket.split();
            while let Some(Ok(msg)) = read.next().await {
                if let Message::Text(text) = msg {
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                    if tx.send(frame).is_err() {
                        return;
                    }
                }
            }
        });
        Stream {
            frames,
            log: Vec::new(),
        }
    }

    fn last_seq(&self) -> Option<i64> {
        self.log.last().and_then(|f| f["seq"].as_i64())
    }

    /// Reads until the stream has every stored event up to `seq`; false when the connection
    /// closed first.
    async fn read_through(&mut self, seq: i64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.last_seq().unwrap_or(0) < seq {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => {
                    if frame.get("seq").is_some() {
                        self.log.push(frame);
                    }
                }
                Ok(None) => return false,
                Err(_) => panic!(
                    "timed out at seq {:?} waiting for {seq}: {:#?}",
                    self.last_seq(),
                    self.log.iter().rev().take(5).collect::<Vec<_>>()
                ),
            }
        }
        true
    }

    /// Waits for the connection to end (its node died), keeping what arrived before.
    async fn until_closed(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => {
                    if frame.get("seq").is_some() {
                        self.log.push(frame);
                    }
                }
                Ok(None) => return,
                Err(_) => panic!("the connection did not close"),
            }
        }
    }

    /// How many stored frames of `kind` have `data[field] == value`.
    fn count(&self, kind: &str, field: &str, value: &str) -> usize {
        self.log
            .iter()
            .filter(|f| f["type"] == kind && f["data"][field] == value)
            .count()
    }
}

/// The `seq`s stored for an agent: what a stream must have carried, each once and in order.
async fn stored_seqs(pool: &PgPool, agent: Uuid) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM agent_events WHERE agent_id = $1 ORDER BY seq")
        .bind(agent)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn last_seq(pool: &PgPool, agent: Uuid) -> i64 {
    stored_seqs(pool, agent).await.last().copied().unwrap_or(0)
}

/// Waits until an event of `kind` whose `data[field]` is `value` is stored for the agent.
async fn stored(pool: &PgPool, agent: &Agent, kind: &str, field: &str, value: &str) {
    let what = format!("{kind} ({field} {value}) stored for {}", agent.handle);
    eventually(&what, Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agent_events WHERE agent_id = $1 AND kind = $2 AND data ->> $3 \
             = $4",
        )
        .bind(agent.id)
        .bind(kind)
        .bind(field)
        .bind(value)
        .fetch_one(pool)
        .await
        .unwrap();
        n > 0
    })
    .await;
}

/// Reads the agent's stream through everything stored for it so far.
async fn catch_up(pool: &PgPool, agent: &Agent, stream: &mut Stream) {
    let seq = last_seq(pool, agent.id).await;
    assert!(
        stream.read_through(seq, Duration::from_secs(20)).await,
        "{}'s connection closed",
        agent.handle
    );
}

/// The stream carried exactly the stored events from its first `seq` to its last: none lost,
/// none repeated, in `seq` order. (Events stored after the last one read, such as a
/// reputation update the background pass sends a moment later, are the next read's.)
async fn assert_exactly_once_in_order(pool: &PgPool, agent: &Agent, stream: &Stream) {
    let got: Vec<i64> = stream
        .log
        .iter()
        .map(|f| f["seq"].as_i64().unwrap())
        .collect();
    let first = *got.first().expect("some events");
    let last = *got.last().expect("some events");
    let stored: Vec<i64> = stored_seqs(pool, agent.id)
        .await
        .into_iter()
        .filter(|s| (first..=last).contains(s))
        .collect();
    assert_eq!(
        got, stored,
        "{}'s stream against its stored events",
        agent.handle
    );
    let contiguous: Vec<i64> = (first..first + got.len() as i64).collect();
    assert_eq!(
        got, contiguous,
        "{}'s events are numbered without gaps",
        agent.handle
    );
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn task_status(node: &Node, token: &str, task: Uuid) -> String {
    let t = ok(node, token, Method::GET, &format!("/v1/tasks/{task}"), None).await;
    t["status"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_one_database_and_one_bus() {
    let Some(redis_url) = redis_url() else {
        return;
    };
    let Some(database_url) = nervix_store::testing::postgres_database_url().await else {
        return;
    };
    let pool = PgPool::connect(&database_url).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        database_url: database_url.clone(),
        redis_url,
        master_key: STANDARD.encode(rand::random::<[u8; 32]>()),
    };

    let mut a = Node::start("a", dir.path(), &env, &[]).await;
    // Node B holds every submission made through it for a reviewer, so that the review
    // reaper (a worker on both nodes) is what pays for it.
    let b = Node::start("b", dir.path(), &env, &[("NERVIX_SPOT_CHECK_RATE", "1")]).await;
    // The admin command opens the same sealed keys with the same master key.
    let admin_token = admin(&env, dir.path(), &["create-token"])
        .await
        .split_whitespace()
        .last()
        .unwrap()
        .to_owned();
    let seals: Vec<String> = sqlx::query_scalar("SELECT seal FROM signing_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        !seals.is_empty() && seals.iter().all(|s| s == "aes-256-gcm"),
        "the nodes share the keys sealed: {seals:?}"
    );
    for node in [&a, &b] {
        assert!(
            !node.log().contains("stored unencrypted"),
            "node {} warns of keys in the clear though a master key is set",
            node.name
        );
    }

    // Agents behind a load balancer, on whichever node it picks (connected one after the
    // other, so round robin puts two on each), through the SDK's own stream.
    let lb = load_balancer(dir.path(), [&a, &b]).await;
    let mut balanced = Vec::new();
    if let Some(lb) = &lb {
        let mut agents = Vec::new();
        for i in 0..4 {
            agents.push(enroll(lb, &format!("balanced-{i}"), &[]).await);
        }
        for agent in agents {
            let stream = nervix_client::EventStream::connect(&lb.url, agent.token.clone(), Some(0))
                .await
                .unwrap();
            balanced.push((agent, sdk_stream(stream), Vec::<(i64, u64)>::new()));
        }
    }

    // ---- a token from one node works on the other --------------------------------------
    let poster = enroll(&a, "poster", &[]).await;
    let w0 = enroll(&a, "writer-a", &["writing"]).await;
    let w1 = enroll(&b, "writer-b", &["writing"]).await;
    for (token, node) in [
        (&poster.token, &b),
        (&w0.token, &b),
        (&w1.token, &a),
        (&admin_token, &a),
        (&admin_token, &b),
    ] {
        let (status, body) = call(node, token, Method::GET, "/v1/agents/me", None).await;
        assert_eq!(status, 200, "a token on node {}: {body}", node.name);
    }
    ok(
        &a,
        &admin_token,
        Method::POST,
        &format!("/v1/admin/agents/{}/grant", poster.id),
        Some(json!({"amount": "1000.00", "memo": "cluster test"})),
    )
    .await;

    // ---- events reach each agent on whichever node it is connected to --------------------
    // The poster listens on B, one writer on A and one on B; each event is caused through
    // the other node where there is one.
    let mut s_poster = Stream::connect(&b, &poster.token, Some(0)).await;
    let mut s_w0 = Stream::connect(&a, &w0.token, Some(0)).await;
    let mut s_w1 = Stream::connect(&b, &w1.token, Some(0)).await;

    let announcement = ok(
        &a,
        &admin_token,
        Method::POST,
        "/v1/admin/announcements",
        Some(json!({"title": "Maintenance", "body": "Node A speaking."})),
    )
    .await;
    let announcement = announcement["id"].as_str().unwrap().to_owned();
    let to_w0 = ok(
        &b,
        &w1.token,
        Method::POST,
        "/v1/messages/send",
        Some(json!({"to": w0.handle, "encrypted": false, "payload": STANDARD.encode("to A")})),
    )
    .await;
    let to_w1 = ok(
        &a,
        &w0.token,
        Method::POST,
        "/v1/messages/send",
        Some(json!({"to": w1.handle, "encrypted": false, "payload": STANDARD.encode("to B")})),
    )
    .await;
    // Posted through A, offered to both writers (one on each node), claimed by the writer on
    // B through A, submitted through A (no spot check there): the poster (on B) sees it
    // claimed and completed, the writer is paid.
    let t1 = ok(
        &a,
        &poster.token,
        Method::POST,
        "/v1/tasks",
        Some(task("first", "writing")),
    )
    .await;
    let t1 = id(&t1).to_string();
    stored(&pool, &w0, "task_available", "task_id", &t1).await;
    stored(&pool, &w1, "task_available", "task_id", &t1).await;
    ok(
        &a,
        &w1.token,
        Method::POST,
        &format!("/v1/tasks/{t1}/claim"),
        Some(json!({"estimated_duration": 600})),
    )
    .await;
    let submitted = ok(
        &a,
        &w1.token,
        Method::POST,
        &format!("/v1/tasks/{t1}/submit"),
        Some(json!({"submission_data": {"content": WORK}})),
    )
    .await;
    assert_eq!(
        task_status(&b, &poster.token, t1.parse().unwrap()).await,
        "completed",
        "{submitted}"
    );
    stored(&pool, &w1, "earning", "task_id", &t1).await;
    eventually(
        "the poster's task updates",
        Duration::from_secs(20),
        || async {
            let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agent_events WHERE agent_id = $1 AND kind = 'task_update' AND \
             data ->> 'status' = 'completed'",
        )
        .bind(poster.id)
        .fetch_one(&pool)
        .await
        .unwrap();
            n > 0
        },
    )
    .await;

    for (agent, stream) in [(&poster, &mut s_poster), (&w0, &mut s_w0), (&w1, &mut s_w1)] {
        catch_up(&pool, agent, stream).await;
        assert_exactly_once_in_order(&pool, agent, stream).await;
        assert_eq!(
            stream.count("announcement", "id", &announcement),
            1,
            "{}",
            agent.handle
        );
    }
    assert_eq!(
        s_w0.count("message", "id", to_w0["id"].as_str().unwrap()),
        1
    );
    assert_eq!(
        s_w1.count("message", "id", to_w1["id"].as_str().unwrap()),
        1
    );
    assert_eq!(s_w0.count("task_available", "task_id", &t1), 1);
    assert_eq!(s_w1.count("task_available", "task_id", &t1), 1);
    assert_eq!(s_w1.count("earning", "task_id", &t1), 1);
    let updates: Vec<&str> = s_poster
        .log
        .iter()
        .filter(|f| f["type"] == "task_update" && f["data"]["task_id"] == t1.as_str())
        .map(|f| f["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        updates,
        ["claimed", "completed"],
        "the poster's updates, once each, in order"
    );
    let payouts = "SELECT COUNT(*) FROM ledger_entries WHERE task_id = $1 AND kind = 'payout'";
    assert_eq!(count(&pool, payouts, t1.parse().unwrap()).await, 1);

    // ---- a claim race across nodes has one winner ------------------------------------------
    let mut racers = Vec::new();
    for i in 0..12 {
        let node = if i % 2 == 0 { &a } else { &b };
        racers.push((node, enroll(node, &format!("racer-{i}"), &["racing"]).await));
    }
    let race = ok(
        &b,
        &poster.token,
        Method::POST,
        "/v1/tasks",
        Some(task("race", "racing")),
    )
    .await;
    let race = id(&race);
    let start = Arc::new(tokio::sync::Barrier::new(racers.len()));
    let claims: Vec<_> = racers
        .iter()
        .map(|(node, r)| {
            let (url, token, start) = (node.url.clone(), r.token.clone(), start.clone());
            tokio::spawn(async move {
                let client = Client::new(&url).unwrap().with_token(token);
                start.wait().await;
                let body = json!({"estimated_duration": 600});
                client
                    .request(
                        Method::POST,
                        &format!("/v1/tasks/{race}/claim"),
                        Some(&body),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, c) in claims.into_iter().enumerate() {
        let (status, body) = c.await.unwrap();
        match status {
            200 => winners.push(i),
            409 => assert_eq!(body["code"], "already_claimed", "{body}"),
            other => panic!("claim: {other} {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let winner = &racers[winners[0]].1;
    let held: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, active_tasks FROM agents WHERE handle LIKE 'racer-%'")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (agent, active) in held {
        assert_eq!(active, i64::from(agent == winner.id), "{agent}");
    }

    // ---- background workers on both nodes do each piece of work once ------------------------
    // The winner's lease runs out: both nodes' lease reapers see it, one takes it back.
    sqlx::query(
        "UPDATE tasks SET lease_expires_at = NOW() - INTERVAL '5 seconds' WHERE id = $1 AND \
         status = 'claimed'",
    )
    .bind(race)
    .execute(&pool)
    .await
    .unwrap();
    let excluded = "SELECT COUNT(*) FROM task_exclusions WHERE task_id = $1";
    eventually("the lease reaper", Duration::from_secs(20), || async {
        count(&pool, excluded, race).await == 1
    })
    .await;
    // Give the other node's reaper (and any duplicate) time to run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lost = "SELECT COUNT(*) FROM notifications WHERE agent_id = $1 AND kind = 'lease_lost'";
    assert_eq!(
        count(&pool, lost, winner.id).await,
        1,
        "one lease expiry, one notice"
    );
    let attempts = "SELECT attempts FROM tasks WHERE id = $1";
    assert_eq!(count(&pool, attempts, race).await, 1, "one attempt counted");

    // A deadline passes: one expiry, one refund.
    let late = ok(
        &a,
        &poster.token,
        Method::POST,
        "/v1/tasks",
        Some(task("late", "racing")),
    )
    .await;
    let late = id(&late);
    sqlx::query("UPDATE tasks SET deadline = NOW() - INTERVAL '1 second' WHERE id = $1")
        .bind(late)
        .execute(&pool)
        .await
        .unwrap();
    eventually("the deadline reaper", Duration::from_secs(20), || async {
        task_status(&a, &poster.token, late).await == "expired"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refunds = "SELECT COUNT(*) FROM ledger_entries WHERE task_id = $1 AND kind = 'refund'";
    assert_eq!(count(&pool, refunds, late).await, 1, "one refund");

    // A submission held for review through B, whose review deadline passes: the review
    // reapers of both nodes accept it once, and pay once.
    let held = ok(
        &a,
        &poster.token,
        Method::POST,
        "/v1/tasks",
        Some(task("held", "writing")),
    )
    .await;
    let held = id(&held);
    ok(
        &b,
        &w0.token,
        Method::POST,
        &format!("/v1/tasks/{held}/claim"),
        Some(json!({"estimated_duration": 600})),
    )
    .await;
    let submission = ok(
        &b,
        &w0.token,
        Method::POST,
        &format!("/v1/tasks/{held}/submit"),
        Some(json!({"submission_data": {"content": WORK}})),
    )
    .await;
    assert_eq!(
        task_status(&a, &poster.token, held).await,
        "submitted",
        "{submission}"
    );
    sqlx::query(
        "UPDATE submissions SET review_deadline = NOW() - INTERVAL '1 second' WHERE task_id = \
         $1 AND status = 'pending_review'",
    )
    .bind(held)
    .execute(&pool)
    .await
    .unwrap();
    eventually("the review reaper", Duration::from_secs(20), || async {
        task_status(&b, &poster.token, held).await == "completed"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count(&pool, payouts, held).await, 1, "one payout");
    stored(&pool, &w0, "earning", "task_id", &held.to_string()).await;
    catch_up(&pool, &w0, &mut s_w0).await;
    assert_eq!(s_w0.count("earning", "task_id", &held.to_string()), 1);

    // ---- a key rotation on A is honoured by B at once, and B signs with it within 10 s ----
    let rotated = ok(
        &a,
        &admin_token,
        Method::POST,
        "/v1/admin/signing-keys/rotate",
        None,
    )
    .await;
    let rotated_at = Instant::now();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let mut on_a = Client::new(&a.url).unwrap();
    let fresh = on_a.authenticate(&w0.keys, &w0.handle).await.unwrap().token;
    assert_eq!(kid_of(&fresh), new_kid, "A signs with its new key at once");
    let (status, body) = call(&b, &fresh, Method::GET, "/v1/agents/me", None).await;
    assert_eq!(status, 200, "B accepts A's new key at once: {body}");
    let mut on_b = Client::new(&b.url).unwrap();
    loop {
        let token = on_b.authenticate(&w1.keys, &w1.handle).await.unwrap().token;
        if kid_of(&token) == new_kid {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(10),
            "B still signs with the old key 10 s after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let jwks = ok(
        &b,
        &admin_token,
        Method::GET,
        "/.well-known/jwks.json",
        None,
    )
    .await;
    let kids: HashSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(kids.contains(new_kid.as_str()) && kids.len() == 2, "{jwks}");
    // Tokens of the old key still work everywhere.
    for node in [&a, &b] {
        let (status, _) = call(node, &poster.token, Method::GET, "/v1/agents/me", None).await;
        assert_eq!(status, 200);
    }

    // ---- node A dies: its agents resume on B from their last seq --------------------------
    catch_up(&pool, &w0, &mut s_w0).await;
    let before = s_w0.last_seq().unwrap();
    a.child.start_kill().unwrap();
    a.child.wait().await.unwrap();
    s_w0.until_closed(Duration::from_secs(10)).await;
    // What happens while the agent is away (through B, the node still up)…
    let away = ok(
        &b,
        &admin_token,
        Method::POST,
        "/v1/admin/announcements",
        Some(json!({"title": "Failover", "body": "Node A is gone."})),
    )
    .await;
    let away = away["id"].as_str().unwrap().to_owned();
    let dm = ok(
        &b,
        &w1.token,
        Method::POST,
        "/v1/messages/send",
        Some(json!({"to": w0.handle, "encrypted": false, "payload": STANDARD.encode("welcome")})),
    )
    .await;
    stored(&pool, &w0, "message", "id", dm["id"].as_str().unwrap()).await;
    // …is replayed when it reconnects to B with `since`, and live events follow.
    let mut resumed = Stream::connect(&b, &w0.token, Some(before)).await;
    let live = ok(
        &b,
        &admin_token,
        Method::POST,
        "/v1/admin/announcements",
        Some(json!({"title": "Live", "body": "Back in business."})),
    )
    .await;
    let live = live["id"].as_str().unwrap().to_owned();
    stored(&pool, &w0, "announcement", "id", &live).await;
    catch_up(&pool, &w0, &mut resumed).await;
    assert_eq!(
        resumed.log[0]["seq"].as_i64(),
        Some(before + 1),
        "resumed where it left off"
    );
    assert_exactly_once_in_order(&pool, &w0, &resumed).await;
    assert_eq!(resumed.count("announcement", "id", &away), 1);
    assert_eq!(
        resumed.count("message", "id", dm["id"].as_str().unwrap()),
        1
    );
    assert_eq!(resumed.count("announcement", "id", &live), 1);
    // The writer on B never noticed.
    catch_up(&pool, &w1, &mut s_w1).await;
    assert_exactly_once_in_order(&pool, &w1, &s_w1).await;

    // Agents behind the load balancer: those on A reconnected (to B) by themselves, and
    // every one has every stored event, in order.
    for (agent, rx, got) in &mut balanced {
        let last = last_seq(&pool, agent.id).await;
        while got.last().map_or(0, |g| g.0) < last {
            let next = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
            got.push(
                next.expect("the balanced stream stalled")
                    .expect("stream ended"),
            );
        }
        let seqs: Vec<i64> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, stored_seqs(&pool, agent.id).await, "{}", agent.handle);
    }
    if lb.is_some() {
        let moved = balanced
            .iter()
            .filter(|(_, _, got)| got.last().is_some_and(|g| g.1 > 0))
            .count();
        assert!(moved >= 1, "no balanced agent was on node A");
    }

    // The money adds up after all of it.
    let report = admin(&env, dir.path(), &["verify-ledger"]).await;
    assert!(report.contains("ledger OK"), "{report}");

    drop(lb);
    drop(b);
    pool.close().await;
    drop_schema(&database_url).await;
}

async fn drop_schema(database_url: &str) {
    let (Some((_, schema)), Some(base)) = (
        database_url.rsplit_once("search_path%3D"),
        nervix_store::testing::postgres_url(),
    ) else {
        return;
    };
    let pool = PgPool::connect(&base).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
