//! The packager: frames in, [`HlsUpdate`]s out.
//!
//! All part and segment arithmetic runs in the ticks of the *primary* track (video when there
//! is one, else audio), in the timescale the frames arrive in, so that the durations the
//! playlist prints are the ones written into the `trun` boxes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zerocast_codecs::fmp4::{self, Fmp4Error, FragmentBuilder};
use zerocast_codecs::{CodecId, Frame, MediaKind, Track};

use crate::config::PackagerConfig;
use crate::update::{HlsError, HlsUpdate, StreamInfo};
use crate::window::Window;

const VIDEO: usize = 0;
const AUDIO: usize = 1;
/// A primary-track timestamp jump forward of more than this many seconds (a stalled or
/// restarted encoder) restarts packaging with a discontinuity instead of leaving a hole that
/// players would stall on.
const MAX_GAP_SECS: i64 = 10;
/// A segment that reaches this many segment targets is cut without a keyframe, so that a
/// publisher that stops sending keyframes cannot grow one segment (held in every window) forever.
const MAX_SEGMENT_TARGETS: i64 = 4;

/// Numbering that survives track changes, restarts and (through [`Window`]) republishes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Numbering {
    pub(crate) next_msn: u64,
    /// Stream-global sequence number of the next part (`part-<seq>.m4s`).
    pub(crate) next_part_seq: u64,
    pub(crate) next_init_id: u64,
    pub(crate) discontinuity_sequence: u64,
    pub(crate) had_segments: bool,
    discontinuity_pending: bool,
}

/// Packages one live stream into LL-HLS: fMP4 init segments, segments and parts.
///
/// Runs on the publisher's shard. Feed it [`set_tracks`](Self::set_tracks), then every frame
/// with [`push_frame`](Self::push_frame), then [`end`](Self::end); apply each returned
/// [`HlsUpdate`], in order, to every [`Window`] of the stream.
///
/// - Packaging starts at the first video keyframe (audio-only: the first audio frame).
/// - A segment ends right before a video keyframe once it lasts `segment_duration` (less half
///   a frame), or without one at four times that.
/// - A part is cut right after the frame that fills it (its estimated end reaches the part
///   target), so a part is available one ingest step after its last frame arrived. Its last
///   sample is clamped so that no part exceeds the target, unless it holds a single longer frame.
/// - Audio frames join the part being built when they arrive.
/// - Every part also gets a stream-global sequence number, one more than the part before it
///   whatever segment it falls in (track changes and resumed republishes included): its name,
///   `part-<seq>.m4s`, so the preload hint can always name the next part.
/// - Parts carry no `styp`: a segment is the plain concatenation of its parts, so one set of
///   buffers serves both, and `styp` is optional in ISO BMFF media segments.
pub struct Packager {
    cfg: PackagerConfig,
    numbering: Numbering,
    media: Option<Media>,
    /// Updates of a `push_frame` that failed after producing them; the next call returns them
    /// first, so an error never loses a part.
    undelivered: Vec<HlsUpdate>,
    ended: bool,
}

impl Packager {
    /// A packager. With `resume`, the window of a previous publish of the same stream name,
    /// numbering continues after it (media sequence, part sequence, init ids, discontinuity
    /// sequence) and the first segment is a discontinuity, so players survive the republish.
    pub fn new(cfg: PackagerConfig, resume: Option<&Window>) -> Self {
        let mut numbering = resume.map_or_else(Numbering::default, |w| w.numbering.clone());
        numbering.discontinuity_pending = numbering.had_segments;
        Packager {
            cfg,
            numbering,
            media: None,
            undelivered: Vec::new(),
            ended: false,
        }
    }

    /// (Re)starts packaging with `tracks`: the first video and the first audio track are used,
    /// others (data tracks, extra tracks) are ignored. Emits a new [`HlsUpdate::Init`]; the next
    /// segment is a discontinuity if any segment came before. Tracks equal to the current ones
    /// change nothing (encoders repeat their sequence headers).
    ///
    /// On `Err` nothing changed: a codec without an fMP4/RFC 6381 mapping, or a broken
    /// decoder configuration record.
    pub fn set_tracks(&mut self, tracks: &[Track]) -> Result<Vec<HlsUpdate>, HlsError> {
        if self.ended {
            return Err(HlsError::Ended);
        }
        let pick = |kind| tracks.iter().position(|t| t.kind == kind);
        let chosen: Vec<usize> = [pick(MediaKind::Video), pick(MediaKind::Audio)]
            .into_iter()
            .flatten()
            .collect();
        if chosen.is_empty() {
            return Err(HlsError::NoTracks);
        }
        let list: Vec<Track> = chosen.iter().map(|&i| tracks[i].clone()).collect();
        if self.media.as_ref().is_some_and(|m| m.tracks == list) {
            return Ok(std::mem::take(&mut self.undelivered));
        }
        // fmp4 numbers tracks within `list`; report indexes of the caller's slice.
        let caller_index = |e: Fmp4Error| match e {
            Fmp4Error::UnsupportedCodec { track, codec } => HlsError::UnsupportedCodec {
                track: chosen.get(track).copied().unwrap_or(track),
                codec,
            },
            e => HlsError::Fmp4(e),
        };
        let data = fmp4::init_segment(&list).map_err(caller_index)?;
        let mut codecs = Vec::with_capacity(list.len());
        for (&i, t) in chosen.iter().zip(&list) {
            let unsupported = HlsError::UnsupportedCodec {
                track: i,
                codec: t.codec,
            };
            codecs.push(fmp4::cmaf_codecs_string(t).ok_or(unsupported)?);
        }
        let media =
            Media::new(&self.cfg, list, self.numbering.next_init_id).map_err(caller_index)?;

        let mut out = std::mem::take(&mut self.undelivered);
        if let Some(old) = self.media.as_mut() {
            old.flush(&mut self.numbering, &mut out);
        }
        self.numbering.discontinuity_pending |= self.numbering.had_segments;
        let info = stream_info(&media.tracks, codecs.join(","));
        out.push(HlsUpdate::Init {
            id: media.init_id,
            data,
            info,
        });
        self.numbering.next_init_id += 1;
        self.media = Some(media);
        Ok(out)
    }

    /// Packages one frame. `wall_clock_ms` is the Unix time in milliseconds when it arrived
    /// (for EXT-X-PROGRAM-DATE-TIME). Frames before the first keyframe, data frames and frames
    /// of a kind without a track are dropped (`Ok`, maybe empty).
    ///
    /// A timestamp that goes back, or a primary-track jump of more than 10 s, ends the open
    /// segment; packaging resumes at the next keyframe with a discontinuity.
    ///
    /// On `Err` the frame is dropped and packaging goes on; updates produced before the error
    /// come first in the next call's result.
    pub fn push_frame(
        &mut self,
        frame: &Frame,
        wall_clock_ms: u64,
    ) -> Result<Vec<HlsUpdate>, HlsError> {
        if self.ended {
            return Err(HlsError::Ended);
        }
        let Some(media) = self.media.as_mut() else {
            return Err(HlsError::NoTracks);
        };
        let slot = match frame.kind {
            MediaKind::Video => VIDEO,
            MediaKind::Audio => AUDIO,
            MediaKind::Data => return Ok(std::mem::take(&mut self.undelivered)),
        };
        if media.slots[slot].is_none() {
            return Ok(std::mem::take(&mut self.undelivered));
        }
        if !(0..1 << 62).contains(&frame.dts) {
            return Err(HlsError::DtsOutOfRange { dts: frame.dts });
        }
        let mut out = std::mem::take(&mut self.undelivered);
        match media.push(&mut self.numbering, frame, slot, wall_clock_ms, &mut out) {
            Ok(()) => Ok(out),
            Err(e) => {
                self.undelivered = out;
                Err(e)
            }
        }
    }

    /// Flushes the open part and segment and ends the stream (EXT-X-ENDLIST). Audio that
    /// arrived after the last video frame is dropped. Later calls return nothing.
    pub fn end(&mut self) -> Vec<HlsUpdate> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        let mut out = std::mem::take(&mut self.undelivered);
        if let Some(m) = self.media.as_mut() {
            m.flush(&mut self.numbering, &mut out);
        }
        out.push(HlsUpdate::Ended);
        out
    }
}

/// Multivariant facts and a bandwidth guess for before the first segment is measured.
fn stream_info(tracks: &[Track], codecs: String) -> StreamInfo {
    let video = tracks.iter().find(|t| t.kind == MediaKind::Video);
    let has_audio = tracks.iter().any(|t| t.kind == MediaKind::Audio);
    // About 0.1 bit per pixel: the upper end of live H.264 encodes, so players that pick a
    // variant by BANDWIDTH are not over-optimistic before a segment has been measured.
    let video_bps = video.map_or(0, |v| {
        let (w, h) = (v.info.width.unwrap_or(1280), v.info.height.unwrap_or(720));
        (f64::from(w) * f64::from(h) * v.info.fps.unwrap_or(30.0) * 0.1) as u64
    });
    StreamInfo {
        codecs: Arc::from(codecs),
        width: video.and_then(|v| v.info.width),
        height: video.and_then(|v| v.info.height),
        frame_rate: video.and_then(|v| v.info.fps),
        bandwidth: video_bps + if has_audio { 128_000 } else { 0 },
    }
}

/// Rounds `ticks` of `timescale` to milliseconds, halves up.
fn ticks_to_ms(ticks: i64, timescale: i64) -> i64 {
    let v =
        (i128::from(ticks) * 2000 + i128::from(timescale)).div_euclid(2 * i128::from(timescale));
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

struct OpenPart {
    start: i64,
    last: i64,
    frames: u32,
    first_ingest: Instant,
}

struct OpenSegment {
    msn: u64,
    start: i64,
    duration: Duration,
    parts: u32,
    part: Option<OpenPart>,
}

/// Packaging state for one set of tracks.
struct Media {
    tracks: Vec<Track>,
    builder: FragmentBuilder,
    init_id: u64,
    /// fMP4 track index of the video and of the audio track.
    slots: [Option<usize>; 2],
    /// Slot of the track that paces parts and segments.
    primary: usize,
    /// Input timescale of the primary track.
    timescale: i64,
    part_ticks: i64,
    segment_ticks: i64,
    /// Estimated primary frame duration (ticks), smoothed so millisecond jitter does not move cuts.
    frame_ticks: f64,
    last_dts: [Option<i64>; 2],
    /// (wall clock ms, media ms) of the segment that anchors program date times.
    pdt_anchor: Option<(i64, i64)>,
    /// Ingest instant of the oldest frame waiting in the builder.
    pending_ingest: Option<Instant>,
    sequence: u32,
    segment: Option<OpenSegment>,
}

impl Media {
    fn new(cfg: &PackagerConfig, tracks: Vec<Track>, init_id: u64) -> Result<Self, Fmp4Error> {
        let builder = FragmentBuilder::new(&tracks)?;
        let find = |kind| tracks.iter().position(|t| t.kind == kind);
        let slots = [find(MediaKind::Video), find(MediaKind::Audio)];
        let primary = if slots[VIDEO].is_some() { VIDEO } else { AUDIO };
        // Both slots cannot be empty: set_tracks refuses a list without video and audio.
        let p = &tracks[slots[primary].unwrap_or(0)];
        let timescale = i64::from(p.timescale.max(1));
        let ticks =
            |ms: u64| (i128::from(ms) * i128::from(timescale) / 1000).min(i64::MAX.into()) as i64;
        let frame_secs = match p.codec {
            CodecId::Aac => 1024.0 / f64::from(p.info.sample_rate.unwrap_or(48_000).max(1)),
            CodecId::Opus => 0.02,
            _ => 1.0 / p.info.fps.filter(|f| *f >= 1.0).unwrap_or(30.0),
        };
        Ok(Media {
            builder,
            init_id,
            slots,
            primary,
            timescale,
            part_ticks: ticks(cfg.part_ms()).max(1),
            segment_ticks: ticks(cfg.segment_ms()).max(1),
            frame_ticks: (frame_secs * timescale as f64).max(1.0),
            last_dts: [None; 2],
            pdt_anchor: None,
            pending_ingest: None,
            sequence: 1,
            segment: None,
            tracks,
        })
    }

    fn est(&self) -> i64 {
        self.frame_ticks.round() as i64
    }

    fn push(
        &mut self,
        numbering: &mut Numbering,
        frame: &Frame,
        slot: usize,
        wall_ms: u64,
        out: &mut Vec<HlsUpdate>,
    ) -> Result<(), HlsError> {
        // The caller checked that the slot has a track.
        let track = self.slots[slot].unwrap_or(0);
        let primary = slot == self.primary;
        let d = frame.dts;
        if let Some(last) = self.last_dts[slot] {
            let jump = d.saturating_sub(last);
            let limit = MAX_GAP_SECS * i64::from(self.tracks[track].timescale);
            if jump < 0 || (primary && jump > limit) {
                self.restart(numbering, out)?;
            }
        }
        // Every audio frame is a sync sample, so audio-only streams may cut anywhere.
        let can_start = primary && (frame.keyframe || slot == AUDIO);
        let est = self.est();
        match &self.segment {
            None if !can_start => return Ok(()),
            None => {}
            Some(seg) if primary => {
                let elapsed = d - seg.start;
                let long_enough =
                    elapsed as f64 + self.frame_ticks / 2.0 >= self.segment_ticks as f64;
                if (can_start && long_enough) || elapsed >= MAX_SEGMENT_TARGETS * self.segment_ticks
                {
                    self.close_part(numbering, d, out);
                    self.end_segment(out);
                } else if seg
                    .part
                    .as_ref()
                    .is_some_and(|p| d + est - p.start > self.part_ticks)
                {
                    // Only after jitter or a gap: the frame does not fit the part being built.
                    self.close_part(numbering, d, out);
                }
            }
            Some(_) => {}
        }
        self.builder.push(track, frame)?;
        self.pending_ingest = Some(
            self.pending_ingest
                .map_or(frame.ingest, |i| i.min(frame.ingest)),
        );
        if self.segment.is_none() {
            self.start_segment(numbering, d, wall_ms, out);
        }
        let previous = self.last_dts[slot].replace(d);
        if !primary {
            return Ok(());
        }
        if let Some(delta) = previous
            .map(|p| d - p)
            .filter(|&x| x > 0 && x <= self.timescale)
        {
            self.frame_ticks = 0.75 * self.frame_ticks + 0.25 * delta as f64;
        }
        let est = self.est();
        let first_ingest = self.pending_ingest.unwrap_or(frame.ingest);
        let Some(seg) = self.segment.as_mut() else {
            return Ok(());
        };
        let part = seg.part.get_or_insert(OpenPart {
            start: d,
            last: d,
            frames: 0,
            first_ingest,
        });
        part.last = d;
        part.frames += 1;
        // Cut as soon as the part is full, that is when its end is within half a frame of the
        // target: waiting for the next frame would add a frame of latency.
        let slack = (self.frame_ticks / 2.0) as i64;
        if d + est - part.start >= self.part_ticks - slack.max(1) {
            self.close_part(numbering, d + est, out);
        }
        Ok(())
    }

    /// Cuts the part being built; `next` is the primary dts that follows it (known or estimated).
    fn close_part(&mut self, n: &mut Numbering, next: i64, out: &mut Vec<HlsUpdate>) {
        let est = self.est();
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        let Some(p) = seg.part.take() else {
            return;
        };
        let cap = if p.frames > 1 {
            p.start + self.part_ticks
        } else {
            (p.start + self.part_ticks).max(p.last + est)
        };
        let end = next.min(cap).max(p.last + 1);
        if let Some(track) = self.slots[self.primary] {
            // Cannot fail: `track` is one of the builder's tracks.
            let _ = self.builder.set_next_dts(track, end);
        }
        let fragment = self.builder.finish(self.sequence);
        self.sequence = self.sequence.wrapping_add(1);
        self.pending_ingest = None;
        let ms = ticks_to_ms(end - p.start, self.timescale).max(0) as u64;
        let duration = Duration::from_millis(ms);
        seg.duration += duration;
        out.push(HlsUpdate::Part {
            msn: seg.msn,
            index: seg.parts,
            seq: n.next_part_seq,
            duration,
            independent: fragment.starts_with_keyframe,
            header: fragment.header,
            payload: fragment.payload,
            first_ingest: p.first_ingest,
        });
        seg.parts += 1;
        n.next_part_seq += 1;
    }

    fn end_segment(&mut self, out: &mut Vec<HlsUpdate>) {
        if let Some(seg) = self.segment.take() {
            out.push(HlsUpdate::SegmentEnd {
                msn: seg.msn,
                duration: seg.duration,
            });
        }
    }

    fn start_segment(
        &mut self,
        n: &mut Numbering,
        dts: i64,
        wall_ms: u64,
        out: &mut Vec<HlsUpdate>,
    ) {
        let msn = n.next_msn;
        n.next_msn += 1;
        let discontinuity = std::mem::take(&mut n.discontinuity_pending);
        n.discontinuity_sequence += u64::from(discontinuity);
        n.had_segments = true;
        // Date times follow the media clock from an anchor, so they agree with the durations;
        // re-anchor when the publisher's clock drifts more than a second from the wall clock.
        let wall = wall_ms.min(1 << 53) as i64;
        let media_ms = ticks_to_ms(dts, self.timescale);
        let pdt = match self.pdt_anchor {
            Some((w, m)) if (w.saturating_add(media_ms - m) - wall).abs() <= 1000 => {
                w.saturating_add(media_ms - m)
            }
            _ => {
                self.pdt_anchor = Some((wall, media_ms));
                wall
            }
        };
        out.push(HlsUpdate::SegmentStart {
            msn,
            discontinuity,
            discontinuity_sequence: n.discontinuity_sequence,
            program_date_time_ms: pdt.max(0) as u64,
            init_id: self.init_id,
        });
        self.segment = Some(OpenSegment {
            msn,
            start: dts,
            duration: Duration::ZERO,
            parts: 0,
            part: None,
        });
    }

    /// Emits what is open: the part (its last frame lasts the estimate) and the segment.
    fn flush(&mut self, n: &mut Numbering, out: &mut Vec<HlsUpdate>) {
        let next = self
            .segment
            .as_ref()
            .and_then(|s| s.part.as_ref())
            .map(|p| p.last + self.est());
        if let Some(next) = next {
            self.close_part(n, next, out);
        }
        self.end_segment(out);
    }

    /// After a timestamp jump: flush, forget the timeline, and wait for a keyframe.
    fn restart(&mut self, n: &mut Numbering, out: &mut Vec<HlsUpdate>) -> Result<(), HlsError> {
        self.flush(n, out);
        // A fresh builder: the old one would refuse earlier timestamps.
        self.builder = FragmentBuilder::new(&self.tracks)?;
        self.last_dts = [None; 2];
        self.pdt_anchor = None;
        self.pending_ingest = None;
        n.discontinuity_pending = n.had_segments;
        Ok(())
    }
}
