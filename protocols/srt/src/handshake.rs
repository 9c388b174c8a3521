//! The HSv5 handshake, both roles (SRT spec 4.3 "Handshake Messages", 3.2.1 "Handshake").
//!
//! Caller and listener exchange two rounds:
//!
//! ```text
//! caller                                   listener
//!   induction  (v4, ext 2, cookie 0)  ──►
//!                                      ◄──  induction (v5, ext 0x4A17, SYN cookie)
//!   conclusion (v5, cookie, HSREQ,     ──►
//!               KMREQ?, SID?)
//!                                      ◄──  conclusion (HSRSP, KMRSP?) or a rejection
//! ```
//!
//! The listener keeps no state before the conclusion: the SYN cookie is an HMAC of the
//! caller's address and a minute counter, so a flood of inductions costs nothing. A valid
//! conclusion becomes a [`ConnectRequest`] that the application accepts or refuses (it may
//! first look up the stream ID asynchronously); the caller repeats its conclusion meanwhile,
//! and the listener ignores repeats of a request it is still deciding.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use thiserror::Error;

use crate::config::SessionConfig;
use crate::connection::{Connection, Input, Negotiated};
use crate::crypto::{CryptoContext, CryptoError, KeyLen, KeyMaterialSeed};
use crate::entropy::Entropy;
use crate::packet::{
    hs_ext_flags, srt_flags, Control, ControlPacket, Handshake, HandshakeKind, HsExtension, Packet,
    SrtHandshake, HS_MAGIC,
};
use crate::reject::RejectReason;
use crate::seq::SeqNo;

/// The SRT version we announce (1.5.1, as the libsrt we test against).
pub const SRT_VERSION: u32 = 0x0001_0501;
/// The handshake extension field of a caller's v4-style induction (UDT_DGRAM).
const INDUCTION_EXT: u16 = 2;
/// Flags we announce in HSREQ/HSRSP.
pub(crate) const OUR_FLAGS: u32 = srt_flags::TSBPD_SND
    | srt_flags::TSBPD_RCV
    | srt_flags::TLPKT_DROP
    | srt_flags::PERIODIC_NAK
    | srt_flags::REXMIT_FLG;
/// Cookies are valid for the minute they were made in and the one after.
const COOKIE_PERIOD: Duration = Duration::from_secs(60);
/// Callers repeat their handshake packets this often...
pub(crate) const CALLER_RETRY: Duration = Duration::from_millis(250);

pub(crate) fn encode(p: &Packet) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    p.encode(&mut buf);
    Bytes::from(buf)
}

pub(crate) fn ip_bytes(addr: SocketAddr) -> [u8; 16] {
    crate::packet::peer_ip_to_wire(addr.ip())
}

pub(crate) fn latency_ms(d: Duration) -> u16 {
    d.as_millis().min(u128::from(u16::MAX)) as u16
}

/// The peer's clock origin on ours, from a handshake that arrived at `at` stamped `timestamp`
/// µs after the peer started.
pub(crate) fn peer_start(at: Instant, timestamp: u32) -> Instant {
    at.checked_sub(Duration::from_micros(u64::from(timestamp)))
        .unwrap_or(at)
}

/// What an HSRSP settled on, as (our receiving, our sending) latency, each at least `ours`.
/// The HSRSP names its sender's receiving direction, our sending one, first.
pub(crate) fn latencies_from_hsrsp(rsp: &SrtHandshake, ours: Duration) -> (Duration, Duration) {
    let ms = |v: u16| Duration::from_millis(u64::from(v)).max(ours);
    (ms(rsp.send_latency_ms), ms(rsp.recv_latency_ms))
}

/// What the listener makes of a handshake packet.
#[derive(Debug)]
pub enum ListenerOutput {
    /// Send this datagram back to the sender (an induction response or a rejection).
    Reply(Bytes),
    /// A valid conclusion: decide with [`ConnectRequest::accept`] or
    /// [`ConnectRequest::reject`].
    Connect(Box<ConnectRequest>),
    /// Not for us, or not valid: drop it silently (a reply would let a forger use us to
    /// reflect traffic).
    Drop(DropReason),
}

/// Why the listener dropped a handshake packet without answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a handshake control packet.
    NotHandshake,
    /// A conclusion whose SYN cookie we did not make (or made too long ago).
    BadCookie,
    /// A handshake type a listener does not expect (agreement, wavehand, ...).
    UnexpectedKind,
}

/// The listening role: answers inductions statelessly and validates conclusions.
#[derive(Debug)]
pub struct Listener {
    cookie_key: [u8; 32],
    epoch: Instant,
    /// Key length we advertise in induction responses when we have a passphrase.
    advertised: Option<KeyLen>,
}

impl Listener {
    /// A listener; `cookie_key` must be random (it makes SYN cookies unforgeable).
    pub fn new(cfg: &SessionConfig, cookie_key: [u8; 32], now: Instant) -> Listener {
        Listener {
            cookie_key,
            epoch: now,
            advertised: cfg.passphrase.as_ref().map(|_| cfg.key_len),
        }
    }

    fn cookie(&self, from: SocketAddr, period: u64) -> u32 {
        // The key is 32 bytes: `new_from_slice` accepts any length for HMAC.
        let mut mac =
            <Hmac<Sha1> as Mac>::new_from_slice(&self.cookie_key).expect("any HMAC key length");
        mac.update(&ip_bytes(from));
        mac.update(&from.port().to_be_bytes());
        mac.update(&period.to_be_bytes());
        let h = mac.finalize().into_bytes();
        u32::from_be_bytes([h[0], h[1], h[2], h[3]])
    }

    fn period(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / COOKIE_PERIOD.as_secs()
    }

    /// Handles a datagram sent to the listening socket by an address with no session.
    pub fn handle(&self, now: Instant, from: SocketAddr, datagram: Bytes) -> ListenerOutput {
        let Ok(Packet::Control(ControlPacket {
            timestamp,
            body: Control::Handshake(hs),
            ..
        })) = Packet::parse(datagram)
        else {
            return ListenerOutput::Drop(DropReason::NotHandshake);
        };
        match hs.kind {
            HandshakeKind::Induction => {
                let reply = Handshake {
                    version: 5,
                    encryption: self.advertised.map_or(0, KeyLen::hs_field),
                    extension: HS_MAGIC,
                    initial_seq: hs.initial_seq,
                    mtu: hs.mtu,
                    flow_window: hs.flow_window,
                    kind: HandshakeKind::Induction,
                    socket_id: 0,
                    syn_cookie: self.cookie(from, self.period(now)),
                    peer_ip: ip_bytes(from),
                    extensions: Vec::new(),
                };
                ListenerOutput::Reply(encode(&Packet::Control(ControlPacket {
                    timestamp: 0,
                    dest_socket: hs.socket_id,
                    body: Control::Handshake(reply),
                })))
            }
            HandshakeKind::Conclusion => {
                let period = self.period(now);
                let valid = hs.syn_cookie == self.cookie(from, period)
                    || (period > 0 && hs.syn_cookie == self.cookie(from, period - 1));
                if !valid {
                    return ListenerOutput::Drop(DropReason::BadCookie);
                }
                ListenerOutput::Connect(Box::new(ConnectRequest {
                    from,
                    timestamp,
                    arrived: now,
                    hs,
                }))
            }
            _ => ListenerOutput::Drop(DropReason::UnexpectedKind),
        }
    }
}

/// What the protocol requires of a conclusion carrying an HSREQ (from a caller, or from a
/// rendezvous initiator): version 5, live mode, no packet filter, and encryption that
/// matches ours. With a passphrase on both sides the key material is unwrapped (a wrong
/// passphrase is [`RejectReason::BadSecret`]) and becomes the session's keys.
pub(crate) fn check_request(
    cfg: &SessionConfig,
    hs: &Handshake,
) -> Result<Option<CryptoContext>, RejectReason> {
    if hs.version != 5 {
        return Err(RejectReason::Version);
    }
    let Some(req) = hs.extensions.iter().find_map(|e| match e {
        HsExtension::HsReq(h) => Some(h),
        _ => None,
    }) else {
        return Err(RejectReason::Rogue);
    };
    if req.flags & srt_flags::STREAM != 0 {
        return Err(RejectReason::MessageApi);
    }
    for e in &hs.extensions {
        match e {
            HsExtension::Filter(f) if !f.is_empty() => return Err(RejectReason::Filter),
            HsExtension::Congestion(c) if c != "live" => return Err(RejectReason::Congestion),
            HsExtension::Group(_) => return Err(RejectReason::Group),
            _ => {}
        }
    }
    let kmreq = hs.extensions.iter().find_map(|e| match e {
        HsExtension::KmReq(b) => Some(b),
        _ => None,
    });
    match (&cfg.passphrase, kmreq) {
        (None, None) => Ok(None),
        (Some(_), None) | (None, Some(_)) => Err(RejectReason::Unsecure),
        (Some(pass), Some(km)) => match CryptoContext::from_key_material(pass, km) {
            Ok(c) => Ok(Some(c)),
            Err(CryptoError::BadSecret) => Err(RejectReason::BadSecret),
            Err(_) => Err(RejectReason::Unsecure),
        },
    }
}

/// A caller's conclusion that passed the cookie check, waiting for the application's
/// verdict.
#[derive(Debug)]
pub struct ConnectRequest {
    from: SocketAddr,
    /// The caller's clock when it sent the conclusion (microseconds).
    timestamp: u32,
    arrived: Instant,
    hs: Handshake,
}

/// The result of accepting: the session and the conclusion response to send.
#[derive(Debug)]
pub struct Accepted {
    /// The new session.
    pub connection: Box<Connection>,
    /// Send this to the caller.
    pub response: Bytes,
}

/// A refused request: why, and the rejection to send.
#[derive(Debug)]
pub struct Refused {
    /// The reason sent to the caller.
    pub reason: RejectReason,
    /// Send this to the caller.
    pub response: Bytes,
}

impl ConnectRequest {
    /// Who is calling.
    pub fn peer(&self) -> SocketAddr {
        self.from
    }

    /// The caller's socket id.
    pub fn peer_socket(&self) -> u32 {
        self.hs.socket_id
    }

    /// The stream ID the caller sent, if any.
    pub fn stream_id(&self) -> Option<&str> {
        self.hs.extensions.iter().find_map(|e| match e {
            HsExtension::StreamId(s) => Some(s.as_str()),
            _ => None,
        })
    }

    fn hsreq(&self) -> Option<&SrtHandshake> {
        self.hs.extensions.iter().find_map(|e| match e {
            HsExtension::HsReq(h) => Some(h),
            _ => None,
        })
    }

    fn kmreq(&self) -> Option<&Bytes> {
        self.hs.extensions.iter().find_map(|e| match e {
            HsExtension::KmReq(b) => Some(b),
            _ => None,
        })
    }

    /// Checks what the protocol requires of the request, so the application can refuse
    /// before its own (possibly slow) checks: version 5, live mode, no packet filter, and
    /// encryption that matches ours (the passphrase is verified by unwrapping the keys).
    pub fn check(&self, cfg: &SessionConfig) -> Result<(), RejectReason> {
        self.negotiate_crypto(cfg).map(|_| ())
    }

    fn negotiate_crypto(&self, cfg: &SessionConfig) -> Result<Option<CryptoContext>, RejectReason> {
        check_request(cfg, &self.hs)
    }

    /// Accepts: negotiates latency and encryption and starts the session with socket id
    /// `local_socket`. Fails with a rejection when the protocol forbids the request
    /// (wrong passphrase, stream mode, ...).
    pub fn accept(
        self,
        cfg: &SessionConfig,
        local_socket: u32,
        now: Instant,
        entropy: Entropy,
    ) -> Result<Accepted, Refused> {
        let crypto = match self.negotiate_crypto(cfg) {
            Ok(c) => c,
            Err(reason) => return Err(self.reject(reason)),
        };
        // Checked by `check`.
        let req = self.hsreq().expect("HSREQ present").clone();
        let ours = latency_ms(cfg.latency);
        // Each direction uses the larger of what its receiver wants and its sender offers.
        let recv_ms = ours.max(req.send_latency_ms);
        let send_ms = ours.max(req.recv_latency_ms);
        let mut flags = OUR_FLAGS;
        let mut extension = hs_ext_flags::HSREQ;
        let mut extensions = vec![HsExtension::HsRsp(SrtHandshake {
            version: SRT_VERSION,
            flags: 0,
            recv_latency_ms: recv_ms,
            send_latency_ms: send_ms,
        })];
        if let (Some(_), Some(km)) = (&crypto, self.kmreq()) {
            flags |= srt_flags::CRYPT;
            extension |= hs_ext_flags::KMREQ;
            extensions.push(HsExtension::KmRsp(km.clone()));
        }
        if let Some(HsExtension::HsRsp(h)) = extensions.first_mut() {
            h.flags = flags;
        }
        let response = encode(&Packet::Control(ControlPacket {
            timestamp: 0,
            dest_socket: self.hs.socket_id,
            body: Control::Handshake(Handshake {
                version: 5,
                encryption: 0,
                extension,
                initial_seq: self.hs.initial_seq,
                mtu: self.hs.mtu.min(cfg.mtu),
                flow_window: cfg.flow_window,
                kind: HandshakeKind::Conclusion,
                socket_id: local_socket,
                syn_cookie: self.hs.syn_cookie,
                peer_ip: ip_bytes(self.from),
                extensions,
            }),
        }));
        let negotiated = Negotiated {
            local_socket,
            peer_socket: self.hs.socket_id,
            initial_seq: self.hs.initial_seq,
            peer_initial_seq: self.hs.initial_seq,
            peer_flow_window: self.hs.flow_window.clamp(32, 1 << 20),
            recv_latency: Duration::from_millis(u64::from(recv_ms)),
            send_latency: Duration::from_millis(u64::from(send_ms)),
            peer_start: peer_start(self.arrived, self.timestamp),
            start: now,
            crypto,
            entropy,
            handshake_reply: Some(response.clone()),
        };
        Ok(Accepted {
            connection: Box::new(Connection::new(cfg.clone(), now, negotiated)),
            response,
        })
    }

    /// Refuses with `reason`; send the returned datagram to the caller.
    pub fn reject(&self, reason: RejectReason) -> Refused {
        let response = encode(&Packet::Control(ControlPacket {
            timestamp: 0,
            dest_socket: self.hs.socket_id,
            body: Control::Handshake(Handshake {
                version: 5,
                encryption: 0,
                extension: 0,
                initial_seq: self.hs.initial_seq,
                mtu: self.hs.mtu,
                flow_window: self.hs.flow_window,
                kind: HandshakeKind::Rejection(reason.wire_code()),
                socket_id: 0,
                syn_cookie: self.hs.syn_cookie,
                peer_ip: ip_bytes(self.from),
                extensions: Vec::new(),
            }),
        }));
        Refused { reason, response }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CallError {
    /// The listener refused.
    #[error("refused by the listener: {0}")]
    Rejected(RejectReason),
    /// No answer within the connect timeout.
    #[error("no answer from the listener")]
    Timeout,
    /// The listener's conclusion was not acceptable.
    #[error("invalid conclusion from the listener: {0}")]
    Invalid(&'static str),
    /// We refused the peer's request (rendezvous: its HSREQ or key material was not
    /// acceptable, e.g. another passphrase) and sent it this reason.
    #[error("refused the peer: {0}")]
    Refused(RejectReason),
}

/// What a caller wants done.
#[derive(Debug)]
pub enum CallerOutput {
    /// Send this datagram to the listener.
    Transmit(Bytes),
    /// Nothing until this instant.
    Timeout(Instant),
    /// Connected: drive this session from now on.
    Connected(Box<Connection>),
    /// The call failed.
    Failed(CallError),
}

#[derive(Debug)]
enum CallerState {
    Induction,
    Conclusion { cookie: u32, hs: Box<Handshake> },
    Done,
}

/// The calling role.
#[derive(Debug)]
pub struct Caller {
    cfg: SessionConfig,
    state: CallerState,
    socket_id: u32,
    initial_seq: SeqNo,
    stream_id: Option<String>,
    crypto: Option<CryptoContext>,
    entropy: Entropy,
    peer: SocketAddr,
    start: Instant,
    deadline: Instant,
    next_send: Instant,
    outputs: std::collections::VecDeque<CallerOutput>,
}

impl Caller {
    /// Starts a call to `peer` asking for `stream_id`; gives up after `connect_timeout`.
    pub fn new(
        cfg: SessionConfig,
        now: Instant,
        peer: SocketAddr,
        stream_id: Option<String>,
        connect_timeout: Duration,
        mut entropy: Entropy,
    ) -> Caller {
        let socket_id = entropy.next_u32();
        let initial_seq = SeqNo::new(entropy.next_u32());
        let crypto = cfg.passphrase.as_ref().map(|pass| {
            let mut seed = KeyMaterialSeed {
                salt: [0; 16],
                even: [0; 32],
                odd: [0; 32],
            };
            entropy.fill(&mut seed.salt);
            entropy.fill(&mut seed.even);
            entropy.fill(&mut seed.odd);
            CryptoContext::new_sender(pass, cfg.key_len, &seed)
        });
        let mut c = Caller {
            state: CallerState::Induction,
            socket_id,
            initial_seq,
            stream_id,
            crypto,
            entropy,
            peer,
            start: now,
            deadline: now + connect_timeout,
            next_send: now,
            outputs: Default::default(),
            cfg,
        };
        c.send_current(now);
        c
    }

    /// Our socket id.
    pub fn socket_id(&self) -> u32 {
        self.socket_id
    }

    fn timestamp(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_micros() as u32
    }

    fn send_current(&mut self, now: Instant) {
        let hs = match &self.state {
            CallerState::Induction => Handshake {
                version: 4,
                encryption: 0,
                extension: INDUCTION_EXT,
                initial_seq: self.initial_seq,
                mtu: self.cfg.mtu,
                flow_window: self.cfg.flow_window,
                kind: HandshakeKind::Induction,
                socket_id: self.socket_id,
                syn_cookie: 0,
                peer_ip: ip_bytes(self.peer),
                extensions: Vec::new(),
            },
            CallerState::Conclusion { hs, .. } => (**hs).clone(),
            CallerState::Done => return,
        };
        let p = Packet::Control(ControlPacket {
            timestamp: self.timestamp(now),
            dest_socket: 0,
            body: Control::Handshake(hs),
        });
        self.outputs.push_back(CallerOutput::Transmit(encode(&p)));
        self.next_send = now + CALLER_RETRY;
    }

    fn conclusion(&self, cookie: u32) -> Handshake {
        let ours = latency_ms(self.cfg.latency);
        let mut flags = OUR_FLAGS;
        let mut extension = hs_ext_flags::HSREQ;
        let mut extensions = Vec::new();
        if let Some(c) = &self.crypto {
            flags |= srt_flags::CRYPT;
            extension |= hs_ext_flags::KMREQ;
            extensions.push(HsExtension::KmReq(c.key_material_message()));
        }
        extensions.insert(
            0,
            HsExtension::HsReq(SrtHandshake {
                version: SRT_VERSION,
                flags,
                recv_latency_ms: ours,
                send_latency_ms: ours,
            }),
        );
        if let Some(sid) = &self.stream_id {
            extension |= hs_ext_flags::CONFIG;
            extensions.push(HsExtension::StreamId(sid.clone()));
        }
        Handshake {
            version: 5,
            encryption: self.crypto.as_ref().map_or(0, |c| c.key_len().hs_field()),
            extension,
            initial_seq: self.initial_seq,
            mtu: self.cfg.mtu,
            flow_window: self.cfg.flow_window,
            kind: HandshakeKind::Conclusion,
            socket_id: self.socket_id,
            syn_cookie: cookie,
            peer_ip: ip_bytes(self.peer),
            extensions,
        }
    }

    /// Feeds a datagram from the listener, or a timeout.
    pub fn handle_input(&mut self, input: Input) {
        match input {
            Input::Timeout(now) => {
                if matches!(self.state, CallerState::Done) {
                    return;
                }
                if now >= self.deadline {
                    self.state = CallerState::Done;
                    self.outputs
                        .push_back(CallerOutput::Failed(CallError::Timeout));
                } else if now >= self.next_send {
                    self.send_current(now);
                }
            }
            Input::Receive(now, datagram) => {
                let Ok(Packet::Control(ControlPacket {
                    timestamp,
                    dest_socket,
                    body: Control::Handshake(hs),
                })) = Packet::parse(datagram)
                else {
                    return;
                };
                if dest_socket != self.socket_id {
                    return;
                }
                self.handle_handshake(now, timestamp, hs);
            }
        }
    }

    fn handle_handshake(&mut self, now: Instant, timestamp: u32, hs: Handshake) {
        if let HandshakeKind::Rejection(code) = hs.kind {
            self.state = CallerState::Done;
            self.outputs
                .push_back(CallerOutput::Failed(CallError::Rejected(
                    RejectReason::from_wire(code),
                )));
            return;
        }
        match (&self.state, hs.kind) {
            (CallerState::Induction, HandshakeKind::Induction) => {
                if hs.version < 5 || hs.extension != HS_MAGIC {
                    self.state = CallerState::Done;
                    self.outputs
                        .push_back(CallerOutput::Failed(CallError::Invalid(
                            "the listener does not speak HSv5",
                        )));
                    return;
                }
                let conclusion = self.conclusion(hs.syn_cookie);
                self.state = CallerState::Conclusion {
                    cookie: hs.syn_cookie,
                    hs: Box::new(conclusion),
                };
                self.send_current(now);
            }
            (CallerState::Conclusion { cookie, .. }, HandshakeKind::Conclusion) => {
                if hs.syn_cookie != *cookie && hs.syn_cookie != 0 {
                    return;
                }
                let Some(rsp) = hs.extensions.iter().find_map(|e| match e {
                    HsExtension::HsRsp(h) => Some(h.clone()),
                    _ => None,
                }) else {
                    self.state = CallerState::Done;
                    self.outputs
                        .push_back(CallerOutput::Failed(CallError::Invalid("no HSRSP")));
                    return;
                };
                let encrypted = hs
                    .extensions
                    .iter()
                    .any(|e| matches!(e, HsExtension::KmRsp(b) if b.len() > 4));
                if self.crypto.is_some() && !encrypted {
                    self.state = CallerState::Done;
                    self.outputs
                        .push_back(CallerOutput::Failed(CallError::Rejected(
                            RejectReason::BadSecret,
                        )));
                    return;
                }
                let (recv_latency, send_latency) = latencies_from_hsrsp(&rsp, self.cfg.latency);
                let negotiated = Negotiated {
                    local_socket: self.socket_id,
                    peer_socket: hs.socket_id,
                    initial_seq: self.initial_seq,
                    peer_initial_seq: self.initial_seq,
                    peer_flow_window: hs.flow_window.clamp(32, 1 << 20),
                    recv_latency,
                    send_latency,
                    peer_start: peer_start(now, timestamp),
                    start: self.start,
                    crypto: self.crypto.take(),
                    entropy: self.entropy.clone(),
                    handshake_reply: None,
                };
                self.state = CallerState::Done;
                self.outputs
                    .push_back(CallerOutput::Connected(Box::new(Connection::new(
                        self.cfg.clone(),
                        now,
                        negotiated,
                    ))));
            }
            _ => {}
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> CallerOutput {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        CallerOutput::Timeout(self.next_send.min(self.deadline))
    }
}
