//! The storage conformance suite: every case runs against SQLite and PostgreSQL.
//!
//! Each case is an `async fn case(store: Arc<dyn Store>)` in one of the modules below; the
//! `conformance!` macro generates `sqlite::case` and `postgres::case` tests for it. PostgreSQL
//! cases need `NERVIX_TEST_POSTGRES_URL` and return early (printing SKIP) without it.
//!
//! Cases are plain async functions called from the generated `#[tokio::test]`s, which clippy's
//! `allow-unwrap-in-tests` does not cover: a failed step panicking is what a test wants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agents;
mod claims;
mod enrollment;
mod idempotency;
mod invariants;
mod ledger_prop;
mod lifecycle;
mod support;
mod tasks;

/// One test of `$module::$case` against `$backend`, on the given tokio runtime flavor.
macro_rules! backend_test {
    ($backend:ident, $module:ident, $case:ident) => {
        #[tokio::test]
        async fn $case() {
            backend_test!(@body $backend, $module, $case);
        }
    };
    ($backend:ident, $module:ident, $case:ident, multi) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            backend_test!(@body $backend, $module, $case);
        }
    };
    (@body $backend:ident, $module:ident, $case:ident) => {
        let Some(ts) = crate::support::$backend().await else {
            return;
        };
        crate::$module::$case(std::sync::Arc::clone(&ts.store)).await;
        crate::support::teardown(ts).await;
    };
}

/// `module::case` runs on a current-thread runtime, `module::case [multi]` on four workers.
macro_rules! conformance {
    ($($module:ident :: $case:ident $([$flavor:ident])?),* $(,)?) => {
        mod sqlite {
            $(backend_test!(sqlite, $module, $case $(, $flavor)?);)*
        }
        mod postgres {
            $(backend_test!(postgres, $module, $case $(, $flavor)?);)*
        }
    };
}

conformance! {
    enrollment::enrollment_creates_agent,
    enrollment::challenge_single_use,
    enrollment::login_challenge_single_use,
    enrollment::duplicate_handle_and_public_key,
    enrollment::concurrent_enrollment_same_handle [multi],
    agents::tokens_revoke_rotate_suspend,
    agents::update_agent_config_patches_only_given_fields,
    agents::list_agents_pagination_and_filters,
    tasks::post_from_treasury_and_from_agent,
    tasks::post_is_all_or_nothing,
    tasks::concurrent_posts_all_or_nothing [multi],
    tasks::depends_on_must_be_completable,
    tasks::dependent_posted_during_upstream_completion [multi],
    tasks::workflow_diamond,
    tasks::notify_rounds,
    claims::claim_eligibility,
    claims::claim_capacity,
    claims::claim_status_outcomes,
    claims::claim_race [multi],
    claims::claim_capacity_race [multi],
    lifecycle::submit_accept_pays_per_settle,
    lifecycle::submit_accept_bonus_from_treasury,
    lifecycle::submit_treasury_funded,
    lifecycle::submit_not_assignee,
    lifecycle::submit_reject_retries_then_fails,
    lifecycle::release_task_only_assignee,
    lifecycle::cancel_task_refunds,
    lifecycle::cancel_workflow_cascades,
    lifecycle::expire_leases_retry_or_fail,
    lifecycle::expire_deadlines_refund_and_cascade,
    lifecycle::concurrent_cross_settlements [multi],
    ledger_prop::ledger_property [multi],
    idempotency::response_commits_with_the_work,
    idempotency::failed_work_leaves_no_key,
    idempotency::key_is_scoped_by_agent_method_and_path,
    idempotency::concurrent_duplicates_run_once [multi],
    idempotency::concurrent_duplicate_submits_pay_once [multi],
    idempotency::unrendered_outcome_saves_nothing,
    idempotency::old_responses_are_purged,
}
