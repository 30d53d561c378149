//! The agent's WebSocket (`GET /v1/agent/connect`) with a stock client: authentication and its
//! failures, the resumable stream (no gap, no duplicate, also while events arrive during the
//! replay), backpressure, several connections per agent, announcements, notifications by REST
//! and by frame, ping/pong and presence.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use nervix_client::{Client, Method};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{
    id_of, task_body, tungstenite, Backend, TestAgent, TestApp, Ws, ANSWER, FRAME_WAIT,
};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    auth_by_header_or_first_frame,
    auth_failures_close_with_a_reason,
    lost_access_closes_the_connection,
    slow_consumer_is_closed_and_others_keep_receiving,
    lagging_client_is_closed,
    resume_has_no_gap_and_no_duplicate,
    every_connection_of_an_agent_receives,
    announcements_reach_connected_and_offline_agents,
    notifications_by_rest_and_by_frame,
    frames_from_the_agent,
    frames_count_against_the_agents_rate,
    connected_agents_are_online,
    silent_clients_are_closed,
    operations_notify_their_agents,
    level_changes_are_notified,
    shutdown_closes_connections,
    retention_prunes_old_events,
}

/// Fast timings, so failures show within seconds.
async fn start(backend: Backend) -> Option<TestApp> {
    TestApp::start_with(backend, |c| {
        c.ws.auth_timeout = Duration::from_millis(400);
        c.ws.ping_interval = Duration::from_millis(200);
        c.ws.auth_recheck = Duration::from_millis(300);
    })
    .await
}

async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    client.request(method, path, body.as_ref()).await.unwrap()
}

async fn announce(app: &TestApp, title: &str) -> Value {
    let (status, a) = call(
        &app.admin,
        Method::POST,
        "/v1/admin/announcements",
        Some(json!({"title": title, "body": format!("About {title}.")})),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    a
}

fn seq(frame: &Value) -> i64 {
    frame["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("no seq in {frame}"))
}

/// A connection that sent no header and waits for its `auth` frame.
async fn bare(app: &TestApp, since: Option<i64>) -> Ws {
    app.ws_try(None, since, None).await.expect("upgrade")
}

async fn auth_by_header_or_first_frame(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-auth", &[]).await;

    let mut by_header = app.ws_try(Some(&a.token), None, None).await.unwrap();
    let ready = by_header.ready().await;
    assert_eq!(ready["data"]["agent_id"], a.id.to_string(), "{ready}");
    // Where the stream starts: the agent's last event (its first reputation update, say).
    let start = ready["data"]["seq"].as_i64().unwrap();
    let stored = app
        .running()
        .state
        .app
        .store
        .last_event_seq(a.id)
        .await
        .unwrap();
    assert!((0..=stored).contains(&start), "{ready}");

    let mut by_frame = bare(&app, None).await;
    by_frame
        .send_json(&json!({"type": "auth", "data": {"token": a.token, "since": 0}}))
        .await;
    let ready = by_frame.ready().await;
    assert_eq!(ready["data"]["agent_id"], a.id.to_string(), "{ready}");

    // A bad header token is refused before the upgrade, as on every route.
    match app.ws_try(Some("not-a-token"), None, None).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        Err(e) => panic!("expected a 401, got {e}"),
        Ok(_) => panic!("expected a 401, got an upgrade"),
    }
    // A negative `since` is a field error.
    match app.ws_try(Some(&a.token), Some(-1), None).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 422),
        Err(e) => panic!("expected a 422, got {e}"),
        Ok(_) => panic!("expected a 422, got an upgrade"),
    }
    // Plain HTTP is told to upgrade.
    let r = app
        .client_with(&a.token)
        .request_raw(Method::GET, "/v1/agent/connect", &[], None)
        .await
        .unwrap();
    let problem = crate::common::assert_problem(&r, 426);
    assert_eq!(problem["code"], "upgrade_required");
    app.stop().await;
}

async fn auth_failures_close_with_a_reason(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-fail", &[]).await;

    // No auth frame: closed once the wait is over, with a reason.
    let t0 = Instant::now();
    let mut silent = bare(&app, None).await;
    let (code, reason, _) = silent.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("timed out"), "{reason}");
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t0.elapsed()
    );

    // A late auth frame does not count.
    let mut late = bare(&app, None).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The server may have closed already: the frame goes nowhere.
    let _ = futures::SinkExt::send(
        &mut late.stream,
        tungstenite::Message::text(json!({"type": "auth", "data": {"token": a.token}}).to_string()),
    )
    .await;
    let (code, reason, frames) = late.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("timed out"), "{reason}");
    assert!(frames.is_empty(), "{frames:?}");

    // A bad token.
    let mut bad = bare(&app, None).await;
    bad.send_json(&json!({"type": "auth", "data": {"token": "nope"}}))
        .await;
    let (code, reason, _) = bad.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(!reason.is_empty());

    // A first frame that is not auth.
    let mut rude = bare(&app, None).await;
    rude.send_json(&json!({"type": "ping", "data": {}})).await;
    let (code, reason, _) = rude.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("expected an auth frame"), "{reason}");

    // An auth frame without a token.
    let mut shapeless = bare(&app, None).await;
    shapeless
        .send_json(&json!({"type": "auth", "data": {"since": 3}}))
        .await;
    let (code, reason, _) = shapeless.closed().await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.contains("token"), "{reason}");

    // A revoked token.
    let revoked_token = app.enroll("ws-fail-2", &[]).await;
    revoked_token.client.revoke().await.unwrap();
    let mut revoked = bare(&app, None).await;
    revoked
        .send_json(&json!({"type": "auth", "data": {"token": revoked_token.token}}))
        .await;
    let (code, reason, _) = revoked.closed().await;
    assert_eq!((code, reason.as_str()), (4401, "token has been revoked"));
    app.stop().await;
}

async fn lost_access_closes_the_connection(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.ws.ping_interval = Duration::from_millis(200);
        // Long enough that only the bus can explain a prompt close below.
        c.ws.auth_recheck = Duration::from_secs(3600);
    })
    .await
    else {
        return;
    };
    // Revoked while connected: closed at once (the revocation is announced on the bus).
    let a = app.enroll("ws-revoke", &[]).await;
    let mut ws = app.ws(&a.token, None).await;
    let t0 = Instant::now();
    a.client.revoke().await.unwrap();
    let (code, reason, _) = ws.closed().await;
    assert_eq!((code, reason.as_str()), (4401, "token has been revoked"));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // Suspended while connected.
    let b = app.enroll("ws-suspend", &[]).await;
    let mut ws = app.ws(&b.token, None).await;
    let (status, v) = call(
        &app.admin,
        Method::POST,
        &format!("/v1/admin/agents/{}/suspend", b.id),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (code, reason, _) = ws.closed().await;
    assert_eq!(code, 4403, "{reason}");
    app.stop().await;

    // The periodic check: a token that expires while connected.
    let Some(app) = TestApp::start_with(backend, |c| {
        c.ws.ping_interval = Duration::from_millis(200);
        c.ws.auth_recheck = Duration::from_millis(300);
        c.token_ttl = chrono::Duration::seconds(2);
    })
    .await
    else {
        return;
    };
    let c = app.enroll("ws-expire", &[]).await;
    let mut ws = app.ws(&c.token, None).await;
    let (code, reason, _) = ws.closed().await;
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    app.stop().await;
}

/// Stores and publishes `n` notifications of about `size` bytes for each of `agents`, 20 at a
/// time, `pace` apart.
async fn flood_paced(app: &TestApp, agents: &[Uuid], n: usize, size: usize, pace: Duration) {
    let state = &app.running().state.app;
    let filler = "x".repeat(size);
    for chunk in 0..n.div_ceil(20) {
        let mut frames = Vec::new();
        for i in chunk * 20..((chunk + 1) * 20).min(n) {
            for agent in agents {
                frames.push((
                    *agent,
                    nervix_server::bus::Frame::Notification {
                        id: Uuid::now_v7(),
                        kind: nervix_core::notice::NotificationKind::TaskExpired,
                        title: format!("flood {i}"),
                        body: filler.clone(),
                        data: json!({"i": i}),
                        created_at: Utc::now(),
                    },
                ));
            }
        }
        nervix_server::bus::deliver(state.store.as_ref(), state.bus.as_ref(), frames)
            .await
            .unwrap();
        tokio::time::sleep(pace).await;
    }
}

/// [`flood_paced`] as fast as storage goes.
async fn flood(app: &TestApp, agents: &[Uuid], n: usize, size: usize) {
    flood_paced(app, agents, n, size, Duration::ZERO).await;
}

/// The seqs of the stored frames among `frames`.
fn seqs_of(frames: &[Value]) -> Vec<i64> {
    frames.iter().filter_map(|f| f["seq"].as_i64()).collect()
}

/// The `since=` a slow-consumer close reason names.
fn since_in(reason: &str) -> i64 {
    reason
        .rsplit("since=")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no since in {reason:?}"))
}

/// Reads `ws` until it has `n` notifications; returns every stored frame's seq, in order.
async fn read_notifications(ws: &mut Ws, n: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut got = 0;
    while got < n {
        let f = ws.stored().await;
        if f["type"] == "notification" {
            got += 1;
        }
        seqs.push(seq(&f));
    }
    seqs
}

/// Asserts that `seqs` is `first, first + 1, …`.
fn assert_contiguous(seqs: &[i64], first: i64) {
    assert_eq!(
        seqs,
        (first..first + seqs.len() as i64).collect::<Vec<_>>(),
        "gap or duplicate"
    );
}

/// A flood of 300 frames of 32 KiB each for a client that stopped reading (on a small
/// receive buffer) and one that reads, in bursts larger than the 16-frame queue: far more than
/// the socket and the queue hold. The reader keeps up and stays; the other is closed when a
/// write waits longer than the write timeout, and resumes from the `since` its close names.
async fn slow_consumer_is_closed_and_others_keep_receiving(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.ws.queue = 16;
        c.ws.write_timeout = Duration::from_secs(1);
    })
    .await
    else {
        return;
    };
    let stuck_agent = app.enroll("ws-stuck", &[]).await;
    let fast_agent = app.enroll("ws-fast", &[]).await;
    let mut stuck = app
        .ws_try(Some(&stuck_agent.token), None, Some(4096))
        .await
        .unwrap();
    let first = stuck.ready().await["data"]["seq"].as_i64().unwrap() + 1;
    let mut fast = app.ws(&fast_agent.token, None).await;

    const N: usize = 300;
    let fast_reader = tokio::spawn(async move {
        let seqs = read_notifications(&mut fast, N).await;
        (fast, seqs)
    });
    flood(&app, &[stuck_agent.id, fast_agent.id], N, 32 * 1024).await;
    let (mut fast, seqs) = fast_reader.await.unwrap();
    assert_contiguous(&seqs, seqs[0]);
    let metrics = app.running().state.app.metrics.clone();
    crate::common::eventually(Duration::from_secs(15), "a slow-consumer close", || {
        let m = metrics.clone();
        async move { (m.ws_slow_consumer_closes.get() >= 1).then_some(()) }
    })
    .await;

    // The stuck client reads now: what reached it, then the close naming where to resume.
    let (code, reason, frames) = stuck.closed().await;
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("not reading"), "{reason}");
    let got = seqs_of(&frames);
    assert_contiguous(&got, first);
    assert!(got.len() < N, "it was not stuck after all");
    let last = *got.last().unwrap_or(&(first - 1));
    assert_eq!(since_in(&reason), last, "{reason}");
    // Resuming from there delivers the rest, in order.
    let mut again = app.ws(&stuck_agent.token, Some(last)).await;
    let rest = read_notifications(
        &mut again,
        N - frames
            .iter()
            .filter(|f| f["type"] == "notification")
            .count(),
    )
    .await;
    assert_contiguous(&rest, last + 1);
    // The reader is still connected.
    fast.send_json(&json!({"type": "ping"})).await;
    assert_eq!(fast.reply().await["type"], "pong");
    app.stop().await;
}

/// A client that reads, but slower than its frames come, is closed once it is more than
/// `max_lag` frames behind what it was handed (found when its queue overflows), having got a
/// contiguous prefix; a reader that keeps up stays.
async fn lagging_client_is_closed(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.ws.queue = 16;
        c.ws.max_lag = 100;
    })
    .await
    else {
        return;
    };
    let slow_agent = app.enroll("ws-lag", &[]).await;
    let fast_agent = app.enroll("ws-keep-up", &[]).await;
    let mut slow = app
        .ws_try(Some(&slow_agent.token), None, Some(4096))
        .await
        .unwrap();
    let first = slow.ready().await["data"]["seq"].as_i64().unwrap() + 1;
    let mut fast = app.ws(&fast_agent.token, None).await;
    const N: usize = 400;
    let fast_reader = tokio::spawn(async move {
        let seqs = read_notifications(&mut fast, N).await;
        (fast, seqs)
    });
    let slow_reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match slow.message(FRAME_WAIT).await {
                Ok(Some(tungstenite::Message::Text(t))) => {
                    frames.push(serde_json::from_str::<Value>(t.as_str()).unwrap());
                }
                Ok(Some(tungstenite::Message::Close(Some(c)))) => {
                    return (u16::from(c.code), c.reason.as_str().to_owned(), frames);
                }
                other => panic!("the slow reader got {other:?}"),
            }
        }
    });
    // 200 frames a second: ten times what the slow reader takes, nothing for the other.
    flood_paced(
        &app,
        &[slow_agent.id, fast_agent.id],
        N,
        32 * 1024,
        Duration::from_millis(100),
    )
    .await;
    let (mut fast, seqs) = fast_reader.await.unwrap();
    assert_contiguous(&seqs, seqs[0]);
    let (code, reason, frames) = slow_reader.await.unwrap();
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("too far behind"), "{reason}");
    let got = seqs_of(&frames);
    assert_contiguous(&got, first);
    assert!(got.len() < N, "it kept up after all");
    assert_eq!(
        since_in(&reason),
        *got.last().unwrap_or(&(first - 1)),
        "{reason}"
    );
    fast.send_json(&json!({"type": "ping"})).await;
    assert_eq!(fast.reply().await["type"], "pong");
    app.stop().await;
}

/// Reads stored frames from `ws` into `got` as (seq, announcement id or the frame's type)
/// until `n` more announcements came.
async fn take(ws: &mut Ws, got: &mut Vec<(i64, String)>, n: usize) {
    let mut announcements = 0;
    while announcements < n {
        let f = tokio::time::timeout(FRAME_WAIT, ws.stored())
            .await
            .unwrap_or_else(|_| panic!("stuck after {} frames", got.len()));
        if f["type"] == "announcement" {
            announcements += 1;
            got.push((seq(&f), f["data"]["id"].as_str().unwrap().to_owned()));
        } else {
            got.push((seq(&f), f["type"].as_str().unwrap().to_owned()));
        }
    }
}

fn announcements_in(got: &[(i64, String)]) -> usize {
    got.iter().filter(|g| Uuid::parse_str(&g.1).is_ok()).count()
}

/// Announcements posted by several writers while the agent reads, disconnects, and
/// reconnects with `since`: at once, and again after more than a page of events went by,
/// with the writers' second round running during the replay. Every one arrives exactly once,
/// in `seq` order, without a hole.
async fn resume_has_no_gap_and_no_duplicate(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-resume", &[]).await;
    const WRITERS: usize = 4;
    const FIRST: usize = 75;
    const SECOND: usize = 30;
    let total = (WRITERS * (FIRST + SECOND)) as i64;
    let second_round = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let admin = app.admin.clone();
            let second_round = second_round.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..FIRST + SECOND {
                    if i == FIRST {
                        second_round.acquire().await.unwrap().forget();
                    }
                    let (status, v) = admin
                        .request(
                            Method::POST,
                            "/v1/admin/announcements",
                            Some(&json!({"title": format!("w{w} #{i}"), "body": "resume test"})),
                        )
                        .await
                        .unwrap();
                    assert_eq!(status, 201, "{v}");
                    ids.push(v["id"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();

    let mut got: Vec<(i64, String)> = Vec::new();
    let mut ws = app.ws(&a.token, Some(0)).await;
    take(&mut ws, &mut got, 40).await;
    drop(ws);
    // Reconnect at once, while the writers go on.
    let mut ws = app.ws(&a.token, Some(got.last().unwrap().0)).await;
    take(&mut ws, &mut got, 40).await;
    drop(ws);
    // Stay away until the first round is stored (more than a page of events waiting), then
    // let the second round go and resume: its frames arrive while the replay runs.
    let store = app.running().state.app.store.clone();
    let first_round = (WRITERS * FIRST) as i64;
    crate::common::eventually(Duration::from_secs(60), "the first round", || {
        let store = store.clone();
        async move { (store.last_event_seq(a.id).await.unwrap() >= first_round).then_some(()) }
    })
    .await;
    let behind = store.last_event_seq(a.id).await.unwrap() - got.last().unwrap().0;
    assert!(behind > 200, "a backlog of more than a page: {behind}");
    second_round.add_permits(WRITERS);
    let mut ws = app.ws(&a.token, Some(got.last().unwrap().0)).await;
    let left = total as usize - announcements_in(&got);
    take(&mut ws, &mut got, left).await;
    let mut posted = HashSet::new();
    for w in writers {
        posted.extend(w.await.unwrap());
    }
    let seqs: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "gap or duplicate"
    );
    let received: HashSet<String> = got
        .into_iter()
        .map(|g| g.1)
        .filter(|id| Uuid::parse_str(id).is_ok())
        .collect();
    assert_eq!(received.len(), total as usize);
    assert_eq!(received, posted);
    // Nothing more is coming.
    let more = ws.drain(Duration::from_millis(300)).await;
    assert!(more.iter().all(|f| f["type"] != "announcement"), "{more:?}");
    app.stop().await;
}

async fn every_connection_of_an_agent_receives(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-multi", &[]).await;
    let b = app.enroll("ws-other", &[]).await;
    let mut a1 = app.ws(&a.token, None).await;
    let mut a2 = app.ws(&a.token, None).await;
    let mut b1 = app.ws(&b.token, None).await;
    let ann = announce(&app, "to all").await;
    for ws in [&mut a1, &mut a2, &mut b1] {
        let f = ws.next_of("announcement").await;
        assert_eq!(f["data"]["id"], ann["id"]);
    }
    // A frame for one agent reaches each of its connections, and no one else.
    flood(&app, &[a.id], 1, 10).await;
    let f1 = a1.next_of("notification").await;
    let f2 = a2.next_of("notification").await;
    assert_eq!(f1, f2);
    let others = b1.drain(Duration::from_millis(300)).await;
    assert!(
        others.iter().all(|f| f["type"] != "notification"),
        "{others:?}"
    );
    assert_eq!(app.running().state.hub.connections(), 3);
    drop(a1);
    crate::common::eventually(Duration::from_secs(5), "the connection to go", || async {
        (app.running().state.hub.connections() == 2).then_some(())
    })
    .await;
    app.stop().await;
}

async fn announcements_reach_connected_and_offline_agents(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let online = app.enroll("ws-online", &[]).await;
    let offline = app.enroll("ws-offline", &[]).await;
    let mut ws = app.ws(&online.token, None).await;
    let ann = announce(&app, "Maintenance").await;
    assert_eq!(ann["title"], "Maintenance");
    assert!(ann["recipients"].as_u64().unwrap() >= 3, "{ann}");
    let f = ws.next_of("announcement").await;
    assert!(seq(&f) >= 1);
    assert_eq!(
        f["data"],
        json!({"id": ann["id"], "title": "Maintenance", "body": "About Maintenance.", "created_at": ann["created_at"]})
    );

    // The offline agent gets it when it connects with `since`...
    let mut late = app.ws(&offline.token, Some(0)).await;
    let f = late.next_of("announcement").await;
    assert_eq!(f["data"]["id"], ann["id"]);
    // ...and without `since` only what comes next.
    let mut live = app.ws(&offline.token, None).await;
    live.send_json(&json!({"type": "ping"})).await;
    loop {
        let f = live.frame().await;
        assert_ne!(f["type"], "announcement", "{f}");
        if f["type"] == "pong" {
            break;
        }
    }

    // Validated, admin only, audited.
    let (status, p) = call(
        &app.admin,
        Method::POST,
        "/v1/admin/announcements",
        Some(json!({"title": " ", "body": "x".repeat(10_001)})),
    )
    .await;
    assert_eq!(status, 422, "{p}");
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["title", "body"]);
    let (status, _) = call(
        &online.client,
        Method::POST,
        "/v1/admin/announcements",
        Some(json!({"title": "t", "body": "b"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, audit) = call(
        &app.admin,
        Method::GET,
        "/v1/admin/audit?action=admin.announce",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    app.stop().await;
}

/// Claims `task` and submits `content`; returns the submit response.
async fn claim_and_submit(agent: &TestAgent, task: Uuid, content: &str) -> Value {
    let (s, v) = call(
        &agent.client,
        Method::POST,
        &format!("/v1/tasks/{task}/claim"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "claim: {v}");
    let (s, v) = call(
        &agent.client,
        Method::POST,
        &format!("/v1/tasks/{task}/submit"),
        Some(json!({"submission_data": {"content": content}})),
    )
    .await;
    assert_eq!(s, 202, "submit: {v}");
    v
}

async fn notifications_by_rest_and_by_frame(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-notes", &["writing"]).await;
    let other = app.enroll("ws-nosy", &[]).await;
    let mut ws = app.ws(&a.token, None).await;

    // Submission feedback: accepted, with the score and the checks' feedback.
    let t = app
        .admin_post(task_body("Write the intro", "10.00", &["writing"]))
        .await;
    let submitted = claim_and_submit(&a, id_of(&t), ANSWER).await;
    // The submit's frames come in the order it produced them: the task's update and the
    // earning, then the notification.
    let mut kinds = Vec::new();
    let n = loop {
        let f = ws.stored().await;
        kinds.push(f["type"].as_str().unwrap().to_owned());
        if f["type"] == "notification" {
            break f;
        }
    };
    let at = |k: &str| kinds.iter().rposition(|x| x == k);
    assert!(
        at("task_update") < at("earning") && at("earning") < at("notification"),
        "{kinds:?}"
    );
    let data = &n["data"];
    assert_eq!(data["kind"], "submission_accepted", "{n}");
    assert!(data["title"].as_str().unwrap().contains("Write the intro"));
    assert_eq!(data["body"], submitted["submission"]["feedback"], "{n}");
    assert_eq!(data["data"]["task_id"], t["id"]);
    assert_eq!(
        data["data"]["quality_score"],
        submitted["submission"]["quality_score"]
    );
    assert!(data["data"]["checks"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));
    let accepted_id = data["id"].as_str().unwrap().to_owned();

    // Rejected work is notified too.
    let t2 = app
        .admin_post(task_body("Write the outro", "10.00", &["writing"]))
        .await;
    claim_and_submit(&a, id_of(&t2), "no").await;
    let n2 = ws.next_of("notification").await;
    assert_eq!(n2["data"]["kind"], "submission_rejected", "{n2}");
    assert!(seq(&n2) > seq(&n));

    // The REST list: newest first, unread filter, paginated.
    let (status, list) = call(
        &a.client,
        Method::GET,
        "/v1/notifications?unread=true",
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["kind"], "submission_rejected");
    assert_eq!(items[1]["id"], accepted_id.as_str());
    assert_eq!(items[1]["read_at"], Value::Null);
    let (_, page) = call(&a.client, Method::GET, "/v1/notifications?limit=1", None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &a.client,
        Method::GET,
        &format!("/v1/notifications?limit=1&cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["id"], accepted_id.as_str());
    assert_eq!(rest["next_cursor"], Value::Null);

    // Nobody else's: another agent sees none and marks none.
    let (_, theirs) = call(&other.client, Method::GET, "/v1/notifications", None).await;
    assert_eq!(theirs["items"], json!([]));
    let (status, marked) = call(
        &other.client,
        Method::POST,
        "/v1/notifications/mark-read",
        Some(json!({"ids": [accepted_id]})),
    )
    .await;
    assert_eq!((status, &marked), (200, &json!({"marked": 0})));

    // Mark one read by frame.
    ws.send_json(&json!({"type": "notifications.mark_read", "data": {"ids": [accepted_id]}}))
        .await;
    let reply = ws.reply().await;
    assert_eq!(
        reply,
        json!({"type": "notifications.marked", "data": {"marked": 1}})
    );
    let (_, unread) = call(
        &a.client,
        Method::GET,
        "/v1/notifications?unread=true",
        None,
    )
    .await;
    assert_eq!(unread["items"].as_array().unwrap().len(), 1);
    assert_eq!(unread["items"][0]["kind"], "submission_rejected");
    // A bad one by frame is an error frame naming the field.
    ws.send_json(&json!({"type": "notifications.mark_read", "data": {"ids": ["x"]}}))
        .await;
    let err = ws.reply().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["data"]["code"], "validation_failed");
    assert_eq!(err["data"]["errors"][0]["field"], "ids[0]");

    // The rest by REST.
    for (body, field) in [
        (json!({}), "ids"),
        (json!({"ids": [], "all": true}), "body"),
        (json!({"all": false}), "all"),
        (json!({"ids": []}), "ids"),
    ] {
        let (status, p) = call(
            &a.client,
            Method::POST,
            "/v1/notifications/mark-read",
            Some(body.clone()),
        )
        .await;
        crate::common::assert_field_error(status, &p, field);
    }
    let (status, marked) = call(
        &a.client,
        Method::POST,
        "/v1/notifications/mark-read",
        Some(json!({"all": true})),
    )
    .await;
    assert_eq!((status, &marked), (200, &json!({"marked": 1})));
    let (_, all) = call(&a.client, Method::GET, "/v1/notifications", None).await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|n| n["read_at"].is_string()), "{all}");
    app.stop().await;
}

async fn frames_from_the_agent(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-frames", &[]).await;
    let mut ws = app.ws(&a.token, None).await;
    ws.send_json(&json!({"type": "ping"})).await;
    let pong = ws.reply().await;
    assert_eq!(pong, json!({"type": "pong", "data": {}}));

    ws.send_json(&json!({"type": "teleport", "data": {}})).await;
    let err = ws.reply().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "unknown_type");
    assert!(err.get("seq").is_none());

    futures::SinkExt::send(&mut ws.stream, tungstenite::Message::text("{not json"))
        .await
        .unwrap();
    assert_eq!(ws.reply().await["data"]["code"], "bad_frame");
    futures::SinkExt::send(
        &mut ws.stream,
        tungstenite::Message::binary(vec![1u8, 2, 3]),
    )
    .await
    .unwrap();
    assert_eq!(ws.reply().await["data"]["code"], "bad_frame");
    ws.send_json(&json!({"type": "auth", "data": {"token": a.token}}))
        .await;
    assert_eq!(ws.reply().await["data"]["code"], "already_authenticated");

    // Still open after all that.
    ws.send_json(&json!({"type": "ping"})).await;
    assert_eq!(ws.reply().await["type"], "pong");

    // Messages above 64 KiB end the connection (the protocol's "message too big").
    futures::SinkExt::send(
        &mut ws.stream,
        tungstenite::Message::text(
            json!({"type": "ping", "data": {"pad": "x".repeat(70_000)}}).to_string(),
        ),
    )
    .await
    .unwrap();
    match ws.message(FRAME_WAIT).await {
        Ok(Some(tungstenite::Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1009),
        Ok(None) => {}
        other => panic!("expected the connection to end, got {other:?}"),
    }
    app.stop().await;
}

async fn connected_agents_are_online(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-presence", &[]).await;
    // Last seen long ago: offline.
    let sql = "UPDATE agents SET last_seen_at = $1 WHERE id = $2";
    assert_eq!(
        app.set_time(sql, Utc::now() - chrono::Duration::hours(1), a.id)
            .await,
        1
    );
    let online = |app: &TestApp, id: Uuid| {
        let client = app.client();
        async move { client.agent(&id.to_string()).await.unwrap().online }
    };
    assert!(!online(&app, a.id).await);
    let ws = app.ws(&a.token, None).await;
    crate::common::eventually(
        Duration::from_secs(10),
        "online while connected",
        || async { online(&app, a.id).await.then_some(()) },
    )
    .await;
    assert!(app.running().state.hub.is_connected(a.id));
    drop(ws);
    crate::common::eventually(Duration::from_secs(5), "the connection to go", || async {
        (!app.running().state.hub.is_connected(a.id)).then_some(())
    })
    .await;
    app.stop().await;
}

async fn silent_clients_are_closed(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.ws.ping_interval = Duration::from_millis(200);
        c.ws.idle_timeout = Duration::from_millis(1500);
    })
    .await
    else {
        return;
    };
    let a = app.enroll("ws-idle", &[]).await;
    let mut ws = app.ws(&a.token, None).await;
    // A client that answers pings stays (the stock client answers them while it reads).
    let stayed = ws.drain(Duration::from_millis(2500)).await;
    assert!(stayed.iter().all(|f| f.get("seq").is_some()), "{stayed:?}");
    // One that reads nothing (so answers nothing) is closed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, reason, _) = ws.closed().await;
    assert_eq!(code, 4408, "{reason}");
    app.stop().await;
}

/// Kinds of the notifications `agent` has, newest first.
async fn kinds(agent: &TestAgent) -> Vec<String> {
    let (status, list) = call(&agent.client, Method::GET, "/v1/notifications", None).await;
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Withdrawals decided, a lease lost, a task expired: each reaches the agents concerned as a
/// notification (pushed and listed).
async fn operations_notify_their_agents(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-ops", &["ops"]).await;
    let poster = app.enroll("ws-ops-poster", &[]).await;
    let mut ws = app.ws(&a.token, None).await;

    // Withdrawals: one approved, one rejected.
    app.grant(a.id, "10.00").await;
    for (amount, decision, kind) in [
        ("3.00", "approve", "withdrawal_approved"),
        ("2.00", "reject", "withdrawal_rejected"),
    ] {
        let (status, w) = call(
            &a.client,
            Method::POST,
            "/v1/withdrawal/request",
            Some(json!({"amount": amount, "destination": "iban:DE00"})),
        )
        .await;
        assert_eq!(status, 201, "{w}");
        let (status, d) = call(
            &app.admin,
            Method::POST,
            &format!(
                "/v1/admin/withdrawals/{}/{decision}",
                w["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
        assert_eq!(status, 200, "{d}");
        let n = ws.next_of("notification").await;
        assert_eq!(n["data"]["kind"], kind, "{n}");
        assert_eq!(n["data"]["data"]["withdrawal_id"], w["id"]);
        assert_eq!(n["data"]["data"]["amount"], amount);
    }

    // A lease that runs out.
    let t = app
        .admin_post(task_body("Held too long", "5.00", &["ops"]))
        .await;
    let task = id_of(&t);
    let (s, v) = call(
        &a.client,
        Method::POST,
        &format!("/v1/tasks/{task}/claim"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    app.backdate_lease(task).await;
    let n = ws.next_of("notification").await;
    assert_eq!(n["data"]["kind"], "lease_lost", "{n}");
    assert_eq!(n["data"]["data"]["task_id"], task.to_string());

    // A task that passes its deadline: its poster hears of it.
    app.grant(poster.id, "10.00").await;
    let mut poster_ws = app.ws(&poster.token, None).await;
    let mut body = task_body("Due soon", "5.00", &["nobody-has-this"]);
    body["deadline"] = json!((Utc::now() + chrono::Duration::seconds(2)).to_rfc3339());
    let (status, t) = call(&poster.client, Method::POST, "/v1/tasks", Some(body)).await;
    assert_eq!(status, 201, "{t}");
    let n = poster_ws.next_of("notification").await;
    assert_eq!(n["data"]["kind"], "task_expired", "{n}");
    assert_eq!(n["data"]["data"]["task_id"], t["id"]);
    assert_eq!(kinds(&poster).await, ["task_expired"]);
    assert_eq!(
        kinds(&a).await,
        ["lease_lost", "withdrawal_rejected", "withdrawal_approved"]
    );
    app.stop().await;
}

/// The retention worker drops stored events and read notifications past the retention
/// period; unread notifications stay.
async fn retention_prunes_old_events(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.event_retention = chrono::Duration::seconds(1);
    })
    .await
    else {
        return;
    };
    let a = app.enroll("ws-retention", &[]).await;
    announce(&app, "soon gone").await;
    // Two notifications (withdrawals decided); one is read.
    app.grant(a.id, "10.00").await;
    for _ in 0..2 {
        let (status, w) = call(
            &a.client,
            Method::POST,
            "/v1/withdrawal/request",
            Some(json!({"amount": "1.00", "destination": "iban:DE00"})),
        )
        .await;
        assert_eq!(status, 201, "{w}");
        let (status, d) = call(
            &app.admin,
            Method::POST,
            &format!(
                "/v1/admin/withdrawals/{}/approve",
                w["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
        assert_eq!(status, 200, "{d}");
    }
    let store = app.running().state.app.store.clone();
    assert!(!store.events_since(a.id, 0, 10).await.unwrap().is_empty());
    let (_, list) = call(&a.client, Method::GET, "/v1/notifications", None).await;
    let first = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        &a.client,
        Method::POST,
        "/v1/notifications/mark-read",
        Some(json!({"ids": [first]})),
    )
    .await;
    assert_eq!(status, 200);
    let list = crate::common::eventually(
        Duration::from_secs(30),
        "the events and the read notification pruned",
        || {
            let (store, client) = (store.clone(), a.client.clone());
            async move {
                let (_, list) = call(&client, Method::GET, "/v1/notifications", None).await;
                let events = store.events_since(a.id, 0, 10).await.unwrap();
                (events.is_empty() && list["items"].as_array().unwrap().len() == 1).then_some(list)
            }
        },
    )
    .await;
    assert_eq!(list["items"][0]["read_at"], Value::Null, "{list}");
    // Numbering goes on where it was.
    let last = store.last_event_seq(a.id).await.unwrap();
    assert!(last >= 3, "{last}");
    let mut ws = app.ws(&a.token, Some(0)).await;
    announce(&app, "after").await;
    let f = ws.next_of("announcement").await;
    assert!(seq(&f) > last, "{f}");
    app.stop().await;
}

/// Frames that act (all but `ping`) count against the agent's request rate, as REST requests
/// do; over it, the frame gets an error, and the connection stays.
async fn frames_count_against_the_agents_rate(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.rate_limit_agent_per_second = 2;
    })
    .await
    else {
        return;
    };
    let a = app.enroll("ws-rate", &[]).await;
    let mut ws = app.ws(&a.token, None).await;
    let mut limited = None;
    for _ in 0..6 {
        ws.send_json(&json!({"type": "notifications.mark_read", "data": {"all": true}}))
            .await;
        let reply = ws.reply().await;
        if reply["type"] == "error" {
            limited = Some(reply);
            break;
        }
        assert_eq!(reply["type"], "notifications.marked", "{reply}");
    }
    let limited = limited.expect("a rate-limited frame");
    assert_eq!(limited["data"]["code"], "rate_limited", "{limited}");
    assert!(limited["data"]["retry_after"].as_u64().unwrap() >= 1);
    ws.send_json(&json!({"type": "ping"})).await;
    assert_eq!(ws.reply().await["type"], "pong");
    app.stop().await;
}

/// Past probation with good work, the agent's level goes up: it is told so.
async fn level_changes_are_notified(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-level", &["levels"]).await;
    let mut ws = app.ws(&a.token, None).await;
    for i in 0..5 {
        let t = app
            .admin_post(task_body(&format!("Level task {i}"), "5.00", &["levels"]))
            .await;
        claim_and_submit(&a, id_of(&t), ANSWER).await;
    }
    let n = loop {
        let n = ws.next_of("notification").await;
        if n["data"]["kind"] == "level_changed" {
            break n;
        }
        assert_eq!(n["data"]["kind"], "submission_accepted", "{n}");
    };
    assert_eq!(n["data"]["data"]["previous_level"], "novice", "{n}");
    assert_ne!(n["data"]["data"]["level"], "novice", "{n}");
    let (_, rep) = call(
        &a.client,
        Method::GET,
        &format!("/v1/agents/{}/reputation", a.id),
        None,
    )
    .await;
    assert_eq!(rep["level"], n["data"]["data"]["level"], "{rep}");
    app.stop().await;
}

/// A server shutting down closes its connections with 1001 and where to resume.
async fn shutdown_closes_connections(backend: Backend) {
    let Some(app) = start(backend).await else {
        return;
    };
    let a = app.enroll("ws-bye", &[]).await;
    let mut ws = app.ws(&a.token, Some(0)).await;
    announce(&app, "last words").await;
    let last = seq(&ws.next_of("announcement").await);
    let stopping = tokio::spawn(app.stop());
    let (code, reason, _) = ws.closed().await;
    assert_eq!(code, 1001, "{reason}");
    assert!(since_in(&reason) >= last, "{reason}");
    stopping.await.unwrap();
}
