//! `Idempotency-Key`: a retried request gets the first one's response instead of doing the
//! work (and moving the money) twice.
//!
//! The response is stored by the store in the transaction of the work it answers (the key is
//! claimed first, so of concurrent duplicates exactly one does the work; the others write
//! nothing and replay its response). A key is scoped by agent, method and path.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use nervix_store::{IdempotencyScope, IdempotentResponse, SaveResponse};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{App, Caller, Error, Result};

/// A request that carries an idempotency key.
#[derive(Debug, Clone)]
pub struct Key {
    key: String,
    method: String,
    path: String,
    /// SHA-256 of the request body: the same key with another body is refused.
    request_hash: String,
}

impl Key {
    pub const MAX_LEN: usize = 255;

    /// `None` when the client sent no key.
    pub fn parse(
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Option<Key>> {
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
            method: method.to_owned(),
            path: path.to_owned(),
            request_hash: hex(&Sha256::digest(body)),
        }))
    }

    fn scope(&self, caller: &Caller) -> IdempotencyScope {
        IdempotencyScope {
            agent_id: caller.id,
            method: self.method.clone(),
            path: self.path.clone(),
            key: self.key.clone(),
        }
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

/// Turns an operation's result into the response stored for its key (and sent).
pub type Render<T> = Arc<dyn Fn(&T) -> Result<(u16, Value)> + Send + Sync>;

/// What the work needs to have its response stored with it.
pub struct Saver {
    scope: IdempotencyScope,
    request_hash: String,
}

impl Saver {
    /// Asks the store to keep what `render` makes of the store's outcome, in the transaction
    /// of the work; `None` (not a success) keeps nothing.
    pub fn save<S>(
        self,
        render: impl Fn(&S) -> Option<(u16, Value)> + Send + Sync + 'static,
    ) -> SaveResponse<S> {
        SaveResponse {
            scope: self.scope,
            request_hash: self.request_hash,
            created_at: Utc::now(),
            render: Arc::new(move |outcome: &S| {
                render(outcome).map(|(status, body)| (status, body.to_string()))
            }),
        }
    }
}

/// Runs `work` at most once per key: a key already answered replays that answer; a request
/// whose work lost to a concurrent duplicate (or failed because of it) replays the winner's.
pub async fn once<T, F, Fut>(
    app: &App,
    caller: &Caller,
    key: Option<&Key>,
    work: F,
) -> Result<Outcome<T>>
where
    F: FnOnce(Option<Saver>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let Some(key) = key else {
        return work(None).await.map(Outcome::Done);
    };
    let scope = key.scope(caller);
    if let Some(prev) = app.store.idempotent_response(&scope).await? {
        return replay(prev, &key.request_hash).map(Outcome::Replayed);
    }
    let saver = Saver {
        scope: scope.clone(),
        request_hash: key.request_hash.clone(),
    };
    match work(Some(saver)).await {
        Ok(v) => Ok(Outcome::Done(v)),
        Err(e) => match app.store.idempotent_response(&scope).await? {
            Some(prev) => replay(prev, &key.request_hash).map(Outcome::Replayed),
            None => Err(e),
        },
    }
}

/// A stored response exactly as it was sent; one that cannot be read back is an error, never
/// a made-up success.
fn replay(prev: IdempotentResponse, request_hash: &str) -> Result<Stored> {
    if prev.request_hash != request_hash {
        return Err(Error::invalid(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different body",
        ));
    }
    if !(200..300).contains(&prev.status) {
        return Err(Error::internal(format!(
            "stored idempotent response has status {}",
            prev.status
        )));
    }
    let body: Value = serde_json::from_str(&prev.body)
        .map_err(|e| Error::internal(format!("stored idempotent response is unreadable: {e}")))?;
    Ok(Stored {
        status: prev.status,
        body,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
