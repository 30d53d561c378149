//! Request and response bodies of the wire contract (`API.md`, v1), one module per area.
//!
//! Responses are decoded leniently: unknown fields are ignored and unknown enum strings map to
//! an `Unknown` variant, so a newer server does not break older agents. Requests only send the
//! fields that are set. Every response type also implements `Serialize`, so a program can pass
//! what it received on as JSON (the `nervix` CLI's `--json` output does).
//!
//! Money and reputation scores are [`Decimal2`](crate::Decimal2) (integer hundredths), never
//! floats.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

mod admin;
mod agents;
mod auth;
mod economy;
mod messaging;
mod platform;
mod quality;
mod tasks;
mod workflows;

pub use admin::*;
pub use agents::*;
pub use auth::*;
pub use economy::*;
pub use messaging::*;
pub use platform::*;
pub use quality::*;
pub use tasks::*;
pub use workflows::*;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this SDK version does not know.
            #[serde(other)]
            Unknown,
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&$crate::types::wire_str(*self))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::types::UnknownValue;

            /// Parses the wire spelling (`"pending_review"`); anything else is an error, never
            /// `Unknown`, so a typo in a filter is caught before it reaches the server.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match serde_json::from_value::<$name>(serde_json::Value::String(s.to_owned())) {
                    Ok($name::Unknown) | Err(_) => Err($crate::types::UnknownValue {
                        kind: stringify!($name),
                        value: s.to_owned(),
                    }),
                    Ok(v) => Ok(v),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

/// A string that names no variant of a wire enum (from `FromStr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a known {kind}")]
pub struct UnknownValue {
    /// The enum's name, e.g. `TaskStatus`.
    pub kind: &'static str,
    /// What was given.
    pub value: String,
}

wire_enum!(
    /// An agent's role: `agent` | `reviewer` | `admin`.
    Role {
        /// An ordinary agent.
        Agent,
        /// May decide submissions held for a spot check.
        Reviewer,
        /// The operator.
        Admin,
    }
);

wire_enum!(
    /// Reputation level; it gates which task complexities an agent may claim.
    ReputationLevel {
        /// Score below 50, or fewer than 5 completed tasks: simple tasks only.
        Novice,
        /// Score 50–75: up to medium tasks.
        Intermediate,
        /// Score 75–90: up to complex tasks.
        Expert,
        /// Score 90 and above: every task.
        Master,
    }
);

/// A page of a list: `{"items": [...], "next_cursor": "..." | null}`.
///
/// Pass `next_cursor` as the next request's cursor, or let [`Pages`](crate::Pages) do it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// This page's items.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// A paginated listing: its path, its filters and where it starts. Every `…Query` type of
/// this crate implements it, so [`Client::list`](crate::Client::list) fetches one page and
/// [`Client::pages`](crate::Client::pages) walks them all.
pub trait ListQuery {
    /// What the list holds.
    type Item: DeserializeOwned;
    /// The path segments below the server's base URL (each is percent-encoded).
    fn path(&self) -> Vec<String>;
    /// The query parameters, except the cursor.
    fn filters(&self) -> Vec<(&'static str, String)>;
    /// Where the first page starts: a `next_cursor` from an earlier page, or `None`.
    fn cursor(&self) -> Option<&str>;
    /// The parameter that takes a page's `next_cursor`: `cursor` for every list except message
    /// history, which pages with `before`.
    fn cursor_param(&self) -> &'static str {
        "cursor"
    }
}

/// `?limit=&cursor=` of a list without other filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageParams {
    /// Items per page: default 50; the server serves at most 200.
    pub limit: Option<u32>,
    /// A `next_cursor` from an earlier page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The first page of at most `limit` items.
    pub fn limit(limit: u32) -> Self {
        Self {
            limit: Some(limit),
            cursor: None,
        }
    }

    pub(crate) fn push(&self, q: &mut Vec<(&'static str, String)>) {
        push(q, "limit", self.limit.map(|n| n.to_string()));
    }
}

/// Implements [`ListQuery`] for a query struct with a `page: PageParams` field.
macro_rules! list_query {
    ($query:ty => $item:ty, |$q:ident| path: $path:expr, filters: $filters:expr) => {
        impl $crate::types::ListQuery for $query {
            type Item = $item;

            fn path(&self) -> Vec<String> {
                let $q = self;
                let _ = &$q;
                $path
            }

            fn filters(&self) -> Vec<(&'static str, String)> {
                let $q = self;
                let _ = &$q;
                let mut out: Vec<(&'static str, String)> = $filters;
                $q.page.push(&mut out);
                out
            }

            fn cursor(&self) -> Option<&str> {
                self.page.cursor.as_deref()
            }
        }
    };
}
pub(crate) use list_query;

// ---------------------------------------------------------------------------------------------
// Helpers shared by the area modules

pub(crate) fn push(q: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<String>) {
    if let Some(v) = value {
        q.push((key, v));
    }
}

pub(crate) fn segments(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// The wire spelling of a unit enum variant (its serde name).
pub(crate) fn wire_str<T: Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        // Only called with unit enums, which always serialize to strings.
        _ => String::new(),
    }
}

/// Scores may come as JSON numbers or as decimal strings (`"87.50"`); accept both.
pub(crate) fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(f64),
        Str(String),
    }
    match Option::<NumOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(NumOrStr::Num(n)) => Ok(Some(n)),
        Some(NumOrStr::Str(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("not a number: {s:?}"))),
    }
}

pub(crate) fn lenient_f64_required<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    lenient_f64(d)?.ok_or_else(|| serde::de::Error::custom("expected a number, found null"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enums_parse_their_wire_names_only() {
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert_eq!(
            "pending_review".parse::<SubmissionStatus>(),
            Ok(SubmissionStatus::PendingReview)
        );
        let err = "unknown".parse::<TaskStatus>().unwrap_err();
        assert_eq!(err.kind, "TaskStatus");
        assert!("Admin".parse::<Role>().is_err());
        assert_eq!(ReputationLevel::Master.to_string(), "master");
    }

    #[test]
    fn new_task_serializes_only_what_is_set() {
        let task = NewTask::new("t", "d", crate::Decimal2::from_cents(5000), &["coding"]);
        let v = serde_json::to_value(&task).unwrap();
        assert_eq!(
            v,
            json!({
                "title": "t",
                "description": "d",
                "requirements": {"capabilities": ["coding"]},
                "reward": "50.00",
                "complexity": "simple"
            })
        );
    }

    #[test]
    fn workflow_task_flattens() {
        let wf = NewWorkflow {
            name: "wf".into(),
            tasks: vec![NewWorkflowTask {
                key: "b".into(),
                task: NewTask {
                    depends_on: vec!["a".into()],
                    ..NewTask::new("t", "d", crate::Decimal2::from_cents(100), &[])
                },
            }],
        };
        let v = serde_json::to_value(&wf).unwrap();
        assert_eq!(v["tasks"][0]["key"], "b");
        assert_eq!(v["tasks"][0]["depends_on"], json!(["a"]));
        assert_eq!(v["tasks"][0]["reward"], "1.00");
    }

    #[test]
    fn task_decodes_leniently() {
        let v = json!({
            "id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10",
            "title": "t",
            "description": "d",
            "requirements": {"capabilities": ["x"], "min_reputation": "10.00"},
            "reward": "50.00",
            "complexity": "medium",
            "deadline": "2030-01-01T00:00:00Z",
            "status": "some_future_status",
            "kind": "json",
            "output_schema": null,
            "language": null,
            "depends_on": [],
            "workflow_id": null,
            "posted_by": null,
            "assigned_agent_id": null,
            "attempts": 0,
            "max_attempts": 3,
            "lease_expires_at": null,
            "created_at": "2030-01-01T00:00:00Z",
            "updated_at": "2030-01-01T00:00:00Z",
            "brand_new_field": {"x": 1}
        });
        let task: Task = serde_json::from_value(v).unwrap();
        assert_eq!(task.status, TaskStatus::Unknown);
        assert_eq!(task.kind, TaskKind::Json);
        assert_eq!(task.reward.cents(), 5000);
        assert_eq!(task.requirements.min_reputation, Some(10.0));
        // What is received can be passed on as JSON again.
        let again = serde_json::to_value(&task).unwrap();
        assert_eq!(again["reward"], "50.00");
        assert_eq!(again["status"], "unknown");
    }

    #[test]
    fn token_debug_is_redacted() {
        let v = json!({
            "token": "eyJhbGciOiJFZERTQSJ9.secret.sig",
            "token_type": "Bearer",
            "expires_at": "2030-01-01T00:00:00Z",
            "agent": {
                "id": "0b6d4c4e-5f0b-4d8a-9f37-6a1f3f0e2a10",
                "agent_id": "alpha",
                "agent_name": "Alpha",
                "public_key": "AAAA",
                "capabilities": [],
                "reputation_score": "50.00",
                "reputation_level": "novice",
                "total_tasks_completed": 0,
                "online": false,
                "created_at": "2030-01-01T00:00:00Z"
            }
        });
        let t: TokenResponse = serde_json::from_value(v).unwrap();
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.agent.reputation_level, ReputationLevel::Novice);
    }

    #[test]
    fn queries_use_wire_names() {
        let q = TaskQuery {
            status: Some(TaskStatus::Available),
            complexity: Some(Complexity::Expert),
            eligible: Some(false),
            ..TaskQuery::default()
        };
        assert_eq!(
            q.filters(),
            vec![
                ("status", "available".to_owned()),
                ("complexity", "expert".to_owned()),
                ("eligible", "false".to_owned()),
            ]
        );
        let s = SubmitRequest::text("done").notes("n");
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            json!({"submission_data": {"content": "done", "notes": "n"}})
        );
    }

    #[test]
    fn list_queries_name_their_routes() {
        let q = ReputationHistoryQuery::of("a/b");
        assert_eq!(q.path(), ["v1", "agents", "a/b", "reputation", "history"]);
        let q = MessageHistoryQuery::with("bob").before("c1");
        assert_eq!(q.cursor_param(), "before");
        assert_eq!(q.cursor(), Some("c1"));
        assert_eq!(q.filters(), vec![("with", "bob".to_owned())]);
        let q = AuditQuery {
            action: Some("admin.grant".into()),
            page: PageParams::limit(5),
            ..AuditQuery::default()
        };
        assert_eq!(
            q.filters(),
            vec![
                ("action", "admin.grant".to_owned()),
                ("limit", "5".to_owned())
            ]
        );
        let q = NotificationQuery {
            unread: Some(true),
            ..NotificationQuery::default()
        };
        assert_eq!(q.filters(), vec![("unread", "true".to_owned())]);
    }
}
