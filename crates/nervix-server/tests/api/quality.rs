//! Quality control and reputation over HTTP: spot checks held for review, peer reviews and
//! their rules, the review deadline, reputation recomputed from evidence, and the level's cap
//! on how much work an agent holds.

use std::time::Duration;

use nervix_client::Method;
use nervix_server::bus::{Event, Frame};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{eventually, id_of, task_body, Backend, TestAgent, TestApp};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    spot_check_holds_until_a_reviewer_decides,
    review_rules,
    unreviewed_hold_is_accepted_after_the_deadline,
    reputation_follows_work,
    novice_capacity_is_capped_by_level,
}

/// Long and varied enough for every text check.
const GOOD_TEXT: &str = "The report covers the three incidents of last quarter, explains \
    how each began, which systems were touched, how customers noticed, what the on-call team \
    changed afterwards, and which follow-up work is still open with owners and dates.";

async fn call(agent: &TestAgent, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    agent
        .client
        .request(method, path, body.as_ref())
        .await
        .unwrap()
}

/// Claims `task` and submits good work; returns the submit response.
async fn work_on(agent: &TestAgent, task: Uuid) -> Value {
    let (s, v) = call(
        agent,
        Method::POST,
        &format!("/v1/tasks/{task}/claim"),
        Some(json!({"estimated_duration": 600})),
    )
    .await;
    assert_eq!(s, 200, "claim: {v}");
    let (s, v) = call(
        agent,
        Method::POST,
        &format!("/v1/tasks/{task}/submit"),
        Some(json!({"submission_data": {"content": GOOD_TEXT}})),
    )
    .await;
    assert_eq!(s, 202, "submit: {v}");
    v
}

async fn review(agent: &TestAgent, submission: &Value, score: i64) -> (u16, Value) {
    call(
        agent,
        Method::POST,
        "/v1/quality/submit",
        Some(json!({"submission_id": submission, "score": score, "feedback": "checked by hand"})),
    )
    .await
}

async fn balance(agent: &TestAgent) -> i64 {
    agent.client.earnings().await.unwrap().balance.cents()
}

async fn spot_check_holds_until_a_reviewer_decides(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.spot_check_rate = 1.0).await else {
        return;
    };
    let worker = app.enroll("held-worker", &[]).await;
    let t = app.admin_post(task_body("Summarise", "10.00", &[])).await;
    let v = work_on(&worker, id_of(&t)).await;
    let sub = &v["submission"];
    assert_eq!(sub["status"], "pending_review", "{v}");
    assert_eq!(sub["payout"], Value::Null);
    assert_eq!(sub["final_score"], Value::Null);
    assert!(sub["review_deadline"].is_string(), "{v}");
    assert!(
        sub["feedback"].as_str().unwrap().contains("spot check"),
        "{v}"
    );
    assert_eq!(v["task"]["status"], "submitted");
    assert_eq!(balance(&worker).await, 0);

    // The queue is for reviewers and admins.
    let (s, p) = call(&worker, Method::GET, "/v1/quality/queue", None).await;
    assert_eq!((s, p["code"].as_str()), (403, Some("forbidden")), "{p}");
    let (s, q) = app
        .admin
        .request(Method::GET, "/v1/quality/queue", None)
        .await
        .unwrap();
    assert_eq!(s, 200, "{q}");
    let ids: Vec<&Value> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["id"])
        .collect();
    assert_eq!(ids, [&sub["id"]]);

    // An admin's review decides it and pays at the review's score.
    let (s, r) = app
        .admin
        .request(
            Method::POST,
            "/v1/quality/submit",
            Some(&json!({"submission_id": sub["id"], "score": 85})),
        )
        .await
        .unwrap();
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["decision"], "accepted");
    assert_eq!(r["agent_id"], worker.id.to_string());
    assert_eq!(r["submission"]["status"], "accepted");
    assert_eq!(r["submission"]["final_score"], 85);
    assert_eq!(r["submission"]["payout"], "8.50");
    assert_eq!(balance(&worker).await, 850);
    let done = worker.client.task(id_of(&t)).await.unwrap();
    assert_eq!(done.status, nervix_client::TaskStatus::Completed);
    let (_, q) = app
        .admin
        .request(Method::GET, "/v1/quality/queue", None)
        .await
        .unwrap();
    assert_eq!(q["items"], json!([]));
    app.stop().await;
}

async fn review_rules(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.spot_check_rate = 1.0).await else {
        return;
    };
    let poster = app.enroll("rules-poster", &[]).await;
    app.grant(poster.id, "100.00").await;
    let worker = app.enroll("rules-worker", &[]).await;
    let stranger = app.enroll("rules-stranger", &[]).await;
    let (s, t) = call(
        &poster,
        Method::POST,
        "/v1/tasks",
        Some(task_body("Check me", "10.00", &[])),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let v = work_on(&worker, id_of(&t)).await;
    let sub = &v["submission"]["id"];

    let (s, p) = review(&worker, sub, 100).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (403, Some("own_submission")),
        "{p}"
    );
    // Someone who may not read it is told it does not exist.
    let (s, p) = review(&stranger, sub, 100).await;
    assert_eq!(s, 404, "{p}");
    let (s, p) = call(
        &poster,
        Method::POST,
        "/v1/quality/submit",
        Some(json!({"submission_id": sub, "score": 70.5})),
    )
    .await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = review(&poster, sub, 101).await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["errors"][0]["field"], "score", "{p}");
    // The poster's review is peer evidence; it does not decide the spot check.
    let (s, r) = review(&poster, sub, 40).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["decision"], Value::Null);
    assert_eq!(r["submission"], Value::Null);
    let (s, p) = review(&poster, sub, 90).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("already_reviewed")),
        "{p}"
    );
    let held = worker
        .client
        .submission(id_of(&v["submission"]))
        .await
        .unwrap();
    assert_eq!(held.status, nervix_client::SubmissionStatus::PendingReview);

    // Roles: only agent and reviewer are given, and the operator's identity keeps its own.
    let role = |who: String, role: &'static str| {
        let admin = &app.admin;
        async move {
            admin
                .request(
                    Method::POST,
                    &format!("/v1/admin/agents/{who}/role"),
                    Some(&json!({ "role": role })),
                )
                .await
                .unwrap()
        }
    };
    let (s, p) = role(stranger.id.to_string(), "admin").await;
    assert_eq!(s, 422, "{p}");
    let (s, p) = role(app.admin_id.to_string(), "agent").await;
    assert_eq!(
        (s, p["code"].as_str()),
        (403, Some("invalid_target")),
        "{p}"
    );
    let (s, p) = role(worker.id.to_string(), "overlord").await;
    assert_eq!(s, 422, "{p}");
    // A reviewer below the threshold rejects: the task goes back, unpaid.
    let (s, p) = role(stranger.handle.clone(), "reviewer").await;
    assert_eq!(s, 200, "{p}");
    assert!(app
        .admin
        .request(Method::GET, "/v1/admin/audit?action=admin.role", None)
        .await
        .unwrap()
        .1["items"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let (s, r) = review(&stranger, sub, 30).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["decision"], "rejected", "{r}");
    assert_eq!(r["submission"]["status"], "rejected");
    assert_eq!(balance(&worker).await, 0);
    let after = poster.client.task(id_of(&t)).await.unwrap();
    assert_eq!(after.status, nervix_client::TaskStatus::Available);
    app.stop().await;
}

async fn unreviewed_hold_is_accepted_after_the_deadline(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.spot_check_rate = 1.0;
        c.review_timeout = chrono::Duration::milliseconds(300);
    })
    .await
    else {
        return;
    };
    let worker = app.enroll("late-worker", &[]).await;
    let t = app.admin_post(task_body("Wait for me", "10.00", &[])).await;
    let v = work_on(&worker, id_of(&t)).await;
    assert_eq!(v["submission"]["status"], "pending_review");
    let score = v["submission"]["quality_score"].as_i64().unwrap();
    let id = id_of(&v["submission"]);
    let sub = eventually(Duration::from_secs(10), "the review reaper", || async {
        let s = worker.client.submission(id).await.unwrap();
        (s.status == nervix_client::SubmissionStatus::Accepted).then_some(s)
    })
    .await;
    assert_eq!(sub.payout.unwrap().cents(), 10 * score);
    app.stop().await;
}

async fn reputation_follows_work(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("rep-worker", &[]).await;
    let mut rx = app.running().state.app.bus.subscribe();
    for i in 0..3 {
        let t = app
            .admin_post(task_body(&format!("job {i}"), "5.00", &[]))
            .await;
        let v = work_on(&worker, id_of(&t)).await;
        assert_eq!(v["submission"]["status"], "accepted", "{v}");
    }
    let path = format!("/v1/agents/{}/reputation", worker.handle);
    let rep = eventually(Duration::from_secs(10), "a recomputed score", || async {
        let (s, r) = call(&worker, Method::GET, &path, None).await;
        assert_eq!(s, 200, "{r}");
        (r["score"] != "50.00").then_some(r)
    })
    .await;
    assert_eq!(rep["agent_id"], worker.handle);
    assert_eq!(rep["level"], "novice", "probation: {rep}");
    assert_eq!(
        rep["weights"],
        json!({"automated": 0.3, "success": 0.4, "peer": 0.3})
    );
    assert_eq!(rep["layers"]["peer"], "50.00", "no reviews yet: {rep}");
    assert_ne!(rep["layers"]["success"], "50.00", "{rep}");
    // The SDK reads the same document, by UUID too.
    let typed = worker
        .client
        .reputation(&worker.id.to_string())
        .await
        .unwrap();
    assert_eq!(typed.agent_id, worker.handle);

    let (s, h) = call(
        &worker,
        Method::GET,
        &format!("/v1/agents/{}/reputation/history", worker.handle),
        None,
    )
    .await;
    assert_eq!(s, 200, "{h}");
    let snapshots = h["items"].as_array().unwrap();
    assert!(!snapshots.is_empty(), "{h}");
    assert_eq!(snapshots[0]["score"], rep["score"]);

    let (s, h) = call(
        &worker,
        Method::GET,
        &format!("/v1/agents/{}/history?limit=2", worker.id),
        None,
    )
    .await;
    assert_eq!(s, 200, "{h}");
    let items = h["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["task_title"], "job 2");
    assert_eq!(items[0]["reward"], "5.00");
    assert_eq!(items[0]["status"], "accepted");
    assert!(h["next_cursor"].is_string());

    // The agent is told: a reputation_update frame.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let frame = loop {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("a reputation_update frame within 10 s")
            .expect("bus");
        if let Event::ToAgent {
            agent_id, frame, ..
        } = event
        {
            if agent_id == worker.id && matches!(frame, Frame::ReputationUpdate { .. }) {
                break frame;
            }
        }
    };
    let wire = serde_json::to_value(&frame).unwrap();
    assert_eq!(wire["type"], "reputation_update");
    assert!(wire["data"]["score"].is_string(), "{wire}");
    let (s, _) = call(
        &worker,
        Method::GET,
        "/v1/agents/nobody-here/reputation",
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.stop().await;
}

async fn novice_capacity_is_capped_by_level(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("cap-worker", &[]).await;
    worker
        .client
        .patch_config(&json!({"max_concurrent_tasks": 5}))
        .await
        .unwrap();
    let mut codes = Vec::new();
    for i in 0..3 {
        let t = app
            .admin_post(task_body(&format!("cap {i}"), "1.00", &[]))
            .await;
        let (s, v) = call(
            &worker,
            Method::POST,
            &format!("/v1/tasks/{}/claim", id_of(&t)),
            Some(json!({"estimated_duration": 600})),
        )
        .await;
        codes.push((s, v["code"].as_str().map(str::to_owned)));
    }
    assert_eq!(
        codes,
        [
            (200, None),
            (200, None),
            (429, Some("at_capacity".to_owned()))
        ],
        "a novice holds at most 2 tasks whatever it asks for"
    );
    app.stop().await;
}
