//! SRT helpers for the end-to-end tests: ffmpeg (libsrt) and srt-live-transmit peers, stream
//! ids, what srt-live-transmit reports about its link, a lossy UDP relay to put between an SRT
//! caller and a listener, and SRT packets built by hand (handshakes for the bad-input tests).
//!
//! Every peer is a [`Proc`] (killed by PID when dropped) and every wait is bounded.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{require_ffmpeg, require_tool, run_bounded, signal, Proc, Rng, Server};

// ---------------------------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------------------------

/// The reference SRT peer (Debian `srt-tools`, libsrt 1.5.1).
pub const SLT: &str = "srt-live-transmit";

/// srt-live-transmit is on PATH (panics, never skips, with the install hint otherwise).
pub fn require_srt_tools() {
    require_tool(SLT);
}

/// ffmpeg and ffprobe are on PATH and ffmpeg was built with libsrt (Debian's is).
pub fn require_ffmpeg_srt() {
    require_ffmpeg();
    static HAS_SRT: OnceLock<bool> = OnceLock::new();
    let ok = *HAS_SRT.get_or_init(|| {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-protocols"]);
        let (_, out, _) = run_bounded(cmd, Duration::from_secs(20));
        out.lines().any(|l| l.trim() == "srt")
    });
    assert!(
        ok,
        "this ffmpeg has no SRT protocol (libsrt): install Debian's ffmpeg (./scripts/test does)"
    );
}

// ---------------------------------------------------------------------------------------------
// Stream ids and URLs
// ---------------------------------------------------------------------------------------------

/// `#!::r=live/KEY,m=publish`: publish to the stream whose key is `key`.
pub fn publish_sid(key: &str) -> String {
    format!("#!::r=live/{key},m=publish")
}

/// `#!::r=live/NAME,m=request`: read stream `name`.
pub fn request_sid(name: &str) -> String {
    format!("#!::r=live/{name},m=request")
}

/// `srt://127.0.0.1:PORT?mode=caller&PARAMS&streamid=SID` (the stream id last: it holds `,`
/// and `=`). `params` are `key=value` strings in the peer's own units (ffmpeg's `latency` is in
/// microseconds, srt-live-transmit's in milliseconds).
pub fn caller_url(port: u16, sid: &str, params: &[&str]) -> String {
    let mut url = format!("srt://127.0.0.1:{port}?mode=caller");
    for p in params {
        url.push('&');
        url.push_str(p);
    }
    if !sid.is_empty() {
        url.push_str("&streamid=");
        url.push_str(sid);
    }
    url
}

impl Server {
    /// The `[srt]` UDP port; panics when the server was started without `ServerOpts::srt`.
    pub fn srt(&self) -> u16 {
        self.srt_port
            .expect("this server has no [srt] listener (ServerOpts::srt)")
    }

    /// `GET /api/v1/streams/NAME` with the API token; the JSON body (panics on non-200).
    pub fn stream_info(&self, name: &str) -> serde_json::Value {
        let auth = format!("Bearer {}", super::API_TOKEN);
        let r = super::http::send(
            self.http_port,
            "GET",
            &format!("/api/v1/streams/{name}"),
            &[("Authorization", auth.as_str())],
            b"",
        );
        assert_eq!(r.status, 200, "GET /api/v1/streams/{name}: {}", r.text());
        r.json()
    }

    /// Waits (bounded) until the API reports `name` live; returns its `live` object.
    pub fn wait_live(&self, name: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.stream_info(name);
            if v["status"] == "live" && v["live"].is_object() {
                return v["live"].clone();
            }
            assert!(
                Instant::now() < deadline,
                "stream {name} not live within {limit:?}; last answer {v}\n--- server stderr ---\n{}",
                super::tail(&self.log(), 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the API reports `name` live now.
    pub fn is_live(&self, name: &str) -> bool {
        let v = self.stream_info(name);
        v["status"] == "live" && v["live"].is_object()
    }

    /// One sample of `GET /metrics` (Prometheus text): the value on the line that starts with
    /// `series` as rendered, e.g. `zerocast_connections_accepted_total{protocol="srt"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let auth = format!("Bearer {}", super::API_TOKEN);
        let r = super::http::send(
            self.http_port,
            "GET",
            "/metrics",
            &[("Authorization", auth.as_str())],
            b"",
        );
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        r.text().lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
    }

    /// SRT connections accepted so far (`zerocast_connections_accepted_total{protocol="srt"}`).
    pub fn srt_accepted(&self) -> f64 {
        let series = "zerocast_connections_accepted_total{protocol=\"srt\"}";
        self.metric(series)
            .unwrap_or_else(|| panic!("no {series} in GET /metrics"))
    }

    /// `GET /api/v1/streams/NAME/sessions`: how many publishes the stream has had.
    pub fn session_count(&self, name: &str) -> u64 {
        let auth = format!("Bearer {}", super::API_TOKEN);
        let r = super::http::send(
            self.http_port,
            "GET",
            &format!("/api/v1/streams/{name}/sessions"),
            &[("Authorization", auth.as_str())],
            b"",
        );
        assert_eq!(r.status, 200, "sessions of {name}: {}", r.text());
        r.json()["total"]
            .as_u64()
            .unwrap_or_else(|| panic!("sessions of {name}: no total in {}", r.text()))
    }
}

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

/// `ffmpeg -re -stream_loop -1 -i CLIP [-t SECS] -c copy -f mpegts URL`: publishes MPEG-TS to an
/// SRT caller `url` in real time.
pub fn ffmpeg_publish_srt(
    name: &str,
    dir: &Path,
    clip: &Path,
    url: &str,
    secs: Option<u32>,
) -> Proc {
    require_ffmpeg_srt();
    super::ffmpeg_publish(name, dir, clip, url, secs, "mpegts")
}

/// `ffmpeg -i URL -t SECS -c copy -f mpegts -y OUT`: reads `secs` seconds of an SRT stream.
pub fn ffmpeg_read_srt(name: &str, dir: &Path, url: &str, secs: f64, out: &Path) -> Proc {
    require_ffmpeg_srt();
    super::ffmpeg_record(name, dir, url, secs, out, "mpegts")
}

/// A running srt-live-transmit. With `file://con` as output, what it received is its stdout
/// file (`proc.stdout_path`); its statistics (full counters, JSON) go to `stats_path`.
pub struct Slt {
    pub proc: Proc,
    pub stats_path: PathBuf,
    /// For [`Slt::spawn_fed`]: dropping it lets the pump thread close srt-live-transmit's stdin.
    hold_input: Option<std::sync::mpsc::Sender<()>>,
}

impl Slt {
    /// `srt-live-transmit -a:no -t:EXIT_AFTER -s:100 -f -pf:json -statsout:… INPUT OUTPUT`: no
    /// auto-reconnect (a refused connection usually ends it; 1.5.1 sometimes stays after a
    /// REJECT), and it exits by itself after `exit_after` seconds at the latest.
    pub fn spawn(name: &str, dir: &Path, input: &str, output: &str, exit_after: u32) -> Slt {
        require_srt_tools();
        let stats_path = dir.join(format!("{name}.stats.json"));
        let mut cmd = Command::new(SLT);
        cmd.arg("-a:no")
            .arg(format!("-t:{exit_after}"))
            .args(["-s:100", "-f", "-pf:json"])
            .arg(format!("-statsout:{}", stats_path.display()))
            .args([input, output]);
        Slt {
            proc: Proc::spawn(name, dir, cmd),
            stats_path,
            hold_input: None,
        }
    }

    /// An srt-live-transmit publisher fed through pipes (`file://con` input, 1316-byte reads:
    /// 7 TS packets per SRT packet) by `ffmpeg -re -stream_loop -1 -i CLIP [-t SECS] -c copy
    /// -f mpegts -`. Pipes lose nothing, where a UDP feed on a busy machine can overflow the
    /// socket buffer. A pump thread copies ffmpeg's stdout to srt-live-transmit's stdin (and to
    /// the feed's `stdout_path`, so a test knows exactly what went in) once its SRT target is
    /// connected (≤ 15 s); after ffmpeg ends it sends MPEG-TS null packets and keeps the input
    /// open, until the [`Slt`] is interrupted or dropped: srt-live-transmit
    /// would close its SRT socket at end of input, before the last retransmissions. Returns the
    /// publisher and the feed.
    pub fn spawn_fed(
        name: &str,
        dir: &Path,
        clip: &Path,
        secs: Option<u32>,
        output: &str,
        exit_after: u32,
    ) -> (Slt, Proc) {
        require_srt_tools();
        require_ffmpeg();
        let feed_name = format!("{name}-feed");
        let feed_err = dir.join(format!("{feed_name}.err"));
        let mut ff = super::ffmpeg_realtime(clip, secs, "mpegts", "-");
        ff.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&feed_err).expect("create feed stderr file"));
        let mut child = ff
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {feed_name} ({ff:?}): {e}"));
        let mut pipe = child.stdout.take().expect("ffmpeg stdout pipe");
        // The pump writes what it fed srt-live-transmit here, byte for byte.
        let feed_out = dir.join(format!("{feed_name}.out"));
        let mut fed = std::fs::File::create(&feed_out).expect("create feed stdout file");
        let feed = Proc {
            name: feed_name,
            child,
            stderr_path: feed_err,
            stdout_path: feed_out,
            started: Instant::now(),
            status: None,
        };

        let stats_path = dir.join(format!("{name}.stats.json"));
        let stdout_path = dir.join(format!("{name}.out"));
        let stderr_path = dir.join(format!("{name}.err"));
        let mut cmd = Command::new(SLT);
        cmd.arg("-a:no")
            .arg(format!("-t:{exit_after}"))
            .args(["-c:1316", "-s:100", "-f", "-pf:json"])
            .arg(format!("-statsout:{}", stats_path.display()))
            .args(["file://con", output])
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&stdout_path).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("create stderr file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let mut input = child.stdin.take().expect("srt-live-transmit stdin pipe");
        let (hold, released) = std::sync::mpsc::channel::<()>();
        let log = stderr_path.clone();
        std::thread::Builder::new()
            .name("srt-feed-pump".into())
            .spawn(move || {
                // srt-live-transmit drops what it reads before its SRT target is connected:
                // start the media then (ffmpeg waits on the full pipe meanwhile).
                let deadline = Instant::now() + Duration::from_secs(15);
                while !super::read_lossy(&log).contains("SRT target connected")
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                // Ends when ffmpeg's output ends or srt-live-transmit's input is gone.
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if input.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let _ = fed.write_all(&buf[..n]);
                }
                // srt-live-transmit reads its input through a buffer and sends a chunk only
                // when more input comes: push the last media through with MPEG-TS null packets
                // (not recorded as fed; demuxers skip them).
                let _ = input.write_all(&ts_null_packets(NULL_PADDING_PACKETS));
                // Holds the input open until the Slt lets go (its sender drops).
                let _ = released.recv();
                drop(input);
            })
            .expect("spawn the feed pump");
        let proc = Proc {
            name: name.to_owned(),
            child,
            stderr_path,
            stdout_path,
            started: Instant::now(),
            status: None,
        };
        let slt = Slt {
            proc,
            stats_path,
            hold_input: Some(hold),
        };
        (slt, feed)
    }

    /// Whether `got` is `fed` followed only by MPEG-TS null packets (the padding of
    /// [`Slt::spawn_fed`]): what a receiver wrote, compared with what went in.
    pub fn is_fed_then_padding(fed: &[u8], got: &[u8]) -> bool {
        got.starts_with(fed)
            && got[fed.len()..]
                .chunks(188)
                .all(|p| p.len() < 188 || p[..4] == [0x47, 0x1F, 0xFF, 0x10])
    }

    /// What it wrote to stdout (the media, for a `file://con` output).
    pub fn output(&self) -> &Path {
        &self.proc.stdout_path
    }

    /// SIGINT (srt-live-transmit closes its media cleanly on it), then waits at most `limit`;
    /// SIGKILL after that. True when it exited by itself in time.
    pub fn interrupt(&mut self, limit: Duration) -> bool {
        self.hold_input = None;
        if self.proc.try_status().is_some() {
            return true;
        }
        signal(self.proc.pid(), libc::SIGINT);
        if self.proc.wait_for(limit).is_some() {
            return true;
        }
        self.proc.kill9();
        false
    }

    /// The last statistics record it wrote (full counters since it connected), if any.
    pub fn stats(&self) -> Option<SltStats> {
        let text = super::read_lossy(&self.stats_path);
        serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .map_while(Result::ok)
            .filter(|v| v.is_object())
            .last()
            .map(SltStats)
    }
}

/// The continuity-counter jumps in an MPEG-TS file as a player received it (ISO/IEC 13818-1
/// 2.4.3.3: +1 per packet with payload on a PID, unless the discontinuity indicator is set; a
/// single repeat is allowed), one line each. Null packets are ignored.
pub fn ts_continuity_errors(path: &Path) -> Vec<String> {
    const TS: usize = 188;
    let data = std::fs::read(path).unwrap_or_default();
    let Some(start) = (0..data.len().min(TS))
        .find(|&i| data[i] == 0x47 && data.get(i + TS).is_none_or(|&b| b == 0x47))
    else {
        return vec!["no MPEG-TS sync".to_owned()];
    };
    let mut last: std::collections::HashMap<u16, u8> = Default::default();
    let mut errors = Vec::new();
    for (k, p) in data[start..].chunks_exact(TS).enumerate() {
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let (afc, cc) = ((p[3] >> 4) & 3, p[3] & 0xf);
        if pid == 0x1fff || afc & 1 == 0 {
            continue;
        }
        let discontinuity = afc & 2 != 0 && p[4] > 0 && p[5] & 0x80 != 0;
        if let Some(prev) = last.insert(pid, cc) {
            if cc != (prev + 1) & 0xf && cc != prev && !discontinuity {
                errors.push(format!("packet {k}, PID {pid:#x}: {prev} then {cc}"));
            }
        }
    }
    errors
}

/// Null packets [`Slt::spawn_fed`] sends after the media: 37.6 KB, well over what
/// srt-live-transmit holds back (its input buffer) plus a receiver's stdout buffer.
const NULL_PADDING_PACKETS: usize = 200;

/// `n` MPEG-TS null packets (PID 0x1FFF, payload only).
pub fn ts_null_packets(n: usize) -> Vec<u8> {
    let mut p = [0xFFu8; 188];
    p[..4].copy_from_slice(&[0x47, 0x1F, 0xFF, 0x10]);
    p.repeat(n)
}

/// One JSON statistics record of srt-live-transmit (`-pf:json -f`).
#[derive(Clone, Debug)]
pub struct SltStats(pub serde_json::Value);

impl SltStats {
    /// `dir` is `send` or `recv`; `field` e.g. `packetsLost`, `packetsRetransmitted`,
    /// `packetsDropped`, `packets`.
    pub fn get(&self, dir: &str, field: &str) -> u64 {
        self.0[dir][field]
            .as_u64()
            .or_else(|| self.0[dir][field].as_f64().map(|f| f as u64))
            .unwrap_or_else(|| panic!("no {dir}.{field} in srt-live-transmit stats {}", self.0))
    }
}

// ---------------------------------------------------------------------------------------------
// What a peer received
// ---------------------------------------------------------------------------------------------

/// Decoded frame counts of a media file (`ffprobe -count_frames`), per first video/audio stream.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    pub video_codec: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub video_frames: u64,
    pub audio_codec: String,
    pub audio_frames: u64,
}

/// `ffprobe -count_frames` (decodes every frame); `read_secs` limits it to the first seconds
/// of the file (to leave out a tail cut mid-frame when the peer was interrupted).
pub fn decoded(path: &Path, read_secs: Option<f64>) -> Result<Decoded, String> {
    if super::fs_len(path) == 0 {
        return Err(format!("{} is missing or empty", path.display()));
    }
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error"]);
    if let Some(t) = read_secs {
        cmd.args(["-read_intervals", &format!("%+{t}")]);
    }
    cmd.args([
        "-count_frames",
        "-show_entries",
        "stream=codec_type,codec_name,width,height,nb_read_frames",
        "-of",
        "json",
    ])
    .arg(path);
    let (st, out, err) = run_bounded(cmd, Duration::from_secs(60));
    if !st.map(|s| s.success()).unwrap_or(false) {
        return Err(format!(
            "ffprobe -count_frames {} failed ({st:?}): {err}",
            path.display()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("ffprobe JSON ({e}): {out}"))?;
    let mut d = Decoded::default();
    let n = |s: &serde_json::Value| {
        s["nb_read_frames"]
            .as_str()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    for s in v["streams"].as_array().cloned().unwrap_or_default() {
        match s["codec_type"].as_str() {
            Some("video") if d.video_codec.is_empty() => {
                d.video_codec = s["codec_name"].as_str().unwrap_or_default().into();
                d.width = s["width"].as_u64();
                d.height = s["height"].as_u64();
                d.video_frames = n(&s);
            }
            Some("audio") if d.audio_codec.is_empty() => {
                d.audio_codec = s["codec_name"].as_str().unwrap_or_default().into();
                d.audio_frames = n(&s);
            }
            _ => {}
        }
    }
    Ok(d)
}

/// `ffmpeg -v error [-t SECS] -i FILE -f null -`: what the decoders complained about (empty when
/// the file decodes cleanly). `read_secs` limits the input read, as in [`decoded`].
pub fn decode_errors(path: &Path, read_secs: Option<f64>) -> String {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error"]);
    if let Some(t) = read_secs {
        cmd.args(["-t", &format!("{t}")]);
    }
    cmd.arg("-i").arg(path).args(["-f", "null", "-"]);
    let (st, _out, err) = run_bounded(cmd, Duration::from_secs(60));
    match st {
        Some(s) if s.success() => err.trim().to_owned(),
        other => format!("ffmpeg -f null exited {other:?}: {err}"),
    }
}

// ---------------------------------------------------------------------------------------------
// A lossy UDP relay
// ---------------------------------------------------------------------------------------------

/// How the relay treats each datagram, the same in both directions.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Datagrams dropped per thousand (drawn from a seeded PRNG: the same run drops the same).
    pub drop_per_mille: u64,
    /// Delay of every datagram.
    pub delay: Duration,
    /// Datagrams per thousand (PRNG-drawn) held `reorder_extra` longer, so that later ones
    /// overtake them.
    pub reorder_per_mille: u64,
    pub reorder_extra: Duration,
    /// At most this many datagrams wait per direction; more are dropped (counted as overflow).
    pub queue_limit: usize,
    pub seed: u64,
}

impl RelayConfig {
    /// A relay that only forwards (0 loss, no delay): a tap to see what goes over the wire.
    pub fn clean() -> RelayConfig {
        RelayConfig {
            drop_per_mille: 0,
            delay: Duration::ZERO,
            reorder_per_mille: 0,
            reorder_extra: Duration::ZERO,
            queue_limit: 8192,
            seed: 1,
        }
    }

    /// 5% loss each way, 30 ms delay each way, 1 in 50 held 10 ms more.
    pub fn lossy(seed: u64) -> RelayConfig {
        RelayConfig {
            drop_per_mille: 50,
            delay: Duration::from_millis(30),
            reorder_per_mille: 20,
            reorder_extra: Duration::from_millis(10),
            queue_limit: 8192,
            seed,
        }
    }
}

/// What one direction of the relay saw.
#[derive(Clone, Debug, Default)]
pub struct DirStats {
    pub received: u64,
    pub forwarded: u64,
    pub dropped: u64,
    pub reordered: u64,
    pub overflow: u64,
    pub send_errors: u64,
    /// SRT data packets (header bit 31 clear) received.
    pub data_packets: u64,
    /// Data packets whose KK bits say the payload is encrypted (even or odd key).
    pub encrypted_data: u64,
    /// Data packets whose payload holds MPEG-TS in clear (0x47 every 188 bytes).
    pub clear_ts_data: u64,
    /// SRT control packets (header bit 31 set) received.
    pub control_packets: u64,
}

/// What the relay saw: `up` from the caller to the listener, `down` back.
#[derive(Clone, Default)]
pub struct RelayStats {
    pub up: DirStats,
    pub down: DirStats,
    /// Data packets and loss reports, in arrival order (at most [`TRACE_LIMIT`]), so that a
    /// failed test can tell what happened to a packet the reader gave up on.
    pub trace: Vec<TraceEvent>,
}

/// At most this many [`TraceEvent`]s are kept (about a minute of a 3 Mbit/s stream).
pub const TRACE_LIMIT: usize = 100_000;

/// One SRT packet through the relay.
#[derive(Clone, Debug)]
pub struct TraceEvent {
    /// Since the relay started.
    pub at: Duration,
    pub dir: Dir,
    pub what: Traced,
    /// False when the relay dropped it.
    pub forwarded: bool,
}

/// The part of an SRT packet the trace keeps.
#[derive(Clone, Debug)]
pub enum Traced {
    Data {
        seq: u32,
        retransmitted: bool,
        timestamp_us: u32,
    },
    /// A NAK (loss report): inclusive sequence ranges.
    Nak(Vec<(u32, u32)>),
}

impl Traced {
    fn parse(d: &[u8]) -> Option<Traced> {
        let word = |i: usize| {
            d.get(i..i + 4)
                .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
        };
        let w0 = word(0)?;
        if w0 & 0x8000_0000 == 0 {
            return Some(Traced::Data {
                seq: w0,
                retransmitted: word(4)? & (1 << 26) != 0,
                timestamp_us: word(8)?,
            });
        }
        if (w0 >> 16) & 0x7fff != 3 {
            return None;
        }
        let mut ranges = Vec::new();
        let mut i = 16;
        while let Some(w) = word(i) {
            if w & 0x8000_0000 != 0 {
                ranges.push((w & 0x7fff_ffff, word(i + 4)?));
                i += 8;
            } else {
                ranges.push((w, w));
                i += 4;
            }
        }
        Some(Traced::Nak(ranges))
    }
}

impl std::fmt::Debug for RelayStats {
    /// The counters; the trace only by length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStats")
            .field("up", &self.up)
            .field("down", &self.down)
            .field("traced", &self.trace.len())
            .finish()
    }
}

impl RelayStats {
    /// The history of every data packet sent `dir` that did not get through in time: no copy
    /// passed the relay, or the first that did passed it more than `latency` after the packet's
    /// timestamp (on a clock that starts at the earliest `arrival − timestamp` of the stream,
    /// so the slack of the first packets is the reference). Each copy the relay saw is listed,
    /// and each loss report from the other side that asked for it. Empty when every packet got
    /// through in time or are due after the trace ends.
    pub fn unrepaired(&self, dir: Dir, latency: Duration) -> String {
        use std::collections::BTreeMap;
        use std::fmt::Write as _;
        let data = || {
            self.trace.iter().filter_map(move |e| match e.what {
                Traced::Data {
                    seq, timestamp_us, ..
                } if e.dir == dir => Some((e, seq, Duration::from_micros(u64::from(timestamp_us)))),
                _ => None,
            })
        };
        let Some(origin) = data().map(|(e, _, ts)| e.at.saturating_sub(ts)).min() else {
            return String::new();
        };
        // Per packet: when its first copy got through, if one did, and its deadline.
        let mut first_through: BTreeMap<u32, (Option<Duration>, Duration)> = BTreeMap::new();
        for (e, seq, ts) in data() {
            let slot = first_through
                .entry(seq)
                .or_insert((None, origin + ts + latency));
            if e.forwarded && slot.0.is_none() {
                slot.0 = Some(e.at);
            }
        }
        // Packets due after the trace ends (the last ones, when the relay stopped) are no
        // verdict.
        let end = self.trace.last().map_or(Duration::ZERO, |e| e.at);
        let mut out = String::new();
        for (&lost, &(through, deadline)) in &first_through {
            if through.is_some_and(|t| t <= deadline) || deadline > end {
                continue;
            }
            let _ = writeln!(
                out,
                "packet {lost}: deadline {:.3} ms, first through {}:",
                deadline.as_secs_f64() * 1e3,
                through.map_or("never".to_owned(), |t| format!(
                    "{:.3} ms",
                    t.as_secs_f64() * 1e3
                ))
            );
            for e in &self.trace {
                let asked = match &e.what {
                    Traced::Data { seq, .. } => e.dir == dir && *seq == lost,
                    Traced::Nak(r) => {
                        e.dir != dir && r.iter().any(|&(a, b)| a <= lost && lost <= b)
                    }
                };
                if asked {
                    let fate = if e.forwarded { "forwarded" } else { "DROPPED" };
                    let _ = writeln!(
                        out,
                        "  {:>9.3} ms {:?} {fate}",
                        e.at.as_secs_f64() * 1e3,
                        e.what
                    );
                }
            }
        }
        out
    }
}

impl DirStats {
    /// Dropped share of what was received, in percent.
    pub fn drop_percent(&self) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            100.0 * self.dropped as f64 / self.received as f64
        }
    }

    fn classify(&mut self, d: &[u8]) {
        if d.len() < 16 {
            return;
        }
        if d[0] & 0x80 != 0 {
            self.control_packets += 1;
            return;
        }
        self.data_packets += 1;
        let kk = (d[4] >> 3) & 0b11;
        if kk != 0 {
            self.encrypted_data += 1;
        }
        let payload = &d[16..];
        // Each 188-byte packet starts with the sync byte and carries a PID ffmpeg or zerocast
        // uses (PAT, SDT, PMT, elementary streams, null): a ciphertext that happens to start
        // with 0x47 (1 in 256 one-packet payloads) does not count.
        let clear_packet = |p: &[u8]| {
            let pid = u16::from_be_bytes([p[1], p[2]]) & 0x1fff;
            p[0] == 0x47 && matches!(pid, 0 | 0x11 | 0x100..=0x10f | 0x1000 | 0x1fff)
        };
        if payload.len() >= 188 && payload.chunks_exact(188).all(clear_packet) {
            self.clear_ts_data += 1;
        }
    }
}

/// A UDP relay on 127.0.0.1 between SRT callers (which send to [`LossyRelay::port`]) and a
/// listener at `upstream`: it drops, delays and reorders datagrams per [`RelayConfig`]. One
/// thread; it stops (flag + join) on [`LossyRelay::stop`] or drop.
pub struct LossyRelay {
    port: u16,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<RelayStats>>,
}

/// A direction through the relay: `Up` from the caller to the listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dir {
    Up,
    Down,
}

impl LossyRelay {
    pub fn start(upstream: SocketAddr, cfg: RelayConfig) -> LossyRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("relay: bind front socket");
        let back = UdpSocket::bind("127.0.0.1:0").expect("relay: bind back socket");
        front.set_nonblocking(true).unwrap();
        back.set_nonblocking(true).unwrap();
        let port = front.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("srt-relay".into())
            .spawn(move || relay_loop(front, back, upstream, cfg, &flag))
            .expect("spawn relay thread");
        LossyRelay {
            port,
            stop,
            handle: Some(handle),
        }
    }

    /// The port callers send to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the relay thread (bounded: it checks the flag every millisecond) and returns what
    /// it saw.
    pub fn stop(mut self) -> RelayStats {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("relay thread")
            .join()
            .expect("relay thread panicked")
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A datagram waiting in the relay: due time, arrival order, direction, bytes.
type Queued = (Instant, u64, Dir, Vec<u8>);

fn relay_loop(
    front: UdpSocket,
    back: UdpSocket,
    upstream: SocketAddr,
    cfg: RelayConfig,
    stop: &AtomicBool,
) -> RelayStats {
    let mut rng = Rng::new(cfg.seed);
    let mut stats = RelayStats::default();
    let mut heap: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
    let mut queued = [0usize; 2];
    let mut order = 0u64;
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        for (sock, dir) in [(&front, Dir::Up), (&back, Dir::Down)] {
            // Until WouldBlock (or an ICMP error report): nothing more now.
            while let Ok((n, src)) = sock.recv_from(&mut buf) {
                let st = match dir {
                    Dir::Up => {
                        client = Some(src);
                        &mut stats.up
                    }
                    Dir::Down => {
                        if src != upstream {
                            continue;
                        }
                        &mut stats.down
                    }
                };
                st.received += 1;
                st.classify(&buf[..n]);
                let drop = rng.next_u64() % 1000 < cfg.drop_per_mille;
                if let Some(what) = Traced::parse(&buf[..n]) {
                    if stats.trace.len() < TRACE_LIMIT {
                        stats.trace.push(TraceEvent {
                            at: started.elapsed(),
                            dir,
                            what,
                            forwarded: !drop,
                        });
                    }
                }
                let st = match dir {
                    Dir::Up => &mut stats.up,
                    Dir::Down => &mut stats.down,
                };
                if drop {
                    st.dropped += 1;
                    continue;
                }
                let mut delay = cfg.delay;
                if rng.next_u64() % 1000 < cfg.reorder_per_mille {
                    delay += cfg.reorder_extra;
                    st.reordered += 1;
                }
                let q = &mut queued[dir as usize];
                if *q >= cfg.queue_limit {
                    st.overflow += 1;
                    continue;
                }
                *q += 1;
                order += 1;
                heap.push(Reverse((
                    Instant::now() + delay,
                    order,
                    dir,
                    buf[..n].to_vec(),
                )));
            }
        }
        let now = Instant::now();
        while heap.peek().is_some_and(|Reverse((due, ..))| *due <= now) {
            let Reverse((_, _, dir, data)) = heap.pop().unwrap();
            queued[dir as usize] -= 1;
            let (res, st) = match dir {
                Dir::Up => (back.send_to(&data, upstream), &mut stats.up),
                Dir::Down => match client {
                    Some(c) => (front.send_to(&data, c), &mut stats.down),
                    None => continue,
                },
            };
            match res {
                Ok(_) => st.forwarded += 1,
                Err(_) => st.send_errors += 1,
            }
        }
        let next = heap
            .peek()
            .map(|Reverse((due, ..))| due.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(1));
        std::thread::sleep(next.clamp(Duration::from_micros(200), Duration::from_millis(1)));
    }
    stats
}

// ---------------------------------------------------------------------------------------------
// SRT packets by hand
// ---------------------------------------------------------------------------------------------

/// Handshake type of an induction request/response.
pub const HS_INDUCTION: u32 = 1;
/// Handshake type of a conclusion request/response.
pub const HS_CONCLUSION: u32 = 0xFFFF_FFFF;
/// Extension field of an HSv5 induction response (the SRT magic).
pub const SRT_MAGIC: u16 = 0x4A17;
/// Handshake extension types.
pub const EXT_HSREQ: u16 = 1;
pub const EXT_HSRSP: u16 = 2;
pub const EXT_SID: u16 = 5;
/// Conclusion extension-field flags.
pub const HSEXT_HSREQ: u16 = 1;
pub const HSEXT_CONFIG: u16 = 4;
/// Control type of a shutdown packet.
pub const CTRL_SHUTDOWN: u16 = 5;

/// A handshake control packet: header fields plus the handshake CIF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub timestamp: u32,
    pub dest_socket: u32,
    pub version: u32,
    pub encryption: u16,
    pub extension: u16,
    pub initial_seq: u32,
    pub mtu: u32,
    pub flow_window: u32,
    pub hs_type: u32,
    pub socket_id: u32,
    pub cookie: u32,
    pub peer_ip: [u8; 16],
    /// Raw bytes after the 48-byte CIF (extension blocks), as sent.
    pub extensions: Vec<u8>,
}

/// 127.0.0.1 as libsrt writes it into the handshake's peer IP field.
pub const PEER_IP_LOOPBACK: [u8; 16] = [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

impl Handshake {
    /// An HSv5 caller's induction request (version 4, extension field 2 = UDT_DGRAM).
    pub fn induction(socket_id: u32) -> Handshake {
        Handshake {
            timestamp: 0,
            dest_socket: 0,
            version: 4,
            encryption: 0,
            extension: 2,
            initial_seq: 0x1234_5678 & 0x7FFF_FFFF,
            mtu: 1500,
            flow_window: 8192,
            hs_type: HS_INDUCTION,
            socket_id,
            cookie: 0,
            peer_ip: PEER_IP_LOOPBACK,
            extensions: Vec::new(),
        }
    }

    /// An HSv5 conclusion request with `cookie`, an HSREQ extension (TSBPD both ways, 120 ms)
    /// and, when `sid` is not empty, a stream id extension.
    pub fn conclusion(socket_id: u32, cookie: u32, sid: &str) -> Handshake {
        let mut ext = Vec::new();
        // HSREQ: SRT version 1.5.1, flags TSBPDSND|TSBPDRCV|TLPKTDROP|NAKREPORT|REXMITFLG,
        // receiver latency << 16 | sender latency (ms).
        let hsreq = [
            0x0001_0501u32,
            0x01 | 0x02 | 0x08 | 0x10 | 0x20,
            (120 << 16) | 120,
        ];
        let words: Vec<u8> = hsreq.iter().flat_map(|w| w.to_be_bytes()).collect();
        push_extension(&mut ext, EXT_HSREQ, 3, &words);
        let mut flags = HSEXT_HSREQ;
        if !sid.is_empty() {
            let content = sid_words(sid);
            push_extension(&mut ext, EXT_SID, (content.len() / 4) as u16, &content);
            flags |= HSEXT_CONFIG;
        }
        Handshake {
            version: 5,
            extension: flags,
            hs_type: HS_CONCLUSION,
            cookie,
            extensions: ext,
            ..Handshake::induction(socket_id)
        }
    }

    /// The datagram: 16-byte control header (type 0 = handshake) + CIF + extensions.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.extensions.len());
        v.extend_from_slice(&0x8000_0000u32.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&self.timestamp.to_be_bytes());
        v.extend_from_slice(&self.dest_socket.to_be_bytes());
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(&self.encryption.to_be_bytes());
        v.extend_from_slice(&self.extension.to_be_bytes());
        for w in [
            self.initial_seq,
            self.mtu,
            self.flow_window,
            self.hs_type,
            self.socket_id,
            self.cookie,
        ] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        v.extend_from_slice(&self.peer_ip);
        v.extend_from_slice(&self.extensions);
        v
    }

    /// Parses a handshake control packet; `None` for anything else or a short one.
    pub fn parse(d: &[u8]) -> Option<Handshake> {
        if d.len() < 64 || d[0] != 0x80 || d[1] != 0 {
            return None;
        }
        let w = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let h = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
        let mut peer_ip = [0u8; 16];
        peer_ip.copy_from_slice(&d[48..64]);
        Some(Handshake {
            timestamp: w(8),
            dest_socket: w(12),
            version: w(16),
            encryption: h(20),
            extension: h(22),
            initial_seq: w(24),
            mtu: w(28),
            flow_window: w(32),
            hs_type: w(36),
            socket_id: w(40),
            cookie: w(44),
            peer_ip,
            extensions: d[64..].to_vec(),
        })
    }

    /// A rejection: a handshake whose type is a rejection code (1000 and up in libsrt 1.5).
    pub fn is_rejection(&self) -> bool {
        self.hs_type != HS_CONCLUSION && self.hs_type != HS_INDUCTION && self.hs_type >= 1000
    }
}

/// Appends one extension block: type, length in 32-bit words (may lie), content.
pub fn push_extension(out: &mut Vec<u8>, ty: u16, len_words: u16, content: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&len_words.to_be_bytes());
    out.extend_from_slice(content);
}

/// A stream id as SRT carries it: zero-padded to 32-bit words, each word's bytes reversed.
pub fn sid_words(sid: &str) -> Vec<u8> {
    let mut b = sid.as_bytes().to_vec();
    b.resize(b.len().div_ceil(4) * 4, 0);
    for c in b.chunks_mut(4) {
        c.reverse();
    }
    b
}

/// A shutdown control packet to `dest_socket`.
pub fn shutdown_packet(dest_socket: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(20);
    v.extend_from_slice(&(0x8000_0000u32 | (u32::from(CTRL_SHUTDOWN) << 16)).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&dest_socket.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v
}

/// A UDP socket on 127.0.0.1 (a port the kernel picks) that reads with `timeout`.
pub fn udp_client(timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP client socket");
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Sends `pkt` from `sock` to 127.0.0.1:`port` and returns the first handshake that comes back
/// within the socket's read timeout (other datagrams are skipped).
pub fn exchange(sock: &UdpSocket, port: u16, pkt: &[u8]) -> Option<Handshake> {
    sock.send_to(pkt, ("127.0.0.1", port)).ok()?;
    recv_handshake(sock)
}

/// The next handshake datagram on `sock` within its read timeout.
pub fn recv_handshake(sock: &UdpSocket) -> Option<Handshake> {
    let deadline = Instant::now() + sock.read_timeout().ok().flatten().unwrap_or_default();
    let mut buf = [0u8; 2048];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        if let Some(h) = Handshake::parse(&buf[..n]) {
            return Some(h);
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

/// One induction request to 127.0.0.1:`port` from a fresh socket; the induction response when
/// one comes within `timeout`.
pub fn induction_probe(port: u16, timeout: Duration) -> Option<Handshake> {
    let s = udp_client(timeout);
    let h = exchange(&s, port, &Handshake::induction(0x0BAD_CAFE).to_bytes())?;
    (h.hs_type == HS_INDUCTION).then_some(h)
}
