//! A2A v1.0 (JSON-RPC binding) and signed reputation receipts, through raw HTTP as any A2A
//! client would send it: signed cards, SendMessage → a Nervix task (reserved for the agent
//! whose interface was called), the worker's claim and submit, GetTask with the artifact and
//! its receipt, ListTasks, CancelTask (refunded), the spec's error codes, the streamed state
//! changes, and receipts served, verified, tamper-evident and verifiable after a key rotation.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nervix_client::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    cards_are_signed_and_cached,
    send_get_list_cancel,
    streaming_follows_the_task,
}

const WORK: &str = "The report covers the three incidents of last quarter, explains how each \
    began, which systems were touched, how customers noticed, what the on-call team changed \
    afterwards, and which follow-up work is still open with owners and dates.";

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
}

async fn jwks(app: &TestApp) -> Value {
    get(app, "/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap()
}

/// Checks a card's signature as A2A §8.4.3 says: the JWS over the RFC 8785 form of the card
/// without `signatures` and default values, with the key its `kid` names in the JWKS.
fn verify_card(card: &Value, jwks: &Value) {
    let sig = &card["signatures"][0];
    let protected = sig["protected"].as_str().unwrap();
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(protected).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let payload = nervix_core::receipt::canonical(&nervix_server::api::a2a::signed_form(card));
    let input = nervix_core::receipt::signing_input(protected, &payload);
    nervix_core::receipt::verify_signature(
        jwks,
        protected,
        input.as_bytes(),
        sig["signature"].as_str().unwrap(),
    )
    .expect("the card's signature verifies");
    // A changed card does not.
    let mut forged = card.clone();
    forged["name"] = json!("Someone else");
    let payload = nervix_core::receipt::canonical(&nervix_server::api::a2a::signed_form(&forged));
    let input = nervix_core::receipt::signing_input(protected, &payload);
    assert!(nervix_core::receipt::verify_signature(
        jwks,
        protected,
        input.as_bytes(),
        sig["signature"].as_str().unwrap()
    )
    .is_err());
}

pub async fn cards_are_signed_and_cached(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("card-writer", &["writing", "research"]).await;
    let keys = jwks(&app).await;

    // Skills follow the federation's capabilities (each node's matching index, fed by the bus).
    let (card, etag, cache) = eventually(
        Duration::from_secs(10),
        "skills list the capabilities",
        || async {
            let res = get(&app, "/.well-known/agent-card.json").await;
            assert_eq!(res.status(), 200);
            let etag = res.headers()["etag"].to_str().unwrap().to_owned();
            let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
            let card: Value = res.json().await.unwrap();
            let text = card["skills"].to_string();
            (text.contains("\"writing\"") && text.contains("\"research\""))
                .then_some((card, etag, cache))
        },
    )
    .await;
    assert!(cache.contains("max-age"));
    assert_eq!(card["name"], "Nervix");
    let iface = &card["supportedInterfaces"][0];
    assert_eq!(iface["url"], format!("{}/a2a", app.base));
    assert_eq!(iface["protocolBinding"], "JSONRPC");
    assert_eq!(iface["protocolVersion"], "1.0");
    assert_eq!(card["capabilities"]["streaming"], true);
    assert_eq!(card["capabilities"]["pushNotifications"], false);
    let skills: Vec<&str> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(
        skills.contains(&"writing") && skills.contains(&"research"),
        "{skills:?}"
    );
    assert_eq!(
        card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );
    assert!(card["securityRequirements"][0]["schemes"]["bearer"].is_object());
    verify_card(&card, &keys);

    let again = app
        .http
        .get(format!("{}/.well-known/agent-card.json", app.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let res = get(&app, "/a2a/agents/card-writer/.well-known/agent-card.json").await;
    assert_eq!(res.status(), 200);
    let card: Value = res.json().await.unwrap();
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        format!("{}/a2a/agents/card-writer", app.base)
    );
    let ext = &card["capabilities"]["extensions"][0];
    assert_eq!(ext["uri"], nervix_server::api::a2a::RECEIPTS_EXTENSION);
    assert_eq!(ext["required"], false);
    assert_eq!(ext["params"]["agentHandle"], "card-writer");
    assert_eq!(ext["params"]["publicKey"], worker.keys.public_key_b64());
    assert_eq!(ext["params"]["receipts"], 0);
    verify_card(&card, &keys);

    let missing = get(&app, "/a2a/agents/nobody/.well-known/agent-card.json").await;
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

async fn rpc_to(app: &TestApp, path: &str, token: &str, method: &str, params: Value) -> Value {
    app.http
        .post(format!("{}{path}", app.base))
        .bearer_auth(token)
        .header("A2A-Version", "1.0")
        .json(&json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn message(text: &str, reward: &str, caps: &[&str]) -> Value {
    json!({
        "message": {"role": "ROLE_USER", "messageId": Uuid::new_v4().to_string(),
            "parts": [{"text": text}, {"data": {"language": "en"}}]},
        "configuration": {"returnImmediately": true},
        "metadata": {"reward": reward, "capabilities": caps, "complexity": "simple",
            "deadline": "2h"}
    })
}

fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

fn reason(v: &Value) -> &str {
    v["error"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .and_then(|d| d["reason"].as_str())
        .unwrap_or_default()
}

async fn available(agent: &TestAgent) -> String {
    agent
        .client
        .request(Method::GET, "/v1/agents/me/earnings", None)
        .await
        .unwrap()
        .1["balance"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn send_get_list_cancel(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("a2a-poster", &[]).await;
    let worker = app.enroll("a2a-worker", &["writing"]).await;
    let other = app.enroll("a2a-other", &["writing"]).await;
    app.grant(poster.id, "100.00").await;
    let agent_url = "/a2a/agents/a2a-worker";

    // Version: none (= 0.3) and 2.0 are refused with -32009; unknown methods are -32601.
    let none = app
        .http
        .post(format!("{}/a2a", app.base))
        .bearer_auth(&poster.token)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(error_code(&none), -32009, "{none}");
    assert_eq!(reason(&none), "VERSION_NOT_SUPPORTED");
    let v = rpc_to(&app, "/a2a", &poster.token, "message/send", json!({})).await;
    assert_eq!(error_code(&v), -32601, "{v}");
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "CreateTaskPushNotificationConfig",
        json!({}),
    )
    .await;
    assert_eq!(error_code(&v), -32003, "{v}");
    // Without a token: 401.
    let anon = app
        .http
        .post(format!("{}/a2a", app.base))
        .header("A2A-Version", "1.0")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    // A message without a reward is invalid params, naming the field.
    let mut bad = message("Write it", "1.00", &["writing"]);
    bad["metadata"].as_object_mut().unwrap().remove("reward");
    let v = rpc_to(&app, "/a2a", &poster.token, "SendMessage", bad).await;
    assert_eq!(error_code(&v), -32602, "{v}");
    assert!(
        v["error"]["data"].to_string().contains("metadata.reward"),
        "{v}"
    );

    // SendMessage at the worker's interface: a task reserved for it, escrowed from the poster.
    let v = rpc_to(
        &app,
        agent_url,
        &poster.token,
        "SendMessage",
        message("Write the quarterly incident report", "12.50", &["writing"]),
    )
    .await;
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_SUBMITTED", "{v}");
    let task_id: Uuid = task["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(task["metadata"]["nervix"]["reservedFor"], json!(worker.id));
    assert_eq!(available(&poster).await, "87.50");
    let (s, rest) = poster
        .client
        .request(Method::GET, &format!("/v1/tasks/{task_id}"), None)
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(rest["title"], "Write the quarterly incident report");
    assert_eq!(rest["reward"], "12.50");
    assert!(rest["description"]
        .as_str()
        .unwrap()
        .contains("\"language\":\"en\""));

    // Only the worker may claim it, and only it sees it among its eligible tasks.
    let (s, v) = other
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task_id}/claim"),
            Some(&json!({"estimated_duration": 600})),
        )
        .await
        .unwrap();
    assert_eq!(s, 403, "{v}");
    let (_, list) = other
        .client
        .request(Method::GET, "/v1/tasks", None)
        .await
        .unwrap();
    assert!(!list.to_string().contains(&task_id.to_string()));
    let (_, list) = worker
        .client
        .request(Method::GET, "/v1/tasks", None)
        .await
        .unwrap();
    assert!(list.to_string().contains(&task_id.to_string()));

    // Another agent's view: not found (-32001), like an unknown id.
    let v = rpc_to(
        &app,
        "/a2a",
        &other.token,
        "GetTask",
        json!({"id": task_id}),
    )
    .await;
    assert_eq!(error_code(&v), -32001, "{v}");
    assert_eq!(reason(&v), "TASK_NOT_FOUND");
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "GetTask",
        json!({"id": Uuid::now_v7()}),
    )
    .await;
    assert_eq!(error_code(&v), -32001, "{v}");

    let (s, v) = worker
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task_id}/claim"),
            Some(&json!({"estimated_duration": 600})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "GetTask",
        json!({"id": task_id}),
    )
    .await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_WORKING", "{v}");
    // The work comes with a file, which the A2A artifact carries as a part of its own.
    let appendix = "Timeline of the incidents, by hour.\n";
    let uploaded: Value = app
        .http
        .post(format!("{}/v1/tasks/{task_id}/artifacts", app.base))
        .query(&[("filename", "timeline.txt")])
        .bearer_auth(&worker.token)
        .header("content-type", "application/octet-stream")
        .body(appendix)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file_id = uploaded["id"].as_str().expect("an artifact id").to_owned();
    let (s, v) = worker
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task_id}/submit"),
            Some(&json!({"submission_data": {"content": WORK, "artifacts": [file_id]}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{v}");

    // Completed once its receipt is issued (by the reputation pass, a moment after the
    // acceptance); until then working, with no artifact yet.
    let v = eventually(Duration::from_secs(20), "the task completes", || async {
        let v = rpc_to(
            &app,
            "/a2a",
            &poster.token,
            "GetTask",
            json!({"id": task_id}),
        )
        .await;
        let state = v["result"]["status"]["state"].clone();
        if state == "TASK_STATE_WORKING" {
            let artifacts = v["result"]["artifacts"].as_array();
            assert!(artifacts.is_none_or(Vec::is_empty), "{v}");
            return None;
        }
        Some(v)
    })
    .await;
    let done = &v["result"];
    assert_eq!(done["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    let parts = &done["artifacts"][0]["parts"];
    assert_eq!(parts[0]["text"], WORK);
    let file = &parts[1];
    assert_eq!(file["filename"], "timeline.txt", "{file}");
    assert_eq!(file["mediaType"], uploaded["content_type"], "{file}");
    let url = file["url"].as_str().expect("a file part by URL");
    assert_eq!(url, format!("{}/v1/artifacts/{file_id}", app.base));
    // The poster downloads it with its own token.
    let got = app
        .http
        .get(url)
        .bearer_auth(&poster.token)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), appendix);
    let quality = &parts[2]["data"];
    assert_eq!(
        quality["files"][0]["artifactId"],
        file_id.as_str(),
        "{quality}"
    );
    assert_eq!(quality["files"][0]["sha256"], uploaded["sha256"]);
    assert!(quality["qualityScore"].as_i64().unwrap() >= 60, "{quality}");
    assert!(quality["checks"].as_array().unwrap().len() > 1);
    let jws = quality["receipt"].as_str().unwrap().to_owned();

    // The receipt verifies with the JWKS and says what happened.
    let keys = jwks(&app).await;
    let verified = nervix_core::receipt::verify(&jws, &keys).unwrap();
    let r = &verified.receipt;
    assert_eq!(r.task.id, task_id.to_string());
    assert_eq!(r.task.title, "Write the quarterly incident report");
    assert_eq!(r.agent.handle, "a2a-worker");
    assert_eq!(r.agent.public_key, worker.keys.public_key_b64());
    assert_eq!(r.poster, "a2a-poster");
    assert_eq!(r.reward_paid, "12.50");
    assert_eq!(r.quality_score, quality["qualityScore"].as_i64().unwrap());
    assert!(r.checks.total >= r.checks.passed && r.checks.passed > 0);
    // Tampering shows.
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    claims["reward_paid"] = json!("1000.00");
    parts[1] = URL_SAFE_NO_PAD.encode(nervix_core::receipt::canonical(&claims));
    assert_eq!(
        nervix_core::receipt::verify(&parts.join("."), &keys),
        Err(nervix_core::receipt::JwsError::BadSignature)
    );

    // Served publicly, paginated; the agent card counts it.
    let page: Value = get(&app, "/v1/agents/a2a-worker/receipts?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["receipt"], jws.as_str(), "{page}");
    assert_eq!(page["items"][0]["task_id"], json!(task_id));
    let card: Value = get(&app, "/a2a/agents/a2a-worker/.well-known/agent-card.json")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        card["capabilities"]["extensions"][0]["params"]["receipts"],
        1
    );

    // After a key rotation the receipt still verifies (its key stays in the JWKS), and new
    // receipts are signed with the new key.
    let new_kid = rotate_signing_key(&app).await;
    let rotated = eventually(Duration::from_secs(20), "the new key is served", || async {
        let k = jwks(&app).await;
        k.to_string().contains(&new_kid).then_some(k)
    })
    .await;
    assert_eq!(
        nervix_core::receipt::verify(&jws, &rotated).unwrap().kid,
        verified.kid
    );

    // ListTasks: the poster's own, newest first; paged.
    let second = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "SendMessage",
        message("Research the vendors", "5.00", &["writing"]),
    )
    .await;
    let second_id = second["result"]["task"]["id"].as_str().unwrap().to_owned();
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "ListTasks",
        json!({"pageSize": 1}),
    )
    .await;
    let l = &v["result"];
    assert_eq!(l["tasks"][0]["id"], second_id.as_str(), "{v}");
    assert!(l["tasks"][0].get("artifacts").is_none());
    assert_eq!(l["pageSize"], 1);
    let token = l["nextPageToken"].as_str().unwrap();
    assert!(!token.is_empty());
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "ListTasks",
        json!({"pageSize": 1, "pageToken": token, "includeArtifacts": true}),
    )
    .await;
    assert_eq!(v["result"]["tasks"][0]["id"], json!(task_id));
    assert_eq!(v["result"]["nextPageToken"], "");
    assert!(v["result"]["tasks"][0]["artifacts"][0]["parts"].is_array());
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "ListTasks",
        json!({"status": "TASK_STATE_COMPLETED"}),
    )
    .await;
    assert_eq!(v["result"]["tasks"].as_array().unwrap().len(), 1, "{v}");
    let v = rpc_to(&app, "/a2a", &other.token, "ListTasks", json!({})).await;
    assert_eq!(v["result"]["tasks"], json!([]));

    // CancelTask refunds like the REST cancel; a second cancel is -32002.
    assert_eq!(available(&poster).await, "82.50");
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "CancelTask",
        json!({"id": second_id}),
    )
    .await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_CANCELED", "{v}");
    assert_eq!(available(&poster).await, "87.50");
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "CancelTask",
        json!({"id": second_id}),
    )
    .await;
    assert_eq!(error_code(&v), -32002, "{v}");
    assert_eq!(reason(&v), "TASK_NOT_CANCELABLE");
    let v = rpc_to(
        &app,
        "/a2a",
        &poster.token,
        "SubscribeToTask",
        json!({"id": second_id}),
    )
    .await;
    assert_eq!(error_code(&v), -32004, "{v}");
    app.stop().await;
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
}

/// Reads SSE `data:` events of a response until it ends.
async fn sse_events(mut res: reqwest::Response, tx: tokio::sync::mpsc::UnboundedSender<Value>) {
    let mut buf = String::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let _ = tx.send(serde_json::from_str(data.trim()).unwrap());
                }
            }
        }
    }
}

pub async fn streaming_follows_the_task(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("stream-poster", &[]).await;
    let worker = app.enroll("stream-worker", &["writing"]).await;
    app.grant(poster.id, "50.00").await;
    let res = app
        .http
        .post(format!("{}/a2a", app.base))
        .bearer_auth(&poster.token)
        .header("A2A-Version", "1.0")
        .json(
            &json!({"jsonrpc": "2.0", "id": "s1", "method": "SendStreamingMessage",
            "params": message("Write the streaming report", "3.00", &["writing"])}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(sse_events(res, tx));
    let first = next(&mut rx).await;
    assert_eq!(first["id"], "s1");
    let task = &first["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_SUBMITTED");
    let task_id = task["id"].as_str().unwrap().to_owned();

    // A second client subscribes to the same task.
    let sub = app
        .http
        .post(format!("{}/a2a", app.base))
        .bearer_auth(&poster.token)
        .header("A2A-Version", "1.0")
        .json(
            &json!({"jsonrpc": "2.0", "id": 2, "method": "SubscribeToTask",
            "params": {"id": task_id}}),
        )
        .send()
        .await
        .unwrap();
    let (stx, mut srx) = tokio::sync::mpsc::unbounded_channel();
    let sub_reader = tokio::spawn(sse_events(sub, stx));
    assert_eq!(
        next(&mut srx).await["result"]["task"]["status"]["state"],
        "TASK_STATE_SUBMITTED"
    );

    let (s, v) = worker
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task_id}/claim"),
            Some(&json!({"estimated_duration": 600})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    for rx in [&mut rx, &mut srx] {
        let working = next(rx).await;
        assert_eq!(
            working["result"]["statusUpdate"]["status"]["state"], "TASK_STATE_WORKING",
            "{working}"
        );
    }
    let (s, v) = worker
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task_id}/submit"),
            Some(&json!({"submission_data": {"content": WORK}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{v}");
    for rx in [&mut rx, &mut srx] {
        // Still working while the receipt is issued; then the artifact carries it.
        let artifact = loop {
            let e = next(rx).await;
            if e["result"]["statusUpdate"]["status"]["state"] != "TASK_STATE_WORKING" {
                break e;
            }
        };
        let parts = &artifact["result"]["artifactUpdate"]["artifact"]["parts"];
        assert_eq!(parts[0]["text"], WORK, "{artifact}");
        assert!(parts[1]["data"]["receipt"].is_string(), "{artifact}");
        let done = next(rx).await;
        assert_eq!(
            done["result"]["statusUpdate"]["status"]["state"],
            "TASK_STATE_COMPLETED"
        );
    }
    // Both streams end once the task is over.
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream closes")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), sub_reader)
        .await
        .expect("the subscription closes")
        .unwrap();
    app.stop().await;
}

// ---- the official A2A Python SDK as a third-party client ------------------------------------

/// Pinned: the SDK's wire types follow the specification's versions.
const PY_PACKAGES: &[&str] = &["a2a-sdk==1.3.0", "PyJWT[crypto]==2.10.1", "httpx==0.28.1"];

fn has_sdk(python: &std::path::Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import a2a.client, a2a.utils.signing, jwt"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python with the A2A SDK: `NERVIX_A2A_PYTHON` (what `.ci/run` prepares), else a virtualenv
/// under the target folder made on first use. `None` (skip) when there is none and none can be
/// made, except under `CI=true`, where that fails.
fn python_with_sdk() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    use std::process::Command;
    let made = (|| -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("NERVIX_A2A_PYTHON").map(PathBuf::from) {
            return if has_sdk(&p) {
                Ok(p)
            } else {
                Err(format!("NERVIX_A2A_PYTHON={} lacks a2a-sdk", p.display()))
            };
        }
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("a2a-sdk-venv");
        let python = venv.join("bin/python");
        if has_sdk(&python) {
            return Ok(python);
        }
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PY_PACKAGES))?;
        has_sdk(&python)
            .then_some(python)
            .ok_or_else(|| "a2a-sdk does not import after installing it".to_owned())
    })();
    match made {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs Python with a2a-sdk for the A2A interop test: {why}"
            );
            eprintln!("SKIP official_python_sdk: no Python with a2a-sdk ({why})");
            None
        }
    }
}

fn python(python: &std::path::Path, args: &[&str]) -> Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/a2a_sdk.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .expect("run a2a_sdk.py");
    assert!(
        out.status.success(),
        "a2a_sdk.py {}: {}{}",
        args[0],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a2a_sdk.py prints JSON")
}

/// One backend is enough here: the interoperability is the wire's, which the cases above
/// check on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk() {
    let Some(py) = tokio::task::spawn_blocking(python_with_sdk).await.unwrap() else {
        return;
    };
    let Some(app) = TestApp::start(Backend::Sqlite).await else {
        return;
    };
    let poster = app.enroll("py-poster", &[]).await;
    let worker = app.enroll("py-worker", &["writing"]).await;
    app.grant(poster.id, "50.00").await;
    let (base, pt, wt) = (app.base.clone(), poster.token.clone(), worker.token.clone());
    let out = tokio::task::spawn_blocking({
        let py = py.clone();
        move || python(&py, &["flow", &base, &pt, &wt, "py-worker"])
    })
    .await
    .unwrap();
    let receipt = out["receipt"].as_str().unwrap().to_owned();
    let kid = out["kid"].as_str().unwrap().to_owned();
    // The Rust verifier agrees with PyJWT.
    assert_eq!(
        nervix_core::receipt::verify(&receipt, &jwks(&app).await)
            .unwrap()
            .kid,
        kid
    );

    let new_kid = rotate_signing_key(&app).await;
    eventually(Duration::from_secs(20), "the new key is served", || async {
        jwks(&app)
            .await
            .to_string()
            .contains(&new_kid)
            .then_some(())
    })
    .await;
    let url = format!("{}/.well-known/jwks.json", app.base);
    let out = tokio::task::spawn_blocking(move || python(&py, &["verify", &url, &receipt, &kid]))
        .await
        .unwrap();
    assert_eq!(out["verified"], true);
    app.stop().await;
}

/// Rotates the platform's signing key through the admin route; the new key's id.
async fn rotate_signing_key(app: &TestApp) -> String {
    let (status, body) = app
        .admin
        .request(Method::POST, "/v1/admin/signing-keys/rotate", None)
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    body["kid"].as_str().unwrap().to_owned()
}
