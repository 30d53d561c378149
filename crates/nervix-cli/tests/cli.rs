//! The `nervix` binary end to end against a real server on the embedded default: key
//! generation, agent enrollment with a saved token, whoami/login with the saved config, and the
//! operator's admin token; `serve` and `admin` with every variable set but empty.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nervix_server::Config;

fn nervix(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nervix"))
        .args(args)
        .env_remove("NERVIX_AGENT_CONFIG")
        .env_remove("NERVIX_SERVER")
        .output()
        .expect("run nervix");
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
const SERVE_VARS: [&str; 16] = [
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
