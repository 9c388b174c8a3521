//! An established live-mode session, both directions (SRT spec 4 "SRT Data Transmission and
//! Control").
//!
//! One [`Connection`] is the state of one peer after the handshake. The receiving half holds
//! packets until their TSBPD delivery time, reports losses (immediately, then periodically),
//! acknowledges every 10 ms and answers ACKACKs for the RTT. The sending half keeps what is
//! unacknowledged, resends what the peer reports lost, drops what is too old to matter and
//! paces what it sends. Which half is used depends on the stream: a publisher only sends,
//! a player only receives.
//!
//! Timers are a table (`Timer`): `poll_output` ends with the earliest, a timeout fires
//! every timer that is due, and a spurious timeout does nothing.

mod recv;
mod send;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::ByteRope;

use crate::config::SessionConfig;
use crate::crypto::{CryptoContext, KeyParity};
use crate::entropy::Entropy;
use crate::packet::{
    Ack, AckInfo, Control, ControlPacket, DataPacket, KeyFlag, LossRange, Packet, PacketPosition,
    MAX_PAYLOAD,
};
use crate::seq::SeqNo;
use crate::stats::{RateMeter, Stats};

use recv::{Arrival, Receiver};
use send::Sender;

/// Input to a session.
#[derive(Debug)]
pub enum Input {
    /// A datagram from the peer, received at the instant given.
    Receive(Instant, Bytes),
    /// A timer may be due.
    Timeout(Instant),
}

/// What a session wants done.
#[derive(Debug)]
pub enum Output {
    /// Send this datagram to the peer (the slices, back to back).
    Transmit(ByteRope),
    /// Something happened.
    Event(Event),
    /// Nothing more until this instant (or until the next input).
    Timeout(Instant),
}

/// Something the application learns from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A payload whose delivery time has come, in sequence order (gaps given up silently,
    /// counted in [`Stats::dropped_too_late`]).
    Data(Bytes),
    /// The session is over; nothing more will be sent or delivered.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent a shutdown.
    PeerShutdown,
    /// Nothing came from the peer for `peer_idle_timeout`.
    PeerIdle,
    /// [`Connection::close`] was called.
    Local,
    /// The peer reported an error (PEERERROR), with its code.
    PeerError(u32),
}

/// The session timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Periodic full ACK (every 10 ms, the SYN interval).
    Ack,
    /// Periodic NAK of losses not yet repaired.
    Nak,
    /// Send a keepalive after a second of silence.
    KeepAlive,
    /// The peer has been silent for too long.
    PeerIdle,
    /// The next packet's TSBPD delivery time.
    Deliver,
    /// Pacing releases the next packet.
    Pace,
    /// The oldest packet in the send buffer expires.
    SendExpiry,
}

impl Timer {
    const COUNT: usize = 7;
}

#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; Timer::COUNT]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn get(&self, t: Timer) -> Option<Instant> {
        self.0[t as usize]
    }
    fn is_due(&self, t: Timer, now: Instant) -> bool {
        self.get(t).is_some_and(|at| at <= now)
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
}

/// The SYN interval: ACK period and timer granularity (SRT spec 4.8.1).
const SYN: Duration = Duration::from_millis(10);
const KEEPALIVE: Duration = Duration::from_secs(1);
const MIN_NAK_INTERVAL: Duration = Duration::from_millis(20);
/// ACK numbers awaiting an ACKACK, kept for the RTT.
const ACK_HISTORY: usize = 64;
/// Loss entries in one NAK (two words per range fit well within one packet).
const MAX_NAK_RANGES: usize = 160;
/// The sender never drops a packet younger than this (libsrt's minimum drop threshold).
const MIN_SEND_DROP: Duration = Duration::from_secs(1);

/// What the handshake settled, from which a [`Connection`] starts.
#[derive(Debug)]
pub(crate) struct Negotiated {
    pub(crate) local_socket: u32,
    pub(crate) peer_socket: u32,
    /// The first sequence number we send.
    pub(crate) initial_seq: SeqNo,
    /// The first sequence number the peer sends: the caller's in both directions after a
    /// caller-listener handshake, each side its own in rendezvous.
    pub(crate) peer_initial_seq: SeqNo,
    pub(crate) peer_flow_window: u32,
    /// Our receiver's TSBPD latency.
    pub(crate) recv_latency: Duration,
    /// The peer receiver's TSBPD latency.
    pub(crate) send_latency: Duration,
    /// Local time at which the peer's clock read zero.
    pub(crate) peer_start: Instant,
    /// Our clock's zero.
    pub(crate) start: Instant,
    pub(crate) crypto: Option<CryptoContext>,
    pub(crate) entropy: Entropy,
    /// Our conclusion response (listener role): sent again if the caller repeats its
    /// conclusion because ours was lost.
    pub(crate) handshake_reply: Option<Bytes>,
}

/// RTT estimate (SRT spec 4.10), microseconds.
#[derive(Debug, Clone, Copy)]
struct Rtt {
    rtt: u32,
    var: u32,
    /// Where `rtt` and `var` come from.
    source: RttSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RttSource {
    /// The spec's initial 100 ms ± 50 ms.
    Initial,
    /// Our samples: ACK to ACKACK when we receive, ACK timing when we only send.
    Measured,
    /// The values of the peer's ACKs (a receiver measures the RTT, a sender adopts it).
    Peer,
}

impl Rtt {
    /// The spec's initial values, which a peer also sends until it has measured.
    const INITIAL: (u32, u32) = (100_000, 50_000);

    fn initial() -> Rtt {
        Rtt {
            rtt: Self::INITIAL.0,
            var: Self::INITIAL.1,
            source: RttSource::Initial,
        }
    }

    /// One measurement; the first replaces the initial values, as libsrt does.
    fn sample(&mut self, us: u32) {
        if self.source == RttSource::Initial {
            (self.rtt, self.var) = (us, us / 2);
        } else {
            self.var = (self.var * 3 + self.rtt.abs_diff(us)) / 4;
            self.rtt = (self.rtt * 7 + us) / 8;
        }
        self.source = RttSource::Measured;
    }

    /// The RTT of a peer's ACK: adopted once the peer has measured it (libsrt sends the
    /// initial values until then). Before that, `own` (the ACK timing of a packet sent once)
    /// is the better estimate.
    fn on_ack(&mut self, peer: (u32, u32), own: Option<Duration>) {
        if peer.0 > 0 && peer != Self::INITIAL {
            (self.rtt, self.var) = peer;
            self.source = RttSource::Peer;
        } else if let (Some(d), false) = (own, self.source == RttSource::Peer) {
            self.sample(d.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// How long a retransmission that arrived takes to be acknowledged: an RTT, the ACK
    /// period on each side, and jitter (4·RTTVar, but at most half an RTT: the variance is
    /// large until a few samples came, and a retransmission resent too early only costs a
    /// duplicate).
    fn rexmit_timeout(&self) -> Duration {
        let jitter = (4 * u64::from(self.var)).min(u64::from(self.rtt) / 2);
        Duration::from_micros(u64::from(self.rtt) + jitter) + 2 * SYN
    }

    /// How often a loss is reported again: half of RTT + 4·RTTVar, at least 20 ms, as
    /// libsrt's live congestion control does. Reports cross retransmissions on the way; the
    /// sender's [`Rtt::rexmit_guard`] filters the repeats.
    fn nak_interval(&self) -> Duration {
        Duration::from_micros((u64::from(self.rtt) + 4 * u64::from(self.var)) / 2)
            .max(MIN_NAK_INTERVAL)
    }

    /// A packet retransmitted less than SRTT − 4·RTTVar ago is not sent again for a new
    /// report: the report left the receiver before the retransmission could reach it. This
    /// is libsrt's rule (`SRTO_RETRANSMITALGO` 1); a whole RTT would ignore every other
    /// periodic report and cost the receiver one retry out of two within its latency.
    fn rexmit_guard(&self) -> Duration {
        Duration::from_micros(u64::from(self.rtt.saturating_sub(4 * self.var)))
    }
}

/// An established SRT session.
#[derive(Debug)]
pub struct Connection {
    cfg: SessionConfig,
    n: Negotiated,
    rtt: Rtt,
    recv: Receiver,
    send: Sender,
    timers: TimerTable,
    transmits: VecDeque<ByteRope>,
    events: VecDeque<Event>,
    stats: Stats,
    recv_meter: RateMeter,
    send_meter: RateMeter,
    last_sent: Instant,
    last_received: Instant,
    now: Instant,
    next_ack_no: u32,
    acks_pending: VecDeque<(u32, Instant)>,
    last_ack_sent: Option<SeqNo>,
    data_since_ack: bool,
    /// Packets sent with the current key, for key refresh.
    key_uses: u64,
    key_refresh: KeyRefresh,
    closed: bool,
    scratch_losses: Vec<LossRange>,
    scratch_payloads: Vec<Bytes>,
}

/// Where the sender is in a key refresh (SRT spec 6.1.6 "Key Material Refresh").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyRefresh {
    Steady,
    Announced,
    Switched,
}

impl Connection {
    pub(crate) fn new(cfg: SessionConfig, now: Instant, n: Negotiated) -> Connection {
        let mut c = Connection {
            rtt: Rtt::initial(),
            recv: Receiver::new(
                n.peer_initial_seq,
                cfg.flow_window as usize,
                n.peer_start,
                n.recv_latency,
            ),
            send: Sender::new(
                n.initial_seq,
                cfg.flow_window as usize,
                cfg.max_bandwidth,
                now,
            ),
            timers: TimerTable::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            recv_meter: RateMeter::new(now),
            send_meter: RateMeter::new(now),
            last_sent: now,
            last_received: now,
            now,
            next_ack_no: 1,
            acks_pending: VecDeque::new(),
            last_ack_sent: None,
            data_since_ack: false,
            key_uses: 0,
            key_refresh: KeyRefresh::Steady,
            closed: false,
            scratch_losses: Vec::new(),
            scratch_payloads: Vec::new(),
            cfg,
            n,
        };
        c.timers.set(Timer::Ack, now + SYN);
        c.timers.set(Timer::Nak, now + MIN_NAK_INTERVAL);
        c.timers.set(Timer::KeepAlive, now + KEEPALIVE);
        c.timers.set(Timer::PeerIdle, now + c.cfg.peer_idle_timeout);
        c
    }

    // --- getters -------------------------------------------------------------------------

    /// Our socket id (the peer puts it in every packet it sends us).
    pub fn local_socket(&self) -> u32 {
        self.n.local_socket
    }

    /// The peer's socket id.
    pub fn peer_socket(&self) -> u32 {
        self.n.peer_socket
    }

    /// The TSBPD latency our receiver applies.
    pub fn recv_latency(&self) -> Duration {
        self.n.recv_latency
    }

    /// The TSBPD latency the peer's receiver applies.
    pub fn send_latency(&self) -> Duration {
        self.n.send_latency
    }

    /// True when the payloads are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.n.crypto.is_some()
    }

    /// True once the session is over.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Statistics so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.rtt_us = self.rtt.rtt;
        s.rtt_var_us = self.rtt.var;
        s.send_rate_bps = self.send_meter.rate(self.now);
        s.recv_rate_bps = self.recv_meter.rate(self.now);
        s.send_buffer_packets = self.send.buffered() as u64;
        s.recv_buffer_packets = self.recv.buffered() as u64;
        s.in_flight_packets = self.send.in_flight() as u64;
        s.pacing_rate_bps = self.send.pacing_rate() * 8;
        s
    }

    // --- mutators ------------------------------------------------------------------------

    /// Queues one payload (at most [`MAX_PAYLOAD`] bytes; MPEG-TS senders use 7 packets,
    /// 1316 bytes) to send, stamped with `now`. Longer payloads are refused with `false`.
    pub fn send(&mut self, now: Instant, payload: ByteRope) -> bool {
        self.send_stamped(now, now, payload)
    }

    /// Like [`Connection::send`], but stamps the payload with `source` (when its media
    /// entered the sending application) instead of now. The receiver then plays it at
    /// `source` + latency + transit, so time it waited here (behind other sessions, for
    /// example) comes out of the latency budget instead of adding to it. A `source` before
    /// the session started counts as its start.
    pub fn send_stamped(&mut self, now: Instant, source: Instant, payload: ByteRope) -> bool {
        if self.closed || payload.len() > MAX_PAYLOAD || payload.is_empty() {
            return false;
        }
        let ts = self.timestamp(source.min(now));
        if let Some((msg_no, range)) = self.send.push(now, ts, payload) {
            self.stats.send_dropped += u64::from(range.last.diff(range.first) as u32 + 1);
            self.control(Control::DropReq {
                msg_no,
                first: range.first,
                last: range.last,
            });
        }
        self.flush_data(now);
        true
    }

    /// Ends the session: tells the peer and emits [`Event::Closed`].
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.now = now;
        self.control(Control::Shutdown);
        self.finish(CloseReason::Local);
    }

    /// Feeds an input. Afterwards drain [`Connection::poll_output`] until it says `Timeout`.
    pub fn handle_input(&mut self, input: Input) {
        if self.closed {
            return;
        }
        match input {
            Input::Receive(now, datagram) => {
                self.now = now;
                match Packet::parse(datagram) {
                    Ok(p) => self.handle_packet(now, p),
                    Err(_) => self.stats.bad_packets += 1,
                }
            }
            Input::Timeout(now) => self.handle_timeout(now),
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        // A closed session has no timers; wake far later (the driver stops anyway).
        Output::Timeout(
            self.timers
                .next()
                .unwrap_or(self.now + Duration::from_secs(3600)),
        )
    }

    // --- internals -----------------------------------------------------------------------

    fn timestamp(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.n.start).as_micros() as u32
    }

    fn finish(&mut self, reason: CloseReason) {
        self.closed = true;
        self.timers = TimerTable::default();
        self.events.push_back(Event::Closed(reason));
    }

    fn control(&mut self, body: Control) {
        let p = Packet::Control(ControlPacket {
            timestamp: self.timestamp(self.now),
            dest_socket: self.n.peer_socket,
            body,
        });
        let mut buf = Vec::with_capacity(64);
        p.encode(&mut buf);
        self.transmit(ByteRope::from(Bytes::from(buf)));
    }

    fn transmit(&mut self, datagram: ByteRope) {
        self.send_meter.add(self.now, datagram.len());
        self.last_sent = self.now;
        self.timers.set(Timer::KeepAlive, self.now + KEEPALIVE);
        self.transmits.push_back(datagram);
    }

    fn handle_packet(&mut self, now: Instant, p: Packet) {
        if p.dest_socket() != self.n.local_socket {
            // Only a repeated conclusion may still carry 0.
            if !matches!(&p, Packet::Control(c) if matches!(c.body, Control::Handshake(_))) {
                self.stats.bad_packets += 1;
                return;
            }
        }
        self.last_received = now;
        self.timers
            .set(Timer::PeerIdle, now + self.cfg.peer_idle_timeout);
        match p {
            Packet::Data(d) => self.handle_data(now, d),
            Packet::Control(c) => self.handle_control(now, c),
        }
        self.handle_timeout(now);
    }

    fn handle_data(&mut self, now: Instant, d: DataPacket) {
        self.stats.packets_received += 1;
        self.stats.bytes_received += d.payload.len() as u64;
        self.recv_meter.add(now, d.payload.len() + 16);
        let payload = match (d.key, &self.n.crypto) {
            (KeyFlag::None, _) => d.payload,
            (k, Some(crypto)) => {
                let parity = if k == KeyFlag::Even {
                    KeyParity::Even
                } else {
                    KeyParity::Odd
                };
                let mut clear = d.payload.to_vec();
                if crypto.apply(parity, d.seq, &mut clear).is_err() {
                    self.stats.undecryptable += 1;
                    return;
                }
                Bytes::from(clear)
            }
            (_, None) => {
                self.stats.undecryptable += 1;
                return;
            }
        };
        let mut losses = std::mem::take(&mut self.scratch_losses);
        losses.clear();
        match self
            .recv
            .insert(now, d.seq, d.timestamp, payload, &mut losses)
        {
            Arrival::New => {}
            Arrival::Recovered => self.stats.recovered += 1,
            Arrival::Duplicate => self.stats.duplicates += 1,
            Arrival::Belated => self.stats.belated += 1,
            Arrival::Overflow => self.stats.overflow += 1,
        }
        if d.retransmitted {
            self.stats.retransmitted_received += 1;
        }
        self.data_since_ack = true;
        if !losses.is_empty() {
            for r in &losses {
                self.stats.lost += u64::from(r.last.diff(r.first) as u32 + 1);
            }
            // Report a new gap at once; the periodic NAK repeats it if needed.
            self.control(Control::Nak(losses.clone()));
        }
        self.scratch_losses = losses;
    }

    fn handle_control(&mut self, now: Instant, c: ControlPacket) {
        match c.body {
            Control::Handshake(_) => {
                // The caller did not get our conclusion response: send it again.
                if let Some(reply) = self.n.handshake_reply.clone() {
                    self.transmit(ByteRope::from(reply));
                }
            }
            Control::KeepAlive | Control::CongestionWarning => {}
            Control::Ack(ack) => self.handle_ack(now, ack),
            Control::Nak(ranges) => {
                let n = self.send.lost(&ranges, now, self.rtt.rexmit_guard());
                self.stats.nak_received += 1;
                self.stats.loss_reported += n as u64;
            }
            Control::AckAck { ack_no } => {
                if let Some(i) = self.acks_pending.iter().position(|(n, _)| *n == ack_no) {
                    let (_, sent) = self.acks_pending[i];
                    self.acks_pending.drain(..=i);
                    let us = now.saturating_duration_since(sent).as_micros();
                    self.rtt.sample(us.min(u128::from(u32::MAX)) as u32);
                }
            }
            Control::Shutdown => self.finish(CloseReason::PeerShutdown),
            Control::DropReq { first, last, .. } => self.recv.drop_range(first, last),
            Control::PeerError { code } => self.finish(CloseReason::PeerError(code)),
            Control::UserDefined { subtype, body } => self.handle_user_defined(subtype, body),
        }
    }

    fn handle_ack(&mut self, now: Instant, ack: Ack) {
        let Ok(own_sample) = self.send.acknowledge(ack.last_ack, now) else {
            self.stats.bad_packets += 1;
            return;
        };
        let peer_rtt = ack
            .info
            .as_ref()
            .map_or((0, 0), |i| (i.rtt_us, i.rtt_var_us));
        self.rtt.on_ack(peer_rtt, own_sample);
        if ack.info.is_some() {
            // Full and small ACKs are acknowledged back, so the receiver measures the RTT.
            self.control(Control::AckAck { ack_no: ack.ack_no });
        }
        self.flush_data(now);
    }

    /// An in-band key material message (SRT spec 3.2.2): a refresh from the peer.
    fn handle_user_defined(&mut self, subtype: u16, body: Bytes) {
        const KMREQ: u16 = 3;
        const KMRSP: u16 = 4;
        if subtype != KMREQ {
            if subtype != KMRSP {
                self.stats.bad_packets += 1;
            }
            return;
        }
        let (Some(crypto), Some(pass)) = (&mut self.n.crypto, &self.cfg.passphrase) else {
            self.control(Control::UserDefined {
                subtype: KMRSP,
                body: Bytes::copy_from_slice(&crate::crypto::KmState::NoSecret.encode()),
            });
            return;
        };
        let reply = match crypto.update_from_key_material(pass, &body) {
            Ok(()) => body,
            Err(_) => Bytes::copy_from_slice(&crate::crypto::KmState::BadSecret.encode()),
        };
        self.control(Control::UserDefined {
            subtype: KMRSP,
            body: reply,
        });
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.now = now;
        if self.timers.is_due(Timer::PeerIdle, now) {
            self.finish(CloseReason::PeerIdle);
            return;
        }
        if self.timers.is_due(Timer::Ack, now) {
            self.timers.set(Timer::Ack, now + SYN);
            self.send_ack(now);
            self.resend_overdue(now);
        }
        if self.timers.is_due(Timer::Nak, now) {
            self.timers.set(Timer::Nak, now + MIN_NAK_INTERVAL);
            let mut losses = std::mem::take(&mut self.scratch_losses);
            losses.clear();
            self.recv
                .losses_due(now, self.rtt.nak_interval(), MAX_NAK_RANGES, &mut losses);
            if !losses.is_empty() {
                self.control(Control::Nak(losses.clone()));
            }
            self.scratch_losses = losses;
        }
        // Deliver before sending so a player sees data as soon as it is due.
        let mut out = std::mem::take(&mut self.scratch_payloads);
        let dropped = self.recv.deliver(now, &mut out);
        self.stats.dropped_too_late += dropped;
        for payload in out.drain(..) {
            self.stats.packets_delivered += 1;
            self.events.push_back(Event::Data(payload));
        }
        self.scratch_payloads = out;
        match self.recv.next_delivery() {
            Some(at) => self.timers.set(Timer::Deliver, at),
            None => self.timers.stop(Timer::Deliver),
        }
        let threshold = self.send_drop_threshold();
        if let Some((msg_no, range)) = self.send.drop_expired(now, threshold) {
            self.stats.send_dropped += u64::from(range.last.diff(range.first) as u32 + 1);
            self.control(Control::DropReq {
                msg_no,
                first: range.first,
                last: range.last,
            });
        }
        match self.send.next_expiry(threshold) {
            Some(at) => self.timers.set(Timer::SendExpiry, at),
            None => self.timers.stop(Timer::SendExpiry),
        }
        self.flush_data(now);
        if self.timers.is_due(Timer::KeepAlive, now) {
            self.control(Control::KeepAlive);
        }
    }

    /// Retransmissions unacknowledged for [`Rtt::rexmit_timeout`] are queued again, while
    /// the receiver can still play them: see [`Sender::overdue`].
    fn resend_overdue(&mut self, now: Instant) {
        let rto = self.rtt.rexmit_timeout();
        let clock = self.timestamp(now);
        let latency = self.n.send_latency.as_micros() as u32;
        let playable = |ts: u32| clock.wrapping_sub(ts) < latency;
        let n = self.send.overdue(now, rto, playable);
        self.stats.rexmit_timeouts += n as u64;
    }

    /// Packets older than this are dropped by the sender: the receiver could not play them.
    fn send_drop_threshold(&self) -> Duration {
        (self.n.send_latency + 2 * SYN).max(MIN_SEND_DROP)
    }

    fn send_ack(&mut self, now: Instant) {
        let point = self.recv.ack_point();
        if !self.data_since_ack && self.last_ack_sent == Some(point) {
            return;
        }
        self.data_since_ack = false;
        self.last_ack_sent = Some(point);
        let ack_no = self.next_ack_no;
        self.next_ack_no = self.next_ack_no.wrapping_add(1).max(1);
        if self.acks_pending.len() >= ACK_HISTORY {
            self.acks_pending.pop_front();
        }
        self.acks_pending.push_back((ack_no, now));
        let rate = self.recv_meter.rate(now) / 8;
        self.control(Control::Ack(Ack {
            ack_no,
            last_ack: point,
            info: Some(AckInfo {
                rtt_us: self.rtt.rtt,
                rtt_var_us: self.rtt.var,
                avail_buffer: self.recv.available() as u32,
                pkt_rate: self.recv_meter.packet_rate(now) as u32,
                link_capacity: 0,
                recv_rate_bps: rate.min(u64::from(u32::MAX)) as u32,
            }),
        }));
    }

    /// Sends what pacing and the flow window allow; arms the pace timer for the rest.
    fn flush_data(&mut self, now: Instant) {
        self.timers.stop(Timer::Pace);
        loop {
            match self.send.next(now, self.n.peer_flow_window as usize) {
                Ok(Some(out)) => self.transmit_data(out.seq, out.retransmitted),
                Ok(None) => return,
                Err(at) => {
                    self.timers.set(Timer::Pace, at);
                    return;
                }
            }
        }
    }

    fn transmit_data(&mut self, seq: SeqNo, retransmitted: bool) {
        let active = self.n.crypto.as_ref().map(|c| c.active());
        let Some(entry) = self.send.entry_mut(seq) else {
            return;
        };
        if !retransmitted {
            entry.key = match active {
                None => KeyFlag::None,
                Some(KeyParity::Even) => KeyFlag::Even,
                Some(KeyParity::Odd) => KeyFlag::Odd,
            };
        }
        let header = DataPacket {
            seq,
            position: PacketPosition::Only,
            in_order: false,
            key: entry.key,
            retransmitted,
            msg_no: entry.msg_no,
            timestamp: entry.ts,
            dest_socket: self.n.peer_socket,
            payload: Bytes::new(),
        }
        .encode_header();
        let mut datagram = ByteRope::with_capacity(entry.payload.parts().len() + 1);
        datagram.push(Bytes::copy_from_slice(&header));
        match (entry.key, &self.n.crypto) {
            (KeyFlag::None, _) => datagram.append(&entry.payload),
            (key, Some(crypto)) => {
                let parity = if key == KeyFlag::Even {
                    KeyParity::Even
                } else {
                    KeyParity::Odd
                };
                let mut body = entry.payload.to_contiguous().to_vec();
                if crypto.apply(parity, seq, &mut body).is_err() {
                    // The key of a retransmission has been retired: the packet is too old.
                    return;
                }
                datagram.push(Bytes::from(body));
            }
            (_, None) => return,
        }
        let len = entry.payload.len() as u64;
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += len;
        if retransmitted {
            self.stats.retransmitted += 1;
        }
        self.transmit(datagram);
        if !retransmitted && self.n.crypto.is_some() {
            self.key_uses += 1;
            self.refresh_keys();
        }
    }

    /// Sender key refresh: announce the next key ahead, switch, then retire the old one.
    fn refresh_keys(&mut self) {
        const KMREQ: u16 = 3;
        let (refresh, pre) = (
            self.cfg.key_refresh_packets.max(2),
            self.cfg
                .key_preannounce_packets
                .clamp(1, self.cfg.key_refresh_packets.max(2) / 2),
        );
        let Some(pass) = self.cfg.passphrase.clone() else {
            return;
        };
        let step = match self.key_refresh {
            KeyRefresh::Steady if self.key_uses >= refresh - pre => KeyRefresh::Announced,
            KeyRefresh::Announced if self.key_uses >= refresh => KeyRefresh::Switched,
            KeyRefresh::Switched if self.key_uses >= pre => KeyRefresh::Steady,
            _ => return,
        };
        let Some(crypto) = self.n.crypto.as_mut() else {
            return;
        };
        match step {
            KeyRefresh::Announced => {
                let fresh = self.n.entropy.next_key();
                crypto.announce_next_key(&pass, &fresh);
            }
            KeyRefresh::Switched => {
                crypto.switch_key();
                self.key_uses = 0;
                self.stats.key_switches += 1;
            }
            KeyRefresh::Steady => crypto.retire_old_key(),
        }
        self.key_refresh = step;
        let km = crypto.key_material_message();
        if step != KeyRefresh::Switched {
            self.control(Control::UserDefined {
                subtype: KMREQ,
                body: km,
            });
        }
    }
}

#[cfg(test)]
mod tests;
