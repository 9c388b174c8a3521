//! FLV tag bodies as carried by RTMP audio (type 8) and video (type 9) messages: parsing into
//! the media model and muxing back, without copying media bytes.
//!
//! Covers the legacy FLV tags (FLV spec v10.1, E.4.2 and E.4.3) and Enhanced RTMP (v1/v2):
//!
//! ```text
//! legacy video:  FrameType u4 | CodecID u4 | [AVC/HEVC: AVCPacketType u8 | CompositionTime si24] | data
//! E-RTMP video:  IsExHeader u1 = 1 | FrameType u3 | PacketType u4 | [ModEx ...] | FourCC u32
//!                | [CodedFrames of avc1/hvc1: CompositionTime si24] | data
//! legacy audio:  SoundFormat u4 | SoundRate u2 | SoundSize u1 | SoundType u1
//!                | [AAC: AACPacketType u8] | data
//! E-RTMP audio:  SoundFormat u4 = 9 | AudioPacketType u4 | [ModEx ...] | FourCC u32 | data
//! ```
//!
//! Parsed NAL units and raw frames are sub-ropes of the input body (refcounts, no copy).
//! Muxing writes small headers beside the frame's slices: one allocation per H.264/H.265
//! frame for all its length prefixes, none for audio and AV1/VP9.
//!
//! Timestamps are in milliseconds (timescale 1000), as on the RTMP wire. The caller unrolls
//! the 32-bit RTMP timestamp into the `i64` it passes in; `pts = dts + composition time`.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use crate::aac::{AacError, AudioSpecificConfig};
use crate::h264::{AvcDecoderConfig, H264Error, Sps};
use crate::h265::{H265Error, HevcDecoderConfig};
use crate::media::{CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};
use crate::opus::{OpusError, OpusHead};
use crate::rope::{ByteRope, RopeReader, ShortRead};

/// Timescale of FLV/RTMP timestamps.
pub const TIMESCALE: u32 = 1000;

/// Errors of the FLV tag body parsers. Offsets count bytes of the tag body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// The body is empty.
    #[error("empty tag body")]
    Empty,
    /// The body ended inside a field.
    #[error("{what} truncated at byte {offset}: need {needed} more bytes")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Offset of the read.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A NAL unit length prefix claims more bytes than the body has left.
    #[error("NAL unit length {length} at byte {offset} exceeds the {remaining} bytes left")]
    NaluTooLong {
        /// Offset of the length prefix.
        offset: usize,
        /// The declared length.
        length: u64,
        /// Bytes left after the prefix.
        remaining: usize,
    },
    /// The NAL unit length size passed in (from the decoder configuration) is not 1 to 4.
    #[error("NAL unit length size {0} is not 1 to 4")]
    BadNaluLengthSize(u8),
    /// A packet type this parser does not know.
    #[error("unknown {what} {value} at byte {offset}")]
    UnknownPacketType {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u8,
        /// Offset of the field.
        offset: usize,
    },
    /// An Enhanced RTMP FourCC this parser does not know.
    #[error("unsupported FourCC {fourcc:?} at byte {offset}")]
    UnsupportedFourCc {
        /// The FourCC, as bytes.
        fourcc: [u8; 4],
        /// Offset of the FourCC.
        offset: usize,
    },
    /// Enhanced RTMP multitrack tags, which zerocast does not accept.
    #[error("Enhanced RTMP multitrack {kind:?} tag at byte {offset} is not supported")]
    Multitrack {
        /// Audio or video.
        kind: MediaKind,
        /// Offset of the packet type.
        offset: usize,
    },
    /// A malformed AVCDecoderConfigurationRecord.
    #[error("bad AVC sequence header (record at byte {offset}): {source}")]
    AvcConfig {
        /// Offset of the record in the body.
        offset: usize,
        /// What was wrong.
        source: H264Error,
    },
    /// A malformed HEVCDecoderConfigurationRecord.
    #[error("bad HEVC sequence header (record at byte {offset}): {source}")]
    HevcConfig {
        /// Offset of the record in the body.
        offset: usize,
        /// What was wrong.
        source: H265Error,
    },
    /// A malformed AudioSpecificConfig.
    #[error("bad AAC sequence header (config at byte {offset}): {source}")]
    AacConfig {
        /// Offset of the config in the body.
        offset: usize,
        /// What was wrong.
        source: AacError,
    },
    /// A malformed OpusHead.
    #[error("bad Opus sequence header (OpusHead at byte {offset}): {source}")]
    OpusHead {
        /// Offset of the header in the body.
        offset: usize,
        /// What was wrong.
        source: OpusError,
    },
}

fn short(what: &'static str) -> impl Fn(ShortRead) -> FlvError {
    move |e| FlvError::Truncated {
        what,
        offset: e.offset,
        needed: e.needed,
    }
}

/// One parsed audio or video tag body.
#[derive(Debug, Clone, PartialEq)]
pub enum FlvTag {
    /// Codec configuration: a track with `config` (the record, made contiguous), timescale
    /// 1000 and `info` derived from the SPS, AudioSpecificConfig or OpusHead.
    SequenceHeader(Track),
    /// A coded frame. Timestamps are in milliseconds.
    Frame {
        /// The frame's codec.
        codec: CodecId,
        /// The frame; NAL units and raw payloads are sub-ropes of the body.
        frame: Frame,
    },
    /// The publisher ended the sequence of this codec.
    EndOfSequence(CodecId),
    /// A tag zerocast does not interpret but forwards as is: legacy codecs (Sorenson H.263,
    /// VP6, screen video, MP3, Nellymoser, G.711, Speex, ...), Enhanced RTMP metadata and
    /// multichannel configuration. To forward it, put `body` in a [`Frame`] as
    /// `FramePayload::Raw`; [`video_body`] and [`audio_body`] write it back unchanged for
    /// [`CodecId::FlvLegacy`] and [`CodecId::Mp3`] tracks.
    Passthrough {
        /// Audio or video.
        kind: MediaKind,
        /// The codec, [`CodecId::FlvLegacy`] for legacy ids.
        codec: CodecId,
        /// The whole tag body, header byte(s) included.
        body: ByteRope,
        /// The FLV frame type says keyframe (always true for audio).
        keyframe: bool,
    },
    /// A tag with nothing for a live stream (video command frames, MPEG-2 TS sequence starts);
    /// drop it.
    Ignored {
        /// Audio or video.
        kind: MediaKind,
        /// Why it carries nothing.
        reason: &'static str,
    },
}

/// Enhanced RTMP FourCCs.
pub mod fourcc {
    /// H.264.
    pub const AVC1: [u8; 4] = *b"avc1";
    /// H.265.
    pub const HVC1: [u8; 4] = *b"hvc1";
    /// AV1.
    pub const AV01: [u8; 4] = *b"av01";
    /// VP9.
    pub const VP09: [u8; 4] = *b"vp09";
    /// VP8.
    pub const VP08: [u8; 4] = *b"vp08";
    /// Opus.
    pub const OPUS: [u8; 4] = *b"Opus";
    /// AAC.
    pub const MP4A: [u8; 4] = *b"mp4a";
    /// FLAC.
    pub const FLAC: [u8; 4] = *b"fLaC";
    /// AC-3.
    pub const AC3: [u8; 4] = *b"ac-3";
    /// E-AC-3.
    pub const EAC3: [u8; 4] = *b"ec-3";
    /// MP3.
    pub const MP3: [u8; 4] = *b".mp3";
}

/// The Enhanced RTMP FourCC of a codec, if it has one.
pub fn fourcc_of(codec: CodecId) -> Option<[u8; 4]> {
    Some(match codec {
        CodecId::H264 => fourcc::AVC1,
        CodecId::H265 => fourcc::HVC1,
        CodecId::Av1 => fourcc::AV01,
        CodecId::Vp9 => fourcc::VP09,
        CodecId::Vp8 => fourcc::VP08,
        CodecId::Opus => fourcc::OPUS,
        CodecId::Aac => fourcc::MP4A,
        CodecId::Flac => fourcc::FLAC,
        CodecId::Ac3 => fourcc::AC3,
        CodecId::Eac3 => fourcc::EAC3,
        CodecId::Mp3 => fourcc::MP3,
        _ => return None,
    })
}

fn codec_of(kind: MediaKind, f: [u8; 4]) -> Option<CodecId> {
    let c = match f {
        fourcc::AVC1 => CodecId::H264,
        fourcc::HVC1 => CodecId::H265,
        fourcc::AV01 => CodecId::Av1,
        fourcc::VP09 => CodecId::Vp9,
        fourcc::VP08 => CodecId::Vp8,
        fourcc::OPUS => CodecId::Opus,
        fourcc::MP4A => CodecId::Aac,
        fourcc::FLAC => CodecId::Flac,
        fourcc::AC3 => CodecId::Ac3,
        fourcc::EAC3 => CodecId::Eac3,
        fourcc::MP3 => CodecId::Mp3,
        _ => return None,
    };
    let video = matches!(
        c,
        CodecId::H264 | CodecId::H265 | CodecId::Av1 | CodecId::Vp9 | CodecId::Vp8
    );
    (video == (kind == MediaKind::Video)).then_some(c)
}

/// The NAL unit length size a track's configuration record declares: avcC byte 4 or hvcC
/// byte 21, low two bits, plus one. 4 when the track has no such record.
pub fn nalu_length_size(track: &Track) -> u8 {
    let byte = match track.codec {
        CodecId::H264 => track.config.get(4),
        CodecId::H265 => track.config.get(21),
        _ => None,
    };
    byte.map_or(4, |b| (b & 3) + 1)
}

// Legacy video codec ids (FLV spec E.4.3.1).
const VIDEO_AVC: u8 = 7;
/// HEVC in legacy framing (codec id 12), as some servers and encoders send it.
const VIDEO_HEVC_LEGACY: u8 = 12;
// FLV VideoFrameType.
const FRAME_KEY: u8 = 1;
const FRAME_INTER: u8 = 2;
const FRAME_GENERATED_KEY: u8 = 4;
const FRAME_COMMAND: u8 = 5;
// Enhanced RTMP VideoPacketType.
const VPT_SEQUENCE_START: u8 = 0;
const VPT_CODED_FRAMES: u8 = 1;
const VPT_SEQUENCE_END: u8 = 2;
const VPT_CODED_FRAMES_X: u8 = 3;
const VPT_METADATA: u8 = 4;
const VPT_MPEG2TS_SEQUENCE_START: u8 = 5;
const VPT_MULTITRACK: u8 = 6;
const PT_MOD_EX: u8 = 7;
// Legacy audio sound formats (FLV spec E.4.2.1).
const SOUND_MP3: u8 = 2;
const SOUND_AAC: u8 = 10;
const SOUND_MP3_8K: u8 = 14;
const SOUND_EX_HEADER: u8 = 9;
// Enhanced RTMP AudioPacketType.
const APT_SEQUENCE_START: u8 = 0;
const APT_CODED_FRAMES: u8 = 1;
const APT_SEQUENCE_END: u8 = 2;
const APT_MULTICHANNEL_CONFIG: u8 = 4;
const APT_MULTITRACK: u8 = 5;

fn is_key(frame_type: u8) -> bool {
    frame_type == FRAME_KEY || frame_type == FRAME_GENERATED_KEY
}

/// Parses the body of a video message.
///
/// `nalu_length_size` comes from the stream's last sequence header ([`nalu_length_size`]);
/// pass 4 before one arrived.
pub fn parse_video(
    body: &ByteRope,
    timestamp_ms: i64,
    ingest: Instant,
    nalu_length_size: u8,
) -> Result<FlvTag, FlvError> {
    if !(1..=4).contains(&nalu_length_size) {
        return Err(FlvError::BadNaluLengthSize(nalu_length_size));
    }
    let mut r = body.reader();
    let b0 = r.u8().map_err(|_| FlvError::Empty)?;
    if b0 & 0x80 != 0 {
        return parse_ex_video(body, r, b0, timestamp_ms, ingest, nalu_length_size);
    }
    let frame_type = b0 >> 4;
    let codec_id = b0 & 0x0f;
    if frame_type == FRAME_COMMAND {
        return Ok(FlvTag::Ignored {
            kind: MediaKind::Video,
            reason: "video info/command frame",
        });
    }
    let codec = match codec_id {
        VIDEO_AVC => CodecId::H264,
        VIDEO_HEVC_LEGACY => CodecId::H265,
        other => {
            return Ok(FlvTag::Passthrough {
                kind: MediaKind::Video,
                codec: CodecId::FlvLegacy(MediaKind::Video, other),
                body: body.clone(),
                keyframe: is_key(frame_type),
            })
        }
    };
    let packet_type = r.u8().map_err(short("AVCPacketType"))?;
    let cts = r.i24().map_err(short("CompositionTime"))?;
    match packet_type {
        0 => sequence_header_video(codec, &mut r),
        1 => nal_frame(
            codec,
            &mut r,
            timestamp_ms,
            cts,
            is_key(frame_type),
            ingest,
            nalu_length_size,
        ),
        2 => Ok(FlvTag::EndOfSequence(codec)),
        value => Err(FlvError::UnknownPacketType {
            what: "AVCPacketType",
            value,
            offset: 1,
        }),
    }
}

/// Skips Enhanced RTMP v2 ModEx blocks and returns the real packet type.
fn skip_mod_ex(r: &mut RopeReader<'_>, mut packet_type: u8) -> Result<u8, FlvError> {
    while packet_type == PT_MOD_EX {
        let mut size = usize::from(r.u8().map_err(short("ModEx data size"))?) + 1;
        if size == 256 {
            size = usize::from(r.u16().map_err(short("ModEx data size"))?) + 1;
        }
        // ModEx data (for example a nanosecond timestamp offset) is below zerocast's ms clock.
        r.skip(size).map_err(short("ModEx data"))?;
        packet_type = r.u8().map_err(short("ModEx type"))? & 0x0f;
    }
    Ok(packet_type)
}

fn read_fourcc(r: &mut RopeReader<'_>, kind: MediaKind) -> Result<CodecId, FlvError> {
    let offset = r.position();
    let f = r.u32().map_err(short("FourCC"))?.to_be_bytes();
    codec_of(kind, f).ok_or(FlvError::UnsupportedFourCc { fourcc: f, offset })
}

fn parse_ex_video(
    body: &ByteRope,
    mut r: RopeReader<'_>,
    b0: u8,
    timestamp_ms: i64,
    ingest: Instant,
    nalu_length_size: u8,
) -> Result<FlvTag, FlvError> {
    let frame_type = (b0 >> 4) & 7;
    let packet_type = skip_mod_ex(&mut r, b0 & 0x0f)?;
    if packet_type == VPT_MULTITRACK {
        return Err(FlvError::Multitrack {
            kind: MediaKind::Video,
            offset: 0,
        });
    }
    if frame_type == FRAME_COMMAND && packet_type != VPT_METADATA {
        return Ok(FlvTag::Ignored {
            kind: MediaKind::Video,
            reason: "video command frame",
        });
    }
    let codec = read_fourcc(&mut r, MediaKind::Video)?;
    let keyframe = is_key(frame_type);
    let nal_based = codec.is_nal_based();
    match packet_type {
        VPT_SEQUENCE_START => sequence_header_video(codec, &mut r),
        VPT_CODED_FRAMES if nal_based => {
            let cts = r.i24().map_err(short("CompositionTime"))?;
            nal_frame(
                codec,
                &mut r,
                timestamp_ms,
                cts,
                keyframe,
                ingest,
                nalu_length_size,
            )
        }
        VPT_CODED_FRAMES_X if nal_based => nal_frame(
            codec,
            &mut r,
            timestamp_ms,
            0,
            keyframe,
            ingest,
            nalu_length_size,
        ),
        VPT_CODED_FRAMES | VPT_CODED_FRAMES_X => Ok(FlvTag::Frame {
            codec,
            frame: Frame {
                kind: MediaKind::Video,
                dts: timestamp_ms,
                pts: timestamp_ms,
                keyframe,
                ingest,
                payload: FramePayload::Raw(r.rest()),
            },
        }),
        VPT_SEQUENCE_END => Ok(FlvTag::EndOfSequence(codec)),
        VPT_METADATA => Ok(FlvTag::Passthrough {
            kind: MediaKind::Video,
            codec,
            body: body.clone(),
            keyframe: false,
        }),
        VPT_MPEG2TS_SEQUENCE_START => Ok(FlvTag::Ignored {
            kind: MediaKind::Video,
            reason: "MPEG-2 TS sequence start",
        }),
        value => Err(FlvError::UnknownPacketType {
            what: "VideoPacketType",
            value,
            offset: 0,
        }),
    }
}

fn track(kind: MediaKind, codec: CodecId, config: Bytes, info: TrackInfo) -> FlvTag {
    FlvTag::SequenceHeader(Track {
        kind,
        codec,
        config,
        timescale: TIMESCALE,
        info,
    })
}

fn sequence_header_video(codec: CodecId, r: &mut RopeReader<'_>) -> Result<FlvTag, FlvError> {
    let offset = r.position();
    let config = r.rest().to_contiguous();
    let mut info = TrackInfo::default();
    match codec {
        CodecId::H264 => {
            let c = AvcDecoderConfig::parse(&config)
                .map_err(|source| FlvError::AvcConfig { offset, source })?;
            info.profile = Some(c.profile);
            info.level = Some(c.level);
            // An SPS this parser cannot read does not stop the stream: decoders may still.
            if let Some(sps) = c.sps.first().and_then(|s| Sps::parse(s).ok()) {
                info.width = Some(sps.width);
                info.height = Some(sps.height);
                info.fps = sps.fps();
            }
        }
        CodecId::H265 => {
            let c = HevcDecoderConfig::parse(&config)
                .map_err(|source| FlvError::HevcConfig { offset, source })?;
            info.profile = Some(c.profile_idc);
            info.level = Some(c.level_idc);
            if let Some((w, h)) = c.picture_size() {
                info.width = Some(w);
                info.height = Some(h);
            }
        }
        // AV1CodecConfigurationRecord: marker 1 + version 1, then seq_profile u3,
        // seq_level_idx_0 u5.
        CodecId::Av1 if config.len() >= 2 && config[0] == 0x81 => {
            info.profile = Some(config[1] >> 5);
            info.level = Some(config[1] & 0x1f);
        }
        _ => {}
    }
    Ok(track(MediaKind::Video, codec, config, info))
}

fn nal_frame(
    codec: CodecId,
    r: &mut RopeReader<'_>,
    dts: i64,
    cts: i32,
    keyframe: bool,
    ingest: Instant,
    length_size: u8,
) -> Result<FlvTag, FlvError> {
    let mut nalus = Vec::with_capacity(4);
    while r.remaining() > 0 {
        let offset = r.position();
        let length = r
            .uint(usize::from(length_size))
            .map_err(short("NAL unit length"))?;
        let remaining = r.remaining();
        if length > remaining as u64 {
            return Err(FlvError::NaluTooLong {
                offset,
                length,
                remaining,
            });
        }
        // In range: length <= remaining, checked above.
        let nal = r.take(length as usize).map_err(short("NAL unit"))?;
        if !nal.is_empty() {
            nalus.push(nal);
        }
    }
    Ok(FlvTag::Frame {
        codec,
        frame: Frame {
            kind: MediaKind::Video,
            dts,
            pts: dts.saturating_add(i64::from(cts)),
            keyframe,
            ingest,
            payload: FramePayload::Nalus(nalus),
        },
    })
}

/// Parses the body of an audio message.
pub fn parse_audio(
    body: &ByteRope,
    timestamp_ms: i64,
    ingest: Instant,
) -> Result<FlvTag, FlvError> {
    let mut r = body.reader();
    let b0 = r.u8().map_err(|_| FlvError::Empty)?;
    let format = b0 >> 4;
    let frame = |codec, payload| FlvTag::Frame {
        codec,
        frame: Frame {
            kind: MediaKind::Audio,
            dts: timestamp_ms,
            pts: timestamp_ms,
            keyframe: true,
            ingest,
            payload: FramePayload::Raw(payload),
        },
    };
    match format {
        SOUND_AAC => {
            let packet_type = r.u8().map_err(short("AACPacketType"))?;
            match packet_type {
                0 => sequence_header_audio(CodecId::Aac, &mut r),
                1 => Ok(frame(CodecId::Aac, r.rest())),
                value => Err(FlvError::UnknownPacketType {
                    what: "AACPacketType",
                    value,
                    offset: 1,
                }),
            }
        }
        SOUND_EX_HEADER => {
            let packet_type = skip_mod_ex(&mut r, b0 & 0x0f)?;
            if packet_type == APT_MULTITRACK {
                return Err(FlvError::Multitrack {
                    kind: MediaKind::Audio,
                    offset: 0,
                });
            }
            let codec = read_fourcc(&mut r, MediaKind::Audio)?;
            match packet_type {
                APT_SEQUENCE_START => sequence_header_audio(codec, &mut r),
                APT_CODED_FRAMES => Ok(frame(codec, r.rest())),
                APT_SEQUENCE_END => Ok(FlvTag::EndOfSequence(codec)),
                APT_MULTICHANNEL_CONFIG => Ok(FlvTag::Passthrough {
                    kind: MediaKind::Audio,
                    codec,
                    body: body.clone(),
                    keyframe: true,
                }),
                value => Err(FlvError::UnknownPacketType {
                    what: "AudioPacketType",
                    value,
                    offset: 0,
                }),
            }
        }
        other => Ok(FlvTag::Passthrough {
            kind: MediaKind::Audio,
            codec: if other == SOUND_MP3 || other == SOUND_MP3_8K {
                CodecId::Mp3
            } else {
                CodecId::FlvLegacy(MediaKind::Audio, other)
            },
            body: body.clone(),
            keyframe: true,
        }),
    }
}

fn sequence_header_audio(codec: CodecId, r: &mut RopeReader<'_>) -> Result<FlvTag, FlvError> {
    let offset = r.position();
    let config = r.rest().to_contiguous();
    let mut info = TrackInfo::default();
    match codec {
        CodecId::Aac => {
            let asc = AudioSpecificConfig::parse(&config)
                .map_err(|source| FlvError::AacConfig { offset, source })?;
            info.sample_rate = Some(asc.output_sample_rate());
            info.channels = asc.channels();
            info.profile = Some(asc.extension_object_type.unwrap_or(asc.object_type));
        }
        CodecId::Opus => {
            let head =
                OpusHead::parse(&config).map_err(|source| FlvError::OpusHead { offset, source })?;
            // Opus always decodes at 48 kHz; the input rate in the header is informational.
            info.sample_rate = Some(48000);
            info.channels = Some(head.channels);
        }
        _ => {}
    }
    Ok(track(MediaKind::Audio, codec, config, info))
}

/// The FLV video sequence header for a track: a legacy AVC header for H.264, an Enhanced
/// RTMP SequenceStart with FourCC for H.265, AV1, VP9 and VP8; empty for other codecs.
///
/// The record's NAL unit length size is rewritten to 4, the size [`video_body`] writes.
pub fn video_sequence_header(track: &Track) -> Bytes {
    let mut config = BytesMut::from(&track.config[..]);
    let header: &[u8] = match track.codec {
        CodecId::H264 => {
            if let Some(b) = config.get_mut(4) {
                *b |= 3;
            }
            &[0x17, 0x00, 0, 0, 0]
        }
        CodecId::H265 => {
            if let Some(b) = config.get_mut(21) {
                *b |= 3;
            }
            &[
                0x80 | (FRAME_KEY << 4) | VPT_SEQUENCE_START,
                b'h',
                b'v',
                b'c',
                b'1',
            ]
        }
        CodecId::Av1 => &[0x90, b'a', b'v', b'0', b'1'],
        CodecId::Vp9 => &[0x90, b'v', b'p', b'0', b'9'],
        CodecId::Vp8 => &[0x90, b'v', b'p', b'0', b'8'],
        _ => return Bytes::new(),
    };
    let mut out = BytesMut::with_capacity(header.len() + config.len());
    out.put_slice(header);
    out.put_slice(&config);
    out.freeze()
}

/// The FLV audio sequence header for a track: `[0xAF, 0x00]` + AudioSpecificConfig for AAC,
/// an Enhanced RTMP SequenceStart with FourCC + config for Opus, FLAC, AC-3 and E-AC-3 (when
/// the track has a config); empty for other codecs.
///
/// For AAC the rate/size/type bits are always 44 kHz/16-bit/stereo (0xAF): the FLV spec fixes
/// them for AAC, and decoders take the real values from the AudioSpecificConfig.
pub fn audio_sequence_header(track: &Track) -> Bytes {
    let header: [u8; 5] = match track.codec {
        CodecId::Aac => {
            let mut out = BytesMut::with_capacity(2 + track.config.len());
            out.put_slice(&[AAC_HEADER_BYTE, 0x00]);
            out.put_slice(&track.config);
            return out.freeze();
        }
        codec @ (CodecId::Opus | CodecId::Flac | CodecId::Ac3 | CodecId::Eac3)
            if !track.config.is_empty() =>
        {
            let f = fourcc_of(codec).unwrap_or_default();
            [
                (SOUND_EX_HEADER << 4) | APT_SEQUENCE_START,
                f[0],
                f[1],
                f[2],
                f[3],
            ]
        }
        _ => return Bytes::new(),
    };
    let mut out = BytesMut::with_capacity(5 + track.config.len());
    out.put_slice(&header);
    out.put_slice(&track.config);
    out.freeze()
}

/// AAC, 44 kHz, 16-bit, stereo (FLV spec E.4.2.1: fixed for AAC).
const AAC_HEADER_BYTE: u8 = (SOUND_AAC << 4) | 0x0f;

fn push_payload(payload: &FramePayload, out: &mut ByteRope) {
    match payload {
        FramePayload::Raw(r) => out.append(r),
        FramePayload::Nalus(n) => n.iter().for_each(|x| out.append(x)),
    }
}

fn composition_time(frame: &Frame) -> i32 {
    // CompositionTime is si24; out-of-range values are clamped, not wrapped.
    frame
        .pts
        .saturating_sub(frame.dts)
        .clamp(-(1 << 23), (1 << 23) - 1) as i32
}

/// Appends the FLV video tag body of `frame` to `out`, sharing the frame's slices.
///
/// - H.264: legacy 5-byte AVC NALU header, then for each NAL unit a 4-byte length and the
///   unit's slices. All the small headers of one frame come from one allocation.
/// - H.265: Enhanced RTMP CodedFrames (with composition time) or CodedFramesX (when it is
///   zero), 4-byte lengths.
/// - AV1, VP9, VP8: Enhanced RTMP CodedFrames (static header) with the raw payload.
/// - Legacy FLV codecs: the payload, which is the original tag body, unchanged.
///
/// A `Raw` payload on an H.264/H.265 track is taken as already length-prefixed.
pub fn video_body(track: &Track, frame: &Frame, out: &mut ByteRope) {
    let ft = if frame.keyframe {
        FRAME_KEY
    } else {
        FRAME_INTER
    };
    let cts = composition_time(frame);
    let cts_bytes = cts.to_be_bytes();
    let (header, fourcc_written): (usize, Option<[u8; 4]>) = match track.codec {
        CodecId::H264 => (5, None),
        CodecId::H265 => (if cts == 0 { 5 } else { 8 }, Some(fourcc::HVC1)),
        CodecId::Av1 | CodecId::Vp9 | CodecId::Vp8 => {
            // Static headers: no allocation for raw-frame codecs.
            const KEY: u8 = 0x80 | (FRAME_KEY << 4) | VPT_CODED_FRAMES;
            const INTER: u8 = 0x80 | (FRAME_INTER << 4) | VPT_CODED_FRAMES;
            let h: &'static [u8] = match (track.codec, frame.keyframe) {
                (CodecId::Av1, true) => &[KEY, b'a', b'v', b'0', b'1'],
                (CodecId::Av1, false) => &[INTER, b'a', b'v', b'0', b'1'],
                (CodecId::Vp9, true) => &[KEY, b'v', b'p', b'0', b'9'],
                (CodecId::Vp9, false) => &[INTER, b'v', b'p', b'0', b'9'],
                (_, true) => &[KEY, b'v', b'p', b'0', b'8'],
                (_, false) => &[INTER, b'v', b'p', b'0', b'8'],
            };
            out.push(Bytes::from_static(h));
            push_payload(&frame.payload, out);
            return;
        }
        _ => {
            push_payload(&frame.payload, out);
            return;
        }
    };
    let nalus: &[ByteRope] = match &frame.payload {
        FramePayload::Nalus(n) => n,
        FramePayload::Raw(_) => &[],
    };
    let mut buf = BytesMut::with_capacity(header + 4 * nalus.len());
    match fourcc_written {
        None => {
            buf.put_u8((ft << 4) | VIDEO_AVC);
            buf.put_u8(1);
            buf.put_slice(&cts_bytes[1..]);
        }
        Some(f) => {
            let pt = if cts == 0 {
                VPT_CODED_FRAMES_X
            } else {
                VPT_CODED_FRAMES
            };
            buf.put_u8(0x80 | (ft << 4) | pt);
            buf.put_slice(&f);
            if cts != 0 {
                buf.put_slice(&cts_bytes[1..]);
            }
        }
    }
    for n in nalus {
        buf.put_u32(u32::try_from(n.len()).unwrap_or(u32::MAX));
    }
    let mut buf = buf.freeze();
    out.push(buf.split_to(header));
    if let FramePayload::Raw(r) = &frame.payload {
        out.append(r);
    }
    for n in nalus {
        out.push(buf.split_to(4));
        out.append(n);
    }
}

/// Appends the FLV audio tag body of `frame` to `out`, sharing the frame's slices (the
/// headers are static: no allocation).
///
/// - AAC: `[0xAF, 0x01]` + raw frame.
/// - Opus, FLAC, AC-3, E-AC-3: Enhanced RTMP CodedFrames with FourCC.
/// - MP3 and legacy FLV codecs: the payload, which is the original tag body, unchanged.
pub fn audio_body(track: &Track, frame: &Frame, out: &mut ByteRope) {
    const AAC: &[u8] = &[AAC_HEADER_BYTE, 0x01];
    const EX: u8 = (SOUND_EX_HEADER << 4) | APT_CODED_FRAMES;
    let header: &'static [u8] = match track.codec {
        CodecId::Aac => AAC,
        CodecId::Opus => &[EX, b'O', b'p', b'u', b's'],
        CodecId::Flac => &[EX, b'f', b'L', b'a', b'C'],
        CodecId::Ac3 => &[EX, b'a', b'c', b'-', b'3'],
        CodecId::Eac3 => &[EX, b'e', b'c', b'-', b'3'],
        _ => &[],
    };
    out.push(Bytes::from_static(header));
    push_payload(&frame.payload, out);
}

#[cfg(test)]
mod tests;
