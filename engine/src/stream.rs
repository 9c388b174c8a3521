//! The media state of one live stream on one shard: tracks, metadata, GOP cache, local viewers.
//!
//! The same type serves the stream's origin (the publisher's shard) and its mirrors (other
//! shards with viewers of it). Each applies the same [`MediaItem`]s in the same order; the
//! origin also forwards them to the mirrors through the channel mesh.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use zerocast_codecs::{flv, ByteRope, Frame, MediaKind, Track};
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

/// A local viewer of a stream.
#[derive(Debug)]
pub struct Viewer {
    /// The viewer connection's send queue.
    pub outbox: Rc<Outbox>,
    /// The RTMP message stream id it plays on.
    pub stream_id: u32,
    /// Set when the stream ends: the connection then says so and closes.
    pub ended: LocalEvent,
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
    viewers: Vec<Rc<Viewer>>,
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

    /// Number of local viewers.
    pub fn viewer_count(&self) -> usize {
        self.viewers.len()
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
        true
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
    pub fn add_viewer(&mut self, viewer: Rc<Viewer>) {
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

    /// Removes a local viewer.
    pub fn remove_viewer(&mut self, viewer: &Rc<Viewer>) {
        let before = self.viewers.len();
        self.viewers.retain(|v| !Rc::ptr_eq(v, viewer));
        if self.viewers.len() < before {
            self.departed.0 += viewer.outbox.sent_bytes();
            self.departed.1 += viewer.outbox.dropped_frames();
        }
    }

    /// RTMP viewers now, and bytes sent to / frames dropped for all viewers so far.
    pub fn viewer_counts(&self) -> crate::control::ViewerCounts {
        let (mut bytes_out, mut dropped_frames) = self.departed;
        for v in &self.viewers {
            bytes_out += v.outbox.sent_bytes();
            dropped_frames += v.outbox.dropped_frames();
        }
        crate::control::ViewerCounts {
            rtmp: self.viewers.len() as u64,
            hls: 0,
            bytes_out,
            dropped_frames,
        }
    }

    /// The stream ended: tells every local viewer and forgets them.
    pub fn end(&mut self) {
        for v in self.viewers.drain(..) {
            v.ended.set();
        }
        self.gop.clear();
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
