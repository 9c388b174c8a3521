//! A real browser as a peer: Debian's Chromium driven by playwright-core (tests/browser), playing
//! HLS / LL-HLS with hls.js and reporting what the player saw.
//!
//! The npm packages are pinned by tests/browser/package-lock.json and installed by
//! `./scripts/test` (`npm ci`); Chromium is Debian's `/usr/bin/chromium`, never a downloaded one.
//! Each run starts a fresh browser with an empty profile and is bounded in time; a browser run
//! costs real CPU, so real-time tests should hold [`super::serial`] while it plays.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{require_tool, signal, Proc};

/// The browser the tests drive.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// tests/browser: the node scripts and their node_modules.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Panics (never skips) unless Chromium, node and the pinned npm packages are installed.
pub fn require_chromium() {
    assert!(
        std::path::Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} not found: run ./scripts/test (it installs it) or `apt-get install chromium`"
    );
    require_tool("node");
    let modules = browser_dir().join("node_modules");
    for need in ["playwright-core/package.json", "hls.js/dist/hls.min.js"] {
        assert!(
            modules.join(need).is_file(),
            "{} missing: run ./scripts/test (it runs npm ci there) or \
             `cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund`",
            modules.join(need).display()
        );
    }
}

/// One hls.js ERROR event.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsError {
    /// Milliseconds since the player started.
    pub t_ms: u64,
    /// hls.js `ErrorTypes` (e.g. `networkError`, `mediaError`).
    pub kind: String,
    /// hls.js `ErrorDetails` (e.g. `fragLoadError`, `bufferStalledError`).
    pub details: String,
    pub fatal: bool,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub response_code: Option<i64>,
}

/// A variant as hls.js lists it (`hls.levels`); codecs are empty for a bare media playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsLevel {
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub bitrate: Option<u64>,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
}

/// The player's state, sampled every 500 ms.
#[derive(Clone, Debug, PartialEq)]
pub struct HlsSample {
    pub t_ms: u64,
    pub current_time: f64,
    pub paused: bool,
    pub seeking: bool,
    pub ready_state: u64,
    pub playback_rate: f64,
    /// Seconds buffered ahead of `current_time`.
    pub buffer_ahead: Option<f64>,
    /// `hls.latency` (0 until live playback starts).
    pub latency: Option<f64>,
    pub target_latency: Option<f64>,
    pub width: u64,
    pub height: u64,
    pub level: Option<i64>,
    pub levels: Vec<HlsLevel>,
    pub decoded_frames: u64,
    pub dropped_frames: u64,
    pub fragments_loaded: u64,
    pub parts_loaded: u64,
}

/// `hls.latency` over the samples taken while playing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub max: Option<f64>,
    pub last: Option<f64>,
}

/// What tests/browser/hls_play.mjs reports.
#[derive(Clone, Debug)]
pub struct HlsPlayReport {
    /// No fatal error, `current_time` advanced and frames were decoded.
    pub ok: bool,
    pub fatal_errors: Vec<HlsError>,
    pub non_fatal_errors: Vec<HlsError>,
    pub samples: Vec<HlsSample>,
    /// `current_time` at the first sample with data, not seeking and > 0.
    pub current_time_start: Option<f64>,
    pub current_time_end: Option<f64>,
    /// `current_time_end - current_time_start`.
    pub advanced_seconds: Option<f64>,
    /// Total of `video.played` (excludes seeks).
    pub played_seconds: Option<f64>,
    pub latency: Latency,
    pub target_latency: Option<f64>,
    pub width: u64,
    pub height: u64,
    pub levels: Vec<HlsLevel>,
    /// Codec strings hls.js gave MediaSource, e.g. `avc1.64001F` (from BUFFER_CODECS; a muxed
    /// audio+video track shows here as `mp4a.40.2,avc1.64001F`).
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub decoded_frames: u64,
    pub dropped_frames: u64,
    /// Whole segments and LL-HLS parts hls.js loaded.
    pub fragments_loaded: u64,
    pub parts_loaded: u64,
    pub live: Option<bool>,
    /// `EXT-X-PART-INF:PART-TARGET` as hls.js parsed it.
    pub part_target: Option<f64>,
    /// `EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES` as hls.js parsed it.
    pub can_block_reload: Option<bool>,
    pub first_frame_ms: Option<u64>,
    pub play_error: Option<String>,
    pub page_errors: Vec<String>,
    /// Responses with status ≥ 400: (url, status).
    pub http_errors: Vec<(String, u64)>,
    pub browser_version: String,
    pub hls_version: String,
    /// The whole JSON report.
    pub raw: serde_json::Value,
    /// The script's stderr.
    pub stderr: String,
}

impl HlsPlayReport {
    /// The report without its samples, for assertion messages.
    pub fn summary(&self) -> String {
        let mut v = self.raw.clone();
        if let Some(o) = v.as_object_mut() {
            let n = self.samples.len();
            o.insert("samples".into(), format!("({n} samples left out)").into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Panics with the summary unless playback was clean: no fatal error and `current_time`
    /// advanced by at least `min_advance` seconds with decoded frames.
    pub fn assert_played(&self, min_advance: f64, what: &str) {
        assert!(
            self.ok && self.advanced_seconds.unwrap_or(0.0) >= min_advance,
            "{what}: hls.js playback did not advance {min_advance} s cleanly:\n{}",
            self.summary()
        );
    }
}

fn f64_of(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
}

fn u64_of(v: &serde_json::Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
        .unwrap_or(0)
}

fn string_of(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn errors_of(v: &serde_json::Value) -> Vec<HlsError> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| HlsError {
                    t_ms: u64_of(&e["t"]),
                    kind: e["type"].as_str().unwrap_or_default().to_owned(),
                    details: e["details"].as_str().unwrap_or_default().to_owned(),
                    fatal: e["fatal"].as_bool().unwrap_or(false),
                    reason: string_of(&e["reason"]),
                    url: string_of(&e["url"]),
                    response_code: e["responseCode"].as_i64(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn levels_of(v: &serde_json::Value) -> Vec<HlsLevel> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|l| HlsLevel {
                    width: l["width"].as_u64(),
                    height: l["height"].as_u64(),
                    bitrate: l["bitrate"].as_u64(),
                    video_codec: string_of(&l["videoCodec"]),
                    audio_codec: string_of(&l["audioCodec"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Parses the JSON report of hls_play.mjs.
pub fn parse_report(v: serde_json::Value, stderr: String) -> HlsPlayReport {
    let samples = v["samples"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| HlsSample {
                    t_ms: u64_of(&s["t"]),
                    current_time: s["currentTime"].as_f64().unwrap_or(0.0),
                    paused: s["paused"].as_bool().unwrap_or(true),
                    seeking: s["seeking"].as_bool().unwrap_or(false),
                    ready_state: u64_of(&s["readyState"]),
                    playback_rate: s["playbackRate"].as_f64().unwrap_or(0.0),
                    buffer_ahead: f64_of(&s["bufferAhead"]),
                    latency: f64_of(&s["latency"]),
                    target_latency: f64_of(&s["targetLatency"]),
                    width: u64_of(&s["width"]),
                    height: u64_of(&s["height"]),
                    level: s["level"].as_i64(),
                    levels: levels_of(&s["levels"]),
                    decoded_frames: u64_of(&s["decodedFrames"]),
                    dropped_frames: u64_of(&s["droppedFrames"]),
                    fragments_loaded: u64_of(&s["fragmentsLoaded"]),
                    parts_loaded: u64_of(&s["partsLoaded"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let codecs = &v["bufferCodecs"];
    let video_codec =
        string_of(&codecs["video"]["codec"]).or_else(|| string_of(&codecs["audiovideo"]["codec"]));
    let audio_codec =
        string_of(&codecs["audio"]["codec"]).or_else(|| string_of(&codecs["audiovideo"]["codec"]));
    HlsPlayReport {
        ok: v["ok"].as_bool().unwrap_or(false),
        fatal_errors: errors_of(&v["fatalErrors"]),
        non_fatal_errors: errors_of(&v["nonFatalErrors"]),
        samples,
        current_time_start: f64_of(&v["currentTimeStart"]),
        current_time_end: f64_of(&v["currentTimeEnd"]),
        advanced_seconds: f64_of(&v["advancedSeconds"]),
        played_seconds: f64_of(&v["playedSeconds"]),
        latency: Latency {
            min: f64_of(&v["latency"]["min"]),
            median: f64_of(&v["latency"]["median"]),
            max: f64_of(&v["latency"]["max"]),
            last: f64_of(&v["latency"]["last"]),
        },
        target_latency: f64_of(&v["targetLatency"]),
        width: u64_of(&v["width"]),
        height: u64_of(&v["height"]),
        levels: levels_of(&v["levels"]),
        video_codec,
        audio_codec,
        decoded_frames: u64_of(&v["decodedFrames"]),
        dropped_frames: u64_of(&v["droppedFrames"]),
        fragments_loaded: u64_of(&v["fragmentsLoaded"]),
        parts_loaded: u64_of(&v["partsLoaded"]),
        live: v["live"].as_bool(),
        part_target: f64_of(&v["partTarget"]),
        can_block_reload: v["canBlockReload"].as_bool(),
        first_frame_ms: v["firstFrameMs"].as_u64(),
        play_error: string_of(&v["playError"]),
        page_errors: v["pageErrors"]
            .as_array()
            .map(|a| a.iter().map(|e| e.to_string()).collect())
            .unwrap_or_default(),
        http_errors: v["httpErrors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["url"].as_str().unwrap_or_default().to_owned(),
                            u64_of(&e["status"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        browser_version: v["browserVersion"].as_str().unwrap_or_default().to_owned(),
        hls_version: v["hlsVersion"].as_str().unwrap_or_default().to_owned(),
        raw: v,
        stderr,
    }
}

/// Plays `url` with hls.js (`lowLatencyMode: low_latency`) in a fresh headless Chromium for
/// `seconds` seconds of wall time and returns the report. Panics on a harness failure (Chromium
/// or node_modules missing, browser crash, timeout), never on a playback failure: assert on the
/// report (e.g. [`HlsPlayReport::assert_played`]).
pub fn play_hls(url: &str, seconds: u32, low_latency: bool) -> HlsPlayReport {
    require_chromium();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("hls_play.mjs"))
        .args(["--url", url, "--seconds", &seconds.to_string()])
        .args(["--low-latency", if low_latency { "true" } else { "false" }])
        .current_dir(browser_dir());
    let mut p = Proc::spawn("hls_play", dir.path(), cmd);
    // The script stops itself at seconds + 30 (and closes the browser); this is the backstop.
    // SIGTERM first: the script closes the browser on it, SIGKILL would orphan Chromium.
    let limit = Duration::from_secs(u64::from(seconds) + 45);
    if p.wait_for(limit).is_none() {
        signal(p.pid(), libc::SIGTERM);
        if p.wait_for(Duration::from_secs(8)).is_none() {
            p.kill9();
        }
        panic!(
            "hls_play.mjs ({url}) did not finish within {limit:?}\n--- stderr ---\n{}",
            p.stderr()
        );
    }
    let status = p.try_status().expect("exited");
    let (out, err) = (p.stdout(), p.stderr());
    assert!(
        status.success(),
        "hls_play.mjs ({url}) failed: {status}\n--- stderr ---\n{err}\n--- stdout ---\n{out}"
    );
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("hls_play.mjs ({url}) printed no JSON report ({e})\n--- stdout ---\n{out}\n--- stderr ---\n{err}")
    });
    parse_report(v, err)
}
