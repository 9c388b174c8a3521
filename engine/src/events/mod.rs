//! Live events: what happened to streams, viewers and recordings, as it happens.
//!
//! An event is raised once, on the shard where it happened (a publisher's origin shard, a
//! viewer's shard) or, for threads that are not shards (the recorder), through the
//! [`EventInbox`] that shard 0 drains. [`Shard::emit`](crate::shard::Shard::emit) then
//!
//! 1. hands it to the origin-only consumers (webhooks, the session history), exactly once;
//! 2. delivers it to the subscribers on this shard (SSE and WebSocket clients of
//!    `/api/v1/events`);
//! 3. sends it through the mesh to every other shard, which delivers it to its own subscribers.
//!
//! Subscribers have bounded queues: a client that does not read loses the oldest events and is
//! told how many (the event stream never slows a shard).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

pub mod http;
pub mod ws;

use crate::rt::LocalEvent;

/// Events a subscriber may have waiting before the oldest are dropped.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Unix time now, in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ingest statistics of a live stream, as the `stream.stats` tick and `stream.ended` carry them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestStats {
    /// Frames received.
    pub frames: u64,
    /// Media payload bytes received.
    pub bytes: u64,
    /// Ingest bitrate over the last second, bits per second.
    pub bitrate_1s: u64,
    /// Ingest bitrate over the last ten seconds, bits per second.
    pub bitrate_10s: u64,
}

/// One thing that happened. Serialised as JSON with a `type` field (`stream.live`, ...).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum Event {
    /// A publisher started (or took over) a stream.
    #[serde(rename = "stream.live")]
    StreamLive {
        /// Stream name.
        stream: Arc<str>,
        /// Ingest protocol (`rtmp`, `rtmps`, `srt`).
        protocol: &'static str,
        /// Publisher's address.
        remote: SocketAddr,
        /// Publish generation (changes on every publish of the name).
        generation: u64,
        /// Unix ms.
        at_ms: u64,
    },
    /// A publisher left or was stopped.
    #[serde(rename = "stream.ended")]
    StreamEnded {
        /// Stream name.
        stream: Arc<str>,
        /// Ingest protocol.
        protocol: &'static str,
        /// Publisher's address.
        remote: SocketAddr,
        /// Publish generation.
        generation: u64,
        /// When publishing started, Unix ms.
        started_at_ms: u64,
        /// When it ended, Unix ms.
        at_ms: u64,
        /// What ended it (`publisher left`, `stopped by operator`, an error, ...).
        reason: String,
        /// Totals of the session.
        stats: IngestStats,
    },
    /// A viewer started playing.
    #[serde(rename = "viewer.joined")]
    ViewerJoined {
        /// Stream name.
        stream: Arc<str>,
        /// Playback protocol.
        protocol: &'static str,
        /// Viewer's address.
        remote: SocketAddr,
        /// Unix ms.
        at_ms: u64,
    },
    /// A viewer stopped playing.
    #[serde(rename = "viewer.left")]
    ViewerLeft {
        /// Stream name.
        stream: Arc<str>,
        /// Playback protocol.
        protocol: &'static str,
        /// Viewer's address.
        remote: SocketAddr,
        /// When it joined, Unix ms.
        joined_at_ms: u64,
        /// Unix ms.
        at_ms: u64,
        /// Bytes sent to it.
        bytes: u64,
        /// Frames it skipped because it was slow.
        dropped_frames: u64,
    },
    /// A recording file was closed.
    #[serde(rename = "recording.done")]
    RecordingDone {
        /// Stream name.
        stream: Arc<str>,
        /// File path.
        path: String,
        /// Media duration, ms.
        duration_ms: u64,
        /// File size.
        bytes: u64,
        /// `complete`, or why it stopped early.
        status: String,
        /// Unix ms.
        at_ms: u64,
    },
    /// Once a second per live stream, from its origin shard.
    #[serde(rename = "stream.stats")]
    StreamStats {
        /// Stream name.
        stream: Arc<str>,
        /// Seconds since publishing started.
        uptime_s: u64,
        /// Ingest counters.
        ingest: IngestStats,
        /// RTMP and SRT viewers on the origin shard (other shards' viewers are in the stats
        /// API).
        viewers_local: u64,
        /// Unix ms.
        at_ms: u64,
    },
}

impl Event {
    /// The event's `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StreamLive { .. } => "stream.live",
            Event::StreamEnded { .. } => "stream.ended",
            Event::ViewerJoined { .. } => "viewer.joined",
            Event::ViewerLeft { .. } => "viewer.left",
            Event::RecordingDone { .. } => "recording.done",
            Event::StreamStats { .. } => "stream.stats",
        }
    }

    /// The stream it concerns.
    pub fn stream(&self) -> &str {
        match self {
            Event::StreamLive { stream, .. }
            | Event::StreamEnded { stream, .. }
            | Event::ViewerJoined { stream, .. }
            | Event::ViewerLeft { stream, .. }
            | Event::RecordingDone { stream, .. }
            | Event::StreamStats { stream, .. } => stream,
        }
    }
}

/// A subscriber's queue (one per SSE or WebSocket client).
pub struct Subscription {
    queue: RefCell<VecDeque<Arc<Event>>>,
    dropped: Cell<u64>,
    ready: RefCell<LocalEvent>,
}

impl Subscription {
    /// Takes the waiting events and how many were dropped since the last call.
    pub fn take(&self) -> (Vec<Arc<Event>>, u64) {
        let events = self.queue.borrow_mut().drain(..).collect();
        (events, self.dropped.replace(0))
    }

    /// Resolves when an event is waiting (at once if one is).
    pub async fn ready(&self) {
        loop {
            if !self.queue.borrow().is_empty() || self.dropped.get() > 0 {
                return;
            }
            let ev = self.ready.borrow().clone();
            ev.wait().await;
        }
    }

    fn push(&self, event: &Arc<Event>) {
        let mut q = self.queue.borrow_mut();
        if q.len() >= SUBSCRIBER_QUEUE {
            q.pop_front();
            self.dropped.set(self.dropped.get() + 1);
        }
        q.push_back(event.clone());
        drop(q);
        self.ready.replace(LocalEvent::new()).set();
    }
}

/// The subscribers of one shard.
#[derive(Default)]
pub struct EventBus {
    subscribers: RefCell<Vec<Weak<Subscription>>>,
}

impl EventBus {
    /// A new subscription; it ends when the returned `Rc` is dropped.
    pub fn subscribe(&self) -> Rc<Subscription> {
        let sub = Rc::new(Subscription {
            queue: RefCell::new(VecDeque::new()),
            dropped: Cell::new(0),
            ready: RefCell::new(LocalEvent::new()),
        });
        let mut subs = self.subscribers.borrow_mut();
        subs.retain(|w| w.strong_count() > 0);
        subs.push(Rc::downgrade(&sub));
        sub
    }

    /// Subscribers on this shard.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers
            .borrow()
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Delivers `event` to this shard's subscribers.
    pub fn deliver(&self, event: &Arc<Event>) {
        let subs: Vec<Rc<Subscription>> = {
            let mut subs = self.subscribers.borrow_mut();
            subs.retain(|w| w.strong_count() > 0);
            subs.iter().filter_map(Weak::upgrade).collect()
        };
        for s in subs {
            s.push(event);
        }
    }
}

/// Where threads that are not shards (the recorder) raise events; shard 0 drains it.
pub type EventInbox = flume::Sender<Event>;

/// Capacity of the [`EventInbox`]; a full inbox drops the event (logged by the sender).
pub const INBOX_CAPACITY: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> Arc<Event> {
        Arc::new(Event::StreamLive {
            stream: Arc::from("s"),
            protocol: "rtmp",
            remote: ([127, 0, 0, 1], 1).into(),
            generation: n,
            at_ms: n,
        })
    }

    #[test]
    fn a_full_subscriber_loses_the_oldest_and_is_told() {
        let bus = EventBus::default();
        let sub = bus.subscribe();
        for n in 0..(SUBSCRIBER_QUEUE as u64 + 5) {
            bus.deliver(&ev(n));
        }
        let (events, dropped) = sub.take();
        assert_eq!(dropped, 5);
        assert_eq!(events.len(), SUBSCRIBER_QUEUE);
        assert!(matches!(
            *events[0],
            Event::StreamLive { generation: 5, .. }
        ));
        drop(sub);
        assert_eq!(bus.subscriber_count(), 0);
    }

    #[test]
    fn events_serialise_with_their_type() {
        let json = serde_json::to_value(&*ev(3)).unwrap();
        assert_eq!(json["type"], "stream.live");
        assert_eq!(json["stream"], "s");
        assert_eq!(json["remote"], "127.0.0.1:1");
    }
}
