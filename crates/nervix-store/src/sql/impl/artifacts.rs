//! Artifacts' metadata. The files themselves are in object storage; a row says whose a file
//! is, what it is, and which submission (if any) took it. A row leaves only as an orphan, by a
//! delete that re-checks it is still one, so the orphan worker and a submission referencing
//! the file cannot both win.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;
use uuid::Uuid;

use super::{Backend, Conn, Db};
use crate::model::*;
use crate::sql::rows::*;
use crate::{Result, StoreError};

#[tracing::instrument(skip_all, name = "store.insert_artifact", level = "debug", fields(artifact = %a.id))]
pub(super) async fn insert_artifact(store: &Backend, a: &NewArtifact) -> Result<ArtifactRecord> {
    store
        .write_one(a.clone(), |conn, a| {
            Box::pin(async move {
                let row: ArtifactRow = sqlx::query_as(&format!(
                    "INSERT INTO artifacts (id, task_id, uploaded_by, filename, content_type, \
                     size_bytes, sha256, object_key, checks, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {ARTIFACT_COLUMNS}"
                ))
                .bind(a.id)
                .bind(a.task_id)
                .bind(a.uploaded_by)
                .bind(&a.filename)
                .bind(&a.content_type)
                .bind(a.size_bytes)
                .bind(&a.sha256)
                .bind(&a.object_key)
                .bind(Json(&a.checks))
                .bind(a.at)
                .fetch_one(&mut *conn)
                .await?;
                Ok(row.into())
            })
        })
        .await
}

pub(super) async fn artifact(store: &Backend, id: Uuid) -> Result<Option<ArtifactRecord>> {
    let row: Option<ArtifactRow> = sqlx::query_as(&format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    Ok(row.map(Into::into))
}

pub(super) async fn submission_artifacts(
    store: &Backend,
    submission: Uuid,
) -> Result<Vec<ArtifactRecord>> {
    let rows: Vec<ArtifactRow> = sqlx::query_as(&format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE submission_id = $1 ORDER BY created_at, id"
    ))
    .bind(submission)
    .fetch_all(store.reader())
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub(super) async fn orphan_artifacts(
    store: &Backend,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ArtifactRecord>> {
    let rows: Vec<ArtifactRow> = sqlx::query_as(&format!(
        "SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE submission_id IS NULL AND created_at < $1 \
         ORDER BY created_at, id LIMIT $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(store.reader())
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

#[tracing::instrument(skip_all, name = "store.delete_orphan_artifact", level = "debug", fields(artifact = %id))]
pub(super) async fn delete_orphan_artifact(
    store: &Backend,
    id: Uuid,
    before: DateTime<Utc>,
) -> Result<bool> {
    store
        .write_one((id, before), |conn, (id, before)| {
            Box::pin(async move {
                let done = sqlx::query(
                    "DELETE FROM artifacts WHERE id = $1 AND submission_id IS NULL \
                     AND created_at < $2",
                )
                .bind(*id)
                .bind(*before)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            })
        })
        .await
}

/// Part of a submit: marks `s.artifacts` as referenced by submission `s.id`. Every one must
/// be the submitter's upload for the task and not referenced yet; otherwise the submit fails
/// (and its transaction writes nothing).
pub(super) async fn link(conn: &mut Conn, s: &NewSubmission) -> Result<()> {
    if s.artifacts.is_empty() {
        return Ok(());
    }
    let mut qb: QueryBuilder<Db> = QueryBuilder::new("UPDATE artifacts SET submission_id = ");
    qb.push_bind(s.id)
        .push(" WHERE task_id = ")
        .push_bind(s.task_id)
        .push(" AND uploaded_by = ")
        .push_bind(s.agent_id)
        .push(" AND submission_id IS NULL AND id IN (");
    let mut ids = qb.separated(", ");
    for id in &s.artifacts {
        ids.push_bind(*id);
    }
    qb.push(")");
    let linked = qb.build().execute(&mut *conn).await?.rows_affected();
    if linked != s.artifacts.len() as u64 {
        return Err(StoreError::Invalid {
            field: "submission_data.artifacts".to_owned(),
            message: "each artifact must be one you uploaded for this task and no submission \
                      references yet"
                .to_owned(),
        });
    }
    Ok(())
}
