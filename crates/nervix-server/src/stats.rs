//! The public platform counters (`GET /v1/stats`, the `/` page), served from a snapshot.
//!
//! Counting scans whole tables, too dear to do for every anonymous request. The counters are
//! counted once at startup and then again every `Config::stats_interval` (5 s by default) by
//! the `platform_stats` worker (`workers.rs`); a request only clones the current snapshot.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use nervix_store::{Stats, Store, StoreError};
use parking_lot::RwLock;

use nervix_core::agent::ONLINE_WINDOW;

/// The counters as they were at `taken_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub stats: Stats,
    pub taken_at: DateTime<Utc>,
}

/// The latest [`Snapshot`].
#[derive(Debug)]
pub struct PlatformStats {
    current: RwLock<Arc<Snapshot>>,
}

impl PlatformStats {
    /// Counts once, for the server to start with.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        Ok(PlatformStats {
            current: RwLock::new(Arc::new(count(store).await?)),
        })
    }

    /// The latest snapshot; costs a lock and an `Arc` clone, never a query.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.read().clone()
    }

    /// Counts again and makes the result current, unless a count that started later finished
    /// first.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let fresh = count(store).await?;
        let mut current = self.current.write();
        if fresh.taken_at >= current.taken_at {
            *current = Arc::new(fresh);
        }
        Ok(())
    }
}

async fn count(store: &dyn Store) -> Result<Snapshot, StoreError> {
    let taken_at = Utc::now();
    let stats = store.stats(taken_at - ONLINE_WINDOW).await?;
    Ok(Snapshot { stats, taken_at })
}
