//! What marks notifications read, by REST (`POST /v1/notifications/mark-read`) and by
//! WebSocket frame (`notifications.mark_read`): `{"ids": [...]}` or `{"all": true}`.

use serde::Deserialize;

/// The body of a mark-read. Both fields are optional here so that a wrong body is refused
/// naming its field ([`crate::app::notifications::selection`]); the document states the two
/// shapes it accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkReadBody {
    /// Notification ids (1 to 200) of the caller's.
    pub ids: Option<Vec<String>>,
    /// `true`: every unread notification of the caller's.
    pub all: Option<bool>,
}

impl utoipa::PartialSchema for MarkReadBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::openapi::mark_read_body()
    }
}

impl utoipa::ToSchema for MarkReadBody {}
