//! The event bus between parts of the server (task posted → matching → WebSocket push).
//! Frames for agents are stored (each under its agent's next `seq`) before they are
//! published, so the bus only ever carries what a reconnecting agent can also replay.
//!
//! In-process by default (a tokio broadcast channel). With `NERVIX_REDIS_URL`, events are
//! published on a Redis channel and every node relays what it receives into its local
//! broadcast, so an agent connected to any node gets every event.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use nervix_core::notice::NotificationKind;
use nervix_core::{Complexity, Level, Money, Reputation, TaskStatus};
use nervix_store::{NewEvent, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CAPACITY: usize = 4096;
const REDIS_CHANNEL: &str = "nervix:events";

/// A frame for agents, `{"type": "...", "data": {...}}` on the wire: one variant per frame
/// type of the contract that the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Frame {
    /// An open task this agent is among the best matches for.
    TaskAvailable {
        task_id: Uuid,
        title: String,
        reward: Money,
        deadline: DateTime<Utc>,
        complexity: Complexity,
        /// 0–1, three decimals.
        match_score: f64,
    },
    /// A task the agent posted or holds changed status.
    TaskUpdate {
        task_id: Uuid,
        status: TaskStatus,
        assigned_agent_id: Option<Uuid>,
        updated_at: DateTime<Utc>,
    },
    /// The agent was paid for a task.
    Earning { task_id: Uuid, amount: Money },
    /// A message to the agent: sent to it, or to a channel it is a member of. `payload` and
    /// `nonce` are the sender's bytes in standard base64, exactly as stored (the server never
    /// decrypts). `from`/`to` are agent UUIDs, `from_agent_id`/`to_agent_id` their handles.
    Message {
        id: Uuid,
        from: Uuid,
        from_agent_id: String,
        /// A direct message's recipient.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_agent_id: Option<String>,
        /// A channel message's channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<Uuid>,
        encrypted: bool,
        payload: String,
        nonce: Option<String>,
        created_at: DateTime<Utc>,
    },
    /// The agent's reputation was recomputed from new evidence.
    ReputationUpdate {
        score: Reputation,
        level: Level,
        /// Differs from `level` when this update changed it.
        previous_level: Level,
        automated: Reputation,
        success: Reputation,
        peer: Reputation,
    },
    /// A persisted notification (also listed by `GET /v1/notifications` until read and pruned).
    Notification {
        id: Uuid,
        kind: NotificationKind,
        title: String,
        body: String,
        /// What a program needs to act on it: ids, scores, amounts (by `kind`).
        data: Value,
        created_at: DateTime<Utc>,
    },
    /// An operator announcement, sent to every agent.
    Announcement {
        id: Uuid,
        title: String,
        body: String,
        created_at: DateTime<Utc>,
    },
}

impl Frame {
    /// The frame's `type` and `data`, as they are stored and sent.
    pub fn parts(&self) -> Result<(String, Value), serde_json::Error> {
        let Value::Object(mut whole) = serde_json::to_value(self)? else {
            return Err(serde::ser::Error::custom("a frame serializes to an object"));
        };
        let kind = match whole.remove("type") {
            Some(Value::String(k)) => k,
            _ => return Err(serde::ser::Error::custom("a frame has a string type")),
        };
        Ok((kind, whole.remove("data").unwrap_or(Value::Null)))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A frame for one agent, stored as its event number `seq` before it was published.
    ToAgent {
        agent_id: Uuid,
        seq: i64,
        frame: Frame,
    },
    /// A frame for every agent, stored for each under the `seq` listed for it (agents
    /// enrolled after it are not listed: they never get it).
    Broadcast {
        frame: Frame,
        seqs: Arc<[(Uuid, i64)]>,
    },
    /// The agent's tokens or standing changed (a token revoked or rotated, the agent
    /// suspended): open connections check their token again now.
    AccessChanged { agent_id: Uuid },
    /// An agent's profile or workload changed (enrolled, config, suspension, a claim taken or
    /// given up): refresh caches.
    AgentChanged { agent_id: Uuid },
    /// Workloads changed for agents nobody named (a reaper took tasks back): every node
    /// re-reads its matching index from storage.
    WorkloadsChanged,
    /// The receipts of these tasks' accepted work were issued (A2A watchers show them).
    ReceiptsIssued { task_ids: Vec<Uuid> },
}

/// Stores each frame as its agent's next event, in one write, then publishes each with its
/// `seq`; returns how many were published. The store is the record and the bus only the fast
/// path: a connection that misses a published frame (a gap in `seq`, a lagging bus) reads it
/// back from the store.
///
/// Called after the operation that caused the frames committed, in a transaction of its own,
/// so that no operation's transaction grows by the event writes. The price is a small window:
/// a crash between an operation's commit and this write loses that operation's frames (the
/// change itself is kept, and readable through the REST API).
pub async fn deliver(
    store: &dyn Store,
    bus: &dyn EventBus,
    frames: Vec<(Uuid, Frame)>,
) -> Result<usize, BusError> {
    if frames.is_empty() {
        return Ok(0);
    }
    let at = Utc::now();
    let mut events = Vec::with_capacity(frames.len());
    for (agent_id, frame) in &frames {
        let (kind, data) = frame.parts()?;
        events.push(NewEvent {
            agent_id: *agent_id,
            kind,
            data,
            created_at: at,
        });
    }
    let stored = store.append_events(&events).await?;
    let mut published = 0;
    for (event, (agent_id, frame)) in stored.iter().zip(frames) {
        bus.publish(Event::ToAgent {
            agent_id,
            seq: event.seq,
            frame,
        })
        .await?;
        published += 1;
    }
    Ok(published)
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("storing events: {0}")]
    Store(#[from] nervix_store::StoreError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the Redis subscription closed")]
    Closed,
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    async fn publish(&self, event: Event) -> Result<(), BusError>;
    fn subscribe(&self) -> broadcast::Receiver<Event>;
}

pub struct InProcessBus {
    tx: broadcast::Sender<Event>,
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, event: Event) -> Result<(), BusError> {
        // No subscriber is not an error: nobody is listening right now.
        let _ = self.tx.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

pub struct RedisBus {
    /// Reconnects by itself after Redis restarts.
    conn: redis::aio::ConnectionManager,
    local: broadcast::Sender<Event>,
}

impl RedisBus {
    /// Connects and relays the Redis channel into the local broadcast until `shutdown`.
    /// Returns once the first subscription is live, so no event published afterwards is
    /// missed. The relay is a supervised worker: when the subscription drops (Redis restarted,
    /// network cut), it is logged and re-established with back-off.
    pub async fn connect(url: &str, shutdown: CancellationToken) -> Result<Arc<Self>, BusError> {
        let client = redis::Client::open(url)?;
        let conn = redis::aio::ConnectionManager::new(client.clone()).await?;
        let (local, _) = broadcast::channel(CAPACITY);
        let first = Arc::new(parking_lot::Mutex::new(Some(subscribe(&client).await?)));
        let relay = local.clone();
        crate::supervisor::supervise("redis_event_relay", shutdown, move |sd| {
            let (client, relay, first) = (client.clone(), relay.clone(), first.clone());
            async move {
                let taken = first.lock().take();
                let pubsub = match taken {
                    Some(p) => p,
                    None => subscribe(&client).await?,
                };
                relay_events(pubsub, relay, sd).await
            }
        });
        Ok(Arc::new(RedisBus { conn, local }))
    }
}

async fn subscribe(client: &redis::Client) -> Result<redis::aio::PubSub, BusError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(REDIS_CHANNEL).await?;
    Ok(pubsub)
}

/// Forwards bus messages until shutdown (`Ok`) or until the subscription ends (`Err`).
async fn relay_events(
    mut pubsub: redis::aio::PubSub,
    relay: broadcast::Sender<Event>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(BusError::Closed);
                };
                match msg.get_payload::<String>().map(|p| serde_json::from_str::<Event>(&p)) {
                    Ok(Ok(event)) => {
                        // No local subscriber right now is not an error.
                        let _ = relay.send(event);
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "undecodable event on the bus"),
                    Err(e) => tracing::warn!(error = %e, "unreadable event on the bus"),
                }
            }
        }
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, event: Event) -> Result<(), BusError> {
        let payload = serde_json::to_string(&event)?;
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(REDIS_CHANNEL)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use chrono::SubsecRound;
    use nervix_store::{NewAnnouncement, NewNotification};
    use serde_json::json;

    use super::*;

    /// What the store writes as a notification's or an announcement's event is the `data` of
    /// the frame pushed live: a replayed frame reads the same as a live one.
    #[test]
    fn stored_frames_match_live_ones() {
        let at = Utc::now().trunc_subsecs(6);
        let n = NewNotification {
            id: Uuid::now_v7(),
            agent_id: Uuid::now_v7(),
            kind: NotificationKind::LeaseLost,
            title: "Lease lost: x".into(),
            body: "taken back".into(),
            data: json!({"task_id": Uuid::nil()}),
            created_at: at,
        };
        let live = Frame::Notification {
            id: n.id,
            kind: n.kind,
            title: n.title.clone(),
            body: n.body.clone(),
            data: n.data.clone(),
            created_at: n.created_at,
        };
        assert_eq!(
            live.parts().unwrap(),
            ("notification".to_owned(), n.frame_data())
        );
        let a = NewAnnouncement {
            id: Uuid::now_v7(),
            title: "t".into(),
            body: "b".into(),
            created_by: None,
            created_at: at,
        };
        let live = Frame::Announcement {
            id: a.id,
            title: a.title.clone(),
            body: a.body.clone(),
            created_at: a.created_at,
        };
        assert_eq!(
            live.parts().unwrap(),
            ("announcement".to_owned(), a.frame_data())
        );
    }
}
