//! `/api/v1/recordings`: the recordings index and file downloads.
//!
//! A download is read off the shard: the store thread looks the row up and stats the file, then
//! a short-lived reader thread sends the requested bytes in 256 KiB chunks through a bounded
//! channel (at most 1 MiB in flight per download) that the response body drains. A client that
//! goes away drops the body, the channel disconnects and the thread stops. The response always
//! carries the exact `Content-Length`, so a file that cannot be read to the end yields a cut
//! connection, never a short body that looks complete.

use std::io::{Read, Seek, SeekFrom};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{header, StatusCode};

use super::types::{Recording, RecordingFormat, RecordingList, RecordingState};
use super::{bad_request, json, not_found, store_error, unavailable, QueryParams};
use crate::http::{error, Body, Request, Response};
use crate::shard::Shard;
use crate::store::{RecordingRow, RecordingStatus};

/// Downloads served at once, process-wide; more get 503.
const MAX_DOWNLOADS: usize = 32;
/// Bytes per chunk a reader thread sends.
const CHUNK: usize = 256 * 1024;
/// Chunks waiting in a download's channel.
const CHANNEL_CHUNKS: usize = 4;

static ACTIVE_DOWNLOADS: AtomicUsize = AtomicUsize::new(0);

fn recording_json(id: i64, r: RecordingRow) -> Recording {
    Recording {
        id,
        stream: r.stream,
        format: if r.format == "flv" {
            RecordingFormat::Flv
        } else {
            RecordingFormat::Fmp4
        },
        path: r.path,
        started_at: r.started_at,
        ended_at: r.ended_at,
        duration_ms: u64::try_from(r.duration_ms).unwrap_or(0),
        bytes: u64::try_from(r.bytes).unwrap_or(0),
        status: match r.status {
            RecordingStatus::Recording => RecordingState::Recording,
            RecordingStatus::Complete => RecordingState::Complete,
            RecordingStatus::Failed => RecordingState::Failed,
            RecordingStatus::Interrupted => RecordingState::Interrupted,
        },
        reason: r.reason,
        download: format!("/api/v1/recordings/{id}/download"),
    }
}

/// A recording id from the path: a positive integer.
fn path_id(raw: &str) -> Result<i64, Response> {
    match raw.parse::<i64>() {
        Ok(id) if id >= 1 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(bad_request(format!(
            "recording id must be a positive integer, not {raw:?}"
        ))),
    }
}

/// List recordings.
#[utoipa::path(
    get,
    path = "/api/v1/recordings",
    tag = "recordings",
    params(
        ("stream" = Option<String>, Query, description = "Only this stream's recordings", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Page number, from 1 (default 1)"),
        ("per_page" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of recordings, oldest first", body = RecordingList),
    )
)]
pub(super) async fn list(shard: &Rc<Shard>, req: &Request) -> Response {
    let q = match QueryParams::parse(req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let page = match q.page() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let stream = match q.get("stream") {
        None => None,
        Some(s) => match super::path_name(s) {
            Ok(s) => Some(s),
            Err(r) => return r,
        },
    };
    let found = shard
        .store
        .run(move |s| s.recordings_page(stream.as_deref(), page.per_page, page.offset()))
        .await;
    match found {
        Ok((total, rows)) => json(
            StatusCode::OK,
            &RecordingList {
                recordings: rows
                    .into_iter()
                    .map(|(id, r)| recording_json(id, r))
                    .collect(),
                page: page.page,
                per_page: page.per_page,
                total,
            },
        ),
        Err(e) => store_error(e),
    }
}

/// Get a recording's metadata.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{id}",
    tag = "recordings",
    params(("id" = i64, Path, description = "Recording id", minimum = 1)),
    responses(
        (status = 200, description = "The recording", body = Recording),
        (status = 404, description = "No such recording", body = super::types::ErrorBody),
    )
)]
pub(super) async fn get(shard: &Rc<Shard>, id: &str) -> Response {
    let id = match path_id(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match shard.store.run(move |s| s.recording(id)).await {
        Ok(Some(r)) => json(StatusCode::OK, &recording_json(id, r)),
        Ok(None) => not_found(format!("no recording with id {id}")),
        Err(e) => store_error(e),
    }
}

/// Which bytes of a file to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// All of it (no `Range`, or one this server ignores: another unit, several ranges, bad
    /// syntax; RFC 9110 §14.2 lets a server ignore those).
    Full,
    /// `first..=last`.
    Part(u64, u64),
    /// No byte of the range exists (416).
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `len` bytes.
fn parse_range(value: Option<&str>, len: u64) -> ByteRange {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `bytes=-N`: the last N bytes.
        let Some(n) = digits(last).then(|| last.parse::<u64>().ok()).flatten() else {
            return ByteRange::Full;
        };
        if n == 0 || len == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part(len - n.min(len), len - 1);
    }
    let Some(start) = digits(first).then(|| first.parse::<u64>().ok()).flatten() else {
        return ByteRange::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last).then(|| last.parse::<u64>().ok()).flatten() {
            Some(e) if e >= start => e,
            _ => return ByteRange::Full,
        }
    };
    if start >= len {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(start, end.min(len - 1))
}

/// Holds one of the [`MAX_DOWNLOADS`] places.
struct DownloadSlot;

impl DownloadSlot {
    fn take() -> Option<DownloadSlot> {
        let prev = ACTIVE_DOWNLOADS.fetch_add(1, Ordering::AcqRel);
        if prev >= MAX_DOWNLOADS {
            ACTIVE_DOWNLOADS.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(DownloadSlot)
    }
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        ACTIVE_DOWNLOADS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `count` bytes of `path` from `offset` through `tx`; stops early (logged) on a read
/// error or when the receiver is gone.
fn read_file(path: &str, offset: u64, count: u64, tx: &flume::Sender<Bytes>) {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path, "recording download failed: {e}");
            return;
        }
    };
    if let Err(e) = file.seek(SeekFrom::Start(offset)) {
        tracing::warn!(path, "recording download failed: {e}");
        return;
    }
    let mut left = count;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(path, "recording download cut: {e}");
                    return;
                }
            }
        }
        if filled == 0 {
            tracing::warn!(
                path,
                left,
                "recording download cut: the file is shorter than it was"
            );
            return;
        }
        buf.truncate(filled);
        left -= filled as u64;
        if tx.send(Bytes::from(buf)).is_err() {
            return; // the client went away
        }
    }
}

/// Download a recording's file.
///
/// Supports one `Range: bytes=FIRST-LAST` (or `FIRST-`, or `-SUFFIX`) per request; other
/// `Range` values are ignored and the whole file is sent.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{id}/download",
    tag = "recordings",
    params(
        ("id" = i64, Path, description = "Recording id", minimum = 1),
        ("Range" = Option<String>, Header, description = "`bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX`"),
    ),
    responses(
        (status = 200, description = "The whole file",
            content(
                (Vec<u8> = "video/mp4"),
                (Vec<u8> = "video/x-flv"),
            ),
            headers(
                ("Content-Length" = u64, description = "File size"),
                ("Accept-Ranges" = String, description = "`bytes`"),
            )),
        (status = 206, description = "The requested range",
            content(
                (Vec<u8> = "video/mp4"),
                (Vec<u8> = "video/x-flv"),
            ),
            headers(
                ("Content-Length" = u64, description = "Range size"),
                ("Content-Range" = String, description = "`bytes FIRST-LAST/SIZE`"),
            )),
        (status = 404, description = "No such recording, or its file is gone", body = super::types::ErrorBody),
        (status = 416, description = "The range is outside the file", body = super::types::ErrorBody,
            headers(("Content-Range" = String, description = "`bytes */SIZE`"))),
    )
)]
pub(super) async fn download(shard: &Rc<Shard>, req: &Request, id: &str) -> Response {
    let id = match path_id(id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The row and the file's size, both from the store thread (stat blocks).
    let found = shard
        .store
        .run(move |s| {
            Ok(s.recording(id)?.map(|row| {
                let len = std::fs::metadata(&row.path).map(|m| m.len());
                (row, len)
            }))
        })
        .await;
    let (row, len) = match found {
        Ok(Some((row, Ok(len)))) => (row, len),
        Ok(Some((row, Err(e)))) => {
            tracing::warn!(path = %row.path, "recording file unavailable: {e}");
            return not_found(format!("the file of recording {id} is unavailable: {e}"));
        }
        Ok(None) => return not_found(format!("no recording with id {id}")),
        Err(e) => return store_error(e),
    };
    let (status, first, count) = match parse_range(range.as_deref(), len) {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        ByteRange::Unsatisfiable => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "range_not_satisfiable",
                format!("the file has {len} bytes"),
            );
            if let Ok(v) = http::HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = if count == 0 {
        Body::empty()
    } else {
        let Some(slot) = DownloadSlot::take() else {
            return unavailable(format!("{MAX_DOWNLOADS} downloads are in progress"));
        };
        let (tx, rx) = flume::bounded(CHANNEL_CHUNKS);
        let path = row.path.clone();
        let spawned = std::thread::Builder::new()
            .name("zc-download".into())
            .spawn(move || {
                let _slot = slot;
                read_file(&path, first, count, &tx);
            });
        if let Err(e) = spawned {
            return unavailable(format!("cannot start a reader: {e}"));
        }
        Body::stream(rx.into_stream())
    };
    let (content_type, ext) = if row.format == "flv" {
        ("video/x-flv", "flv")
    } else {
        ("video/mp4", "mp4")
    };
    let file_name: String = std::path::Path::new(&row.path)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("recording")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let mut b = http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        // Exact length even though the body streams: hyper then cuts the connection if the
        // reader stops early, instead of ending a chunked body that looks complete.
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}-{file_name}.{ext}\"", row.stream),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {first}-{}/{len}", first + count - 1),
        );
    }
    b.body(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        let r = |v: &str| parse_range(Some(v), 1000);
        assert_eq!(parse_range(None, 1000), Full);
        assert_eq!(r("bytes=0-99"), Part(0, 99));
        assert_eq!(r("bytes=900-"), Part(900, 999));
        assert_eq!(r("bytes=900-5000"), Part(900, 999));
        assert_eq!(r("bytes=-100"), Part(900, 999));
        assert_eq!(r("bytes=-5000"), Part(0, 999));
        assert_eq!(r("bytes=1000-"), Unsatisfiable);
        assert_eq!(r("bytes=-0"), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        // Ignored: whole file.
        for v in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=0-1,5-6",
            "bytes=+1-2",
            "bytes=",
            "bytes=-",
        ] {
            assert_eq!(r(v), Full, "{v}");
        }
        assert_eq!(r("bytes=18446744073709551615-"), Unsatisfiable);
        assert_eq!(r("bytes=99999999999999999999-"), Full);
    }

    #[test]
    fn ids() {
        assert_eq!(path_id("17").unwrap(), 17);
        for bad in ["0", "-1", "+1", "x", "", "99999999999999999999", "1.0"] {
            assert_eq!(
                path_id(bad).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn reader_sends_exactly_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.mp4");
        let data: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| i as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (tx, rx) = flume::unbounded();
        read_file(path.to_str().unwrap(), 5, (CHUNK + 7) as u64, &tx);
        drop(tx);
        let got: Vec<u8> = rx.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(got, &data[5..5 + CHUNK + 7]);
        // Asking past the end sends what exists, then stops.
        let (tx, rx) = flume::unbounded();
        read_file(path.to_str().unwrap(), data.len() as u64 - 3, 100, &tx);
        drop(tx);
        assert_eq!(rx.iter().map(|b| b.len()).sum::<usize>(), 3);
    }
}
