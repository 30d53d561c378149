//! Agents: creation, lookups, the directory, settings, suspension.

use chrono::{DateTime, Utc};
use nervix_core::{Level, Role};
use sqlx::types::Json;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::housekeeping::insert_audit;
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::{self, *};
use crate::{Conflict, Result, StoreError};

pub(super) async fn insert_agent(conn: &mut Conn, a: &NewAgent) -> Result<AgentRecord> {
    let initial = nervix_core::reputation::INITIAL_SCORE.hundredths();
    let row: AgentRow = sqlx::query_as(&format!(
        "INSERT INTO agents (id, handle, name, public_key, encryption_public_key, capabilities, \
         metadata, max_concurrent_tasks, available, role, suspended, reputation, rep_automated, \
         rep_success, rep_peer, tasks_completed, tasks_failed, created_at, updated_at) VALUES ($1, \
         $2, $3, $4, $5, $6, $7, $8, TRUE, $9, FALSE, $10, $10, $10, $10, 0, 0, $11, $11) \
         RETURNING {AGENT_COLUMNS}"
    ))
    .bind(a.id)
    .bind(&a.handle)
    .bind(&a.name)
    .bind(&a.public_key)
    .bind(&a.encryption_public_key)
    .bind(Json(&a.capabilities))
    .bind(Json(&a.metadata))
    .bind(a.max_concurrent_tasks)
    .bind(a.role.as_str())
    .bind(initial)
    .bind(a.created_at)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::from_insert_agent)?;
    sqlx::query(
        "INSERT INTO ledger_accounts (id, owner_id, kind, balance) VALUES ($1, $2, $3, 0), ($4, \
         $2, $5, 0)",
    )
    .bind(account_id(a.id, AccountKind::Available))
    .bind(a.id)
    .bind(AccountKind::Available.as_str())
    .bind(account_id(a.id, AccountKind::Escrow))
    .bind(AccountKind::Escrow.as_str())
    .execute(conn)
    .await?;
    row.try_into()
}

async fn fetch_agent(
    store: &Backend,
    sql: &str,
    key: impl for<'q> sqlx::Encode<'q, Db> + sqlx::Type<Db> + Send,
) -> Result<Option<AgentRecord>> {
    let row: Option<AgentRow> = sqlx::query_as(sql)
        .bind(key)
        .fetch_optional(store.reader())
        .await?;
    row.map(TryInto::try_into).transpose()
}

#[tracing::instrument(skip_all, name = "store.agent", level = "debug", fields(id = %id))]
pub(super) async fn agent(store: &Backend, id: Uuid) -> Result<Option<AgentRecord>> {
    fetch_agent(
        store,
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"),
        id,
    )
    .await
}

#[tracing::instrument(skip_all, name = "store.agent_by_handle", level = "debug")]
pub(super) async fn agent_by_handle(store: &Backend, handle: &str) -> Result<Option<AgentRecord>> {
    fetch_agent(
        store,
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE handle = $1"),
        handle.to_owned(),
    )
    .await
}

#[tracing::instrument(skip_all, name = "store.enrollment_conflict", level = "debug")]
pub(super) async fn enrollment_conflict(
    store: &Backend,
    handle: &str,
    public_key: &str,
) -> Result<Option<Conflict>> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT handle FROM agents WHERE handle = $1 OR public_key = $2 LIMIT 1")
            .bind(handle)
            .bind(public_key)
            .fetch_optional(store.reader())
            .await?;
    Ok(row.map(|(h,)| {
        if h == handle {
            Conflict::DuplicateHandle
        } else {
            Conflict::DuplicatePublicKey
        }
    }))
}

#[tracing::instrument(skip_all, name = "store.list_agents", level = "debug")]
pub(super) async fn list_agents(store: &Backend, q: &AgentQuery) -> Result<Vec<AgentRecord>> {
    let mut qb = QueryBuilder::<Db>::new(format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE suspended = FALSE"
    ));
    if let Some(cap) = &q.capability {
        qb.push(" AND id IN (SELECT agent_id FROM agent_capabilities WHERE capability = ")
            .push_bind(cap)
            .push(")");
    }
    if let Some(level) = q.level {
        let p = nervix_core::reputation::PROBATION_TASKS;
        let (lo, hi) = match level {
            Level::Novice => (0, 4999),
            Level::Intermediate => (5000, 7499),
            Level::Expert => (7500, 8999),
            Level::Master => (9000, 10_000),
        };
        if level == Level::Novice {
            qb.push(" AND (reputation < 5000 OR tasks_completed < ")
                .push_bind(p)
                .push(")");
        } else {
            qb.push(" AND tasks_completed >= ")
                .push_bind(p)
                .push(" AND reputation >= ")
                .push_bind(lo)
                .push(" AND reputation <= ")
                .push_bind(hi);
        }
    }
    match q.online {
        Some(true) => {
            qb.push(" AND last_seen_at >= ").push_bind(q.online_since);
        }
        Some(false) => {
            qb.push(" AND (last_seen_at IS NULL OR last_seen_at < ")
                .push_bind(q.online_since)
                .push(")");
        }
        None => {}
    }
    if let Some(search) = &q.search {
        // The needle is matched literally: its own `%`, `_` and `\` are escaped.
        let needle = search
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{needle}%");
        qb.push(" AND (LOWER(handle) LIKE ")
            .push_bind(pattern.clone())
            .push(" ESCAPE '\\' OR LOWER(name) LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\')");
    }
    if let Some(before) = q.before {
        qb.push(" AND id < ").push_bind(before);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<AgentRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    rows::collect(rows)
}

#[tracing::instrument(skip_all, name = "store.all_agents", level = "debug")]
pub(super) async fn all_agents(store: &Backend) -> Result<Vec<AgentRecord>> {
    let rows: Vec<AgentRow> = sqlx::query_as(&format!("SELECT {AGENT_COLUMNS} FROM agents"))
        .fetch_all(store.reader())
        .await?;
    rows::collect(rows)
}

#[tracing::instrument(skip_all, name = "store.leaderboard", level = "debug")]
pub(super) async fn leaderboard(store: &Backend, limit: i64) -> Result<Vec<AgentRecord>> {
    let rows: Vec<AgentRow> = sqlx::query_as(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE suspended = FALSE AND role <> 'admin' ORDER BY \
         reputation DESC, tasks_completed DESC, id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    rows::collect(rows)
}

#[tracing::instrument(
    skip_all,
    name = "store.update_agent_config",
    level = "debug",
    fields(id = %id)
)]
pub(super) async fn update_agent_config(
    store: &Backend,
    id: Uuid,
    p: &AgentConfigPatch,
    audit: &AuditEntry,
) -> Result<AgentRecord> {
    store
        .write((id, p.clone(), audit.clone()), |mut tx, (id, p, audit)| {
            Box::pin(async move {
                let mut qb = QueryBuilder::<Db>::new("UPDATE agents SET updated_at = ");
                qb.push_bind(p.at);
                if let Some(name) = &p.name {
                    qb.push(", name = ").push_bind(name);
                }
                if let Some(caps) = &p.capabilities {
                    qb.push(", capabilities = ").push_bind(Json(caps));
                }
                if let Some(meta) = &p.metadata {
                    qb.push(", metadata = ").push_bind(Json(meta));
                }
                if let Some(key) = &p.encryption_public_key {
                    qb.push(", encryption_public_key = ").push_bind(key);
                }
                if let Some(max) = p.max_concurrent_tasks {
                    qb.push(", max_concurrent_tasks = ").push_bind(max);
                }
                if let Some(available) = p.available {
                    qb.push(", available = ").push_bind(available);
                }
                // The capability index follows the column (trigger, migration 0003).
                qb.push(" WHERE id = ")
                    .push_bind(*id)
                    .push(format!(" RETURNING {AGENT_COLUMNS}"));
                let row: Option<AgentRow> = qb.build_query_as().fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    return tx.refuse(Err(StoreError::NotFound));
                };
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                row.try_into()
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.set_suspended", level = "debug", fields(id = %id))]
pub(super) async fn set_suspended(
    store: &Backend,
    id: Uuid,
    suspended: bool,
    audit: &AuditEntry,
) -> Result<AgentRecord> {
    store
        .write(
            (id, suspended, audit.clone()),
            |mut tx, (id, suspended, audit)| {
                Box::pin(async move {
                    let row: Option<AgentRow> = sqlx::query_as(&format!(
                        "UPDATE agents SET suspended = $1, updated_at = $2 WHERE id = $3 RETURNING \
                         {AGENT_COLUMNS}"
                    ))
                    .bind(*suspended)
                    .bind(audit.at)
                    .bind(*id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return tx.refuse(Err(StoreError::NotFound));
                    };
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    row.try_into()
                })
            },
        )
        .await
}

/// Sets an agent's role, unless it is an admin (the operator's identity keeps its role).
#[tracing::instrument(skip_all, name = "store.set_role", level = "debug", fields(id = %id, role = %role))]
pub(super) async fn set_role(
    store: &Backend,
    id: Uuid,
    role: Role,
    audit: &AuditEntry,
) -> Result<Option<AgentRecord>> {
    store
        .write((id, role, audit.clone()), |mut tx, (id, role, audit)| {
            Box::pin(async move {
                let row: Option<AgentRow> = sqlx::query_as(&format!(
                    "UPDATE agents SET role = $1, updated_at = $2 WHERE id = $3 AND role <> \
                     'admin' RETURNING {AGENT_COLUMNS}"
                ))
                .bind(role.as_str())
                .bind(audit.at)
                .bind(*id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = row else {
                    return tx.refuse(Ok(None));
                };
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(Some(row.try_into()?))
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.ensure_agent", level = "debug")]
pub(super) async fn ensure_agent(
    store: &Backend,
    agent: &NewAgent,
    audit: &AuditEntry,
) -> Result<AgentRecord> {
    if let Some(existing) = agent_by_handle(store, &agent.handle).await? {
        return Ok(existing);
    }
    let created = store
        .write((agent.clone(), audit.clone()), |mut tx, (agent, audit)| {
            Box::pin(async move {
                let record = match insert_agent(&mut tx, agent).await {
                    // Its first statement was refused by the unique index: nothing written.
                    Err(e @ StoreError::Conflict(_)) => return tx.refuse(Err(e)),
                    other => other?,
                };
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(record)
            })
        })
        .await;
    match created {
        // Created concurrently by another process: use theirs.
        Err(StoreError::Conflict(Conflict::DuplicateHandle)) => {
            agent_by_handle(store, &agent.handle)
                .await?
                .ok_or(StoreError::NotFound)
        }
        other => other,
    }
}

#[tracing::instrument(skip_all, name = "store.touch_agent", level = "debug", fields(agent = %id))]
pub(super) async fn touch_agent(store: &Backend, id: Uuid, at: DateTime<Utc>) -> Result<()> {
    store
        .write_one((id, at), |conn, (id, at)| {
            Box::pin(async move {
                sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE id = $2")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        })
        .await
}
