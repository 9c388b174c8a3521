//! The sans-IO demuxer: transport stream bytes in, tracks and frames out.

use std::time::Instant;

use bytes::Bytes;

use super::packet::{Packet, NULL_PID, PAT_PID};
use super::pes::PesHeader;
use super::psi::{find_descriptor, Pat, Pmt, SectionAssembler};
use super::{stream_type, TsError, PACKET_SIZE, SYNC_BYTE};
use crate::aac::AdtsHeader;
use crate::bits::remove_emulation_prevention;
use crate::h264::{self, AvcDecoderConfig};
use crate::h265;
use crate::media::{CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};
use crate::opus::OpusHead;
use crate::rope::ByteRope;

/// Limits of a [`Demuxer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemuxConfig {
    /// Largest PES packet reassembled, in bytes (default 8 MiB).
    pub max_pes_size: usize,
    /// Bytes skipped while looking for sync before [`TsError::NoSync`] (default 64 KiB).
    pub max_resync: usize,
}

impl Default for DemuxConfig {
    fn default() -> Self {
        DemuxConfig {
            max_pes_size: 8 << 20,
            max_resync: 64 << 10,
        }
    }
}

/// What the demuxer found.
#[derive(Debug, Clone, PartialEq)]
pub enum DemuxEvent {
    /// A track's configuration, before its first frame and again whenever it changes.
    /// Demuxed tracks have timescale 1000 (milliseconds).
    Track(Track),
    /// One access unit (video) or one codec frame (audio), timestamps in milliseconds.
    Frame(Frame),
}

/// One followed elementary stream.
#[derive(Debug)]
struct Stream {
    pid: u16,
    kind: MediaKind,
    codec: CodecId,
    opus_channels: u8,
    cc: Option<u8>,
    /// The PES being reassembled (packet payload slices), empty when none.
    pes: ByteRope,
    /// The PES lost packets: skip until the next unit start.
    broken: bool,
    pes_offset: u64,
    ingest: Option<Instant>,
    /// Parameter sets in use: VPS (H.265), SPS, PPS.
    params: [Vec<Bytes>; 3],
    track: Option<Track>,
}

/// Unwraps 33-bit timestamps against the last one seen (see the module docs).
#[derive(Debug, Default)]
struct Clock {
    last: Option<i64>,
}

impl Clock {
    fn unwrap(&mut self, raw: u64) -> i64 {
        const M: i64 = 1 << 33;
        let raw = raw as i64 & (M - 1);
        let v = match self.last {
            None => raw,
            Some(last) => {
                let d = (raw - last).rem_euclid(M);
                last + if d >= M / 2 { d - M } else { d }
            }
        };
        self.last = Some(v);
        v
    }
}

/// Splits an Annex-B elementary stream into NAL units (sub-ropes, no copy); leading and
/// trailing zero bytes around start codes are dropped.
fn split_annexb(es: &ByteRope) -> Vec<ByteRope> {
    let mut nals = Vec::new();
    let (mut zeros, mut g, mut start) = (0usize, 0usize, None::<usize>);
    for part in es.parts() {
        for &b in part.iter() {
            if b == 0 {
                zeros += 1;
            } else {
                if b == 1 && zeros >= 2 {
                    if let Some(s) = start.filter(|&s| g - zeros > s) {
                        nals.extend(es.slice(s, g - zeros - s));
                    }
                    start = Some(g + 1);
                }
                zeros = 0;
            }
            g += 1;
        }
    }
    if let Some(s) = start.filter(|&s| g - zeros > s) {
        nals.extend(es.slice(s, g - zeros - s));
    }
    nals
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 3.1).
fn opus_samples(packet: &ByteRope) -> i64 {
    let toc = packet.get(0).unwrap_or(0);
    let config = usize::from(toc >> 3);
    let per_frame = match config {
        0..=11 => [480, 960, 1920, 2880][config % 4],
        12..=15 => [480, 960][config % 2],
        _ => [120, 240, 480, 960][config % 4],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => i64::from(packet.get(1).unwrap_or(0) & 0x3f),
    };
    per_frame * frames
}

/// A minimal HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) from parameter sets:
/// profile, tier and level copied from the SPS's profile_tier_level; chroma format 4:2:0 and
/// 8-bit depths are assumed, 4-byte NAL lengths.
fn hvcc(params: &[Vec<Bytes>; 3]) -> Option<Bytes> {
    let rbsp = remove_emulation_prevention(params[1].first()?.get(2..)?);
    let mut c = vec![1];
    c.extend_from_slice(rbsp.get(1..13)?);
    c.extend_from_slice(&[0xf0, 0x00, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f, 3]);
    for (nal_type, list) in [
        h265::nal_type::VPS,
        h265::nal_type::SPS,
        h265::nal_type::PPS,
    ]
    .into_iter()
    .zip(params)
    {
        c.push(0x80 | nal_type);
        c.extend_from_slice(&(list.len() as u16).to_be_bytes());
        for n in list {
            c.extend_from_slice(&(n.len() as u16).to_be_bytes());
            c.extend_from_slice(n);
        }
    }
    Some(c.into())
}

/// The sans-IO transport stream demuxer.
///
/// Feed it bytes as they arrive, in any split, with [`push`](Self::push); it emits a
/// [`DemuxEvent::Track`] before a track's first frame and then [`DemuxEvent::Frame`]s. A PES
/// packet is complete when the next one starts on its PID (or when its `PES_packet_length`
/// is reached), so call [`flush`](Self::flush) at the end of the stream.
///
/// Buffering is bounded: fewer than 189 bytes of an unfinished packet (a packet split across
/// two pushes is copied, once, into its own 188 bytes; every other payload is a slice of the
/// pushed `Bytes`), one PSI section, and one PES per stream up to
/// [`DemuxConfig::max_pes_size`]. Packet loss (a continuity counter gap) drops the PES it hit.
/// Parameter sets and access unit delimiters are taken out of video frames: the track's
/// configuration carries them. Frames before a track's configuration is known are dropped.
///
/// After an error the rest of that push is dropped; the caller normally closes the input.
#[derive(Debug, Default)]
pub struct Demuxer {
    config: DemuxConfig,
    carry: Vec<u8>,
    /// Stream offset of `carry[0]`.
    offset: u64,
    synced: bool,
    skipped: usize,
    pat: SectionAssembler,
    pmt: SectionAssembler,
    pmt_pid: Option<u16>,
    sections: Vec<(u64, Vec<u8>)>,
    streams: Vec<Stream>,
    clock: Clock,
}

impl Demuxer {
    /// A demuxer with the given limits.
    pub fn new(config: DemuxConfig) -> Self {
        Demuxer {
            config,
            ..Default::default()
        }
    }

    /// Consumes `data`, the next bytes of the stream, received at `ingest`.
    pub fn push(
        &mut self,
        data: Bytes,
        ingest: Instant,
        out: &mut Vec<DemuxEvent>,
    ) -> Result<(), TsError> {
        let carry = std::mem::take(&mut self.carry);
        let c = carry.len();
        let total = c + data.len();
        let at = |i: usize| if i < c { carry[i] } else { data[i - c] };
        let mut i = 0;
        let mut result = Ok(());
        while i + PACKET_SIZE <= total {
            if self.synced && at(i) != SYNC_BYTE {
                self.synced = false;
            }
            if !self.synced {
                // Lock on two sync bytes a packet apart; wait for the second one.
                if i + PACKET_SIZE >= total {
                    break;
                }
                if at(i) != SYNC_BYTE || at(i + PACKET_SIZE) != SYNC_BYTE {
                    i += 1;
                    self.skipped += 1;
                    if self.skipped > self.config.max_resync {
                        result = Err(TsError::NoSync {
                            offset: self.offset + i as u64,
                            skipped: self.skipped,
                        });
                        self.skipped = 0;
                        break;
                    }
                    continue;
                }
                self.synced = true;
                self.skipped = 0;
            }
            let end = i + PACKET_SIZE;
            let packet = if i >= c {
                data.slice(i - c..end - c)
            } else {
                let mut v = Vec::with_capacity(PACKET_SIZE);
                v.extend_from_slice(&carry[i..end.min(c)]);
                v.extend_from_slice(&data[..end.saturating_sub(c)]);
                Bytes::from(v)
            };
            let base = self.offset + i as u64;
            i = end;
            if let Err(e) = self.packet(packet, base, ingest, out) {
                result = Err(e);
                i = total;
                break;
            }
        }
        if i < c {
            self.carry.extend_from_slice(&carry[i..]);
        }
        self.carry.extend_from_slice(&data[i.saturating_sub(c)..]);
        self.offset += i as u64;
        result
    }

    /// Ends the stream: emits the PES packets still being reassembled.
    pub fn flush(&mut self, out: &mut Vec<DemuxEvent>) -> Result<(), TsError> {
        for i in 0..self.streams.len() {
            self.finish_pes(i, out)?;
        }
        Ok(())
    }

    fn packet(
        &mut self,
        data: Bytes,
        base: u64,
        ingest: Instant,
        out: &mut Vec<DemuxEvent>,
    ) -> Result<(), TsError> {
        let p = Packet::parse(&data, base)?;
        let h = p.header;
        if h.error || h.pid == NULL_PID || !h.has_payload {
            return Ok(());
        }
        let payload_base = base + (PACKET_SIZE - p.payload.len()) as u64;
        if h.pid == PAT_PID || Some(h.pid) == self.pmt_pid {
            let asm = if h.pid == PAT_PID {
                &mut self.pat
            } else {
                &mut self.pmt
            };
            asm.push(&p.payload, h.unit_start, payload_base, &mut self.sections)?;
            for (offset, s) in std::mem::take(&mut self.sections) {
                if h.pid == PAT_PID {
                    let pat = Pat::decode(&s, offset)?;
                    let pid = pat
                        .programs
                        .iter()
                        .find(|e| e.program_number != 0)
                        .map(|e| e.pid);
                    if pid != self.pmt_pid {
                        self.pmt_pid = pid;
                        self.pmt = SectionAssembler::default();
                    }
                } else {
                    let pmt = Pmt::decode(&s, h.pid, offset)?;
                    self.on_pmt(&pmt);
                }
            }
            return Ok(());
        }
        let Some(i) = self.streams.iter().position(|s| s.pid == h.pid) else {
            return Ok(());
        };
        let s = &mut self.streams[i];
        let discontinuity = p.adaptation.is_some_and(|a| a.discontinuity);
        if let Some(last) = s.cc {
            if h.cc == last && !discontinuity {
                return Ok(()); // A duplicate packet (2.4.3.3).
            }
            if h.cc != (last + 1) & 0xf && !discontinuity {
                s.broken = true;
            }
        }
        s.cc = Some(h.cc);
        if h.unit_start {
            self.finish_pes(i, out)?;
            let s = &mut self.streams[i];
            s.broken = false;
            s.pes_offset = payload_base;
            s.ingest = Some(ingest);
        } else if s.broken || s.pes.is_empty() {
            s.pes = ByteRope::new();
            return Ok(());
        }
        let padding = PACKET_SIZE - 4 - p.payload.len();
        // What the field's own contents take (a bare length byte is itself one stuffing byte).
        let stuffed = p.adaptation.is_some_and(|a| {
            let fields = if a.min_len() == 1 { 0 } else { a.min_len() };
            padding > fields
        });
        let s = &mut self.streams[i];
        s.pes.push(p.payload);
        if s.pes.len() > self.config.max_pes_size {
            let size = s.pes.len();
            s.pes = ByteRope::new();
            return Err(TsError::PesTooLarge {
                pid: s.pid,
                offset: base,
                size,
                max: self.config.max_pes_size,
            });
        }
        let declared = match (s.pes.get(4), s.pes.get(5)) {
            (Some(a), Some(b)) => usize::from(u16::from_be_bytes([a, b])),
            _ => 0,
        };
        // A video PES of unbounded length ends where the next one starts, a frame later. But
        // muxers pad only the last packet of a PES with adaptation-field stuffing (ffmpeg and
        // so OBS do), so a stuffed packet ends the frame now: a frame interval less latency.
        if (declared != 0 && s.pes.len() >= 6 + declared) || (declared == 0 && stuffed) {
            self.finish_pes(i, out)?;
        }
        Ok(())
    }

    fn on_pmt(&mut self, pmt: &Pmt) {
        let mut picked: Vec<Stream> = Vec::with_capacity(2);
        for e in &pmt.streams {
            let opus = |d: &[u8]| find_descriptor(d, 0x05).is_some_and(|r| r.starts_with(b"Opus"));
            let (kind, codec) = match e.stream_type {
                stream_type::H264 => (MediaKind::Video, CodecId::H264),
                stream_type::H265 => (MediaKind::Video, CodecId::H265),
                stream_type::AAC_ADTS => (MediaKind::Audio, CodecId::Aac),
                stream_type::PRIVATE_PES if opus(&e.descriptors) || opus(&pmt.program_info) => {
                    (MediaKind::Audio, CodecId::Opus)
                }
                _ => continue,
            };
            if picked.iter().any(|s| s.kind == kind) {
                continue;
            }
            // Opus extension descriptor (tag 0x7f, extension tag 0x80): channel_config_code.
            let opus_channels = match find_descriptor(&e.descriptors, 0x7f) {
                Some([0x80, n @ 1..=8, ..]) => *n,
                _ => 2,
            };
            let old = self
                .streams
                .iter()
                .position(|s| s.pid == e.pid && s.codec == codec);
            picked.push(match old {
                Some(i) => self.streams.swap_remove(i),
                None => Stream {
                    pid: e.pid,
                    kind,
                    codec,
                    opus_channels,
                    cc: None,
                    pes: ByteRope::new(),
                    broken: false,
                    pes_offset: 0,
                    ingest: None,
                    params: Default::default(),
                    track: None,
                },
            });
        }
        self.streams = picked;
    }

    fn finish_pes(&mut self, i: usize, out: &mut Vec<DemuxEvent>) -> Result<(), TsError> {
        let s = &mut self.streams[i];
        let pes = std::mem::take(&mut s.pes);
        if pes.is_empty() || s.broken {
            return Ok(());
        }
        let offset = s.pes_offset;
        let truncated = |_| TsError::Invalid {
            offset,
            what: "PES header truncated",
        };
        let (h, header_len) = PesHeader::decode(&pes, offset).map_err(|e| match e {
            TsError::Incomplete { .. } => truncated(()),
            e => e,
        })?;
        let end = match usize::from(h.packet_length) {
            0 => pes.len(),
            n if pes.len() >= 6 + n => 6 + n,
            _ => {
                return Err(TsError::Invalid {
                    offset,
                    what: "PES shorter than its PES_packet_length",
                })
            }
        };
        let Some(pts) = h.pts else {
            return Ok(()); // Nothing to place it in time with.
        };
        let dts = self.clock.unwrap(h.dts.unwrap_or(pts));
        let pts = self.clock.unwrap(pts);
        let es = pes
            .slice(header_len, end.saturating_sub(header_len))
            .unwrap_or_default();
        let ingest = s.ingest.unwrap_or_else(Instant::now);
        match s.codec {
            CodecId::H264 | CodecId::H265 => video(s, es, dts, pts, ingest, offset, out),
            CodecId::Aac => adts(s, es, pts, ingest, offset, out),
            _ => opus(s, es, pts, ingest, offset, out),
        }
    }
}

fn ms(ticks_90k: i64) -> i64 {
    ticks_90k.div_euclid(90)
}

fn set_track(s: &mut Stream, config: Bytes, info: TrackInfo, out: &mut Vec<DemuxEvent>) {
    let track = Track {
        kind: s.kind,
        codec: s.codec,
        config,
        timescale: 1000,
        info,
    };
    if s.track.as_ref() != Some(&track) {
        out.push(DemuxEvent::Track(track.clone()));
        s.track = Some(track);
    }
}

fn video(
    s: &mut Stream,
    es: ByteRope,
    dts: i64,
    pts: i64,
    ingest: Instant,
    offset: u64,
    out: &mut Vec<DemuxEvent>,
) -> Result<(), TsError> {
    let hevc = s.codec == CodecId::H265;
    let mut params: [Vec<Bytes>; 3] = Default::default();
    let (mut keyframe, mut nalus) = (false, Vec::new());
    for nal in split_annexb(&es) {
        let b0 = nal.get(0).unwrap_or(0); // Never empty: split_annexb skips empty NAL units.
        let slot = if hevc {
            match h265::nal_unit_type(b0) {
                h265::nal_type::AUD => continue,
                t @ h265::nal_type::VPS..=h265::nal_type::PPS => {
                    Some(usize::from(t - h265::nal_type::VPS))
                }
                _ => None,
            }
        } else {
            match h264::nal_unit_type(b0) {
                h264::nal_type::AUD => continue,
                t @ (h264::nal_type::SPS | h264::nal_type::PPS) => {
                    Some(usize::from(t - h264::nal_type::SPS) + 1)
                }
                _ => None,
            }
        };
        match slot {
            Some(k) => params[k].push(nal.to_contiguous()),
            None => {
                keyframe |= if hevc {
                    h265::is_irap(b0)
                } else {
                    h264::is_idr(b0)
                };
                nalus.push(nal);
            }
        }
    }
    for (k, p) in params.into_iter().enumerate() {
        if !p.is_empty() {
            s.params[k] = p;
        }
    }
    let complete =
        !s.params[1].is_empty() && !s.params[2].is_empty() && (!hevc || !s.params[0].is_empty());
    if complete {
        let mut info = TrackInfo::default();
        let config = if hevc {
            let size = s.params[1]
                .first()
                .and_then(|n| h265::sps_picture_size(n).ok());
            (info.width, info.height) = (size.map(|x| x.0), size.map(|x| x.1));
            hvcc(&s.params).ok_or(TsError::Invalid {
                offset,
                what: "H.265 SPS shorter than its profile_tier_level",
            })?
        } else {
            let err = |source| TsError::H264 { offset, source };
            let cfg =
                AvcDecoderConfig::from_parameter_sets(s.params[1].clone(), s.params[2].clone())
                    .map_err(err)?;
            let sps = h264::Sps::parse(&cfg.sps[0]).map_err(err)?; // In bounds: params[1] is not empty.
            info = TrackInfo {
                width: Some(sps.width),
                height: Some(sps.height),
                fps: sps.fps(),
                profile: Some(sps.profile_idc),
                level: Some(sps.level_idc),
                ..TrackInfo::default()
            };
            cfg.encode().map_err(err)?
        };
        set_track(s, config, info, out);
    }
    if s.track.is_some() && !nalus.is_empty() {
        let kind = s.kind;
        let payload = FramePayload::Nalus(nalus);
        out.push(DemuxEvent::Frame(Frame {
            kind,
            dts: ms(dts),
            pts: ms(pts),
            keyframe,
            ingest,
            payload,
        }));
    }
    Ok(())
}

fn adts(
    s: &mut Stream,
    es: ByteRope,
    pts: i64,
    ingest: Instant,
    offset: u64,
    out: &mut Vec<DemuxEvent>,
) -> Result<(), TsError> {
    let (mut pos, mut samples) = (0usize, 0i64);
    while pos < es.len() {
        let head = es
            .slice(pos, (es.len() - pos).min(9))
            .unwrap_or_default()
            .to_contiguous();
        let h = AdtsHeader::parse(&head).map_err(|source| TsError::Aac { offset, source })?;
        let (len, header_len) = (usize::from(h.frame_length), usize::from(h.header_len()));
        let Some(raw) = es.slice(pos + header_len, len - header_len) else {
            return Err(TsError::Invalid {
                offset,
                what: "ADTS aac_frame_length overruns its PES",
            });
        };
        let asc = h.to_config();
        let rate = i64::from(asc.sample_rate.max(1));
        let info = TrackInfo {
            sample_rate: Some(asc.sample_rate),
            channels: asc.channels(),
            ..TrackInfo::default()
        };
        let config = asc
            .encode()
            .map_err(|source| TsError::Aac { offset, source })?;
        set_track(s, config, info, out);
        let t = ms(pts + samples * 90_000 / rate);
        out.push(DemuxEvent::Frame(Frame {
            kind: s.kind,
            dts: t,
            pts: t,
            keyframe: true,
            ingest,
            payload: FramePayload::Raw(raw),
        }));
        samples += 1024;
        pos += len;
    }
    Ok(())
}

/// Opus access units, each behind an opus_control_header (the Opus-in-MPEG-TS mapping,
/// ETSI TS 102 366's sibling published with Opus): prefix 0x3ff u11, start_trim u1,
/// end_trim u1, control_extension u1, reserved u2, au_size as 0xff* + last byte, then the
/// optional trims and extension. Best effort: trims are skipped, not applied.
fn opus(
    s: &mut Stream,
    es: ByteRope,
    pts: i64,
    ingest: Instant,
    offset: u64,
    out: &mut Vec<DemuxEvent>,
) -> Result<(), TsError> {
    let bad = |what| TsError::Invalid { offset, what };
    let head = OpusHead {
        channels: s.opus_channels,
        pre_skip: 0,
        input_sample_rate: 48_000,
        output_gain: 0,
        mapping_family: u8::from(s.opus_channels > 2),
    };
    let info = TrackInfo {
        sample_rate: Some(48_000),
        channels: Some(s.opus_channels),
        ..TrackInfo::default()
    };
    set_track(s, head.encode(), info, out);
    let mut r = es.reader();
    let mut samples = 0i64;
    while r.remaining() > 0 {
        let h = r.u16().map_err(|_| bad("opus_control_header truncated"))?;
        if h & 0xffe0 != 0x7fe0 {
            return Err(bad("opus_control_header prefix is not 0x3ff"));
        }
        let mut size = 0usize;
        loop {
            let b = r.u8().map_err(|_| bad("au_size truncated"))?;
            size += usize::from(b);
            if b != 0xff {
                break;
            }
        }
        let skip = 2 * usize::from(h & 0x10 != 0) + 2 * usize::from(h & 0x08 != 0);
        r.skip(skip)
            .map_err(|_| bad("Opus trim fields truncated"))?;
        if h & 0x04 != 0 {
            let n = r
                .u8()
                .map_err(|_| bad("control_extension_length truncated"))?;
            r.skip(n.into())
                .map_err(|_| bad("control extension overruns its PES"))?;
        }
        let packet = r
            .take(size)
            .map_err(|_| bad("Opus au_size overruns its PES"))?;
        let t = ms(pts + samples * 90_000 / 48_000);
        samples += opus_samples(&packet);
        out.push(DemuxEvent::Frame(Frame {
            kind: s.kind,
            dts: t,
            pts: t,
            keyframe: true,
            ingest,
            payload: FramePayload::Raw(packet),
        }));
    }
    Ok(())
}
