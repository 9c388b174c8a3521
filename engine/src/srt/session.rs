//! The task of one SRT session: drives the sans-IO [`Connection`] with datagrams from the
//! endpoint, its timers, and (for a player) the stream's MPEG-TS messages.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future;
use tracing::{debug, info, warn};
use zerocast_codecs::ts::{DemuxConfig, DemuxEvent, Demuxer};
use zerocast_codecs::{ByteRope, MediaKind};
use zerocast_srt::{CloseReason, Connection, Event as SrtEvent, Input, Output};

use super::Endpoint;
use crate::admission::Admitted;
use crate::events::{unix_ms, Event};
use crate::limits::ConnectionGuard;
use crate::metrics::{Egress, ErrorKind, OpenConnection, PlayerGauge, Protocol};
use crate::outbox::{OutItem, Outbox};
use crate::rt::{self, tcp::MAX_IOVECS, LocalEvent};
use crate::shard::{Shard, Subscription};
use crate::stream::{MediaItem, Viewer, ViewerFormat};

/// How often a publisher's link statistics are copied to its origin.
const STATS_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);

/// Seven 188-byte TS packets: the payload every SRT implementation sends and expects.
const TS_PAYLOAD: usize = 1316;

/// Datagrams from the endpoint to a session task, bounded.
#[derive(Default)]
pub struct SessionInbox {
    inner: RefCell<InboxState>,
}

#[derive(Default)]
struct InboxState {
    queue: VecDeque<Bytes>,
    waker: Option<Waker>,
    dropped: u64,
}

impl SessionInbox {
    /// Queues a datagram; false (and dropped) when `limit` are already waiting.
    pub fn push(&self, datagram: Bytes, limit: usize) -> bool {
        let mut s = self.inner.borrow_mut();
        if s.queue.len() >= limit {
            s.dropped += 1;
            return false;
        }
        s.queue.push_back(datagram);
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        true
    }

    async fn ready(&self) {
        poll_fn(|cx| {
            let mut s = self.inner.borrow_mut();
            if s.queue.is_empty() {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await
    }

    fn pop(&self) -> Option<Bytes> {
        self.inner.borrow_mut().queue.pop_front()
    }
}

/// Why a session task woke.
enum Wake {
    Datagram,
    Timer,
    Media(bool),
    Kicked,
    Ended,
    Shutdown,
}

/// What both roles share: the connection and how to reach the peer.
/// Counts as an open connection of its shard (and in the metrics) while it lives.
pub(super) struct Driver {
    endpoint: Rc<Endpoint>,
    conn: Box<Connection>,
    inbox: Rc<SessionInbox>,
    peer: SocketAddr,
    deadline: Instant,
    id: u64,
    _open: OpenConnection,
    _guard: ConnectionGuard,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let shard = &self.endpoint.shard;
        shard.connections.set(shard.connections.get() - 1);
    }
}

impl Driver {
    /// The task state of an accepted session; `guard` holds its place in the SRT limits.
    pub(super) fn new(
        endpoint: Rc<Endpoint>,
        conn: Box<Connection>,
        inbox: Rc<SessionInbox>,
        peer: SocketAddr,
        id: u64,
        guard: ConnectionGuard,
    ) -> Driver {
        let shard = &endpoint.shard;
        shard.connections.set(shard.connections.get() + 1);
        let open = shard.metrics.connection_opened(Protocol::Srt);
        Driver {
            deadline: rt::now(),
            endpoint,
            conn,
            inbox,
            peer,
            id,
            _open: open,
            _guard: guard,
        }
    }

    /// Sends what the session wants sent and returns its events.
    async fn drain(&mut self, events: &mut Vec<SrtEvent>) {
        loop {
            match self.conn.poll_output() {
                Output::Transmit(rope) => {
                    self.endpoint.send(rope.parts(), self.peer).await;
                }
                Output::Event(e) => events.push(e),
                Output::Timeout(t) => {
                    self.deadline = t;
                    return;
                }
            }
        }
    }

    /// Ends the session: sends the shutdown (what is queued goes first).
    async fn close(&mut self) {
        self.conn.close(rt::now());
        self.drain(&mut Vec::new()).await;
    }

    fn feed_inbox(&mut self) {
        while let Some(d) = self.inbox.pop() {
            self.conn.handle_input(Input::Receive(rt::now(), d));
        }
    }

    fn log_end(&self, what: &str, reason: &str) {
        let s = self.conn.stats();
        info!(
            conn = self.id,
            peer = %self.peer,
            rtt_ms = s.rtt_us as f64 / 1000.0,
            lost = s.lost,
            recovered = s.recovered,
            retransmitted = s.retransmitted,
            rexmit_timeouts = s.rexmit_timeouts,
            dropped_too_late = s.dropped_too_late,
            send_dropped = s.send_dropped,
            "srt {what} ended: {reason}"
        );
    }
}

fn link_stats(conn: &Connection) -> crate::control::SrtLinkStats {
    let s = conn.stats();
    crate::control::SrtLinkStats {
        rtt_us: s.rtt_us,
        latency_ms: conn.recv_latency().as_millis().min(u128::from(u32::MAX)) as u32,
        recv_rate_bps: s.recv_rate_bps,
        packets_received: s.packets_received,
        lost: s.lost,
        recovered: s.recovered,
        retransmitted: s.retransmitted_received,
        dropped_too_late: s.dropped_too_late,
        duplicates: s.duplicates,
        buffered_packets: s.recv_buffer_packets,
    }
}

fn close_reason(r: &CloseReason) -> String {
    match r {
        CloseReason::PeerShutdown => "publisher disconnected".into(),
        CloseReason::PeerIdle => "error: SRT peer silent for srt.peer_idle_timeout".into(),
        CloseReason::Local => "server stopping".into(),
        CloseReason::PeerError(code) => format!("error: SRT peer error {code}"),
    }
}

/// Runs a publisher: delivered payloads are MPEG-TS, demuxed into the stream's origin.
pub(super) async fn run_publisher(mut d: Driver, admitted: Admitted) {
    let shard = d.endpoint.shard.clone();
    let (id, peer) = (d.id, d.peer);
    let origin = admitted.origin;
    let kick = origin.borrow().kick.clone();
    let mut demux = Demuxer::new(DemuxConfig::default());
    let mut media = Vec::new();
    let mut events = Vec::new();
    let mut stats_at = rt::now();
    let reason = 'session: loop {
        d.drain(&mut events).await;
        if rt::now() >= stats_at {
            // For the API's live view; a quarter second is fresh enough.
            stats_at = rt::now() + STATS_PERIOD;
            origin.borrow_mut().srt_link = Some(link_stats(&d.conn));
        }
        for ev in events.drain(..) {
            match ev {
                SrtEvent::Data(payload) => {
                    if let Err(e) = demux.push(payload, rt::now(), &mut media) {
                        shard.metrics.error(Protocol::Srt, ErrorKind::BadMedia);
                        warn!(conn = id, %peer, "srt publisher sent bad MPEG-TS: {e}");
                        d.close().await;
                        break 'session format!("error: bad MPEG-TS: {e}");
                    }
                    for m in media.drain(..) {
                        let item = match m {
                            DemuxEvent::Track(t) => MediaItem::Track(t),
                            DemuxEvent::Frame(f) => MediaItem::Frame(f),
                        };
                        shard.publish_item(&origin, item);
                    }
                }
                SrtEvent::Closed(r) => break 'session close_reason(&r),
            }
        }
        let wake = {
            let inbox = async {
                d.inbox.ready().await;
                Wake::Datagram
            };
            let timer = async {
                rt::sleep_until(d.deadline).await;
                Wake::Timer
            };
            let kicked = async {
                kick.wait().await;
                Wake::Kicked
            };
            let stop = async {
                shard.shutdown.wait().await;
                Wake::Shutdown
            };
            future::or(future::or(inbox, timer), future::or(kicked, stop)).await
        };
        match wake {
            Wake::Datagram => d.feed_inbox(),
            Wake::Timer => d.conn.handle_input(Input::Timeout(rt::now())),
            Wake::Kicked => {
                d.close().await;
                break "replaced by a newer publisher or stopped".into();
            }
            Wake::Shutdown => {
                d.close().await;
                break "server stopping".into();
            }
            Wake::Media(_) | Wake::Ended => {}
        }
    };
    d.log_end("publisher", &reason);
    shard.end_origin(&origin, &reason);
}

/// A subscription of an SRT player to a stream, in MPEG-TS.
pub(super) struct Player {
    viewer: Rc<Viewer>,
    sub: Subscription,
    name: Arc<str>,
    joined_at_ms: u64,
}

impl Player {
    /// Subscribes to `name`; `None` when it is not live.
    pub(super) async fn subscribe(shard: &Rc<Shard>, name: &str) -> Option<Player> {
        let viewer = Rc::new(Viewer {
            outbox: Outbox::with_metrics(
                shard.cfg.limits.viewer_queue_bytes,
                shard.metrics.clone(),
            ),
            stream_id: 0,
            ended: LocalEvent::new(),
            format: ViewerFormat::Ts,
        });
        let sub = shard.subscribe(name, &viewer).await?;
        Some(Player {
            viewer,
            sub,
            name: Arc::from(name),
            joined_at_ms: unix_ms(),
        })
    }

    /// Detaches from the stream before the session started (the handshake failed).
    pub(super) fn leave(self, shard: &Rc<Shard>) {
        shard.unsubscribe(&self.sub, &self.viewer);
    }
}

/// Runs a player: the stream's TS messages are cut into 1316-byte payloads and sent.
pub(super) async fn run_player(mut d: Driver, player: Player) {
    let shard = d.endpoint.shard.clone();
    let (id, peer) = (d.id, d.peer);
    let _gauge: PlayerGauge = shard.metrics.player_joined(Protocol::Srt);
    shard.emit(Event::ViewerJoined {
        stream: player.name.clone(),
        protocol: "srt",
        remote: peer,
        at_ms: player.joined_at_ms,
    });
    let outbox = player.viewer.outbox.clone();
    let mut batch: Vec<OutItem> = Vec::new();
    let mut slices: Vec<Bytes> = Vec::new();
    let mut events = Vec::new();
    let reason = 'session: loop {
        d.drain(&mut events).await;
        for ev in events.drain(..) {
            match ev {
                SrtEvent::Data(_) => {} // a player has nothing to say
                SrtEvent::Closed(r) => {
                    break 'session match r {
                        CloseReason::PeerShutdown => "player disconnected".to_owned(),
                        other => close_reason(&other),
                    }
                }
            }
        }
        let wake = {
            let inbox = async {
                d.inbox.ready().await;
                Wake::Datagram
            };
            let timer = async {
                rt::sleep_until(d.deadline).await;
                Wake::Timer
            };
            let media =
                async { Wake::Media(outbox.next_batch(&mut batch, &mut slices, MAX_IOVECS).await) };
            let ended = async {
                player.viewer.ended.wait().await;
                Wake::Ended
            };
            let stop = async {
                shard.shutdown.wait().await;
                Wake::Shutdown
            };
            future::or(
                future::or(inbox, timer),
                future::or(media, future::or(ended, stop)),
            )
            .await
        };
        match wake {
            Wake::Datagram => d.feed_inbox(),
            Wake::Timer => d.conn.handle_input(Input::Timeout(rt::now())),
            Wake::Media(true) => {
                send_media(&shard, &mut d.conn, &batch);
                batch.clear();
                slices.clear();
            }
            Wake::Media(false) => {
                d.close().await;
                break "player too slow".into();
            }
            Wake::Ended => {
                d.close().await;
                break "stream ended".into();
            }
            Wake::Shutdown => {
                d.close().await;
                break "server stopping".into();
            }
            Wake::Kicked => {}
        }
    };
    d.log_end("player", &reason);
    let dropped = player.viewer.outbox.dropped_frames();
    shard.stats.borrow_mut().viewer_dropped_frames += dropped;
    shard.unsubscribe(&player.sub, &player.viewer);
    shard.emit(Event::ViewerLeft {
        stream: player.name.clone(),
        protocol: "srt",
        remote: peer,
        joined_at_ms: player.joined_at_ms,
        at_ms: unix_ms(),
        bytes: d.conn.stats().bytes_sent,
        dropped_frames: dropped,
    });
    debug!(conn = id, "srt player gone");
}

/// Cuts a batch of TS messages into SRT payloads (whole TS packets, 1316 bytes but for the
/// last) and queues them, without copying the media.
fn send_media(shard: &Rc<Shard>, conn: &mut Connection, batch: &[OutItem]) {
    let mut all = ByteRope::new();
    for item in batch {
        all.append(item.wire());
    }
    let now = rt::now();
    // Stamped with when the media entered the engine: the time it waited for this session's
    // turn on the shard is absorbed by the player's latency buffer.
    let source = batch
        .iter()
        .filter_map(|i| match i {
            OutItem::Media(m) => m.ingest,
            _ => None,
        })
        .min()
        .unwrap_or(now);
    let mut reader = all.reader();
    let mut sent = 0u64;
    while reader.remaining() > 0 {
        let n = reader.remaining().min(TS_PAYLOAD);
        // `n` is at most what remains.
        let chunk = reader.take(n).expect("within the rope");
        sent += chunk.len() as u64;
        conn.send_stamped(now, source, chunk);
    }
    shard.metrics.sent(Egress::Srt, sent);
    outbox_latency(shard, batch, now);
}

/// Ingest-to-send latency of the video frames just handed to the session.
fn outbox_latency(shard: &Rc<Shard>, batch: &[OutItem], now: Instant) {
    let mut stats = shard.stats.borrow_mut();
    for item in batch {
        if let OutItem::Media(m) = item {
            if let (Some(t), MediaKind::Video) = (m.ingest, m.kind) {
                let us = now.saturating_duration_since(t).as_micros() as u64;
                stats.srt_egress_latency_us.saturating_record(us.max(1));
            }
        }
    }
}
