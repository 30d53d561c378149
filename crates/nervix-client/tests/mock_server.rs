//! Exercises the client's wiring (paths, headers, token handling, error decoding) against a
//! small in-process stand-in for the server. Contract tests against the real server live in
//! the server's test suite.

// clippy.toml allows unwrap in `#[test]` functions only; the mock's handlers are test code too,
// where a panic is simply a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use nervix_client::{
    AgentKeys, ClaimRequest, Client, ClientError, EnrollRequest, Method, Role, SubmitRequest,
};
use serde_json::{json, Value};
use uuid::Uuid;

const TOKEN: &str = "header.payload.signature";

#[derive(Default)]
struct Mock {
    /// enrollment id -> (challenge, public key b64)
    enrollments: Mutex<HashMap<Uuid, (String, String)>>,
}

fn problem(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("https://nervix.dev/problems/{code}"),
        "title": status.canonical_reason(),
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn agent_json(me: bool) -> Value {
    let mut agent = json!({
        "id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10",
        "agent_id": "alpha-coder",
        "agent_name": "Alpha Coder",
        "public_key": "AAAA",
        "encryption_public_key": null,
        "capabilities": ["coding"],
        "metadata": {},
        "reputation_score": "50.00",
        "reputation_level": "novice",
        "total_tasks_completed": 0,
        "online": true,
        "created_at": "2030-01-01T00:00:00Z"
    });
    if me {
        agent["config"] = json!({"max_concurrent_tasks": 3});
        agent["total_earnings"] = json!("0.00");
        agent["role"] = json!("agent");
    }
    agent
}

fn task_json(id: &str) -> Value {
    json!({
        "id": id, "title": "t", "description": "d",
        "requirements": {"capabilities": [], "min_reputation": 0},
        "reward": "1.00", "complexity": "simple", "deadline": null, "status": "completed",
        "kind": "text", "depends_on": [], "attempts": 1, "max_attempts": 3,
        "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z"
    })
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn enroll(State(mock): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    let id = Uuid::new_v4();
    let challenge = format!("nervix-enroll-v1:{id}:{}", B64.encode([7u8; 32]));
    let public_key = body["public_key"].as_str().unwrap_or_default().to_owned();
    mock.enrollments
        .lock()
        .unwrap()
        .insert(id, (challenge.clone(), public_key));
    let body =
        json!({"enrollment_id": id, "challenge": challenge, "expires_at": "2030-01-01T00:05:00Z"});
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn respond(
    State(mock): State<Arc<Mock>>,
    Path(id): Path<Uuid>,
    Json(body): Json<Value>,
) -> Response {
    let Some((challenge, public_key)) = mock.enrollments.lock().unwrap().get(&id).cloned() else {
        return problem(StatusCode::NOT_FOUND, "not_found", "no such enrollment");
    };
    let key: [u8; 32] = B64.decode(public_key).unwrap().try_into().unwrap();
    let key = VerifyingKey::from_bytes(&key).unwrap();
    let signature = B64
        .decode(body["signature"].as_str().unwrap_or_default())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b));
    match signature {
        Some(sig) if key.verify_strict(challenge.as_bytes(), &sig).is_ok() => Json(json!({
            "token": TOKEN,
            "token_type": "Bearer",
            "expires_at": "2030-04-01T00:00:00Z",
            "agent": agent_json(false),
        }))
        .into_response(),
        _ => problem(
            StatusCode::UNAUTHORIZED,
            "bad_signature",
            "signature does not verify",
        ),
    }
}

async fn me(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or invalid token",
        );
    }
    Json(agent_json(true)).into_response()
}

async fn agent(Path(id): Path<String>) -> Response {
    if id == "alpha-coder" {
        return Json(agent_json(false)).into_response();
    }
    // A router-level 404 that is not a problem document.
    (StatusCode::NOT_FOUND, format!("no agent {id}")).into_response()
}

async fn claim() -> Response {
    problem(
        StatusCode::CONFLICT,
        "already_claimed",
        "another agent holds this task",
    )
}

async fn submit(Path(id): Path<String>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let body = json!({
        "submission": {
            "id": Uuid::new_v4(), "task_id": id, "agent_id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10",
            "quality_score": 92, "status": "accepted",
            "checks": [{"name": "non_empty", "passed": true, "score": 100, "details": null}],
            "feedback": format!("key={key}; content={}", body["submission_data"]["content"]),
        },
        "task": task_json(&id),
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn stats() -> Response {
    let mut resp = problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
    resp.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("3"));
    resp
}

async fn serve() -> String {
    let app = Router::new()
        .route("/v1/enroll", post(enroll))
        .route("/v1/enroll/{id}/respond", post(respond))
        .route("/v1/agents/me", get(me))
        .route("/v1/agents/{id}", get(agent))
        .route("/v1/tasks/{id}/claim", post(claim))
        .route("/v1/tasks/{id}/submit", post(submit))
        .route("/v1/stats", get(stats))
        .with_state(Arc::new(Mock::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

#[tokio::test]
async fn enroll_signs_the_challenge_and_keeps_the_token() {
    let base = serve().await;
    let keys = AgentKeys::generate();
    let mut client = Client::new(&base).unwrap();

    let err = client.me().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.code(), Some("unauthorized"));

    let request = EnrollRequest::new("alpha-coder", &keys).capabilities(["coding"]);
    let token = client.enroll(&keys, &request).await.unwrap();
    assert_eq!(token.token, TOKEN);
    assert_eq!(client.token().as_deref(), Some(TOKEN));
    assert!(!format!("{client:?}").contains(TOKEN));

    let me = client.me().await.unwrap();
    assert_eq!(me.role, Some(Role::Agent));
    assert_eq!(me.total_earnings.map(|d| d.cents()), Some(0));
}

#[tokio::test]
async fn a_bad_signature_is_an_api_error() {
    let base = serve().await;
    let keys = AgentKeys::generate();
    let mut client = Client::new(&base).unwrap();
    let started = client
        .start_enroll(&EnrollRequest::new("alpha-coder", &keys))
        .await
        .unwrap();
    assert!(started.challenge.starts_with("nervix-enroll-v1:"));

    let wrong = AgentKeys::generate().sign_challenge(&started.challenge);
    let err = client
        .respond_enroll(started.enrollment_id, &wrong)
        .await
        .unwrap_err();
    match &err {
        ClientError::Api { status, problem } => {
            assert_eq!(*status, 401);
            assert_eq!(problem.code.as_deref(), Some("bad_signature"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(client.token(), None);

    let right = keys.sign_challenge(&started.challenge);
    client
        .respond_enroll(started.enrollment_id, &right)
        .await
        .unwrap();
    assert_eq!(client.token().as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn errors_without_a_problem_body_are_still_problems() {
    let base = serve().await;
    let client = Client::new(&base).unwrap();
    assert_eq!(
        client.agent("alpha-coder").await.unwrap().agent_id,
        "alpha-coder"
    );

    // The handle is percent-encoded into one path segment.
    let err = client.agent("a/b c").await.unwrap_err();
    let problem = err.problem().unwrap();
    assert_eq!(err.status(), Some(404));
    assert_eq!(problem.code, None);
    assert_eq!(problem.title, "Not Found");
    assert_eq!(problem.detail.as_deref(), Some("no agent a/b c"));

    let err = client
        .claim(Uuid::new_v4(), &ClaimRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(409), Some("already_claimed"))
    );
    assert!(err.to_string().contains("already_claimed"), "{err}");

    let err = client.stats().await.unwrap_err();
    assert_eq!(err.code(), Some("rate_limited"));
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(3)));
}

#[tokio::test]
async fn submit_sends_the_idempotency_key() {
    let base = serve().await;
    let client = Client::new(&base).unwrap();
    let id = Uuid::new_v4();
    let resp = client
        .submit(id, &SubmitRequest::text("done"), Some("retry-1"))
        .await
        .unwrap();
    assert_eq!(resp.submission.task_id, id);
    assert_eq!(resp.submission.quality_score, Some(92.0));
    assert_eq!(
        resp.submission.feedback.as_deref(),
        Some("key=retry-1; content=\"done\"")
    );
    assert_eq!(resp.task.reward.to_string(), "1.00");
}

#[tokio::test]
async fn raw_requests_return_any_status() {
    let base = serve().await;
    let client = Client::new(&base).unwrap();
    let (status, body) = client
        .request(Method::GET, "/v1/agents/nobody", None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    assert_eq!(body, json!("no agent nobody"));

    let raw = client
        .request_raw(Method::POST, "/v1/enroll", &[], Some(b"{not json".to_vec()))
        .await
        .unwrap();
    assert_eq!(raw.status, 400);

    let bearer = format!("Bearer {TOKEN}");
    let raw = client
        .request_raw(
            Method::GET,
            "/v1/agents/me",
            &[("Authorization", &bearer)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 200);
    // A caller-supplied Authorization replaces the client's own token.
    let authed = client.clone().with_token(TOKEN);
    let raw = authed
        .request_raw(
            Method::GET,
            "/v1/agents/me",
            &[("authorization", "Bearer forged")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 401);
    assert_eq!(raw.json()["code"], "unauthorized");
}

#[test]
fn base_urls_are_validated() {
    assert!(Client::new("http://127.0.0.1:8080").is_ok());
    assert!(Client::new("https://nervix.example/api/").is_ok());
    for bad in [
        "127.0.0.1:8080",
        "ftp://x",
        "mailto:a@b",
        "http://x/?q=1",
        "not a url",
    ] {
        assert!(
            matches!(Client::new(bad), Err(ClientError::InvalidUrl { .. })),
            "{bad}"
        );
    }
}
