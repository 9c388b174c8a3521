//! `hls` mode: N concurrent LL-HLS players doing blocking playlist reloads against a server.
//!
//! Each client holds ONE keep-alive HTTP/1.1 connection ([`http1`]) and runs the loop of a
//! low-latency player (RFC 8216bis §6.2.5.2 and §6.3.7):
//!
//! ```text
//! GET media.m3u8                      once: parts, EXT-X-MAP, the preload hint (M, P)
//! GET init-<id>.mp4                   whenever EXT-X-MAP changes
//! loop:
//!   GET media.m3u8?_HLS_msn=M&_HLS_part=P   held by the server until part (M, P) exists
//!   GET <URI of that part>                  must be complete by now: recorded
//!   (M, P) := the new playlist's preload hint
//! ```
//!
//! For each part received it records *ingest → part received*: the wall-clock time of the
//! read that completed the part's response minus the send time the publisher stamped into the
//! SEI of the part's first video frame ([`part::first_stamp`]). Publisher and clients share
//! the process (or at least the machine's clock). Also recorded: ingest → the blocking reload
//! that listed the part was answered ("listed", the closest a client gets to "part available"),
//! the blocking-reload wait, the part GET time, requests/s, and errors: non-200 answers,
//! timeouts, connection failures, protocol faults (a reload answered before the part it asked
//! for was listed, a part that is not moof+mdat, part names out of sequence, a hinted part
//! that never appeared) and parts missed (gaps in a client's part sequence).
//!
//! A step runs like a `fanout` step: fresh clients started at `--connect-rate`, a warm-up, the
//! measured window, a grace period. Parts count (and give a latency sample) when the send
//! time of their first video frame falls in the window; requests and bytes count when their
//! response completed in the window; errors count over the whole step.

mod http1;
mod part;
mod playlist;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::fanout::LatencyStats;
use crate::procstat::{cpu_percent, cpu_sample, rss_kib};
use crate::publisher::Publisher;
use crate::rtmp::wall_ns;
use http1::{Connection, Response};
use playlist::{MediaPlaylist, PartId};

/// Arguments of `zerocast-bench hls`.
#[derive(Debug, Args)]
pub struct HlsArgs {
    /// The media playlist, http://HOST:PORT/hls/NAME/media.m3u8 (a multivariant playlist works
    /// too: its first variant is used).
    #[arg(long)]
    url: String,
    /// Client counts, one step each (fresh clients per step, same stream).
    #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
    clients: Vec<usize>,
    /// Measured window per step, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Server PID, for CPU% and RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Publish the bench clip here first (rtmp://HOST:PORT/live/NAME), as `fanout` does.
    /// Without it something must already publish a stamped stream (another zerocast-bench
    /// on this machine) or no latency is measured.
    #[arg(long)]
    publish_url: Option<String>,
    /// Directory for `<date>-hls.json` and `<date>-hls.md`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Longest wait for one response, seconds (a blocking reload may be held for three target
    /// durations).
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    #[command(flatten)]
    common: crate::Common,
}

/// Where the stream is served.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddr,
    /// `Host` header value.
    host: String,
    /// Media playlist path (and query, if the URL had one).
    media: String,
}

impl Target {
    /// The request target for `uri` as written in the playlist (relative, absolute-path, or
    /// a full URL on the same authority).
    fn resolve(&self, uri: &str) -> Result<String> {
        if let Some(rest) = uri.strip_prefix("http://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            if authority != self.host {
                bail!("{uri}: on another server than {}", self.host);
            }
            return Ok(format!("/{path}"));
        }
        if uri.starts_with('/') {
            return Ok(uri.to_owned());
        }
        let path = self.media.split('?').next().unwrap_or("");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        Ok(format!("{dir}{uri}"))
    }

    /// The blocking reload for `id` (§6.2.5.2).
    fn reload(&self, id: PartId) -> String {
        let sep = if self.media.contains('?') { '&' } else { '?' };
        format!(
            "{}{sep}_HLS_msn={}&_HLS_part={}",
            self.media, id.msn, id.index
        )
    }
}

/// Splits `http://host[:port]/path` into (authority with port, path).
fn parse_http_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

/// Error counts of a step (over the whole step: ramp, warm-up, window, grace).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCounts {
    /// Everything below except `parts_missed`.
    pub total: u64,
    /// Answers other than 200.
    pub non_200: u64,
    /// Requests without a complete answer within `--request-timeout`.
    pub timeouts: u64,
    /// Connects that failed, connections closed or broken mid-response.
    pub connection: u64,
    /// Protocol faults: reload answered before the part was listed, malformed playlist or
    /// part, part names out of sequence, a hinted part that never appeared.
    pub protocol: u64,
    /// Parts skipped over: gaps in a client's part sequence.
    pub parts_missed: u64,
    /// Counts by kind, e.g. `"part: HTTP 404"`.
    pub by_kind: BTreeMap<String, u64>,
    /// The first errors of each kind in full (client, time into the step, part).
    pub examples: Vec<String>,
    /// Examples kept so far, by kind.
    #[serde(skip)]
    shown: BTreeMap<String, usize>,
}

impl ErrorCounts {
    /// Keeps `text` as an example unless this kind has had its share.
    fn example(&mut self, kind: &str, text: impl FnOnce() -> String) {
        const PER_KIND: usize = 3;
        const ALL: usize = 24;
        let n = self.shown.entry(kind.to_owned()).or_default();
        if *n < PER_KIND && self.examples.len() < ALL {
            *n += 1;
            self.examples.push(text());
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub struct HlsStepResult {
    /// Clients.
    pub clients: usize,
    /// Window length, seconds.
    pub window_s: f64,
    /// Parts received whose first video frame was sent in the window, summed over clients.
    pub parts_received: u64,
    /// Distinct parts among them (the parts the server made in the window).
    pub distinct_parts: u64,
    /// `parts_received` / window.
    pub parts_per_s: f64,
    /// The smallest share of `distinct_parts` one client received.
    pub worst_client_share: f64,
    /// Clients that received no part in the window.
    pub clients_without_parts: usize,
    /// Requests answered in the window (all kinds, all clients).
    pub requests: u64,
    /// `requests` / window.
    pub requests_per_s: f64,
    /// Response bodies completed in the window, Mbit/s.
    pub delivered_mbps: f64,
    /// Ingest (publisher send of the part's first video frame) → last byte of the part.
    pub latency: LatencyStats,
    /// Ingest → the blocking reload that listed the part was answered.
    pub listed: LatencyStats,
    /// Ingest → part received, minus the part's DURATION (clamped at 0).
    pub over_part_duration: LatencyStats,
    /// Blocking reload: request sent → answer complete.
    pub reload_wait: LatencyStats,
    /// Part GET after the reload: request sent → last byte.
    pub part_get: LatencyStats,
    /// PART-TARGET of the playlist, ms.
    pub part_target_ms: Option<f64>,
    /// The latency target: PART-TARGET + 20 ms.
    pub target_p99_ms: Option<f64>,
    /// Latency p99 within the target.
    pub p99_within_target: Option<bool>,
    /// Parts without a latency SEI (not counted above).
    pub parts_unstamped: u64,
    /// Blocking reloads for a hinted part index past the end of its segment, answered (as
    /// §6.2.5.2 allows) with part 0 of the next segment, which is the hinted part. Not an error.
    pub hint_rollovers: u64,
    /// Blocking reloads whose answer already listed parts after the one asked for: the answer
    /// came (or was read) a part or more late. The client then skips to the new hint.
    pub reloads_behind: u64,
    /// Errors.
    pub errors: ErrorCounts,
    /// Server CPU over the window, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server CPU % per 1,000 requests/s.
    pub server_cpu_per_krps: Option<f64>,
    /// Server VmRSS at the window start, KiB.
    pub server_rss_start_kib: Option<u64>,
    /// Server VmRSS at the window end, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// The harness's own CPU over the window, % of one core (all its threads).
    pub harness_cpu_pct: f64,
    /// Histograms, for the printed distributions.
    #[serde(skip)]
    pub histograms: Option<Box<[Histogram<u64>; 2]>>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour, 3 significant digits: bounds hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// How a step runs.
#[derive(Debug, Clone)]
struct StepPlan {
    clients: usize,
    connect_rate: f64,
    warmup: Duration,
    window: Duration,
    grace: Duration,
    server_pid: Option<u32>,
    request_timeout: Duration,
}

/// What a step's clients share (one thread, so `RefCell`).
struct StepShared {
    started: Instant,
    /// Window `[start, end)` in wall-clock ns, once open.
    window: RefCell<Option<(u64, u64)>>,
    latency: RefCell<Histogram<u64>>,
    listed: RefCell<Histogram<u64>>,
    over: RefCell<Histogram<u64>>,
    reload_wait: RefCell<Histogram<u64>>,
    part_get: RefCell<Histogram<u64>>,
    parts: RefCell<Vec<u64>>,
    distinct: RefCell<HashSet<PartId>>,
    unstamped: RefCell<u64>,
    rollovers: RefCell<u64>,
    behind: RefCell<u64>,
    requests: RefCell<u64>,
    bytes: RefCell<u64>,
    errors: RefCell<ErrorCounts>,
    request_timeout: Duration,
}

/// Error classes.
#[derive(Debug, Clone, Copy)]
enum Class {
    Status,
    Timeout,
    Connection,
    Protocol,
}

impl StepShared {
    fn in_window(&self, ns: u64) -> bool {
        matches!(*self.window.borrow(), Some((s, e)) if ns >= s && ns < e)
    }

    fn error(&self, client: usize, class: Class, kind: &str, detail: &str) {
        let mut e = self.errors.borrow_mut();
        e.total += 1;
        match class {
            Class::Status => e.non_200 += 1,
            Class::Timeout => e.timeouts += 1,
            Class::Connection => e.connection += 1,
            Class::Protocol => e.protocol += 1,
        }
        *e.by_kind.entry(kind.to_owned()).or_default() += 1;
        let at = self.started.elapsed().as_secs_f64();
        e.example(kind, || {
            format!("client {client} at {at:.3} s: {kind}: {detail}")
        });
    }
}

/// Why a request got no usable answer (already counted as an error).
struct Failed;

/// One player's connection, reopened after failures.
struct Link {
    idx: usize,
    target: Rc<Target>,
    conn: Option<Connection>,
}

impl Link {
    /// GET `path`; counts the request and its errors (status other than 200 included).
    async fn get(&mut self, sh: &StepShared, what: &str, path: &str) -> Result<Response, Failed> {
        if self.conn.is_none() {
            match tokio::time::timeout(
                sh.request_timeout,
                Connection::connect(self.target.addr, &self.target.host),
            )
            .await
            {
                Ok(Ok(c)) => self.conn = Some(c),
                Ok(Err(e)) => {
                    sh.error(self.idx, Class::Connection, "connect", &format!("{e:#}"));
                    return Err(Failed);
                }
                Err(_) => {
                    sh.error(self.idx, Class::Timeout, "connect: timeout", path);
                    return Err(Failed);
                }
            }
        }
        // Invariant: set just above when it was None.
        let conn = self.conn.as_mut().expect("connected");
        let r = tokio::time::timeout(sh.request_timeout, conn.get(path)).await;
        let r = match r {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.conn = None;
                sh.error(
                    self.idx,
                    Class::Connection,
                    &format!("{what}: connection"),
                    &format!("{path}: {e:#}"),
                );
                return Err(Failed);
            }
            Err(_) => {
                self.conn = None;
                sh.error(
                    self.idx,
                    Class::Timeout,
                    &format!("{what}: timeout"),
                    &format!("{path}: no answer within {:?}", sh.request_timeout),
                );
                return Err(Failed);
            }
        };
        if !r.keep_alive {
            self.conn = None;
        }
        if sh.in_window(r.done_ns) {
            *sh.requests.borrow_mut() += 1;
            *sh.bytes.borrow_mut() += r.body.len() as u64;
        }
        if r.status != 200 {
            let body = String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).into_owned();
            sh.error(
                self.idx,
                Class::Status,
                &format!("{what}: HTTP {}", r.status),
                &format!("{path}: {}", body.trim()),
            );
            return Err(Failed);
        }
        Ok(r)
    }

    /// A fresh (non-blocking) playlist.
    async fn playlist(&mut self, sh: &StepShared) -> Result<MediaPlaylist, Failed> {
        let media = self.target.media.clone();
        let r = self.get(sh, "playlist", &media).await?;
        parse_playlist(sh, self.idx, &r)
    }
}

fn parse_playlist(sh: &StepShared, idx: usize, r: &Response) -> Result<MediaPlaylist, Failed> {
    let text = std::str::from_utf8(&r.body).map_err(|_| {
        sh.error(idx, Class::Protocol, "playlist: not UTF-8", "");
    });
    let text = text.map_err(|()| Failed)?;
    MediaPlaylist::parse(text).map_err(|e| {
        sh.error(idx, Class::Protocol, "playlist: malformed", &e.to_string());
        Failed
    })
}

/// Part 0 of the segment after `id`'s.
fn next_segment(id: PartId) -> PartId {
    PartId {
        msn: id.msn + 1,
        index: 0,
    }
}

/// Parts strictly between `last` and `got` that the playlist lists: the ones a client skipped.
fn missed_between(pl: &MediaPlaylist, last: PartId, got: PartId) -> u64 {
    if got.msn == last.msn {
        return u64::from(got.index.saturating_sub(last.index + 1));
    }
    pl.parts
        .iter()
        .filter(|p| p.id > last && p.id < got)
        .count() as u64
}

/// One LL-HLS player. Runs until aborted.
async fn client(idx: usize, target: Rc<Target>, sh: Rc<StepShared>) {
    let mut link = Link {
        idx,
        target: target.clone(),
        conn: None,
    };
    let pause = Duration::from_millis(100);
    let mut pl = loop {
        match link.playlist(&sh).await {
            Ok(p) if p.hint.is_some() => break p,
            _ => tokio::time::sleep(pause).await,
        }
    };
    let mut init: Option<String> = None;
    let mut last: Option<PartId> = None;
    loop {
        if pl.map_uri.is_some() && pl.map_uri != init {
            let uri = pl.map_uri.clone().unwrap_or_default();
            let got = match target.resolve(&uri) {
                Ok(path) => link.get(&sh, "init", &path).await.is_ok(),
                Err(e) => {
                    sh.error(idx, Class::Protocol, "init: URI", &format!("{e:#}"));
                    false
                }
            };
            if got {
                init = Some(uri);
            }
        }
        let Some(hint) = pl.hint.clone() else {
            // Ended, or a server that does not hint: poll.
            tokio::time::sleep(pause).await;
            if let Ok(p) = link.playlist(&sh).await {
                pl = p;
            }
            continue;
        };
        if let Some(fault) = playlist::sequence_fault(&pl) {
            sh.error(
                idx,
                Class::Protocol,
                "playlist: part names out of sequence",
                &fault,
            );
        }
        // The blocking reload.
        let t0 = Instant::now();
        let reload = target.reload(hint.id);
        let r = match link.get(&sh, "reload", &reload).await {
            Ok(r) => r,
            Err(Failed) => {
                tokio::time::sleep(pause).await;
                if let Ok(p) = link.playlist(&sh).await {
                    pl = p;
                }
                continue;
            }
        };
        let reload_done = r.done_ns;
        if sh.in_window(reload_done) {
            let us = t0.elapsed().as_micros() as u64;
            let _ = sh.reload_wait.borrow_mut().record(us.max(1));
        }
        let Ok(new) = parse_playlist(&sh, idx, &r) else {
            tokio::time::sleep(pause).await;
            continue;
        };
        // The part the reload answered for: the hinted one, or (§6.2.5.2) part 0 of the next
        // segment when the hinted index turned out to be past the end of its segment. Either
        // way it is the part the hint named: a player may have fetched that URI already.
        let (id, uri, listed) = match new.parts.iter().find(|p| p.id >= hint.id) {
            Some(p) if p.id == hint.id || (hint.id.index > 0 && p.id == next_segment(hint.id)) => {
                if p.id != hint.id {
                    *sh.rollovers.borrow_mut() += 1;
                }
                if p.uri != hint.uri {
                    sh.error(
                        idx,
                        Class::Protocol,
                        "playlist: the hinted part never appeared",
                        &format!("{} hinted, {} is at {}", hint.uri, p.uri, p.id),
                    );
                }
                (p.id, p.uri.clone(), Some(p.clone()))
            }
            Some(p) => {
                sh.error(
                    idx,
                    Class::Protocol,
                    "reload: hinted part never listed, later ones are",
                    &format!("{reload}: asked for {}, next listed {}", hint.id, p.id),
                );
                (p.id, p.uri.clone(), Some(p.clone()))
            }
            None => {
                sh.error(
                    idx,
                    Class::Protocol,
                    "reload: answered before the part asked for was listed",
                    &format!("{reload}: hint now {:?}", new.hint.as_ref().map(|h| h.id)),
                );
                (hint.id, hint.uri.clone(), None)
            }
        };
        // A client that keeps up gets its answer while the part asked for is the newest.
        if new.parts.iter().any(|p| p.id > id) {
            *sh.behind.borrow_mut() += 1;
        }
        // The part: complete by now.
        let t1 = Instant::now();
        let path = match target.resolve(&uri) {
            Ok(p) => p,
            Err(e) => {
                sh.error(idx, Class::Protocol, "part: URI", &format!("{e:#}"));
                pl = new;
                continue;
            }
        };
        let part = link.get(&sh, "part", &path).await;
        if let Ok(r) = part {
            record_part(&sh, idx, id, &r, t1, reload_done, listed.as_ref());
            if let Some(l) = last {
                let missed = missed_between(&new, l, id);
                if missed > 0 {
                    let mut e = sh.errors.borrow_mut();
                    e.parts_missed += missed;
                    let at = sh.started.elapsed().as_secs_f64();
                    e.example("missed", || {
                        format!(
                            "client {idx} at {at:.3} s: {missed} part(s) skipped between {l} and {id}"
                        )
                    });
                }
            }
            last = Some(id);
        }
        pl = new;
    }
}

/// Records one received part.
fn record_part(
    sh: &StepShared,
    idx: usize,
    id: PartId,
    r: &Response,
    get_start: Instant,
    reload_done: u64,
    listed: Option<&playlist::Part>,
) {
    if let Err(e) = part::check_chunk(&r.body) {
        sh.error(
            idx,
            Class::Protocol,
            "part: not a moof+mdat chunk",
            &format!("{id}: {e}"),
        );
    }
    let Some((sent, _seq)) = part::first_stamp(&r.body) else {
        *sh.unstamped.borrow_mut() += 1;
        return;
    };
    if !sh.in_window(sent) {
        return;
    }
    let latency = r.done_ns.saturating_sub(sent) / 1000;
    let _ = sh.latency.borrow_mut().record(latency.max(1));
    let _ = sh
        .listed
        .borrow_mut()
        .record((reload_done.saturating_sub(sent) / 1000).max(1));
    if let Some(p) = listed {
        let dur_us = (p.duration * 1e6) as u64;
        let _ = sh
            .over
            .borrow_mut()
            .record(latency.saturating_sub(dur_us).max(1));
    }
    let _ = sh
        .part_get
        .borrow_mut()
        .record((get_start.elapsed().as_micros() as u64).max(1));
    sh.parts.borrow_mut()[idx] += 1;
    sh.distinct.borrow_mut().insert(id);
}

async fn step(target: Rc<Target>, plan: StepPlan, part_target: Option<f64>) -> HlsStepResult {
    let sh = Rc::new(StepShared {
        started: Instant::now(),
        window: RefCell::new(None),
        latency: RefCell::new(new_histogram()),
        listed: RefCell::new(new_histogram()),
        over: RefCell::new(new_histogram()),
        reload_wait: RefCell::new(new_histogram()),
        part_get: RefCell::new(new_histogram()),
        parts: RefCell::new(vec![0; plan.clients]),
        distinct: RefCell::new(HashSet::new()),
        unstamped: RefCell::new(0),
        rollovers: RefCell::new(0),
        behind: RefCell::new(0),
        requests: RefCell::new(0),
        bytes: RefCell::new(0),
        errors: RefCell::new(ErrorCounts::default()),
        request_timeout: plan.request_timeout,
    });
    let ramp = Instant::now();
    let mut tasks = Vec::with_capacity(plan.clients);
    for i in 0..plan.clients {
        let at = ramp + Duration::from_secs_f64(i as f64 / plan.connect_rate.max(0.001));
        tokio::time::sleep_until(at.into()).await;
        tasks.push(tokio::task::spawn_local(client(
            i,
            target.clone(),
            sh.clone(),
        )));
    }
    tokio::time::sleep(plan.warmup).await;

    let w_start = wall_ns();
    *sh.window.borrow_mut() = Some((w_start, w_start + plan.window.as_nanos() as u64));
    let srv0 = plan.server_pid.and_then(|p| cpu_sample(Some(p)));
    let rss0 = plan.server_pid.and_then(|p| rss_kib(Some(p)));
    let me0 = cpu_sample(None);
    tokio::time::sleep(plan.window).await;
    let srv1 = plan.server_pid.and_then(|p| cpu_sample(Some(p)));
    let rss1 = plan.server_pid.and_then(|p| rss_kib(Some(p)));
    let me1 = cpu_sample(None);
    // Parts whose first frame was sent in the window still arrive during the grace period.
    tokio::time::sleep(plan.grace).await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }

    let secs = plan.window.as_secs_f64();
    let parts = sh.parts.borrow();
    let distinct = sh.distinct.borrow().len() as u64;
    let parts_received: u64 = parts.iter().sum();
    let requests = *sh.requests.borrow();
    let server_cpu_pct = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(cpu_percent(&a, &b)),
        _ => None,
    };
    let requests_per_s = requests as f64 / secs;
    let latency = sh.latency.borrow().clone();
    let reload_wait = sh.reload_wait.borrow().clone();
    let lat = LatencyStats::of(&latency);
    let target_p99_ms = part_target.map(|t| t * 1000.0 + 20.0);
    let bytes = *sh.bytes.borrow();
    let listed = LatencyStats::of(&sh.listed.borrow());
    let over_part_duration = LatencyStats::of(&sh.over.borrow());
    let part_get = LatencyStats::of(&sh.part_get.borrow());
    let parts_unstamped = *sh.unstamped.borrow();
    let hint_rollovers = *sh.rollovers.borrow();
    let reloads_behind = *sh.behind.borrow();
    let errors = sh.errors.borrow().clone();
    HlsStepResult {
        clients: plan.clients,
        window_s: secs,
        parts_received,
        distinct_parts: distinct,
        parts_per_s: parts_received as f64 / secs,
        worst_client_share: if distinct == 0 {
            0.0
        } else {
            parts.iter().copied().min().unwrap_or(0) as f64 / distinct as f64
        },
        clients_without_parts: parts.iter().filter(|&&n| n == 0).count(),
        requests,
        requests_per_s,
        delivered_mbps: bytes as f64 * 8.0 / secs / 1e6,
        p99_within_target: target_p99_ms
            .filter(|_| lat.count > 0)
            .map(|t| lat.p99_us as f64 / 1000.0 <= t),
        latency: lat,
        listed,
        over_part_duration,
        reload_wait: LatencyStats::of(&reload_wait),
        part_get,
        part_target_ms: part_target.map(|t| t * 1000.0),
        target_p99_ms,
        parts_unstamped,
        hint_rollovers,
        reloads_behind,
        errors,
        server_cpu_pct,
        server_cpu_per_krps: server_cpu_pct
            .filter(|_| requests_per_s > 0.0)
            .map(|c| c / (requests_per_s / 1000.0)),
        server_rss_start_kib: rss0,
        server_rss_end_kib: rss1,
        harness_cpu_pct: match (me0, me1) {
            (Some(a), Some(b)) => cpu_percent(&a, &b),
            _ => 0.0,
        },
        histograms: Some(Box::new([latency, reload_wait])),
    }
}

/// Waits until the playlist is served with a preload hint; follows a multivariant playlist
/// to its first variant. Returns the target and the playlist seen.
async fn probe(url: &str, limit: Duration) -> Result<(Target, MediaPlaylist)> {
    let (authority, path) = parse_http_url(url)?;
    let addr = tokio::net::lookup_host(&authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority}: no address"))?;
    let mut target = Target {
        addr,
        host: authority,
        media: path,
    };
    let t0 = Instant::now();
    let mut last = String::from("no answer");
    while t0.elapsed() < limit {
        let attempt = async {
            let mut c = Connection::connect(target.addr, &target.host).await?;
            c.get(&target.media).await
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(r)) if r.status == 200 => {
                let text = String::from_utf8_lossy(&r.body).into_owned();
                if let Some(v) = playlist::first_variant(&text) {
                    target.media = target.resolve(v)?;
                    continue;
                }
                let pl =
                    MediaPlaylist::parse(&text).map_err(|e| anyhow!("{}: {e}", target.media))?;
                if pl.hint.is_some() {
                    return Ok((target, pl));
                }
                last = "a playlist without EXT-X-PRELOAD-HINT".to_owned();
            }
            Ok(Ok(r)) => {
                last = format!(
                    "HTTP {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body).trim()
                )
            }
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => last = "timeout".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "http://{}{} not ready within {} s: {last}",
        target.host,
        target.media,
        limit.as_secs()
    )
}

/// The Markdown table header of [`table_row`].
const TABLE_HEADER: &str = "| clients | parts/s | parts (distinct) | worst client | requests/s | Mbit/s | ingest→part received p50 / p90 / p99 / max (ms) | p99 ≤ target | ingest→listed p50 / p99 (ms) | reload wait p50 / p99 (ms) | part GET p50 / p99 (ms) | errors | missed | server CPU % | CPU %/kreq/s | server RSS MB | harness CPU % |\n|---:|---:|---|---:|---:|---:|---|---|---|---|---|---:|---:|---:|---:|---|---:|";

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.prec$}"))
}

fn mb(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".to_owned(), |k| format!("{:.0}", k as f64 / 1024.0))
}

fn table_row(r: &HlsStepResult) -> String {
    format!(
        "| {} | {:.1} | {} ({}) | {:.1}% | {:.1} | {:.1} | {:.2} / {:.2} / {:.2} / {:.2} | {} | {:.2} / {:.2} | {:.1} / {:.1} | {:.2} / {:.2} | {} | {} | {} | {} | {}→{} | {:.1} |",
        r.clients,
        r.parts_per_s,
        r.parts_received,
        r.distinct_parts,
        r.worst_client_share * 100.0,
        r.requests_per_s,
        r.delivered_mbps,
        ms(r.latency.p50_us),
        ms(r.latency.p90_us),
        ms(r.latency.p99_us),
        ms(r.latency.max_us),
        match (r.p99_within_target, r.target_p99_ms) {
            (Some(true), Some(t)) => format!("yes (≤ {t:.0})"),
            (Some(false), Some(t)) => format!("**no** (> {t:.0})"),
            _ => "-".to_owned(),
        },
        ms(r.listed.p50_us),
        ms(r.listed.p99_us),
        ms(r.reload_wait.p50_us),
        ms(r.reload_wait.p99_us),
        ms(r.part_get.p50_us),
        ms(r.part_get.p99_us),
        r.errors.total,
        r.errors.parts_missed,
        opt(r.server_cpu_pct, 1),
        opt(r.server_cpu_per_krps, 1),
        mb(r.server_rss_start_kib),
        mb(r.server_rss_end_kib),
        r.harness_cpu_pct,
    )
}

fn error_notes(results: &[HlsStepResult]) -> String {
    let mut s = String::new();
    for r in results {
        let e = &r.errors;
        if r.hint_rollovers > 0 {
            let _ = writeln!(
                s,
                "- N={}: {} blocking reload(s) for a hinted part past the end of its segment were \
                 answered with part 0 of the next segment (allowed: that is the hinted part)",
                r.clients, r.hint_rollovers
            );
        }
        if r.reloads_behind > 0 {
            let _ = writeln!(
                s,
                "- N={}: {} blocking reload answer(s) already listed parts after the one asked for \
                 (answered or read a part or more late)",
                r.clients, r.reloads_behind
            );
        }
        if e.total == 0 && e.parts_missed == 0 && r.parts_unstamped == 0 {
            continue;
        }
        let kinds: Vec<String> = e.by_kind.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let _ = writeln!(
            s,
            "- N={}: {} error(s) ({} non-200, {} timeouts, {} connection, {} protocol), {} part(s) missed, {} unstamped part(s){}{}",
            r.clients,
            e.total,
            e.non_200,
            e.timeouts,
            e.connection,
            e.protocol,
            e.parts_missed,
            r.parts_unstamped,
            if kinds.is_empty() { String::new() } else { format!(": {}", kinds.join(", ")) },
            if r.clients_without_parts > 0 {
                format!("; {} client(s) got no part", r.clients_without_parts)
            } else {
                String::new()
            }
        );
        for x in &e.examples {
            let _ = writeln!(s, "  - {x}");
        }
    }
    s
}

/// Runs the mode.
pub fn run(a: HlsArgs) -> Result<()> {
    let cmd = crate::command_line();
    println!("$ {cmd}");
    crate::pin_harness(a.common.cpu)?;
    let publisher = match &a.publish_url {
        Some(u) => {
            let clip = Arc::new(crate::clip::resolve(a.common.clip.as_deref())?);
            println!("{}, publishing to {u}", clip.summary());
            Some(Publisher::start(u, clip)?)
        }
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let (target, first) = local.block_on(&rt, probe(&a.url, Duration::from_secs(20)))?;
    let target = Rc::new(target);
    println!(
        "LL-HLS: http://{}{}: PART-TARGET {}, TARGETDURATION {}, CAN-BLOCK-RELOAD {}, init {}",
        target.host,
        target.media,
        first
            .part_target
            .map_or("?".to_owned(), |t| format!("{:.0} ms", t * 1000.0)),
        first
            .target_duration
            .map_or("?".to_owned(), |t| format!("{t} s")),
        if first.can_block_reload { "YES" } else { "no" },
        first.map_uri.as_deref().unwrap_or("-"),
    );
    if !first.can_block_reload {
        eprintln!("warning: the playlist does not say CAN-BLOCK-RELOAD=YES");
    }
    let (placed, overlap) = crate::servers::placement(a.server_pid);
    println!("placement: {placed}");
    if !overlap.is_empty() {
        eprintln!(
            "warning: server threads may run on the harness's CPU: {}",
            overlap.join(", ")
        );
    }
    println!("{TABLE_HEADER}");
    let mut results = Vec::new();
    for &n in &a.clients {
        let plan = StepPlan {
            clients: n,
            connect_rate: a.common.connect_rate,
            warmup: crate::secs(a.common.warmup),
            window: crate::secs(a.duration),
            grace: Duration::from_secs(1),
            server_pid: a.server_pid,
            request_timeout: crate::secs(a.request_timeout),
        };
        let r = local.block_on(&rt, step(target.clone(), plan, first.part_target));
        if let Some(e) = publisher.as_ref().and_then(|p| p.state.error()) {
            bail!("publisher failed during the N={n} step: {e}");
        }
        println!("{}", table_row(&r));
        results.push(r);
    }
    let notes = error_notes(&results);
    print!("{notes}");
    for r in &results {
        if let Some(h) = &r.histograms {
            println!(
                "\ningest → part received, N={}:\n{}",
                r.clients,
                crate::report::distribution(&h[0])
            );
            println!(
                "blocking reload wait, N={}:\n{}",
                r.clients,
                crate::report::distribution(&h[1])
            );
        }
    }
    if let Some(dir) = &a.out {
        let ctx = OutputContext {
            cmd: &cmd,
            target: &target,
            first: &first,
            placement: &placed,
        };
        write_outputs(dir, &ctx, &a, &results, &notes)?;
    }
    drop(publisher);
    if results.iter().all(|r| r.parts_received == 0) {
        bail!("no stamped part was received in any step");
    }
    Ok(())
}

/// What the written report says besides the results.
struct OutputContext<'a> {
    cmd: &'a str,
    target: &'a Target,
    first: &'a MediaPlaylist,
    placement: &'a str,
}

fn write_outputs(
    dir: &std::path::Path,
    ctx: &OutputContext<'_>,
    a: &HlsArgs,
    results: &[HlsStepResult],
    notes: &str,
) -> Result<()> {
    let OutputContext {
        cmd,
        target,
        first,
        placement,
    } = *ctx;
    std::fs::create_dir_all(dir)?;
    let date = crate::report::today();
    let json_path = dir.join(format!("{date}-hls.json"));
    let md_path = dir.join(format!("{date}-hls.md"));
    let v = serde_json::json!({
        "command": cmd,
        "url": format!("http://{}{}", target.host, target.media),
        "part_target_ms": first.part_target.map(|t| t * 1000.0),
        "target_duration_s": first.target_duration,
        "machine": crate::machine(),
        "placement": placement,
        "steps": results,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&v)?)?;
    let mut md = String::new();
    let _ = writeln!(md, "# LL-HLS blocking-reload clients ({date})\n");
    let _ = writeln!(md, "Command:\n\n```\n{cmd}\n```\n");
    let _ = writeln!(
        md,
        "Machine: {}. Load average (1/5/15 min): {}. Placement: {placement}.\n",
        crate::machine(),
        crate::loadavg()
    );
    let _ = writeln!(
        md,
        "Setup: N LL-HLS clients on one thread, one keep-alive HTTP/1.1 connection each, \
         blocking reload for the preload-hinted part then GET of that part (started at {}/s, \
         {} s warm-up, {} s window). Latency = last byte of the part received − publisher send \
         time of the part's first video frame (SEI stamp). Target: p99 ≤ PART-TARGET + 20 ms. \
         {}\n",
        a.common.connect_rate,
        a.common.warmup,
        a.duration,
        if a.publish_url.is_some() {
            "The bench publisher loops the clip over RTMP in the same process."
        } else {
            "The stream was published by another process."
        }
    );
    let _ = writeln!(md, "{TABLE_HEADER}");
    for r in results {
        let _ = writeln!(md, "{}", table_row(r));
    }
    if !notes.is_empty() {
        let _ = writeln!(md, "\n{notes}");
    }
    std::fs::write(&md_path, md)?;
    println!(
        "\nJSON: {}\nreport: {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            addr: "127.0.0.1:8080".parse().unwrap(),
            host: "127.0.0.1:8080".to_owned(),
            media: "/hls/bench/media.m3u8".to_owned(),
        }
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/hls/a/media.m3u8").unwrap(),
            ("127.0.0.1:8080".to_owned(), "/hls/a/media.m3u8".to_owned())
        );
        assert_eq!(parse_http_url("http://h").unwrap().0, "h:80");
        assert!(parse_http_url("https://h/x").is_err());
        let t = target();
        assert_eq!(t.resolve("part-31.m4s").unwrap(), "/hls/bench/part-31.m4s");
        assert_eq!(t.resolve("/x/y.mp4").unwrap(), "/x/y.mp4");
        assert_eq!(
            t.resolve("http://127.0.0.1:8080/hls/bench/seg-1.m4s")
                .unwrap(),
            "/hls/bench/seg-1.m4s"
        );
        assert!(t.resolve("http://elsewhere/x").is_err());
        assert_eq!(
            t.reload(PartId { msn: 12, index: 3 }),
            "/hls/bench/media.m3u8?_HLS_msn=12&_HLS_part=3"
        );
        let mut q = target();
        q.media.push_str("?token=1");
        assert_eq!(
            q.reload(PartId { msn: 1, index: 0 }),
            "/hls/bench/media.m3u8?token=1&_HLS_msn=1&_HLS_part=0"
        );
        assert_eq!(q.resolve("init-1.mp4").unwrap(), "/hls/bench/init-1.mp4");
    }

    #[test]
    fn counts_skipped_parts() {
        let pl = MediaPlaylist::parse(
            "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:4\n\
             #EXT-X-PART:DURATION=0.2,URI=\"part-40.m4s\"\n#EXT-X-PART:DURATION=0.2,URI=\"part-41.m4s\"\n\
             #EXTINF:0.4,\nseg-4.m4s\n\
             #EXT-X-PART:DURATION=0.2,URI=\"part-42.m4s\"\n#EXT-X-PART:DURATION=0.2,URI=\"part-43.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-44.m4s\"\n",
        )
        .unwrap();
        let id = |msn, index| PartId { msn, index };
        assert_eq!(missed_between(&pl, id(5, 0), id(5, 1)), 0);
        assert_eq!(missed_between(&pl, id(4, 1), id(5, 0)), 0);
        assert_eq!(missed_between(&pl, id(4, 0), id(5, 1)), 2);
        assert_eq!(missed_between(&pl, id(5, 0), id(5, 4)), 3);
    }
}
