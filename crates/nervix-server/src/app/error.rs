//! The application layer's error: what went wrong in terms of the operation, not of HTTP.
//! The HTTP edge maps each [`ErrorKind`] to a status (`http::error`).

use nervix_core::{FieldError, FieldErrors};
use nervix_store::{Conflict, StoreError};

/// The class of failure, which decides how a client should react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Input fields are wrong (`errors` names them), or the request is well-formed but
    /// cannot be carried out as asked (`invalid_dag`, `idempotency_key_reused`, …).
    Invalid,
    /// Credentials are missing, wrong, expired or revoked.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden,
    NotFound,
    /// The resource is not in a state that allows this (already claimed, challenge used, …).
    Conflict,
    /// The resource existed but is gone for good (an expired challenge).
    Gone,
    /// The caller's available balance does not cover the operation.
    InsufficientFunds,
    /// The caller holds as much work as it may (`max_concurrent_tasks`).
    AtCapacity,
    /// The caller is over a rate (messages per minute); `retry_after` says when to retry.
    RateLimited,
    /// An upload is larger than the server takes.
    TooLarge,
    /// A file of a type the task does not accept.
    UnsupportedType,
    /// A byte range outside the file.
    RangeNotSatisfiable,
    /// A bug or an unavailable dependency; the cause is logged, never shown.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct Error {
    pub kind: ErrorKind,
    /// Stable snake_case machine code.
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Seconds after which a retry may succeed.
    pub retry_after: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, code: &'static str, detail: impl Into<String>) -> Self {
        Error {
            kind,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldErrors::from(FieldError::new(field, message)).into()
    }
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, code, detail)
    }
    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, "unauthorized", detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, code, detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, code, detail)
    }

    /// The cause goes to the log only: clients never see internals.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            ErrorKind::Internal,
            "internal_error",
            "an internal error occurred",
        )
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<FieldErrors> for Error {
    fn from(e: FieldErrors) -> Self {
        let detail =
            e.0.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
        Error {
            kind: ErrorKind::Invalid,
            code: "validation_failed",
            detail,
            errors: e.0,
            retry_after: None,
        }
    }
}

impl From<FieldError> for Error {
    fn from(e: FieldError) -> Self {
        FieldErrors::from(e).into()
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::not_found("resource"),
            StoreError::Conflict(c) => {
                let code = match c {
                    Conflict::DuplicateHandle => "agent_id_taken",
                    Conflict::DuplicatePublicKey => "public_key_taken",
                    Conflict::ChallengeUsed => "challenge_used",
                    Conflict::InvalidState => "invalid_state",
                    Conflict::IdempotencyKeyUsed => "idempotency_key_used",
                };
                Error::conflict(code, c.to_string())
            }
            StoreError::Invalid { field, message } => Error::field(field, message),
            StoreError::InsufficientFunds => Error::new(
                ErrorKind::InsufficientFunds,
                "insufficient_funds",
                "the available balance does not cover the reward",
            ),
            other => Error::internal(other),
        }
    }
}
