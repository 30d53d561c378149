//! GCRA rate limits (governor): per client IP on enrollment/auth, per agent elsewhere.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use uuid::Uuid;

/// A request over its limit: retry after this many whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub retry_after_secs: u64,
}

pub struct Limits {
    enroll: Option<DefaultKeyedRateLimiter<IpAddr>>,
    agent: Option<DefaultKeyedRateLimiter<Uuid>>,
    clock: DefaultClock,
}

impl Limits {
    /// `0` turns a limit off.
    pub fn new(enroll_per_minute: u32, agent_per_second: u32) -> Self {
        Limits {
            enroll: NonZeroU32::new(enroll_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            agent: NonZeroU32::new(agent_per_second)
                .map(|n| RateLimiter::keyed(Quota::per_second(n))),
            clock: DefaultClock::default(),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), RateLimited> {
        match &self.enroll {
            Some(l) => l
                .check_key(&ip)
                .map_err(|n| self.reject(n.wait_time_from(self.clock.now()))),
            None => Ok(()),
        }
    }

    pub fn check_agent(&self, agent: Uuid) -> Result<(), RateLimited> {
        match &self.agent {
            Some(l) => l
                .check_key(&agent)
                .map_err(|n| self.reject(n.wait_time_from(self.clock.now()))),
            None => Ok(()),
        }
    }

    fn reject(&self, wait: std::time::Duration) -> RateLimited {
        // Retry-After is whole seconds; round up so a client that obeys it is let through.
        RateLimited {
            retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        }
    }

    /// Forgets idle keys so the maps don't grow without bound.
    pub fn shrink(&self) {
        if let Some(l) = &self.enroll {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.agent {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
