//! The media state of one live stream on one shard: tracks, metadata, GOP cache, local viewers.
//!
//! The same type serves the stream's origin (the publisher's shard) and its mirrors (other
//! shards with viewers of it). Each applies the same [`MediaItem`]s in the same order; the
//! origin also forwards them to the mirrors through the channel mesh.
//!
//! Viewers come in two formats ([`ViewerFormat`]). Each item is encoded once per shard as an
//! RTMP message shared by every RTMP viewer. While a stream has MPEG-TS viewers (SRT players),
//! each frame is also muxed once per shard into TS packets (a [`Muxer`] writes packet headers
//! beside the frame's own payload slices) shared by every TS viewer; a stream without TS
//! viewers muxes nothing. The TS output keeps its own GOP cache, made by the same muxer, so a
//! TS viewer that joins starts on a keyframe with PAT/PMT and its continuity counters run on
//! into the live packets.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use zerocast_codecs::ts::{packet::PAT_PID, Muxer, PACKET_SIZE, SYNC_BYTE};
use zerocast_codecs::{flv, ByteRope, CodecId, Frame, MediaKind, Track};
use zerocast_rtmp::{encode_message, CSID_AUDIO, CSID_DATA, CSID_VIDEO};

use crate::outbox::{Outbox, WireMessage};
use crate::rt::LocalEvent;

/// RTMP message type ids used for media (RTMP spec 7.1).
const MSG_AUDIO: u8 = 8;
const MSG_VIDEO: u8 = 9;
const MSG_DATA_AMF0: u8 = 18;

/// The message stream id every player gets from its first `createStream`; messages for it are
/// encoded once per shard. Players on another id get their own encoding (rare).
pub const SHARED_PLAY_STREAM_ID: u32 = 1;

/// One unit of a stream's life, as it travels from the origin to the mirrors. `Send`: only
/// `Bytes` refcounts inside.
#[derive(Debug, Clone)]
pub enum MediaItem {
    /// A new or changed track (sequence header).
    Track(Track),
    /// An AMF0 `onMetaData` body.
    Metadata {
        /// Message timestamp in milliseconds.
        timestamp: u32,
        /// The AMF0 body, starting with the string `onMetaData`.
        body: ByteRope,
    },
    /// A media frame of a known track.
    Frame(Frame),
    /// A tag of a codec zerocast does not model, relayed as it came.
    Passthrough {
        /// Audio or video.
        kind: MediaKind,
        /// Message timestamp in milliseconds.
        timestamp: u32,
        /// The FLV tag body.
        body: ByteRope,
        /// Keyframe flag of the tag.
        keyframe: bool,
    },
}

/// What a viewer receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ViewerFormat {
    /// RTMP messages, chunked for the viewer's message stream id: sequence headers, metadata
    /// and every frame (RTMP players).
    #[default]
    Rtmp,
    /// MPEG-TS packets (SRT players): H.264/H.265 video and AAC/Opus audio, with PAT/PMT and
    /// parameter sets in band. Metadata, and frames of codecs TS cannot carry here, are not
    /// sent.
    Ts,
}

/// A local viewer of a stream.
#[derive(Debug)]
pub struct Viewer {
    /// The viewer connection's send queue.
    pub outbox: Rc<Outbox>,
    /// The RTMP message stream id it plays on (RTMP viewers only).
    pub stream_id: u32,
    /// Set when the stream ends: the connection then says so and closes.
    pub ended: LocalEvent,
    /// What it receives.
    pub format: ViewerFormat,
}

/// Counters of one stream on one shard.
#[derive(Debug, Default, Clone, Copy)]
pub struct StreamCounters {
    /// Frames applied.
    pub frames: u64,
    /// Payload bytes applied.
    pub bytes: u64,
}

/// Media state of a stream on one shard.
pub struct StreamMedia {
    chunk_size: u32,
    gop_limit: usize,
    audio_coalesce: Duration,
    /// Ingest time of the oldest audio frame queued to viewers without waking them.
    audio_held_since: Option<Instant>,
    video: Option<Track>,
    audio: Option<Track>,
    video_header: Option<Rc<WireMessage>>,
    audio_header: Option<Rc<WireMessage>>,
    metadata: Option<(u32, ByteRope, Rc<WireMessage>)>,
    /// Items since the last video keyframe, for new viewers and new mirrors.
    gop: VecDeque<(MediaItem, Rc<WireMessage>)>,
    gop_bytes: usize,
    /// False after the cache overflowed, until the next keyframe.
    gop_valid: bool,
    /// Local RTMP viewers.
    viewers: Vec<Rc<Viewer>>,
    /// The MPEG-TS output, while there are local TS viewers.
    ts: Option<TsOutput>,
    /// Bytes sent to, and frames dropped for, viewers that have left.
    departed: (u64, u64),
    /// Counters.
    pub counters: StreamCounters,
}

impl StreamMedia {
    /// Empty state; messages are chunked with `chunk_size`, the GOP cache holds at most
    /// `gop_limit` bytes.
    ///
    /// Audio frames of a stream with video are queued without waking players for up to
    /// `audio_coalesce`, so they leave together with the next video frame in one write.
    pub fn new(chunk_size: u32, gop_limit: usize, audio_coalesce: Duration) -> Self {
        StreamMedia {
            chunk_size,
            gop_limit,
            audio_coalesce,
            audio_held_since: None,
            video: None,
            audio: None,
            video_header: None,
            audio_header: None,
            metadata: None,
            gop: VecDeque::new(),
            gop_bytes: 0,
            gop_valid: false,
            viewers: Vec::new(),
            ts: None,
            departed: (0, 0),
            counters: StreamCounters::default(),
        }
    }

    /// True when the stream has a video track.
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// The current tracks.
    pub fn tracks(&self) -> impl Iterator<Item = &Track> {
        self.video.iter().chain(self.audio.iter())
    }

    /// Number of local viewers (RTMP and MPEG-TS).
    pub fn viewer_count(&self) -> usize {
        self.viewers.len() + self.ts.as_ref().map_or(0, TsOutput::viewer_count)
    }

    fn wire(&self, msg_type: u8, csid: u32, timestamp: u32, body: &ByteRope) -> ByteRope {
        let mut out = ByteRope::with_capacity(body.parts().len() * 2 + 2);
        encode_message(
            csid,
            msg_type,
            SHARED_PLAY_STREAM_ID,
            timestamp,
            body,
            self.chunk_size,
            &mut out,
        );
        out
    }

    fn body_of(&self, item: &MediaItem) -> Option<(u8, u32, u32, ByteRope, MediaKind, bool)> {
        match item {
            MediaItem::Track(t) => {
                let (msg, csid, hdr) = match t.kind {
                    MediaKind::Video => (MSG_VIDEO, CSID_VIDEO, flv::video_sequence_header(t)),
                    MediaKind::Audio => (MSG_AUDIO, CSID_AUDIO, flv::audio_sequence_header(t)),
                    MediaKind::Data => return None,
                };
                Some((msg, csid, 0, hdr.into(), t.kind, false))
            }
            MediaItem::Metadata { timestamp, body } => Some((
                MSG_DATA_AMF0,
                CSID_DATA,
                *timestamp,
                body.clone(),
                MediaKind::Data,
                false,
            )),
            MediaItem::Frame(f) => {
                let mut body = ByteRope::new();
                match f.kind {
                    MediaKind::Video => flv::video_body(self.video.as_ref()?, f, &mut body),
                    MediaKind::Audio => flv::audio_body(self.audio.as_ref()?, f, &mut body),
                    MediaKind::Data => return None,
                }
                let (msg, csid) = if f.kind == MediaKind::Video {
                    (MSG_VIDEO, CSID_VIDEO)
                } else {
                    (MSG_AUDIO, CSID_AUDIO)
                };
                Some((msg, csid, f.dts as u32, body, f.kind, f.keyframe))
            }
            MediaItem::Passthrough {
                kind,
                timestamp,
                body,
                keyframe,
            } => {
                let (msg, csid) = if *kind == MediaKind::Video {
                    (MSG_VIDEO, CSID_VIDEO)
                } else {
                    (MSG_AUDIO, CSID_AUDIO)
                };
                Some((msg, csid, *timestamp, body.clone(), *kind, *keyframe))
            }
        }
    }

    fn ingest_of(item: &MediaItem) -> Option<Instant> {
        match item {
            MediaItem::Frame(f) => Some(f.ingest),
            _ => None,
        }
    }

    /// Applies one item: updates the state, encodes it once and queues it for every local
    /// viewer. Returns false when the item could not be used (a frame before its track).
    pub fn apply(&mut self, item: &MediaItem) -> bool {
        let Some((msg_type, csid, ts, body, kind, keyframe)) = self.body_of(item) else {
            return false;
        };
        if body.is_empty() {
            // A codec without a sequence header (legacy FLV codecs, MP3): remember the track,
            // send nothing.
            if let MediaItem::Track(t) = item {
                match t.kind {
                    MediaKind::Video => (self.video, self.video_header) = (Some(t.clone()), None),
                    _ => (self.audio, self.audio_header) = (Some(t.clone()), None),
                }
                self.update_ts_tracks();
                return true;
            }
            return false;
        }
        let wire = self.wire(msg_type, csid, ts, &body);
        let msg = Rc::new(WireMessage {
            wire,
            kind,
            keyframe,
            ingest: Self::ingest_of(item),
            queued: Instant::now(),
        });
        match item {
            MediaItem::Track(t) => {
                match t.kind {
                    MediaKind::Video => {
                        self.video = Some(t.clone());
                        self.video_header = Some(msg.clone());
                    }
                    _ => {
                        self.audio = Some(t.clone());
                        self.audio_header = Some(msg.clone());
                    }
                }
                let e = Encoded::new(&msg, &body, msg_type, csid, ts);
                for v in &self.viewers {
                    push_for(v, &e, Push::Header, self.chunk_size);
                }
                self.update_ts_tracks();
                return true;
            }
            MediaItem::Metadata { timestamp, body } => {
                self.metadata = Some((*timestamp, body.clone(), msg.clone()));
                let e = Encoded::new(&msg, body, msg_type, csid, ts);
                for v in &self.viewers {
                    push_for(v, &e, Push::Header, self.chunk_size);
                }
                return true;
            }
            _ => {}
        }
        self.counters.frames += 1;
        self.counters.bytes += body.len() as u64;
        let has_video = self.has_video();
        if kind == MediaKind::Video && keyframe {
            self.gop.clear();
            self.gop_bytes = 0;
            self.gop_valid = true;
        }
        if self.gop_valid && has_video {
            self.gop_bytes += msg.wire.len();
            if self.gop_bytes > self.gop_limit {
                self.gop.clear();
                self.gop_bytes = 0;
                self.gop_valid = false;
            } else {
                self.gop.push_back((item.clone(), msg.clone()));
            }
        }
        let wake = self.should_wake(kind, has_video, msg.ingest);
        let e = Encoded::new(&msg, &body, msg_type, csid, ts);
        let push = Push::Frame {
            has_video,
            replay: false,
            wake,
        };
        for v in &self.viewers {
            push_for(v, &e, push, self.chunk_size);
        }
        if let (Some(out), MediaItem::Frame(f)) = (self.ts.as_mut(), item) {
            out.send(f, wake, self.gop_limit);
        }
        true
    }

    /// Rebuilds the TS muxer, if there is one, for the current tracks.
    fn update_ts_tracks(&mut self) {
        if self.ts.is_some() {
            let tracks = ts_tracks(self.video.as_ref(), self.audio.as_ref());
            if let Some(out) = self.ts.as_mut() {
                out.set_tracks(tracks);
            }
        }
    }

    /// Whether this frame wakes the players' writers now. Audio of a stream with video waits
    /// (at most `audio_coalesce`) for the next video frame, so both leave in one write.
    fn should_wake(&mut self, kind: MediaKind, has_video: bool, at: Option<Instant>) -> bool {
        if kind != MediaKind::Audio || !has_video || self.audio_coalesce.is_zero() {
            self.audio_held_since = None;
            return true;
        }
        let at = at.unwrap_or_else(Instant::now);
        let since = *self.audio_held_since.get_or_insert(at);
        if at.saturating_duration_since(since) >= self.audio_coalesce {
            self.audio_held_since = None;
            return true;
        }
        false
    }

    /// What a newcomer (a mirror shard) needs to catch up: tracks, metadata, the GOP cache.
    pub fn snapshot(&self) -> Vec<MediaItem> {
        let mut out: Vec<MediaItem> = self.tracks().cloned().map(MediaItem::Track).collect();
        if let Some((timestamp, body, _)) = &self.metadata {
            out.push(MediaItem::Metadata {
                timestamp: *timestamp,
                body: body.clone(),
            });
        }
        out.extend(self.gop.iter().map(|(item, _)| item.clone()));
        out
    }

    /// Adds a local viewer and queues headers, metadata and the GOP cache, so it starts on a
    /// keyframe at once.
    ///
    /// The first MPEG-TS viewer starts the TS output: the muxer is made for the current tracks
    /// and the GOP cache is muxed into the TS GOP cache. A TS viewer gets that cache (which
    /// starts on a keyframe with PAT/PMT); when there is none to start from, it waits for the
    /// next video keyframe.
    pub fn add_viewer(&mut self, viewer: Rc<Viewer>) {
        if viewer.format == ViewerFormat::Ts {
            self.add_ts_viewer(viewer);
            return;
        }
        if viewer.stream_id == SHARED_PLAY_STREAM_ID {
            if let Some((_, _, m)) = &self.metadata {
                viewer.outbox.push_header(m);
            }
            for h in self.video_header.iter().chain(self.audio_header.iter()) {
                viewer.outbox.push_header(h);
            }
            let has_video = self.has_video();
            for (_, m) in &self.gop {
                viewer.outbox.push_frame(m, has_video, true, true);
            }
        } else {
            // Rare: a player on another message stream id gets its own encoding.
            for item in self.snapshot() {
                if let Some((msg_type, csid, ts, body, kind, keyframe)) = self.body_of(&item) {
                    let header = !matches!(item, MediaItem::Frame(_));
                    let m = Rc::new(WireMessage {
                        wire: ByteRope::new(),
                        kind,
                        keyframe,
                        ingest: Self::ingest_of(&item),
                        queued: Instant::now(),
                    });
                    let push = if header {
                        Push::Header
                    } else {
                        Push::Frame {
                            has_video: self.has_video(),
                            replay: true,
                            wake: true,
                        }
                    };
                    let e = Encoded::new(&m, &body, msg_type, csid, ts);
                    push_for(&viewer, &e, push, self.chunk_size);
                }
            }
        }
        self.viewers.push(viewer);
    }

    fn add_ts_viewer(&mut self, viewer: Rc<Viewer>) {
        let out = self.ts.get_or_insert_with(|| {
            let mut out = TsOutput::new(ts_tracks(self.video.as_ref(), self.audio.as_ref()));
            // The GOP cache (empty unless it starts on a video keyframe) becomes the TS GOP
            // cache, muxed by the muxer the live frames go through next.
            for (item, _) in &self.gop {
                if let MediaItem::Frame(f) = item {
                    out.mux(f, self.gop_limit);
                }
            }
            out
        });
        if out.has_video && !out.gop_valid {
            out.waiting.push(viewer);
            return;
        }
        for m in &out.gop {
            viewer.outbox.push_frame(m, out.has_video, true, true);
        }
        out.viewers.push(viewer);
    }

    /// Removes a local viewer; the TS output stops with its last viewer.
    pub fn remove_viewer(&mut self, viewer: &Rc<Viewer>) {
        let removed = match viewer.format {
            ViewerFormat::Rtmp => remove(&mut self.viewers, viewer),
            ViewerFormat::Ts => match &mut self.ts {
                Some(out) => {
                    let removed =
                        remove(&mut out.viewers, viewer) || remove(&mut out.waiting, viewer);
                    if out.viewer_count() == 0 {
                        self.ts = None;
                    }
                    removed
                }
                None => false,
            },
        };
        if removed {
            self.departed.0 += viewer.outbox.sent_bytes();
            self.departed.1 += viewer.outbox.dropped_frames();
        }
    }

    /// Every local viewer, whatever its format.
    fn all_viewers(&self) -> impl Iterator<Item = &Rc<Viewer>> {
        let ts = self
            .ts
            .iter()
            .flat_map(|o| o.viewers.iter().chain(&o.waiting));
        self.viewers.iter().chain(ts)
    }

    /// RTMP and MPEG-TS viewers now, and bytes sent to / frames dropped for all viewers so far.
    pub fn viewer_counts(&self) -> crate::control::ViewerCounts {
        let (mut bytes_out, mut dropped_frames) = self.departed;
        for v in self.all_viewers() {
            bytes_out += v.outbox.sent_bytes();
            dropped_frames += v.outbox.dropped_frames();
        }
        crate::control::ViewerCounts {
            rtmp: self.viewers.len() as u64,
            srt: self.ts.as_ref().map_or(0, TsOutput::viewer_count) as u64,
            hls: 0,
            bytes_out,
            dropped_frames,
        }
    }

    /// The stream ended: tells every local viewer and forgets them.
    pub fn end(&mut self) {
        for v in self.all_viewers() {
            v.ended.set();
        }
        self.viewers.clear();
        self.ts = None;
        self.gop.clear();
    }
}

/// Removes `viewer` from `list`; true when it was there.
fn remove(list: &mut Vec<Rc<Viewer>>, viewer: &Rc<Viewer>) -> bool {
    let before = list.len();
    list.retain(|v| !Rc::ptr_eq(v, viewer));
    list.len() < before
}

/// The tracks the MPEG-TS output carries: H.264/H.265 video and AAC/Opus audio.
fn ts_tracks(video: Option<&Track>, audio: Option<&Track>) -> Vec<Track> {
    let video = video.filter(|t| matches!(t.codec, CodecId::H264 | CodecId::H265));
    let audio = audio.filter(|t| matches!(t.codec, CodecId::Aac | CodecId::Opus));
    video.into_iter().chain(audio).cloned().collect()
}

/// True when `wire` starts with a PAT packet (the muxer writes PAT and PMT together).
fn starts_with_pat(wire: &ByteRope) -> bool {
    wire.parts().first().is_some_and(|p| {
        p.len() >= 3
            && p[0] == SYNC_BYTE
            && (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == PAT_PID
    })
}

/// A stream's MPEG-TS output on one shard, while it has TS viewers: one muxer, each frame
/// muxed once and shared by every TS viewer.
struct TsOutput {
    /// TS viewers that get every message.
    viewers: Vec<Rc<Viewer>>,
    /// TS viewers that joined with no cache to start from: they start at the next video
    /// keyframe.
    waiting: Vec<Rc<Viewer>>,
    /// The tracks the muxer carries.
    tracks: Vec<Track>,
    /// `None` when no track can be carried (or the muxer refused their configuration).
    muxer: Option<Muxer>,
    /// Whether the muxer carries video: TS viewers then resume at video keyframes.
    has_video: bool,
    /// Messages since the last point a viewer can start from (a video keyframe; without video,
    /// a message that starts with PAT/PMT), at most the GOP cache limit.
    gop: VecDeque<Rc<WireMessage>>,
    gop_bytes: usize,
    /// False after the cache overflowed or the muxer was rebuilt, until the next start point.
    gop_valid: bool,
}

impl TsOutput {
    fn new(tracks: Vec<Track>) -> Self {
        let mut out = TsOutput {
            viewers: Vec::new(),
            waiting: Vec::new(),
            tracks: Vec::new(),
            muxer: None,
            has_video: false,
            gop: VecDeque::new(),
            gop_bytes: 0,
            gop_valid: false,
        };
        out.build(tracks);
        out
    }

    fn viewer_count(&self) -> usize {
        self.viewers.len() + self.waiting.len()
    }

    /// Makes a new muxer for `tracks` unless they are the ones it has: it continues the old
    /// one's continuity counters ([`Muxer::follow`]); the cache waits for the next start
    /// point.
    fn set_tracks(&mut self, tracks: Vec<Track>) {
        if tracks != self.tracks {
            self.build(tracks);
        }
    }

    fn build(&mut self, tracks: Vec<Track>) {
        self.muxer = if tracks.is_empty() {
            None
        } else {
            let next = match &self.muxer {
                Some(prev) => prev.follow(tracks.clone()),
                None => Muxer::new(tracks.clone()),
            };
            match next {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!("MPEG-TS viewers get no media: the tracks cannot be muxed: {e}");
                    None
                }
            }
        };
        self.has_video = self.muxer.is_some() && tracks.iter().any(|t| t.kind == MediaKind::Video);
        if !self.has_video {
            // No video keyframe will come to start from.
            self.viewers.append(&mut self.waiting);
        }
        self.tracks = tracks;
        self.gop.clear();
        self.gop_bytes = 0;
        self.gop_valid = false;
    }

    /// Muxes `frame` and keeps it in the cache; `None` when it cannot go out as TS.
    fn mux(&mut self, frame: &Frame, gop_limit: usize) -> Option<Rc<WireMessage>> {
        let muxer = self.muxer.as_mut()?;
        if !self.tracks.iter().any(|t| t.kind == frame.kind) {
            return None;
        }
        // About two slices per packet: its headers, and a piece of payload.
        let packets = frame.payload.len() / (PACKET_SIZE - 4) + 3;
        let mut wire = ByteRope::with_capacity(2 * packets);
        if let Err(e) = muxer.mux(frame, &mut wire) {
            debug!("frame not sent to MPEG-TS viewers: {e}");
            return None;
        }
        let msg = Rc::new(WireMessage {
            wire,
            kind: frame.kind,
            keyframe: frame.keyframe,
            ingest: Some(frame.ingest),
            queued: Instant::now(),
        });
        let start = if self.has_video {
            msg.kind == MediaKind::Video && msg.keyframe
        } else {
            starts_with_pat(&msg.wire)
        };
        if start {
            self.gop.clear();
            self.gop_bytes = 0;
            self.gop_valid = true;
        }
        if self.gop_valid {
            self.gop_bytes += msg.wire.len();
            if self.gop_bytes > gop_limit {
                self.gop.clear();
                self.gop_bytes = 0;
                self.gop_valid = false;
            } else {
                self.gop.push_back(msg.clone());
            }
        }
        Some(msg)
    }

    /// Muxes a live frame and queues it for every TS viewer (see [`Outbox::push_frame`]).
    fn send(&mut self, frame: &Frame, wake: bool, gop_limit: usize) {
        let Some(msg) = self.mux(frame, gop_limit) else {
            return;
        };
        if msg.kind == MediaKind::Video && msg.keyframe && !self.waiting.is_empty() {
            self.viewers.append(&mut self.waiting);
        }
        // Audio held for the next video frame only when TS viewers get that video frame.
        let wake = wake || !self.has_video;
        for v in &self.viewers {
            v.outbox.push_frame(&msg, self.has_video, false, wake);
        }
    }
}

/// A message encoded for [`SHARED_PLAY_STREAM_ID`], with what re-encoding it for another
/// message stream id needs.
struct Encoded<'a> {
    msg: &'a Rc<WireMessage>,
    body: &'a ByteRope,
    msg_type: u8,
    csid: u32,
    timestamp: u32,
}

impl<'a> Encoded<'a> {
    fn new(
        msg: &'a Rc<WireMessage>,
        body: &'a ByteRope,
        msg_type: u8,
        csid: u32,
        timestamp: u32,
    ) -> Self {
        Encoded {
            msg,
            body,
            msg_type,
            csid,
            timestamp,
        }
    }
}

/// How a message enters a viewer's outbox.
#[derive(Clone, Copy)]
enum Push {
    /// Sequence header or metadata: never dropped.
    Header,
    /// A frame: see [`Outbox::push_frame`].
    Frame {
        has_video: bool,
        replay: bool,
        wake: bool,
    },
}

/// Queues a message for `viewer`, re-encoding it when the viewer plays on another stream id.
fn push_for(viewer: &Viewer, e: &Encoded<'_>, push: Push, chunk_size: u32) {
    let own;
    let msg = if viewer.stream_id == SHARED_PLAY_STREAM_ID {
        e.msg
    } else {
        let mut wire = ByteRope::new();
        encode_message(
            e.csid,
            e.msg_type,
            viewer.stream_id,
            e.timestamp,
            e.body,
            chunk_size,
            &mut wire,
        );
        own = Rc::new(WireMessage {
            wire,
            kind: e.msg.kind,
            keyframe: e.msg.keyframe,
            ingest: e.msg.ingest,
            queued: e.msg.queued,
        });
        &own
    };
    match push {
        Push::Header => viewer.outbox.push_header(msg),
        Push::Frame {
            has_video,
            replay,
            wake,
        } => viewer.outbox.push_frame(msg, has_video, replay, wake),
    }
}

// Items cross shards through the channel mesh.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<MediaItem>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use zerocast_codecs::ts::{packet::PacketHeader, DemuxEvent, Demuxer};
    use zerocast_codecs::{FramePayload, TrackInfo};

    use crate::outbox::OutItem;

    const PMT_PID: u16 = 0x1000;
    const FIRST_PID: u16 = 0x100;

    /// The avcC libx264 writes for testsrc2 1280x720 at 30 fps (High, level 3.1).
    const X264_720P_AVCC: &str =
        "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f18319\
        6001000668ebe3cb22c0fdf8f800";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn h264_track() -> MediaItem {
        MediaItem::Track(Track {
            kind: MediaKind::Video,
            codec: CodecId::H264,
            config: Bytes::from(hex(X264_720P_AVCC)),
            timescale: 1000,
            info: TrackInfo::default(),
        })
    }

    fn aac_track() -> MediaItem {
        MediaItem::Track(Track {
            kind: MediaKind::Audio,
            codec: CodecId::Aac,
            config: Bytes::from_static(&[0x11, 0x90]),
            timescale: 1000,
            info: TrackInfo::default(),
        })
    }

    /// A video frame at `dts` ms whose NAL unit says when it was made (so frames differ), in
    /// two slices like a frame cut out of two receive buffers.
    fn video(dts: i64, key: bool) -> MediaItem {
        let mut nal = vec![if key { 0x65 } else { 0x41 }];
        nal.extend((0..700).map(|i| ((i + dts) % 200 + 1) as u8));
        let mut rope = ByteRope::new();
        rope.push(Bytes::copy_from_slice(&nal[..300]));
        rope.push(Bytes::copy_from_slice(&nal[300..]));
        MediaItem::Frame(Frame {
            kind: MediaKind::Video,
            dts,
            pts: dts + 33,
            keyframe: key,
            ingest: Instant::now(),
            payload: FramePayload::Nalus(vec![rope]),
        })
    }

    fn audio(dts: i64) -> MediaItem {
        let raw: Vec<u8> = (0..40).map(|i| (i + dts) as u8 | 1).collect();
        MediaItem::Frame(Frame {
            kind: MediaKind::Audio,
            dts,
            pts: dts,
            keyframe: true,
            ingest: Instant::now(),
            payload: FramePayload::Raw(ByteRope::from(raw)),
        })
    }

    fn viewer(format: ViewerFormat) -> Rc<Viewer> {
        Rc::new(Viewer {
            outbox: Outbox::new(8 << 20),
            stream_id: SHARED_PLAY_STREAM_ID,
            ended: LocalEvent::new(),
            format,
        })
    }

    /// What is queued for `v` now.
    fn drain(v: &Viewer) -> Vec<OutItem> {
        let (mut batch, mut slices) = (Vec::new(), Vec::new());
        let next = v.outbox.next_batch(&mut batch, &mut slices, usize::MAX);
        let _ = futures_lite::future::block_on(futures_lite::future::poll_once(next));
        batch
    }

    fn msg(item: &OutItem) -> &Rc<WireMessage> {
        match item {
            OutItem::Media(m) | OutItem::Replay(m) => m,
            OutItem::Control(_) => panic!("no control bytes expected"),
        }
    }

    /// PIDs of the packets of a TS message.
    fn pids(m: &WireMessage) -> Vec<u16> {
        let bytes = m.wire.to_contiguous();
        assert_eq!(bytes.len() % PACKET_SIZE, 0);
        bytes
            .chunks(PACKET_SIZE)
            .map(|p| {
                PacketHeader::decode([p[0], p[1], p[2], p[3]], 0)
                    .unwrap()
                    .pid
            })
            .collect()
    }

    type Flat = (MediaKind, i64, i64, bool, Vec<Vec<u8>>);

    fn flat(f: &Frame) -> Flat {
        let payload = match &f.payload {
            FramePayload::Nalus(n) => n.iter().map(|r| r.to_contiguous().to_vec()).collect(),
            FramePayload::Raw(r) => vec![r.to_contiguous().to_vec()],
        };
        (f.kind, f.dts, f.pts, f.keyframe, payload)
    }

    fn frames(items: &[MediaItem]) -> Vec<Flat> {
        items
            .iter()
            .filter_map(|i| match i {
                MediaItem::Frame(f) => Some(flat(f)),
                _ => None,
            })
            .collect()
    }

    /// Demuxes what a TS viewer got: its tracks' codecs and its frames.
    fn demux<'a>(items: impl IntoIterator<Item = &'a OutItem>) -> (Vec<CodecId>, Vec<Flat>) {
        let mut bytes = Vec::new();
        for i in items {
            for p in i.wire().parts() {
                bytes.extend_from_slice(p);
            }
        }
        let mut d = Demuxer::default();
        let mut events = Vec::new();
        d.push(Bytes::from(bytes), Instant::now(), &mut events)
            .unwrap();
        d.flush(&mut events).unwrap();
        let (mut codecs, mut out) = (Vec::new(), Vec::new());
        for e in events {
            match e {
                DemuxEvent::Track(t) => codecs.push(t.codec),
                DemuxEvent::Frame(f) => out.push(flat(&f)),
            }
        }
        (codecs, out)
    }

    fn apply_all(m: &mut StreamMedia, items: &[MediaItem]) {
        for i in items {
            assert!(m.apply(i));
        }
    }

    fn media() -> StreamMedia {
        StreamMedia::new(4096, 1 << 20, Duration::ZERO)
    }

    #[test]
    fn ts_viewer_starts_on_a_keyframe_with_pat_pmt_then_gets_live_frames() {
        let mut m = media();
        let rtmp = viewer(ViewerFormat::Rtmp);
        m.add_viewer(rtmp.clone());
        let gop = [video(1000, true), audio(1010), video(1033, false)];
        apply_all(&mut m, &[h264_track(), aac_track(), video(967, false)]);
        apply_all(&mut m, &gop);
        let ts = viewer(ViewerFormat::Ts);
        m.add_viewer(ts.clone());
        let first = drain(&ts);
        assert_eq!(first.len(), 3, "the GOP cache, muxed: {first:?}");
        assert!(first.iter().all(|i| matches!(i, OutItem::Replay(_))));
        let key = msg(&first[0]);
        assert!(key.kind == MediaKind::Video && key.keyframe);
        assert_eq!(&pids(key)[..3], [PAT_PID, PMT_PID, FIRST_PID]);

        let live = [
            video(1066, false),
            MediaItem::Metadata {
                timestamp: 1070,
                body: ByteRope::from(Bytes::from_static(b"\x02\x00\x0aonMetaData")),
            },
            audio(1031),
            MediaItem::Passthrough {
                kind: MediaKind::Audio,
                timestamp: 1040,
                body: ByteRope::from(Bytes::from_static(b"\x22\x01")),
                keyframe: false,
            },
            video(1099, false),
        ];
        apply_all(&mut m, &live);
        let later = drain(&ts);
        assert_eq!(
            later.len(),
            3,
            "metadata and passthrough are not sent as TS"
        );
        assert!(later.iter().all(|i| matches!(i, OutItem::Media(_))));

        let (codecs, got) = demux(first.iter().chain(&later));
        assert_eq!(codecs, [CodecId::H264, CodecId::Aac]);
        let sent: Vec<MediaItem> = gop.iter().chain(&live).cloned().collect();
        let mut want = frames(&sent);
        let mut got = got;
        // The demuxer gives each elementary stream in order; compare per kind.
        want.sort_by_key(|f| (f.0 == MediaKind::Audio, f.1));
        got.sort_by_key(|f| (f.0 == MediaKind::Audio, f.1));
        assert_eq!(got, want);

        // RTMP viewers get what they always got, none of the TS messages.
        let rtmp_items = drain(&rtmp);
        assert_eq!(rtmp_items.len(), 2 + 1 + gop.len() + live.len());
        assert_eq!(m.viewer_counts().rtmp, 1);
        assert_eq!(m.viewer_counts().srt, 1);
        assert_eq!(m.viewer_count(), 2);
    }

    #[test]
    fn late_ts_viewer_gets_the_ts_gop_cache() {
        let mut m = media();
        // Added before the tracks are known, as on a mirror that has not had its snapshot.
        let early = viewer(ViewerFormat::Ts);
        m.add_viewer(early.clone());
        let gop = [
            h264_track(),
            aac_track(),
            video(0, true),
            audio(5),
            video(33, false),
        ];
        apply_all(&mut m, &gop);
        let early_items = drain(&early);
        assert_eq!(early_items.len(), 3);

        let late = viewer(ViewerFormat::Ts);
        m.add_viewer(late.clone());
        let late_items = drain(&late);
        assert_eq!(late_items.len(), 3);
        for (a, b) in early_items.iter().zip(&late_items) {
            assert!(Rc::ptr_eq(msg(a), msg(b)), "muxed once, shared");
        }
        assert!(matches!(late_items[0], OutItem::Replay(_)));

        let live = [video(66, false), audio(26)];
        apply_all(&mut m, &live);
        let (e2, l2) = (drain(&early), drain(&late));
        assert_eq!((e2.len(), l2.len()), (2, 2));
        assert!(Rc::ptr_eq(msg(&e2[0]), msg(&l2[0])));

        // The cache and the live messages come from one muxer: continuity counters run on,
        // so every frame demuxes.
        let (_, got) = demux(late_items.iter().chain(&l2));
        assert_eq!(got.len(), 5);
        let (_, got_early) = demux(early_items.iter().chain(&e2));
        assert_eq!(got, got_early);

        // A new keyframe starts a new cache.
        apply_all(&mut m, &[video(99, true), audio(47)]);
        let third = viewer(ViewerFormat::Ts);
        m.add_viewer(third.clone());
        let items = drain(&third);
        assert_eq!(items.len(), 2);
        assert!(msg(&items[0]).keyframe);
        assert_eq!(pids(msg(&items[0]))[0], PAT_PID);
    }

    #[test]
    fn ts_output_is_made_from_the_gop_cache_and_stops_with_its_last_viewer() {
        let mut m = media();
        let items = [
            h264_track(),
            aac_track(),
            video(0, true),
            audio(3),
            video(33, false),
        ];
        apply_all(&mut m, &items);
        assert!(m.ts.is_none(), "nothing is muxed without TS viewers");
        let v = viewer(ViewerFormat::Ts);
        m.add_viewer(v.clone());
        let got = drain(&v);
        assert_eq!(got.len(), 3);
        assert_eq!(pids(msg(&got[0]))[0], PAT_PID);
        let (codecs, f) = demux(&got);
        assert_eq!(codecs, [CodecId::H264, CodecId::Aac]);
        assert_eq!(f.len(), 3);
        m.remove_viewer(&v);
        assert!(m.ts.is_none(), "the TS output stops with its last viewer");
        assert_eq!(m.viewer_counts().srt, 0);
        // Removing twice, or removing a viewer never added, changes nothing.
        m.remove_viewer(&v);
        m.remove_viewer(&viewer(ViewerFormat::Ts));
    }

    #[test]
    fn ts_viewer_without_a_cache_waits_for_a_keyframe() {
        let mut m = media();
        apply_all(&mut m, &[h264_track(), aac_track(), video(0, false)]);
        let v = viewer(ViewerFormat::Ts);
        m.add_viewer(v.clone());
        assert_eq!(m.viewer_counts().srt, 1, "a waiting viewer counts");
        apply_all(&mut m, &[audio(10), video(33, false)]);
        assert!(drain(&v).is_empty());
        apply_all(&mut m, &[video(66, true), audio(40)]);
        let got = drain(&v);
        assert_eq!(got.len(), 2);
        assert!(msg(&got[0]).keyframe);
        assert_eq!(pids(msg(&got[0]))[..2], [PAT_PID, PMT_PID]);
        m.end();
        assert!(v.ended.is_set());
        assert_eq!(m.viewer_count(), 0);
    }

    #[test]
    fn audio_only_ts_viewer_starts_at_pat_pmt() {
        let mut m = media();
        let v = viewer(ViewerFormat::Ts);
        m.add_viewer(v.clone());
        apply_all(&mut m, &[aac_track(), audio(0), audio(21), audio(42)]);
        let got = drain(&v);
        assert_eq!(got.len(), 3);
        assert_eq!(pids(msg(&got[0]))[0], PAT_PID);
        let late = viewer(ViewerFormat::Ts);
        m.add_viewer(late.clone());
        let cached = drain(&late);
        assert!(!cached.is_empty());
        assert_eq!(
            pids(msg(&cached[0]))[0],
            PAT_PID,
            "the cache starts at PAT/PMT"
        );
        let (codecs, frames) = demux(&got);
        assert_eq!(codecs, [CodecId::Aac]);
        assert_eq!(frames.len(), 3);
    }

    #[test]
    fn tracks_ts_cannot_carry_are_left_out() {
        let mut m = media();
        let v = viewer(ViewerFormat::Ts);
        m.add_viewer(v.clone());
        let av1 = MediaItem::Track(Track {
            kind: MediaKind::Video,
            codec: CodecId::Av1,
            config: Bytes::from_static(&[0x81, 0, 0, 0]),
            timescale: 1000,
            info: TrackInfo::default(),
        });
        let av1_frame = MediaItem::Frame(Frame {
            kind: MediaKind::Video,
            dts: 0,
            pts: 0,
            keyframe: true,
            ingest: Instant::now(),
            payload: FramePayload::Raw(ByteRope::from(vec![0x12, 0, 0x0a])),
        });
        apply_all(&mut m, &[av1, aac_track(), av1_frame, audio(3)]);
        let got = drain(&v);
        assert_eq!(got.len(), 1, "audio only");
        assert_eq!(msg(&got[0]).kind, MediaKind::Audio);
        assert_eq!(demux(&got).0, [CodecId::Aac]);
    }

    #[test]
    fn audio_waits_for_video_at_most_audio_coalesce() {
        let mut m = StreamMedia::new(4096, 1 << 20, Duration::from_millis(40));
        let t0 = Instant::now();
        let ms = |n| Some(t0 + Duration::from_millis(n));
        assert!(!m.should_wake(MediaKind::Audio, true, ms(0)));
        assert!(!m.should_wake(MediaKind::Audio, true, ms(21)));
        assert!(m.should_wake(MediaKind::Video, true, ms(30)), "video wakes");
        assert!(!m.should_wake(MediaKind::Audio, true, ms(42)));
        assert!(
            m.should_wake(MediaKind::Audio, true, ms(85)),
            "no video for 40 ms: audio goes anyway"
        );
        assert!(
            m.should_wake(MediaKind::Audio, false, ms(90)),
            "audio-only streams"
        );
        let mut off = StreamMedia::new(4096, 1 << 20, Duration::ZERO);
        assert!(off.should_wake(MediaKind::Audio, true, ms(0)));
    }
}
