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

/// `verify_ledger` finds what only a hand edit of the database can do: a cached balance that
/// is not the sum of its entries, and an entry that unbalances its transaction (and, paying
/// an agent from nowhere, breaks conservation).
async fn verification_finds_tampering(ts: &TestStore) {
    let store = &ts.store;
    let admin = admin(store).await;
    let worker = enroll(store, &[]).await;
    let t = post_one(store, &admin, task(500)).await;
    claim_ok(store, t.id, worker.id).await;
    submit_done(store, t.id, worker.id, Decision::Accept, 100).await;
    let clean = store.verify_ledger().await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.problems());
    assert!(clean.accounts >= 4 && clean.entries >= 4 && clean.transactions >= 2);
    assert_eq!(clean.agents_total, clean.operator_put_in);

    let account = account_id(worker.id, AccountKind::Available);
    let (uuid, txn) = if store.backend() == "postgres" {
        (
            format!("'{account}'"),
            format!("'{}'", uuid::Uuid::now_v7()),
        )
    } else {
        (
            format!("X'{}'", account.simple()),
            format!("X'{}'", uuid::Uuid::now_v7().simple()),
        )
    };
    let outcomes = raw(
        ts,
        &[&format!(
            "UPDATE ledger_accounts SET balance = balance + 7 WHERE id = {uuid}"
        )],
    )
    .await;
    assert_eq!(outcomes[0], Ok(1));
    let report = store.verify_ledger().await.unwrap();
    assert_eq!(report.mismatched_balances.len(), 1, "{report:?}");
    let m = &report.mismatched_balances[0];
    assert_eq!((m.account_id, m.cached - m.computed), (account, 7));
    assert!(report.problems()[0].contains(&account.to_string()));

    // An entry of its own transaction, crediting the worker from nowhere.
    let (id, at) = if store.backend() == "postgres" {
        (format!("'{}'", uuid::Uuid::now_v7()), "now()".to_owned())
    } else {
        (
            format!("X'{}'", uuid::Uuid::now_v7().simple()),
            "'2030-01-01T00:00:00Z'".to_owned(),
        )
    };
    let outcomes = raw(
        ts,
        &[&format!(
            "INSERT INTO ledger_entries (id, txn_id, account_id, amount, kind, task_id, memo, \
             created_at) VALUES ({id}, {txn}, {uuid}, 1000, 'grant', NULL, 'forged', {at})"
        )],
    )
    .await;
    assert_eq!(outcomes[0], Ok(1));
    let report = store.verify_ledger().await.unwrap();
    assert_eq!(report.unbalanced_transactions.len(), 1, "{report:?}");
    assert_eq!(report.unbalanced_transactions[0].1, 1000);
    assert!(report.agents_total > report.operator_put_in, "{report:?}");
    assert!(
        report.problems().iter().any(|p| p.contains("conservation")),
        "{:?}",
        report.problems()
    );
}

#[tokio::test]
async fn sqlite_verification_finds_tampering() {
    let ts = testing::sqlite().await;
    verification_finds_tampering(&ts).await;
    teardown(ts).await;
}

#[tokio::test]
async fn postgres_verification_finds_tampering() {
    let Some(ts) = testing::postgres().await else {
        return;
    };
    verification_finds_tampering(&ts).await;
    teardown(ts).await;
}
