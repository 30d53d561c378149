//! Notifications and announcements: what the platform tells agents besides task traffic.
//!
//! A notification is stored with its agent event in one write (the agent gets it as a
//! `notification` frame, live or on resume) and stays listed by `GET /v1/notifications` until
//! read and pruned. Like the other frames of an operation, it is written after the operation
//! committed, by the outbox, and never fails it (see `bus::deliver` for the window that
//! leaves). An
//! announcement is the operator's: stored, fanned out to every agent in its own transaction,
//! and pushed to every connection.

use chrono::{SubsecRound, Utc};
use nervix_core::notice::{Announcement, NotificationKind};
use nervix_core::{Level, Money, Reputation, TaskStatus};
use nervix_store::{
    MarkRead, NewAnnouncement, NewNotification, NotificationQuery, NotificationRecord,
    SubmissionRecord, SubmissionStatus, TaskRecord, WithdrawalRecord, WithdrawalStatus,
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{audit, App, Caller, Error, Result};
use crate::bus::{Event, Frame};

/// Most ids one mark-read names.
pub const MAX_MARK_IDS: usize = 200;

/// A notification to send: who gets it, why, and what it says.
#[derive(Debug, Clone)]
pub struct Notice {
    pub agent_id: Uuid,
    pub kind: NotificationKind,
    pub title: String,
    pub body: String,
    pub data: Value,
}

/// Queues the notices: each is stored with its agent event in one write and pushed (see
/// `crate::outbox`). A failure is logged: the change that caused them is committed already.
pub async fn notify(app: &App, notices: Vec<Notice>) {
    // The precision both backends keep, so the frame and the listed row agree.
    let at = Utc::now().trunc_subsecs(6);
    let rows: Vec<NewNotification> = notices
        .into_iter()
        .map(|n| NewNotification {
            id: Uuid::now_v7(),
            agent_id: n.agent_id,
            kind: n.kind,
            title: n.title,
            body: n.body,
            data: n.data,
            created_at: at,
        })
        .collect();
    app.outbox.notifications(rows).await;
}

/// The caller's notifications, newest first: up to `limit` after the cursor.
pub async fn list(
    app: &App,
    caller: &Caller,
    unread_only: bool,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<NotificationRecord>> {
    Ok(app
        .store
        .notifications(&NotificationQuery {
            agent_id: caller.id,
            unread_only,
            cursor,
            limit,
        })
        .await?)
}

/// Which notifications a mark-read names: `ids` (1 to 200 UUIDs) or `all: true`, not both.
pub fn selection(ids: Option<&[String]>, all: Option<bool>) -> Result<MarkRead> {
    match (ids, all) {
        (Some(_), Some(_)) => Err(Error::field("body", "give either ids or all, not both")),
        (None, Some(true)) => Ok(MarkRead::All),
        (None, Some(false)) => Err(Error::field("all", "must be true when given")),
        (None, None) => Err(Error::field("ids", "give ids, or all: true")),
        (Some(ids), None) => {
            if ids.is_empty() || ids.len() > MAX_MARK_IDS {
                return Err(Error::field("ids", "must hold 1 to 200 notification ids"));
            }
            let parsed = ids
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Uuid::parse_str(s.trim())
                        .map_err(|_| Error::field(format!("ids[{i}]"), "must be a notification id"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(MarkRead::Ids(parsed))
        }
    }
}

/// Marks the caller's notifications read (ids of anybody else's match nothing); returns how
/// many were unread.
pub async fn mark_read(app: &App, caller: &Caller, which: &MarkRead) -> Result<u64> {
    Ok(app
        .store
        .mark_notifications_read(caller.id, which, Utc::now())
        .await?)
}

/// An announcement as stored, and how many agents it was sent to.
#[derive(Debug, Clone)]
pub struct Announced {
    pub announcement: NewAnnouncement,
    pub recipients: usize,
}

/// Announces to every agent (admins only; audited): stored, fanned out as an event to every
/// agent enrolled now (so offline agents get it on resume), and pushed to every connection.
pub async fn announce(app: &App, caller: &Caller, a: Announcement) -> Result<Announced> {
    caller.require_admin()?;
    let announcement = NewAnnouncement {
        id: Uuid::now_v7(),
        title: a.title,
        body: a.body,
        created_by: Some(caller.id),
        created_at: Utc::now().trunc_subsecs(6),
    };
    let entry = audit::by(
        caller,
        "admin.announce",
        Some(announcement.id.to_string()),
        json!({"title": announcement.title}),
    );
    let seqs = app.store.create_announcement(&announcement, &entry).await?;
    let recipients = seqs.len();
    let frame = Frame::Announcement {
        id: announcement.id,
        title: announcement.title.clone(),
        body: announcement.body.clone(),
        created_at: announcement.created_at,
    };
    let published = app
        .bus
        .publish(Event::Broadcast {
            frame,
            seqs: seqs.into(),
        })
        .await;
    if let Err(e) = published {
        // Stored for every agent: connections catch up when they next read the store.
        tracing::warn!(error = %e, "publishing an announcement failed");
    }
    Ok(Announced {
        announcement,
        recipients,
    })
}

/// Drops stored events and read notifications older than the retention period, in batches of
/// `batch` rows (each its own write). Returns how many of each went.
pub async fn prune_expired(app: &App, batch: i64) -> Result<(u64, u64)> {
    let batch = batch.max(1);
    let before = Utc::now() - app.config.event_retention;
    let limit = u64::try_from(batch).unwrap_or(0);
    let (mut events, mut read) = (0, 0);
    loop {
        let n = app.store.prune_events(before, batch).await?;
        events += n;
        if n < limit {
            break;
        }
        tokio::task::yield_now().await;
    }
    loop {
        let n = app.store.prune_notifications(before, batch).await?;
        read += n;
        if n < limit {
            break;
        }
        tokio::task::yield_now().await;
    }
    if events + read > 0 {
        tracing::info!(
            events,
            notifications = read,
            "pruned past the retention period"
        );
    }
    Ok((events, read))
}

// ---- what the platform notifies of -----------------------------------------------------------

/// A submission was decided or held: its agent hears the outcome with the quality score and
/// the checks' feedback.
pub async fn submission_decided(app: &App, s: &SubmissionRecord, task: &TaskRecord) {
    let score = s.final_score.unwrap_or(s.quality_score);
    let (kind, title) = match s.status {
        SubmissionStatus::Accepted => (
            NotificationKind::SubmissionAccepted,
            format!("Submission accepted: {}", task.title),
        ),
        SubmissionStatus::Rejected => (
            NotificationKind::SubmissionRejected,
            format!("Submission rejected: {}", task.title),
        ),
        SubmissionStatus::PendingReview => (
            NotificationKind::SubmissionHeld,
            format!("Submission held for a spot check: {}", task.title),
        ),
    };
    let body = s
        .feedback
        .clone()
        .unwrap_or_else(|| format!("Quality score {score}/100."));
    let data = json!({
        "task_id": task.id,
        "submission_id": s.id,
        "status": s.status,
        "quality_score": s.quality_score,
        "final_score": s.final_score,
        "payout": s.payout_cents.map(Money::from_cents),
        "checks": s.checks,
        "feedback": s.feedback,
    });
    notify(
        app,
        vec![Notice {
            agent_id: s.agent_id,
            kind,
            title,
            body,
            data,
        }],
    )
    .await;
}

/// The agent's reputation level changed.
pub async fn level_changed(app: &App, agent: Uuid, from: Level, to: Level, score: Reputation) {
    let direction = if to > from { "up" } else { "down" };
    notify(
        app,
        vec![Notice {
            agent_id: agent,
            kind: NotificationKind::LevelChanged,
            title: format!("Reputation level: {to}"),
            body: format!(
                "Your level went {direction} from {from} to {to} (score {score}). It decides the \
                 complexity you may claim, how many tasks you may hold and your reward multiplier."
            ),
            data: json!({"previous_level": from, "level": to, "score": score}),
        }],
    )
    .await;
}

/// An admin decided the agent's withdrawal.
pub async fn withdrawal_decided(app: &App, w: &WithdrawalRecord) {
    let amount = Money::from_cents(w.amount_cents);
    let (kind, title, body) = match w.status {
        WithdrawalStatus::Paid => (
            NotificationKind::WithdrawalApproved,
            "Withdrawal paid".to_owned(),
            format!("Your withdrawal of {amount} was approved and paid out."),
        ),
        WithdrawalStatus::Rejected => (
            NotificationKind::WithdrawalRejected,
            "Withdrawal rejected".to_owned(),
            format!(
                "Your withdrawal of {amount} was rejected; the amount is back in your available \
                 balance."
            ),
        ),
        WithdrawalStatus::Pending => return,
    };
    notify(
        app,
        vec![Notice {
            agent_id: w.agent_id,
            kind,
            title,
            body,
            data: json!({"withdrawal_id": w.id, "amount": amount, "status": w.status}),
        }],
    )
    .await;
}

/// Tasks passed their deadline: their posters and the agents that held them hear of it.
pub async fn tasks_expired(app: &App, changed: &[TaskRecord]) {
    let mut notices = Vec::new();
    for t in changed.iter().filter(|t| t.status == TaskStatus::Expired) {
        let data = json!({"task_id": t.id, "deadline": t.deadline});
        notices.push(Notice {
            agent_id: t.posted_by,
            kind: NotificationKind::TaskExpired,
            title: format!("Task expired: {}", t.title),
            body: "The deadline passed before the task was completed; its escrow was refunded."
                .to_owned(),
            data: data.clone(),
        });
        if let Some(holder) = t.assigned_agent_id.filter(|a| *a != t.posted_by) {
            notices.push(Notice {
                agent_id: holder,
                kind: NotificationKind::TaskExpired,
                title: format!("Task expired: {}", t.title),
                body: "The deadline passed before you submitted; the task is closed.".to_owned(),
                data,
            });
        }
    }
    notify(app, notices).await;
}

/// Leases ran out: each agent that held one hears that the task was taken back.
pub async fn leases_lost(app: &App, lost: &[(Uuid, Uuid)], changed: &[TaskRecord]) {
    let notices = lost
        .iter()
        .map(|&(task_id, agent_id)| {
            let title = changed
                .iter()
                .find(|t| t.id == task_id)
                .map_or("a task", |t| t.title.as_str());
            Notice {
                agent_id,
                kind: NotificationKind::LeaseLost,
                title: format!("Lease lost: {title}"),
                body: "Your lease ran out before you submitted, and the task was taken back. You \
                       may not claim it again."
                    .to_owned(),
                data: json!({"task_id": task_id}),
            }
        })
        .collect();
    notify(app, notices).await;
}
