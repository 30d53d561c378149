//! Token scopes: narrower tokens, and the authorization matrix of every route × scope.

use std::collections::BTreeSet;
use std::time::Duration;

use nervix_client::{CreateTokenRequest, Method};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{tungstenite, Backend, TestApp};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    every_route_refuses_every_scope_but_its_own,
    a_narrowed_token_does_only_what_it_names,
    scopes_reach_the_websocket_and_a2a,
    the_dashboard_signed_in_with_a_read_only_token_only_reads,
    a_route_that_declares_no_scope_takes_only_unrestricted_tokens,
}

/// Every scope name of the API (the bearer scheme lists them; the server refuses others).
const SCOPES: &[&str] = &[
    "profile:read",
    "profile:write",
    "tasks:read",
    "tasks:work",
    "tasks:post",
    "reviews",
    "money:read",
    "money:withdraw",
    "messages",
    "notifications",
    "events",
    "admin",
];

/// The operations anyone may call without a token. A new route is either here or declares
/// the scopes it needs: this list is compared with the document.
const PUBLIC: &[&str] = &[
    "GET /.well-known/agent-card.json",
    "GET /.well-known/jwks.json",
    "GET /a2a/agents/{handle}/.well-known/agent-card.json",
    "GET /healthz",
    "GET /metrics",
    "GET /readyz",
    "GET /v1/agents",
    "GET /v1/agents/{id}",
    "GET /v1/agents/{id}/history",
    "GET /v1/agents/{id}/receipts",
    "GET /v1/agents/{id}/reputation",
    "GET /v1/agents/{id}/reputation/history",
    "GET /v1/leaderboard",
    "GET /v1/openapi.json",
    "GET /v1/stats",
    "POST /v1/auth/challenge",
    "POST /v1/auth/token",
    "POST /v1/enroll",
    "POST /v1/enroll/{enrollment_id}/respond",
];

/// The policy: the scope each route needs (`""`: any valid token). Compared with what the
/// document declares, so a change to either is a change to both.
const POLICY: &[(&str, &str)] = &[
    ("GET /v1/auth/verify", ""),
    ("POST /v1/auth/rotate", ""),
    ("POST /v1/auth/revoke", ""),
    ("POST /v1/auth/tokens", ""),
    ("GET /v1/agents/me", "profile:read"),
    ("PATCH /v1/agents/me/config", "profile:write"),
    ("GET /v1/tasks", "tasks:read"),
    ("GET /v1/tasks/{id}", "tasks:read"),
    ("GET /v1/submissions/{id}", "tasks:read"),
    ("GET /v1/workflows/{id}", "tasks:read"),
    ("GET /v1/artifacts/{id}", "tasks:read"),
    ("POST /v1/tasks/{id}/claim", "tasks:work"),
    ("POST /v1/tasks/{id}/submit", "tasks:work"),
    ("POST /v1/tasks/{id}/release", "tasks:work"),
    ("POST /v1/tasks/{id}/artifacts", "tasks:work"),
    ("POST /v1/tasks", "tasks:post"),
    ("POST /v1/tasks/{id}/cancel", "tasks:post"),
    ("POST /v1/workflows", "tasks:post"),
    ("POST /v1/workflows/{id}/cancel", "tasks:post"),
    ("GET /v1/quality/queue", "reviews"),
    ("POST /v1/quality/submit", "reviews"),
    ("GET /v1/agents/me/earnings", "money:read"),
    ("GET /v1/agents/me/contributions", "money:read"),
    ("GET /v1/withdrawals", "money:read"),
    ("POST /v1/withdrawal/request", "money:withdraw"),
    ("POST /v1/messages/send", "messages"),
    ("GET /v1/messages/history", "messages"),
    ("POST /v1/channels", "messages"),
    ("GET /v1/channels", "messages"),
    ("GET /v1/channels/{id}", "messages"),
    ("POST /v1/channels/{id}/members", "messages"),
    ("POST /v1/channels/{id}/leave", "messages"),
    ("GET /v1/notifications", "notifications"),
    ("POST /v1/notifications/mark-read", "notifications"),
    ("GET /v1/agent/connect", "events"),
    ("GET /v1/admin/audit", "admin"),
    ("POST /v1/admin/agents/{id}/suspend", "admin"),
    ("POST /v1/admin/agents/{id}/reinstate", "admin"),
    ("POST /v1/admin/agents/{id}/role", "admin"),
    ("POST /v1/admin/agents/{id}/grant", "admin"),
    ("GET /v1/admin/bonus-pool", "admin"),
    ("POST /v1/admin/bonus-pool/fund", "admin"),
    ("GET /v1/admin/withdrawals", "admin"),
    ("POST /v1/admin/withdrawals/{id}/approve", "admin"),
    ("POST /v1/admin/withdrawals/{id}/reject", "admin"),
    ("POST /v1/admin/announcements", "admin"),
    ("POST /v1/admin/signing-keys/rotate", "admin"),
];

async fn mint(client: &nervix_client::Client, scopes: &[&str]) -> String {
    client
        .create_token(&CreateTokenRequest {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_in: None,
        })
        .await
        .unwrap_or_else(|e| panic!("mint {scopes:?}: {e}"))
        .token
}

/// A request the route can parse: a fresh id in every path parameter, an empty JSON object
/// as the body of a write.
async fn call(app: &TestApp, token: &str, method: &str, path: &str) -> (u16, Value) {
    let path = path
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') {
                Uuid::now_v7().to_string()
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let body = (method != Method::GET).then(|| json!({}));
    app.client_with(token)
        .request(method, &path, body.as_ref())
        .await
        .unwrap()
}

fn is_scope_refusal((status, body): &(u16, Value)) -> bool {
    *status == 403 && body["code"] == "insufficient_scope"
}

/// Each route with a bearer requirement, called with a token of each single scope: refused
/// with `insufficient_scope` exactly when the scope is not one the route declares, and never
/// 401. The admin identity mints the tokens, so its role allows every scope and only the
/// scope decides.
async fn every_route_refuses_every_scope_but_its_own(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let doc = app.client().openapi().await.unwrap();
    let mut public = BTreeSet::new();
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let Some(security) = op["security"].as_array() else {
                public.insert(format!("{method} {path}"));
                continue;
            };
            let needed: BTreeSet<String> = security
                .iter()
                .filter_map(|alt| alt["bearer"].as_array())
                .flatten()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect();
            for s in &needed {
                assert!(SCOPES.contains(&s.as_str()), "{method} {path}: {s}");
            }
            routes.push((method, path.clone(), needed));
        }
    }
    let expected: BTreeSet<String> = PUBLIC.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(public, expected, "operations without a bearer requirement");
    let declared: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p, needed)| {
            let needed: Vec<&str> = needed.iter().map(String::as_str).collect();
            (format!("{m} {p}"), needed.join(" "))
        })
        .collect();
    let policy: BTreeSet<(String, String)> = POLICY
        .iter()
        .map(|(r, s)| ((*r).to_owned(), (*s).to_owned()))
        .collect();
    assert_eq!(declared, policy, "the routes' declared scopes");

    let mut tokens = Vec::new();
    for scope in SCOPES {
        tokens.push((*scope, mint(&app.admin, &[scope]).await));
    }
    let mut checked = 0;
    for (method, path, needed) in &routes {
        // Rotation and revocation end the token they are called with.
        let ends_token = path == "/v1/auth/rotate" || path == "/v1/auth/revoke";
        for (scope, token) in &tokens {
            let fresh;
            let token = if ends_token {
                fresh = mint(&app.admin, &[scope]).await;
                &fresh
            } else {
                token
            };
            let res = call(&app, token, method, path).await;
            assert_ne!(res.0, 401, "{method} {path} with {scope}: {res:?}");
            let allowed = needed.is_empty() || needed.contains(*scope);
            if allowed {
                assert!(
                    !is_scope_refusal(&res),
                    "{method} {path} refused {scope}: {res:?}"
                );
            } else {
                assert!(
                    is_scope_refusal(&res),
                    "{method} {path} let {scope} through: {res:?}"
                );
                let detail = res.1["detail"].as_str().unwrap();
                for n in needed {
                    assert!(detail.contains(n.as_str()), "{method} {path}: {detail}");
                }
            }
            checked += 1;
        }
        // An unrestricted admin token passes every scope check.
        let unrestricted = if ends_token {
            nervix_server::operator::create_admin_token(&app.config)
                .await
                .unwrap()
        } else {
            app.admin_token.clone()
        };
        let res = call(&app, &unrestricted, method, path).await;
        assert!(
            !is_scope_refusal(&res),
            "{method} {path} with admin: {res:?}"
        );
    }
    assert_eq!(checked, routes.len() * SCOPES.len());
    app.stop().await;
}

async fn a_narrowed_token_does_only_what_it_names(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("scoped", &["coding"]).await;
    app.grant(agent.id, "50.00").await;

    // Read-only, for a dashboard: an hour.
    let created = agent
        .client
        .create_token(&CreateTokenRequest {
            scopes: vec![
                "profile:read".into(),
                "tasks:read".into(),
                "money:read".into(),
            ],
            expires_in: Some(3600),
        })
        .await
        .unwrap();
    assert_eq!(created.scopes, ["profile:read", "tasks:read", "money:read"]);
    let left = created.expires_at - chrono::Utc::now();
    assert!(
        (3590..=3600).contains(&left.num_seconds()),
        "{}",
        left.num_seconds()
    );
    let read_only = app.client_with(&created.token);
    let verified = read_only.verify().await.unwrap();
    assert_eq!(verified.scopes, created.scopes);
    assert_eq!(read_only.me().await.unwrap().id, agent.id);
    read_only.earnings().await.unwrap();
    let (status, body) = read_only
        .request(Method::GET, "/v1/tasks", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    // It cannot post, withdraw or message…
    let task = crate::common::task_body("scoped task", "5.00", &["coding"]);
    for (method, path, body) in [
        (Method::POST, "/v1/tasks", task.clone()),
        (
            Method::POST,
            "/v1/withdrawal/request",
            json!({"amount": "1.00", "destination": "iban:x"}),
        ),
        (Method::GET, "/v1/notifications", Value::Null),
    ] {
        let body = (method == Method::POST).then_some(&body);
        let (status, problem) = read_only.request(method, path, body).await.unwrap();
        assert_eq!(status, 403, "{path}: {problem}");
        assert_eq!(problem["code"], "insufficient_scope", "{path}");
    }
    // …and nothing was written: the balance is whole.
    let balance = agent.client.earnings().await.unwrap();
    assert_eq!(balance.balance.to_string(), "50.00");

    // …nor give itself more than it has.
    let refused = read_only
        .create_token(&CreateTokenRequest {
            scopes: vec!["tasks:read".into(), "tasks:post".into()],
            expires_in: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403));
    assert!(refused.to_string().contains("tasks:post"), "{refused}");
    // Narrower still is fine.
    let narrower = mint(&read_only, &["tasks:read"]).await;
    assert_eq!(
        app.client_with(&narrower).verify().await.unwrap().scopes,
        ["tasks:read"]
    );

    // An agent's unrestricted token has every agent scope, never `admin`.
    let full = agent.client.verify().await.unwrap();
    assert!(full.scopes.iter().any(|s| s == "money:withdraw"));
    assert!(!full.scopes.iter().any(|s| s == "admin"));
    let refused = agent
        .client
        .create_token(&CreateTokenRequest {
            scopes: vec!["admin".into()],
            expires_in: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(403));

    // Bad requests name the field.
    for (body, field) in [
        (json!({"scopes": ["tasks:read", "root"]}), "scopes[1]"),
        (json!({"scopes": []}), "scopes"),
        (
            json!({"scopes": ["tasks:read"], "expires_in": 59}),
            "expires_in",
        ),
        (
            json!({"scopes": ["tasks:read"], "expires_in": 91 * 86400}),
            "expires_in",
        ),
    ] {
        let (status, problem) = agent
            .client
            .request(Method::POST, "/v1/auth/tokens", Some(&body))
            .await
            .unwrap();
        crate::common::assert_field_error(status, &problem, field);
    }

    // Rotation keeps the scopes; revoking the narrowed token leaves its parent alone.
    let mut rotating = app.client_with(&created.token);
    let rotated = rotating.rotate().await.unwrap();
    let after = app.client_with(&rotated.token).verify().await.unwrap();
    assert_eq!(after.scopes, created.scopes);
    app.client_with(&rotated.token).revoke().await.unwrap();
    assert_eq!(
        app.client_with(&rotated.token)
            .verify()
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    agent.client.verify().await.unwrap();

    // An admin token narrowed without `admin` is no admin.
    let ops = mint(&app.admin, &["profile:read"]).await;
    let (status, problem) = app
        .client_with(&ops)
        .request(Method::GET, "/v1/admin/audit", None)
        .await
        .unwrap();
    assert_eq!(
        (status, problem["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    // The minting is audited, with the scopes.
    let (_, audit) = app
        .admin
        .request(Method::GET, "/v1/admin/audit?action=token.create", None)
        .await
        .unwrap();
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["details"]["scopes"] == "profile:read tasks:read money:read"),
        "{audit}"
    );
    app.stop().await;
}

async fn close_code(ws: &mut crate::common::Ws) -> u16 {
    loop {
        match ws.message(Duration::from_secs(15)).await.expect("a close") {
            Some(tungstenite::Message::Close(Some(frame))) => return frame.code.into(),
            Some(tungstenite::Message::Text(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn scopes_reach_the_websocket_and_a2a(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("streamer", &["coding"]).await;
    let peer = app.enroll("peer", &["coding"]).await;

    // Without `events`: refused before the upgrade, or closed 4403 after an auth frame.
    let no_events = mint(&agent.client, &["tasks:read"]).await;
    match app.ws_try(Some(&no_events), None, None).await {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected a 403 refusal, got {:?}", other.map(|_| ())),
    }
    let mut ws = app.ws_try(None, None, None).await.unwrap();
    ws.send_json(&json!({"type": "auth", "data": {"token": no_events}}))
        .await;
    assert_eq!(close_code(&mut ws).await, 4403);

    // With `events` only: the stream opens, but sending a message needs `messages`.
    let events_only = mint(&agent.client, &["events"]).await;
    let mut ws = app.ws(&events_only, None).await;
    ws.send_json(&json!({"type": "message.send", "data": {
        "to": peer.handle, "payload": "aGVsbG8=", "encrypted": false}}))
        .await;
    let reply = ws.reply().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["data"]["code"], "insufficient_scope", "{reply}");
    ws.send_json(&json!({"type": "notifications.mark_read", "data": {"all": true}}))
        .await;
    assert_eq!(ws.reply().await["data"]["code"], "insufficient_scope");
    // The same connection with `messages` too sends it.
    let both = mint(&agent.client, &["events", "messages"]).await;
    let mut ws = app.ws(&both, None).await;
    ws.send_json(&json!({"type": "message.send", "data": {
        "to": peer.handle, "payload": "aGVsbG8=", "encrypted": false}}))
        .await;
    assert_eq!(ws.reply().await["type"], "message.sent");

    // A2A: reading tasks needs `tasks:read`, sending a message (posting a task) `tasks:post`.
    let rpc = |token: String, method: &'static str, params: Value| {
        let app = &app;
        async move {
            app.http
                .post(format!("{}/a2a", app.base))
                .bearer_auth(token)
                .header("A2A-Version", "1.0")
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let reader = mint(&agent.client, &["tasks:read"]).await;
    let listed = rpc(reader.clone(), "ListTasks", json!({})).await;
    assert!(listed.get("result").is_some(), "{listed}");
    let sent = rpc(
        reader,
        "SendMessage",
        json!({"message": {"messageId": "m1", "role": "ROLE_USER",
            "parts": [{"text": "write a haiku"}]}}),
    )
    .await;
    let meta = &sent["error"]["data"][0]["metadata"];
    assert_eq!(meta["code"], "insufficient_scope", "{sent}");
    app.stop().await;
}

fn hidden_csrf(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

fn cookie_of(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// A pasted read-only token shows the dashboard; its forms that would change something are
/// refused with a page saying which scope is missing, and change nothing.
async fn the_dashboard_signed_in_with_a_read_only_token_only_reads(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("viewer", &["coding"]).await;
    app.grant(agent.id, "20.00").await;
    let read_only = mint(
        &agent.client,
        &["profile:read", "tasks:read", "money:read", "notifications"],
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/dashboard/sign-in", app.base))
        .send()
        .await
        .unwrap();
    let signin = cookie_of(&page, "nervix_signin").expect("sign-in cookie");
    let csrf = hidden_csrf(&page.text().await.unwrap());
    let signed_in = http
        .post(format!("{}/dashboard/sign-in/token", app.base))
        .header("cookie", format!("nervix_signin={signin}"))
        .form(&[("csrf", csrf.as_str()), ("token", read_only.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = cookie_of(&signed_in, "nervix_session").expect("session cookie");
    let cookie = format!("nervix_session={session}");

    let dashboard = http
        .get(format!("{}/dashboard", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(dashboard.status(), 200);
    let csrf = hidden_csrf(&dashboard.text().await.unwrap());

    let withdraw = http
        .post(format!("{}/dashboard/withdrawals", app.base))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("amount", "5.00"),
            ("destination", "iban:DE00"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(withdraw.status(), 403);
    assert!(withdraw.text().await.unwrap().contains("money:withdraw"));
    let messages = http
        .get(format!("{}/dashboard/messages", app.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(messages.status(), 403);
    let earnings = agent.client.earnings().await.unwrap();
    assert_eq!(earnings.pending_withdrawals.to_string(), "0.00");

    // Without the read scopes, the dashboard itself is refused.
    let narrow = mint(&agent.client, &["tasks:read"]).await;
    let page = http
        .get(format!("{}/dashboard/sign-in", app.base))
        .send()
        .await
        .unwrap();
    let signin = cookie_of(&page, "nervix_signin").unwrap();
    let csrf = hidden_csrf(&page.text().await.unwrap());
    let signed_in = http
        .post(format!("{}/dashboard/sign-in/token", app.base))
        .header("cookie", format!("nervix_signin={signin}"))
        .form(&[("csrf", csrf.as_str()), ("token", narrow.as_str())])
        .send()
        .await
        .unwrap();
    let session = cookie_of(&signed_in, "nervix_session").unwrap();
    let refused = http
        .get(format!("{}/dashboard", app.base))
        .header("cookie", format!("nervix_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("profile:read"));
    app.stop().await;
}

/// A handler taking a `Caller` on a route outside the document (so with no declared scope)
/// fails closed: narrowed tokens are refused, unrestricted ones pass. `AnyScope` takes both
/// and leaves the check to the handler.
async fn a_route_that_declares_no_scope_takes_only_unrestricted_tokens(backend: Backend) {
    use axum::routing::get;
    use nervix_server::app::Caller;
    use nervix_server::http::authorize::AnyScope;

    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("undeclared", &[]).await;
    let narrowed = mint(&agent.client, &["profile:read", "tasks:read"]).await;
    let extra = axum::Router::new()
        .route("/strict", get(|c: Caller| async move { c.handle }))
        .route(
            "/per-operation",
            get(|AnyScope(c): AnyScope| async move { c.scopes().to_string() }),
        )
        .with_state(app.running().state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, extra).await });
    let get = |path: &'static str, token: String| {
        let http = app.http.clone();
        async move {
            let res = http
                .get(format!("http://{addr}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, body) = get("/strict", narrowed.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("insufficient_scope"), "{body}");
    assert_eq!(
        get("/strict", agent.token.clone()).await,
        (200, "undeclared".into())
    );
    assert_eq!(
        get("/per-operation", narrowed).await,
        (200, "profile:read tasks:read".into())
    );
    served.abort();
    app.stop().await;
}
