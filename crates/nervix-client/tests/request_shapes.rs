//! What the client puts on the wire for the routes that are not on the server yet (messages,
//! channels, notifications, announcements) and for pagination, checked against `API.md` with
//! a recording stand-in: each request's method, path, query, `Idempotency-Key` and body are
//! recorded, and canned responses shaped as the contract says are returned.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::TryStreamExt as _;
use nervix_client::{
    AgentKeys, ChannelQuery, Client, MarkRead, MessageHistoryQuery, NewAnnouncement, NewChannel,
    NotificationQuery, PageParams, SendMessage, TaskQuery, TaskStatus,
};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    idempotency_key: Option<String>,
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    /// `"METHOD /path?query"` → (status, body).
    canned: Mutex<HashMap<String, (u16, Value)>>,
}

impl Recorder {
    fn answer(&self, request: &str, status: u16, body: Value) {
        self.canned
            .lock()
            .unwrap()
            .insert(request.to_owned(), (status, body));
    }

    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn record(
    State(rec): State<Arc<Recorder>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        idempotency_key: header("idempotency-key"),
        authorization: header("authorization"),
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        },
    };
    let key = match &seen.query {
        Some(q) => format!("{method} {}?{q}", seen.path),
        None => format!("{method} {}", seen.path),
    };
    rec.seen.lock().unwrap().push(seen);
    match rec.canned.lock().unwrap().get(&key) {
        Some((status, body)) => (
            StatusCode::from_u16(*status).unwrap(),
            axum::Json(body.clone()),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("nothing canned for {key}")).into_response(),
    }
}

async fn serve() -> (Client, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let app = Router::new().fallback(record).with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::new(&format!("http://{addr}"))
        .unwrap()
        .with_token("tkn");
    (client, rec)
}

fn message_json(id: Uuid, payload: &str, nonce: &str) -> Value {
    json!({"id": id, "from": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10", "to": "bob",
        "encrypted": true, "payload": payload, "nonce": nonce, "created_at": "2030-01-01T00:00:00Z"})
}

#[tokio::test]
async fn messages_follow_the_contract() {
    let (client, rec) = serve().await;
    let alice = AgentKeys::generate();
    let bob = AgentKeys::generate();
    let id = Uuid::new_v4();
    rec.answer(
        "POST /v1/messages/send",
        201,
        json!({"id": id, "created_at": "2030-01-01T00:00:00Z"}),
    );
    let body = SendMessage::sealed(
        &alice,
        "bob",
        &bob.encryption_public_key_b64(),
        b"hello bob",
    )
    .unwrap();
    let sent = client.send_message(&body, Some("m-1")).await.unwrap();
    assert_eq!(sent.id, id);
    let seen = rec.take().remove(0);
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/v1/messages/send")
    );
    assert_eq!(seen.idempotency_key.as_deref(), Some("m-1"));
    assert_eq!(seen.authorization.as_deref(), Some("Bearer tkn"));
    assert_eq!(seen.body["to"], "bob");
    assert_eq!(seen.body["encrypted"], true);
    assert!(seen.body.get("channel").is_none());
    let (payload, nonce) = (
        seen.body["payload"].as_str().unwrap().to_owned(),
        seen.body["nonce"].as_str().unwrap().to_owned(),
    );

    // History pages with `before`, and what comes back opens with the recipient's key.
    rec.answer(
        "GET /v1/messages/history?with=alice&limit=1",
        200,
        json!({"items": [message_json(id, &payload, &nonce)], "next_cursor": "m1"}),
    );
    rec.answer(
        "GET /v1/messages/history?with=alice&limit=1&before=m1",
        200,
        json!({"items": [], "next_cursor": null}),
    );
    let page = client
        .message_history(&MessageHistoryQuery::with("alice").limit(1))
        .await
        .unwrap();
    assert_eq!(page.next_cursor.as_deref(), Some("m1"));
    let opened = page.items[0]
        .open(&bob, &alice.encryption_public_key_b64())
        .unwrap();
    assert_eq!(opened, b"hello bob");
    let all = client
        .pages(MessageHistoryQuery::with("alice").limit(1))
        .collect_all()
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    let queries: Vec<_> = rec.take().into_iter().map(|s| s.query.unwrap()).collect();
    assert_eq!(
        queries,
        [
            "with=alice&limit=1",
            "with=alice&limit=1",
            "with=alice&limit=1&before=m1"
        ]
    );

    // A channel's history.
    let channel = Uuid::new_v4();
    rec.answer(
        &format!("GET /v1/messages/history?channel={channel}"),
        200,
        json!({"items": [], "next_cursor": null}),
    );
    client
        .message_history(&MessageHistoryQuery::channel(channel))
        .await
        .unwrap();
    assert_eq!(
        rec.take()[0].query.as_deref(),
        Some(format!("channel={channel}").as_str())
    );
}

#[tokio::test]
async fn send_sealed_looks_up_the_recipient_key() {
    let (client, rec) = serve().await;
    let alice = AgentKeys::generate();
    let bob = AgentKeys::generate();
    let bob_id = Uuid::new_v4();
    let agent = |id: Uuid, key: Option<String>| {
        json!({"id": id, "agent_id": "bob", "public_key": "AAAA", "encryption_public_key": key,
            "reputation_score": "50.00", "reputation_level": "novice", "created_at": "2030-01-01T00:00:00Z"})
    };
    rec.answer(
        "GET /v1/agents/bob",
        200,
        agent(bob_id, Some(bob.encryption_public_key_b64())),
    );
    rec.answer(
        "POST /v1/messages/send",
        201,
        json!({"id": Uuid::new_v4(), "created_at": "2030-01-01T00:00:00Z"}),
    );
    client
        .send_sealed(&alice, "bob", b"sealed for bob", None)
        .await
        .unwrap();
    let seen = rec.take();
    let body = &seen[1].body;
    assert_eq!(body["to"], bob_id.to_string(), "sent to the UUID looked up");
    assert_eq!(seen[1].idempotency_key, None);
    let opened = bob
        .open_from(
            &alice.encryption_public_key_b64(),
            body["payload"].as_str().unwrap(),
            body["nonce"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(opened, b"sealed for bob");

    // Both ends open it from history: bob with alice's key, alice (the sender) with bob's.
    let alice_id = Uuid::new_v4();
    rec.answer(
        &format!("GET /v1/agents/{alice_id}"),
        200,
        agent(alice_id, Some(alice.encryption_public_key_b64())),
    );
    rec.answer(
        &format!("GET /v1/agents/{bob_id}"),
        200,
        agent(bob_id, Some(bob.encryption_public_key_b64())),
    );
    let message: nervix_client::Message = serde_json::from_value(json!({
        "id": Uuid::new_v4(), "from": alice_id, "to": bob_id, "encrypted": true,
        "payload": body["payload"], "nonce": body["nonce"], "created_at": "2030-01-01T00:00:00Z"
    }))
    .unwrap();
    assert_eq!(
        client.open_message(&bob, &message).await.unwrap(),
        b"sealed for bob"
    );
    assert_eq!(
        client.open_message(&alice, &message).await.unwrap(),
        b"sealed for bob"
    );
    assert!(client
        .open_message(&AgentKeys::generate(), &message)
        .await
        .is_err());
    rec.take();

    // No key, no message.
    rec.answer("GET /v1/agents/carol", 200, agent(Uuid::new_v4(), None));
    let err = client
        .send_sealed(&alice, "carol", b"x", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("encryption_public_key"), "{err}");
    assert_eq!(rec.take().len(), 1, "nothing sent");
}

#[tokio::test]
async fn channels_notifications_and_announcements_follow_the_contract() {
    let (client, rec) = serve().await;
    let channel = Uuid::new_v4();
    let channel_json = json!({"id": channel, "name": "ops", "created_at": "2030-01-01T00:00:00Z"});
    rec.answer("POST /v1/channels", 201, channel_json.clone());
    rec.answer(
        &format!("POST /v1/channels/{channel}/members"),
        200,
        json!({"ok": true}),
    );
    rec.answer(
        "GET /v1/channels",
        200,
        json!({"items": [channel_json], "next_cursor": null}),
    );
    let created = client
        .create_channel(&NewChannel {
            name: "ops".into(),
            members: vec!["bob".into()],
        })
        .await
        .unwrap();
    assert_eq!(created.id, channel);
    client
        .add_channel_members(channel, &["carol".into()])
        .await
        .unwrap();
    let mine = client.channels(&ChannelQuery::default()).await.unwrap();
    assert_eq!(mine.items[0].name, "ops");
    let seen = rec.take();
    assert_eq!(seen[0].body, json!({"name": "ops", "members": ["bob"]}));
    assert_eq!(seen[1].body, json!({"members": ["carol"]}));
    assert_eq!(
        (seen[2].method.as_str(), seen[2].query.as_deref()),
        ("GET", None)
    );

    let n = Uuid::new_v4();
    rec.answer(
        "GET /v1/notifications?unread=true&limit=10",
        200,
        json!({"items": [{"id": n, "kind": "submission_feedback", "title": "Accepted",
            "body": "score 92", "data": {"score": 92}, "read_at": null,
            "created_at": "2030-01-01T00:00:00Z"}], "next_cursor": null}),
    );
    rec.answer(
        "POST /v1/notifications/mark-read",
        200,
        json!({"marked": 1}),
    );
    let page = client
        .notifications(&NotificationQuery {
            unread: Some(true),
            page: PageParams::limit(10),
        })
        .await
        .unwrap();
    assert_eq!(page.items[0].kind, "submission_feedback");
    assert_eq!(page.items[0].read_at, None);
    client
        .mark_notifications_read(&MarkRead::ids([n]))
        .await
        .unwrap();
    client
        .mark_notifications_read(&MarkRead::all())
        .await
        .unwrap();
    let seen = rec.take();
    assert_eq!(seen[1].body, json!({"ids": [n]}));
    assert_eq!(seen[2].body, json!({"all": true}));

    let a = Uuid::new_v4();
    rec.answer(
        "POST /v1/admin/announcements",
        201,
        json!({"id": a, "title": "Maintenance", "body": "at noon", "created_at": "2030-01-01T00:00:00Z"}),
    );
    let made = client
        .announce(&NewAnnouncement {
            title: "Maintenance".into(),
            body: "at noon".into(),
        })
        .await
        .unwrap();
    assert_eq!((made.id, made.title.as_str()), (a, "Maintenance"));
    assert_eq!(
        rec.take()[0].body,
        json!({"title": "Maintenance", "body": "at noon"})
    );
}

fn task_json(id: Uuid) -> Value {
    json!({"id": id, "title": "t", "reward": "1.00", "complexity": "simple", "status": "available",
        "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z"})
}

#[tokio::test]
async fn pages_follow_next_cursor_to_the_end() {
    let (client, rec) = serve().await;
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let q = "status=available&limit=2";
    rec.answer(
        &format!("GET /v1/tasks?{q}"),
        200,
        json!({"items": [task_json(ids[0]), task_json(ids[1])], "next_cursor": ids[1]}),
    );
    rec.answer(
        &format!("GET /v1/tasks?{q}&cursor={}", ids[1]),
        200,
        json!({"items": [task_json(ids[2]), task_json(ids[3])], "next_cursor": ids[3]}),
    );
    rec.answer(
        &format!("GET /v1/tasks?{q}&cursor={}", ids[3]),
        200,
        json!({"items": [task_json(ids[4])], "next_cursor": null}),
    );
    let query = TaskQuery {
        status: Some(TaskStatus::Available),
        limit: Some(2),
        ..TaskQuery::default()
    };

    // Item by item.
    let mut pages = client.pages(query.clone());
    let mut got = Vec::new();
    while let Some(task) = pages.try_next().await.unwrap() {
        got.push(task.id);
    }
    assert_eq!(got, ids);
    assert!(pages.try_next().await.unwrap().is_none(), "stays finished");
    assert_eq!(rec.take().len(), 3, "each page fetched once");

    // As a stream, and from a given cursor.
    let streamed: Vec<Uuid> = client
        .pages(query.clone())
        .into_stream()
        .map_ok(|t| t.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, ids);
    let rest = client
        .pages(TaskQuery {
            cursor: Some(ids[1].to_string()),
            ..query.clone()
        })
        .collect_all()
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    rec.take();

    // An error on a later page surfaces instead of ending the list quietly.
    rec.answer(
        &format!("GET /v1/tasks?{q}&cursor={}", ids[3]),
        503,
        json!({"type": "about:blank", "title": "Service Unavailable", "status": 503, "code": "not_ready"}),
    );
    let err = client.pages(query).collect_all().await.unwrap_err();
    assert_eq!(err.code(), Some("not_ready"));
}
