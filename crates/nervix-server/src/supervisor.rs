//! Supervised background services: each is a loop with `run(shutdown)` that the supervisor
//! logs and restarts (with back-off) when it fails or panics, so no loop dies silently.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs `run` until `shutdown`, restarting it whenever it returns or panics before then.
pub fn supervise<F, Fut, E>(
    name: &'static str,
    shutdown: CancellationToken,
    mut run: F,
) -> JoinHandle<()>
where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
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

/// Runs `tick` every `every` until shutdown; an error ends the loop (and the supervisor
/// restarts it).
pub async fn every<F, Fut, E>(
    every: Duration,
    shutdown: CancellationToken,
    mut tick: F,
) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut interval = ticks(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => tick().await?,
        }
    }
}

/// Ticks every `every`, the first at once; a late pass delays the next tick rather than
/// running passes back to back to catch up.
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// Like `every`, and also `gap` after `wake` is notified. Notifications that arrive meanwhile
/// (during the gap or the run) make one more run, another gap later: however many arrive,
/// at most one run per gap, and none is lost.
pub async fn every_or_woken<F, Fut, E>(
    every: Duration,
    wake: &Notify,
    gap: Duration,
    shutdown: CancellationToken,
    mut tick: F,
) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut interval = ticks(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => {}
            _ = wake.notified() => {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(gap) => {}
                }
                interval.reset();
            }
        }
        tick().await?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Shutdown during a pass lets that pass finish (a reaper never stops between two of its
    /// writes) and starts no other.
    #[tokio::test]
    async fn shutdown_waits_for_the_pass_in_progress() {
        let (started, finished) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(every(Duration::from_secs(1), shutdown.clone(), {
            let (started, finished) = (started.clone(), finished.clone());
            move || {
                let (started, finished) = (started.clone(), finished.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, String>(())
                }
            }
        }));
        // The first tick is immediate: the pass is under way at 100 ms.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        shutdown.cancel();
        run.await.unwrap().unwrap();
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    /// A burst of notifications makes two runs a gap apart (the first, and one for those that
    /// arrived during its gap), then none; a later one makes another.
    #[tokio::test]
    async fn wake_ups_make_at_most_one_run_per_gap() {
        let runs = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let (runs, wake, shutdown) = (runs.clone(), wake.clone(), shutdown.clone());
            async move {
                every_or_woken(
                    Duration::from_secs(3600),
                    &wake,
                    Duration::from_millis(50),
                    shutdown,
                    || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, String>(()) }
                    },
                )
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the first tick is immediate"
        );
        for _ in 0..3 {
            wake.notify_one();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not before the gap");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3, "the burst is spent");
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        shutdown.cancel();
        run.await.unwrap().unwrap();
    }
}
