//! The shard side of a recording: media items in, file commands out, never blocking.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{debug, warn};
use zerocast_codecs::{Frame, MediaKind, Track};

use super::mux::{recordable, rescale_ms, Mux};
use super::{Command, EndReason, Recorder, RecordingState, Refused};
use crate::config::RecordingFormat;
use crate::stream::MediaItem;

/// A fragment is cut at a video keyframe once it is `fragment_duration` long; without a
/// keyframe in sight it is cut anyway at this many times that.
const FORCED_CUT_FACTOR: i64 = 3;

/// Records one stream: fed every item the origin applies, it writes one file after another
/// (a new one when the tracks change) until [`finish`](Self::finish) or an error.
///
/// Lives on the stream's shard; pushing an item costs a few refcounts and, once per
/// fragment, one non-blocking channel send.
pub struct RecordingSink {
    recorder: Recorder,
    stream: Arc<str>,
    format: RecordingFormat,
    fragment_ms: i64,
    /// A fragment this large is cut without waiting for a keyframe, so that one fragment
    /// always fits the recorder's budget.
    max_fragment_bytes: usize,
    video: Option<Track>,
    audio: Option<Track>,
    file: Option<OpenFile>,
    /// The current tracks cannot be recorded in this format; wait for a track change.
    unrecordable: bool,
    /// Stopped for good (an error, or finished).
    stopped: bool,
}

struct OpenFile {
    id: u64,
    state: Arc<RecordingState>,
    mux: Mux,
    tracks: Vec<Track>,
    /// Dts of the file's first frame, milliseconds in the publisher's clock.
    base_ms: i64,
    /// Rebased time of the first frame of the fragment being built.
    fragment_start_ms: Option<i64>,
    /// Per track: last rebased dts, in the track's timescale.
    last_dts: Vec<Option<i64>>,
    has_video: bool,
}

impl OpenFile {
    fn index_of(&self, kind: MediaKind) -> Option<usize> {
        self.tracks.iter().position(|t| t.kind == kind)
    }

    /// `base_ms` in `timescale` ticks.
    fn base_in(&self, timescale: u32) -> i64 {
        if timescale == 1000 {
            self.base_ms
        } else {
            (i128::from(self.base_ms) * i128::from(timescale) / 1000) as i64
        }
    }
}

impl RecordingSink {
    pub(super) fn new(recorder: Recorder, stream: Arc<str>) -> RecordingSink {
        let cfg = recorder.cfg();
        RecordingSink {
            format: cfg.format,
            fragment_ms: cfg.fragment_duration.as_millis().max(1) as i64,
            max_fragment_bytes: (cfg.max_queued_bytes / 2).max(1),
            recorder,
            stream,
            video: None,
            audio: None,
            file: None,
            unrecordable: false,
            stopped: false,
        }
    }

    /// True while a file is open.
    pub fn is_recording(&self) -> bool {
        self.file.is_some()
    }

    /// True once the recording stopped for good (an error, or [`finish`](Self::finish)).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Takes one item the origin applied.
    pub fn push(&mut self, item: &MediaItem) {
        if self.stopped {
            return;
        }
        if self
            .file
            .as_ref()
            .is_some_and(|f| f.state.failed.load(Ordering::Acquire))
        {
            // The thread failed the file and said why; nothing more to send.
            self.file = None;
            self.stopped = true;
            return;
        }
        match item {
            MediaItem::Track(t) => self.on_track(t),
            MediaItem::Frame(f) => self.on_frame(f, true),
            MediaItem::Passthrough {
                kind,
                timestamp,
                body,
                ..
            } => {
                if let Some(file) = &mut self.file {
                    let ms = i64::from(*timestamp) - file.base_ms;
                    if ms >= 0 && file.index_of(*kind).is_some() {
                        file.mux.push_passthrough(*kind, ms as u32, body);
                    }
                }
            }
            MediaItem::Metadata { .. } => {}
        }
    }

    /// Ends the recording: the last fragment is written and the file finalised.
    pub fn finish(&mut self) {
        self.close(EndReason::StreamEnded);
        self.stopped = true;
    }

    fn on_track(&mut self, t: &Track) {
        let slot = match t.kind {
            MediaKind::Video => &mut self.video,
            MediaKind::Audio => &mut self.audio,
            MediaKind::Data => return,
        };
        if slot.as_ref() == Some(t) {
            // The same sequence header again (encoders repeat them).
            return;
        }
        *slot = Some(t.clone());
        self.unrecordable = false;
        let changed = self
            .file
            .as_ref()
            .is_some_and(|f| f.tracks != self.recordable_tracks());
        if changed {
            self.close(EndReason::TracksChanged);
        }
    }

    fn recordable_tracks(&self) -> Vec<Track> {
        self.video
            .iter()
            .chain(self.audio.iter())
            .filter(|t| recordable(self.format, t))
            .cloned()
            .collect()
    }

    fn on_frame(&mut self, f: &Frame, may_restart: bool) {
        if f.kind == MediaKind::Data {
            return;
        }
        if self.file.is_none() && !self.open(f) {
            return;
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let Some(index) = file.index_of(f.kind) else {
            return;
        };
        let timescale = file.tracks[index].timescale;
        let base = file.base_in(timescale);
        let (dts, pts) = (f.dts - base, f.pts - base);
        if file.last_dts[index].is_some_and(|last| dts < last) {
            // A keyframe from the past: the encoder restarted its clock. Anything else from
            // the past (interleaving jitter) is dropped.
            if f.kind == MediaKind::Video && f.keyframe && may_restart {
                debug!(stream = %self.stream, "recording: timestamps went back, new file");
                self.close(EndReason::TimestampsWentBack);
                self.on_frame(f, false);
            }
            return;
        }
        if dts < 0 {
            // Interleaved before the first keyframe: not part of this file.
            return;
        }
        let ms = rescale_ms(dts, timescale);
        if let Some(start) = file.fragment_start_ms {
            let elapsed = ms - start;
            let boundary = !file.has_video || (f.kind == MediaKind::Video && f.keyframe);
            if (boundary && elapsed >= self.fragment_ms)
                || elapsed >= FORCED_CUT_FACTOR * self.fragment_ms
                || file.mux.pending_bytes() >= self.max_fragment_bytes
            {
                let next = (f.kind == MediaKind::Video).then_some((index, dts));
                if !self.cut(next) {
                    return;
                }
            }
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let rebased = Frame {
            dts,
            pts,
            ..f.clone()
        };
        if let Err(e) = file.mux.push(index, &rebased) {
            debug!(stream = %self.stream, "recording: frame skipped: {e}");
            return;
        }
        file.last_dts[index] = Some(dts);
        file.fragment_start_ms.get_or_insert(ms);
    }

    /// Opens a file if `f` may start one (a video keyframe, or any audio frame of a stream
    /// without recordable video). False when no file is open afterwards.
    fn open(&mut self, f: &Frame) -> bool {
        if self.unrecordable {
            return false;
        }
        let tracks = self.recordable_tracks();
        let has_video = tracks.iter().any(|t| t.kind == MediaKind::Video);
        let starts = if has_video {
            f.kind == MediaKind::Video && f.keyframe
        } else {
            f.kind == MediaKind::Audio
        };
        let Some(track) = tracks.iter().find(|t| t.kind == f.kind) else {
            if tracks.is_empty() && (self.video.is_some() || self.audio.is_some()) {
                self.unrecordable = true;
                warn!(
                    stream = %self.stream,
                    format = ?self.format,
                    "not recording: no track of this stream fits recording.format"
                );
            }
            return false;
        };
        if !starts {
            return false;
        }
        for t in self.video.iter().chain(self.audio.iter()) {
            if !recordable(self.format, t) {
                warn!(
                    stream = %self.stream,
                    codec = t.codec.name(),
                    format = ?self.format,
                    "recording without this track: recording.format cannot hold its codec"
                );
            }
        }
        let (mux, header) = match Mux::new(self.format, &tracks) {
            Ok(m) => m,
            Err(e) => {
                self.unrecordable = true;
                warn!(stream = %self.stream, "not recording these tracks: {e}");
                return false;
            }
        };
        let base_ms = rescale_ms(f.dts, track.timescale);
        let id = self.recorder.next_id();
        let state = Arc::new(RecordingState::default());
        let bytes = header.parts.iter().map(|b| b.len()).sum();
        let cmd = Command::Open {
            id,
            stream: self.stream.clone(),
            format: self.format,
            started_at: SystemTime::now(),
            header: header.parts,
            bytes,
            duration_fields: header.duration_fields,
            state: state.clone(),
        };
        if let Err(r) = self.recorder.submit(cmd, bytes) {
            // No file was opened: nothing to close.
            self.stop_refused(r);
            return false;
        }
        self.file = Some(OpenFile {
            id,
            state,
            mux,
            last_dts: vec![None; tracks.len()],
            tracks,
            base_ms,
            fragment_start_ms: None,
            has_video,
        });
        true
    }

    /// Hands the waiting fragment to the thread. False when that stopped the recording.
    fn cut(&mut self, next: Option<(usize, i64)>) -> bool {
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        file.fragment_start_ms = None;
        let Some(chunk) = file.mux.cut(next) else {
            return true;
        };
        let cmd = Command::Write {
            id: file.id,
            bytes: chunk.bytes,
            end_ms: chunk.end_ms,
            parts: chunk.parts,
        };
        match self.recorder.submit(cmd, chunk.bytes) {
            Ok(()) => true,
            Err(r) => {
                self.stop_refused(r);
                false
            }
        }
    }

    /// Closes the open file (writing its last fragment), if any, for `reason`.
    fn close(&mut self, reason: EndReason) {
        if self.file.is_none() || !self.cut(None) {
            return;
        }
        if let Some(file) = self.file.take() {
            send_close(&self.recorder, &file, reason);
        }
    }

    /// The recorder refused a command: the recording stops for good, the stream goes on.
    fn stop_refused(&mut self, refused: Refused) {
        self.stopped = true;
        let reason = match refused {
            Refused::Budget { queued } => EndReason::DiskTooSlow {
                queued,
                limit: self.recorder.cfg().max_queued_bytes,
            },
            Refused::QueueFull => EndReason::QueueFull,
            Refused::Closed => {
                // The server is stopping; the thread closed the file already.
                self.file = None;
                return;
            }
        };
        warn!(stream = %self.stream, "recording stopped, the live stream goes on: {reason}");
        if let Some(file) = self.file.take() {
            send_close(&self.recorder, &file, reason);
        }
    }
}

/// Queues `Close`; when the queue is full, leaves the file to the thread, which closes it
/// once it has written everything queued before.
fn send_close(recorder: &Recorder, file: &OpenFile, reason: EndReason) {
    let cmd = Command::Close {
        id: file.id,
        reason: reason.clone(),
    };
    if let Err(Refused::QueueFull) = recorder.submit(cmd, 0) {
        if let Ok(mut slot) = file.state.abandoned.lock() {
            *slot = Some(reason);
        }
    }
}

impl Drop for RecordingSink {
    fn drop(&mut self) {
        if !self.stopped {
            self.finish();
        }
    }
}
