//! Requests the OpenAPI document calls valid are served as it says; found by schemathesis
//! (`.ci/schemathesis`) and fixed in the handlers rather than in the document.

use nervix_client::Method;
use serde_json::json;

use crate::common::{id_of, task_body, Backend, TestApp};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    whole_numbers_written_as_floats_are_integers,
    claim_body_null_means_the_defaults,
    admins_may_not_suspend_themselves,
    grants_are_bounded,
    the_admin_identity_has_no_key_login,
    empty_audit_actor_means_any,
}

/// JSON Schema calls `3.0` an integer; every integer field takes it.
async fn whole_numbers_written_as_floats_are_integers(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let mut body = task_body("floats", "2.00", &[]);
    body["max_attempts"] = json!(4.0);
    let (status, task) = app
        .admin
        .request(Method::POST, "/v1/tasks", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["max_attempts"], 4);

    body["max_attempts"] = json!(4.5);
    let (status, problem) = app
        .admin
        .request(Method::POST, "/v1/tasks", Some(&body))
        .await
        .unwrap();
    crate::common::assert_field_error(status, &problem, "max_attempts");

    let (status, me) = app
        .admin
        .request(
            Method::PATCH,
            "/v1/agents/me/config",
            Some(&json!({"max_concurrent_tasks": 7.0})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["config"]["max_concurrent_tasks"], 7);

    let worker = app.enroll("floaty", &[]).await;
    let id = id_of(&app.admin_post(task_body("claim me", "1.00", &[])).await);
    let (status, claimed) = worker
        .client
        .request(
            Method::POST,
            &format!("/v1/tasks/{id}/claim"),
            Some(&json!({"estimated_duration": 600.0})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{claimed}");
    app.stop().await;
}

/// The claim body is optional, and JSON `null` is as good as none.
async fn claim_body_null_means_the_defaults(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let worker = app.enroll("nully", &[]).await;
    let id = id_of(&app.admin_post(task_body("claim me", "1.00", &[])).await);
    let r = worker
        .client
        .request_raw(
            Method::POST,
            &format!("/v1/tasks/{id}/claim"),
            &[],
            Some(b"null".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    app.stop().await;
}

/// Suspending oneself is refused as not allowed (403), not as a bad field (422).
async fn admins_may_not_suspend_themselves(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for action in ["suspend", "reinstate"] {
        let (status, problem) = app
            .admin
            .request(
                Method::POST,
                &format!("/v1/admin/agents/{}/{action}", app.admin_id),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 403, "{problem}");
        assert_eq!(problem["code"], "invalid_target");
    }
    app.stop().await;
}

/// A grant above the maximum is refused naming `amount`; one at the maximum is not.
async fn grants_are_bounded(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("rich", &[]).await;
    let path = format!("/v1/admin/agents/{}/grant", agent.id);
    for amount in [json!(1_000_000_000.01), json!("92233720368547758.07")] {
        let (status, problem) = app
            .admin
            .request(Method::POST, &path, Some(&json!({ "amount": amount })))
            .await
            .unwrap();
        crate::common::assert_field_error(status, &problem, "amount");
    }
    let (status, body) = app
        .admin
        .request(
            Method::POST,
            &path,
            Some(&json!({"amount": "1000000000.00"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, me) = agent
        .client
        .request(Method::GET, "/v1/agents/me/earnings", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["balance"], "1000000000.00");
    app.stop().await;
}

/// The operator's admin identity gets tokens from `nervix admin create-token` only: a login
/// challenge for it is refused up front (it used to fail later with a 500 when its random key
/// bytes were no curve point).
async fn the_admin_identity_has_no_key_login(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    for who in ["admin".to_owned(), app.admin_id.to_string()] {
        let (status, problem) = app
            .client()
            .request(
                Method::POST,
                "/v1/auth/challenge",
                Some(&json!({ "agent_id": who })),
            )
            .await
            .unwrap();
        assert_eq!(status, 403, "{problem}");
        assert_eq!(problem["code"], "no_key_login");
    }
    app.stop().await;
}

/// A filter left empty (`?actor=&action=`) filters nothing, as an empty `cursor` does.
async fn empty_audit_actor_means_any(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let (status, page) = app
        .admin
        .request(Method::GET, "/v1/admin/audit?actor=&action=", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(!page["items"].as_array().unwrap().is_empty(), "{page}");
    app.stop().await;
}
