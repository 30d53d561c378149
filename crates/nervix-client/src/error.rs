//! Errors: the API's problem documents and everything else that can go wrong in a call.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::crypto::CryptoError;

/// An RFC 9457 problem document, the body of every API error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`about:blank` when the server gave none).
    #[serde(rename = "type", default = "about_blank")]
    pub type_: String,
    /// Short summary, e.g. `Unprocessable Entity`.
    #[serde(default)]
    pub title: String,
    /// The HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
    /// What went wrong, for a person.
    #[serde(default)]
    pub detail: Option<String>,
    /// Stable snake_case machine code, e.g. `already_claimed`.
    #[serde(default)]
    pub code: Option<String>,
    /// The invalid fields of a `422 validation_failed`.
    #[serde(default)]
    pub errors: Vec<FieldError>,
    /// From the response's `Retry-After` header (on 429 and 503), not from the body.
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

/// One invalid field of a `422 validation_failed`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FieldError {
    /// The field, e.g. `deadline` or `tasks[2].reward`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.title.is_empty() {
            "error"
        } else {
            &self.title
        })?;
        if let Some(code) = &self.code {
            write!(f, " [{code}]")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        for e in &self.errors {
            write!(f, "; {}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status. The problem is boxed to keep `Result`s that
    /// carry this error small on the happy path.
    #[error("HTTP {status}: {problem}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The problem document (or one made up from a body that was not one).
        problem: Box<Problem>,
    },
    /// The request did not complete (connection, timeout, TLS, ...).
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// A success response did not have the documented shape.
    #[error("unexpected response body (HTTP {status}): {source}")]
    Decode {
        /// The HTTP status of the response.
        status: u16,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },
    /// Encrypting or decrypting a message failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// An argument could not be put on the wire (e.g. a header value with a newline).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The event stream (WebSocket) failed or was refused.
    #[error("event stream: {0}")]
    Stream(String),
    /// The server URL (or a path joined to it) is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A token renewal was asked for, but the client holds no signing key
    /// (see [`Client::set_signing_key`](crate::Client::set_signing_key)).
    #[error("no signing key to renew the token with")]
    NoSigningKey,
    /// A CA certificate given to trust could not be read or used.
    #[error("certificate: {0}")]
    Certificate(String),
}

impl ClientError {
    /// The problem's machine code, for API errors that carry one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { problem, .. } => problem.code.as_deref(),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked us to wait before retrying (429 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.problem().and_then(|p| p.retry_after)
    }

    /// The problem document of an API error.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Api { problem, .. } => Some(problem.as_ref()),
            _ => None,
        }
    }
}
