//! Signed reputation receipts: one per accepted submission, as issued, and the accepted
//! submissions whose receipt is still due (migration 0016).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use sqlx::QueryBuilder;

use super::events::CHUNK;
use super::{Backend, Db};
use crate::model::*;
use crate::sql::rows::{SubmissionRow, SUBMISSION_COLUMNS};
use crate::Result;

const RECEIPT_COLUMNS: &str = "id, submission_id, task_id, agent_id, kid, jws, created_at";

type ReceiptRow = (Uuid, Uuid, Uuid, Uuid, String, String, DateTime<Utc>);

fn record(r: ReceiptRow) -> ReceiptRecord {
    ReceiptRecord {
        id: r.0,
        submission_id: r.1,
        task_id: r.2,
        agent_id: r.3,
        kid: r.4,
        jws: r.5,
        created_at: r.6,
    }
}

#[tracing::instrument(skip_all, name = "store.insert_receipts", level = "debug", fields(count = rs.len()))]
pub(super) async fn insert_receipts(store: &Backend, rs: &[NewReceipt]) -> Result<()> {
    if rs.is_empty() {
        return Ok(());
    }
    // A second issue for the same submission (two nodes, or a retry) keeps the first receipt:
    // what was handed out stays what is served.
    store
        .write(rs.to_vec(), |mut tx, rs| {
            Box::pin(async move {
                // Two statements per chunk, however many receipts: a pass stores its batch
                // in one short write.
                for chunk in rs.chunks(CHUNK) {
                    let mut insert = QueryBuilder::<Db>::new(
                        "INSERT INTO receipts (id, submission_id, task_id, agent_id, kid, jws, \
                         created_at) ",
                    );
                    insert.push_values(chunk, |mut b, r| {
                        b.push_bind(r.id)
                            .push_bind(r.submission_id)
                            .push_bind(r.task_id)
                            .push_bind(r.agent_id)
                            .push_bind(&r.kid)
                            .push_bind(&r.jws)
                            .push_bind(r.created_at);
                    });
                    insert.push(" ON CONFLICT (submission_id) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                    let mut settled = QueryBuilder::<Db>::new(
                        "DELETE FROM receipts_due WHERE submission_id IN (",
                    );
                    let mut ids = settled.separated(", ");
                    for r in chunk {
                        ids.push_bind(r.submission_id);
                    }
                    settled.push(")");
                    settled.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
        .await
}

#[derive(sqlx::FromRow)]
struct DueRow {
    submission_id: Uuid,
    agent_id: Uuid,
    task_id: Uuid,
    task_title: String,
    posted_by: Uuid,
    poster_handle: Option<String>,
    quality_score: i64,
    final_score: Option<i64>,
    checks: Json<Value>,
    payout_cents: Option<i64>,
    decided_at: DateTime<Utc>,
}

#[tracing::instrument(skip_all, name = "store.receipts_due", level = "debug")]
pub(super) async fn receipts_due(store: &Backend, limit: i64) -> Result<Vec<DueReceipt>> {
    let rows: Vec<DueRow> = sqlx::query_as(
        // The due rows first (a LIMIT subquery is never flattened): a planner without
        // statistics would otherwise walk every submission to find the few that are due.
        "SELECT d.submission_id, d.agent_id, s.task_id, t.title AS task_title, t.posted_by, \
         p.handle AS poster_handle, s.quality_score, s.final_score, s.checks, s.payout_cents, \
         COALESCE(s.decided_at, s.created_at) AS decided_at FROM (SELECT submission_id, \
         agent_id FROM receipts_due ORDER BY submission_id LIMIT $1) d JOIN submissions s ON \
         s.id = d.submission_id JOIN tasks t ON t.id = s.task_id LEFT JOIN agents p ON p.id = \
         t.posted_by ORDER BY d.submission_id",
    )
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DueReceipt {
            submission_id: r.submission_id,
            agent_id: r.agent_id,
            task_id: r.task_id,
            task_title: r.task_title,
            posted_by: r.posted_by,
            poster_handle: r.poster_handle,
            quality_score: r.quality_score,
            final_score: r.final_score,
            checks: r.checks.0,
            payout_cents: r.payout_cents,
            decided_at: r.decided_at,
        })
        .collect())
}

#[tracing::instrument(skip_all, name = "store.receipt_is_due", level = "debug", fields(submission = %submission))]
pub(super) async fn receipt_is_due(store: &Backend, submission: Uuid) -> Result<bool> {
    let due: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts_due WHERE submission_id = $1")
        .bind(submission)
        .fetch_one(store.reader())
        .await?;
    Ok(due > 0)
}

#[tracing::instrument(skip_all, name = "store.receipts_of", level = "debug", fields(agent = %agent))]
pub(super) async fn receipts_of(
    store: &Backend,
    agent: Uuid,
    q: &PageQuery,
) -> Result<Vec<ReceiptRecord>> {
    let rows: Vec<ReceiptRow> = sqlx::query_as(&format!(
        "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE agent_id = $1 AND ($2 IS NULL OR id < $2) \
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(agent)
    .bind(q.cursor)
    .bind(q.limit)
    .fetch_all(store.reader())
    .await?;
    Ok(rows.into_iter().map(record).collect())
}

#[tracing::instrument(skip_all, name = "store.receipt_for_task", level = "debug", fields(task = %task))]
pub(super) async fn receipt_for_task(store: &Backend, task: Uuid) -> Result<Option<ReceiptRecord>> {
    let row: Option<ReceiptRow> = sqlx::query_as(&format!(
        "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE task_id = $1 ORDER BY id DESC LIMIT 1"
    ))
    .bind(task)
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(record))
}

#[tracing::instrument(skip_all, name = "store.receipt_summary", level = "debug", fields(agent = %agent))]
pub(super) async fn receipt_summary(store: &Backend, agent: Uuid) -> Result<ReceiptSummary> {
    let (count, latest): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT COUNT(*), MAX(created_at) FROM receipts WHERE agent_id = $1")
            .bind(agent)
            .fetch_one(store.reader())
            .await?;
    Ok(ReceiptSummary { count, latest })
}

#[tracing::instrument(skip_all, name = "store.receipt_kids", level = "debug")]
pub(super) async fn receipt_kids(store: &Backend) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("SELECT DISTINCT kid FROM receipts ORDER BY kid")
            .fetch_all(store.reader())
            .await?,
    )
}

#[tracing::instrument(skip_all, name = "store.accepted_submission", level = "debug", fields(task = %task))]
pub(super) async fn accepted_submission(
    store: &Backend,
    task: Uuid,
) -> Result<Option<SubmissionRecord>> {
    let row: Option<SubmissionRow> = sqlx::query_as(&format!(
        "SELECT {SUBMISSION_COLUMNS} FROM submissions WHERE task_id = $1 AND status = 'accepted' \
         ORDER BY id DESC LIMIT 1"
    ))
    .bind(task)
    .fetch_optional(store.reader())
    .await?;
    row.map(TryInto::try_into).transpose()
}
