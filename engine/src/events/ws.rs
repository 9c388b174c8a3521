//! WebSocket (RFC 6455) for the live-events endpoint, sans-IO: the opening handshake's accept
//! key, a decoder of client frame headers, an encoder of server frames, and [`ServerConn`],
//! the server side of an established connection (pings, pongs, the closing handshake).
//!
//! The endpoint only sends: each event is one unmasked text frame. Client data messages are
//! read (their framing is checked) and discarded. Nothing here reads a clock or a socket.
//!
//! # Drive loop
//!
//! After every input, drain [`ServerConn::poll_output`] until it returns
//! [`Output::Timeout`] (sleep until then, or until bytes or something to send arrive) or
//! [`Output::Closed`] (flush what was transmitted, then close the TCP connection: RFC 6455
//! §7.1.1 has the server close it first).
//!
//! ```no_run
//! use std::time::Instant;
//! use zerocast_engine::events::ws::{Input, Output, ServerConn};
//!
//! let mut ws = ServerConn::new(Instant::now());
//! ws.send_text(br#"{"type":"stream.live"}"#);
//! ws.handle_input(Input::Receive(Instant::now(), &[0x89, 0x80, 1, 2, 3, 4]));
//! loop {
//!     match ws.poll_output() {
//!         Output::Transmit(bytes) => { /* write to the socket */ }
//!         Output::Event(event) => { /* log it */ }
//!         Output::Timeout(at) => { /* wait until `at`, then Input::Timeout */ break; }
//!         Output::Closed => { /* close the socket */ break; }
//!     }
//! }
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};

/// Largest client frame payload accepted; a bigger one closes the connection with 1009.
pub const MAX_FRAME_PAYLOAD: usize = 64 * 1024;
/// The server pings a client this often.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// A client that sent nothing, not even a pong, for this long is closed (1008).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3 * PING_INTERVAL.as_secs());
/// After sending Close, how long the client has to answer with its own.
/// (Shorter than the time shards give connections to finish at shutdown.)
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (§4.2.2: base64 of the SHA-1 of
/// the key followed by the GUID).
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: base64 of 16 bytes (§4.1).
pub fn valid_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

/// Frame opcodes (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// 0x0: a continuation of a fragmented message.
    Continuation,
    /// 0x1: text (UTF-8).
    Text,
    /// 0x2: binary.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl Opcode {
    fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A rule of RFC 6455 a client frame broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// RSV1-3 set, but no extension was negotiated (§5.2).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// An opcode §5.2 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// Client frames must be masked (§5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// Control frames cannot be fragmented (§5.5).
    #[error("fragmented control frame")]
    FragmentedControl,
    /// Control frame payloads are at most 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes (at most 125)")]
    ControlTooLong(u64),
    /// The payload length must use the fewest bytes (§5.2).
    #[error("payload length {0} not minimally encoded")]
    NonMinimalLength(u64),
    /// The 64-bit length's most significant bit must be 0 (§5.2).
    #[error("64-bit payload length with its most significant bit set")]
    LengthHighBit,
    /// Larger than [`MAX_FRAME_PAYLOAD`].
    #[error("frame payload of {len} bytes (at most {max})")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A continuation frame with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame while a fragmented message is unfinished (§5.4).
    #[error("new message while a fragmented one is unfinished")]
    UnfinishedMessage,
    /// A Close payload is empty or at least a 2-byte code (§5.5.1).
    #[error("close frame with a 1-byte payload")]
    CloseOneByte,
    /// A code §7.4 does not allow on the wire.
    #[error("invalid close code {0}")]
    CloseCode(u16),
    /// The Close reason must be UTF-8 (§5.5.1).
    #[error("close reason is not UTF-8")]
    CloseReasonUtf8,
}

impl Violation {
    /// The status code the server closes with (§7.4.1).
    pub fn close_code(&self) -> u16 {
        match self {
            Violation::TooLarge { .. } => 1009,
            Violation::CloseReasonUtf8 => 1007,
            _ => 1002,
        }
    }
}

/// Why a frame header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// More bytes are needed (at least `needed` more).
    #[error("incomplete frame header: {needed} more bytes needed")]
    Incomplete {
        /// Bytes still missing.
        needed: usize,
    },
    /// The bytes break a rule.
    #[error("invalid frame at byte {offset}: {what}")]
    Invalid {
        /// Offset of the offending byte, from the start of the frame.
        offset: usize,
        /// The rule.
        what: Violation,
    },
}

/// The header of a client frame (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// What the frame is.
    pub opcode: Opcode,
    /// The masking key (client frames are always masked).
    pub mask: [u8; 4],
    /// Payload length.
    pub len: usize,
    /// Header length (2 to 14 bytes); the payload starts here.
    pub header_len: usize,
}

/// Decodes the header of a client frame at the start of `buf`, checking every rule that
/// does not depend on earlier frames; payloads over `max_payload` are refused before they
/// arrive.
pub fn decode_header(buf: &[u8], max_payload: usize) -> Result<FrameHeader, DecodeError> {
    let invalid = |offset, what| Err(DecodeError::Invalid { offset, what });
    if buf.len() < 2 {
        return Err(DecodeError::Incomplete {
            needed: 2 - buf.len(),
        });
    }
    //  0                   1
    //  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
    // +-+-+-+-+-------+-+-------------+-------------------------------+
    // |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    // |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    // |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    // | |1|2|3|       |K|             |                               |
    // +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    // |     Extended payload length continued, if payload len == 127  |
    // + - - - - - - - - - - - - - - - +-------------------------------+
    // |                               |Masking-key, if MASK set to 1  |
    // +-------------------------------+-------------------------------+
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return invalid(0, Violation::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let Some(opcode) = Opcode::from_u8(b0 & 0x0F) else {
        return invalid(0, Violation::ReservedOpcode(b0 & 0x0F));
    };
    if b1 & 0x80 == 0 {
        return invalid(1, Violation::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return invalid(0, Violation::FragmentedControl);
        }
        if len7 > 125 {
            // The extended length is not needed to refuse it; report what it announces when
            // it is there.
            let len = extended_len(buf, len7).map_or(u64::from(len7), |(l, _)| l);
            return invalid(1, Violation::ControlTooLong(len));
        }
    }
    let (len, len_bytes) = match len7 {
        126 | 127 => {
            let Some((len, n)) = extended_len(buf, len7) else {
                let n = if len7 == 126 { 2 } else { 8 };
                return Err(DecodeError::Incomplete {
                    needed: 2 + n + 4 - buf.len(),
                });
            };
            if len7 == 127 && len >> 63 != 0 {
                return invalid(2, Violation::LengthHighBit);
            }
            let minimal = if len7 == 126 {
                len >= 126
            } else {
                len > 0xFFFF
            };
            if !minimal {
                return invalid(2, Violation::NonMinimalLength(len));
            }
            (len, n)
        }
        l => (u64::from(l), 0),
    };
    if len > max_payload as u64 {
        return invalid(
            1,
            Violation::TooLarge {
                len,
                max: max_payload,
            },
        );
    }
    let header_len = 2 + len_bytes + 4;
    if buf.len() < header_len {
        return Err(DecodeError::Incomplete {
            needed: header_len - buf.len(),
        });
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + len_bytes..header_len]);
    Ok(FrameHeader {
        fin,
        opcode,
        mask,
        // At most `max_payload`, a usize.
        len: len as usize,
        header_len,
    })
}

/// The 16- or 64-bit extended length and its size, when its bytes are there.
fn extended_len(buf: &[u8], len7: u8) -> Option<(u64, usize)> {
    match len7 {
        126 => {
            let b = buf.get(2..4)?;
            Some((u64::from(u16::from_be_bytes([b[0], b[1]])), 2))
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            Some((u64::from_be_bytes(b), 8))
        }
        _ => None,
    }
}

/// XORs `payload` with `mask` (§5.3); applying it twice restores the bytes.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Encodes one unmasked, final server frame.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(10 + payload.len());
    put_header(&mut out, opcode, payload.len(), false);
    out.put_slice(payload);
    out.freeze()
}

/// Encodes one masked, final frame as a client sends it (tests, fuzzing, a future client).
pub fn encode_masked_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Bytes {
    let mut out = BytesMut::with_capacity(14 + payload.len());
    put_header(&mut out, opcode, payload.len(), true);
    out.put_slice(&mask);
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], mask);
    out.freeze()
}

fn put_header(out: &mut BytesMut, opcode: Opcode, len: usize, masked: bool) {
    out.put_u8(0x80 | opcode.as_u8());
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.put_u8(mask_bit | 126);
        out.put_u16(l);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
}

/// A Close frame's payload: the code and a reason cut to fit a control frame.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// Whether a received Close may carry `code` (§7.4.1, §7.4.2, and the IANA registry's
/// 1012-1014).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Inputs of a [`ServerConn`].
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes from the client, at the given time.
    Receive(Instant, &'a [u8]),
    /// The time is now (at or after the deadline of the last [`Output::Timeout`]).
    Timeout(Instant),
}

/// What a [`ServerConn`] has for its driver.
#[derive(Debug)]
pub enum Output {
    /// Bytes to write to the client.
    Transmit(Bytes),
    /// Something to report.
    Event(WsEvent),
    /// Nothing more until this time (or new input).
    Timeout(Instant),
    /// The connection is over: write what was transmitted, then close the socket.
    Closed,
}

/// What happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsEvent {
    /// The client closed (its Close was answered).
    PeerClosed {
        /// Its status code, if it sent one.
        code: Option<u16>,
        /// Its reason.
        reason: String,
    },
    /// The client broke the protocol; the server sent Close with the violation's code.
    ProtocolError {
        /// Offset of the offending byte in the client's byte stream.
        offset: u64,
        /// The rule.
        what: Violation,
    },
    /// The client sent nothing for [`PEER_TIMEOUT`]; the server sent Close (1008).
    PeerSilent,
    /// The client did not answer the server's Close within [`CLOSE_TIMEOUT`].
    CloseTimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// The server sent Close and waits for the client's.
    Closing,
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    /// Send the next ping.
    Ping = 0,
    /// The client has been silent too long.
    PeerSilence = 1,
    /// The client's Close did not come.
    CloseWait = 2,
}

const TIMERS: [Timer; 3] = [Timer::Ping, Timer::PeerSilence, Timer::CloseWait];

/// The server side of an established WebSocket connection.
#[derive(Debug)]
pub struct ServerConn {
    state: State,
    /// Received bytes not yet consumed (at most one frame header and payload plus one read).
    inbuf: Vec<u8>,
    /// Bytes consumed before `inbuf[0]` (for error offsets).
    consumed: u64,
    /// A fragmented data message is in progress.
    in_message: bool,
    transmits: VecDeque<Bytes>,
    events: VecDeque<WsEvent>,
    timers: [Option<Instant>; 3],
    pings_sent: u64,
}

impl ServerConn {
    /// A connection whose handshake completed at `now`.
    pub fn new(now: Instant) -> Self {
        let mut timers = [None; 3];
        timers[Timer::Ping as usize] = Some(now + PING_INTERVAL);
        timers[Timer::PeerSilence as usize] = Some(now + PEER_TIMEOUT);
        ServerConn {
            state: State::Open,
            inbuf: Vec::new(),
            consumed: 0,
            in_message: false,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers,
            pings_sent: 0,
        }
    }

    /// Whether events may still be sent (no Close sent or received).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the connection is over.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Pings sent so far.
    pub fn pings_sent(&self) -> u64 {
        self.pings_sent
    }

    /// Queues `payload` (UTF-8) as one text frame; `false` when the connection is closing.
    pub fn send_text(&mut self, payload: &[u8]) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.transmits
            .push_back(encode_frame(Opcode::Text, payload));
        true
    }

    /// Starts the closing handshake with `code` (1001 when the server stops).
    pub fn close(&mut self, now: Instant, code: u16, reason: &str) {
        if self.state != State::Open {
            return;
        }
        self.transmits
            .push_back(encode_frame(Opcode::Close, &close_payload(code, reason)));
        self.state = State::Closing;
        self.timers = [None; 3];
        self.timers[Timer::CloseWait as usize] = Some(now + CLOSE_TIMEOUT);
    }

    /// Feeds an input; then drain [`poll_output`](Self::poll_output).
    pub fn handle_input(&mut self, input: Input<'_>) {
        match input {
            Input::Receive(now, bytes) => self.receive(now, bytes),
            Input::Timeout(now) => self.timeout(now),
        }
    }

    /// The next thing for the driver.
    pub fn poll_output(&mut self) -> Output {
        if let Some(t) = self.transmits.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(e) = self.events.pop_front() {
            return Output::Event(e);
        }
        if self.state == State::Closed {
            return Output::Closed;
        }
        match self.timers.iter().flatten().min() {
            Some(t) => Output::Timeout(*t),
            // Every state but Closed keeps a timer; this is not reached.
            None => Output::Closed,
        }
    }

    fn timeout(&mut self, now: Instant) {
        for timer in TIMERS {
            let due = self.timers[timer as usize].is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            self.timers[timer as usize] = None;
            match timer {
                Timer::Ping => {
                    if self.state == State::Open {
                        self.pings_sent += 1;
                        let payload = self.pings_sent.to_be_bytes();
                        self.transmits
                            .push_back(encode_frame(Opcode::Ping, &payload));
                        self.timers[Timer::Ping as usize] = Some(now + PING_INTERVAL);
                    }
                }
                Timer::PeerSilence => {
                    self.events.push_back(WsEvent::PeerSilent);
                    self.close(now, 1008, "no pong");
                }
                Timer::CloseWait => {
                    self.events.push_back(WsEvent::CloseTimedOut);
                    self.state = State::Closed;
                }
            }
        }
    }

    fn receive(&mut self, now: Instant, bytes: &[u8]) {
        if self.state == State::Closed || bytes.is_empty() {
            return;
        }
        if self.state == State::Open {
            self.timers[Timer::PeerSilence as usize] = Some(now + PEER_TIMEOUT);
        }
        self.inbuf.extend_from_slice(bytes);
        let mut pos = 0;
        while self.state != State::Closed {
            let head = match decode_header(&self.inbuf[pos..], MAX_FRAME_PAYLOAD) {
                Ok(h) => h,
                Err(DecodeError::Incomplete { .. }) => break,
                Err(DecodeError::Invalid { offset, what }) => {
                    self.fail(self.consumed + (pos + offset) as u64, what);
                    break;
                }
            };
            let end = pos + head.header_len + head.len;
            if self.inbuf.len() < end {
                break;
            }
            let start = pos + head.header_len;
            let frame_offset = self.consumed + pos as u64;
            pos = end;
            if let Err(what) = self.frame(head, start, end) {
                self.fail(frame_offset, what);
            }
        }
        if self.state == State::Closed {
            self.inbuf = Vec::new();
        } else {
            self.inbuf.drain(..pos);
            self.consumed += pos as u64;
        }
    }

    /// Handles one complete frame whose payload is `inbuf[start..end]`.
    fn frame(&mut self, head: FrameHeader, start: usize, end: usize) -> Result<(), Violation> {
        match head.opcode {
            Opcode::Continuation => {
                if !self.in_message {
                    return Err(Violation::UnexpectedContinuation);
                }
                self.in_message = !head.fin;
            }
            Opcode::Text | Opcode::Binary => {
                if self.in_message {
                    return Err(Violation::UnfinishedMessage);
                }
                self.in_message = !head.fin;
            }
            Opcode::Ping => {
                if self.state == State::Open {
                    let payload = &mut self.inbuf[start..end];
                    apply_mask(payload, head.mask);
                    let pong = encode_frame(Opcode::Pong, payload);
                    self.transmits.push_back(pong);
                }
            }
            Opcode::Pong => {}
            Opcode::Close => {
                let payload = &mut self.inbuf[start..end];
                apply_mask(payload, head.mask);
                let (code, reason) = match payload.len() {
                    0 => (None, String::new()),
                    1 => return Err(Violation::CloseOneByte),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !valid_close_code(code) {
                            return Err(Violation::CloseCode(code));
                        }
                        let reason = std::str::from_utf8(&payload[2..])
                            .map_err(|_| Violation::CloseReasonUtf8)?;
                        (Some(code), reason.to_owned())
                    }
                };
                if self.state == State::Open {
                    // Echo the code (§5.5.1); an empty Close is answered with an empty one.
                    let echo = code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
                    self.transmits.push_back(encode_frame(Opcode::Close, &echo));
                    self.events.push_back(WsEvent::PeerClosed { code, reason });
                }
                self.state = State::Closed;
            }
        }
        Ok(())
    }

    /// Fails the connection (§7.1.7): Close with the violation's code, no waiting for the
    /// client's.
    fn fail(&mut self, offset: u64, what: Violation) {
        if self.state == State::Open {
            let payload = close_payload(what.close_code(), &what.to_string());
            self.transmits
                .push_back(encode_frame(Opcode::Close, &payload));
        }
        self.events
            .push_back(WsEvent::ProtocolError { offset, what });
        self.state = State::Closed;
    }
}

/// Fuzzing entry point: the first byte chooses how the rest is split into reads; the
/// server connection must never panic, must keep its buffer bounded, must send nothing after
/// it closed, and every frame it sends must be a well-formed server frame.
#[doc(hidden)]
pub fn fuzz_ws_frames(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(split).max(1);
    let start = Instant::now();
    let mut ws = ServerConn::new(start);
    let mut closed = false;
    for (i, chunk) in rest.chunks(step).enumerate() {
        // Virtual time: each read comes 7 s after the previous one, so timers fire too.
        let now = start + Duration::from_secs(7 * i as u64);
        ws.handle_input(Input::Timeout(now));
        ws.handle_input(Input::Receive(now, chunk));
        ws.send_text(b"{}");
        assert!(ws.inbuf.len() <= 14 + MAX_FRAME_PAYLOAD + step);
        loop {
            match ws.poll_output() {
                Output::Transmit(b) => {
                    assert!(!closed, "sent after Closed");
                    check_server_frame(&b);
                }
                Output::Event(_) => {}
                Output::Timeout(t) => {
                    assert!(t > now);
                    break;
                }
                Output::Closed => {
                    closed = true;
                    break;
                }
            }
        }
    }
    // Every frame header decodes the same way on its own as well.
    let _ = decode_header(rest, MAX_FRAME_PAYLOAD);
}

/// Panics unless `b` is exactly one final, unmasked frame with a consistent length.
fn check_server_frame(b: &[u8]) {
    assert!(b.len() >= 2 && b[0] & 0x80 != 0 && b[1] & 0x80 == 0);
    let (len, hl) = match b[1] & 0x7F {
        126 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()),
            10,
        ),
        l => (u64::from(l), 2),
    };
    assert_eq!(hl + len, b.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn drain(ws: &mut ServerConn) -> (Vec<Bytes>, Vec<WsEvent>, Option<Instant>) {
        let (mut tx, mut ev) = (Vec::new(), Vec::new());
        loop {
            match ws.poll_output() {
                Output::Transmit(b) => tx.push(b),
                Output::Event(e) => ev.push(e),
                Output::Timeout(t) => return (tx, ev, Some(t)),
                Output::Closed => return (tx, ev, None),
            }
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        // §1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("dGhlIHNhbXBsZQ=="));
        assert!(!valid_key("not base64!"));
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        // §5.7: an unmasked "Hello".
        assert_eq!(
            &encode_frame(Opcode::Text, b"Hello")[..],
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        let f = encode_frame(Opcode::Binary, &[0u8; 256]);
        assert_eq!(&f[..4], &[0x82, 0x7E, 0x01, 0x00]);
        let f = encode_frame(Opcode::Binary, &vec![0u8; 65536]);
        assert_eq!(&f[..10], &[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        check_server_frame(&f);
    }

    #[test]
    fn masked_frames_round_trip() {
        // §5.7: a masked "Hello".
        let f = encode_masked_frame(Opcode::Text, b"Hello", MASK);
        assert_eq!(
            &f[..],
            &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let f = encode_masked_frame(Opcode::Binary, &payload, MASK);
            let h = decode_header(&f, 1 << 20).unwrap();
            assert_eq!(
                (h.fin, h.opcode, h.len, h.mask),
                (true, Opcode::Binary, len, MASK)
            );
            let mut p = f[h.header_len..].to_vec();
            apply_mask(&mut p, h.mask);
            assert_eq!(p, payload);
            // Every shorter prefix of the header is incomplete, never invalid.
            for cut in 0..h.header_len {
                assert!(matches!(
                    decode_header(&f[..cut], 1 << 20),
                    Err(DecodeError::Incomplete { .. })
                ));
            }
        }
    }

    #[test]
    fn header_rules_are_enforced() {
        let inv = |b: &[u8]| match decode_header(b, MAX_FRAME_PAYLOAD) {
            Err(DecodeError::Invalid { what, .. }) => what,
            other => panic!("{b:?}: {other:?}"),
        };
        assert_eq!(inv(&[0x81, 0x05]), Violation::Unmasked);
        assert_eq!(inv(&[0xC1, 0x85]), Violation::ReservedBits);
        assert_eq!(inv(&[0x83, 0x80]), Violation::ReservedOpcode(3));
        assert_eq!(inv(&[0x09, 0x80]), Violation::FragmentedControl);
        assert_eq!(
            inv(&[0x89, 0xFE, 0x00, 0x7E]),
            Violation::ControlTooLong(126)
        );
        assert_eq!(
            inv(&[0x82, 0xFE, 0x00, 0x10]),
            Violation::NonMinimalLength(16)
        );
        assert_eq!(
            inv(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            Violation::NonMinimalLength(0xFFFF)
        );
        assert_eq!(
            inv(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Violation::LengthHighBit
        );
        assert_eq!(
            inv(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 1]),
            Violation::TooLarge {
                len: 65537,
                max: MAX_FRAME_PAYLOAD
            }
        );
        assert_eq!(Violation::Unmasked.close_code(), 1002);
        assert_eq!(Violation::TooLarge { len: 1, max: 0 }.close_code(), 1009);
    }

    #[test]
    fn pings_are_answered_with_their_payload_and_byte_by_byte_input_works() {
        let t0 = Instant::now();
        let mut ws = ServerConn::new(t0);
        let ping = encode_masked_frame(Opcode::Ping, b"hi", MASK);
        for b in ping.iter() {
            ws.handle_input(Input::Receive(t0, std::slice::from_ref(b)));
        }
        let (tx, ev, _) = drain(&mut ws);
        assert!(ev.is_empty());
        assert_eq!(tx, vec![encode_frame(Opcode::Pong, b"hi")]);
    }

    #[test]
    fn events_are_text_frames_and_fragmented_client_messages_are_discarded() {
        let t0 = Instant::now();
        let mut ws = ServerConn::new(t0);
        assert!(ws.send_text(br#"{"type":"stream.live"}"#));
        let mut input = Vec::new();
        let mut first = encode_masked_frame(Opcode::Text, b"hel", MASK).to_vec();
        first[0] &= 0x7F; // not final
        input.extend_from_slice(&first);
        input.extend_from_slice(&encode_masked_frame(Opcode::Ping, b"", MASK)); // interleaved
        input.extend_from_slice(&encode_masked_frame(Opcode::Continuation, b"lo", MASK));
        ws.handle_input(Input::Receive(t0, &input));
        let (tx, ev, _) = drain(&mut ws);
        assert!(ev.is_empty(), "{ev:?}");
        assert_eq!(
            tx,
            vec![
                encode_frame(Opcode::Text, br#"{"type":"stream.live"}"#),
                encode_frame(Opcode::Pong, b"")
            ]
        );
        // A continuation with nothing to continue fails the connection.
        ws.handle_input(Input::Receive(
            t0,
            &encode_masked_frame(Opcode::Continuation, b"x", MASK),
        ));
        let (tx, ev, next) = drain(&mut ws);
        assert_eq!(tx.len(), 1);
        assert_eq!(&tx[0][..4], &[0x88, tx[0][1], 0x03, 0xEA]); // Close 1002
        assert!(matches!(
            ev[..],
            [WsEvent::ProtocolError {
                what: Violation::UnexpectedContinuation,
                ..
            }]
        ));
        assert_eq!(next, None);
    }

    #[test]
    fn a_client_close_is_echoed_and_ends_the_connection() {
        let t0 = Instant::now();
        let mut ws = ServerConn::new(t0);
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye");
        ws.handle_input(Input::Receive(
            t0,
            &encode_masked_frame(Opcode::Close, &payload, MASK),
        ));
        let (tx, ev, next) = drain(&mut ws);
        assert_eq!(tx, vec![encode_frame(Opcode::Close, &[0x03, 0xE8])]);
        assert_eq!(
            ev,
            vec![WsEvent::PeerClosed {
                code: Some(1000),
                reason: "bye".into()
            }]
        );
        assert_eq!(next, None);
        assert!(!ws.send_text(b"late"));
        ws.handle_input(Input::Receive(t0, b"more bytes"));
        assert!(drain(&mut ws).0.is_empty());
    }

    #[test]
    fn bad_close_frames_fail_with_the_right_code() {
        let t0 = Instant::now();
        for (payload, code) in [
            (vec![0x03], 1002u16),
            (1005u16.to_be_bytes().to_vec(), 1002),
            (vec![0x03, 0xE8, 0xFF], 1007),
        ] {
            let mut ws = ServerConn::new(t0);
            ws.handle_input(Input::Receive(
                t0,
                &encode_masked_frame(Opcode::Close, &payload, MASK),
            ));
            let (tx, _, next) = drain(&mut ws);
            assert_eq!(&tx[0][2..4], &code.to_be_bytes(), "{payload:?}");
            assert_eq!(next, None);
        }
    }

    #[test]
    fn unmasked_and_oversized_frames_close_with_1002_and_1009() {
        let t0 = Instant::now();
        let mut ws = ServerConn::new(t0);
        ws.handle_input(Input::Receive(t0, &encode_frame(Opcode::Text, b"x")));
        let (tx, ev, next) = drain(&mut ws);
        assert_eq!(&tx[0][2..4], &1002u16.to_be_bytes());
        assert!(matches!(
            ev[..],
            [WsEvent::ProtocolError {
                offset: 1,
                what: Violation::Unmasked
            }]
        ));
        assert_eq!(next, None);

        let mut ws = ServerConn::new(t0);
        let ok = encode_masked_frame(Opcode::Pong, b"", MASK);
        let mut input = ok.to_vec();
        // Only the header of a 1 MiB frame: refused before its payload arrives.
        input.extend_from_slice(&[0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 0]);
        ws.handle_input(Input::Receive(t0, &input));
        let (tx, ev, _) = drain(&mut ws);
        assert_eq!(&tx[0][2..4], &1009u16.to_be_bytes());
        assert!(matches!(
            ev[..],
            [WsEvent::ProtocolError {
                offset: 7,
                what: Violation::TooLarge { .. }
            }]
        ));
    }

    #[test]
    fn pings_every_interval_and_a_silent_client_is_closed() {
        let t0 = Instant::now();
        let mut ws = ServerConn::new(t0);
        let (_, _, next) = drain(&mut ws);
        assert_eq!(next, Some(t0 + PING_INTERVAL));
        // A spurious wake-up does nothing.
        ws.handle_input(Input::Timeout(t0 + Duration::from_secs(1)));
        assert!(drain(&mut ws).0.is_empty());
        let t1 = t0 + PING_INTERVAL;
        ws.handle_input(Input::Timeout(t1));
        let (tx, _, next) = drain(&mut ws);
        assert_eq!(tx, vec![encode_frame(Opcode::Ping, &1u64.to_be_bytes())]);
        assert_eq!(next, Some(t1 + PING_INTERVAL));
        // A pong keeps it alive past PEER_TIMEOUT from the start.
        ws.handle_input(Input::Receive(
            t1,
            &encode_masked_frame(Opcode::Pong, &1u64.to_be_bytes(), MASK),
        ));
        for n in [2, 3] {
            ws.handle_input(Input::Timeout(t0 + n * PING_INTERVAL));
        }
        assert!(t0 + 3 * PING_INTERVAL >= t0 + PEER_TIMEOUT);
        assert!(ws.is_open());
        // Then silence: Close 1008, and the connection ends when the client does not answer.
        let silent = t1 + PEER_TIMEOUT;
        ws.handle_input(Input::Timeout(silent));
        let (tx, ev, next) = drain(&mut ws);
        assert!(ev.contains(&WsEvent::PeerSilent));
        assert_eq!(&tx.last().unwrap()[..4], &[0x88, 9, 0x03, 0xF0]);
        assert_eq!(next, Some(silent + CLOSE_TIMEOUT));
        ws.handle_input(Input::Timeout(silent + CLOSE_TIMEOUT));
        let (_, ev, next) = drain(&mut ws);
        assert_eq!(ev, vec![WsEvent::CloseTimedOut]);
        assert_eq!(next, None);
    }

    #[test]
    fn a_server_close_ends_when_the_client_answers() {
        let t0 = Instant::now();
        let mut ws = ServerConn::new(t0);
        ws.close(t0, 1001, "server shutting down");
        assert!(!ws.is_open());
        assert!(!ws.send_text(b"{}"));
        let (tx, _, next) = drain(&mut ws);
        assert_eq!(&tx[0][2..4], &1001u16.to_be_bytes());
        assert_eq!(&tx[0][4..], b"server shutting down");
        assert_eq!(next, Some(t0 + CLOSE_TIMEOUT));
        ws.handle_input(Input::Receive(
            t0,
            &encode_masked_frame(Opcode::Close, &1001u16.to_be_bytes(), MASK),
        ));
        let (tx, ev, next) = drain(&mut ws);
        assert!(tx.is_empty() && ev.is_empty());
        assert_eq!(next, None);
    }

    /// Seeds (`fuzz/seeds/ws_frames/`) and fuzzer regressions (`fuzz/regressions/ws_frames/`).
    fn corpus() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for kind in ["seeds", "regressions"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fuzz")
                .join(kind)
                .join("ws_frames");
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            files.sort();
            for f in files {
                let data = std::fs::read(&f).unwrap();
                out.push((f.display().to_string(), data));
            }
        }
        out
    }

    #[test]
    fn fuzz_corpus_replays() {
        let corpus = corpus();
        assert!(!corpus.is_empty(), "no seeds in fuzz/seeds/ws_frames");
        for (_, data) in corpus {
            fuzz_ws_frames(&data);
        }
    }

    #[test]
    fn a_recorded_python_websockets_session_is_understood() {
        // websockets 15.0.1 answering a server ping, pinging, sending a 180-byte text, a
        // 300-byte binary and a fragmented text, then closing with 1000 "bye".
        let (_, seed) = corpus()
            .into_iter()
            .find(|(name, _)| name.ends_with("websockets-15.0.1-client-session-reads-1.bin"))
            .expect("the recorded seed");
        let t0 = Instant::now();
        for step in [1, 7, 1000] {
            let mut ws = ServerConn::new(t0);
            for chunk in seed[1..].chunks(step) {
                ws.handle_input(Input::Receive(t0, chunk));
            }
            let (tx, ev, next) = drain(&mut ws);
            assert_eq!(
                ev,
                vec![WsEvent::PeerClosed {
                    code: Some(1000),
                    reason: "bye".into()
                }]
            );
            assert_eq!(
                tx,
                vec![
                    encode_frame(Opcode::Pong, b"zerocast"),
                    encode_frame(Opcode::Close, &1000u16.to_be_bytes())
                ]
            );
            assert_eq!(next, None);
        }
    }

    #[test]
    fn fuzz_entry_point_survives_samples() {
        fuzz_ws_frames(&[]);
        fuzz_ws_frames(&[3, 0x89, 0x80, 1, 2, 3, 4, 0x81, 0x05]);
        let mut big = vec![1u8];
        big.extend_from_slice(&encode_masked_frame(Opcode::Text, &[b'a'; 300], MASK));
        big.extend_from_slice(&encode_masked_frame(Opcode::Close, &[0x03, 0xE8], MASK));
        fuzz_ws_frames(&big);
        big[0] = 255;
        fuzz_ws_frames(&big);
    }
}
