//! WAL checkpoints, mostly off the write path.
//!
//! SQLite checkpoints inside the connection that commits once the WAL passes 1,000 pages: the
//! writer copies the log into the database file and fsyncs both before its commit returns, and
//! every write queued behind it waits (measured: 20 ms stalls every few dozen task cycles,
//! about half the throughput). This loop runs PASSIVE checkpoints every 250 ms on a connection
//! of its own, which take no lock that writers or readers wait for, so the bulk of the copying
//! and syncing happens here and the writer's own checkpoint finds little left to do.
//!
//! The writer keeps its automatic checkpoint because only it can finish one: under a steady
//! stream of commits a background checkpoint never catches up with the log's end, the log can
//! then never restart from the beginning, and it grows until something forces a blocking
//! checkpoint (measured: second-long stalls when that was left to this loop). As a last resort
//! a log beyond [`TRUNCATE_AFTER_FRAMES`] is truncated here, which briefly waits for readers.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::ConnectOptions as _;
use tokio::sync::watch;

const EVERY: Duration = Duration::from_millis(250);
/// 64 MiB of 4 KiB pages.
const TRUNCATE_AFTER_FRAMES: i64 = 65_536;

pub(crate) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpointer {
    pub(crate) fn start(options: SqliteConnectOptions) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(options, stopped));
        Checkpointer {
            stop,
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    /// Stops the loop after a last checkpoint.
    pub(crate) async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn run(options: SqliteConnectOptions, mut stopped: watch::Receiver<bool>) {
    let mut conn: Option<SqliteConnection> = None;
    loop {
        let stop = tokio::select! {
            _ = tokio::time::sleep(EVERY) => false,
            _ = stopped.changed() => true,
        };
        if conn.is_none() {
            conn = match options.connect().await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the SQLite checkpoint connection");
                    None
                }
            };
        }
        if let Some(c) = conn.as_mut() {
            let mode = if stop { "TRUNCATE" } else { "PASSIVE" };
            match checkpoint(c, mode).await {
                Ok(log_frames) if log_frames > TRUNCATE_AFTER_FRAMES => {
                    if let Err(e) = checkpoint(c, "TRUNCATE").await {
                        tracing::warn!(error = %e, "WAL truncate checkpoint failed");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "WAL checkpoint failed; reconnecting");
                    conn = None;
                }
            }
        }
        if stop {
            break;
        }
    }
}

/// Runs one checkpoint; returns the frames in the log afterwards.
async fn checkpoint(conn: &mut SqliteConnection, mode: &str) -> Result<i64, sqlx::Error> {
    let (_busy, log_frames, _done): (i64, i64, i64) =
        sqlx::query_as(&format!("PRAGMA wal_checkpoint({mode})"))
            .fetch_one(conn)
            .await?;
    Ok(log_frames)
}
