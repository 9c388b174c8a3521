//! Viewers and the measured fan-out step.
//!
//! A step: N fresh viewers connect at a fixed rate (all on one current-thread runtime), then a
//! warm-up, then the measured window. Only frames the publisher *sent* inside the window count
//! (classified by the send time in their SEI), so a frame still in flight when the window
//! closes is waited for during a short grace period instead of being counted as lost.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use zerocast_codecs::flv::{self, FlvTag};
use zerocast_codecs::h264::sei;
use zerocast_codecs::FramePayload;
use zerocast_rtmp::{ClientEvent, MediaKind};

use crate::procstat::{cpu_percent, cpu_sample, rss_kib};
use crate::publisher::{decode_stamp, PublisherState, SEI_UUID};
use crate::rtmp::{wall_ns, Client, RtmpUrl};

/// How a step runs.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Viewers.
    pub viewers: usize,
    /// Viewers started per second.
    pub connect_rate: f64,
    /// Time between the last viewer's start and the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Time after the window for frames sent inside it to arrive.
    pub grace: Duration,
    /// The server process, for CPU and RSS.
    pub server_pid: Option<u32>,
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyStats {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl LatencyStats {
    /// Reads the percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> LatencyStats {
        if h.is_empty() {
            return LatencyStats::default();
        }
        LatencyStats {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// What one step measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Viewers asked for.
    pub viewers: usize,
    /// Window length in seconds.
    pub window_s: f64,
    /// Video frames the publisher sent in the window.
    pub frames_sent: u64,
    /// Video frames received (with a window send time), summed over viewers.
    pub frames_received: u64,
    /// Viewers that received at least 95% of the window's frames.
    pub viewers_95: usize,
    /// The smallest share of the window's frames any viewer received.
    pub worst_viewer_share: f64,
    /// Viewers that never got a video frame.
    pub viewers_without_frames: usize,
    /// Viewers whose connection failed or was closed.
    pub viewers_failed: usize,
    /// A few distinct failure reasons.
    pub failures: Vec<String>,
    /// Audio + video payload received by all viewers in the window, in Mbit/s.
    pub delivered_mbps: f64,
    /// Publisher send to viewer receive, per frame.
    pub latency: LatencyStats,
    /// Connect start to first video frame, per viewer, in microseconds.
    pub first_frame: LatencyStats,
    /// Server CPU over the window, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Server VmRSS at the window start, KiB.
    pub server_rss_start_kib: Option<u64>,
    /// Server VmRSS at the window end, KiB.
    pub server_rss_end_kib: Option<u64>,
    /// The harness's own CPU over the window, % of one core (all its threads).
    pub harness_cpu_pct: f64,
    /// Server CPU-% per delivered Gbit/s.
    pub server_cpu_per_gbps: Option<f64>,
    /// The latency histogram itself (not serialized; printed as a distribution).
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
}

/// Per-viewer counters.
#[derive(Debug, Default, Clone)]
struct ViewerStats {
    frames: u64,
    first_frame: Option<Duration>,
    failed: Option<String>,
}

/// State one step shares with its viewers (one thread, so `RefCell`).
struct StepShared {
    /// Window `[start, end)` in wall-clock ns, once known.
    window: RefCell<Option<(u64, u64)>>,
    latency: RefCell<Histogram<u64>>,
    viewers: RefCell<Vec<ViewerStats>>,
    bytes: RefCell<u64>,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour, 3 significant digits. The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Runs one step on the current thread (it builds its own runtime).
pub fn run_step(url: &str, plan: &StepPlan, publisher: &Arc<PublisherState>) -> Result<StepResult> {
    let url = RtmpUrl::parse(url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, step(url, plan.clone(), publisher.clone()))
}

async fn step(url: RtmpUrl, plan: StepPlan, publisher: Arc<PublisherState>) -> Result<StepResult> {
    let addr = url.resolve().await?;
    let shared = Rc::new(StepShared {
        window: RefCell::new(None),
        latency: RefCell::new(new_histogram()),
        viewers: RefCell::new(vec![ViewerStats::default(); plan.viewers]),
        bytes: RefCell::new(0),
    });
    let url = Rc::new(url);
    let ramp_start = Instant::now();
    let mut tasks = Vec::with_capacity(plan.viewers);
    for i in 0..plan.viewers {
        let at = ramp_start + Duration::from_secs_f64(i as f64 / plan.connect_rate.max(0.001));
        tokio::time::sleep_until(at.into()).await;
        let (sh, u) = (shared.clone(), url.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let r = viewer(i, addr, &u, &sh).await;
            if let Err(e) = r {
                sh.viewers.borrow_mut()[i].failed = Some(format!("{e:#}"));
            }
        }));
    }
    tokio::time::sleep(plan.warmup).await;

    // The window.
    let w_start = wall_ns();
    let w_end = w_start + plan.window.as_nanos() as u64;
    *shared.window.borrow_mut() = Some((w_start, w_end));
    let srv0 = plan.server_pid.and_then(|p| cpu_sample(Some(p)));
    let rss0 = plan.server_pid.and_then(|p| rss_kib(Some(p)));
    let me0 = cpu_sample(None);
    tokio::time::sleep(plan.window).await;
    let srv1 = plan.server_pid.and_then(|p| cpu_sample(Some(p)));
    let rss1 = plan.server_pid.and_then(|p| rss_kib(Some(p)));
    let me1 = cpu_sample(None);
    // Byte counting is by receive time: stop it now; frames keep arriving for the grace period.
    let bytes = *shared.bytes.borrow();
    *shared.bytes.borrow_mut() = u64::MAX;
    tokio::time::sleep(plan.grace).await;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }

    let frames_sent = publisher.frames_sent_between(w_start, w_end);
    let viewers = shared.viewers.borrow();
    let need = (frames_sent as f64 * 0.95).ceil() as u64;
    let mut failures: Vec<String> = Vec::new();
    for v in viewers.iter() {
        if let Some(f) = &v.failed {
            if failures.len() < 5 && !failures.contains(f) {
                failures.push(f.clone());
            }
        }
    }
    let mut ttff = new_histogram();
    for d in viewers.iter().filter_map(|v| v.first_frame) {
        let _ = ttff.record((d.as_micros() as u64).max(1));
    }
    let secs = plan.window.as_secs_f64();
    let delivered_mbps = bytes as f64 * 8.0 / secs / 1e6;
    let server_cpu_pct = match (srv0, srv1) {
        (Some(a), Some(b)) => Some(cpu_percent(&a, &b)),
        _ => None,
    };
    let latency = shared.latency.borrow().clone();
    Ok(StepResult {
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
    })
}

/// One player: connects, plays, and records each stamped video frame.
async fn viewer(idx: usize, addr: SocketAddr, url: &RtmpUrl, sh: &StepShared) -> Result<()> {
    let t0 = Instant::now();
    let mut c = Client::connect(addr, url).await?;
    c.session.play(&url.name);
    let mut events = Vec::new();
    let mut nalu_len = 4u8;
    loop {
        c.flush(&mut events).await?;
        let now = c.last_read_ns;
        for e in events.drain(..) {
            match e {
                ClientEvent::Media(m) => {
                    // Bytes: by receive time, inside the window only.
                    if let Some((ws, _)) = *sh.window.borrow() {
                        let mut b = sh.bytes.borrow_mut();
                        if now >= ws && *b != u64::MAX {
                            *b += m.payload.len() as u64;
                        }
                    }
                    if m.kind != MediaKind::Video {
                        continue;
                    }
                    let parsed = flv::parse_video(&m.payload, i64::from(m.timestamp), t0, nalu_len);
                    match parsed {
                        Ok(FlvTag::SequenceHeader(track)) => {
                            nalu_len = flv::nalu_length_size(&track);
                        }
                        Ok(FlvTag::Frame { frame, .. }) => {
                            let FramePayload::Nalus(nalus) = &frame.payload else {
                                continue;
                            };
                            let Some((sent_ns, _seq)) =
                                sei::find_user_data_unregistered(nalus, &SEI_UUID)
                                    .and_then(|d| decode_stamp(&d))
                            else {
                                continue;
                            };
                            let mut vs = sh.viewers.borrow_mut();
                            let v = &mut vs[idx];
                            if v.first_frame.is_none() {
                                v.first_frame = Some(t0.elapsed());
                            }
                            if let Some((ws, we)) = *sh.window.borrow() {
                                if sent_ns >= ws && sent_ns < we {
                                    v.frames += 1;
                                    let us = now.saturating_sub(sent_ns) / 1000;
                                    let _ = sh.latency.borrow_mut().record(us.max(1));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                ClientEvent::Status { level, code, .. } if level == "error" => {
                    anyhow::bail!("play refused: {code}");
                }
                ClientEvent::StreamEof { .. } => anyhow::bail!("stream ended (StreamEOF)"),
                _ => {}
            }
        }
        c.step().await?;
    }
}
