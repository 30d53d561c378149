//! The `nervix` binary end to end against a real server on the embedded default: key
//! generation, agent enrollment with a saved token, whoami/login with the saved config, and the
//! operator's admin token; `serve` and `admin` with every variable set but empty; the task,
//! workflow and status commands (with agents enrolled through the SDK doing the work), their
//! `--json` output and their errors; a profile token renewed by the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nervix_server::Config;

fn nervix(args: &[&str]) -> (bool, String, String) {
    nervix_env(args, &[])
}

/// Runs the binary with only the given `NERVIX_*` client variables set.
fn nervix_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nervix"));
    command
        .args(args)
        .env_remove("NERVIX_AGENT_CONFIG")
        .env_remove("NERVIX_SERVER")
        .env_remove("NERVIX_TOKEN");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run nervix");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_enroll_whoami_login_and_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = Config::for_data_dir(data.clone());
    config.rate_limit_enroll_per_minute = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = nervix_server::start(listener, config).await.unwrap();
    let url = format!("http://{}", server.addr);

    // keygen writes a 0600 key file and refuses to overwrite it.
    let key = dir.path().join("agent.key");
    let key_s = key.to_str().unwrap();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let key_s = key_s.to_owned();
        move || nervix(&["keygen", "--out", &key_s])
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("public_key"), "{stdout}");
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    let (ok, _, stderr) = nervix(&["keygen", "--out", key_s]);
    assert!(!ok && stderr.contains("--force"), "{stderr}");

    // enroll saves the token to a 0600 config file and never prints it.
    let cfg = dir.path().join("agent.json");
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let (url, key_s, cfg_s) = (url.clone(), key_s.to_owned(), cfg_s.clone());
        move || {
            nervix(&[
                "agent",
                "enroll",
                "--server",
                &url,
                "--agent-id",
                "cli-agent",
                "--capabilities",
                "coding,research",
                "--key",
                &key_s,
                "--config",
                &cfg_s,
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    #[cfg(unix)]
    assert_eq!(mode(&cfg), 0o600);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let token = saved["token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {saved}");
    assert!(
        !stdout.contains(&token) && !stderr.contains(&token),
        "the token is never printed"
    );
    let me = nervix_client::Client::new(&url)
        .unwrap()
        .with_token(token.clone());
    let agent = me.me().await.unwrap();
    assert_eq!(agent.agent_id, "cli-agent");
    assert_eq!(agent.capabilities, vec!["coding", "research"]);

    // whoami and login use the saved config; login replaces the token.
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let cfg_s = cfg_s.clone();
        move || nervix(&["agent", "whoami", "--config", &cfg_s])
    })
    .await
    .unwrap();
    assert!(ok && stdout.contains("cli-agent"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let cfg_s = cfg_s.clone();
        move || nervix(&["agent", "login", "--config", &cfg_s])
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    assert_ne!(saved["token"].as_str().unwrap(), token);

    // A read-only token minted from the saved one: printed last, the saved one unchanged.
    let (ok, stdout, stderr) = tokio::task::spawn_blocking({
        let cfg_s = cfg_s.clone();
        move || {
            nervix(&[
                "agent",
                "token",
                "--scope",
                "profile:read",
                "--scope",
                "tasks:read",
                "--expires-in",
                "600",
                "--config",
                &cfg_s,
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    let minted = stdout.split_whitespace().last().unwrap().to_owned();
    let read_only = nervix_client::Client::new(&url).unwrap().with_token(minted);
    let verified = read_only.verify().await.unwrap();
    assert_eq!(verified.scopes, ["profile:read", "tasks:read"]);
    assert_eq!(
        read_only.earnings().await.unwrap_err().status(),
        Some(403),
        "money:read was not asked for"
    );
    let resaved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    assert_eq!(resaved["token"], saved["token"]);
    let (ok, _, stderr) = tokio::task::spawn_blocking({
        let cfg_s = cfg_s.clone();
        move || nervix(&["agent", "token", "--scope", "root", "--config", &cfg_s])
    })
    .await
    .unwrap();
    assert!(!ok && stderr.contains("scopes[0]"), "{stderr}");

    // The operator's token: the last word of stdout, an admin on the same storage.
    let data_s = data.to_str().unwrap().to_owned();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        nervix(&["admin", "create-token", "--data-dir", &data_s])
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    let admin_token = stdout.split_whitespace().last().unwrap().to_owned();
    let admin = nervix_client::Client::new(&url)
        .unwrap()
        .with_token(admin_token);
    let v = admin.verify().await.unwrap();
    assert_eq!(v.role.to_string(), "admin");
    let (status, audit) = admin
        .request(
            nervix_client::Method::GET,
            "/v1/admin/audit?action=agent.enroll",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["items"][0]["target"], agent.id.to_string());

    server.shutdown().await;
}

/// Every `nervix serve` variable.
const SERVE_VARS: [&str; 18] = [
    "NERVIX_BIND",
    "NERVIX_DATA_DIR",
    "NERVIX_DATABASE_URL",
    "NERVIX_REDIS_URL",
    "NERVIX_RATE_LIMIT_ENROLL",
    "NERVIX_RATE_LIMIT_AGENT",
    "NERVIX_SPOT_CHECK_RATE",
    "NERVIX_ACCEPT_THRESHOLD",
    "NERVIX_BODY_LIMIT",
    "NERVIX_REQUEST_TIMEOUT",
    "NERVIX_MAX_REWARD",
    "NERVIX_MATCH_TOP_N",
    "NERVIX_MATCH_WINDOW",
    "NERVIX_SQLITE_WRITER_CPU",
    "NERVIX_EVENT_RETENTION_DAYS",
    "NERVIX_LOG_JSON",
    "NERVIX_MASTER_KEY",
    "NERVIX_MASTER_KEY_FILE",
];

/// `NERVIX_X=` (as docker-compose and `.env` files write it) means unset: `serve` starts on
/// its defaults (a SQLite file in `./nervix-data`), and so does `admin create-token`.
#[test]
fn empty_variables_mean_unset() {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("serve.stderr");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_nervix"));
    // Port 0: the default port may be taken on this machine.
    serve
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    for var in SERVE_VARS {
        serve.env(var, "");
    }
    let mut child = serve.spawn().expect("run nervix serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut up = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if line.contains("Nervix is running (sqlite storage)") {
            up = true;
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(up, "serve did not start:\n{stderr}");
    assert!(
        dir.path().join("nervix-data").join("nervix.db").exists(),
        "the default database in the default data folder"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_nervix"))
        .args(["admin", "create-token"])
        .current_dir(dir.path())
        .env("NERVIX_DATA_DIR", "")
        .env("NERVIX_DATABASE_URL", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nervix admin verify-ledger` on a SQLite data folder: clean after some money moved, and a
/// failure naming the account once a cached balance is changed behind the store's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ledger_finds_a_tampered_balance() {
    use sqlx::Connection;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = Config::for_data_dir(data.clone());
    nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let store = nervix_store::connect(&config.database_url, &Default::default())
        .await
        .unwrap();
    let admin = store
        .agent_by_handle(nervix_server::app::auth::ADMIN_HANDLE)
        .await
        .unwrap()
        .unwrap();
    let audit = nervix_store::AuditEntry {
        at: chrono::Utc::now(),
        actor_id: None,
        actor_handle: None,
        action: "test.grant".into(),
        target: None,
        client_ip: None,
        details: serde_json::json!({}),
    };
    store.grant(admin.id, 1234, "test", &audit).await.unwrap();
    store.fund_bonus_pool(500, "test", &audit).await.unwrap();
    store.close().await;

    let data_s = data.to_str().unwrap().to_owned();
    let run = |data_s: String| {
        tokio::task::spawn_blocking(move || {
            nervix(&["admin", "verify-ledger", "--data-dir", &data_s])
        })
    };
    let (ok, stdout, stderr) = run(data_s.clone()).await.unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ledger OK"), "{stdout}");
    assert!(
        stdout.contains("bonus_pool") && stdout.contains("5.00"),
        "{stdout}"
    );
    assert!(stdout.contains("transactions: 2"), "{stdout}");

    let mut conn = sqlx::SqliteConnection::connect(&config.database_url)
        .await
        .unwrap();
    sqlx::query("UPDATE ledger_accounts SET balance = balance + 99 WHERE kind = 'available'")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (ok, stdout, stderr) = run(data_s).await.unwrap();
    assert!(!ok, "{stdout}{stderr}");
    assert!(stderr.contains("MISMATCH"), "{stderr}");
    assert!(
        stderr.contains(
            &nervix_store::account_id(admin.id, nervix_store::AccountKind::Available).to_string()
        ),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Task, workflow and status commands

/// A server on a fresh embedded database, its operator's admin client, and a folder for
/// profiles and files. Spot checks are off so accepted work completes at once.
struct Platform {
    dir: tempfile::TempDir,
    url: String,
    admin: nervix_client::Client,
    server: nervix_server::Running,
}

async fn platform(adjust: impl FnOnce(&mut Config)) -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.rate_limit_enroll_per_minute = 0;
    config.rate_limit_agent_per_second = 0;
    config.spot_check_rate = 0.0;
    adjust(&mut config);
    // Before the server starts: one SQLite writer per process at a time.
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = nervix_server::start(listener, config).await.unwrap();
    let url = format!("http://{}", server.addr);
    let admin = nervix_client::Client::new(&url)
        .unwrap()
        .with_token(admin_token);
    Platform {
        dir,
        url,
        admin,
        server,
    }
}

impl Platform {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// Enrolls `handle` through `nervix agent enroll`; returns its profile's path.
    async fn enroll_cli(&self, handle: &str, capabilities: &str) -> String {
        let (cfg, key) = (
            self.path(&format!("{handle}.json")),
            self.path(&format!("{handle}.key")),
        );
        let args: Vec<String> = [
            "agent",
            "enroll",
            "--server",
            &self.url,
            "--agent-id",
            handle,
            "--capabilities",
            capabilities,
            "--key",
            &key,
            "--config",
            &cfg,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (ok, stdout, stderr) = run(args, vec![]).await;
        assert!(ok, "{stdout}{stderr}");
        cfg
    }

    /// A client acting with a CLI profile's token.
    fn profile_client(&self, cfg: &str) -> nervix_client::Client {
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
        nervix_client::Client::new(&self.url)
            .unwrap()
            .with_token(saved["token"].as_str().unwrap())
    }

    async fn grant(&self, handle: &str, amount: &str) {
        self.admin
            .grant(
                handle,
                &nervix_client::Transfer::new(amount.parse().unwrap()).memo("test funds"),
            )
            .await
            .unwrap();
    }
}

/// `nervix` off the async runtime's threads (it blocks until the process exits).
async fn run(args: Vec<String>, env: Vec<(String, String)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        nervix_env(&args, &env)
    })
    .await
    .unwrap()
}

/// `nervix ARGS --config CFG`, which must succeed; its stdout.
async fn ok_with(cfg: &str, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--config".to_owned(), cfg.to_owned()]);
    let (ok, stdout, stderr) = run(all.clone(), vec![]).await;
    assert!(ok, "nervix {all:?} failed:\n{stdout}{stderr}");
    stdout
}

/// `nervix ARGS --config CFG`, which must fail; its stderr.
async fn err_with(cfg: &str, args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    all.extend(["--config".to_owned(), cfg.to_owned()]);
    let (ok, stdout, stderr) = run(all.clone(), vec![]).await;
    assert!(!ok, "nervix {all:?} should have failed:\n{stdout}");
    stderr
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// Enough varied words for the text checks (`length`, `repetition`) to accept.
const ANSWER: &str = "The figures for the quarter show steady growth in every region, \
    with the northern office ahead of plan and the southern office catching up after a slow \
    start. Costs stayed flat while revenue rose, so the margin improved by two points. The \
    report recommends keeping the current hiring pace and revisiting prices in spring.";

/// Claims and completes every task `client` may claim until `stop`; returns how many it did.
fn worker(
    client: nervix_client::Client,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    use nervix_client::{ClaimRequest, SubmitRequest, TaskQuery};
    tokio::spawn(async move {
        let mut done = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok(page) = client.tasks(&TaskQuery::default()).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            for task in page.items {
                // Another worker may win the claim; that is not an error here.
                if client
                    .claim(task.id, &ClaimRequest::default())
                    .await
                    .is_ok()
                {
                    let submitted = client
                        .submit(task.id, &SubmitRequest::text(ANSWER), None)
                        .await
                        .unwrap();
                    assert_eq!(
                        submitted.submission.status,
                        nervix_client::SubmissionStatus::Accepted,
                        "{submitted:?}"
                    );
                    done += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        done
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_commands_post_list_show_cancel_and_report_errors() {
    let p = platform(|_| {}).await;
    let cfg = p.enroll_cli("poster", "writing").await;
    p.grant("poster", "100.00").await;
    let poster = p.profile_client(&cfg);

    // From flags, as JSON.
    let out = ok_with(
        &cfg,
        &[
            "task",
            "post",
            "--title",
            "Write a haiku",
            "--description",
            "About autumn.",
            "--reward",
            "5.00",
            "--capabilities",
            "writing",
            "--deadline",
            "2h",
            "--json",
        ],
    )
    .await;
    let haiku = json(&out);
    assert_eq!(haiku["status"], "available");
    assert_eq!(haiku["reward"], "5.00");
    assert_eq!(
        haiku["requirements"]["capabilities"],
        serde_json::json!(["writing"])
    );
    let deadline: chrono::DateTime<chrono::Utc> =
        haiku["deadline"].as_str().unwrap().parse().unwrap();
    let ahead = deadline - chrono::Utc::now();
    assert!(
        ahead > chrono::Duration::minutes(115) && ahead <= chrono::Duration::hours(2),
        "{ahead}"
    );
    let haiku_id = haiku["id"].as_str().unwrap().to_owned();

    // From a file (YAML or JSON), in text.
    let file = p.path("task.json");
    std::fs::write(
        &file,
        r#"{"title": "From a file", "reward": "2.50", "deadline": "3h", "min_words": 5,
            "requirements": {"capabilities": ["writing"]}}"#,
    )
    .unwrap();
    let out = ok_with(&cfg, &["task", "post", "--file", &file]).await;
    assert!(out.starts_with("posted "), "{out}");
    assert!(
        out.contains("From a file") && out.contains("2.50 (escrowed)"),
        "{out}"
    );
    let from_file: uuid::Uuid = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(poster.task(from_file).await.unwrap().min_words, Some(5));

    // list: JSON and a table.
    let listed = json(&ok_with(&cfg, &["task", "list", "--all", "--json"]).await);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [from_file.to_string().as_str(), haiku_id.as_str()],
        "newest first"
    );
    let table = ok_with(&cfg, &["task", "list", "--all", "--status", "available"]).await;
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains("Write a haiku") && table.contains("From a file"),
        "{table}"
    );
    let one = json(&ok_with(&cfg, &["task", "list", "--all", "--limit", "1", "--json"]).await);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert!(ok_with(&cfg, &["task", "list", "--all", "--limit", "1"])
        .await
        .contains("--limit shows more"));

    // show.
    let shown = json(&ok_with(&cfg, &["task", "show", &haiku_id, "--json"]).await);
    assert_eq!(shown["title"], "Write a haiku");
    let text = ok_with(&cfg, &["task", "show", &haiku_id]).await;
    assert!(
        text.contains("reward       5.00") && text.contains("About autumn."),
        "{text}"
    );

    // Another agent holds a task: its status lists it as active.
    let claimer_cfg = p.enroll_cli("claimer", "writing").await;
    let claimer = p.profile_client(&claimer_cfg);
    claimer
        .claim(from_file, &nervix_client::ClaimRequest::default())
        .await
        .unwrap();
    let status = json(&ok_with(&claimer_cfg, &["agent", "status", "--json"]).await);
    assert_eq!(status["agent"]["agent_id"], "claimer");
    assert_eq!(status["reputation"]["level"], "novice");
    assert_eq!(status["earnings"]["balance"], "0.00");
    assert_eq!(status["active_tasks"][0]["id"], from_file.to_string());
    let text = ok_with(&claimer_cfg, &["agent", "status"]).await;
    assert!(
        text.contains("active tasks (1):") && text.contains("From a file"),
        "{text}"
    );
    claimer.release(from_file).await.unwrap();

    // The poster's money: both rewards escrowed; cancelling refunds one.
    let status = json(&ok_with(&cfg, &["agent", "status", "--json"]).await);
    assert_eq!(status["earnings"]["balance"], "92.50");
    assert_eq!(status["earnings"]["escrowed"], "7.50");
    assert_eq!(status["active_tasks"], serde_json::json!([]));
    let cancelled = json(&ok_with(&cfg, &["task", "cancel", &haiku_id, "--json"]).await);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        poster.earnings().await.unwrap().balance.to_string(),
        "97.50"
    );
    assert!(ok_with(&cfg, &["task", "cancel", &from_file.to_string()])
        .await
        .contains("refunded"));

    // Errors: the problem's detail and fields, readably, and a non-zero exit.
    let err = err_with(
        &cfg,
        &["task", "post", "--title", "Too dear", "--reward", "1000.00"],
    )
    .await;
    assert!(err.contains("HTTP 402, insufficient_funds"), "{err}");
    let err = err_with(
        &cfg,
        &[
            "task",
            "post",
            "--title",
            "Too late",
            "--reward",
            "1.00",
            "--deadline",
            "2000-01-01T00:00:00Z",
        ],
    )
    .await;
    assert!(
        err.contains("HTTP 422, validation_failed") && err.contains("  - deadline: "),
        "{err}"
    );
    std::fs::write(&file, r#"{"title": "Typo", "rewrd": "1.00"}"#).unwrap();
    let err = err_with(&cfg, &["task", "post", "--file", &file]).await;
    assert!(err.contains("unknown field `rewrd`"), "{err}");
    let err = err_with(&cfg, &["task", "post", "--reward", "1.00"]).await;
    assert!(err.contains("needs a title"), "{err}");
    let err = err_with(&cfg, &["task", "show", &uuid::Uuid::new_v4().to_string()]).await;
    assert!(err.contains("HTTP 404"), "{err}");
    let err = err_with(&claimer_cfg, &["task", "cancel", &from_file.to_string()]).await;
    assert!(
        err.contains("cannot cancel task") && err.contains("HTTP 40"),
        "{err}"
    );
    assert_eq!(
        poster
            .tasks(&nervix_client::TaskQuery {
                eligible: Some(false),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len(),
        2,
        "nothing more was posted"
    );

    // The operator's token from the environment, with no profile at all.
    let env = vec![
        ("NERVIX_TOKEN".to_owned(), p.admin.token().unwrap()),
        ("NERVIX_SERVER".to_owned(), p.url.clone()),
    ];
    let nowhere = p.path("no-such-profile.json");
    let args: Vec<String> = ["task", "list", "--json", "--config", &nowhere]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let (ok, stdout, stderr) = run(args.clone(), env).await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(json(&stdout).as_array().unwrap().len(), 2);
    let (ok, _, stderr) = run(args, vec![]).await;
    assert!(!ok && stderr.contains("no server"), "{stderr}");

    p.server.shutdown().await;
}

const WORKFLOW: &str = r#"
name: cli-report
tasks:
  - key: research
    title: Collect the figures
    description: Find this quarter's numbers.
    reward: 3.00
    requirements:
      capabilities: [writing]
    deadline: 1h
  - key: draft
    title: Draft the report
    reward: "4.00"
    depends_on: [research]
    requirements: {capabilities: [writing]}
  - key: review
    title: Review the draft
    reward: 2.5
    depends_on: [draft]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_post_follows_the_workflow_until_done() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let p = platform(|_| {}).await;
    let cfg = p.enroll_cli("planner", "planning").await;
    p.grant("planner", "100.00").await;
    let file = p.path("report.yaml");
    std::fs::write(&file, WORKFLOW).unwrap();

    // --no-wait: posted, its tasks blocked behind their dependencies.
    let posted = json(&ok_with(&cfg, &["workflow", "post", &file, "--no-wait", "--json"]).await);
    assert_eq!(posted["status"], "active");
    let statuses: Vec<(&str, &str)> = posted["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("research", "available"),
            ("draft", "blocked"),
            ("review", "blocked")
        ]
    );
    let first = posted["id"].as_str().unwrap().to_owned();

    // Two agents enrolled through the SDK, and one through the CLI, do the work.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for handle in ["sdk-one", "sdk-two"] {
        let keys = Arc::new(nervix_client::AgentKeys::generate());
        let mut client = nervix_client::Client::new(&p.url).unwrap();
        let request = nervix_client::EnrollRequest::new(handle, &keys).capabilities(["writing"]);
        client.enroll(&keys, &request).await.unwrap();
        client.set_signing_key(keys, handle);
        workers.push(worker(client, stop.clone()));
    }
    let cli_worker = p.enroll_cli("cli-worker", "writing").await;
    workers.push(worker(p.profile_client(&cli_worker), stop.clone()));

    // Waiting, as JSON: the final state.
    let done = json(
        &ok_with(
            &cfg,
            &[
                "workflow",
                "post",
                &file,
                "--json",
                "--interval",
                "200ms",
                "--timeout",
                "90s",
            ],
        )
        .await,
    );
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"]["percent"], 100.0);
    assert_eq!(done["progress"]["completed"], 3);
    assert!(done["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["status"] == "completed"));

    // Waiting, in text: a summary table after the progress bar.
    let text = ok_with(
        &cfg,
        &[
            "workflow",
            "post",
            &file,
            "--interval",
            "200ms",
            "--timeout",
            "90s",
        ],
    )
    .await;
    assert!(
        text.contains("completed") && text.contains("progress 3/3"),
        "{text}"
    );
    assert!(text.contains("KEY ") && text.contains("review"), "{text}");

    // The first one finished too, seen through `workflow show`.
    let mut shown = serde_json::Value::Null;
    for _ in 0..300 {
        shown = json(&ok_with(&cfg, &["workflow", "show", &first, "--json"]).await);
        if shown["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(shown["status"], "completed", "{shown}");
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert_eq!(total, 9, "three workflows of three tasks");

    // A workflow nobody can work on: --timeout gives up, non-zero.
    std::fs::write(
        &file,
        "name: stuck\ntasks:\n  - key: a\n    title: Nobody can\n    reward: 1.00\n    requirements: {capabilities: [juggling]}\n",
    )
    .unwrap();
    let err = err_with(
        &cfg,
        &[
            "workflow",
            "post",
            &file,
            "--timeout",
            "1s",
            "--interval",
            "200ms",
        ],
    )
    .await;
    assert!(err.contains("not done after 1s"), "{err}");
    // A dependency on no key: the server's problem, readably.
    std::fs::write(
        &file,
        "name: broken\ntasks:\n  - key: a\n    title: A\n    reward: 1.00\n    depends_on: [nope]\n",
    )
    .unwrap();
    let err = err_with(&cfg, &["workflow", "post", &file]).await;
    assert!(
        err.contains("posting the workflow failed") && err.contains("HTTP 422"),
        "{err}"
    );
    std::fs::write(&file, "name: typo\ntasks:\n  - key: a\n    titel: A\n").unwrap();
    let err = err_with(&cfg, &["workflow", "post", &file]).await;
    assert!(err.contains("tasks[0]: unknown field `titel`"), "{err}");

    // The CLI worker's status counts what the workflows say it did.
    let status = json(&ok_with(&cli_worker, &["agent", "status", "--json"]).await);
    let me = status["agent"]["id"].as_str().unwrap().to_owned();
    let mut mine = 0;
    for wf in [&first, done["id"].as_str().unwrap()] {
        let wf = p.admin.workflow(wf.parse().unwrap()).await.unwrap();
        mine += wf
            .tasks
            .iter()
            .filter(|t| t.assigned_agent_id.map(|a| a.to_string()) == Some(me.clone()))
            .count();
    }
    let last = p
        .admin
        .tasks(&nervix_client::TaskQuery {
            eligible: Some(false),
            status: Some(nervix_client::TaskStatus::Completed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(last.items.len() >= 9);
    let total_mine = last
        .items
        .iter()
        .filter(|t| t.assigned_agent_id.map(|a| a.to_string()) == Some(me.clone()))
        .count();
    assert!(total_mine >= mine);
    assert_eq!(status["agent"]["total_tasks_completed"], total_mine as u64);
    assert_eq!(status["active_tasks"], serde_json::json!([]));
    if total_mine > 0 {
        assert_ne!(status["earnings"]["total_earned"], "0.00", "{status}");
    }

    p.server.shutdown().await;
}

/// A profile whose token is in the last tenth of its life is renewed with the profile's key by
/// the next command, and the new token is saved back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_profile_token_is_renewed_and_saved() {
    let p = platform(|c| c.token_ttl = chrono::Duration::seconds(6)).await;
    let cfg = p.enroll_cli("renewer", "writing").await;
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap()
    };
    let before = read();
    // At most 0.5 s of its 6 s left: due (the last 0.6 s), perhaps already expired.
    tokio::time::sleep(Duration::from_millis(5500)).await;

    let out = ok_with(&cfg, &["agent", "status", "--json"]).await;
    assert_eq!(json(&out)["agent"]["agent_id"], "renewer");
    let after = read();
    assert_ne!(after["token"], before["token"], "a new token was saved");
    let (was, now): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) = (
        before["expires_at"].as_str().unwrap().parse().unwrap(),
        after["expires_at"].as_str().unwrap().parse().unwrap(),
    );
    assert!(now > was, "{was} -> {now}");
    #[cfg(unix)]
    assert_eq!(mode(Path::new(&cfg)), 0o600);
    // The saved token is the server's.
    let v = p.profile_client(&cfg).verify().await.unwrap();
    assert_eq!(v.agent_id, "renewer");

    p.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_send_and_history_encrypt_end_to_end() {
    let p = platform(|_| {}).await;
    let alice = p.enroll_cli("msg-alice", "writing").await;
    let bob = p.enroll_cli("msg-bob", "writing").await;

    let sent = json(
        &ok_with(
            &alice,
            &[
                "message",
                "send",
                "--to",
                "msg-bob",
                "meet at noon",
                "--json",
            ],
        )
        .await,
    );
    let id = sent["id"].as_str().unwrap().to_owned();

    // What the server holds (and relays) is a sealed box, not the words.
    let stored = p
        .profile_client(&bob)
        .messages_with("msg-alice", None)
        .await
        .unwrap();
    let on_server = stored
        .items
        .iter()
        .find(|m| m.id.to_string() == id)
        .unwrap();
    assert!(on_server.encrypted);
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        &on_server.payload,
    )
    .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("noon"));

    // Bob reads it decrypted; Alice reads her own message back (sealed for Bob's key).
    let mut reply = tokio::process::Command::new(env!("CARGO_BIN_EXE_nervix"));
    reply
        .args(["message", "send", "--to", "msg-alice", "--config", &bob])
        .env_remove("NERVIX_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = reply.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"noon works\nsee you").await.unwrap();
    }
    assert!(child.wait().await.unwrap().success());

    for cfg in [&alice, &bob] {
        let (me, other) = if cfg == &alice {
            ("msg-alice (me)", "msg-bob")
        } else {
            ("msg-bob (me)", "msg-alice")
        };
        let history = json(&ok_with(cfg, &["message", "history", "--to", other, "--json"]).await);
        let texts: Vec<&str> = history["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            ["meet at noon", "noon works\nsee you"],
            "oldest first"
        );
        let table = ok_with(cfg, &["message", "history", "--to", other]).await;
        assert!(
            table.contains("meet at noon") && table.contains(me),
            "{table}"
        );
    }

    // A channel has no shared key: sending there needs --plain, and a stranger reads nothing.
    let channel = p
        .profile_client(&alice)
        .create_channel(&nervix_client::NewChannel {
            name: "planning".to_owned(),
            members: vec!["msg-bob".to_owned()],
        })
        .await
        .unwrap();
    let channel_id = channel.id.to_string();
    let refused = err_with(
        &alice,
        &["message", "send", "--channel", &channel_id, "agenda"],
    )
    .await;
    assert!(refused.contains("--plain"), "{refused}");
    ok_with(
        &alice,
        &[
            "message",
            "send",
            "--channel",
            &channel_id,
            "--plain",
            "agenda: budget",
        ],
    )
    .await;
    let history = json(
        &ok_with(
            &bob,
            &["message", "history", "--channel", &channel_id, "--json"],
        )
        .await,
    );
    assert_eq!(history["items"][0]["text"], "agenda: budget");
    let carol = p.enroll_cli("msg-carol", "writing").await;
    let denied = err_with(&carol, &["message", "history", "--channel", &channel_id]).await;
    assert!(denied.contains("404"), "{denied}");
    drop(p.server);
}

/// `nervix receipt verify`: a receipt the server issued verifies against the server's JWKS and
/// a saved one, from a file or stdin (the compact JWS or the receipts page's JSON item), and
/// says what it attests; a changed receipt or a foreign key set is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipt_verify() {
    use std::io::Write;
    use std::sync::Arc;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use nervix_client::{AgentKeys, Client, EnrollRequest, Method};
    use serde_json::{json, Value};

    let dir = tempfile::tempdir().unwrap();
    let common::Embedded { server, url, admin } = common::embedded(dir.path()).await;
    let keys = Arc::new(AgentKeys::generate());
    let mut worker = Client::new(&url).unwrap();
    let request = EnrollRequest::new("receipt-worker", &keys).capabilities(["writing"]);
    worker.enroll(&keys, &request).await.unwrap();
    worker.set_signing_key(keys, "receipt-worker");

    let deadline = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (s, task) = admin
        .request(
            Method::POST,
            "/v1/tasks",
            Some(
                &json!({"title": "Write the summary", "description": "Summarise the quarter",
                "requirements": {"capabilities": ["writing"]}, "reward": "7.25",
                "complexity": "simple", "deadline": deadline}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{task}");
    let id = task["id"].as_str().unwrap();
    let (s, v) = worker
        .request(
            Method::POST,
            &format!("/v1/tasks/{id}/claim"),
            Some(&json!({})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let answer = "The quarter closed with revenue up in every region, costs flat, and the \
        margin two points better than plan, while the northern office led the growth.";
    let (s, v) = worker
        .request(
            Method::POST,
            &format!("/v1/tasks/{id}/submit"),
            Some(&json!({"submission_data": {"content": answer}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{v}");
    // Issued by the reputation pass, a moment after the acceptance.
    let mut item = Value::Null;
    for _ in 0..200 {
        let (s, page) = admin
            .request(Method::GET, "/v1/agents/receipt-worker/receipts", None)
            .await
            .unwrap();
        assert_eq!(s, 200, "{page}");
        item = page["items"][0].clone();
        if !item.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let jws = item["receipt"].as_str().unwrap().to_owned();

    let file = dir.path().join("receipt.jws");
    std::fs::write(&file, &jws).unwrap();
    let (jwks_status, jwks) = admin
        .request(Method::GET, "/.well-known/jwks.json", None)
        .await
        .unwrap();
    assert_eq!(jwks_status, 200);
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let json_file = dir.path().join("item.json");
    std::fs::write(&json_file, item.to_string()).unwrap();
    let (file_s, jwks_s, json_s) = (
        file.to_str().unwrap().to_owned(),
        jwks_file.to_str().unwrap().to_owned(),
        json_file.to_str().unwrap().to_owned(),
    );

    let out = tokio::task::spawn_blocking({
        let (url, file_s, jwks_s, json_s, jws) = (
            url.clone(),
            file_s.clone(),
            jwks_s.clone(),
            json_s,
            jws.clone(),
        );
        move || {
            let online = nervix(&["receipt", "verify", &file_s, "--server", &url]);
            let saved = nervix(&["receipt", "verify", &json_s, "--jwks", &jwks_s, "--json"]);
            let mut child = Command::new(env!("CARGO_BIN_EXE_nervix"))
                .args(["receipt", "verify", "-", "--jwks", &jwks_s])
                .env_remove("NERVIX_SERVER")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(jws.as_bytes())
                .unwrap();
            let stdin = child.wait_with_output().unwrap();
            (online, saved, stdin)
        }
    })
    .await
    .unwrap();
    let (online, saved, stdin) = out;
    assert!(online.0, "{}", online.2);
    assert!(online.1.contains("valid receipt"), "{}", online.1);
    assert!(online.1.contains("receipt-worker"), "{}", online.1);
    assert!(online.1.contains("Write the summary"), "{}", online.1);
    assert!(online.1.contains("paid 7.25"), "{}", online.1);
    assert!(saved.0, "{}", saved.2);
    let v: serde_json::Value = serde_json::from_str(&saved.1).unwrap();
    assert_eq!(v["receipt"]["task"]["id"], id);
    assert_eq!(v["receipt"]["reward_paid"], "7.25");
    assert!(stdin.status.success());

    // A changed receipt is refused; so is a key set without its key.
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["reward_paid"] = json!("999.00");
    parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
    std::fs::write(&file, parts.join(".")).unwrap();
    let other_jwks = dir.path().join("other.json");
    std::fs::write(&other_jwks, r#"{"keys": []}"#).unwrap();
    let (tampered, foreign) = tokio::task::spawn_blocking({
        let other = other_jwks.to_str().unwrap().to_owned();
        let json_s = json_file.to_str().unwrap().to_owned();
        move || {
            (
                nervix(&["receipt", "verify", &file_s, "--jwks", &jwks_s]),
                nervix(&["receipt", "verify", &json_s, "--jwks", &other]),
            )
        }
    })
    .await
    .unwrap();
    assert!(!tampered.0);
    assert!(tampered.2.contains("does not verify"), "{}", tampered.2);
    assert!(!foreign.0);
    assert!(foreign.2.contains("no key with kid"), "{}", foreign.2);
    server.shutdown().await;
}

/// `agent sign-challenge` signs login challenges (verifiably, with the key given) and refuses
/// any other text: a key that signed whatever it was shown could be made to enroll or send.
#[test]
fn sign_challenge_signs_only_login_challenges() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let key_s = key.to_str().unwrap();
    assert!(nervix(&["keygen", "--out", key_s]).0);
    let challenge = "nervix-auth-v1:01a23d93-e418-77c6-91c2-9d71d287b6a5:bm9uY2U";
    let (ok, stdout, stderr) = nervix(&["agent", "sign-challenge", challenge, "--key", key_s]);
    assert!(ok, "{stderr}");
    let sig = base64::engine::general_purpose::STANDARD
        .decode(stdout.trim())
        .unwrap();
    let keys = nervix_client::AgentKeys::load(&key).unwrap();
    let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
    keys.verifying_key()
        .verify_strict(challenge.as_bytes(), &sig)
        .unwrap();
    for other in [
        "nervix-enroll-v1:01a23d93-e418-77c6-91c2-9d71d287b6a5:bm9uY2U",
        "any text at all",
        "nervix-auth-v1:only-two",
    ] {
        let (ok, _, stderr) = nervix(&["agent", "sign-challenge", other, "--key", key_s]);
        assert!(
            !ok && stderr.contains("not a login challenge"),
            "{other}: {stderr}"
        );
    }
}
