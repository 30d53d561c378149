//! The application layer: every operation of the platform, with its side effects (events
//! published, agents offered work, idempotency, audit records), one module per area.
//!
//! It knows the store, the event bus and the matching index, and nothing of HTTP: handlers in
//! `api/` parse a request, call one operation here and shape its result; background workers
//! call the same operations. Inputs arrive parsed into `nervix_core` types, so an operation
//! never re-checks a field's rules.

pub mod a2a;
pub mod agents;
pub mod artifacts;
pub mod audit;
pub mod auth;
pub mod economy;
mod error;
pub mod events;
pub mod idempotency;
pub mod messages;
pub mod notifications;
pub mod pages;
pub mod quality;
pub mod receipts;
pub mod reputation;
pub mod tasks;
pub mod workflows;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nervix_core::quality::CheckPipeline;
use nervix_core::{Role, Scope, Scopes};
use nervix_store::{AgentRecord, Store};
use uuid::Uuid;

pub use error::{Error, ErrorKind, Result};

use crate::artifact_store::ArtifactStore;
use crate::auth::keys::{KeyRing, Keys};
use crate::auth::VerifiedTokens;
use crate::bus::EventBus;
use crate::config::Config;
use crate::matching::Matcher;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::presence::Presence;
use crate::quota::MessageQuota;
use crate::spot_checks::SpotChecks;
use crate::stats::PlatformStats;

/// Everything the operations work with. Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn EventBus>,
    /// Frames and notifications for agents, stored and published off the request path.
    pub outbox: Arc<Outbox>,
    pub matcher: Arc<Matcher>,
    pub metrics: Arc<Metrics>,
    pub presence: Arc<Presence>,
    pub checks: Arc<CheckPipeline>,
    /// The sample of would-be accepted submissions held for a person's review.
    pub spot_checks: Arc<SpotChecks>,
    /// The public counters, recounted in the background.
    pub stats: Arc<PlatformStats>,
    /// The token-signing keys every node shares, read again from the store by a background
    /// loop (and for a token naming a key this node has not seen yet).
    pub keys: Arc<Keys>,
    /// Bearer tokens whose signature already verified (storage checks still run per request).
    pub verified: Arc<VerifiedTokens>,
    /// Messages each agent may still send this minute.
    pub message_quota: Arc<MessageQuota>,
    /// Where artifact files are stored.
    pub artifacts: Arc<ArtifactStore>,
    /// Wakes this node's reputation pass before its next tick: work was accepted, so a
    /// receipt is due (see `receipts`).
    pub reputation_pass: Arc<tokio::sync::Notify>,
}

impl App {
    /// The current key ring.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.ring()
    }

    /// An agent by UUID or handle.
    pub async fn find_agent(&self, id_or_handle: &str) -> Result<AgentRecord> {
        let found = match Uuid::parse_str(id_or_handle) {
            Ok(id) => self.store.agent(id).await?,
            Err(_) => self.store.agent_by_handle(id_or_handle).await?,
        };
        found.ok_or_else(|| Error::not_found("agent"))
    }

    /// The same application over another store (the background workers' own pool).
    pub fn with_store(&self, store: Arc<dyn Store>) -> App {
        App {
            store,
            ..self.clone()
        }
    }
}

/// Who is acting: an authenticated agent (or admin), and where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub handle: String,
    pub role: Role,
    pub jti: Uuid,
    pub expires_at: DateTime<Utc>,
    pub client_ip: Option<String>,
    /// The scopes the token was narrowed to; `None` for an unrestricted token.
    pub granted: Option<Scopes>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin && self.scopes().contains(Scope::Admin)
    }

    pub fn require_admin(&self) -> Result<()> {
        if self.role != Role::Admin {
            return Err(Error::forbidden("forbidden", "admin role required"));
        }
        self.require(Scope::Admin)
    }

    /// What this request may do: what the token keeps of what the agent's role allows now.
    pub fn scopes(&self) -> Scopes {
        let allowed = Scopes::allowed(self.role);
        self.granted.map_or(allowed, |g| g.intersection(allowed))
    }

    pub fn require(&self, scope: Scope) -> Result<()> {
        self.require_all(Scopes::of(&[scope]))
    }

    /// Refuses with `insufficient_scope`, naming the scopes the token lacks.
    pub fn require_all(&self, needed: Scopes) -> Result<()> {
        let have = self.scopes();
        if needed.is_subset_of(have) {
            return Ok(());
        }
        let missing: Scopes = needed.iter().filter(|s| !have.contains(*s)).collect();
        Err(Error::forbidden(
            "insufficient_scope",
            format!("this token lacks the scope(s): {missing}"),
        ))
    }
}
