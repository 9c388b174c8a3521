//! The recorder thread: owns the files, writes fragments, syncs them, keeps the index.
//!
//! Commands are taken in batches: everything waiting is written first, then each file that
//! was written to is `fdatasync`ed once and its index row updated. Under load one sync covers
//! several fragments; idle, each fragment is synced as it arrives.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::{unix_secs, Command, EndReason, RecordingState, UtcTime};
use crate::config::RecordingFormat;
use crate::events::{unix_ms, Event, EventInbox};
use crate::store::{RecordingRow, RecordingStatus, StoreHandle};

/// Slices per `writev` call (Linux's IOV_MAX is 1024).
const MAX_IOVECS: usize = 1024;
/// Commands handled before the files written to are synced, at most.
const BATCH: usize = 256;
/// How often an idle thread looks for files whose `Close` could not be queued.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// Files of one stream started within one second get `-2`, `-3`, ... up to this.
const MAX_SAME_SECOND: u32 = 1000;

/// `YYYYMMDD-HHMMSS` (UTC) of `t`: the stem of a recording's file name.
pub fn recording_file_name(t: SystemTime) -> String {
    let u = UtcTime::from_unix(unix_secs(t));
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// Where recordings are created.
pub(super) trait Storage: Send + 'static {
    /// An open recording file.
    type File: RecordFile;
    /// Creates a new file for `stream` named after `started_at`, never replacing one.
    fn create(
        &mut self,
        stream: &str,
        started_at: SystemTime,
        ext: &str,
    ) -> io::Result<(PathBuf, Self::File)>;
}

/// An open recording file.
pub(super) trait RecordFile: Send {
    /// Appends every byte of `parts`, in order.
    fn append(&mut self, parts: &[Bytes]) -> io::Result<()>;
    /// Makes what was appended durable (`fdatasync`).
    fn sync(&mut self) -> io::Result<()>;
    /// Overwrites `data` at `offset` (the file's end does not move).
    fn patch(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Cuts the file to `len` bytes (drops a partly written fragment).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Where index rows go.
pub(super) trait Index: Send {
    /// Records `row`; `last` when it is the file's final state (delivered for sure, waiting
    /// if need be), otherwise best effort (a later update carries the same totals).
    fn update(&self, row: &RecordingRow, last: bool);
}

impl Index for StoreHandle {
    fn update(&self, row: &RecordingRow, last: bool) {
        let result = if last {
            self.index_recording_blocking(row.clone())
        } else {
            self.index_recording(row.clone())
        };
        if let Err(e) = result {
            if last {
                warn!(path = %row.path, "recordings index not updated: {e}");
            } else {
                debug!(path = %row.path, "recordings index update skipped: {e}");
            }
        }
    }
}

/// Files under `root/NAME/`.
pub(super) struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    pub fn new(root: PathBuf) -> FsStorage {
        FsStorage { root }
    }
}

/// Syncs a directory so a new entry in it survives a power cut.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for FsStorage {
    type File = FsFile;

    fn create(
        &mut self,
        stream: &str,
        started_at: SystemTime,
        ext: &str,
    ) -> io::Result<(PathBuf, FsFile)> {
        // Names are checked where streams are created and published; checked again because
        // this one becomes a path.
        if crate::store::validate_name(stream).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "stream name is not a safe file name",
            ));
        }
        let dir = self.root.join(stream);
        let new_dir = !dir.is_dir();
        std::fs::create_dir_all(&dir)?;
        if new_dir {
            sync_dir(&self.root)?;
        }
        let stem = recording_file_name(started_at);
        for n in 1..=MAX_SAME_SECOND {
            let name = if n == 1 {
                format!("{stem}.{ext}")
            } else {
                format!("{stem}-{n}.{ext}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    sync_dir(&dir)?;
                    return Ok((path, FsFile { file }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{MAX_SAME_SECOND} recordings of this stream started in one second"),
        ))
    }
}

/// A recording file on disk.
pub(super) struct FsFile {
    file: File,
}

impl FsFile {
    #[cfg(test)]
    pub fn from_file(file: File) -> FsFile {
        FsFile { file }
    }
}

/// Writes all of `parts` with vectored writes, straight from the shared slices.
pub(super) fn write_all_parts(w: &mut impl io::Write, parts: &[Bytes]) -> io::Result<()> {
    for group in parts.chunks(MAX_IOVECS) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, 0);
        while !rest.is_empty() {
            match w.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

impl RecordFile for FsFile {
    fn append(&mut self, parts: &[Bytes]) -> io::Result<()> {
        write_all_parts(&mut self.file, parts)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn patch(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

struct OpenRecording<F> {
    file: F,
    row: RecordingRow,
    state: Arc<RecordingState>,
    duration_fields: Vec<u64>,
    /// Bytes appended (the row says what is synced).
    written: u64,
    end_ms: i64,
    dirty: bool,
    fragments: u64,
    syncs: u32,
    sync_total: Duration,
    sync_max: Duration,
}

/// The thread's state: open files by recording id.
pub(super) struct Writer<S: Storage, I: Index> {
    storage: S,
    index: I,
    queued: Arc<AtomicUsize>,
    files: HashMap<u64, OpenRecording<S::File>>,
    /// Where `recording.done` goes.
    events: Option<EventInbox>,
}

impl<S: Storage, I: Index> Writer<S, I> {
    pub fn new(storage: S, index: I, queued: Arc<AtomicUsize>) -> Self {
        Writer {
            storage,
            index,
            queued,
            files: HashMap::new(),
            events: None,
        }
    }

    /// Raises `recording.done` through `events` for every file closed.
    pub fn with_events(mut self, events: EventInbox) -> Self {
        self.events = Some(events);
        self
    }

    /// Raises `recording.done` for a closed file (never blocks: a full inbox drops it).
    fn announce(&self, row: &RecordingRow, reason: &EndReason) {
        let Some(events) = &self.events else {
            return;
        };
        let status = match reason {
            EndReason::StreamEnded => "complete".to_owned(),
            other => other.to_string(),
        };
        let event = Event::RecordingDone {
            stream: Arc::from(row.stream.as_str()),
            path: row.path.clone(),
            duration_ms: u64::try_from(row.duration_ms).unwrap_or(0),
            bytes: u64::try_from(row.bytes).unwrap_or(0),
            status,
            at_ms: unix_ms(),
        };
        if events.try_send(event).is_err() {
            warn!(path = %row.path, "recording.done not raised: the event inbox is full");
        }
    }

    fn release(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Handles one command; false for `Shutdown`.
    pub fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Open {
                id,
                stream,
                format,
                started_at,
                header,
                bytes,
                duration_fields,
                state,
            } => {
                self.open(
                    id,
                    &stream,
                    format,
                    started_at,
                    &header,
                    duration_fields,
                    state,
                );
                self.release(bytes);
            }
            Command::Write {
                id,
                parts,
                bytes,
                end_ms,
            } => {
                if let Some(r) = self.files.get_mut(&id) {
                    match r.file.append(&parts) {
                        Ok(()) => {
                            r.written += bytes as u64;
                            r.end_ms = r.end_ms.max(end_ms);
                            r.fragments += 1;
                            r.dirty = true;
                        }
                        Err(e) => self.fail(id, &e),
                    }
                }
                // A write for a failed file is dropped; its bytes leave the budget either way.
                drop(parts);
                self.release(bytes);
            }
            Command::Close { id, reason } => self.close(id, reason),
            Command::Shutdown => return false,
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        id: u64,
        stream: &str,
        format: RecordingFormat,
        started_at: SystemTime,
        header: &[Bytes],
        duration_fields: Vec<u64>,
        state: Arc<RecordingState>,
    ) {
        let (ext, format_name) = match format {
            RecordingFormat::Fmp4 => ("mp4", "fmp4"),
            RecordingFormat::Flv => ("flv", "flv"),
        };
        let (path, mut file) = match self.storage.create(stream, started_at, ext) {
            Ok(f) => f,
            Err(e) => {
                state.failed.store(true, Ordering::Release);
                warn!(
                    stream,
                    "recording stopped, the live stream goes on: cannot create the file: {e}"
                );
                return;
            }
        };
        let row = RecordingRow {
            stream: stream.to_owned(),
            path: path.display().to_string(),
            format: format_name.to_owned(),
            started_at: unix_secs(started_at),
            ended_at: None,
            duration_ms: 0,
            bytes: 0,
            status: RecordingStatus::Recording,
            reason: None,
        };
        let appended = file.append(header);
        let written = header.iter().map(|b| b.len() as u64).sum();
        info!(stream, path = %row.path, "recording");
        self.index.update(&row, false);
        self.files.insert(
            id,
            OpenRecording {
                file,
                row,
                state,
                duration_fields,
                written,
                end_ms: 0,
                dirty: true,
                fragments: 0,
                syncs: 0,
                sync_total: Duration::ZERO,
                sync_max: Duration::ZERO,
            },
        );
        if let Err(e) = appended {
            self.fail(id, &e);
        }
    }

    /// Syncs `r`; on success the row takes the synced totals.
    fn sync(r: &mut OpenRecording<S::File>) -> io::Result<()> {
        let t = Instant::now();
        r.file.sync()?;
        let took = t.elapsed();
        r.syncs += 1;
        r.sync_total += took;
        r.sync_max = r.sync_max.max(took);
        r.dirty = false;
        r.row.bytes = r.written as i64;
        r.row.duration_ms = r.end_ms;
        Ok(())
    }

    /// Syncs every file written to since the last call and updates their rows.
    pub fn sync_dirty(&mut self) {
        let dirty: Vec<u64> = self
            .files
            .iter()
            .filter(|(_, r)| r.dirty)
            .map(|(id, _)| *id)
            .collect();
        for id in dirty {
            let Some(r) = self.files.get_mut(&id) else {
                continue;
            };
            match Self::sync(r) {
                Ok(()) => self.index.update(&r.row, false),
                Err(e) => self.fail(id, &e),
            }
        }
    }

    /// Finalises and closes one file.
    fn close(&mut self, id: u64, reason: EndReason) {
        let Some(r) = self.files.get_mut(&id) else {
            return;
        };
        // The durations in `moov`, for players that read them; 32-bit milliseconds.
        let ms = (r.end_ms.clamp(0, i64::from(u32::MAX)) as u32).to_be_bytes();
        let mut result = Ok(());
        for &at in &r.duration_fields {
            result = result.and_then(|()| r.file.patch(at, &ms));
        }
        if let Err(e) = result.and_then(|()| Self::sync(r)) {
            self.fail(id, &e);
            return;
        }
        let Some(mut r) = self.files.remove(&id) else {
            return;
        };
        r.row.ended_at = Some(unix_secs(SystemTime::now()));
        r.row.status = if reason.is_failure() {
            RecordingStatus::Failed
        } else {
            RecordingStatus::Complete
        };
        r.row.reason = Some(reason.to_string());
        info!(
            stream = %r.row.stream,
            path = %r.row.path,
            duration_ms = r.row.duration_ms,
            bytes = r.row.bytes,
            fragments = r.fragments,
            sync_avg_us = (r.sync_total / r.syncs.max(1)).as_micros() as u64,
            sync_max_us = r.sync_max.as_micros() as u64,
            "recording closed: {reason}"
        );
        self.index.update(&r.row, true);
        self.announce(&r.row, &reason);
    }

    /// A write, sync or patch failed: the recording stops and the sink is told. The file is
    /// cut back to its last complete fragment when the disk lets us (a full disk does: the
    /// cut frees space), so it plays to its end.
    fn fail(&mut self, id: u64, e: &io::Error) {
        let Some(mut r) = self.files.remove(&id) else {
            return;
        };
        r.state.failed.store(true, Ordering::Release);
        if r.file.truncate(r.written).is_ok() && Self::sync(&mut r).is_ok() {
            debug!(path = %r.row.path, bytes = r.written, "failed recording cut to its last fragment");
        }
        let reason = EndReason::WriteFailed(e.to_string());
        warn!(
            stream = %r.row.stream,
            path = %r.row.path,
            "recording stopped, the live stream goes on: {reason}"
        );
        r.row.ended_at = Some(unix_secs(SystemTime::now()));
        r.row.status = RecordingStatus::Failed;
        r.row.reason = Some(reason.to_string());
        self.index.update(&r.row, true);
        self.announce(&r.row, &reason);
    }

    /// Closes the files whose sinks could not queue their `Close`. Call only when the queue
    /// is empty, so nothing they queued before is still waiting.
    pub fn close_abandoned(&mut self) {
        let abandoned: Vec<(u64, EndReason)> = self
            .files
            .iter()
            .filter_map(|(id, r)| {
                let reason = r.state.abandoned.lock().ok()?.take()?;
                Some((*id, reason))
            })
            .collect();
        for (id, reason) in abandoned {
            self.close(id, reason);
        }
    }

    /// Closes every file (server stopping).
    pub fn close_all(&mut self, reason: &EndReason) {
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            self.close(id, reason.clone());
        }
    }

    /// Open files.
    #[cfg(test)]
    pub fn open_files(&self) -> usize {
        self.files.len()
    }
}

/// The thread's loop: batches of commands, then syncs, until `Shutdown` or every sender is
/// gone; then every open file is closed.
pub(super) fn run<S: Storage, I: Index>(mut w: Writer<S, I>, rx: &flume::Receiver<Command>) {
    let mut running = true;
    while running {
        match rx.recv_timeout(IDLE_TICK) {
            Ok(cmd) => running = w.handle(cmd),
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => running = false,
        }
        let mut n = 1;
        while running && n < BATCH {
            match rx.try_recv() {
                Ok(cmd) => running = w.handle(cmd),
                Err(_) => break,
            }
            n += 1;
        }
        w.sync_dirty();
        if rx.is_empty() {
            w.close_abandoned();
        }
    }
    // Whatever is still queued (nothing after a clean stop) was sent before Shutdown.
    while let Ok(cmd) = rx.try_recv() {
        w.handle(cmd);
    }
    w.sync_dirty();
    w.close_all(&EndReason::ServerStopped);
    debug!("recorder thread stopped");
}
