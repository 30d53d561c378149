//! The storage conformance suite: every case runs against SQLite and PostgreSQL.
//!
//! Each case is an `async fn case(store: Arc<dyn Store>)`; every module lists its cases in a
//! `nervix_store::backend_matrix!` with `crate::support::run` as the runner, which generates
//! `<module>::sqlite::case` and `<module>::postgres::case` tests, each on a fresh store.
//! PostgreSQL cases need `NERVIX_TEST_POSTGRES_URL` and return early (printing SKIP) without it.
//!
//! Cases are plain async functions called from the generated `#[tokio::test]`s, which clippy's
//! `allow-unwrap-in-tests` does not cover: a failed step panicking is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod artifacts;
mod cancellation;
mod claims;
mod economy;
mod enrollment;
mod events;
mod expiry;
mod idempotency;
mod invariants;
mod ledger_prop;
mod messages;
mod receipts;
mod reviews;
mod signing_keys;
mod submissions;
mod support;
mod tasks;
