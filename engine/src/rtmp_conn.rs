//! The RTMP connection driver: turns socket reads into `ServerSession` input, session output
//! into socket writes, and session events into stream routing.
//!
//! Each connection has two tasks on its shard: this reader, which owns the sans-IO session,
//! and a writer, which drains the connection's [`Outbox`]. Only the writer writes to the
//! socket, so control messages and shared media never interleave mid-message.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures_lite::future;
use tracing::{debug, info, warn};
use zerocast_codecs::MediaKind;
use zerocast_rtmp::{Input, Limits, Output, ServerEvent, ServerSession, SessionConfig};

use crate::admission::{admit_publish, PublishRequest, Refusal};
use crate::config::Config;
use crate::events::{unix_ms, Event};
use crate::ingest::FlvIngest;
use crate::metrics::{Egress, ErrorKind, PlayerGauge, Protocol};
use crate::outbox::{OutItem, Outbox};
use crate::rt::{self, tcp::MAX_IOVECS, LocalEvent};
use crate::shard::{Origin, Shard, Subscription};
use crate::stream::{MediaItem, Viewer, ViewerFormat};
use crate::transport::Transport;

/// The RTMP application name in publish and play URLs (`rtmp://host/live/KEY`).
pub const APP_NAME: &str = "live";

/// Session settings from the configuration.
pub fn session_config(cfg: &Config) -> SessionConfig {
    let defaults = SessionConfig::default();
    SessionConfig {
        out_chunk_size: cfg.rtmp.chunk_size,
        window_ack_size: cfg.rtmp.window_ack_size,
        handshake_timeout: cfg.limits.handshake_timeout,
        idle_timeout: cfg.limits.idle_timeout,
        limits: Limits {
            max_chunk_size: cfg.rtmp.max_chunk_size,
            max_message_size: cfg.rtmp.max_message_size,
            max_amf_depth: cfg.rtmp.max_amf_depth,
            max_amf_string: cfg.rtmp.max_amf_string,
            ..defaults.limits
        },
    }
}

struct Publishing {
    stream_id: u32,
    origin: Rc<RefCell<Origin>>,
    ingest: FlvIngest,
}

struct Playing {
    stream_id: u32,
    sub: Subscription,
    viewer: Rc<Viewer>,
    name: std::sync::Arc<str>,
    joined_at_ms: u64,
    /// Counts this player in `zerocast_viewers` while it lives.
    _counted: PlayerGauge,
}

/// Why a connection ends, for the log.
enum End {
    PeerClosed,
    Shutdown,
    Kicked,
    StreamEnded,
    Refused,
    Error(String),
}

/// What woke the reader.
enum Wake {
    Data(std::io::Result<Bytes>),
    Timer,
    Shutdown,
    Kicked,
    StreamEnded,
}

struct Conn {
    shard: Rc<Shard>,
    transport: Transport,
    session: ServerSession,
    outbox: Rc<Outbox>,
    app: Option<String>,
    publishing: Option<Publishing>,
    playing: Option<Playing>,
    deadline: Option<Instant>,
    /// A connection must be publishing or playing by then (`limits.handshake_timeout` after
    /// accept), so a peer that trickles bytes cannot hold a connection without using it.
    setup_deadline: Instant,
    /// Set once the connection published or played.
    set_up: bool,
    /// Events met while flushing transmits early; handled before polling the session again.
    pending: std::collections::VecDeque<ServerEvent>,
    id: u64,
}

/// Serves one RTMP(S) connection until it ends.
pub async fn serve(shard: Rc<Shard>, transport: Transport, id: u64) {
    let peer = transport.peer_addr();
    let _ = transport
        .tcp()
        .set_write_timeout(Some(shard.cfg.limits.viewer_stall));
    let outbox = Outbox::with_metrics(shard.cfg.limits.viewer_queue_bytes, shard.metrics.clone());
    let writer_done = LocalEvent::new();
    rt::spawn(run_writer(
        shard.clone(),
        transport.clone(),
        outbox.clone(),
        writer_done.clone(),
        id,
    ));
    let mut conn = Conn {
        session: ServerSession::new(session_config(&shard.cfg), rt::now()),
        transport,
        outbox,
        app: None,
        publishing: None,
        playing: None,
        deadline: None,
        setup_deadline: rt::now() + shard.cfg.limits.handshake_timeout,
        set_up: false,
        pending: Default::default(),
        shard,
        id,
    };
    let end = conn.run().await;
    match &end {
        End::PeerClosed => debug!(conn = id, %peer, "connection closed by peer"),
        End::Shutdown => debug!(conn = id, %peer, "connection closed: server stopping"),
        End::Kicked => info!(conn = id, %peer, "publisher ended: replaced or stopped"),
        End::StreamEnded => debug!(conn = id, %peer, "player done: stream ended"),
        End::Refused => debug!(conn = id, %peer, "connection closed after a refusal"),
        End::Error(e) => warn!(conn = id, %peer, "connection closed: {e}"),
    }
    conn.finish(&end).await;
    let _ = rt::timeout(std::time::Duration::from_secs(2), writer_done.wait()).await;
    conn.transport.close().await;
}

impl Conn {
    async fn run(&mut self) -> End {
        loop {
            if let Some(end) = self.drain().await {
                return end;
            }
            if self.awaiting_setup() && rt::now() >= self.setup_deadline {
                self.shard.metrics.handshake_failed(self.metrics_protocol());
                return End::Error(
                    "neither publishing nor playing within limits.handshake_timeout".into(),
                );
            }
            let wake = self.wait().await;
            let now = rt::now();
            let result = match wake {
                Wake::Data(Ok(data)) if data.is_empty() => return End::PeerClosed,
                Wake::Data(Ok(data)) => self.session.handle_input(Input::Receive(now, data)),
                Wake::Data(Err(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
                {
                    return End::PeerClosed
                }
                Wake::Data(Err(e)) => {
                    // With TLS, a failed TLS handshake surfaces as a read error.
                    if matches!(&self.transport, Transport::Tls(_, t) if t.borrow().is_handshaking())
                    {
                        self.shard.metrics.handshake_failed(self.metrics_protocol());
                    } else {
                        self.count_error(ErrorKind::Io);
                    }
                    return End::Error(format!("read failed: {e}"));
                }
                Wake::Timer => self.session.handle_input(Input::Timeout(now)),
                Wake::Shutdown => {
                    // Tell a player its stream is over rather than just hanging up.
                    if let Some(p) = &self.playing {
                        self.session.end_play(p.stream_id);
                        self.flush_transmits();
                    }
                    return End::Shutdown;
                }
                Wake::Kicked => return End::Kicked,
                Wake::StreamEnded => {
                    // `finish` detaches the player and raises `viewer.left`.
                    if let Some(id) = self.playing.as_ref().map(|p| p.stream_id) {
                        self.session.end_play(id);
                        self.flush_transmits();
                    }
                    return End::StreamEnded;
                }
            };
            if let Err(e) = result {
                use zerocast_rtmp::Error as E;
                match &e {
                    E::HandshakeTimeout | E::BadHandshakeVersion { .. } => {
                        self.shard.metrics.handshake_failed(self.metrics_protocol())
                    }
                    E::IdleTimeout => self.count_error(ErrorKind::Timeout),
                    _ if !self.session.is_established() => {
                        self.shard.metrics.handshake_failed(self.metrics_protocol())
                    }
                    _ => self.count_error(ErrorKind::Protocol),
                }
                return End::Error(format!("protocol error: {e}"));
            }
        }
    }

    /// True until the connection first publishes or plays.
    fn awaiting_setup(&self) -> bool {
        !self.set_up
    }

    async fn wait(&self) -> Wake {
        let outbox = self.outbox.clone();
        let read = async {
            let nudge = move || outbox.nudge();
            Wake::Data(self.transport.read(&nudge).await)
        };
        let setup = self.awaiting_setup().then_some(self.setup_deadline);
        let timer = async {
            match self.deadline.into_iter().chain(setup).min() {
                Some(d) => rt::sleep_until(d).await,
                None => future::pending::<()>().await,
            }
            Wake::Timer
        };
        let shutdown = async {
            self.shard.shutdown.wait().await;
            Wake::Shutdown
        };
        let kicked = async {
            match &self.publishing {
                Some(p) => {
                    let kick = p.origin.borrow().kick.clone();
                    kick.wait().await
                }
                None => future::pending::<()>().await,
            }
            Wake::Kicked
        };
        let ended = async {
            match &self.playing {
                Some(p) => p.viewer.ended.wait().await,
                None => future::pending::<()>().await,
            }
            Wake::StreamEnded
        };
        future::or(
            future::or(read, timer),
            future::or(shutdown, future::or(kicked, ended)),
        )
        .await
    }

    /// Moves session output to the outbox and acts on events, until the session waits.
    async fn drain(&mut self) -> Option<End> {
        loop {
            let out = match self.pending.pop_front() {
                Some(ev) => Output::Event(ev),
                None => self.session.poll_output(),
            };
            match out {
                Output::Transmit(rope) => self.outbox.push_control(rope),
                Output::Timeout(t) => {
                    self.deadline = Some(t);
                    return None;
                }
                Output::Event(ev) => {
                    if let Some(end) = self.on_event(ev).await {
                        // Send what the session said (a refusal) before closing.
                        self.flush_transmits();
                        return Some(end);
                    }
                }
            }
        }
    }

    /// Moves the session's pending transmits to the outbox now, keeping events for later.
    fn flush_transmits(&mut self) {
        loop {
            match self.session.poll_output() {
                Output::Transmit(rope) => self.outbox.push_control(rope),
                Output::Event(ev) => self.pending.push_back(ev),
                Output::Timeout(t) => {
                    self.deadline = Some(t);
                    return;
                }
            }
        }
    }

    async fn on_event(&mut self, ev: ServerEvent) -> Option<End> {
        match ev {
            ServerEvent::Connect { app, .. } => {
                debug!(conn = self.id, app = %app, "connect");
                self.app = Some(app);
                None
            }
            ServerEvent::Publish {
                stream_id, name, ..
            } => self.on_publish(stream_id, &name).await,
            ServerEvent::Play { stream_id, name } => self.on_play(stream_id, &name).await,
            ServerEvent::Media(msg) => {
                let Some(p) = &mut self.publishing else {
                    self.count_error(ErrorKind::Protocol);
                    return Some(End::Error(format!(
                        "media on stream id {} that is not publishing",
                        msg.stream_id
                    )));
                };
                if msg.stream_id != p.stream_id {
                    return None;
                }
                match p.ingest.ingest(&msg, rt::now()) {
                    Ok(Some(item)) => self.shard.publish_item(&p.origin, item),
                    Ok(None) => {}
                    Err(e) => {
                        // Tell the encoder why before hanging up.
                        let stream_id = p.stream_id;
                        self.session.send_status(
                            stream_id,
                            "error",
                            "NetStream.Publish.Failed",
                            &format!("unsupported or malformed {:?} data: {e}", msg.kind),
                        );
                        self.shard
                            .metrics
                            .error(self.metrics_protocol(), ErrorKind::BadMedia);
                        return Some(End::Error(format!("bad {:?} tag: {e}", msg.kind)));
                    }
                }
                None
            }
            ServerEvent::Metadata {
                stream_id,
                timestamp,
                payload,
            } => {
                if let Some(p) = &self.publishing {
                    if p.stream_id == stream_id {
                        self.shard.publish_item(
                            &p.origin,
                            MediaItem::Metadata {
                                timestamp,
                                body: payload,
                            },
                        );
                    }
                }
                None
            }
            ServerEvent::Unpublish { stream_id } => {
                if self
                    .publishing
                    .as_ref()
                    .is_some_and(|p| p.stream_id == stream_id)
                {
                    if let Some(p) = self.publishing.take() {
                        info!(conn = self.id, stream = %p.origin.borrow().name, "unpublished");
                        self.shard.end_origin(&p.origin, "publisher unpublished");
                    }
                }
                None
            }
            ServerEvent::PlayStop { stream_id } => {
                if self
                    .playing
                    .as_ref()
                    .is_some_and(|p| p.stream_id == stream_id)
                {
                    if let Some(p) = self.playing.take() {
                        self.leave(p);
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn app_ok(&self) -> bool {
        self.app
            .as_deref()
            .is_some_and(|a| a.trim_matches('/') == APP_NAME)
    }

    async fn on_publish(&mut self, stream_id: u32, raw_name: &str) -> Option<End> {
        const BAD_NAME: &str = "NetStream.Publish.BadName";
        if self.publishing.is_some() || self.playing.is_some() {
            self.session.reject_publish(
                stream_id,
                BAD_NAME,
                "this connection already has a stream",
            );
            return Some(End::Refused);
        }
        if !self.app_ok() {
            self.session.reject_publish(
                stream_id,
                BAD_NAME,
                &format!("unknown application; publish to rtmp://HOST/{APP_NAME}/KEY"),
            );
            return Some(End::Refused);
        }
        // The key is secret: never log `raw_name`.
        let request = PublishRequest {
            protocol: self.protocol(),
            remote: self.transport.peer_addr(),
            key: strip_query(raw_name),
            app: self.app.as_deref().unwrap_or_default(),
            conn: self.id,
        };
        let admitted = match admit_publish(&self.shard, request).await {
            Ok(a) => a,
            Err(refusal) => {
                let code = match refusal {
                    Refusal::StoreUnavailable | Refusal::HookUnanswered => {
                        "NetStream.Publish.Failed"
                    }
                    _ => BAD_NAME,
                };
                self.session
                    .reject_publish(stream_id, code, refusal.message());
                return Some(End::Refused);
            }
        };
        self.session.accept_publish(stream_id);
        self.set_up = true;
        self.publishing = Some(Publishing {
            stream_id,
            origin: admitted.origin,
            ingest: FlvIngest::default(),
        });
        None
    }

    async fn on_play(&mut self, stream_id: u32, raw_name: &str) -> Option<End> {
        const NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
        let name = strip_query(raw_name);
        if self.publishing.is_some() || self.playing.is_some() {
            self.session.reject_play(
                stream_id,
                "NetStream.Play.Failed",
                "this connection already has a stream",
            );
            return Some(End::Refused);
        }
        if !self.app_ok() || crate::store::validate_name(name).is_err() {
            self.session
                .reject_play(stream_id, NOT_FOUND, "no such stream");
            return Some(End::Refused);
        }
        let viewer = Rc::new(Viewer {
            outbox: self.outbox.clone(),
            stream_id,
            ended: LocalEvent::new(),
            format: ViewerFormat::Rtmp,
        });
        // The play replies must precede the first media message: accept and flush them to the
        // outbox before the viewer is attached (which queues headers and the GOP cache).
        self.session.accept_play(stream_id);
        self.flush_transmits();
        match self.shard.subscribe(name, &viewer).await {
            Some(sub) => {
                info!(conn = self.id, stream = %name, shard = self.shard.id, peer = %self.transport.peer_addr(), "playing");
                self.set_up = true;
                let name: std::sync::Arc<str> = std::sync::Arc::from(name);
                let joined_at_ms = unix_ms();
                self.shard.emit(Event::ViewerJoined {
                    stream: name.clone(),
                    protocol: self.protocol(),
                    remote: self.transport.peer_addr(),
                    at_ms: joined_at_ms,
                });
                self.playing = Some(Playing {
                    stream_id,
                    sub,
                    viewer,
                    name,
                    joined_at_ms,
                    _counted: self.shard.metrics.player_joined(self.metrics_protocol()),
                });
                None
            }
            None => {
                debug!(conn = self.id, stream = %name, "play of a stream that is not live");
                self.session
                    .send_status(stream_id, "error", NOT_FOUND, "stream is not live");
                Some(End::Refused)
            }
        }
    }

    /// Leaves streams and closes the outbox after what is queued (a refusal, a final
    /// status) is sent; the writer gives up at once if the socket is dead.
    async fn finish(&mut self, end: &End) {
        if let Some(p) = self.publishing.take() {
            info!(conn = self.id, stream = %p.origin.borrow().name, "publisher gone");
            let reason = match end {
                End::PeerClosed => "publisher disconnected".to_owned(),
                End::Shutdown => "server stopping".to_owned(),
                End::Kicked => "replaced by a newer publisher".to_owned(),
                End::StreamEnded | End::Refused => "publisher left".to_owned(),
                End::Error(e) => format!("error: {e}"),
            };
            self.shard.end_origin(&p.origin, &reason);
        }
        if let Some(p) = self.playing.take() {
            self.leave(p);
        }
        self.outbox.close_after_flush();
    }

    /// Detaches a player from its stream and says so.
    fn leave(&mut self, p: Playing) {
        let dropped = p.viewer.outbox.dropped_frames();
        if dropped > 0 {
            info!(
                conn = self.id,
                dropped, "viewer left; frames dropped because it was slow"
            );
        }
        self.shard.stats.borrow_mut().viewer_dropped_frames += dropped;
        self.shard.unsubscribe(&p.sub, &p.viewer);
        self.shard.emit(Event::ViewerLeft {
            stream: p.name,
            protocol: self.protocol(),
            remote: self.transport.peer_addr(),
            joined_at_ms: p.joined_at_ms,
            at_ms: unix_ms(),
            bytes: p.viewer.outbox.sent_bytes(),
            dropped_frames: dropped,
        });
    }

    fn protocol(&self) -> &'static str {
        match self.transport {
            Transport::Plain(_) => "rtmp",
            Transport::Tls(..) => "rtmps",
        }
    }

    fn metrics_protocol(&self) -> Protocol {
        Protocol::rtmp(matches!(self.transport, Transport::Tls(..)))
    }

    fn count_error(&self, kind: ErrorKind) {
        self.shard.metrics.error(self.metrics_protocol(), kind);
    }
}

/// Drops the `?query` part of a stream name (`KEY?token=...`).
fn strip_query(name: &str) -> &str {
    name.split('?').next().unwrap_or(name)
}

async fn run_writer(
    shard: Rc<Shard>,
    transport: Transport,
    outbox: Rc<Outbox>,
    done: LocalEvent,
    id: u64,
) {
    let mut batch: Vec<OutItem> = Vec::new();
    let mut slices: Vec<Bytes> = Vec::new();
    while outbox.next_batch(&mut batch, &mut slices, MAX_IOVECS).await {
        let result = if slices.is_empty() {
            transport.flush().await
        } else {
            transport.write_all(&slices).await
        };
        if let Err(e) = result {
            if e.kind() == std::io::ErrorKind::TimedOut {
                warn!(conn = id, stall = ?shard.cfg.limits.viewer_stall, "viewer dropped: it took nothing for limits.viewer_stall");
                let tls = matches!(transport, Transport::Tls(..));
                shard
                    .metrics
                    .error(Protocol::rtmp(tls), ErrorKind::ViewerStall);
            } else {
                debug!(conn = id, "write failed: {e}");
            }
            outbox.abort();
            transport.shutdown();
            break;
        }
        let sent = slices.iter().map(|s| s.len() as u64).sum();
        outbox.add_sent(sent);
        shard
            .metrics
            .sent(Egress::rtmp(matches!(transport, Transport::Tls(..))), sent);
        let now = rt::now();
        let mut stats = shard.stats.borrow_mut();
        for item in batch.drain(..) {
            if let OutItem::Media(m) = item {
                if let (Some(t), MediaKind::Video) = (m.ingest, m.kind) {
                    let us = now.saturating_duration_since(t).as_micros() as u64;
                    stats.rtmp_egress_latency_us.saturating_record(us.max(1));
                    // Live frames are queued for every viewer right after they are encoded.
                    let waited = now.saturating_duration_since(m.queued).as_micros() as u64;
                    stats.rtmp_queue_wait_us.saturating_record(waited.max(1));
                }
            }
        }
        drop(stats);
        slices.clear();
    }
    done.set();
}
