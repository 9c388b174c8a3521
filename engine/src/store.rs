//! Streams and their publish keys, kept in SQLite at `<data_dir>/zerocast.db`.
//!
//! The database is opened in WAL mode with a busy timeout, so the CLI (`zerocast streams ...`)
//! and a running server can use it at the same time. The schema version lives in SQLite's
//! `user_version`; [`Store::open`] applies any missing migrations and refuses a database written
//! by a newer zerocast.
//!
//! SQLite calls block, so shards never call [`Store`] directly: [`spawn_store_thread`] moves it
//! onto a dedicated thread and returns a [`StoreHandle`] whose async methods work on any
//! executor (glommio included), and which answers [`StoreError::Busy`] instead of blocking when
//! the thread falls behind.
//!
//! Keys are secrets: [`StreamRecord`]'s `Debug` redacts them, and [`Store::authorize_publish`]
//! compares a candidate against every stored key in constant time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rand::RngCore as _;
use rusqlite::{params, Connection, OptionalExtension as _};
use subtle::ConstantTimeEq as _;

/// The database file name inside the data directory.
pub const DB_FILE: &str = "zerocast.db";

/// Name of the stream that [`Store::ensure_demo`] creates on first start.
pub const DEMO_STREAM: &str = "demo";

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests queued for the store thread before [`StoreHandle`] answers [`StoreError::Busy`].
const QUEUE_CAPACITY: usize = 1024;

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE streams (
        name       TEXT    NOT NULL PRIMARY KEY,
        key        TEXT    NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    ) STRICT;",
    // `record`: 1 or 0 for the stream's own choice, NULL to follow `recording.record`.
    // `recordings` has no foreign key to `streams`: with `auth.publish = open` a stream need
    // not be stored, and deleting a stream keeps its recordings listed.
    "ALTER TABLE streams ADD COLUMN record INTEGER;
    CREATE TABLE recordings (
        id          INTEGER PRIMARY KEY,
        stream      TEXT    NOT NULL,
        path        TEXT    NOT NULL UNIQUE,
        format      TEXT    NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        duration_ms INTEGER NOT NULL DEFAULT 0,
        bytes       INTEGER NOT NULL DEFAULT 0,
        status      TEXT    NOT NULL,
        reason      TEXT
    ) STRICT;
    CREATE INDEX recordings_by_stream ON recordings (stream, started_at);",
];

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened or prepared.
    #[error("cannot open database {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer zerocast whose schema this one does not know.
    #[error("database schema version {found} is newer than this zerocast supports ({supported})")]
    SchemaTooNew {
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// A stream name breaks the naming rules.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A stream with this name already exists.
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    /// No stream has this name.
    #[error("no stream named {0:?}")]
    StreamNotFound(String),
    /// The store thread's queue is full; the caller should refuse or retry later.
    #[error("store is busy (request queue full)")]
    Busy,
    /// The store thread has stopped.
    #[error("store thread has stopped")]
    Closed,
}

/// One stream: its public name (used to play) and secret key (used to publish).
#[derive(Clone, PartialEq, Eq)]
pub struct StreamRecord {
    /// Public name.
    pub name: String,
    /// Secret publish key. Never log it; `Debug` prints it redacted.
    pub key: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

impl fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRecord")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// What [`Store::authorize_publish`] grants: the stream and whether it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishGrant {
    /// The stream's public name.
    pub name: String,
    /// The stream's own recording choice; `None` follows `recording.record`.
    pub record: Option<bool>,
}

/// Where a recording stands, as kept in the `recordings` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingStatus {
    /// Being written; after a crash, the row describes the last completed fragment.
    Recording,
    /// Finished and closed cleanly.
    Complete,
    /// Stopped by an error (a write error, a disk that could not keep up); the file plays up
    /// to its last completed fragment.
    Failed,
    /// Found still `recording` when the server started: the previous process died.
    Interrupted,
}

impl RecordingStatus {
    /// The value stored in the database and printed by the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Complete => "complete",
            RecordingStatus::Failed => "failed",
            RecordingStatus::Interrupted => "interrupted",
        }
    }
}

/// One row of the recordings index. `path` identifies the row: an update with the same path
/// replaces the counters, so updates may arrive late or twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    /// Stream name.
    pub stream: String,
    /// The file, absolute when the data directory could be resolved.
    pub path: String,
    /// `fmp4` or `flv`.
    pub format: String,
    /// When the file was opened, unix seconds.
    pub started_at: i64,
    /// When it was closed, unix seconds; `None` while it is written (or after a crash).
    pub ended_at: Option<i64>,
    /// Media time in the file, milliseconds (completed fragments only).
    pub duration_ms: i64,
    /// Bytes in the file (completed fragments only).
    pub bytes: i64,
    /// Where it stands.
    pub status: RecordingStatus,
    /// Why it ended, when it did.
    pub reason: Option<String>,
}

fn row_to_recording(row: &rusqlite::Row<'_>) -> rusqlite::Result<RecordingRow> {
    let status: String = row.get(7)?;
    let status = match status.as_str() {
        "complete" => RecordingStatus::Complete,
        "failed" => RecordingStatus::Failed,
        "interrupted" => RecordingStatus::Interrupted,
        _ => RecordingStatus::Recording,
    };
    Ok(RecordingRow {
        stream: row.get(0)?,
        path: row.get(1)?,
        format: row.get(2)?,
        started_at: row.get(3)?,
        ended_at: row.get(4)?,
        duration_ms: row.get(5)?,
        bytes: row.get(6)?,
        status,
        reason: row.get(8)?,
    })
}

/// Checks a stream name: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
///
/// The alphabet keeps names safe in URLs, file names and log lines without escaping, and rules
/// out `.` and `/` so a name can never walk a path.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if name.len() > 64 {
        return Err(format!(
            "is {} characters long; at most 64 are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// A fresh publish key: 24 bytes (192 bits) from the OS generator, base64url without padding
/// (32 characters of `A-Z a-z 0-9 - _`, safe to paste into OBS and URLs).
pub fn generate_key() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_unix() -> i64 {
    // A clock before 1970 is a misconfigured host; 0 keeps the record usable.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StreamRecord> {
    Ok(StreamRecord {
        name: row.get(0)?,
        key: row.get(1)?,
        created_at: row.get(2)?,
    })
}

/// The stream database. Blocking; see [`spawn_store_thread`] for use from async code.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `data_dir/zerocast.db` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // WAL lets the CLI write while the server reads, without either seeing SQLITE_BUSY for
        // plain reads.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                mode,
                "SQLite refused WAL mode; CLI and server may block each other"
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })?;
        Ok(Store { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a stream with a fresh key.
    pub fn create_stream(&self, name: &str) -> Result<StreamRecord, StoreError> {
        self.create_stream_recording(name, None)
    }

    /// Creates a stream with a fresh key and its `record` flag (`None`: follow
    /// `recording.record`).
    pub fn create_stream_recording(
        &self,
        name: &str,
        recording: Option<bool>,
    ) -> Result<StreamRecord, StoreError> {
        validate_name(name).map_err(|reason| StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let record = StreamRecord {
            name: name.to_owned(),
            key: generate_key(),
            created_at: now_unix(),
        };
        // One statement, so two concurrent creators cannot both succeed.
        let inserted = self.conn.execute(
            "INSERT INTO streams (name, key, created_at, record) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO NOTHING",
            params![record.name, record.key, record.created_at, recording],
        )?;
        if inserted == 0 {
            return Err(StoreError::StreamExists(name.to_owned()));
        }
        Ok(record)
    }

    /// The stream called `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<StreamRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, key, created_at FROM streams WHERE name = ?1",
                [name],
                row_to_record,
            )
            .optional()?)
    }

    /// Every stream, oldest first.
    pub fn list(&self) -> Result<Vec<StreamRecord>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, key, created_at FROM streams ORDER BY created_at, name",
        )?;
        let rows = stmt.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes the stream called `name`; false if there was none.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM streams WHERE name = ?1", [name])?
            > 0)
    }

    /// Gives the stream called `name` a fresh key; the old key stops working at once.
    pub fn rotate_key(&self, name: &str) -> Result<StreamRecord, StoreError> {
        let key = generate_key();
        let record = self
            .conn
            .query_row(
                "UPDATE streams SET key = ?1 WHERE name = ?2 RETURNING name, key, created_at",
                [&key, name],
                row_to_record,
            )
            .optional()?;
        record.ok_or_else(|| StoreError::StreamNotFound(name.to_owned()))
    }

    /// Makes sure there is something to publish to on first start.
    ///
    /// - `demo` exists: returns it, with `false`.
    /// - The store has no streams at all: creates `demo` and returns it, with `true`.
    /// - Other streams exist but `demo` does not: returns `None`. The operator deleted `demo`
    ///   on purpose, and recreating it on every start would undo that.
    pub fn ensure_demo(&self) -> Result<Option<(StreamRecord, bool)>, StoreError> {
        let record = StreamRecord {
            name: DEMO_STREAM.to_owned(),
            key: generate_key(),
            created_at: now_unix(),
        };
        // The emptiness check and the insert are one statement, so a CLI racing a starting
        // server cannot slip a stream in between.
        let inserted = self.conn.execute(
            "INSERT INTO streams (name, key, created_at)
             SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM streams)",
            params![record.name, record.key, record.created_at],
        )?;
        if inserted == 1 {
            return Ok(Some((record, true)));
        }
        Ok(self.get(DEMO_STREAM)?.map(|r| (r, false)))
    }

    /// The name of the stream whose key is `key`, if any.
    ///
    /// Reads every key and compares each with [`subtle::ConstantTimeEq`], without an SQL `WHERE`
    /// on the key and without stopping at a match, so response time does not depend on how much
    /// of a guess is right or where the matching row sits.
    ///
    /// The grant also says whether the stream records (its `record` flag).
    pub fn authorize_publish(&self, key: &str) -> Result<Option<PublishGrant>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, key, record FROM streams")?;
        let mut rows = stmt.query([])?;
        let mut found = None;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let stored: String = row.get(1)?;
            let record: Option<bool> = row.get(2)?;
            let equal: bool = stored.as_bytes().ct_eq(key.as_bytes()).into();
            if equal {
                found = Some(PublishGrant { name, record });
            }
        }
        Ok(found)
    }

    /// Sets whether `name` records: `Some(true)`/`Some(false)`, or `None` to follow
    /// `recording.record`.
    pub fn set_record(&self, name: &str, record: Option<bool>) -> Result<(), StoreError> {
        let changed = self.conn.execute(
            "UPDATE streams SET record = ?1 WHERE name = ?2",
            params![record, name],
        )?;
        if changed == 0 {
            return Err(StoreError::StreamNotFound(name.to_owned()));
        }
        Ok(())
    }

    /// The `record` flag of every stream, by name (`None`: follows `recording.record`).
    pub fn record_flags(&self) -> Result<Vec<(String, Option<bool>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, record FROM streams ORDER BY created_at, name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Creates or updates the index row of the recording at `row.path`.
    pub fn index_recording(&self, row: &RecordingRow) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO recordings
                 (stream, path, format, started_at, ended_at, duration_ms, bytes, status, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (path) DO UPDATE SET
                 ended_at = excluded.ended_at, duration_ms = excluded.duration_ms,
                 bytes = excluded.bytes, status = excluded.status, reason = excluded.reason",
            params![
                row.stream,
                row.path,
                row.format,
                row.started_at,
                row.ended_at,
                row.duration_ms,
                row.bytes,
                row.status.as_str(),
                row.reason,
            ],
        )?;
        Ok(())
    }

    /// Recordings, oldest first; only those of `stream` when given.
    pub fn recordings(&self, stream: Option<&str>) -> Result<Vec<RecordingRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT stream, path, format, started_at, ended_at, duration_ms, bytes, status, reason
             FROM recordings WHERE ?1 IS NULL OR stream = ?1 ORDER BY started_at, id",
        )?;
        let rows = stmt.query_map([stream], row_to_recording)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks recordings still `recording` as `interrupted`: called when a server starts, so they
    /// are those a previous process left when it died. Returns how many there were.
    pub fn mark_interrupted_recordings(&self) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE recordings SET status = 'interrupted',
                 reason = 'the server stopped without closing it'
             WHERE status = 'recording'",
            [],
        )?)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = MIGRATIONS.len() as i64;
    // IMMEDIATE takes the write lock before reading the version, so two processes opening a
    // fresh database cannot both run the same migration.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > supported {
        return Err(StoreError::SchemaTooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

type Reply<T> = futures_channel::oneshot::Sender<Result<T, StoreError>>;

enum Request {
    AuthorizePublish {
        key: String,
        reply: Reply<Option<PublishGrant>>,
    },
    IndexRecording {
        row: RecordingRow,
        /// `None`: nobody waits for the answer.
        reply: Option<Reply<()>>,
    },
    Get {
        name: String,
        reply: Reply<Option<StreamRecord>>,
    },
    /// Wakes the thread so it notices the stop flag.
    Wake,
}

/// An async, cloneable front for a [`Store`] running on its own thread.
///
/// The thread stops when [`shutdown`](Self::shutdown) is called or the last handle is dropped;
/// requests still queued then are answered with [`StoreError::Closed`].
#[derive(Clone)]
pub struct StoreHandle {
    tx: flume::Sender<Request>,
    stop: Arc<AtomicBool>,
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHandle")
            .field("queued", &self.tx.len())
            .finish_non_exhaustive()
    }
}

/// Moves `store` onto a new thread (`zerocast-store`) and returns a handle to it.
///
/// # Panics
/// If the OS cannot create a thread, as [`std::thread::spawn`] does.
pub fn spawn_store_thread(store: Store) -> StoreHandle {
    let (tx, rx) = flume::bounded(QUEUE_CAPACITY);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name("zerocast-store".to_owned())
        .spawn(move || serve_requests(&store, &rx, &thread_stop))
        // Failing to create one thread at startup leaves nothing sensible to run.
        .expect("cannot spawn the store thread");
    StoreHandle { tx, stop }
}

fn serve_requests(store: &Store, rx: &flume::Receiver<Request>, stop: &AtomicBool) {
    // Ends when every handle is dropped (recv fails) or on shutdown. Dropping the receiver drops
    // queued reply senders, which callers see as `Closed`.
    while let Ok(request) = rx.recv() {
        if stop.load(Ordering::Acquire) {
            break;
        }
        // A caller that gave up has dropped its receiver; the failed send is harmless.
        match request {
            Request::AuthorizePublish { key, reply } => {
                let _ = reply.send(store.authorize_publish(&key));
            }
            Request::Get { name, reply } => {
                let _ = reply.send(store.get(&name));
            }
            Request::IndexRecording { row, reply } => {
                let result = store.index_recording(&row);
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            tracing::warn!(path = %row.path, "recordings index not updated: {e}");
                        }
                    }
                }
            }
            Request::Wake => {}
        }
    }
    tracing::debug!("store thread stopped");
}

impl StoreHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = futures_channel::oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            flume::TrySendError::Full(_) => StoreError::Busy,
            flume::TrySendError::Disconnected(_) => StoreError::Closed,
        })?;
        answer.await.map_err(|_canceled| StoreError::Closed)?
    }

    /// See [`Store::authorize_publish`].
    pub async fn authorize_publish(&self, key: String) -> Result<Option<PublishGrant>, StoreError> {
        self.call(|reply| Request::AuthorizePublish { key, reply })
            .await
    }

    /// See [`Store::get`].
    pub async fn get(&self, name: String) -> Result<Option<StreamRecord>, StoreError> {
        self.call(|reply| Request::Get { name, reply }).await
    }

    /// Queues an update of the recordings index ([`Store::index_recording`]) without waiting
    /// for it: [`StoreError::Busy`] when the queue is full. For any thread or executor.
    pub fn index_recording(&self, row: RecordingRow) -> Result<(), StoreError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.tx
            .try_send(Request::IndexRecording { row, reply: None })
            .map_err(|e| match e {
                flume::TrySendError::Full(_) => StoreError::Busy,
                flume::TrySendError::Disconnected(_) => StoreError::Closed,
            })
    }

    /// Updates the recordings index and blocks until the row is written. For plain threads
    /// only (the recorder's last word on a file), never for a shard.
    pub fn index_recording_blocking(&self, row: RecordingRow) -> Result<(), StoreError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = futures_channel::oneshot::channel();
        self.tx
            .send(Request::IndexRecording {
                row,
                reply: Some(reply),
            })
            .map_err(|_| StoreError::Closed)?;
        futures_lite::future::block_on(answer).map_err(|_canceled| StoreError::Closed)?
    }

    /// Asks the store thread to stop after its current request. Returns at once; later calls on
    /// any clone of this handle answer [`StoreError::Closed`].
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        // If the queue is full the thread is busy and will see the flag after the next request.
        let _ = self.tx.try_send(Request::Wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        (dir, store)
    }

    #[test]
    fn create_list_rotate_delete() {
        let (_dir, store) = temp_store();
        let a = store.create_stream("alpha").unwrap();
        let b = store.create_stream("beta_2-x").unwrap();
        assert_eq!(store.get("alpha").unwrap(), Some(a.clone()));
        assert_eq!(store.get("gamma").unwrap(), None);
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["alpha", "beta_2-x"]);

        let rotated = store.rotate_key("alpha").unwrap();
        assert_ne!(rotated.key, a.key);
        assert_eq!(rotated.created_at, a.created_at);
        assert_eq!(store.get("alpha").unwrap().unwrap().key, rotated.key);
        assert!(matches!(
            store.rotate_key("gamma"),
            Err(StoreError::StreamNotFound(_))
        ));

        assert!(store.delete("beta_2-x").unwrap());
        assert!(!store.delete("beta_2-x").unwrap());
        assert_eq!(store.get(&b.name).unwrap(), None);
    }

    #[test]
    fn names_are_unique_and_checked() {
        let (_dir, store) = temp_store();
        store.create_stream("x").unwrap();
        assert!(matches!(
            store.create_stream("x"),
            Err(StoreError::StreamExists(_))
        ));
        for bad in ["", "a.b", "a/b", "..", "sp ace", "ünï", &"n".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
            assert!(matches!(
                store.create_stream(bad),
                Err(StoreError::InvalidName { .. })
            ));
        }
        validate_name(&"n".repeat(64)).unwrap();
    }

    #[test]
    fn keys_are_long_and_url_safe() {
        let key = generate_key();
        assert_eq!(key.len(), 32);
        assert!(
            key.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{key}"
        );
        assert_ne!(generate_key(), key);
    }

    #[test]
    fn debug_redacts_the_key() {
        let (_dir, store) = temp_store();
        let r = store.create_stream("s").unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains(&r.key), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn authorize_publish_matches_only_the_right_key() {
        let (_dir, store) = temp_store();
        let a = store.create_stream("a").unwrap();
        let b = store.create_stream("b").unwrap();
        let name = |key: &str| store.authorize_publish(key).unwrap().map(|g| g.name);
        assert_eq!(name(&a.key).as_deref(), Some("a"));
        assert_eq!(name(&b.key).as_deref(), Some("b"));
        assert_eq!(store.authorize_publish("a").unwrap(), None);
        assert_eq!(store.authorize_publish("").unwrap(), None);
        let mut wrong = a.key.clone();
        wrong.replace_range(31.., if a.key.ends_with('A') { "B" } else { "A" });
        assert_eq!(store.authorize_publish(&wrong).unwrap(), None);
    }

    #[test]
    fn ensure_demo_is_idempotent() {
        let (_dir, store) = temp_store();
        let (first, created) = store.ensure_demo().unwrap().unwrap();
        assert!(created);
        assert_eq!(first.name, DEMO_STREAM);
        let (again, created) = store.ensure_demo().unwrap().unwrap();
        assert!(!created);
        assert_eq!(again, first);
        assert_eq!(store.list().unwrap().len(), 1);

        // Deleted on purpose while other streams exist: stays deleted.
        store.create_stream("other").unwrap();
        store.delete(DEMO_STREAM).unwrap();
        assert_eq!(store.ensure_demo().unwrap(), None);
        assert!(store.get(DEMO_STREAM).unwrap().is_none());
    }

    #[test]
    fn reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let r = Store::open(dir.path())
            .unwrap()
            .create_stream("kept")
            .unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get("kept").unwrap(), Some(r));
        // A second connection at the same time, as the CLI beside a server.
        let other = Store::open(dir.path()).unwrap();
        other.create_stream("more").unwrap();
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn handle_is_shareable_across_shards() {
        fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
        assert_shareable::<StoreHandle>();
    }

    #[test]
    fn handle_works_from_block_on_and_shuts_down() {
        let (_dir, store) = temp_store();
        let r = store.create_stream("live").unwrap();
        let handle = spawn_store_thread(store);
        let other = handle.clone();
        futures_lite::future::block_on(async {
            assert_eq!(
                handle.authorize_publish(r.key.clone()).await.unwrap(),
                Some(PublishGrant {
                    name: "live".into(),
                    record: None
                })
            );
            assert_eq!(other.authorize_publish("nope".into()).await.unwrap(), None);
            assert_eq!(handle.get("live".into()).await.unwrap(), Some(r.clone()));
            assert_eq!(handle.get("dead".into()).await.unwrap(), None);
            handle.shutdown();
            assert!(matches!(
                other.get("live".into()).await,
                Err(StoreError::Closed)
            ));
        });
    }

    #[test]
    fn version_1_databases_migrate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO streams (name, key, created_at) VALUES ('old', 'k', 1)",
            [],
        )
        .unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        let grant = store.authorize_publish("k").unwrap().unwrap();
        assert_eq!((grant.name.as_str(), grant.record), ("old", None));
        assert!(store.recordings(None).unwrap().is_empty());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn record_flags() {
        let (_dir, store) = temp_store();
        let a = store.create_stream_recording("a", Some(true)).unwrap();
        let b = store.create_stream("b").unwrap();
        assert_eq!(
            store.authorize_publish(&a.key).unwrap().unwrap().record,
            Some(true)
        );
        assert_eq!(
            store.authorize_publish(&b.key).unwrap().unwrap().record,
            None
        );
        store.set_record("b", Some(false)).unwrap();
        store.set_record("a", None).unwrap();
        assert_eq!(
            store.record_flags().unwrap(),
            [("a".to_owned(), None), ("b".to_owned(), Some(false))]
        );
        assert!(matches!(
            store.set_record("zz", Some(true)),
            Err(StoreError::StreamNotFound(_))
        ));
    }

    fn row(stream: &str, path: &str, started_at: i64) -> RecordingRow {
        RecordingRow {
            stream: stream.into(),
            path: path.into(),
            format: "fmp4".into(),
            started_at,
            ended_at: None,
            duration_ms: 0,
            bytes: 100,
            status: RecordingStatus::Recording,
            reason: None,
        }
    }

    #[test]
    fn recordings_index() {
        let (_dir, store) = temp_store();
        store.index_recording(&row("a", "/r/a/1.mp4", 10)).unwrap();
        store.index_recording(&row("b", "/r/b/1.mp4", 11)).unwrap();
        let mut done = row("a", "/r/a/1.mp4", 10);
        (done.duration_ms, done.bytes) = (20_000, 5_000_000);
        (done.ended_at, done.status) = (Some(30), RecordingStatus::Complete);
        done.reason = Some("stream ended".into());
        store.index_recording(&done).unwrap();
        store.index_recording(&row("a", "/r/a/2.mp4", 40)).unwrap();
        let all = store.recordings(None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], done);
        let a = store.recordings(Some("a")).unwrap();
        assert_eq!(
            a.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["/r/a/1.mp4", "/r/a/2.mp4"]
        );
        assert_eq!(store.mark_interrupted_recordings().unwrap(), 2);
        let a = store.recordings(Some("a")).unwrap();
        assert_eq!(a[0].status, RecordingStatus::Complete);
        assert_eq!(a[1].status, RecordingStatus::Interrupted);
    }

    #[test]
    fn index_updates_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let handle = spawn_store_thread(Store::open(dir.path()).unwrap());
        handle.index_recording(row("s", "/r/s/1.mp4", 1)).unwrap();
        let mut last = row("s", "/r/s/1.mp4", 1);
        last.status = RecordingStatus::Complete;
        handle.index_recording_blocking(last.clone()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.recordings(Some("s")).unwrap(), [last]);
        handle.shutdown();
        assert!(matches!(
            handle.index_recording_blocking(row("s", "/x", 1)),
            Err(StoreError::Closed)
        ));
    }
}
