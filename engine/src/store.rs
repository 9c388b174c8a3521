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
    // The API's view of a stream: a stable public id, a description, and `enabled` (0 refuses
    // every publish). `sessions` is the publish history, one row per publisher, written from
    // the `stream.live`/`stream.ended` events; `ended_at_ms` is NULL while it is live (or
    // after a crash, until the next `serve` closes it).
    "ALTER TABLE streams ADD COLUMN id TEXT;
    ALTER TABLE streams ADD COLUMN description TEXT;
    ALTER TABLE streams ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;
    UPDATE streams SET id = lower(hex(randomblob(8))) WHERE id IS NULL;
    CREATE UNIQUE INDEX streams_by_id ON streams (id);
    CREATE TABLE sessions (
        id            INTEGER PRIMARY KEY,
        stream        TEXT    NOT NULL,
        generation    INTEGER NOT NULL,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms   INTEGER,
        remote        TEXT    NOT NULL,
        protocol      TEXT    NOT NULL,
        bytes         INTEGER NOT NULL DEFAULT 0,
        frames        INTEGER NOT NULL DEFAULT 0,
        end_reason    TEXT
    ) STRICT;
    CREATE UNIQUE INDEX sessions_identity ON sessions (stream, started_at_ms, generation);",
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

/// What [`Store::authorize_publish`] finds for a key: the stream, whether it records, and
/// whether publishing is enabled (a disabled stream's publisher is refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishGrant {
    /// The stream's public name.
    pub name: String,
    /// The stream's own recording choice; `None` follows `recording.record`.
    pub record: Option<bool>,
    /// False when an operator disabled the stream: refuse the publish.
    pub enabled: bool,
}

/// A stream's settings as the API and `streams list` show them (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Stable public id (16 hex digits), distinct from the name.
    pub id: String,
    /// Public name.
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Own recording choice; `None` follows `recording.record`.
    pub record: Option<bool>,
    /// Free text for operators.
    pub description: Option<String>,
    /// False: every publish is refused.
    pub enabled: bool,
}

/// Changes to a stream's settings; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamUpdate {
    /// New recording choice (`Some(None)`: follow `recording.record`).
    pub record: Option<Option<bool>>,
    /// New description (`Some(None)`: none).
    pub description: Option<Option<String>>,
    /// Enable or disable publishing.
    pub enabled: Option<bool>,
}

/// Publish sessions kept per stream (the newest); older ones are forgotten as new ones start.
pub const SESSIONS_KEPT: usize = 1000;

/// One publisher's time on a stream, from the `sessions` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Row id.
    pub id: i64,
    /// Stream name.
    pub stream: String,
    /// Publish started, unix ms.
    pub started_at_ms: i64,
    /// Publish ended, unix ms; `None` while live.
    pub ended_at_ms: Option<i64>,
    /// Publisher's address.
    pub remote: String,
    /// Ingest protocol.
    pub protocol: String,
    /// Media bytes received (known when it ended).
    pub bytes: i64,
    /// Frames received (known when it ended).
    pub frames: i64,
    /// Why it ended; an error starts with `error:`.
    pub end_reason: Option<String>,
}

/// A session start or end for the history, made from a `stream.live`/`stream.ended` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// Stream name.
    pub stream: String,
    /// Publish generation (with the start time, identifies the session).
    pub generation: u64,
    /// Publish started, unix ms.
    pub started_at_ms: u64,
    /// Publisher's address.
    pub remote: String,
    /// Ingest protocol.
    pub protocol: String,
    /// `Some` for an end: when, why and the totals.
    pub end: Option<SessionEnd>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// Unix ms.
    pub at_ms: u64,
    /// Why.
    pub reason: String,
    /// Media bytes received.
    pub bytes: u64,
    /// Frames received.
    pub frames: u64,
}

impl SessionEvent {
    /// The history record of `event`, when it is a stream start or end.
    pub fn from_event(event: &crate::events::Event) -> Option<SessionEvent> {
        use crate::events::Event;
        match event {
            Event::StreamLive {
                stream,
                protocol,
                remote,
                generation,
                at_ms,
            } => Some(SessionEvent {
                stream: stream.to_string(),
                generation: *generation,
                started_at_ms: *at_ms,
                remote: remote.to_string(),
                protocol: (*protocol).to_owned(),
                end: None,
            }),
            Event::StreamEnded {
                stream,
                protocol,
                remote,
                generation,
                started_at_ms,
                at_ms,
                reason,
                stats,
            } => Some(SessionEvent {
                stream: stream.to_string(),
                generation: *generation,
                started_at_ms: *started_at_ms,
                remote: remote.to_string(),
                protocol: (*protocol).to_owned(),
                end: Some(SessionEnd {
                    at_ms: *at_ms,
                    reason: reason.clone(),
                    bytes: stats.bytes,
                    frames: stats.frames,
                }),
            }),
            _ => None,
        }
    }
}

/// SQLite integers are signed; counters beyond `i64::MAX` are clamped.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A fresh public stream id: 64 random bits as 16 lowercase hex digits.
fn generate_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const INFO_COLUMNS: &str = "id, name, created_at, record, description, enabled";

fn row_to_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<StreamInfo> {
    Ok(StreamInfo {
        id: row.get::<_, Option<String>>(0)?.unwrap_or_default(),
        name: row.get(1)?,
        created_at: row.get(2)?,
        record: row.get(3)?,
        description: row.get(4)?,
        enabled: row.get(5)?,
    })
}

const SESSION_COLUMNS: &str =
    "id, stream, started_at_ms, ended_at_ms, remote, protocol, bytes, frames, end_reason";

fn row_to_session(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: row.get(at)?,
        stream: row.get(at + 1)?,
        started_at_ms: row.get(at + 2)?,
        ended_at_ms: row.get(at + 3)?,
        remote: row.get(at + 4)?,
        protocol: row.get(at + 5)?,
        bytes: row.get(at + 6)?,
        frames: row.get(at + 7)?,
        end_reason: row.get(at + 8)?,
    })
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
        self.create_stream_with(name, recording, None)
            .map(|(record, _)| record)
    }

    /// Creates a stream with a fresh key, its `record` flag and a description; returns the
    /// key record and the settings.
    pub fn create_stream_with(
        &self,
        name: &str,
        recording: Option<bool>,
        description: Option<&str>,
    ) -> Result<(StreamRecord, StreamInfo), StoreError> {
        validate_name(name).map_err(|reason| StoreError::InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        let record = StreamRecord {
            name: name.to_owned(),
            key: generate_key(),
            created_at: now_unix(),
        };
        let info = StreamInfo {
            id: generate_id(),
            name: name.to_owned(),
            created_at: record.created_at,
            record: recording,
            description: description.map(str::to_owned),
            enabled: true,
        };
        // One statement, so two concurrent creators cannot both succeed.
        let inserted = self.conn.execute(
            "INSERT INTO streams (name, key, created_at, record, id, description, enabled)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1)
             ON CONFLICT DO NOTHING",
            params![
                record.name,
                record.key,
                record.created_at,
                recording,
                info.id,
                info.description
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::StreamExists(name.to_owned()));
        }
        Ok((record, info))
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
    /// Its publish history goes with it; its recordings stay listed.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let deleted = tx.execute("DELETE FROM streams WHERE name = ?1", [name])? > 0;
        if deleted {
            tx.execute("DELETE FROM sessions WHERE stream = ?1", [name])?;
        }
        tx.commit()?;
        Ok(deleted)
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
            "INSERT INTO streams (name, key, created_at, id)
             SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM streams)",
            params![record.name, record.key, record.created_at, generate_id()],
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
    /// The grant also says whether the stream records (its `record` flag) and whether it is
    /// enabled.
    pub fn authorize_publish(&self, key: &str) -> Result<Option<PublishGrant>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, key, record, enabled FROM streams")?;
        let mut rows = stmt.query([])?;
        let mut found = None;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let stored: String = row.get(1)?;
            let record: Option<bool> = row.get(2)?;
            let enabled: bool = row.get(3)?;
            let equal: bool = stored.as_bytes().ct_eq(key.as_bytes()).into();
            if equal {
                found = Some(PublishGrant {
                    name,
                    record,
                    enabled,
                });
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

    /// The settings of `name`, with its latest session (for its status).
    pub fn stream_info(
        &self,
        name: &str,
    ) -> Result<Option<(StreamInfo, Option<SessionRow>)>, StoreError> {
        let info = self
            .conn
            .query_row(
                &format!("SELECT {INFO_COLUMNS} FROM streams WHERE name = ?1"),
                [name],
                row_to_info,
            )
            .optional()?;
        let Some(info) = info else { return Ok(None) };
        let last = self.last_session(name)?;
        Ok(Some((info, last)))
    }

    /// Every stream's settings and latest session, oldest stream first.
    pub fn stream_infos(&self) -> Result<Vec<(StreamInfo, Option<SessionRow>)>, StoreError> {
        let sql = "SELECT s.id, s.name, s.created_at, s.record, s.description, s.enabled,
                    x.id, x.stream, x.started_at_ms, x.ended_at_ms, x.remote, x.protocol,
                    x.bytes, x.frames, x.end_reason
             FROM streams s LEFT JOIN sessions x ON x.id = (
                 SELECT id FROM sessions WHERE stream = s.name
                 ORDER BY started_at_ms DESC, id DESC LIMIT 1)
             ORDER BY s.created_at, s.name";
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |row| {
            let info = row_to_info(row)?;
            let has_session = row.get::<_, Option<i64>>(6)?.is_some();
            let last = if has_session {
                Some(row_to_session(row, 6)?)
            } else {
                None
            };
            Ok((info, last))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn last_session(&self, name: &str) -> Result<Option<SessionRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE stream = ?1
                     ORDER BY started_at_ms DESC, id DESC LIMIT 1"
                ),
                [name],
                |r| row_to_session(r, 0),
            )
            .optional()?)
    }

    /// Applies `update` to `name` in one transaction; the settings after it.
    pub fn update_stream(
        &self,
        name: &str,
        update: &StreamUpdate,
    ) -> Result<StreamInfo, StoreError> {
        let tx = self.conn.unchecked_transaction()?;
        let exists = tx
            .query_row("SELECT 1 FROM streams WHERE name = ?1", [name], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            return Err(StoreError::StreamNotFound(name.to_owned()));
        }
        if let Some(record) = update.record {
            tx.execute(
                "UPDATE streams SET record = ?1 WHERE name = ?2",
                params![record, name],
            )?;
        }
        if let Some(description) = &update.description {
            tx.execute(
                "UPDATE streams SET description = ?1 WHERE name = ?2",
                params![description, name],
            )?;
        }
        if let Some(enabled) = update.enabled {
            tx.execute(
                "UPDATE streams SET enabled = ?1 WHERE name = ?2",
                params![enabled, name],
            )?;
        }
        let info = tx.query_row(
            &format!("SELECT {INFO_COLUMNS} FROM streams WHERE name = ?1"),
            [name],
            row_to_info,
        )?;
        tx.commit()?;
        Ok(info)
    }

    /// Records a session start or end. A start is kept only for a stored stream; an end
    /// completes its start's row (or, when the start was never written, adds the whole row).
    /// A start also forgets the stream's sessions beyond the newest [`SESSIONS_KEPT`], so a
    /// publisher that reconnects in a loop cannot grow the database without bound.
    pub fn record_session(&self, ev: &SessionEvent) -> Result<(), StoreError> {
        match &ev.end {
            None => {
                self.conn.execute(
                    "DELETE FROM sessions WHERE stream = ?1 AND id <= (
                         SELECT id FROM sessions WHERE stream = ?1
                         ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    params![ev.stream, to_i64(SESSIONS_KEPT as u64 - 1)],
                )?;
                self.conn.execute(
                    "INSERT INTO sessions (stream, generation, started_at_ms, remote, protocol)
                     SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM streams WHERE name = ?1)
                     ON CONFLICT DO NOTHING",
                    params![
                        ev.stream,
                        to_i64(ev.generation),
                        to_i64(ev.started_at_ms),
                        ev.remote,
                        ev.protocol
                    ],
                )?;
            }
            Some(end) => {
                self.conn.execute(
                    "INSERT INTO sessions (stream, generation, started_at_ms, remote, protocol,
                         ended_at_ms, bytes, frames, end_reason)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
                     WHERE EXISTS (SELECT 1 FROM streams WHERE name = ?1)
                     ON CONFLICT (stream, started_at_ms, generation) DO UPDATE SET
                         ended_at_ms = excluded.ended_at_ms, bytes = excluded.bytes,
                         frames = excluded.frames, end_reason = excluded.end_reason",
                    params![
                        ev.stream,
                        to_i64(ev.generation),
                        to_i64(ev.started_at_ms),
                        ev.remote,
                        ev.protocol,
                        to_i64(end.at_ms),
                        to_i64(end.bytes),
                        to_i64(end.frames),
                        end.reason
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// The publish history of `name`, newest first: `limit` rows after skipping `offset`, and
    /// the total count.
    pub fn sessions(
        &self,
        name: &str,
        limit: u32,
        offset: u64,
    ) -> Result<(u64, Vec<SessionRow>), StoreError> {
        let total: i64 = self.conn.query_row(
            "SELECT count(*) FROM sessions WHERE stream = ?1",
            [name],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE stream = ?1
             ORDER BY started_at_ms DESC, id DESC LIMIT ?2 OFFSET ?3"
        ))?;
        let rows = stmt.query_map(params![name, limit, to_i64(offset)], |r| {
            row_to_session(r, 0)
        })?;
        Ok((
            u64::try_from(total).unwrap_or(0),
            rows.collect::<Result<_, _>>()?,
        ))
    }

    /// Closes sessions still open when a server starts (the previous process died while they
    /// were live). Returns how many there were.
    pub fn close_open_sessions(&self) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE sessions SET ended_at_ms = started_at_ms,
                 end_reason = 'error: the server stopped while it was live'
             WHERE ended_at_ms IS NULL",
            [],
        )?)
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

    /// Recordings with their ids, oldest first (only those of `stream` when given): `limit`
    /// rows after skipping `offset`, and the total count.
    pub fn recordings_page(
        &self,
        stream: Option<&str>,
        limit: u32,
        offset: u64,
    ) -> Result<(u64, Vec<(i64, RecordingRow)>), StoreError> {
        let total: i64 = self.conn.query_row(
            "SELECT count(*) FROM recordings WHERE ?1 IS NULL OR stream = ?1",
            [stream],
            |r| r.get(0),
        )?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT stream, path, format, started_at, ended_at, duration_ms, bytes, status, reason, id
             FROM recordings WHERE ?1 IS NULL OR stream = ?1 ORDER BY started_at, id
             LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![stream, limit, to_i64(offset)], |r| {
            Ok((r.get(9)?, row_to_recording(r)?))
        })?;
        Ok((
            u64::try_from(total).unwrap_or(0),
            rows.collect::<Result<_, _>>()?,
        ))
    }

    /// The recording with row id `id`.
    pub fn recording(&self, id: i64) -> Result<Option<RecordingRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT stream, path, format, started_at, ended_at, duration_ms, bytes, status, reason
                 FROM recordings WHERE id = ?1",
                [id],
                row_to_recording,
            )
            .optional()?)
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
    /// A session start or end for the history; nobody waits for it.
    Session(SessionEvent),
    /// Any other work (the API's reads and writes); the closure sends its own reply.
    Run(Box<dyn FnOnce(&Store) + Send>),
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
            // Writes nobody waits for (the session ends the shards queued while stopping)
            // are still made; everything else is answered `Closed`.
            for r in std::iter::once(request).chain(rx.try_iter()) {
                if let Request::Session(ev) = r {
                    if let Err(e) = store.record_session(&ev) {
                        tracing::warn!(stream = %ev.stream, "session history not updated: {e}");
                    }
                }
            }
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
            Request::Session(ev) => {
                if let Err(e) = store.record_session(&ev) {
                    tracing::warn!(stream = %ev.stream, "session history not updated: {e}");
                }
            }
            Request::Run(work) => work(store),
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

    /// Runs `work` on the store thread and returns its result; [`StoreError::Busy`] when the
    /// queue is full. For the API: anything that is not on the publish path.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.call(|reply: Reply<T>| {
            Request::Run(Box::new(move |store| {
                // The caller may have given up; then nobody reads the answer.
                let _ = reply.send(work(store));
            }))
        })
        .await
    }

    /// Queues a session start or end for the history without waiting; [`StoreError::Busy`]
    /// when the queue is full (the row is then lost). For any thread or executor.
    pub fn record_session(&self, ev: SessionEvent) -> Result<(), StoreError> {
        if self.stop.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.tx.try_send(Request::Session(ev)).map_err(|e| match e {
            flume::TrySendError::Full(_) => StoreError::Busy,
            flume::TrySendError::Disconnected(_) => StoreError::Closed,
        })
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
                    record: None,
                    enabled: true,
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

    fn live(stream: &str, generation: u64, started_at_ms: u64) -> SessionEvent {
        SessionEvent {
            stream: stream.into(),
            generation,
            started_at_ms,
            remote: "127.0.0.1:5000".into(),
            protocol: "rtmp".into(),
            end: None,
        }
    }

    fn ended(stream: &str, generation: u64, started_at_ms: u64, reason: &str) -> SessionEvent {
        SessionEvent {
            end: Some(SessionEnd {
                at_ms: started_at_ms + 5_000,
                reason: reason.into(),
                bytes: 1_000,
                frames: 150,
            }),
            ..live(stream, generation, started_at_ms)
        }
    }

    #[test]
    fn stream_settings_and_updates() {
        let (_dir, store) = temp_store();
        let (rec, info) = store
            .create_stream_with("cam", Some(true), Some("front door"))
            .unwrap();
        assert_eq!(info.id.len(), 16);
        assert_eq!(
            (info.record, info.description.as_deref(), info.enabled),
            (Some(true), Some("front door"), true)
        );
        store.create_stream("other").unwrap();
        let infos = store.stream_infos().unwrap();
        assert_eq!(infos.len(), 2);
        assert!(infos
            .iter()
            .all(|(i, last)| i.id.len() == 16 && last.is_none()));
        assert_ne!(infos[0].0.id, infos[1].0.id);

        let changed = store
            .update_stream(
                "cam",
                &StreamUpdate {
                    record: Some(None),
                    description: Some(None),
                    enabled: Some(false),
                },
            )
            .unwrap();
        assert_eq!(
            (changed.record, changed.description.clone(), changed.enabled),
            (None, None, false)
        );
        assert_eq!(changed.id, info.id, "the id never changes");
        let grant = store.authorize_publish(&rec.key).unwrap().unwrap();
        assert!(!grant.enabled, "a disabled stream's key says so");
        // An empty update changes nothing; a missing stream is an error.
        let same = store
            .update_stream("cam", &StreamUpdate::default())
            .unwrap();
        assert_eq!(same, changed);
        assert!(matches!(
            store.update_stream("nope", &StreamUpdate::default()),
            Err(StoreError::StreamNotFound(_))
        ));
    }

    #[test]
    fn session_history() {
        let (_dir, store) = temp_store();
        store.create_stream("cam").unwrap();
        store.record_session(&live("cam", 1, 10_000)).unwrap();
        // A start recorded twice (a retry) is one row.
        store.record_session(&live("cam", 1, 10_000)).unwrap();
        let (_, last) = store.stream_info("cam").unwrap().unwrap();
        let last = last.unwrap();
        assert_eq!((last.ended_at_ms, last.end_reason), (None, None));
        store
            .record_session(&ended("cam", 1, 10_000, "publisher disconnected"))
            .unwrap();
        store.record_session(&live("cam", 2, 20_000)).unwrap();
        store
            .record_session(&ended("cam", 2, 20_000, "error: bad tag"))
            .unwrap();
        // An end whose start was lost still makes a row.
        store
            .record_session(&ended("cam", 3, 30_000, "stopped by operator"))
            .unwrap();
        // Streams that are not stored (open publishing) keep no history.
        store.record_session(&live("other", 4, 40_000)).unwrap();
        store
            .record_session(&ended("other", 4, 40_000, "x"))
            .unwrap();

        let (total, rows) = store.sessions("cam", 2, 0).unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            rows.iter().map(|r| r.started_at_ms).collect::<Vec<_>>(),
            [30_000, 20_000],
            "newest first"
        );
        assert_eq!(rows[1].end_reason.as_deref(), Some("error: bad tag"));
        assert_eq!((rows[1].bytes, rows[1].frames), (1_000, 150));
        assert_eq!(rows[1].ended_at_ms, Some(25_000));
        let (_, rest) = store.sessions("cam", 2, 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            rest[0].end_reason.as_deref(),
            Some("publisher disconnected")
        );
        assert_eq!(store.sessions("other", 10, 0).unwrap().0, 0);
        let infos = store.stream_infos().unwrap();
        assert_eq!(
            infos[0].1.as_ref().map(|s| s.started_at_ms),
            Some(30_000),
            "the list carries the latest session"
        );

        // A server that died while live: the next start closes the session with an error.
        store.record_session(&live("cam", 5, 50_000)).unwrap();
        assert_eq!(store.close_open_sessions().unwrap(), 1);
        let (_, last) = store.stream_info("cam").unwrap().unwrap();
        assert!(last.unwrap().end_reason.unwrap().starts_with("error:"));

        // A publisher that reconnects in a loop: the newest SESSIONS_KEPT sessions stay.
        store.create_stream("loop").unwrap();
        let n = SESSIONS_KEPT as u64 + 5;
        for i in 0..n {
            store.record_session(&live("loop", i, 100_000 + i)).unwrap();
        }
        let (total, newest) = store.sessions("loop", 1, 0).unwrap();
        assert_eq!(total, SESSIONS_KEPT as u64);
        assert_eq!(newest[0].started_at_ms, 100_000 + n as i64 - 1);
        let (_, oldest) = store.sessions("loop", 1, SESSIONS_KEPT as u64 - 1).unwrap();
        assert_eq!(oldest[0].started_at_ms, 100_005, "the first five are gone");
        assert_eq!(
            store.sessions("cam", 10, 0).unwrap().0,
            4,
            "other streams keep theirs"
        );

        // Deleting the stream deletes its history; a new stream of that name starts afresh.
        assert!(store.delete("cam").unwrap());
        store.create_stream("cam").unwrap();
        assert_eq!(store.sessions("cam", 10, 0).unwrap().0, 0);
    }

    #[test]
    fn sessions_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        store.create_stream("s").unwrap();
        store = Store::open(dir.path()).unwrap();
        let handle = spawn_store_thread(store);
        handle.record_session(live("s", 1, 1_000)).unwrap();
        handle
            .record_session(ended("s", 1, 1_000, "publisher left"))
            .unwrap();
        let (total, rows) =
            futures_lite::future::block_on(handle.run(|s| s.sessions("s", 10, 0))).unwrap();
        assert_eq!(total, 1);
        assert_eq!(rows[0].end_reason.as_deref(), Some("publisher left"));
        handle.shutdown();
        assert!(matches!(
            handle.record_session(live("s", 2, 2_000)),
            Err(StoreError::Closed)
        ));
    }

    #[test]
    fn version_2_databases_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        for name in ["a", "b"] {
            conn.execute(
                "INSERT INTO streams (name, key, created_at) VALUES (?1, ?1, 1)",
                [name],
            )
            .unwrap();
        }
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        let infos = store.stream_infos().unwrap();
        assert_eq!(infos.len(), 2);
        for (info, _) in &infos {
            assert_eq!(info.id.len(), 16, "old streams get ids");
            assert!(info.enabled);
            assert_eq!(info.description, None);
        }
        assert_ne!(infos[0].0.id, infos[1].0.id);
    }

    #[test]
    fn recordings_by_id_and_page() {
        let (_dir, store) = temp_store();
        for (i, stream) in ["a", "b", "a"].iter().enumerate() {
            store
                .index_recording(&row(stream, &format!("/r/{i}.mp4"), i as i64))
                .unwrap();
        }
        let (total, page) = store.recordings_page(Some("a"), 1, 1).unwrap();
        assert_eq!(total, 2);
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].1.path, "/r/2.mp4");
        let id = page[0].0;
        assert_eq!(store.recording(id).unwrap().unwrap().path, "/r/2.mp4");
        assert_eq!(store.recording(999).unwrap(), None);
        assert_eq!(store.recordings_page(None, 10, 0).unwrap().0, 3);
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
