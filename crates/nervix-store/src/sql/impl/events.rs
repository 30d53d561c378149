//! The per-agent event stream, notifications and announcements.
//!
//! Every frame an agent is sent is stored under that agent's next `seq` (1, 2, 3, … without a
//! gap), so an agent that reconnects asks for everything after the last `seq` it saw. A write
//! advances the agent's counter in `agent_event_seqs` with an upsert and inserts the events
//! with the numbers it got, in one transaction: on PostgreSQL the counter row stays locked
//! until the commit, so one agent's events commit in `seq` order; on SQLite the single writer
//! orders everything.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::housekeeping::insert_audit;
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::*;
use crate::{Result, StoreError};

/// Rows per multi-row statement: far below either backend's limit on bound parameters
/// (SQLite's 32,766, PostgreSQL's 65,535) at up to 7 parameters a row.
pub(super) const CHUNK: usize = 1000;

/// The frame type of a notification's event.
const NOTIFICATION: &str = "notification";
/// The frame type of an announcement's event.
const ANNOUNCEMENT: &str = "announcement";

/// Stores `events` in the caller's transaction, each under the next `seq` of its agent (an
/// agent's events in the order given). Counters are advanced in agent id order, so two
/// batches on PostgreSQL lock shared counters in the same order.
pub(super) async fn append_in(conn: &mut Conn, events: &[NewEvent]) -> Result<Vec<StoredEvent>> {
    let mut counts: BTreeMap<Uuid, i64> = BTreeMap::new();
    for e in events {
        *counts.entry(e.agent_id).or_default() += 1;
    }
    let counts: Vec<(Uuid, i64)> = counts.into_iter().collect();
    let mut next: HashMap<Uuid, i64> = HashMap::with_capacity(counts.len());
    for chunk in counts.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new("INSERT INTO agent_event_seqs (agent_id, last_seq) ");
        qb.push_values(chunk, |mut b, &(agent, n)| {
            b.push_bind(agent).push_bind(n);
        });
        qb.push(
            " ON CONFLICT (agent_id) DO UPDATE SET last_seq = agent_event_seqs.last_seq + \
             excluded.last_seq RETURNING agent_id, last_seq",
        );
        let rows: Vec<(Uuid, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
        let wanted: HashMap<Uuid, i64> = chunk.iter().copied().collect();
        for (agent, last) in rows {
            let n = wanted.get(&agent).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("event counter of unexpected agent {agent}"))
            })?;
            next.insert(agent, last - n + 1);
        }
    }
    let mut stored = Vec::with_capacity(events.len());
    for e in events {
        let seq = next.get_mut(&e.agent_id).ok_or_else(|| {
            StoreError::Corrupt(format!("no event counter for agent {}", e.agent_id))
        })?;
        stored.push(StoredEvent {
            agent_id: e.agent_id,
            seq: *seq,
            kind: e.kind.clone(),
            data: e.data.clone(),
            created_at: e.created_at,
        });
        *seq += 1;
    }
    for chunk in stored.chunks(CHUNK) {
        let mut qb = QueryBuilder::<Db>::new(
            "INSERT INTO agent_events (agent_id, seq, kind, data, created_at) ",
        );
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.agent_id)
                .push_bind(e.seq)
                .push_bind(&e.kind)
                .push_bind(Json(&e.data))
                .push_bind(e.created_at);
        });
        qb.build().execute(&mut *conn).await?;
    }
    Ok(stored)
}

/// Stores one event for every agent in the caller's transaction, set-based: one statement
/// advances every counter (marking it with this broadcast), one inserts the events of the
/// marked counters. An agent enrolled meanwhile is not marked, so it gets no event under a
/// `seq` this broadcast did not allocate. Returns each agent's `seq`.
pub(super) async fn broadcast_in(
    conn: &mut Conn,
    kind: &str,
    data: &Value,
    at: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>> {
    let mark = Uuid::now_v7();
    // `WHERE TRUE` keeps SQLite from reading `ON CONFLICT` as a join constraint; id order is
    // the counters' lock order (see `append_in`).
    sqlx::query(
        "INSERT INTO agent_event_seqs (agent_id, last_seq, broadcast_id) SELECT id, 1, $1 FROM \
         agents WHERE TRUE ORDER BY id ON CONFLICT (agent_id) DO UPDATE SET last_seq = \
         agent_event_seqs.last_seq + 1, broadcast_id = excluded.broadcast_id",
    )
    .bind(mark)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_as(
        "INSERT INTO agent_events (agent_id, seq, kind, data, created_at) SELECT agent_id, \
         last_seq, $2, $3, $4 FROM agent_event_seqs WHERE broadcast_id = $1 RETURNING agent_id, \
         seq",
    )
    .bind(mark)
    .bind(kind)
    .bind(Json(data))
    .bind(at)
    .fetch_all(&mut *conn)
    .await?)
}

#[tracing::instrument(skip_all, name = "store.append_events", level = "debug", fields(n = events.len()))]
pub(super) async fn append_events(
    store: &Backend,
    events: &[NewEvent],
) -> Result<Vec<StoredEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    store
        .write(events.to_vec(), |mut tx, events| {
            Box::pin(async move {
                let stored = append_in(&mut tx, events).await?;
                tx.commit().await?;
                Ok(stored)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.events_since", level = "debug", fields(agent = %agent, after))]
pub(super) async fn events_since(
    store: &Backend,
    agent: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM agent_events WHERE agent_id = $1 AND seq > $2 ORDER BY seq \
         LIMIT $3"
    ))
    .bind(agent)
    .bind(after)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[tracing::instrument(skip_all, name = "store.last_event_seq", level = "debug", fields(agent = %agent))]
pub(super) async fn last_event_seq(store: &Backend, agent: Uuid) -> Result<i64> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_seq FROM agent_event_seqs WHERE agent_id = $1")
            .bind(agent)
            .fetch_optional(store.reader())
            .await?;
    Ok(last.unwrap_or(0))
}

/// Runs a batched retention `DELETE` whose parameters are a cut-off time (`$1`) and a batch
/// size (`$2`).
async fn delete_batch(
    store: &Backend,
    sql: &'static str,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    store
        .write_one((before, limit), move |conn, &(before, limit)| {
            Box::pin(async move {
                Ok(sqlx::query(sql)
                    .bind(before)
                    .bind(limit)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected())
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.prune_events", level = "debug")]
pub(super) async fn prune_events(
    store: &Backend,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    // The counters stay: an agent's next event continues its numbering.
    let sql = "DELETE FROM agent_events WHERE (agent_id, seq) IN (SELECT agent_id, seq FROM \
               agent_events WHERE created_at < $1 LIMIT $2)";
    delete_batch(store, sql, before, limit).await
}

#[tracing::instrument(skip_all, name = "store.create_notifications", level = "debug", fields(n = ns.len()))]
pub(super) async fn create_notifications(
    store: &Backend,
    ns: &[NewNotification],
) -> Result<Vec<StoredEvent>> {
    if ns.is_empty() {
        return Ok(Vec::new());
    }
    store
        .write(ns.to_vec(), |mut tx, ns| {
            Box::pin(async move {
                for chunk in ns.chunks(CHUNK) {
                    let mut qb = QueryBuilder::<Db>::new(
                        "INSERT INTO notifications (id, agent_id, kind, title, body, data, \
                         created_at) ",
                    );
                    qb.push_values(chunk, |mut b, n| {
                        b.push_bind(n.id)
                            .push_bind(n.agent_id)
                            .push_bind(n.kind.as_str())
                            .push_bind(&n.title)
                            .push_bind(&n.body)
                            .push_bind(Json(&n.data))
                            .push_bind(n.created_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                let events: Vec<NewEvent> = ns
                    .iter()
                    .map(|n| NewEvent {
                        agent_id: n.agent_id,
                        kind: NOTIFICATION.to_owned(),
                        data: n.frame_data(),
                        created_at: n.created_at,
                    })
                    .collect();
                let stored = append_in(&mut tx, &events).await?;
                tx.commit().await?;
                Ok(stored)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.notifications", level = "debug", fields(agent = %q.agent_id))]
pub(super) async fn notifications(
    store: &Backend,
    q: &NotificationQuery,
) -> Result<Vec<NotificationRecord>> {
    let mut qb = QueryBuilder::<Db>::new(format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE agent_id = "
    ));
    qb.push_bind(q.agent_id);
    if q.unread_only {
        qb.push(" AND read_at IS NULL");
    }
    if let Some(cursor) = q.cursor {
        qb.push(" AND id < ").push_bind(cursor);
    }
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<NotificationRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    collect(rows)
}

#[tracing::instrument(skip_all, name = "store.mark_notifications_read", level = "debug", fields(agent = %agent))]
pub(super) async fn mark_notifications_read(
    store: &Backend,
    agent: Uuid,
    which: &MarkRead,
    at: DateTime<Utc>,
) -> Result<u64> {
    if matches!(which, MarkRead::Ids(ids) if ids.is_empty()) {
        return Ok(0);
    }
    store
        .write_one((agent, which.clone(), at), |conn, (agent, which, at)| {
            Box::pin(async move {
                let mut qb = QueryBuilder::<Db>::new("UPDATE notifications SET read_at = ");
                qb.push_bind(*at)
                    .push(" WHERE agent_id = ")
                    .push_bind(*agent)
                    .push(" AND read_at IS NULL");
                if let MarkRead::Ids(ids) = which {
                    qb.push(" AND id IN (");
                    let mut list = qb.separated(", ");
                    for id in ids {
                        list.push_bind(*id);
                    }
                    qb.push(")");
                }
                Ok(qb.build().execute(&mut *conn).await?.rows_affected())
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.prune_notifications", level = "debug")]
pub(super) async fn prune_notifications(
    store: &Backend,
    read_before: DateTime<Utc>,
    limit: i64,
) -> Result<u64> {
    let sql = "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications WHERE \
               read_at IS NOT NULL AND read_at < $1 LIMIT $2)";
    delete_batch(store, sql, read_before, limit).await
}

#[tracing::instrument(skip_all, name = "store.create_announcement", level = "debug", fields(id = %a.id))]
pub(super) async fn create_announcement(
    store: &Backend,
    a: &NewAnnouncement,
    audit: &AuditEntry,
) -> Result<Vec<(Uuid, i64)>> {
    store
        .write((a.clone(), audit.clone()), |mut tx, (a, audit)| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO announcements (id, title, body, created_by, created_at) VALUES \
                     ($1, $2, $3, $4, $5)",
                )
                .bind(a.id)
                .bind(&a.title)
                .bind(&a.body)
                .bind(a.created_by)
                .bind(a.created_at)
                .execute(&mut *tx)
                .await?;
                let seqs =
                    broadcast_in(&mut tx, ANNOUNCEMENT, &a.frame_data(), a.created_at).await?;
                insert_audit(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(seqs)
            })
        })
        .await
}
