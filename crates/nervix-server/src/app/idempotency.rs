//! `Idempotency-Key`: a retried request gets the first one's response instead of doing the
//! work (and moving the money) twice.

use std::future::Future;

use chrono::Utc;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{App, Caller, Error, Result};

/// A request that carries an idempotency key.
#[derive(Debug, Clone)]
pub struct Key {
    /// The client's key, 1–255 characters.
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub request_hash: String,
}

impl Key {
    pub const MAX_LEN: usize = 255;

    /// `None` when the client sent no key.
    pub fn parse(header: Option<&str>, body: &[u8]) -> Result<Option<Key>> {
        let Some(key) = header else {
            return Ok(None);
        };
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(Error::field(
                "Idempotency-Key",
                "must be 1 to 255 characters",
            ));
        }
        Ok(Some(Key {
            key: key.to_owned(),
            request_hash: hex(&Sha256::digest(body)),
        }))
    }
}

/// A response stored for a key, replayed as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub status: u16,
    pub body: Value,
}

/// What an idempotent operation produced: fresh work, or the response of the first request.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    Replayed(Stored),
}

/// Turns an operation's result into the response stored for its key.
pub type Render<'a, T> = &'a (dyn Fn(&T) -> Result<(u16, Value)> + Send + Sync);

/// Runs `work` once per key. The key is reserved before the work runs, so a retry that
/// arrives while the first request is in flight gets 409 instead of doing the work twice; the
/// same key with another body is refused; a failed request releases its key.
pub async fn once<T, F, Fut>(
    app: &App,
    caller: &Caller,
    key: Option<&Key>,
    render: Render<'_, T>,
    work: F,
) -> Result<Outcome<T>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let Some(key) = key else {
        return work().await.map(Outcome::Done);
    };
    let reservation = nervix_store::IdempotentResponse {
        request_hash: key.request_hash.clone(),
        status: IN_PROGRESS,
        body: String::new(),
        created_at: Utc::now(),
    };
    if !app
        .store
        .save_idempotent_response(caller.id, &key.key, &reservation)
        .await?
    {
        let prev = app.store.idempotent_response(caller.id, &key.key).await?;
        return match prev {
            Some(prev) if prev.request_hash != key.request_hash => Err(Error::invalid(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different body",
            )),
            Some(prev) if prev.status != IN_PROGRESS => replay(prev).map(Outcome::Replayed),
            _ => Err(Error::conflict(
                "idempotency_in_progress",
                "a request with this Idempotency-Key is still being processed",
            )
            .retry_after(1)),
        };
    }
    let result = async {
        let value = work().await?;
        let (status, body) = render(&value)?;
        Ok((value, status, body))
    }
    .await;
    match result {
        Ok((value, status, body)) => {
            app.store
                .finish_idempotent_response(caller.id, &key.key, status, &body.to_string())
                .await?;
            Ok(Outcome::Done(value))
        }
        Err(e) => {
            if let Err(release) = app.store.release_idempotency_key(caller.id, &key.key).await {
                tracing::warn!(error = %release, "could not release an idempotency key");
            }
            Err(e)
        }
    }
}

/// A stored response exactly as it was sent; one that cannot be read back is an error, never
/// a made-up success.
fn replay(prev: nervix_store::IdempotentResponse) -> Result<Stored> {
    let body: Value = serde_json::from_str(&prev.body)
        .map_err(|e| Error::internal(format!("stored idempotent response is unreadable: {e}")))?;
    if !(200..300).contains(&prev.status) {
        return Err(Error::internal(format!(
            "stored idempotent response has status {}",
            prev.status
        )));
    }
    Ok(Stored {
        status: prev.status,
        body,
    })
}

/// Status stored while the first request with a key is running.
const IN_PROGRESS: u16 = 0;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
