//! One shard: its streams, its mirrors of other shards' streams, and the channel mesh.
//!
//! A stream lives on the shard where its publisher connected (its origin). Shard 0 is also
//! the arbiter: it decides who may publish a name (one publisher per name, or the newest
//! with `streams.takeover`) and tells players where a stream lives. Viewers on other shards
//! are served by a mirror: the origin sends each [`MediaItem`] once per subscribing shard
//! through the mesh (refcounts, not copies) and the mirror fans it out to its local viewers.
//!
//! Nothing here takes a lock: every map belongs to its shard and changes only through
//! messages.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Receivers, Senders};
use hdrhistogram::Histogram;
use tracing::{debug, info, warn};
use zerocast_codecs::MediaKind;

use crate::config::Config;
use crate::control::{Answer, IngestInfo, Query, RateMeter, TrackSummary, ViewerCounts};
use crate::events::{unix_ms, Event, EventBus, IngestStats};
use crate::hls::{HlsShard, StreamPackager};
use crate::recording::{Recorder, RecordingSink};
use crate::rt::{self, LocalEvent};
use crate::store::StoreHandle;
use crate::stream::{MediaItem, StreamMedia, Viewer};

/// Capacity of each shard-to-shard channel, in messages.
pub const MESH_CHANNEL_CAPACITY: usize = 4096;
/// Most subscriptions that may wait for an origin that is not set up yet.
const MAX_PENDING_SUBSCRIPTIONS: usize = 1024;

/// A message between shards.
#[derive(Debug)]
pub enum MeshMsg {
    /// To the arbiter: may `from` publish `name`?
    Claim {
        /// Stream name.
        name: String,
        /// Asking shard.
        from: usize,
        /// Request id on the asking shard.
        req: u64,
        /// Whether the newest publisher wins.
        takeover: bool,
    },
    /// From the arbiter: the generation granted, or `None`.
    ClaimReply {
        /// Request id.
        req: u64,
        /// Granted generation.
        generation: Option<u64>,
    },
    /// To the arbiter: where does `name` live?
    Lookup {
        /// Stream name.
        name: String,
        /// Asking shard.
        from: usize,
        /// Request id.
        req: u64,
    },
    /// From the arbiter: the origin shard and generation, or `None`.
    LookupReply {
        /// Request id.
        req: u64,
        /// Origin shard and generation.
        found: Option<(usize, u64)>,
    },
    /// To the arbiter: the publisher of this generation is gone.
    Release {
        /// Stream name.
        name: String,
        /// Generation that ended.
        generation: u64,
    },
    /// From the arbiter: a newer publisher took over; end this generation.
    Kick {
        /// Stream name.
        name: String,
        /// Generation to end.
        generation: u64,
    },
    /// To an origin: shard `from` has viewers.
    Subscribe {
        /// Stream name.
        name: String,
        /// Generation.
        generation: u64,
        /// Subscribing shard.
        from: usize,
    },
    /// To an origin: shard `from` has no viewers left.
    Unsubscribe {
        /// Stream name.
        name: String,
        /// Generation.
        generation: u64,
        /// Shard.
        from: usize,
    },
    /// From an origin to a mirror: one item of the stream.
    Media {
        /// Stream name.
        name: Arc<str>,
        /// Generation.
        generation: u64,
        /// The item.
        item: MediaItem,
    },
    /// From an origin to every other shard: LL-HLS updates of a stream, in order.
    Hls {
        /// Stream name.
        name: Arc<str>,
        /// The updates.
        updates: Vec<zerocast_hls::HlsUpdate>,
    },
    /// To every other shard: an event raised on the sending shard.
    Event(Arc<Event>),
    /// A question for the receiving shard (see [`crate::control`]).
    Query {
        /// Asking shard.
        from: usize,
        /// Request id on the asking shard.
        req: u64,
        /// The question.
        query: Query,
    },
    /// The answer to a [`MeshMsg::Query`].
    Answer {
        /// Request id.
        req: u64,
        /// The answer.
        answer: Answer,
    },
    /// From an origin to a mirror: the stream ended.
    End {
        /// Stream name.
        name: Arc<str>,
        /// Generation.
        generation: u64,
    },
}

enum Reply {
    Claim(Option<u64>),
    Lookup(Option<(usize, u64)>),
    Answer(Answer),
}

/// A consumer of events; see [`Shard::add_event_sink`].
pub type EventSink = Box<dyn Fn(&Arc<Event>)>;

/// Who publishes a stream, for statistics and events.
#[derive(Debug, Clone)]
pub struct PublishInfo {
    /// Ingest protocol (`rtmp`, `rtmps`, `srt`).
    pub protocol: &'static str,
    /// Publisher's address.
    pub remote: std::net::SocketAddr,
}

struct MirrorLink {
    shard: usize,
    /// Set after a failed send: wait for a keyframe before sending more frames.
    needs_keyframe: bool,
}

/// A stream whose publisher is on this shard.
pub struct Origin {
    /// Stream name.
    pub name: Arc<str>,
    /// Generation granted by the arbiter.
    pub generation: u64,
    /// Media state and local viewers.
    pub media: StreamMedia,
    mirrors: Vec<MirrorLink>,
    /// Set when the arbiter or an operator ends this publisher.
    pub kick: LocalEvent,
    /// Frames not forwarded to a mirror because its channel was full.
    pub mirror_drops: u64,
    /// The LL-HLS packager, when `hls.enabled`.
    hls: Option<StreamPackager>,
    /// Who publishes.
    pub publisher: PublishInfo,
    /// When publishing started (monotonic, and Unix ms).
    pub started: (std::time::Instant, u64),
    /// Ingest bitrate.
    rate: RateMeter,
    /// Set by an operator stop: the reason the `stream.ended` event gives.
    pub stop_reason: RefCell<Option<String>>,
    /// The recording, when this stream records.
    pub recording: Option<RecordingSink>,
    /// The publisher's SRT link, when it publishes over SRT (refreshed by its session).
    pub srt_link: Option<crate::control::SrtLinkStats>,
}

/// This shard's copy of a stream published on another shard.
pub struct Mirror {
    /// Generation it mirrors.
    pub generation: u64,
    /// The origin's shard.
    pub origin: usize,
    /// Media state and local viewers.
    pub media: StreamMedia,
}

/// Where a viewer is attached.
pub enum Subscription {
    /// To a stream published on this shard.
    Origin(Rc<RefCell<Origin>>),
    /// To this shard's mirror of a stream published elsewhere.
    Mirror(Arc<str>, Rc<RefCell<Mirror>>),
}

/// Per-shard measurements, merged on read.
pub struct ShardStats {
    /// Ingest-to-egress latency of RTMP frames, microseconds (entered the engine until
    /// handed to a viewer's socket).
    pub rtmp_egress_latency_us: Histogram<u64>,
    /// Frames dropped for slow viewers.
    pub viewer_dropped_frames: u64,
    /// Ingest-to-part-available latency of LL-HLS, microseconds (the oldest frame of a part
    /// entered the engine until the part could be served), on the origin shard.
    pub hls_part_latency_us: Histogram<u64>,
    /// Time live RTMP video frames waited in a player's outbox (queued on this shard until
    /// handed to the socket), microseconds.
    pub rtmp_queue_wait_us: Histogram<u64>,
    /// Ingest-to-egress latency of frames sent to SRT players, microseconds (entered the
    /// engine until handed to the SRT session, which paces them out).
    pub srt_egress_latency_us: Histogram<u64>,
}

impl ShardStats {
    fn new() -> Self {
        ShardStats {
            // 1 µs .. 60 s, 3 significant digits; the bounds are constants.
            rtmp_egress_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant histogram bounds are valid"),
            viewer_dropped_frames: 0,
            hls_part_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant histogram bounds are valid"),
            rtmp_queue_wait_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant histogram bounds are valid"),
            srt_egress_latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }
}

/// The state of one shard, shared by its tasks.
pub struct Shard {
    /// Index of this shard.
    pub id: usize,
    /// Number of shards.
    pub count: usize,
    /// The configuration.
    pub cfg: Arc<Config>,
    /// Access to the stream database.
    pub store: StoreHandle,
    /// The recorder thread, for streams that record.
    pub recorder: Recorder,
    /// Set when the process is stopping.
    pub shutdown: LocalEvent,
    /// Measurements.
    pub stats: RefCell<ShardStats>,
    /// Counters for `/metrics` (shared with this shard's connections).
    pub metrics: Rc<crate::metrics::ShardMetrics>,
    /// Open connections on this shard.
    pub connections: Cell<usize>,
    /// LL-HLS windows of every packaged stream (replicated on every shard).
    pub hls: Rc<HlsShard>,
    /// Subscribers to live events on this shard.
    pub events: EventBus,
    /// The webhooks, when any is configured (set once at start; see [`crate::hooks`]).
    pub hooks: std::cell::OnceCell<crate::hooks::Hooks>,
    /// Consumers of the events raised on this shard, each called once per event (webhooks,
    /// session history); see [`Shard::add_event_sink`].
    sinks: RefCell<Vec<EventSink>>,
    senders: Option<Senders<MeshMsg>>,
    origins: RefCell<HashMap<Arc<str>, Rc<RefCell<Origin>>>>,
    mirrors: RefCell<HashMap<Arc<str>, Rc<RefCell<Mirror>>>>,
    pending_subscriptions: RefCell<HashMap<(String, u64), Vec<usize>>>,
    arbiter: RefCell<HashMap<String, (usize, u64)>>,
    next_generation: Cell<u64>,
    next_req: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
}

impl Shard {
    /// A shard with its side of the mesh (`None` when there is a single shard).
    pub fn new(
        id: usize,
        count: usize,
        cfg: Arc<Config>,
        store: StoreHandle,
        recorder: Recorder,
        senders: Option<Senders<MeshMsg>>,
    ) -> Rc<Self> {
        let hls = Rc::new(HlsShard::new(&cfg.hls));
        Rc::new(Shard {
            id,
            count,
            hls,
            events: EventBus::default(),
            hooks: std::cell::OnceCell::new(),
            sinks: RefCell::default(),
            cfg,
            store,
            recorder,
            shutdown: LocalEvent::new(),
            stats: RefCell::new(ShardStats::new()),
            metrics: crate::metrics::ShardMetrics::new(),
            connections: Cell::new(0),
            senders,
            origins: RefCell::default(),
            mirrors: RefCell::default(),
            pending_subscriptions: RefCell::default(),
            arbiter: RefCell::default(),
            next_generation: Cell::new(1),
            next_req: Cell::new(1),
            pending: RefCell::default(),
        })
    }

    /// Empty media state for an origin or a mirror, with the configured limits.
    fn stream_media(&self) -> StreamMedia {
        StreamMedia::new(
            self.cfg.rtmp.chunk_size,
            self.cfg.limits.gop_cache_bytes,
            self.cfg.rtmp.audio_coalesce,
        )
    }

    /// Starts one task per peer that handles what the peer sends.
    pub fn start_mesh_receivers(self: &Rc<Self>, mut receivers: Receivers<MeshMsg>) {
        for (_, rx) in receivers.streams() {
            let shard = self.clone();
            rt::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    shard.handle(msg);
                }
            });
        }
    }

    /// Sends a control message; waits for room in the background when the channel is full.
    fn send(self: &Rc<Self>, to: usize, msg: MeshMsg) {
        if to == self.id {
            let shard = self.clone();
            // Handled in a task of its own so callers never re-enter their own borrows.
            rt::spawn(async move { shard.handle(msg) });
            return;
        }
        let Some(senders) = &self.senders else { return };
        if let Err(glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(msg))) =
            senders.try_send_to(to, msg)
        {
            let shard = self.clone();
            rt::spawn(async move {
                if let Some(senders) = &shard.senders {
                    let _ = senders.send_to(to, msg).await;
                }
            });
        }
    }

    /// Sends media; false when the channel is full (the caller drops the item).
    fn try_send_media(&self, to: usize, msg: MeshMsg) -> bool {
        match &self.senders {
            Some(s) => s.try_send_to(to, msg).is_ok(),
            None => false,
        }
    }

    async fn request(self: &Rc<Self>, make: impl FnOnce(u64) -> MeshMsg) -> Option<Reply> {
        self.request_to(0, make).await
    }

    async fn request_to(
        self: &Rc<Self>,
        to: usize,
        make: impl FnOnce(u64) -> MeshMsg,
    ) -> Option<Reply> {
        let req = self.next_req.get();
        self.next_req.set(req + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(req, tx);
        self.send(to, make(req));
        let reply = rt::timeout(Duration::from_secs(5), rx).await;
        self.pending.borrow_mut().remove(&req);
        reply.and_then(Result::ok)
    }

    fn complete(&self, req: u64, reply: Reply) {
        if let Some(tx) = self.pending.borrow_mut().remove(&req) {
            let _ = tx.send(reply);
        }
    }

    /// Asks the arbiter for the right to publish `name`; the granted generation or `None`.
    pub async fn claim(self: &Rc<Self>, name: &str, takeover: bool) -> Option<u64> {
        let from = self.id;
        let name = name.to_owned();
        match self
            .request(|req| MeshMsg::Claim {
                name,
                from,
                req,
                takeover,
            })
            .await
        {
            Some(Reply::Claim(g)) => g,
            _ => None,
        }
    }

    /// Creates the origin of a granted stream.
    pub fn start_origin(
        self: &Rc<Self>,
        name: &str,
        generation: u64,
        publisher: PublishInfo,
    ) -> Rc<RefCell<Origin>> {
        let name: Arc<str> = Arc::from(name);
        let now = std::time::Instant::now();
        let started = (now, unix_ms());
        self.emit(Event::StreamLive {
            stream: name.clone(),
            protocol: publisher.protocol,
            remote: publisher.remote,
            generation,
            at_ms: started.1,
        });
        let origin = Rc::new(RefCell::new(Origin {
            name: name.clone(),
            generation,
            media: self.stream_media(),
            mirrors: Vec::new(),
            kick: LocalEvent::new(),
            mirror_drops: 0,
            hls: self.hls.enabled().then(|| self.hls.packager(&name)),
            publisher,
            started,
            rate: RateMeter::new(now),
            stop_reason: RefCell::new(None),
            recording: None,
            srt_link: None,
        }));
        if let Some(old) = self
            .origins
            .borrow_mut()
            .insert(name.clone(), origin.clone())
        {
            // A takeover on the same shard: the old publisher ends.
            old.borrow().kick.set();
        }
        let waiting = self
            .pending_subscriptions
            .borrow_mut()
            .remove(&(name.to_string(), generation))
            .unwrap_or_default();
        for from in waiting {
            self.add_mirror(&origin, from);
        }
        origin
    }

    /// Applies an item from the publisher and forwards it to the mirrors.
    pub fn publish_item(&self, origin: &Rc<RefCell<Origin>>, item: MediaItem) {
        let mut o = origin.borrow_mut();
        let before = o.media.counters.bytes;
        if !o.media.apply(&item) {
            return;
        }
        let received = o.media.counters.bytes - before;
        let kind = match &item {
            MediaItem::Frame(f) => Some(f.kind),
            MediaItem::Passthrough { kind, .. } => Some(*kind),
            MediaItem::Track(_) | MediaItem::Metadata { .. } => None,
        };
        if let (Some(kind), Some(protocol)) = (
            kind,
            crate::metrics::Protocol::from_label(o.publisher.protocol),
        ) {
            self.metrics.ingested(protocol, kind, received);
        }
        if received > 0 {
            o.rate.add(std::time::Instant::now(), received);
        }
        let o = &mut *o;
        if let Some(packager) = o.hls.as_mut() {
            let updates = packager.on_item(&o.name, &item, o.media.tracks());
            self.publish_hls(&o.name, updates);
        }
        if let Some(recording) = o.recording.as_mut() {
            recording.push(&item);
        }
        if o.mirrors.is_empty() {
            return;
        }
        let resumable = match &item {
            MediaItem::Frame(f) => f.kind == MediaKind::Video && f.keyframe,
            MediaItem::Passthrough { kind, keyframe, .. } => *kind == MediaKind::Video && *keyframe,
            MediaItem::Track(_) | MediaItem::Metadata { .. } => true,
        } || !o.media.has_video();
        let name = o.name.clone();
        let generation = o.generation;
        let mut drops = 0;
        for link in o.mirrors.iter_mut() {
            if link.needs_keyframe && !resumable {
                drops += 1;
                continue;
            }
            let msg = MeshMsg::Media {
                name: name.clone(),
                generation,
                item: item.clone(),
            };
            link.needs_keyframe = !self.try_send_media(link.shard, msg);
            drops += u64::from(link.needs_keyframe);
        }
        o.mirror_drops += drops;
    }

    /// Applies LL-HLS updates here and sends them to every other shard's replica.
    fn publish_hls(&self, name: &Arc<str>, updates: Vec<zerocast_hls::HlsUpdate>) {
        if updates.is_empty() {
            return;
        }
        self.hls.apply(name, &updates);
        let now = std::time::Instant::now();
        {
            let mut stats = self.stats.borrow_mut();
            for u in &updates {
                if let zerocast_hls::HlsUpdate::Part { first_ingest, .. } = u {
                    let us = now.saturating_duration_since(*first_ingest).as_micros();
                    let _ = stats
                        .hls_part_latency_us
                        .record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                }
            }
        }
        for to in (0..self.count).filter(|&s| s != self.id) {
            let msg = MeshMsg::Hls {
                name: name.clone(),
                updates: updates.clone(),
            };
            if !self.try_send_media(to, msg) {
                // A shard too busy to drain 4096 messages: its replica of this stream stops
                // here and serves what it has (requests for newer parts time out) until the
                // next publish. Rare, and visible in the log.
                warn!(shard = to, stream = %name, "LL-HLS update dropped: mesh channel full");
            }
        }
    }

    /// Ends a stream: local viewers, mirrors and the arbiter are told. `reason` says why the
    /// publisher left, unless an operator stopped it (then the stop's reason is kept).
    pub fn end_origin(self: &Rc<Self>, origin: &Rc<RefCell<Origin>>, reason: &str) {
        let (name, generation, mirrors) = {
            let mut o = origin.borrow_mut();
            let stats = Self::ingest_stats(&o);
            let reason = o
                .stop_reason
                .borrow()
                .clone()
                .unwrap_or_else(|| reason.to_owned());
            self.emit(Event::StreamEnded {
                stream: o.name.clone(),
                protocol: o.publisher.protocol,
                remote: o.publisher.remote,
                generation: o.generation,
                started_at_ms: o.started.1,
                at_ms: unix_ms(),
                reason,
                stats,
            });
            o.media.end();
            if let Some(mut recording) = o.recording.take() {
                recording.finish();
            }
            if let Some(mut packager) = o.hls.take() {
                let updates = packager.end();
                self.publish_hls(&o.name, updates);
            }
            let mirrors: Vec<usize> = o.mirrors.drain(..).map(|l| l.shard).collect();
            (o.name.clone(), o.generation, mirrors)
        };
        {
            let mut origins = self.origins.borrow_mut();
            if origins
                .get(&name)
                .is_some_and(|o| o.borrow().generation == generation)
            {
                origins.remove(&name);
            }
        }
        for shard in mirrors {
            self.send(
                shard,
                MeshMsg::End {
                    name: name.clone(),
                    generation,
                },
            );
        }
        self.send(
            0,
            MeshMsg::Release {
                name: name.to_string(),
                generation,
            },
        );
    }

    fn ingest_stats(o: &Origin) -> IngestStats {
        let (bitrate_1s, bitrate_10s) = o.rate.rates(std::time::Instant::now());
        IngestStats {
            frames: o.media.counters.frames,
            bytes: o.media.counters.bytes,
            bitrate_1s,
            bitrate_10s,
        }
    }

    /// Raises an event here: origin-only consumers first, then this shard's subscribers, then
    /// every other shard's (see [`crate::events`]).
    pub fn emit(&self, event: Event) {
        let event = Arc::new(event);
        for sink in self.sinks.borrow().iter() {
            sink(&event);
        }
        self.events.deliver(&event);
        for to in (0..self.count).filter(|&s| s != self.id) {
            if !self.try_send_media(to, MeshMsg::Event(event.clone())) {
                debug!(
                    shard = to,
                    kind = event.kind(),
                    "event not forwarded: mesh channel full"
                );
            }
        }
    }

    /// Registers a consumer of the events raised on this shard (not of those forwarded from
    /// other shards, so that each event reaches it once, process-wide). It must not block:
    /// hand the event to a queue.
    pub fn add_event_sink(&self, sink: EventSink) {
        self.sinks.borrow_mut().push(sink);
    }

    /// Asks shard `to` (possibly this one) a [`Query`]; `None` after 5 s without an answer.
    pub async fn ask(self: &Rc<Self>, to: usize, query: Query) -> Option<Answer> {
        if to == self.id {
            return Some(self.answer(query));
        }
        let from = self.id;
        match self
            .request_to(to, |req| MeshMsg::Query { from, req, query })
            .await
        {
            Some(Reply::Answer(a)) => Some(a),
            _ => None,
        }
    }

    /// Asks every shard, this one included; the answers that came, in shard order.
    pub async fn ask_all(self: &Rc<Self>, query: Query) -> Vec<Answer> {
        let mut answers = Vec::with_capacity(self.count);
        // Sequential: a handful of shards, each answering from memory.
        for to in 0..self.count {
            if let Some(a) = self.ask(to, query.clone()).await {
                answers.push(a);
            }
        }
        answers
    }

    /// Answers a query from this shard's own state.
    fn answer(&self, query: Query) -> Answer {
        match query {
            Query::LiveStreams => Answer::LiveStreams(
                self.arbiter
                    .borrow()
                    .iter()
                    .map(|(name, (shard, generation))| (name.clone(), *shard, *generation))
                    .collect(),
            ),
            Query::Ingest { name } => {
                let origin = self.origins.borrow().get(name.as_str()).cloned();
                Answer::Ingest(origin.map(|o| {
                    let o = o.borrow();
                    Box::new(IngestInfo {
                        generation: o.generation,
                        shard: self.id,
                        protocol: o.publisher.protocol,
                        remote: o.publisher.remote,
                        started_at_ms: o.started.1,
                        uptime: o.started.0.elapsed(),
                        tracks: o.media.tracks().map(TrackSummary::of).collect(),
                        stats: Self::ingest_stats(&o),
                        mirror_drops: o.mirror_drops,
                        srt_link: o.srt_link,
                    })
                }))
            }
            Query::Viewers { name } => {
                let mut counts = ViewerCounts::default();
                if let Some(o) = self.origins.borrow().get(name.as_str()) {
                    counts.add(&o.borrow().media.viewer_counts());
                }
                if let Some(m) = self.mirrors.borrow().get(name.as_str()) {
                    counts.add(&m.borrow().media.viewer_counts());
                }
                if let Some(h) = self.hls.get(&name) {
                    counts.hls = h.active_clients(std::time::Instant::now());
                    counts.bytes_out += h.bytes_out();
                }
                Answer::Viewers(counts)
            }
            Query::Metrics => {
                let origins = self.origins.borrow();
                let protocols = origins.values().map(|o| o.borrow().publisher.protocol);
                Answer::Metrics(Box::new(crate::metrics::snapshot(self, protocols)))
            }
            Query::Stop { name, reason } => {
                let origin = self.origins.borrow().get(name.as_str()).cloned();
                Answer::Stopped(origin.is_some_and(|o| {
                    let o = o.borrow();
                    *o.stop_reason.borrow_mut() = Some(reason);
                    o.kick.set();
                    true
                }))
            }
        }
    }

    /// Starts the once-a-second `stream.stats` events of the streams published here.
    pub fn start_stats_ticker(self: &Rc<Self>) {
        let shard = self.clone();
        rt::spawn(async move {
            while !shard.shutdown.is_set() {
                futures_lite::future::or(rt::sleep(Duration::from_secs(1)), shard.shutdown.wait())
                    .await;
                let origins: Vec<Rc<RefCell<Origin>>> =
                    shard.origins.borrow().values().cloned().collect();
                for o in origins {
                    let event = {
                        let o = o.borrow();
                        Event::StreamStats {
                            stream: o.name.clone(),
                            uptime_s: o.started.0.elapsed().as_secs(),
                            ingest: Self::ingest_stats(&o),
                            viewers_local: o.media.viewer_count() as u64,
                            at_ms: unix_ms(),
                        }
                    };
                    shard.emit(event);
                }
            }
        });
    }

    /// Attaches a viewer to `name`, wherever it is published. `None` when it is not live.
    pub async fn subscribe(
        self: &Rc<Self>,
        name: &str,
        viewer: &Rc<Viewer>,
    ) -> Option<Subscription> {
        if let Some(origin) = self.origins.borrow().get(name).cloned() {
            origin.borrow_mut().media.add_viewer(viewer.clone());
            return Some(Subscription::Origin(origin));
        }
        if let Some((key, mirror)) = self.mirrors.borrow().get_key_value(name) {
            mirror.borrow_mut().media.add_viewer(viewer.clone());
            return Some(Subscription::Mirror(key.clone(), mirror.clone()));
        }
        let from = self.id;
        let owned = name.to_owned();
        let found = match self
            .request(|req| MeshMsg::Lookup {
                name: owned,
                from,
                req,
            })
            .await
        {
            Some(Reply::Lookup(found)) => found,
            _ => None,
        };
        let (shard, generation) = found?;
        if shard == self.id {
            // Published here meanwhile.
            let origin = self.origins.borrow().get(name).cloned()?;
            origin.borrow_mut().media.add_viewer(viewer.clone());
            return Some(Subscription::Origin(origin));
        }
        // Another viewer of this shard may have created the mirror while we waited.
        let existing = self
            .mirrors
            .borrow()
            .get_key_value(name)
            .map(|(k, m)| (k.clone(), m.clone()));
        let (key, mirror) = match existing {
            Some(km) => km,
            None => {
                let key: Arc<str> = Arc::from(name);
                let mirror = Rc::new(RefCell::new(Mirror {
                    generation,
                    origin: shard,
                    media: self.stream_media(),
                }));
                self.mirrors
                    .borrow_mut()
                    .insert(key.clone(), mirror.clone());
                self.send(
                    shard,
                    MeshMsg::Subscribe {
                        name: name.to_owned(),
                        generation,
                        from: self.id,
                    },
                );
                debug!(
                    shard = self.id,
                    stream = name,
                    origin = shard,
                    "mirror created"
                );
                (key, mirror)
            }
        };
        mirror.borrow_mut().media.add_viewer(viewer.clone());
        Some(Subscription::Mirror(key, mirror))
    }

    /// Detaches a viewer; a mirror without viewers unsubscribes from its origin.
    pub fn unsubscribe(self: &Rc<Self>, sub: &Subscription, viewer: &Rc<Viewer>) {
        match sub {
            Subscription::Origin(o) => o.borrow_mut().media.remove_viewer(viewer),
            Subscription::Mirror(name, m) => {
                let empty = {
                    let mut m = m.borrow_mut();
                    m.media.remove_viewer(viewer);
                    m.media.viewer_count() == 0
                };
                if !empty {
                    return;
                }
                let (generation, origin) = {
                    let m = m.borrow();
                    (m.generation, m.origin)
                };
                let mut mirrors = self.mirrors.borrow_mut();
                if mirrors.get(name).is_some_and(|cur| Rc::ptr_eq(cur, m)) {
                    mirrors.remove(name);
                    drop(mirrors);
                    self.send(
                        origin,
                        MeshMsg::Unsubscribe {
                            name: name.to_string(),
                            generation,
                            from: self.id,
                        },
                    );
                }
            }
        }
    }

    /// Ends the publisher of `name` if it is on this shard (operator action, takeover).
    pub fn kick(&self, name: &str, generation: Option<u64>) {
        if let Some(o) = self.origins.borrow().get(name) {
            let o = o.borrow();
            if generation.is_none_or(|g| g == o.generation) {
                o.kick.set();
            }
        }
    }

    /// Names and generations of the streams published on this shard.
    pub fn origin_names(&self) -> Vec<(Arc<str>, u64)> {
        self.origins
            .borrow()
            .values()
            .map(|o| {
                let o = o.borrow();
                (o.name.clone(), o.generation)
            })
            .collect()
    }

    fn add_mirror(self: &Rc<Self>, origin: &Rc<RefCell<Origin>>, from: usize) {
        let mut o = origin.borrow_mut();
        if o.mirrors.iter().any(|l| l.shard == from) {
            return;
        }
        let mut link = MirrorLink {
            shard: from,
            needs_keyframe: false,
        };
        for item in o.media.snapshot() {
            let msg = MeshMsg::Media {
                name: o.name.clone(),
                generation: o.generation,
                item,
            };
            if !self.try_send_media(from, msg) {
                link.needs_keyframe = true;
                break;
            }
        }
        o.mirrors.push(link);
    }

    /// Handles one message from the mesh (or from this shard itself).
    pub fn handle(self: &Rc<Self>, msg: MeshMsg) {
        match msg {
            MeshMsg::Claim {
                name,
                from,
                req,
                takeover,
            } => {
                let generation = self.arbiter_claim(&name, from, takeover);
                if from == self.id {
                    self.complete(req, Reply::Claim(generation));
                } else {
                    self.send(from, MeshMsg::ClaimReply { req, generation });
                }
            }
            MeshMsg::ClaimReply { req, generation } => self.complete(req, Reply::Claim(generation)),
            MeshMsg::Lookup { name, from, req } => {
                let found = self.arbiter.borrow().get(&name).copied();
                if from == self.id {
                    self.complete(req, Reply::Lookup(found));
                } else {
                    self.send(from, MeshMsg::LookupReply { req, found });
                }
            }
            MeshMsg::LookupReply { req, found } => self.complete(req, Reply::Lookup(found)),
            MeshMsg::Release { name, generation } => {
                let mut arb = self.arbiter.borrow_mut();
                if arb.get(&name).is_some_and(|(_, g)| *g == generation) {
                    arb.remove(&name);
                    info!(stream = %name, generation, "stream released");
                }
            }
            MeshMsg::Kick { name, generation } => self.kick(&name, Some(generation)),
            MeshMsg::Subscribe {
                name,
                generation,
                from,
            } => {
                let origin = self.origins.borrow().get(name.as_str()).cloned();
                match origin {
                    Some(o) if o.borrow().generation == generation => self.add_mirror(&o, from),
                    Some(_) => {}
                    None => {
                        let mut pending = self.pending_subscriptions.borrow_mut();
                        if pending.len() < MAX_PENDING_SUBSCRIPTIONS {
                            pending.entry((name, generation)).or_default().push(from);
                        }
                    }
                }
            }
            MeshMsg::Unsubscribe {
                name,
                generation,
                from,
            } => {
                if let Some(o) = self.origins.borrow().get(name.as_str()) {
                    let mut o = o.borrow_mut();
                    if o.generation == generation {
                        o.mirrors.retain(|l| l.shard != from);
                    }
                }
            }
            MeshMsg::Media {
                name,
                generation,
                item,
            } => {
                let mirror = self.mirrors.borrow().get(&name).cloned();
                if let Some(m) = mirror {
                    let mut m = m.borrow_mut();
                    if m.generation == generation {
                        m.media.apply(&item);
                    }
                }
            }
            MeshMsg::Hls { name, updates } => self.hls.apply(&name, &updates),
            MeshMsg::Event(event) => self.events.deliver(&event),
            MeshMsg::Query { from, req, query } => {
                let answer = self.answer(query);
                self.send(from, MeshMsg::Answer { req, answer });
            }
            MeshMsg::Answer { req, answer } => self.complete(req, Reply::Answer(answer)),
            MeshMsg::End { name, generation } => {
                let mut mirrors = self.mirrors.borrow_mut();
                if mirrors
                    .get(&name)
                    .is_some_and(|m| m.borrow().generation == generation)
                {
                    if let Some(m) = mirrors.remove(&name) {
                        m.borrow_mut().media.end();
                    }
                }
            }
        }
    }

    /// Arbiter (shard 0): grants `name` to `from`, or refuses while another publisher is live.
    fn arbiter_claim(self: &Rc<Self>, name: &str, from: usize, takeover: bool) -> Option<u64> {
        debug_assert_eq!(self.id, 0, "only shard 0 arbitrates");
        let current = self.arbiter.borrow().get(name).copied();
        if let Some((shard, generation)) = current {
            if !takeover {
                return None;
            }
            warn!(stream = name, "publisher taken over by a newer one");
            self.send(
                shard,
                MeshMsg::Kick {
                    name: name.to_owned(),
                    generation,
                },
            );
        }
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        self.arbiter
            .borrow_mut()
            .insert(name.to_owned(), (from, generation));
        Some(generation)
    }
}
