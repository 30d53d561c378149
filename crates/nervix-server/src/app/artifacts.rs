//! Artifacts: files the agent working a task uploads for its submission. An upload streams
//! into object storage as it arrives (never held whole in memory), is typed from its bytes and
//! refused early when the task does not take that type, and is hashed and checked on the way.
//! A submission references uploads by id; uploads nothing references within a day are
//! deleted by the orphan worker.

use std::ops::Range;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt as _};
use nervix_core::artifact::{ByteRange, FileName, Ingest};
use nervix_core::{Role, TaskStatus};
use nervix_store::{ArtifactRecord, NewArtifact};
use uuid::Uuid;

use super::error::ErrorKind;
use super::{App, Caller, Error, Result};
use crate::artifact_store::{ArtifactStore, ArtifactStoreError};

/// Parts an upload may have in flight to object storage at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Orphans deleted per sweep.
const SWEEP_BATCH: i64 = 100;

fn too_large(max: u64) -> Error {
    Error::new(
        ErrorKind::TooLarge,
        "too_large",
        format!("an artifact may be at most {max} bytes (NERVIX_MAX_ARTIFACT_BYTES)"),
    )
}

/// Stores the file `body` for task `task_id`, uploaded by the agent holding the task.
/// `length` is the declared size, if any, refused at once when too large.
pub async fn upload<S, E>(
    app: &App,
    caller: &Caller,
    task_id: Uuid,
    filename: Option<FileName>,
    length: Option<u64>,
    mut body: S,
) -> Result<ArtifactRecord>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
    E: std::fmt::Display,
{
    let max = app.config.max_artifact_bytes;
    if length.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let task = app
        .store
        .task(task_id)
        .await?
        .ok_or_else(|| Error::not_found("task"))?;
    if task.assigned_agent_id != Some(caller.id) || task.status != TaskStatus::Claimed {
        return Err(if task.assigned_agent_id == Some(caller.id) {
            Error::conflict("invalid_state", format!("task is {}", task.status))
        } else {
            Error::forbidden(
                "not_assignee",
                "only the agent holding the task may upload artifacts for it",
            )
        });
    }
    let id = Uuid::now_v7();
    let key = ArtifactStore::key(task_id, id);
    let mut ingest = Ingest::new(
        task.kind,
        filename.as_ref().map(FileName::as_str),
        app.config.max_submission_bytes,
    );
    let mut writer = app.artifacts.writer(&key).await.map_err(Error::internal)?;
    let failure = loop {
        let chunk = match body.next().await {
            None => break None,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                break Some(Error::invalid(
                    "upload_interrupted",
                    format!("the upload did not complete: {e}"),
                ))
            }
        };
        if ingest.size() + chunk.len() as u64 > max {
            break Some(too_large(max));
        }
        if let Err(refused) = ingest.feed(&chunk) {
            break Some(Error::new(
                ErrorKind::UnsupportedType,
                "unsupported_media_type",
                refused.0,
            ));
        }
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            break Some(Error::internal(e));
        }
        writer.write(&chunk);
    };
    if let Some(e) = failure {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(error = %abort, %key, "cannot abort an artifact upload");
        }
        return Err(e);
    }
    let ingested = match ingest.finish() {
        Ok(i) => i,
        Err(refused) => {
            let _ = writer.abort().await;
            return Err(Error::new(
                ErrorKind::UnsupportedType,
                "unsupported_media_type",
                refused.0,
            ));
        }
    };
    writer.finish().await.map_err(Error::internal)?;
    let new = NewArtifact {
        id,
        task_id,
        uploaded_by: caller.id,
        filename: filename.map(FileName::into_inner),
        content_type: ingested.sniffed.content_type,
        size_bytes: i64::try_from(ingested.size).map_err(Error::internal)?,
        sha256: ingested.sha256,
        object_key: key.clone(),
        checks: serde_json::to_value(&ingested.checks).map_err(Error::internal)?,
        at: Utc::now(),
    };
    match app.store.insert_artifact(&new).await {
        Ok(record) => Ok(record),
        Err(e) => {
            // Without its row the object would never be found, nor swept.
            if let Err(d) = app.artifacts.delete(&key).await {
                tracing::warn!(error = %d, %key, "cannot delete an unrecorded artifact");
            }
            Err(e.into())
        }
    }
}

/// A file on its way out.
pub struct Download {
    pub artifact: ArtifactRecord,
    /// The bytes being sent, when a range of them was asked for and is served.
    pub range: Option<Range<u64>>,
    /// `None` when the caller's copy is current (`If-None-Match`).
    pub body: Option<BoxStream<'static, std::result::Result<Bytes, ArtifactStoreError>>>,
}

/// What a download asks for besides the file.
#[derive(Debug, Default)]
pub struct Conditions {
    pub range: Option<ByteRange>,
    /// The `ETag`s the caller already has (`If-None-Match`); `*` matches any.
    pub have: Vec<String>,
}

/// The artifact's entity tag: its digest, which names its bytes.
pub fn etag(a: &ArtifactRecord) -> String {
    format!("\"{}\"", a.sha256)
}

/// The file `id` for the uploader, the task's poster, reviewers and admins (others are told
/// it does not exist, as for submissions).
pub async fn download(app: &App, caller: &Caller, id: Uuid, want: Conditions) -> Result<Download> {
    let artifact = app
        .store
        .artifact(id)
        .await?
        .ok_or_else(|| Error::not_found("artifact"))?;
    let allowed = artifact.uploaded_by == caller.id
        || matches!(caller.role, Role::Admin | Role::Reviewer)
        || {
            let t = app.store.task(artifact.task_id).await?;
            t.is_some_and(|t| t.posted_by == caller.id)
        };
    if !allowed {
        return Err(Error::not_found("artifact"));
    }
    let tag = etag(&artifact);
    if want
        .have
        .iter()
        .any(|h| h == "*" || h.trim_start_matches("W/") == tag)
    {
        return Ok(Download {
            artifact,
            range: None,
            body: None,
        });
    }
    let size = u64::try_from(artifact.size_bytes).map_err(Error::internal)?;
    let range = match want.range {
        None => None,
        Some(r) => Some(r.resolve(size).ok_or_else(|| {
            Error::new(
                ErrorKind::RangeNotSatisfiable,
                "range_not_satisfiable",
                format!("the artifact has {size} bytes"),
            )
        })?),
    };
    let body = app
        .artifacts
        .read(&artifact.object_key, range.clone())
        .await
        .map_err(Error::internal)?;
    Ok(Download {
        artifact,
        range,
        body: Some(body),
    })
}

/// The artifacts the caller may reference in a submission of `task_id`: its own uploads for
/// that task, none referenced yet. Refuses the first that is not, naming it.
pub async fn for_submission(
    app: &App,
    caller: &Caller,
    task_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<ArtifactRecord>> {
    let mut out = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let field = format!("submission_data.artifacts[{i}]");
        let a = app.store.artifact(*id).await?;
        match a {
            Some(a) if a.task_id == task_id && a.uploaded_by == caller.id => {
                if a.submission_id.is_some() {
                    return Err(Error::field(
                        field,
                        "already referenced by another submission",
                    ));
                }
                out.push(a);
            }
            _ => {
                return Err(Error::field(
                    field,
                    "no such artifact of yours for this task",
                ))
            }
        }
    }
    Ok(out)
}

/// Deletes uploads that no submission referenced within `config.artifact_orphan_after`: the
/// row first (only if still unreferenced, so a submission that just took the file keeps it),
/// then the object. Returns how many went.
pub async fn sweep_orphans(app: &App) -> Result<usize> {
    let cutoff = Utc::now() - app.config.artifact_orphan_after;
    let orphans = app.store.orphan_artifacts(cutoff, SWEEP_BATCH).await?;
    let mut deleted = 0;
    for a in orphans {
        if !app.store.delete_orphan_artifact(a.id, cutoff).await? {
            continue;
        }
        if let Err(e) = app.artifacts.delete(&a.object_key).await {
            tracing::warn!(error = %e, key = %a.object_key, "cannot delete an orphaned artifact's object");
        }
        tracing::info!(artifact = %a.id, task = %a.task_id, "orphaned artifact deleted");
        deleted += 1;
    }
    Ok(deleted)
}
