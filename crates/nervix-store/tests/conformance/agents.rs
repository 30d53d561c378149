//! Tokens, agent settings, the agent directory.

use std::sync::Arc;

use chrono::Duration;
use nervix_core::{Level, Role};
use nervix_store::*;
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

nervix_store::backend_matrix! {
    run = crate::support::run;
    tokens_revoke_rotate_suspend,
    update_agent_config_patches_only_given_fields,
    list_agents_pagination_and_filters,
    list_agents_searches_handles_and_names,
}

pub async fn tokens_revoke_rotate_suspend(store: Arc<dyn Store>) {
    let agent = new_agent("tok", &[]);
    let (rec, first) = try_enroll(&store, &agent).await.unwrap();
    let live = |revoked: bool, suspended: bool| {
        Some(AuthState {
            handle: "tok".to_owned(),
            role: Role::Agent,
            suspended,
            revoked,
        })
    };
    assert_eq!(
        store.auth_state(first.jti, rec.id).await.unwrap(),
        live(false, false)
    );
    assert_eq!(
        store.auth_state(Uuid::now_v7(), rec.id).await.unwrap(),
        None,
        "unknown jti"
    );

    // A second token, then revoke it: true once, false after.
    let second = token_for(rec.id);
    store
        .insert_token(&second, &audit("token.issued"))
        .await
        .unwrap();
    assert_eq!(
        store.auth_state(second.jti, rec.id).await.unwrap(),
        live(false, false)
    );
    assert!(store
        .revoke_token(second.jti, now(), &audit("token.revoked"))
        .await
        .unwrap());
    assert!(!store
        .revoke_token(second.jti, now(), &audit("token.revoked"))
        .await
        .unwrap());
    assert!(!store
        .revoke_token(Uuid::now_v7(), now(), &audit("token.revoked"))
        .await
        .unwrap());
    assert_eq!(
        store.auth_state(second.jti, rec.id).await.unwrap(),
        live(true, false)
    );
    let revocations = store
        .list_audit(&AuditQuery {
            action: Some("token.revoked".to_owned()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        revocations.len(),
        1,
        "only the effective revocation is audited"
    );

    // Rotation: the old one is revoked, the new one live.
    let rotated = token_for(rec.id);
    assert!(store
        .rotate_token(first.jti, &rotated, &audit("token.rotated"))
        .await
        .unwrap());
    assert_eq!(
        store.auth_state(first.jti, rec.id).await.unwrap(),
        live(true, false)
    );
    assert_eq!(
        store.auth_state(rotated.jti, rec.id).await.unwrap(),
        live(false, false)
    );
    // Rotating a revoked token does nothing, and records no new token.
    let stale = token_for(rec.id);
    assert!(!store
        .rotate_token(first.jti, &stale, &audit("token.rotated"))
        .await
        .unwrap());
    assert_eq!(store.auth_state(stale.jti, rec.id).await.unwrap(), None);
    let never = token_for(rec.id);
    assert!(!store
        .rotate_token(Uuid::now_v7(), &never, &audit("token.rotated"))
        .await
        .unwrap());
    assert_eq!(store.auth_state(never.jti, rec.id).await.unwrap(), None);

    // Suspension shows through auth_state, the record and the directory.
    let suspended = store
        .set_suspended(rec.id, true, &audit("agent.suspended"))
        .await
        .unwrap();
    assert!(suspended.suspended);
    assert_eq!(
        store.auth_state(rotated.jti, rec.id).await.unwrap(),
        live(false, true)
    );
    assert!(store.agent(rec.id).await.unwrap().unwrap().suspended);
    let listed = store
        .list_agents(&AgentQuery {
            limit: 10,
            ..AgentQuery::default()
        })
        .await
        .unwrap();
    assert!(
        listed.iter().all(|a| a.id != rec.id),
        "suspended agents are not listed"
    );
    let back = store
        .set_suspended(rec.id, false, &audit("agent.unsuspended"))
        .await
        .unwrap();
    assert!(!back.suspended);
    assert_eq!(
        store.auth_state(rotated.jti, rec.id).await.unwrap(),
        live(false, false)
    );
    assert!(matches!(
        store
            .set_suspended(Uuid::now_v7(), true, &audit("agent.suspended"))
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn update_agent_config_patches_only_given_fields(store: Arc<dyn Store>) {
    let mut a = new_agent("cfg", &["python", "sql"]);
    a.encryption_public_key = Some("enc-1".to_owned());
    let before = enroll_with(&store, a).await;
    let other = enroll(&store, &["python"]).await;
    let by_cap = |cap: &str| {
        let store = Arc::clone(&store);
        let cap = cap.to_owned();
        async move {
            let mut ids: Vec<Uuid> = store
                .list_agents(&AgentQuery {
                    capability: Some(cap),
                    limit: 50,
                    ..AgentQuery::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(by_cap("python").await, sorted(vec![before.id, other.id]));
    assert_eq!(by_cap("sql").await, vec![before.id]);

    // Only the name.
    let at = now() + Duration::seconds(1);
    let renamed = store
        .update_agent_config(
            before.id,
            &AgentConfigPatch {
                name: Some("Renamed".to_owned()),
                at,
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    assert_eq!(
        renamed,
        AgentRecord {
            name: "Renamed".to_owned(),
            updated_at: at,
            ..before.clone()
        }
    );
    assert_eq!(
        store.agent(before.id).await.unwrap().as_ref(),
        Some(&renamed)
    );

    // Capabilities, metadata, key cleared, limits and the availability switch.
    let at2 = at + Duration::seconds(1);
    let patched = store
        .update_agent_config(
            before.id,
            &AgentConfigPatch {
                capabilities: Some(vec!["go".to_owned(), "rust".to_owned()]),
                metadata: Some(json!({"model": "v2"})),
                encryption_public_key: Some(None),
                max_concurrent_tasks: Some(9),
                available: Some(false),
                at: at2,
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    assert_eq!(
        patched,
        AgentRecord {
            capabilities: vec!["go".to_owned(), "rust".to_owned()],
            metadata: json!({"model": "v2"}),
            encryption_public_key: None,
            max_concurrent_tasks: 9,
            available: false,
            updated_at: at2,
            ..renamed.clone()
        }
    );
    assert_eq!(by_cap("python").await, vec![other.id]);
    assert_eq!(by_cap("sql").await, Vec::<Uuid>::new());
    assert_eq!(by_cap("rust").await, vec![before.id]);
    assert_eq!(by_cap("go").await, vec![before.id]);

    // Setting a key again.
    let keyed = store
        .update_agent_config(
            before.id,
            &AgentConfigPatch {
                encryption_public_key: Some(Some("enc-2".to_owned())),
                at: at2,
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    assert_eq!(keyed.encryption_public_key.as_deref(), Some("enc-2"));
    assert_eq!(keyed.capabilities, patched.capabilities);

    // Not touched: the other agent.
    assert_eq!(store.agent(other.id).await.unwrap().as_ref(), Some(&other));
    assert_eq!(
        store
            .list_audit(&AuditQuery {
                action: Some("agent.config".to_owned()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        store
            .update_agent_config(
                Uuid::now_v7(),
                &AgentConfigPatch::default(),
                &audit("agent.config")
            )
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn list_agents_pagination_and_filters(store: Arc<dyn Store>) {
    let mut agents = Vec::new();
    for _ in 0..7 {
        agents.push(enroll(&store, &["general"]).await);
    }
    // Newest first.
    let mut expected: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    expected.reverse();

    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_agents(&AgentQuery {
                before,
                limit: 3,
                ..AgentQuery::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 3);
        if page.is_empty() {
            break;
        }
        before = page.last().map(|a| a.id);
        seen.extend(page.into_iter().map(|a| a.id));
    }
    assert_eq!(
        seen, expected,
        "pages of 3 cover every agent once, newest first"
    );
    let page = store
        .list_agents(&AgentQuery {
            before: Some(expected[1]),
            limit: 2,
            ..AgentQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        expected[2..4].to_vec()
    );

    // Online: seen since the cut-off.
    let t = now();
    store.touch_agent(agents[0].id, t).await.unwrap();
    store.touch_agent(agents[3].id, t).await.unwrap();
    store
        .touch_agent(agents[5].id, t - Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(
        store
            .agent(agents[0].id)
            .await
            .unwrap()
            .unwrap()
            .last_seen_at,
        Some(t)
    );
    let online = |online: bool| {
        let store = Arc::clone(&store);
        async move {
            let mut ids: Vec<Uuid> = store
                .list_agents(&AgentQuery {
                    online: Some(online),
                    online_since: t - Duration::minutes(5),
                    limit: 50,
                    ..AgentQuery::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(online(true).await, sorted(vec![agents[0].id, agents[3].id]));
    let offline = online(false).await;
    assert_eq!(offline.len(), 5);
    assert!(offline.contains(&agents[5].id));
    let stats = store.stats(t - Duration::minutes(5)).await.unwrap();
    assert_eq!((stats.agents, stats.agents_online), (7, 2));

    // Level: everyone is a novice until probation is over.
    let admin = admin(&store).await;
    let level = |level: Level| {
        let store = Arc::clone(&store);
        async move {
            let mut ids: Vec<Uuid> = store
                .list_agents(&AgentQuery {
                    level: Some(level),
                    capability: Some("general".to_owned()),
                    limit: 50,
                    ..AgentQuery::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(level(Level::Novice).await.len(), 7);
    assert!(level(Level::Intermediate).await.is_empty());
    finish_probation(&store, &admin, agents[2].id).await;
    assert_eq!(
        store
            .agent(agents[2].id)
            .await
            .unwrap()
            .unwrap()
            .tasks_completed,
        5
    );
    assert_eq!(level(Level::Intermediate).await, vec![agents[2].id]);
    assert_eq!(level(Level::Novice).await.len(), 6);
    assert!(level(Level::Expert).await.is_empty());
    assert!(level(Level::Master).await.is_empty());

    // Filters combine with pagination.
    let page = store
        .list_agents(&AgentQuery {
            level: Some(Level::Novice),
            capability: Some("general".to_owned()),
            before: Some(expected[3]),
            limit: 2,
            ..AgentQuery::default()
        })
        .await
        .unwrap();
    // expected[4] is the intermediate one.
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        expected[5..7].to_vec()
    );
}

/// The directory's search: a part of the handle or the name, in any case, matched literally
/// (`%` and `_` are not wildcards).
pub async fn list_agents_searches_handles_and_names(store: Arc<dyn Store>) {
    let named = |handle: &str, name: &str| {
        let mut a = new_agent(handle, &[]);
        a.name = name.to_owned();
        a
    };
    let scribe = enroll_with(&store, named("scribe-one", "Quarterly Scribe")).await;
    let sure = enroll_with(&store, named("alpha_2", "Agent 100% Sure")).await;
    enroll_with(&store, named("other", "Another one")).await;
    let found = |search: &str| {
        let store = store.clone();
        let search = search.to_owned();
        async move {
            store
                .list_agents(&AgentQuery {
                    search: Some(search),
                    limit: 10,
                    ..AgentQuery::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        found("SCRIBE").await,
        [scribe.id],
        "handle and name, one row"
    );
    assert_eq!(found("quarterly").await, [scribe.id], "the name, any case");
    assert_eq!(found("%").await, [sure.id], "a literal %");
    assert_eq!(found("a_2").await, [sure.id], "a literal _");
    assert_eq!(found("a_").await, [sure.id]);
    assert_eq!(found("nobody").await, Vec::<Uuid>::new());
}
