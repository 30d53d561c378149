//! Supervised background services: each is a loop with `run(shutdown)` that the supervisor
//! logs and restarts (with back-off) when it fails or panics, so no loop dies silently.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
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
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = interval.tick() => tick().await?,
        }
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
}
