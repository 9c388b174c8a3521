//! `zerocast-bench chaos`: a network fuzzer against a live server.
//!
//! While a real stream is being published (started by the caller) and played back (by an
//! ffmpeg player that chaos starts and records), worker threads open connection after
//! connection and send mutated real RTMP sessions: the ffmpeg publish and play sessions
//! recorded in `fuzz/seeds/`, truncated, bit-flipped, spliced, given absurd sizes, dribbled one
//! byte per second, or replaced by garbage. At the end the run passes only if
//!
//! * the server process is still alive (`--server-pid`),
//! * the recording kept >= 95% of the video frames its wall-clock duration should hold and no
//!   gap between consecutive video timestamps exceeds 500 ms (`ffprobe -show_packets`),
//! * the server's resident memory grew by less than 50% + 20 MiB.
//!
//! Everything is bounded: sockets carry connect/read/write timeouts, every loop checks a
//! deadline, and child processes are killed if they do not stop when asked.
//!
//! ```text
//! zerocast serve --config open-auth.toml &
//! ffmpeg -re -stream_loop -1 -i clip.flv -c copy -f flv rtmp://127.0.0.1:1935/live/x &
//! zerocast-bench chaos --url rtmp://127.0.0.1:1935/live/x --duration 60 \
//!     --server-pid "$(pidof zerocast)"
//! ```

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

/// ffmpeg 5.1 publishing: C0+C1+C2, then connect, releaseStream, FCPublish, createStream,
/// publish, metadata, the AVC and AAC sequence headers and the start of the first keyframe.
const PUBLISH: &[u8] =
    include_bytes!("../../fuzz/seeds/rtmp_server_session/ffmpeg-5.1-publish-session.bin");
/// ffmpeg 5.1 playing: C0+C1+C2, connect, createStream, getStreamLength, play, ...
const PLAY: &[u8] =
    include_bytes!("../../fuzz/seeds/rtmp_server_session/ffmpeg-5.1-play-session.bin");
/// C0 + C1 + C2.
const HANDSHAKE_LEN: usize = 1 + 1536 + 1536;

/// Options of `zerocast-bench chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The live stream to attack and record, rtmp://HOST:PORT/APP/NAME. Something must be
    /// publishing to it already.
    #[arg(long)]
    url: String,
    /// Seconds of attack.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// The server's process id: checks that it survives and that its memory stays bounded.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Attacking connections open at once (one thread each).
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// PRNG seed (default: from the clock); printed so a run can be repeated.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the player's recording goes (default: a file in the temp directory, removed
    /// when the run passes).
    #[arg(long)]
    record: Option<PathBuf>,
    /// ffmpeg binary.
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: String,
    /// ffprobe binary.
    #[arg(long, default_value = "ffprobe")]
    ffprobe: String,
}

/// How a session is damaged before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mutation {
    /// The recorded session, unchanged.
    Replay,
    /// The recorded session cut short at a random byte.
    Truncate,
    /// A few random bits flipped (mostly after the handshake, sometimes in it).
    BitFlip,
    /// A random slice of the session repeated or moved elsewhere.
    Splice,
    /// A valid handshake, then a message with an absurd size: chunk size 0 or 0x7fffffff,
    /// message length 0xFFFFFF, AMF0 string lengths 0xFFFF / 0xFFFFFFFF, thousands of chunk
    /// streams each with a partial message, extended timestamps of 0xFFFFFFFF.
    Absurd,
    /// The session one byte per second, in the handshake or after it.
    SlowLoris,
    /// Random bytes, after a valid handshake or instead of one.
    Garbage,
}

const MUTATIONS: [(Mutation, u32); 7] = [
    (Mutation::Replay, 1),
    (Mutation::Truncate, 3),
    (Mutation::BitFlip, 4),
    (Mutation::Splice, 2),
    (Mutation::Absurd, 4),
    (Mutation::SlowLoris, 1),
    (Mutation::Garbage, 2),
];

/// How an attacking connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// The server closed or reset the connection.
    ClosedByServer,
    /// The connection was still open when its time ran out; we closed it.
    Timeout,
    /// The connection could not be opened.
    ConnectFailed,
}

#[derive(Debug, Default, Clone)]
struct KindStats {
    count: u64,
    endings: BTreeMap<Ending, u64>,
    bytes_sent: u64,
    bytes_received: u64,
    /// Total time connections of this kind were open.
    open_time: Duration,
}

/// A tiny xorshift64* generator: deterministic per seed, good enough for mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// True once in `one_in` calls, on average.
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Runs the chaos mode; `Err` when any check fails.
pub fn run(args: ChaosArgs) -> Result<()> {
    let addr = parse_url(&args.url)?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let record = args.record.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("zerocast-chaos-{}.flv", std::process::id()))
    });
    println!(
        "chaos: {} ({addr}) for {}s, {} connections at once, seed {seed}",
        args.url, args.duration, args.connections
    );
    if let Some(pid) = args.server_pid {
        if !alive(pid) {
            bail!("server pid {pid} is not running");
        }
    }

    // The player first, so the baseline memory includes one viewer.
    let mut player = Player::start(&args.ffmpeg, &args.url, &record)?;
    thread::sleep(Duration::from_secs(2));
    let rss_start = args.server_pid.and_then(rss_kib);

    let stop = Arc::new(AtomicBool::new(false));
    let stats: Arc<Mutex<BTreeMap<Mutation, KindStats>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut workers = Vec::new();
    for i in 0..args.connections.max(1) {
        let stop = stop.clone();
        let stats = stats.clone();
        let mut rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        workers.push(thread::spawn(move || {
            while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                let kind = pick(&mut rng);
                let t0 = Instant::now();
                let (ending, sent, received) = attack(addr, kind, &mut rng, deadline);
                let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
                let k = s.entry(kind).or_default();
                k.count += 1;
                *k.endings.entry(ending).or_default() += 1;
                k.bytes_sent += sent as u64;
                k.bytes_received += received as u64;
                k.open_time += t0.elapsed();
                drop(s);
                if ending == Ending::ConnectFailed {
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }));
    }

    // Watch the server while the workers run.
    let mut rss_peak = rss_start.unwrap_or(0);
    let mut died_at = None;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500).min(deadline - Instant::now().min(deadline)));
        if let Some(pid) = args.server_pid {
            if !alive(pid) {
                died_at = Some(
                    args.duration - deadline.saturating_duration_since(Instant::now()).as_secs(),
                );
                stop.store(true, Ordering::Relaxed);
                break;
            }
            rss_peak = rss_peak.max(rss_kib(pid).unwrap_or(0));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        // A worker finishes its current connection first; each is bounded by `deadline`
        // plus its socket timeouts.
        let _ = w.join();
    }
    // Let the server drop what it still holds for closed connections.
    thread::sleep(Duration::from_secs(1));
    let rss_end = args.server_pid.and_then(rss_kib);
    let player_early_exit = player.exited();
    let wall = player.stop();
    let probe = probe(&args.ffprobe, &record);

    // Summary.
    let stats = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let total: u64 = stats.values().map(|k| k.count).sum();
    println!("\nconnections: {total}");
    println!(
        "{:<10} {:>6} {:>9} {:>8} {:>8} {:>11} {:>11} {:>9}",
        "mutation", "conns", "closed", "timeout", "refused", "sent", "received", "avg open"
    );
    for (kind, k) in &stats {
        let e = |x| k.endings.get(&x).copied().unwrap_or(0);
        println!(
            "{:<10} {:>6} {:>9} {:>8} {:>8} {:>11} {:>11} {:>8.2}s",
            format!("{kind:?}"),
            k.count,
            e(Ending::ClosedByServer),
            e(Ending::Timeout),
            e(Ending::ConnectFailed),
            k.bytes_sent,
            k.bytes_received,
            k.open_time.as_secs_f64() / k.count.max(1) as f64
        );
    }
    println!(
        "(closed = closed or reset by the server; timeout = still open when its time ran out)"
    );

    let mut failures = Vec::new();
    match args.server_pid {
        Some(pid) => {
            if let Some(at) = died_at {
                failures.push(format!("server pid {pid} died about {at}s into the run"));
            } else if !alive(pid) {
                failures.push(format!("server pid {pid} died"));
            } else {
                println!("server: pid {pid} alive");
            }
            match (rss_start, rss_end) {
                (Some(a), Some(b)) => {
                    let limit = a + a / 2 + 20 * 1024;
                    println!(
                        "server RSS: start {} MiB, peak {} MiB, end {} MiB (limit {} MiB)",
                        a / 1024,
                        rss_peak / 1024,
                        b / 1024,
                        limit / 1024
                    );
                    if b >= limit {
                        failures.push(format!(
                            "server RSS grew from {a} KiB to {b} KiB (limit {limit} KiB)"
                        ));
                    }
                }
                _ => failures.push("could not read the server's VmRSS".to_owned()),
            }
        }
        None => println!("server: not checked (no --server-pid)"),
    }
    match probe {
        Ok(p) => {
            // The first ~2 s go to connecting and the start of playback.
            let expected = (p.fps * (wall.as_secs_f64() - 2.0)).max(1.0);
            let share = p.frames as f64 / expected;
            println!(
                "player: {} video frames in {:.1}s at {:.2} fps: {:.1}% of {:.0} expected, \
                 largest timestamp gap {} ms{}",
                p.frames,
                wall.as_secs_f64(),
                p.fps,
                share * 100.0,
                expected,
                p.max_gap_ms,
                if player_early_exit {
                    " (ffmpeg exited early)"
                } else {
                    ""
                }
            );
            if share < 0.95 {
                failures.push(format!(
                    "player recorded {} of {expected:.0} expected video frames ({:.1}%)",
                    p.frames,
                    share * 100.0
                ));
            }
            if p.max_gap_ms > 500 {
                failures.push(format!("video timestamp gap of {} ms", p.max_gap_ms));
            }
        }
        Err(e) => failures.push(format!("recording unusable: {e:#}")),
    }
    if failures.is_empty() {
        if args.record.is_none() {
            let _ = std::fs::remove_file(&record);
        }
        println!("chaos: PASS (seed {seed})");
        Ok(())
    } else {
        println!("recording kept at {}", record.display());
        Err(anyhow!(
            "chaos: FAIL (seed {seed}): {}",
            failures.join("; ")
        ))
    }
}

fn pick(rng: &mut Rng) -> Mutation {
    let total: u32 = MUTATIONS.iter().map(|m| m.1).sum();
    let mut r = rng.below(total as usize) as u32;
    for (m, w) in MUTATIONS {
        if r < w {
            return m;
        }
        r -= w;
    }
    Mutation::Replay
}

/// `rtmp://host[:port]/...` to a socket address.
fn parse_url(url: &str) -> Result<SocketAddr> {
    let rest = url
        .strip_prefix("rtmp://")
        .ok_or_else(|| anyhow!("--url must start with rtmp://"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_owned()
    } else {
        format!("{hostport}:1935")
    };
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .ok_or_else(|| anyhow!("{hostport} resolves to nothing"))
}

/// One chunk-stream message, fmt 0 then fmt 3 continuations (RTMP 1.0 section 5.3.1).
/// `len` is the length claimed in the header, which need not match `payload`.
fn message(csid: u32, kind: u8, ts: u32, len: u32, payload: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    let basic = |fmt: u8, out: &mut Vec<u8>| match csid {
        2..=63 => out.push(fmt << 6 | csid as u8),
        64..=319 => out.extend([fmt << 6, (csid - 64) as u8]),
        _ => {
            let c = csid.min(65599) - 64;
            out.extend([fmt << 6 | 1, c as u8, (c >> 8) as u8]);
        }
    };
    basic(0, &mut out);
    let ext = ts >= 0xFF_FFFF;
    out.extend(&(if ext { 0xFF_FFFF } else { ts }).to_be_bytes()[1..]);
    out.extend(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.extend(1u32.to_le_bytes());
    if ext {
        out.extend(ts.to_be_bytes());
    }
    for (i, piece) in payload.chunks(chunk.max(1)).enumerate() {
        if i > 0 {
            basic(3, &mut out);
            if ext {
                out.extend(ts.to_be_bytes());
            }
        }
        out.extend(piece);
    }
    out
}

/// AMF0 `connect` with the given value as the command object's `app` (already encoded).
fn connect_with(app_value: &[u8]) -> Vec<u8> {
    let mut b = vec![0x02, 0x00, 0x07];
    b.extend(b"connect");
    b.push(0x00);
    b.extend(1.0f64.to_be_bytes());
    b.push(0x03);
    b.extend([0x00, 0x03]);
    b.extend(b"app");
    b.extend(app_value);
    b.extend([0x00, 0x00, 0x09]);
    b
}

/// The bytes to send for `kind`, and the pace (`true`: one byte per second).
fn session(kind: Mutation, rng: &mut Rng) -> (Vec<u8>, bool) {
    let base = if rng.chance(3) { PLAY } else { PUBLISH };
    let hs = &base[..HANDSHAKE_LEN.min(base.len())];
    match kind {
        Mutation::Replay => (base.to_vec(), false),
        Mutation::Truncate => (base[..rng.below(base.len())].to_vec(), false),
        Mutation::BitFlip => {
            let mut s = base.to_vec();
            let from = if rng.chance(5) { 0 } else { HANDSHAKE_LEN };
            for _ in 0..1 + rng.below(8) {
                let i = from + rng.below(s.len() - from);
                s[i] ^= 1 << rng.below(8);
            }
            (s, false)
        }
        Mutation::Splice => {
            let mut s = base.to_vec();
            let a = HANDSHAKE_LEN + rng.below(s.len() - HANDSHAKE_LEN);
            let b = (a + 1 + rng.below(512)).min(s.len());
            let piece = s[a..b].to_vec();
            let at = HANDSHAKE_LEN + rng.below(s.len() - HANDSHAKE_LEN);
            if rng.chance(2) {
                s.drain(a..b);
            }
            let at = at.min(s.len());
            for _ in 0..1 + rng.below(4) {
                s.splice(at..at, piece.iter().copied());
            }
            (s, false)
        }
        Mutation::Absurd => {
            let mut s = hs.to_vec();
            match rng.below(8) {
                0 => {
                    // Set Chunk Size 0x7fffffff, then a message that would use it.
                    s.extend(message(2, 1, 0, 4, &0x7fff_ffffu32.to_be_bytes(), 128));
                    s.extend(message(6, 9, 0, 0xFF_FFFF, &rng.bytes(4096), 0x7fff_ffff));
                }
                1 => {
                    // Set Chunk Size 0, then anything.
                    s.extend(message(2, 1, 0, 4, &0u32.to_be_bytes(), 128));
                    s.extend(message(3, 20, 0, 64, &rng.bytes(64), 128));
                }
                2 => {
                    // A 16 MiB video message, 64 KiB of it sent.
                    s.extend(message(6, 9, 0, 0xFF_FFFF, &rng.bytes(65536), 128));
                }
                3 => {
                    // AMF0 string claiming 0xFFFF bytes, with 10 present.
                    let mut v = vec![0x02, 0xFF, 0xFF];
                    v.extend(b"live/short");
                    let body = connect_with(&v);
                    s.extend(message(3, 20, 0, body.len() as u32, &body, 128));
                }
                4 => {
                    // AMF0 long string claiming 0xFFFFFFFF bytes.
                    let mut v = vec![0x0C, 0xFF, 0xFF, 0xFF, 0xFF];
                    v.extend(rng.bytes(100));
                    let body = connect_with(&v);
                    s.extend(message(3, 20, 0, body.len() as u32, &body, 128));
                }
                5 => {
                    // Thousands of chunk streams, each with a partial 8 MiB message.
                    let first = 64 + rng.below(60000) as u32;
                    for csid in first..first + 4000 {
                        s.extend(message(csid, 9, 0, 0x7F_FFFF, &[0u8; 100], 128));
                    }
                }
                6 => {
                    // Extended timestamps of 0xFFFFFFFF on a multi-chunk message.
                    let body = rng.bytes(1000);
                    s.extend(message(6, 9, u32::MAX, 1000, &body, 128));
                    // Window ack size 0, set peer bandwidth absurd.
                    s.extend(message(2, 5, 0, 4, &0u32.to_be_bytes(), 128));
                    s.extend(message(2, 6, 0, 5, &[0xFF, 0xFF, 0xFF, 0xFF, 7], 128));
                }
                _ => {
                    // Deeply nested AMF0 objects in a command.
                    let mut body = vec![0x02, 0x00, 0x07];
                    body.extend(b"connect");
                    body.push(0x00);
                    body.extend(1.0f64.to_be_bytes());
                    for _ in 0..5000 {
                        body.extend([0x03, 0x00, 0x01, b'a']);
                    }
                    s.extend(message(3, 20, 0, body.len() as u32, &body, 128));
                }
            }
            (s, false)
        }
        Mutation::SlowLoris => {
            // Half dribble the handshake itself, half a valid handshake then the commands.
            let s = if rng.chance(2) {
                base.to_vec()
            } else {
                let mut s = base.to_vec();
                s.splice(..HANDSHAKE_LEN, std::iter::empty());
                let mut v = hs.to_vec();
                v.extend(s);
                v
            };
            (s, true)
        }
        Mutation::Garbage => {
            let mut s = if rng.chance(2) {
                hs.to_vec()
            } else {
                Vec::new()
            };
            let n = 1 + rng.below(32 * 1024);
            s.extend(rng.bytes(n));
            (s, false)
        }
    }
}

/// Opens one connection and sends one damaged session. Returns how it ended and the bytes
/// sent and received.
fn attack(
    addr: SocketAddr,
    kind: Mutation,
    rng: &mut Rng,
    deadline: Instant,
) -> (Ending, usize, usize) {
    let (bytes, slow) = session(kind, rng);
    let Ok(mut sock) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
        return (Ending::ConnectFailed, 0, 0);
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(Duration::from_secs(2)));
    // How long this connection may stay open after its last byte is sent: long enough for
    // the server to answer or close, short enough to keep the workers cycling.
    let linger = Duration::from_millis(500 + rng.below(2500) as u64);
    let mut received = 0;
    let mut sent = 0;

    if slow {
        // One byte per second; the handshake-dribbling half should be closed by the
        // server's handshake timeout. Bounded to 20 s and the run's deadline.
        let slow_deadline = (Instant::now() + Duration::from_secs(20)).min(deadline);
        // After a valid handshake, skip straight to the dribble of the command phase half
        // of the time.
        let start = if rng.chance(2) {
            0
        } else {
            HANDSHAKE_LEN.min(bytes.len())
        };
        if start > 0 {
            match send_all(&mut sock, &bytes[..start], &mut received, deadline) {
                Ok(()) => sent = start,
                Err(e) => return (e, sent, received),
            }
        }
        for &b in &bytes[start..] {
            if Instant::now() >= slow_deadline {
                return (Ending::Timeout, sent, received);
            }
            match send_all(&mut sock, &[b], &mut received, slow_deadline) {
                Ok(()) => sent += 1,
                Err(e) => return (e, sent, received),
            }
            if let Some(e) = wait_read(&mut sock, Duration::from_secs(1), &mut received) {
                return (e, sent, received);
            }
        }
    } else {
        for piece in bytes.chunks(16 * 1024) {
            if let Err(e) = send_all(&mut sock, piece, &mut received, deadline) {
                return (e, sent, received);
            }
            sent += piece.len();
        }
    }
    let linger =
        linger.min(deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(100));
    let ending = wait_read(&mut sock, linger, &mut received).unwrap_or(Ending::Timeout);
    (ending, sent, received)
}

/// Writes `data`, draining whatever the server sends in between so neither side stalls on a
/// full buffer. `Err` carries how the connection ended.
fn send_all(
    sock: &mut TcpStream,
    data: &[u8],
    received: &mut usize,
    deadline: Instant,
) -> Result<(), Ending> {
    let mut off = 0;
    while off < data.len() {
        if Instant::now() >= deadline + Duration::from_secs(1) {
            return Err(Ending::Timeout);
        }
        match sock.write(&data[off..]) {
            Ok(0) => return Err(Ending::ClosedByServer),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Ending::Timeout)
            }
            Err(_) => return Err(Ending::ClosedByServer),
        }
        if let Some(e) = drain(sock, received) {
            return Err(e);
        }
    }
    Ok(())
}

/// Reads whatever is ready without blocking; `Some` when the server closed.
fn drain(sock: &mut TcpStream, received: &mut usize) -> Option<Ending> {
    if sock.set_nonblocking(true).is_err() {
        return Some(Ending::ClosedByServer);
    }
    let mut buf = [0u8; 16 * 1024];
    let r = loop {
        match sock.read(&mut buf) {
            Ok(0) => break Some(Ending::ClosedByServer),
            Ok(n) => *received += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break Some(Ending::ClosedByServer),
        }
    };
    let _ = sock.set_nonblocking(false);
    r
}

/// Reads until the server closes (`Some`) or `wait` passes (`None`).
fn wait_read(sock: &mut TcpStream, wait: Duration, received: &mut usize) -> Option<Ending> {
    let until = Instant::now() + wait;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match sock.read(&mut buf) {
            Ok(0) => return Some(Ending::ClosedByServer),
            Ok(n) => *received += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(Ending::ClosedByServer),
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(pid_t) = i32::try_from(pid) else {
        return false;
    };
    // Signal "0" sends nothing; it only checks that the process exists.
    let exists = matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid_t), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    );
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The ffmpeg that plays `--url` and records it.
struct Player {
    child: Child,
    started: Instant,
}

impl Player {
    fn start(ffmpeg: &str, url: &str, out: &PathBuf) -> Result<Player> {
        let child = Command::new(ffmpeg)
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-rw_timeout",
                "10000000",
                "-i",
                url,
            ])
            .args(["-c", "copy", "-f", "flv", "-y"])
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {ffmpeg}"))?;
        Ok(Player {
            child,
            started: Instant::now(),
        })
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks ffmpeg to finish the file ('q' on stdin), kills it after 5 s; returns how long
    /// it ran.
    fn stop(mut self) -> Duration {
        let ran = self.started.elapsed();
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"q");
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return ran;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        ran
    }
}

struct Probe {
    frames: usize,
    fps: f64,
    max_gap_ms: u64,
}

/// Counts the recording's video packets and their largest timestamp gap.
fn probe(ffprobe: &str, file: &PathBuf) -> Result<Probe> {
    let out = Command::new(ffprobe)
        .args(["-v", "error", "-select_streams", "v:0", "-show_packets"])
        .args(["-show_entries", "packet=dts_time", "-of", "csv=p=0"])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {ffprobe}"))?;
    if !out.status.success() {
        bail!(
            "ffprobe failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    if dts.len() < 2 {
        bail!("{} video packets recorded", dts.len());
    }
    let mut deltas: Vec<f64> = dts.windows(2).map(|w| w[1] - w[0]).collect();
    let max_gap = deltas.iter().fold(0.0f64, |m, &d| m.max(d.abs()));
    deltas.retain(|d| *d > 0.0);
    deltas.sort_by(|a, b| a.total_cmp(b));
    let median = deltas.get(deltas.len() / 2).copied().unwrap_or(1.0 / 30.0);
    Ok(Probe {
        frames: dts.len(),
        fps: 1.0 / median,
        max_gap_ms: (max_gap * 1000.0).round() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded_and_start_with_c0() {
        let mut rng = Rng::new(7);
        for (kind, _) in MUTATIONS {
            for _ in 0..50 {
                let (s, _) = session(kind, &mut rng);
                assert!(s.len() < 2 << 20, "{kind:?} made {} bytes", s.len());
            }
        }
        assert_eq!(PUBLISH[0], 3);
        assert_eq!(PLAY[0], 3);
    }

    #[test]
    fn message_chunks_at_the_chunk_size() {
        let m = message(6, 9, 5, 300, &[0xAA; 300], 128);
        // 12-byte header, 128, fmt-3 byte, 128, fmt-3 byte, 44.
        assert_eq!(m.len(), 12 + 300 + 2);
        assert_eq!(m[0], 6);
        assert_eq!(m[12 + 128], 0xC6);
        let two = message(300, 9, 0, 1, &[0], 128);
        assert_eq!(&two[..2], &[0x00, 236]);
        let ext = message(400, 9, u32::MAX, 10, &[0; 10], 128);
        assert_eq!(&ext[..3], &[0x01, 0x50, 0x01]);
        assert_eq!(&ext[3..6], &[0xFF; 3]);
        assert_eq!(&ext[14..18], &[0xFF; 4]);
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("rtmp://127.0.0.1:19350/live/x").unwrap(),
            "127.0.0.1:19350".parse().unwrap()
        );
        assert_eq!(parse_url("rtmp://127.0.0.1/live/x").unwrap().port(), 1935);
        assert!(parse_url("http://x").is_err());
    }
}
