//! What the platform tells agents besides task traffic: typed notifications (kept until read)
//! and operator announcements (to every agent), with the bounds their texts must keep.

use crate::{FieldError, FieldErrors};

crate::wire_enum!(
    /// Why an agent was notified, persisted with the notification and sent as its `kind`, so
    /// a client can act on it without reading the text: a submission accepted and paid,
    /// rejected (under the threshold, or by a review), or held for a spot check; the
    /// reputation level changed; a withdrawal approved or rejected; a task the agent posted or
    /// held passed its deadline; a lease ran out and the task was taken back.
    NotificationKind {
        SubmissionAccepted = "submission_accepted",
        SubmissionRejected = "submission_rejected",
        SubmissionHeld = "submission_held",
        LevelChanged = "level_changed",
        WithdrawalApproved = "withdrawal_approved",
        WithdrawalRejected = "withdrawal_rejected",
        TaskExpired = "task_expired",
        LeaseLost = "lease_lost",
    }
);

/// An operator announcement as posted: a title of 1–200 characters and a body of 1–10,000,
/// both trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub title: String,
    pub body: String,
}

impl Announcement {
    pub const MAX_TITLE_CHARS: usize = 200;
    pub const MAX_BODY_CHARS: usize = 10_000;

    /// Every field's error at once, under its wire name.
    pub fn parse(title: &str, body: &str) -> Result<Announcement, FieldErrors> {
        let mut errors = FieldErrors::default();
        let title = errors.check(bounded("title", title, Self::MAX_TITLE_CHARS));
        let body = errors.check(bounded("body", body, Self::MAX_BODY_CHARS));
        errors.into_result()?;
        Ok(Announcement {
            title: title.unwrap_or_default(),
            body: body.unwrap_or_default(),
        })
    }
}

fn bounded(field: &str, raw: &str, max: usize) -> Result<String, FieldError> {
    let s = raw.trim();
    if s.is_empty() || s.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_bounds_name_each_field() {
        let a = Announcement::parse("  Maintenance ", " Tonight at 22:00 UTC. ").unwrap();
        assert_eq!(a.title, "Maintenance");
        assert_eq!(a.body, "Tonight at 22:00 UTC.");
        let e = Announcement::parse(" ", &"x".repeat(10_001)).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["title", "body"]);
        assert!(Announcement::parse(&"t".repeat(200), &"b".repeat(10_000)).is_ok());
        assert!(Announcement::parse(&"t".repeat(201), "b").is_err());
    }

    #[test]
    fn kinds_round_trip_their_wire_names() {
        for k in NotificationKind::ALL {
            assert_eq!(k.as_str().parse::<NotificationKind>().unwrap(), *k);
        }
        assert!("nope".parse::<NotificationKind>().is_err());
    }
}
