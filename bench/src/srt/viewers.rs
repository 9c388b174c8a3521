//! N SRT players on one thread: the `srt fanout` step.
//!
//! Each player is a task on one current-thread tokio runtime with its own UDP socket (the
//! server tells sessions apart by the peer's address, so every session needs its own port),
//! driving a sans-IO SRT caller and then its [`Connection`]: datagrams in as they come (a
//! ready socket is read until empty before the session's output is drained), timers through
//! the runtime's timer wheel (1 ms resolution, so a TSBPD delivery may be handed over up to
//! about a millisecond late; the `latency` mode's single viewer waits precisely).
//!
//! A step runs like `fanout`'s: fresh players started at `--connect-rate`, a warm-up, the
//! measured window, a grace period; frames count when their send time (SEI) falls in the
//! window. At the end every player closes its session (a SHUTDOWN, so the server frees it at
//! once) and its link statistics are added up.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::UdpSocket;
use zerocast_codecs::ByteRope;
use zerocast_srt::{CallerOutput, Connection, Entropy, Event, Input, Output, SessionConfig, Stats};

use super::frames::{FrameClock, FrameSample, Parse};
use super::link;
use crate::fanout::{LatencyStats, StepResult};
use crate::procstat::{cpu_percent, cpu_sample, rss_kib};
use crate::publisher::PublisherState;
use crate::rtmp::wall_ns;

/// How an SRT step runs.
#[derive(Debug, Clone)]
pub struct SrtStepPlan {
    /// Players.
    pub viewers: usize,
    /// Players started per second.
    pub connect_rate: f64,
    /// Time between the last player's start and the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Time after the window for frames sent inside it to arrive.
    pub grace: Duration,
    /// The server process, for CPU and RSS.
    pub server_pid: Option<u32>,
    /// How the players read the stamps.
    pub parse: Parse,
    /// The players' SRT settings.
    pub cfg: SessionConfig,
}

/// SRT link and TS figures of a step, summed over its players (whole step: ramp to grace).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkTotals {
    /// Players whose session statistics were collected.
    pub sessions: u64,
    /// Data packets received, duplicates included.
    pub packets_received: u64,
    /// Packets found missing (sequence gaps).
    pub lost: u64,
    /// Missing packets that came later (retransmitted or reordered).
    pub recovered: u64,
    /// Missing packets given up at their delivery time: real losses.
    pub dropped_too_late: u64,
    /// Retransmitted packets received.
    pub retransmitted_received: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Continuity-counter gaps in the TS.
    pub ts_cc_errors: u64,
    /// Video frames that arrived with a gap inside.
    pub frames_damaged: u64,
    /// Video frames without the latency SEI.
    pub frames_unstamped: u64,
    /// Demux mode: stamps the demuxer and the scan disagreed on.
    pub stamp_mismatches: u64,
    /// Demux mode: demuxer errors.
    pub demux_errors: u64,
    /// Smallest and largest negotiated receive latency (TSBPD), ms.
    pub tsbpd_ms: Option<(u64, u64)>,
    /// Mean smoothed RTT at the end, µs.
    pub rtt_mean_us: f64,
    /// How late the players' timers fired (the runtime rounds to 1 ms; more means the
    /// harness thread was busy or descheduled): p99 and max over the window, µs.
    pub timer_late_p99_us: u64,
    /// See `timer_late_p99_us`.
    pub timer_late_max_us: u64,
}

impl LinkTotals {
    /// Adds one session's figures.
    pub fn add(&mut self, s: &Stats, clock: &FrameClock, tsbpd: Duration) {
        self.rtt_mean_us = (self.rtt_mean_us * self.sessions as f64 + f64::from(s.rtt_us))
            / (self.sessions + 1) as f64;
        self.sessions += 1;
        self.packets_received += s.packets_received;
        self.lost += s.lost;
        self.recovered += s.recovered;
        self.dropped_too_late += s.dropped_too_late;
        self.retransmitted_received += s.retransmitted_received;
        self.duplicates += s.duplicates;
        self.ts_cc_errors += clock.cc_errors;
        self.frames_damaged += clock.damaged;
        self.frames_unstamped += clock.unstamped;
        self.stamp_mismatches += clock.mismatches;
        self.demux_errors += clock.demux_errors;
        let ms = tsbpd.as_millis() as u64;
        self.tsbpd_ms = Some(match self.tsbpd_ms {
            None => (ms, ms),
            Some((lo, hi)) => (lo.min(ms), hi.max(ms)),
        });
    }
}

/// What an SRT step measured: the same figures as an RTMP step, plus the link's.
#[derive(Debug, Clone, Serialize)]
pub struct SrtStepResult {
    /// Frames, latency, CPU: the columns of the RTMP table.
    #[serde(flatten)]
    pub step: StepResult,
    /// SRT and TS figures.
    pub link: LinkTotals,
}

#[derive(Debug, Default, Clone)]
struct ViewerStats {
    frames: u64,
    first_frame: Option<Duration>,
    failed: Option<String>,
}

/// State a step shares with its players (one thread).
struct Shared {
    window: Cell<Option<(u64, u64)>>,
    counting: Cell<bool>,
    bytes: Cell<u64>,
    stop: Cell<bool>,
    latency: RefCell<Histogram<u64>>,
    timer_late: RefCell<Histogram<u64>>,
    viewers: RefCell<Vec<ViewerStats>>,
    link: RefCell<LinkTotals>,
}

impl Shared {
    fn record(&self, idx: usize, t0: Instant, s: &FrameSample) {
        let mut vs = self.viewers.borrow_mut();
        let v = &mut vs[idx];
        if v.first_frame.is_none() {
            v.first_frame = Some(t0.elapsed());
        }
        if let Some((ws, we)) = self.window.get() {
            if s.sent_ns >= ws && s.sent_ns < we {
                v.frames += 1;
                let us = s.done_ns.saturating_sub(s.sent_ns) / 1000;
                let _ = self.latency.borrow_mut().record(us.max(1));
            }
        }
    }
}

/// An hdrhistogram of 1 µs .. 1 hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Runs one step of `plan.viewers` SRT players of `live/NAME` on the current thread.
pub fn run_step(
    server: SocketAddr,
    name: &str,
    plan: &SrtStepPlan,
    publisher: &Arc<PublisherState>,
) -> Result<SrtStepResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let sid: Rc<str> = Rc::from(format!("#!::r=live/{name},m=request"));
    local.block_on(&rt, step(server, sid, plan.clone(), publisher.clone()))
}

async fn step(
    server: SocketAddr,
    sid: Rc<str>,
    plan: SrtStepPlan,
    publisher: Arc<PublisherState>,
) -> Result<SrtStepResult> {
    let sh = Rc::new(Shared {
        window: Cell::new(None),
        counting: Cell::new(false),
        bytes: Cell::new(0),
        stop: Cell::new(false),
        latency: RefCell::new(new_histogram()),
        timer_late: RefCell::new(new_histogram()),
        viewers: RefCell::new(vec![ViewerStats::default(); plan.viewers]),
        link: RefCell::new(LinkTotals::default()),
    });
    let ramp_start = Instant::now();
    let mut tasks = Vec::with_capacity(plan.viewers);
    for i in 0..plan.viewers {
        let at = ramp_start + Duration::from_secs_f64(i as f64 / plan.connect_rate.max(0.001));
        tokio::time::sleep_until(at.into()).await;
        let (sh, sid, cfg) = (sh.clone(), sid.clone(), plan.cfg.clone());
        let parse = plan.parse;
        tasks.push(tokio::task::spawn_local(async move {
            if let Err(e) = viewer(i, server, &sid, cfg, parse, &sh).await {
                sh.viewers.borrow_mut()[i].failed = Some(format!("{e:#}"));
            }
        }));
    }
    tokio::time::sleep(plan.warmup).await;

    let w_start = wall_ns();
    let w_end = w_start + plan.window.as_nanos() as u64;
    sh.window.set(Some((w_start, w_end)));
    sh.counting.set(true);
    let srv0 = plan.server_pid.and_then(|p| cpu_sample(Some(p)));
    let rss0 = plan.server_pid.and_then(|p| rss_kib(Some(p)));
    let me0 = cpu_sample(None);
    tokio::time::sleep(plan.window).await;
    let srv1 = plan.server_pid.and_then(|p| cpu_sample(Some(p)));
    let rss1 = plan.server_pid.and_then(|p| rss_kib(Some(p)));
    let me1 = cpu_sample(None);
    sh.counting.set(false);
    tokio::time::sleep(plan.grace).await;
    // Players notice within one ACK period (10 ms) and close their sessions.
    sh.stop.set(true);
    let deadline = Instant::now() + Duration::from_secs(3);
    for t in &mut tasks {
        if tokio::time::timeout_at(deadline.into(), &mut *t)
            .await
            .is_err()
        {
            t.abort();
        }
    }

    let frames_sent = publisher.frames_sent_between(w_start, w_end);
    let viewers = sh.viewers.borrow();
    let need = (frames_sent as f64 * 0.95).ceil() as u64;
    let mut failures: Vec<String> = Vec::new();
    for f in viewers.iter().filter_map(|v| v.failed.as_ref()) {
        if failures.len() < 5 && !failures.contains(f) {
            failures.push(f.clone());
        }
    }
    let mut ttff = new_histogram();
    for d in viewers.iter().filter_map(|v| v.first_frame) {
        let _ = ttff.record((d.as_micros() as u64).max(1));
    }
    let secs = plan.window.as_secs_f64();
    let delivered_mbps = sh.bytes.get() as f64 * 8.0 / secs / 1e6;
    let server_cpu_pct = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(cpu_percent(&a, &b)),
        _ => None,
    };
    let latency = sh.latency.borrow().clone();
    let step = StepResult {
        viewers: plan.viewers,
        window_s: secs,
        frames_sent,
        frames_received: viewers.iter().map(|v| v.frames).sum(),
        viewers_95: viewers.iter().filter(|v| v.frames >= need).count(),
        worst_viewer_share: if frames_sent == 0 {
            0.0
        } else {
            viewers.iter().map(|v| v.frames).min().unwrap_or(0) as f64 / frames_sent as f64
        },
        viewers_without_frames: viewers.iter().filter(|v| v.first_frame.is_none()).count(),
        viewers_failed: viewers.iter().filter(|v| v.failed.is_some()).count(),
        failures,
        delivered_mbps,
        latency: LatencyStats::of(&latency),
        first_frame: LatencyStats::of(&ttff),
        server_cpu_pct,
        server_rss_start_kib: rss0,
        server_rss_end_kib: rss1,
        harness_cpu_pct: match (me0, me1) {
            (Some(a), Some(b)) => cpu_percent(&a, &b),
            _ => 0.0,
        },
        server_cpu_per_gbps: server_cpu_pct
            .filter(|_| delivered_mbps > 0.0)
            .map(|c| c / (delivered_mbps / 1000.0)),
        histogram: Some(latency),
    };
    let mut link = sh.link.borrow().clone();
    let late = sh.timer_late.borrow();
    link.timer_late_p99_us = late.value_at_quantile(0.99);
    link.timer_late_max_us = late.max();
    Ok(SrtStepResult { step, link })
}

/// Sends one datagram (its slices gathered into `scratch` when there are several).
async fn transmit(sock: &UdpSocket, rope: &ByteRope, scratch: &mut Vec<u8>) -> Result<()> {
    let r = match rope.parts() {
        [one] => sock.send(one).await,
        parts => {
            scratch.clear();
            for p in parts {
                scratch.extend_from_slice(p);
            }
            sock.send(scratch).await
        }
    };
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            bail!("the server is gone (ICMP port unreachable)")
        }
        Err(e) => Err(e.into()),
    }
}

/// Datagrams read from a ready socket before the session's output is drained.
const READ_BATCH: usize = 64;

/// One player: calls, plays, and records each stamped video frame.
async fn viewer(
    idx: usize,
    server: SocketAddr,
    sid: &str,
    cfg: SessionConfig,
    parse: Parse,
    sh: &Shared,
) -> Result<()> {
    let t0 = Instant::now();
    let sock = UdpSocket::from_std(link::connected_socket(server)?)?;
    let mut buf = vec![0u8; 2048];
    let mut caller = zerocast_srt::Caller::new(
        cfg,
        t0,
        server,
        Some(sid.to_owned()),
        Duration::from_secs(10),
        Entropy::new(link::seed(idx as u64)),
    );
    let mut conn: Box<Connection> = loop {
        if sh.stop.get() {
            return Ok(());
        }
        match caller.poll_output() {
            // A refused send (server not bound yet) is repeated by the caller.
            CallerOutput::Transmit(b) => drop(sock.send(&b).await),
            CallerOutput::Timeout(at) => {
                tokio::select! {
                    r = sock.recv(&mut buf) => match r {
                        Ok(n) => caller.handle_input(Input::Receive(
                            Instant::now(),
                            Bytes::copy_from_slice(&buf[..n]),
                        )),
                        Err(_) => caller.handle_input(Input::Timeout(Instant::now())),
                    },
                    _ = tokio::time::sleep_until(at.into()) => {
                        caller.handle_input(Input::Timeout(Instant::now()))
                    }
                }
            }
            CallerOutput::Connected(c) => break c,
            CallerOutput::Failed(e) => bail!("SRT call: {e}"),
        }
    };
    let mut clock = FrameClock::new(parse);
    let mut samples = Vec::new();
    let mut scratch = Vec::with_capacity(2048);
    let result: Result<()> = 'session: loop {
        let deadline = loop {
            match conn.poll_output() {
                Output::Transmit(rope) => {
                    if let Err(e) = transmit(&sock, &rope, &mut scratch).await {
                        break 'session Err(e);
                    }
                }
                Output::Event(Event::Data(payload)) => {
                    let now = wall_ns();
                    if sh.counting.get() {
                        sh.bytes.set(sh.bytes.get() + payload.len() as u64);
                    }
                    clock.push(&payload, now, &mut samples);
                    for s in samples.drain(..) {
                        sh.record(idx, t0, &s);
                    }
                }
                Output::Event(Event::Closed(r)) => {
                    break 'session Err(anyhow!("SRT session closed: {}", link::reason(&r)))
                }
                Output::Timeout(at) => break at,
            }
        };
        if sh.stop.get() {
            conn.close(Instant::now());
            while let Output::Transmit(rope) = conn.poll_output() {
                let _ = transmit(&sock, &rope, &mut scratch).await;
            }
            break Ok(());
        }
        tokio::select! {
            r = sock.recv(&mut buf) => match r {
                Ok(n) => {
                    let d = Bytes::copy_from_slice(&buf[..n]);
                    conn.handle_input(Input::Receive(Instant::now(), d));
                    for _ in 1..READ_BATCH {
                        let Ok(n) = sock.try_recv(&mut buf) else { break };
                        let d = Bytes::copy_from_slice(&buf[..n]);
                        conn.handle_input(Input::Receive(Instant::now(), d));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    break Err(anyhow!("the server is gone (ICMP port unreachable)"))
                }
                Err(e) => break Err(e.into()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if sh.counting.get() {
                    let late = now.saturating_duration_since(deadline).as_micros() as u64;
                    let _ = sh.timer_late.borrow_mut().record(late.max(1));
                }
                conn.handle_input(Input::Timeout(now))
            }
        }
    };
    sh.link
        .borrow_mut()
        .add(&conn.stats(), &clock, conn.recv_latency());
    result
}
