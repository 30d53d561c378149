//! The one SQLite write connection, driven from a thread of its own.
//!
//! SQLite takes one writer at a time, so every write transaction queues for this connection,
//! and every statement of a transaction is a round trip to sqlx's connection thread. When the
//! task holding the write lock ran on the shared runtime, each of those round trips also waited
//! its turn behind request work (signature checks, JSON, other handlers) before the next
//! statement went out, and the lock was held for all of that waiting. Here a transaction runs
//! start to end on a single-threaded runtime that does nothing else: the lock is held for
//! database work only, and the shared runtime never waits for the lock, it only awaits a reply.
//!
//! A job runs to completion even when the request that queued it has gone away (client timeout,
//! dropped connection): a transaction is never cut off half-way by a cancelled future.

use std::panic::AssertUnwindSafe;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{mpsc, oneshot};

use crate::{Result, StoreError};

/// Writes waiting for the connection; beyond this, callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

/// Whether the connection survived a job.
enum Health {
    Fine,
    Broken,
}

type Job = Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Health> + Send>;

/// Pins down the higher-ranked closure type, which `Box::new` alone does not infer.
fn job<F>(f: F) -> Job
where
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Health> + Send + 'static,
{
    Box::new(f)
}

pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    close: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Writer {
    /// Moves `conn` to a new thread that runs queued write jobs one at a time. `options`
    /// reopens the connection if it breaks.
    pub(crate) fn start(conn: SqliteConnection, options: SqliteConnectOptions) -> Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (close, close_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("nervix-sqlite-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(drive(conn, options, queue, close_rx)),
                    Err(e) => tracing::error!(error = %e, "cannot start the SQLite writer runtime"),
                }
                let _ = stopped_tx.send(());
            })
            .map_err(|e| {
                StoreError::Config(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        Ok(Writer {
            jobs,
            close: Mutex::new(Some(close)),
            stopped: Mutex::new(Some(stopped)),
        })
    }

    /// Runs `f` on the write connection and returns its result.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = job(move |conn| {
            Box::pin(async move {
                let outcome = f(conn).await;
                let health = match &outcome {
                    Err(StoreError::Database(sqlx::Error::WorkerCrashed | sqlx::Error::Io(_))) => {
                        Health::Broken
                    }
                    _ => Health::Fine,
                };
                let _ = reply.send(outcome);
                health
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        // The reply is dropped unsent only if the job panicked (its transaction rolled back).
        result.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Finishes the jobs already queued, closes the connection and stops the thread.
    pub(crate) async fn close(&self) {
        if let Some(close) = self.close.lock().take() {
            let _ = close.send(());
        }
        let stopped = self.stopped.lock().take();
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }
}

async fn drive(
    mut conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut queue: mpsc::Receiver<Job>,
    mut close: oneshot::Receiver<()>,
) {
    loop {
        let job = tokio::select! {
            biased;
            job = queue.recv() => job,
            _ = &mut close => {
                queue.close();
                while let Some(job) = queue.recv().await {
                    run_job(&mut conn, &options, job).await;
                }
                break;
            }
        };
        let Some(job) = job else { break };
        run_job(&mut conn, &options, job).await;
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite write connection failed");
    }
}

async fn run_job(conn: &mut SqliteConnection, options: &SqliteConnectOptions, job: Job) {
    // A panic drops the job's `Transaction`, which queues its rollback on the connection
    // before anything else runs there.
    let health = AssertUnwindSafe(job(conn))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("a storage write panicked; its transaction was rolled back");
            Health::Fine
        });
    if let Health::Broken = health {
        match options.connect().await {
            Ok(fresh) => {
                tracing::warn!("the SQLite write connection broke and was reopened");
                *conn = fresh;
            }
            Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite write connection"),
        }
    }
}
