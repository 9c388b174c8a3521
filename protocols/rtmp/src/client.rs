//! The client role: connects to a server and publishes or plays one stream.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use zerocast_codecs::ByteRope;

use crate::amf0::{self, Amf0Value};
use crate::chunk::ChunkDecoder;
use crate::command::{self, Command};
use crate::config::SessionConfig;
use crate::conn::{self, Conn, Incoming};
use crate::error::Error;
use crate::handshake::{ClientHandshake, HANDSHAKE_SIZE};
use crate::message::{self, user_control, MessageType, RawMessage, CSID_CONTROL};
use crate::timer::Timer;
use crate::{Input, MediaMessage, Output, CSID_DATA};

/// Connection parameters of a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientParams {
    /// Application name (the path part of the URL before the stream name, e.g. "live").
    pub app: String,
    /// The full URL up to the app, e.g. "rtmp://host/live".
    pub tc_url: String,
    /// `flashVer` to announce; `None` announces an FMLE-compatible version string.
    pub flash_ver: Option<String>,
}

/// What the client session tells its driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// `connect` succeeded.
    Connected,
    /// The server answered `publish` with `NetStream.Publish.Start`: send media now.
    PublishStarted {
        /// The message stream to publish on.
        stream_id: u32,
    },
    /// The server answered `play` with `NetStream.Play.Start`.
    PlayStarted {
        /// The message stream media arrives on.
        stream_id: u32,
    },
    /// Any `onStatus`, or an `_error` answer (level "error").
    Status {
        /// "status", "warning" or "error".
        level: String,
        /// E.g. "NetStream.Publish.BadName".
        code: String,
        /// Free text.
        description: String,
    },
    /// Audio, video or timed data from the played stream.
    Media(MediaMessage),
    /// `onMetaData` from the played stream (body starting with the "onMetaData" string).
    Metadata {
        /// Message timestamp.
        timestamp: u32,
        /// AMF0 data body.
        payload: ByteRope,
    },
    /// User Control Stream EOF: the played stream ended.
    StreamEof {
        /// The stream.
        stream_id: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    None,
    Publish(String),
    Play(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Connect,
    CreateStream,
    Other,
}

/// The client end of one RTMP connection (sans-IO; see the crate docs for the drive loop).
///
/// The first `poll_output` yields C0+C1 (digest handshake). Once S0-S2 are in, the session sends
/// C2, Set Chunk Size and `connect`; then, for [`publish`](Self::publish), `releaseStream`,
/// `FCPublish`, `createStream` and `publish`; for [`play`](Self::play), `createStream`, `play`
/// and Set Buffer Length.
///
/// Timers: the handshake timer runs until `connect` is answered; the idle timer runs while not
/// publishing (a publisher hears little from the server) and is pushed back by every byte.
#[derive(Debug)]
pub struct ClientSession {
    conn: Conn,
    hs: ClientHandshake,
    params: ClientParams,
    connected: bool,
    action: Action,
    started: bool,
    stream_id: Option<u32>,
    publishing: bool,
    next_txn: f64,
    pending: Vec<(f64, Pending)>,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    /// A session that starts the handshake at once.
    pub fn new(config: SessionConfig, now: Instant, params: ClientParams) -> Self {
        let mut conn = Conn::new(config, now);
        let (hs, c0c1) = ClientHandshake::start(&mut conn.filler);
        conn.out.push(Bytes::from(c0c1));
        ClientSession {
            conn,
            hs,
            params,
            connected: false,
            action: Action::None,
            started: false,
            stream_id: None,
            publishing: false,
            next_txn: 1.0,
            pending: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Feeds received bytes or a timer tick. After an `Err` the session is dead.
    pub fn handle_input(&mut self, input: Input) -> Result<(), Error> {
        self.conn.check_alive()?;
        let r = match input {
            Input::Receive(now, data) => self.receive(now, data),
            Input::Timeout(now) => self.timeout(now),
        };
        self.conn.dead |= r.is_err();
        r
    }

    /// The next thing to do; see [`ServerSession::poll_output`](crate::ServerSession::poll_output).
    pub fn poll_output(&mut self) -> Output<ClientEvent> {
        self.conn.poll_output(&mut self.events)
    }

    /// Publishes `name` (query string allowed) once connected. One action per session.
    pub fn publish(&mut self, name: &str) {
        if self.action == Action::None {
            self.action = Action::Publish(name.to_owned());
            self.start_action();
        }
    }

    /// Plays `name` once connected. One action per session.
    pub fn play(&mut self, name: &str) {
        if self.action == Action::None {
            self.action = Action::Play(name.to_owned());
            self.start_action();
        }
    }

    /// Sends a media message on the published stream (the message's own `stream_id` is used
    /// only before the stream is known). Call after [`ClientEvent::PublishStarted`].
    pub fn send_media(&mut self, msg: &MediaMessage) {
        let sid = self.stream_id.unwrap_or(msg.stream_id);
        self.conn.send_media(msg, sid);
    }

    /// Sends `@setDataFrame` followed by `payload` (an AMF0 `onMetaData` body).
    pub fn send_metadata(&mut self, payload: &ByteRope) {
        let mut body = ByteRope::from(amf0::encode_all(&[Amf0Value::string("@setDataFrame")]));
        body.append(payload);
        let sid = self.stream_id.unwrap_or(1);
        self.conn
            .send(CSID_DATA, MessageType::DataAmf0.id(), sid, 0, &body);
    }

    /// Ends the action: `FCUnpublish` (when publishing) and `deleteStream`.
    pub fn close(&mut self) {
        let Some(sid) = self.stream_id.take() else {
            return;
        };
        if let Action::Publish(name) = self.action.clone() {
            let c = Command::new(
                "FCUnpublish",
                self.txn(Pending::Other),
                Amf0Value::Null,
                vec![Amf0Value::string(name.clone())],
            );
            self.conn.send_command(0, &c);
        }
        let c = Command::new(
            "deleteStream",
            self.txn(Pending::Other),
            Amf0Value::Null,
            vec![Amf0Value::Number(f64::from(sid))],
        );
        self.conn.send_command(0, &c);
        self.publishing = false;
    }

    /// True once `connect` has been answered with success.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The message stream id obtained with `createStream`, if any.
    pub fn stream_id(&self) -> Option<u32> {
        self.stream_id
    }

    fn txn(&mut self, p: Pending) -> f64 {
        let t = self.next_txn;
        self.next_txn += 1.0;
        if p != Pending::Other {
            self.pending.push((t, p));
        }
        t
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
        let idle = !self.publishing;
        self.conn.note_received(now, data.len(), idle);
        if !matches!(self.hs, ClientHandshake::Done) {
            let hs = std::mem::replace(&mut self.hs, ClientHandshake::Done);
            self.hs = hs.handle(&mut data, &mut self.conn.filler, &mut self.conn.out)?;
            if !matches!(self.hs, ClientHandshake::Done) {
                return Ok(());
            }
            self.conn.decoder =
                ChunkDecoder::new(&self.conn.config.limits, 1 + 2 * HANDSHAKE_SIZE as u64);
            self.send_connect();
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

    fn send_connect(&mut self) {
        self.conn.send_chunk_size();
        let flash_ver = self
            .params
            .flash_ver
            .clone()
            .unwrap_or_else(|| "FMLE/3.0 (compatible; zerocast)".to_owned());
        let obj = Amf0Value::object([
            ("app", Amf0Value::string(self.params.app.clone())),
            ("type", Amf0Value::string("nonprivate")),
            ("flashVer", Amf0Value::string(flash_ver)),
            ("tcUrl", Amf0Value::string(self.params.tc_url.clone())),
            ("fpad", Amf0Value::Boolean(false)),
            ("capabilities", Amf0Value::Number(15.0)),
            ("audioCodecs", Amf0Value::Number(4071.0)),
            ("videoCodecs", Amf0Value::Number(252.0)),
            ("videoFunction", Amf0Value::Number(1.0)),
        ]);
        let c = Command::new("connect", self.txn(Pending::Connect), obj, vec![]);
        self.conn.send_command(0, &c);
    }

    /// Starts the requested action once connected (at most once).
    fn start_action(&mut self) {
        if !self.connected || self.started {
            return;
        }
        match self.action.clone() {
            Action::None => return,
            Action::Publish(name) => {
                for n in ["releaseStream", "FCPublish"] {
                    let c = Command::new(
                        n,
                        self.txn(Pending::Other),
                        Amf0Value::Null,
                        vec![Amf0Value::string(name.clone())],
                    );
                    self.conn.send_command(0, &c);
                }
            }
            Action::Play(_) => {}
        }
        self.started = true;
        let c = Command::new(
            "createStream",
            self.txn(Pending::CreateStream),
            Amf0Value::Null,
            vec![],
        );
        self.conn.send_command(0, &c);
    }

    fn on_stream_created(&mut self, sid: u32) {
        self.stream_id = Some(sid);
        match self.action.clone() {
            Action::Publish(name) => {
                let c = Command::new(
                    "publish",
                    self.txn(Pending::Other),
                    Amf0Value::Null,
                    vec![Amf0Value::string(name), Amf0Value::string("live")],
                );
                self.conn.send_command(sid, &c);
            }
            Action::Play(name) => {
                let c = Command::new(
                    "play",
                    self.txn(Pending::Other),
                    Amf0Value::Null,
                    vec![Amf0Value::string(name), Amf0Value::Number(-2000.0)],
                );
                self.conn.send_command(sid, &c);
                self.conn
                    .send_user_control(user_control::SET_BUFFER_LENGTH, &[sid, 3000]);
            }
            Action::None => {}
        }
    }

    fn on_message(&mut self, m: RawMessage) -> Result<(), Error> {
        match MessageType::from_u8(m.msg_type) {
            Some(
                MessageType::Ack
                | MessageType::UserControl
                | MessageType::WindowAckSize
                | MessageType::SetPeerBandwidth,
            ) => {
                let is_bw = m.msg_type == MessageType::SetPeerBandwidth.id();
                if let Some((ev, v)) = self.conn.protocol_control(&m)? {
                    if ev == user_control::STREAM_EOF {
                        self.events
                            .push_back(ClientEvent::StreamEof { stream_id: v });
                    }
                }
                if is_bw {
                    // Clients answer Set Peer Bandwidth with their Window Ack Size.
                    let w = self.conn.config.window_ack_size;
                    self.conn.send(
                        CSID_CONTROL,
                        MessageType::WindowAckSize.id(),
                        0,
                        0,
                        &message::u32_body(w),
                    );
                }
            }
            Some(MessageType::CommandAmf0 | MessageType::CommandAmf3) => {
                let cmd = conn::decode_command(&m, &self.conn.config)?;
                self.on_command(m.stream_id, cmd);
            }
            Some(
                MessageType::Audio
                | MessageType::Video
                | MessageType::DataAmf0
                | MessageType::DataAmf3
                | MessageType::Aggregate,
            ) => {
                let mut items = Vec::new();
                conn::media_message(m, &mut items)?;
                for i in items {
                    self.events.push_back(match i {
                        Incoming::Media(mm) => ClientEvent::Media(mm),
                        Incoming::Metadata {
                            timestamp, payload, ..
                        } => ClientEvent::Metadata { timestamp, payload },
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, sid: u32, cmd: Command) {
        let pending = self
            .pending
            .iter()
            .position(|(t, _)| *t == cmd.transaction_id)
            .map(|i| self.pending.swap_remove(i).1);
        match cmd.name.as_str() {
            "_result" => match pending {
                Some(Pending::Connect) => {
                    self.connected = true;
                    self.conn.timers.stop(Timer::Handshake);
                    self.events.push_back(ClientEvent::Connected);
                    self.start_action();
                }
                Some(Pending::CreateStream) => {
                    if let Some(id) = cmd.arg_f64(0) {
                        self.on_stream_created(id as u32);
                    }
                }
                _ => {}
            },
            "_error" => {
                let info = cmd.args.first().cloned().unwrap_or(Amf0Value::Null);
                let (_, code, description) = command::read_status(&info);
                self.events.push_back(ClientEvent::Status {
                    level: "error".to_owned(),
                    code,
                    description,
                });
            }
            "onStatus" => {
                let info = cmd.args.first().cloned().unwrap_or(Amf0Value::Null);
                let (level, code, description) = command::read_status(&info);
                let started = match code.as_str() {
                    "NetStream.Publish.Start" => {
                        self.publishing = true;
                        self.conn.timers.stop(Timer::Idle);
                        Some(ClientEvent::PublishStarted { stream_id: sid })
                    }
                    "NetStream.Play.Start" => Some(ClientEvent::PlayStarted { stream_id: sid }),
                    _ => None,
                };
                self.events.push_back(ClientEvent::Status {
                    level,
                    code,
                    description,
                });
                if let Some(e) = started {
                    self.events.push_back(e);
                }
            }
            _ => {}
        }
    }
}
