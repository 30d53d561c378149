use std::fmt;

/// Storage failures. `Conflict` and `Invalid` are expected outcomes the API maps to 409/422;
/// everything else is an internal error whose details stay in the logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(Conflict),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("configuration: {0}")]
    Config(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The SQLite writer thread is gone (the store was closed, or a write panicked).
    #[error("the database writer has stopped")]
    WriterStopped,
    /// The write ran, but the transaction it was committed in (a SQLite commit group) failed
    /// to commit: nothing of it was kept.
    #[error("the write could not be committed: {0}")]
    CommitFailed(String),
}

/// Raised by the database when a posting would take an account below zero (migration 0003:
/// a CHECK constraint on PostgreSQL, a trigger on SQLite).
const OVERDRAFT: &str = "ledger_accounts_no_overdraft";
/// Raised by the database when a claim would exceed the agent's `max_concurrent_tasks`.
const AT_CAPACITY: &str = "agents_at_capacity";

/// Whether `e` is the database refusing with the constraint (or trigger) named `name`.
fn refused_by(e: &sqlx::Error, name: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.constraint() == Some(name) || db.message().contains(name),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    DuplicateHandle,
    DuplicatePublicKey,
    ChallengeUsed,
    InvalidState,
    /// The `Idempotency-Key` already answered a request (its response is stored): the
    /// operation wrote nothing.
    IdempotencyKeyUsed,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conflict::DuplicateHandle => "agent_id already enrolled",
            Conflict::DuplicatePublicKey => "public_key already enrolled",
            Conflict::ChallengeUsed => "challenge already used",
            Conflict::InvalidState => "not allowed in the current state",
            Conflict::IdempotencyKeyUsed => "idempotency key already used",
        })
    }
}

impl StoreError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// A conflict the database resolved by aborting this transaction (PostgreSQL deadlock or
    /// serialization failure; SQLite busy/locked): running it again is safe and will usually
    /// succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(
                    db.code().as_deref(),
                    Some("40P01" | "40001" | "5" | "6" | "517")
                )
            }
            _ => false,
        }
    }

    /// Maps the database's overdraft refusal to [`StoreError::InsufficientFunds`].
    pub(crate) fn from_ledger(e: sqlx::Error) -> Self {
        if refused_by(&e, OVERDRAFT) {
            StoreError::InsufficientFunds
        } else {
            StoreError::Database(e)
        }
    }

    /// The claim was refused because the agent holds its maximum of tasks.
    pub(crate) fn is_at_capacity(&self) -> bool {
        matches!(self, StoreError::Database(e) if refused_by(e, AT_CAPACITY))
    }

    /// Maps a unique violation on the agents table to the conflict it means.
    pub(crate) fn from_insert_agent(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
                if text.contains("public_key") {
                    return StoreError::Conflict(Conflict::DuplicatePublicKey);
                }
                if text.contains("handle") {
                    return StoreError::Conflict(Conflict::DuplicateHandle);
                }
            }
        }
        StoreError::Database(e)
    }
}
