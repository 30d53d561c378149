//! Who is online: agents seen (an authenticated request, or a real-time connection kept open)
//! in the last few minutes.
//! Storage gets `last_seen_at` at most once a minute per agent, so presence costs no write
//! per request while still being shared by every node through the database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::sync::Arc;

use nervix_core::agent::ONLINE_WINDOW;
use nervix_store::Store;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::matching::Matcher;

const WRITE_EVERY: Duration = Duration::from_secs(60);

pub struct Presence {
    written: Mutex<HashMap<Uuid, Instant>>,
    store: Arc<dyn Store>,
    matcher: Arc<Matcher>,
}

impl Presence {
    pub fn new(store: Arc<dyn Store>, matcher: Arc<Matcher>) -> Self {
        Presence {
            written: Mutex::new(HashMap::new()),
            store,
            matcher,
        }
    }

    /// Notes that `agent` made an authenticated request now.
    pub fn seen(&self, agent: Uuid) {
        let now = Instant::now();
        {
            let mut w = self.written.lock();
            match w.get(&agent) {
                Some(t) if now.duration_since(*t) < WRITE_EVERY => return,
                _ => {
                    w.insert(agent, now);
                }
            }
        }
        let store = self.store.clone();
        let matcher = self.matcher.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_agent(agent, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "could not record agent presence");
            }
            matcher.set_online(agent, true);
        });
    }

    /// Notes that `agent` opened a real-time connection: recorded now, whatever was recorded
    /// lately, so the agent shows online at once. While it stays connected, the connection
    /// calls [`Presence::seen`] on its pings; after it leaves, the usual window applies.
    pub fn connected(&self, agent: Uuid) {
        self.written.lock().insert(agent, Instant::now());
        let store = self.store.clone();
        let matcher = self.matcher.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_agent(agent, chrono::Utc::now()).await {
                tracing::warn!(error = %e, "could not record agent presence");
            }
            matcher.set_online(agent, true);
        });
    }

    pub fn forget_idle(&self) {
        let cutoff = Duration::from_secs(u64::try_from(ONLINE_WINDOW.num_seconds()).unwrap_or(300));
        self.written.lock().retain(|_, t| t.elapsed() < cutoff);
    }
}
