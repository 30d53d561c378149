//! The task engine over HTTP: posting and escrow, claims, submissions and payment, leases and
//! deadlines, workflows, idempotency and matching.

use std::collections::HashSet;
use std::time::Duration;

use nervix_client::{ClaimRequest, Client, Method, SubmissionStatus, TaskStatus};
use nervix_server::bus::{Event, Frame};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{
    assert_api_err, assert_field_error, eventually, id_of, in_secs, post_task_json, task_body,
    Backend, TestAgent, TestApp, ANSWER,
};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    admin_posts_task,
    task_validation_names_fields,
    posting_needs_funds,
    claim_race_has_one_winner,
    claim_eligibility,
    accepted_submission_pays,
    schema_rejections_retry_then_fail_and_refund,
    release_and_cancel,
    deadline_expires_tasks,
    lost_lease_returns_task,
    workflow_diamond,
    workflow_invalid_dag,
    workflow_failure_cascades,
    idempotent_post,
    matching_notifies_top_n,
    leaderboard_ranks_agents,
    concurrent_identical_submits_get_one_result,
    stats_are_served_from_a_snapshot,
    cancelling_announces_every_changed_task,
    quality_checks_decide_text_submissions,
}

const PERSON_SCHEMA: &str = r#"{"type": "object", "required": ["name"],
    "properties": {"name": {"type": "string"}}, "additionalProperties": false}"#;

fn person_schema() -> Value {
    serde_json::from_str(PERSON_SCHEMA).unwrap()
}

async fn get_task(client: &Client, id: Uuid) -> Value {
    let (status, v) = client
        .request(Method::GET, &format!("/v1/tasks/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

async fn claim(agent: &TestAgent, id: Uuid) -> (u16, Value) {
    agent
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{id}/claim"),
            Some(&json!({"estimated_duration": 600})),
        )
        .await
        .unwrap()
}

async fn claim_ok(agent: &TestAgent, id: Uuid) -> Value {
    let (status, v) = claim(agent, id).await;
    assert_eq!(status, 200, "claim by {}: {v}", agent.handle);
    v
}

async fn submit(agent: &TestAgent, id: Uuid, content: Value) -> (u16, Value) {
    agent
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{id}/submit"),
            Some(&json!({"submission_data": {"content": content, "notes": "done"}})),
        )
        .await
        .unwrap()
}

/// Claims and completes a text task.
async fn complete(agent: &TestAgent, id: Uuid) -> Value {
    claim_ok(agent, id).await;
    let (status, v) = submit(agent, id, json!(ANSWER)).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "accepted", "{v}");
    v
}

/// `GET /v1/agents/me/earnings`: (available balance, escrowed), in cents.
async fn money(agent: &TestAgent) -> (i64, i64) {
    let e = agent.client.earnings().await.unwrap();
    (e.balance.cents(), e.escrowed.cents())
}

async fn admin_posts_task(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let body = json!({
        "title": "Summarise a paper",
        "description": "Three bullet points.",
        "requirements": {"capabilities": ["Research", "writing"], "min_reputation": 10},
        "reward": "12.50",
        "complexity": "medium",
        "deadline": in_secs(7200),
        "kind": "json",
        "output_schema": person_schema(),
        "language": "en",
        "max_attempts": 2,
    });
    let r = app
        .admin
        .request_raw(
            Method::POST,
            "/v1/tasks",
            &[],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let t = r.json();
    assert_eq!(t["reward"], "12.50");
    assert_eq!(t["title"], "Summarise a paper");
    assert_eq!(t["status"], "available");
    assert_eq!(t["complexity"], "medium");
    assert_eq!(t["kind"], "json");
    assert_eq!(t["language"], "en");
    assert!(
        t["min_words"].is_null(),
        "json tasks have no min_words: {t}"
    );
    assert_eq!(t["output_schema"], person_schema());
    assert_eq!(
        t["requirements"]["capabilities"],
        json!(["research", "writing"])
    );
    assert_eq!(t["requirements"]["min_reputation"], "10.00");
    assert_eq!(t["posted_by"], app.admin_id.to_string());
    assert_eq!(t["attempts"], 0);
    assert_eq!(t["max_attempts"], 2);
    assert_eq!(t["depends_on"], json!([]));
    assert!(t["assigned_agent_id"].is_null());
    assert!(t["workflow_id"].is_null());
    assert!(t["lease_expires_at"].is_null());
    let id = id_of(&t);
    let fetched = get_task(&app.admin, id).await;
    assert_eq!(fetched["id"], t["id"]);
    assert_eq!(fetched["reward"], "12.50");

    // A JSON number is accepted too, and defaults apply.
    let t = app
        .admin_post(json!({
            "title": "numeric reward", "reward": 7.5, "complexity": "simple",
            "deadline": in_secs(600),
        }))
        .await;
    assert_eq!(t["reward"], "7.50");
    assert_eq!(t["kind"], "text");
    assert_eq!(t["max_attempts"], 3);
    assert!(t["output_schema"].is_null());

    // Listed for the admin.
    let (_, page) = app
        .admin
        .request(Method::GET, "/v1/tasks?eligible=false", None)
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    app.stop().await;
}

async fn task_validation_names_fields(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let base = task_body("valid", "5.00", &["coding"]);
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("title", json!("")), "title"),
        (with("title", json!("   ")), "title"),
        (with("reward", json!(0)), "reward"),
        (with("reward", json!("0.00")), "reward"),
        (with("reward", json!("-5.00")), "reward"),
        (with("reward", json!("100000.01")), "reward"),
        (with("complexity", json!("galactic")), "complexity"),
        (with("kind", json!("poem")), "kind"),
        (with("deadline", json!("2001-01-01T00:00:00Z")), "deadline"),
        (with("output_schema", json!({"type": 12})), "output_schema"),
        (
            with("output_schema", json!("not a schema")),
            "output_schema",
        ),
        (with("max_attempts", json!(0)), "max_attempts"),
        (with("min_words", json!(-1)), "min_words"),
        (with("min_words", json!(100_001)), "min_words"),
        (with("depends_on", json!([Uuid::new_v4()])), "depends_on"),
        (
            with(
                "requirements",
                json!({"capabilities": ["no spaces allowed"]}),
            ),
            "requirements.capabilities",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app
            .admin
            .request(Method::POST, "/v1/tasks", Some(&body))
            .await
            .unwrap();
        assert_field_error(status, &problem, field);
    }
    // Malformed amounts are refused too.
    for reward in [json!("1.234"), json!(1.234), json!("12,50"), json!("abc")] {
        let (status, problem) = app
            .admin
            .request(
                Method::POST,
                "/v1/tasks",
                Some(&with("reward", reward.clone())),
            )
            .await
            .unwrap();
        assert_field_error(status, &problem, "reward");
    }
    // Type errors name their field too.
    for (body, field) in [
        (with("deadline", json!("tomorrow")), "deadline"),
        (with("depends_on", json!(["not-a-uuid"])), "depends_on[0]"),
        (with("key", json!("a")), "key"),
    ] {
        let (status, problem) = app
            .admin
            .request(Method::POST, "/v1/tasks", Some(&body))
            .await
            .unwrap();
        assert_field_error(status, &problem, field);
    }
    // Several errors at once are all named.
    let mut many = base.clone();
    many["title"] = json!("");
    many["complexity"] = json!("nope");
    let (status, problem) = app
        .admin
        .request(Method::POST, "/v1/tasks", Some(&many))
        .await
        .unwrap();
    assert_field_error(status, &problem, "title");
    assert_field_error(status, &problem, "complexity");
    // Nothing was created.
    let (_, page) = app
        .admin
        .request(Method::GET, "/v1/tasks?eligible=false", None)
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]), "{page}");
    // And the valid body is fine.
    app.admin_post(base).await;
    app.stop().await;
}

async fn posting_needs_funds(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("poster", &[]).await;
    let (status, problem) = poster
        .client
        .request(
            Method::POST,
            "/v1/tasks",
            Some(&task_body("t", "10.00", &[])),
        )
        .await
        .unwrap();
    assert_eq!(status, 402, "{problem}");
    assert_eq!(problem["code"], "insufficient_funds");

    // Only admins grant.
    let (status, _) = poster
        .client
        .request(
            Method::POST,
            &format!("/v1/admin/agents/{}/grant", poster.id),
            Some(&json!({"amount": "100.00"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    app.grant(poster.id, "100.00").await;
    let t = post_task_json(&poster.client, task_body("t", "60.00", &[])).await;
    assert_eq!(t["posted_by"], poster.id.to_string());
    assert_eq!(money(&poster).await, (4000, 6000));
    // 40.00 left: a second 60.00 task does not fit.
    let (status, problem) = poster
        .client
        .request(
            Method::POST,
            "/v1/tasks",
            Some(&task_body("t2", "60.00", &[])),
        )
        .await
        .unwrap();
    assert_eq!(status, 402, "{problem}");
    assert_eq!(problem["code"], "insufficient_funds");
    post_task_json(&poster.client, task_body("t3", "40.00", &[])).await;
    assert_eq!(money(&poster).await, (0, 10000));
    app.stop().await;
}

async fn claim_race_has_one_winner(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agents = app.enroll_many("racer", 30, &["race"]).await;
    for round in 0..20 {
        let t = app
            .admin_post(task_body(&format!("race {round}"), "1.00", &["race"]))
            .await;
        let id = id_of(&t);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(agents.len()));
        let results = futures::future::join_all(agents.iter().map(|a| {
            let client = a.client.clone();
            let agent_id = a.id;
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let r = client
                    .request(Method::POST, &format!("/v1/tasks/{id}/claim"), None)
                    .await
                    .unwrap();
                (agent_id, r)
            })
        }))
        .await;
        let mut winners = Vec::new();
        for r in results {
            let (agent_id, (status, body)) = r.unwrap();
            match status {
                200 => winners.push(agent_id),
                409 => assert_eq!(body["code"], "already_claimed", "round {round}: {body}"),
                other => panic!("round {round}: unexpected {other}: {body}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let t = get_task(&app.admin, id).await;
        assert_eq!(t["status"], "claimed");
        assert_eq!(t["assigned_agent_id"], winners[0].to_string());
        // Free the winner's slot for the next rounds.
        let (status, _) = app
            .admin
            .request(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    app.stop().await;
}

async fn claim_eligibility(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let alpha = app.enroll("alpha", &["basic"]).await;
    let keys = nervix_client::AgentKeys::generate();
    let req = nervix_client::EnrollRequest::new("solo", &keys)
        .capabilities(["basic"])
        .max_concurrent_tasks(1);
    let solo = app.enroll_request(keys, req).await;

    // Missing capability.
    let t = id_of(
        &app.admin_post(task_body("special", "1.00", &["special"]))
            .await,
    );
    let (status, body) = claim(&alpha, t).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_eligible")),
        "{body}"
    );
    // A novice on a medium task.
    let mut medium = task_body("medium", "1.00", &["basic"]);
    medium["complexity"] = json!("medium");
    let t = id_of(&app.admin_post(medium).await);
    let (status, body) = claim(&alpha, t).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_eligible")),
        "{body}"
    );
    // Below the minimum reputation.
    let mut picky = task_body("picky", "1.00", &["basic"]);
    picky["requirements"]["min_reputation"] = json!("60.00");
    let t = id_of(&app.admin_post(picky).await);
    let (status, body) = claim(&alpha, t).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_eligible")),
        "{body}"
    );
    // Own task.
    app.grant(alpha.id, "5.00").await;
    let own = id_of(&post_task_json(&alpha.client, task_body("own", "1.00", &["basic"])).await);
    let (status, body) = claim(&alpha, own).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_eligible")),
        "{body}"
    );
    // The same task is fine for someone else: the refusals were about the claimer.
    claim_ok(&solo, own).await;

    // At capacity (max_concurrent_tasks 1).
    let next = id_of(&app.admin_post(task_body("next", "1.00", &["basic"])).await);
    let (status, body) = claim(&solo, next).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("at_capacity")),
        "{body}"
    );
    // Already claimed.
    let (status, body) = claim(&alpha, own).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_claimed")),
        "{body}"
    );

    // Blocked by a dependency.
    let upstream = id_of(&app.admin_post(task_body("up", "1.00", &["basic"])).await);
    let mut down = task_body("down", "1.00", &["basic"]);
    down["depends_on"] = json!([upstream]);
    let down = app.admin_post(down).await;
    assert_eq!(down["status"], "blocked");
    assert_eq!(down["depends_on"], json!([upstream]));
    let (status, body) = claim(&alpha, id_of(&down)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_available")),
        "{body}"
    );
    // Cancelled.
    let (status, _) = app
        .admin
        .request(Method::POST, &format!("/v1/tasks/{next}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, body) = claim(&alpha, next).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_available")),
        "{body}"
    );
    // Unknown task.
    let (status, _) = claim(&alpha, Uuid::new_v4()).await;
    assert_eq!(status, 404);

    // The eligible listing agrees: alpha may claim only `up`.
    let page = alpha
        .client
        .tasks(&nervix_client::TaskQuery::default())
        .await
        .unwrap();
    let ids: Vec<Uuid> = page.items.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![upstream], "{:?}", page.items);
    app.stop().await;
}

async fn accepted_submission_pays(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("worker", &["writing"]).await;
    let bystander = app.enroll("bystander", &["writing"]).await;
    // A haiku is short: the task asks for 5 words instead of the default 20.
    let mut haiku = task_body("Write a haiku", "12.50", &["writing"]);
    haiku["min_words"] = json!(5);
    let t = app.admin_post(haiku).await;
    assert_eq!(t["min_words"], 5, "{t}");
    let id = id_of(&t);
    let claimed = worker
        .client
        .claim(
            id,
            &ClaimRequest {
                estimated_duration: Some(600),
                ..ClaimRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(claimed.task.status, TaskStatus::Claimed);
    assert_eq!(claimed.task.assigned_agent_id, Some(worker.id));
    let lease = claimed.lease_expires_at - chrono::Utc::now();
    assert!(
        lease > chrono::Duration::seconds(590) && lease <= chrono::Duration::seconds(600),
        "{lease}"
    );
    // Only the assignee submits.
    let (status, body) = submit(&bystander, id, json!("mine now")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("not_assignee")),
        "{body}"
    );

    let (status, v) = submit(
        &worker,
        id,
        json!("Old pond / a frog jumps in / the sound of water"),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let s = &v["submission"];
    assert_eq!(s["status"], "accepted", "{v}");
    assert_eq!(s["task_id"], id.to_string());
    assert_eq!(s["agent_id"], worker.id.to_string());
    let score = s["quality_score"].as_i64().expect("quality_score");
    assert!((60..=100).contains(&score), "{score}");
    let checks = s["checks"].as_array().expect("checks");
    let names: HashSet<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        HashSet::from([
            "non_empty",
            "size_limit",
            "length",
            "repetition",
            "secret_scan"
        ])
    );
    for c in checks {
        assert!(
            c["passed"].is_boolean() && c["score"].is_number() && c["details"].is_string(),
            "{c}"
        );
    }
    assert_eq!(v["task"]["status"], "completed");
    assert_eq!(get_task(&app.admin, id).await["status"], "completed");

    // Paid reward × score / 100 (novice multiplier 1.0), in cents rounded down.
    let expected = 1250 * score / 100;
    let me = worker.client.me().await.unwrap();
    assert_eq!(me.total_earnings.unwrap().cents(), expected);
    assert_eq!(me.total_tasks_completed, 1);
    assert_eq!(money(&worker).await, (expected, 0));

    // Visible to the submitter and the poster, hidden from others.
    let sid = Uuid::parse_str(s["id"].as_str().unwrap()).unwrap();
    let mine = worker.client.submission(sid).await.unwrap();
    assert_eq!(mine.status, SubmissionStatus::Accepted);
    assert_eq!(mine.quality_score, Some(score as f64));
    app.admin.submission(sid).await.unwrap();
    assert_api_err(bystander.client.submission(sid).await, 404, "not_found");
    // Submitting again is refused.
    let (status, _) = submit(&worker, id, json!("again")).await;
    assert_eq!(status, 409);
    app.stop().await;
}

async fn schema_rejections_retry_then_fail_and_refund(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("poster", &[]).await;
    let worker = app.enroll("worker", &["data"]).await;
    app.grant(poster.id, "20.00").await;
    let mut body = task_body("Extract a person", "20.00", &["data"]);
    body["kind"] = json!("json");
    body["output_schema"] = person_schema();
    body["max_attempts"] = json!(2);
    let id = id_of(&post_task_json(&poster.client, body.clone()).await);
    assert_eq!(money(&poster).await, (0, 2000));

    // First attempt: wrong type.
    claim_ok(&worker, id).await;
    let (status, v) = submit(&worker, id, json!({"name": 5})).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "rejected", "{v}");
    assert!(v["submission"]["quality_score"].as_i64().unwrap() < 60);
    let schema_check = v["submission"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "json_schema")
        .cloned()
        .expect("json_schema check");
    assert_eq!(schema_check["passed"], false);
    assert!(v["submission"]["feedback"].is_string());
    let t = get_task(&app.admin, id).await;
    assert_eq!(t["status"], "available", "{t}");
    assert_eq!(t["attempts"], 1);
    assert!(t["assigned_agent_id"].is_null());
    assert_eq!(
        worker
            .client
            .me()
            .await
            .unwrap()
            .total_earnings
            .unwrap()
            .cents(),
        0
    );

    // The rejected worker may not claim it again (403 saying why); another agent makes the
    // second and last attempt: a string holding non-conforming JSON.
    let (status, p) = claim(&worker, id).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (403, Some("not_eligible")),
        "{p}"
    );
    assert!(p["detail"].as_str().unwrap().contains("rejected"), "{p}");
    let second = app.enroll("second", &["data"]).await;
    claim_ok(&second, id).await;
    let (status, v) = submit(&second, id, json!(r#"{"nom": "x"}"#)).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "rejected", "{v}");
    assert_eq!(v["task"]["status"], "failed", "{v}");
    let t = get_task(&app.admin, id).await;
    assert_eq!(t["status"], "failed");
    assert_eq!(t["attempts"], 2);
    let (status, _) = claim(&worker, id).await;
    assert_eq!(status, 409);

    // The escrow went back to the poster, who can post it again.
    assert_eq!(money(&poster).await, (2000, 0));
    let again = id_of(&post_task_json(&poster.client, body).await);
    // A conforming answer, sent as a string holding JSON, is accepted.
    claim_ok(&worker, again).await;
    let (status, v) = submit(&worker, again, json!(r#"{"name": "Ada"}"#)).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "accepted", "{v}");
    // Content that is not JSON at all is a 422 before any check.
    let third = id_of(
        &app.admin_post({
            let mut b = task_body("json again", "1.00", &["data"]);
            b["kind"] = json!("json");
            b
        })
        .await,
    );
    claim_ok(&worker, third).await;
    let (status, problem) = submit(&worker, third, json!("{not json")).await;
    assert_field_error(status, &problem, "submission_data.content");
    app.stop().await;
}

async fn release_and_cancel(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("poster", &[]).await;
    let worker = app.enroll("worker", &["ops"]).await;
    let other = app.enroll("other", &["ops"]).await;

    // Release by the assignee only.
    let id = id_of(
        &app.admin_post(task_body("releasable", "3.00", &["ops"]))
            .await,
    );
    claim_ok(&worker, id).await;
    let (status, _) = other
        .client
        .request(Method::POST, &format!("/v1/tasks/{id}/release"), None)
        .await
        .unwrap();
    assert_eq!(status, 403);
    let released = worker.client.release(id).await.unwrap();
    assert_eq!(released.status, TaskStatus::Available);
    assert_eq!(released.assigned_agent_id, None);
    assert_eq!(released.attempts, 0);
    claim_ok(&other, id).await;

    // Cancel by the poster refunds the escrow; others may not cancel.
    app.grant(poster.id, "50.00").await;
    let id =
        id_of(&post_task_json(&poster.client, task_body("cancellable", "50.00", &["ops"])).await);
    claim_ok(&worker, id).await;
    for who in [&worker, &other] {
        let (status, body) = who
            .client
            .request(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
            .await
            .unwrap();
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(get_task(&app.admin, id).await["status"], "claimed");
    let cancelled = poster.client.cancel(id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);
    assert_eq!(money(&poster).await, (5000, 0));
    // Cancelling twice is a conflict, and the worker's slot is free again.
    let (status, _) = poster
        .client
        .request(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 409);
    let (status, _) = submit(&worker, id, json!("late")).await;
    assert_eq!(status, 409);
    post_task_json(&poster.client, task_body("again", "50.00", &["ops"])).await;
    app.stop().await;
}

async fn deadline_expires_tasks(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("worker", &["fast"]).await;
    let open = id_of(
        &app.admin_post({
            let mut b = task_body("soon due", "2.00", &["fast"]);
            b["deadline"] = json!(in_secs(3));
            b
        })
        .await,
    );
    let held = id_of(
        &app.admin_post({
            let mut b = task_body("soon due, claimed", "2.00", &["fast"]);
            b["deadline"] = json!(in_secs(3));
            b
        })
        .await,
    );
    let claimed = claim_ok(&worker, held).await;
    // The lease never outlives the deadline.
    let lease = chrono::DateTime::parse_from_rfc3339(claimed["lease_expires_at"].as_str().unwrap())
        .unwrap();
    let deadline =
        chrono::DateTime::parse_from_rfc3339(claimed["task"]["deadline"].as_str().unwrap())
            .unwrap();
    assert!(lease <= deadline);
    for id in [open, held] {
        let admin = app.admin.clone();
        eventually(Duration::from_secs(10), "the deadline reaper", || {
            let admin = admin.clone();
            async move {
                let t = get_task(&admin, id).await;
                (t["status"] == "expired").then_some(())
            }
        })
        .await;
    }
    let (status, _) = submit(&worker, held, json!("too late")).await;
    assert!(status == 403 || status == 409, "{status}");
    app.stop().await;
}

async fn lost_lease_returns_task(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let slow = app.enroll("slow", &["lease"]).await;
    let quick = app.enroll("quick", &["lease"]).await;
    let id = id_of(
        &app.admin_post(task_body("leased", "4.00", &["lease"]))
            .await,
    );
    claim_ok(&slow, id).await;
    // The matching index copies workloads from the database: the claim shows there...
    let matcher = app.running().state.app.matcher.clone();
    let workload = |n: u32| {
        let matcher = matcher.clone();
        let agent = slow.id;
        async move { (matcher.active_tasks(agent) == Some(n)).then_some(()) }
    };
    eventually(Duration::from_secs(10), "the claim in the index", || {
        workload(1)
    })
    .await;
    app.backdate_lease(id).await;
    let admin = app.admin.clone();
    let t = eventually(Duration::from_secs(10), "the lease reaper", || {
        let admin = admin.clone();
        async move {
            let t = get_task(&admin, id).await;
            (t["status"] == "available").then_some(t)
        }
    })
    .await;
    assert_eq!(t["attempts"], 1, "{t}");
    assert!(t["assigned_agent_id"].is_null(), "{t}");
    assert!(t["lease_expires_at"].is_null(), "{t}");
    // ...and so does the reaper taking it back, though the task no longer names its holder.
    eventually(
        Duration::from_secs(10),
        "the freed slot in the index",
        || workload(0),
    )
    .await;
    // The old holder cannot submit; someone else can take it.
    let (status, _) = submit(&slow, id, json!("finally")).await;
    assert!(status == 403 || status == 409, "{status}");
    complete(&quick, id).await;
    app.stop().await;
}

fn wf_task(key: &str, deps: &[&str]) -> Value {
    let mut t = task_body(&format!("step {key}"), "2.00", &["wf"]);
    t["key"] = json!(key);
    t["depends_on"] = json!(deps);
    t
}

fn by_key(wf: &Value) -> std::collections::HashMap<String, Value> {
    wf["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap().to_owned(), t.clone()))
        .collect()
}

async fn get_workflow(client: &Client, id: Uuid) -> Value {
    let (status, v) = client
        .request(Method::GET, &format!("/v1/workflows/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    v
}

fn statuses(wf: &Value) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = by_key(wf)
        .into_iter()
        .map(|(k, t)| (k, t["status"].as_str().unwrap().to_owned()))
        .collect();
    s.sort();
    s
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, s)| ((*k).to_owned(), (*s).to_owned()))
        .collect()
}

async fn workflow_diamond(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let workers = app.enroll_many("wf", 2, &["wf"]).await;
    let body = json!({"name": "diamond", "tasks": [
        wf_task("d", &["b", "c"]), wf_task("b", &["a"]), wf_task("a", &[]), wf_task("c", &["a"]),
    ]});
    let (status, wf) = app
        .admin
        .request(Method::POST, "/v1/workflows", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{wf}");
    assert_eq!(wf["name"], "diamond");
    assert_eq!(wf["status"], "active");
    let wf_id = id_of(&wf);
    let tasks = by_key(&wf);
    let tid = |k: &str| id_of(&tasks[k]);
    assert_eq!(
        statuses(&wf),
        expect(&[
            ("a", "available"),
            ("b", "blocked"),
            ("c", "blocked"),
            ("d", "blocked")
        ])
    );
    for t in tasks.values() {
        assert_eq!(t["workflow_id"], wf_id.to_string());
    }
    let deps: HashSet<String> = tasks["d"]["depends_on"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        deps,
        HashSet::from([tid("b").to_string(), tid("c").to_string()])
    );

    let (status, body) = claim(&workers[0], tid("b")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("not_available"))
    );

    complete(&workers[0], tid("a")).await;
    let wf = get_workflow(&app.admin, wf_id).await;
    assert_eq!(
        statuses(&wf),
        expect(&[
            ("a", "completed"),
            ("b", "available"),
            ("c", "available"),
            ("d", "blocked")
        ])
    );
    claim_ok(&workers[0], tid("b")).await;
    let wf = get_workflow(&app.admin, wf_id).await;
    assert_eq!(
        wf["progress"],
        json!({"total": 4, "completed": 1, "failed": 0, "running": 1, "percent": 25})
    );
    let (status, v) = submit(&workers[0], tid("b"), json!(ANSWER)).await;
    assert_eq!(status, 202, "{v}");
    // d waits for c as well.
    assert_eq!(get_task(&app.admin, tid("d")).await["status"], "blocked");
    complete(&workers[1], tid("c")).await;
    assert_eq!(get_task(&app.admin, tid("d")).await["status"], "available");
    complete(&workers[1], tid("d")).await;
    let wf = get_workflow(&app.admin, wf_id).await;
    assert_eq!(wf["status"], "completed");
    assert_eq!(
        wf["progress"],
        json!({"total": 4, "completed": 4, "failed": 0, "running": 0, "percent": 100})
    );
    app.stop().await;
}

async fn workflow_invalid_dag(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for (what, tasks) in [
        ("cycle", json!([wf_task("a", &["b"]), wf_task("b", &["a"])])),
        (
            "long cycle",
            json!([
                wf_task("a", &["c"]),
                wf_task("b", &["a"]),
                wf_task("c", &["b"]),
                wf_task("d", &[])
            ]),
        ),
        ("self", json!([wf_task("a", &["a"])])),
        (
            "unknown key",
            json!([wf_task("a", &[]), wf_task("b", &["zzz"])]),
        ),
        (
            "duplicate key",
            json!([wf_task("a", &[]), wf_task("a", &[])]),
        ),
    ] {
        let (status, problem) = app
            .admin
            .request(
                Method::POST,
                "/v1/workflows",
                Some(&json!({"name": what, "tasks": tasks})),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{what}: {problem}");
        assert_eq!(problem["code"], "invalid_dag", "{what}: {problem}");
    }
    // A task field error inside a workflow names the task.
    let mut bad = wf_task("b", &["a"]);
    bad["reward"] = json!(0);
    let (status, problem) = app
        .admin
        .request(
            Method::POST,
            "/v1/workflows",
            Some(&json!({"name": "bad reward", "tasks": [wf_task("a", &[]), bad]})),
        )
        .await
        .unwrap();
    assert_field_error(status, &problem, "tasks[1].reward");
    // Nothing was posted.
    let (_, page) = app
        .admin
        .request(Method::GET, "/v1/tasks?eligible=false", None)
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));
    app.stop().await;
}

async fn workflow_failure_cascades(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("worker", &["wf"]).await;
    let poster = app.enroll("poster", &[]).await;
    app.grant(poster.id, "8.00").await;
    let mut a = wf_task("a", &[]);
    a["kind"] = json!("json");
    a["output_schema"] = person_schema();
    a["max_attempts"] = json!(1);
    let body = json!({"name": "doomed", "tasks": [a, wf_task("b", &["a"]), wf_task("c", &["a"]), wf_task("d", &["b", "c"])]});
    let (status, wf) = poster
        .client
        .request(Method::POST, "/v1/workflows", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{wf}");
    assert_eq!(money(&poster).await, (0, 800));
    let wf_id = id_of(&wf);
    let a_id = id_of(&by_key(&wf)["a"]);
    claim_ok(&worker, a_id).await;
    let (status, v) = submit(&worker, a_id, json!({"nope": true})).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "rejected");
    assert_eq!(v["task"]["status"], "failed");

    let wf = get_workflow(&poster.client, wf_id).await;
    assert_eq!(wf["status"], "failed", "{wf}");
    assert_eq!(
        statuses(&wf),
        expect(&[
            ("a", "failed"),
            ("b", "cancelled"),
            ("c", "cancelled"),
            ("d", "cancelled")
        ])
    );
    assert_eq!(
        wf["progress"],
        json!({"total": 4, "completed": 0, "failed": 4, "running": 0, "percent": 0})
    );
    // Every escrow of the workflow went back.
    assert_eq!(money(&poster).await, (800, 0));
    app.stop().await;
}

async fn idempotent_post(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let poster = app.enroll("poster", &[]).await;
    app.grant(poster.id, "10.00").await;
    let body = task_body("once", "10.00", &[]);
    let send = |key: &'static str, body: Value| {
        let client = poster.client.clone();
        async move {
            let r = client
                .request_raw(
                    Method::POST,
                    "/v1/tasks",
                    &[("Idempotency-Key", key)],
                    Some(serde_json::to_vec(&body).unwrap()),
                )
                .await
                .unwrap();
            (r.status, r.json())
        }
    };
    let (s1, first) = send("key-1", body.clone()).await;
    assert_eq!(s1, 201, "{first}");
    // A repeat returns the first response without escrowing again (the balance is spent).
    let (s2, second) = send("key-1", body.clone()).await;
    assert_eq!(s2, 201, "{second}");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(money(&poster).await, (0, 1000));
    // Same key, different body.
    let mut other = body.clone();
    other["title"] = json!("twice");
    let (s3, problem) = send("key-1", other).await;
    assert_eq!(s3, 422, "{problem}");
    assert_eq!(problem["code"], "idempotency_key_reused");
    // A new key is a new post (and here, no funds). A failed request releases its key, so the
    // same key works once there is money.
    let (s4, problem) = send("key-2", body.clone()).await;
    assert_eq!(s4, 402, "{problem}");
    app.grant(poster.id, "10.00").await;
    let (s5, retried) = send("key-2", body.clone()).await;
    assert_eq!(s5, 201, "{retried}");
    let (_, cancelled) = poster
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{}/cancel", retried["id"].as_str().unwrap()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    // Concurrent retries of one request (a client timing out while the first still runs) post
    // it once, and every one of them answers with the first task.
    let racers: Vec<_> = (0..12)
        .map(|_| tokio::spawn(send("key-3", body.clone())))
        .collect();
    let mut ids = HashSet::new();
    for r in racers {
        let (status, v) = r.await.unwrap();
        assert_eq!(status, 201, "{v}");
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one task for one key: {ids:?}");
    assert_eq!(
        money(&poster).await,
        (0, 2000),
        "escrowed once for key-3 (and key-1)"
    );
    let (_, page) = app
        .admin
        .request(Method::GET, "/v1/tasks?eligible=false", None)
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
    // Keys are per caller: the admin's key-1 is its own.
    let (status, v) = app
        .admin
        .request_raw(
            Method::POST,
            "/v1/tasks",
            &[("Idempotency-Key", "key-1")],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await
        .map(|r| (r.status, r.json()))
        .unwrap();
    assert_eq!(status, 201, "{v}");
    assert_ne!(v["id"], first["id"]);
    app.stop().await;
}

async fn matching_notifies_top_n(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let eligible = app.enroll_many("match", 7, &["matchx"]).await;
    app.enroll_many("nomatch", 3, &["other"]).await;
    let running = app.running();
    // The index learns about enrollments from the bus; wait until it knows everyone.
    eventually(Duration::from_secs(10), "the matching index", || async {
        (running.state.app.matcher.len() >= 11).then_some(())
    })
    .await;
    let mut rx = running.state.app.bus.subscribe();
    let t = app
        .admin_post(task_body("match me", "9.99", &["matchx"]))
        .await;
    let id = id_of(&t);
    let eligible_ids: HashSet<Uuid> = eligible.iter().map(|a| a.id).collect();
    let mut notified: Vec<Uuid> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(deadline);
        let event = match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => break,
            Ok(e) => e.expect("bus"),
        };
        let Event::ToAgent {
            agent_id, frame, ..
        } = event
        else {
            continue;
        };
        // The frame as an agent receives it: `{"type", "data"}`.
        let wire = serde_json::to_value(&frame).expect("frame");
        if wire["type"] != "task_available" || wire["data"]["task_id"] != id.to_string() {
            continue;
        }
        assert!(
            eligible_ids.contains(&agent_id),
            "{agent_id} is not eligible"
        );
        let data = &wire["data"];
        let score = data["match_score"].as_f64().expect("match_score");
        assert!(score > 0.0 && score <= 1.0, "{score}");
        assert_eq!(data["reward"], "9.99");
        assert_eq!(data["title"], "match me");
        assert_eq!(data["complexity"], "simple");
        assert!(data["deadline"].is_string());
        notified.push(agent_id);
        if notified.len() == 5 {
            // Anything more would show up soon: listen a little longer.
            quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(700));
        }
    }
    let distinct: HashSet<Uuid> = notified.iter().copied().collect();
    assert_eq!(notified.len(), 5, "notified {notified:?}");
    assert_eq!(distinct.len(), 5);
    app.stop().await;
}

async fn leaderboard_ranks_agents(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let idle = app.enroll("idle-one", &["writing"]).await;
    let busy = app.enroll("busy-one", &["writing"]).await;
    let t = app
        .admin_post(task_body("Ranked work", "3.00", &["writing"]))
        .await;
    let id = id_of(&t);
    busy.client
        .claim(id, &ClaimRequest::default())
        .await
        .unwrap();
    let (status, body) = submit(&busy, id, json!(ANSWER)).await;
    assert_eq!(status, 202, "{body}");

    let (status, board) = app
        .client()
        .request(Method::GET, "/v1/leaderboard?limit=10", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{board}");
    let items = board["items"].as_array().unwrap();
    let handles: Vec<&str> = items
        .iter()
        .map(|e| e["agent_id"].as_str().unwrap())
        .collect();
    // Equal reputation: the agent with completed work ranks first; the operator is not listed.
    assert_eq!(handles, vec!["busy-one", "idle-one"], "{board}");
    assert_eq!(items[0]["rank"], 1);
    assert_eq!(items[0]["total_tasks_completed"], 1);
    assert!(items[0].get("total_earnings").is_none(), "public view only");
    assert_eq!(idle.id.to_string(), items[1]["id"].as_str().unwrap());

    let (status, problem) = app
        .client()
        .request(Method::GET, "/v1/leaderboard?limit=0", None)
        .await
        .unwrap();
    assert_field_error(status, &problem, "limit");
}

/// Identical submits racing with one key (a client retrying while the first is in flight):
/// the work is paid once, and every one answers with the one submission, as does a retry
/// after the task is completed. The key belongs to the submit's path: another path is
/// another request.
async fn concurrent_identical_submits_get_one_result(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("worker", &["writing"]).await;
    // A haiku is short: the task asks for 5 words instead of the default 20.
    let mut haiku = task_body("Write a haiku", "12.50", &["writing"]);
    haiku["min_words"] = json!(5);
    let t = app.admin_post(haiku).await;
    assert_eq!(t["min_words"], 5, "{t}");
    let id = id_of(&t);
    claim_ok(&worker, id).await;
    let body = json!({"submission_data": {"content": ANSWER}});
    let send = |path: String| {
        let (client, body) = (worker.client.clone(), body.clone());
        async move {
            let r = client
                .request_raw(
                    Method::POST,
                    &path,
                    &[("Idempotency-Key", "submit-1")],
                    Some(serde_json::to_vec(&body).unwrap()),
                )
                .await
                .unwrap();
            (r.status, r.json())
        }
    };
    let path = format!("/v1/tasks/{id}/submit");
    let racers: Vec<_> = (0..8).map(|_| tokio::spawn(send(path.clone()))).collect();
    let mut submissions = HashSet::new();
    for r in racers {
        let (status, v) = r.await.unwrap();
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["submission"]["status"], "accepted", "{v}");
        submissions.insert(v["submission"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(submissions.len(), 1, "one submission: {submissions:?}");
    let (earned, _) = money(&worker).await;
    assert!(earned > 0);
    let (status, v) = send(path).await;
    assert_eq!(status, 202, "{v}");
    assert!(submissions.contains(v["submission"]["id"].as_str().unwrap()));
    assert_eq!(money(&worker).await.0, earned, "paid once");
    // The same key on another path is another request (here: an unknown task).
    let (status, v) = send(format!("/v1/tasks/{}/submit", Uuid::now_v7())).await;
    assert_eq!(status, 404, "{v}");
    app.stop().await;
}

/// The counters `GET /v1/stats` and `/` show, at startup, unchanged until the next count, and
/// right after it.
async fn stats_are_served_from_a_snapshot(backend: Backend) {
    // No background count during the test: only the one at startup and the test's own.
    let Some(app) =
        TestApp::start_with(backend, |c| c.stats_interval = Duration::from_secs(3600)).await
    else {
        return;
    };
    let anon = app.client();
    let page = || async {
        let r = anon.request_raw(Method::GET, "/", &[], None).await.unwrap();
        assert_eq!(r.status, 200);
        String::from_utf8(r.body).unwrap()
    };
    // Counted at startup: the operator's admin identity existed then, and nothing else.
    let before = anon.stats().await.unwrap();
    assert_eq!(
        before,
        json!({"agents": 1, "agents_online": 0, "tasks_total": 0, "tasks_open": 0,
               "tasks_completed": 0, "workflows": 0, "total_paid_out": "0.00"})
    );
    assert!(page().await.contains(r#"<dd id="agents">1</dd>"#));

    let worker = app.enroll("tally", &["writing"]).await;
    let idle = app.enroll("idle", &[]).await;
    idle.client.me().await.unwrap();
    let done = id_of(
        &app.admin_post(task_body("Count me", "12.50", &["writing"]))
            .await,
    );
    app.admin_post(task_body("Leave me open", "3.00", &[]))
        .await;
    app.admin_post(task_body("Leave me open too", "2.00", &[]))
        .await;
    let cancelled = id_of(&app.admin_post(task_body("Cancelled", "2.00", &[])).await);
    let (status, v) = app
        .admin
        .request(Method::POST, &format!("/v1/tasks/{cancelled}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    complete(&worker, done).await;
    let paid = worker.client.me().await.unwrap().total_earnings.unwrap();
    assert!(paid.cents() > 0);

    // Requests read the snapshot, not the tables.
    assert_eq!(anon.stats().await.unwrap(), before);
    assert!(page().await.contains(r#"<dd id="agents">1</dd>"#));

    // Presence reaches storage in the background: count again until everyone is seen.
    let expected = json!({"agents": 3, "agents_online": 3, "tasks_total": 4, "tasks_open": 2,
        "tasks_completed": 1, "workflows": 0, "total_paid_out": paid.to_string()});
    let state = &app.running().state;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        state
            .app
            .stats
            .refresh(state.app.store.as_ref())
            .await
            .unwrap();
        let after = anon.stats().await.unwrap();
        if after == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{after} after a recount, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let html = page().await;
    for (id, value) in [
        ("agents", "3".to_owned()),
        ("online", "3".to_owned()),
        ("open", "2".to_owned()),
        ("completed", "1".to_owned()),
        ("paid", paid.to_string()),
    ] {
        assert!(
            html.contains(&format!(r#"<dd id="{id}">{value}</dd>"#)),
            "{id} = {value} in\n{html}"
        );
    }
    app.stop().await;
}

/// Cancelling a task cancels its open dependents with it; each of them gets its own
/// `task_update`, to the poster, like the task itself.
async fn cancelling_announces_every_changed_task(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let upstream = id_of(&app.admin_post(task_body("up", "1.00", &["basic"])).await);
    let mut down = task_body("down", "1.00", &["basic"]);
    down["depends_on"] = json!([upstream]);
    let down = id_of(&app.admin_post(down).await);
    let mut further = task_body("further", "1.00", &["basic"]);
    further["depends_on"] = json!([down]);
    let further = id_of(&app.admin_post(further).await);
    let mut rx = app.running().state.app.bus.subscribe();
    let (status, body) = app
        .admin
        .request(Method::POST, &format!("/v1/tasks/{upstream}/cancel"), None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut cancelled = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cancelled.len() < 3 {
        let Ok(event) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        if let Event::ToAgent {
            agent_id,
            frame: Frame::TaskUpdate {
                task_id, status, ..
            },
            ..
        } = event.expect("bus")
        {
            assert_eq!(agent_id, app.admin_id);
            assert_eq!(status, nervix_core::TaskStatus::Cancelled);
            cancelled.insert(task_id);
        }
    }
    assert_eq!(cancelled, HashSet::from([upstream, down, further]));
    app.stop().await;
}

/// `"x"` for a text task is rejected by `length`, with feedback saying how to fix it; a real
/// answer from another agent is accepted. A text task shows its default `min_words`.
async fn quality_checks_decide_text_submissions(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let lazy = app.enroll("lazy", &["writing"]).await;
    let careful = app.enroll("careful", &["writing"]).await;
    let t = app
        .admin_post(task_body("Review the guide", "10.00", &["writing"]))
        .await;
    assert_eq!(t["kind"], "text");
    assert_eq!(t["min_words"], 20, "{t}");
    let id = id_of(&t);

    claim_ok(&lazy, id).await;
    let (status, v) = submit(&lazy, id, json!("x")).await;
    assert_eq!(status, 202, "{v}");
    let s = &v["submission"];
    assert_eq!(s["status"], "rejected", "{v}");
    assert!(s["quality_score"].as_i64().unwrap() < 60, "{v}");
    let length = s["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "length")
        .expect("length check");
    assert_eq!(length["passed"], false);
    assert_eq!(length["score"], 5);
    assert_eq!(
        length["details"],
        "1 word; the task asks for at least 20 words"
    );
    let feedback = s["feedback"].as_str().unwrap();
    assert!(
        feedback.starts_with("rejected: quality score "),
        "{feedback}"
    );
    assert!(
        feedback.contains("\nlength failed: 1 word; the task asks for at least 20 words; to fix: "),
        "{feedback}"
    );
    assert_eq!(v["task"]["status"], "available", "{v}");

    // Filler is rejected too: it is long enough but says the same thing over and over.
    let filler_task = app
        .admin_post(task_body("Describe the product", "10.00", &["writing"]))
        .await;
    let filler_id = id_of(&filler_task);
    claim_ok(&lazy, filler_id).await;
    let (status, v) = submit(&lazy, filler_id, json!("great product ".repeat(20))).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "rejected", "{v}");
    assert!(
        v["submission"]["feedback"]
            .as_str()
            .unwrap()
            .contains("repetition failed"),
        "{v}"
    );

    // The task is open again (tests retry at once) for someone else, who hands in work.
    claim_ok(&careful, id).await;
    let (status, v) = submit(&careful, id, json!(ANSWER)).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["submission"]["status"], "accepted", "{v}");
    assert_eq!(v["submission"]["quality_score"], 100, "{v}");
    assert_eq!(
        v["submission"]["feedback"],
        "accepted with quality score 100 (threshold 60)"
    );
    assert_eq!(v["task"]["status"], "completed");
    app.stop().await;
}
