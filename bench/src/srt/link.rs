//! One SRT caller session on a plain blocking `std::net::UdpSocket`, driven by the calling
//! thread: the publisher and the single viewer of `srt latency` use it.
//!
//! The socket is connected to the server, so `recv` only sees the server's datagrams (and an
//! ICMP "port unreachable" surfaces as `ConnectionRefused`). Waits are `ppoll` with a
//! nanosecond timeout (a high-resolution timer), so timers such as the TSBPD delivery time
//! fire within the scheduler's wake-up latency. (Not `SO_RCVTIMEO`: the kernel rounds socket
//! timeouts up to whole jiffies, 4 ms at HZ=250, which showed up as a 4 ms comb in the
//! latency distribution.)

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use zerocast_codecs::ByteRope;
use zerocast_srt::{
    CallerOutput, CloseReason, Connection, Entropy, Event, Input, Output, SessionConfig, Stats,
};

use crate::rtmp::wall_ns;

/// Largest datagram read (SRT MTU 1500).
const RECV_SIZE: usize = 2048;

/// A connected SRT session and its socket.
pub struct Link {
    sock: UdpSocket,
    conn: Box<Connection>,
    deadline: Instant,
    buf: Vec<u8>,
    out: Vec<u8>,
    /// How late this thread woke after the instants it waited for (a stalled harness shows
    /// here), µs.
    pub wake_late: Histogram<u64>,
}

/// True for the errors a `recv` with nothing to read reports.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Waits until `sock` has something to read (a datagram or an error) or `until` passes.
fn wait_readable(sock: &UdpSocket, until: Instant) -> Result<()> {
    let now = Instant::now();
    if until <= now {
        return Ok(());
    }
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    match ppoll(&mut fds, Some(TimeSpec::from_duration(until - now)), None) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e).context("ppoll"),
    }
}

/// A socket on the loopback (or unspecified) address of `server`'s family, connected to it.
pub fn connected_socket(server: SocketAddr) -> Result<UdpSocket> {
    let local: SocketAddr = if server.ip().is_loopback() {
        if server.is_ipv4() {
            "127.0.0.1:0".parse()?
        } else {
            "[::1]:0".parse()?
        }
    } else if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(local).context("binding a UDP socket")?;
    sock.connect(server)
        .with_context(|| format!("connecting a UDP socket to {server}"))?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Calls `server` asking for `stream_id`; returns the session once the handshake completed.
pub fn call(
    server: SocketAddr,
    stream_id: &str,
    cfg: SessionConfig,
    seed: [u8; 32],
    timeout: Duration,
) -> Result<Link> {
    let sock = connected_socket(server)?;
    let mut buf = vec![0u8; RECV_SIZE];
    let mut caller = zerocast_srt::Caller::new(
        cfg,
        Instant::now(),
        server,
        Some(stream_id.to_owned()),
        timeout,
        Entropy::new(seed),
    );
    loop {
        match caller.poll_output() {
            CallerOutput::Transmit(b) => {
                // Refused: the server is not bound yet; the caller repeats its handshake.
                if let Err(e) = sock.send(&b) {
                    if e.kind() != ErrorKind::ConnectionRefused {
                        return Err(e).context("sending a handshake");
                    }
                }
            }
            CallerOutput::Timeout(at) => {
                let now = Instant::now();
                if at <= now {
                    caller.handle_input(Input::Timeout(now));
                    continue;
                }
                wait_readable(&sock, at)?;
                match sock.recv(&mut buf) {
                    Ok(n) => caller.handle_input(Input::Receive(
                        Instant::now(),
                        Bytes::copy_from_slice(&buf[..n]),
                    )),
                    Err(e) if timed_out(&e) || e.kind() == ErrorKind::ConnectionRefused => {
                        caller.handle_input(Input::Timeout(Instant::now()))
                    }
                    Err(e) => return Err(e).context("receiving a handshake"),
                }
            }
            CallerOutput::Connected(conn) => {
                return Ok(Link {
                    sock,
                    conn,
                    deadline: Instant::now(),
                    buf,
                    out: Vec::with_capacity(RECV_SIZE),
                    wake_late: super::viewers::new_histogram(),
                })
            }
            CallerOutput::Failed(e) => bail!("SRT call to {server} ({stream_id}): {e}"),
        }
    }
}

impl Link {
    /// The session (latencies, statistics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Statistics so far.
    pub fn stats(&self) -> Stats {
        self.conn.stats()
    }

    /// Sends what the session wants sent, hands delivered payloads to `on_data` with the
    /// wall-clock time (ns) they were handed over, and notes the next timer.
    fn drain(&mut self, on_data: &mut dyn FnMut(Bytes, u64)) -> Result<()> {
        loop {
            match self.conn.poll_output() {
                Output::Transmit(rope) => self.transmit(&rope)?,
                Output::Event(Event::Data(payload)) => on_data(payload, wall_ns()),
                Output::Event(Event::Closed(r)) => bail!("SRT session closed: {}", reason(&r)),
                Output::Timeout(at) => {
                    self.deadline = at;
                    return Ok(());
                }
            }
        }
    }

    fn transmit(&mut self, rope: &ByteRope) -> Result<()> {
        let r = match rope.parts() {
            [one] => self.sock.send(one),
            parts => {
                self.out.clear();
                for p in parts {
                    self.out.extend_from_slice(p);
                }
                self.sock.send(&self.out)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                Err(anyhow!("the server is gone (ICMP port unreachable)"))
            }
            // A full socket buffer loses the datagram, as the network would: SRT repairs it.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e).context("sending a datagram"),
        }
    }

    /// Drives the session until `until`: datagrams, timers, and `on_data` for each payload
    /// delivered (at its TSBPD time).
    pub fn run_until(&mut self, until: Instant, on_data: &mut dyn FnMut(Bytes, u64)) -> Result<()> {
        loop {
            self.drain(on_data)?;
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            if self.deadline <= now {
                self.conn.handle_input(Input::Timeout(now));
                continue;
            }
            let wanted = self.deadline.min(until);
            wait_readable(&self.sock, wanted)?;
            let late = Instant::now().saturating_duration_since(wanted);
            let _ = self.wake_late.record((late.as_micros() as u64).max(1));
            match self.sock.recv(&mut self.buf) {
                Ok(n) => {
                    let d = Bytes::copy_from_slice(&self.buf[..n]);
                    self.conn.handle_input(Input::Receive(Instant::now(), d));
                }
                Err(e) if timed_out(&e) => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        self.conn.handle_input(Input::Timeout(now));
                    }
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    bail!("the server is gone (ICMP port unreachable)")
                }
                Err(e) => return Err(e).context("receiving"),
            }
        }
    }

    /// Queues payloads (each at most 1316 bytes) stamped with `now`, then sends what pacing
    /// allows.
    pub fn send(&mut self, now: Instant, payloads: impl IntoIterator<Item = Bytes>) -> Result<()> {
        for p in payloads {
            if !self.conn.send(now, ByteRope::from(p)) {
                bail!("the SRT session refused a payload (closed, empty or over 1316 bytes)");
            }
        }
        self.drain(&mut |_, _| {})
    }

    /// Closes the session (a shutdown to the server).
    pub fn close(&mut self) {
        self.conn.close(Instant::now());
        let _ = self.drain(&mut |_, _| {});
    }
}

/// Words for a close reason.
pub fn reason(r: &CloseReason) -> String {
    match r {
        CloseReason::PeerShutdown => "the server shut the session down".into(),
        CloseReason::PeerIdle => "the server went silent (peer idle timeout)".into(),
        CloseReason::Local => "closed here".into(),
        CloseReason::PeerError(c) => format!("the server reported error {c}"),
    }
}

/// A 32-byte seed for a session's [`Entropy`]: the process's random base (read once from
/// `/dev/urandom`, else the clock) mixed with `index`, so every session differs.
pub fn seed(index: u64) -> [u8; 32] {
    use std::sync::OnceLock;
    static BASE: OnceLock<[u8; 32]> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let mut b = [0u8; 32];
        let ok = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .is_ok();
        if !ok {
            b[..8].copy_from_slice(&wall_ns().to_le_bytes());
            b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        }
        b
    });
    let mut s = *base;
    for (i, x) in index.to_le_bytes().iter().enumerate() {
        s[24 + i] ^= x;
    }
    s
}
