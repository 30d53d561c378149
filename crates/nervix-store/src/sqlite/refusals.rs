//! When a write that did not commit may still leave its commit group clean.
//!
//! A commit group (`writer`) is one transaction shared by several writes. When one of them
//! fails half-way, the group cannot take back only that write's statements (there are no
//! savepoints), so the writer undoes the whole group and runs each write again alone. That is
//! right for real errors, and wasted for a business refusal (claim at capacity, submit by a
//! non-assignee, insufficient funds, unknown task, key already used…), which is an expected
//! outcome that **wrote nothing**: keeping "nothing" in the group is always safe.
//!
//! A refusal wrote nothing when every statement it ran read, matched no row, or was refused
//! by a constraint. SQLite undoes a statement refused by a constraint (unique, foreign key,
//! check, NOT NULL, or a trigger's `RAISE(ABORT, …)`) by itself, and only that statement: the
//! transaction stays open with everything before it. (The `FAIL` and `ROLLBACK` conflict
//! resolutions behave differently — `FAIL` keeps the rows the statement changed before the
//! failure, `ROLLBACK` ends the whole transaction — so neither may appear in the migrations
//! or the store's SQL; a test below keeps it that way.) Other failures (`SQLITE_FULL`,
//! `SQLITE_IOERR`, `SQLITE_BUSY`, `SQLITE_NOMEM`, `SQLITE_INTERRUPT`) may roll back the whole
//! transaction and are never refusals.
//!
//! Multi-statement writes say so themselves (`Tx::refuse`); a single-statement write
//! (`write_one`) is classified by its error ([`statement_refused`]). Debug builds check each
//! refusal in a group against SQLite's count of changed rows (`total_changes()`) and panic
//! when it changed any: the write's caller then gets an error, the group is undone, and the
//! test that ran it fails.

use sqlx::sqlite::SqliteConnection;

use crate::StoreError;

/// SQLite's primary result code for a constraint violation; the extended codes (unique,
/// trigger, …) carry it in their low byte.
const SQLITE_CONSTRAINT: i32 = 19;

/// Whether a single-statement write that failed with `e` changed nothing and left its
/// transaction as it was: a business refusal its body reported after the statement matched
/// nothing (`NotFound`, `Conflict`, `Invalid`, `InsufficientFunds`, some of which are mapped
/// constraint errors), or the statement itself refused by a constraint.
pub(super) fn statement_refused(e: &StoreError) -> bool {
    match e {
        StoreError::NotFound
        | StoreError::Conflict(_)
        | StoreError::Invalid { .. }
        | StoreError::InsufficientFunds => true,
        StoreError::Database(sqlx::Error::Database(db)) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(|code| code & 0xff == SQLITE_CONSTRAINT),
        _ => false,
    }
}

/// What [`check_unchanged`] compares against: in debug builds, the connection's count of
/// changed rows before the write ran (`None` if it could not be read).
#[cfg(debug_assertions)]
pub(super) type Baseline = Option<i64>;
#[cfg(not(debug_assertions))]
pub(super) type Baseline = ();

#[cfg(debug_assertions)]
pub(super) async fn baseline(conn: &mut SqliteConnection) -> Baseline {
    total_changes(conn).await
}

#[cfg(not(debug_assertions))]
pub(super) async fn baseline(_conn: &mut SqliteConnection) -> Baseline {}

/// Debug builds: panics when a write that refused changed rows since `before`.
#[cfg(debug_assertions)]
pub(super) async fn check_unchanged(conn: &mut SqliteConnection, before: Baseline) {
    if let (Some(before), Some(after)) = (before, total_changes(conn).await) {
        assert_eq!(
            before, after,
            "a write refused after changing rows; a refusal must write nothing (sql::Tx)"
        );
    }
}

#[cfg(not(debug_assertions))]
pub(super) async fn check_unchanged(_conn: &mut SqliteConnection, _before: Baseline) {}

#[cfg(debug_assertions)]
async fn total_changes(conn: &mut SqliteConnection) -> Option<i64> {
    sqlx::query_scalar("SELECT total_changes()")
        .fetch_one(conn)
        .await
        .ok()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sqlx::{ConnectOptions as _, Connection as _};

    use super::*;

    /// Every file under `dir` (recursively) whose name ends in one of `exts`, with its text.
    fn sources(dir: &Path, exts: &[&str], out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, exts, out);
            } else if exts.iter().any(|e| path.to_string_lossy().ends_with(e)) {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }

    /// Constraint failures undo only their statement because ABORT is the only conflict
    /// resolution the schema and the store's SQL use.
    #[test]
    fn only_abort_resolves_conflicts() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        sources(&root.join("migrations/sqlite"), &[".sql"], &mut files);
        sources(&root.join("src/sql"), &[".rs"], &mut files);
        assert!(files.len() > 10, "{files:?}");
        for (path, text) in files {
            // Words of the code, comments left out.
            let words: Vec<String> = text
                .lines()
                .map(|l| l.split("--").next().unwrap_or_default())
                .filter(|l| !l.trim_start().starts_with("//"))
                .flat_map(|l| l.split(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
                .filter(|w| !w.is_empty())
                .map(str::to_ascii_uppercase)
                .collect();
            for pair in words.windows(2) {
                let resolution = matches!(pair[0].as_str(), "OR" | "RAISE" | "CONFLICT");
                let bad = matches!(pair[1].as_str(), "FAIL" | "ROLLBACK");
                assert!(!(resolution && bad), "{path} uses {} {}", pair[0], pair[1]);
            }
        }
    }

    /// What the classification rests on: a constraint error (here a trigger's RAISE(ABORT)
    /// and a unique violation) undoes its statement only, and the transaction goes on with
    /// everything written before it.
    #[tokio::test]
    async fn a_constraint_error_undoes_only_its_statement() {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .in_memory(true)
            .connect()
            .await
            .unwrap();
        for sql in [
            "CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
            "CREATE TRIGGER t_small BEFORE INSERT ON t WHEN NEW.v > 9 \
             BEGIN SELECT RAISE(ABORT, 't_small'); END",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO t VALUES (1, 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        for refused in [
            "INSERT INTO t VALUES (2, 2), (3, 30)",
            "INSERT INTO t VALUES (4, 4), (1, 1)",
        ] {
            let e = StoreError::from(sqlx::query(refused).execute(&mut *tx).await.unwrap_err());
            assert!(statement_refused(&e), "{e}");
        }
        sqlx::query("INSERT INTO t VALUES (5, 5)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let keys: Vec<i64> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys, [1, 5]);
        let busy = StoreError::Database(sqlx::Error::PoolTimedOut);
        assert!(!statement_refused(&busy));
    }
}
