//! The handshake control packet (SRT spec 3.2.1) and its extensions (3.2.1.1 - 3.2.1.4).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Version                            |
//! |        Encryption Field       |        Extension Field        |
//! |                 Initial Packet Sequence Number                |
//! |                 Maximum Transmission Unit Size                |
//! |                    Maximum Flow Window Size                   |
//! |                         Handshake Type                        |
//! |                         SRT Socket ID                         |
//! |                           SYN Cookie                          |
//! |                  Peer IP Address (4 words)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |         Extension Type        |  Extension Length (words)     |  repeated
//! |                  Extension Contents (4 x length bytes)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! libsrt builds control packets as host-order 32-bit words and swaps every word on send, so
//! fields that are really byte strings come out with each 4-byte word reversed on
//! little-endian hosts (all of them, in practice): the stream id, congestion and filter
//! strings, and the peer IP address. Key material is pre-swapped by libsrt and travels in
//! network order, so it is kept as the bytes received.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;

use super::{put_u16, put_u32, PacketError, Reader};
use crate::reject::{RejectReason, WIRE_OFFSET};
use crate::seq::SeqNo;

/// Value of the extension field in a version 5 listener's induction answer: it tells an HSv5
/// caller that the listener speaks HSv5 too (3.2.1, 4.3.1.1).
pub const HS_MAGIC: u16 = 0x4A17;

/// Longest stream id in bytes (3.2.1.3; libsrt `MAX_SID_LENGTH`). The same limit applies to
/// the congestion controller and packet filter strings.
pub const STREAM_ID_MAX: usize = 512;

/// Length of the fixed part of the handshake CIF.
const CIF_LEN: usize = 48;

/// Length of the fields of an HSREQ / HSRSP extension (3.2.1.1).
const SRT_HANDSHAKE_LEN: usize = 12;

/// Flags of the SRT handshake extension's `flags` word (3.2.1.1.1, Table 6).
pub mod srt_flags {
    /// The sender delivers with timestamp-based packet delivery.
    pub const TSBPD_SND: u32 = 0x01;
    /// The receiver delivers with timestamp-based packet delivery.
    pub const TSBPD_RCV: u32 = 0x02;
    /// Encryption capable (always set by libsrt).
    pub const CRYPT: u32 = 0x04;
    /// Too-late packet drop.
    pub const TLPKT_DROP: u32 = 0x08;
    /// Periodic NAK reports.
    pub const PERIODIC_NAK: u32 = 0x10;
    /// The data header's R bit means "retransmitted" (the message number is 26 bits).
    pub const REXMIT_FLG: u32 = 0x20;
    /// Stream API rather than message API (file mode).
    pub const STREAM: u32 = 0x40;
    /// A packet filter is configured.
    pub const PACKET_FILTER: u32 = 0x80;
}

/// Bits of the handshake's extension field in a version 5 conclusion: which extensions follow (3.2.1).
pub mod hs_ext_flags {
    /// An HSREQ or HSRSP extension is present.
    pub const HSREQ: u16 = 0x1;
    /// A KMREQ or KMRSP extension is present.
    pub const KMREQ: u16 = 0x2;
    /// Configuration extensions (stream id, congestion, filter, group) may be present.
    pub const CONFIG: u16 = 0x4;
}

/// Handshake extension types (3.2.1, Table 5); also the subtypes of user-defined control
/// packets (type 0x7FFF) that carry the same messages outside the handshake.
pub mod ext_kind {
    /// SRT handshake request.
    pub const HSREQ: u16 = 1;
    /// SRT handshake response.
    pub const HSRSP: u16 = 2;
    /// Key material request.
    pub const KMREQ: u16 = 3;
    /// Key material response.
    pub const KMRSP: u16 = 4;
    /// Stream id.
    pub const SID: u16 = 5;
    /// Congestion controller name.
    pub const CONGESTION: u16 = 6;
    /// Packet filter configuration.
    pub const FILTER: u16 = 7;
    /// Group membership.
    pub const GROUP: u16 = 8;
}

/// A handshake (3.2.1). The parser accepts any version (libsrt callers open with a version 4
/// induction even when they speak version 5) and extensions after any handshake type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// 4 (UDT-style, a caller's induction) or 5.
    pub version: u32,
    /// Cipher family / key length advertised (0 = none; 2, 3, 4 = AES-128, -192, -256).
    pub encryption: u16,
    /// [`HS_MAGIC`] in a v5 induction answer, [`hs_ext_flags`] in a v5 conclusion; 2 (the
    /// UDT datagram socket type) in libsrt's v4 induction.
    pub extension: u16,
    /// The sender's first data sequence number.
    pub initial_seq: SeqNo,
    /// Maximum transmission unit, bytes.
    pub mtu: u32,
    /// Maximum flow window, packets.
    pub flow_window: u32,
    /// Induction, conclusion, ... or a refusal.
    pub kind: HandshakeKind,
    /// The sender's socket id.
    pub socket_id: u32,
    /// The listener's SYN cookie (0 in a caller's first induction).
    pub syn_cookie: u32,
    /// The receiver's address as the sender sees it, as on the wire (see [`peer_ip_from_wire`]).
    pub peer_ip: [u8; 16],
    /// Extensions, in wire order.
    pub extensions: Vec<HsExtension>,
}

impl Handshake {
    /// Parses the CIF: the 48 fixed bytes, then extensions to the end of the packet.
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Handshake, PacketError> {
        r.check(CIF_LEN, "handshake CIF")?;
        let version = r.u32("handshake version")?;
        let encryption = r.u16("handshake encryption field")?;
        let extension = r.u16("handshake extension field")?;
        let initial_seq = SeqNo::new(r.u32("handshake initial sequence number")?);
        let mtu = r.u32("handshake MTU")?;
        let flow_window = r.u32("handshake flow window")?;
        let raw_kind = r.u32("handshake type")?;
        let kind =
            HandshakeKind::from_wire(raw_kind).ok_or(PacketError::BadHandshakeKind(raw_kind))?;
        let socket_id = r.u32("handshake socket id")?;
        let syn_cookie = r.u32("handshake SYN cookie")?;
        let peer_ip = r.array("handshake peer IP address")?;
        // Every extension takes at least its 4-byte header, so the vector is bounded by the datagram.
        let mut extensions = Vec::new();
        while r.remaining() > 0 {
            let kind = r.u16("handshake extension type")?;
            let words = r.u16("handshake extension length")?;
            let declared = usize::from(words) * 4;
            if declared > r.remaining() {
                return Err(PacketError::ExtensionTruncated {
                    kind,
                    declared,
                    available: r.remaining(),
                });
            }
            let mut body = r.sub(declared, "handshake extension contents")?;
            extensions.push(HsExtension::parse(kind, &mut body)?);
        }
        Ok(Handshake {
            version,
            encryption,
            extension,
            initial_seq,
            mtu,
            flow_window,
            kind,
            socket_id,
            syn_cookie,
            peer_ip,
            extensions,
        })
    }

    /// Appends the CIF (fixed part and extensions) to `out`.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        put_u32(out, self.version);
        put_u16(out, self.encryption);
        put_u16(out, self.extension);
        put_u32(out, self.initial_seq.get());
        put_u32(out, self.mtu);
        put_u32(out, self.flow_window);
        put_u32(out, self.kind.wire());
        put_u32(out, self.socket_id);
        put_u32(out, self.syn_cookie);
        out.extend_from_slice(&self.peer_ip);
        for ext in &self.extensions {
            ext.encode(out);
        }
    }

    /// The first stream id extension's value.
    pub fn stream_id(&self) -> Option<&str> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::StreamId(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The first HSREQ or HSRSP extension.
    pub fn srt_handshake(&self) -> Option<&SrtHandshake> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::HsReq(h) | HsExtension::HsRsp(h) => Some(h),
            _ => None,
        })
    }

    /// The first KMREQ or KMRSP extension's key material message.
    pub fn key_material(&self) -> Option<&Bytes> {
        self.extensions.iter().find_map(|e| match e {
            HsExtension::KmReq(km) | HsExtension::KmRsp(km) => Some(km),
            _ => None,
        })
    }
}

/// The handshake type (3.2.1, Table 4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HandshakeKind {
    /// 0xFFFFFFFD: nothing more to send (rendezvous).
    Done,
    /// 0xFFFFFFFE: rendezvous agreement.
    Agreement,
    /// 0xFFFFFFFF: conclusion.
    Conclusion,
    /// 0: rendezvous wave-a-hand.
    Wavehand,
    /// 1: induction.
    Induction,
    /// 1000 and above: a refusal; the value is the wire code.
    Rejection(u32),
}

impl HandshakeKind {
    /// The kind for a handshake type value; `None` for 2..=999 and the unassigned values.
    pub fn from_wire(value: u32) -> Option<HandshakeKind> {
        match value {
            0xFFFF_FFFD => Some(HandshakeKind::Done),
            0xFFFF_FFFE => Some(HandshakeKind::Agreement),
            0xFFFF_FFFF => Some(HandshakeKind::Conclusion),
            0 => Some(HandshakeKind::Wavehand),
            1 => Some(HandshakeKind::Induction),
            v if v >= WIRE_OFFSET => Some(HandshakeKind::Rejection(v)),
            _ => None,
        }
    }

    /// The handshake type value. A [`HandshakeKind::Rejection`] is written as it is, so it
    /// should hold 1000 or more (use [`HandshakeKind::rejection`]).
    pub fn wire(self) -> u32 {
        match self {
            HandshakeKind::Done => 0xFFFF_FFFD,
            HandshakeKind::Agreement => 0xFFFF_FFFE,
            HandshakeKind::Conclusion => 0xFFFF_FFFF,
            HandshakeKind::Wavehand => 0,
            HandshakeKind::Induction => 1,
            HandshakeKind::Rejection(code) => code,
        }
    }

    /// The refusal for `reason` (wire code = reason code + 1000).
    pub fn rejection(reason: RejectReason) -> HandshakeKind {
        HandshakeKind::Rejection(reason.wire_code())
    }

    /// Why the handshake was refused, if it is a refusal.
    pub fn reject_reason(self) -> Option<RejectReason> {
        match self {
            HandshakeKind::Rejection(code) => Some(RejectReason::from_wire(code)),
            _ => None,
        }
    }
}

/// A handshake extension (3.2.1, Table 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HsExtension {
    /// Type 1: SRT handshake request (3.2.1.1).
    HsReq(SrtHandshake),
    /// Type 2: SRT handshake response (3.2.1.1).
    HsRsp(SrtHandshake),
    /// Type 3: key material request, the KM message bytes (3.2.1.2, 3.2.2).
    KmReq(Bytes),
    /// Type 4: key material response: the KM message echoed, or one word of KM state on failure.
    KmRsp(Bytes),
    /// Type 5: stream id (3.2.1.3), trailing NULs removed.
    StreamId(String),
    /// Type 6: congestion controller name ("live", "file").
    Congestion(String),
    /// Type 7: packet filter configuration.
    Filter(String),
    /// Type 8: group membership (3.2.1.4), raw.
    Group(Bytes),
    /// Any other type, raw.
    Unknown {
        /// Extension type.
        kind: u16,
        /// Contents.
        body: Bytes,
    },
}

impl HsExtension {
    /// The extension type ([`ext_kind`]).
    pub fn kind(&self) -> u16 {
        match self {
            HsExtension::HsReq(_) => ext_kind::HSREQ,
            HsExtension::HsRsp(_) => ext_kind::HSRSP,
            HsExtension::KmReq(_) => ext_kind::KMREQ,
            HsExtension::KmRsp(_) => ext_kind::KMRSP,
            HsExtension::StreamId(_) => ext_kind::SID,
            HsExtension::Congestion(_) => ext_kind::CONGESTION,
            HsExtension::Filter(_) => ext_kind::FILTER,
            HsExtension::Group(_) => ext_kind::GROUP,
            HsExtension::Unknown { kind, .. } => *kind,
        }
    }

    fn parse(kind: u16, body: &mut Reader<'_>) -> Result<HsExtension, PacketError> {
        Ok(match kind {
            ext_kind::HSREQ | ext_kind::HSRSP => {
                let len = body.remaining();
                if len < SRT_HANDSHAKE_LEN {
                    return Err(PacketError::ExtensionTooShort {
                        kind,
                        len,
                        min: SRT_HANDSHAKE_LEN,
                    });
                }
                let version = body.u32("SRT handshake version")?;
                let flags = body.u32("SRT handshake flags")?;
                let recv_latency_ms = body.u16("SRT handshake receiver latency")?;
                let send_latency_ms = body.u16("SRT handshake sender latency")?;
                // HSv4-era senders may append a reserved word; it is ignored.
                let hs = SrtHandshake {
                    version,
                    flags,
                    recv_latency_ms,
                    send_latency_ms,
                };
                if kind == ext_kind::HSREQ {
                    HsExtension::HsReq(hs)
                } else {
                    HsExtension::HsRsp(hs)
                }
            }
            ext_kind::KMREQ => HsExtension::KmReq(body.rest_bytes()),
            ext_kind::KMRSP => HsExtension::KmRsp(body.rest_bytes()),
            ext_kind::SID => HsExtension::StreamId(decode_string(kind, body)?),
            ext_kind::CONGESTION => HsExtension::Congestion(decode_string(kind, body)?),
            ext_kind::FILTER => HsExtension::Filter(decode_string(kind, body)?),
            ext_kind::GROUP => HsExtension::Group(body.rest_bytes()),
            _ => HsExtension::Unknown {
                kind,
                body: body.rest_bytes(),
            },
        })
    }

    /// Appends type, length and contents, padding the contents to whole words with zeros.
    /// Contents longer than the 16-bit word count allows (256 KiB, far beyond a datagram) are cut.
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        put_u16(out, self.kind());
        put_u16(out, 0); // length, patched below
        match self {
            HsExtension::HsReq(hs) | HsExtension::HsRsp(hs) => {
                put_u32(out, hs.version);
                put_u32(out, hs.flags);
                put_u16(out, hs.recv_latency_ms);
                put_u16(out, hs.send_latency_ms);
            }
            HsExtension::KmReq(b)
            | HsExtension::KmRsp(b)
            | HsExtension::Group(b)
            | HsExtension::Unknown { body: b, .. } => out.extend_from_slice(b),
            HsExtension::StreamId(s) | HsExtension::Congestion(s) | HsExtension::Filter(s) => {
                encode_string(s, out);
            }
        }
        let mut len = out.len() - start - 4;
        let pad = (4 - len % 4) % 4;
        out.resize(out.len() + pad, 0);
        len += pad;
        let max = usize::from(u16::MAX) * 4;
        if len > max {
            out.truncate(start + 4 + max);
            len = max;
        }
        let words = u16::try_from(len / 4).unwrap_or(u16::MAX);
        out[start + 2..start + 4].copy_from_slice(&words.to_be_bytes());
    }
}

/// The SRT handshake extension, HSREQ / HSRSP (3.2.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtHandshake {
    /// SRT library version, 0x00XXYYZZ for X.Y.Z (libsrt 1.5.1 sends 0x00010501).
    pub version: u32,
    /// [`srt_flags`].
    pub flags: u32,
    /// The sender of this extension's receiver latency (TSBPD delay), milliseconds.
    pub recv_latency_ms: u16,
    /// The sender of this extension's sender latency, milliseconds.
    pub send_latency_ms: u16,
}

/// Decodes a stream id / congestion / filter string: each 4-byte word reversed, trailing
/// NULs (the padding) removed (3.2.1.3).
fn decode_string(kind: u16, body: &mut Reader<'_>) -> Result<String, PacketError> {
    let len = body.remaining();
    if len > STREAM_ID_MAX {
        return Err(PacketError::ExtensionTooLong {
            kind,
            len,
            max: STREAM_ID_MAX,
        });
    }
    let raw = body.take(len, "handshake extension string")?;
    let mut bytes = Vec::with_capacity(len);
    // The length is a whole number of words: it came from a word count.
    for word in raw.chunks_exact(4) {
        bytes.extend(word.iter().rev());
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).map_err(|_| {
        if kind == ext_kind::SID {
            PacketError::StreamIdNotUtf8
        } else {
            PacketError::ExtensionNotUtf8 { kind }
        }
    })
}

/// Appends `s` zero-padded to whole words, each word's bytes reversed.
fn encode_string(s: &str, out: &mut Vec<u8>) {
    for chunk in s.as_bytes().chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        word.reverse();
        out.extend_from_slice(&word);
    }
}

/// The handshake's peer IP field for `addr`, as libsrt writes it: the address bytes in
/// 4-byte words, each word reversed; an IPv4 address fills the first word, the rest is zero.
pub fn peer_ip_to_wire(addr: IpAddr) -> [u8; 16] {
    let mut raw = [0u8; 16];
    match addr {
        IpAddr::V4(v4) => raw[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => raw = v6.octets(),
    }
    for word in raw.chunks_exact_mut(4) {
        word.reverse();
    }
    raw
}

/// The address in a handshake's peer IP field. Whether it is IPv6 cannot be told from the
/// field itself (libsrt decides by the family of the socket it arrived on), hence `ipv6`.
pub fn peer_ip_from_wire(raw: [u8; 16], ipv6: bool) -> IpAddr {
    let mut bytes = raw;
    for word in bytes.chunks_exact_mut(4) {
        word.reverse();
    }
    if ipv6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Control, ControlPacket, Packet};
    use super::*;

    const SID: &str = "#!::r=live/abc,m=publish";

    fn wrap(hs: Handshake) -> Packet {
        Packet::Control(ControlPacket {
            timestamp: 720,
            dest_socket: 0,
            body: Control::Handshake(hs),
        })
    }

    fn parse(bytes: &[u8]) -> Result<Packet, PacketError> {
        Packet::parse(Bytes::copy_from_slice(bytes))
    }

    fn handshake_of(p: Packet) -> Handshake {
        match p {
            Packet::Control(ControlPacket {
                body: Control::Handshake(hs),
                ..
            }) => hs,
            other => panic!("not a handshake: {other:?}"),
        }
    }

    fn round_trip(hs: &Handshake) -> Vec<u8> {
        let wire = wrap(hs.clone()).to_vec();
        let back = handshake_of(parse(&wire).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(&back, hs);
        assert_eq!(wrap(back).to_vec(), wire);
        wire
    }

    fn induction() -> Handshake {
        Handshake {
            version: 4,
            encryption: 0,
            extension: 2,
            initial_seq: SeqNo::new(2_077_608_397),
            mtu: 1500,
            flow_window: 8192,
            kind: HandshakeKind::Induction,
            socket_id: 0x339E_DC26,
            syn_cookie: 0,
            peer_ip: peer_ip_to_wire(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            extensions: Vec::new(),
        }
    }

    fn conclusion() -> Handshake {
        Handshake {
            version: 5,
            encryption: 2,
            extension: hs_ext_flags::HSREQ | hs_ext_flags::KMREQ | hs_ext_flags::CONFIG,
            kind: HandshakeKind::Conclusion,
            syn_cookie: 0xA2E0_0AC7,
            extensions: vec![
                HsExtension::HsReq(SrtHandshake {
                    version: 0x0001_0501,
                    flags: 0xBF,
                    recv_latency_ms: 200,
                    send_latency_ms: 120,
                }),
                HsExtension::StreamId(SID.to_owned()),
                HsExtension::KmReq(Bytes::from_static(&[
                    0x12, 0x20, 0x29, 0x01, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 4, 4,
                ])),
            ],
            ..induction()
        }
    }

    #[test]
    fn induction_without_extensions() {
        let wire = round_trip(&induction());
        assert_eq!(wire.len(), 16 + 48);
        // The address 127.0.0.1 goes out as 01 00 00 7F, like libsrt's.
        assert_eq!(wire[16 + 32..16 + 36], [1, 0, 0, 0x7F]);
    }

    #[test]
    fn conclusion_with_hsreq_sid_and_kmreq() {
        let hs = conclusion();
        let wire = round_trip(&hs);
        let ext = &wire[16 + 48..];
        assert_eq!(
            ext[..16],
            [0, 1, 0, 3, 0, 1, 5, 1, 0, 0, 0, 0xBF, 0, 200, 0, 120]
        );
        assert_eq!(ext[16..20], [0, 5, 0, 6]);
        assert_eq!(ext[44..48], [0, 3, 0, 4]);
        assert_eq!(hs.stream_id(), Some(SID));
        assert_eq!(hs.srt_handshake().map(|h| h.recv_latency_ms), Some(200));
        assert_eq!(hs.key_material().map(Bytes::len), Some(16));
    }

    #[test]
    fn stream_id_words_are_byte_reversed() {
        let mut out = Vec::new();
        encode_string(SID, &mut out);
        assert_eq!(&out[..8], b"::!#il=r");
        assert_eq!(&out, b"::!#il=ra/evm,cbbup=hsil");
        // Padding: "abcde" is two words, the second "e\0\0\0" reversed.
        let mut out = Vec::new();
        encode_string("abcde", &mut out);
        assert_eq!(&out, b"dcba\0\0\0e");
        let hs = Handshake {
            extensions: vec![HsExtension::StreamId("abcde".to_owned())],
            ..induction()
        };
        assert_eq!(round_trip(&hs)[16 + 48..], *b"\0\x05\0\x02dcba\0\0\0e");
    }

    #[test]
    fn strings_and_raw_extensions_round_trip() {
        let hs = Handshake {
            kind: HandshakeKind::Agreement,
            extensions: vec![
                HsExtension::HsRsp(SrtHandshake {
                    version: 0x0001_0400,
                    flags: srt_flags::TSBPD_SND | srt_flags::TSBPD_RCV,
                    recv_latency_ms: 0,
                    send_latency_ms: u16::MAX,
                }),
                HsExtension::KmRsp(Bytes::from_static(&[0, 0, 0, 4])),
                HsExtension::Congestion("live".to_owned()),
                HsExtension::Filter("fec,cols:10,rows:5".to_owned()),
                HsExtension::Group(Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8])),
                HsExtension::Unknown {
                    kind: 0x0100,
                    body: Bytes::new(),
                },
                HsExtension::StreamId(String::new()),
                HsExtension::StreamId("ü".repeat(STREAM_ID_MAX / 2)),
            ],
            ..induction()
        };
        round_trip(&hs);
        for kind in [
            HandshakeKind::Done,
            HandshakeKind::Wavehand,
            HandshakeKind::Rejection(1000),
            HandshakeKind::Rejection(u32::MAX - 3),
        ] {
            round_trip(&Handshake { kind, ..hs.clone() });
        }
    }

    #[test]
    fn odd_length_raw_contents_are_padded() {
        let hs = Handshake {
            extensions: vec![HsExtension::KmReq(Bytes::from_static(&[1, 2, 3, 4, 5]))],
            ..induction()
        };
        let back = handshake_of(parse(&wrap(hs).to_vec()).unwrap());
        assert_eq!(
            back.extensions,
            vec![HsExtension::KmReq(Bytes::from_static(&[
                1, 2, 3, 4, 5, 0, 0, 0
            ]))]
        );
    }

    #[test]
    fn handshake_kinds() {
        for (v, k) in [
            (0xFFFF_FFFD, HandshakeKind::Done),
            (0xFFFF_FFFE, HandshakeKind::Agreement),
            (0xFFFF_FFFF, HandshakeKind::Conclusion),
            (0, HandshakeKind::Wavehand),
            (1, HandshakeKind::Induction),
            (1010, HandshakeKind::Rejection(1010)),
        ] {
            assert_eq!(HandshakeKind::from_wire(v), Some(k));
            assert_eq!(k.wire(), v);
        }
        for v in [2, 999, 0x3E7] {
            assert_eq!(HandshakeKind::from_wire(v), None);
        }
        assert_eq!(
            HandshakeKind::rejection(RejectReason::Forbidden),
            HandshakeKind::Rejection(2403)
        );
        assert_eq!(
            HandshakeKind::Rejection(1010).reject_reason(),
            Some(RejectReason::BadSecret)
        );
        assert_eq!(HandshakeKind::Conclusion.reject_reason(), None);
    }

    #[test]
    fn handshake_errors() {
        let wire = wrap(conclusion()).to_vec();
        // Short CIF.
        assert_eq!(
            parse(&wire[..16 + 47]),
            Err(PacketError::Truncated {
                what: "handshake CIF",
                offset: 16,
                needed: 48,
                got: 47
            })
        );
        // Bad type.
        let mut bad = wire.clone();
        bad[16 + 20..16 + 24].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(parse(&bad), Err(PacketError::BadHandshakeKind(2)));
        // Truncated extension contents (the KMREQ loses its last byte).
        assert_eq!(
            parse(&wire[..wire.len() - 1]),
            Err(PacketError::ExtensionTruncated {
                kind: ext_kind::KMREQ,
                declared: 16,
                available: 15
            })
        );
        // A partial extension header.
        let mut partial = wrap(induction()).to_vec();
        partial.extend_from_slice(&[0, 5]);
        assert!(matches!(
            parse(&partial),
            Err(PacketError::Truncated {
                what: "handshake extension length",
                offset: 66,
                ..
            })
        ));
        // HSREQ with two words.
        let mut short = wrap(induction()).to_vec();
        short.extend_from_slice(&[0, 1, 0, 2, 0, 1, 5, 1, 0, 0, 0, 0xBF]);
        assert_eq!(
            parse(&short),
            Err(PacketError::ExtensionTooShort {
                kind: 1,
                len: 8,
                min: 12
            })
        );
        // Stream id too long, and not UTF-8.
        let mut long = wrap(induction()).to_vec();
        long.extend_from_slice(&[0, 5, 0, 129]);
        long.resize(long.len() + 516, b'a');
        assert_eq!(
            parse(&long),
            Err(PacketError::ExtensionTooLong {
                kind: 5,
                len: 516,
                max: STREAM_ID_MAX
            })
        );
        let mut latin1 = wrap(induction()).to_vec();
        latin1.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0xE9, b'a']);
        assert_eq!(parse(&latin1), Err(PacketError::StreamIdNotUtf8));
        latin1[16 + 49] = 6;
        assert_eq!(
            parse(&latin1),
            Err(PacketError::ExtensionNotUtf8 { kind: 6 })
        );
    }

    #[test]
    fn longest_stream_id_is_accepted() {
        let hs = Handshake {
            extensions: vec![HsExtension::StreamId("x".repeat(STREAM_ID_MAX))],
            ..induction()
        };
        round_trip(&hs);
    }

    #[test]
    fn peer_ip_words_are_reversed() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20));
        let raw = peer_ip_to_wire(v4);
        assert_eq!(raw[..4], [20, 1, 168, 192]);
        assert!(raw[4..].iter().all(|&b| b == 0));
        assert_eq!(peer_ip_from_wire(raw, false), v4);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let raw = peer_ip_to_wire(v6);
        assert_eq!(raw[..4], [0xb8, 0x0d, 0x01, 0x20]);
        assert_eq!(peer_ip_from_wire(raw, true), v6);
    }

    /// Datagrams recorded from libsrt 1.5.1 (Debian 12 srt-tools): `srt-live-transmit` as
    /// caller (`streamid=#!::r=live/abc,m=publish&latency=200`, with and without
    /// `passphrase=zerocast-secret-1`) through a recording UDP relay to `srt-live-transmit`
    /// as listener; and a caller with a wrong passphrase (`latency=120`).
    mod libsrt {
        use super::*;
        use crate::packet::{Ack, AckInfo, DataPacket, KeyFlag, LossRange, PacketPosition};

        macro_rules! capture {
            ($name:literal) => {
                include_bytes!(concat!("../../tests/data/libsrt-1.5.1-", $name, ".bin"))
            };
        }

        fn hs(bytes: &[u8]) -> Handshake {
            let p = parse(bytes).unwrap();
            // Every capture re-encodes to exactly the bytes libsrt sent.
            assert_eq!(p.to_vec(), bytes);
            handshake_of(p)
        }

        fn body(bytes: &[u8]) -> (u32, Control) {
            let p = parse(bytes).unwrap();
            assert_eq!(p.to_vec(), bytes);
            match p {
                Packet::Control(c) => (c.dest_socket, c.body),
                Packet::Data(d) => panic!("data: {d:?}"),
            }
        }

        #[test]
        fn caller_induction_is_version_4() {
            let bytes = capture!("caller-induction");
            assert_eq!(crate::packet::peek_dest_socket(bytes), Some(0));
            assert_eq!(hs(bytes), induction());
            assert_eq!(
                peer_ip_from_wire(induction().peer_ip, false),
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            );
        }

        #[test]
        fn listener_induction_answer_carries_the_magic() {
            let h = hs(capture!("listener-induction"));
            assert_eq!(h.version, 5);
            assert_eq!(h.extension, HS_MAGIC);
            assert_eq!(h.kind, HandshakeKind::Induction);
            assert_eq!(h.socket_id, 0x339E_DC26);
            assert_eq!(h.syn_cookie, 0xA2E0_0AC7);
            assert!(h.extensions.is_empty());
        }

        #[test]
        fn caller_conclusion_with_stream_id() {
            let h = hs(capture!("caller-conclusion-sid"));
            assert_eq!(h.version, 5);
            assert_eq!(h.kind, HandshakeKind::Conclusion);
            assert_eq!(h.extension, hs_ext_flags::HSREQ | hs_ext_flags::CONFIG);
            assert_eq!(h.syn_cookie, 0xA2E0_0AC7);
            assert_eq!(
                h.extensions,
                vec![
                    HsExtension::HsReq(SrtHandshake {
                        version: 0x0001_0501,
                        flags: 0xBF,
                        recv_latency_ms: 200,
                        send_latency_ms: 200,
                    }),
                    HsExtension::StreamId(SID.to_owned()),
                ]
            );
            let flags = h.srt_handshake().map_or(0, |s| s.flags);
            assert_eq!(flags & srt_flags::STREAM, 0);
            assert_ne!(flags & srt_flags::REXMIT_FLG, 0);
        }

        #[test]
        fn listener_conclusion_answer() {
            let h = hs(capture!("listener-conclusion"));
            assert_eq!(h.kind, HandshakeKind::Conclusion);
            assert_eq!(h.socket_id, 0x225A_2DB8);
            assert_eq!(h.extension, hs_ext_flags::HSREQ);
            assert!(matches!(h.extensions[..], [HsExtension::HsRsp(_)]));
        }

        #[test]
        fn encrypted_conclusions_carry_key_material() {
            let req = hs(capture!("caller-conclusion-kmreq"));
            assert_eq!(
                req.extension,
                hs_ext_flags::HSREQ | hs_ext_flags::KMREQ | hs_ext_flags::CONFIG
            );
            let km = req.key_material().unwrap();
            assert_eq!(km.len(), 56);
            // KM message: version 1, packet type 2, signature 0x2029, even key.
            assert_eq!(km[..4], [0x12, 0x20, 0x29, 0x01]);
            let rsp = hs(capture!("listener-conclusion-kmrsp"));
            assert!(matches!(rsp.extensions[1], HsExtension::KmRsp(_)));
            assert_eq!(rsp.key_material(), Some(km));
        }

        #[test]
        fn wrong_passphrase_is_refused_with_1010() {
            let h = hs(capture!("listener-reject-badsecret"));
            assert_eq!(h.kind, HandshakeKind::Rejection(1010));
            assert_eq!(h.kind.reject_reason(), Some(RejectReason::BadSecret));
        }

        #[test]
        fn data_packets() {
            let bytes = capture!("data");
            let Packet::Data(d) = parse(bytes).unwrap() else {
                panic!("not data");
            };
            assert_eq!(
                (
                    d.seq,
                    d.position,
                    d.in_order,
                    d.key,
                    d.retransmitted,
                    d.msg_no
                ),
                (
                    SeqNo::new(2_077_608_397),
                    PacketPosition::Only,
                    false,
                    KeyFlag::None,
                    false,
                    1
                )
            );
            assert_eq!(d.payload.len(), 1456);
            assert_eq!(Packet::Data(d).to_vec(), bytes);
            let Packet::Data(r) = parse(capture!("data-retransmitted")).unwrap() else {
                panic!("not data");
            };
            assert!(r.retransmitted);
            assert_eq!(r.msg_no, 5);
            let Packet::Data(DataPacket { key, .. }) = parse(capture!("data-even-key")).unwrap()
            else {
                panic!("not data");
            };
            assert_eq!(key, KeyFlag::Even);
        }

        #[test]
        fn control_packets() {
            assert_eq!(
                body(capture!("keepalive")),
                (0x339E_DC26, Control::KeepAlive)
            );
            assert_eq!(body(capture!("shutdown")), (0x225A_2DB8, Control::Shutdown));
            assert_eq!(body(capture!("ackack")).1, Control::AckAck { ack_no: 1 });
            assert_eq!(
                body(capture!("ack-full")).1,
                Control::Ack(Ack {
                    ack_no: 1,
                    last_ack: SeqNo::new(0x7BD5_C9D1),
                    info: Some(AckInfo {
                        rtt_us: 100_000,
                        rtt_var_us: 50_000,
                        avail_buffer: 8187,
                        pkt_rate: 3832,
                        link_capacity: 1000,
                        recv_rate_bps: 0x0057_9C3B,
                    }),
                })
            );
            assert_eq!(
                body(capture!("nak-range")).1,
                Control::Nak(vec![LossRange {
                    first: SeqNo::new(0x7BD5_C9D1),
                    last: SeqNo::new(0x7BD5_C9D2),
                }])
            );
            assert_eq!(
                body(capture!("nak-single")).1,
                Control::Nak(vec![LossRange::single(SeqNo::new(0x7BD5_C9E0))])
            );
        }
    }
}
