//! The threads behind a [`SqliteBackend`](super::SqliteBackend): one writer that applies
//! queued requests in batches, a few readers, and a checkpointer that copies the WAL back into
//! the database off the writer's path. Knows nothing of the schema: callers hand it closures
//! over a connection.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::ports::BoxError;

/// How many reader threads (each with its own connection) a backend runs.
pub(super) const READERS: usize = 2;

/// The most write requests one transaction carries: enough for a burst of webhooks, few
/// enough that a batch holds the file's write lock for milliseconds, not seconds.
const MAX_BATCH: usize = 256;

/// How long the checkpointer rests after a checkpoint before it starts another, however much
/// the writer commits meanwhile, so the checkpoint's fsyncs stay few.
const CHECKPOINT_REST: Duration = Duration::from_millis(200);

/// How many frames (pages) the WAL may hold before the writer starts it over: about 64 MiB
/// of 4 KiB pages. SQLite writes the WAL from its start again only when a write begins with
/// every frame already copied into the database; while the writer keeps writing, the
/// checkpointer's passive checkpoints never catch up with it, and the file would grow for
/// as long as the burst lasts (and stay that size). Past this, the writer copies the last
/// frames itself between two batches, and the next batch starts the WAL over; the file is
/// then cut back to this size (`PRAGMA journal_size_limit`).
pub(super) const WAL_FRAMES_KEPT: i64 = 16_384;

/// Counters of one backend's threads, cheap to read: for tests and measurements.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct SqliteStats {
    batches: AtomicU64,
    checkpoints: AtomicU64,
    restarts: AtomicU64,
    threads: AtomicUsize,
}

impl SqliteStats {
    /// How many write transactions the writer has committed: one per batch, however many
    /// requests it carried.
    pub fn committed_batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// How many checkpoints the checkpointer has run.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// How many times the writer has copied the WAL's last frames itself because it had
    /// grown past its limit, so that the next batch starts it over.
    pub fn wal_restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// How many of the backend's threads are running: the writer, the checkpointer and the
    /// readers while it is open, none once its last clone has been dropped.
    pub fn running_threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }
}

/// The writer and reader threads, and the channels that feed them. Dropping this closes the
/// channels; each thread finishes the requests already queued and returns, and the drop
/// waits for them.
pub(super) struct Workers {
    // Fields drop in declaration order: the channels close before `threads` joins.
    writes: Sender<Box<dyn Job>>,
    reads: Sender<Read>,
    stats: Arc<SqliteStats>,
    threads: Threads,
}

impl Workers {
    /// Starts the writer on `writer`, the checkpointer on `checkpointer` and one reader on
    /// each of `readers`. The writer's connection must not checkpoint by itself
    /// (`PRAGMA wal_autocheckpoint = 0`): a checkpoint's fsyncs would hold every write
    /// waiting for it. Past `wal_limit` frames in the WAL the writer starts it over (see
    /// [`WAL_FRAMES_KEPT`]).
    pub(super) fn start(
        writer: Connection,
        checkpointer: Connection,
        readers: Vec<Connection>,
        wal_limit: i64,
    ) -> std::io::Result<Self> {
        let (writes, write_queue) = crossbeam_channel::unbounded();
        let (reads, read_queue) = crossbeam_channel::unbounded();
        // At most one wake-up waits: commits while a checkpoint runs ask for one more, not one each.
        let (committed, commits) = crossbeam_channel::bounded(1);
        // Set by the checkpointer when the WAL is past `wal_limit`, taken by the writer.
        let too_long = Arc::new(AtomicBool::new(false));
        // Built before any thread starts, so that if one cannot start, dropping `workers`
        // stops and joins those that did.
        let mut workers = Self {
            writes,
            reads,
            stats: Arc::new(SqliteStats::default()),
            threads: Threads(Vec::with_capacity(2 + readers.len())),
        };
        let (stats, wal_too_long) = (Arc::clone(&workers.stats), Arc::clone(&too_long));
        workers.threads.spawn("sqlite-writer", &workers.stats, move || {
            run_writer(writer, &write_queue, &committed, &wal_too_long, &stats);
        })?;
        let stats = Arc::clone(&workers.stats);
        workers.threads.spawn("sqlite-checkpoint", &workers.stats, move || {
            run_checkpointer(&checkpointer, &commits, wal_limit, &too_long, &stats);
        })?;
        for conn in readers {
            let queue = read_queue.clone();
            workers
                .threads
                .spawn("sqlite-reader", &workers.stats, move || run_reader(&conn, &queue))?;
        }
        Ok(workers)
    }

    pub(super) fn stats(&self) -> &Arc<SqliteStats> {
        &self.stats
    }

    /// How many write requests wait for the writer to take them.
    #[cfg(test)]
    pub(super) fn queued_writes(&self) -> usize {
        self.writes.len()
    }

    /// Has the writer run `work` in its next batch, inside a savepoint of its own, and returns
    /// the result once that batch has committed. If `work` fails, its statements are rolled
    /// back and its error returned; the rest of the batch is unaffected.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, BoxError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            work: Some(work),
            outcome: None,
            reply,
        };
        self.writes.send(Box::new(request)).map_err(|_| ThreadError::Gone)?;
        answer.await.map_err(|_| ThreadError::Gone)?
    }

    /// Has a reader run `work`, outside any transaction: each statement reads the latest
    /// committed state.
    pub(super) async fn read<T, F>(&self, work: F) -> Result<T, BoxError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let read: Read = Box::new(move |conn| {
            // The caller may have stopped waiting.
            let _ = reply.send(work(conn));
        });
        self.reads.send(read).map_err(|_| ThreadError::Gone)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Box::new(e)),
            Err(_) => Err(Box::new(ThreadError::Gone)),
        }
    }
}

/// Why a request got no result of its own. The backend wraps it in
/// `StoreError::Unavailable` or `QueueError::Unavailable`: the caller retries.
#[derive(Debug, Clone, thiserror::Error)]
enum ThreadError {
    #[error("could not start a write transaction")]
    Begin(#[source] Arc<rusqlite::Error>),
    #[error("could not isolate one write of a batch in a savepoint")]
    Savepoint(#[source] Arc<rusqlite::Error>),
    #[error("SQLite rolled back a batch of writes after another write in it failed")]
    Abandoned,
    #[error("could not commit a batch of writes")]
    Commit(#[source] Arc<rusqlite::Error>),
    #[error("the request panicked on the database thread")]
    Panicked,
    #[error("the database thread stopped before answering")]
    Gone,
}

/// The backend's threads. Dropping this waits for each to return.
struct Threads(Vec<JoinHandle<()>>);

impl Threads {
    /// Starts a thread named `name` that runs `work`, counted in `stats` while it runs.
    fn spawn(
        &mut self,
        name: &str,
        stats: &Arc<SqliteStats>,
        work: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let running = Running::new(stats);
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _running = running;
            work();
        })?;
        self.0.push(handle);
        Ok(())
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for thread in self.0.drain(..) {
            // A thread that panicked has already unwound: nothing is left to clean up.
            let _ = thread.join();
        }
    }
}

/// Counts a thread as running until it returns or unwinds.
struct Running(Arc<SqliteStats>);

impl Running {
    fn new(stats: &Arc<SqliteStats>) -> Self {
        stats.threads.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(stats))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.threads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A read for a reader thread; it sends its own answer.
type Read = Box<dyn FnOnce(&Connection) + Send>;

/// Serves reads until every sender is gone.
fn run_reader(conn: &Connection, requests: &Receiver<Read>) {
    for read in requests {
        // A read that panics drops its reply, so its caller gets an error; the reader goes on.
        let _ = catch_unwind(AssertUnwindSafe(|| read(conn)));
    }
}

/// One write request: its statements, and where its answer goes.
trait Job: Send {
    /// Runs the request's statements; `false` if they failed (the writer rolls them back).
    fn apply(&mut self, conn: &Connection) -> bool;

    /// Answers the caller: the request's own error if its statements failed, otherwise its
    /// result if `batch` committed, otherwise why it did not.
    fn answer(self: Box<Self>, batch: Result<(), ThreadError>);
}

struct Request<T, F> {
    work: Option<F>,
    outcome: Option<rusqlite::Result<T>>,
    reply: oneshot::Sender<Result<T, BoxError>>,
}

impl<T, F> Job for Request<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let outcome = work(conn);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, batch: Result<(), ThreadError>) {
        let answer: Result<T, BoxError> = match (self.outcome, batch) {
            (Some(Err(own)), _) => Err(Box::new(own)),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(batch)) => Err(Box::new(batch)),
            // Started but without an outcome: its statements panicked.
            (None, Ok(())) => Err(Box::new(ThreadError::Panicked)),
        };
        // The caller may have stopped waiting.
        let _ = self.reply.send(answer);
    }
}

/// The writer thread: applies batches of requests until every sender is gone and nothing
/// is left queued, and tells the checkpointer after each commit. Returning drops `committed`,
/// which stops the checkpointer.
fn run_writer(
    mut conn: Connection,
    requests: &Receiver<Box<dyn Job>>,
    committed: &Sender<()>,
    wal_too_long: &AtomicBool,
    stats: &SqliteStats,
) {
    let mut waiting: VecDeque<Box<dyn Job>> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            let Ok(first) = requests.recv() else {
                return;
            };
            waiting.push_back(first);
        }
        if wal_too_long.swap(false, Ordering::Relaxed) {
            // Nothing is written meanwhile, so this copies every frame a reader does not
            // still need (the checkpointer copied most of them already); the next batch's
            // first write then starts the WAL over. If a reader held it back, the
            // checkpointer finds the WAL still long and asks again.
            match checkpoint(&conn) {
                Ok(_) => {
                    stats.restarts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not checkpoint the long SQLite WAL; it will be tried again")
                }
            }
        }
        let room = MAX_BATCH.saturating_sub(waiting.len());
        waiting.extend(requests.try_iter().take(room));
        let batch: Vec<_> = waiting.drain(..waiting.len().min(MAX_BATCH)).collect();
        let left = write_batch(&mut conn, batch, stats);
        // Full means a wake-up is already waiting.
        let _ = committed.try_send(());
        for job in left.into_iter().rev() {
            waiting.push_front(job);
        }
    }
}

/// Applies `batch` in one `BEGIN IMMEDIATE` transaction, each request in a savepoint, and
/// answers every request it got to. Returns those it did not get to because the transaction
/// was lost; they go into the next batch.
fn write_batch(conn: &mut Connection, batch: Vec<Box<dyn Job>>, stats: &SqliteStats) -> Vec<Box<dyn Job>> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let failed = ThreadError::Begin(Arc::new(e));
            for job in batch {
                job.answer(Err(failed.clone()));
            }
            return Vec::new();
        }
    };
    let mut applied: Vec<Box<dyn Job>> = Vec::with_capacity(batch.len());
    let mut rest = batch.into_iter();
    while let Some(mut job) = rest.next() {
        if let Err(lost) = isolate(&tx, job.as_mut()) {
            // Nothing of this transaction can be kept: roll back whatever is left of it.
            drop(tx);
            job.answer(Err(lost.clone()));
            for done in applied {
                done.answer(Err(lost.clone()));
            }
            return rest.collect();
        }
        applied.push(job);
    }
    let committed = tx.commit().map_err(|e| ThreadError::Commit(Arc::new(e)));
    if committed.is_ok() {
        stats.batches.fetch_add(1, Ordering::Relaxed);
    }
    for job in applied {
        job.answer(committed.clone());
    }
    Vec::new()
}

/// The checkpointer thread: after commits, copies what the WAL holds into the database file
/// (a passive checkpoint, which never waits for the writer or a reader and never holds them
/// up), then rests [`CHECKPOINT_REST`]. Returns when the writer has stopped. A checkpoint that
/// fails is logged and tried again after the next commit; SQLite checkpoints what is left
/// when the last connection closes.
fn run_checkpointer(
    conn: &Connection,
    commits: &Receiver<()>,
    wal_limit: i64,
    wal_too_long: &AtomicBool,
    stats: &SqliteStats,
) {
    let mut due = commits.recv().is_ok();
    while due {
        match checkpoint(conn) {
            Ok(frames) => {
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                if frames >= wal_limit {
                    wal_too_long.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not checkpoint the SQLite WAL; trying again after the next write")
            }
        }
        // Rest, noting whether the writer committed meanwhile; stop at once if it stopped.
        due = false;
        let rested = Instant::now() + CHECKPOINT_REST;
        loop {
            match commits.recv_deadline(rested) {
                Ok(()) => due = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if !due {
            due = commits.recv().is_ok();
        }
    }
}

/// A passive checkpoint on `conn`: copies into the database every frame of the WAL that no
/// reader still needs, without waiting for the writer or a reader. Returns how many frames the
/// WAL holds (the answer's second column).
fn checkpoint(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

/// Runs one request inside a savepoint of the open transaction, rolling its statements back
/// if they fail or panic. An error means the transaction itself is lost or in doubt.
fn isolate(conn: &Connection, job: &mut dyn Job) -> Result<(), ThreadError> {
    let run = |sql: &str| {
        conn.prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(|e| ThreadError::Savepoint(Arc::new(e)))
    };
    run("SAVEPOINT request")?;
    let kept = catch_unwind(AssertUnwindSafe(|| job.apply(conn)));
    if conn.is_autocommit() {
        // Some errors (a full disk, an I/O error) make SQLite roll back the whole transaction.
        return Err(ThreadError::Abandoned);
    }
    if matches!(kept, Ok(true)) {
        return run("RELEASE request");
    }
    run("ROLLBACK TO request")?;
    run("RELEASE request")
}
