//! Task vocabulary, the task statuses, and what a valid task to post is.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::agent::Capabilities;
use crate::quality::{validate_output_schema, DEFAULT_MIN_WORDS};
use crate::reputation::Reputation;
use crate::{FieldError, FieldErrors, Money};

/// A fieldless enum with one snake_case wire name per variant: serde, `as_str`, `Display` and
/// `FromStr` all agree, so the database and the JSON never map the names differently.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::task::UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::task::UnknownVariant {
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
    /// Where a task is in its life. The moves between statuses are the store's conditional
    /// writes (claim, submit, release, reapers, cancel); each names the status it leaves.
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

/// A task's reward: more than zero and at most the operator's maximum (`NERVIX_MAX_REWARD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reward(Money);

impl Reward {
    pub fn parse(field: &str, amount: Money, max: Money) -> Result<Self, FieldError> {
        if !amount.is_positive() {
            Err(FieldError::new(field, "must be greater than 0"))
        } else if amount > max {
            Err(FieldError::new(field, format!("must be at most {max}")))
        } else {
            Ok(Reward(amount))
        }
    }

    pub const fn money(self) -> Money {
        self.0
    }
}

/// The fields of a task as a poster sends them, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct TaskInput<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub capabilities: &'a [String],
    pub min_reputation: Option<Reputation>,
    pub reward: Money,
    pub complexity: &'a str,
    pub deadline: DateTime<Utc>,
    pub kind: Option<&'a str>,
    pub output_schema: Option<&'a Value>,
    pub language: Option<&'a str>,
    /// Text and markdown tasks only; default [`DEFAULT_MIN_WORDS`].
    pub min_words: Option<i64>,
    pub max_attempts: Option<i64>,
}

/// A task that may be posted: every field checked. Built only by [`TaskSpec::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    title: String,
    description: String,
    capabilities: Capabilities,
    min_reputation: Reputation,
    reward: Reward,
    complexity: Complexity,
    kind: TaskKind,
    output_schema: Option<Value>,
    language: Option<String>,
    /// `Some` exactly for text and markdown tasks.
    min_words: Option<u32>,
    deadline: DateTime<Utc>,
    max_attempts: i64,
}

impl TaskSpec {
    pub const MAX_TITLE_CHARS: usize = 500;
    pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
    pub const MAX_LANGUAGE_LEN: usize = 32;
    pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
    pub const MAX_ATTEMPTS: i64 = 10;
    /// About 200 pages: more than any task's answer fits in a submission.
    pub const MAX_MIN_WORDS: i64 = 100_000;

    /// Checks every field and reports all problems at once, each named `{prefix}{field}`
    /// (`tasks[2].reward` inside a workflow).
    pub fn parse(
        input: &TaskInput<'_>,
        max_reward: Money,
        now: DateTime<Utc>,
        prefix: &str,
    ) -> Result<Self, FieldErrors> {
        let name = |field: &str| format!("{prefix}{field}");
        let mut errs = FieldErrors::default();
        let title = input.title.trim();
        if title.is_empty() || title.chars().count() > Self::MAX_TITLE_CHARS {
            errs.push(name("title"), "must be 1 to 500 characters");
        }
        if input.description.chars().count() > Self::MAX_DESCRIPTION_CHARS {
            errs.push(name("description"), "must be at most 20000 characters");
        }
        let reward = errs.check(Reward::parse(&name("reward"), input.reward, max_reward));
        let complexity = errs.check(
            input
                .complexity
                .parse::<Complexity>()
                .map_err(|e| FieldError::new(name("complexity"), e.to_string())),
        );
        let kind = errs.check(input.kind.map_or(Ok(TaskKind::Text), |k| {
            k.parse::<TaskKind>()
                .map_err(|e| FieldError::new(name("kind"), e.to_string()))
        }));
        if input.deadline <= now {
            errs.push(name("deadline"), "must be in the future");
        }
        let capabilities = errs.check(Capabilities::parse(
            &name("requirements.capabilities"),
            input.capabilities,
        ));
        if let Some(schema) = input.output_schema {
            if let Err(e) = validate_output_schema(schema) {
                errs.push(
                    name("output_schema"),
                    format!("is not a valid JSON Schema: {e}"),
                );
            }
        }
        if let Some(lang) = input.language {
            // Characters, as the message (and the OpenAPI document's maxLength) says.
            if lang.is_empty() || lang.chars().count() > Self::MAX_LANGUAGE_LEN {
                errs.push(name("language"), "must be 1 to 32 characters");
            }
        }
        let given_min_words = input.min_words.and_then(|n| {
            let n = u32::try_from(n)
                .ok()
                .filter(|n| i64::from(*n) <= Self::MAX_MIN_WORDS);
            if n.is_none() {
                errs.push(name("min_words"), "must be between 0 and 100000");
            }
            n
        });
        let min_words = match kind {
            Some(TaskKind::Text | TaskKind::Markdown) => {
                Some(given_min_words.unwrap_or(DEFAULT_MIN_WORDS))
            }
            // JSON and code work has no word count: a minimum sent with it (a client that
            // always sends its defaults) has nothing to apply to, and is not kept.
            _ => None,
        };
        let max_attempts = input.max_attempts.unwrap_or(Self::DEFAULT_MAX_ATTEMPTS);
        if !(1..=Self::MAX_ATTEMPTS).contains(&max_attempts) {
            errs.push(name("max_attempts"), "must be between 1 and 10");
        }
        errs.into_result()?;
        match (reward, complexity, kind, capabilities) {
            (Some(reward), Some(complexity), Some(kind), Some(capabilities)) => Ok(TaskSpec {
                title: title.to_owned(),
                description: input.description.to_owned(),
                capabilities,
                min_reputation: input.min_reputation.unwrap_or_default(),
                reward,
                complexity,
                kind,
                output_schema: input.output_schema.cloned(),
                language: input.language.map(str::to_owned),
                min_words,
                deadline: input.deadline,
                max_attempts,
            }),
            // Every `None` above pushed an error, so `into_result` returned already.
            _ => Err(FieldError::new(name("body"), "invalid task").into()),
        }
    }

    pub fn title(&self) -> &str {
        &self.title
    }
    pub fn description(&self) -> &str {
        &self.description
    }
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
    pub fn min_reputation(&self) -> Reputation {
        self.min_reputation
    }
    pub fn reward(&self) -> Reward {
        self.reward
    }
    pub fn complexity(&self) -> Complexity {
        self.complexity
    }
    pub fn kind(&self) -> TaskKind {
        self.kind
    }
    pub fn output_schema(&self) -> Option<&Value> {
        self.output_schema.as_ref()
    }
    pub fn language(&self) -> Option<&str> {
        self.language.as_deref()
    }
    /// The fewest words a text or markdown answer may have; `None` for other kinds.
    pub fn min_words(&self) -> Option<u32> {
        self.min_words
    }
    pub fn deadline(&self) -> DateTime<Utc> {
        self.deadline
    }
    pub fn max_attempts(&self) -> i64 {
        self.max_attempts
    }
}

/// How long a claim holds a task before it returns to the pool: 60 s to 7 days, default one
/// hour (the claimant's `estimated_duration`; the store caps it at the deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease(i64);

impl Lease {
    pub const FIELD: &'static str = "estimated_duration";
    pub const MIN_SECS: i64 = 60;
    pub const MAX_SECS: i64 = 7 * 24 * 3600;
    pub const DEFAULT: Lease = Lease(3600);

    pub fn parse(secs: Option<i64>) -> Result<Self, FieldError> {
        match secs {
            None => Ok(Self::DEFAULT),
            Some(s) if (Self::MIN_SECS..=Self::MAX_SECS).contains(&s) => Ok(Lease(s)),
            Some(_) => Err(FieldError::new(
                Self::FIELD,
                "must be between 60 and 604800 seconds",
            )),
        }
    }

    pub const fn seconds(self) -> i64 {
        self.0
    }
}

/// A submitter's notes: at most 10,000 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notes(String);

impl Notes {
    pub const FIELD: &'static str = "submission_data.notes";
    pub const MAX_CHARS: usize = 10_000;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if s.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(
                Self::FIELD,
                "must be at most 10000 characters",
            ));
        }
        Ok(Notes(s.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
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

    fn input(now: DateTime<Utc>) -> TaskInput<'static> {
        TaskInput {
            title: "  Summarise  ",
            description: "",
            capabilities: &[],
            min_reputation: None,
            reward: Money::from_cents(5000),
            complexity: "simple",
            deadline: now + chrono::Duration::hours(1),
            kind: None,
            output_schema: None,
            language: None,
            min_words: None,
            max_attempts: None,
        }
    }

    #[test]
    fn a_valid_task_parses_with_defaults() {
        let now = Utc::now();
        let spec = TaskSpec::parse(&input(now), Money::from_cents(10_000), now, "").unwrap();
        assert_eq!(spec.title(), "Summarise");
        assert_eq!(spec.kind(), TaskKind::Text);
        assert_eq!(spec.max_attempts(), 3);
        assert_eq!(spec.min_words(), Some(20));
        assert_eq!(spec.reward().money(), Money::from_cents(5000));
    }

    #[test]
    fn every_bad_field_is_named_with_its_prefix() {
        let now = Utc::now();
        let caps = ["ok".to_owned(), "not ok".to_owned()];
        let schema = serde_json::json!(true);
        let bad = TaskInput {
            title: " ",
            capabilities: &caps,
            reward: Money::from_cents(10_001),
            complexity: "trivial",
            deadline: now,
            kind: Some("video"),
            output_schema: Some(&schema),
            language: Some(""),
            min_words: Some(-1),
            max_attempts: Some(11),
            ..input(now)
        };
        let errs = TaskSpec::parse(&bad, Money::from_cents(10_000), now, "tasks[1].").unwrap_err();
        let fields: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "tasks[1].title",
                "tasks[1].reward",
                "tasks[1].complexity",
                "tasks[1].kind",
                "tasks[1].deadline",
                "tasks[1].requirements.capabilities",
                "tasks[1].output_schema",
                "tasks[1].language",
                "tasks[1].min_words",
                "tasks[1].max_attempts",
            ]
        );
        let zero = TaskInput {
            reward: Money::ZERO,
            ..input(now)
        };
        assert_eq!(
            TaskSpec::parse(&zero, Money::from_cents(1), now, "")
                .unwrap_err()
                .0[0]
                .message,
            "must be greater than 0"
        );
    }

    #[test]
    fn min_words_is_for_prose() {
        let now = Utc::now();
        let max = Money::from_cents(10_000);
        let with = |kind: Option<&'static str>, min_words: Option<i64>| {
            TaskSpec::parse(
                &TaskInput {
                    kind,
                    min_words,
                    ..input(now)
                },
                max,
                now,
                "",
            )
        };
        assert_eq!(with(Some("markdown"), None).unwrap().min_words(), Some(20));
        assert_eq!(with(None, Some(0)).unwrap().min_words(), Some(0));
        assert_eq!(
            with(Some("text"), Some(100_000)).unwrap().min_words(),
            Some(100_000)
        );
        assert_eq!(with(Some("code"), None).unwrap().min_words(), None);
        assert_eq!(with(Some("json"), None).unwrap().min_words(), None);
        for bad in [-1, 100_001, i64::MAX] {
            let errs = with(Some("text"), Some(bad)).unwrap_err();
            assert_eq!(errs.0[0].field, "min_words");
            assert_eq!(errs.0[0].message, "must be between 0 and 100000");
        }
        assert_eq!(with(Some("code"), Some(50)).unwrap().min_words(), None);
    }

    #[test]
    fn a_language_is_counted_in_characters() {
        let now = Utc::now();
        let ok = "é".repeat(TaskSpec::MAX_LANGUAGE_LEN);
        let long = "é".repeat(TaskSpec::MAX_LANGUAGE_LEN + 1);
        let with = |language| TaskInput {
            language: Some(language),
            ..input(now)
        };
        assert!(TaskSpec::parse(&with(&ok), Money::from_cents(10_000), now, "").is_ok());
        assert!(TaskSpec::parse(&with(&long), Money::from_cents(10_000), now, "").is_err());
    }

    #[test]
    fn leases_and_notes() {
        assert_eq!(Lease::parse(None).unwrap().seconds(), 3600);
        assert_eq!(Lease::parse(Some(60)).unwrap().seconds(), 60);
        assert!(Lease::parse(Some(59)).is_err());
        assert!(Lease::parse(Some(Lease::MAX_SECS + 1)).is_err());
        assert!(Notes::parse(&"n".repeat(10_000)).is_ok());
        assert_eq!(
            Notes::parse(&"n".repeat(10_001)).unwrap_err().field,
            Notes::FIELD
        );
    }

    #[test]
    fn terminal_statuses() {
        let terminal: Vec<_> = TaskStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [&Completed, &Failed, &Expired, &Cancelled]);
        assert!(Claimed.occupies_assignee() && !Submitted.occupies_assignee());
    }
}
