//! The event bus between parts of the server (task posted → matching → WebSocket push).
//!
//! In-process by default (a tokio broadcast channel). With `NERVIX_REDIS_URL`, events are
//! published on a Redis channel and every node relays what it receives into its local
//! broadcast, so an agent connected to any node gets every event.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CAPACITY: usize = 4096;
const REDIS_CHANNEL: &str = "nervix:events";

/// A frame for agents: `{"type": "...", "data": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A frame for one agent.
    ToAgent { agent_id: Uuid, frame: Frame },
    /// A frame for every connected agent.
    Broadcast { frame: Frame },
    /// An agent's profile changed (enrolled, config, suspension): refresh caches.
    AgentChanged { agent_id: Uuid },
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
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
    conn: redis::aio::MultiplexedConnection,
    local: broadcast::Sender<Event>,
}

impl RedisBus {
    /// Connects and starts relaying the Redis channel into the local broadcast until `shutdown`.
    /// Returns once the subscription is live, so no event published afterwards is missed.
    pub async fn connect(url: &str, shutdown: CancellationToken) -> Result<Arc<Self>, BusError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        let (local, _) = broadcast::channel(CAPACITY);
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(REDIS_CHANNEL).await?;
        let relay = local.clone();
        tokio::spawn(async move {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    msg = messages.next() => {
                        let Some(msg) = msg else {
                            tracing::error!("redis event subscription closed");
                            break;
                        };
                        match msg.get_payload::<String>().map(|p| serde_json::from_str::<Event>(&p)) {
                            Ok(Ok(event)) => { let _ = relay.send(event); }
                            Ok(Err(e)) => tracing::warn!(error = %e, "undecodable event on the bus"),
                            Err(e) => tracing::warn!(error = %e, "unreadable event on the bus"),
                        }
                    }
                }
            }
        });
        Ok(Arc::new(RedisBus { conn, local }))
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
