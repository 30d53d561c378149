//! The economy over HTTP: the bonus pool, withdrawals and their decisions, earnings, the
//! re-claim rule, and idempotent replay of every money-moving POST.

use std::time::Duration;

use nervix_client::{Client, Method};
use nervix_core::Money;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{
    eventually, id_of, post_task_json, task_body, Backend, TestAgent, TestApp, ANSWER,
};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    bonus_pool_is_operator_funded,
    withdrawals_flow,
    withdrawal_request_is_idempotent,
    workflow_and_submit_replays,
    released_task_is_not_claimed_back,
    reciprocal_pair_farms_nothing,
}

async fn call(client: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    client.request(method, path, body.as_ref()).await.unwrap()
}

/// A POST with an `Idempotency-Key`.
async fn keyed(client: &Client, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let r = client
        .request_raw(
            Method::POST,
            path,
            &[("Idempotency-Key", key)],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
        .unwrap();
    (r.status, r.json())
}

async fn earnings(agent: &TestAgent) -> Value {
    let (status, e) = call(&agent.client, Method::GET, "/v1/agents/me/earnings", None).await;
    assert_eq!(status, 200, "{e}");
    e
}

async fn bonus_pool_is_operator_funded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("agent", &[]).await;
    let (status, pool) = call(&app.admin, Method::GET, "/v1/admin/bonus-pool", None).await;
    assert_eq!((status, &pool), (200, &json!({"balance": "0.00"})));
    let fund = |amount: Value| json!({"amount": amount, "memo": "season one"});
    let (status, pool) = call(
        &app.admin,
        Method::POST,
        "/v1/admin/bonus-pool/fund",
        Some(fund(json!("12.50"))),
    )
    .await;
    assert_eq!(
        (status, &pool),
        (200, &json!({"balance": "12.50"})),
        "{pool}"
    );
    let (status, pool) = call(
        &app.admin,
        Method::POST,
        "/v1/admin/bonus-pool/fund",
        Some(fund(json!(1))),
    )
    .await;
    assert_eq!(
        (status, &pool),
        (200, &json!({"balance": "13.50"})),
        "{pool}"
    );
    for bad in [json!(0), json!("-1.00"), json!("1.234")] {
        let (status, p) = call(
            &app.admin,
            Method::POST,
            "/v1/admin/bonus-pool/fund",
            Some(fund(bad.clone())),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {p}");
        assert_eq!(p["errors"][0]["field"], "amount", "{p}");
    }
    for (method, path) in [
        (Method::GET, "/v1/admin/bonus-pool"),
        (Method::POST, "/v1/admin/bonus-pool/fund"),
    ] {
        let (status, p) = call(&agent.client, method, path, Some(fund(json!(5)))).await;
        assert_eq!(status, 403, "{path}: {p}");
    }
    let (_, audit) = call(
        &app.admin,
        Method::GET,
        "/v1/admin/audit?action=admin.bonus_pool.fund",
        None,
    )
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    app.stop().await;
}

async fn withdrawals_flow(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("saver", &[]).await;
    app.grant(agent.id, "10.00").await;
    let request =
        |amount: Value, destination: &str| json!({"amount": amount, "destination": destination});
    let (status, w) = call(
        &agent.client,
        Method::POST,
        "/v1/withdrawal/request",
        Some(request(json!("4.00"), "iban:DE00")),
    )
    .await;
    assert_eq!(status, 201, "{w}");
    assert_eq!(
        (&w["amount"], &w["status"]),
        (&json!("4.00"), &json!("pending"))
    );
    assert_eq!(w["destination"], "iban:DE00");
    let first = id_of(&w);
    assert_eq!(
        earnings(&agent).await,
        json!({"balance": "6.00", "escrowed": "0.00", "pending_withdrawals": "4.00",
               "total_earned": "0.00", "total_withdrawn": "0.00"})
    );
    // More than available: 422 insufficient_funds; bad inputs name their field.
    let (status, p) = call(
        &agent.client,
        Method::POST,
        "/v1/withdrawal/request",
        Some(request(json!("6.01"), "iban:DE00")),
    )
    .await;
    assert_eq!(
        (status, p["code"].as_str()),
        (422, Some("insufficient_funds")),
        "{p}"
    );
    for (body, field) in [
        (request(json!(0), "x"), "amount"),
        (request(json!("1.00"), "  "), "destination"),
        (request(json!("1.00"), &"d".repeat(257)), "destination"),
    ] {
        let (status, p) = call(
            &agent.client,
            Method::POST,
            "/v1/withdrawal/request",
            Some(body),
        )
        .await;
        assert_eq!(status, 422, "{p}");
        assert_eq!(p["errors"][0]["field"], field, "{p}");
    }
    let (_, w) = call(
        &agent.client,
        Method::POST,
        "/v1/withdrawal/request",
        Some(request(json!(3), "wallet")),
    )
    .await;
    let second = id_of(&w);

    // Only admins decide, each withdrawal exactly once.
    let approve = format!("/v1/admin/withdrawals/{first}/approve");
    let (status, _) = call(&agent.client, Method::POST, &approve, None).await;
    assert_eq!(status, 403);
    let (status, w) = call(&app.admin, Method::POST, &approve, None).await;
    assert_eq!((status, &w["status"]), (200, &json!("paid")), "{w}");
    let (status, p) = call(&app.admin, Method::POST, &approve, None).await;
    assert_eq!(status, 409, "{p}");
    let (status, p) = call(
        &app.admin,
        Method::POST,
        &format!("/v1/admin/withdrawals/{first}/reject"),
        None,
    )
    .await;
    assert_eq!(status, 409, "{p}");
    let (status, w) = call(
        &app.admin,
        Method::POST,
        &format!("/v1/admin/withdrawals/{second}/reject"),
        None,
    )
    .await;
    assert_eq!((status, &w["status"]), (200, &json!("rejected")), "{w}");
    let (status, _) = call(
        &app.admin,
        Method::POST,
        &format!("/v1/admin/withdrawals/{}/approve", Uuid::now_v7()),
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        earnings(&agent).await,
        json!({"balance": "6.00", "escrowed": "0.00", "pending_withdrawals": "0.00",
               "total_earned": "0.00", "total_withdrawn": "4.00"})
    );

    // Lists: the agent's own, and the admin's by status.
    let (status, mine) = call(&agent.client, Method::GET, "/v1/withdrawals?limit=1", None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["items"][0]["id"], second.to_string());
    let cursor = mine["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = call(
        &agent.client,
        Method::GET,
        &format!("/v1/withdrawals?cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["id"], first.to_string());
    assert!(rest["next_cursor"].is_null());
    let (_, paid) = call(
        &app.admin,
        Method::GET,
        "/v1/admin/withdrawals?status=paid",
        None,
    )
    .await;
    let paid = paid["items"].as_array().unwrap();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0]["id"], first.to_string());
    let (status, p) = call(
        &app.admin,
        Method::GET,
        "/v1/admin/withdrawals?status=nope",
        None,
    )
    .await;
    assert_eq!(status, 422, "{p}");
    let (status, _) = call(&agent.client, Method::GET, "/v1/admin/withdrawals", None).await;
    assert_eq!(status, 403);
    let (_, audit) = call(
        &app.admin,
        Method::GET,
        "/v1/admin/audit?action=admin.withdrawal.approve",
        None,
    )
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    app.stop().await;
}

async fn withdrawal_request_is_idempotent(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("careful", &[]).await;
    app.grant(agent.id, "10.00").await;
    let body = json!({"amount": "4.00", "destination": "iban:DE00"});
    let path = "/v1/withdrawal/request";
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let (client, body) = (agent.client.clone(), body.clone());
            tokio::spawn(async move { keyed(&client, path, "w-1", &body).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for r in racers {
        let (status, v) = r.await.unwrap();
        assert_eq!(status, 201, "{v}");
        ids.insert(id_of(&v));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (status, again) = keyed(&agent.client, path, "w-1", &body).await;
    assert_eq!(status, 201);
    assert!(ids.contains(&id_of(&again)));
    assert_eq!(earnings(&agent).await["balance"], "6.00", "moved once");
    let other = json!({"amount": "5.00", "destination": "iban:DE00"});
    let (status, p) = keyed(&agent.client, path, "w-1", &other).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{p}"
    );
    // A refused request leaves its key free.
    let big = json!({"amount": "7.00", "destination": "iban:DE00"});
    let (status, _) = keyed(&agent.client, path, "w-2", &big).await;
    assert_eq!(status, 422);
    app.grant(agent.id, "1.00").await;
    let (status, v) = keyed(&agent.client, path, "w-2", &big).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(earnings(&agent).await["pending_withdrawals"], "11.00");
    app.stop().await;
}

/// `POST /v1/workflows` and `/v1/tasks/{id}/submit` replay their first response for the same
/// key and body, move the money once, and refuse the key with another body.
async fn workflow_and_submit_replays(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("planner", &[]).await;
    let worker = app.enroll("doer", &["wf"]).await;
    app.grant(poster.id, "10.00").await;
    let step = |key: &str| {
        let mut t = task_body(&format!("step {key}"), "2.00", &["wf"]);
        t["key"] = json!(key);
        t
    };
    let wf = json!({"name": "twice", "tasks": [step("a"), step("b")]});
    let (s1, first) = keyed(&poster.client, "/v1/workflows", "wf-1", &wf).await;
    assert_eq!(s1, 201, "{first}");
    let (s2, second) = keyed(&poster.client, "/v1/workflows", "wf-1", &wf).await;
    assert_eq!((s2, &second), (201, &first));
    assert_eq!(earnings(&poster).await["escrowed"], "4.00", "escrowed once");
    let other = json!({"name": "thrice", "tasks": [step("a")]});
    let (s3, p) = keyed(&poster.client, "/v1/workflows", "wf-1", &other).await;
    assert_eq!(
        (s3, p["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{p}"
    );

    let task = id_of(&first["tasks"][0]);
    let (status, c) = call(
        &worker.client,
        Method::POST,
        &format!("/v1/tasks/{task}/claim"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{c}");
    let path = format!("/v1/tasks/{task}/submit");
    let work = json!({"submission_data": {"content": "A complete and careful answer."}});
    let (s1, first) = keyed(&worker.client, &path, "sub-1", &work).await;
    assert_eq!(s1, 202, "{first}");
    let paid = earnings(&worker).await["balance"].clone();
    let (s2, second) = keyed(&worker.client, &path, "sub-1", &work).await;
    assert_eq!((s2, &second), (202, &first));
    assert_eq!(earnings(&worker).await["balance"], paid, "paid once");
    let other = json!({"submission_data": {"content": "Another answer entirely, also long."}});
    let (s3, p) = keyed(&worker.client, &path, "sub-1", &other).await;
    assert_eq!(
        (s3, p["code"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{p}"
    );
    app.stop().await;
}

async fn released_task_is_not_claimed_back(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("flaky", &["ops"]).await;
    let other = app.enroll("steady", &["ops"]).await;
    let id = id_of(
        &app.admin_post(task_body("once only", "3.00", &["ops"]))
            .await,
    );
    let claim = |agent: &TestAgent| {
        let client = agent.client.clone();
        async move {
            call(
                &client,
                Method::POST,
                &format!("/v1/tasks/{id}/claim"),
                None,
            )
            .await
        }
    };
    assert_eq!(claim(&worker).await.0, 200);
    let (status, t) = call(
        &worker.client,
        Method::POST,
        &format!("/v1/tasks/{id}/release"),
        None,
    )
    .await;
    assert_eq!((status, &t["status"]), (200, &json!("available")), "{t}");
    let (status, p) = claim(&worker).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("not_eligible")),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("released"), "{p}");
    // Not listed for it either, but another agent still takes it.
    let (_, page) = call(&worker.client, Method::GET, "/v1/tasks", None).await;
    assert!(page["items"].as_array().unwrap().is_empty(), "{page}");
    assert_eq!(claim(&other).await.0, 200);
    app.stop().await;
}

fn money(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse::<Money>().ok())
        .unwrap_or_else(|| panic!("not an amount: {v}"))
        .cents()
}

/// `poster` posts a 10.00 task and `worker` claims it and hands in a full-marks answer;
/// returns the submission.
async fn do_task_for(poster: &TestAgent, worker: &TestAgent) -> Value {
    let task = id_of(&post_task_json(&poster.client, task_body("favour", "10.00", &[])).await);
    let (s, v) = call(
        &worker.client,
        Method::POST,
        &format!("/v1/tasks/{task}/claim"),
        None,
    )
    .await;
    assert_eq!(s, 200, "claim: {v}");
    let (s, v) = call(
        &worker.client,
        Method::POST,
        &format!("/v1/tasks/{task}/submit"),
        Some(json!({"submission_data": {"content": ANSWER}})),
    )
    .await;
    assert_eq!(s, 202, "submit: {v}");
    assert_eq!(v["submission"]["status"], "accepted", "{v}");
    assert_eq!(v["submission"]["quality_score"], 100, "{v}");
    v["submission"].clone()
}

async fn reputation(app: &TestApp, agent: &TestAgent) -> Value {
    let path = format!("/v1/agents/{}/reputation", agent.handle);
    let (s, r) = call(&app.admin, Method::GET, &path, None).await;
    assert_eq!(s, 200, "{r}");
    r
}

/// Issue #9's story: two agents post 10.00 tasks to each other and answer them. Past probation
/// and above novice they are paid no level bonus, so together they hold what they were granted,
/// the bonus pool keeps its balance, and their reputation barely moves; a third agent doing the
/// same work for one of them is paid the bonus.
async fn reciprocal_pair_farms_nothing(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (s, v) = call(
        &app.admin,
        Method::POST,
        "/v1/admin/bonus-pool/fund",
        Some(json!({"amount": "100.00", "memo": "level bonuses"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let a = app.enroll("pair-a", &[]).await;
    let b = app.enroll("pair-b", &[]).await;
    app.grant(a.id, "500.00").await;
    app.grant(b.id, "500.00").await;
    for _ in 0..5 {
        do_task_for(&a, &b).await;
        do_task_for(&b, &a).await;
    }
    for agent in [&a, &b] {
        eventually(Duration::from_secs(10), "past probation", || async {
            (reputation(&app, agent).await["level"] == "intermediate").then_some(())
        })
        .await;
    }
    for _ in 0..6 {
        do_task_for(&a, &b).await;
        do_task_for(&b, &a).await;
    }
    let (ea, eb) = (earnings(&a).await, earnings(&b).await);
    assert_eq!(
        money(&ea["balance"]) + money(&eb["balance"]),
        100_000,
        "{ea} {eb}"
    );
    assert_eq!((money(&ea["escrowed"]), money(&eb["escrowed"])), (0, 0));
    let (_, pool) = call(&app.admin, Method::GET, "/v1/admin/bonus-pool", None).await;
    assert_eq!(pool["balance"], "100.00");
    let (s, entries) = call(
        &b.client,
        Method::GET,
        "/v1/agents/me/contributions?limit=5",
        None,
    )
    .await;
    assert_eq!(s, 200, "{entries}");
    let payout = entries["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "payout")
        .unwrap_or_else(|| panic!("no payout among {entries}"));
    assert!(
        payout["memo"]
            .as_str()
            .unwrap()
            .contains("level bonus cut from 2.00 to 0.00: reciprocal pair"),
        "{payout}"
    );
    // Eleven perfect tasks each, worth little more than one honest task (from 50.00 to at
    // most 57.37; eleven for eleven different posters would reach about 74).
    for agent in [&a, &b] {
        let score = money(&reputation(&app, agent).await["score"]);
        assert!((5000..=5737).contains(&score), "{}: {score}", agent.handle);
    }

    // A third agent past probation, doing the same work for `a`, is paid the bonus.
    let c = app.enroll("pair-c", &[]).await;
    for i in 0..5 {
        let t = app
            .admin_post(task_body(&format!("probation {i}"), "1.00", &[]))
            .await;
        let (s, v) = call(
            &c.client,
            Method::POST,
            &format!("/v1/tasks/{}/claim", id_of(&t)),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let path = format!("/v1/tasks/{}/submit", id_of(&t));
        let (s, v) = call(
            &c.client,
            Method::POST,
            &path,
            Some(json!({"submission_data": {"content": ANSWER}})),
        )
        .await;
        assert_eq!(s, 202, "{v}");
    }
    eventually(Duration::from_secs(10), "past probation", || async {
        (reputation(&app, &c).await["level"] == "intermediate").then_some(())
    })
    .await;
    let before = money(&earnings(&c).await["balance"]);
    do_task_for(&a, &c).await;
    assert_eq!(money(&earnings(&c).await["balance"]) - before, 1200);
    let (_, pool) = call(&app.admin, Method::GET, "/v1/admin/bonus-pool", None).await;
    assert_eq!(pool["balance"], "98.00");
    app.stop().await;
}
