//! Token renewal against a stand-in server that issues JWT-shaped tokens with real `iat` and
//! `exp` claims and verifies login signatures: a client holding the agent's signing key gets a
//! fresh token before the old one expires, once however many calls find it due, and carries
//! on with a still-valid token when the server refuses to renew. (The same against the real
//! server is in the CLI crate's `tests/sdk.rs`.)
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use nervix_client::{AgentKeys, Client, ClientError};
use serde_json::{json, Value};
use uuid::Uuid;

const LIFETIME: i64 = 100;

struct Mock {
    public_key: VerifyingKey,
    challenges: Mutex<Vec<(Uuid, String)>>,
    /// How many seconds before now the next token is dated: a token issued 95 s ago with a
    /// 100 s lifetime is due for renewal at once.
    backdate: AtomicI64,
    issued: AtomicUsize,
    refuse_logins: AtomicBool,
    /// The bearer token each `GET /v1/agents/me` carried.
    seen: Mutex<Vec<String>>,
}

fn problem(status: StatusCode, code: &str) -> Response {
    let body =
        json!({"type": "about:blank", "title": code, "status": status.as_u16(), "code": code});
    (status, Json(body)).into_response()
}

fn agent_json() -> Value {
    json!({
        "id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10", "agent_id": "alpha", "agent_name": "Alpha",
        "public_key": "AAAA", "capabilities": [], "metadata": {}, "reputation_score": "50.00",
        "reputation_level": "novice", "total_tasks_completed": 0, "online": true,
        "created_at": "2030-01-01T00:00:00Z"
    })
}

async fn challenge(State(mock): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    if mock.refuse_logins.load(Ordering::SeqCst) {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    assert_eq!(body["agent_id"], "alpha");
    let id = Uuid::new_v4();
    let text = format!("nervix-auth-v1:{id}:{}", B64.encode(rand_bytes()));
    mock.challenges.lock().unwrap().push((id, text.clone()));
    Json(json!({"challenge_id": id, "challenge": text, "expires_at": "2099-01-01T00:00:00Z"}))
        .into_response()
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    b
}

async fn token(State(mock): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    let id: Uuid = body["challenge_id"].as_str().unwrap().parse().unwrap();
    let text = {
        let mut challenges = mock.challenges.lock().unwrap();
        let at = challenges.iter().position(|(c, _)| *c == id).unwrap();
        challenges.remove(at).1
    };
    let sig: [u8; 64] = B64
        .decode(body["signature"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    if mock
        .public_key
        .verify_strict(text.as_bytes(), &Signature::from_bytes(&sig))
        .is_err()
    {
        return problem(StatusCode::UNAUTHORIZED, "bad_signature");
    }
    let n = mock.issued.fetch_add(1, Ordering::SeqCst);
    let iat = Utc::now().timestamp() - mock.backdate.load(Ordering::SeqCst);
    let exp = iat + LIFETIME;
    let claims = URL_SAFE_NO_PAD
        .encode(json!({"iat": iat, "exp": exp, "sub": "alpha", "jti": n}).to_string());
    let token = format!("eyJhbGciOiJFZERTQSJ9.{claims}.sig{n}");
    let expires_at = Utc.timestamp_opt(exp, 0).single().unwrap();
    Json(json!({"token": token, "token_type": "Bearer", "expires_at": expires_at, "agent": agent_json()}))
        .into_response()
}

async fn me(State(mock): State<Arc<Mock>>, headers: HeaderMap) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    mock.seen.lock().unwrap().push(bearer);
    Json(agent_json()).into_response()
}

async fn serve(keys: &AgentKeys) -> (String, Arc<Mock>) {
    let mock = Arc::new(Mock {
        public_key: keys.verifying_key(),
        challenges: Mutex::default(),
        backdate: AtomicI64::new(0),
        issued: AtomicUsize::new(0),
        refuse_logins: AtomicBool::new(false),
        seen: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/auth/challenge", post(challenge))
        .route("/v1/auth/token", post(token))
        .route("/v1/agents/me", get(me))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), mock)
}

#[tokio::test]
async fn a_token_near_expiry_is_renewed_on_the_next_call() {
    let keys = Arc::new(AgentKeys::generate());
    let (url, mock) = serve(&keys).await;
    let mut client = Client::new(&url).unwrap();

    // Issued 95 s into a 100 s life: due.
    mock.backdate.store(95, Ordering::SeqCst);
    let first = client.login(keys.clone(), "alpha").await.unwrap();
    assert_eq!(client.token().as_deref(), Some(first.token.as_str()));
    mock.backdate.store(0, Ordering::SeqCst);

    client.me().await.unwrap();
    let renewed = client.token().unwrap();
    assert_ne!(renewed, first.token, "renewed before the call");
    assert_eq!(
        mock.seen.lock().unwrap().as_slice(),
        std::slice::from_ref(&renewed)
    );
    assert!(client.token_expires_at().unwrap() > first.expires_at);

    // Fresh now: the next calls use it as it is.
    client.me().await.unwrap();
    client.me().await.unwrap();
    assert_eq!(mock.issued.load(Ordering::SeqCst), 2);
    assert!(mock.seen.lock().unwrap().iter().all(|t| *t == renewed));
}

#[tokio::test]
async fn concurrent_calls_renew_once_and_clones_share_the_result() {
    let keys = Arc::new(AgentKeys::generate());
    let (url, mock) = serve(&keys).await;
    let mut client = Client::new(&url).unwrap();
    mock.backdate.store(95, Ordering::SeqCst);
    client.login(keys.clone(), "alpha").await.unwrap();
    mock.backdate.store(0, Ordering::SeqCst);

    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.me().await.map(drop) })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        mock.issued.load(Ordering::SeqCst),
        2,
        "one login, one renewal"
    );
    let renewed = client.token().unwrap();
    assert!(mock.seen.lock().unwrap().iter().all(|t| *t == renewed));
}

#[tokio::test]
async fn without_a_signing_key_nothing_is_renewed() {
    let keys = Arc::new(AgentKeys::generate());
    let (url, mock) = serve(&keys).await;
    let mut client = Client::new(&url).unwrap();
    mock.backdate.store(95, Ordering::SeqCst);
    let first = client.authenticate(&keys, "alpha").await.unwrap();
    client.me().await.unwrap();
    assert_eq!(mock.issued.load(Ordering::SeqCst), 1);
    assert_eq!(client.token().unwrap(), first.token);
    assert!(matches!(
        client.renew_token().await,
        Err(ClientError::NoSigningKey)
    ));

    // A token set by hand (as the CLI does from its profile) gets its expiry from its claims,
    // and renews once a key is given.
    let mut by_hand = Client::new(&url).unwrap().with_token(first.token.clone());
    assert_eq!(by_hand.token_expires_at(), Some(first.expires_at));
    by_hand.set_signing_key(keys.clone(), "alpha");
    mock.backdate.store(0, Ordering::SeqCst);
    by_hand.me().await.unwrap();
    assert_eq!(mock.issued.load(Ordering::SeqCst), 2);
    assert_ne!(by_hand.token().unwrap(), first.token);
    // The other client's session is its own.
    assert_eq!(client.token().unwrap(), first.token);
}

#[tokio::test]
async fn a_refused_renewal_keeps_a_valid_token_and_fails_an_expired_one() {
    let keys = Arc::new(AgentKeys::generate());
    let (url, mock) = serve(&keys).await;
    let mut client = Client::new(&url).unwrap();
    mock.backdate.store(95, Ordering::SeqCst);
    let first = client.login(keys.clone(), "alpha").await.unwrap();
    mock.refuse_logins.store(true, Ordering::SeqCst);

    // Still valid for ~5 s: the call goes through with it.
    client.me().await.unwrap();
    assert_eq!(client.token().unwrap(), first.token);
    assert_eq!(
        mock.seen.lock().unwrap().as_slice(),
        std::slice::from_ref(&first.token)
    );

    // Explicit renewal reports the refusal.
    let err = client.renew_token().await.unwrap_err();
    assert_eq!(err.status(), Some(503));

    // An expired token whose renewal is refused is an error, not a doomed request.
    mock.refuse_logins.store(false, Ordering::SeqCst);
    mock.backdate.store(LIFETIME + 5, Ordering::SeqCst);
    let mut expired = Client::new(&url).unwrap();
    expired.login(keys.clone(), "alpha").await.unwrap();
    mock.refuse_logins.store(true, Ordering::SeqCst);
    let seen_before = mock.seen.lock().unwrap().len();
    let err = expired.me().await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(mock.seen.lock().unwrap().len(), seen_before);

    // Once the server answers again, the next call renews and succeeds.
    mock.refuse_logins.store(false, Ordering::SeqCst);
    mock.backdate.store(0, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), expired.me())
        .await
        .unwrap()
        .unwrap();
}
