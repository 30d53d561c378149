//! Reputation as stored: the evidence it is computed from, the agents whose evidence moved
//! past their score, recording a recomputed score with its snapshot, and the histories shown
//! on a profile.
//!
//! The computation itself is pure (`nervix_core::reputation`) and runs outside any
//! transaction; only its result is written, and only while the evidence it read is still the
//! agent's latest (`reputation_version`, bumped by triggers wherever evidence is written).

use chrono::{DateTime, Utc};
use nervix_core::Level;
use uuid::Uuid;

use super::Backend;
use crate::model::*;
use crate::{Result, StoreError};

/// How much evidence of each kind a computation reads: the newest, since older evidence
/// weighs little under recency decay and a score must not cost more as an agent ages.
pub(crate) const EVIDENCE_LIMIT: i64 = 500;

#[tracing::instrument(skip_all, name = "store.stale_reputations", level = "debug")]
pub(super) async fn stale_reputations(store: &Backend, limit: i64) -> Result<Vec<StaleReputation>> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT id, reputation_version, tasks_completed FROM agents WHERE reputation_version > \
         reputation_computed ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(|(agent_id, version, tasks_completed)| StaleReputation {
            agent_id,
            version,
            tasks_completed,
        })
        .collect())
}

/// A decided submission of the agent's, with what reputation needs of its task.
#[derive(sqlx::FromRow)]
struct DecidedRow {
    task_id: Uuid,
    posted_by: Uuid,
    funded_by_treasury: bool,
    at: DateTime<Utc>,
    status: String,
    score: i64,
    on_time: bool,
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    id: Uuid,
    at: DateTime<Utc>,
    score: i64,
    automated: i64,
    success: i64,
    peer: i64,
    level: String,
}

fn score(s: i64) -> u8 {
    u8::try_from(s.clamp(0, 100)).unwrap_or(0)
}

#[tracing::instrument(skip_all, name = "store.reputation_evidence", level = "debug", fields(agent = %agent))]
pub(super) async fn reputation_evidence(store: &Backend, agent: Uuid) -> Result<EvidenceRecords> {
    let pool = store.reader();
    let decided: Vec<DecidedRow> = sqlx::query_as(
        "SELECT s.task_id, t.posted_by, t.funded_by_treasury, COALESCE(s.decided_at, \
         s.created_at) AS at, s.status, COALESCE(s.final_score, s.quality_score) AS score, \
         s.created_at <= t.deadline AS on_time FROM submissions s JOIN tasks t ON t.id = \
         s.task_id WHERE s.agent_id = $1 AND s.status IN ('accepted', 'rejected') ORDER BY s.id \
         DESC LIMIT $2",
    )
    .bind(agent)
    .bind(EVIDENCE_LIMIT)
    .fetch_all(pool)
    .await?;
    let mut work = Vec::with_capacity(decided.len());
    for d in decided {
        let outcome = match d.status.parse::<SubmissionStatus>() {
            Ok(SubmissionStatus::Accepted) => WorkOutcome::Accepted {
                score: score(d.score),
                on_time: d.on_time,
            },
            Ok(SubmissionStatus::Rejected) => WorkOutcome::Rejected {
                score: score(d.score),
            },
            _ => {
                let status = d.status;
                return Err(StoreError::Corrupt(format!("unexpected status {status:?}")));
            }
        };
        work.push(WorkRecord {
            task_id: d.task_id,
            poster: (!d.funded_by_treasury).then_some(d.posted_by),
            at: d.at,
            outcome,
        });
    }
    // Tasks given back or lost; a rejection is already counted from its submission.
    let dropped: Vec<(Uuid, Uuid, bool, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT e.task_id, t.posted_by, t.funded_by_treasury, e.reason, e.created_at FROM \
         task_exclusions e JOIN tasks t ON t.id = e.task_id WHERE e.agent_id = $1 AND e.reason \
         IN ('released', 'lease_lost') ORDER BY e.created_at DESC LIMIT $2",
    )
    .bind(agent)
    .bind(EVIDENCE_LIMIT)
    .fetch_all(pool)
    .await?;
    for (task_id, posted_by, treasury, reason, at) in dropped {
        let outcome = match reason.parse::<ExclusionReason>() {
            Ok(ExclusionReason::Released) => WorkOutcome::Released,
            Ok(ExclusionReason::LeaseLost) => WorkOutcome::LeaseLost,
            _ => return Err(StoreError::Corrupt(format!("unexpected reason {reason:?}"))),
        };
        work.push(WorkRecord {
            task_id,
            poster: (!treasury).then_some(posted_by),
            at,
            outcome,
        });
    }
    // From the agent's newest tasks (tasks_posted_idx) down, so the read stops at the limit
    // instead of sorting all the work ever done for it.
    let posted_work: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT s.agent_id, COALESCE(s.decided_at, s.created_at) FROM tasks t JOIN submissions s \
         ON s.task_id = t.id WHERE t.posted_by = $1 AND t.funded_by_treasury = FALSE AND \
         s.status IN ('accepted', 'rejected') ORDER BY t.id DESC, s.id DESC LIMIT $2",
    )
    .bind(agent)
    .bind(EVIDENCE_LIMIT)
    .fetch_all(pool)
    .await?;
    // The operator's reviews carry full standing: its identity never earns a score of its own.
    let reviews: Vec<(Uuid, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT r.reviewer_id, CASE WHEN a.role = 'admin' THEN 10000 ELSE a.reputation END, \
         r.score, r.created_at FROM reviews r JOIN agents a ON a.id = r.reviewer_id WHERE \
         r.subject_id = $1 ORDER BY r.created_at DESC LIMIT $2",
    )
    .bind(agent)
    .bind(EVIDENCE_LIMIT)
    .fetch_all(pool)
    .await?;
    let reviews_given: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT subject_id, created_at FROM reviews WHERE reviewer_id = $1 ORDER BY created_at \
         DESC LIMIT $2",
    )
    .bind(agent)
    .bind(EVIDENCE_LIMIT)
    .fetch_all(pool)
    .await?;
    Ok(EvidenceRecords {
        work,
        posted_work,
        reviews: reviews
            .into_iter()
            .map(|(reviewer, reviewer_score, s, at)| ReviewEvidence {
                reviewer,
                reviewer_score,
                score: score(s),
                at,
            })
            .collect(),
        reviews_given,
    })
}

/// Records a recomputed reputation if `u.version` is still the agent's evidence version,
/// with a snapshot when the score, a layer or the level moved. Returns the level of the
/// previous snapshot (novice before the first), or `None` when newer evidence arrived
/// meanwhile (the agent stays stale and is recomputed) or another node already recorded this
/// version (so each version is announced once).
#[tracing::instrument(skip_all, name = "store.record_reputation", level = "debug", fields(agent = %u.agent_id))]
pub(super) async fn record_reputation(
    store: &Backend,
    u: &ReputationUpdate,
) -> Result<Option<Level>> {
    store
        .write(u.clone(), |mut tx, u| {
            Box::pin(async move {
                let before: Option<(i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT reputation, rep_automated, rep_success, rep_peer FROM agents WHERE \
                     id = $1 AND reputation_version = $2 AND reputation_computed < $2",
                )
                .bind(u.agent_id)
                .bind(u.version)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(before) = before else {
                    return tx.refuse(Ok(None));
                };
                let updated = sqlx::query(
                    "UPDATE agents SET reputation = $1, rep_automated = $2, rep_success = $3, \
                     rep_peer = $4, level_max_tasks = $5, reputation_computed = $6, updated_at = \
                     $7 WHERE id = $8 AND reputation_version = $6 AND reputation_computed < $6",
                )
                .bind(u.score)
                .bind(u.automated)
                .bind(u.success)
                .bind(u.peer)
                .bind(u.level_max_tasks)
                .bind(u.version)
                .bind(u.at)
                .bind(u.agent_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if updated == 0 {
                    return tx.refuse(Ok(None));
                }
                let last: Option<(String,)> = sqlx::query_as(
                    "SELECT level FROM reputation_snapshots WHERE agent_id = $1 ORDER BY id DESC \
                     LIMIT 1",
                )
                .bind(u.agent_id)
                .fetch_optional(&mut *tx)
                .await?;
                let previous = match &last {
                    None => Level::Novice,
                    Some((l,)) => l
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("unknown level {l:?}")))?,
                };
                let moved = before != (u.score, u.automated, u.success, u.peer);
                if last.is_none() || moved || previous != u.level {
                    sqlx::query(
                        "INSERT INTO reputation_snapshots (id, agent_id, at, score, automated, \
                         success, peer, level) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(u.id)
                    .bind(u.agent_id)
                    .bind(u.at)
                    .bind(u.score)
                    .bind(u.automated)
                    .bind(u.success)
                    .bind(u.peer)
                    .bind(u.level.as_str())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(Some(previous))
            })
        })
        .await
}

#[tracing::instrument(skip_all, name = "store.reputation_history", level = "debug", fields(agent = %agent))]
pub(super) async fn reputation_history(
    store: &Backend,
    agent: Uuid,
    q: &PageQuery,
) -> Result<Vec<ReputationSnapshot>> {
    let rows: Vec<SnapshotRow> = sqlx::query_as(
        "SELECT id, at, score, automated, success, peer, level FROM reputation_snapshots WHERE \
         agent_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(agent)
    .bind(q.cursor)
    .bind(q.limit)
    .fetch_all(store.reader())
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ReputationSnapshot {
                id: r.id,
                agent_id: agent,
                at: r.at,
                score: r.score,
                automated: r.automated,
                success: r.success,
                peer: r.peer,
                level: r
                    .level
                    .parse::<Level>()
                    .map_err(|_| StoreError::Corrupt(format!("unknown level {:?}", r.level)))?,
            })
        })
        .collect()
}

#[tracing::instrument(skip_all, name = "store.work_history", level = "debug", fields(agent = %agent))]
pub(super) async fn work_history(
    store: &Backend,
    agent: Uuid,
    q: &PageQuery,
) -> Result<Vec<HistoryEntry>> {
    type Row = (
        Uuid,
        Uuid,
        String,
        i64,
        Option<i64>,
        i64,
        Option<i64>,
        String,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT s.id, s.task_id, t.title, s.quality_score, s.final_score, t.reward_cents, \
         s.payout_cents, s.status, s.created_at, s.decided_at FROM submissions s JOIN tasks t ON \
         t.id = s.task_id WHERE s.agent_id = $1 AND ($2 IS NULL OR s.id < $2) ORDER BY s.id DESC \
         LIMIT $3",
    )
    .bind(agent)
    .bind(q.cursor)
    .bind(q.limit)
    .fetch_all(store.reader())
    .await?;
    rows.into_iter()
        .map(
            |(
                id,
                task_id,
                title,
                quality,
                final_score,
                reward,
                payout,
                status,
                created,
                decided,
            )| {
                Ok(HistoryEntry {
                    submission_id: id,
                    task_id,
                    task_title: title,
                    quality_score: quality,
                    final_score,
                    reward_cents: reward,
                    payout_cents: payout,
                    status: status
                        .parse()
                        .map_err(|_| StoreError::Corrupt(format!("unknown status {status:?}")))?,
                    created_at: created,
                    decided_at: decided,
                })
            },
        )
        .collect()
}
