//! Token scopes: what a token may do on its agent's behalf.
//!
//! A token from enrollment or login is unrestricted: it may do whatever its agent's role
//! allows. A token minted for one job (a dashboard, a monitoring script, a worker) names the
//! scopes it keeps, and can do nothing else. What a request may do is the intersection of the
//! two, so demoting an agent takes `admin` from every token it holds at once.

use std::fmt;

use crate::{FieldError, Role};

macro_rules! scopes {
    ($($variant:ident = $text:literal: $doc:literal),+ $(,)?) => {
        /// One permission a token can carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Scope { $(#[doc = $doc] $variant),+ }

        impl Scope {
            pub const ALL: &'static [Scope] = &[$(Scope::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $(Scope::$variant => $text),+ }
            }

            /// What the scope allows, for people reading the API document.
            pub const fn description(self) -> &'static str {
                match self { $(Scope::$variant => $doc),+ }
            }

            pub fn parse(s: &str) -> Option<Scope> {
                match s { $($text => Some(Scope::$variant),)+ _ => None }
            }
        }
    };
}

scopes! {
    ProfileRead = "profile:read": "Read the agent's own profile.",
    ProfileWrite = "profile:write": "Change the agent's capabilities, capacity and metadata.",
    TasksRead = "tasks:read": "Read tasks, submissions, workflows and their artifacts.",
    TasksWork = "tasks:work": "Claim, release and submit tasks; upload artifacts.",
    TasksPost = "tasks:post": "Post and cancel tasks and workflows (spends the balance on escrow).",
    Reviews = "reviews": "Read the review queue and review other agents' submissions.",
    MoneyRead = "money:read": "Read earnings, contributions and withdrawals.",
    MoneyWithdraw = "money:withdraw": "Request withdrawals.",
    Messages = "messages": "Send and read direct and channel messages; manage channels.",
    Notifications = "notifications": "Read notifications and mark them read.",
    Events = "events": "Open the real-time event stream (GET /v1/agent/connect).",
    Admin = "admin": "Operator actions (admin role only).",
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u16);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);

    /// What a read-only token for a dashboard or a monitoring script needs.
    pub const READ_ONLY: Scopes = Scopes::of(&[
        Scope::ProfileRead,
        Scope::TasksRead,
        Scope::MoneyRead,
        Scope::Notifications,
    ]);

    pub const fn of(scopes: &[Scope]) -> Scopes {
        let mut bits = 0;
        let mut i = 0;
        while i < scopes.len() {
            bits |= 1 << scopes[i] as u16;
            i += 1;
        }
        Scopes(bits)
    }

    /// Every scope a role may hold.
    pub fn allowed(role: Role) -> Scopes {
        let all = Scopes::of(Scope::ALL);
        match role {
            Role::Admin => all,
            Role::Agent | Role::Reviewer => all.without(Scope::Admin),
        }
    }

    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & (1 << scope as u16) != 0
    }

    pub const fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    pub const fn intersection(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    pub const fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    pub const fn without(self, scope: Scope) -> Scopes {
        Scopes(self.0 & !(1 << scope as u16))
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .iter()
            .copied()
            .filter(move |s| self.contains(*s))
    }

    /// Scopes as a client asks for them: each a known name, at least one. Repeats are harmless.
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<Scopes, FieldError> {
        let mut set = Scopes::NONE;
        for (i, name) in names.iter().enumerate() {
            let name = name.as_ref();
            let scope = Scope::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                FieldError::new(
                    format!("scopes[{i}]"),
                    format!("unknown scope {name:?}; known: {}", known.join(", ")),
                )
            })?;
            set = set.union(Scopes::of(&[scope]));
        }
        if set.is_empty() {
            return Err(FieldError::new("scopes", "must name at least one scope"));
        }
        Ok(set)
    }

    /// The value of a token's `scope` claim: names separated by spaces (RFC 8693, RFC 9068).
    pub fn to_claim(self) -> String {
        self.to_string()
    }

    /// Reads a `scope` claim. Names this version does not know are dropped: a token never
    /// gains a permission from a word it cannot interpret.
    pub fn from_claim(claim: &str) -> Scopes {
        claim
            .split_ascii_whitespace()
            .filter_map(Scope::parse)
            .fold(Scopes::NONE, |set, s| set.union(Scopes::of(&[s])))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Scopes::NONE, |set, s| set.union(Scopes::of(&[s])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_scopes() -> impl Strategy<Value = Scopes> {
        proptest::sample::subsequence(Scope::ALL.to_vec(), 0..=Scope::ALL.len())
            .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn a_claim_reads_back_as_the_same_set(s in any_scopes()) {
            prop_assert_eq!(Scopes::from_claim(&s.to_claim()), s);
        }

        #[test]
        fn a_listed_set_parses_to_itself(s in any_scopes()) {
            let names: Vec<&str> = s.iter().map(Scope::as_str).collect();
            match Scopes::parse_list(&names) {
                Ok(parsed) => prop_assert_eq!(parsed, s),
                Err(_) => prop_assert!(s.is_empty()),
            }
        }

        #[test]
        fn an_intersection_is_within_both(a in any_scopes(), b in any_scopes()) {
            let i = a.intersection(b);
            prop_assert!(i.is_subset_of(a) && i.is_subset_of(b));
            for s in Scope::ALL {
                prop_assert_eq!(i.contains(*s), a.contains(*s) && b.contains(*s));
            }
        }
    }

    #[test]
    fn names_are_unique_and_parse() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(*s));
        }
        let set: std::collections::HashSet<_> = Scope::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(set.len(), Scope::ALL.len());
    }

    #[test]
    fn only_admins_may_hold_admin() {
        assert!(Scopes::allowed(Role::Admin).contains(Scope::Admin));
        assert!(!Scopes::allowed(Role::Agent).contains(Scope::Admin));
        assert!(!Scopes::allowed(Role::Reviewer).contains(Scope::Admin));
        assert!(Scopes::allowed(Role::Agent).contains(Scope::MoneyWithdraw));
    }

    #[test]
    fn unknown_names_are_refused_by_name_and_dropped_from_claims() {
        let e = Scopes::parse_list(&["tasks:read", "root"]).unwrap_err();
        assert_eq!(e.field, "scopes[1]");
        assert!(e.message.contains("\"root\""));
        assert_eq!(Scopes::parse_list::<&str>(&[]).unwrap_err().field, "scopes");
        assert_eq!(
            Scopes::from_claim("tasks:read superuser"),
            Scopes::of(&[Scope::TasksRead])
        );
    }
}
