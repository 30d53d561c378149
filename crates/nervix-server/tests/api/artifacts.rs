//! Artifacts over HTTP: a streamed upload typed from its bytes, hashed and checked; downloads
//! for exactly the uploader, the poster, reviewers and admins, with `ETag` and ranges; a
//! submission referencing files (whose checks count); the orphan sweep; and the same against
//! a real S3-compatible server when one is configured (`NERVIX_TEST_S3_URL`).

use chrono::Utc;
use nervix_client::Method;
use nervix_server::app::artifacts;
use nervix_server::artifact_store::ArtifactStore;
use nervix_server::Config;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::common::{id_of, in_secs, Backend, TestAgent, TestApp, ANSWER};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    upload_and_download,
    uploads_are_refused_by_type_size_and_holder,
    a_leaked_secret_in_a_file_rejects_the_submission,
    orphans_go_and_referenced_files_stay,
    s3_storage,
}

const PROGRAM: &str = "def add(a, b):\n    return a + b\n\n\nprint(add(2, 3))\n";

async fn text_task(app: &TestApp) -> Uuid {
    let t = app
        .admin_post(json!({
            "title": "Write an adder",
            "description": "a python function that adds two numbers",
            "requirements": {"capabilities": ["coding"]},
            "reward": "5.00",
            "complexity": "simple",
            "deadline": in_secs(3600),
            "kind": "text",
        }))
        .await;
    id_of(&t)
}

async fn claimed(app: &TestApp, handle: &str) -> (Uuid, TestAgent) {
    let task = text_task(app).await;
    let worker = app.enroll(handle, &["coding"]).await;
    let (status, body) = worker
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task}/claim"),
            Some(&json!({"estimated_duration": 600})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "claim: {body}");
    (task, worker)
}

async fn upload(
    app: &TestApp,
    token: &str,
    task: Uuid,
    filename: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    // A connection of its own: a refusal answered before the body was read closes it, and a
    // pooled connection would take the next request down with it.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/v1/tasks/{task}/artifacts", app.base))
        .query(&[("filename", filename)])
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, token: &str, id: Uuid, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app
        .http
        .get(format!("{}/v1/artifacts/{id}", app.base))
        .bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn submit(agent: &TestAgent, task: Uuid, artifacts: &[Uuid]) -> (u16, Value) {
    agent
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task}/submit"),
            Some(&json!({"submission_data": {"content": ANSWER, "artifacts": artifacts}})),
        )
        .await
        .unwrap()
}

async fn upload_and_download(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    exercise_transfers(&app).await;
    app.stop().await;
}

/// Upload, download (whole, range, conditional), access rules and a submission referencing the
/// file: the same on every storage.
async fn exercise_transfers(app: &TestApp) {
    let (task, worker) = claimed(app, "art-worker").await;
    let (status, a) = upload(app, &worker.token, task, "src/adder.py", PROGRAM.into()).await;
    assert_eq!(status, 201, "{a}");
    let id = id_of(&a);
    assert_eq!(a["filename"], "adder.py");
    assert_eq!(a["content_type"], "text/x-python; charset=utf-8");
    assert_eq!(a["size_bytes"], PROGRAM.len());
    assert_eq!(
        a["sha256"],
        format!("{:x}", Sha256::digest(PROGRAM.as_bytes()))
    );
    assert!(a["submission_id"].is_null());
    let checks: Vec<(&str, bool)> = a["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["passed"].as_bool().unwrap()))
        .collect();
    assert!(checks.contains(&("syntax", true)), "{checks:?}");
    assert!(checks.contains(&("secret_scan", true)), "{checks:?}");

    // The uploader reads it whole, with its digest as the ETag.
    let r = get(app, &worker.token, id, &[]).await;
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", a["sha256"].as_str().unwrap()));
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-type"], "text/x-python; charset=utf-8");
    assert_eq!(r.bytes().await.unwrap(), PROGRAM.as_bytes());

    let r = get(app, &worker.token, id, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    let r = get(app, &worker.token, id, &[("range", "bytes=4-6")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 4-6/{}", PROGRAM.len())
    );
    assert_eq!(r.bytes().await.unwrap(), &PROGRAM.as_bytes()[4..7]);
    let r = get(app, &worker.token, id, &[("range", "bytes=-7")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.unwrap(),
        &PROGRAM.as_bytes()[PROGRAM.len() - 7..]
    );
    let r = get(app, &worker.token, id, &[("range", "bytes=5000-")]).await;
    assert_eq!(r.status(), 416);

    // The poster (here the admin) may read it; another agent is told it does not exist.
    assert_eq!(get(app, &app.admin_token, id, &[]).await.status(), 200);
    let stranger = app.enroll("art-stranger", &["coding"]).await;
    assert_eq!(get(app, &stranger.token, id, &[]).await.status(), 404);
    let (status, _) = upload(app, &stranger.token, task, "x.txt", b"hello".to_vec()).await;
    assert_eq!(status, 403, "only the holder uploads");

    // The submission references the file; nobody else's submission can.
    let (status, body) = submit(&worker, task, &[id]).await;
    assert_eq!(status, 202, "{body}");
    let sub = body["submission"]["id"].as_str().unwrap().to_owned();
    let stored = app
        .running()
        .state
        .app
        .store
        .artifact(id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.submission_id.map(|s| s.to_string()), Some(sub));
    let checks = body["submission"]["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "syntax"
                && c["details"].as_str().unwrap().starts_with("adder.py:")),
        "the file's checks count with the content's: {checks:?}"
    );
}

async fn uploads_are_refused_by_type_size_and_holder(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.max_artifact_bytes = 64 * 1024).await else {
        return;
    };
    let (task, worker) = claimed(&app, "art-refused").await;
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0".to_vec();
    elf.resize(20_000, 0);
    let (status, body) = upload(&app, &worker.token, task, "report.txt", elf).await;
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["code"], "unsupported_media_type");

    let (status, body) = upload(
        &app,
        &worker.token,
        task,
        "big.txt",
        vec![b'a'; 64 * 1024 + 1],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "too_large");

    let (status, body) = upload(&app, &worker.token, task, "a\nb", b"x".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "filename");

    // Nothing refused was kept: no rows, no objects.
    let folder = app.data_dir().join("artifacts");
    let files = walk(&folder);
    assert!(files.is_empty(), "{files:?}");

    // A submission naming an artifact that is not the caller's is refused, naming it.
    let (status, body) = submit(&worker, task, &[Uuid::now_v7()]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "submission_data.artifacts[0]");
    app.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn a_leaked_secret_in_a_file_rejects_the_submission(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (task, worker) = claimed(&app, "art-leak").await;
    let config = "[deploy]\nregion = eu-west-1\naws_key = AKIAQWERTYUIOPASDFGH\n";
    let (status, a) = upload(&app, &worker.token, task, "deploy.toml", config.into()).await;
    assert_eq!(status, 201, "{a}");
    let scan = a["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "secret_scan")
        .cloned()
        .unwrap();
    assert_eq!(scan["passed"], false, "{scan}");
    assert!(!scan["details"]
        .as_str()
        .unwrap()
        .contains("AKIAQWERTYUIOPASDFGH"));

    let (status, body) = submit(&worker, task, &[id_of(&a)]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["submission"]["status"], "rejected", "{body}");
    app.stop().await;
}

async fn orphans_go_and_referenced_files_stay(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    sweep_orphans(&app).await;
    app.stop().await;
}

async fn sweep_orphans(app: &TestApp) {
    let (task, worker) = claimed(app, "art-orphans").await;
    let mut ids = Vec::new();
    for name in ["kept.md", "orphan.md"] {
        let (status, a) = upload(
            app,
            &worker.token,
            task,
            name,
            b"# Notes\n\nSome notes.\n".to_vec(),
        )
        .await;
        assert_eq!(status, 201, "{a}");
        ids.push(id_of(&a));
    }
    let (kept, orphan) = (ids[0], ids[1]);
    let (status, body) = submit(&worker, task, &[kept]).await;
    assert_eq!(status, 202, "{body}");
    // Both uploads are two days old; only the one no submission took is an orphan.
    for id in [kept, orphan] {
        let n = app
            .set_time(
                "UPDATE artifacts SET created_at = $1 WHERE id = $2",
                Utc::now() - chrono::Duration::days(2),
                id,
            )
            .await;
        assert_eq!(n, 1);
    }
    let state = &app.running().state.app;
    let key = |id| ArtifactStore::key(task, id);
    assert!(state.artifacts.exists(&key(orphan)).await.unwrap());
    assert_eq!(artifacts::sweep_orphans(state).await.unwrap(), 1);
    assert_eq!(artifacts::sweep_orphans(state).await.unwrap(), 0);
    assert!(!state.artifacts.exists(&key(orphan)).await.unwrap());
    assert!(state.artifacts.exists(&key(kept)).await.unwrap());
    assert_eq!(get(app, &worker.token, orphan, &[]).await.status(), 404);
    let r = get(app, &worker.token, kept, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), &b"# Notes\n\nSome notes.\n"[..]);
}

/// Everything above against an S3-compatible server (CI runs one: `.ci/run`), configured the
/// way an operator would: `NERVIX_ARTIFACTS_URL=s3://bucket/prefix` and `AWS_*` variables.
async fn s3_storage(backend: Backend) {
    let Some(url) = std::env::var("NERVIX_TEST_S3_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: NERVIX_TEST_S3_URL (an S3-compatible server) is required"
        );
        eprintln!("SKIP: set NERVIX_TEST_S3_URL=s3://bucket/prefix (and AWS_*) to test S3 storage");
        return;
    };
    // A prefix of its own per run, so runs and backends never see each other's objects.
    let url = format!("{}/{}", url.trim_end_matches('/'), Uuid::now_v7());
    let Some(app) = TestApp::start_with(backend, |c: &mut Config| {
        c.artifacts_url = Some(url.clone())
    })
    .await
    else {
        return;
    };
    assert_eq!(app.running().state.app.artifacts.location(), url);
    exercise_transfers(&app).await;
    sweep_orphans(&app).await;
    // Nothing was written to the local folder: the files went to the bucket.
    assert!(walk(&app.data_dir().join("artifacts")).is_empty());
    app.stop().await;
}
