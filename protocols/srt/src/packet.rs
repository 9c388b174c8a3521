//! The SRT wire format (SRT spec section 3): one UDP datagram is one packet, a data packet or
//! a control packet, both behind a 16-byte header.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|                    Packet Sequence Number                   |   data (3.1)
//! |P P|O|K K|R|                   Message Number                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |1|        Control Type         |            Subtype            |   control (3.2)
//! |                   Type-specific Information                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           Timestamp                           |   both
//! |                     Destination Socket ID                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |        Payload (data) / Control Information Field (control)   |
//! ```
//!
//! Parsing is zero copy: [`Packet::parse`] takes the datagram as [`Bytes`] and data payloads
//! (and the raw byte fields of control packets) are slices of it. Every length comes from the
//! datagram, and every read is checked against what is left of it, so no input can make the
//! parser panic or allocate more than a small multiple of the datagram's size.
//!
//! Parsing is structural: it checks what the wire format itself rules out (a key flag of 11,
//! an unknown control type, a loss range without an end, an extension longer than the packet)
//! and leaves protocol decisions (is this handshake version acceptable, is this socket id
//! ours) to the connection. For every packet it returns, encoding gives bytes that parse back
//! to an equal packet.

mod handshake;

use bytes::Bytes;

pub use handshake::{
    ext_kind, hs_ext_flags, peer_ip_from_wire, peer_ip_to_wire, srt_flags, Handshake,
    HandshakeKind, HsExtension, SrtHandshake, HS_MAGIC, STREAM_ID_MAX,
};

use crate::seq::{SeqNo, MSG_NO_MAX};

/// Length of the header every packet starts with (3).
pub const HEADER_LEN: usize = 16;

/// Largest payload we accept or send in a data packet (1500 MTU - 20 IPv4 - 8 UDP - 16 SRT).
pub const MAX_PAYLOAD: usize = 1456;

/// The F bit of header word 0: set on control packets.
const CONTROL_BIT: u32 = 0x8000_0000;

/// Control types (3.2, Table 1).
mod control_type {
    pub const HANDSHAKE: u16 = 0x0000;
    pub const KEEPALIVE: u16 = 0x0001;
    pub const ACK: u16 = 0x0002;
    pub const NAK: u16 = 0x0003;
    pub const CONGESTION_WARNING: u16 = 0x0004;
    pub const SHUTDOWN: u16 = 0x0005;
    pub const ACKACK: u16 = 0x0006;
    pub const DROPREQ: u16 = 0x0007;
    pub const PEER_ERROR: u16 = 0x0008;
    pub const USER_DEFINED: u16 = 0x7FFF;
}

/// Why a datagram is not an SRT packet. Offsets count from the start of the datagram.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// The datagram cannot even hold the 16-byte header.
    #[error("datagram of {got} bytes is shorter than the {needed}-byte SRT header")]
    TooShort {
        /// Bytes a header needs.
        needed: usize,
        /// Bytes the datagram has.
        got: usize,
    },
    /// A field runs past the end of the datagram.
    #[error("{what} at byte {offset} needs {needed} bytes, only {got} left")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Its length.
        needed: usize,
        /// What the datagram has left at `offset`.
        got: usize,
    },
    /// A data packet's payload is larger than [`MAX_PAYLOAD`].
    #[error("data payload of {len} bytes exceeds the {max}-byte maximum")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// [`MAX_PAYLOAD`].
        max: usize,
    },
    /// A data packet's encryption key flags are `11`, which only KM messages may use (3.1).
    #[error("data packet key flags are 0b11 (only 00 none, 01 even, 10 odd are allowed)")]
    BadKeyFlag,
    /// The control type is not one of 3.2, Table 1.
    #[error("unknown control type {0:#06x}")]
    BadControlType(u16),
    /// The handshake type is none of done, agreement, conclusion, wavehand, induction or a
    /// refusal (1000 and above) (3.2.1, Table 4).
    #[error("handshake type {0:#010x} is not a known handshake type or a refusal code (>= 1000)")]
    BadHandshakeKind(u32),
    /// A handshake extension declares more content than the packet has left (3.2.1).
    #[error(
        "handshake extension {kind} declares {declared} bytes, only {available} left in the packet"
    )]
    ExtensionTruncated {
        /// Extension type.
        kind: u16,
        /// Its declared content length in bytes (4 x the length field).
        declared: usize,
        /// What the packet has left after the extension header.
        available: usize,
    },
    /// A handshake extension is shorter than its fixed fields (HSREQ/HSRSP: 12 bytes).
    #[error("handshake extension {kind} has {len} bytes, less than its {min}-byte minimum")]
    ExtensionTooShort {
        /// Extension type.
        kind: u16,
        /// Its content length.
        len: usize,
        /// The length its fields need.
        min: usize,
    },
    /// A stream id, congestion or filter string is longer than [`STREAM_ID_MAX`] (3.2.1.3).
    #[error("handshake extension {kind} has {len} bytes, more than the {max} allowed")]
    ExtensionTooLong {
        /// Extension type.
        kind: u16,
        /// Its content length (padded to 4 bytes).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream id extension is not UTF-8.
    #[error("stream id is not valid UTF-8")]
    StreamIdNotUtf8,
    /// A congestion controller or packet filter extension is not UTF-8.
    #[error("handshake extension {kind} string is not valid UTF-8")]
    ExtensionNotUtf8 {
        /// Extension type.
        kind: u16,
    },
    /// A NAK's loss list is not a whole number of 32-bit entries (3.2.5).
    #[error("NAK loss list of {len} bytes is not a whole number of 4-byte entries")]
    LossListMisaligned {
        /// Length of the loss list.
        len: usize,
    },
    /// A NAK loss-list entry starts a range (top bit set) but is the last entry (Appendix A).
    #[error("NAK loss range starting at sequence {first} (byte {offset}) has no end entry")]
    LossRangeWithoutEnd {
        /// The range's first sequence number.
        first: u32,
        /// Offset of the range-start entry.
        offset: usize,
    },
    /// The end of a NAK loss range has the range-start bit set (Appendix A).
    #[error("NAK loss range end at byte {offset} has the range-start bit set")]
    LossRangeEndFlagged {
        /// Offset of the end entry.
        offset: usize,
    },
    /// A NAK loss range ends before it starts.
    #[error("NAK loss range {first}..={last} ends before it starts")]
    LossRangeReversed {
        /// The range's first sequence number.
        first: u32,
        /// Its last sequence number.
        last: u32,
    },
}

/// One SRT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A data packet (F = 0).
    Data(DataPacket),
    /// A control packet (F = 1).
    Control(ControlPacket),
}

impl Packet {
    /// Parses one UDP datagram. Data payloads are slices of `datagram` (zero copy).
    pub fn parse(datagram: Bytes) -> Result<Packet, PacketError> {
        if datagram.len() < HEADER_LEN {
            return Err(PacketError::TooShort {
                needed: HEADER_LEN,
                got: datagram.len(),
            });
        }
        let mut r = Reader::new(&datagram);
        let word0 = r.u32("header word 0")?;
        let word1 = r.u32("header word 1")?;
        let timestamp = r.u32("timestamp")?;
        let dest_socket = r.u32("destination socket id")?;
        if word0 & CONTROL_BIT == 0 {
            DataPacket::parse(word0, word1, timestamp, dest_socket, &datagram).map(Packet::Data)
        } else {
            let kind = ((word0 >> 16) & 0x7FFF) as u16;
            let subtype = (word0 & 0xFFFF) as u16;
            let body = Control::parse(kind, subtype, word1, &mut r)?;
            Ok(Packet::Control(ControlPacket {
                timestamp,
                dest_socket,
                body,
            }))
        }
    }

    /// Appends the wire form (header + body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Data(d) => d.encode(out),
            Packet::Control(c) => c.encode(out),
        }
    }

    /// The wire form in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The destination socket id from the header.
    pub fn dest_socket(&self) -> u32 {
        match self {
            Packet::Data(d) => d.dest_socket,
            Packet::Control(c) => c.dest_socket,
        }
    }

    /// The timestamp from the header (microseconds since the sender's connection start).
    pub fn timestamp(&self) -> u32 {
        match self {
            Packet::Data(d) => d.timestamp,
            Packet::Control(c) => c.timestamp,
        }
    }
}

/// Destination socket id of a datagram without parsing the rest (None if shorter than 16 bytes).
pub fn peek_dest_socket(datagram: &[u8]) -> Option<u32> {
    let id: [u8; 4] = datagram.get(12..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(id))
}

/// Where a data packet sits in its message (3.1, the PP field).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketPosition {
    /// `00`: neither the first nor the last packet of the message.
    Middle,
    /// `01`: the last packet of a message.
    Last,
    /// `10`: the first packet of a message.
    First,
    /// `11`: the whole message (live mode sends only these).
    Only,
}

impl PacketPosition {
    fn from_bits(bits: u32) -> PacketPosition {
        match bits & 0b11 {
            0b00 => PacketPosition::Middle,
            0b01 => PacketPosition::Last,
            0b10 => PacketPosition::First,
            _ => PacketPosition::Only,
        }
    }

    fn bits(self) -> u32 {
        match self {
            PacketPosition::Middle => 0b00,
            PacketPosition::Last => 0b01,
            PacketPosition::First => 0b10,
            PacketPosition::Only => 0b11,
        }
    }
}

/// Which key encrypts a data packet's payload (3.1, the KK field).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyFlag {
    /// `00`: not encrypted.
    None,
    /// `01`: encrypted with the even key.
    Even,
    /// `10`: encrypted with the odd key.
    Odd,
}

impl KeyFlag {
    fn from_bits(bits: u32) -> Result<KeyFlag, PacketError> {
        match bits & 0b11 {
            0b00 => Ok(KeyFlag::None),
            0b01 => Ok(KeyFlag::Even),
            0b10 => Ok(KeyFlag::Odd),
            _ => Err(PacketError::BadKeyFlag),
        }
    }

    fn bits(self) -> u32 {
        match self {
            KeyFlag::None => 0b00,
            KeyFlag::Even => 0b01,
            KeyFlag::Odd => 0b10,
        }
    }
}

/// A data packet (3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPacket {
    /// Packet sequence number.
    pub seq: SeqNo,
    /// Position in the message (PP).
    pub position: PacketPosition,
    /// In-order delivery requested (O).
    pub in_order: bool,
    /// Encryption key (KK).
    pub key: KeyFlag,
    /// This is a retransmission (R).
    pub retransmitted: bool,
    /// Message number, 26 bits (higher bits are dropped on encode).
    pub msg_no: u32,
    /// Microseconds since the sender's connection start.
    pub timestamp: u32,
    /// The receiver's socket id.
    pub dest_socket: u32,
    /// The payload, a slice of the received datagram.
    pub payload: Bytes,
}

impl DataPacket {
    fn parse(
        word0: u32,
        word1: u32,
        timestamp: u32,
        dest_socket: u32,
        datagram: &Bytes,
    ) -> Result<DataPacket, PacketError> {
        let len = datagram.len().saturating_sub(HEADER_LEN);
        if len > MAX_PAYLOAD {
            return Err(PacketError::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD,
            });
        }
        Ok(DataPacket {
            seq: SeqNo::new(word0),
            position: PacketPosition::from_bits(word1 >> 30),
            in_order: word1 & (1 << 29) != 0,
            key: KeyFlag::from_bits(word1 >> 27)?,
            retransmitted: word1 & (1 << 26) != 0,
            msg_no: word1 & MSG_NO_MAX,
            timestamp,
            dest_socket,
            payload: datagram.slice(HEADER_LEN.min(datagram.len())..),
        })
    }

    /// The 16-byte header alone (so the payload can go out as separate iovecs).
    pub fn encode_header(&self) -> [u8; 16] {
        let word1 = (self.position.bits() << 30)
            | (u32::from(self.in_order) << 29)
            | (self.key.bits() << 27)
            | (u32::from(self.retransmitted) << 26)
            | (self.msg_no & MSG_NO_MAX);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&self.seq.get().to_be_bytes());
        h[4..8].copy_from_slice(&word1.to_be_bytes());
        h[8..12].copy_from_slice(&self.timestamp.to_be_bytes());
        h[12..16].copy_from_slice(&self.dest_socket.to_be_bytes());
        h
    }

    /// Appends the header and the payload to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encode_header());
        out.extend_from_slice(&self.payload);
    }
}

/// A control packet (3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    /// Microseconds since the sender's connection start.
    pub timestamp: u32,
    /// The receiver's socket id (0 in a caller's first handshake).
    pub dest_socket: u32,
    /// Type, type-specific information and control information field.
    pub body: Control,
}

impl ControlPacket {
    /// Appends the header and the control information field to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, subtype, info) = self.body.header_fields();
        let word0 = CONTROL_BIT | (u32::from(kind) << 16) | u32::from(subtype);
        put_u32(out, word0);
        put_u32(out, info);
        put_u32(out, self.timestamp);
        put_u32(out, self.dest_socket);
        self.body.encode_cif(out);
    }
}

/// What a control packet says (3.2, Table 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Type 0x0000: a handshake (3.2.1).
    Handshake(Handshake),
    /// Type 0x0001: keep-alive (3.2.3).
    KeepAlive,
    /// Type 0x0002: acknowledgement (3.2.4).
    Ack(Ack),
    /// Type 0x0003: negative acknowledgement, the lost packets (3.2.5).
    Nak(Vec<LossRange>),
    /// Type 0x0004: congestion warning (3.2.6).
    CongestionWarning,
    /// Type 0x0005: shutdown (3.2.7).
    Shutdown,
    /// Type 0x0006: acknowledgement of an acknowledgement (3.2.8).
    AckAck {
        /// The ACK number being acknowledged.
        ack_no: u32,
    },
    /// Type 0x0007: the sender dropped a message; stop asking for it (3.2.9). The range is not
    /// validated: a receiver must bound what it does with it.
    DropReq {
        /// The dropped message's number (the raw type-specific word).
        msg_no: u32,
        /// Its first packet.
        first: SeqNo,
        /// Its last packet.
        last: SeqNo,
    },
    /// Type 0x0008: the peer hit an error (3.2.10).
    PeerError {
        /// The error code.
        code: u32,
    },
    /// Control type 0x7FFF: subtype 3 = KMREQ, 4 = KMRSP (in-band key refresh, body = KM message bytes); others kept raw.
    UserDefined {
        /// The subtype ([`ext_kind`] numbers).
        subtype: u16,
        /// The control information field as received, a slice of the datagram.
        body: Bytes,
    },
}

impl Control {
    /// The control type (3.2, Table 1).
    pub fn control_type(&self) -> u16 {
        self.header_fields().0
    }

    fn parse(
        kind: u16,
        subtype: u16,
        info: u32,
        r: &mut Reader<'_>,
    ) -> Result<Control, PacketError> {
        use control_type as t;
        Ok(match kind {
            t::HANDSHAKE => Control::Handshake(Handshake::parse(r)?),
            // These carry no information; libsrt sends 4 zero bytes because an iovec cannot
            // be empty. Whatever is there is ignored.
            t::KEEPALIVE => Control::KeepAlive,
            t::CONGESTION_WARNING => Control::CongestionWarning,
            t::SHUTDOWN => Control::Shutdown,
            t::ACKACK => Control::AckAck { ack_no: info },
            t::PEER_ERROR => Control::PeerError { code: info },
            t::ACK => Control::Ack(Ack::parse(info, r)?),
            t::NAK => Control::Nak(parse_loss_list(r)?),
            t::DROPREQ => {
                let first = SeqNo::new(r.u32("drop request first sequence number")?);
                let last = SeqNo::new(r.u32("drop request last sequence number")?);
                Control::DropReq {
                    msg_no: info,
                    first,
                    last,
                }
            }
            t::USER_DEFINED => Control::UserDefined {
                subtype,
                body: r.rest_bytes(),
            },
            other => return Err(PacketError::BadControlType(other)),
        })
    }

    /// Control type, subtype and type-specific information for the header.
    fn header_fields(&self) -> (u16, u16, u32) {
        use control_type as t;
        match self {
            Control::Handshake(_) => (t::HANDSHAKE, 0, 0),
            Control::KeepAlive => (t::KEEPALIVE, 0, 0),
            Control::Ack(ack) => (t::ACK, 0, ack.ack_no),
            Control::Nak(_) => (t::NAK, 0, 0),
            Control::CongestionWarning => (t::CONGESTION_WARNING, 0, 0),
            Control::Shutdown => (t::SHUTDOWN, 0, 0),
            Control::AckAck { ack_no } => (t::ACKACK, 0, *ack_no),
            Control::DropReq { msg_no, .. } => (t::DROPREQ, 0, *msg_no),
            Control::PeerError { code } => (t::PEER_ERROR, 0, *code),
            Control::UserDefined { subtype, .. } => (t::USER_DEFINED, *subtype, 0),
        }
    }

    fn encode_cif(&self, out: &mut Vec<u8>) {
        match self {
            Control::Handshake(hs) => hs.encode(out),
            // A 4-byte zero CIF, as libsrt sends.
            Control::KeepAlive
            | Control::CongestionWarning
            | Control::Shutdown
            | Control::AckAck { .. }
            | Control::PeerError { .. } => put_u32(out, 0),
            Control::Ack(ack) => ack.encode_cif(out),
            Control::Nak(ranges) => {
                for range in ranges {
                    range.encode(out);
                }
            }
            Control::DropReq { first, last, .. } => {
                put_u32(out, first.get());
                put_u32(out, last.get());
            }
            Control::UserDefined { body, .. } => out.extend_from_slice(body),
        }
    }
}

/// An acknowledgement (3.2.4). Its CIF is 4 bytes (light), 16 (small) or 28 (full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The ACK number (type-specific information), echoed in the ACKACK; 0 in light and small ACKs.
    pub ack_no: u32,
    /// The sequence number after the last packet received in order.
    pub last_ack: SeqNo,
    /// RTT, buffer and rate figures; `None` for a light ACK.
    pub info: Option<AckInfo>,
}

/// The figures of a small or full ACK (3.2.4). A small ACK (16-byte CIF) leaves the last
/// three 0; encoding always writes the full 28-byte CIF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckInfo {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Round-trip time variance, microseconds.
    pub rtt_var_us: u32,
    /// Free space in the receiver's buffer, packets.
    pub avail_buffer: u32,
    /// Packets received per second.
    pub pkt_rate: u32,
    /// Estimated link capacity, packets per second.
    pub link_capacity: u32,
    /// Bytes received per second.
    pub recv_rate_bps: u32,
}

impl Ack {
    fn parse(ack_no: u32, r: &mut Reader<'_>) -> Result<Ack, PacketError> {
        let last_ack = SeqNo::new(r.u32("ACK last acknowledged sequence number")?);
        // libsrt reads the fields a CIF has room for and ignores the rest: 4 to 15 bytes is a
        // light ACK, 24 bytes (the UDT layout) has the rates but no receive rate, and the 32
        // bytes of SRT 1.0.2 carry one more word after the full 28.
        let info = if r.remaining() >= 12 {
            let mut info = AckInfo {
                rtt_us: r.u32("ACK RTT")?,
                rtt_var_us: r.u32("ACK RTT variance")?,
                avail_buffer: r.u32("ACK available buffer")?,
                pkt_rate: 0,
                link_capacity: 0,
                recv_rate_bps: 0,
            };
            if r.remaining() >= 8 {
                info.pkt_rate = r.u32("ACK packet rate")?;
                info.link_capacity = r.u32("ACK link capacity")?;
                if r.remaining() >= 4 {
                    info.recv_rate_bps = r.u32("ACK receive rate")?;
                }
            }
            Some(info)
        } else {
            None
        };
        r.skip_rest();
        Ok(Ack {
            ack_no,
            last_ack,
            info,
        })
    }

    fn encode_cif(&self, out: &mut Vec<u8>) {
        put_u32(out, self.last_ack.get());
        if let Some(i) = &self.info {
            for v in [
                i.rtt_us,
                i.rtt_var_us,
                i.avail_buffer,
                i.pkt_rate,
                i.link_capacity,
                i.recv_rate_bps,
            ] {
                put_u32(out, v);
            }
        }
    }
}

/// Lost packets `first..=last` in a NAK (3.2.5, Appendix A); a single loss has `first == last`.
/// On the wire a single loss is one 32-bit entry; a range is two, the first with its top bit set.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LossRange {
    /// The first lost packet.
    pub first: SeqNo,
    /// The last lost packet (== `first` for a single loss).
    pub last: SeqNo,
}

impl LossRange {
    /// One lost packet.
    pub fn single(seq: SeqNo) -> LossRange {
        LossRange {
            first: seq,
            last: seq,
        }
    }

    /// How many packets the range covers (1 for a single loss).
    pub fn len(&self) -> u32 {
        // The parser guarantees last >= first; a hand-built reversed range counts as 1.
        u32::try_from(self.last.diff(self.first)).map_or(1, |d| d + 1)
    }

    /// Always false: a range holds at least one packet.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn encode(&self, out: &mut Vec<u8>) {
        if self.first == self.last {
            put_u32(out, self.first.get());
        } else {
            put_u32(out, self.first.get() | CONTROL_BIT);
            put_u32(out, self.last.get());
        }
    }
}

/// A NAK's loss list (3.2.5; compression in Appendix A).
fn parse_loss_list(r: &mut Reader<'_>) -> Result<Vec<LossRange>, PacketError> {
    const RANGE_START: u32 = 0x8000_0000;
    let len = r.remaining();
    // Not a whole number of words (`is_multiple_of` needs a newer compiler than our MSRV).
    if len & 3 != 0 {
        return Err(PacketError::LossListMisaligned { len });
    }
    // At most one range per entry, so the vector is bounded by the datagram.
    let mut ranges = Vec::new();
    while r.remaining() > 0 {
        let offset = r.offset();
        let entry = r.u32("NAK loss-list entry")?;
        if entry & RANGE_START == 0 {
            ranges.push(LossRange::single(SeqNo::new(entry)));
            continue;
        }
        let first = SeqNo::new(entry);
        if r.remaining() == 0 {
            return Err(PacketError::LossRangeWithoutEnd {
                first: first.get(),
                offset,
            });
        }
        let end_offset = r.offset();
        let end = r.u32("NAK loss-range end")?;
        if end & RANGE_START != 0 {
            return Err(PacketError::LossRangeEndFlagged { offset: end_offset });
        }
        let last = SeqNo::new(end);
        if last.diff(first) < 0 {
            return Err(PacketError::LossRangeReversed {
                first: first.get(),
                last: last.get(),
            });
        }
        ranges.push(LossRange { first, last });
    }
    Ok(ranges)
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// A bounds-checked big-endian reader over part of a datagram. Offsets are datagram offsets;
/// a read past `end` is [`PacketError::Truncated`] naming the field.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// Invariant: `pos <= end <= buf.len()`.
    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    fn offset(&self) -> usize {
        self.pos
    }

    fn check(&self, n: usize, what: &'static str) -> Result<(), PacketError> {
        if n > self.remaining() {
            return Err(PacketError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                got: self.remaining(),
            });
        }
        Ok(())
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PacketError> {
        self.check(n, what)?;
        let bytes = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(PacketError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                got: 0,
            })?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PacketError> {
        let bytes = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(bytes);
        Ok(a)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, PacketError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, PacketError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A reader over the next `n` bytes, which this one skips.
    fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a>, PacketError> {
        self.check(n, what)?;
        let sub = Reader {
            buf: self.buf,
            pos: self.pos,
            end: self.pos + n,
        };
        self.pos += n;
        Ok(sub)
    }

    /// The rest as a slice of the datagram (zero copy).
    fn rest_bytes(&mut self) -> Bytes {
        let b = self.buf.slice(self.pos..self.end);
        self.pos = self.end;
        b
    }

    fn skip_rest(&mut self) {
        self.pos = self.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Packet, PacketError> {
        Packet::parse(Bytes::copy_from_slice(bytes))
    }

    /// encode -> parse gives the packet back, and encoding that gives the same bytes.
    fn round_trip(p: &Packet) -> Vec<u8> {
        let wire = p.to_vec();
        let back = parse(&wire).unwrap_or_else(|e| panic!("{e}: {p:?}"));
        assert_eq!(&back, p);
        assert_eq!(back.to_vec(), wire);
        assert_eq!(peek_dest_socket(&wire), Some(p.dest_socket()));
        wire
    }

    fn control(body: Control) -> Packet {
        Packet::Control(ControlPacket {
            timestamp: 123_456,
            dest_socket: 0x1234_5678,
            body,
        })
    }

    fn data(payload: &'static [u8]) -> DataPacket {
        DataPacket {
            seq: SeqNo::new(SeqNo::MAX),
            position: PacketPosition::Only,
            in_order: false,
            key: KeyFlag::None,
            retransmitted: false,
            msg_no: MSG_NO_MAX,
            timestamp: 0xFFFF_FFFF,
            dest_socket: 7,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn data_packet_round_trips_every_flag() {
        for position in [
            PacketPosition::Middle,
            PacketPosition::Last,
            PacketPosition::First,
            PacketPosition::Only,
        ] {
            for key in [KeyFlag::None, KeyFlag::Even, KeyFlag::Odd] {
                for (in_order, retransmitted) in [(false, false), (true, false), (false, true)] {
                    let p = DataPacket {
                        position,
                        key,
                        in_order,
                        retransmitted,
                        ..data(b"payload")
                    };
                    let wire = round_trip(&Packet::Data(p.clone()));
                    assert_eq!(wire[..16], p.encode_header());
                    assert_eq!(&wire[16..], b"payload");
                }
            }
        }
    }

    #[test]
    fn data_header_bits() {
        let p = DataPacket {
            seq: SeqNo::new(0x0102_0304),
            position: PacketPosition::First,
            in_order: true,
            key: KeyFlag::Odd,
            retransmitted: true,
            msg_no: 5,
            ..data(b"")
        };
        // PP=10 O=1 KK=10 R=1 -> 1011 0100 ...
        assert_eq!(
            p.encode_header()[..8],
            [0x01, 0x02, 0x03, 0x04, 0xB4, 0x00, 0x00, 0x05]
        );
        // An empty payload is allowed, and msg_no is cut to 26 bits on encode.
        round_trip(&Packet::Data(p));
        let wide = DataPacket {
            msg_no: u32::MAX,
            ..data(b"x")
        };
        assert_eq!(wide.encode_header()[4..8], [0xC3, 0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn data_payload_is_a_slice_of_the_datagram() {
        let wire = Bytes::from(Packet::Data(data(b"abcdef")).to_vec());
        let Ok(Packet::Data(d)) = Packet::parse(wire.clone()) else {
            panic!("not data");
        };
        assert_eq!(d.payload.as_ptr(), wire[16..].as_ptr());
    }

    #[test]
    fn data_errors() {
        let mut wire = Packet::Data(data(b"x")).to_vec();
        wire[4] |= 0x18; // KK = 11
        assert_eq!(parse(&wire), Err(PacketError::BadKeyFlag));

        let mut big = Packet::Data(data(b"")).to_vec();
        big.resize(HEADER_LEN + MAX_PAYLOAD, 0xAA);
        assert!(parse(&big).is_ok());
        big.push(0);
        assert_eq!(
            parse(&big),
            Err(PacketError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1,
                max: MAX_PAYLOAD
            })
        );
    }

    #[test]
    fn short_datagrams() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                parse(&vec![0x80; n]),
                Err(PacketError::TooShort {
                    needed: HEADER_LEN,
                    got: n
                })
            );
            assert_eq!(peek_dest_socket(&vec![0; n]), None);
        }
        assert_eq!(
            peek_dest_socket(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 9]),
            Some(0x0102_0304)
        );
    }

    #[test]
    fn simple_control_packets_round_trip_with_a_4_byte_cif() {
        for body in [
            Control::KeepAlive,
            Control::CongestionWarning,
            Control::Shutdown,
            Control::AckAck { ack_no: 77 },
            Control::PeerError { code: 4000 },
        ] {
            let wire = round_trip(&control(body));
            assert_eq!(wire.len(), HEADER_LEN + 4);
            assert_eq!(wire[16..], [0, 0, 0, 0]);
        }
    }

    #[test]
    fn empty_cif_and_extra_cif_bytes_are_ignored() {
        let mut wire = control(Control::KeepAlive).to_vec();
        wire.truncate(HEADER_LEN);
        assert_eq!(parse(&wire).unwrap(), control(Control::KeepAlive));
        wire.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(parse(&wire).unwrap(), control(Control::KeepAlive));
    }

    #[test]
    fn control_header_fields() {
        let wire = control(Control::AckAck {
            ack_no: 0xA1B2_C3D4,
        })
        .to_vec();
        assert_eq!(
            wire[..16],
            [
                0x80, 0x06, 0, 0, 0xA1, 0xB2, 0xC3, 0xD4, 0, 0x01, 0xE2, 0x40, 0x12, 0x34, 0x56,
                0x78
            ]
        );
        let wire = control(Control::UserDefined {
            subtype: 3,
            body: Bytes::from_static(&[9, 9, 9, 9]),
        })
        .to_vec();
        assert_eq!(wire[..4], [0xFF, 0xFF, 0x00, 0x03]);
    }

    #[test]
    fn ack_sizes() {
        let full = AckInfo {
            rtt_us: 100_000,
            rtt_var_us: 50_000,
            avail_buffer: 8187,
            pkt_rate: 3832,
            link_capacity: 1000,
            recv_rate_bps: 5_741_627,
        };
        let light = Ack {
            ack_no: 0,
            last_ack: SeqNo::new(10),
            info: None,
        };
        assert_eq!(
            round_trip(&control(Control::Ack(light.clone()))).len(),
            16 + 4
        );
        let ack = Ack {
            ack_no: 9,
            last_ack: SeqNo::new(SeqNo::MAX),
            info: Some(full.clone()),
        };
        assert_eq!(
            round_trip(&control(Control::Ack(ack.clone()))).len(),
            16 + 28
        );

        // Small ACK: 16-byte CIF, rates 0.
        let wire = control(Control::Ack(ack.clone())).to_vec();
        let small = parse(&wire[..16 + 16]).unwrap();
        let Packet::Control(ControlPacket {
            body: Control::Ack(a),
            ..
        }) = &small
        else {
            panic!("not an ACK");
        };
        assert_eq!(
            a.info,
            Some(AckInfo {
                pkt_rate: 0,
                link_capacity: 0,
                recv_rate_bps: 0,
                ..full.clone()
            })
        );
        round_trip(&small);
        // UDT's 24-byte CIF has the two rates but no receive rate.
        let Packet::Control(ControlPacket {
            body: Control::Ack(a),
            ..
        }) = parse(&wire[..16 + 24]).unwrap()
        else {
            panic!("not an ACK");
        };
        assert_eq!(
            a.info.as_ref().map(|i| (i.link_capacity, i.recv_rate_bps)),
            Some((1000, 0))
        );
        // Longer CIFs: the extra words are ignored. Odd sizes between light and small are light.
        let mut long = wire.clone();
        long.extend_from_slice(&[0xEE; 6]);
        assert_eq!(parse(&long).unwrap(), control(Control::Ack(ack)));
        let Packet::Control(ControlPacket {
            body: Control::Ack(a),
            ..
        }) = parse(&wire[..16 + 12]).unwrap()
        else {
            panic!("not an ACK");
        };
        assert_eq!(a.info, None);
        // Shorter than the sequence number.
        assert_eq!(
            parse(&wire[..16 + 3]),
            Err(PacketError::Truncated {
                what: "ACK last acknowledged sequence number",
                offset: 16,
                needed: 4,
                got: 3
            })
        );
    }

    #[test]
    fn nak_ranges() {
        let ranges = vec![
            LossRange::single(SeqNo::new(5)),
            LossRange {
                first: SeqNo::new(7),
                last: SeqNo::new(9),
            },
            // Across the wrap.
            LossRange {
                first: SeqNo::new(SeqNo::MAX - 1),
                last: SeqNo::new(1),
            },
            LossRange::single(SeqNo::new(SeqNo::MAX)),
        ];
        let wire = round_trip(&control(Control::Nak(ranges.clone())));
        assert_eq!(
            wire[16..],
            [
                0, 0, 0, 5, //
                0x80, 0, 0, 7, 0, 0, 0, 9, //
                0xFF, 0xFF, 0xFF, 0xFE, 0, 0, 0, 1, //
                0x7F, 0xFF, 0xFF, 0xFF,
            ]
        );
        assert_eq!(ranges[1].len(), 3);
        assert_eq!(ranges[2].len(), 4);
        assert_eq!(ranges[0].len(), 1);
        round_trip(&control(Control::Nak(Vec::new())));

        // A range written as two entries with first == last comes back as a single loss.
        let mut two = control(Control::Nak(Vec::new())).to_vec();
        two.extend_from_slice(&[0x80, 0, 0, 4, 0, 0, 0, 4]);
        assert_eq!(
            parse(&two).unwrap(),
            control(Control::Nak(vec![LossRange::single(SeqNo::new(4))]))
        );
    }

    #[test]
    fn nak_errors() {
        let head = control(Control::Nak(Vec::new())).to_vec();
        let with = |cif: &[u8]| {
            let mut w = head.clone();
            w.extend_from_slice(cif);
            parse(&w)
        };
        assert_eq!(
            with(&[0, 0, 0, 1, 0x80, 0, 0, 7]),
            Err(PacketError::LossRangeWithoutEnd {
                first: 7,
                offset: 20
            })
        );
        assert_eq!(
            with(&[0x80, 0, 0, 7, 0x80, 0, 0, 9]),
            Err(PacketError::LossRangeEndFlagged { offset: 20 })
        );
        assert_eq!(
            with(&[0x80, 0, 0, 9, 0, 0, 0, 7]),
            Err(PacketError::LossRangeReversed { first: 9, last: 7 })
        );
        assert_eq!(
            with(&[0, 0, 0, 1, 0]),
            Err(PacketError::LossListMisaligned { len: 5 })
        );
    }

    #[test]
    fn drop_request_and_user_defined() {
        let wire = round_trip(&control(Control::DropReq {
            msg_no: 0x0300_0001,
            first: SeqNo::new(100),
            last: SeqNo::new(104),
        }));
        assert_eq!(wire[4..8], [0x03, 0, 0, 1]);
        assert_eq!(wire.len(), 16 + 8);
        assert!(matches!(
            parse(&wire[..16 + 7]),
            Err(PacketError::Truncated {
                what: "drop request last sequence number",
                ..
            })
        ));

        for body in [&b""[..], &[1, 2, 3, 4, 5, 6, 7, 8][..]] {
            round_trip(&control(Control::UserDefined {
                subtype: ext_kind::KMREQ,
                body: Bytes::copy_from_slice(body),
            }));
        }
    }

    #[test]
    fn unknown_control_types_are_refused() {
        let mut wire = control(Control::KeepAlive).to_vec();
        for kind in [9u16, 0x10, 0x7FFE] {
            wire[0..2].copy_from_slice(&(0x8000 | kind).to_be_bytes());
            assert_eq!(parse(&wire), Err(PacketError::BadControlType(kind)));
        }
    }

    #[test]
    fn errors_name_the_violation() {
        assert_eq!(
            PacketError::TooShort { needed: 16, got: 3 }.to_string(),
            "datagram of 3 bytes is shorter than the 16-byte SRT header"
        );
        assert_eq!(
            PacketError::BadControlType(0x0009).to_string(),
            "unknown control type 0x0009"
        );
    }
}
