//! `/api/v1/streams`: create, list, inspect, change, stop, rotate the key of and delete
//! streams, and read their publish history.
//!
//! A stream's status comes from two places: the arbiter (shard 0) says whether it is live now;
//! otherwise its latest session in the store says whether it ever was (`idle`), how the last
//! publish ended (`ended`, or `error` when the reason starts with `error:`). `disabled` wins
//! over all of them.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::{header, StatusCode};

use super::types::{
    CreateStream, KeyUrls, LiveStats, PlayUrls, Session, SessionList, Stream, StreamList,
    StreamStatus, StreamWithKey, TrackInfo, TrackKind, UpdateStream, Viewers,
};
use super::{
    bad_request, json, path_name, read_json, store_error, unavailable, QueryParams, MAX_DESCRIPTION,
};
use crate::config::Config;
use crate::control::{Answer, Query, ViewerCounts};
use crate::http::{error, ConnInfo, Request, Response};
use crate::rt;
use crate::shard::Shard;
use crate::store::{SessionRow, StoreError, StreamInfo, StreamUpdate};

/// How long a stop waits for the arbiter to see the publisher gone.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The streams live now: name → (origin shard, generation).
async fn live_streams(shard: &Rc<Shard>) -> Result<HashMap<String, (usize, u64)>, Response> {
    match shard.ask(0, Query::LiveStreams).await {
        Some(Answer::LiveStreams(list)) => Ok(list
            .into_iter()
            .map(|(name, origin, generation)| (name, (origin, generation)))
            .collect()),
        _ => Err(unavailable("shard 0 did not answer")),
    }
}

/// A stream's status from its settings, its latest session and whether it is live.
fn status_of(
    info: &StreamInfo,
    last: Option<&SessionRow>,
    live: bool,
) -> (StreamStatus, Option<String>) {
    if !info.enabled {
        return (StreamStatus::Disabled, None);
    }
    if live {
        return (StreamStatus::Live, None);
    }
    match last {
        None => (StreamStatus::Idle, None),
        Some(s) => match s.end_reason.as_deref() {
            Some(reason) if reason.starts_with("error") => {
                (StreamStatus::Error, Some(reason.to_owned()))
            }
            _ => (StreamStatus::Ended, None),
        },
    }
}

/// The host clients reached us by: the `Host` header without its port when it is a plain
/// host name or address, else the listen address.
fn request_host(headers: &http::HeaderMap, cfg: &Config) -> String {
    let from_header = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(host_only);
    from_header.unwrap_or_else(|| {
        let ip = cfg.rtmp.listen.ip();
        if ip.is_unspecified() {
            "localhost".to_owned()
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        }
    })
}

/// `host[:port]` → `host`, when `host` is a DNS name, an IPv4 address or a bracketed IPv6
/// address; `None` for anything else.
fn host_only(value: &str) -> Option<String> {
    let v = value.trim();
    let host = if v.starts_with('[') {
        let end = v.find(']')?;
        let host = &v[..=end];
        let inner = &host[1..host.len() - 1];
        if inner.is_empty()
            || !inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        host
    } else {
        let host = v.rsplit_once(':').map_or(v, |(h, _)| h);
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return None;
        }
        host
    };
    (!host.is_empty() && host.len() <= 253).then(|| host.to_owned())
}

/// Where to play `name`.
fn play_urls(cfg: &Config, conn: &ConnInfo, headers: &http::HeaderMap, name: &str) -> PlayUrls {
    let host = request_host(headers, cfg);
    let app = crate::rtmp_conn::APP_NAME;
    let hls = if cfg.hls.enabled {
        let http = cfg.http.listen.map(|a| ("http", a.port()));
        let https = cfg.http.tls_listen.map(|a| ("https", a.port()));
        let pick = if conn.tls {
            https.or(http)
        } else {
            http.or(https)
        };
        pick.map(|(scheme, port)| format!("{scheme}://{host}:{port}/hls/{name}/index.m3u8"))
    } else {
        None
    };
    PlayUrls {
        rtmp_play: format!("rtmp://{host}:{}/{app}/{name}", cfg.rtmp.listen.port()),
        rtmps_play: cfg
            .rtmp
            .tls_listen
            .map(|a| format!("rtmps://{host}:{}/{app}/{name}", a.port())),
        hls,
        srt_play: srt_url(cfg, &host, name, "request"),
    }
}

/// An SRT URL (caller mode) for `resource` (a key to publish, a name to play) in `mode`
/// (`publish`, `request`), with the `streamid` of the SRT access control guidelines;
/// `None` when SRT is off.
fn srt_url(cfg: &Config, host: &str, resource: &str, mode: &str) -> Option<String> {
    let app = crate::rtmp_conn::APP_NAME;
    cfg.srt.listen.map(|a| {
        format!(
            "srt://{host}:{}?streamid=#!::r={app}/{resource},m={mode}",
            a.port()
        )
    })
}

/// Where to publish (with `key`) and play `name`.
fn key_urls(
    cfg: &Config,
    conn: &ConnInfo,
    headers: &http::HeaderMap,
    name: &str,
    key: &str,
) -> KeyUrls {
    let host = request_host(headers, cfg);
    let app = crate::rtmp_conn::APP_NAME;
    let play = play_urls(cfg, conn, headers, name);
    KeyUrls {
        rtmp_publish: format!("rtmp://{host}:{}/{app}/{key}", cfg.rtmp.listen.port()),
        rtmps_publish: cfg
            .rtmp
            .tls_listen
            .map(|a| format!("rtmps://{host}:{}/{app}/{key}", a.port())),
        rtmp_play: play.rtmp_play,
        rtmps_play: play.rtmps_play,
        hls: play.hls,
        srt_publish: srt_url(cfg, &host, key, "publish"),
        srt_play: play.srt_play,
    }
}

fn stream_json(
    info: StreamInfo,
    last: Option<&SessionRow>,
    live: bool,
    urls: PlayUrls,
    stats: Option<LiveStats>,
) -> Stream {
    let (status, error) = status_of(&info, last, live);
    Stream {
        id: info.id,
        name: info.name,
        status,
        error,
        description: info.description,
        record: info.record,
        enabled: info.enabled,
        created_at: info.created_at,
        urls,
        live: stats,
    }
}

fn with_key(
    info: StreamInfo,
    key: String,
    status: (StreamStatus, Option<String>),
    urls: KeyUrls,
) -> StreamWithKey {
    StreamWithKey {
        id: info.id,
        name: info.name,
        key,
        status: status.0,
        error: status.1,
        description: info.description,
        record: info.record,
        enabled: info.enabled,
        created_at: info.created_at,
        urls,
    }
}

/// Live statistics of `name` from its origin shard and every shard's viewers; `None` when it
/// is not (or no longer) published there.
async fn live_stats(
    shard: &Rc<Shard>,
    name: &str,
    origin: usize,
) -> Result<Option<LiveStats>, Response> {
    let info = match shard
        .ask(
            origin,
            Query::Ingest {
                name: name.to_owned(),
            },
        )
        .await
    {
        Some(Answer::Ingest(info)) => info,
        _ => return Err(unavailable(format!("shard {origin} did not answer"))),
    };
    let Some(info) = info else { return Ok(None) };
    let mut viewers = ViewerCounts::default();
    for answer in shard
        .ask_all(Query::Viewers {
            name: name.to_owned(),
        })
        .await
    {
        if let Answer::Viewers(v) = answer {
            viewers.add(&v);
        }
    }
    let tracks = info
        .tracks
        .iter()
        .map(|t| TrackInfo {
            kind: match t.kind {
                "video" => TrackKind::Video,
                "audio" => TrackKind::Audio,
                _ => TrackKind::Data,
            },
            codec: t.codec.to_owned(),
            profile: t.profile,
            width: t.width,
            height: t.height,
            // JSON has no NaN or infinity.
            fps: t.fps.filter(|f| f.is_finite()),
            sample_rate: t.sample_rate,
            channels: t.channels,
        })
        .collect();
    Ok(Some(LiveStats {
        started_at: i64::try_from(info.started_at_ms / 1000).unwrap_or(i64::MAX),
        uptime_ms: u64::try_from(info.uptime.as_millis()).unwrap_or(u64::MAX),
        protocol: info.protocol.to_owned(),
        remote: info.remote.to_string(),
        shard: u32::try_from(info.shard).unwrap_or(u32::MAX),
        tracks,
        bitrate_in_1s: info.stats.bitrate_1s,
        bitrate_in_10s: info.stats.bitrate_10s,
        frames_in: info.stats.frames,
        bytes_in: info.stats.bytes,
        viewers: Viewers {
            rtmp: viewers.rtmp,
            srt: viewers.srt,
            hls: viewers.hls,
            total: viewers.rtmp + viewers.srt + viewers.hls,
        },
        bytes_out: viewers.bytes_out,
        dropped_frames: viewers.dropped_frames,
        mesh_dropped_frames: info.mirror_drops,
        srt: info.srt_link,
    }))
}

/// Ends the publisher of `name`, if it is live, with `reason` (the `stream.ended` reason and
/// the session's end), and waits (bounded) until the arbiter has let the name go. False when
/// it was not live.
pub(super) async fn stop_publisher(
    shard: &Rc<Shard>,
    name: &str,
    reason: &str,
) -> Result<bool, Response> {
    let live = live_streams(shard).await?;
    let Some(&(origin, generation)) = live.get(name) else {
        return Ok(false);
    };
    let stopped = match shard
        .ask(
            origin,
            Query::Stop {
                name: name.to_owned(),
                reason: reason.to_owned(),
            },
        )
        .await
    {
        Some(Answer::Stopped(s)) => s,
        _ => return Err(unavailable(format!("shard {origin} did not answer"))),
    };
    if !stopped {
        return Ok(false);
    }
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        rt::sleep(Duration::from_millis(20)).await;
        let now_live = live_streams(shard).await?;
        if now_live.get(name).is_none_or(|(_, g)| *g != generation) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                stream = name,
                "stop: the publisher did not leave within 5 s"
            );
            return Ok(true);
        }
    }
}

/// A fresh generated stream name: `stream-` and 8 hex digits.
fn generated_name() -> String {
    use rand::Rng as _;
    format!("stream-{:08x}", rand::thread_rng().gen::<u32>())
}

fn check_description(d: Option<&str>) -> Result<(), Response> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(bad_request(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        ))),
        _ => Ok(()),
    }
}

/// Create a stream.
///
/// Returns its secret publish key, which is shown only here and by rotate-key.
#[utoipa::path(
    post,
    path = "/api/v1/streams",
    tag = "streams",
    request_body(content = CreateStream, description = "Optional, like every field in it: no body creates a stream with a generated name."),
    responses(
        (status = 201, description = "Created", body = StreamWithKey,
            headers(("Location" = String, description = "The stream's URL"))),
        (status = 409, description = "A stream with this name exists", body = super::types::ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = super::types::ErrorBody),
    )
)]
pub(super) async fn create(shard: &Rc<Shard>, conn: &ConnInfo, req: Request) -> Response {
    let headers = req.headers().clone();
    let body: CreateStream = match read_json(req, true).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = check_description(body.description.as_deref()) {
        return r;
    }
    let CreateStream {
        name,
        record,
        description,
    } = body;
    let created = shard
        .store
        .run(move |store| match name {
            Some(name) => store.create_stream_with(&name, record, description.as_deref()),
            None => {
                // 32 random bits: a clash is rare, and retried.
                let mut last = None;
                for _ in 0..8 {
                    match store.create_stream_with(
                        &generated_name(),
                        record,
                        description.as_deref(),
                    ) {
                        Err(StoreError::StreamExists(n)) => {
                            last = Some(StoreError::StreamExists(n))
                        }
                        other => return other,
                    }
                }
                Err(last.unwrap_or(StoreError::Busy))
            }
        })
        .await;
    let (record, info) = match created {
        Ok(c) => c,
        Err(e) => return store_error(e),
    };
    tracing::info!(stream = %info.name, "stream created through the API");
    let urls = key_urls(&shard.cfg, conn, &headers, &info.name, &record.key);
    let location = format!("/api/v1/streams/{}", info.name);
    let status = status_of(&info, None, false);
    let mut r = json(
        StatusCode::CREATED,
        &with_key(info, record.key, status, urls),
    );
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// List streams.
#[utoipa::path(
    get,
    path = "/api/v1/streams",
    tag = "streams",
    params(
        ("status" = Option<StreamStatus>, Query, description = "Only streams with this status"),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Page number, from 1 (default 1)"),
        ("per_page" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of streams, oldest first", body = StreamList),
    )
)]
pub(super) async fn list(shard: &Rc<Shard>, conn: &ConnInfo, req: &Request) -> Response {
    let q = match QueryParams::parse(req) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let page = match q.page() {
        Ok(p) => p,
        Err(r) => return r,
    };
    let filter = match q.get("status") {
        None => None,
        Some(s) => match StreamStatus::parse(s) {
            Some(s) => Some(s),
            None => {
                return bad_request(format!(
                    "status must be one of idle, live, ended, error, disabled, not {s:?}"
                ))
            }
        },
    };
    let infos = match shard.store.run(|s| s.stream_infos()).await {
        Ok(i) => i,
        Err(e) => return store_error(e),
    };
    let live = match live_streams(shard).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let matching: Vec<Stream> = infos
        .into_iter()
        .map(|(info, last)| {
            let is_live = live.contains_key(&info.name);
            let urls = play_urls(&shard.cfg, conn, req.headers(), &info.name);
            stream_json(info, last.as_ref(), is_live, urls, None)
        })
        .filter(|s| filter.is_none_or(|f| s.status == f))
        .collect();
    let total = matching.len() as u64;
    let streams = matching
        .into_iter()
        .skip(usize::try_from(page.offset()).unwrap_or(usize::MAX))
        .take(page.per_page as usize)
        .collect();
    json(
        StatusCode::OK,
        &StreamList {
            streams,
            page: page.page,
            per_page: page.per_page,
            total,
        },
    )
}

/// Builds the full view of `name` (live statistics included while it is live).
async fn current(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    headers: &http::HeaderMap,
    name: &str,
) -> Response {
    let owned = name.to_owned();
    let found = match shard.store.run(move |s| s.stream_info(&owned)).await {
        Ok(f) => f,
        Err(e) => return store_error(e),
    };
    let Some((info, last)) = found else {
        return super::not_found(format!("no stream named {name:?}"));
    };
    let live = match live_streams(shard).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let stats = match live.get(name) {
        Some(&(origin, _)) => match live_stats(shard, name, origin).await {
            Ok(s) => s,
            Err(r) => return r,
        },
        None => None,
    };
    let urls = play_urls(&shard.cfg, conn, headers, name);
    let is_live = stats.is_some();
    json(
        StatusCode::OK,
        &stream_json(info, last.as_ref(), is_live, urls, stats),
    )
}

/// Get a stream, with live statistics while it is live.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{name}",
    tag = "streams",
    params(
        ("name" = String, Path, description = "Stream name", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
    ),
    responses(
        (status = 200, description = "The stream", body = Stream),
        (status = 404, description = "No such stream", body = super::types::ErrorBody),
    )
)]
pub(super) async fn get(shard: &Rc<Shard>, conn: &ConnInfo, req: &Request, name: &str) -> Response {
    let name = match path_name(name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    current(shard, conn, req.headers(), &name).await
}

/// Change a stream's settings.
///
/// Only the fields given change. `enabled: false` also stops the current publisher.
#[utoipa::path(
    patch,
    path = "/api/v1/streams/{name}",
    tag = "streams",
    params(
        ("name" = String, Path, description = "Stream name", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
    ),
    request_body = UpdateStream,
    responses(
        (status = 200, description = "The stream after the change", body = Stream),
        (status = 404, description = "No such stream", body = super::types::ErrorBody),
        (status = 413, description = "Body larger than 16 KiB", body = super::types::ErrorBody),
    )
)]
pub(super) async fn update(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    req: Request,
    name: &str,
) -> Response {
    let name = match path_name(name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let headers = req.headers().clone();
    let body: UpdateStream = match read_json(req, false).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(r) = check_description(body.description.as_ref().and_then(Option::as_deref)) {
        return r;
    }
    let disable = body.enabled == Some(false);
    let update = StreamUpdate {
        record: body.record,
        description: body.description,
        enabled: body.enabled,
    };
    let owned = name.clone();
    if let Err(e) = shard
        .store
        .run(move |s| s.update_stream(&owned, &update))
        .await
    {
        return store_error(e);
    }
    if disable {
        if let Err(r) = stop_publisher(shard, &name, "stream disabled by operator").await {
            return r;
        }
    }
    current(shard, conn, &headers, &name).await
}

/// Delete a stream: its publisher is stopped, its key stops working, its history goes.
/// Its recordings stay.
#[utoipa::path(
    delete,
    path = "/api/v1/streams/{name}",
    tag = "streams",
    params(
        ("name" = String, Path, description = "Stream name", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such stream", body = super::types::ErrorBody),
    )
)]
pub(super) async fn delete(shard: &Rc<Shard>, name: &str) -> Response {
    let name = match path_name(name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    // Disabled first, so the publisher cannot come back between the stop and the delete.
    let owned = name.clone();
    let disable = StreamUpdate {
        enabled: Some(false),
        ..StreamUpdate::default()
    };
    if let Err(e) = shard
        .store
        .run(move |s| s.update_stream(&owned, &disable))
        .await
    {
        return store_error(e);
    }
    if let Err(r) = stop_publisher(shard, &name, "stream deleted by operator").await {
        return r;
    }
    let owned = name.clone();
    match shard.store.run(move |s| s.delete(&owned)).await {
        Ok(true) => {
            tracing::info!(stream = %name, "stream deleted through the API");
            http::Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::CACHE_CONTROL, "no-store")
                .body(crate::http::Body::empty())
                .unwrap_or_default()
        }
        Ok(false) => super::not_found(format!("no stream named {name:?}")),
        Err(e) => store_error(e),
    }
}

/// Stop a stream: its publisher is disconnected and the stream ends.
///
/// The publisher may publish again (use `enabled: false` to refuse it).
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/stop",
    tag = "streams",
    params(
        ("name" = String, Path, description = "Stream name", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
    ),
    responses(
        (status = 200, description = "Stopped; the stream as it is now", body = Stream),
        (status = 404, description = "No such stream", body = super::types::ErrorBody),
        (status = 409, description = "The stream is not live", body = super::types::ErrorBody),
    )
)]
pub(super) async fn stop(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    req: &Request,
    name: &str,
) -> Response {
    let name = match path_name(name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let owned = name.clone();
    match shard.store.run(move |s| s.stream_info(&owned)).await {
        Ok(Some(_)) => {}
        Ok(None) => return super::not_found(format!("no stream named {name:?}")),
        Err(e) => return store_error(e),
    }
    match stop_publisher(shard, &name, "stopped by operator").await {
        Ok(true) => {
            tracing::info!(stream = %name, "stream stopped through the API");
            current(shard, conn, req.headers(), &name).await
        }
        Ok(false) => error(StatusCode::CONFLICT, "not_live", "the stream is not live"),
        Err(r) => r,
    }
}

/// Give a stream a new publish key.
///
/// The old key stops working for new publishes at once; a publisher already live goes on.
#[utoipa::path(
    post,
    path = "/api/v1/streams/{name}/rotate-key",
    tag = "streams",
    params(
        ("name" = String, Path, description = "Stream name", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
    ),
    responses(
        (status = 200, description = "The stream with its new key", body = StreamWithKey),
        (status = 404, description = "No such stream", body = super::types::ErrorBody),
    )
)]
pub(super) async fn rotate_key(
    shard: &Rc<Shard>,
    conn: &ConnInfo,
    req: &Request,
    name: &str,
) -> Response {
    let name = match path_name(name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let owned = name.clone();
    let rotated = shard
        .store
        .run(move |s| {
            let record = s.rotate_key(&owned)?;
            let (info, last) = s
                .stream_info(&owned)?
                .ok_or_else(|| StoreError::StreamNotFound(owned.clone()))?;
            Ok((record, info, last))
        })
        .await;
    let (record, info, last) = match rotated {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let live = match live_streams(shard).await {
        Ok(l) => l.contains_key(&name),
        Err(r) => return r,
    };
    tracing::info!(stream = %name, "stream key rotated through the API");
    let urls = key_urls(&shard.cfg, conn, req.headers(), &name, &record.key);
    let status = status_of(&info, last.as_ref(), live);
    json(StatusCode::OK, &with_key(info, record.key, status, urls))
}

/// A stream's publish history, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/streams/{name}/sessions",
    tag = "streams",
    params(
        ("name" = String, Path, description = "Stream name", pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64),
        ("page" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Page number, from 1 (default 1)"),
        ("per_page" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of sessions", body = SessionList),
        (status = 404, description = "No such stream", body = super::types::ErrorBody),
    )
)]
pub(super) async fn sessions(shard: &Rc<Shard>, req: &Request, name: &str) -> Response {
    let name = match path_name(name) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let page = match QueryParams::parse(req).and_then(|q| q.page()) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let owned = name.clone();
    let found = shard
        .store
        .run(move |s| {
            if s.stream_info(&owned)?.is_none() {
                return Ok(None);
            }
            s.sessions(&owned, page.per_page, page.offset()).map(Some)
        })
        .await;
    let (total, rows) = match found {
        Ok(Some(f)) => f,
        Ok(None) => return super::not_found(format!("no stream named {name:?}")),
        Err(e) => return store_error(e),
    };
    // The session going on now gets its counters from the origin shard.
    let live = match live_streams(shard).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let stats = match live.get(&name) {
        Some(&(origin, _)) if rows.iter().any(|r| r.ended_at_ms.is_none()) => {
            match live_stats(shard, &name, origin).await {
                Ok(s) => s,
                Err(r) => return r,
            }
        }
        _ => None,
    };
    let now_ms = crate::events::unix_ms();
    let sessions = rows
        .into_iter()
        .map(|r| session_json(r, stats.as_ref(), now_ms))
        .collect();
    json(
        StatusCode::OK,
        &SessionList {
            sessions,
            page: page.page,
            per_page: page.per_page,
            total,
        },
    )
}

fn session_json(r: SessionRow, live: Option<&LiveStats>, now_ms: u64) -> Session {
    let is_live = r.ended_at_ms.is_none()
        && live.is_some_and(|l| l.started_at == r.started_at_ms.div_euclid(1000));
    let (bytes, frames) = match live {
        Some(l) if is_live => (l.bytes_in, l.frames_in),
        _ => (
            u64::try_from(r.bytes).unwrap_or(0),
            u64::try_from(r.frames).unwrap_or(0),
        ),
    };
    let end = r
        .ended_at_ms
        .unwrap_or_else(|| i64::try_from(now_ms).unwrap_or(i64::MAX));
    Session {
        id: r.id,
        started_at: r.started_at_ms.div_euclid(1000),
        ended_at: r.ended_at_ms.map(|t| t.div_euclid(1000)),
        duration_ms: u64::try_from(end.saturating_sub(r.started_at_ms)).unwrap_or(0),
        live: is_live,
        remote: r.remote,
        protocol: r.protocol,
        bytes,
        frames,
        end_reason: r.end_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(enabled: bool) -> StreamInfo {
        StreamInfo {
            id: "0011223344556677".into(),
            name: "s".into(),
            created_at: 1,
            record: None,
            description: None,
            enabled,
        }
    }

    fn session(reason: Option<&str>) -> SessionRow {
        SessionRow {
            id: 1,
            stream: "s".into(),
            started_at_ms: 1000,
            ended_at_ms: reason.map(|_| 2000),
            remote: "127.0.0.1:5".into(),
            protocol: "rtmp".into(),
            bytes: 0,
            frames: 0,
            end_reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn status_flow() {
        assert_eq!(status_of(&info(true), None, false).0, StreamStatus::Idle);
        assert_eq!(status_of(&info(true), None, true).0, StreamStatus::Live);
        let ended = session(Some("publisher disconnected"));
        assert_eq!(
            status_of(&info(true), Some(&ended), false),
            (StreamStatus::Ended, None)
        );
        let failed = session(Some("error: protocol error: bad chunk"));
        assert_eq!(
            status_of(&info(true), Some(&failed), false),
            (
                StreamStatus::Error,
                Some("error: protocol error: bad chunk".into())
            )
        );
        // Live again on republish; disabled wins over everything.
        assert_eq!(
            status_of(&info(true), Some(&failed), true).0,
            StreamStatus::Live
        );
        assert_eq!(
            status_of(&info(false), Some(&ended), true).0,
            StreamStatus::Disabled
        );
    }

    #[test]
    fn hosts_from_the_host_header() {
        assert_eq!(
            host_only("example.com:8080").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_only("10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(host_only("[::1]:8080").as_deref(), Some("[::1]"));
        assert_eq!(host_only("[fe80::1%eth0]"), None);
        assert_eq!(host_only("evil.com/x"), None);
        assert_eq!(host_only(""), None);
        assert_eq!(host_only("a b"), None);
    }

    #[test]
    fn urls_follow_the_config() {
        let mut cfg = Config::default();
        cfg.rtmp.listen = "0.0.0.0:1935".parse().unwrap();
        cfg.http.listen = Some("0.0.0.0:8080".parse().unwrap());
        let conn = ConnInfo {
            id: 1,
            peer: "127.0.0.1:9".parse().unwrap(),
            tls: false,
        };
        let mut h = http::HeaderMap::new();
        h.insert(header::HOST, "media.example:8080".parse().unwrap());
        let u = key_urls(&cfg, &conn, &h, "cam", "KEY");
        assert_eq!(u.rtmp_publish, "rtmp://media.example:1935/live/KEY");
        assert_eq!(u.rtmp_play, "rtmp://media.example:1935/live/cam");
        assert_eq!(u.rtmps_publish, None);
        assert_eq!(
            u.hls.as_deref(),
            Some("http://media.example:8080/hls/cam/index.m3u8")
        );
        assert_eq!(
            u.srt_publish.as_deref(),
            Some("srt://media.example:8890?streamid=#!::r=live/KEY,m=publish")
        );
        assert_eq!(
            u.srt_play.as_deref(),
            Some("srt://media.example:8890?streamid=#!::r=live/cam,m=request")
        );
        cfg.srt.listen = None;
        let u = key_urls(&cfg, &conn, &h, "cam", "KEY");
        assert_eq!((u.srt_publish, u.srt_play), (None, None));
        cfg.rtmp.tls_listen = Some("0.0.0.0:1936".parse().unwrap());
        cfg.hls.enabled = false;
        let u = key_urls(&cfg, &conn, &http::HeaderMap::new(), "cam", "KEY");
        assert_eq!(
            u.rtmps_publish.as_deref(),
            Some("rtmps://localhost:1936/live/KEY")
        );
        assert_eq!(u.hls, None);
    }

    #[test]
    fn live_session_takes_live_counters() {
        let mut row = session(None);
        row.started_at_ms = 5_000;
        let s = session_json(row.clone(), None, 7_500);
        assert!(!s.live);
        assert_eq!(s.duration_ms, 2_500);
        assert_eq!(s.ended_at, None);
        let done = session_json(session(Some("publisher left")), None, 99_000);
        assert_eq!(
            (done.started_at, done.ended_at, done.duration_ms),
            (1, Some(2), 1000)
        );
    }
}
