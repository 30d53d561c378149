//! What the database itself refuses or keeps (migration 0003), checked with SQL written
//! straight to the database, past the store: ledger entries cannot be changed or deleted, a
//! balance cannot be set below zero, the capability index follows its column.

use std::str::FromStr;

use nervix_store::testing::{self, TestStore};
use nervix_store::*;
use sqlx::{Connection, Executor};

use crate::support::*;

/// Runs raw statements against the store's database and returns their outcomes in order.
async fn raw(ts: &TestStore, statements: &[&str]) -> Vec<Result<u64, String>> {
    let mut out = Vec::new();
    if ts.store.backend() == "postgres" {
        let opts = sqlx::postgres::PgConnectOptions::from_str(&ts.url).unwrap();
        let mut conn = sqlx::PgConnection::connect_with(&opts).await.unwrap();
        for s in statements {
            out.push(
                conn.execute(*s)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| e.to_string()),
            );
        }
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&ts.url)
            .unwrap()
            .busy_timeout(std::time::Duration::from_secs(5));
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        for s in statements {
            out.push(
                conn.execute(*s)
                    .await
                    .map(|r| r.rows_affected())
                    .map_err(|e| e.to_string()),
            );
        }
    }
    out
}

async fn database_keeps_invariants(ts: &TestStore) {
    let store = &ts.store;
    let admin = admin(store).await;
    let worker = enroll(store, &["rust", "sql"]).await;
    let t = post_one(store, &admin, task(500)).await;
    claim_ok(store, t.id, worker.id).await;
    submit_done(store, t.id, worker.id, Decision::Accept, 100).await;
    assert_ledger_consistent(store).await;

    let outcomes = raw(
        ts,
        &[
            "UPDATE ledger_entries SET amount = amount + 1",
            "DELETE FROM ledger_entries",
            "UPDATE ledger_accounts SET balance = -1 WHERE kind = 'available'",
        ],
    )
    .await;
    for (what, outcome) in ["update", "delete"].iter().zip(&outcomes[..2]) {
        let err = outcome.as_ref().expect_err(what);
        assert!(err.contains("ledger_entries_append_only"), "{what}: {err}");
    }
    let err = outcomes[2].as_ref().expect_err("overdraft");
    assert!(
        err.contains("ledger_accounts_no_overdraft"),
        "overdraft: {err}"
    );
    // Nothing of the refused statements stuck.
    assert_ledger_consistent(store).await;
    assert!(balances(store, worker.id).await.available > 0);

    // The capability index follows the agents' column, on insert and on update.
    let q = |cap: &str| AgentQuery {
        capability: Some(cap.to_owned()),
        online_since: now(),
        limit: 100,
        ..AgentQuery::default()
    };
    let with = |v: Vec<AgentRecord>| v.iter().any(|a| a.id == worker.id);
    assert!(with(store.list_agents(&q("sql")).await.unwrap()));
    store
        .update_agent_config(
            worker.id,
            &AgentConfigPatch {
                capabilities: Some(vec!["go".to_owned()]),
                at: now(),
                ..AgentConfigPatch::default()
            },
            &audit("agent.config"),
        )
        .await
        .unwrap();
    assert!(!with(store.list_agents(&q("sql")).await.unwrap()));
    assert!(with(store.list_agents(&q("go")).await.unwrap()));

    // A task row carries its dependency list, sorted.
    let a = post_one(store, &admin, task(100)).await;
    let b = post_one(store, &admin, task(100)).await;
    let mut child = task(100);
    child.depends_on = vec![b.id, a.id, b.id];
    let child = post_one(store, &admin, child).await;
    assert_eq!(child.depends_on, sorted(vec![a.id, b.id]));
    assert_eq!(
        task_of(store, child.id).await.depends_on,
        sorted(vec![a.id, b.id])
    );
}

#[tokio::test]
async fn sqlite_database_keeps_invariants() {
    let ts = testing::sqlite().await;
    database_keeps_invariants(&ts).await;
    teardown(ts).await;
}

#[tokio::test]
async fn postgres_database_keeps_invariants() {
    let Some(ts) = testing::postgres().await else {
        return;
    };
    database_keeps_invariants(&ts).await;
    teardown(ts).await;
}
