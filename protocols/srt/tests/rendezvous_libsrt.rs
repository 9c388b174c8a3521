//! Rendezvous against libsrt 1.5.1: `srt-live-transmit` (Debian srt-tools) in
//! `mode=rendezvous` on one side, our [`Rendezvous`] driven by a `std::net::UdpSocket` on the
//! other, on loopback.
//!
//! Each test first reads srt-live-transmit's opening WAVEAHAND off the socket, learns its
//! cookie, and picks an entropy seed whose cookie gives us the role the test wants, so both
//! roles are proven deterministically:
//!
//! * srt-live-transmit relays UDP datagrams (MPEG-TS-like, 1316 bytes) into the rendezvous
//!   connection; we must receive them intact and in order.
//! * we send datagrams; srt-live-transmit writes what it receives to stdout (`file://con`),
//!   which must be exactly what we sent.
//! * the same with a passphrase (AES-128), where the initiator's keys encrypt both directions:
//!   libsrt's when we respond, ours when we initiate.
//! * a passphrase mismatch must fail on our side, in either role, without waiting for the
//!   connect timeout.
//!
//! Without srt-live-transmit the tests fail (never skip): install Debian's srt-tools.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::ByteRope;
use zerocast_srt::crypto::{KeyLen, Passphrase};
use zerocast_srt::packet::{Control, ControlPacket, HandshakeKind, KeyFlag, Packet};
use zerocast_srt::rendezvous::cookie_contest;
use zerocast_srt::{
    handshake::CallError, CloseReason, Connection, Entropy, Event, Input, Output, RejectReason,
    Rendezvous, RendezvousOutput, Role, SessionConfig,
};

const SLT: &str = "srt-live-transmit";
const PASSPHRASE: &str = "zerocast-rendezvous-secret";
const LATENCY: Duration = Duration::from_millis(120);
/// The payloads of a run, one every `PACE`.
const COUNT: usize = 300;
const PACE: Duration = Duration::from_millis(2);

/// Panics (never skips) without srt-live-transmit on PATH.
fn require_slt() {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.join(SLT))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    assert!(
        found,
        "{SLT} not found: install Debian's srt-tools (apt-get install srt-tools)"
    );
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// 32 bytes from the process's random hasher keys and `k`.
fn seed(k: u64) -> [u8; 32] {
    let state = std::collections::hash_map::RandomState::new();
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_u64(k);
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

/// Datagram `i`: 7 MPEG-TS packets (sync byte, PID 0x100, continuity counter), the index in
/// the first packet's bytes 4..8, a pattern after it.
fn ts_datagram(i: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1316);
    for k in 0..7 {
        let n = i * 7 + k;
        out.extend_from_slice(&[0x47, 0x01, 0x00, 0x10 | (n & 0x0F) as u8]);
        out.extend((0..184).map(|j| ((n + j) & 0xFF) as u8));
    }
    out[4..8].copy_from_slice(&(i as u32).to_be_bytes());
    out
}

fn index_of(d: &[u8]) -> usize {
    u32::from_be_bytes(d[4..8].try_into().expect("4 bytes")) as usize
}

/// srt-live-transmit as a child process; killed (by PID) when dropped.
struct Slt {
    child: Child,
    dir: PathBuf,
}

impl Slt {
    fn spawn(name: &str, input: &str, output: &str) -> Slt {
        require_slt();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "zerocast-rendezvous-{}-{name}-{stamp}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let stdout = File::create(dir.join("stdout")).expect("stdout file");
        let stderr = File::create(dir.join("stderr")).expect("stderr file");
        // `-t:30`: it exits by itself even if this test dies without dropping the guard.
        let child = Command::new(SLT)
            .args(["-a:no", "-t:30", input, output])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn srt-live-transmit");
        Slt { child, dir }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.join("stderr")).unwrap_or_default())
            .into_owned()
    }

    fn stdout(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("stdout")).unwrap_or_default()
    }

    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGINT (it closes its media cleanly on it) to our child's PID.
    fn interrupt(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Slt {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("srt-live-transmit output kept in {}", self.dir.display());
        }
    }
}

/// Our UDP socket, talking to one peer.
struct Udp {
    sock: UdpSocket,
    peer: SocketAddr,
    buf: Vec<u8>,
}

impl Udp {
    fn bind() -> Udp {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind our socket");
        Udp {
            sock,
            peer: "127.0.0.1:9".parse().expect("addr"),
            buf: vec![0; 2048],
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().expect("local addr").port()
    }

    fn send(&self, d: &[u8]) {
        // Loopback; a lost datagram is the protocol's business anyway.
        let _ = self.sock.send_to(d, self.peer);
    }

    /// A datagram from the peer, waiting at most until `until`.
    fn recv(&mut self, until: Instant) -> Option<Bytes> {
        let wait = until
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(200));
        self.sock.set_read_timeout(Some(wait)).expect("timeout");
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, from)) if from == self.peer => Some(Bytes::copy_from_slice(&self.buf[..n])),
            _ => None,
        }
    }
}

fn config(pass: Option<&str>) -> SessionConfig {
    SessionConfig {
        latency: LATENCY,
        passphrase: pass.map(|p| Passphrase::new(p).expect("passphrase")),
        key_len: KeyLen::Aes128,
        ..SessionConfig::default()
    }
}

/// Waits for srt-live-transmit's first WAVEAHAND, then runs a [`Rendezvous`] whose cookie
/// gives us `role`, starting from that WAVEAHAND.
fn meet(
    udp: &mut Udp,
    slt: &Slt,
    cfg: SessionConfig,
    role: Role,
) -> Result<Box<Connection>, CallError> {
    let end = Instant::now() + Duration::from_secs(10);
    let (first, theirs) = loop {
        assert!(
            Instant::now() < end,
            "no WAVEAHAND from srt-live-transmit; it said:\n{}",
            slt.stderr()
        );
        let Some(d) = udp.recv(end) else { continue };
        if let Ok(Packet::Control(ControlPacket {
            body: Control::Handshake(hs),
            ..
        })) = Packet::parse(d.clone())
        {
            assert_eq!(
                hs.kind,
                HandshakeKind::Wavehand,
                "libsrt opens with WAVEAHAND"
            );
            assert_eq!(hs.version, 5, "libsrt waves with version 5");
            break (d, hs.syn_cookie);
        }
    };
    let now = Instant::now();
    let mut rv = (0..)
        .map(|k| {
            Rendezvous::new(
                cfg.clone(),
                now,
                udp.peer,
                Duration::from_secs(10),
                Entropy::new(seed(k)),
            )
        })
        .find(|rv| cookie_contest(rv.cookie(), theirs) == Some(role))
        .expect("some seed wins or loses");
    rv.handle_input(Input::Receive(Instant::now(), first));
    loop {
        let wake = loop {
            match rv.poll_output() {
                RendezvousOutput::Transmit(d) => udp.send(&d),
                RendezvousOutput::Timeout(at) => break at,
                RendezvousOutput::Connected(conn) => {
                    assert_eq!(rv.role(), Some(role));
                    return Ok(conn);
                }
                RendezvousOutput::Failed(e) => return Err(e),
            }
        };
        match udp.recv(wake) {
            Some(d) => rv.handle_input(Input::Receive(Instant::now(), d)),
            None => rv.handle_input(Input::Timeout(Instant::now())),
        }
    }
}

/// Data packets seen on the wire, one direction.
#[derive(Debug, Default)]
struct Wire {
    data: usize,
    /// With the KK bits set.
    encrypted: usize,
    /// Whose payload is 7 packets of MPEG-TS in clear (a sync byte every 188 bytes).
    clear_ts: usize,
}

impl Wire {
    fn count(&mut self, datagram: &Bytes) {
        if let Ok(Packet::Data(d)) = Packet::parse(datagram.clone()) {
            self.data += 1;
            if d.key != KeyFlag::None {
                self.encrypted += 1;
            }
            if d.payload.len() == 1316 && (0..7).all(|k| d.payload[k * 188] == 0x47) {
                self.clear_ts += 1;
            }
        }
    }

    /// Every data packet encrypted (and none readable), or every one in clear.
    fn assert_protected(&self, encrypted: bool, what: &str) {
        assert!(
            self.data >= COUNT,
            "{what}: only {} data packets",
            self.data
        );
        if encrypted {
            assert_eq!(
                (self.encrypted, self.clear_ts),
                (self.data, 0),
                "{what}: {self:?}"
            );
        } else {
            assert_eq!(
                (self.encrypted, self.clear_ts),
                (0, self.data),
                "{what}: {self:?}"
            );
        }
    }
}

/// An established session over our socket.
struct Session {
    udp: Udp,
    conn: Box<Connection>,
    wake: Instant,
    got: Vec<Bytes>,
    closed: Option<CloseReason>,
    wire_in: Wire,
    wire_out: Wire,
}

impl Session {
    fn new(udp: Udp, conn: Box<Connection>) -> Session {
        let mut s = Session {
            udp,
            conn,
            wake: Instant::now(),
            got: Vec::new(),
            closed: None,
            wire_in: Wire::default(),
            wire_out: Wire::default(),
        };
        s.drain();
        s
    }

    fn drain(&mut self) {
        loop {
            match self.conn.poll_output() {
                Output::Transmit(rope) => {
                    let d = rope.to_contiguous();
                    self.wire_out.count(&d);
                    self.udp.send(&d);
                }
                Output::Event(Event::Data(p)) => self.got.push(p),
                Output::Event(Event::Closed(r)) => self.closed = Some(r),
                Output::Timeout(at) => {
                    self.wake = at;
                    return;
                }
            }
        }
    }

    /// Runs the session until `until`.
    fn pump(&mut self, until: Instant) {
        loop {
            self.drain();
            if Instant::now() >= until || self.closed.is_some() {
                return;
            }
            if let Some(d) = self.udp.recv(self.wake.min(until)) {
                self.wire_in.count(&d);
                self.conn.handle_input(Input::Receive(Instant::now(), d));
            }
            if Instant::now() >= self.wake {
                self.conn.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }

    fn close(&mut self) {
        self.conn.close(Instant::now());
        self.drain();
    }
}

fn rendezvous_uri(our_port: u16, their_port: u16, pass: Option<&str>) -> String {
    let mut uri = format!(
        "srt://127.0.0.1:{our_port}?mode=rendezvous&adapter=127.0.0.1&port={their_port}&latency={}",
        LATENCY.as_millis()
    );
    if let Some(p) = pass {
        uri.push_str(&format!("&passphrase={p}&pbkeylen=16"));
    }
    uri
}

/// Starts srt-live-transmit with its SRT end in rendezvous with our socket, and meets it.
fn connect(
    name: &str,
    pass: Option<&str>,
    role: Role,
    srt_is_input: bool,
    other: &str,
) -> (Slt, Session) {
    let mut udp = Udp::bind();
    let their_port = free_port();
    udp.peer = ([127, 0, 0, 1], their_port).into();
    let srt = rendezvous_uri(udp.port(), their_port, pass);
    let slt = if srt_is_input {
        Slt::spawn(name, &srt, other)
    } else {
        Slt::spawn(name, other, &srt)
    };
    let conn = match meet(&mut udp, &slt, config(pass), role) {
        Ok(c) => c,
        Err(e) => panic!(
            "rendezvous as {role:?} failed: {e}; srt-live-transmit said:\n{}",
            slt.stderr()
        ),
    };
    assert_eq!(conn.recv_latency(), LATENCY);
    assert_eq!(conn.send_latency(), LATENCY);
    assert_eq!(conn.is_encrypted(), pass.is_some());
    (slt, Session::new(udp, conn))
}

/// srt-live-transmit relays UDP datagrams into the rendezvous; we receive them.
fn libsrt_sends_to_us(name: &str, pass: Option<&str>, role: Role) {
    let input = free_port();
    let (mut slt, mut s) = connect(name, pass, role, false, &format!("udp://127.0.0.1:{input}"));
    let feeder = UdpSocket::bind("127.0.0.1:0").expect("feeder");
    let end = Instant::now() + Duration::from_secs(15);
    let mut next = Instant::now();
    let mut i = 0;
    while s.got.len() < COUNT && Instant::now() < end {
        if Instant::now() >= next {
            let _ = feeder.send_to(&ts_datagram(i), ("127.0.0.1", input));
            i += 1;
            next += PACE;
        }
        s.pump(next);
    }
    assert!(
        s.got.len() >= COUNT,
        "received {} of {i} datagrams fed; srt-live-transmit said:\n{}",
        s.got.len(),
        slt.stderr()
    );
    // It may drop what it read before its SRT end connected, nothing after.
    let first = index_of(&s.got[0]);
    for (k, d) in s.got.iter().enumerate() {
        assert_eq!(d.len(), 1316, "payload {k}");
        assert_eq!(
            &d[..],
            &ts_datagram(first + k)[..],
            "payload {k} (first index {first})"
        );
    }
    let stats = s.conn.stats();
    eprintln!(
        "{name}: received {} datagrams (from index {first}) of {i} fed; {stats:?}\nsrt-live-transmit said:\n{}",
        s.got.len(),
        slt.stderr()
    );
    assert_eq!(stats.undecryptable, 0, "{stats:?}");
    s.wire_in
        .assert_protected(pass.is_some(), "srt-live-transmit → us");
    assert!(
        slt.stderr().contains("SRT target connected"),
        "{}",
        slt.stderr()
    );
    // Our shutdown breaks its target, and without auto-reconnect it exits.
    s.close();
    assert!(
        slt.wait(Duration::from_secs(5)).is_some(),
        "srt-live-transmit ignored our shutdown:\n{}",
        slt.stderr()
    );
}

/// We send datagrams into the rendezvous; srt-live-transmit writes them to stdout.
fn we_send_to_libsrt(name: &str, pass: Option<&str>, role: Role) {
    let (mut slt, mut s) = connect(name, pass, role, true, "file://con");
    let mut next = Instant::now();
    for i in 0..COUNT {
        s.pump(next);
        let payload = ByteRope::from(Bytes::from(ts_datagram(i)));
        assert!(s.conn.send(Instant::now(), payload), "send {i}");
        next += PACE;
    }
    // Until everything is acknowledged, then a while for its TSBPD delivery.
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && s.conn.stats().send_buffer_packets > 0 {
        s.pump(Instant::now() + Duration::from_millis(20));
    }
    s.pump(Instant::now() + 4 * LATENCY + Duration::from_millis(500));
    assert_eq!(
        s.conn.stats().send_buffer_packets,
        0,
        "not all acknowledged"
    );
    s.wire_out
        .assert_protected(pass.is_some(), "us → srt-live-transmit");
    assert!(
        slt.stderr().contains("SRT source connected"),
        "{}",
        slt.stderr()
    );
    s.close();
    if slt.wait(Duration::from_secs(5)).is_none() {
        slt.interrupt();
        assert!(
            slt.wait(Duration::from_secs(5)).is_some(),
            "srt-live-transmit did not exit:\n{}",
            slt.stderr()
        );
    }
    let want: Vec<u8> = (0..COUNT).flat_map(ts_datagram).collect();
    let got = slt.stdout();
    eprintln!(
        "{name}: srt-live-transmit wrote {} bytes; our stats {:?}\nit said:\n{}",
        got.len(),
        s.conn.stats(),
        slt.stderr()
    );
    if got != want {
        let whole = got.len() / 1316;
        let first_bad = (0..whole).find(|&k| got[k * 1316..(k + 1) * 1316] != ts_datagram(k)[..]);
        panic!(
            "srt-live-transmit wrote {} bytes ({whole} datagrams), want {} ({COUNT}); first differing datagram: {first_bad:?}\n{}",
            got.len(),
            want.len(),
            slt.stderr()
        );
    }
}

#[test]
fn libsrt_sends_to_us_as_initiator() {
    libsrt_sends_to_us("to-us-initiator", None, Role::Initiator);
}

#[test]
fn we_send_to_libsrt_as_responder() {
    we_send_to_libsrt("from-us-responder", None, Role::Responder);
}

#[test]
fn encrypted_libsrt_sends_to_us_with_its_keys_as_responder() {
    libsrt_sends_to_us("to-us-encrypted", Some(PASSPHRASE), Role::Responder);
}

#[test]
fn encrypted_we_send_to_libsrt_with_our_keys_as_initiator() {
    we_send_to_libsrt("from-us-encrypted", Some(PASSPHRASE), Role::Initiator);
}

/// Another passphrase than srt-live-transmit's: our side fails well before its connect
/// timeout, in either role.
fn mismatch(role: Role) -> (CallError, String) {
    let mut udp = Udp::bind();
    let their_port = free_port();
    udp.peer = ([127, 0, 0, 1], their_port).into();
    let srt = rendezvous_uri(udp.port(), their_port, Some(PASSPHRASE));
    let mut slt = Slt::spawn(&format!("mismatch-{role:?}"), &srt, "file://con");
    let started = Instant::now();
    let err = match meet(
        &mut udp,
        &slt,
        config(Some("not-the-same-passphrase")),
        role,
    ) {
        Ok(_) => panic!("connected with another passphrase:\n{}", slt.stderr()),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: {err}",
        started.elapsed()
    );
    // It gives up too (it may linger after a rejection: then it is killed on drop).
    let _ = slt.wait(Duration::from_secs(3));
    eprintln!(
        "mismatch as {role:?}: {err:?}\nsrt-live-transmit said:\n{}",
        slt.stderr()
    );
    (err, slt.stderr())
}

#[test]
fn mismatched_passphrase_fails_as_responder() {
    // libsrt's KMREQ does not unwrap with our passphrase: we refuse and tell it so.
    let (err, said) = mismatch(Role::Responder);
    assert_eq!(err, CallError::Refused(RejectReason::BadSecret), "{said}");
    assert!(
        said.contains("REJECT") || said.contains("reject"),
        "srt-live-transmit said:\n{said}"
    );
}

#[test]
fn mismatched_passphrase_fails_as_initiator() {
    // libsrt cannot unwrap ours: 1.5.1 gives up with a shutdown (later versions send a
    // rejection with the reason).
    let (err, said) = mismatch(Role::Initiator);
    assert!(
        matches!(err, CallError::Rejected(_)),
        "{err:?}; srt-live-transmit said:\n{said}"
    );
}
