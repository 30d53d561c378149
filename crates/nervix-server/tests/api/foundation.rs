//! Enrollment, tokens, agents, limits, errors, audit and platform endpoints.

use std::collections::HashSet;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::Utc;
use nervix_client::{AgentKeys, AgentQuery, EnrollRequest, Method};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::{
    api_err, assert_api_err, assert_field_error, assert_problem, eventually, jwt_parts, send_head,
    server_signing_keys, sign_eddsa, task_body, Backend, TestApp,
};

nervix_store::backend_matrix! {
    run = crate::common::run, workers = 2;
    enroll_happy_path,
    bad_signature_keeps_challenge_until_locked,
    replayed_challenge_conflicts,
    expired_challenge_is_gone,
    duplicate_handle_and_key_conflict,
    invalid_enrollment_fields_name_the_field,
    login_flow,
    forged_tokens_are_rejected,
    revoked_and_rotated_tokens,
    signing_key_rotation,
    suspension_locks_out_at_once,
    config_patch_refuses_mass_assignment,
    directory_and_public_view,
    directory_page_is_paged_and_searched,
    enroll_rate_limit_per_ip,
    agent_rate_limit,
    revoked_token_spends_no_budget,
    error_responses_are_problems,
    concurrent_enrollment_of_one_handle,
    audit_log,
    platform_endpoints,
    request_ids_are_echoed,
}

async fn enroll_happy_path(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let keys = AgentKeys::generate();
    let req = EnrollRequest::new("alpha-coder", &keys)
        .name("Alpha Coder")
        .capabilities(["coding", "research"]);
    let anon = app.client();
    let r = anon
        .request_raw(
            Method::POST,
            "/v1/enroll",
            &[],
            Some(serde_json::to_vec(&req).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let started = r.json();
    let enrollment_id = started["enrollment_id"].as_str().unwrap().to_owned();
    let challenge = started["challenge"].as_str().unwrap().to_owned();
    assert!(challenge.starts_with("nervix-enroll-v1:"), "{challenge}");
    assert!(challenge.contains(&enrollment_id), "{challenge}");
    let expires = chrono::DateTime::parse_from_rfc3339(started["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(expires > Utc::now() + chrono::Duration::minutes(4));

    let mut client = app.client();
    let token = client
        .respond_enroll(
            Uuid::parse_str(&enrollment_id).unwrap(),
            &keys.sign_challenge(&challenge),
        )
        .await
        .unwrap();
    assert_eq!(token.token_type, "Bearer");
    assert_eq!(token.agent.agent_id, "alpha-coder");
    assert_eq!(token.agent.capabilities, vec!["coding", "research"]);

    // The token works.
    let me = client.me().await.unwrap();
    assert_eq!(me.id, token.agent.id);
    assert_eq!(me.agent_id, "alpha-coder");
    assert_eq!(me.agent_name.as_deref(), Some("Alpha Coder"));
    assert_eq!(me.reputation_score.to_string(), "50.00");
    assert!(me.config.is_some());
    assert_eq!(me.total_earnings.unwrap().to_string(), "0.00");
    let verified = client.verify().await.unwrap();
    assert!(verified.valid);
    assert_eq!(verified.agent_id, "alpha-coder");

    // Header and claims.
    let (header, claims) = jwt_parts(&token.token);
    assert_eq!(header["alg"], "EdDSA");
    let kid = header["kid"].as_str().expect("kid").to_owned();
    assert!(!kid.is_empty());
    assert_eq!(claims["iss"], "nervix");
    assert_eq!(claims["aud"], "nervix-api");
    assert_eq!(claims["sub"], me.id.to_string());
    assert_eq!(claims["agent_id"], "alpha-coder");
    assert_eq!(claims["role"], "agent");
    assert!(Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    let ninety_days = 90 * 24 * 3600;
    assert!(
        (exp - iat - ninety_days).abs() <= 60,
        "exp-iat = {}",
        exp - iat
    );
    assert!((exp - (Utc::now().timestamp() + ninety_days)).abs() <= 120);
    assert!((token.expires_at.timestamp() - exp).abs() <= 1);

    // JWKS lists the kid.
    let (status, jwks) = anon
        .request(Method::GET, "/.well-known/jwks.json", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"));
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    app.stop().await;
}

async fn bad_signature_keeps_challenge_until_locked(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let keys = AgentKeys::generate();
    let intruder = AgentKeys::generate();
    let mut client = app.client();
    let started = client
        .start_enroll(&EnrollRequest::new("bravo", &keys))
        .await
        .unwrap();
    let bad = intruder.sign_challenge(&started.challenge);
    assert_api_err(
        client.respond_enroll(started.enrollment_id, &bad).await,
        401,
        "invalid_signature",
    );
    // Still usable with the right key.
    let token = client
        .respond_enroll(
            started.enrollment_id,
            &keys.sign_challenge(&started.challenge),
        )
        .await
        .unwrap();
    assert_eq!(token.agent.agent_id, "bravo");

    // Five bad signatures lock the challenge, even for the right one afterwards.
    let keys = AgentKeys::generate();
    let started = client
        .start_enroll(&EnrollRequest::new("charlie", &keys))
        .await
        .unwrap();
    let bad = intruder.sign_challenge(&started.challenge);
    for _ in 0..5 {
        assert_api_err(
            client.respond_enroll(started.enrollment_id, &bad).await,
            401,
            "invalid_signature",
        );
    }
    assert_api_err(
        client
            .respond_enroll(
                started.enrollment_id,
                &keys.sign_challenge(&started.challenge),
            )
            .await,
        409,
        "challenge_locked",
    );
    assert_api_err(client.agent("charlie").await, 404, "not_found");

    // Same for a login challenge.
    let ch = client.auth_challenge("bravo").await.unwrap();
    for _ in 0..5 {
        assert_api_err(
            client
                .auth_token(ch.challenge_id, &intruder.sign_challenge(&ch.challenge))
                .await,
            401,
            "invalid_signature",
        );
    }
    let e = api_err(
        client
            .auth_token(
                ch.challenge_id,
                &AgentKeys::generate().sign_challenge(&ch.challenge),
            )
            .await,
    );
    assert_eq!(e.status(), Some(409), "{e}");
    app.stop().await;
}

async fn replayed_challenge_conflicts(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let keys = AgentKeys::generate();
    let mut client = app.client();
    let started = client
        .start_enroll(&EnrollRequest::new("delta", &keys))
        .await
        .unwrap();
    let sig = keys.sign_challenge(&started.challenge);
    client
        .respond_enroll(started.enrollment_id, &sig)
        .await
        .unwrap();
    assert_api_err(
        client.respond_enroll(started.enrollment_id, &sig).await,
        409,
        "challenge_used",
    );

    let ch = client.auth_challenge("delta").await.unwrap();
    let sig = keys.sign_challenge(&ch.challenge);
    client.auth_token(ch.challenge_id, &sig).await.unwrap();
    assert_api_err(
        client.auth_token(ch.challenge_id, &sig).await,
        409,
        "challenge_used",
    );
    app.stop().await;
}

async fn expired_challenge_is_gone(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| {
        c.challenge_ttl = chrono::Duration::seconds(2);
    })
    .await
    else {
        return;
    };
    let keys = AgentKeys::generate();
    let mut client = app.client();
    // A login challenge for an agent enrolled in time.
    app.enroll("echo", &[]).await;
    let started = client
        .start_enroll(&EnrollRequest::new("foxtrot", &keys))
        .await
        .unwrap();
    let login = client.auth_challenge("echo").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_api_err(
        client
            .respond_enroll(
                started.enrollment_id,
                &keys.sign_challenge(&started.challenge),
            )
            .await,
        410,
        "challenge_expired",
    );
    let e = api_err(
        client
            .auth_token(login.challenge_id, &keys.sign_challenge(&login.challenge))
            .await,
    );
    assert_eq!(e.status(), Some(410), "{e}");
    app.stop().await;
}

async fn duplicate_handle_and_key_conflict(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let first = app.enroll("golf", &[]).await;
    let client = app.client();
    let e = assert_api_err(
        client
            .start_enroll(&EnrollRequest::new("golf", &AgentKeys::generate()))
            .await,
        409,
        "agent_id_taken",
    );
    assert!(e.problem().unwrap().detail.is_some());
    assert_api_err(
        client
            .start_enroll(&EnrollRequest::new("golf-two", &first.keys))
            .await,
        409,
        "public_key_taken",
    );
    app.stop().await;
}

async fn invalid_enrollment_fields_name_the_field(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let client = app.client();
    let good_key = AgentKeys::generate().public_key_b64();
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"agent_id": "ab", "public_key": good_key}),
            "agent_id",
        ),
        (
            json!({"agent_id": "Upper", "public_key": good_key}),
            "agent_id",
        ),
        // The operator's identity cannot be taken by enrolling first.
        (
            json!({"agent_id": "admin", "public_key": good_key}),
            "agent_id",
        ),
        (
            json!({"agent_id": "-dash", "public_key": good_key}),
            "agent_id",
        ),
        (
            json!({"agent_id": "has space", "public_key": good_key}),
            "agent_id",
        ),
        (
            json!({"agent_id": "a".repeat(65), "public_key": good_key}),
            "agent_id",
        ),
        (
            json!({"agent_id": "hotel", "public_key": "not base64!!"}),
            "public_key",
        ),
        (
            json!({"agent_id": "hotel", "public_key": STANDARD.encode([7u8; 31])}),
            "public_key",
        ),
        (
            json!({"agent_id": "hotel", "public_key": STANDARD.encode([7u8; 33])}),
            "public_key",
        ),
        (
            json!({"agent_id": "hotel", "public_key": good_key, "encryption_public_key": "%%%"}),
            "encryption_public_key",
        ),
        (
            json!({"agent_id": "hotel", "public_key": good_key, "capabilities": ["Bad Cap!"]}),
            "capabilities",
        ),
        (
            json!({"agent_id": "hotel", "public_key": good_key, "max_concurrent_tasks": 0}),
            "max_concurrent_tasks",
        ),
        (
            json!({"agent_id": "hotel", "public_key": good_key, "metadata": [1, 2]}),
            "metadata",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = client
            .request(Method::POST, "/v1/enroll", Some(&body))
            .await
            .unwrap();
        assert_field_error(status, &problem, field);
        assert_eq!(problem["code"], "validation_failed", "{problem}");
    }

    // Signature length and encoding on respond.
    let keys = AgentKeys::generate();
    let started = client
        .start_enroll(&EnrollRequest::new("hotel", &keys))
        .await
        .unwrap();
    let path = format!("/v1/enroll/{}/respond", started.enrollment_id);
    for sig in [
        STANDARD.encode([1u8; 63]),
        STANDARD.encode([1u8; 65]),
        "***not-base64***".to_owned(),
        String::new(),
    ] {
        let (status, problem) = client
            .request(Method::POST, &path, Some(&json!({ "signature": sig })))
            .await
            .unwrap();
        assert_field_error(status, &problem, "signature");
    }
    // None of that counted as a bad signature: the challenge still works.
    let mut c = app.client();
    c.respond_enroll(
        started.enrollment_id,
        &keys.sign_challenge(&started.challenge),
    )
    .await
    .unwrap();
    app.stop().await;
}

async fn login_flow(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("india", &["coding"]).await;
    let mut client = app.client();
    let ch = client.auth_challenge("india").await.unwrap();
    assert!(
        ch.challenge.starts_with("nervix-auth-v1:"),
        "{}",
        ch.challenge
    );
    assert!(ch.challenge.contains(&ch.challenge_id.to_string()));
    assert_api_err(
        client
            .auth_token(
                ch.challenge_id,
                &AgentKeys::generate().sign_challenge(&ch.challenge),
            )
            .await,
        401,
        "invalid_signature",
    );
    let token = client
        .auth_token(ch.challenge_id, &agent.keys.sign_challenge(&ch.challenge))
        .await
        .unwrap();
    assert_ne!(token.token, agent.token);
    assert_eq!(client.me().await.unwrap().id, agent.id);
    // By UUID too, and the first token keeps working.
    let mut by_id = app.client();
    by_id
        .authenticate(&agent.keys, &agent.id.to_string())
        .await
        .unwrap();
    assert_eq!(by_id.me().await.unwrap().agent_id, "india");
    assert_eq!(agent.client.me().await.unwrap().agent_id, "india");
    assert_api_err(client.auth_challenge("nobody-here").await, 404, "not_found");
    app.stop().await;
}

async fn forged_tokens_are_rejected(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("juliet", &[]).await;
    let (header, claims) = jwt_parts(&agent.token);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let keys = server_signing_keys(&app).await;
    let (_, seed, _) = keys.iter().find(|k| k.0 == kid).expect("server key file");
    let seed = *seed;
    let status_with = |token: String| {
        let c = app.client_with(&token);
        async move {
            let (status, body) = c.request(Method::GET, "/v1/agents/me", None).await.unwrap();
            (status, body)
        }
    };

    // Control: the same claims signed with the server's key pass, so the harness can tell.
    let (status, _) = status_with(sign_eddsa(&seed, &kid, &claims)).await;
    assert_eq!(status, 200, "re-signed genuine claims must be accepted");

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let payload = b64(&claims);
    let original_sig = agent.token.rsplit('.').next().unwrap().to_owned();

    let mut forged: Vec<(&str, String)> = Vec::new();
    // alg none, with and without a signature part.
    let none = b64(&json!({"alg": "none", "typ": "JWT", "kid": kid}));
    forged.push(("alg none", format!("{none}.{payload}.")));
    forged.push(("alg none + sig", format!("{none}.{payload}.{original_sig}")));
    // HS256 keyed with the server's public key (raw bytes, and the JWKS `x` text).
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    for secret in [public.to_vec(), URL_SAFE_NO_PAD.encode(public).into_bytes()] {
        forged.push((
            "HS256 with public key",
            jsonwebtoken::encode(
                &hs,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(&secret),
            )
            .unwrap(),
        ));
    }
    // A foreign Ed25519 key claiming the server's kid.
    let foreign: [u8; 32] = rand::random();
    forged.push(("foreign key", sign_eddsa(&foreign, &kid, &claims)));
    // Unknown kid.
    forged.push(("unknown kid", sign_eddsa(&seed, "not-a-kid", &claims)));
    // Server key, bad claims.
    let now = Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 60);
    forged.push(("expired", sign_eddsa(&seed, &kid, &expired)));
    let mut aud = claims.clone();
    aud["aud"] = json!("someone-else");
    forged.push(("wrong aud", sign_eddsa(&seed, &kid, &aud)));
    let mut iss = claims.clone();
    iss["iss"] = json!("evil");
    forged.push(("wrong iss", sign_eddsa(&seed, &kid, &iss)));
    let mut unknown_jti = claims.clone();
    unknown_jti["jti"] = json!(Uuid::new_v4());
    forged.push(("unknown jti", sign_eddsa(&seed, &kid, &unknown_jti)));
    // Tampered payload under the genuine signature.
    let mut admin = claims.clone();
    admin["role"] = json!("admin");
    forged.push((
        "tampered payload",
        format!(
            "{}.{}.{original_sig}",
            agent.token.split('.').next().unwrap(),
            b64(&admin)
        ),
    ));
    forged.push(("garbage", "not.a.jwt".to_owned()));

    for (what, token) in forged {
        let (status, body) = status_with(token).await;
        assert_eq!(status, 401, "{what} was accepted: {body}");
        assert_eq!(body["code"], "unauthorized", "{what}: {body}");
    }
    // No token at all.
    let (status, _) = app
        .client()
        .request(Method::GET, "/v1/agents/me", None)
        .await
        .unwrap();
    assert_eq!(status, 401);
    app.stop().await;
}

async fn revoked_and_rotated_tokens(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("kilo", &[]).await;
    // Revoke.
    agent.client.revoke().await.unwrap();
    assert_api_err(agent.client.me().await, 401, "unauthorized");
    assert_api_err(agent.client.verify().await, 401, "unauthorized");
    // Log in again, then rotate.
    let mut client = app.client();
    let first = client.authenticate(&agent.keys, "kilo").await.unwrap();
    let rotated = client.rotate().await.unwrap();
    assert_ne!(first.token, rotated.token);
    assert_eq!(client.me().await.unwrap().id, agent.id);
    assert_api_err(
        app.client_with(&first.token).me().await,
        401,
        "unauthorized",
    );
    // A revoked token cannot be rotated into a live one.
    assert_api_err(
        app.client_with(&first.token).rotate().await,
        401,
        "unauthorized",
    );
    app.stop().await;
}

async fn signing_key_rotation(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("lima", &[]).await;
    let old_kid = jwt_parts(&agent.token).0["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (new_kid, pruned) = nervix_server::operator::rotate_signing_key(&app.config)
        .await
        .unwrap();
    assert_ne!(new_kid, old_kid);
    assert!(pruned.is_empty());
    // The running server picks the new key up by itself.
    let anon = app.client();
    let jwks = eventually(Duration::from_secs(15), "JWKS to list the new key", || {
        let anon = anon.clone();
        let new_kid = new_kid.clone();
        async move {
            let (_, jwks) = anon
                .request(Method::GET, "/.well-known/jwks.json", None)
                .await
                .unwrap();
            jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kid"] == new_kid.as_str())
                .then_some(jwks)
        }
    })
    .await;
    let kids: HashSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(old_kid.as_str()) && kids.contains(new_kid.as_str()),
        "{jwks}"
    );
    // Old tokens keep working; new ones carry the new kid.
    assert_eq!(agent.client.me().await.unwrap().id, agent.id);
    let mut client = app.client();
    let fresh = client.authenticate(&agent.keys, "lima").await.unwrap();
    assert_eq!(jwt_parts(&fresh.token).0["kid"], new_kid.as_str());
    assert_eq!(client.me().await.unwrap().id, agent.id);
    app.stop().await;
}

async fn suspension_locks_out_at_once(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("mike", &[]).await;
    let other = app.enroll("november", &[]).await;
    agent.client.me().await.unwrap();
    // Only admins suspend.
    let (status, _) = other
        .client
        .request(
            Method::POST,
            &format!("/v1/admin/agents/{}/suspend", agent.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, body) = app
        .admin
        .request(Method::POST, "/v1/admin/agents/mike/suspend", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_api_err(agent.client.me().await, 403, "agent_suspended");
    assert_api_err(
        agent.client.auth_challenge("mike").await,
        403,
        "agent_suspended",
    );
    // Hidden from the public directory view.
    assert_api_err(other.client.agent("mike").await, 404, "not_found");
    let (status, body) = app
        .admin
        .request(
            Method::POST,
            &format!("/v1/admin/agents/{}/reinstate", agent.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(agent.client.me().await.unwrap().id, agent.id);
    app.stop().await;
}

async fn config_patch_refuses_mass_assignment(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let keys = AgentKeys::generate();
    let req = EnrollRequest::new("oscar", &keys)
        .name("Oscar")
        .capabilities(["coding"])
        .metadata(json!({"model": "x"}));
    let agent = app.enroll_request(keys, req).await;
    let snapshot = |v: &Value| {
        json!({
            "id": v["id"], "agent_name": v["agent_name"], "capabilities": v["capabilities"],
            "metadata": v["metadata"], "reputation_score": v["reputation_score"],
            "role": v["role"], "config": v["config"], "encryption_public_key": v["encryption_public_key"],
        })
    };
    let me = || async {
        let (s, v) = agent
            .client
            .request(Method::GET, "/v1/agents/me", None)
            .await
            .unwrap();
        assert_eq!(s, 200);
        v
    };
    let before = snapshot(&me().await);
    assert_eq!(before["role"], "agent");
    for (body, field) in [
        (json!({"reputation_score": 99}), "reputation_score"),
        (json!({"role": "admin"}), "role"),
        (json!({"id": Uuid::new_v4()}), "id"),
        (json!({"total_earnings": "1000.00"}), "total_earnings"),
        (json!({"is_admin": true}), "is_admin"),
        (json!({"agent_name": "Hacked", "role": "admin"}), "role"),
        (
            json!({"capabilities": ["everything"], "reputation_score": "100.00"}),
            "reputation_score",
        ),
        (json!({"agent_name": ""}), "agent_name"),
        (
            json!({"max_concurrent_tasks": 0, "agent_name": "Hacked"}),
            "max_concurrent_tasks",
        ),
    ] {
        let (status, problem) = agent
            .client
            .request(Method::PATCH, "/v1/agents/me/config", Some(&body))
            .await
            .unwrap();
        assert_field_error(status, &problem, field);
        assert_eq!(snapshot(&me().await), before, "{body} changed something");
    }
    // A valid patch changes only its fields.
    let (status, after) = agent
        .client
        .request(
            Method::PATCH,
            "/v1/agents/me/config",
            Some(
                &json!({"agent_name": "Oscar Two", "max_concurrent_tasks": 5, "available": false}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{after}");
    let after = snapshot(&me().await);
    let mut expected = before.clone();
    expected["agent_name"] = json!("Oscar Two");
    expected["config"]["max_concurrent_tasks"] = json!(5);
    expected["config"]["available"] = json!(false);
    assert_eq!(after, expected);
    app.stop().await;
}

async fn directory_and_public_view(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let listed = app.enroll_many("dir", 5, &["dirtest", "coding"]).await;
    app.enroll_many("other", 2, &["coding"]).await;
    let anon = app.client();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = anon
            .agents(&AgentQuery {
                capability: Some("dirtest".into()),
                limit: Some(2),
                cursor: cursor.clone(),
                ..AgentQuery::default()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        for a in &page.items {
            assert!(a.capabilities.iter().any(|c| c == "dirtest"), "{a:?}");
            seen.push(a.agent_id.clone());
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "pagination does not end");
    }
    assert!(pages >= 3, "{pages} pages for 5 agents at 2 per page");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "duplicates across pages: {seen:?}"
    );
    let expected: HashSet<String> = listed.iter().map(|a| a.handle.clone()).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        expected
    );

    // Everyone with `coding`: 7.
    let all = anon
        .agents(&AgentQuery {
            capability: Some("coding".into()),
            ..AgentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.items.len(), 7);
    assert!(all.next_cursor.is_none());
    let (status, problem) = anon
        .request(Method::GET, "/v1/agents?limit=0", None)
        .await
        .unwrap();
    assert_field_error(status, &problem, "limit");
    // Over the maximum is served as the maximum.
    let (status, page) = anon
        .request(Method::GET, "/v1/agents?limit=500", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 8);

    // Public view, by handle and by UUID: no config, no earnings.
    for key in [listed[0].handle.clone(), listed[0].id.to_string()] {
        let (status, v) = anon
            .request(Method::GET, &format!("/v1/agents/{key}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["agent_id"], listed[0].handle.as_str());
        assert_eq!(v["reputation_score"], "50.00");
        assert_eq!(v["reputation_level"], "novice");
        for hidden in ["config", "total_earnings", "suspended"] {
            assert!(v.get(hidden).is_none(), "public view has {hidden}: {v}");
        }
    }
    assert_api_err(anon.agent("no-such-agent").await, 404, "not_found");
    app.stop().await;
}

async fn enroll_rate_limit_per_ip(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.rate_limit_enroll_per_minute = 3).await
    else {
        return;
    };
    let client = app.client();
    for i in 0..3 {
        client
            .start_enroll(&EnrollRequest::new(
                format!("papa-{i}"),
                &AgentKeys::generate(),
            ))
            .await
            .unwrap();
    }
    let body = serde_json::to_vec(&EnrollRequest::new("papa-3", &AgentKeys::generate())).unwrap();
    let r = client
        .request_raw(Method::POST, "/v1/enroll", &[], Some(body))
        .await
        .unwrap();
    let problem = assert_problem(&r, 429);
    assert_eq!(problem["code"], "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    // The login routes share the limit; other routes do not.
    let e = api_err(client.auth_challenge("papa-0").await);
    assert_eq!(e.status(), Some(429));
    assert!(e.retry_after().is_some_and(|d| d >= Duration::from_secs(1)));
    let (status, _) = client.request(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(status, 200);
    app.stop().await;
}

async fn agent_rate_limit(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.rate_limit_agent_per_second = 2).await
    else {
        return;
    };
    let agent = app.enroll("quebec", &[]).await;
    let other = app.enroll("romeo", &[]).await;
    let mut limited = None;
    for _ in 0..10 {
        let r = agent
            .client
            .request_raw(Method::GET, "/v1/agents/me", &[], None)
            .await
            .unwrap();
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("10 requests at once at 2/s were never limited");
    let problem = assert_problem(&r, 429);
    assert_eq!(problem["code"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    // Per agent: another agent is not affected.
    other.client.me().await.unwrap();
    // And the limit lets the agent back in after Retry-After.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    agent.client.me().await.unwrap();
    app.stop().await;
}

/// A revoked token is refused before it is charged, so a flood with a stolen, revoked token
/// leaves the agent's budget to its live token.
async fn revoked_token_spends_no_budget(backend: Backend) {
    let Some(app) = TestApp::start_with(backend, |c| c.rate_limit_agent_per_second = 2).await
    else {
        return;
    };
    let agent = app.enroll("sierra", &[]).await;
    let mut live = app.client();
    live.authenticate(&agent.keys, "sierra").await.unwrap();
    agent.client.revoke().await.unwrap();
    // The revocation request itself was charged; let the budget (2 per second) fill up again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..20 {
        let r = agent
            .client
            .request_raw(Method::GET, "/v1/agents/me", &[], None)
            .await
            .unwrap();
        let problem = assert_problem(&r, 401);
        assert_eq!(problem["code"], "unauthorized", "request {i}: {problem}");
    }
    // The whole burst is left for the live token.
    live.me().await.unwrap();
    live.me().await.unwrap();
    app.stop().await;
}

async fn error_responses_are_problems(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let agent = app.enroll("sierra", &[]).await;
    let anon = app.client();
    // A 2 MiB body is refused on its declared length, before it is read.
    for (token, path) in [(None, "/v1/enroll"), (Some(&agent.token), "/v1/tasks")] {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            2 * 1024 * 1024
        );
        let r = send_head(app.running().addr, &head).await;
        let p = assert_problem(&r, 413);
        assert_eq!(p["code"], "payload_too_large");
    }
    // Malformed JSON, even when what was read so far is also invalid (an unknown key).
    for (client, method, path, body) in [
        (&anon, Method::POST, "/v1/enroll", &br#"{"agent_id": "#[..]),
        (&anon, Method::POST, "/v1/enroll", b"{ not json"),
        (
            &agent.client,
            Method::POST,
            "/v1/tasks",
            br#"{"title": "x",}"#,
        ),
        (
            &agent.client,
            Method::PATCH,
            "/v1/agents/me/config",
            br#"{"agent_name": "#,
        ),
        (
            &agent.client,
            Method::PATCH,
            "/v1/agents/me/config",
            br#"{"role": "#,
        ),
    ] {
        let r = client
            .request_raw(method, path, &[], Some(body.to_vec()))
            .await
            .unwrap();
        let p = assert_problem(&r, 400);
        assert_eq!(p["code"], "bad_request");
    }
    // Unknown route, wrong method.
    for path in ["/v1/nope", "/nope", "/v1/agents/me/nope"] {
        let r = agent
            .client
            .request_raw(Method::GET, path, &[], None)
            .await
            .unwrap();
        assert_eq!(assert_problem(&r, 404)["code"], "not_found");
    }
    for (method, path) in [
        (Method::DELETE, "/v1/enroll"),
        (Method::GET, "/v1/auth/token"),
        (Method::PUT, "/v1/agents/me"),
    ] {
        let r = agent
            .client
            .request_raw(method, path, &[], None)
            .await
            .unwrap();
        assert_eq!(assert_problem(&r, 405)["code"], "method_not_allowed");
    }
    // 401, 403, 404, 409, 422 are problems too.
    let r = anon
        .request_raw(Method::GET, "/v1/agents/me", &[], None)
        .await
        .unwrap();
    assert_problem(&r, 401);
    let r = agent
        .client
        .request_raw(Method::GET, "/v1/admin/audit", &[], None)
        .await
        .unwrap();
    assert_problem(&r, 403);
    let r = anon
        .request_raw(Method::GET, "/v1/agents/nobody-at-all", &[], None)
        .await
        .unwrap();
    assert_problem(&r, 404);
    let dup = serde_json::to_vec(&EnrollRequest::new("sierra", &AgentKeys::generate())).unwrap();
    let r = anon
        .request_raw(Method::POST, "/v1/enroll", &[], Some(dup))
        .await
        .unwrap();
    assert_problem(&r, 409);
    let r = anon
        .request_raw(
            Method::POST,
            "/v1/enroll",
            &[],
            Some(br#"{"agent_id": 5}"#.to_vec()),
        )
        .await
        .unwrap();
    let p = assert_problem(&r, 422);
    assert!(p["errors"].as_array().is_some_and(|e| !e.is_empty()), "{p}");
    app.stop().await;
}

async fn concurrent_enrollment_of_one_handle(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let contenders: Vec<AgentKeys> = (0..20).map(|_| AgentKeys::generate()).collect();
    let starts = futures::future::join_all(contenders.iter().map(|k| {
        let c = app.client();
        let req = EnrollRequest::new("uniform", k);
        async move { c.start_enroll(&req).await.unwrap() }
    }))
    .await;
    let responses = futures::future::join_all(contenders.iter().zip(&starts).map(|(k, s)| {
        let mut c = app.client();
        let sig = k.sign_challenge(&s.challenge);
        let id = s.enrollment_id;
        tokio::spawn(async move { c.respond_enroll(id, &sig).await })
    }))
    .await;
    let mut ok = 0;
    for r in responses {
        match r.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.status(), Some(409), "{e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one enrollment of the handle may win");
    let page = app.client().agents(&AgentQuery::default()).await.unwrap();
    assert_eq!(
        page.items
            .iter()
            .filter(|a| a.agent_id == "uniform")
            .count(),
        1
    );
    app.stop().await;
}

async fn audit_log(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let mut victor = app.enroll("victor", &[]).await;
    let whiskey = app.enroll("whiskey", &[]).await;
    let mut tokens = vec![
        victor.token.clone(),
        whiskey.token.clone(),
        app.admin_token.clone(),
    ];
    victor
        .client
        .patch_config(&json!({"agent_name": "Victor V"}))
        .await
        .unwrap();
    let rotated = victor.client.rotate().await.unwrap();
    tokens.push(rotated.token.clone());
    victor.client.revoke().await.unwrap();
    let login = victor
        .client
        .authenticate(&victor.keys, "victor")
        .await
        .unwrap();
    tokens.push(login.token.clone());
    victor.token = login.token;
    let (status, _) = app
        .admin
        .request(
            Method::POST,
            &format!("/v1/admin/agents/{}/suspend", whiskey.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Admins only.
    let (status, _) = victor
        .client
        .request(Method::GET, "/v1/admin/audit", None)
        .await
        .unwrap();
    assert_eq!(status, 403);

    let (status, page) = app
        .admin
        .request(Method::GET, "/v1/admin/audit?limit=200", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let find = |action: &str, target: Uuid| {
        items
            .iter()
            .find(|e| e["action"] == action && e["target"] == target.to_string())
            .unwrap_or_else(|| panic!("no {action} entry for {target} in {page}"))
    };
    let enroll = find("agent.enroll", victor.id);
    assert_eq!(enroll["client_ip"], "127.0.0.1", "{enroll}");
    assert!(enroll["at"].is_string());
    for action in ["token.rotate", "token.revoke", "agent.config_change"] {
        let e = find(action, victor.id);
        assert_eq!(e["actor"], "victor", "{e}");
        assert_eq!(e["actor_id"], victor.id.to_string(), "{e}");
        assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
    }
    let suspend = find("admin.suspend", whiskey.id);
    assert_eq!(suspend["actor"], "admin", "{suspend}");
    assert_eq!(suspend["actor_id"], app.admin_id.to_string());
    assert_eq!(suspend["client_ip"], "127.0.0.1");
    let config_change = find("agent.config_change", victor.id);
    assert_eq!(config_change["details"]["fields"], json!(["agent_name"]));

    // Filters.
    let (_, filtered) = app
        .admin
        .request(Method::GET, "/v1/admin/audit?action=admin.suspend", None)
        .await
        .unwrap();
    let filtered = filtered["items"].as_array().unwrap();
    assert_eq!(filtered.len(), 1);

    // No secrets: neither whole tokens nor their signatures nor key material.
    let text = serde_json::to_string(&page).unwrap();
    for t in &tokens {
        assert!(!text.contains(t.as_str()), "a token is in the audit log");
        let sig = t.rsplit('.').next().unwrap();
        assert!(!text.contains(sig), "a token signature is in the audit log");
    }
    for (_, seed, _) in server_signing_keys(&app).await {
        assert!(!text.contains(&STANDARD.encode(seed)));
    }
    assert!(!text.to_lowercase().contains("bearer"));
    app.stop().await;
}

async fn platform_endpoints(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let anon = app.client();
    let (status, v) = anon.request(Method::GET, "/healthz", None).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let (status, v) = anon.request(Method::GET, "/readyz", None).await.unwrap();
    assert_eq!(status, 200, "{v}");
    let backend_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(v["database"], backend_name);

    let agent = app.enroll("xray", &["coding"]).await;
    app.enroll("yankee", &[]).await;
    agent.client.me().await.unwrap();
    let r = anon
        .request_raw(Method::GET, "/metrics", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("nervix_http_requests")
                && l.contains(r#"route="/v1/agents/me""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no request counter for /v1/agents/me in\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
    assert!(
        !text.contains(&agent.id.to_string()),
        "metrics labels must not carry ids"
    );

    // OpenAPI lists every implemented path of the contract.
    let (status, doc) = anon
        .request(Method::GET, "/v1/openapi.json", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/enroll", &["post"][..]),
        ("/v1/enroll/{enrollment_id}/respond", &["post"]),
        ("/v1/auth/challenge", &["post"]),
        ("/v1/auth/token", &["post"]),
        ("/v1/auth/verify", &["get"]),
        ("/v1/auth/rotate", &["post"]),
        ("/v1/auth/revoke", &["post"]),
        ("/v1/agents", &["get"]),
        ("/v1/agents/me", &["get"]),
        ("/v1/agents/me/config", &["patch"]),
        ("/v1/agents/{id}", &["get"]),
        ("/v1/agents/me/earnings", &["get"]),
        ("/v1/agents/me/contributions", &["get"]),
        ("/v1/withdrawal/request", &["post"]),
        ("/v1/withdrawals", &["get"]),
        ("/v1/admin/bonus-pool", &["get"]),
        ("/v1/admin/bonus-pool/fund", &["post"]),
        ("/v1/admin/withdrawals", &["get"]),
        ("/v1/admin/withdrawals/{id}/approve", &["post"]),
        ("/v1/admin/withdrawals/{id}/reject", &["post"]),
        ("/v1/tasks", &["get", "post"]),
        ("/v1/tasks/{id}", &["get"]),
        ("/v1/tasks/{id}/claim", &["post"]),
        ("/v1/tasks/{id}/submit", &["post"]),
        ("/v1/tasks/{id}/release", &["post"]),
        ("/v1/tasks/{id}/cancel", &["post"]),
        ("/v1/submissions/{id}", &["get"]),
        ("/v1/workflows", &["post"]),
        ("/v1/workflows/{id}", &["get"]),
        ("/v1/admin/audit", &["get"]),
        ("/v1/admin/agents/{id}/suspend", &["post"]),
        ("/v1/admin/agents/{id}/reinstate", &["post"]),
        ("/v1/admin/announcements", &["post"]),
        ("/v1/agent/connect", &["get"]),
        ("/v1/notifications", &["get"]),
        ("/v1/notifications/mark-read", &["post"]),
        ("/v1/stats", &["get"]),
        ("/v1/leaderboard", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
        ("/.well-known/jwks.json", &["get"]),
        ("/v1/openapi.json", &["get"]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("OpenAPI lacks {path}; has {:?}", paths.keys()));
        for m in methods {
            assert!(item.get(*m).is_some(), "OpenAPI lacks {m} {path}");
        }
    }

    // Public stats, recounted in the background.
    app.admin_post(task_body("stats task", "5.00", &[])).await;
    let stats = eventually(Duration::from_secs(10), "the task in the stats", || async {
        let stats = anon.stats().await.unwrap();
        (stats["tasks_total"] == 1).then_some(stats)
    })
    .await;
    assert!(stats["agents"].as_i64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["tasks_total"], 1, "{stats}");
    assert_eq!(stats["tasks_open"], 1, "{stats}");
    assert_eq!(stats["tasks_completed"], 0, "{stats}");
    assert_eq!(stats["total_paid_out"], "0.00", "{stats}");
    app.stop().await;
}

async fn request_ids_are_echoed(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let client = app.client();
    // Generated when the client sends none, on success and on errors alike.
    for path in ["/healthz", "/v1/no-such-route"] {
        let r = client
            .request_raw(Method::GET, path, &[], None)
            .await
            .unwrap();
        let id = r.header("x-request-id").unwrap_or_default().to_owned();
        assert!(Uuid::parse_str(&id).is_ok(), "{path}: {id:?}");
    }
    // Kept when the client sends one.
    let r = client
        .request_raw(
            Method::GET,
            "/v1/agents/me",
            &[("x-request-id", "trace-me-42")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id"), Some("trace-me-42"));
}

/// The website's `/agents`: 50 agents a page, newest first, with a "Next page" form that
/// keeps the filters; the search finds a handle or a name in any case, across all agents.
async fn directory_page_is_paged_and_searched(backend: Backend) {
    let Some(app) = TestApp::start(backend).await else {
        return;
    };
    let futures = (0..55).map(|i| {
        let app = &app;
        async move { app.enroll(&format!("dir-{i:02}"), &["writing"]).await }
    });
    let agents = futures::future::join_all(futures).await;
    let anon = app.client();
    let page = |path: String| {
        let anon = anon.clone();
        async move {
            let r = anon
                .request_raw(Method::GET, &path, &[], None)
                .await
                .unwrap();
            (r.status, String::from_utf8(r.body).unwrap())
        }
    };
    let rows = |html: &str| -> Vec<String> {
        html.split("<tr><td><a href=\"/agents/")
            .skip(1)
            .map(|r| r[..r.find('"').unwrap()].to_owned())
            .collect()
    };
    let next = |html: &str| -> Option<String> {
        let at = html.find("name=\"before\" value=\"")? + "name=\"before\" value=\"".len();
        Some(html[at..at + 36].to_owned())
    };

    let (status, first) = page("/agents?capability=writing".into()).await;
    assert_eq!(status, 200);
    let shown = rows(&first);
    assert_eq!(shown.len(), 50, "{first}");
    let cursor = next(&first).expect("a next page");
    assert!(first.contains(r#"<input type="hidden" name="capability" value="writing">"#));
    let (status, second) = page(format!("/agents?capability=writing&before={cursor}")).await;
    assert_eq!(status, 200);
    let rest = rows(&second);
    assert_eq!(rest.len(), 5, "{second}");
    assert_eq!(next(&second), None);
    let mut all: Vec<String> = shown.into_iter().chain(rest).collect();
    all.sort();
    let mut expected: Vec<String> = agents.iter().map(|a| a.handle.clone()).collect();
    expected.sort();
    assert_eq!(all, expected, "two pages show every agent once");

    // Searched in storage, not within a page: the oldest agent is found.
    let (_, found) = page("/agents?q=DIR-00".into()).await;
    assert_eq!(rows(&found), ["dir-00"]);
    let (status, _) = page("/agents?before=not-a-page".into()).await;
    assert_eq!(status, 422);
    app.stop().await;
}
