//! The website in a real browser: a server on the embedded default, filled through the SDK
//! (agents, one of them named `<script>alert(1)</script>`, a task whose submission is held for
//! a spot check, a pending withdrawal, a two-step workflow), then `tests/web/browser.mjs`
//! drives Debian's Chromium through it (playwright-core; axe-core on every page; screenshots
//! under `target/web-screenshots/`), signing in with `nervix agent sign-challenge`.
//!
//! Needs node, the npm packages of `tests/web` (`npm ci` there) and Chromium (`chromium`, or
//! `NERVIX_CHROMIUM`): without them it prints SKIP, or fails when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nervix_client::{
    AgentKeys, ClaimRequest, Client, Decimal2, EnrollRequest, NewTask, NewWorkflow,
    NewWorkflowTask, SubmissionStatus, SubmitRequest, Transfer, WithdrawalRequest,
};
use nervix_server::Config;

const ANSWER: &str = "The figures for the quarter show steady growth in every region, \
    with the northern office ahead of plan and the southern office catching up after a slow \
    start. Costs stayed flat while revenue rose, so the margin improved by two points.";

fn money(text: &str) -> Decimal2 {
    text.parse().unwrap()
}

fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("browser test cannot run: {why}");
    }
    eprintln!("SKIP website browser test: {why}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

async fn enroll(
    url: &str,
    handle: &str,
    name: &str,
    key_file: Option<&Path>,
) -> (Client, Arc<AgentKeys>) {
    let keys = Arc::new(AgentKeys::generate());
    if let Some(path) = key_file {
        keys.save(path).unwrap();
    }
    let mut client = Client::new(url).unwrap();
    let request = EnrollRequest::new(handle, &keys)
        .name(name)
        .capabilities(["writing"]);
    client.enroll(&keys, &request).await.unwrap();
    client.set_signing_key(keys.clone(), handle);
    (client, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn website_in_a_real_browser() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    let chromium = std::env::var_os("NERVIX_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which("chromium"))
        .or_else(|| which("chromium-browser"));
    let Some(chromium) = chromium else {
        return skip_or_fail("no chromium (apt-get install chromium)");
    };
    let Some(node) = which("node") else {
        return skip_or_fail("no node");
    };
    if !tests.join("node_modules/playwright-core").is_dir() {
        return skip_or_fail("run `npm ci` in crates/nervix-cli/tests/web");
    }

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.rate_limit_enroll_per_minute = 0;
    config.rate_limit_agent_per_second = 0;
    // Every submission that passes its checks is held for a person to decide.
    config.spot_check_rate = 1.0;
    let admin_token = nervix_server::operator::create_admin_token(&config)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = nervix_server::start(listener, config).await.unwrap();
    let url = format!("http://{}", running.addr);
    let admin = Client::new(&url).unwrap().with_token(admin_token.clone());

    let key = dir.path().join("worker.key");
    let (worker, _) = enroll(&url, "web-worker", "Web Worker", Some(&key)).await;
    enroll(&url, "hostile", "<script>alert(1)</script>", None).await;
    let (bystander, bystander_keys) = enroll(&url, "bystander", "Bystander", None).await;
    bystander
        .send_sealed(&bystander_keys, "web-worker", b"meet at noon", None)
        .await
        .unwrap();

    // Work held for a spot check, and money for a withdrawal waiting for the admin.
    let title = "Quarterly summary";
    let task = admin
        .post_task(
            &NewTask::new(title, "Summarize the quarter.", money("8.00"), &["writing"])
                .due_in(chrono::Duration::hours(2)),
            None,
        )
        .await
        .unwrap();
    worker
        .claim(task.id, &ClaimRequest::default())
        .await
        .unwrap();
    let held = worker
        .submit(task.id, &SubmitRequest::text(ANSWER), None)
        .await
        .unwrap();
    assert_eq!(held.submission.status, SubmissionStatus::PendingReview);
    admin
        .grant("web-worker", &Transfer::new(money("20.00")).memo("seed"))
        .await
        .unwrap();
    worker
        .request_withdrawal(
            &WithdrawalRequest {
                amount: money("3.00"),
                destination: "iban:DE00 web".into(),
            },
            None,
        )
        .await
        .unwrap();
    let step = |key: &str, deps: &[&str]| NewWorkflowTask {
        key: key.into(),
        task: NewTask {
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            ..NewTask::new(format!("step {key}"), "", money("1.00"), &["research"])
                .due_in(chrono::Duration::hours(1))
        },
    };
    let workflow = admin
        .post_workflow(
            &NewWorkflow {
                name: "gather then write".into(),
                tasks: vec![step("gather", &[]), step("write", &["gather"])],
            },
            None,
        )
        .await
        .unwrap();

    let shots = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/web-screenshots")
        .to_path_buf();
    let output = tokio::task::spawn_blocking({
        let (url, admin_token) = (url.clone(), admin_token.clone());
        let key = key.clone();
        let workflow = workflow.id.to_string();
        move || {
            Command::new(node)
                .arg(tests.join("browser.mjs"))
                .current_dir(&tests)
                .env("BASE_URL", url)
                .env("CHROMIUM", chromium)
                .env("NERVIX_BIN", env!("CARGO_BIN_EXE_nervix"))
                .env("SCREENSHOT_DIR", shots)
                .env("ADMIN_TOKEN", admin_token)
                .env("AGENT", "web-worker")
                .env("AGENT_KEY", key)
                .env("HOSTILE", "hostile")
                .env("BYSTANDER", "bystander")
                .env("TASK_TITLE", title)
                .env("WORKFLOW_ID", workflow)
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "browser run failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(", 0 failed"), "{stdout}");

    // What the browser did went through the real operations.
    let all = admin
        .admin_withdrawals(&nervix_client::AdminWithdrawalQuery::default())
        .await
        .unwrap()
        .items;
    let status_of = |destination: &str| {
        all.iter()
            .find(|w| w.destination.as_deref() == Some(destination))
            .map(|w| w.status)
    };
    use nervix_client::WithdrawalStatus::{Paid, Pending};
    assert_eq!(status_of("iban:DE00 web"), Some(Paid));
    assert_eq!(status_of("iban:from-the-page"), Some(Pending));
    let me = worker.me().await.unwrap();
    assert_eq!(me.agent_name.as_deref(), Some("Web Worker Renamed"));
    assert!(worker.earnings().await.unwrap().total_earned > Decimal2::ZERO);
    running.shutdown().await;
}
