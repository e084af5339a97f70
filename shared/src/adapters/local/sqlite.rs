//! The embedded backend's state store and work queues, together in one SQLite file.
//!
//! Objects live in `objects(key, value, version)`; a conditional `UPDATE … WHERE version = ?`
//! is what detects a concurrent writer, so the guarantees hold between processes sharing the
//! file as much as between tasks sharing one [`SqliteBackend`]. Messages live in `messages`
//! until acked; receiving happens inside a `BEGIN IMMEDIATE` transaction, so two processes
//! never take the same delivery. Messages delivered too often move to `dead_letters`.
//!
//! # Threads and batches
//!
//! A backend serves its callers from a fixed set of threads, whatever the load: one writer,
//! two readers and a checkpointer, each owning one connection to the file. An async call
//! hands its statements to one of them over a channel and awaits the answer on a oneshot
//! channel, so no call blocks a tokio thread or starts a thread of its own.
//!
//! - Every write goes to the writer: `create`, `replace`, `remove` and the queue operations
//!   `send`, `send_many`, `receive`, `ack`, `release` and `extend`. The writer takes every
//!   request waiting for it (up to 256) and applies them in one
//!   `BEGIN IMMEDIATE … COMMIT` transaction, each inside a savepoint of its own. A request
//!   whose statements fail is rolled back alone, and a conditional write that loses (an
//!   existing key, a stale version, a stale receipt) is an answer rather than an error: either
//!   way its neighbours in the batch commit. Each caller is answered once the batch that
//!   carried its request has committed. An idle writer commits a batch of one; under load one
//!   commit serves many requests.
//! - `get`, `list` and `dead_letters` go to the readers. The file is in WAL mode, so readers
//!   do not wait for the writer, and each read is a read transaction of its own that starts
//!   after the call: it sees every write acknowledged before the call was made.
//!
//! - The writer's connection never checkpoints (`wal_autocheckpoint = 0`): after its commits,
//!   the checkpointer thread copies the WAL into the database with a passive checkpoint, at
//!   most every 200 ms. The writer used to do it inside a commit every 1,000 pages, and every
//!   request of the batches behind it waited for the checkpoint's two fsyncs.
//!
//! - A passive checkpoint never catches up with a writer that keeps writing, and SQLite
//!   starts the WAL over only once every frame is copied: under a long burst the file would
//!   grow for as long as the burst lasts. When the checkpointer finds it past about 64 MiB,
//!   the writer copies the last frames itself between two batches (a short pause, about once
//!   per 64 MiB written), the next batch starts the WAL over, and the file is cut back to
//!   that size (`journal_size_limit`).
//!
//! Dropping the last clone of a backend closes its channels: the threads finish the requests
//! already queued, close their connections and exit, and the drop waits for them.
//!
//! Visibility uses the system clock (unix milliseconds), which all processes on one machine
//! share.
//!
//! # Schema upgrades
//!
//! The schema's version is SQLite's `PRAGMA user_version`, kept by `rusqlite_migration`:
//! [`migrations`] lists every change ever made to the schema, migration N taking a database
//! from version N-1 to N, each in a transaction of its own. Opening a database applies the
//! migrations it lacks, so a data directory written by any earlier slipway opens and keeps its
//! runs and queued messages; one written by a newer slipway ([`SCHEMA_VERSION`] lower than its
//! `user_version`) is refused before anything in it is changed. A migration that shipped is
//! never edited: a change is a new migration appended to the list.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use jiff::Timestamp;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, MigrationDefinitionError, Migrations};

use crate::ports::{
    DeadLetter, Delivery, Queue, QueueError, QueueName, Receipt, StateStore, StoreError, StoreKey, Version, Versioned,
};

mod threads;

#[doc(hidden)]
pub use threads::SqliteStats;
use threads::{READERS, Workers};

/// The schema this code reads and writes, kept in SQLite's `user_version`: the number of
/// [`migrations`].
pub const SCHEMA_VERSION: i64 = 1;

/// Every change to the schema, oldest first; see the module docs ("Schema upgrades").
///
/// 1. The schema slipway had until schema upgrades existed (every database written before
///    then has `user_version` 1): objects, messages and dead letters. `IF NOT EXISTS`, as it
///    always was, so a file whose tables exist but whose version was never set upgrades too.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(SCHEMA_V1)])
}

/// How long a call waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many deliveries a message gets before it is dead-lettered, unless configured.
const DEFAULT_MAX_RECEIVES: u32 = 5;

/// Migration 1: the schema as it was before migrations existed, unchanged.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS objects (
    key     TEXT PRIMARY KEY NOT NULL,
    value   BLOB NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at, seq);
CREATE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt) WHERE receipt IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL,
    queue         TEXT NOT NULL,
    body          TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    sent_at       INTEGER NOT NULL,
    dead_at       INTEGER NOT NULL
);
";

/// Stores one message; `send` and `send_many` share it.
const INSERT_MESSAGE: &str = "INSERT INTO messages (id, queue, body, sent_at, visible_at, receive_count)
     VALUES (?1, ?2, ?3, ?4, ?5, 0)";

/// Why the SQLite file could not be opened. Each variant names the file (or directory).
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The directory that should hold the database could not be created.
    #[error("could not create the directory {} for the database", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open, configure or initialise the file (not a database, locked for
    /// too long, permission denied, …).
    #[error("could not open the SQLite database {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer slipway whose schema this one does not understand.
    /// Nothing in it was changed.
    #[error(
        "the SQLite database {} has schema version {found}, newer than the {supported} this slipway understands: it was written by a newer slipway; upgrade slipway (the file was left unchanged)",
        path.display()
    )]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    /// Upgrading the file's schema failed; the migration's transaction was rolled back, so
    /// the file is as it was.
    #[error(
        "could not upgrade the SQLite database {} from schema version {from} to {SCHEMA_VERSION} (the file was left as it was)",
        path.display()
    )]
    Upgrade {
        path: PathBuf,
        from: i64,
        #[source]
        source: rusqlite_migration::Error,
    },
    /// The operating system refused a thread to serve the database (out of threads or
    /// memory).
    #[error("could not start a thread to serve the SQLite database {}", path.display())]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The embedded backend: a [`StateStore`] and a [`Queue`] in one SQLite file.
///
/// Clones share one writer thread and one pool of reader threads (see the module docs); the
/// threads stop when the last clone is dropped. Several backends (in several processes) may
/// open the same file: conditional writes and receives stay correct between them.
#[derive(Clone)]
pub struct SqliteBackend {
    workers: Arc<Workers>,
    path: Arc<PathBuf>,
    max_receives: u32,
    /// Per queue, woken when this process sends to it (see [`Queue::idle`]).
    arrivals: Arc<[tokio::sync::Notify; QueueName::ALL.len()]>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.path)
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens the database at `path`, creating the file and its parent directory if needed,
    /// refusing it if a newer slipway wrote it, switching it to WAL mode and bringing its
    /// schema up to date (see "Schema upgrades" in the module docs), then starts the writer
    /// and reader threads. Blocks while doing so (call it at start-up).
    ///
    /// Messages are dead-lettered after 5 deliveries; see [`SqliteBackend::with_max_receives`].
    pub fn open(path: &Path) -> Result<Self, SqliteError> {
        Self::open_with(path, threads::WAL_FRAMES_KEPT)
    }

    /// [`SqliteBackend::open`], the writer starting the WAL over past `wal_limit` frames.
    fn open_with(path: &Path, wal_limit: i64) -> Result<Self, SqliteError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SqliteError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source| SqliteError::Open {
            path: path.to_owned(),
            source,
        };
        let mut writer = Connection::open(path).map_err(open_err)?;
        initialise(&mut writer, path)?;
        writer.pragma_update(None, "wal_autocheckpoint", 0).map_err(open_err)?;
        // When the writer starts the WAL over, the file is cut back to its limit's size.
        let page_size: i64 = writer
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(open_err)?;
        writer
            .pragma_update(None, "journal_size_limit", wal_limit.saturating_mul(page_size))
            .map_err(open_err)?;
        let checkpointer = Connection::open(path).map_err(open_err)?;
        checkpointer.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let readers = (0..READERS)
            .map(|_| open_reader(path))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(open_err)?;

        let workers =
            Workers::start(writer, checkpointer, readers, wal_limit).map_err(|source| SqliteError::Thread {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            workers: Arc::new(workers),
            path: Arc::new(path.to_owned()),
            max_receives: DEFAULT_MAX_RECEIVES,
            arrivals: Arc::new(std::array::from_fn(|_| tokio::sync::Notify::new())),
        })
    }

    /// The same backend, dead-lettering a message once it has been delivered `n` times
    /// without an ack (instead of the default 5). `n` of 0 is treated as 1.
    pub fn with_max_receives(self, n: u32) -> Self {
        Self {
            max_receives: n.max(1),
            ..self
        }
    }

    /// Tells `queue`'s waiting worker, if any, that a message may be ready. A permit is kept
    /// when nobody waits, so a message sent just before the worker starts waiting is not
    /// missed; at worst the worker looks once for nothing.
    fn arrived(&self, queue: QueueName) {
        self.arrivals(queue).notify_one();
    }

    fn arrivals(&self, queue: QueueName) -> &tokio::sync::Notify {
        &self.arrivals[match queue {
            QueueName::Deploy => 0,
            QueueName::Smoke => 1,
            QueueName::Notify => 2,
        }]
    }

    /// The file this backend stores into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This backend's counters (shared by its clones, readable after they are gone).
    #[doc(hidden)]
    pub fn stats(&self) -> Arc<SqliteStats> {
        Arc::clone(self.workers.stats())
    }
}

/// A connection for a reader thread. `query_only`, so a read can never write behind the
/// writer's back.
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Refuses a database from a newer slipway before changing anything in it, configures the
/// connection, and applies the migrations the file lacks.
fn initialise(conn: &mut Connection, path: &Path) -> Result<(), SqliteError> {
    let open_err = |source| SqliteError::Open {
        path: path.to_owned(),
        source,
    };
    let newer = |found| SqliteError::NewerSchema {
        path: path.to_owned(),
        found,
        supported: SCHEMA_VERSION,
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    let found = user_version(conn).map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(newer(found));
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode; concurrent access will be slower");
    }
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(open_err)?;
    // Immediate, so that two processes opening a file at once migrate it once: the second
    // waits for the first's transaction, then finds nothing left to do.
    conn.set_transaction_behavior(TransactionBehavior::Immediate);
    let migrated = migrations().to_latest(conn);
    conn.set_transaction_behavior(TransactionBehavior::Deferred);
    match migrated {
        Ok(()) => {
            if found < SCHEMA_VERSION {
                tracing::info!(
                    database = %path.display(),
                    from = found,
                    to = SCHEMA_VERSION,
                    "SQLite schema upgraded"
                );
            }
            Ok(())
        }
        // A newer slipway upgraded the file since we looked.
        Err(rusqlite_migration::Error::MigrationDefinition(MigrationDefinitionError::DatabaseTooFarAhead)) => {
            Err(newer(user_version(conn).map_err(open_err)?))
        }
        Err(source) => Err(SqliteError::Upgrade {
            path: path.to_owned(),
            from: found,
            source,
        }),
    }
}

/// The schema version recorded in the file (0 for a new file).
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Now, in unix milliseconds, from the system clock.
fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// `at` plus `delay`, in milliseconds, saturating.
fn later(at: i64, delay: Duration) -> i64 {
    at.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
}

/// 128 random bits as 32 hex digits: message ids and receipts.
fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The version number a [`Version`] we issued stands for, or `None` if we never issued it.
fn parse_version(version: &Version) -> Option<i64> {
    let n: i64 = version.0.parse().ok()?;
    (n > 0 && n.to_string() == version.0).then_some(n)
}

/// The smallest string greater than every string that starts with `prefix`, or `None` if
/// there is none (an empty prefix, or one of only `char::MAX`). UTF-8 orders bytes like code
/// points, so this bounds SQLite's byte-wise `BINARY` comparison too.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A queue name stored in the database that this code does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown queue name {0:?} in the database")]
struct UnknownQueue(String);

fn queue_column(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<QueueName> {
    let raw: String = row.get(idx)?;
    QueueName::ALL
        .into_iter()
        .find(|q| q.as_str() == raw)
        .ok_or_else(|| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(UnknownQueue(raw))))
}

fn timestamp_column(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    let ms: i64 = row.get(idx)?;
    Timestamp::from_millisecond(ms)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Integer, Box::new(e)))
}

#[async_trait]
impl StateStore for SqliteBackend {
    /// The object at `key` and its version (a decimal row version), or `None`.
    async fn get(&self, key: &StoreKey) -> Result<Option<Versioned<Bytes>>, StoreError> {
        let key = key.as_str().to_owned();
        self.workers
            .read(move |conn| {
                conn.prepare_cached("SELECT value, version FROM objects WHERE key = ?1")?
                    .query_row(params![key], |row| {
                        Ok(Versioned {
                            value: Bytes::from(row.get::<_, Vec<u8>>(0)?),
                            version: Version(row.get::<_, i64>(1)?.to_string()),
                        })
                    })
                    .optional()
            })
            .await
            .map_err(StoreError::Unavailable)
    }

    /// Inserts `value` at version 1 only if `key` is absent; otherwise
    /// [`StoreError::AlreadyExists`] and nothing changes.
    async fn create(&self, key: &StoreKey, value: Bytes) -> Result<Version, StoreError> {
        let raw = key.as_str().to_owned();
        let inserted = self
            .workers
            .write(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO objects (key, value, version) VALUES (?1, ?2, 1) ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![raw, &value[..]])
            })
            .await
            .map_err(StoreError::Unavailable)?;
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(key.clone()));
        }
        Ok(Version("1".to_owned()))
    }

    /// Replaces the object only if its version is still `expected`, in one conditional
    /// `UPDATE`; otherwise (another writer, no object, a version we never issued)
    /// [`StoreError::Conflict`] and nothing changes. The new version is one more.
    async fn replace(&self, key: &StoreKey, value: Bytes, expected: &Version) -> Result<Version, StoreError> {
        let conflict = || StoreError::Conflict(key.clone());
        let expected = parse_version(expected).ok_or_else(conflict)?;
        let next = expected.checked_add(1).ok_or_else(conflict)?;
        let raw = key.as_str().to_owned();
        let updated = self
            .workers
            .write(move |conn| {
                conn.prepare_cached("UPDATE objects SET value = ?3, version = ?4 WHERE key = ?1 AND version = ?2")?
                    .execute(params![raw, expected, &value[..], next])
            })
            .await
            .map_err(StoreError::Unavailable)?;
        if updated == 0 {
            return Err(conflict());
        }
        Ok(Version(next.to_string()))
    }

    /// Every key starting with `prefix`, in byte-wise (= `str`) order, by a range query: no
    /// `LIKE`, so `%` and `_` in a prefix are plain characters. Keys [`StoreKey::from_listed`]
    /// refuses are skipped.
    async fn list(&self, prefix: &str) -> Result<Vec<StoreKey>, StoreError> {
        let lower = prefix.to_owned();
        let upper = prefix_upper_bound(prefix);
        let raw: Vec<String> = self
            .workers
            .read(move |conn| match upper {
                Some(upper) => conn
                    .prepare_cached("SELECT key FROM objects WHERE key >= ?1 AND key < ?2 ORDER BY key")?
                    .query_map(params![lower, upper], |row| row.get(0))?
                    .collect(),
                None => conn
                    .prepare_cached("SELECT key FROM objects WHERE key >= ?1 ORDER BY key")?
                    .query_map(params![lower], |row| row.get(0))?
                    .collect(),
            })
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(raw
            .iter()
            .filter(|k| k.starts_with(prefix))
            .filter_map(|k| {
                let key = StoreKey::from_listed(k);
                if key.is_none() {
                    tracing::warn!(key = %k, "skipping a stored key outside the known prefixes");
                }
                key
            })
            .collect())
    }

    /// Deletes the row; no row is fine.
    async fn remove(&self, key: &StoreKey) -> Result<(), StoreError> {
        let raw = key.as_str().to_owned();
        self.workers
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM objects WHERE key = ?1")?
                    .execute(params![raw])
                    .map(|_| ())
            })
            .await
            .map_err(StoreError::Unavailable)
    }
}

#[async_trait]
impl Queue for SqliteBackend {
    /// Stores the message durably with a fresh random id; it becomes visible after `delay`.
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> Result<(), QueueError> {
        let body = body.to_owned();
        self.workers
            .write(move |conn| {
                let now = now_ms();
                conn.prepare_cached(INSERT_MESSAGE)?.execute(params![
                    random_hex(),
                    queue.as_str(),
                    body,
                    now,
                    later(now, delay)
                ])
            })
            .await
            .map_err(|e| QueueError::Unavailable(queue, e))?;
        if delay.is_zero() {
            self.arrived(queue);
        }
        Ok(())
    }

    /// Stores every message in one request to the writer: all are stored or none, and they
    /// are visible at once.
    async fn send_many(&self, queue: QueueName, bodies: &[String]) -> Result<(), QueueError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let bodies = bodies.to_vec();
        self.workers
            .write(move |conn| {
                let now = now_ms();
                let mut insert = conn.prepare_cached(INSERT_MESSAGE)?;
                for body in &bodies {
                    insert.execute(params![random_hex(), queue.as_str(), body, now, now])?;
                }
                Ok(())
            })
            .await
            .map_err(|e| QueueError::Unavailable(queue, e))?;
        self.arrived(queue);
        Ok(())
    }

    /// Atomically, inside the writer's `BEGIN IMMEDIATE` transaction (so no other backend or
    /// process receives meanwhile): takes up to `max` visible messages, oldest visibility
    /// first, giving each a fresh receipt and hiding it for `visibility`; a message in that
    /// line already delivered the maximum number of times moves to the dead letters instead,
    /// and the next one in line is taken. Only the messages taken or dead-lettered are read,
    /// however long the queue (a scan of every visible message on each receive made a backlog
    /// cost quadratic time).
    async fn receive(&self, queue: QueueName, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let max_receives = self.max_receives;
        let (deliveries, dead) = self
            .workers
            .write(move |conn| {
                let now = now_ms();
                let q = queue.as_str();
                let hidden_until = later(now, visibility);
                let mut deliveries = Vec::with_capacity(max);
                let mut dead = 0usize;
                let mut select = conn.prepare_cached(
                    "SELECT seq, id, body, receive_count, sent_at FROM messages
                     WHERE queue = ?1 AND visible_at <= ?2
                     ORDER BY visible_at, seq LIMIT ?3",
                )?;
                let mut bury = conn.prepare_cached(
                    "INSERT INTO dead_letters (id, queue, body, receive_count, sent_at, dead_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let mut forget = conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?;
                let mut update = conn.prepare_cached(
                    "UPDATE messages SET receive_count = ?2, receipt = ?3, visible_at = ?4 WHERE seq = ?1",
                )?;
                while deliveries.len() < max {
                    let want = max - deliveries.len();
                    let candidates: Vec<(i64, String, String, u32, rusqlite::types::Value)> = select
                        .query_map(params![q, now, i64::try_from(want).unwrap_or(i64::MAX)], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                        })?
                        .collect::<rusqlite::Result<_>>()?;
                    let found = candidates.len();
                    for (seq, message_id, body, count, sent_at) in candidates {
                        if count >= max_receives {
                            bury.execute(params![message_id, q, body, count, sent_at, now])?;
                            forget.execute(params![seq])?;
                            dead += 1;
                            continue;
                        }
                        let receive_count = count.saturating_add(1);
                        let receipt = random_hex();
                        update.execute(params![seq, receive_count, receipt, hidden_until])?;
                        deliveries.push(Delivery {
                            message_id,
                            receipt: Receipt(receipt),
                            body,
                            receive_count,
                        });
                    }
                    // With no visibility timeout the messages just delivered are still first
                    // in line: one pass only, or they would be delivered twice.
                    if found < want || visibility.is_zero() {
                        break;
                    }
                }
                Ok((deliveries, dead))
            })
            .await
            .map_err(|e| QueueError::Unavailable(queue, e))?;
        if dead > 0 {
            tracing::warn!(%queue, count = dead, max_receives, "moved messages to the dead letters");
        }
        Ok(deliveries)
    }

    /// Deletes the message only if `receipt` is its latest one; otherwise (redelivered to
    /// someone else, released, already acked) [`QueueError::StaleReceipt`].
    async fn ack(&self, queue: QueueName, receipt: &Receipt) -> Result<(), QueueError> {
        let raw = receipt.0.clone();
        let deleted = self
            .workers
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM messages WHERE queue = ?1 AND receipt = ?2")?
                    .execute(params![queue.as_str(), raw])
            })
            .await
            .map_err(|e| QueueError::Unavailable(queue, e))?;
        if deleted == 0 {
            return Err(QueueError::StaleReceipt(queue));
        }
        Ok(())
    }

    /// Makes the message visible again after `delay` and invalidates `receipt`, only if it
    /// is still the latest one; otherwise [`QueueError::StaleReceipt`]. The delivery already
    /// counted towards the maximum.
    async fn release(&self, queue: QueueName, receipt: &Receipt, delay: Duration) -> Result<(), QueueError> {
        let raw = receipt.0.clone();
        let updated = self
            .workers
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE messages SET visible_at = ?3, receipt = NULL WHERE queue = ?1 AND receipt = ?2",
                )?
                .execute(params![queue.as_str(), raw, later(now_ms(), delay)])
            })
            .await
            .map_err(|e| QueueError::Unavailable(queue, e))?;
        if updated == 0 {
            return Err(QueueError::StaleReceipt(queue));
        }
        if delay.is_zero() {
            self.arrived(queue);
        }
        Ok(())
    }

    async fn extend(&self, queue: QueueName, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        let raw = receipt.0.clone();
        let updated = self
            .workers
            .write(move |conn| {
                conn.prepare_cached("UPDATE messages SET visible_at = ?3 WHERE queue = ?1 AND receipt = ?2")?
                    .execute(params![queue.as_str(), raw, later(now_ms(), visibility)])
            })
            .await
            .map_err(|e| QueueError::Unavailable(queue, e))?;
        if updated == 0 {
            return Err(QueueError::StaleReceipt(queue));
        }
        Ok(())
    }

    /// Every dead letter of every queue, in the order they died.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.workers
            .read(|conn| {
                conn.prepare_cached(
                    "SELECT id, queue, body, receive_count, sent_at, dead_at FROM dead_letters ORDER BY dead_at, seq",
                )?
                .query_map([], |row| {
                    Ok(DeadLetter {
                        message_id: row.get(0)?,
                        queue: queue_column(row, 1)?,
                        body: row.get(2)?,
                        receive_count: row.get(3)?,
                        sent_at: timestamp_column(row, 4)?,
                        dead_at: timestamp_column(row, 5)?,
                    })
                })?
                .collect()
            })
            .await
            // The port's error names a queue; dead letters span all of them, so this names the
            // first stage's queue.
            .map_err(|e| QueueError::Unavailable(QueueName::Deploy, e))
    }

    async fn depth(&self, queue: QueueName) -> Result<u64, QueueError> {
        self.workers
            .read(move |conn| {
                conn.prepare_cached("SELECT COUNT(*) FROM messages WHERE queue = ?1")?
                    .query_row([queue.as_str()], |row| row.get::<_, i64>(0))
            })
            .await
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| QueueError::Unavailable(queue, e))
    }

    fn carries_runs(&self) -> bool {
        false // the store is the same local file: reading the run is cheaper than carrying it
    }

    /// Ends early when this process sends to `queue`; messages sent by another process (or
    /// that become visible after a delay) are found when `at_most` is up.
    async fn idle(&self, queue: QueueName, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.arrivals(queue).notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn key(raw: &str) -> StoreKey {
        StoreKey::from_listed(raw).unwrap()
    }

    fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("slipway.db");
        (dir, path)
    }

    fn counter(n: u64) -> Bytes {
        Bytes::from(serde_json::to_vec(&serde_json::json!({ "n": n })).unwrap())
    }

    async fn increment(store: &dyn StateStore, key: &StoreKey) {
        loop {
            let current = store.get(key).await.unwrap().unwrap();
            let value: serde_json::Value = serde_json::from_slice(&current.value).unwrap();
            let n = value["n"].as_u64().unwrap();
            tokio::task::yield_now().await;
            match store.replace(key, counter(n + 1), &current.version).await {
                Ok(_) => return,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => panic!("replace failed: {e:?}"),
            }
        }
    }

    async fn read_counter(store: &dyn StateStore, key: &StoreKey) -> u64 {
        let current = store.get(key).await.unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&current.value).unwrap();
        value["n"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn create_never_overwrites() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let k = key(&format!("runs/shop-{SHA}.json"));

        assert!(db.get(&k).await.unwrap().is_none());
        let v1 = db.create(&k, Bytes::from_static(b"first")).await.unwrap();
        let err = db.create(&k, Bytes::from_static(b"second")).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyExists(existing) if *existing == k),
            "{err:?}"
        );

        let got = db.get(&k).await.unwrap().unwrap();
        assert_eq!(got.value, Bytes::from_static(b"first"));
        assert_eq!(got.version, v1);
    }

    #[tokio::test]
    async fn replace_with_a_stale_version_conflicts_and_changes_nothing() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let k = key("notices/n1/0");
        let v1 = db.create(&k, Bytes::from_static(b"one")).await.unwrap();
        let v2 = db.replace(&k, Bytes::from_static(b"two"), &v1).await.unwrap();
        assert_ne!(v1, v2);

        let err = db.replace(&k, Bytes::from_static(b"stale"), &v1).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        for bad in ["", "abc", "02", "-1", "2.0"] {
            let err = db
                .replace(&k, Bytes::from_static(b"bad"), &Version(bad.to_owned()))
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Conflict(_)), "{bad}: {err:?}");
        }
        let got = db.get(&k).await.unwrap().unwrap();
        assert_eq!((got.value, got.version), (Bytes::from_static(b"two"), v2));

        let missing = key("notices/absent/0");
        let err = db.replace(&missing, Bytes::from_static(b"x"), &v1).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert!(db.get(&missing).await.unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_read_modify_write_loses_no_update() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let k = key("notices/counter/0");
        db.create(&k, counter(0)).await.unwrap();

        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (db, k) = (db.clone(), k.clone());
                tokio::spawn(async move { increment(&db, &k).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(read_counter(&db, &k).await, 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_backends_on_one_file_lose_no_update() {
        let (_dir, path) = temp_db();
        let a: Arc<dyn StateStore> = Arc::new(SqliteBackend::open(&path).unwrap());
        let b: Arc<dyn StateStore> = Arc::new(SqliteBackend::open(&path).unwrap());
        let k = key("notices/counter/0");
        a.create(&k, counter(0)).await.unwrap();

        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let store = if i % 2 == 0 { Arc::clone(&a) } else { Arc::clone(&b) };
                let k = k.clone();
                tokio::spawn(async move { increment(store.as_ref(), &k).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(read_counter(a.as_ref(), &k).await, 20);
        assert_eq!(read_counter(b.as_ref(), &k).await, 20);
    }

    #[tokio::test]
    async fn remove_deletes_the_object_and_a_missing_key_is_fine() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let k = key("open-runs/shop-1");
        db.create(&k, Bytes::from_static(b"{}")).await.unwrap();
        db.remove(&k).await.unwrap();
        assert!(db.get(&k).await.unwrap().is_none());
        assert!(db.list(StoreKey::OPEN_RUNS).await.unwrap().is_empty());
        db.remove(&k).await.unwrap();
        // Gone means gone: it can be made again from scratch.
        assert_eq!(db.create(&k, Bytes::from_static(b"{}")).await.unwrap().0, "1");
    }

    #[tokio::test]
    async fn list_returns_only_the_prefix_in_order() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        for raw in [
            "runs/b.json",
            "notices/a_b/0",
            "runs/a.json",
            "notices/aXb/0",
            "notices/a%c/1",
            "notices/abc/1",
            "runs/a/x",
        ] {
            db.create(&key(raw), Bytes::from_static(b"{}")).await.unwrap();
        }
        // A row no StoreKey could name (written by something else) is never listed.
        db.workers
            .write(|conn| conn.execute("INSERT INTO objects VALUES ('runs/../etc', x'00', 1)", []))
            .await
            .unwrap();

        let listed = |keys: Vec<StoreKey>| keys.iter().map(|k| k.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(
            listed(db.list("runs/").await.unwrap()),
            ["runs/a.json", "runs/a/x", "runs/b.json"]
        );
        assert_eq!(
            listed(db.list("notices/").await.unwrap()),
            ["notices/a%c/1", "notices/aXb/0", "notices/a_b/0", "notices/abc/1"]
        );
        // With LIKE, `_` and `%` would be wildcards and match aXb / abc too.
        assert_eq!(listed(db.list("notices/a_b/").await.unwrap()), ["notices/a_b/0"]);
        assert_eq!(listed(db.list("notices/a%").await.unwrap()), ["notices/a%c/1"]);
        assert!(db.list("runs/zzz").await.unwrap().is_empty());
        assert_eq!(db.list("").await.unwrap().len(), 7);
    }

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_upper_bound("runs/").as_deref(), Some("runs0"));
        assert_eq!(prefix_upper_bound("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
    }

    #[tokio::test]
    async fn send_receive_ack() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        db.send(QueueName::Deploy, "first", Duration::ZERO).await.unwrap();
        db.send(QueueName::Deploy, "second", Duration::ZERO).await.unwrap();
        db.send(QueueName::Smoke, "other queue", Duration::ZERO).await.unwrap();

        let got = db
            .receive(QueueName::Deploy, 10, Duration::from_secs(30))
            .await
            .unwrap();
        let bodies: Vec<&str> = got.iter().map(|d| d.body.as_str()).collect();
        assert_eq!(bodies, ["first", "second"]);
        assert!(got.iter().all(|d| d.receive_count == 1));
        assert_ne!(got[0].message_id, got[1].message_id);

        // Hidden while being worked on.
        assert!(
            db.receive(QueueName::Deploy, 10, Duration::from_secs(30))
                .await
                .unwrap()
                .is_empty()
        );
        for d in &got {
            db.ack(QueueName::Deploy, &d.receipt).await.unwrap();
        }
        let err = db.ack(QueueName::Deploy, &got[0].receipt).await.unwrap_err();
        assert!(matches!(err, QueueError::StaleReceipt(QueueName::Deploy)), "{err:?}");

        let smoke = db.receive(QueueName::Smoke, 1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(smoke.len(), 1);
        assert_eq!(smoke[0].body, "other queue");
        // A receipt only acks on its own queue.
        let err = db.ack(QueueName::Notify, &smoke[0].receipt).await.unwrap_err();
        assert!(matches!(err, QueueError::StaleReceipt(QueueName::Notify)), "{err:?}");
    }

    #[tokio::test]
    async fn receive_respects_max() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        for i in 0..3 {
            db.send(QueueName::Notify, &format!("m{i}"), Duration::ZERO)
                .await
                .unwrap();
        }
        let first = db.receive(QueueName::Notify, 2, Duration::from_secs(30)).await.unwrap();
        assert_eq!(first.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["m0", "m1"]);
        let rest = db.receive(QueueName::Notify, 2, Duration::from_secs(30)).await.unwrap();
        assert_eq!(rest.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["m2"]);
        assert!(
            db.receive(QueueName::Notify, 0, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// How long a message is hidden in the timing tests: long enough that a loaded machine
    /// still checks "hidden" in time, short enough to keep each test well under a second.
    const SHORT: Duration = Duration::from_millis(250);

    /// Whether `queue` shows nothing right now. `None` if the check came too late to mean
    /// anything (`since + SHORT` has passed on a very slow machine).
    async fn hidden(db: &SqliteBackend, queue: QueueName, since: std::time::Instant) -> Option<bool> {
        let got = db.receive(queue, 10, Duration::from_secs(30)).await.unwrap();
        (since.elapsed() < SHORT).then_some(got.is_empty())
    }

    #[tokio::test]
    async fn an_unacked_message_comes_back_after_its_visibility_timeout() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        db.send(QueueName::Smoke, "check", Duration::ZERO).await.unwrap();

        let since = std::time::Instant::now();
        let first = db.receive(QueueName::Smoke, 1, SHORT).await.unwrap();
        assert_eq!(first.len(), 1);
        let Some(hidden) = hidden(&db, QueueName::Smoke, since).await else {
            return; // too slow to tell
        };
        assert!(hidden, "received again before its visibility timeout ran out");

        tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
        let again = db.receive(QueueName::Smoke, 1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message_id, first[0].message_id);
        assert_eq!(again[0].body, "check");
        assert_eq!(again[0].receive_count, 2);
        assert_ne!(again[0].receipt, first[0].receipt);

        // The first consumer's receipt no longer acks or releases it.
        let err = db.ack(QueueName::Smoke, &first[0].receipt).await.unwrap_err();
        assert!(matches!(err, QueueError::StaleReceipt(_)), "{err:?}");
        let err = db
            .release(QueueName::Smoke, &first[0].receipt, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::StaleReceipt(_)), "{err:?}");
        // The second one's does, for good.
        db.ack(QueueName::Smoke, &again[0].receipt).await.unwrap();
        db.release(QueueName::Smoke, &again[0].receipt, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            db.receive(QueueName::Smoke, 1, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_delayed_message_is_hidden_until_its_delay_passes() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let since = std::time::Instant::now();
        db.send(QueueName::Deploy, "later", SHORT).await.unwrap();
        let Some(hidden) = hidden(&db, QueueName::Deploy, since).await else {
            return; // too slow to tell
        };
        assert!(hidden, "received before its delay passed");

        tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
        let got = db.receive(QueueName::Deploy, 1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "later");
    }

    #[tokio::test]
    async fn extend_keeps_a_message_hidden_and_its_receipt_valid() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        db.send(QueueName::Deploy, "long job", Duration::ZERO).await.unwrap();
        let got = db.receive(QueueName::Deploy, 1, SHORT).await.unwrap();
        db.extend(QueueName::Deploy, &got[0].receipt, Duration::from_secs(30))
            .await
            .unwrap();
        tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
        assert!(
            db.receive(QueueName::Deploy, 1, SHORT).await.unwrap().is_empty(),
            "still hidden"
        );
        db.ack(QueueName::Deploy, &got[0].receipt).await.unwrap();
        assert!(matches!(
            db.extend(QueueName::Deploy, &got[0].receipt, SHORT).await,
            Err(QueueError::StaleReceipt(_))
        ));
    }

    /// A worker idling on an empty queue is woken by a message sent in this process, and one
    /// sent before it started idling is not missed; other queues' messages do not wake it.
    #[tokio::test]
    async fn idling_ends_when_a_message_is_sent_to_the_queue() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let forever = Duration::from_secs(3600);
        let bound = Duration::from_secs(30);

        let idle = tokio::spawn({
            let db = db.clone();
            async move { db.idle(QueueName::Deploy, forever).await }
        });
        tokio::task::yield_now().await;
        db.send(QueueName::Deploy, "next", Duration::ZERO).await.unwrap();
        tokio::time::timeout(bound, idle)
            .await
            .expect("woken by the send")
            .unwrap();

        // Sent before the wait began: the permit is kept.
        db.send_many(QueueName::Smoke, &["early".to_owned()]).await.unwrap();
        tokio::time::timeout(bound, db.idle(QueueName::Smoke, forever))
            .await
            .expect("the earlier send is remembered");

        // A delayed message, or another queue's, leaves the wait to run its course.
        db.send(QueueName::Deploy, "later", Duration::from_secs(60))
            .await
            .unwrap();
        db.send(QueueName::Smoke, "elsewhere", Duration::ZERO).await.unwrap();
        let short = Duration::from_millis(100);
        assert!(
            tokio::time::timeout(short, db.idle(QueueName::Deploy, forever))
                .await
                .is_err(),
            "nothing ready on the deploy queue: still waiting"
        );
        tokio::time::timeout(bound, db.idle(QueueName::Deploy, short))
            .await
            .expect("at_most ends the wait");
    }

    #[tokio::test]
    async fn release_makes_it_visible_after_the_delay_and_spends_the_receipt() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        db.send(QueueName::Deploy, "retry me", Duration::ZERO).await.unwrap();
        let got = db.receive(QueueName::Deploy, 1, Duration::from_secs(30)).await.unwrap();
        let since = std::time::Instant::now();
        db.release(QueueName::Deploy, &got[0].receipt, SHORT).await.unwrap();
        let err = db.ack(QueueName::Deploy, &got[0].receipt).await.unwrap_err();
        assert!(matches!(err, QueueError::StaleReceipt(_)), "{err:?}");
        let Some(hidden) = hidden(&db, QueueName::Deploy, since).await else {
            return; // too slow to tell
        };
        assert!(hidden, "received before the release delay passed");

        tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
        let again = db.receive(QueueName::Deploy, 1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
    }

    #[tokio::test]
    async fn a_message_delivered_max_times_moves_to_dead_letters() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap().with_max_receives(3);
        db.send(QueueName::Notify, "poison", Duration::ZERO).await.unwrap();

        let mut poison_id = String::new();
        for attempt in 1..=3 {
            let got = db.receive(QueueName::Notify, 1, Duration::from_secs(30)).await.unwrap();
            assert_eq!(got.len(), 1, "attempt {attempt}");
            assert_eq!(got[0].body, "poison");
            assert_eq!(got[0].receive_count, attempt);
            poison_id.clone_from(&got[0].message_id);
            db.release(QueueName::Notify, &got[0].receipt, Duration::ZERO)
                .await
                .unwrap();
        }
        assert!(db.dead_letters().await.unwrap().is_empty());

        db.send(QueueName::Notify, "healthy", Duration::ZERO).await.unwrap();
        // The fourth receive dead-letters the poison message and still delivers the next one.
        let got = db
            .receive(QueueName::Notify, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["healthy"]);
        assert_eq!(got[0].receive_count, 1);

        let dead = db.dead_letters().await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message_id, poison_id);
        assert_eq!(dead[0].queue, QueueName::Notify);
        assert_eq!(dead[0].body, "poison");
        assert_eq!(dead[0].receive_count, 3);
        assert!(dead[0].sent_at <= dead[0].dead_at);
        assert!(
            db.receive(QueueName::Notify, 10, Duration::ZERO)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_backends_never_take_the_same_message() {
        let (_dir, path) = temp_db();
        let a = SqliteBackend::open(&path).unwrap();
        let b = SqliteBackend::open(&path).unwrap();
        for i in 0..30 {
            a.send(QueueName::Deploy, &format!("m{i}"), Duration::ZERO)
                .await
                .unwrap();
        }
        let drain = |db: SqliteBackend| {
            tokio::spawn(async move {
                let mut taken = Vec::new();
                loop {
                    let got = db.receive(QueueName::Deploy, 3, Duration::from_secs(30)).await.unwrap();
                    if got.is_empty() {
                        return taken;
                    }
                    taken.extend(got.into_iter().map(|d| d.body));
                }
            })
        };
        let (from_a, from_b) = (drain(a), drain(b));
        let mut all = from_a.await.unwrap();
        all.extend(from_b.await.unwrap());
        all.sort();
        let mut expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
        expected.sort();
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn queued_work_and_objects_survive_a_restart() {
        let (_dir, path) = temp_db();
        let k = key(&format!("runs/shop-{SHA}.json"));
        {
            let db = SqliteBackend::open(&path).unwrap();
            db.send(QueueName::Deploy, "deploy shop", Duration::ZERO).await.unwrap();
            db.create(&k, Bytes::from_static(b"{\"status\":\"running\"}"))
                .await
                .unwrap();
        }
        let db = SqliteBackend::open(&path).unwrap();
        let got = db
            .receive(QueueName::Deploy, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "deploy shop");
        let stored = db.get(&k).await.unwrap().unwrap();
        assert_eq!(stored.value, Bytes::from_static(b"{\"status\":\"running\"}"));
        assert_eq!(db.list(StoreKey::RUNS).await.unwrap(), [k]);
    }

    #[test]
    fn opening_something_that_is_not_a_database_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = SqliteBackend::open(&path).unwrap_err();
        assert!(matches!(err, SqliteError::Open { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.db"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn a_newer_schema_is_refused_and_the_file_left_unchanged() {
        let (_dir, path) = temp_db();
        drop(SqliteBackend::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = SqliteBackend::open(&path).unwrap_err();
        assert!(matches!(err, SqliteError::NewerSchema { found: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("upgrade slipway"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn the_migrations_are_valid_and_counted_by_the_schema_version() {
        migrations().validate().unwrap();
        let mut conn = Connection::open_in_memory().unwrap();
        migrations().to_latest(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn a_new_file_gets_the_latest_schema() {
        let (_dir, path) = temp_db();
        drop(SqliteBackend::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), SCHEMA_VERSION);
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["dead_letters", "messages", "objects"]);
    }

    /// A file whose tables exist but whose version was never set upgrades in place.
    #[tokio::test]
    async fn tables_without_a_version_are_kept_and_versioned() {
        let (_dir, path) = temp_db();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute(INSERT_MESSAGE, params!["m-1", "deploy", "deploy shop", 0, 0])
                .unwrap();
            assert_eq!(user_version(&conn).unwrap(), 0);
        }
        let db = SqliteBackend::open(&path).unwrap();
        let got = db
            .receive(QueueName::Deploy, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "deploy shop");
        drop(db);
        assert_eq!(user_version(&Connection::open(&path).unwrap()).unwrap(), SCHEMA_VERSION);
    }

    /// The database's write lock, held by a connection of its own until released: the
    /// writer's next transaction waits for it, and requests queue up behind.
    struct WriteLock(Connection);

    impl WriteLock {
        fn take(path: &Path) -> Self {
            let conn = Connection::open(path).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            Self(conn)
        }

        fn release(self) {
            self.0.execute_batch("COMMIT").unwrap();
        }
    }

    /// Waits until the writer's queue holds `n` requests, or 2 seconds have passed.
    async fn until_queued(db: &SqliteBackend, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while db.workers.queued_writes() != n && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Sends the writer a request while a [`WriteLock`] is held, and waits until it has
    /// taken it: the writer then waits for the lock, so what is sent next forms the next batch.
    async fn park_the_writer(db: &SqliteBackend) {
        // Polled once, which sends the request; nobody waits for its answer.
        let _ = tokio::time::timeout(Duration::ZERO, db.remove(&key("notices/park/0"))).await;
        until_queued(db, 0).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_conditional_writes_share_transactions_and_each_gets_its_own_answer() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let stats = db.stats();
        let contested = key("notices/contested/0");
        let v1 = db.create(&contested, Bytes::from_static(b"start")).await.unwrap();

        let lock = WriteLock::take(&path);
        park_the_writer(&db).await;
        let before = stats.committed_batches();
        // 200 tasks create 50 keys, four tasks to a key; 50 more replace one object, all
        // expecting version 1.
        let creates: Vec<_> = (0..200u64)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let k = key(&format!("notices/k{}/0", i % 50));
                    (i, db.create(&k, counter(i)).await)
                })
            })
            .collect();
        let replaces: Vec<_> = (0..50u64)
            .map(|i| {
                let (db, k, v1) = (db.clone(), contested.clone(), v1.clone());
                tokio::spawn(async move { (i, db.replace(&k, counter(i), &v1).await) })
            })
            .collect();
        until_queued(&db, 250).await;
        lock.release();

        let mut winners = std::collections::BTreeMap::new();
        for task in creates {
            match task.await.unwrap() {
                (i, Ok(version)) => {
                    assert_eq!(version.0, "1");
                    assert!(winners.insert(i % 50, i).is_none(), "two creates of k{} won", i % 50);
                }
                (_, Err(StoreError::AlreadyExists(_))) => {}
                (i, Err(e)) => panic!("create {i}: {e:?}"),
            }
        }
        assert_eq!(winners.len(), 50);
        for (n, winner) in winners {
            assert_eq!(read_counter(&db, &key(&format!("notices/k{n}/0"))).await, winner);
        }
        let mut replaced = Vec::new();
        for task in replaces {
            match task.await.unwrap() {
                (i, Ok(version)) => replaced.push((i, version)),
                (_, Err(StoreError::Conflict(_))) => {}
                (i, Err(e)) => panic!("replace {i}: {e:?}"),
            }
        }
        let [(winner, version)] = replaced.as_slice() else {
            panic!("exactly one replace should win: {replaced:?}");
        };
        assert_eq!(version.0, "2");
        assert_eq!(read_counter(&db, &contested).await, *winner);

        // The parked request and the 250 behind it: one or two commits (three if the writer
        // took a few of the 250 along with the parked one), not 251.
        let batches = stats.committed_batches() - before;
        assert!((1..=3).contains(&batches), "{batches} commits for 251 writes");
    }

    #[tokio::test]
    async fn a_conflict_or_a_failed_write_in_a_batch_does_not_fail_its_neighbours() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let stats = db.stats();
        let existing = key("notices/existing/0");
        let v1 = db.create(&existing, Bytes::from_static(b"one")).await.unwrap();
        let (fresh, half, after) = (key("notices/fresh/0"), key("notices/half/0"), key("notices/after/0"));

        let lock = WriteLock::take(&path);
        park_the_writer(&db).await;
        let before = stats.committed_batches();
        // `join!` polls in order, so the requests queue in this order.
        let queued = &db;
        let stale_version = Version("7".to_owned());
        let unknown_receipt = Receipt("no such receipt".to_owned());
        let (created, created_again, stale, replaced, replaced_again, failed, created_after, acked, ()) = tokio::join!(
            db.create(&fresh, Bytes::from_static(b"a")),
            db.create(&fresh, Bytes::from_static(b"b")),
            db.replace(&existing, Bytes::from_static(b"stale"), &stale_version),
            db.replace(&existing, Bytes::from_static(b"two"), &v1),
            db.replace(&existing, Bytes::from_static(b"lost"), &v1),
            // Writes one row, then fails on a second one with the same key.
            db.workers.write(|conn| {
                let insert = "INSERT INTO objects (key, value, version) VALUES ('notices/half/0', x'00', 1)";
                conn.execute(insert, [])?;
                conn.execute(insert, [])
            }),
            db.create(&after, Bytes::from_static(b"c")),
            db.ack(QueueName::Deploy, &unknown_receipt),
            async move {
                until_queued(queued, 8).await;
                lock.release();
            },
        );

        assert_eq!(created.unwrap().0, "1");
        assert!(
            matches!(created_again, Err(StoreError::AlreadyExists(_))),
            "{created_again:?}"
        );
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        assert_eq!(replaced.unwrap().0, "2");
        assert!(
            matches!(replaced_again, Err(StoreError::Conflict(_))),
            "{replaced_again:?}"
        );
        let failed = failed.unwrap_err();
        assert!(
            matches!(
                failed.downcast_ref::<rusqlite::Error>(),
                Some(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation
            ),
            "{failed:?}"
        );
        assert_eq!(created_after.unwrap().0, "1");
        assert!(
            matches!(acked, Err(QueueError::StaleReceipt(QueueName::Deploy))),
            "{acked:?}"
        );

        assert_eq!(db.get(&fresh).await.unwrap().unwrap().value, Bytes::from_static(b"a"));
        let now = db.get(&existing).await.unwrap().unwrap();
        assert_eq!((now.value, now.version.0.as_str()), (Bytes::from_static(b"two"), "2"));
        assert!(
            db.get(&half).await.unwrap().is_none(),
            "the failed request's first row was rolled back"
        );
        assert!(db.get(&after).await.unwrap().is_some());
        let batches = stats.committed_batches() - before;
        assert!((1..=2).contains(&batches), "{batches} commits");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_read_sees_every_write_acknowledged_before_it() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        // Writer tasks hand each acknowledged write to a checker task, which must see it at once.
        let (acked, mut to_check) = tokio::sync::mpsc::unbounded_channel();
        let writers: Vec<_> = (0..40)
            .map(|w| {
                let (db, acked) = (db.clone(), acked.clone());
                tokio::spawn(async move {
                    for i in 0..10 {
                        let k = key(&format!("notices/w{w}-{i}/0"));
                        let v1 = db.create(&k, counter(1)).await.unwrap();
                        let v2 = db.replace(&k, counter(2), &v1).await.unwrap();
                        db.send(QueueName::Notify, &format!("w{w}-{i}"), Duration::ZERO)
                            .await
                            .unwrap();
                        acked.send((k, v2)).unwrap();
                    }
                })
            })
            .collect();
        drop(acked);
        let checker = tokio::spawn({
            let db = db.clone();
            async move {
                let mut checked = 0;
                while let Some((k, version)) = to_check.recv().await {
                    let got = db.get(&k).await.unwrap().expect("an acknowledged create is visible");
                    assert_eq!(got.version, version, "{k}: an acknowledged replace is visible");
                    assert!(db.list("notices/").await.unwrap().contains(&k), "{k} listed");
                    assert!(
                        !db.receive(QueueName::Notify, 1, Duration::from_secs(30))
                            .await
                            .unwrap()
                            .is_empty(),
                        "an acknowledged send can be received"
                    );
                    checked += 1;
                }
                checked
            }
        });
        for writer in writers {
            writer.await.unwrap();
        }
        assert_eq!(checker.await.unwrap(), 400);
    }

    #[tokio::test]
    async fn dropping_the_last_clone_stops_the_threads_after_the_queued_writes() {
        let (_dir, path) = temp_db();
        // Many opens, as tests and restarts do: none leaves a thread behind.
        for round in 0..20 {
            let db = SqliteBackend::open(&path).unwrap();
            let stats = db.stats();
            assert_eq!(stats.running_threads(), 2 + READERS);
            let clone = db.clone();
            drop(db);
            // One clone is enough to keep the threads serving.
            let k = key(&format!("notices/round-{round}/0"));
            clone.create(&k, Bytes::from_static(b"{}")).await.unwrap();
            assert!(clone.get(&k).await.unwrap().is_some());
            assert_eq!(stats.running_threads(), 2 + READERS);
            // A write whose caller stopped waiting is still applied before the writer stops.
            let abandoned = key(&format!("notices/abandoned-{round}/0"));
            let _ = tokio::time::timeout(Duration::ZERO, clone.create(&abandoned, Bytes::from_static(b"{}"))).await;
            drop(clone);
            assert_eq!(stats.running_threads(), 0, "round {round}");
            let reopened = SqliteBackend::open(&path).unwrap();
            assert!(reopened.get(&abandoned).await.unwrap().is_some(), "round {round}");
        }
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database_while_the_writer_goes_on() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let stats = db.stats();
        let wal = path.with_extension("db-wal");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        // 4 MiB in 64 KiB objects, far past SQLite's own checkpoint threshold (1,000 pages).
        let value = Bytes::from(vec![b'x'; 64 * 1024]);
        for i in 0..64 {
            db.create(&key(&format!("notices/big-{i}/0")), value.clone())
                .await
                .unwrap();
        }
        let started = std::time::Instant::now();
        while size(&path) < 4 * 1024 * 1024 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the database file is {} bytes and the WAL {} bytes after 10 s; {} checkpoints",
                size(&path),
                size(&wal),
                stats.checkpoints()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stats.checkpoints() > 0);
        // What was checkpointed reads back, and the writer went on meanwhile.
        let last = key("notices/big-63/0");
        assert_eq!(db.get(&last).await.unwrap().unwrap().value.len(), value.len());
        db.create(&key("notices/after/0"), Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wal_past_its_limit_is_started_over_while_the_writes_go_on() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let (_dir, path) = temp_db();
        // A limit of 64 frames (256 KiB): one of these objects is 17.
        let db = SqliteBackend::open_with(&path, 64).unwrap();
        let stats = db.stats();
        let wal = path.with_extension("db-wal");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let value = Bytes::from(vec![b'x'; 64 * 1024]);
        // Eight writers overwrite an object each for 1.5 s, so the writer never pauses and
        // the checkpointer never catches up: without a start over, the WAL holds every byte
        // written (some 100 MiB here).
        let written = Arc::new(AtomicU64::new(0));
        let until = std::time::Instant::now() + Duration::from_millis(1500);
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (db, value, written) = (db.clone(), value.clone(), written.clone());
                tokio::spawn(async move {
                    let key = key(&format!("notices/churn-{i}/0"));
                    let mut version = db.create(&key, value.clone()).await.unwrap();
                    while std::time::Instant::now() < until {
                        version = db.replace(&key, value.clone(), &version).await.unwrap();
                        written.fetch_add(value.len() as u64, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut largest = 0;
        while std::time::Instant::now() < until {
            largest = largest.max(size(&wal));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let written = written.load(Ordering::Relaxed);
        assert!(
            stats.wal_restarts() >= 1,
            "never started over: the WAL is {largest} bytes"
        );
        // What it held at most is what a checkpointer's rest writes, not the whole burst.
        assert!(
            largest < written / 2,
            "the WAL grew to {largest} bytes of {written} written ({} start-overs)",
            stats.wal_restarts()
        );
        // Once the burst is over, the file is cut back to the limit.
        let quiet = std::time::Instant::now();
        while size(&wal) > 256 * 1024 {
            assert!(
                quiet.elapsed() < Duration::from_secs(10),
                "the WAL is still {} bytes",
                size(&wal)
            );
            db.create(
                &key(&format!("notices/after-{}/0", quiet.elapsed().as_micros())),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn send_many_stores_every_message_in_order() {
        let (_dir, path) = temp_db();
        let db = SqliteBackend::open(&path).unwrap();
        let bodies: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        db.send_many(QueueName::Notify, &bodies).await.unwrap();
        db.send_many(QueueName::Notify, &[]).await.unwrap();
        let got = db
            .receive(QueueName::Notify, 10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(got.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), bodies);
    }
}
