//! The rendezvous role, HSv5 (SRT spec 4.3.2 "Rendezvous Handshake"; libsrt
//! `docs/features/handshake.md`, "HSv5 Rendezvous Process").
//!
//! Neither peer listens: both bind a port and send to each other, so each one's first
//! datagrams open its own NAT or firewall for the other's. Both start by repeating a
//! WAVEAHAND that carries a random 32-bit cookie. The first handshake heard from the peer
//! reveals its cookie, and the *cookie contest* ([`cookie_contest`]) gives the two peers
//! opposite roles: the winner is the [`Role::Initiator`], which plays the caller's part (it
//! sends HSREQ and, with a passphrase, the KMREQ whose keys encrypt both directions), the
//! loser is the [`Role::Responder`], which plays the listener's.
//!
//! ```text
//! initiator                                        responder
//!   Waving      WAVEAHAND (v5, cookie)    ──►       Waving
//!               ◄──    WAVEAHAND (v5, cookie)       (contest: lost)
//!   (contest: won)                                  Attending
//!               ◄──    CONCLUSION (no extensions)
//!   Initiating  CONCLUSION + HSREQ (+ KMREQ) ──►
//!               ◄──    CONCLUSION + HSRSP (+ KMRSP) Responded
//!   Connected   AGREEMENT                 ──►       Connected
//! ```
//!
//! Either first message may be the one that reaches the peer (when one side starts later, its
//! first contact is the other's CONCLUSION); the states take both orders. Every datagram
//! may be lost: each state repeats its message every 250 ms and answers a repeat of the
//! peer's at once, the initiator answers a repeated CONCLUSION + HSRSP (its AGREEMENT was
//! lost) from the established [`Connection`], and a responder whose AGREEMENT was lost takes
//! the initiator's first session packet (data, keepalive, ACK, ...) as the agreement.
//!
//! Unlike caller and listener, the two directions start at different sequence numbers: each
//! peer sends from the initial sequence number in its own handshake. Latency is negotiated as
//! for a caller: each direction uses the larger of what its receiver wants and its sender
//! offers.
//!
//! # Drive-loop contract
//!
//! As for [`crate::Caller`]: feed every datagram from `peer` (and only from it) with
//! `handle_input(Input::Receive(now, datagram))`, call `handle_input(Input::Timeout(now))`
//! when the last [`RendezvousOutput::Timeout`] instant passes, and after every input drain
//! [`Rendezvous::poll_output`] until it returns `Timeout` (or `Connected` / `Failed`). On
//! `Connected`, drive the [`Connection`] from then on and drain its output at once: it may
//! already hold what the packet that completed the handshake brought.
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use std::time::{Duration, Instant};
//! use zerocast_srt::rendezvous::{Rendezvous, RendezvousOutput};
//! use zerocast_srt::{Connection, Entropy, Input, SessionConfig};
//!
//! fn meet(sock: &UdpSocket, peer: std::net::SocketAddr, seed: [u8; 32]) -> Option<Box<Connection>> {
//!     let timeout = Duration::from_secs(10);
//!     let mut rv = Rendezvous::new(SessionConfig::default(), Instant::now(), peer, timeout, Entropy::new(seed));
//!     let mut buf = [0u8; 1500];
//!     loop {
//!         let wake = loop {
//!             match rv.poll_output() {
//!                 RendezvousOutput::Transmit(d) => { sock.send_to(&d, peer).ok()?; }
//!                 RendezvousOutput::Timeout(at) => break at,
//!                 RendezvousOutput::Connected(conn) => return Some(conn),
//!                 RendezvousOutput::Failed(_) => return None,
//!             }
//!         };
//!         let wait = wake.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
//!         sock.set_read_timeout(Some(wait)).ok()?;
//!         match sock.recv_from(&mut buf) {
//!             Ok((n, from)) if from == peer => rv.handle_input(Input::Receive(
//!                 Instant::now(),
//!                 bytes::Bytes::copy_from_slice(&buf[..n]),
//!             )),
//!             Ok(_) => {}
//!             Err(_) => rv.handle_input(Input::Timeout(Instant::now())),
//!         }
//!     }
//! }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::SessionConfig;
use crate::connection::{Connection, Input, Negotiated};
use crate::crypto::{CryptoContext, KeyMaterialSeed, KmState};
use crate::entropy::Entropy;
use crate::handshake::{
    check_request, encode, ip_bytes, latencies_from_hsrsp, latency_ms, peer_start, CallError,
    CALLER_RETRY, OUR_FLAGS, SRT_VERSION,
};
use crate::packet::{
    hs_ext_flags, srt_flags, Control, ControlPacket, Handshake, HandshakeKind, HsExtension, Packet,
    SrtHandshake,
};
use crate::reject::RejectReason;
use crate::seq::SeqNo;

/// The part a peer plays once the cookies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Won the contest: sends HSREQ (and KMREQ) like a caller and answers the HSRSP with
    /// AGREEMENT.
    Initiator,
    /// Lost the contest: answers the HSREQ with HSRSP (and KMRSP) like a listener.
    Responder,
}

/// The cookie contest (SRT spec 4.3.2; libsrt `cookieContest`): our cookie minus the peer's,
/// as a 32-bit two's-complement difference, decides. Positive: we are the initiator;
/// negative: the responder; zero: no decision (`None`, the handshake cannot go on). Exactly
/// 2^31 apart both differences read negative; libsrt 1.5.5 then lets the larger signed value
/// win, and so do we (libsrt 1.5.1 to 1.5.4 make both peers responders, which never connect;
/// with random cookies that is a 1 in 2^32 chance).
pub fn cookie_contest(ours: u32, theirs: u32) -> Option<Role> {
    let diff = ours.wrapping_sub(theirs);
    if diff == 0 {
        None
    } else if (diff as i32) > 0 || (diff == 1 << 31 && (ours as i32) > (theirs as i32)) {
        Some(Role::Initiator)
    } else {
        Some(Role::Responder)
    }
}

/// What a rendezvous peer wants done.
#[derive(Debug)]
pub enum RendezvousOutput {
    /// Send this datagram to the peer.
    Transmit(Bytes),
    /// Nothing until this instant (or the next datagram).
    Timeout(Instant),
    /// Connected: drive this session from now on (and drain its output first).
    Connected(Box<Connection>),
    /// The handshake failed; nothing more will happen.
    Failed(CallError),
}

/// What the peer's first handshake told us about it.
#[derive(Debug, Clone, Copy)]
struct PeerHello {
    socket_id: u32,
    initial_seq: SeqNo,
    flow_window: u32,
}

impl PeerHello {
    fn from(hs: &Handshake) -> PeerHello {
        PeerHello {
            socket_id: hs.socket_id,
            initial_seq: hs.initial_seq,
            flow_window: hs.flow_window,
        }
    }
}

/// The initiator after the contest: repeating CONCLUSION + HSREQ (+ KMREQ).
#[derive(Debug)]
struct Initiating {
    peer: PeerHello,
    conclusion: Handshake,
    crypto: Option<CryptoContext>,
}

/// The responder after accepting the HSREQ: repeating CONCLUSION + HSRSP (+ KMRSP).
#[derive(Debug)]
struct Responded {
    peer: PeerHello,
    reply: Handshake,
    recv_latency: Duration,
    send_latency: Duration,
    peer_start: Instant,
    crypto: Option<CryptoContext>,
}

/// Where the handshake is. Each step consumes the state and returns the next one.
#[derive(Debug)]
enum State {
    /// Repeating WAVEAHAND; nothing heard from the peer yet.
    Waving,
    /// Initiator, waiting for CONCLUSION + HSRSP.
    Initiating(Box<Initiating>),
    /// Responder, repeating an empty CONCLUSION while waiting for CONCLUSION + HSREQ.
    Attending(PeerHello),
    /// Responder, waiting for AGREEMENT (or any session packet).
    Responded(Box<Responded>),
    /// Connected or failed.
    Finished,
}

/// Everything but the state: configuration, identity, timers and the output queue.
#[derive(Debug)]
struct Core {
    cfg: SessionConfig,
    socket_id: u32,
    cookie: u32,
    initial_seq: SeqNo,
    role: Option<Role>,
    entropy: Entropy,
    peer: SocketAddr,
    start: Instant,
    deadline: Instant,
    next_send: Instant,
    outputs: VecDeque<RendezvousOutput>,
}

/// One rendezvous peer (HSv5), in the style of [`crate::Caller`].
#[derive(Debug)]
pub struct Rendezvous {
    state: State,
    core: Core,
}

impl Rendezvous {
    /// Starts meeting `peer` (the address its datagrams come from and ours go to); gives up
    /// after `connect_timeout`. The first WAVEAHAND is ready in [`Rendezvous::poll_output`].
    pub fn new(
        cfg: SessionConfig,
        now: Instant,
        peer: SocketAddr,
        connect_timeout: Duration,
        mut entropy: Entropy,
    ) -> Rendezvous {
        let socket_id = entropy.next_u32();
        let initial_seq = SeqNo::new(entropy.next_u32());
        // Non-zero: libsrt holds no contest against a zero cookie.
        let cookie = entropy.next_u32();
        let mut core = Core {
            cfg,
            socket_id,
            cookie,
            initial_seq,
            role: None,
            entropy,
            peer,
            start: now,
            deadline: now + connect_timeout,
            next_send: now,
            outputs: VecDeque::new(),
        };
        let wave = core.wavehand();
        core.send(now, 0, wave);
        Rendezvous {
            state: State::Waving,
            core,
        }
    }

    /// Our socket id.
    pub fn socket_id(&self) -> u32 {
        self.core.socket_id
    }

    /// Our cookie for the contest.
    pub fn cookie(&self) -> u32 {
        self.core.cookie
    }

    /// Our role, once the contest is decided.
    pub fn role(&self) -> Option<Role> {
        self.core.role
    }

    /// Feeds a datagram from the peer, or a timeout.
    pub fn handle_input(&mut self, input: Input) {
        if matches!(self.state, State::Finished) {
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Finished);
        self.state = match input {
            Input::Timeout(now) => state.on_timeout(&mut self.core, now),
            Input::Receive(now, datagram) => state.on_datagram(&mut self.core, now, datagram),
        };
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> RendezvousOutput {
        if let Some(o) = self.core.outputs.pop_front() {
            return o;
        }
        RendezvousOutput::Timeout(self.core.next_send.min(self.core.deadline))
    }
}

impl Core {
    fn timestamp(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_micros() as u32
    }

    /// A version 5 handshake from us; the encryption field advertises our key length.
    fn handshake(
        &self,
        kind: HandshakeKind,
        extension: u16,
        extensions: Vec<HsExtension>,
    ) -> Handshake {
        Handshake {
            version: 5,
            encryption: self
                .cfg
                .passphrase
                .as_ref()
                .map_or(0, |_| self.cfg.key_len.hs_field()),
            extension,
            initial_seq: self.initial_seq,
            mtu: self.cfg.mtu,
            flow_window: self.cfg.flow_window,
            kind,
            socket_id: self.socket_id,
            syn_cookie: self.cookie,
            peer_ip: ip_bytes(self.peer),
            extensions,
        }
    }

    fn wavehand(&self) -> Handshake {
        self.handshake(HandshakeKind::Wavehand, 0, Vec::new())
    }

    fn empty_conclusion(&self) -> Handshake {
        self.handshake(HandshakeKind::Conclusion, 0, Vec::new())
    }

    fn datagram(&self, now: Instant, dest_socket: u32, hs: Handshake) -> Bytes {
        encode(&Packet::Control(ControlPacket {
            timestamp: self.timestamp(now),
            dest_socket,
            body: Control::Handshake(hs),
        }))
    }

    /// Sends `hs` now and restarts the repeat timer.
    fn send(&mut self, now: Instant, dest_socket: u32, hs: Handshake) {
        let d = self.datagram(now, dest_socket, hs);
        self.outputs.push_back(RendezvousOutput::Transmit(d));
        self.next_send = now + CALLER_RETRY;
    }

    fn fail(&mut self, e: CallError) -> State {
        self.outputs.push_back(RendezvousOutput::Failed(e));
        State::Finished
    }

    /// Tells the peer why we give up (a rejection handshake, as libsrt 1.5.2+ sends in
    /// rendezvous) and fails.
    fn refuse(&mut self, now: Instant, peer_socket: u32, reason: RejectReason) -> State {
        let hs = self.handshake(HandshakeKind::rejection(reason), 0, Vec::new());
        let d = self.datagram(now, peer_socket, hs);
        self.outputs.push_back(RendezvousOutput::Transmit(d));
        self.fail(CallError::Refused(reason))
    }

    /// The initiator's CONCLUSION: HSREQ, and KMREQ with fresh keys when we have a
    /// passphrase.
    fn initiate(&mut self, now: Instant, peer: PeerHello) -> State {
        let crypto = self.cfg.passphrase.clone().map(|pass| {
            let mut seed = KeyMaterialSeed {
                salt: [0; 16],
                even: [0; 32],
                odd: [0; 32],
            };
            self.entropy.fill(&mut seed.salt);
            self.entropy.fill(&mut seed.even);
            self.entropy.fill(&mut seed.odd);
            CryptoContext::new_sender(&pass, self.cfg.key_len, &seed)
        });
        let ours = latency_ms(self.cfg.latency);
        let mut flags = OUR_FLAGS;
        let mut extension = hs_ext_flags::HSREQ;
        let mut km = None;
        if let Some(c) = &crypto {
            flags |= srt_flags::CRYPT;
            extension |= hs_ext_flags::KMREQ;
            km = Some(HsExtension::KmReq(c.key_material_message()));
        }
        let mut extensions = vec![HsExtension::HsReq(SrtHandshake {
            version: SRT_VERSION,
            flags,
            recv_latency_ms: ours,
            send_latency_ms: ours,
        })];
        extensions.extend(km);
        let mut conclusion = self.handshake(HandshakeKind::Conclusion, extension, extensions);
        if let Some(c) = &crypto {
            conclusion.encryption = c.key_len().hs_field();
        }
        self.send(now, peer.socket_id, conclusion.clone());
        State::Initiating(Box::new(Initiating {
            peer,
            conclusion,
            crypto,
        }))
    }

    /// The responder got CONCLUSION + HSREQ: checks it as a listener would and answers
    /// with HSRSP (and KMRSP), or refuses.
    fn respond(&mut self, now: Instant, timestamp: u32, peer: PeerHello, hs: &Handshake) -> State {
        let crypto = match check_request(&self.cfg, hs) {
            Ok(c) => c,
            Err(reason) => return self.refuse(now, peer.socket_id, reason),
        };
        let Some(req) = hs.extensions.iter().find_map(|e| match e {
            HsExtension::HsReq(h) => Some(h.clone()),
            _ => None,
        }) else {
            // `check_request` refuses a conclusion without HSREQ.
            return self.refuse(now, peer.socket_id, RejectReason::Rogue);
        };
        let ours = latency_ms(self.cfg.latency);
        // Each direction uses the larger of what its receiver wants and its sender offers.
        let recv_ms = ours.max(req.send_latency_ms);
        let send_ms = ours.max(req.recv_latency_ms);
        let mut flags = OUR_FLAGS;
        let mut extension = hs_ext_flags::HSREQ;
        let mut kmrsp = None;
        if crypto.is_some() {
            flags |= srt_flags::CRYPT;
            extension |= hs_ext_flags::KMREQ;
            // A KMRSP echoes the KMREQ that was accepted.
            kmrsp = hs.extensions.iter().find_map(|e| match e {
                HsExtension::KmReq(b) => Some(HsExtension::KmRsp(b.clone())),
                _ => None,
            });
        }
        let mut extensions = vec![HsExtension::HsRsp(SrtHandshake {
            version: SRT_VERSION,
            flags,
            recv_latency_ms: recv_ms,
            send_latency_ms: send_ms,
        })];
        extensions.extend(kmrsp);
        let reply = self.handshake(HandshakeKind::Conclusion, extension, extensions);
        self.send(now, peer.socket_id, reply.clone());
        State::Responded(Box::new(Responded {
            peer,
            reply,
            recv_latency: Duration::from_millis(u64::from(recv_ms)),
            send_latency: Duration::from_millis(u64::from(send_ms)),
            peer_start: peer_start(now, timestamp),
            crypto,
        }))
    }

    fn connected(&mut self, now: Instant, n: Negotiated) -> Box<Connection> {
        Box::new(Connection::new(self.cfg.clone(), now, n))
    }
}

/// Local time at which the peer's clock read zero, from a packet's timestamp.
fn hsreq_present(hs: &Handshake) -> bool {
    hs.extensions
        .iter()
        .any(|e| matches!(e, HsExtension::HsReq(_)))
}

impl State {
    fn on_timeout(self, core: &mut Core, now: Instant) -> State {
        if now >= core.deadline {
            return core.fail(CallError::Timeout);
        }
        if now < core.next_send {
            return self;
        }
        let (dest, hs) = match &self {
            State::Waving => (0, core.wavehand()),
            State::Initiating(i) => (i.peer.socket_id, i.conclusion.clone()),
            State::Attending(peer) => (peer.socket_id, core.empty_conclusion()),
            State::Responded(r) => (r.peer.socket_id, r.reply.clone()),
            State::Finished => return self,
        };
        core.send(now, dest, hs);
        self
    }

    fn on_datagram(self, core: &mut Core, now: Instant, datagram: Bytes) -> State {
        let Ok(packet) = Packet::parse(datagram.clone()) else {
            return self;
        };
        let dest = packet.dest_socket();
        match packet {
            Packet::Control(ControlPacket {
                timestamp,
                body: Control::Handshake(hs),
                ..
            }) => {
                // Before the peer knows our socket id it addresses us as 0.
                if dest != 0 && dest != core.socket_id {
                    return self;
                }
                if let HandshakeKind::Rejection(code) = hs.kind {
                    return core.fail(CallError::Rejected(RejectReason::from_wire(code)));
                }
                self.on_handshake(core, now, timestamp, hs)
            }
            Packet::Control(ControlPacket {
                body: Control::Shutdown,
                ..
            }) if dest == core.socket_id => {
                // libsrt 1.5.1 sends a shutdown, not a rejection, when it refuses us.
                core.fail(CallError::Rejected(RejectReason::Peer))
            }
            _ if dest == core.socket_id => self.on_session_packet(core, now, datagram),
            _ => self,
        }
    }

    fn on_handshake(self, core: &mut Core, now: Instant, timestamp: u32, hs: Handshake) -> State {
        match self {
            State::Waving => first_contact(core, now, timestamp, hs),
            State::Initiating(i) => i.on_handshake(core, now, timestamp, hs),
            State::Attending(peer) => {
                if hs.socket_id != peer.socket_id {
                    return State::Attending(peer);
                }
                match hs.kind {
                    HandshakeKind::Conclusion if hsreq_present(&hs) => {
                        core.respond(now, timestamp, peer, &hs)
                    }
                    HandshakeKind::Wavehand | HandshakeKind::Conclusion => {
                        // The initiator has not seen our CONCLUSION yet.
                        let c = core.empty_conclusion();
                        core.send(now, peer.socket_id, c);
                        State::Attending(peer)
                    }
                    _ => State::Attending(peer),
                }
            }
            State::Responded(r) => r.on_handshake(core, now, hs),
            State::Finished => State::Finished,
        }
    }

    /// A data or control packet addressed to our socket: the peer considers itself connected.
    fn on_session_packet(self, core: &mut Core, now: Instant, datagram: Bytes) -> State {
        match self {
            // The initiator connected and sent this, but its AGREEMENT was lost: take this
            // packet as the agreement, and hand it to the session.
            State::Responded(r) => {
                let mut conn = r.connect(core, now);
                conn.handle_input(Input::Receive(now, datagram));
                core.outputs.push_back(RendezvousOutput::Connected(conn));
                State::Finished
            }
            other => other,
        }
    }
}

/// The first handshake from the peer: the contest decides our role.
fn first_contact(core: &mut Core, now: Instant, timestamp: u32, hs: Handshake) -> State {
    if !matches!(hs.kind, HandshakeKind::Wavehand | HandshakeKind::Conclusion) {
        // Agreements and inductions cannot come first; a stray one is ignored.
        return State::Waving;
    }
    if hs.version < 5 {
        return core.fail(CallError::Invalid(
            "the peer does not speak HSv5 (a version 4 rendezvous)",
        ));
    }
    if hs.syn_cookie == 0 {
        return core.fail(CallError::Invalid("the peer's handshake has no cookie"));
    }
    let peer = PeerHello::from(&hs);
    let Some(role) = cookie_contest(core.cookie, hs.syn_cookie) else {
        return core.refuse(now, peer.socket_id, RejectReason::RdvCookie);
    };
    core.role = Some(role);
    match role {
        // The peer's message is a WAVEAHAND or its empty CONCLUSION (it cannot have an
        // HSRSP before our HSREQ): either way, send ours.
        Role::Initiator => core.initiate(now, peer),
        Role::Responder if hs.kind == HandshakeKind::Conclusion && hsreq_present(&hs) => {
            core.respond(now, timestamp, peer, &hs)
        }
        Role::Responder => {
            let c = core.empty_conclusion();
            core.send(now, peer.socket_id, c);
            State::Attending(peer)
        }
    }
}

impl Initiating {
    fn on_handshake(
        self: Box<Self>,
        core: &mut Core,
        now: Instant,
        timestamp: u32,
        hs: Handshake,
    ) -> State {
        if hs.socket_id != self.peer.socket_id {
            return State::Initiating(self);
        }
        let rsp = hs.extensions.iter().find_map(|e| match e {
            HsExtension::HsRsp(h) => Some(h.clone()),
            _ => None,
        });
        match (hs.kind, rsp) {
            (HandshakeKind::Conclusion, Some(rsp)) => self.finish(core, now, timestamp, &hs, rsp),
            (HandshakeKind::Wavehand | HandshakeKind::Conclusion, _) => {
                // The responder has not seen our HSREQ yet.
                core.send(now, self.peer.socket_id, self.conclusion.clone());
                State::Initiating(self)
            }
            _ => State::Initiating(self),
        }
    }

    /// CONCLUSION + HSRSP: checks the key material answer, sends AGREEMENT, connects.
    fn finish(
        self: Box<Self>,
        core: &mut Core,
        now: Instant,
        timestamp: u32,
        hs: &Handshake,
        rsp: SrtHandshake,
    ) -> State {
        let Initiating { peer, crypto, .. } = *self;
        if let Some(c) = &crypto {
            let kmrsp = hs.extensions.iter().find_map(|e| match e {
                HsExtension::KmRsp(b) => Some(b),
                _ => None,
            });
            let verdict = match kmrsp {
                Some(b) if *b == c.key_material_message() => None,
                Some(b) => Some(match KmState::decode(b) {
                    Some(KmState::BadSecret) => RejectReason::BadSecret,
                    Some(_) => RejectReason::Unsecure,
                    None => {
                        return core.fail(CallError::Invalid(
                            "the KMRSP does not echo our key material",
                        ))
                    }
                }),
                // A responder without a passphrase that lets us in anyway.
                None => Some(RejectReason::Unsecure),
            };
            if let Some(reason) = verdict {
                return core.refuse(now, peer.socket_id, reason);
            }
        }
        let (recv_latency, send_latency) = latencies_from_hsrsp(&rsp, core.cfg.latency);
        let agreement = core.handshake(HandshakeKind::Agreement, 0, Vec::new());
        let agreement = core.datagram(now, peer.socket_id, agreement);
        let n = Negotiated {
            local_socket: core.socket_id,
            peer_socket: peer.socket_id,
            initial_seq: core.initial_seq,
            peer_initial_seq: peer.initial_seq,
            peer_flow_window: peer.flow_window.clamp(32, 1 << 20),
            recv_latency,
            send_latency,
            peer_start: peer_start(now, timestamp),
            start: core.start,
            crypto,
            entropy: core.entropy.clone(),
            // Sent again if the responder repeats its HSRSP (our AGREEMENT was lost).
            handshake_reply: Some(agreement.clone()),
        };
        core.outputs
            .push_back(RendezvousOutput::Transmit(agreement));
        let conn = core.connected(now, n);
        core.outputs.push_back(RendezvousOutput::Connected(conn));
        State::Finished
    }
}

impl Responded {
    fn on_handshake(self: Box<Self>, core: &mut Core, now: Instant, hs: Handshake) -> State {
        if hs.socket_id != self.peer.socket_id {
            return State::Responded(self);
        }
        match hs.kind {
            HandshakeKind::Agreement => {
                let conn = self.connect(core, now);
                core.outputs.push_back(RendezvousOutput::Connected(conn));
                State::Finished
            }
            HandshakeKind::Conclusion => {
                // Our HSRSP was lost: the initiator repeats its HSREQ.
                core.send(now, self.peer.socket_id, self.reply.clone());
                State::Responded(self)
            }
            _ => State::Responded(self),
        }
    }

    fn connect(self: Box<Self>, core: &mut Core, now: Instant) -> Box<Connection> {
        let r = *self;
        let n = Negotiated {
            local_socket: core.socket_id,
            peer_socket: r.peer.socket_id,
            initial_seq: core.initial_seq,
            peer_initial_seq: r.peer.initial_seq,
            peer_flow_window: r.peer.flow_window.clamp(32, 1 << 20),
            recv_latency: r.recv_latency,
            send_latency: r.send_latency,
            peer_start: r.peer_start,
            start: core.start,
            crypto: r.crypto,
            entropy: core.entropy.clone(),
            handshake_reply: None,
        };
        core.connected(now, n)
    }
}

#[cfg(test)]
mod tests {
    //! Two rendezvous peers joined by a simulated network, in virtual time.

    use std::collections::BTreeMap;

    use zerocast_codecs::ByteRope;

    use super::*;
    use crate::crypto::{KeyLen, Passphrase};
    use crate::{CloseReason, Event, Output};

    const A: usize = 0;
    const B: usize = 1;

    fn addr(side: usize) -> SocketAddr {
        if side == A {
            "10.0.0.1:5000".parse().unwrap()
        } else {
            "10.0.0.2:6000".parse().unwrap()
        }
    }

    struct Rng(u64);
    impl Rng {
        fn per_mille(&mut self) -> u32 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % 1000) as u32
        }
    }

    /// One direction of the network. Loss and duplication hit handshake packets only, so
    /// the data checks stay exact.
    #[derive(Clone, Copy)]
    struct Link {
        delay: Duration,
        loss: u32,
        duplicate: u32,
    }

    fn clean(delay_ms: u64) -> Link {
        Link {
            delay: Duration::from_millis(delay_ms),
            loss: 0,
            duplicate: 0,
        }
    }

    enum Peer {
        NotStarted,
        Meeting(Box<Rendezvous>),
        Up(Box<Connection>),
        Failed(CallError),
    }

    struct Side {
        cfg: SessionConfig,
        seed: u8,
        start_at: Instant,
        peer: Peer,
        wake: Option<Instant>,
        role: Option<Role>,
        got: Vec<Bytes>,
        closed: Option<CloseReason>,
        handshakes_sent: usize,
    }

    /// What the network drops on purpose, by handshake kind.
    type Filter = fn(usize, &Handshake) -> bool;

    struct Pair {
        t0: Instant,
        now: Instant,
        sides: [Side; 2],
        /// `links[i]`: towards side `i`.
        links: [Link; 2],
        in_flight: BTreeMap<(Instant, u64), (usize, Bytes)>,
        counter: u64,
        rng: Rng,
        drop: Option<Filter>,
        timeout: Duration,
    }

    fn cfg(latency_ms: u64, pass: Option<&str>) -> SessionConfig {
        SessionConfig {
            latency: Duration::from_millis(latency_ms),
            passphrase: pass.map(|p| Passphrase::new(p).unwrap()),
            key_len: KeyLen::Aes128,
            ..SessionConfig::default()
        }
    }

    impl Pair {
        fn new(a: SessionConfig, b: SessionConfig, links: [Link; 2]) -> Pair {
            let t0 = Instant::now();
            let side = |cfg, seed| Side {
                cfg,
                seed,
                start_at: t0,
                peer: Peer::NotStarted,
                wake: Some(t0),
                role: None,
                got: Vec::new(),
                closed: None,
                handshakes_sent: 0,
            };
            Pair {
                t0,
                now: t0,
                sides: [side(a, 1), side(b, 2)],
                links,
                in_flight: BTreeMap::new(),
                counter: 0,
                rng: Rng(0x9e37_79b9_7f4a_7c15),
                drop: None,
                timeout: Duration::from_secs(5),
            }
        }

        fn seeds(mut self, a: u8, b: u8, net: u64) -> Pair {
            self.sides[A].seed = a;
            self.sides[B].seed = b;
            self.rng = Rng(net.max(1));
            self
        }

        fn start_late(mut self, side: usize, after: Duration) -> Pair {
            self.sides[side].start_at = self.t0 + after;
            self.sides[side].wake = Some(self.t0 + after);
            self
        }

        fn send(&mut self, to: usize, data: Bytes) {
            let link = self.links[to];
            let hs = match Packet::parse(data.clone()) {
                Ok(Packet::Control(ControlPacket {
                    body: Control::Handshake(hs),
                    ..
                })) => Some(hs),
                _ => None,
            };
            if let Some(hs) = &hs {
                self.sides[1 - to].handshakes_sent += 1;
                if self.drop.is_some_and(|f| f(to, hs)) || self.rng.per_mille() < link.loss {
                    return;
                }
            }
            let copies = if hs.is_some() && self.rng.per_mille() < link.duplicate {
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.counter += 1;
                self.in_flight
                    .insert((self.now + link.delay, self.counter), (to, data.clone()));
            }
        }

        /// Drains side `i` into the network.
        fn drain(&mut self, i: usize) {
            loop {
                let peer = std::mem::replace(&mut self.sides[i].peer, Peer::NotStarted);
                let (peer, out) = match peer {
                    Peer::Meeting(mut rv) => match rv.poll_output() {
                        RendezvousOutput::Transmit(b) => (Peer::Meeting(rv), Some(b)),
                        RendezvousOutput::Timeout(at) => {
                            self.sides[i].wake = Some(at);
                            self.sides[i].peer = Peer::Meeting(rv);
                            return;
                        }
                        RendezvousOutput::Connected(c) => {
                            self.sides[i].role = rv.role();
                            (Peer::Up(c), None)
                        }
                        RendezvousOutput::Failed(e) => {
                            self.sides[i].role = rv.role();
                            self.sides[i].wake = None;
                            self.sides[i].peer = Peer::Failed(e);
                            return;
                        }
                    },
                    Peer::Up(mut c) => match c.poll_output() {
                        Output::Transmit(rope) => (Peer::Up(c), Some(rope.to_contiguous())),
                        Output::Event(Event::Data(p)) => {
                            self.sides[i].got.push(p);
                            (Peer::Up(c), None)
                        }
                        Output::Event(Event::Closed(r)) => {
                            self.sides[i].closed = Some(r);
                            (Peer::Up(c), None)
                        }
                        Output::Timeout(at) => {
                            self.sides[i].wake = Some(at);
                            self.sides[i].peer = Peer::Up(c);
                            return;
                        }
                    },
                    other => {
                        self.sides[i].peer = other;
                        return;
                    }
                };
                self.sides[i].peer = peer;
                if let Some(d) = out {
                    self.send(1 - i, d);
                }
            }
        }

        fn input(&mut self, i: usize, input: Input) {
            match &mut self.sides[i].peer {
                Peer::Meeting(rv) => rv.handle_input(input),
                Peer::Up(c) => c.handle_input(input),
                _ => {}
            }
            self.drain(i);
        }

        /// One step of virtual time: the earliest arrival or timer.
        fn step(&mut self) {
            let mut next = self.in_flight.keys().next().map(|k| k.0);
            for s in &self.sides {
                next = match (next, s.wake) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            let next = next.unwrap_or(self.now + Duration::from_millis(10));
            self.now = next.max(self.now);
            for i in [A, B] {
                if matches!(self.sides[i].peer, Peer::NotStarted)
                    && self.now >= self.sides[i].start_at
                {
                    let s = &self.sides[i];
                    let rv = Rendezvous::new(
                        s.cfg.clone(),
                        self.now,
                        addr(1 - i),
                        self.timeout,
                        Entropy::new([s.seed; 32]),
                    );
                    self.sides[i].peer = Peer::Meeting(Box::new(rv));
                    self.drain(i);
                }
            }
            while let Some((&key, _)) = self.in_flight.iter().next() {
                if key.0 > self.now {
                    break;
                }
                let (to, data) = self.in_flight.remove(&key).unwrap();
                // Nobody listens on a port before its side starts.
                self.input(to, Input::Receive(self.now, data));
            }
            for i in [A, B] {
                if self.sides[i].wake.is_some_and(|w| w <= self.now) {
                    self.input(i, Input::Timeout(self.now));
                }
            }
        }

        fn run_until(&mut self, limit: Duration, done: impl Fn(&Pair) -> bool) -> bool {
            let end = self.now + limit;
            while self.now < end {
                if done(self) {
                    return true;
                }
                self.step();
            }
            done(self)
        }

        fn both_up(&self) -> bool {
            self.sides.iter().all(|s| matches!(s.peer, Peer::Up(_)))
        }

        fn both_failed(&self) -> bool {
            self.sides.iter().all(|s| matches!(s.peer, Peer::Failed(_)))
        }

        fn conn(&mut self, i: usize) -> &mut Connection {
            match &mut self.sides[i].peer {
                Peer::Up(c) => c,
                _ => panic!("side {i} is not connected"),
            }
        }

        fn error(&self, i: usize) -> CallError {
            match &self.sides[i].peer {
                Peer::Failed(e) => e.clone(),
                _ => panic!("side {i} did not fail"),
            }
        }

        fn connect(&mut self) {
            assert!(
                self.run_until(Duration::from_secs(5), Pair::both_up),
                "not both connected"
            );
        }

        /// Both connected to each other, with opposite roles and the same latency.
        fn assert_matched(&mut self, latency: Duration) {
            let roles = [self.sides[A].role, self.sides[B].role];
            assert!(
                roles == [Some(Role::Initiator), Some(Role::Responder)]
                    || roles == [Some(Role::Responder), Some(Role::Initiator)],
                "roles {roles:?}"
            );
            let (a_local, a_peer) = (self.conn(A).local_socket(), self.conn(A).peer_socket());
            let (b_local, b_peer) = (self.conn(B).local_socket(), self.conn(B).peer_socket());
            assert_eq!((a_local, a_peer), (b_peer, b_local));
            for i in [A, B] {
                assert_eq!(self.conn(i).recv_latency(), latency, "side {i}");
                assert_eq!(self.conn(i).send_latency(), latency, "side {i}");
            }
        }

        /// Sends `n` payloads each way, 2 ms apart, and checks both sides got them all,
        /// in order.
        fn exchange(&mut self, n: u32) {
            let mut sent = 0;
            let mut next = self.now;
            let end = self.now + Duration::from_secs(5);
            while self.now < end {
                if sent < n && self.now >= next {
                    for i in [A, B] {
                        let now = self.now;
                        let tag = if i == A { 0 } else { 1 << 31 };
                        assert!(self.conn(i).send(now, payload(tag | sent)));
                        self.drain(i);
                    }
                    sent += 1;
                    next = self.now + Duration::from_millis(2);
                }
                if sent == n && self.sides.iter().all(|s| s.got.len() >= n as usize) {
                    break;
                }
                if sent < n {
                    // Never step past the next send.
                    let wake = self.sides[A].wake.map_or(next, |w| w.min(next));
                    self.sides[A].wake = Some(wake);
                }
                self.step();
            }
            for (i, tag) in [(A, 1u32 << 31), (B, 0)] {
                let want: Vec<Bytes> = (0..n).map(|k| payload(tag | k).to_contiguous()).collect();
                assert_eq!(self.sides[i].got, want, "side {i} received");
            }
        }
    }

    fn payload(i: u32) -> ByteRope {
        let mut v = vec![0x47u8; 1316];
        v[1..5].copy_from_slice(&i.to_be_bytes());
        ByteRope::from(v)
    }

    #[test]
    fn cookie_contest_gives_opposite_roles() {
        let cases = [
            (2u32, 1u32),
            (0x7FFF_FFFF, 0x8000_0000),
            (0xFFFF_FFFF, 1),
            (1, 0x8000_0001),
            (0x8000_0000, 0),
            (0x1234_5678, 0x9234_5678),
        ];
        for (x, y) in cases {
            let (rx, ry) = (cookie_contest(x, y), cookie_contest(y, x));
            assert!(rx.is_some() && ry.is_some() && rx != ry, "{x:#x} vs {y:#x}");
        }
        // A 32-bit two's-complement difference, as libsrt: 2 - 1 > 0, 1 - 0xFFFFFFFF = 2 > 0.
        assert_eq!(cookie_contest(2, 1), Some(Role::Initiator));
        assert_eq!(cookie_contest(1, 0xFFFF_FFFF), Some(Role::Initiator));
        assert_eq!(
            cookie_contest(0x7FFF_FFFF, 0x8000_0000),
            Some(Role::Responder)
        );
        assert_eq!(cookie_contest(7, 7), None);
    }

    #[test]
    fn simultaneous_start_connects_with_opposite_roles() {
        let mut p = Pair::new(cfg(120, None), cfg(120, None), [clean(20), clean(20)]);
        p.connect();
        // WAVEAHAND, CONCLUSION, CONCLUSION + HS*, AGREEMENT: a few round trips.
        assert!(
            p.now - p.t0 < Duration::from_millis(200),
            "{:?}",
            p.now - p.t0
        );
        p.assert_matched(Duration::from_millis(120));
        p.exchange(50);
    }

    #[test]
    fn both_roles_and_both_start_orders_connect() {
        for (a, b) in [(1, 2), (2, 1), (3, 4), (4, 3)] {
            for late in [A, B] {
                let mut p = Pair::new(cfg(120, None), cfg(120, None), [clean(10), clean(30)])
                    .seeds(a, b, 1)
                    .start_late(late, Duration::from_millis(700));
                p.connect();
                p.assert_matched(Duration::from_millis(120));
                p.exchange(20);
            }
        }
    }

    #[test]
    fn lossy_duplicating_handshake_still_connects() {
        let bad = Link {
            delay: Duration::from_millis(15),
            loss: 300,
            duplicate: 300,
        };
        for seed in 1..=24u8 {
            let mut p = Pair::new(cfg(120, None), cfg(120, None), [bad, bad]).seeds(
                seed,
                seed.wrapping_mul(7).wrapping_add(1),
                u64::from(seed) * 7919,
            );
            p.timeout = Duration::from_secs(20);
            assert!(
                p.run_until(Duration::from_secs(20), Pair::both_up),
                "seed {seed}: not both connected"
            );
            p.assert_matched(Duration::from_millis(120));
            p.exchange(10);
        }
    }

    #[test]
    fn lost_agreement_responder_connects_on_the_first_session_packet() {
        let mut p = Pair::new(cfg(120, None), cfg(120, None), [clean(10), clean(10)]);
        p.drop = Some(|_, hs| hs.kind == HandshakeKind::Agreement);
        let initiator_up = |p: &Pair| {
            p.sides
                .iter()
                .any(|s| s.role == Some(Role::Initiator) && matches!(s.peer, Peer::Up(_)))
        };
        assert!(p.run_until(Duration::from_secs(2), initiator_up));
        let (ini, rsp) = if p.sides[A].role == Some(Role::Initiator) {
            (A, B)
        } else {
            (B, A)
        };
        assert!(matches!(p.sides[rsp].peer, Peer::Meeting(_)));
        // The initiator's first data (or ACK, or keepalive) stands in for the agreement.
        let now = p.now;
        assert!(p.conn(ini).send(now, payload(9)));
        p.drain(ini);
        p.connect();
        assert!(p.now - now < Duration::from_millis(100));
        p.run_until(Duration::from_millis(500), |p| !p.sides[rsp].got.is_empty());
        // The packet that completed the handshake was delivered.
        assert_eq!(p.sides[rsp].got, vec![payload(9).to_contiguous()]);
        p.assert_matched(Duration::from_millis(120));
    }

    #[test]
    fn encrypted_rendezvous_carries_data_both_ways() {
        for (a, b) in [(1, 2), (2, 1)] {
            let pass = Some("rendezvous-secret-1");
            let mut p =
                Pair::new(cfg(120, pass), cfg(120, pass), [clean(10), clean(10)]).seeds(a, b, 3);
            p.connect();
            p.assert_matched(Duration::from_millis(120));
            assert!(p.conn(A).is_encrypted() && p.conn(B).is_encrypted());
            p.exchange(50);
        }
    }

    #[test]
    fn latency_is_the_larger_of_both_sides() {
        for (a, b) in [(1, 2), (2, 1)] {
            let mut p =
                Pair::new(cfg(120, None), cfg(300, None), [clean(10), clean(10)]).seeds(a, b, 5);
            p.connect();
            p.assert_matched(Duration::from_millis(300));
        }
    }

    #[test]
    fn mismatched_passphrase_fails_on_both_sides() {
        for (a, b) in [(1, 2), (2, 1)] {
            let mut p = Pair::new(
                cfg(120, Some("the-first-passphrase")),
                cfg(120, Some("another-passphrase")),
                [clean(10), clean(10)],
            )
            .seeds(a, b, 9);
            assert!(p.run_until(Duration::from_secs(2), Pair::both_failed));
            let (ini, rsp) = if p.sides[A].role == Some(Role::Initiator) {
                (A, B)
            } else {
                (B, A)
            };
            // The responder cannot unwrap the initiator's keys and says so.
            assert_eq!(p.error(rsp), CallError::Refused(RejectReason::BadSecret));
            assert_eq!(p.error(ini), CallError::Rejected(RejectReason::BadSecret));
        }
    }

    #[test]
    fn passphrase_on_one_side_only_is_unsecure() {
        for (a, b) in [(1, 2), (2, 1)] {
            let mut p = Pair::new(
                cfg(120, Some("only-one-side-has-it")),
                cfg(120, None),
                [clean(10), clean(10)],
            )
            .seeds(a, b, 11);
            assert!(p.run_until(Duration::from_secs(2), Pair::both_failed));
            let (ini, rsp) = if p.sides[A].role == Some(Role::Initiator) {
                (A, B)
            } else {
                (B, A)
            };
            // Whoever has no passphrase, the responder checks the HSREQ and refuses.
            assert_eq!(p.error(rsp), CallError::Refused(RejectReason::Unsecure));
            assert_eq!(p.error(ini), CallError::Rejected(RejectReason::Unsecure));
        }
    }

    #[test]
    fn silent_peer_times_out_after_waving() {
        let mut p = Pair::new(cfg(120, None), cfg(120, None), [clean(10), clean(10)])
            .start_late(B, Duration::from_secs(3600));
        p.timeout = Duration::from_secs(2);
        assert!(p.run_until(Duration::from_secs(3), |p| matches!(
            p.sides[A].peer,
            Peer::Failed(_)
        )));
        assert_eq!(p.error(A), CallError::Timeout);
        assert_eq!(p.now - p.t0, Duration::from_secs(2));
        // One WAVEAHAND every 250 ms.
        assert_eq!(p.sides[A].handshakes_sent, 8);
        assert_eq!(p.sides[A].role, None);
    }

    #[test]
    fn stray_datagrams_leave_a_waving_peer_waving() {
        let t0 = Instant::now();
        let mut rv = Rendezvous::new(
            cfg(120, None),
            t0,
            addr(B),
            Duration::from_secs(5),
            Entropy::new([5; 32]),
        );
        assert!(matches!(rv.poll_output(), RendezvousOutput::Transmit(_)));
        let other = Rendezvous::new(
            cfg(120, None),
            t0,
            addr(A),
            Duration::from_secs(5),
            Entropy::new([6; 32]),
        );
        let hs = |kind, dest| {
            let mut h = other.core.wavehand();
            h.kind = kind;
            encode(&Packet::Control(ControlPacket {
                timestamp: 0,
                dest_socket: dest,
                body: Control::Handshake(h),
            }))
        };
        let keepalive = encode(&Packet::Control(ControlPacket {
            timestamp: 0,
            dest_socket: rv.socket_id(),
            body: Control::KeepAlive,
        }));
        for d in [
            Bytes::from_static(b"not srt"),
            hs(HandshakeKind::Wavehand, 0xDEAD),
            hs(HandshakeKind::Induction, 0),
            hs(HandshakeKind::Agreement, 0),
            keepalive,
        ] {
            rv.handle_input(Input::Receive(t0, d));
            assert!(matches!(rv.state, State::Waving));
            assert!(matches!(rv.poll_output(), RendezvousOutput::Timeout(_)));
        }
        // The real thing moves it on.
        rv.handle_input(Input::Receive(t0, hs(HandshakeKind::Wavehand, 0)));
        assert!(rv.role().is_some());
        assert!(matches!(rv.poll_output(), RendezvousOutput::Transmit(_)));
    }
}
