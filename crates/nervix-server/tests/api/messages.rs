//! Messages and channels over HTTP: direct and channel sends, who may read what, byte-exact
//! relay, validation, idempotent replay, pages, the message quota, concurrent senders, and
//! crypto_box interoperability with PyNaCl through the API.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use nervix_client::{AgentKeys, Client, EnrollRequest, Method};
use nervix_server::bus::{Event, Frame};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{assert_field_error, Backend, TestAgent, TestApp};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    direct_messages_both_ways,
    nobody_reads_another_pairs_conversation,
    channel_membership_is_checked_on_every_read_and_send,
    payload_and_nonce_round_trip_byte_exact,
    validation_errors_name_the_field,
    idempotent_send_replays,
    history_pages_with_before,
    message_quota_gives_429,
    many_senders_to_one_channel,
    channel_changes_are_audited,
    pynacl_interop,
    send_over_the_websocket,
}

async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    client.request(method, path, body.as_ref()).await.unwrap()
}

async fn send(agent: &TestAgent, body: Value) -> (u16, Value) {
    call(&agent.client, Method::POST, "/v1/messages/send", Some(body)).await
}

/// Sends and expects 201; returns the message id.
async fn send_ok(agent: &TestAgent, body: Value) -> Uuid {
    let (status, sent) = send(agent, body).await;
    assert_eq!(status, 201, "{sent}");
    assert!(sent["created_at"].is_string(), "{sent}");
    Uuid::parse_str(sent["id"].as_str().unwrap()).unwrap()
}

/// An encrypted direct message from `from` to `to`, sealed with the SDK.
fn sealed(from: &TestAgent, to: &TestAgent, text: &str) -> Value {
    let s = from
        .keys
        .seal_for(&to.keys.encryption_public_key_b64(), text.as_bytes())
        .unwrap();
    json!({"to": to.handle, "encrypted": true, "payload": s.payload_b64, "nonce": s.nonce_b64})
}

fn plain_to_channel(channel: &str, text: &str) -> Value {
    json!({"channel": channel, "encrypted": false, "payload": STANDARD.encode(text)})
}

async fn history(agent: &TestAgent, query: &str) -> (u16, Value) {
    call(
        &agent.client,
        Method::GET,
        &format!("/v1/messages/history?{query}"),
        None,
    )
    .await
}

async fn history_items(agent: &TestAgent, query: &str) -> Vec<Value> {
    let (status, page) = history(agent, query).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

fn texts(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| {
            String::from_utf8(STANDARD.decode(m["payload"].as_str().unwrap()).unwrap())
                .unwrap_or_default()
        })
        .collect()
}

/// The plaintexts of `viewer`'s encrypted conversation with `peer` (a `crypto_box` key is
/// shared by the pair, so the viewer opens its own messages as well as the peer's).
fn opened(viewer: &TestAgent, peer: &TestAgent, items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| {
            let plain = viewer
                .keys
                .open_from(
                    &peer.keys.encryption_public_key_b64(),
                    m["payload"].as_str().unwrap(),
                    m["nonce"].as_str().unwrap(),
                )
                .unwrap();
            String::from_utf8(plain).unwrap()
        })
        .collect()
}

async fn create_channel(agent: &TestAgent, members: &[&str]) -> String {
    let (status, ch) = call(
        &agent.client,
        Method::POST,
        "/v1/channels",
        Some(json!({"name": "research", "members": members})),
    )
    .await;
    assert_eq!(status, 201, "{ch}");
    ch["id"].as_str().unwrap().to_owned()
}

/// The `message` frames published to `agent` on the server's bus: the first `want` (frames
/// are published by the outbox after the send returns, so they are awaited), then whatever
/// else arrives within a short grace period, so that an extra frame fails the caller's count.
async fn frames_for(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    agent: Uuid,
    want: usize,
) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut wait = std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Ok(Event::ToAgent {
                agent_id, frame, ..
            })) if agent_id == agent && matches!(frame, Frame::Message { .. }) => {
                out.push(frame);
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return out,
        }
        if out.len() >= want {
            wait = std::time::Duration::from_millis(200);
        }
    }
}

pub async fn direct_messages_both_ways(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("msg-alice", &[]).await;
    let b = app.enroll("msg-bob", &[]).await;
    let mut bus = app.running().state.app.bus.subscribe();

    let first = send_ok(&a, sealed(&a, &b, "hello bob")).await;
    // By UUID works as well as by handle.
    let mut reply = sealed(&b, &a, "hi alice");
    reply["to"] = json!(a.id);
    let second = send_ok(&b, reply).await;

    for (viewer, other) in [(&a, b.handle.clone()), (&b, a.id.to_string())] {
        let items = history_items(viewer, &format!("with={other}")).await;
        let ids: Vec<&str> = items.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [second.to_string(), first.to_string()], "newest first");
        let m = &items[1];
        assert_eq!(m["from"], a.id.to_string());
        assert_eq!(m["from_agent_id"], a.handle);
        assert_eq!(m["to"], b.id.to_string());
        assert_eq!(m["to_agent_id"], b.handle);
        assert!(m.get("channel").is_none(), "{m}");
        assert_eq!(m["encrypted"], true);
    }
    // Each decrypts what the other sealed.
    let items = history_items(&b, &format!("with={}", a.handle)).await;
    let from_a = &items[1];
    let opened = b
        .keys
        .open_from(
            &a.keys.encryption_public_key_b64(),
            from_a["payload"].as_str().unwrap(),
            from_a["nonce"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(opened, b"hello bob");

    // Each recipient's connections were sent the message as a frame.
    let to_b = frames_for(&mut bus, b.id, 1).await;
    assert_eq!(to_b.len(), 1, "{to_b:?}");
    match &to_b[0] {
        Frame::Message {
            id,
            from,
            to,
            payload,
            nonce,
            ..
        } => {
            assert_eq!((*id, *from, *to), (first, a.id, Some(b.id)));
            assert_eq!(payload, from_a["payload"].as_str().unwrap());
            assert_eq!(nonce.as_deref(), from_a["nonce"].as_str());
        }
        other => panic!("{other:?}"),
    }
    app.stop().await;
}

pub async fn nobody_reads_another_pairs_conversation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("pair-a", &[]).await;
    let b = app.enroll("pair-b", &[]).await;
    let c = app.enroll("pair-c", &[]).await;
    send_ok(&a, sealed(&a, &b, "secret plan")).await;
    send_ok(&b, sealed(&b, &a, "agreed")).await;
    send_ok(&c, sealed(&c, &a, "from c")).await;

    // C asking about A (or B) sees only what C itself exchanged with them.
    let with_a = history_items(&c, &format!("with={}", a.handle)).await;
    assert_eq!(with_a.len(), 1);
    assert_eq!(with_a[0]["from"], c.id.to_string());
    assert!(history_items(&c, &format!("with={}", b.id))
        .await
        .is_empty());
    // Nor does a cursor into A↔B open it.
    let ab = history_items(&a, &format!("with={}", b.handle)).await;
    let cursor = ab[0]["id"].as_str().unwrap();
    assert!(
        history_items(&c, &format!("with={}&before={cursor}", a.handle))
            .await
            .is_empty()
    );
    // A sees both of its conversations, each on its own.
    assert_eq!(opened(&a, &b, &ab), ["agreed", "secret plan"]);
    let ac = history_items(&a, &format!("with={}", c.handle)).await;
    assert_eq!(opened(&a, &c, &ac), ["from c"]);
    let (status, _) = history(&c, "with=nobody-here").await;
    assert_eq!(status, 404);
    app.stop().await;
}

pub async fn channel_membership_is_checked_on_every_read_and_send(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("ch-a", &[]).await;
    let b = app.enroll("ch-b", &[]).await;
    let c = app.enroll("ch-c", &[]).await;
    let d = app.enroll("ch-d", &[]).await;
    let mut bus = app.running().state.app.bus.subscribe();
    let ch = create_channel(&a, &[&b.handle]).await;

    send_ok(&b, plain_to_channel(&ch, "member speaking")).await;
    // Delivered to the other members, not back to the sender.
    assert_eq!(frames_for(&mut bus, a.id, 1).await.len(), 1);
    let (status, body) = send(&c, plain_to_channel(&ch, "outsider")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = history(&c, &format!("channel={ch}")).await;
    assert_eq!(status, 404);
    let (status, _) = call(&c.client, Method::GET, &format!("/v1/channels/{ch}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &c.client,
        Method::POST,
        &format!("/v1/channels/{ch}/members"),
        Some(json!({"members": [c.handle]})),
    )
    .await;
    assert_eq!(status, 404, "an outsider cannot add itself");

    // A member's view.
    let items = history_items(&a, &format!("channel={ch}")).await;
    assert_eq!(texts(&items), ["member speaking"]);
    assert_eq!(items[0]["channel"], ch.as_str());
    assert!(items[0].get("to").is_none(), "{}", items[0]);
    let (status, mine) = call(&a.client, Method::GET, "/v1/channels", None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["items"][0]["id"], ch.as_str());
    assert_eq!(mine["items"][0]["member_count"], 2);
    let (status, shown) = call(&b.client, Method::GET, &format!("/v1/channels/{ch}"), None).await;
    assert_eq!(status, 200, "{shown}");
    let handles: Vec<&str> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(handles, [a.handle.as_str(), b.handle.as_str()]);

    // B leaves: no more reading or sending.
    let (status, _) = call(
        &b.client,
        Method::POST,
        &format!("/v1/channels/{ch}/leave"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = history(&b, &format!("channel={ch}")).await;
    assert_eq!(status, 404);
    let (status, _) = send(&b, plain_to_channel(&ch, "still here?")).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &b.client,
        Method::POST,
        &format!("/v1/channels/{ch}/leave"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, mine) = call(&b.client, Method::GET, "/v1/channels", None).await;
    assert_eq!((status, mine["items"].as_array().unwrap().len()), (200, 0));
    // D was never in it.
    let (status, _) = history(&d, &format!("channel={ch}")).await;
    assert_eq!(status, 404);

    // A adds D: D reads and sends.
    let (status, added) = call(
        &a.client,
        Method::POST,
        &format!("/v1/channels/{ch}/members"),
        Some(json!({"members": [d.id]})),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["member_count"], 2);
    send_ok(&d, plain_to_channel(&ch, "thanks")).await;
    assert_eq!(
        texts(&history_items(&d, &format!("channel={ch}")).await),
        ["thanks", "member speaking"]
    );
    app.stop().await;
}

pub async fn payload_and_nonce_round_trip_byte_exact(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("bytes-a", &[]).await;
    let b = app.enroll("bytes-b", &[]).await;
    let every_byte: Vec<u8> = (0..=255u8).cycle().take(24 * 1024).collect();
    let nonce: Vec<u8> = (100..124u8).collect();
    let payload = STANDARD.encode(&every_byte);
    let nonce_b64 = STANDARD.encode(&nonce);
    send_ok(
        &a,
        json!({"to": b.handle, "encrypted": true, "payload": payload, "nonce": nonce_b64}),
    )
    .await;
    // Not encrypted, no nonce: relayed with a null nonce.
    send_ok(
        &a,
        json!({"to": b.handle, "encrypted": false, "payload": STANDARD.encode([0u8])}),
    )
    .await;
    let items = history_items(&b, &format!("with={}", a.handle)).await;
    assert_eq!(items[0]["payload"], "AA==");
    assert_eq!(items[0]["nonce"], Value::Null);
    assert_eq!(items[0]["encrypted"], false);
    assert_eq!(items[1]["payload"].as_str().unwrap(), payload);
    assert_eq!(items[1]["nonce"].as_str().unwrap(), nonce_b64);
    app.stop().await;
}

pub async fn validation_errors_name_the_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("val-a", &[]).await;
    let b = app.enroll("val-b", &[]).await;
    // An agent enrolled without an encryption key.
    let keys = AgentKeys::generate();
    let mut req = EnrollRequest::new("val-nokey", &keys);
    req.encryption_public_key = None;
    let nokey = app.enroll_request(keys, req).await;
    let ch = create_channel(&a, &[]).await;
    let nonce = STANDARD.encode([7u8; 24]);
    let ok_payload = STANDARD.encode(b"hi");

    let cases = [
        (
            json!({"to": b.handle, "encrypted": true, "payload": "not base64!", "nonce": nonce}),
            "payload",
        ),
        (
            json!({"to": b.handle, "encrypted": false, "payload": STANDARD.encode(vec![1u8; 24 * 1024 + 1])}),
            "payload",
        ),
        (
            json!({"to": b.handle, "encrypted": false, "payload": ""}),
            "payload",
        ),
        (
            json!({"to": b.handle, "encrypted": true, "payload": ok_payload, "nonce": STANDARD.encode([7u8; 23])}),
            "nonce",
        ),
        (
            json!({"to": b.handle, "encrypted": true, "payload": ok_payload}),
            "nonce",
        ),
        (
            json!({"to": b.handle, "channel": ch, "encrypted": false, "payload": ok_payload}),
            "channel",
        ),
        (json!({"encrypted": false, "payload": ok_payload}), "to"),
        (
            json!({"channel": "not-a-uuid", "encrypted": false, "payload": ok_payload}),
            "channel",
        ),
        (json!({"to": b.handle, "payload": ok_payload}), "encrypted"),
    ];
    for (body, field) in cases {
        let (status, problem) = send(&a, body.clone()).await;
        assert_field_error(status, &problem, field);
        assert_eq!(problem["code"], "validation_failed", "{body}");
    }
    let (status, problem) = send(
        &a,
        json!({"to": "no-such-agent", "encrypted": true, "payload": ok_payload, "nonce": nonce}),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = send(
        &a,
        json!({"to": nokey.handle, "encrypted": true, "payload": ok_payload, "nonce": nonce}),
    )
    .await;
    assert_field_error(status, &problem, "to");
    assert_eq!(problem["code"], "no_encryption_key");
    // Without encryption it may still be written to.
    send_ok(
        &a,
        json!({"to": nokey.handle, "encrypted": false, "payload": ok_payload}),
    )
    .await;

    let (status, problem) = history(&a, "").await;
    assert_field_error(status, &problem, "with");
    let (status, problem) = history(&a, &format!("with={}&channel={ch}", b.handle)).await;
    assert_field_error(status, &problem, "channel");
    let (status, problem) = history(&a, "with=").await;
    assert_field_error(status, &problem, "with");
    let (status, problem) = history(&a, "channel=xyz").await;
    assert_field_error(status, &problem, "channel");
    let (status, problem) = history(&a, &format!("with={}&before=zzz", b.handle)).await;
    assert_field_error(status, &problem, "before");

    let (status, problem) = call(
        &a.client,
        Method::POST,
        "/v1/channels",
        Some(json!({"name": "   ", "members": []})),
    )
    .await;
    assert_field_error(status, &problem, "name");
    let (status, problem) = call(
        &a.client,
        Method::POST,
        "/v1/channels",
        Some(json!({"name": "ok", "members": [b.handle, "ghost-agent"]})),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "members[1]", "{problem}");
    let (status, problem) = call(
        &a.client,
        Method::POST,
        &format!("/v1/channels/{ch}/members"),
        Some(json!({"members": []})),
    )
    .await;
    assert_field_error(status, &problem, "members");
    app.stop().await;
}

pub async fn idempotent_send_replays(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("idem-a", &[]).await;
    let b = app.enroll("idem-b", &[]).await;
    let body = sealed(&a, &b, "exactly once");
    let keyed = |body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        let client = a.client.clone();
        async move {
            client
                .request_raw(
                    Method::POST,
                    "/v1/messages/send",
                    &[("Idempotency-Key", "send-1")],
                    Some(bytes),
                )
                .await
                .unwrap()
        }
    };
    let first = keyed(&body).await;
    assert_eq!(first.status, 201);
    let again = keyed(&body).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json(), first.json(), "the first response, replayed");
    // The same request spelled differently is the same request.
    let mut respelled = body.clone();
    respelled["nonce"] = json!(format!(" {} ", body["nonce"].as_str().unwrap()));
    respelled["channel"] = Value::Null;
    assert_eq!(keyed(&respelled).await.json(), first.json());
    let other = keyed(&sealed(&a, &b, "something else")).await;
    assert_eq!(other.status, 422);
    assert_eq!(other.json()["code"], "idempotency_key_reused");
    // Concurrent duplicates under a fresh key: one message, one answer for all.
    let body = sealed(&a, &b, "raced");
    let bytes = serde_json::to_vec(&body).unwrap();
    let racers = (0..6).map(|_| {
        let (client, bytes) = (a.client.clone(), bytes.clone());
        async move {
            client
                .request_raw(
                    Method::POST,
                    "/v1/messages/send",
                    &[("Idempotency-Key", "send-2")],
                    Some(bytes),
                )
                .await
                .unwrap()
        }
    });
    let answers = futures::future::join_all(racers).await;
    for r in &answers {
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json(), answers[0].json());
    }
    let items = history_items(&b, &format!("with={}", a.handle)).await;
    assert_eq!(items.len(), 2, "each message stored once");
    app.stop().await;
}

pub async fn history_pages_with_before(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("page-a", &[]).await;
    let b = app.enroll("page-b", &[]).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        sent.push(send_ok(from, sealed(from, to, &format!("m{i}"))).await);
    }
    let mut seen = Vec::new();
    let mut query = format!("with={}&limit=2", b.handle);
    let mut pages = 0;
    loop {
        let (status, page) = history(&a, &query).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(opened(&a, &b, items));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("with={}&limit=2&before={c}", b.handle),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["m4", "m3", "m2", "m1", "m0"]);
    app.stop().await;
}

pub async fn message_quota_gives_429(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.rate_limit_messages_per_minute = 3).await
    else {
        return;
    };
    let a = app.enroll("quota-a", &[]).await;
    let b = app.enroll("quota-b", &[]).await;
    for i in 0..3 {
        send_ok(&a, sealed(&a, &b, &format!("{i}"))).await;
    }
    let over = a
        .client
        .request_raw(
            Method::POST,
            "/v1/messages/send",
            &[],
            Some(serde_json::to_vec(&sealed(&a, &b, "one too many")).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(over.status, 429);
    assert_eq!(over.json()["code"], "rate_limited");
    let retry: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another agent's quota is its own.
    send_ok(&b, sealed(&b, &a, "my turn")).await;
    assert_eq!(
        history_items(&b, &format!("with={}", a.handle)).await.len(),
        4
    );
    app.stop().await;
}

pub async fn many_senders_to_one_channel(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let owner = app.enroll("crowd-owner", &[]).await;
    let senders = app.enroll_many("crowd", 8, &[]).await;
    let handles: Vec<&str> = senders.iter().map(|s| s.handle.as_str()).collect();
    let ch = create_channel(&owner, &handles).await;
    let sends = senders.iter().enumerate().map(|(i, s)| {
        let ch = ch.clone();
        async move {
            let mut ids = Vec::new();
            for j in 0..6 {
                ids.push(send_ok(s, plain_to_channel(&ch, &format!("{i}-{j}"))).await);
            }
            ids
        }
    });
    let sent: Vec<Uuid> = futures::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut seen = Vec::new();
    let mut query = format!("channel={ch}&limit=7");
    loop {
        let (status, page) = history(&owner, &query).await;
        assert_eq!(status, 200, "{page}");
        for m in page["items"].as_array().unwrap() {
            seen.push(Uuid::parse_str(m["id"].as_str().unwrap()).unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("channel={ch}&limit=7&before={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 48, "every message exactly once");
    let unique: HashSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique, sent.iter().copied().collect::<HashSet<_>>());
    app.stop().await;
}

pub async fn channel_changes_are_audited(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("audit-a", &[]).await;
    let b = app.enroll("audit-b", &[]).await;
    let ch = create_channel(&a, &[]).await;
    let (status, _) = call(
        &a.client,
        Method::POST,
        &format!("/v1/channels/{ch}/members"),
        Some(json!({"members": [b.handle]})),
    )
    .await;
    assert_eq!(status, 200);
    send_ok(&b, plain_to_channel(&ch, "not for the audit log")).await;
    let (status, _) = call(
        &b.client,
        Method::POST,
        &format!("/v1/channels/{ch}/leave"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for (action, actor, details) in [
        (
            "channel.create",
            &a,
            json!({"name": "research", "members": []}),
        ),
        ("channel.members.add", &a, json!({"added": [b.id]})),
        ("channel.leave", &b, json!({})),
    ] {
        let (status, log) = call(
            &app.admin,
            Method::GET,
            &format!("/v1/admin/audit?action={action}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{log}");
        let items = log["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{action}: {log}");
        assert_eq!(items[0]["target"], ch.as_str());
        assert_eq!(items[0]["actor_id"], actor.id.to_string());
        assert_eq!(items[0]["details"], details, "{action}");
    }
    let (_, all) = call(&app.admin, Method::GET, "/v1/admin/audit?limit=200", None).await;
    let text = all.to_string();
    assert!(!text.contains(&STANDARD.encode("not for the audit log")));
    app.stop().await;
}

// ---- crypto_box interoperability with PyNaCl ---------------------------------------------------

/// The PyNaCl side (`crates/nervix-client/tests/pynacl_box.py`).
fn pynacl_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nervix-client/tests/pynacl_box.py")
}

fn has_pynacl(python: &std::path::Path) -> bool {
    Command::new(python)
        .args(["-c", "import nacl.public"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python with PyNaCl: `python3` if it has it, else a virtualenv under the target folder,
/// created (and PyNaCl installed from PyPI) on first use. `None` (the test skips) when there
/// is none and none can be made, except under `CI=true`, where that fails the test.
fn python_with_pynacl() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let system = PathBuf::from("python3");
        if has_pynacl(&system) {
            return Ok(system);
        }
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pynacl-venv");
        let python = venv.join("bin/python");
        if has_pynacl(&python) {
            return Ok(python);
        }
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "pynacl",
        ]))?;
        if has_pynacl(&python) {
            Ok(python)
        } else {
            Err("PyNaCl did not import after installing it".to_owned())
        }
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs Python with PyNaCl for the crypto_box interop test: {why}"
            );
            eprintln!("SKIP pynacl_interop: no Python with PyNaCl ({why})");
            None
        }
    }
}

fn pynacl(python: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(python)
        .arg(pynacl_script())
        .args(args)
        .output()
        .expect("run pynacl_box.py");
    assert!(
        out.status.success(),
        "pynacl_box.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pynacl_box.py prints JSON")
}

pub async fn pynacl_interop(backend: Backend) {
    let Some(python) = tokio::task::spawn_blocking(python_with_pynacl)
        .await
        .unwrap()
    else {
        return;
    };
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    // The Python agent's X25519 key pair is PyNaCl's; it enrolls through the SDK with that
    // secret, which must derive the same public key.
    let py_keys = pynacl(&python, &["keygen"]);
    let py_secret: [u8; 32] = STANDARD
        .decode(py_keys["secret"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let py_public = py_keys["public"].as_str().unwrap().to_owned();
    let keys = AgentKeys::from_secret_bytes(&rand_seed(), &py_secret);
    assert_eq!(keys.encryption_public_key_b64(), py_public);
    let req = EnrollRequest::new("py-agent", &keys);
    let py = app.enroll_request(keys, req).await;
    let rust = app.enroll("rust-agent", &[]).await;
    let rust_public = rust.keys.encryption_public_key_b64();
    // Both sides take the peer's key from its public profile, as a real agent would.
    let (_, profile) = call(
        &py.client,
        Method::GET,
        &format!("/v1/agents/{}", rust.handle),
        None,
    )
    .await;
    assert_eq!(profile["encryption_public_key"], rust_public.as_str());

    // PyNaCl → API → Rust SDK.
    let text = "from PyNaCl, via Nervix: ünïcødé & binary \u{0}\u{1}";
    let boxed = pynacl(
        &python,
        &[
            "seal",
            py_keys["secret"].as_str().unwrap(),
            &rust_public,
            &STANDARD.encode(text),
        ],
    );
    send_ok(
        &py,
        json!({"to": rust.handle, "encrypted": true, "payload": boxed["payload"], "nonce": boxed["nonce"]}),
    )
    .await;
    let got = &history_items(&rust, &format!("with={}", py.handle)).await[0];
    let opened = rust
        .keys
        .open_from(
            &py_public,
            got["payload"].as_str().unwrap(),
            got["nonce"].as_str().unwrap(),
        )
        .expect("the Rust SDK opens PyNaCl's box");
    assert_eq!(opened, text.as_bytes());

    // Rust SDK → API → PyNaCl.
    let reply = "from the Rust SDK, via Nervix";
    send_ok(&rust, sealed_to(&rust, &py.handle, &py_public, reply)).await;
    let got = &history_items(&py, &format!("with={}", rust.handle)).await[0];
    let opened = pynacl(
        &python,
        &[
            "open",
            py_keys["secret"].as_str().unwrap(),
            &rust_public,
            got["payload"].as_str().unwrap(),
            got["nonce"].as_str().unwrap(),
        ],
    );
    assert_eq!(
        STANDARD
            .decode(opened["plaintext"].as_str().unwrap())
            .unwrap(),
        reply.as_bytes()
    );
    app.stop().await;
}

/// A sealed direct message to a recipient known by handle and encryption key.
fn sealed_to(from: &TestAgent, handle: &str, public: &str, text: &str) -> Value {
    let s = from.keys.seal_for(public, text.as_bytes()).unwrap();
    json!({"to": handle, "encrypted": true, "payload": s.payload_b64, "nonce": s.nonce_b64})
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    seed
}

/// `message.send` over the agent's WebSocket: the same operation as the REST call (reply
/// `message.sent` with the id, delivery as a stored `message` frame, idempotency shared with
/// REST), and its refusals come back as `error` frames on a connection that stays open.
pub async fn send_over_the_websocket(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let a = app.enroll("ws-sender", &[]).await;
    let b = app.enroll("ws-recipient", &[]).await;
    let mut ws_a = app.ws(&a.token, None).await;
    let mut ws_b = app.ws(&b.token, None).await;

    let body = sealed(&a, &b, "over the socket");
    ws_a.send_json(&json!({"type": "message.send", "data": body, "idempotency_key": "ws-1"}))
        .await;
    let reply = ws_a.reply().await;
    assert_eq!(reply["type"], "message.sent", "{reply}");
    let id = reply["data"]["id"].as_str().unwrap().to_owned();

    // Other stored frames (a reputation update, say) may come first.
    let frame = loop {
        let f = ws_b.stored().await;
        if f["type"] == "message" {
            break f;
        }
    };
    assert_eq!(frame["data"]["id"], id.as_str());
    assert_eq!(frame["data"]["from"], a.id.to_string());
    let opened = b
        .keys
        .open_from(
            &a.keys.encryption_public_key_b64(),
            frame["data"]["payload"].as_str().unwrap(),
            frame["data"]["nonce"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(opened, b"over the socket");

    // The same key over REST replays the socket's send instead of sending again.
    let (status, replay) = app
        .client_with(&a.token)
        .request_raw(
            Method::POST,
            "/v1/messages/send",
            &[("idempotency-key", "ws-1")],
            Some(body.to_string().into_bytes()),
        )
        .await
        .map(|r| (r.status, r.json()))
        .unwrap();
    assert_eq!(status, 201, "{replay}");
    assert_eq!(replay["id"], id.as_str());
    assert_eq!(
        history_items(&b, &format!("with={}", a.handle)).await.len(),
        1
    );

    // Refusals are error frames naming the problem; the connection carries on.
    let mut nobody = sealed(&a, &b, "lost");
    nobody["to"] = json!("no-such-agent");
    ws_a.send_json(&json!({"type": "message.send", "data": nobody}))
        .await;
    let err = ws_a.reply().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["data"]["code"], "not_found", "{err}");
    let mut bad = sealed(&a, &b, "bad nonce");
    bad["nonce"] = json!("AAAA");
    ws_a.send_json(&json!({"type": "message.send", "data": bad}))
        .await;
    let err = ws_a.reply().await;
    assert_eq!(err["data"]["code"], "validation_failed", "{err}");
    assert_eq!(err["data"]["errors"][0]["field"], "nonce", "{err}");
    ws_a.send_json(&json!({"type": "ping"})).await;
    assert_eq!(ws_a.reply().await["type"], "pong");
    app.stop().await;
}
