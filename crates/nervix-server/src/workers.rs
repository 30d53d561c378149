//! Background services. Each is a loop with `run(shutdown)` under a supervisor that logs and
//! restarts it (with back-off) when it fails or panics, so no loop dies silently. Every loop
//! is safe on several nodes at once: the writes they make are conditional.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::keys::KeyRing;
use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] nervix_store::StoreError),
    #[error(transparent)]
    Keys(#[from] crate::auth::keys::KeyError),
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
}

pub fn supervise<F, Fut>(
    name: &'static str,
    shutdown: CancellationToken,
    mut run: F,
) -> JoinHandle<()>
where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), WorkerError>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let outcome = AssertUnwindSafe(run(shutdown.clone())).catch_unwind().await;
            if shutdown.is_cancelled() {
                break;
            }
            match outcome {
                Ok(Ok(())) => tracing::warn!(worker = name, "worker stopped; restarting"),
                Ok(Err(e)) => {
                    tracing::error!(worker = name, error = %e, "worker failed; restarting")
                }
                Err(_) => tracing::error!(worker = name, "worker panicked; restarting"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tracing::debug!(worker = name, "worker stopped");
    })
}

/// Runs `tick` every `every` until shutdown; an error ends the loop (and the supervisor restarts it).
async fn every<F, Fut>(
    every: Duration,
    shutdown: CancellationToken,
    mut tick: F,
) -> Result<(), WorkerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), WorkerError>>,
{
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => tick().await?,
        }
    }
}

const BATCH: i64 = 200;

/// Starts every background service. `store` is the workers' own pool, apart from the API's.
pub fn spawn_all(
    state: &AppState,
    store: Arc<dyn nervix_store::Store>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let interval = state.config.worker_interval;
    let mut handles = Vec::new();

    let (s, st) = (store.clone(), state.clone());
    handles.push(supervise("lease_reaper", shutdown.clone(), move |sd| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            every(interval, sd, || async {
                for t in s.expire_leases(Utc::now(), &st.config.retry, BATCH).await? {
                    tracing::info!(task = %t.id, status = %t.status, "lease expired");
                    crate::api::tasks::after_change(&st, &t).await;
                }
                Ok(())
            })
            .await
        }
    }));

    let (s, st) = (store.clone(), state.clone());
    handles.push(supervise("deadline_reaper", shutdown.clone(), move |sd| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            every(interval, sd, || async {
                for t in s.expire_deadlines(Utc::now(), BATCH).await? {
                    tracing::info!(task = %t.id, status = %t.status, "deadline passed");
                    crate::api::tasks::after_change(&st, &t).await;
                }
                Ok(())
            })
            .await
        }
    }));

    let (s, st) = (store.clone(), state.clone());
    handles.push(supervise("matching_rounds", shutdown.clone(), move |sd| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            every(interval, sd, || async {
                let now = Utc::now();
                let window = chrono::Duration::from_std(st.config.match_window)
                    .unwrap_or(chrono::Duration::seconds(30));
                for t in s.tasks_to_notify(now, now - window, BATCH).await? {
                    let since = t.retry_at.unwrap_or(t.updated_at).max(t.updated_at);
                    st.matcher
                        .notify(s.as_ref(), st.bus.as_ref(), &st.metrics, &t, since)
                        .await?;
                }
                Ok(())
            })
            .await
        }
    }));

    let (s, st) = (store.clone(), state.clone());
    handles.push(supervise("housekeeping", shutdown.clone(), move |sd| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            // Once a minute with the default one-second tick.
            every(interval * 60, sd, || async {
                s.purge_challenges(Utc::now() - chrono::Duration::hours(1))
                    .await?;
                // Stored responses are kept a day for retries to replay.
                s.purge_idempotent_responses(Utc::now() - chrono::Duration::hours(24))
                    .await?;
                st.limits.shrink();
                st.presence.forget_idle();
                Ok(())
            })
            .await
        }
    }));

    let st = state.clone();
    handles.push(supervise("signing_key_reload", shutdown.clone(), move |sd| {
        let st = st.clone();
        async move {
            every(Duration::from_secs(10), sd, || async {
                let ring = KeyRing::load(&st.config.data_dir)?;
                if ring.kids() != st.keys().kids() {
                    tracing::info!(active = %ring.active().kid, "signing keys changed on disk; reloaded");
                    *st.keys.write() = Arc::new(ring);
                }
                Ok(())
            })
            .await
        }
    }));

    let st = state.clone();
    handles.push(supervise("matching_index", shutdown.clone(), move |sd| {
        crate::matching::follow_agent_changes(
            st.matcher.clone(),
            st.store.clone(),
            st.bus.clone(),
            sd,
        )
    }));

    handles
}
