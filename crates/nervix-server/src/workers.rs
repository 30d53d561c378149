//! The background services: lease, deadline and review-deadline reapers, reputation
//! recomputation, matching rounds, housekeeping, event retention, orphaned artifacts,
//! signing-key reload, the matching index and the real-time hub's dispatcher.
//! Each runs under the supervisor and calls the application layer; every one is safe on
//! several nodes at once, because the writes they make are conditional.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{artifacts, events, notifications, quality, reputation, App};
use crate::auth::keys::KeyError;
use crate::hub::{Hub, HubError};
use crate::limits::Limits;
use crate::matching;
use crate::supervisor::{every, every_or_woken, supervise};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] nervix_store::StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    App(#[from] crate::app::Error),
    #[error(transparent)]
    Hub(#[from] HubError),
}

const BATCH: i64 = 200;
/// The reputation pass's shortest rest after an acceptance woke it: receipts are served
/// this late at most, and a busy node signs and stores them in batches.
const REPUTATION_GAP: Duration = Duration::from_millis(100);
/// Rows one retention delete removes: each batch is its own short write, so other writes
/// (on SQLite, the one writer's queue) interleave with a large backlog.
const PRUNE_BATCH: i64 = 1000;

/// Starts every background service. `app` runs on the workers' own store (pool), apart from
/// the API's; the hub's dispatcher feeds this node's agent connections.
pub fn spawn_all(
    app: &App,
    hub: Arc<Hub>,
    limits: Arc<Limits>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let interval = app.config.worker_interval;
    let mut handles = Vec::new();

    let a = app.clone();
    handles.push(supervise("lease_reaper", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            every(interval, sd, || async {
                let reaped = a
                    .store
                    .expire_leases(Utc::now(), &a.config.retry, BATCH)
                    .await?;
                for t in &reaped.changed {
                    tracing::info!(task = %t.id, status = %t.status, "lease expired");
                }
                settle_workloads(&a, &reaped.changed).await;
                events::tasks_changed(&a, &reaped.changed).await;
                notifications::leases_lost(&a, &reaped.lost, &reaped.changed).await;
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("deadline_reaper", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            every(interval, sd, || async {
                let expired = a.store.expire_deadlines(Utc::now(), BATCH).await?;
                for t in &expired {
                    tracing::info!(task = %t.id, status = %t.status, "deadline passed");
                }
                settle_workloads(&a, &expired).await;
                events::tasks_changed(&a, &expired).await;
                notifications::tasks_expired(&a, &expired).await;
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("review_deadlines", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            every(interval, sd, || async {
                quality::expire_reviews(&a, BATCH).await?;
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("reputation", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            // Woken by acceptances (their receipts are due), at most once per gap: the
            // receipts of a burst of them are signed in one pass and stored in one write.
            let wake = a.reputation_pass.clone();
            every_or_woken(interval, &wake, REPUTATION_GAP, sd, || async {
                // Drain the backlog: a burst of evidence is scored within one tick.
                while reputation::pass(&a, BATCH).await? {}
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("matching_rounds", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            every(interval, sd, || async {
                let now = Utc::now();
                let window = chrono::Duration::from_std(a.config.match_window)
                    .unwrap_or(chrono::Duration::seconds(30));
                for t in a.store.tasks_to_notify(now, now - window, BATCH).await? {
                    let since = t.retry_at.unwrap_or(t.updated_at).max(t.updated_at);
                    a.matcher
                        .notify(a.store.as_ref(), &a.outbox, &a.metrics, &t, since)
                        .await?;
                }
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("housekeeping", shutdown.clone(), move |sd| {
        let (a, limits) = (a.clone(), limits.clone());
        async move {
            // Once a minute with the default one-second tick.
            every(interval * 60, sd, || async {
                a.store
                    .purge_challenges(Utc::now() - chrono::Duration::hours(1))
                    .await?;
                // A client retries within minutes; a day keeps every realistic retry answered.
                a.store
                    .purge_idempotent_responses(Utc::now() - chrono::Duration::hours(24))
                    .await?;
                limits.shrink();
                a.message_quota.shrink();
                a.presence.forget_idle();
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("platform_stats", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            // Sleep first: the server started with a fresh count.
            loop {
                tokio::select! {
                    _ = sd.cancelled() => return Ok::<_, WorkerError>(()),
                    _ = tokio::time::sleep(a.config.stats_interval) => {
                        a.stats.refresh(a.store.as_ref()).await?;
                    }
                }
            }
        }
    }));

    let a = app.clone();
    handles.push(supervise(
        "signing_key_reload",
        shutdown.clone(),
        move |sd| {
            let a = a.clone();
            async move {
                // A rotation on another node (or by `nervix admin`) reaches this one within it.
                every(a.config.key_refresh, sd, || async {
                    a.keys.refresh(a.store.as_ref()).await?;
                    Ok::<_, WorkerError>(())
                })
                .await
            }
        },
    ));

    let a = app.clone();
    handles.push(supervise("artifact_orphans", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            // Once a minute with the default one-second tick: orphans are a day old anyway.
            every(interval * 60, sd, || async {
                artifacts::sweep_orphans(&a).await?;
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    let a = app.clone();
    handles.push(supervise("event_retention", shutdown.clone(), move |sd| {
        let a = a.clone();
        async move {
            // Once a minute with the default one-second tick.
            every(interval * 60, sd, || async {
                notifications::prune_expired(&a, PRUNE_BATCH).await?;
                Ok::<_, WorkerError>(())
            })
            .await
        }
    }));

    handles.push(supervise("realtime_hub", shutdown.clone(), move |sd| {
        let hub = hub.clone();
        async move { Ok::<_, WorkerError>(hub.run(sd).await?) }
    }));

    let a = app.clone();
    handles.push(supervise("matching_index", shutdown.clone(), move |sd| {
        matching::follow_agent_changes(a.matcher.clone(), a.store.clone(), a.bus.clone(), sd)
    }));

    handles
}

/// A reaped task no longer names the agent that held it, so no node's matching index can be
/// told which workload shrank: every node re-reads its index from the database instead.
async fn settle_workloads(app: &App, reaped: &[nervix_store::TaskRecord]) {
    if !reaped.is_empty() {
        events::workloads_changed(app).await;
    }
}
