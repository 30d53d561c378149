//! Who is online: agents seen (an authenticated request) in the last few minutes.
//! Storage gets `last_seen_at` at most once a minute per agent, so presence costs no write
//! per request while still being shared by every node through the database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use crate::state::AppState;

pub const ONLINE_WINDOW: chrono::Duration = chrono::Duration::minutes(5);
const WRITE_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Presence {
    written: Mutex<HashMap<Uuid, Instant>>,
}

impl Presence {
    pub fn seen(&self, state: &AppState, agent: Uuid) {
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
        let store = state.store.clone();
        let matcher = state.matcher.clone();
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
