//! What a connection has left to send: control messages and a bounded queue of shared media.
//!
//! A connection's writing task drains its [`Outbox`]. Media items are `Rc<WireMessage>`s
//! encoded once per shard and shared by every viewer there, so queueing a frame for a viewer
//! costs a refcount. The media part of the queue is bounded in bytes: when a viewer falls that
//! far behind, everything it has not started sending is dropped and it skips to the next
//! keyframe, so a slow viewer never slows the publisher or its neighbours.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use zerocast_codecs::{ByteRope, MediaKind};

use crate::metrics::ShardMetrics;

/// One media message ready for the wire, shared by all viewers of a shard: an RTMP message
/// (chunked) for RTMP viewers, or one frame's MPEG-TS packets for TS viewers.
#[derive(Debug)]
pub struct WireMessage {
    /// Chunk (or TS packet) headers and payload slices, in wire order.
    pub wire: ByteRope,
    /// Audio, video or data.
    pub kind: MediaKind,
    /// True for a video keyframe: a viewer that skips may resume here (a TS keyframe message
    /// starts with PAT/PMT).
    pub keyframe: bool,
    /// When the frame entered the engine; `None` for headers and metadata.
    pub ingest: Option<Instant>,
    /// When this shard encoded it and queued it for its viewers (queue-wait histogram).
    pub queued: Instant,
}

/// An item waiting in an [`Outbox`].
#[derive(Debug)]
pub enum OutItem {
    /// Bytes produced by the connection's own protocol session.
    Control(ByteRope),
    /// A shared media message sent live.
    Media(Rc<WireMessage>),
    /// A shared media message replayed from the GOP cache to a new viewer (not counted in
    /// live latency).
    Replay(Rc<WireMessage>),
}

impl OutItem {
    /// The slices to send.
    pub fn wire(&self) -> &ByteRope {
        match self {
            OutItem::Control(r) => r,
            OutItem::Media(m) | OutItem::Replay(m) => &m.wire,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<OutItem>,
    media_bytes: usize,
    skipping: bool,
    dropped_frames: u64,
    closing: bool,
    aborted: bool,
    nudged: bool,
    waker: Option<Waker>,
}

/// The send queue of one connection.
#[derive(Debug)]
pub struct Outbox {
    inner: RefCell<Inner>,
    media_limit: usize,
    sent_bytes: std::cell::Cell<u64>,
    /// The shard's counters, where dropped frames are counted as they happen.
    metrics: Option<Rc<ShardMetrics>>,
}

impl Outbox {
    /// An empty outbox whose media part holds at most `media_limit` bytes.
    pub fn new(media_limit: usize) -> Rc<Self> {
        Rc::new(Outbox {
            inner: RefCell::new(Inner::default()),
            media_limit,
            sent_bytes: std::cell::Cell::new(0),
            metrics: None,
        })
    }

    /// Like [`Outbox::new`], counting dropped frames in the shard's `metrics` too.
    pub fn with_metrics(media_limit: usize, metrics: Rc<ShardMetrics>) -> Rc<Self> {
        Rc::new(Outbox {
            inner: RefCell::new(Inner::default()),
            media_limit,
            sent_bytes: std::cell::Cell::new(0),
            metrics: Some(metrics),
        })
    }

    fn count_dropped(&self, inner: &mut Inner, n: u64) {
        inner.dropped_frames += n;
        if let Some(m) = &self.metrics {
            m.frames_dropped(n);
        }
    }

    fn wake(inner: &mut Inner) {
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    /// Queues bytes of the connection's own session (never dropped).
    pub fn push_control(&self, rope: ByteRope) {
        let mut inner = self.inner.borrow_mut();
        if inner.closing || inner.aborted || rope.is_empty() {
            return;
        }
        inner.queue.push_back(OutItem::Control(rope));
        Self::wake(&mut inner);
    }

    /// Queues a sequence header or metadata message: small, needed to decode, never dropped.
    pub fn push_header(&self, msg: &Rc<WireMessage>) {
        let mut inner = self.inner.borrow_mut();
        if inner.closing || inner.aborted {
            return;
        }
        inner.queue.push_back(OutItem::Media(msg.clone()));
        Self::wake(&mut inner);
    }

    /// Queues a media frame, or drops it when this viewer is too far behind.
    ///
    /// `has_video` says whether the stream has video: without video every frame is a point
    /// where a skipping viewer may resume.
    /// `replay` marks frames from the GOP cache. With `wake` false the writer is not woken
    /// yet: the frame leaves with the next one that wakes it (audio waiting for video).
    pub fn push_frame(&self, msg: &Rc<WireMessage>, has_video: bool, replay: bool, wake: bool) {
        let mut inner = self.inner.borrow_mut();
        if inner.closing || inner.aborted {
            return;
        }
        let resumable = !has_video || (msg.kind == MediaKind::Video && msg.keyframe);
        if inner.skipping {
            if !resumable {
                self.count_dropped(&mut inner, 1);
                return;
            }
            inner.skipping = false;
        }
        let len = msg.wire.len();
        if inner.media_bytes + len > self.media_limit {
            // Too far behind: drop every frame not yet started and wait for a keyframe.
            let before = inner.queue.len();
            inner.queue.retain(|item| match item {
                OutItem::Media(m) | OutItem::Replay(m) => m.ingest.is_none(),
                OutItem::Control(_) => true,
            });
            let dropped = (before - inner.queue.len()) as u64;
            self.count_dropped(&mut inner, dropped);
            inner.media_bytes = 0;
            if !resumable {
                inner.skipping = true;
                self.count_dropped(&mut inner, 1);
                return;
            }
        }
        inner.media_bytes += len;
        inner.queue.push_back(if replay {
            OutItem::Replay(msg.clone())
        } else {
            OutItem::Media(msg.clone())
        });
        if wake {
            Self::wake(&mut inner);
        }
    }

    /// Wakes the writer even with nothing queued (TLS has records of its own to send).
    pub fn nudge(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.nudged = true;
        Self::wake(&mut inner);
    }

    /// Counts bytes the writer handed to the socket.
    pub fn add_sent(&self, n: u64) {
        self.sent_bytes.set(self.sent_bytes.get() + n);
    }

    /// Bytes handed to the socket so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.get()
    }

    /// Frames dropped for this viewer so far.
    pub fn dropped_frames(&self) -> u64 {
        self.inner.borrow().dropped_frames
    }

    /// Sends what is queued, then ends the connection.
    pub fn close_after_flush(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.closing = true;
        Self::wake(&mut inner);
    }

    /// Ends the connection without sending what is queued.
    pub fn abort(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.aborted = true;
        inner.queue.clear();
        Self::wake(&mut inner);
    }

    /// True once [`close_after_flush`](Self::close_after_flush) or [`abort`](Self::abort) ran.
    pub fn is_closing(&self) -> bool {
        let inner = self.inner.borrow();
        inner.closing || inner.aborted
    }

    /// Waits for items and moves up to about `max_slices` slices' worth into `batch`, with
    /// their slices appended to `slices`. Returns false when the outbox is finished.
    pub async fn next_batch(
        &self,
        batch: &mut Vec<OutItem>,
        slices: &mut Vec<Bytes>,
        max_slices: usize,
    ) -> bool {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.aborted {
                return Poll::Ready(false);
            }
            if inner.queue.is_empty() {
                if std::mem::take(&mut inner.nudged) {
                    return Poll::Ready(true);
                }
                if inner.closing {
                    return Poll::Ready(false);
                }
                inner.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            while let Some(item) = inner.queue.front() {
                let n = item.wire().parts().len();
                if !slices.is_empty() && slices.len() + n > max_slices {
                    break;
                }
                // Just checked that the queue has a front item.
                let item = inner.queue.pop_front().expect("front exists");
                if let OutItem::Media(m) | OutItem::Replay(m) = &item {
                    if m.ingest.is_some() {
                        inner.media_bytes = inner.media_bytes.saturating_sub(m.wire.len());
                    }
                }
                slices.extend(item.wire().parts().iter().cloned());
                batch.push(item);
            }
            Poll::Ready(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: MediaKind, keyframe: bool, len: usize) -> Rc<WireMessage> {
        Rc::new(WireMessage {
            wire: Bytes::from(vec![0u8; len]).into(),
            kind,
            keyframe,
            ingest: Some(Instant::now()),
            queued: Instant::now(),
        })
    }

    fn drain(o: &Outbox) -> Vec<OutItem> {
        let mut batch = Vec::new();
        let mut slices = Vec::new();
        futures_lite::future::block_on(o.next_batch(&mut batch, &mut slices, 1024));
        batch
    }

    #[test]
    fn overflow_skips_to_next_keyframe() {
        let o = Outbox::new(250);
        o.push_frame(&frame(MediaKind::Video, true, 100), true, false, true);
        o.push_frame(&frame(MediaKind::Video, false, 100), true, false, true);
        // Over the limit: the queue is dropped and the viewer waits for a keyframe.
        o.push_frame(&frame(MediaKind::Video, false, 100), true, false, true);
        assert_eq!(o.dropped_frames(), 3);
        o.push_frame(&frame(MediaKind::Audio, false, 10), true, false, true);
        assert_eq!(o.dropped_frames(), 4);
        o.push_frame(&frame(MediaKind::Video, true, 100), true, false, true);
        let items = drain(&o);
        assert_eq!(items.len(), 1);
        assert!(matches!(&items[0], OutItem::Media(m) if m.keyframe));
    }

    #[test]
    fn drops_are_counted_in_the_shard_metrics_as_they_happen() {
        let m = ShardMetrics::new();
        let o = Outbox::with_metrics(250, m.clone());
        for keyframe in [true, false, false] {
            o.push_frame(&frame(MediaKind::Video, keyframe, 100), true, false, true);
        }
        o.push_frame(&frame(MediaKind::Audio, false, 10), true, false, true);
        assert_eq!(o.dropped_frames(), 4);
        assert_eq!(m.read().dropped_frames, 4);
    }

    #[test]
    fn headers_and_control_survive_overflow() {
        let o = Outbox::new(150);
        o.push_control(Bytes::from_static(b"ctl").into());
        let hdr = Rc::new(WireMessage {
            wire: Bytes::from_static(b"hdr").into(),
            kind: MediaKind::Video,
            keyframe: false,
            ingest: None,
            queued: Instant::now(),
        });
        o.push_header(&hdr);
        o.push_frame(&frame(MediaKind::Video, true, 100), true, false, true);
        o.push_frame(&frame(MediaKind::Video, false, 100), true, false, true);
        assert_eq!(drain(&o).len(), 2);
    }

    #[test]
    fn close_after_flush_drains_first() {
        let o = Outbox::new(1000);
        o.push_control(Bytes::from_static(b"bye").into());
        o.close_after_flush();
        assert_eq!(drain(&o).len(), 1);
        let mut b = Vec::new();
        let mut s = Vec::new();
        assert!(!futures_lite::future::block_on(
            o.next_batch(&mut b, &mut s, 8)
        ));
    }
}
