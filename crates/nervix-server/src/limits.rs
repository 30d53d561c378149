//! GCRA rate limits (governor): per client IP on enrollment/auth (an IPv6 client per /64),
//! per agent elsewhere. (The per-agent message quota is the application layer's:
//! `quota::MessageQuota`, charged by the application layer.)

use std::net::{IpAddr, Ipv6Addr};
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

/// The key the per-IP limit counts a client by: an IPv4 address as it is, also when it arrives
/// IPv4-mapped (`::ffff:a.b.c.d`, from a dual-stack socket); an IPv6 address by its /64, since
/// one host is handed a whole /64 and can take a fresh address from it for every request.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
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

    /// Charges the client at `ip`, counted by [`client_key`].
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), RateLimited> {
        match &self.enroll {
            Some(l) => l
                .check_key(&client_key(ip))
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
#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clients_are_keyed_by_ipv4_address_and_ipv6_slash_64() {
        assert_eq!(client_key(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(client_key(ip("203.0.113.7")), client_key(ip("203.0.113.8")));
        assert_eq!(client_key(ip("::ffff:203.0.113.7")), ip("203.0.113.7"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db9:1:2::1"))
        );
        assert_eq!(client_key(ip("::1")), ip("::"));
    }

    #[test]
    fn one_ipv6_host_cannot_rotate_past_the_limit() {
        let limits = Limits::new(3, 0);
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::ffff:1"] {
            limits.check_ip(ip(host)).unwrap();
        }
        assert!(limits.check_ip(ip("2001:db8::abcd")).is_err());
        // The next /64 is someone else.
        limits.check_ip(ip("2001:db8:0:1::1")).unwrap();
    }

    #[test]
    fn ipv4_clients_are_counted_per_address_mapped_or_not() {
        let limits = Limits::new(2, 0);
        limits.check_ip(ip("198.51.100.1")).unwrap();
        limits.check_ip(ip("::ffff:198.51.100.1")).unwrap();
        assert!(limits.check_ip(ip("198.51.100.1")).is_err());
        assert!(limits.check_ip(ip("::ffff:198.51.100.1")).is_err());
        limits.check_ip(ip("198.51.100.2")).unwrap();
        limits.check_ip(ip("198.51.100.2")).unwrap();
    }
}
