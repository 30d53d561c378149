//! Messages and channels. Payloads are bytes stored as sent; nothing here reads them.
//!
//! Membership is what every channel operation turns on: only a current member (a row without
//! `left_at`) may send to a channel, read its history, see it or add members to it. A channel
//! message is inserted by one conditional statement that re-checks the sender's membership,
//! so a sender who left an instant before cannot slip a message in on PostgreSQL either.

use std::collections::HashSet;

use sqlx::QueryBuilder;
use uuid::Uuid;

use super::events::append_in;
use super::housekeeping::insert_audit;
use super::idempotency::{claim_key, key_used, store_response, KEY_USED};
use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::*;
use crate::{Result, StoreError};

/// Whether `agent` is a current member of `channel`, read on `conn`.
async fn is_member(conn: &mut Conn, channel: Uuid, agent: Uuid) -> Result<bool> {
    let found: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM channel_members \
         WHERE channel_id = $1 AND agent_id = $2 AND left_at IS NULL)",
    )
    .bind(channel)
    .bind(agent)
    .fetch_one(conn)
    .await?;
    Ok(found)
}

/// The current members of `channel`, oldest first.
async fn members(conn: &mut Conn, channel: Uuid) -> Result<Vec<ChannelMember>> {
    let rows: Vec<ChannelMemberRow> = sqlx::query_as(
        "SELECT cm.agent_id, a.handle, cm.joined_at FROM channel_members cm \
         JOIN agents a ON a.id = cm.agent_id \
         WHERE cm.channel_id = $1 AND cm.left_at IS NULL ORDER BY cm.joined_at, cm.agent_id",
    )
    .bind(channel)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(ChannelMember::from).collect())
}

/// `channel` with its current members, read on `conn`.
async fn detail(conn: &mut Conn, channel: Uuid) -> Result<ChannelDetail> {
    let row: ChannelRow = sqlx::query_as(&format!(
        "SELECT {CHANNEL_COLUMNS} FROM channels c WHERE c.id = $1"
    ))
    .bind(channel)
    .fetch_one(&mut *conn)
    .await?;
    Ok(ChannelDetail {
        channel: row.into(),
        members: members(conn, channel).await?,
    })
}

/// Adds (or brings back) `agents` as members of `channel` as of `at`. Current members are
/// left as they are: the caller passes only agents who are not.
async fn insert_members(
    conn: &mut Conn,
    channel: Uuid,
    agents: &[Uuid],
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    if agents.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<Db> =
        QueryBuilder::new("INSERT INTO channel_members (channel_id, agent_id, joined_at) ");
    qb.push_values(agents, |mut row, agent| {
        row.push_bind(channel).push_bind(*agent).push_bind(at);
    });
    // A member who left comes back with a new `joined_at`.
    qb.push(
        " ON CONFLICT (channel_id, agent_id) DO UPDATE SET joined_at = excluded.joined_at, \
         left_at = NULL WHERE channel_members.left_at IS NOT NULL",
    );
    qb.build().execute(conn).await?;
    Ok(())
}

#[tracing::instrument(skip_all, name = "store.send_message", level = "debug", fields(id = %m.id))]
pub(super) async fn send_message(
    store: &Backend,
    m: &NewMessage,
    save: Option<SaveResponse<SentMessage>>,
) -> Result<SentMessage> {
    store
        .write((m.clone(), save), |mut tx, (m, save)| {
            Box::pin(async move {
                let save = save.as_ref();
                let channel = match m.to {
                    MessageTo::Channel(c) => Some(c),
                    MessageTo::Agent(_) => None,
                };
                if let Some(channel) = channel {
                    // Read before anything is written, so that the common refusal writes
                    // nothing; the insert below checks again.
                    if !is_member(&mut tx, channel, m.sender_id).await? {
                        let e = if key_used(&mut tx, save).await? {
                            KEY_USED
                        } else {
                            StoreError::NotFound
                        };
                        return tx.refuse(Err(e));
                    }
                }
                if let Some(save) = save {
                    if !claim_key(&mut tx, save).await? {
                        // Only read so far.
                        return tx.refuse(Err(KEY_USED));
                    }
                }
                let recipient = match m.to {
                    MessageTo::Agent(r) => Some(r),
                    MessageTo::Channel(_) => None,
                };
                let inserted = sqlx::query(
                    "INSERT INTO messages (id, conversation_id, sender_id, recipient_id, \
                     channel_id, encrypted, payload, nonce, created_at) \
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
                     WHERE $5 IS NULL OR EXISTS (SELECT 1 FROM channel_members \
                     WHERE channel_id = $5 AND agent_id = $3 AND left_at IS NULL)",
                )
                .bind(m.id)
                .bind(m.to.conversation(m.sender_id))
                .bind(m.sender_id)
                .bind(recipient)
                .bind(channel)
                .bind(m.encrypted)
                .bind(&m.payload)
                .bind(&m.nonce)
                .bind(m.at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted == 0 {
                    // The sender left the channel after the check above (PostgreSQL; SQLite's
                    // writer is alone). Dropped, which gives the claimed key up again.
                    return Err(StoreError::NotFound);
                }
                let row: MessageRow = sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.id = $1"
                ))
                .bind(m.id)
                .fetch_one(&mut *tx)
                .await?;
                let recipients = match m.to {
                    MessageTo::Agent(r) => vec![r],
                    MessageTo::Channel(c) => {
                        sqlx::query_scalar(
                            "SELECT agent_id FROM channel_members WHERE channel_id = $1 \
                             AND left_at IS NULL AND agent_id <> $2 ORDER BY agent_id",
                        )
                        .bind(c)
                        .bind(m.sender_id)
                        .fetch_all(&mut *tx)
                        .await?
                    }
                };
                let events = match &m.frame {
                    Some(frame) => {
                        let events: Vec<NewEvent> = recipients
                            .iter()
                            .map(|&agent_id| NewEvent {
                                agent_id,
                                kind: frame.kind.clone(),
                                data: frame.data.clone(),
                                created_at: m.at,
                            })
                            .collect();
                        append_in(&mut tx, &events).await?
                    }
                    None => Vec::new(),
                };
                let sent = SentMessage {
                    message: row.into(),
                    recipients,
                    events,
                };
                if let Some(save) = save {
                    store_response(&mut tx, save, &sent).await?;
                }
                tx.commit().await?;
                Ok(sent)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.message_history", level = "debug")]
pub(super) async fn message_history(
    store: &Backend,
    q: &HistoryQuery,
) -> Result<Vec<MessageRecord>> {
    let mut conn = store.reader().acquire().await?;
    let conversation = match q.conversation {
        Conversation::With(other) => direct_conversation(q.viewer, other),
        Conversation::Channel(channel) => {
            if !is_member(&mut conn, channel, q.viewer).await? {
                return Err(StoreError::NotFound);
            }
            channel
        }
    };
    let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
        "SELECT {MESSAGE_COLUMNS} FROM {MESSAGE_FROM} WHERE m.conversation_id = "
    ));
    qb.push_bind(conversation);
    match q.conversation {
        // The conversation id already names the pair; the check on the two parties makes it
        // plain that nothing else can be listed.
        Conversation::With(other) => {
            qb.push(" AND ((m.sender_id = ")
                .push_bind(q.viewer)
                .push(" AND m.recipient_id = ")
                .push_bind(other)
                .push(") OR (m.sender_id = ")
                .push_bind(other)
                .push(" AND m.recipient_id = ")
                .push_bind(q.viewer)
                .push("))");
        }
        Conversation::Channel(channel) => {
            qb.push(" AND m.channel_id = ").push_bind(channel);
        }
    }
    if let Some(before) = q.before {
        // A cursor only counts inside its own conversation: one from elsewhere gives an empty
        // page rather than telling when that other message was sent.
        qb.push(
            " AND (m.created_at, m.id) < (SELECT c.created_at, c.id FROM messages c WHERE c.id = ",
        )
        .push_bind(before)
        .push(" AND c.conversation_id = ")
        .push_bind(conversation)
        .push(")");
    }
    qb.push(" ORDER BY m.created_at DESC, m.id DESC LIMIT ")
        .push_bind(q.limit);
    let rows: Vec<MessageRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
    Ok(rows.into_iter().map(MessageRecord::from).collect())
}

#[tracing::instrument(skip_all, name = "store.create_channel", level = "debug", fields(id = %c.id))]
pub(super) async fn create_channel(
    store: &Backend,
    c: &NewChannel,
    audit: &AuditEntry,
) -> Result<ChannelDetail> {
    store
        .write((c.clone(), audit.clone()), |mut tx, (c, audit)| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO channels (id, name, created_by, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(c.id)
                .bind(&c.name)
                .bind(c.created_by)
                .bind(c.at)
                .execute(&mut *tx)
                .await?;
                let mut all = vec![c.created_by];
                for m in &c.members {
                    if !all.contains(m) {
                        all.push(*m);
                    }
                }
                insert_members(&mut tx, c.id, &all, c.at).await?;
                insert_audit(&mut tx, audit).await?;
                let out = detail(&mut tx, c.id).await?;
                tx.commit().await?;
                Ok(out)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.add_channel_members", level = "debug", fields(channel = %a.channel_id))]
pub(super) async fn add_channel_members(
    store: &Backend,
    a: &NewMembers,
    audit: &AuditEntry,
) -> Result<ChannelDetail> {
    store
        .write((a.clone(), audit.clone()), |mut tx, (a, audit)| {
            Box::pin(async move {
                if !is_member(&mut tx, a.channel_id, a.by).await? {
                    return tx.refuse(Err(StoreError::NotFound));
                }
                // Takes the channel's row (PostgreSQL), so that concurrent additions count the
                // members one after the other and together stay within the limit.
                sqlx::query("UPDATE channels SET created_at = created_at WHERE id = $1")
                    .bind(a.channel_id)
                    .execute(&mut *tx)
                    .await?;
                let current: HashSet<Uuid> = sqlx::query_scalar(
                    "SELECT agent_id FROM channel_members WHERE channel_id = $1 AND left_at IS NULL",
                )
                .bind(a.channel_id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
                let mut new: Vec<Uuid> = Vec::new();
                for m in &a.members {
                    if !current.contains(m) && !new.contains(m) {
                        new.push(*m);
                    }
                }
                let total = i64::try_from(current.len() + new.len()).unwrap_or(i64::MAX);
                if total > a.max_members {
                    // Dropped (the row lock above is a write): nothing is kept.
                    return Err(StoreError::invalid(
                        "members",
                        format!("a channel has at most {} members", a.max_members),
                    ));
                }
                insert_members(&mut tx, a.channel_id, &new, a.at).await?;
                let mut audit = audit.clone();
                audit.details = serde_json::json!({ "added": new });
                insert_audit(&mut tx, &audit).await?;
                let out = detail(&mut tx, a.channel_id).await?;
                tx.commit().await?;
                Ok(out)
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.leave_channel", level = "debug", fields(channel = %channel))]
pub(super) async fn leave_channel(
    store: &Backend,
    channel: Uuid,
    agent: Uuid,
    audit: &AuditEntry,
) -> Result<()> {
    store
        .write(
            (channel, agent, audit.clone()),
            |mut tx, &(channel, agent, ref audit)| {
                Box::pin(async move {
                    let left = sqlx::query(
                        "UPDATE channel_members SET left_at = $3 \
                         WHERE channel_id = $1 AND agent_id = $2 AND left_at IS NULL",
                    )
                    .bind(channel)
                    .bind(agent)
                    .bind(audit.at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if left == 0 {
                        // Matched no row: nothing written.
                        return tx.refuse(Err(StoreError::NotFound));
                    }
                    insert_audit(&mut tx, audit).await?;
                    tx.commit().await?;
                    Ok(())
                })
            },
        )
        .await
}

#[tracing::instrument(skip_all, name = "store.channel", level = "debug", fields(channel = %id))]
pub(super) async fn channel(
    store: &Backend,
    id: Uuid,
    viewer: Uuid,
) -> Result<Option<ChannelDetail>> {
    let mut conn = store.reader().acquire().await?;
    if !is_member(&mut conn, id, viewer).await? {
        return Ok(None);
    }
    detail(&mut conn, id).await.map(Some)
}

#[tracing::instrument(skip_all, name = "store.channels_of", level = "debug", fields(agent = %agent))]
pub(super) async fn channels_of(
    store: &Backend,
    agent: Uuid,
    q: &PageQuery,
) -> Result<Vec<ChannelRecord>> {
    let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
        "SELECT {CHANNEL_COLUMNS} FROM channel_members me JOIN channels c ON c.id = me.channel_id \
         WHERE me.left_at IS NULL AND me.agent_id = "
    ));
    qb.push_bind(agent);
    if let Some(before) = q.cursor {
        qb.push(" AND c.id < ").push_bind(before);
    }
    qb.push(" ORDER BY c.id DESC LIMIT ").push_bind(q.limit);
    let rows: Vec<ChannelRow> = qb.build_query_as().fetch_all(store.reader()).await?;
    Ok(rows.into_iter().map(ChannelRecord::from).collect())
}
