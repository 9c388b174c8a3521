//! Movie fragments: `[styp] moof { mfhd, traf* { tfhd, tfdt, trun } } mdat` (ISO/IEC
//! 14496-12 8.8), built from frames without copying their payloads.

use bytes::{BufMut, Bytes, BytesMut};

use super::boxes::{Mfhd, Mp4Box, Tfdt, Tfhd, Trun, TrunSample};
use super::{media_timescale, rescale, write_box, Fmp4Error};
use crate::flv::nalu_length_size;
use crate::media::{CodecId, Frame, FramePayload, MediaKind, Track};
use crate::rope::ByteRope;

/// Sample flags (8.8.3.1): `sample_depends_on` = 2 (an I-picture), a sync sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// `sample_depends_on` = 1 and `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
/// Payload bytes one fragment may hold.
const MAX_FRAGMENT_BYTES: usize = 1 << 30;

/// One fragment: `header` (`[styp] moof`, `mdat` box header) followed by `payload` (the
/// `mdat` body) is a complete CMAF fragment; send them with one vectored write.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    /// The `mfhd` sequence number given to [`FragmentBuilder::finish`].
    pub sequence_number: u32,
    /// `styp` (when enabled), `moof`, and the 8-byte `mdat` header.
    pub header: Bytes,
    /// The `mdat` body: length prefixes and the frames' own slices.
    pub payload: ByteRope,
    /// Decode time of the earliest first sample, in milliseconds.
    pub start_ms: i64,
    /// Duration of the longest track run, in milliseconds (rounded to nearest).
    pub duration_ms: i64,
    /// True when every video track's run starts on a keyframe (and for audio-only
    /// fragments); false for a fragment without samples.
    pub starts_with_keyframe: bool,
    /// Samples in all tracks.
    pub samples: usize,
}

impl Fragment {
    /// Total size in bytes.
    pub fn size(&self) -> usize {
        self.header.len() + self.payload.len()
    }

    /// Header and payload in one buffer. Copies media: for tests and files, not the data path.
    pub fn to_contiguous(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.size());
        v.extend_from_slice(&self.header);
        self.payload
            .parts()
            .iter()
            .for_each(|p| v.extend_from_slice(p));
        Bytes::from(v)
    }
}

struct Sample {
    dts: i64,
    composition_offset: i32,
    keyframe: bool,
    size: u32,
    payload: FramePayload,
}

struct TrackState {
    kind: MediaKind,
    /// NAL units get length prefixes of this many bytes; 0 for other codecs.
    length_size: u8,
    timescale_in: u32,
    timescale: u32,
    default_duration: u32,
    samples: Vec<Sample>,
    last_dts: Option<i64>,
    last_duration: Option<u32>,
    next_dts: Option<i64>,
}

/// Collects frames per track and cuts them into [`Fragment`]s.
///
/// Timestamps are rescaled as the module docs describe. A sample lasts until the next
/// sample's dts. The last sample of a track run has no successor yet, so it takes, in order
/// of preference: the dts given by [`set_next_dts`](Self::set_next_dts) before `finish`;
/// the previous sample's duration; the last duration of the previous fragment; a codec
/// default (1/fps or 1/30 s for video, 1024 samples for AAC, 20 ms for Opus). Each fragment's
/// `tfdt` is the rescaled dts of its first sample, so a wrong guess shows as a gap or overlap
/// of that one sample and never shifts the timeline.
///
/// ```no_run
/// # use zerocast_codecs::{fmp4, Frame, Track};
/// # fn demo(tracks: &[Track], frames: Vec<(usize, Frame)>) -> Result<(), fmp4::Fmp4Error> {
/// let init = fmp4::init_segment(tracks)?;
/// let mut fragments = fmp4::FragmentBuilder::new(tracks)?;
/// let mut seq = 1;
/// for (track, frame) in frames {
///     if frame.keyframe && !fragments.is_empty() {
///         fragments.set_next_dts(track, frame.dts)?;
///         let f = fragments.finish(seq);
///         seq += 1;
///         // write f.header, then f.payload.parts()
///     }
///     fragments.push(track, &frame)?;
/// }
/// # Ok(()) }
/// ```
pub struct FragmentBuilder {
    tracks: Vec<TrackState>,
    styp: bool,
    pending_bytes: usize,
    pending_prefix_bytes: usize,
}

impl FragmentBuilder {
    /// A builder for `tracks`, in the order given to [`super::init_segment`].
    pub fn new(tracks: &[Track]) -> Result<Self, Fmp4Error> {
        if tracks.is_empty() {
            return Err(Fmp4Error::NoTracks);
        }
        let tracks = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let timescale = media_timescale(i, t)?;
                let default_duration = match t.codec {
                    CodecId::Aac => 1024,
                    CodecId::Opus => 960,
                    _ => match t.info.fps.filter(|f| *f >= 1.0) {
                        Some(fps) => (f64::from(timescale) / fps).round() as u32,
                        None => timescale / 30,
                    },
                };
                Ok(TrackState {
                    kind: t.kind,
                    length_size: if t.codec.is_nal_based() {
                        nalu_length_size(t)
                    } else {
                        0
                    },
                    timescale_in: t.timescale,
                    timescale,
                    default_duration,
                    samples: Vec::new(),
                    last_dts: None,
                    last_duration: None,
                    next_dts: None,
                })
            })
            .collect::<Result<_, Fmp4Error>>()?;
        Ok(FragmentBuilder {
            tracks,
            styp: false,
            pending_bytes: 0,
            pending_prefix_bytes: 0,
        })
    }

    /// Starts each fragment with a `styp` box (brands `iso6`, `cmfc`), as segment files may.
    pub fn with_styp(mut self, on: bool) -> Self {
        self.styp = on;
        self
    }

    /// True when no samples are waiting.
    pub fn is_empty(&self) -> bool {
        self.tracks.iter().all(|t| t.samples.is_empty())
    }

    /// Samples waiting for the next fragment, all tracks together.
    pub fn pending_samples(&self) -> usize {
        self.tracks.iter().map(|t| t.samples.len()).sum()
    }

    fn track(&mut self, index: usize) -> Result<&mut TrackState, Fmp4Error> {
        let tracks = self.tracks.len();
        self.tracks
            .get_mut(index)
            .ok_or(Fmp4Error::UnknownTrack { index, tracks })
    }

    /// Adds a frame of track `track_index`; its payload slices are shared, not copied.
    ///
    /// A `Raw` payload on an H.264/H.265 track is taken as already length-prefixed.
    pub fn push(&mut self, track_index: usize, frame: &Frame) -> Result<(), Fmp4Error> {
        let t = self.track(track_index)?;
        if frame.dts < 0 {
            return Err(Fmp4Error::NegativeDts {
                track: track_index,
                dts: frame.dts,
            });
        }
        let dts = rescale(frame.dts, t.timescale_in, t.timescale);
        if let Some(previous) = t.last_dts.filter(|&p| dts < p) {
            return Err(Fmp4Error::DtsWentBack {
                track: track_index,
                previous,
                dts,
            });
        }
        let too_large = |len| Fmp4Error::SampleTooLarge {
            track: track_index,
            len,
        };
        let size = match &frame.payload {
            FramePayload::Nalus(nalus) if t.length_size > 0 => {
                let max = (1u64 << (8 * u32::from(t.length_size))) - 1;
                if let Some(n) = nalus.iter().find(|n| n.len() as u64 > max) {
                    return Err(too_large(n.len()));
                }
                frame.payload.len() + nalus.len() * usize::from(t.length_size)
            }
            p => p.len(),
        };
        // data_offset is an i32: keep a fragment's mdat under 1 GiB, far beyond any real one.
        if self.pending_bytes + size > MAX_FRAGMENT_BYTES {
            return Err(too_large(size));
        }
        self.pending_bytes += size;
        if let FramePayload::Nalus(nalus) = &frame.payload {
            self.pending_prefix_bytes +=
                nalus.len() * usize::from(self.tracks[track_index].length_size);
        }
        let t = &mut self.tracks[track_index];
        let cto = rescale(frame.pts, t.timescale_in, t.timescale) - dts;
        t.samples.push(Sample {
            dts,
            composition_offset: cto.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
            keyframe: frame.keyframe || t.kind == MediaKind::Audio,
            size: size as u32,
            payload: frame.payload.clone(),
        });
        t.last_dts = Some(dts);
        Ok(())
    }

    /// Tells the builder the dts (track timescale) of the frame that will follow the last
    /// one pushed on `track_index`, so the next `finish` gives that sample its exact duration.
    pub fn set_next_dts(&mut self, track_index: usize, dts: i64) -> Result<(), Fmp4Error> {
        let t = self.track(track_index)?;
        t.next_dts = Some(rescale(dts, t.timescale_in, t.timescale));
        Ok(())
    }

    /// Cuts the waiting samples into a fragment. Tracks without samples get no `traf`; with
    /// no samples at all the fragment is an `mfhd`-only `moof` and an empty `mdat`.
    pub fn finish(&mut self, sequence_number: u32) -> Fragment {
        // All length prefixes of the fragment share one allocation, sized by `push`; each is
        // split off as its own `Bytes` beside the NAL unit it frames.
        let mut prefixes = BytesMut::with_capacity(self.pending_prefix_bytes);
        (self.pending_bytes, self.pending_prefix_bytes) = (0, 0);
        let mut payload = ByteRope::new();
        let mut header = BytesMut::with_capacity(128 + 16 * self.pending_samples());
        if self.styp {
            write_box(&mut header, b"styp", |b| {
                b.put_slice(b"iso6");
                b.put_u32(0);
                b.put_slice(b"iso6cmfc");
            });
        }
        let moof_at = header.len();
        // Per traf: where its trun starts in `header` and where its samples start in mdat.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let (mut start_ms, mut duration_ms) = (i64::MAX, 0i64);
        let mut starts_with_keyframe = true;
        let mut samples = 0;
        write_box(&mut header, b"moof", |b| {
            Mfhd { sequence_number }.encode(b);
            for (i, t) in self.tracks.iter_mut().enumerate() {
                let next_dts = t.next_dts.take();
                let (Some(first), Some(last)) = (t.samples.first(), t.samples.last()) else {
                    continue;
                };
                let last_duration = next_dts
                    .filter(|&d| d >= last.dts)
                    .map(|d| d - last.dts)
                    .or_else(|| {
                        t.samples
                            .len()
                            .checked_sub(2)
                            .map(|k| last.dts - t.samples[k].dts)
                    })
                    .unwrap_or(t.last_duration.unwrap_or(t.default_duration).into());
                let run_start = payload.len();
                let mut trun = Trun {
                    data_offset: Some(0),
                    sample_flags: t.kind == MediaKind::Video,
                    composition_offsets: t.kind == MediaKind::Video,
                    samples: Vec::with_capacity(t.samples.len()),
                };
                for (k, s) in t.samples.iter().enumerate() {
                    let duration = t
                        .samples
                        .get(k + 1)
                        .map_or(last_duration, |n| n.dts - s.dts);
                    trun.samples.push(TrunSample {
                        duration: duration.clamp(0, u32::MAX.into()) as u32,
                        size: s.size,
                        flags: if s.keyframe {
                            SYNC_SAMPLE
                        } else {
                            NON_SYNC_SAMPLE
                        },
                        composition_offset: s.composition_offset,
                    });
                    match &s.payload {
                        FramePayload::Nalus(nalus) if t.length_size > 0 => {
                            for n in nalus {
                                prefixes.put_uint(n.len() as u64, usize::from(t.length_size));
                                payload.push(prefixes.split().freeze());
                                payload.append(n);
                            }
                        }
                        FramePayload::Nalus(nalus) => nalus.iter().for_each(|n| payload.append(n)),
                        FramePayload::Raw(r) => payload.append(r),
                    }
                }
                let end = last.dts + last_duration;
                t.last_duration = trun.samples.last().map(|s| s.duration);
                start_ms = start_ms.min(rescale(first.dts, t.timescale, 1000));
                duration_ms = duration_ms.max(rescale(end - first.dts, t.timescale, 1000));
                starts_with_keyframe &= t.kind != MediaKind::Video || first.keyframe;
                samples += t.samples.len();
                write_box(b, b"traf", |b| {
                    Tfhd {
                        track_id: i as u32 + 1,
                    }
                    .encode(b);
                    // Non-negative: push refuses negative dts.
                    Tfdt {
                        base_media_decode_time: first.dts as u64,
                    }
                    .encode(b);
                    runs.push((b.len(), run_start));
                    trun.encode(b);
                });
                t.samples.clear();
            }
        });
        let moof_len = header.len() - moof_at;
        // Fits: push keeps a fragment's payload under 1 GiB.
        header.put_u32(payload.len() as u32 + 8);
        header.put_slice(b"mdat");
        for (trun_at, run_start) in runs {
            let offset = (moof_len + 8 + run_start) as i32;
            let at = trun_at + Trun::DATA_OFFSET_POS;
            header[at..at + 4].copy_from_slice(&offset.to_be_bytes());
        }
        Fragment {
            sequence_number,
            header: header.freeze(),
            payload,
            start_ms: if samples == 0 { 0 } else { start_ms },
            duration_ms,
            starts_with_keyframe: samples > 0 && starts_with_keyframe,
            samples,
        }
    }
}
