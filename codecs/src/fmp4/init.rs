//! The initialization segment: `ftyp` + `moov` (ISO/IEC 14496-12 8.2 to 8.7, 8.8.1 to 8.8.3).
//!
//! Sample tables are empty (all samples live in fragments) and durations are zero (live).

use bytes::{BufMut, Bytes, BytesMut};

use super::{media_timescale, write_box, write_full_box, Fmp4Error};
use crate::aac::AudioSpecificConfig;
use crate::h264::{AvcDecoderConfig, Sps};
use crate::h265::HevcDecoderConfig;
use crate::media::{CodecId, MediaKind, Track};
use crate::opus::OpusHead;

/// The unity transformation matrix of `mvhd` and `tkhd` (8.2.2.3).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// Builds the initialization segment for `tracks`; track ids are 1, 2, ... in order.
///
/// Supported: H.264 (`avc1`+`avcC`), H.265 (`hvc1`+`hvcC`), AV1 (`av01`+`av1C`), AAC
/// (`mp4a`+`esds`) and Opus (`Opus`+`dOps`). Each track's `config` is validated.
pub fn init_segment(tracks: &[Track]) -> Result<Bytes, Fmp4Error> {
    if tracks.is_empty() {
        return Err(Fmp4Error::NoTracks);
    }
    // Validate everything before writing, so the writers below cannot fail.
    let entries = tracks
        .iter()
        .enumerate()
        .map(|(i, t)| Ok((media_timescale(i, t)?, sample_entry(i, t)?)))
        .collect::<Result<Vec<_>, Fmp4Error>>()?;
    let mut b = BytesMut::with_capacity(1024);
    write_box(&mut b, b"ftyp", |b| {
        b.put_slice(b"iso6");
        b.put_u32(0);
        for brand in [b"iso6", b"cmfc", b"mp41"] {
            b.put_slice(brand);
        }
    });
    write_box(&mut b, b"moov", |b| {
        write_full_box(b, b"mvhd", 0, 0, |b| {
            b.put_u64(0); // creation, modification time
            b.put_u32(1000); // timescale
            b.put_u32(0); // duration: unknown (fragmented)
            b.put_u32(0x0001_0000); // rate 1.0
            b.put_u16(0x0100); // volume 1.0
            b.put_bytes(0, 10);
            MATRIX.iter().for_each(|&m| b.put_u32(m));
            b.put_bytes(0, 24); // pre_defined
            b.put_u32(tracks.len() as u32 + 1); // next_track_ID
        });
        for (i, (t, (timescale, entry))) in tracks.iter().zip(&entries).enumerate() {
            trak(b, i as u32 + 1, t, *timescale, entry);
        }
        write_box(b, b"mvex", |b| {
            for id in 1..=tracks.len() as u32 {
                write_full_box(b, b"trex", 0, 0, |b| {
                    b.put_u32(id);
                    b.put_u32(1); // default_sample_description_index
                    b.put_bytes(0, 12); // default duration, size, flags: trun says
                });
            }
        });
    });
    Ok(b.freeze())
}

fn trak(b: &mut BytesMut, id: u32, t: &Track, timescale: u32, entry: &Bytes) {
    let video = t.kind == MediaKind::Video;
    write_box(b, b"trak", |b| {
        // Flags: track_enabled | track_in_movie.
        write_full_box(b, b"tkhd", 0, 0x3, |b| {
            b.put_u64(0); // creation, modification time
            b.put_u32(id);
            b.put_u32(0); // reserved
            b.put_u32(0); // duration
            b.put_bytes(0, 8);
            b.put_u32(0); // layer, alternate_group
            b.put_u16(if video { 0 } else { 0x0100 }); // volume
            b.put_u16(0);
            MATRIX.iter().for_each(|&m| b.put_u32(m));
            let (w, h) = if video {
                dimensions(t).unwrap_or((0, 0))
            } else {
                (0, 0)
            };
            b.put_u32(w << 16); // 16.16 fixed point
            b.put_u32(h << 16);
        });
        write_box(b, b"mdia", |b| {
            write_full_box(b, b"mdhd", 0, 0, |b| {
                b.put_u64(0);
                b.put_u32(timescale);
                b.put_u32(0);
                b.put_u16(0x55c4); // language "und", packed ISO-639-2/T
                b.put_u16(0);
            });
            write_full_box(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0);
                b.put_slice(if video { b"vide" } else { b"soun" });
                b.put_bytes(0, 12);
                b.put_slice(if video {
                    b"zerocast video\0"
                } else {
                    b"zerocast audio\0"
                });
            });
            write_box(b, b"minf", |b| {
                if video {
                    write_full_box(b, b"vmhd", 0, 1, |b| b.put_bytes(0, 8));
                } else {
                    write_full_box(b, b"smhd", 0, 0, |b| b.put_u32(0));
                }
                write_box(b, b"dinf", |b| {
                    write_full_box(b, b"dref", 0, 0, |b| {
                        b.put_u32(1);
                        // Flag 1: media data is in this file.
                        write_full_box(b, b"url ", 0, 1, |_| {});
                    });
                });
                write_box(b, b"stbl", |b| {
                    write_full_box(b, b"stsd", 0, 0, |b| {
                        b.put_u32(1);
                        b.put_slice(entry);
                    });
                    write_full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
                    write_full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
                    write_full_box(b, b"stsz", 0, 0, |b| b.put_u64(0));
                    write_full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
                });
            });
        });
    });
}

/// Picture size from `info`, else from the parameter sets.
fn dimensions(t: &Track) -> Option<(u32, u32)> {
    if let (Some(w), Some(h)) = (t.info.width, t.info.height) {
        return Some((w, h));
    }
    match t.codec {
        CodecId::H264 => {
            let rec = AvcDecoderConfig::parse(&t.config).ok()?;
            let sps = Sps::parse(rec.sps.first()?).ok()?;
            Some((sps.width, sps.height))
        }
        CodecId::H265 => HevcDecoderConfig::parse(&t.config).ok()?.picture_size(),
        _ => None,
    }
}

/// The sample entry box of track `i` (8.5.2, with the codec's configuration box).
fn sample_entry(i: usize, t: &Track) -> Result<Bytes, Fmp4Error> {
    let bad = Fmp4Error::BadConfig {
        track: i,
        codec: t.codec,
    };
    let mut b = BytesMut::with_capacity(t.config.len() + 128);
    match (t.kind, t.codec) {
        (MediaKind::Video, CodecId::H264 | CodecId::H265 | CodecId::Av1) => {
            let (kind, config_kind) = match t.codec {
                CodecId::H264 => {
                    AvcDecoderConfig::parse(&t.config)?;
                    (b"avc1", b"avcC")
                }
                CodecId::H265 => {
                    HevcDecoderConfig::parse(&t.config)?;
                    (b"hvc1", b"hvcC")
                }
                _ => {
                    // AV1CodecConfigurationRecord: marker bit and version 1, 4 fixed bytes.
                    if t.config.len() < 4 || t.config[0] != 0x81 {
                        return Err(bad);
                    }
                    (b"av01", b"av1C")
                }
            };
            let (w, h) = dimensions(t).ok_or(Fmp4Error::MissingDimensions { track: i })?;
            // VisualSampleEntry fields are 16 bits wide.
            let (w, h) = (w.min(0xffff) as u16, h.min(0xffff) as u16);
            write_box(&mut b, kind, |b| {
                b.put_bytes(0, 6);
                b.put_u16(1); // data_reference_index
                b.put_bytes(0, 16); // pre_defined, reserved
                b.put_u16(w);
                b.put_u16(h);
                b.put_u32(0x0048_0000); // 72 dpi
                b.put_u32(0x0048_0000);
                b.put_u32(0);
                b.put_u16(1); // frame_count
                b.put_bytes(0, 32); // compressorname
                b.put_u16(0x0018); // depth
                b.put_i16(-1);
                write_box(b, config_kind, |b| b.put_slice(&t.config));
            });
        }
        (MediaKind::Audio, CodecId::Aac) => {
            let asc = AudioSpecificConfig::parse(&t.config)?;
            let rate = t.info.sample_rate.unwrap_or(asc.output_sample_rate());
            let channels = t.info.channels.or(asc.channels()).unwrap_or(2);
            if t.config.len() > 0x7f_ffff {
                return Err(bad);
            }
            write_box(&mut b, b"mp4a", |b| {
                audio_entry_fields(b, channels, rate);
                write_full_box(b, b"esds", 0, 0, |b| esds(b, &t.config));
            });
        }
        (MediaKind::Audio, CodecId::Opus) => {
            let head = OpusHead::parse(&t.config)?;
            // Families other than 0 carry stream count, coupled count and a channel mapping.
            if head.mapping_family != 0 && t.config.len() < 21 + usize::from(head.channels) {
                return Err(bad);
            }
            write_box(&mut b, b"Opus", |b| {
                audio_entry_fields(b, head.channels, 48_000);
                // OpusSpecificBox: the OpusHead fields after magic and version, big-endian,
                // then the channel mapping table unchanged.
                write_box(b, b"dOps", |b| {
                    b.put_u8(0);
                    b.put_u8(head.channels);
                    b.put_u16(head.pre_skip);
                    b.put_u32(head.input_sample_rate);
                    b.put_i16(head.output_gain);
                    b.put_u8(head.mapping_family);
                    if head.mapping_family != 0 {
                        b.put_slice(&t.config[19..]);
                    }
                });
            });
        }
        _ => {
            return Err(Fmp4Error::UnsupportedCodec {
                track: i,
                codec: t.codec,
            })
        }
    }
    Ok(b.freeze())
}

/// The AudioSampleEntry fields (8.5.2.2) before the codec box.
fn audio_entry_fields(b: &mut BytesMut, channels: u8, rate: u32) {
    b.put_bytes(0, 6);
    b.put_u16(1); // data_reference_index
    b.put_bytes(0, 8);
    b.put_u16(channels.into());
    b.put_u16(16); // samplesize
    b.put_u32(0); // pre_defined, reserved
                  // 16.16 fixed point; rates above 65535 Hz do not fit and are left to the codec config.
    b.put_u32(if rate <= 0xffff { rate << 16 } else { 0 });
}

/// The `esds` body (ISO/IEC 14496-1 7.2.6.5): ES_Descriptor { DecoderConfigDescriptor {
/// DecoderSpecificInfo = ASC }, SLConfigDescriptor }.
fn esds(b: &mut BytesMut, asc: &[u8]) {
    // Descriptor sizes use the 4-byte expandable form so they need no precomputation.
    fn descriptor(b: &mut BytesMut, tag: u8, len: usize) {
        b.put_u8(tag);
        let len = len as u32;
        for shift in [21, 14, 7] {
            b.put_u8(0x80 | ((len >> shift) as u8 & 0x7f));
        }
        b.put_u8(len as u8 & 0x7f);
    }
    let dsi = 5 + asc.len();
    let dcd = 13 + dsi;
    descriptor(b, 0x03, 3 + 5 + dcd + 5 + 1);
    b.put_u16(0); // ES_ID
    b.put_u8(0); // no dependency, URL or OCR stream
    descriptor(b, 0x04, dcd);
    b.put_u8(0x40); // objectTypeIndication: MPEG-4 Audio
    b.put_u8(0x15); // streamType audio (5) << 2 | reserved 1
    b.put_bytes(0, 11); // bufferSizeDB, maxBitrate, avgBitrate: unknown
    descriptor(b, 0x05, asc.len());
    b.put_slice(asc);
    descriptor(b, 0x06, 1);
    b.put_u8(0x02); // SLConfigDescriptor predefined: MP4
}
