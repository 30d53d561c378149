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
