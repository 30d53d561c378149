//! Upgrades: a database left at every earlier migration level, holding data written the way
//! that level's schema took it, is migrated to the current level by opening the store, and
//! its data is intact and usable: read through the `Store`, changed through it, and the
//! ledger still adds up. On both backends.
//!
//! A database at level L is built by running the migrations one at a time and, after each
//! one that has a seed, writing that seed in that level's SQL (raw SQL, as the code of the
//! time would have left it: balances cached by hand before migration 0003's triggers,
//! capability index rows by hand before them too). So every backfill a later migration does
//! (dependency lists, active task counts, dependents counts, minimum words) runs over real
//! rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use nervix_core::TaskStatus;
use nervix_store::{account_id, AccountKind, Decision, NewSubmission, Store, PLATFORM};
use serde_json::{json, Value};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::types::Json;
use sqlx::{ConnectOptions as _, Connection as _};
use uuid::Uuid;

/// A value bound to a seed statement; each backend binds it as its own column type (UUID ⇄
/// BLOB, TIMESTAMPTZ ⇄ TEXT, JSONB ⇄ TEXT), as the store does.
#[derive(Clone)]
enum V {
    U(Uuid),
    T(&'static str),
    I(i64),
    At(DateTime<Utc>),
    J(Value),
    Bytes(Vec<u8>),
    Null,
}

enum Conn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

macro_rules! bind_all {
    ($q:expr, $vals:expr) => {{
        let mut q = $q;
        for v in $vals {
            q = match v.clone() {
                V::U(u) => q.bind(u),
                V::T(t) => q.bind(t),
                V::I(i) => q.bind(i),
                V::At(t) => q.bind(t),
                V::J(j) => q.bind(Json(j)),
                V::Bytes(b) => q.bind(b),
                V::Null => q.bind(Option::<Uuid>::None),
            };
        }
        q
    }};
}

impl Conn {
    async fn exec(&mut self, sql: &str, vals: &[V]) {
        let done = match self {
            Conn::Sqlite(c) => bind_all!(sqlx::query(sql), vals)
                .execute(&mut *c)
                .await
                .map(|_| ()),
            Conn::Postgres(c) => bind_all!(sqlx::query(sql), vals)
                .execute(&mut *c)
                .await
                .map(|_| ()),
        };
        done.unwrap_or_else(|e| panic!("seed statement failed: {e}\n{sql}"));
    }

    /// Runs the migrations up to and including `level`.
    async fn migrate_to(&mut self, level: i64) {
        let up_to = |mut m: Migrator| {
            m.migrations = Cow::Owned(
                m.migrations
                    .iter()
                    .filter(|x| x.version <= level)
                    .cloned()
                    .collect(),
            );
            m
        };
        match self {
            Conn::Sqlite(c) => up_to(sqlx::migrate!("migrations/sqlite"))
                .run(&mut *c)
                .await
                .unwrap(),
            Conn::Postgres(c) => up_to(sqlx::migrate!("migrations/postgres"))
                .run(&mut *c)
                .await
                .unwrap(),
        }
    }

    async fn close(self) {
        match self {
            Conn::Sqlite(c) => c.close().await.unwrap(),
            Conn::Postgres(c) => c.close().await.unwrap(),
        }
    }
}

fn levels() -> Vec<i64> {
    sqlx::migrate!("migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .collect()
}

/// The ids of what the seeds wrote.
struct Ids {
    poster: Uuid,
    worker: Uuid,
    first: Uuid,
    second: Uuid,
    workflow: Uuid,
    withdrawal: Uuid,
    channel: Uuid,
    at: DateTime<Utc>,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            poster: Uuid::now_v7(),
            worker: Uuid::now_v7(),
            first: Uuid::now_v7(),
            second: Uuid::now_v7(),
            workflow: Uuid::now_v7(),
            withdrawal: Uuid::now_v7(),
            channel: Uuid::now_v7(),
            at: Utc::now(),
        }
    }
}

const GRANT: i64 = 5_000;
const REWARD: i64 = 1_000;
const WITHDRAWN: i64 = 500;

/// Writes the seed for `level` (if it has one) in that level's schema.
async fn seed(conn: &mut Conn, level: i64, ids: &Ids) {
    let at = V::At(ids.at);
    match level {
        // Identity: two agents (with their capability index rows: no trigger keeps them yet),
        // a token and an audit record.
        1 => {
            for (id, handle) in [
                (ids.poster, "upgrade-poster"),
                (ids.worker, "upgrade-worker"),
            ] {
                conn.exec(
                    "INSERT INTO agents (id, handle, name, public_key, capabilities, metadata, \
                     max_concurrent_tasks, available, role, reputation, rep_automated, \
                     rep_success, rep_peer, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, \
                     $6, 3, TRUE, 'agent', 5000, 5000, 5000, 5000, $7, $7)",
                    &[
                        V::U(id),
                        V::T(handle),
                        V::T("Seeded agent"),
                        V::T(if id == ids.poster {
                            "cG9zdGVy"
                        } else {
                            "d29ya2Vy"
                        }),
                        V::J(json!(["writing"])),
                        V::J(json!({"seeded_at_level": 1})),
                        at.clone(),
                    ],
                )
                .await;
                conn.exec(
                    "INSERT INTO agent_capabilities (agent_id, capability) VALUES ($1, 'writing')",
                    &[V::U(id)],
                )
                .await;
            }
            conn.exec(
                "INSERT INTO tokens (jti, agent_id, kid, issued_at, expires_at) VALUES ($1, $2, \
                 'k1', $3, $4)",
                &[
                    V::U(Uuid::now_v7()),
                    V::U(ids.worker),
                    at.clone(),
                    V::At(ids.at + TimeDelta::days(90)),
                ],
            )
            .await;
            conn.exec(
                "INSERT INTO audit_log (id, at, actor_id, action, target, details) VALUES ($1, \
                 $2, $3, 'agent.enroll', 'seed', $4)",
                &[
                    V::U(Uuid::now_v7()),
                    at.clone(),
                    V::U(ids.worker),
                    V::J(json!({})),
                ],
            )
            .await;
        }
        // Work and money, with balances cached by the code of the time: a grant to the poster,
        // a workflow of two tasks escrowed from it, the first claimed by the worker, the
        // second waiting on it.
        2 => {
            let treasury = account_id(PLATFORM, AccountKind::Treasury);
            let available = account_id(ids.poster, AccountKind::Available);
            let escrow = account_id(ids.poster, AccountKind::Escrow);
            // Enrollment creates an agent's accounts; 0001 and 0002 shipped together, so no
            // agent ever existed without them.
            let worker = account_id(ids.worker, AccountKind::Available);
            let worker_escrow = account_id(ids.worker, AccountKind::Escrow);
            for (id, owner, kind, balance) in [
                (treasury, PLATFORM, "treasury", -GRANT),
                (available, ids.poster, "available", GRANT - 2 * REWARD),
                (escrow, ids.poster, "escrow", 2 * REWARD),
                (worker, ids.worker, "available", 0),
                (worker_escrow, ids.worker, "escrow", 0),
            ] {
                conn.exec(
                    "INSERT INTO ledger_accounts (id, owner_id, kind, balance) VALUES ($1, $2, \
                     $3, $4)",
                    &[V::U(id), V::U(owner), V::T(kind), V::I(balance)],
                )
                .await;
            }
            let grant = Uuid::now_v7();
            let hold = Uuid::now_v7();
            for (txn, account, amount, kind, task) in [
                (grant, treasury, -GRANT, "grant", None),
                (grant, available, GRANT, "grant", None),
                (hold, available, -REWARD, "escrow_hold", Some(ids.first)),
                (hold, escrow, REWARD, "escrow_hold", Some(ids.first)),
                (hold, available, -REWARD, "escrow_hold", Some(ids.second)),
                (hold, escrow, REWARD, "escrow_hold", Some(ids.second)),
            ] {
                conn.exec(
                    "INSERT INTO ledger_entries (id, txn_id, account_id, amount, kind, task_id, \
                     memo, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'seed', $7)",
                    &[
                        V::U(Uuid::now_v7()),
                        V::U(txn),
                        V::U(account),
                        V::I(amount),
                        V::T(kind),
                        task.map_or(V::Null, V::U),
                        at.clone(),
                    ],
                )
                .await;
            }
            conn.exec(
                "INSERT INTO workflows (id, name, status, posted_by, created_at, updated_at) \
                 VALUES ($1, 'seeded', 'active', $2, $3, $3)",
                &[V::U(ids.workflow), V::U(ids.poster), at.clone()],
            )
            .await;
            for (id, key, status, assignee, lease) in [
                (
                    ids.first,
                    "first",
                    "claimed",
                    V::U(ids.worker),
                    V::At(ids.at + TimeDelta::hours(1)),
                ),
                (ids.second, "second", "blocked", V::Null, V::Null),
            ] {
                conn.exec(
                    "INSERT INTO tasks (id, title, description, capabilities, min_reputation, \
                     reward_cents, complexity, kind, deadline, status, workflow_id, \
                     workflow_key, posted_by, funded_by_treasury, assigned_agent_id, \
                     max_attempts, lease_expires_at, created_at, updated_at) VALUES ($1, $2, \
                     'Summarise the quarter.', $3, 0, $4, 'simple', 'text', $5, $6, $7, $8, $9, \
                     FALSE, $10, 3, $11, $12, $12)",
                    &[
                        V::U(id),
                        V::T(key),
                        V::J(json!(["writing"])),
                        V::I(REWARD),
                        V::At(ids.at + TimeDelta::days(1)),
                        V::T(status),
                        V::U(ids.workflow),
                        V::T(key),
                        V::U(ids.poster),
                        assignee,
                        lease,
                        at.clone(),
                    ],
                )
                .await;
                conn.exec(
                    "INSERT INTO task_capabilities (task_id, capability) VALUES ($1, 'writing')",
                    &[V::U(id)],
                )
                .await;
            }
            conn.exec(
                "INSERT INTO task_dependencies (task_id, depends_on) VALUES ($1, $2)",
                &[V::U(ids.second), V::U(ids.first)],
            )
            .await;
        }
        // A pending withdrawal (the ledger's triggers keep balances now).
        7 => {
            let available = account_id(ids.poster, AccountKind::Available);
            let pending = account_id(ids.poster, AccountKind::PendingWithdrawal);
            conn.exec(
                "INSERT INTO ledger_accounts (id, owner_id, kind, balance) VALUES ($1, $2, \
                 'pending_withdrawal', 0)",
                &[V::U(pending), V::U(ids.poster)],
            )
            .await;
            let txn = Uuid::now_v7();
            for (account, amount) in [(available, -WITHDRAWN), (pending, WITHDRAWN)] {
                conn.exec(
                    "INSERT INTO ledger_entries (id, txn_id, account_id, amount, kind, memo, \
                     created_at) VALUES ($1, $2, $3, $4, 'withdrawal_request', 'seed', $5)",
                    &[
                        V::U(Uuid::now_v7()),
                        V::U(txn),
                        V::U(account),
                        V::I(amount),
                        at.clone(),
                    ],
                )
                .await;
            }
            conn.exec(
                "INSERT INTO withdrawals (id, agent_id, amount_cents, destination, status, \
                 created_at) VALUES ($1, $2, $3, 'iban:seed', 'pending', $4)",
                &[
                    V::U(ids.withdrawal),
                    V::U(ids.poster),
                    V::I(WITHDRAWN),
                    at.clone(),
                ],
            )
            .await;
        }
        // The worker's event stream: one stored event.
        9 => {
            conn.exec(
                "INSERT INTO agent_event_seqs (agent_id, last_seq) VALUES ($1, 1)",
                &[V::U(ids.worker)],
            )
            .await;
            conn.exec(
                "INSERT INTO agent_events (agent_id, seq, kind, data, created_at) VALUES ($1, \
                 1, 'task_available', $2, $3)",
                &[
                    V::U(ids.worker),
                    V::J(json!({"task_id": ids.second})),
                    at.clone(),
                ],
            )
            .await;
        }
        // A channel of the two, with a message.
        10 => {
            conn.exec(
                "INSERT INTO channels (id, name, created_by, created_at) VALUES ($1, 'seeded', \
                 $2, $3)",
                &[V::U(ids.channel), V::U(ids.poster), at.clone()],
            )
            .await;
            for member in [ids.poster, ids.worker] {
                conn.exec(
                    "INSERT INTO channel_members (channel_id, agent_id, joined_at) VALUES ($1, \
                     $2, $3)",
                    &[V::U(ids.channel), V::U(member), at.clone()],
                )
                .await;
            }
            conn.exec(
                "INSERT INTO messages (id, conversation_id, sender_id, channel_id, encrypted, \
                 payload, created_at) VALUES ($1, $2, $3, $2, FALSE, $4, $5)",
                &[
                    V::U(Uuid::now_v7()),
                    V::U(ids.channel),
                    V::U(ids.poster),
                    V::Bytes(b"hello from an older version".to_vec()),
                    at.clone(),
                ],
            )
            .await;
        }
        _ => {}
    }
}

/// Builds a database at `level` under `url`, then opens the store on it (which migrates to
/// the current level) and checks every seed that was written.
async fn upgrade_from(level: i64, url: &str, mut conn: Conn) {
    let ids = Ids::new();
    for l in levels().into_iter().filter(|l| *l <= level) {
        conn.migrate_to(l).await;
        seed(&mut conn, l, &ids).await;
    }
    conn.close().await;

    let store = nervix_store::connect(url, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("migrating from level {level}: {e}"));
    check(store.as_ref(), level, &ids).await;
    store.close().await;
}

async fn check(store: &dyn Store, level: i64, ids: &Ids) {
    let ctx = format!("upgraded from level {level}");
    let worker = store.agent(ids.worker).await.unwrap().expect(&ctx);
    assert_eq!(worker.handle, "upgrade-worker", "{ctx}");
    assert_eq!(worker.capabilities, vec!["writing"], "{ctx}");
    assert_eq!(
        store
            .agent_by_handle("upgrade-poster")
            .await
            .unwrap()
            .expect(&ctx)
            .metadata,
        json!({"seeded_at_level": 1}),
        "{ctx}"
    );
    let report = store.verify_ledger().await.unwrap();
    assert!(
        report.problems().is_empty(),
        "{ctx}: {:?}",
        report.problems()
    );
    if level < 2 {
        return;
    }

    // Backfilled by 0003 (dependency list, active tasks), 0004 (dependents), 0006 (words).
    assert_eq!(worker.active_tasks, 1, "{ctx}");
    let first = store.task(ids.first).await.unwrap().expect(&ctx);
    let second = store.task(ids.second).await.unwrap().expect(&ctx);
    assert_eq!(first.status, TaskStatus::Claimed, "{ctx}");
    assert_eq!(first.assigned_agent_id, Some(ids.worker), "{ctx}");
    assert_eq!(first.dependents, 1, "{ctx}");
    assert_eq!(first.min_words, Some(20), "{ctx}");
    assert_eq!(second.status, TaskStatus::Blocked, "{ctx}");
    assert_eq!(second.depends_on, vec![ids.first], "{ctx}");
    assert_eq!(
        store.workflow_tasks(ids.workflow).await.unwrap().len(),
        2,
        "{ctx}"
    );
    let withdrawn = if level >= 7 { WITHDRAWN } else { 0 };
    let balances = store.balances(ids.poster).await.unwrap();
    assert_eq!(balances.available, GRANT - 2 * REWARD - withdrawn, "{ctx}");
    assert_eq!(balances.escrow, 2 * REWARD, "{ctx}");
    if level >= 7 {
        let w = store.withdrawal(ids.withdrawal).await.unwrap().expect(&ctx);
        assert_eq!(w.amount_cents, WITHDRAWN, "{ctx}");
    }
    if level >= 9 {
        let events = store.events_since(ids.worker, 0, 10).await.unwrap();
        assert_eq!(events.len(), 1, "{ctx}");
        assert_eq!(events[0].seq, 1, "{ctx}");
    }
    if level >= 10 {
        let channel = store.channel(ids.channel, ids.worker).await.unwrap();
        assert!(
            channel.is_some(),
            "{ctx}: the worker still sees its channel"
        );
    }

    // Usable: the worker hands the seeded task in, is paid, the second task opens, new
    // events go on from the stored sequence, and the ledger still adds up.
    let at = Utc::now();
    store
        .submit(
            &NewSubmission {
                id: Uuid::now_v7(),
                task_id: ids.first,
                agent_id: ids.worker,
                content: json!("The quarter grew in every region; costs stayed flat."),
                notes: None,
                quality_score: 90,
                checks: json!([]),
                decision: Decision::Accept,
                feedback: None,
                retry: Default::default(),
                artifacts: Vec::new(),
                at,
            },
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: submit: {e}"));
    assert_eq!(
        store.task(ids.first).await.unwrap().unwrap().status,
        TaskStatus::Completed,
        "{ctx}"
    );
    assert_eq!(
        store.task(ids.second).await.unwrap().unwrap().status,
        TaskStatus::Available,
        "{ctx}"
    );
    assert!(
        store.balances(ids.worker).await.unwrap().available > 0,
        "{ctx}"
    );
    let stored = store
        .append_events(&[nervix_store::NewEvent {
            agent_id: ids.worker,
            kind: "task_update".into(),
            data: json!({}),
            created_at: at,
        }])
        .await
        .unwrap();
    let expected_seq = if level >= 9 { 2 } else { 1 };
    assert_eq!(stored[0].seq, expected_seq, "{ctx}");
    let report = store.verify_ledger().await.unwrap();
    assert!(
        report.problems().is_empty(),
        "{ctx}: {:?}",
        report.problems()
    );
}

#[tokio::test]
async fn sqlite_databases_of_every_earlier_level_upgrade_with_their_data() {
    let all = levels();
    for &level in &all[..all.len() - 1] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let conn = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .foreign_keys(true)
            .connect()
            .await
            .unwrap();
        upgrade_from(level, &url, Conn::Sqlite(conn)).await;
    }
}

#[tokio::test]
async fn postgres_databases_of_every_earlier_level_upgrade_with_their_data() {
    let all = levels();
    for &level in &all[..all.len() - 1] {
        let Some(url) = nervix_store::testing::postgres_database_url().await else {
            return;
        };
        let conn = sqlx::PgConnection::connect(&url).await.unwrap();
        upgrade_from(level, &url, Conn::Postgres(conn)).await;
    }
}
