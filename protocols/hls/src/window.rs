//! The window: the recent history of one stream, built from [`HlsUpdate`]s, and everything
//! the HTTP layer asks of it.

pub(crate) mod playlist;

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use zerocast_codecs::ByteRope;

use crate::config::PackagerConfig;
use crate::packager::Numbering;
use crate::request::PlaylistRequest;
use crate::update::{HlsUpdate, StreamInfo};

/// Result of [`Window::part`].
#[derive(Debug, Clone, PartialEq)]
pub enum PartLookup {
    /// The part's body: send these buffers in order (one vectored write).
    Found(Vec<Bytes>),
    /// The next part (the preload hint names it): hold the request and look again when
    /// [`Window::revision`] changes.
    NotYet,
    /// Unknown, out of the window, or never going to exist: 404.
    Gone,
}

/// Result of [`Window::readiness`] (blocking playlist reload, RFC 8216bis 6.2.5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Answer now.
    Ready,
    /// Hold the request; ask again when [`Window::revision`] changes.
    Wait,
    /// Answer 400 with this reason.
    BadRequest(String),
}

struct Part {
    seq: u64,
    duration: Duration,
    independent: bool,
    header: Bytes,
    payload: ByteRope,
}

impl Part {
    fn append_body(&self, out: &mut Vec<Bytes>) {
        out.push(self.header.clone());
        out.extend(self.payload.parts().iter().cloned());
    }
}

struct Segment {
    msn: u64,
    discontinuity: bool,
    discontinuity_sequence: u64,
    program_date_time_ms: u64,
    init_id: u64,
    parts: Vec<Part>,
    /// `Some` once complete.
    duration: Option<Duration>,
    bytes: u64,
}

impl Segment {
    /// The complete duration, or what the parts so far add up to.
    fn duration_so_far(&self) -> Duration {
        self.duration
            .unwrap_or_else(|| self.parts.iter().map(|p| p.duration).sum())
    }
}

/// The last `window_segments` complete segments of a stream, the one in progress with its
/// parts, and the init segments they use. One per stream on every shard that serves it.
///
/// Apply every [`HlsUpdate`] of the stream's packager, in order. Media is shared by refcount
/// with the updates: a segment's body is its parts' buffers, so segments cost no memory of
/// their own. After a republish, keep applying the new packager's updates to the same window
/// (give it to [`Packager::new`](crate::Packager::new)) so players see one continuous playlist.
pub struct Window {
    cfg: PackagerConfig,
    inits: Vec<(u64, Bytes)>,
    info: Option<StreamInfo>,
    segments: VecDeque<Segment>,
    target_secs: u64,
    peak_bandwidth: Option<u64>,
    ended: bool,
    revision: u64,
    /// Where a new packager continues after a republish.
    pub(crate) numbering: Numbering,
}

impl Window {
    /// An empty window; give it the packager's configuration.
    pub fn new(cfg: PackagerConfig) -> Self {
        Window {
            target_secs: cfg.min_target_secs(),
            cfg,
            inits: Vec::new(),
            info: None,
            segments: VecDeque::new(),
            peak_bandwidth: None,
            ended: false,
            revision: 0,
            numbering: Numbering::default(),
        }
    }

    /// Applies one update of the stream's packager. Updates that do not fit (a part of a
    /// segment that is not in progress, a part index out of order, a part sequence number not
    /// above the previous part's) are ignored.
    pub fn apply(&mut self, update: &HlsUpdate) {
        self.revision += 1;
        match update {
            HlsUpdate::Init { id, data, info } => {
                self.inits.retain(|(i, _)| i != id);
                self.inits.push((*id, data.clone()));
                self.info = Some(info.clone());
                let n = &mut self.numbering;
                n.next_init_id = n.next_init_id.max(id.saturating_add(1));
            }
            HlsUpdate::SegmentStart {
                msn,
                discontinuity,
                discontinuity_sequence,
                program_date_time_ms,
                init_id,
            } => {
                self.close_open();
                // Numbering went back: a packager that was not resumed from this window.
                if self.segments.back().is_some_and(|s| s.msn >= *msn) {
                    self.segments.clear();
                }
                self.segments.push_back(Segment {
                    msn: *msn,
                    discontinuity: *discontinuity,
                    discontinuity_sequence: *discontinuity_sequence,
                    program_date_time_ms: *program_date_time_ms,
                    init_id: *init_id,
                    parts: Vec::new(),
                    duration: None,
                    bytes: 0,
                });
                self.ended = false;
                self.numbering.next_msn = msn.saturating_add(1);
                self.numbering.discontinuity_sequence = *discontinuity_sequence;
                self.numbering.had_segments = true;
                self.trim();
            }
            HlsUpdate::Part {
                msn,
                index,
                seq,
                duration,
                independent,
                header,
                payload,
                ..
            } => {
                let after_last = self.last_part_seq().is_none_or(|last| *seq > last);
                let open = self.segments.back_mut().filter(|s| {
                    s.msn == *msn && s.duration.is_none() && s.parts.len() == *index as usize
                });
                if let Some(s) = open.filter(|_| after_last) {
                    s.bytes += (header.len() + payload.len()) as u64;
                    s.parts.push(Part {
                        seq: *seq,
                        duration: *duration,
                        independent: *independent,
                        header: header.clone(),
                        payload: payload.clone(),
                    });
                    self.numbering.next_part_seq = seq.saturating_add(1);
                }
            }
            HlsUpdate::SegmentEnd { msn, duration } => {
                if self
                    .segments
                    .back()
                    .is_some_and(|s| s.msn == *msn && s.duration.is_none())
                {
                    self.complete_last(*duration);
                }
                self.trim();
            }
            HlsUpdate::Ended => {
                self.close_open();
                self.ended = true;
            }
        }
    }

    /// Marks the last segment complete and updates the target duration and peak bitrate.
    fn complete_last(&mut self, duration: Duration) {
        let Some(s) = self.segments.back_mut() else {
            return;
        };
        s.duration = Some(duration);
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        // RFC 8216bis 4.4.3.1: EXTINF rounded to the nearest second must not exceed the
        // target. Rounding, not ceil: a 29.97 fps two-second GOP lasts 2.002 s, and ceil would
        // raise the target to 3 after the first segment.
        self.target_secs = self.target_secs.max(ms.saturating_add(500) / 1000);
        if let Some(bps) = s.bytes.saturating_mul(8000).checked_div(ms) {
            self.peak_bandwidth = Some(self.peak_bandwidth.map_or(bps, |p| p.max(bps)));
        }
    }

    /// Completes a segment left open by a packager that stopped without `SegmentEnd`.
    fn close_open(&mut self) {
        match self.segments.back() {
            Some(s) if s.duration.is_none() && s.parts.is_empty() => {
                self.segments.pop_back();
            }
            Some(s) if s.duration.is_none() => self.complete_last(s.duration_so_far()),
            _ => {}
        }
    }

    /// Drops segments beyond the window and init segments nothing uses any more.
    fn trim(&mut self) {
        let complete = self
            .segments
            .iter()
            .filter(|s| s.duration.is_some())
            .count();
        for _ in self.cfg.window()..complete {
            self.segments.pop_front();
        }
        let newest = self.inits.last().map(|(id, _)| *id);
        let segments = &self.segments;
        self.inits
            .retain(|(id, _)| Some(*id) == newest || segments.iter().any(|s| s.init_id == *id));
    }

    /// Increases with every applied update: wake requests held on [`Readiness::Wait`] or
    /// [`PartLookup::NotYet`] when it changes.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// True once the stream ended (until a republish applies a new segment).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Media sequence number of the newest segment, complete or in progress.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// EXT-X-TARGETDURATION: whole seconds, never decreasing. The spec suggests holding a
    /// blocked request at most three times this long.
    pub fn target_duration(&self) -> Duration {
        Duration::from_secs(self.target_secs)
    }

    /// Codecs, size and frame rate of the current init segment.
    pub fn stream_info(&self) -> Option<&StreamInfo> {
        self.info.as_ref()
    }

    /// The init segment `init-<id>.mp4`, while a segment in the window (or the stream's
    /// current tracks) uses it.
    pub fn init(&self, id: u64) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, d)| d.clone())
    }

    fn find(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        let index = usize::try_from(msn.checked_sub(first)?).ok()?;
        self.segments.get(index).filter(|s| s.msn == msn)
    }

    /// Sequence number of the newest part in the window.
    fn last_part_seq(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.parts.last())
            .map(|p| p.seq)
    }

    /// Sequence number of the next part, the one the preload hint names.
    fn next_part_seq(&self) -> u64 {
        self.numbering.next_part_seq
    }

    /// The part `part-<seq>.m4s`. [`PartLookup::NotYet`] for exactly the next part (the one
    /// the preload hint names, whatever segment it will fall in) until the stream ends;
    /// [`PartLookup::Gone`] for any other part not in the window.
    pub fn part(&self, seq: u64) -> PartLookup {
        // Part sequence numbers increase through the window: the part is in the newest
        // segment whose first part is not after it, or nowhere.
        let holder = self
            .segments
            .iter()
            .rev()
            .find(|s| s.parts.first().is_some_and(|p| p.seq <= seq));
        let found = holder.and_then(|s| {
            let i = s.parts.binary_search_by_key(&seq, |p| p.seq).ok()?;
            s.parts.get(i)
        });
        if let Some(p) = found {
            let mut body = Vec::with_capacity(1 + p.payload.parts().len());
            p.append_body(&mut body);
            PartLookup::Found(body)
        } else if !self.ended && seq == self.next_part_seq() {
            PartLookup::NotYet
        } else {
            PartLookup::Gone
        }
    }

    /// The complete segment `seg-<msn>.m4s`: its parts' buffers, in order.
    pub fn segment(&self, msn: u64) -> Option<Vec<Bytes>> {
        let s = self.find(msn).filter(|s| s.duration.is_some())?;
        let mut body = Vec::new();
        s.parts.iter().for_each(|p| p.append_body(&mut body));
        Some(body)
    }

    /// Whether a playlist request can be answered now (RFC 8216bis 6.2.5.2): `_HLS_msn=M`
    /// waits until segment M is complete, `_HLS_msn=M&_HLS_part=N` until part N of segment M
    /// (or any later part) exists. Requests more than two segments, or more than the Advance
    /// Part Limit of parts, ahead are refused. Once ended, everything is ready.
    pub fn readiness(&self, req: &PlaylistRequest) -> Readiness {
        let Some(msn) = req.msn else {
            return Readiness::Ready;
        };
        if self.ended {
            return Readiness::Ready;
        }
        let first = self
            .segments
            .front()
            .map_or(self.numbering.next_msn, |s| s.msn);
        let last_complete = self.segments.iter().rev().find(|s| s.duration.is_some());
        let after_complete = last_complete.map_or(first, |s| s.msn.saturating_add(1));
        if msn > after_complete.saturating_add(1) {
            return Readiness::BadRequest(format!(
                "_HLS_msn={msn} is more than two segments past the playlist's last segment"
            ));
        }
        if msn < first {
            return Readiness::Ready;
        }
        let Some(part) = req.part else {
            return match last_complete {
                Some(s) if s.msn >= msn => Readiness::Ready,
                _ => Readiness::Wait,
            };
        };
        // RFC 8216bis 6.2.5.2: three parts, or three seconds' worth of parts when shorter.
        let advance = 3000u64.div_ceil(self.cfg.part_ms()).max(3);
        let known = match self.segments.back() {
            Some(s) if s.msn == msn => s.parts.len() as u64,
            Some(s) if s.msn > msn => u64::MAX,
            _ => 0,
        };
        if u64::from(part) >= known.saturating_add(advance) {
            return Readiness::BadRequest(format!(
                "_HLS_part={part} is more than {advance} parts past the playlist's last part"
            ));
        }
        let reached = self.segments.iter().rev().any(|s| {
            (s.msn > msn && !s.parts.is_empty()) || (s.msn == msn && s.parts.len() > part as usize)
        });
        if reached {
            Readiness::Ready
        } else {
            Readiness::Wait
        }
    }
}
