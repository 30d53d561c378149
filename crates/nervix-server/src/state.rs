//! Shared application state. Cloned per request: everything inside is an `Arc`.

use std::sync::Arc;

use nervix_core::quality::CheckPipeline;
use nervix_store::Store;
use parking_lot::RwLock;

use crate::auth::keys::KeyRing;
use crate::auth::VerifiedTokens;
use crate::bus::EventBus;
use crate::config::Config;
use crate::limits::Limits;
use crate::matching::Matcher;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::stats::PlatformStats;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub keys: Arc<RwLock<Arc<KeyRing>>>,
    /// Bearer tokens whose signature already verified (storage checks still run per request).
    pub verified: Arc<VerifiedTokens>,
    pub bus: Arc<dyn EventBus>,
    pub metrics: Arc<Metrics>,
    pub limits: Arc<Limits>,
    pub presence: Arc<Presence>,
    pub matcher: Arc<Matcher>,
    pub checks: Arc<CheckPipeline>,
    /// The public counters, recounted in the background.
    pub stats: Arc<PlatformStats>,
}

impl AppState {
    /// The current key ring (reloaded from disk by a background loop after a rotation).
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.read().clone()
    }
}
