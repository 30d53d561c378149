//! Shared scaffolding of the server's integration tests: a whole server on a random port over a
//! fresh database (SQLite file or private PostgreSQL schema), an admin token, agents enrolled
//! through the real SDK, and the runner with which `nervix_store::backend_matrix!` runs every test
//! case on both backends.

#![allow(dead_code)]

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use nervix_client::{AgentKeys, Client, ClientError, EnrollRequest, Method, RawResponse};
use nervix_server::{Config, Running};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use uuid::Uuid;

pub use nervix_store::testing::Backend;

/// The runner of [`nervix_store::backend_matrix!`] for the server's cases, `async fn(Backend)`:
/// each case starts its own server ([`TestApp::start`]), which is `None` when the backend skips.
/// The server's cases run with `workers = 2`.
pub async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    case(backend).await;
}

/// A URL for a fresh, empty database on `backend`; `None` when this backend's tests skip.
pub async fn fresh_database_url(backend: Backend, dir: &Path) -> Option<String> {
    match backend {
        Backend::Sqlite => Some(format!("sqlite://{}", dir.join("nervix.db").display())),
        Backend::Postgres => nervix_store::testing::postgres_database_url().await,
    }
}

/// Test defaults: no rate limits (messages included), fast background loops (and counters), immediate retries, no spot checks.
pub fn test_config(dir: &Path, database_url: String) -> Config {
    let mut c = Config::for_data_dir(dir.to_path_buf());
    c.database_url = database_url;
    c.rate_limit_enroll_per_minute = 0;
    c.rate_limit_agent_per_second = 0;
    c.rate_limit_messages_per_minute = 0;
    c.worker_interval = Duration::from_millis(100);
    c.stats_interval = Duration::from_millis(100);
    c.retry = nervix_store::RetryPolicy {
        base_seconds: 0,
        max_seconds: 0,
    };
    c.spot_check_rate = 0.0;
    c
}

/// A running server with its own data folder and database.
pub struct TestApp {
    pub backend: Backend,
    pub config: Config,
    running: Option<Running>,
    pub base: String,
    pub http: reqwest::Client,
    pub admin_token: String,
    /// Authenticated as the operator's admin identity.
    pub admin: Client,
    pub admin_id: Uuid,
    dir: tempfile::TempDir,
    /// The PostgreSQL schema this app created, dropped again by [`TestApp::stop`].
    own_schema: Option<String>,
}

/// An enrolled agent and an SDK client carrying its token.
pub struct TestAgent {
    pub client: Client,
    pub keys: AgentKeys,
    pub id: Uuid,
    pub handle: String,
    pub token: String,
}

impl TestApp {
    /// A server with [`test_config`]; `None` when the backend skips.
    pub async fn start(backend: Backend) -> Option<TestApp> {
        Self::start_with(backend, |_| {}).await
    }

    /// A server with [`test_config`] adjusted by `adjust`; `None` when the backend skips.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = fresh_database_url(backend, dir.path()).await?;
        let mut config = test_config(dir.path(), url);
        adjust(&mut config);
        let own_schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => config
                .database_url
                .rsplit_once("search_path%3D")
                .map(|(_, schema)| schema.to_owned()),
        };
        let mut app = Self::start_on(backend, dir, config).await;
        app.own_schema = own_schema;
        Some(app)
    }

    /// A server for an existing data folder and database (e.g. a second node).
    pub async fn start_on(backend: Backend, dir: tempfile::TempDir, config: Config) -> TestApp {
        let admin_token = nervix_server::operator::create_admin_token(&config)
            .await
            .expect("admin token");
        let running = launch(&config).await;
        let base = format!("http://{}", running.addr);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let admin = Client::with_http_client(&base, http.clone())
            .expect("client")
            .with_token(admin_token.clone());
        let admin_id = admin.me().await.expect("admin me").id;
        TestApp {
            backend,
            config,
            running: Some(running),
            base,
            http,
            admin_token,
            admin,
            admin_id,
            dir,
            own_schema: None,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("server is running")
    }

    /// The server's data folder (signing keys; the SQLite file).
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// An unauthenticated client.
    pub fn client(&self) -> Client {
        Client::with_http_client(&self.base, self.http.clone()).expect("client")
    }

    /// A client carrying `token`.
    pub fn client_with(&self, token: &str) -> Client {
        self.client().with_token(token.to_owned())
    }

    /// Enrolls `handle` with `capabilities` (fresh keys) through the SDK.
    pub async fn enroll(&self, handle: &str, capabilities: &[&str]) -> TestAgent {
        let keys = AgentKeys::generate();
        let req = EnrollRequest::new(handle, &keys).capabilities(capabilities.iter().copied());
        self.enroll_request(keys, req).await
    }

    pub async fn enroll_request(&self, keys: AgentKeys, req: EnrollRequest) -> TestAgent {
        let mut client = self.client();
        let token = client
            .enroll(&keys, &req)
            .await
            .unwrap_or_else(|e| panic!("enroll {}: {e}", req.agent_id));
        TestAgent {
            client,
            keys,
            id: token.agent.id,
            handle: req.agent_id.clone(),
            token: token.token,
        }
    }

    /// Enrolls `n` agents `{prefix}-{i}` with `capabilities`, a few at a time.
    pub async fn enroll_many(
        &self,
        prefix: &str,
        n: usize,
        capabilities: &[&str],
    ) -> Vec<TestAgent> {
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
            let batch = chunk
                .iter()
                .map(|i| async move { self.enroll(&format!("{prefix}-{i}"), capabilities).await });
            out.extend(futures::future::join_all(batch).await);
        }
        out
    }

    /// Credits an agent from the treasury.
    pub async fn grant(&self, agent: Uuid, amount: &str) {
        let (status, body) = self
            .admin
            .request(
                Method::POST,
                &format!("/v1/admin/agents/{agent}/grant"),
                Some(&json!({ "amount": amount })),
            )
            .await
            .expect("grant");
        assert_eq!(status, 200, "grant: {body}");
    }

    /// Posts a task as admin (from the treasury) from raw JSON; panics unless 201.
    pub async fn admin_post(&self, task: Value) -> Value {
        post_task_json(&self.admin, task).await
    }

    /// Shuts the server down and drops the PostgreSQL schema it created. (A failed test skips
    /// this and leaves its schema behind, to look at.)
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        if let (Some(schema), Some(base)) = (self.own_schema.take(), pg_base_url()) {
            let pool = sqlx::PgPool::connect(&base).await.expect("postgres");
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .expect("drop test schema");
            pool.close().await;
        }
    }

    /// Moves a claimed task's lease into the past, straight in the database, as if the
    /// assignee had gone quiet for longer than it asked for.
    pub async fn backdate_lease(&self, task: Uuid) {
        let past = Utc::now() - chrono::Duration::seconds(5);
        let sql = "UPDATE tasks SET lease_expires_at = $1 WHERE id = $2 AND status = 'claimed'";
        let updated = self.set_time(sql, past, task).await;
        assert_eq!(updated, 1, "task {task} was not claimed");
    }

    /// Runs `sql` (an UPDATE binding a time as `$1` and an id as `$2`) straight in the
    /// database, past the server; returns the rows it changed.
    pub async fn set_time(&self, sql: &str, at: DateTime<Utc>, id: Uuid) -> u64 {
        match self.backend {
            Backend::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&self.config.database_url)
                    .expect("sqlite url")
                    .busy_timeout(Duration::from_secs(10));
                let pool = sqlx::SqlitePool::connect_with(opts).await.expect("sqlite");
                let n = sqlx::query(sql)
                    .bind(at)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .expect("update")
                    .rows_affected();
                pool.close().await;
                n
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.config.database_url)
                    .await
                    .expect("postgres");
                let n = sqlx::query(sql)
                    .bind(at)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .expect("update")
                    .rows_affected();
                pool.close().await;
                n
            }
        }
    }
}

/// Sends a bare HTTP/1.1 request head (no body) on a fresh connection and reads the response:
/// for requests whose declared body the server must refuse before reading it. Sending the
/// body too would race the server closing the connection on it.
pub async fn send_head(addr: std::net::SocketAddr, head: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).await.expect("read response");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len || n == 0 {
                    return end;
                }
            }
            assert!(n > 0, "connection closed before a response");
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("response in time");
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.append(
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
                reqwest::header::HeaderValue::from_str(v.trim()).expect("value"),
            );
        }
    }
    RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    }
}

fn pg_base_url() -> Option<String> {
    std::env::var("NERVIX_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

async fn launch(config: &Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    nervix_server::start(listener, config.clone())
        .await
        .expect("start server")
}

/// `POST /v1/tasks` with a raw JSON body; panics unless 201.
pub async fn post_task_json(client: &Client, task: Value) -> Value {
    let (status, body) = client
        .request(Method::POST, "/v1/tasks", Some(&task))
        .await
        .expect("post task");
    assert_eq!(status, 201, "post task: {body}");
    body
}

/// A task body: simple text task needing `caps`, due in an hour.
/// A text answer the quality checks accept with full marks: longer than the default
/// `min_words` (20) and not repetitive.
pub const ANSWER: &str = "The survey found that most readers prefer short chapters with clear \
    headings. We recommend splitting the guide into five parts, adding a glossary, and moving \
    the installation notes to an appendix so beginners reach the first example sooner.";

pub fn task_body(title: &str, reward: &str, caps: &[&str]) -> Value {
    json!({
        "title": title,
        "description": "integration test task",
        "requirements": {"capabilities": caps},
        "reward": reward,
        "complexity": "simple",
        "deadline": in_secs(3600),
    })
}

pub fn in_secs(secs: i64) -> String {
    (Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

pub fn id_of(v: &Value) -> Uuid {
    v["id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(|| panic!("no id in {v}"))
}

/// The API error of a failed SDK call; panics when the call succeeded.
pub fn api_err<T: std::fmt::Debug>(r: Result<T, ClientError>) -> ClientError {
    match r {
        Ok(v) => panic!("expected an API error, got {v:?}"),
        Err(e) => e,
    }
}

/// Asserts an error status and code.
pub fn assert_api_err<T: std::fmt::Debug>(
    r: Result<T, ClientError>,
    status: u16,
    code: &str,
) -> ClientError {
    let e = api_err(r);
    assert_eq!(e.status(), Some(status), "{e}");
    assert_eq!(e.code(), Some(code), "{e}");
    e
}

/// Asserts a 422 whose `errors` name `field`.
pub fn assert_field_error(status: u16, body: &Value, field: &str) {
    assert_eq!(
        status, 422,
        "expected 422 naming {field}, got {status}: {body}"
    );
    let named = body["errors"]
        .as_array()
        .is_some_and(|errs| errs.iter().any(|e| e["field"] == field));
    assert!(named, "422 does not name field {field}: {body}");
}

/// Asserts an RFC 9457 problem response with `status`.
pub fn assert_problem(r: &RawResponse, status: u16) -> Value {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    let ct = r.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct:?} for {status}"
    );
    let body = r.json();
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(!body[field].is_null(), "problem lacks {field}: {body}");
    }
    assert_eq!(body["status"], status, "{body}");
    assert!(body["code"].as_str().is_some_and(|c| !c.is_empty()));
    body
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- tokens ----------------------------------------------------------------------------------

/// The decoded header and claims of a JWT (no verification).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut next = || {
        let p = parts.next().expect("jwt part");
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(p).expect("base64url"))
            .expect("jwt json")
    };
    let header = next();
    let claims = next();
    (header, claims)
}

/// The server's signing keys as the database keeps them (stored in the clear: tests run
/// without a master key): (kid, 32-byte seed), newest first.
pub async fn server_signing_keys(app: &TestApp) -> Vec<(String, [u8; 32], DateTime<Utc>)> {
    let mut keys: Vec<_> = app
        .running()
        .state
        .app
        .store
        .signing_keys()
        .await
        .expect("signing keys")
        .into_iter()
        .map(|k| {
            assert_eq!(k.seal, nervix_store::KeySeal::None, "{k:?}");
            let seed: [u8; 32] = k.secret.try_into().expect("32 bytes");
            (k.kid, seed, k.created_at)
        })
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.2));
    keys
}

/// Signs `claims` as an EdDSA JWT with `kid` and an Ed25519 `seed`.
pub fn sign_eddsa(seed: &[u8; 32], kid: &str, claims: &Value) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    let der = key.to_pkcs8_der().expect("pkcs8");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes()),
    )
    .expect("sign")
}

// ---- the agent WebSocket ----------------------------------------------------------------------

pub use tokio_tungstenite::tungstenite;

/// How long a test waits for one frame before it fails.
pub const FRAME_WAIT: Duration = Duration::from_secs(15);

/// A stock WebSocket client on `GET /v1/agent/connect`.
pub struct Ws {
    pub stream: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl TestApp {
    /// The agent connection's URL, with `?since=` when given.
    pub fn ws_url(&self, since: Option<i64>) -> String {
        let base = self.base.replacen("http://", "ws://", 1);
        match since {
            Some(n) => format!("{base}/v1/agent/connect?since={n}"),
            None => format!("{base}/v1/agent/connect"),
        }
    }

    /// Opens the agent connection, with `token` as a bearer header when given, on a socket
    /// whose receive buffer is `recv_buffer` bytes when given. The handshake's error when the
    /// server refuses the upgrade.
    pub async fn ws_try(
        &self,
        token: Option<&str>,
        since: Option<i64>,
        recv_buffer: Option<u32>,
    ) -> Result<Ws, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let mut req = self.ws_url(since).into_client_request()?;
        if let Some(t) = token {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header value"),
            );
        }
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("receive buffer");
        }
        let tcp = socket.connect(self.running().addr).await.expect("connect");
        let (stream, _) = tokio_tungstenite::client_async(req, tcp).await?;
        Ok(Ws { stream })
    }

    /// The agent connection authenticated by header, after its `ready` frame.
    pub async fn ws(&self, token: &str, since: Option<i64>) -> Ws {
        let mut ws = self
            .ws_try(Some(token), since, None)
            .await
            .expect("websocket upgrade");
        ws.ready().await;
        ws
    }
}

impl Ws {
    pub async fn send_json(&mut self, v: &Value) {
        use futures::SinkExt;
        self.stream
            .send(tungstenite::Message::text(v.to_string()))
            .await
            .expect("send frame");
    }

    /// The next message that is not a ping or pong, or `None` at the end of the stream;
    /// `Err` after `wait`.
    pub async fn message(
        &mut self,
        wait: Duration,
    ) -> Result<Option<tungstenite::Message>, tokio::time::error::Elapsed> {
        use futures::StreamExt;
        tokio::time::timeout(wait, async {
            loop {
                match self.stream.next().await {
                    Some(Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_))) => {}
                    Some(Ok(m)) => return Some(m),
                    Some(Err(_)) | None => return None,
                }
            }
        })
        .await
    }

    /// The next JSON frame within `wait`, `None` if none came; panics on a close.
    pub async fn frame_within(&mut self, wait: Duration) -> Option<Value> {
        match self.message(wait).await {
            Err(_) => None,
            Ok(Some(tungstenite::Message::Text(t))) => {
                Some(serde_json::from_str(t.as_str()).expect("a JSON frame"))
            }
            Ok(other) => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next JSON frame; panics after [`FRAME_WAIT`] or on a close.
    pub async fn frame(&mut self) -> Value {
        self.frame_within(FRAME_WAIT)
            .await
            .expect("a frame in time")
    }

    /// The next stored frame (one with a `seq`), skipping unstored ones.
    pub async fn stored(&mut self) -> Value {
        loop {
            let f = self.frame().await;
            if f.get("seq").is_some() {
                return f;
            }
        }
    }

    /// The next frame that is not stored (a reply: `pong`, `error`, `notifications.marked`),
    /// skipping stored ones.
    pub async fn reply(&mut self) -> Value {
        loop {
            let f = self.frame().await;
            if f.get("seq").is_none() {
                return f;
            }
        }
    }

    /// The next stored frame of type `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let f = self.stored().await;
            if f["type"] == kind {
                return f;
            }
        }
    }

    /// Every frame that arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Value> {
        let until = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(f) = self
            .frame_within(until.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            out.push(f);
        }
        out
    }

    /// The `ready` frame that opens the stream.
    pub async fn ready(&mut self) -> Value {
        let f = self.frame().await;
        assert_eq!(f["type"], "ready", "{f}");
        f
    }

    /// Reads until the server's close frame: its code and reason. Frames before it are
    /// returned too, in order.
    pub async fn closed(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            match self.message(FRAME_WAIT).await {
                Err(_) => panic!("no close within {FRAME_WAIT:?}; got {before:?}"),
                Ok(Some(tungstenite::Message::Close(Some(f)))) => {
                    return (u16::from(f.code), f.reason.as_str().to_owned(), before)
                }
                Ok(Some(tungstenite::Message::Text(t))) => {
                    before.push(serde_json::from_str(t.as_str()).expect("a JSON frame"));
                }
                Ok(other) => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}
