//! The RTMP chunk stream: splitting messages into chunks and reassembling them.
//!
//! Reference: Adobe RTMP specification 1.0, section 5.3. Every chunk starts with a basic header
//! (format and chunk stream id), then a message header of 11, 7, 3 or 0 bytes (formats 0 to 3),
//! then an optional 4-byte extended timestamp, then at most `chunk_size` payload bytes:
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+          fmt 0: timestamp(3) length(3) type(1) stream id(4, little endian)
//! |fmt|   csid    | [csid-64 (1 or 2 bytes)]   fmt 1: delta(3) length(3) type(1)
//! +-+-+-+-+-+-+-+-+          fmt 2: delta(3)      fmt 3: nothing
//! ```
//!
//! Extended timestamps: a timestamp field of `0xFFFFFF` means a 32-bit value follows the message
//! header. Like ffmpeg and librtmp, a format 3 header carries the extended field again whenever
//! the last format 0/1/2 header of its chunk stream did. On continuation chunks some encoders
//! omit it, so there the four bytes are consumed only when they repeat the expected value.
//!
//! Zero copy: the decoder cuts payloads out of the received `Bytes` (`split_to`, a refcount) and
//! assembles each message as a [`ByteRope`]. Only a partially received chunk header (at most
//! [`MAX_HEADER_LEN`] bytes) is ever copied.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use zerocast_codecs::ByteRope;

use crate::config::Limits;
use crate::error::Error;
use crate::message::{MessageType, RawMessage};

/// The longest chunk header: 3-byte basic header, 11-byte message header, extended timestamp.
pub const MAX_HEADER_LEN: usize = 18;
/// The chunk size both sides use until a Set Chunk Size message says otherwise.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk stream id expressible in a basic header.
pub const MAX_CSID: u32 = 65599;

const TS_EXTENDED: u32 = 0xFF_FFFF;

#[derive(Debug)]
struct Partial {
    rope: ByteRope,
    remaining: u32,
    offset: u64,
}

#[derive(Debug)]
struct CsidState {
    csid: u32,
    timestamp: u32,
    delta: u32,
    len: u32,
    msg_type: u8,
    stream_id: u32,
    /// The last format 0/1/2 header used an extended timestamp.
    ext: bool,
    ext_value: u32,
    partial: Option<Partial>,
}

/// A parsed chunk header, not yet applied to the chunk stream state.
#[derive(Debug)]
struct Header {
    fmt: u8,
    csid: u32,
    /// Timestamp or delta (extended value substituted), for formats 0-2 and extended format 3.
    ts: Option<u32>,
    ts_field_extended: bool,
    len: u32,
    msg_type: u8,
    stream_id: u32,
}

/// Reassembles RTMP messages from the inbound chunk stream.
///
/// Set Chunk Size and Abort messages are applied inside the decoder (they change how the very
/// next bytes are parsed) and are not returned.
#[derive(Debug)]
pub struct ChunkDecoder {
    max_chunk_size: u32,
    max_message_size: u32,
    max_chunk_streams: usize,
    chunk_size: u32,
    streams: Vec<CsidState>,
    /// Bytes of a chunk header received so far (only while the header is incomplete).
    hdr: Vec<u8>,
    hdr_offset: u64,
    /// Chunk whose payload is being received: index into `streams`, payload bytes left.
    cur: Option<(usize, u32)>,
    offset: u64,
}

impl ChunkDecoder {
    /// A decoder whose first byte is at `offset` in the connection's inbound stream.
    pub fn new(limits: &Limits, offset: u64) -> Self {
        ChunkDecoder {
            max_chunk_size: limits.max_chunk_size,
            max_message_size: limits.max_message_size,
            max_chunk_streams: limits.max_chunk_streams,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            hdr: Vec::with_capacity(MAX_HEADER_LEN),
            hdr_offset: offset,
            cur: None,
            offset,
        }
    }

    /// The peer's current chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Inbound offset of the next byte the decoder will read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Feeds received bytes; complete messages are appended to `out` in arrival order.
    ///
    /// On error the decoder must not be used again.
    pub fn push(&mut self, mut data: Bytes, out: &mut Vec<RawMessage>) -> Result<(), Error> {
        loop {
            if let Some((idx, left)) = self.cur {
                if data.is_empty() {
                    return Ok(());
                }
                let n = (left as usize).min(data.len());
                let part = data.split_to(n);
                self.offset += n as u64;
                self.payload(idx, left - n as u32, part, out)?;
                continue;
            }
            if data.is_empty() {
                return Ok(());
            }
            if self.hdr.is_empty() {
                let at = self.offset;
                match self.parse_header(&data, at)? {
                    Some((h, n)) => {
                        data.advance(n);
                        self.offset += n as u64;
                        self.apply(h, at, out)?;
                    }
                    None => {
                        // Incomplete header: fewer than MAX_HEADER_LEN bytes, keep a copy.
                        self.hdr_offset = at;
                        self.hdr.extend_from_slice(&data);
                        self.offset += data.len() as u64;
                        return Ok(());
                    }
                }
            } else {
                let prev = self.hdr.len();
                let take = (MAX_HEADER_LEN - prev).min(data.len());
                self.hdr.extend_from_slice(&data[..take]);
                let at = self.hdr_offset;
                match self.parse_header(&self.hdr, at)? {
                    Some((h, n)) => {
                        let hdr = std::mem::take(&mut self.hdr);
                        if n >= prev {
                            data.advance(n - prev);
                            self.offset += (n - prev) as u64;
                            self.apply(h, at, out)?;
                        } else {
                            // The header was shorter than the bytes already buffered (an
                            // omitted extended timestamp): the surplus (< 4 bytes) is payload.
                            self.apply(h, at, out)?;
                            self.offset -= (prev - n) as u64;
                            let surplus = Bytes::copy_from_slice(&hdr[n..prev]);
                            self.push(surplus, out)?;
                        }
                    }
                    None => {
                        data.advance(take);
                        self.offset += take as u64;
                    }
                }
            }
        }
    }

    fn find(&self, csid: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.csid == csid)
    }

    /// Parses a chunk header at the start of `b`; `None` when more bytes are needed.
    fn parse_header(&self, b: &[u8], at: u64) -> Result<Option<(Header, usize)>, Error> {
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut p) = match b0 & 0x3f {
            0 => match b.get(1) {
                Some(&x) => (64 + u32::from(x), 2),
                None => return Ok(None),
            },
            1 => match (b.get(1), b.get(2)) {
                (Some(&x), Some(&y)) => (64 + u32::from(x) + 256 * u32::from(y), 3),
                _ => return Ok(None),
            },
            x => (u32::from(x), 1),
        };
        let idx = self.find(csid);
        let state = idx.map(|i| &self.streams[i]);
        if fmt != 0 && state.is_none() {
            return Err(Error::UnknownChunkStream {
                csid,
                fmt,
                offset: at,
            });
        }
        let mh = [11usize, 7, 3, 0][fmt as usize];
        if b.len() < p + mh {
            return Ok(None);
        }
        let u24 = |i: usize| u32::from_be_bytes([0, b[i], b[i + 1], b[i + 2]]);
        let mut h = Header {
            fmt,
            csid,
            ts: None,
            ts_field_extended: false,
            len: 0,
            msg_type: 0,
            stream_id: 0,
        };
        if fmt <= 2 {
            h.ts = Some(u24(p));
        }
        if fmt <= 1 {
            h.len = u24(p + 3);
            h.msg_type = b[p + 6];
        }
        if fmt == 0 {
            h.stream_id = u32::from_le_bytes([b[p + 7], b[p + 8], b[p + 9], b[p + 10]]);
        }
        p += mh;
        let ext_expected = match h.ts {
            Some(t) => t == TS_EXTENDED,
            None => state.is_some_and(|s| s.ext),
        };
        if ext_expected {
            if b.len() < p + 4 {
                return Ok(None);
            }
            let v = u32::from_be_bytes([b[p], b[p + 1], b[p + 2], b[p + 3]]);
            let continuation = fmt == 3 && state.is_some_and(|s| s.partial.is_some());
            if continuation {
                // Consumed only when it repeats the value; some encoders omit it here.
                if state.is_some_and(|s| s.ext_value == v) {
                    p += 4;
                }
            } else {
                h.ts = Some(v);
                h.ts_field_extended = true;
                p += 4;
            }
        }
        if fmt == 0 && idx.is_none() && self.streams.len() >= self.max_chunk_streams {
            return Err(Error::TooManyChunkStreams {
                max: self.max_chunk_streams,
                offset: at,
            });
        }
        Ok(Some((h, p)))
    }

    fn apply(&mut self, h: Header, at: u64, out: &mut Vec<RawMessage>) -> Result<(), Error> {
        let idx = match self.find(h.csid) {
            Some(i) => i,
            None => {
                self.streams.push(CsidState {
                    csid: h.csid,
                    timestamp: 0,
                    delta: 0,
                    len: 0,
                    msg_type: 0,
                    stream_id: 0,
                    ext: false,
                    ext_value: 0,
                    partial: None,
                });
                self.streams.len() - 1
            }
        };
        let chunk_size = self.chunk_size;
        let max_msg = self.max_message_size;
        let s = &mut self.streams[idx];
        if h.fmt == 3 && s.partial.is_some() {
            // Continuation chunk of the message in progress.
            let remaining = s.partial.as_ref().map_or(0, |p| p.remaining);
            self.cur = Some((idx, remaining.min(chunk_size)));
            return Ok(());
        }
        // A new message. A header other than format 3 while a message is incomplete drops
        // the incomplete one (as ffmpeg does), like an implicit Abort.
        s.partial = None;
        if h.fmt <= 2 {
            s.ext = h.ts_field_extended;
        }
        if let Some(v) = h.ts {
            if h.ts_field_extended {
                s.ext_value = v;
            }
        }
        match h.fmt {
            0 => {
                let v = h.ts.unwrap_or(0);
                s.timestamp = v;
                // ffmpeg's convention: a following format 3 header adds this value again.
                s.delta = v;
                s.len = h.len;
                s.msg_type = h.msg_type;
                s.stream_id = h.stream_id;
            }
            1 | 2 => {
                let d = h.ts.unwrap_or(0);
                s.delta = d;
                s.timestamp = s.timestamp.wrapping_add(d);
                if h.fmt == 1 {
                    s.len = h.len;
                    s.msg_type = h.msg_type;
                }
            }
            _ => {
                if let Some(d) = h.ts {
                    s.delta = d;
                }
                s.timestamp = s.timestamp.wrapping_add(s.delta);
            }
        }
        if s.len > max_msg {
            return Err(Error::MessageTooLarge {
                len: s.len,
                max: max_msg,
                offset: at,
            });
        }
        s.partial = Some(Partial {
            rope: ByteRope::new(),
            remaining: s.len,
            offset: at,
        });
        if s.len == 0 {
            return self.payload(idx, 0, Bytes::new(), out);
        }
        self.cur = Some((idx, s.len.min(chunk_size)));
        Ok(())
    }

    /// Adds received payload bytes to the current chunk; `left` is what the chunk still lacks.
    fn payload(
        &mut self,
        idx: usize,
        left: u32,
        part: Bytes,
        out: &mut Vec<RawMessage>,
    ) -> Result<(), Error> {
        let s = &mut self.streams[idx];
        let Some(p) = s.partial.as_mut() else {
            self.cur = None;
            return Ok(());
        };
        p.remaining -= part.len() as u32;
        p.rope.push(part);
        if p.remaining > 0 {
            self.cur = if left > 0 { Some((idx, left)) } else { None };
            return Ok(());
        }
        self.cur = None;
        let Some(p) = s.partial.take() else {
            return Ok(());
        };
        let msg = RawMessage {
            csid: s.csid,
            msg_type: s.msg_type,
            stream_id: s.stream_id,
            timestamp: s.timestamp,
            payload: p.rope,
            offset: p.offset,
        };
        self.control(msg, out)
    }

    fn control(&mut self, msg: RawMessage, out: &mut Vec<RawMessage>) -> Result<(), Error> {
        match MessageType::from_u8(msg.msg_type) {
            Some(MessageType::SetChunkSize) => {
                let v = msg.payload.reader().u32().map_err(|_| Error::Invalid {
                    offset: msg.offset,
                    what: "Set Chunk Size body shorter than 4 bytes",
                })?;
                if v & 0x8000_0000 != 0 {
                    return Err(Error::Invalid {
                        offset: msg.offset,
                        what: "Set Chunk Size with the reserved top bit set",
                    });
                }
                if v == 0 {
                    return Err(Error::Invalid {
                        offset: msg.offset,
                        what: "Set Chunk Size of zero",
                    });
                }
                if v > self.max_chunk_size {
                    return Err(Error::ChunkSizeTooLarge {
                        size: v,
                        max: self.max_chunk_size,
                        offset: msg.offset,
                    });
                }
                self.chunk_size = v;
            }
            Some(MessageType::Abort) => {
                let csid = msg.payload.reader().u32().map_err(|_| Error::Invalid {
                    offset: msg.offset,
                    what: "Abort body shorter than 4 bytes",
                })?;
                if let Some(i) = self.find(csid) {
                    self.streams[i].partial = None;
                }
            }
            _ => out.push(msg),
        }
        Ok(())
    }
}

fn basic_header(csid: u32, fmt: u8, b: &mut BytesMut) {
    let f = fmt << 6;
    if csid < 64 {
        b.put_u8(f | csid as u8);
    } else if csid < 320 {
        b.put_u8(f);
        b.put_u8((csid - 64) as u8);
    } else {
        let v = csid - 64;
        b.put_u8(f | 1);
        b.put_u8((v & 0xff) as u8);
        b.put_u8((v >> 8) as u8);
    }
}

fn basic_header_len(csid: u32) -> usize {
    if csid < 64 {
        1
    } else if csid < 320 {
        2
    } else {
        3
    }
}

/// Encodes one message as chunks: a format 0 chunk then format 3 continuation chunks.
///
/// Stateless, so the same output can be sent to any number of connections that use
/// `chunk_size`. All header bytes come from one allocation; payload parts are slices of
/// `payload` (refcounts). A timestamp of `0xFFFFFF` or more uses the extended field, repeated
/// on every continuation chunk as ffmpeg and librtmp expect.
///
/// `csid` is clamped to `2..=65599`, `chunk_size` to at least 1. RTMP cannot express a message
/// longer than `0xFFFFFF` bytes; a longer payload is truncated to that length.
pub fn encode_message(
    csid: u32,
    msg_type: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &ByteRope,
    chunk_size: u32,
    out: &mut ByteRope,
) {
    let csid = csid.clamp(2, MAX_CSID);
    let chunk = chunk_size.max(1) as usize;
    let len = payload.len().min(TS_EXTENDED as usize);
    debug_assert_eq!(
        len,
        payload.len(),
        "RTMP message longer than 0xFFFFFF bytes"
    );
    let ext = timestamp >= TS_EXTENDED;
    let bh = basic_header_len(csid);
    let ext_len = if ext { 4 } else { 0 };
    let chunks = len.div_ceil(chunk).max(1);
    let mut hdr = BytesMut::with_capacity(bh + 11 + ext_len + (chunks - 1) * (bh + ext_len));

    basic_header(csid, 0, &mut hdr);
    let ts_field = timestamp.min(TS_EXTENDED);
    hdr.put_slice(&ts_field.to_be_bytes()[1..]);
    hdr.put_slice(&(len as u32).to_be_bytes()[1..]);
    hdr.put_u8(msg_type);
    hdr.put_u32_le(stream_id);
    if ext {
        hdr.put_u32(timestamp);
    }
    out.push(hdr.split().freeze());

    let parts = payload.parts();
    let mut pi = 0usize; // current part
    let mut po = 0usize; // offset in current part
    let mut sent = 0usize;
    let mut first = true;
    while sent < len {
        if !first {
            basic_header(csid, 3, &mut hdr);
            if ext {
                hdr.put_u32(timestamp);
            }
            out.push(hdr.split().freeze());
        }
        first = false;
        let mut need = chunk.min(len - sent);
        sent += need;
        while need > 0 && pi < parts.len() {
            let p = &parts[pi];
            let n = need.min(p.len() - po);
            out.push(p.slice(po..po + n));
            po += n;
            need -= n;
            if po == p.len() {
                pi += 1;
                po = 0;
            }
        }
    }
}

/// Per-connection outbound chunking: [`encode_message`] with the connection's chunk size.
#[derive(Debug, Clone)]
pub struct ChunkEncoder {
    chunk_size: u32,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        ChunkEncoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ChunkEncoder {
    /// The chunk size in use.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Changes the chunk size; call after queueing the Set Chunk Size message that announces it.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.max(1);
    }

    /// Encodes one message (see [`encode_message`]).
    pub fn encode(
        &self,
        csid: u32,
        msg_type: u8,
        stream_id: u32,
        timestamp: u32,
        payload: &ByteRope,
        out: &mut ByteRope,
    ) {
        encode_message(
            csid,
            msg_type,
            stream_id,
            timestamp,
            payload,
            self.chunk_size,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn decode_all(data: &[u8]) -> Result<Vec<RawMessage>, Error> {
        let mut d = ChunkDecoder::new(&limits(), 0);
        let mut out = Vec::new();
        d.push(Bytes::copy_from_slice(data), &mut out)?;
        Ok(out)
    }

    fn flat(r: &ByteRope) -> Vec<u8> {
        r.to_contiguous().to_vec()
    }

    fn encode(csid: u32, t: u8, sid: u32, ts: u32, payload: &[u8], cs: u32) -> Vec<u8> {
        let mut out = ByteRope::new();
        encode_message(
            csid,
            t,
            sid,
            ts,
            &ByteRope::from(payload.to_vec()),
            cs,
            &mut out,
        );
        flat(&out)
    }

    #[test]
    fn all_four_formats() {
        let mut s = Vec::new();
        // fmt 0: csid 4, ts 1000, len 3, audio, stream 1.
        s.extend_from_slice(&[
            0x04, 0x00, 0x03, 0xe8, 0, 0, 3, 8, 1, 0, 0, 0, b'a', b'b', b'c',
        ]);
        // fmt 1: delta 20, len 2, video.
        s.extend_from_slice(&[0x44, 0, 0, 20, 0, 0, 2, 9, b'x', b'y']);
        // fmt 2: delta 30.
        s.extend_from_slice(&[0x84, 0, 0, 30, b'z', b'w']);
        // fmt 3 new message: same delta 30.
        s.extend_from_slice(&[0xc4, b'q', b'r']);
        let m = decode_all(&s).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(
            (m[0].timestamp, m[0].msg_type, m[0].stream_id),
            (1000, 8, 1)
        );
        assert_eq!(flat(&m[0].payload), b"abc");
        assert_eq!(
            (m[1].timestamp, m[1].msg_type, m[1].stream_id),
            (1020, 9, 1)
        );
        assert_eq!((m[2].timestamp, m[2].msg_type), (1050, 9));
        assert_eq!(flat(&m[2].payload), b"zw");
        assert_eq!(m[3].timestamp, 1080);
        assert_eq!(flat(&m[3].payload), b"qr");
        assert_eq!(m[1].offset, 15);
    }

    #[test]
    fn long_csid_forms() {
        for csid in [2u32, 63, 64, 319, 320, 65599] {
            let b = encode(csid, 20, 0, 5, b"hello", 128);
            let m = decode_all(&b).unwrap();
            assert_eq!(m[0].csid, csid);
            assert_eq!(flat(&m[0].payload), b"hello");
        }
    }

    #[test]
    fn extended_timestamp_and_type3_rule() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let b = encode(6, 9, 1, 0x0100_0000, &payload, 128);
        // fmt0 header 1+11+4, then two fmt3 headers 1+4 each.
        assert_eq!(b.len(), 16 + 300 + 2 * 5);
        assert_eq!(&b[12..16], &[1, 0, 0, 0]);
        assert_eq!(&b[16 + 128..16 + 128 + 5], &[0xc6, 1, 0, 0, 0]);
        let m = decode_all(&b).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].timestamp, 0x0100_0000);
        assert_eq!(flat(&m[0].payload), payload);

        // Continuation chunks without the repeated extended timestamp are accepted too.
        let mut b2 = b[..16 + 128].to_vec();
        b2.push(0xc6);
        b2.extend_from_slice(&payload[128..256]);
        b2.push(0xc6);
        b2.extend_from_slice(&payload[256..]);
        let m = decode_all(&b2).unwrap();
        assert_eq!(flat(&m[0].payload), payload);

        // A format 3 header starting a new message after an extended header carries the
        // extended field, which is the delta.
        let mut b3 = encode(6, 9, 1, 0x0100_0000, b"ab", 128);
        b3.extend_from_slice(&[0xc6, 0, 0, 0, 10, b'c', b'd']);
        let m = decode_all(&b3).unwrap();
        assert_eq!(m[1].timestamp, 0x0100_000a);
        assert_eq!(flat(&m[1].payload), b"cd");
    }

    #[test]
    fn interleaved_chunk_streams() {
        let a: Vec<u8> = vec![0xaa; 200];
        let v: Vec<u8> = vec![0xbb; 150];
        let ea = encode(4, 8, 1, 10, &a, 128);
        let ev = encode(6, 9, 1, 20, &v, 128);
        // a chunk 1, v chunk 1, a chunk 2, v chunk 2
        let mut s = Vec::new();
        s.extend_from_slice(&ea[..12 + 128]);
        s.extend_from_slice(&ev[..12 + 128]);
        s.extend_from_slice(&ea[12 + 128..]);
        s.extend_from_slice(&ev[12 + 128..]);
        let m = decode_all(&s).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].csid, flat(&m[0].payload)), (4, a));
        assert_eq!((m[1].csid, flat(&m[1].payload)), (6, v));
    }

    #[test]
    fn chunk_size_change_mid_stream() {
        let mut s = encode(2, 1, 0, 0, &1000u32.to_be_bytes(), 128);
        let p: Vec<u8> = (0..2500u32).map(|i| (i * 7) as u8).collect();
        s.extend_from_slice(&encode(6, 9, 1, 0, &p, 1000));
        let mut d = ChunkDecoder::new(&limits(), 0);
        let mut out = Vec::new();
        d.push(Bytes::from(s), &mut out).unwrap();
        assert_eq!(d.chunk_size(), 1000);
        assert_eq!(out.len(), 1);
        assert_eq!(flat(&out[0].payload), p);
    }

    #[test]
    fn abort_discards_partial() {
        let p = vec![1u8; 300];
        let e = encode(6, 9, 1, 0, &p, 128);
        let mut s = e[..12 + 128].to_vec();
        s.extend_from_slice(&encode(2, 2, 0, 0, &6u32.to_be_bytes(), 128));
        s.extend_from_slice(&encode(6, 9, 1, 40, b"new", 128));
        let m = decode_all(&s).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(flat(&m[0].payload), b"new");
        assert_eq!(m[0].timestamp, 40);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let mut s = encode(2, 1, 0, 0, &200u32.to_be_bytes(), 128);
        let big: Vec<u8> = (0..700u32).map(|i| i as u8).collect();
        s.extend_from_slice(&encode(4, 8, 1, 0x00ff_ffff, &big, 200));
        s.extend_from_slice(&encode(300, 20, 0, 3, b"cmd", 200));
        s.extend_from_slice(&encode(6, 9, 1, 7, &[], 200));
        s.extend_from_slice(&encode(6, 9, 1, 0x7fff_ffff, &big[..450], 200));
        let whole = decode_all(&s).unwrap();
        assert_eq!(whole.len(), 4);
        for cut in 0..=s.len() {
            let mut d = ChunkDecoder::new(&limits(), 0);
            let mut out = Vec::new();
            d.push(Bytes::copy_from_slice(&s[..cut]), &mut out).unwrap();
            d.push(Bytes::copy_from_slice(&s[cut..]), &mut out).unwrap();
            let key = |m: &RawMessage| {
                (
                    m.csid,
                    m.msg_type,
                    m.stream_id,
                    m.timestamp,
                    m.offset,
                    flat(&m.payload),
                )
            };
            let a: Vec<_> = out.iter().map(key).collect();
            let b: Vec<_> = whole.iter().map(key).collect();
            assert_eq!(a, b, "cut at {cut}");
        }
        // Byte by byte.
        let mut d = ChunkDecoder::new(&limits(), 0);
        let mut out = Vec::new();
        for b in &s {
            d.push(Bytes::copy_from_slice(&[*b]), &mut out).unwrap();
        }
        assert_eq!(out.len(), 4);
        for (a, b) in out.iter().zip(&whole) {
            assert_eq!(
                (a.timestamp, flat(&a.payload)),
                (b.timestamp, flat(&b.payload))
            );
        }
        assert_eq!(d.offset(), s.len() as u64);
    }

    #[test]
    fn payload_is_zero_copy() {
        let p = vec![9u8; 500];
        let buf = Bytes::from(encode(6, 9, 1, 0, &p, 128));
        let mut d = ChunkDecoder::new(&limits(), 0);
        let mut out = Vec::new();
        d.push(buf.clone(), &mut out).unwrap();
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        for part in out[0].payload.parts() {
            assert!(range.contains(&(part.as_ptr() as usize)));
        }
        assert_eq!(out[0].payload.parts().len(), 4);
    }

    #[test]
    fn round_trip_around_chunk_boundaries() {
        for cs in [1u32, 2, 127, 128, 129, 4096] {
            for len in [
                0usize, 1, 127, 128, 129, 255, 256, 257, 4095, 4096, 4097, 9000,
            ] {
                if cs < 64 && len > 300 {
                    continue;
                }
                let p: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                // A rope of uneven parts, to exercise slicing across part borders.
                let mut rope = ByteRope::new();
                let mut i = 0;
                let mut step = 1;
                while i < len {
                    let n = step.min(len - i);
                    rope.push(Bytes::copy_from_slice(&p[i..i + n]));
                    i += n;
                    step = step * 3 + 1;
                }
                let mut out = ByteRope::new();
                let mut s = encode(2, 1, 0, 0, &cs.to_be_bytes(), 128);
                encode_message(6, 9, 3, 12345, &rope, cs, &mut out);
                s.extend_from_slice(&flat(&out));
                let m = decode_all(&s).unwrap();
                assert_eq!(m.len(), 1, "cs {cs} len {len}");
                assert_eq!(flat(&m[0].payload), p);
                assert_eq!((m[0].stream_id, m[0].timestamp), (3, 12345));
            }
        }
    }

    #[test]
    fn limits_refuse() {
        // 16 MiB - 1 message length with an 8 MiB limit.
        let s = [0x06, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
        assert_eq!(
            decode_all(&s),
            Err(Error::MessageTooLarge {
                len: 0xff_ffff,
                max: 8 * 1024 * 1024,
                offset: 0
            })
        );
        // Chunk size 0x7fffffff.
        let s = encode(2, 1, 0, 0, &0x7fff_ffffu32.to_be_bytes(), 128);
        assert!(matches!(
            decode_all(&s),
            Err(Error::ChunkSizeTooLarge {
                size: 0x7fff_ffff,
                ..
            })
        ));
        let s = encode(2, 1, 0, 0, &0u32.to_be_bytes(), 128);
        assert!(matches!(decode_all(&s), Err(Error::Invalid { .. })));
        // Unknown chunk stream.
        assert!(matches!(
            decode_all(&[0x45, 0, 0, 0, 0, 0, 1, 9, 0]),
            Err(Error::UnknownChunkStream {
                csid: 5,
                fmt: 1,
                ..
            })
        ));
        // Too many chunk streams.
        let mut s = Vec::new();
        for csid in 2..70 {
            s.extend_from_slice(&encode(csid, 9, 1, 0, b"x", 128));
        }
        assert!(matches!(
            decode_all(&s),
            Err(Error::TooManyChunkStreams { max: 64, .. })
        ));
    }
}
