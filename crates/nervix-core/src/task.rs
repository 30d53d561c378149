//! Task vocabulary and the task state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownVariant {
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

/// A string that is not one of an enum's wire names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of: {}", .expected.join(", "))]
pub struct UnknownVariant {
    pub expected: &'static [&'static str],
}

wire_enum!(
    /// Where a task is in its life. See [`TaskStatus::can_become`] for the allowed moves.
    TaskStatus {
        Blocked = "blocked",
        Available = "available",
        Claimed = "claimed",
        Submitted = "submitted",
        Completed = "completed",
        Failed = "failed",
        Expired = "expired",
        Cancelled = "cancelled",
    }
);

wire_enum!(Complexity {
    Simple = "simple",
    Medium = "medium",
    Complex = "complex",
    Expert = "expert",
});

wire_enum!(
    /// What shape a submission's `content` has, which picks the automated checks.
    TaskKind {
        Text = "text",
        Json = "json",
        Markdown = "markdown",
        Code = "code",
    }
);

wire_enum!(Role {
    Agent = "agent",
    Reviewer = "reviewer",
    Admin = "admin",
});

// `wire_enum!` has no way to mark a `#[default]` variant, so this cannot be derived.
#[allow(clippy::derivable_impls)]
impl Default for TaskKind {
    fn default() -> Self {
        TaskKind::Text
    }
}

impl TaskStatus {
    /// Terminal statuses never change again; a task's escrow is settled exactly when it enters one.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed
                | TaskStatus::Failed
                | TaskStatus::Expired
                | TaskStatus::Cancelled
        )
    }

    /// The task state machine of the wire contract. Work that was handed in (`submitted`) is
    /// decided by its checks or review, never cancelled or expired under the worker's feet.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Blocked, Available)
                | (Available, Claimed)
                | (Claimed, Submitted | Available | Failed)
                | (Submitted, Completed | Available | Failed)
                | (Blocked | Available | Claimed, Expired | Cancelled)
        )
    }

    /// Statuses in which the task holds a slot of its assignee's `max_concurrent_tasks`.
    pub const fn occupies_assignee(self) -> bool {
        matches!(self, TaskStatus::Claimed)
    }
}

impl Complexity {
    /// Rank used for the level gate: simple 0 … expert 3.
    pub const fn rank(self) -> u8 {
        match self {
            Complexity::Simple => 0,
            Complexity::Medium => 1,
            Complexity::Complex => 2,
            Complexity::Expert => 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    #[test]
    fn wire_names_roundtrip() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("nope".parse::<Complexity>().is_err());
        assert_eq!(TaskKind::default(), TaskKind::Text);
    }

    #[test]
    fn state_machine() {
        assert!(Blocked.can_become(Available));
        assert!(Available.can_become(Claimed));
        assert!(Claimed.can_become(Submitted));
        assert!(Claimed.can_become(Available));
        assert!(Submitted.can_become(Completed));
        assert!(Submitted.can_become(Available));
        assert!(Available.can_become(Cancelled));
        assert!(Blocked.can_become(Cancelled));
        assert!(Claimed.can_become(Expired));
        assert!(!Submitted.can_become(Cancelled));
        assert!(!Blocked.can_become(Claimed));
        assert!(!Available.can_become(Completed));
        for t in TaskStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for n in TaskStatus::ALL {
                assert!(!t.can_become(*n), "{t} -> {n}");
            }
        }
    }
}
