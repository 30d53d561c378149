//! Artifacts: the assignee streams a file up for its submission; the uploader, the task's
//! poster, reviewers and admins stream it down (with `ETag` and single byte ranges).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use nervix_core::artifact::{ByteRange, FileName};
use nervix_store::ArtifactRecord;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::artifacts::{self, Conditions};
use crate::app::Caller;
use crate::error::{ApiResult, Problem};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(download))
}

/// An uploaded file.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactView {
    pub id: Uuid,
    pub task_id: Uuid,
    pub uploaded_by: Uuid,
    /// The submission that references the file; `null` until one does (an upload no
    /// submission references within a day is deleted).
    pub submission_id: Option<Uuid>,
    pub filename: Option<String>,
    /// Decided from the file's bytes (and, for text, its name), never from the request.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the content; the download's `ETag`.
    pub sha256: String,
    /// The automated checks run on the file (`json_schema`, `syntax`, `lint`, `markdown`
    /// where they apply; `secret_scan` always), counted with the submission's own.
    #[schema(value_type = Vec<Object>)]
    pub checks: Value,
    pub created_at: DateTime<Utc>,
}

impl From<ArtifactRecord> for ArtifactView {
    fn from(a: ArtifactRecord) -> Self {
        ArtifactView {
            id: a.id,
            task_id: a.task_id,
            uploaded_by: a.uploaded_by,
            submission_id: a.submission_id,
            filename: a.filename,
            content_type: a.content_type,
            size_bytes: a.size_bytes,
            sha256: a.sha256,
            checks: a.checks,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The file's name; its extension tells kinds of text apart (`.json`, `.md`, `.py`, ...).
    /// Its last path component is kept: printable, and not empty, `.` or `..`
    /// (`nervix_core::artifact::FileName`).
    #[param(
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x1f\x7f-\x9f/\\\s.][^\x00-\x1f\x7f-\x9f/\\]*$"
    )]
    pub filename: Option<String>,
}

/// Upload a file for a claimed task (the assignee only), streamed as the raw request body;
/// reference the returned `id` in the submission's `submission_data.artifacts`.
#[utoipa::path(post, path = "/v1/tasks/{id}/artifacts", tag = "artifacts", security(("bearer" = ["tasks:work"])),
    params(("id" = Uuid, Path), UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes. Its type is sniffed from them: every task takes text, JSON, images and PDF; code tasks also archives; programs and unknown binaries are refused."),
    responses((status = 201, body = ArtifactView, description = "Stored, hashed and checked."),
        (status = 403, body = Problem, description = "`not_assignee`: the caller does not hold the task."),
        (status = 404, body = Problem, description = "No such task."),
        (status = 409, body = Problem, description = "The task is not claimed."),
        (status = 413, body = Problem, description = "`too_large`: over `NERVIX_MAX_ARTIFACT_BYTES`."),
        (status = 415, body = Problem, description = "`unsupported_media_type`: a type the task does not accept."),
        (status = 422, body = Problem, description = "`validation_failed` (`filename`), or `upload_interrupted`.")))]
async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<ArtifactView>)> {
    let filename = params
        .filename
        .as_deref()
        .map(FileName::parse)
        .transpose()?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let stored = artifacts::upload(
        &state.app,
        &caller,
        id,
        filename,
        length,
        body.into_data_stream(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Download a file: its uploader, the task's poster, reviewers and admins (anyone else gets
/// 404). `ETag` is the SHA-256; `If-None-Match` answers 304; one `Range: bytes=` range
/// answers 206.
#[utoipa::path(get, path = "/v1/artifacts/{id}", tag = "artifacts", security(("bearer" = ["tasks:read"])),
    params(("id" = Uuid, Path),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`."),
        ("If-None-Match" = Option<String>, Header, description = "ETags the caller has.")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>, description = "The file."),
        (status = 206, content_type = "application/octet-stream", body = Vec<u8>, description = "The range asked for (`Content-Range`)."),
        (status = 304, description = "The caller's copy is current."),
        (status = 404, body = Problem, description = "No such artifact, or not the caller's to read."),
        (status = 416, body = Problem, description = "`range_not_satisfiable`: the range is outside the file.")))]
async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let want = Conditions {
        range: headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ByteRange::parse),
        have: headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_owned())
            .collect(),
    };
    let d = artifacts::download(&state.app, &caller, id, want).await?;
    let a = &d.artifact;
    let mut out = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.insert(name, v);
        }
    };
    set(header::ETAG, artifacts::etag(a));
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    set(header::CACHE_CONTROL, "private, no-cache".to_owned());
    let Some(body) = d.body else {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    };
    set(header::CONTENT_TYPE, a.content_type.clone());
    set(header::CONTENT_DISPOSITION, disposition(a));
    // Browsers must not second-guess the type the server sniffed.
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned());
    let status = match &d.range {
        Some(r) => {
            set(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{}", r.start, r.end - 1, a.size_bytes),
            );
            set(header::CONTENT_LENGTH, (r.end - r.start).to_string());
            StatusCode::PARTIAL_CONTENT
        }
        None => {
            set(header::CONTENT_LENGTH, a.size_bytes.to_string());
            StatusCode::OK
        }
    };
    Ok((status, out, Body::from_stream(body)).into_response())
}

/// `attachment`, with the uploaded name reduced to characters that need no quoting rules.
fn disposition(a: &ArtifactRecord) -> String {
    let name: String = a
        .filename
        .as_deref()
        .unwrap_or("artifact")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("attachment; filename=\"{name}\"")
}
