//! The one SQLite write connection, driven from a thread of its own, with group commit.
//!
//! SQLite takes one writer at a time, so every write transaction queues for this connection,
//! and every statement of a transaction is a round trip to sqlx's connection thread. When the
//! task holding the write lock ran on the shared runtime, each of those round trips also waited
//! its turn behind request work (signature checks, JSON, other handlers) before the next
//! statement went out, and the lock was held for all of that waiting. Here a transaction runs
//! start to end on a single-threaded runtime that does nothing else: the lock is held for
//! database work only, and the shared runtime never waits for the lock, it only awaits a reply.
//! The thread and sqlx's thread for the connection can share one CPU ([`WriterCpu`]), which
//! makes each round trip a plain context switch instead of a wake-up of another CPU.
//!
//! **Group commit.** When writes queue up, the writer runs up to [`MAX_GROUP`] of them in one
//! transaction and a single COMMIT makes the whole group durable: every page the group touched
//! goes to the WAL once instead of once per job, and the commit work is paid once. Nobody hears
//! back before the group has committed: a job's result is held until then, and if the COMMIT
//! fails every job of the group gets the error.
//!
//! A group commits only when every job in it ran clean: it kept its part (returned `Ok` and,
//! for a multi-statement write, committed its part, [`crate::sql::Tx`]), or it was refused
//! having written nothing (a business outcome such as a claim at capacity or a submit by a
//! non-assignee: keeping "nothing" is always safe; see `sqlite::refusals` for which failures
//! leave the transaction as it was). At the first job that did neither, the writer rolls the
//! whole group back and runs each of its jobs again alone, in a transaction of its own, and
//! those results are the ones callers get. Jobs are therefore re-runnable closures. This costs nothing on the common path, unlike a savepoint per job
//! (two more round trips, and a sub-journal copy of every page a job touches first), and it
//! never lets a job see another job's half-done work survive. A job that finds the queue empty
//! runs alone from the start.
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
use tracing::Instrument;

use crate::{Result, StoreError, WriterCpu};

/// Writes waiting for the connection; beyond this, callers wait to enqueue (back-pressure).
const QUEUE: usize = 4096;
/// Most jobs committed together.
const MAX_GROUP: usize = 64;

/// How a job runs: alone (it opens its own transaction) or inside the writer's group
/// transaction (it must not open one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Alone,
    Grouped,
}

/// What one run of a job's work left behind.
pub(crate) struct Ran<T> {
    pub(crate) result: Result<T>,
    /// In [`Mode::Grouped`]: whether the group may keep what the work did: it committed its
    /// part, or it was refused having written nothing. False when it failed or gave up after
    /// writing (or may have), after which the group is undone.
    pub(crate) clean: bool,
}

/// How a run went, as far as the group is concerned.
enum Verdict {
    Clean,
    Dirty,
    /// The connection itself failed; the writer reopens it.
    Broken,
}

/// A queued write: re-runnable work and the caller waiting for its result.
trait Job: Send {
    /// Runs the work (again, if it ran before) and keeps its result for [`Job::settle`].
    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection, mode: Mode) -> BoxFuture<'a, Verdict>;
    /// Sends the kept result once its transaction's fate is known: `Ok` when it is durable,
    /// `Err` (why the commit failed) otherwise.
    fn settle(self: Box<Self>, committed: std::result::Result<(), String>);
}

struct Queued<T, F> {
    work: F,
    /// The caller's span (a `store.<operation>` span), which the work runs in here too.
    span: tracing::Span,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Queued<T, F>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c mut SqliteConnection, Mode) -> BoxFuture<'c, Ran<T>> + Send + 'static,
{
    fn run<'a>(&'a mut self, conn: &'a mut SqliteConnection, mode: Mode) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let ran = (self.work)(conn, mode).instrument(self.span.clone()).await;
            let verdict = match &ran.result {
                Err(StoreError::Database(sqlx::Error::WorkerCrashed | sqlx::Error::Io(_))) => {
                    Verdict::Broken
                }
                _ if ran.clean => Verdict::Clean,
                _ => Verdict::Dirty,
            };
            self.result = Some(ran.result);
            verdict
        })
    }

    fn settle(self: Box<Self>, committed: std::result::Result<(), String>) {
        let result = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(why), _) => Err(StoreError::CommitFailed(why)),
            (Ok(()), None) => Err(StoreError::WriterStopped),
        };
        let _ = self.reply.send(result);
    }
}

type BoxedJob = Box<dyn Job>;

pub(crate) struct Writer {
    jobs: mpsc::Sender<BoxedJob>,
    close: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Writer {
    /// Starts the writer thread, pinned as `cpu` says, and opens the write connection from
    /// it, so that sqlx's thread for that connection (spawned by the thread that connects)
    /// inherits the pinning. `options` also reopens the connection if it breaks.
    pub(crate) async fn start(options: SqliteConnectOptions, cpu: WriterCpu) -> Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let (close, close_rx) = oneshot::channel();
        let (stopped_tx, stopped) = oneshot::channel();
        let (ready_tx, ready) = oneshot::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("nervix-sqlite-writer".into())
            .spawn(move || {
                crate::cpu::pin_writer(cpu);
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(async move {
                        match options.connect().await {
                            Ok(conn) => {
                                let _ = ready_tx.send(Ok(()));
                                drive(conn, options, queue, close_rx).await;
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e.into()));
                            }
                        }
                    }),
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Config(format!(
                            "cannot start the SQLite writer runtime: {e}"
                        ))));
                    }
                }
                let _ = stopped_tx.send(());
            })
            .map_err(|e| {
                StoreError::Config(format!("cannot start the SQLite writer thread: {e}"))
            })?;
        ready.await.map_err(|_| StoreError::WriterStopped)??;
        Ok(Writer {
            jobs,
            close: Mutex::new(Some(close)),
            stopped: Mutex::new(Some(stopped)),
        })
    }

    /// Runs `work` on the write connection and returns its result once it is durable. In
    /// [`Mode::Grouped`] the connection is inside the group's transaction: `work` must not
    /// open a transaction of its own. `work` may run more than once (see the module docs);
    /// only the last run's result is returned.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection, Mode) -> BoxFuture<'c, Ran<T>> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: BoxedJob = Box::new(Queued {
            work,
            span: tracing::Span::current(),
            result: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        // The reply is dropped unsent only if the job panicked (its work rolled back) or the
        // writer stopped before running it.
        result.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// How many jobs wait in the queue (tests line jobs up behind a held writer with it).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
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
    mut queue: mpsc::Receiver<BoxedJob>,
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
        let healthy = if batch.len() == 1 {
            run_each_alone(&mut conn, batch).await
        } else {
            run_group(&mut conn, batch).await
        };
        if !healthy {
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

/// Runs `job`, containing a panic: the panicking job's `Transaction` (if it had one) is
/// dropped on the way out, which queues its rollback on the connection before anything else
/// runs there. `None` means it panicked; dropping it tells its caller `WriterStopped`.
async fn contained(conn: &mut SqliteConnection, mode: Mode, job: &mut BoxedJob) -> Option<Verdict> {
    match AssertUnwindSafe(job.run(conn, mode)).catch_unwind().await {
        Ok(verdict) => Some(verdict),
        Err(_) => {
            tracing::error!("a storage write panicked; its work was rolled back");
            None
        }
    }
}

/// Runs each job in a transaction of its own and answers it at once. False when the
/// connection broke (the jobs after that are dropped unrun: their callers hear
/// `WriterStopped`, and nothing of theirs was written).
async fn run_each_alone(conn: &mut SqliteConnection, jobs: Vec<BoxedJob>) -> bool {
    for mut job in jobs {
        match contained(conn, Mode::Alone, &mut job).await {
            Some(Verdict::Broken) => {
                job.settle(Ok(()));
                return false;
            }
            // The job committed (or rolled back) its own transaction.
            Some(_) => job.settle(Ok(())),
            None => {}
        }
    }
    true
}

/// Runs `batch` in one transaction; see the module docs. False when the connection broke.
async fn run_group(conn: &mut SqliteConnection, batch: Vec<BoxedJob>) -> bool {
    let mut group = match begin_group(conn).await {
        Ok(tx) => tx,
        Err(e) => {
            // Dropping the jobs unrun tells their callers the writer could not take them.
            tracing::error!(error = %e, jobs = batch.len(), "cannot open a group transaction");
            return true;
        }
    };
    let mut ran: Vec<BoxedJob> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let mut spoilt = false;
    for mut job in jobs.by_ref() {
        match contained(&mut group, Mode::Grouped, &mut job).await {
            Some(Verdict::Clean) => ran.push(job),
            Some(Verdict::Dirty) => {
                ran.push(job);
                spoilt = true;
                break;
            }
            Some(Verdict::Broken) => {
                // Jobs left unrun are dropped: their callers hear `WriterStopped`, and
                // nothing of theirs was written.
                drop(group);
                for job in ran {
                    job.settle(Err("the write connection broke".to_owned()));
                }
                job.settle(Err("the write connection broke".to_owned()));
                return false;
            }
            // A panicking job is not run again; its caller hears `WriterStopped`.
            None => {
                spoilt = true;
                break;
            }
        }
    }
    if spoilt {
        // SQLite may already have rolled the transaction back itself (some I/O and resource
        // errors do); then this fails, and a fresh connection is the only state to trust.
        if let Err(e) = group.rollback().await {
            tracing::warn!(error = %e, "rolling back a commit group failed");
            return false;
        }
        let again: Vec<BoxedJob> = ran.into_iter().chain(jobs).collect();
        tracing::debug!(
            jobs = again.len(),
            "a commit group was undone; its jobs run alone"
        );
        return run_each_alone(conn, again).await;
    }
    let committed = group.commit().await.map_err(|e| e.to_string());
    if let Err(why) = &committed {
        tracing::error!(error = %why, jobs = ran.len(), "a group commit failed");
    }
    for job in ran {
        job.settle(committed.clone());
    }
    true
}

/// Another process holding the lock is waited for by SQLite itself (`busy_timeout`).
async fn begin_group(
    conn: &mut SqliteConnection,
) -> std::result::Result<sqlx::Transaction<'_, sqlx::Sqlite>, sqlx::Error> {
    conn.begin_with("BEGIN IMMEDIATE").await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use sqlx::Connection as _;

    use super::*;

    async fn writer() -> (Writer, SqliteConnectOptions, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let mut conn = options.connect().await.unwrap();
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, job INTEGER NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let w = Writer::start(options.clone(), WriterCpu::Off)
            .await
            .unwrap();
        (w, options, dir)
    }

    async fn insert_rows(conn: &mut SqliteConnection, job: i64) -> Result<()> {
        for k in [job * 2, job * 2 + 1] {
            sqlx::query("INSERT INTO t (k, job) VALUES ($1, $2)")
                .bind(k)
                .bind(job)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Inserts two rows for `job`, then fails if `fail`, as a multi-statement write would.
    fn two_rows(
        job: i64,
        fail: bool,
    ) -> impl for<'c> Fn(&'c mut SqliteConnection, Mode) -> BoxFuture<'c, Ran<i64>> + Send + 'static
    {
        move |conn, mode| {
            Box::pin(async move {
                let gives_up = || Err(StoreError::Config(format!("job {job} gives up")));
                let result: Result<i64> = async {
                    match mode {
                        Mode::Alone => {
                            let mut tx = conn.begin().await?;
                            insert_rows(&mut tx, job).await?;
                            if fail {
                                return gives_up();
                            }
                            tx.commit().await?;
                        }
                        Mode::Grouped => {
                            insert_rows(conn, job).await?;
                            if fail {
                                return gives_up();
                            }
                        }
                    }
                    Ok(job)
                }
                .await;
                let clean = result.is_ok();
                Ran { result, clean }
            })
        }
    }

    /// Many writers at once, so jobs share commit groups, and every seventh gives up after
    /// writing: each caller gets its own job's outcome, and exactly the rows of the jobs that
    /// succeeded are there, once each (a group undone and run again leaves no duplicates).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_job_undoes_only_itself() {
        let (w, options, _dir) = writer().await;
        let w = Arc::new(w);
        let mut calls = tokio::task::JoinSet::new();
        for job in 0..400i64 {
            let w = w.clone();
            calls.spawn(async move { (job, w.run(two_rows(job, job % 7 == 3)).await) });
        }
        while let Some(done) = calls.join_next().await {
            let (job, result) = done.unwrap();
            match result {
                Ok(j) => assert!(job % 7 != 3 && j == job),
                Err(StoreError::Config(why)) => assert!(job % 7 == 3, "{why}"),
                Err(e) => panic!("job {job}: {e}"),
            }
        }
        w.close().await;
        let mut conn = options.connect().await.unwrap();
        let rows: Vec<(i64, i64)> =
            sqlx::query_as("SELECT job, COUNT(*) FROM t GROUP BY job ORDER BY job")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        let expected: Vec<(i64, i64)> = (0..400).filter(|j| j % 7 != 3).map(|j| (j, 2)).collect();
        assert_eq!(rows, expected);
    }
}
