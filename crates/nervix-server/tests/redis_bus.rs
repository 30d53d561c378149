//! Two server nodes on one PostgreSQL database with the Redis event bus: what one node
//! publishes reaches the other's subscribers (matching notifications, agent changes) and the
//! agents connected to it.
//!
//! Needs `NERVIX_TEST_REDIS_URL` and `NERVIX_TEST_POSTGRES_URL`. Without them the test prints a
//! SKIP line and passes, except in CI (`CI=true`), where it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use nervix_server::bus::{Event, Frame};
use tokio::sync::broadcast;
use uuid::Uuid;

use common::{eventually, id_of, task_body, test_config, Backend, TestApp, ANSWER};
use nervix_client::Method;
use serde_json::json;

fn redis_url() -> Option<String> {
    match std::env::var("NERVIX_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "NERVIX_TEST_REDIS_URL must be set in CI"
            );
            eprintln!("SKIP: NERVIX_TEST_REDIS_URL is not set; the Redis bus test skips");
            None
        }
    }
}

/// Waits for `task_available` events of `task` on `rx` until `want` agents were notified (and
/// a little longer, so that extra events would be seen).
async fn notified(rx: &mut broadcast::Receiver<Event>, task: Uuid, want: usize) -> Vec<Uuid> {
    let mut agents = Vec::new();
    let mut until = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(event) = tokio::time::timeout_at(until, rx.recv()).await {
        let Event::ToAgent {
            agent_id, frame, ..
        } = event.expect("bus")
        else {
            continue;
        };
        if let Frame::TaskAvailable {
            task_id,
            match_score,
            ..
        } = frame
        {
            if task_id != task {
                continue;
            }
            assert!((0.0..=1.0).contains(&match_score), "{match_score}");
            agents.push(agent_id);
            if agents.len() == want {
                until = tokio::time::Instant::now() + Duration::from_millis(500);
            }
        }
    }
    agents
}

/// The tests of this file share Redis pub/sub; the reconnect test cuts every subscriber off.
static REDIS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_resubscribes_after_redis_drops_it() {
    let Some(redis) = redis_url() else {
        return;
    };
    let _serial = REDIS.lock().await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bus = nervix_server::bus::RedisBus::connect(&redis, shutdown.clone())
        .await
        .unwrap();
    let mut rx = nervix_server::bus::EventBus::subscribe(bus.as_ref());

    // Cut every pub/sub connection, as a Redis restart would.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(killed >= 1, "our subscription was live");

    // The supervised relay subscribes again; events published after that arrive.
    let agent_id = Uuid::now_v7();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let got = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay never resubscribed"
        );
        nervix_server::bus::EventBus::publish(bus.as_ref(), Event::AgentChanged { agent_id })
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            Ok(Ok(e @ Event::AgentChanged { .. })) => break e,
            _ => continue,
        }
    };
    assert_eq!(got, Event::AgentChanged { agent_id });
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_available_crosses_nodes() {
    let Some(redis) = redis_url() else {
        return;
    };
    let _serial = REDIS.lock().await;
    let Some(node_a) = TestApp::start_with(Backend::Postgres, |c| {
        c.redis_url = Some(redis.clone());
    })
    .await
    else {
        return;
    };
    // Node B: same database, same signing keys (the data folder), same Redis.
    let mut config_b = test_config(node_a.data_dir(), node_a.config.database_url.clone());
    config_b.redis_url = Some(redis);
    let node_b = TestApp::start_on(Backend::Postgres, tempfile::tempdir().unwrap(), config_b).await;

    // Agents enroll on node A; node B's matching index hears of them through Redis.
    let agents = node_a.enroll_many("redis-agent", 3, &["redisx"]).await;
    let ids: HashSet<Uuid> = agents.iter().map(|a| a.id).collect();
    for node in [&node_a, &node_b] {
        let matcher = node.running().state.app.matcher.clone();
        eventually(Duration::from_secs(10), "both matching indexes", || {
            let matcher = matcher.clone();
            async move { (matcher.len() >= 4).then_some(()) }
        })
        .await;
    }
    // A token issued by node A works on node B.
    let on_b = node_b.client_with(&agents[0].token);
    assert_eq!(on_b.me().await.unwrap().id, agents[0].id);

    // Posted on A, heard on B.
    let mut rx_b = node_b.running().state.app.bus.subscribe();
    let t = node_a
        .admin_post(task_body("cross-node", "3.00", &["redisx"]))
        .await;
    let got = notified(&mut rx_b, id_of(&t), ids.len()).await;
    assert_eq!(got.len(), ids.len(), "node B heard {got:?}");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), ids);

    // And the other way round.
    let mut rx_a = node_a.running().state.app.bus.subscribe();
    let t = node_b
        .admin_post(task_body("cross-node back", "3.00", &["redisx"]))
        .await;
    let got = notified(&mut rx_a, id_of(&t), ids.len()).await;
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), ids);

    node_b.stop().await;
    node_a.stop().await;
}

/// An agent connected to node B hears what its work on node A causes: task updates and the
/// notification of its submission's feedback, in `seq` order; a revocation on A closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_connected_to_one_node_hears_the_other() {
    let Some(redis) = redis_url() else {
        return;
    };
    let _serial = REDIS.lock().await;
    let Some(node_a) = TestApp::start_with(Backend::Postgres, |c| {
        c.redis_url = Some(redis.clone());
    })
    .await
    else {
        return;
    };
    let mut config_b = test_config(node_a.data_dir(), node_a.config.database_url.clone());
    config_b.redis_url = Some(redis);
    let node_b = TestApp::start_on(Backend::Postgres, tempfile::tempdir().unwrap(), config_b).await;

    let agent = node_a.enroll("cross-ws", &["crossws"]).await;
    let mut ws = node_b
        .ws_try(Some(&agent.token), None, None)
        .await
        .expect("upgrade");
    let ready = ws.ready().await;
    let t = node_a
        .admin_post(task_body("cross-node work", "4.00", &["crossws"]))
        .await;
    let task = id_of(&t);
    let (s, v) = agent
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task}/claim"),
            Some(&json!({})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, v) = agent
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{task}/submit"),
            Some(&json!({"submission_data": {"content": ANSWER}})),
        )
        .await
        .unwrap();
    assert_eq!(s, 202, "{v}");
    let mut seen = Vec::new();
    let mut last = ready["data"]["seq"].as_i64().unwrap();
    let notification = loop {
        let f = ws.stored().await;
        let seq = f["seq"].as_i64().unwrap();
        assert_eq!(seq, last + 1, "in order, without a gap: {f}");
        last = seq;
        seen.push(f["type"].as_str().unwrap().to_owned());
        if f["type"] == "notification" {
            break f;
        }
    };
    assert!(seen.iter().any(|t| t == "task_update"), "{seen:?}");
    assert_eq!(notification["data"]["kind"], "submission_accepted");
    assert_eq!(notification["data"]["data"]["task_id"], task.to_string());

    // Revoked through node A: node B closes the connection.
    agent.client.revoke().await.unwrap();
    let (code, reason, _) = ws.closed().await;
    assert_eq!((code, reason.as_str()), (4401, "token has been revoked"));
    node_b.stop().await;
    node_a.stop().await;
}
