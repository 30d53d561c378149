//! The per-agent message quota: GCRA (governor), like the request limits of `limits.rs`, but
//! charged by the application layer, where sends arrive from REST and WebSocket alike.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

/// How many messages an agent may send per minute, over REST and WebSocket together: the
/// application layer charges every send (`app::messages::send`), wherever it came from.
pub struct MessageQuota {
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    clock: DefaultClock,
}

impl MessageQuota {
    /// `0` turns the limit off. A full minute's quota may be sent in a burst.
    pub fn new(per_minute: u32) -> Self {
        MessageQuota {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            clock: DefaultClock::default(),
        }
    }

    /// Charges one message to `agent`; over the quota, the seconds to wait.
    pub fn check(&self, agent: Uuid) -> std::result::Result<(), u64> {
        match &self.limiter {
            Some(l) => l.check_key(&agent).map_err(|n| {
                let wait = n.wait_time_from(self.clock.now());
                // Whole seconds, rounded up, so a client that obeys it is let through.
                (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
            }),
            None => Ok(()),
        }
    }

    /// Forgets idle agents so the map does not grow without bound.
    pub fn shrink(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_per_agent() {
        let quota = MessageQuota::new(2);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        quota.check(a).unwrap();
        quota.check(a).unwrap();
        let over = quota.check(a).unwrap_err();
        // One message's share of a minute, rounded up to whole seconds.
        assert!((1..=30).contains(&over), "{over}");
        quota.check(b).unwrap();
        let off = MessageQuota::new(0);
        for _ in 0..1000 {
            off.check(a).unwrap();
        }
    }
}
