//! The muxer: frames → transport stream packets, written beside the frames' payload slices.

use bytes::{BufMut, Bytes, BytesMut};

use super::packet::{AdaptationField, PacketHeader, PAT_PID};
use super::pes::{
    PesHeader, STREAM_ID_AUDIO, STREAM_ID_PRIVATE_1, STREAM_ID_VIDEO, TIMESTAMP_MASK,
};
use super::psi::{Pat, PatEntry, Pmt, PmtStream};
use super::{stream_type, TsError, CLOCK_HZ, PACKET_SIZE};
use crate::aac::{AdtsHeader, AudioSpecificConfig};
use crate::h264::{self, AvcDecoderConfig};
use crate::h265::{self, HevcDecoderConfig};
use crate::media::{CodecId, Frame, FramePayload, MediaKind, Track};
use crate::opus::OpusHead;
use crate::rope::ByteRope;

/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the first track; track `i` gets `FIRST_PID + i`.
pub const FIRST_PID: u16 = 0x100;
/// Longest interval between two PAT/PMT pairs, in 90 kHz ticks (100 ms).
const PSI_INTERVAL: i64 = CLOCK_HZ / 10;
/// How far the PCR runs behind the DTS of the frame it is sent with (100 ms).
const PCR_DELAY: i64 = CLOCK_HZ / 10;

const AUD_H264: &[u8] = &[0, 0, 0, 1, 0x09, 0xf0];
const AUD_H265: &[u8] = &[0, 0, 0, 1, 0x46, 0x01, 0x50];
const START_CODE: &[u8] = &[0, 0, 0, 1];

#[derive(Debug)]
struct MuxTrack {
    track: Track,
    pid: u16,
    stream_id: u8,
    cc: u8,
    /// Parameter sets written before each keyframe (video).
    params: Vec<Bytes>,
    asc: Option<AudioSpecificConfig>,
}

/// A piece of output: a range of the frame's header allocation, or a shared payload slice.
#[derive(Debug)]
enum Piece {
    Own(usize, usize),
    Shared(Bytes),
}

/// The transport stream muxer: one program, PMT on PID 0x1000, track `i` on PID
/// `0x100 + i`, PCR on the first video track (else the first track).
///
/// [`mux`](Self::mux) appends one frame as whole packets to a [`ByteRope`]. The 4-byte packet
/// headers, adaptation fields, PES header, ADTS header and PAT/PMT packets of a frame are
/// written into one allocation; payload slices are cut from the frame's own `Bytes` at packet
/// boundaries and placed between them, so media bytes are never copied. The last packet of a
/// frame is padded with adaptation-field stuffing.
///
/// H.264/H.265 go out as Annex-B with an access unit delimiter first and the track's
/// parameter sets before each keyframe (unless the frame carries its own); AAC gets an ADTS
/// header per frame; Opus an opus_control_header. PAT and PMT go out before the first frame,
/// before each video keyframe and at least every 100 ms of DTS.
#[derive(Debug)]
pub struct Muxer {
    tracks: Vec<MuxTrack>,
    pcr_pid: u16,
    pat: Vec<u8>,
    pmt: Vec<u8>,
    pmt_version: u8,
    psi_cc: [u8; 2],
    last_psi: Option<i64>,
    shared: Vec<Bytes>,
    pieces: Vec<Piece>,
}

impl Muxer {
    /// A muxer for these tracks (H.264, H.265, AAC, Opus). A frame goes to the first track of
    /// its kind.
    pub fn new(tracks: Vec<Track>) -> Result<Muxer, TsError> {
        Self::with_pmt_version(tracks, 0)
    }

    /// A muxer for new `tracks` that continues this one's output: the continuity counters of
    /// PAT, PMT and every PID both carry go on, and the PMT's `version_number` moves on when
    /// the program changes. A player then sees one stream whose program changed, not a
    /// restart (a strict demuxer drops the PES in progress at a continuity-counter jump).
    pub fn follow(&self, tracks: Vec<Track>) -> Result<Muxer, TsError> {
        let mut next = Self::with_pmt_version(tracks.clone(), self.pmt_version)?;
        if next.pmt != self.pmt {
            next = Self::with_pmt_version(tracks, (self.pmt_version + 1) & 0x1f)?;
        }
        next.psi_cc = self.psi_cc;
        for t in &mut next.tracks {
            if let Some(prev) = self.tracks.iter().find(|p| p.pid == t.pid) {
                t.cc = prev.cc;
            }
        }
        Ok(next)
    }

    fn with_pmt_version(tracks: Vec<Track>, pmt_version: u8) -> Result<Muxer, TsError> {
        let mut out = Vec::with_capacity(tracks.len());
        let mut streams = Vec::with_capacity(tracks.len());
        for (i, track) in tracks.into_iter().enumerate() {
            let pid = FIRST_PID + i as u16;
            let codec = track.codec;
            let bad = |what| TsError::Unsupported { codec, what };
            let (st, stream_id, mut descriptors) = match codec {
                CodecId::H264 => (stream_type::H264, STREAM_ID_VIDEO, vec![]),
                CodecId::H265 => (stream_type::H265, STREAM_ID_VIDEO, vec![]),
                CodecId::Aac => (stream_type::AAC_ADTS, STREAM_ID_AUDIO, vec![]),
                CodecId::Opus => (
                    stream_type::PRIVATE_PES,
                    STREAM_ID_PRIVATE_1,
                    b"\x05\x04Opus".to_vec(),
                ),
                _ => return Err(bad("no stream_type for this codec")),
            };
            let (mut params, mut asc) = (Vec::new(), None);
            match codec {
                CodecId::H264 => {
                    let c = AvcDecoderConfig::parse(&track.config)
                        .map_err(|source| TsError::H264 { offset: 0, source })?;
                    params = c.sps.into_iter().chain(c.pps).collect();
                }
                CodecId::H265 => {
                    let c = HevcDecoderConfig::parse(&track.config)
                        .map_err(|_| bad("HEVCDecoderConfigurationRecord"))?;
                    for t in [
                        h265::nal_type::VPS,
                        h265::nal_type::SPS,
                        h265::nal_type::PPS,
                    ] {
                        params.extend(c.nalus_of(t).cloned());
                    }
                }
                CodecId::Aac => {
                    let c = AudioSpecificConfig::parse(&track.config)
                        .map_err(|source| TsError::Aac { offset: 0, source })?;
                    AdtsHeader::for_frame(&c, 0)
                        .map_err(|source| TsError::Aac { offset: 0, source })?;
                    asc = Some(c);
                }
                _ => {
                    let channels = OpusHead::parse(&track.config).map_or(2, |h| h.channels);
                    descriptors.extend_from_slice(&[0x7f, 2, 0x80, channels]);
                }
            }
            streams.push(PmtStream {
                stream_type: st,
                pid,
                descriptors,
            });
            out.push(MuxTrack {
                track,
                pid,
                stream_id,
                cc: 0,
                params,
                asc,
            });
        }
        let pcr_pid = out
            .iter()
            .find(|t| t.track.kind == MediaKind::Video)
            .or(out.first())
            .map_or(0x1fff, |t| t.pid);
        let pat = Pat {
            transport_stream_id: 1,
            version: 0,
            programs: vec![PatEntry {
                program_number: 1,
                pid: PMT_PID,
            }],
        };
        let pmt = Pmt {
            program_number: 1,
            version: pmt_version,
            pcr_pid,
            program_info: vec![],
            streams,
        }
        .encode();
        if pmt.len() > PACKET_SIZE - 5 {
            return Err(TsError::Unsupported {
                codec: CodecId::Aac,
                what: "too many tracks for a one-packet PMT",
            });
        }
        Ok(Muxer {
            tracks: out,
            pcr_pid,
            pat: pat.encode(),
            pmt,
            pmt_version,
            psi_cc: [0; 2],
            last_psi: None,
            shared: Vec::new(),
            pieces: Vec::new(),
        })
    }

    /// Appends the packets of one frame (and PAT/PMT when due) to `out`.
    pub fn mux(&mut self, frame: &Frame, out: &mut ByteRope) -> Result<(), TsError> {
        let ti = self
            .tracks
            .iter()
            .position(|t| t.track.kind == frame.kind)
            .ok_or(TsError::NoTrack { kind: frame.kind })?;
        let t = &self.tracks[ti];
        let scale = i128::from(t.track.timescale.max(1));
        let to90k = |v: i64| (i128::from(v) * i128::from(CLOCK_HZ) / scale) as i64;
        let (dts, pts) = (to90k(frame.dts), to90k(frame.pts));
        let video = frame.kind == MediaKind::Video;
        let codec = t.track.codec;
        let unsupported = |what| TsError::Unsupported { codec, what };

        // The payload slices, in order, and the bytes that go before them in the PES.
        self.shared.clear();
        let mut prefix = [0u8; 64];
        let mut prefix_len = 0;
        match (&frame.payload, codec) {
            (FramePayload::Nalus(nalus), CodecId::H264 | CodecId::H265) => {
                let hevc = codec == CodecId::H265;
                let is_ps = |n: &ByteRope| {
                    let b0 = n.get(0).unwrap_or(0);
                    if hevc {
                        h265::nal_unit_type(b0) == h265::nal_type::SPS
                    } else {
                        h264::nal_unit_type(b0) == h264::nal_type::SPS
                    }
                };
                let is_aud = |n: &ByteRope| {
                    let b0 = n.get(0).unwrap_or(0);
                    if hevc {
                        h265::nal_unit_type(b0) == h265::nal_type::AUD
                    } else {
                        h264::nal_unit_type(b0) == h264::nal_type::AUD
                    }
                };
                self.shared
                    .push(Bytes::from_static(if hevc { AUD_H265 } else { AUD_H264 }));
                if frame.keyframe && !nalus.iter().any(is_ps) {
                    for p in &t.params {
                        self.shared
                            .extend([Bytes::from_static(START_CODE), p.clone()]);
                    }
                }
                for n in nalus.iter().filter(|n| !n.is_empty() && !is_aud(n)) {
                    self.shared.push(Bytes::from_static(START_CODE));
                    self.shared.extend(n.parts().iter().cloned());
                }
            }
            (FramePayload::Raw(raw), CodecId::Aac) => {
                let asc = t
                    .asc
                    .as_ref()
                    .ok_or(unsupported("no AudioSpecificConfig"))?; // Set in new() for AAC.
                let h = AdtsHeader::for_frame(asc, raw.len())
                    .map_err(|source| TsError::Aac { offset: 0, source })?;
                prefix[..7].copy_from_slice(&h);
                prefix_len = 7;
                self.shared.extend(raw.parts().iter().cloned());
            }
            (FramePayload::Raw(raw), CodecId::Opus) => {
                if raw.len() > 255 * 60 {
                    return Err(unsupported("Opus packet over 15300 bytes"));
                }
                prefix[..2].copy_from_slice(&[0x7f, 0xe0]);
                prefix_len = 2;
                let mut n = raw.len();
                while n >= 255 {
                    prefix[prefix_len] = 0xff;
                    prefix_len += 1;
                    n -= 255;
                }
                prefix[prefix_len] = n as u8;
                prefix_len += 1;
                self.shared.extend(raw.parts().iter().cloned());
            }
            _ => return Err(unsupported("payload shape does not fit the codec")),
        }
        let shared_len: usize = self.shared.iter().map(Bytes::len).sum();
        let pes = PesHeader {
            stream_id: t.stream_id,
            packet_length: 0,
            pts: Some(pts as u64 & TIMESTAMP_MASK),
            dts: (dts != pts).then_some(dts as u64 & TIMESTAMP_MASK),
        };
        let mut total = pes.encoded_len() + prefix_len + shared_len;

        let psi_due = match self.last_psi {
            None => true,
            // A track lagging behind the one that sent the last PAT/PMT does not resend them;
            // a jump back by more than 10 s (a timestamp reset) does.
            Some(last) => {
                (video && frame.keyframe)
                    || dts - last >= PSI_INTERVAL
                    || last - dts > 100 * PSI_INTERVAL
            }
        };
        let packets = total / (PACKET_SIZE - 12) + 1;
        let mut buf = BytesMut::with_capacity(2 * PACKET_SIZE + packets * 4 + 8 + PACKET_SIZE + 32);
        self.pieces.clear();
        if psi_due {
            self.last_psi = Some(dts);
            for (k, (pid, section)) in [(PAT_PID, &self.pat), (PMT_PID, &self.pmt)]
                .into_iter()
                .enumerate()
            {
                let h = PacketHeader {
                    unit_start: true,
                    pid,
                    has_payload: true,
                    cc: self.psi_cc[k],
                    ..Default::default()
                };
                self.psi_cc[k] = (self.psi_cc[k] + 1) & 0xf;
                buf.put_slice(&h.encode());
                buf.put_u8(0); // pointer_field
                buf.put_slice(section);
                buf.put_bytes(0xff, PACKET_SIZE - 5 - section.len());
            }
        }

        let t = &mut self.tracks[ti];
        let (mut part, mut at) = (0usize, 0usize);
        let mut first = true;
        while total > 0 {
            let mut af = None;
            if first && (t.pid == self.pcr_pid || (video && frame.keyframe)) {
                let pcr = (t.pid == self.pcr_pid)
                    .then(|| ((dts - PCR_DELAY).max(0) as u64 & TIMESTAMP_MASK) * 300);
                af = Some(AdaptationField {
                    random_access: video && frame.keyframe,
                    pcr,
                    ..Default::default()
                });
            }
            let af_min = af.map_or(0, |a| a.min_len());
            let cap = PACKET_SIZE - 4 - af_min;
            let (take, af_len) = if total >= cap {
                (cap, af_min)
            } else {
                (total, PACKET_SIZE - 4 - total)
            };
            let start = buf.len();
            let header = PacketHeader {
                unit_start: first,
                pid: t.pid,
                has_adaptation: af_len > 0,
                has_payload: true,
                cc: t.cc,
                ..Default::default()
            };
            t.cc = (t.cc + 1) & 0xf;
            buf.put_slice(&header.encode());
            if af_len > 0 {
                af.unwrap_or_default().encode(af_len, &mut buf);
            }
            let mut left = take;
            if first {
                // Fits: the PES header and prefix are under 84 bytes, a first packet has 176.
                pes.encode(shared_len + prefix_len, &mut buf);
                buf.put_slice(&prefix[..prefix_len]);
                left -= pes.encoded_len() + prefix_len;
            }
            match self.pieces.last_mut() {
                // The first packet's headers follow the PAT/PMT packets, if any, in `buf`.
                None => self.pieces.push(Piece::Own(0, buf.len())),
                Some(Piece::Own(_, end)) if *end == start => *end = buf.len(),
                _ => self.pieces.push(Piece::Own(start, buf.len())),
            }
            while left > 0 {
                let b = &self.shared[part]; // In bounds: `total` counts exactly these bytes.
                let k = left.min(b.len() - at);
                self.pieces.push(Piece::Shared(b.slice(at..at + k)));
                (left, at) = (left - k, at + k);
                if at == b.len() {
                    (part, at) = (part + 1, 0);
                }
            }
            total -= take;
            first = false;
        }
        let own = buf.freeze();
        for p in self.pieces.drain(..) {
            out.push(match p {
                Piece::Own(a, b) => own.slice(a..b),
                Piece::Shared(b) => b,
            });
        }
        Ok(())
    }
}
