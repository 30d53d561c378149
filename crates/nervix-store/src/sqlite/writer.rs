//! The one SQLite write connection, driven from a thread of its own, with group commit.
//!
//! SQLite takes one writer at a time, so every write transaction queues for this connection,
//! and every statement of a transaction is a round trip to sqlx's connection thread. When the
//! task holding the write lock ran on the shared runtime, each of those round trips also waited
//! its turn behind request work (signature checks, JSON, other handlers) before the next
//! statement went out, and the lock was held for all of that waiting. Here a transaction runs
//! start to end on a single-threaded runtime that does nothing else: the lock is held for
//! database work only, and the shared runtime never waits for the lock, it only awaits a reply.
//!
//! **Group commit.** When writes queue up, the writer takes up to [`MAX_GROUP`] of them into
//! one transaction: each job runs inside a savepoint of its own (a failing job rolls back to
//! it and leaves the others alone), and a single COMMIT makes the whole group durable. Every
//! page the group touched goes to the WAL once instead of once per job, and the commit work is
//! paid once. Nobody hears back before the group has committed: a job's result is held until
//! then, and if the COMMIT fails every job of the group gets the error. A job that finds the
//! queue empty runs alone in its own transaction, as if there were no grouping.
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
/// Most jobs committed together.
const MAX_GROUP: usize = 64;

/// How a job runs: alone (it opens its own transaction) or inside the writer's group
/// transaction (it takes a savepoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Alone,
    Grouped,
}

/// Whether the connection survived a job.
enum Health {
    Fine,
    Broken,
}

/// Delivers a job's result once the fate of its transaction is known: `Ok` when it is
/// durable, `Err` (the commit failure) otherwise.
type Settle = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

type Job = Box<
    dyn for<'c> FnOnce(&'c mut SqliteConnection, Mode) -> BoxFuture<'c, (Health, Settle)> + Send,
>;

/// Pins down the higher-ranked closure type, which `Box::new` alone does not infer.
fn job<F>(f: F) -> Job
where
    F: for<'c> FnOnce(&'c mut SqliteConnection, Mode) -> BoxFuture<'c, (Health, Settle)>
        + Send
        + 'static,
{
    Box::new(f)
}

pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    close: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Writer {
    /// Moves `conn` to a new thread that runs queued write jobs. `options` reopens the
    /// connection if it breaks.
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

    /// Runs `f` on the write connection and returns its result once it is durable. In
    /// [`Mode::Grouped`] the connection is inside the group's transaction: `f` must take a
    /// savepoint (`Connection::begin`) for anything beyond a single statement.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection, Mode) -> BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = job(move |conn, mode| {
            Box::pin(async move {
                let outcome = f(conn, mode).await;
                let health = match &outcome {
                    Err(StoreError::Database(sqlx::Error::WorkerCrashed | sqlx::Error::Io(_))) => {
                        Health::Broken
                    }
                    _ => Health::Fine,
                };
                let settle: Settle = Box::new(move |committed| {
                    let _ = reply.send(match committed {
                        Ok(()) => outcome,
                        Err(why) => Err(StoreError::CommitFailed(why)),
                    });
                });
                (health, settle)
            })
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        // The reply is dropped unsent only if the job panicked (its work rolled back) or the
        // writer stopped before running it.
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
    let mut closing = false;
    loop {
        let first = if closing {
            queue.recv().await
        } else {
            tokio::select! {
                biased;
                job = queue.recv() => job,
                _ = &mut close => {
                    closing = true;
                    queue.close();
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let health = if batch.len() == 1 {
            let mut jobs = batch.into_iter();
            match jobs.next() {
                Some(job) => run_alone(&mut conn, job).await,
                None => Health::Fine,
            }
        } else {
            run_group(&mut conn, batch).await
        };
        if let Health::Broken = health {
            match options.connect().await {
                Ok(fresh) => {
                    tracing::warn!("the SQLite write connection broke and was reopened");
                    conn = fresh;
                }
                Err(e) => tracing::error!(error = %e, "cannot reopen the SQLite write connection"),
            }
        }
    }
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the SQLite write connection failed");
    }
}

/// Runs `job`, containing a panic: the panicking job's `Transaction` is dropped on the way
/// out, which queues its rollback on the connection before anything else runs there, and its
/// caller hears `WriterStopped`.
async fn contained(conn: &mut SqliteConnection, mode: Mode, job: Job) -> Option<(Health, Settle)> {
    match AssertUnwindSafe(job(conn, mode)).catch_unwind().await {
        Ok(done) => Some(done),
        Err(_) => {
            tracing::error!("a storage write panicked; its work was rolled back");
            None
        }
    }
}

async fn run_alone(conn: &mut SqliteConnection, job: Job) -> Health {
    match contained(conn, Mode::Alone, job).await {
        Some((health, settle)) => {
            // The job committed (or rolled back) its own transaction.
            settle(Ok(()));
            health
        }
        None => Health::Fine,
    }
}

async fn run_group(conn: &mut SqliteConnection, batch: Vec<Job>) -> Health {
    let mut group = match begin_group(conn).await {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping the jobs unrun tells their callers the writer could not take them.
            tracing::error!(error = %e, jobs = batch.len(), "cannot open a group transaction");
            return Health::Fine;
        }
    };
    let mut settles = Vec::with_capacity(batch.len());
    let mut health = Health::Fine;
    let mut jobs = batch.into_iter();
    for job in jobs.by_ref() {
        if let Some((h, settle)) = contained(&mut group, Mode::Grouped, job).await {
            settles.push(settle);
            if let Health::Broken = h {
                health = Health::Broken;
                break;
            }
        }
    }
    // Jobs left unrun after a broken connection are dropped: their callers hear
    // `WriterStopped`, and nothing of theirs was written.
    drop(jobs);
    let committed = match health {
        Health::Fine => group.commit().await.map_err(|e| e.to_string()),
        Health::Broken => Err("the write connection broke".to_owned()),
    };
    if let Err(why) = &committed {
        tracing::error!(error = %why, jobs = settles.len(), "a group commit failed");
    }
    for settle in settles {
        settle(committed.clone());
    }
    health
}

/// Another process holding the lock is waited for by SQLite itself (`busy_timeout`).
async fn begin_group(
    conn: &mut SqliteConnection,
) -> std::result::Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
    conn.begin_with("BEGIN IMMEDIATE").await
}
