//! `nervix serve` as a separate process, as an operator runs it: started, killed, signalled
//! and restarted on the same data folder, database and port; `nervix admin` on the same
//! storage; agents enrolled through the SDK.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nervix_client::{AgentKeys, Client, EnrollRequest};

/// Text the automated checks accept for a text task (long and varied enough).
pub const ANSWER: &str = "The figures for the quarter show steady growth in every region, \
    with the northern office ahead of plan and the southern office catching up after a slow \
    start. Costs stayed flat while revenue rose, so the margin improved by two points. The \
    report recommends keeping the current hiring pace and revisiting prices in spring.";

/// Which storage a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A server's storage, address and log: everything that survives a restart.
pub struct Node {
    pub dir: PathBuf,
    pub data: PathBuf,
    /// `None`: the embedded default in the data folder.
    pub database_url: Option<String>,
    pub port: u16,
    pub log: PathBuf,
}

impl Node {
    /// A node on a fresh data folder under `dir` and, for PostgreSQL, a fresh schema of the
    /// test database; `None` when PostgreSQL tests skip here.
    pub async fn fresh(dir: &Path, backend: Backend) -> Option<Node> {
        let database_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(nervix_store::testing::postgres_database_url().await?),
        };
        Some(Node::at(dir, dir.join("data"), database_url))
    }

    pub fn at(dir: &Path, data: PathBuf, database_url: Option<String>) -> Node {
        // A port picked once and reused by every restart, as agents keep one server URL.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Node {
            dir: dir.to_owned(),
            log: dir.join(format!("serve-{port}.log")),
            data,
            database_url,
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn storage_args(&self) -> Vec<String> {
        let mut args = vec!["--data-dir".to_owned(), self.data.display().to_string()];
        if let Some(url) = &self.database_url {
            args.extend(["--database-url".to_owned(), url.clone()]);
        }
        args
    }

    /// `nervix admin SUBCOMMAND [args] --data-dir … [--database-url …]`: (success, stdout,
    /// stderr).
    pub fn admin(&self, subcommand: &str, args: &[&str]) -> (bool, String, String) {
        let out = nervix()
            .args(["admin", subcommand])
            .args(args)
            .args(self.storage_args())
            .output()
            .expect("run nervix admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// An admin client (`nervix admin create-token`).
    pub fn admin_client(&self) -> Client {
        let (ok, stdout, stderr) = self.admin("create-token", &[]);
        assert!(ok, "create-token: {stdout}{stderr}");
        let token = stdout.split_whitespace().last().unwrap().to_owned();
        Client::new(&self.url()).unwrap().with_token(token)
    }

    /// Starts `nervix serve` and waits until it answers `/readyz`.
    pub async fn start(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = nervix()
            .arg("serve")
            .args(["--bind", &format!("127.0.0.1:{}", self.port)])
            .args(self.storage_args())
            .args(["--rate-limit-enroll", "0", "--rate-limit-agent", "0"])
            .args(["--spot-check-rate", "0", "--sqlite-writer-cpu", "off"])
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run nervix serve");
        let client = Client::new(&self.url()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if client.readiness().await.is_ok() {
                return child;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("nervix serve exited ({status}):\n{}", self.log_text());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nervix serve not ready after 60 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Opens the node's storage directly (while no server runs on it, for SQLite).
    pub async fn store(&self) -> Arc<dyn nervix_store::Store> {
        let url = self
            .database_url
            .clone()
            .unwrap_or_else(|| nervix_server::config::default_database_url(&self.data));
        nervix_store::connect(&url, &Default::default())
            .await
            .unwrap()
    }
}

pub fn nervix() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nervix"));
    // The test's own environment must not choose the storage or the server.
    for var in [
        "NERVIX_DATA_DIR",
        "NERVIX_DATABASE_URL",
        "NERVIX_REDIS_URL",
        "NERVIX_AGENT_CONFIG",
        "NERVIX_SERVER",
        "NERVIX_TOKEN",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null());
    c
}

/// Sends `signal` to `child` and waits (at most `within`) for it to exit.
pub async fn signal_and_wait(
    child: &mut Child,
    signal: nix::sys::signal::Signal,
    within: Duration,
) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, signal).unwrap();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server did not exit within {within:?} of {signal}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Enrolls `handle` with `capabilities`; the client renews its token with the key.
pub async fn enroll(url: &str, handle: &str, capabilities: &[&str]) -> Client {
    let keys = Arc::new(AgentKeys::generate());
    let mut client = Client::new(url).unwrap();
    let request = EnrollRequest::new(handle, &keys)
        .name(format!("Agent {handle}"))
        .capabilities(capabilities.iter().copied());
    client.enroll(&keys, &request).await.unwrap();
    client.set_signing_key(keys, handle);
    client
}

/// A server in this process on a fresh embedded database in `dir` (enrollment limits and spot
/// checks off, so tests enroll freely and accepted work is paid at once), with its operator's
/// admin client.
pub struct Embedded {
    pub server: nervix_server::Running,
    pub url: String,
    pub admin: Client,
}

pub async fn embedded(dir: &Path) -> Embedded {
    let mut config = nervix_server::Config::for_data_dir(dir.join("data"));
    config.rate_limit_enroll_per_minute = 0;
    config.spot_check_rate = 0.0;
    // Before the server starts: one SQLite writer per process at a time.
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = nervix_server::start(listener, config).await.unwrap();
    let url = format!("http://{}", server.addr);
    let admin = Client::new(&url).unwrap().with_token(admin_token);
    Embedded { server, url, admin }
}
