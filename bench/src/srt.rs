//! `srt` modes: MPEG-TS over SRT, publishing and playing, with the latency SEI of the RTMP
//! modes, against a zerocast this harness starts (pinned, `[srt]` on, open publishing).
//!
//! - `srt latency`: glass-to-glass latency per path, one viewer each: SRT → SRT and
//!   SRT → RTMP (one SRT publisher, both viewers at once), then RTMP → SRT and RTMP → RTMP
//!   (one RTMP publisher). The target: p99 within 5 ms of the TSBPD latency configured on
//!   the path's SRT hops (one hop per SRT leg: publisher → server, server → player).
//! - `srt fanout`: steps of N SRT players and, in the same run, N RTMP players of the same
//!   stream: frames, losses, latency, server CPU, and the ratio of server CPU per player.
//!
//! Latency is *the time the frame's last TS packet was handed over by the player's SRT
//! session (its TSBPD delivery time) − the publisher's send time in the SEI*; for RTMP players
//! it is the time of the read that completed the frame, as in `fanout`. Publisher and players
//! share the process, hence the clock. See [`source`] for the publisher, [`frames`] for how a
//! player times frames, [`link`] and [`viewers`] for the two ways sessions are driven.

mod frames;
mod link;
mod server;
mod source;
mod viewers;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use zerocast_srt::{SessionConfig, Stats};

use crate::fanout::{LatencyStats, StepPlan, StepResult};
use crate::publisher::{Publisher, PublisherState};
use crate::report;
use frames::{FrameClock, FrameSample, Parse};
use source::{PesLength, SrtPublisher};
use viewers::{LinkTotals, SrtStepPlan, SrtStepResult};

/// Arguments of `zerocast-bench srt`.
#[derive(Debug, Args)]
pub struct SrtArgs {
    #[command(subcommand)]
    mode: SrtMode,
}

#[derive(Debug, Subcommand)]
enum SrtMode {
    /// Glass-to-glass latency of SRT → SRT, SRT → RTMP, RTMP → SRT and RTMP → RTMP.
    Latency(LatencyArgs),
    /// Steps of N SRT players, then N RTMP players, of one stream: frames, latency, CPU.
    Fanout(FanoutArgs),
}

/// The server under test and where things run.
#[derive(Debug, Clone, Args)]
struct ServerArgs {
    /// zerocast binary (default: target/release/zerocast, built when missing).
    #[arg(long)]
    zerocast_bin: Option<PathBuf>,
    /// `[srt] latency` of the server and of the harness's sessions, in ms.
    #[arg(long, default_value_t = 120)]
    latency_ms: u64,
    /// CPU for the server (`taskset -c`).
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU for the harness.
    #[arg(long, default_value_t = 1)]
    harness_cpu: usize,
    /// Pre-encoded FLV clip; default: the cached 720p clip (see `fanout`).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Seconds between the players' start and the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Merge the results into this JSON file (under "latency" or "fanout").
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct LatencyArgs {
    /// Measured window per publisher, seconds.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// PES_packet_length of the SRT publisher's video PES: `auto` (zerocast's muxer: the
    /// length when it fits 16 bits) or `zero` (as ffmpeg and OBS write them: a demuxer ends
    /// each frame only when the next starts).
    #[arg(long, value_enum, default_value = "auto")]
    video_pes_length: PesLength,
    /// How the SRT players read the stamps.
    #[arg(long, value_enum, default_value = "demux")]
    parse: Parse,
    /// Leave out the RTMP-published paths (RTMP → SRT, RTMP → RTMP).
    #[arg(long)]
    srt_publish_only: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// The publisher of `srt fanout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
enum Ingest {
    /// TS over SRT.
    Srt,
    /// RTMP.
    Rtmp,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// Player counts: one SRT step and one RTMP step each (fresh players, same publisher).
    #[arg(long, value_delimiter = ',', default_value = "10,50,100,200")]
    clients: Vec<usize>,
    /// Measured window per step, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// How the stream is published: RTMP (so SRT and RTMP players differ only in their own
    /// protocol) or SRT.
    #[arg(long, value_enum, default_value = "rtmp")]
    publish: Ingest,
    /// How the SRT players read the stamps (`demux` costs the harness more).
    #[arg(long, value_enum, default_value = "scan")]
    parse: Parse,
    /// Skip the RTMP steps.
    #[arg(long)]
    srt_only: bool,
    /// Players started per second.
    #[arg(long, default_value_t = 100.0)]
    connect_rate: f64,
    /// Seconds of pause between steps (sessions closing, sockets settling).
    #[arg(long, default_value_t = 2.0)]
    pause: f64,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `zerocast-bench srt ...`.
pub fn run(a: SrtArgs) -> Result<()> {
    match a.mode {
        SrtMode::Latency(a) => latency(a),
        SrtMode::Fanout(a) => fanout(a),
    }
}

/// The harness's SRT settings: the server's latency, so the negotiated one is the configured.
fn session_config(latency_ms: u64) -> SessionConfig {
    SessionConfig {
        latency: Duration::from_millis(latency_ms),
        ..SessionConfig::default()
    }
}

/// Pins the harness, starts the server pinned; prints both.
fn start_server(s: &ServerArgs, clients: usize) -> Result<(server::Zerocast, bool)> {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = ncpu >= 2;
    if pinned {
        crate::pin_harness(Some(s.harness_cpu))?;
    } else {
        eprintln!("warning: fewer than 2 CPUs; not pinning");
    }
    let bin = match &s.zerocast_bin {
        Some(b) => b.clone(),
        None => crate::servers::zerocast_release_bin()?,
    };
    let srv = server::start(&bin, pinned.then_some(s.server_cpu), s.latency_ms, clients)?;
    println!(
        "server: {} — RTMP {}, SRT {} (pid {}, dir {})",
        srv.version,
        srv.rtmp,
        srv.srt,
        srv.pid(),
        srv.dir.display()
    );
    Ok((srv, pinned))
}

fn load_clip(s: &ServerArgs) -> Result<Arc<crate::clip::Clip>> {
    let clip = Arc::new(crate::clip::resolve(s.clip.as_deref())?);
    println!("{}", clip.summary());
    Ok(clip)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Merges `value` into the JSON object in `path` under `key`.
fn write_json(path: &Path, key: &str, value: serde_json::Value) -> Result<()> {
    let mut root = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    root[key] = value;
    std::fs::write(path, serde_json::to_string_pretty(&root)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("JSON ({key}): {}", path.display());
    Ok(())
}

// --- latency -----------------------------------------------------------------------------

/// One viewer's measurement of one path.
#[derive(Debug, Clone, Serialize)]
struct PathResult {
    path: String,
    /// Frames received in the window / sent in it.
    frames_received: u64,
    frames_sent: u64,
    latency: LatencyStats,
    /// TSBPD latency summed over the path's SRT hops, ms.
    tsbpd_ms: u64,
    /// p99 − tsbpd_ms.
    p99_over_tsbpd_ms: f64,
    /// p99 ≤ tsbpd + 5 ms.
    meets_target: bool,
    /// SRT player's link and TS figures (SRT players only).
    link: Option<LinkTotals>,
    #[serde(skip)]
    histogram: Option<Histogram<u64>>,
}

impl PathResult {
    fn new(path: &str, frames: (u64, u64), h: Histogram<u64>, tsbpd_ms: u64) -> Self {
        let latency = LatencyStats::of(&h);
        let over = ms(latency.p99_us) - tsbpd_ms as f64;
        PathResult {
            path: path.to_owned(),
            frames_received: frames.0,
            frames_sent: frames.1,
            meets_target: latency.count > 0 && over <= TARGET_MS,
            p99_over_tsbpd_ms: over,
            latency,
            tsbpd_ms,
            link: None,
            histogram: Some(h),
        }
    }

    fn from_rtmp(path: &str, r: &StepResult, tsbpd_ms: u64) -> Self {
        PathResult::new(
            path,
            (r.frames_received, r.frames_sent),
            r.histogram.clone().unwrap_or_else(viewers::new_histogram),
            tsbpd_ms,
        )
    }
}

/// The p99 allowance over the configured latency.
const TARGET_MS: f64 = 5.0;

const LATENCY_HEADER: &str = "| path | frames | p50 / p90 / p99 / p99.9 / max (ms) | TSBPD on the path (ms) | p99 − TSBPD (ms) | p99 ≤ TSBPD + 5 ms |\n|---|---:|---|---:|---:|---|";

fn latency_row(r: &PathResult) -> String {
    let l = &r.latency;
    format!(
        "| {} | {}/{} | {:.2} / {:.2} / {:.2} / {:.2} / {:.2} | {} | {:+.2} | {} |",
        r.path,
        r.frames_received,
        r.frames_sent,
        ms(l.p50_us),
        ms(l.p90_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        r.tsbpd_ms,
        r.p99_over_tsbpd_ms,
        if r.latency.count == 0 {
            "no samples"
        } else if r.meets_target {
            "yes"
        } else {
            "**no**"
        }
    )
}

/// What the single precise SRT player of `srt latency` collects.
struct Sink {
    clock: FrameClock,
    samples: Vec<FrameSample>,
    window: Option<(u64, u64)>,
    hist: Histogram<u64>,
    frames: u64,
}

impl Sink {
    fn on_data(&mut self, p: Bytes, now_ns: u64) {
        self.clock.push(&p, now_ns, &mut self.samples);
        for s in self.samples.drain(..) {
            if let Some((ws, we)) = self.window {
                if s.sent_ns >= ws && s.sent_ns < we {
                    self.frames += 1;
                    let us = s.done_ns.saturating_sub(s.sent_ns) / 1000;
                    let _ = self.hist.record(us.max(1));
                }
            }
        }
    }
}

/// What [`single_viewer`] measured.
struct Single {
    sink: Sink,
    frames_sent: u64,
    tsbpd_ms: u64,
    stats: Stats,
    wake_late: Histogram<u64>,
}

/// One SRT player on its own thread with precise timers: warm-up, window, grace.
fn single_viewer(
    server: SocketAddr,
    name: &str,
    cfg: SessionConfig,
    parse: Parse,
    timing: (Duration, Duration, Duration),
    publisher: &PublisherState,
) -> Result<Single> {
    let (warmup, window, grace) = timing;
    let sid = format!("#!::r=live/{name},m=request");
    let mut link = link::call(
        server,
        &sid,
        cfg,
        link::seed(1 << 40),
        Duration::from_secs(10),
    )?;
    let tsbpd_ms = link.connection().recv_latency().as_millis() as u64;
    let mut sink = Sink {
        clock: FrameClock::new(parse),
        samples: Vec::new(),
        window: None,
        hist: viewers::new_histogram(),
        frames: 0,
    };
    link.run_until(Instant::now() + warmup, &mut |p, t| sink.on_data(p, t))?;
    let ws = crate::rtmp::wall_ns();
    let we = ws + window.as_nanos() as u64;
    sink.window = Some((ws, we));
    link.run_until(Instant::now() + window + grace, &mut |p, t| {
        sink.on_data(p, t)
    })?;
    let stats = link.stats();
    link.close();
    Ok(Single {
        frames_sent: publisher.frames_sent_between(ws, we),
        sink,
        tsbpd_ms,
        stats,
        wake_late: link.wake_late.clone(),
    })
}

/// Measures an SRT player and an RTMP player of `name` at the same time (the SRT one on its
/// own thread).
fn measure_both(
    srv: &server::Zerocast,
    name: &str,
    a: &LatencyArgs,
    state: &Arc<PublisherState>,
) -> Result<(Single, StepResult)> {
    let timing = (
        crate::secs(a.server.warmup),
        crate::secs(a.duration),
        Duration::from_secs(1),
    );
    let (addr, n, parse) = (srv.srt, name.to_owned(), a.parse);
    let cfg = session_config(a.server.latency_ms);
    let st = state.clone();
    let srt = std::thread::Builder::new()
        .name("srt-viewer".into())
        .spawn(move || single_viewer(addr, &n, cfg, parse, timing, &st))?;
    let plan = StepPlan {
        viewers: 1,
        connect_rate: 100.0,
        warmup: timing.0,
        window: timing.1,
        grace: timing.2,
        server_pid: Some(srv.pid()),
    };
    let rtmp = crate::fanout::run_step(&srv.rtmp_url(name), &plan, state);
    let srt = srt
        .join()
        .map_err(|_| anyhow::anyhow!("the SRT viewer thread panicked"))?;
    Ok((srt.context("SRT viewer")?, rtmp.context("RTMP viewer")?))
}

fn srt_path(path: &str, s: &Single, tsbpd_ms: u64) -> PathResult {
    let mut r = PathResult::new(
        path,
        (s.sink.frames, s.frames_sent),
        s.sink.hist.clone(),
        tsbpd_ms,
    );
    let mut link = LinkTotals::default();
    link.add(&s.stats, &s.sink.clock, Duration::from_millis(s.tsbpd_ms));
    r.link = Some(link);
    r
}

fn link_note(path: &str, s: &Single) -> String {
    let (st, c) = (&s.stats, &s.sink.clock);
    format!(
        "- {path} player: TSBPD {} ms, RTT {:.2} ms; packets {} received, {} lost, {} recovered, \
         {} dropped too late, {} duplicates; TS: {} continuity errors{}, {} frames damaged, {} \
         unstamped; demuxed video frames {}, stamp mismatches {}, demux errors {}",
        s.tsbpd_ms,
        f64::from(st.rtt_us) / 1000.0,
        st.packets_received,
        st.lost,
        st.recovered,
        st.dropped_too_late,
        st.duplicates,
        c.cc_errors,
        c.first_cc_error
            .map_or(String::new(), |(pid, want, got, at)| format!(
                " (first on PID {pid:#x}: counter {got}, expected {want}, after {at} packets)"
            )),
        c.damaged,
        c.unstamped,
        c.demuxed,
        c.mismatches,
        c.demux_errors,
    ) + &format!(
        "; its thread woke {} late (after the instant it waited for)",
        late_summary(&s.wake_late)
    )
}

/// "p50 / p99 / max" of a lateness histogram (µs values), in ms.
fn late_summary(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} / p99 {:.2} / max {:.2} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    )
}

fn latency(a: LatencyArgs) -> Result<()> {
    let cmd = crate::command_line();
    println!("$ {cmd}");
    let clip = load_clip(&a.server)?;
    let (mut srv, _) = start_server(&a.server, 8)?;
    let cfg = session_config(a.server.latency_ms);
    let mut results = Vec::new();
    let mut notes = Vec::new();

    // SRT publisher: SRT and RTMP players at once.
    let publisher = SrtPublisher::start(srv.srt, "lat-srt", &clip, cfg, a.video_pes_length)?;
    println!(
        "placement: {}",
        crate::servers::placement(Some(srv.pid())).0
    );
    let pub_ms = publisher.info.latency_ms.load(Ordering::Relaxed);
    println!(
        "SRT publisher connected (TSBPD of the publishing hop {pub_ms} ms); measuring SRT → SRT \
         and SRT → RTMP for {} s",
        a.duration
    );
    let (srt, rtmp) = measure_both(&srv, "lat-srt", &a, &publisher.state)?;
    if let Some(e) = publisher.state.error() {
        bail!("SRT publisher failed: {e}");
    }
    results.push(srt_path("SRT → SRT", &srt, pub_ms + srt.tsbpd_ms));
    results.push(PathResult::from_rtmp("SRT → RTMP", &rtmp, pub_ms));
    notes.push(link_note("SRT → SRT", &srt));
    let info = publisher.info.clone();
    drop(publisher);
    if let Some(s) = *info.stats.lock().unwrap_or_else(|p| p.into_inner()) {
        notes.push(format!(
            "- SRT publisher: RTT {:.2} ms; {} packets sent, {} retransmitted, {} NAKs received, \
             {} dropped by the sender; video PES sent with their length {}, with length 0 {} \
             (over 64 KiB, or `--video-pes-length zero`), of which {} end in a full TS packet \
             (no stuffing: the server sees their end only when the next frame starts)",
            f64::from(s.rtt_us) / 1000.0,
            s.packets_sent,
            s.retransmitted,
            s.nak_received,
            s.send_dropped,
            info.pes_bounded.load(Ordering::Relaxed),
            info.pes_unbounded.load(Ordering::Relaxed),
            info.pes_unbounded_unstuffed.load(Ordering::Relaxed),
        ));
    }
    if let Some(h) = &*info.send_late.lock().unwrap_or_else(|p| p.into_inner()) {
        notes.push(format!(
            "- SRT publisher thread: frames stamped and sent {} after their due time",
            late_summary(h)
        ));
    }

    if !a.srt_publish_only {
        // RTMP publisher: SRT and RTMP players at once.
        std::thread::sleep(Duration::from_secs(1));
        let publisher = Publisher::start(&srv.rtmp_url("lat-rtmp"), clip.clone())?;
        println!(
            "RTMP publisher started; measuring RTMP → SRT and RTMP → RTMP for {} s",
            a.duration
        );
        let (srt, rtmp) = measure_both(&srv, "lat-rtmp", &a, &publisher.state)?;
        if let Some(e) = publisher.state.error() {
            bail!("RTMP publisher failed: {e}");
        }
        results.push(srt_path("RTMP → SRT", &srt, srt.tsbpd_ms));
        results.push(PathResult::from_rtmp("RTMP → RTMP", &rtmp, 0));
        notes.push(link_note("RTMP → SRT", &srt));
        drop(publisher);
    }
    if !srv.alive() {
        notes.push(format!(
            "- the server exited during the run; its log:\n{}",
            srv.log_tail()
        ));
    }

    println!(
        "\nGlass-to-glass latency, {} s per path, srt.latency = {} ms{}:\n",
        a.duration,
        a.server.latency_ms,
        match a.video_pes_length {
            PesLength::Auto => "",
            PesLength::Zero => ", SRT publisher writes PES_packet_length 0 for video (as ffmpeg)",
        }
    );
    println!("{LATENCY_HEADER}");
    for r in &results {
        println!("{}", latency_row(r));
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
    for r in &results {
        if let Some(h) = &r.histogram {
            println!("\n{}:\n{}", r.path, report::distribution(h));
        }
    }
    if let Some(p) = &a.server.json {
        let key = match a.video_pes_length {
            PesLength::Auto => "latency",
            PesLength::Zero => "latency_video_pes_length_zero",
        };
        write_json(
            p,
            key,
            serde_json::json!({
                "command": cmd,
                "machine": crate::machine(),
                "server": srv.version,
                "latency_ms": a.server.latency_ms,
                "video_pes_length": a.video_pes_length,
                "paths": results,
                "notes": notes,
            }),
        )?;
    }
    if results.iter().any(|r| r.latency.count == 0) {
        bail!("a path received no stamped frame");
    }
    Ok(())
}

// --- fanout ------------------------------------------------------------------------------

/// Either publisher, for its shared state.
enum AnyPublisher {
    Srt(SrtPublisher),
    Rtmp(Publisher),
}

impl AnyPublisher {
    fn state(&self) -> &Arc<PublisherState> {
        match self {
            AnyPublisher::Srt(p) => &p.state,
            AnyPublisher::Rtmp(p) => &p.state,
        }
    }
}

/// One N: the SRT step and the RTMP step.
#[derive(Debug, Clone, Serialize)]
struct FanoutStep {
    viewers: usize,
    srt: SrtStepResult,
    rtmp: Option<StepResult>,
}

fn proto_header() -> String {
    let mut lines = report::TABLE_HEADER.lines();
    let head = lines.next().unwrap_or_default();
    let sep = lines.next().unwrap_or_default();
    format!("| protocol {head}\n|---{sep}")
}

fn proto_row(proto: &str, r: &StepResult) -> String {
    format!("| {proto} {}", report::table_row(r))
}

const LINK_HEADER: &str = "| players | frames missing (window) | SRT packets received | lost (gaps) | recovered | dropped too late | retransmitted received | TS continuity errors | frames damaged | RTT mean (ms) | TSBPD (ms) | harness timer lateness p99 / max (ms) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|";

fn link_row(r: &SrtStepResult) -> String {
    let (s, l) = (&r.step, &r.link);
    let missing = (s.frames_sent * s.viewers as u64).saturating_sub(s.frames_received);
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} / {:.2} |",
        s.viewers,
        missing,
        l.packets_received,
        l.lost,
        l.recovered,
        l.dropped_too_late,
        l.retransmitted_received,
        l.ts_cc_errors,
        l.frames_damaged,
        l.rtt_mean_us / 1000.0,
        l.tsbpd_ms.map_or("-".to_owned(), |(lo, hi)| if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}–{hi}")
        }),
        ms(l.timer_late_p99_us),
        ms(l.timer_late_max_us),
    )
}

const RATIO_HEADER: &str = "| players | server CPU % SRT | RTMP | SRT ÷ RTMP | CPU % per 100 players SRT | RTMP | players per core SRT (linear) | RTMP (linear) | harness CPU % SRT | RTMP |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn ratio_row(s: &StepResult, r: &StepResult) -> String {
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |x| format!("{x:.p$}"));
    let per100 = |x: &StepResult| {
        x.server_cpu_pct
            .map(|c| c * 100.0 / x.viewers.max(1) as f64)
    };
    let per_core = |x: &StepResult| {
        x.server_cpu_pct
            .filter(|&c| c > 0.0)
            .map(|c| x.viewers as f64 * 100.0 / c)
    };
    let ratio = match (s.server_cpu_pct, r.server_cpu_pct) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
        s.viewers,
        opt(s.server_cpu_pct, 1),
        opt(r.server_cpu_pct, 1),
        opt(ratio, 2),
        opt(per100(s), 1),
        opt(per100(r), 1),
        opt(per_core(s), 0),
        opt(per_core(r), 0),
        s.harness_cpu_pct,
        r.harness_cpu_pct,
    )
}

fn fanout(a: FanoutArgs) -> Result<()> {
    let cmd = crate::command_line();
    println!("$ {cmd}");
    let clip = load_clip(&a.server)?;
    let max_n = a.clients.iter().copied().max().unwrap_or(1);
    let (mut srv, _) = start_server(&a.server, max_n)?;
    let cfg = session_config(a.server.latency_ms);
    let name = "fan";
    let publisher = match a.publish {
        Ingest::Srt => AnyPublisher::Srt(SrtPublisher::start(
            srv.srt,
            name,
            &clip,
            cfg.clone(),
            PesLength::Auto,
        )?),
        Ingest::Rtmp => AnyPublisher::Rtmp(Publisher::start(&srv.rtmp_url(name), clip.clone())?),
    };
    let state = publisher.state().clone();
    println!(
        "placement: {}",
        crate::servers::placement(Some(srv.pid())).0
    );
    println!(
        "publishing over {}; SRT players read the stamps by {}; {} s windows\n",
        match a.publish {
            Ingest::Srt => "SRT",
            Ingest::Rtmp => "RTMP",
        },
        match a.parse {
            Parse::Scan => "scanning each video PES's first packets",
            Parse::Demux => "demuxing every frame",
        },
        a.duration
    );
    println!("{}", proto_header());
    let mut steps = Vec::new();
    for &n in &a.clients {
        let plan = SrtStepPlan {
            viewers: n,
            connect_rate: a.connect_rate,
            warmup: crate::secs(a.server.warmup),
            window: crate::secs(a.duration),
            grace: Duration::from_secs(1),
            server_pid: Some(srv.pid()),
            parse: a.parse,
            cfg: cfg.clone(),
        };
        let srt = viewers::run_step(srv.srt, name, &plan, &state)?;
        println!("{}", proto_row("SRT", &srt.step));
        if let Some(e) = state.error() {
            bail!("publisher failed during the N={n} SRT step: {e}");
        }
        std::thread::sleep(crate::secs(a.pause));
        let rtmp = if a.srt_only {
            None
        } else {
            let plan = StepPlan {
                viewers: n,
                connect_rate: a.connect_rate,
                warmup: crate::secs(a.server.warmup),
                window: crate::secs(a.duration),
                grace: Duration::from_secs(1),
                server_pid: Some(srv.pid()),
            };
            let r = crate::fanout::run_step(&srv.rtmp_url(name), &plan, &state)?;
            println!("{}", proto_row("RTMP", &r));
            if let Some(e) = state.error() {
                bail!("publisher failed during the N={n} RTMP step: {e}");
            }
            std::thread::sleep(crate::secs(a.pause));
            Some(r)
        };
        steps.push(FanoutStep {
            viewers: n,
            srt,
            rtmp,
        });
        if !srv.alive() {
            bail!("the server exited; its log:\n{}", srv.log_tail());
        }
    }
    let mut out = String::new();
    let srt_results: Vec<StepResult> = steps.iter().map(|s| s.srt.step.clone()).collect();
    let rtmp_results: Vec<StepResult> = steps.iter().filter_map(|s| s.rtmp.clone()).collect();
    for (proto, rs) in [("SRT", &srt_results), ("RTMP", &rtmp_results)] {
        let f = report::failure_notes(rs);
        if !f.is_empty() {
            let _ = write!(out, "{proto} failures:\n{f}");
        }
    }
    let _ = writeln!(
        out,
        "\nSRT players, link and TS (whole step):\n\n{LINK_HEADER}"
    );
    for s in &steps {
        let _ = writeln!(out, "{}", link_row(&s.srt));
    }
    if !a.srt_only {
        let _ = writeln!(
            out,
            "\nServer CPU, SRT players vs RTMP players of the same stream (same run):\n\n\
             {RATIO_HEADER}"
        );
        for s in &steps {
            if let Some(r) = &s.rtmp {
                let _ = writeln!(out, "{}", ratio_row(&s.srt.step, r));
            }
        }
    }
    print!("{out}");
    for s in &steps {
        if let Some(h) = &s.srt.step.histogram {
            println!(
                "\nSRT latency, N={}:\n{}",
                s.viewers,
                report::distribution(h)
            );
        }
        if let Some(h) = s.rtmp.as_ref().and_then(|r| r.histogram.as_ref()) {
            println!(
                "RTMP latency, N={}:\n{}",
                s.viewers,
                report::distribution(h)
            );
        }
    }
    if let Some(p) = &a.server.json {
        write_json(
            p,
            "fanout",
            serde_json::json!({
                "command": cmd,
                "machine": crate::machine(),
                "server": srv.version,
                "latency_ms": a.server.latency_ms,
                "publish": a.publish,
                "parse": a.parse,
                "clip_mbps": clip.mbps(),
                "steps": steps,
            }),
        )?;
    }
    drop(publisher);
    if steps.iter().all(|s| s.srt.step.frames_received == 0) {
        bail!("no SRT player received a stamped frame");
    }
    Ok(())
}
