//! The server role: accepts publishers and players.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use zerocast_codecs::ByteRope;

use crate::amf0::Amf0Value;
use crate::chunk::ChunkDecoder;
use crate::command::{self, Command};
use crate::config::SessionConfig;
use crate::conn::{self, Conn, Incoming};
use crate::error::Error;
use crate::handshake::{ServerHandshake, HANDSHAKE_SIZE};
use crate::message::{self, user_control, MessageType, RawMessage, CSID_CONTROL};
use crate::timer::Timer;
use crate::{Input, MediaMessage, Output};

/// Most message streams one connection may create with `createStream`.
pub const MAX_STREAMS: usize = 16;

/// What the server session tells its driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The peer sent `connect`; the session has already answered `NetConnection.Connect.Success`
    /// (after Window Ack Size, Set Peer Bandwidth and Set Chunk Size).
    Connect {
        /// The `app` property (may be empty).
        app: String,
        /// The `tcUrl` property, when sent.
        tc_url: Option<String>,
    },
    /// The peer wants to publish. Answer with [`ServerSession::accept_publish`] or
    /// [`ServerSession::reject_publish`]. Media for the stream is delivered from now on.
    Publish {
        /// Message stream id the peer publishes on.
        stream_id: u32,
        /// Publishing name as sent (query string included).
        name: String,
        /// Publishing type: "live", "record" or "append" ("live" when absent).
        kind: String,
    },
    /// The peer wants to play. Answer with [`ServerSession::accept_play`] or
    /// [`ServerSession::reject_play`].
    Play {
        /// Message stream id to send the media on.
        stream_id: u32,
        /// Stream name as sent.
        name: String,
    },
    /// Audio, video or timed data (not `onMetaData`) from a publishing stream. Aggregate
    /// messages arrive split into their tags.
    Media(MediaMessage),
    /// `onMetaData` from a publishing stream.
    Metadata {
        /// The publishing stream.
        stream_id: u32,
        /// Message timestamp.
        timestamp: u32,
        /// AMF0 data body starting with the "onMetaData" string (`@setDataFrame` stripped).
        payload: ByteRope,
    },
    /// The publisher stopped (`FCUnpublish`, `closeStream` or `deleteStream`).
    Unpublish {
        /// The stream that was publishing.
        stream_id: u32,
    },
    /// The player stopped (`closeStream` or `deleteStream`).
    PlayStop {
        /// The stream that was playing.
        stream_id: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum StreamState {
    Idle,
    PublishRequested(String),
    Publishing(String),
    PlayRequested,
    Playing,
}

#[derive(Debug)]
struct Stream {
    id: u32,
    state: StreamState,
}

/// The server end of one RTMP connection (sans-IO; see the crate docs for the drive loop).
///
/// Audio, video and data messages on a message stream that is not publishing (no `publish`
/// seen, or rejected) are ignored, not treated as errors: some encoders send a frame or two
/// while the answer to `publish` is still in flight.
///
/// Timers: the handshake timer runs from `new` until `connect` has been answered; the idle
/// timer runs whenever no stream of this connection is playing and is pushed back by every
/// received byte.
#[derive(Debug)]
pub struct ServerSession {
    conn: Conn,
    hs: ServerHandshake,
    connected: bool,
    streams: Vec<Stream>,
    next_stream_id: u32,
    events: VecDeque<ServerEvent>,
}

impl ServerSession {
    /// A session for a freshly accepted connection.
    pub fn new(config: SessionConfig, now: Instant) -> Self {
        ServerSession {
            conn: Conn::new(config, now),
            hs: ServerHandshake::new(),
            connected: false,
            streams: Vec::new(),
            next_stream_id: 1,
            events: VecDeque::new(),
        }
    }

    /// Feeds received bytes or a timer tick. After an `Err` the session is dead (the error
    /// names the rule broken and the inbound byte offset); close the connection.
    pub fn handle_input(&mut self, input: Input) -> Result<(), Error> {
        self.conn.check_alive()?;
        let r = match input {
            Input::Receive(now, data) => self.receive(now, data),
            Input::Timeout(now) => self.timeout(now),
        };
        self.conn.dead |= r.is_err();
        r
    }

    /// The next thing to do: bytes to send, an event, or (when nothing else is pending) the
    /// instant at which to call `handle_input(Input::Timeout(..))`. When no timer is armed the
    /// instant lies a day ahead.
    pub fn poll_output(&mut self) -> Output<ServerEvent> {
        self.conn.poll_output(&mut self.events)
    }

    /// Answers a `publish` with `NetStream.Publish.Start`.
    pub fn accept_publish(&mut self, stream_id: u32) {
        if let Some(s) = self.stream_mut(stream_id) {
            if let StreamState::PublishRequested(n) = &s.state {
                s.state = StreamState::Publishing(n.clone());
            }
        }
        self.send_status(
            stream_id,
            "status",
            "NetStream.Publish.Start",
            "Start publishing",
        );
    }

    /// Answers a `publish` with an error status (e.g. `NetStream.Publish.BadName`); media for
    /// the stream is ignored afterwards.
    pub fn reject_publish(&mut self, stream_id: u32, code: &str, description: &str) {
        if let Some(s) = self.stream_mut(stream_id) {
            s.state = StreamState::Idle;
        }
        self.send_status(stream_id, "error", code, description);
    }

    /// Answers a `play`: User Control Stream Begin, `NetStream.Play.Reset`,
    /// `NetStream.Play.Start`, `|RtmpSampleAccess` and `NetStream.Data.Start`. Stops the idle
    /// timer (a player sends little).
    pub fn accept_play(&mut self, stream_id: u32) {
        if let Some(s) = self.stream_mut(stream_id) {
            s.state = StreamState::Playing;
        }
        self.conn.timers.stop(Timer::Idle);
        self.conn
            .send_user_control(user_control::STREAM_BEGIN, &[stream_id]);
        self.send_status(
            stream_id,
            "status",
            "NetStream.Play.Reset",
            "Playing and resetting",
        );
        self.send_status(stream_id, "status", "NetStream.Play.Start", "Start live");
        self.conn.send_data(
            stream_id,
            &[
                Amf0Value::string("|RtmpSampleAccess"),
                Amf0Value::Boolean(true),
                Amf0Value::Boolean(true),
            ],
        );
        // No `onStatus NetStream.Data.Start` data message: ffmpeg's FLV reader turns unknown
        // data messages into an extra "data" stream that confuses players and probes.
    }

    /// Answers a `play` with an error status (e.g. `NetStream.Play.StreamNotFound`).
    pub fn reject_play(&mut self, stream_id: u32, code: &str, description: &str) {
        if let Some(s) = self.stream_mut(stream_id) {
            s.state = StreamState::Idle;
        }
        self.send_status(stream_id, "error", code, description);
        self.rearm_idle();
    }

    /// Tells a player its publisher went away: User Control Stream EOF and
    /// `NetStream.Play.UnpublishNotify`. The stream stays playing, so media of a new publisher
    /// can follow (as nginx-rtmp does).
    pub fn end_play(&mut self, stream_id: u32) {
        self.conn
            .send_user_control(user_control::STREAM_EOF, &[stream_id]);
        self.send_status(
            stream_id,
            "status",
            "NetStream.Play.UnpublishNotify",
            "Stream unpublished",
        );
    }

    /// Sends `onStatus` on a message stream.
    pub fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.conn
            .send_command(stream_id, &command::on_status(level, code, description));
    }

    /// Chunks a media message (chunk stream by kind) and queues it.
    pub fn send_media(&mut self, msg: &MediaMessage) {
        self.conn.send_media(msg, msg.stream_id);
    }

    /// Queues bytes already chunked with [`encode_message`](crate::encode_message) at
    /// [`out_chunk_size`](Self::out_chunk_size) (one encoding shared by many viewers).
    pub fn send_encoded(&mut self, chunks: &ByteRope) {
        self.conn.out.append(chunks);
    }

    /// The chunk size this session sends with (the configured one once `connect` has been
    /// answered, 128 before).
    pub fn out_chunk_size(&self) -> u32 {
        self.conn.encoder.chunk_size()
    }

    /// True once `connect` has been answered.
    pub fn is_established(&self) -> bool {
        self.connected
    }

    /// Total bytes received so far.
    pub fn bytes_received(&self) -> u64 {
        self.conn.received
    }

    fn stream_mut(&mut self, id: u32) -> Option<&mut Stream> {
        self.streams.iter_mut().find(|s| s.id == id)
    }

    fn idle_applies(&self) -> bool {
        !self.streams.iter().any(|s| s.state == StreamState::Playing)
    }

    fn rearm_idle(&mut self) {
        if self.idle_applies() && self.conn.timers.get(Timer::Idle).is_none() {
            let at = self.conn.now + self.conn.config.idle_timeout;
            self.conn.timers.set(Timer::Idle, at);
        }
    }

    fn timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.conn.now = self.conn.now.max(now);
        match self.conn.timers.expired(now) {
            Some(Timer::Handshake) => Err(Error::HandshakeTimeout),
            Some(Timer::Idle) => Err(Error::IdleTimeout),
            None => Ok(()),
        }
    }

    fn receive(&mut self, now: Instant, mut data: Bytes) -> Result<(), Error> {
        let idle = self.idle_applies();
        self.conn.note_received(now, data.len(), idle);
        if !matches!(self.hs, ServerHandshake::Done) {
            let hs = std::mem::replace(&mut self.hs, ServerHandshake::Done);
            self.hs = hs.handle(&mut data, &mut self.conn.filler, &mut self.conn.out)?;
            if !matches!(self.hs, ServerHandshake::Done) {
                return Ok(());
            }
            self.conn.decoder =
                ChunkDecoder::new(&self.conn.config.limits, 1 + 2 * HANDSHAKE_SIZE as u64);
        }
        if !data.is_empty() {
            let mut msgs = Vec::new();
            self.conn.decoder.push(data, &mut msgs)?;
            for m in msgs {
                self.on_message(m)?;
            }
        }
        self.conn.maybe_ack();
        Ok(())
    }

    fn on_message(&mut self, m: RawMessage) -> Result<(), Error> {
        match MessageType::from_u8(m.msg_type) {
            Some(
                MessageType::Ack
                | MessageType::UserControl
                | MessageType::WindowAckSize
                | MessageType::SetPeerBandwidth,
            ) => {
                self.conn.protocol_control(&m)?;
            }
            Some(MessageType::CommandAmf0 | MessageType::CommandAmf3) => {
                let cmd = conn::decode_command(&m, &self.conn.config)?;
                self.on_command(m.stream_id, m.offset, cmd)?;
            }
            Some(
                MessageType::Audio
                | MessageType::Video
                | MessageType::DataAmf0
                | MessageType::DataAmf3
                | MessageType::Aggregate,
            ) => {
                let publishing = self.streams.iter().any(|s| {
                    s.id == m.stream_id
                        && matches!(
                            s.state,
                            StreamState::PublishRequested(_) | StreamState::Publishing(_)
                        )
                });
                if publishing {
                    let mut items = Vec::new();
                    conn::media_message(m, &mut items)?;
                    for i in items {
                        self.events.push_back(match i {
                            Incoming::Media(mm) => ServerEvent::Media(mm),
                            Incoming::Metadata {
                                stream_id,
                                timestamp,
                                payload,
                            } => ServerEvent::Metadata {
                                stream_id,
                                timestamp,
                                payload,
                            },
                        });
                    }
                }
            }
            // Shared objects and unknown types are ignored.
            _ => {}
        }
        Ok(())
    }

    fn result(&mut self, txn: f64, args: Vec<Amf0Value>) {
        if txn != 0.0 {
            self.conn
                .send_command(0, &Command::new("_result", txn, Amf0Value::Null, args));
        }
    }

    fn error_reply(&mut self, txn: f64, code: &str, description: &str) {
        if txn != 0.0 {
            let info = command::status_info("error", code, description);
            self.conn
                .send_command(0, &Command::new("_error", txn, Amf0Value::Null, vec![info]));
        }
    }

    /// Ends whatever stream `id` was doing, emitting Unpublish or PlayStop.
    fn stop_stream(&mut self, id: u32) {
        let Some(s) = self.stream_mut(id) else {
            return;
        };
        let old = std::mem::replace(&mut s.state, StreamState::Idle);
        match old {
            StreamState::PublishRequested(_) | StreamState::Publishing(_) => {
                self.events
                    .push_back(ServerEvent::Unpublish { stream_id: id });
            }
            StreamState::PlayRequested | StreamState::Playing => {
                self.events
                    .push_back(ServerEvent::PlayStop { stream_id: id });
                self.rearm_idle();
            }
            StreamState::Idle => {}
        }
    }

    fn on_connect(&mut self, cmd: &Command) {
        let app = cmd
            .object
            .get("app")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        let tc_url = cmd
            .object
            .get("tcUrl")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let window = self.conn.config.window_ack_size;
        self.conn.send(
            CSID_CONTROL,
            MessageType::WindowAckSize.id(),
            0,
            0,
            &message::u32_body(window),
        );
        self.conn.send(
            CSID_CONTROL,
            MessageType::SetPeerBandwidth.id(),
            0,
            0,
            &message::peer_bandwidth_body(window, 2),
        );
        self.conn.send_chunk_size();
        let props = Amf0Value::object([
            ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
            ("capabilities", Amf0Value::Number(31.0)),
        ]);
        let info = Amf0Value::object([
            ("level", Amf0Value::string("status")),
            ("code", Amf0Value::string("NetConnection.Connect.Success")),
            ("description", Amf0Value::string("Connection succeeded.")),
            ("objectEncoding", Amf0Value::Number(0.0)),
        ]);
        self.conn.send_command(
            0,
            &Command::new("_result", cmd.transaction_id, props, vec![info]),
        );
        self.connected = true;
        self.conn.timers.stop(Timer::Handshake);
        self.events.push_back(ServerEvent::Connect { app, tc_url });
    }

    fn on_command(&mut self, sid: u32, offset: u64, cmd: Command) -> Result<(), Error> {
        let txn = cmd.transaction_id;
        if !self.connected {
            if cmd.name == "connect" {
                self.on_connect(&cmd);
                return Ok(());
            }
            return Err(Error::Invalid {
                offset,
                what: "command before connect",
            });
        }
        match cmd.name.as_str() {
            "connect" => {
                self.error_reply(txn, "NetConnection.Connect.Rejected", "Already connected")
            }
            "releaseStream" => self.result(txn, vec![Amf0Value::Undefined]),
            "FCPublish" => {
                let name = cmd.arg_str(0).unwrap_or_default().to_owned();
                self.result(txn, vec![Amf0Value::Undefined]);
                let info = Amf0Value::object([
                    ("code", Amf0Value::string("NetStream.Publish.Start")),
                    ("description", Amf0Value::string(name)),
                ]);
                self.conn.send_command(
                    0,
                    &Command::new("onFCPublish", 0.0, Amf0Value::Null, vec![info]),
                );
            }
            "createStream" => {
                if self.streams.len() >= MAX_STREAMS {
                    self.error_reply(txn, "NetConnection.Call.Failed", "Too many streams");
                } else {
                    let id = self.next_stream_id;
                    self.next_stream_id += 1;
                    self.streams.push(Stream {
                        id,
                        state: StreamState::Idle,
                    });
                    self.result(txn, vec![Amf0Value::Number(f64::from(id))]);
                }
            }
            "publish" => {
                let name = cmd.arg_str(0).unwrap_or_default().to_owned();
                let kind = cmd.arg_str(1).unwrap_or("live").to_owned();
                match self.stream_mut(sid) {
                    Some(s) if s.state == StreamState::Idle => {
                        s.state = StreamState::PublishRequested(name.clone());
                        self.events.push_back(ServerEvent::Publish {
                            stream_id: sid,
                            name,
                            kind,
                        });
                    }
                    _ => self.send_status(
                        sid,
                        "error",
                        "NetStream.Publish.BadConnection",
                        "Stream not created or busy",
                    ),
                }
            }
            "play" => {
                let name = cmd.arg_str(0).unwrap_or_default().to_owned();
                match self.stream_mut(sid) {
                    Some(s) if s.state == StreamState::Idle => {
                        s.state = StreamState::PlayRequested;
                        self.events.push_back(ServerEvent::Play {
                            stream_id: sid,
                            name,
                        });
                    }
                    _ => self.send_status(
                        sid,
                        "error",
                        "NetStream.Play.Failed",
                        "Stream not created or busy",
                    ),
                }
            }
            "FCUnpublish" => {
                let name = cmd.arg_str(0).unwrap_or_default();
                let id = self
                    .streams
                    .iter()
                    .find(|s| match &s.state {
                        StreamState::PublishRequested(n) | StreamState::Publishing(n) => {
                            n == name || s.id == sid
                        }
                        _ => false,
                    })
                    .map(|s| s.id);
                self.result(txn, vec![Amf0Value::Undefined]);
                if let Some(id) = id {
                    self.stop_stream(id);
                }
            }
            "closeStream" => self.stop_stream(sid),
            "deleteStream" => {
                let id = cmd.arg_f64(0).map_or(sid, |f| f as u32);
                self.stop_stream(id);
                self.streams.retain(|s| s.id != id);
            }
            "getStreamLength" => self.result(txn, vec![Amf0Value::Number(0.0)]),
            "_checkbw" => self.result(txn, vec![Amf0Value::Undefined]),
            // Answers, notifications and playback controls that need nothing from us.
            "_result" | "_error" | "onStatus" | "onBWDone" | "pause" | "seek" | "receiveAudio"
            | "receiveVideo" | "onFCPublish" => {}
            _ => self.error_reply(txn, "NetConnection.Call.Failed", "Method not found"),
        }
        Ok(())
    }
}
