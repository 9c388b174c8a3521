//! Machinery shared by the server and client sessions: byte accounting, acknowledgements,
//! timers, outbound queue, and the decoding of media and data messages.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::{ByteRope, MediaKind};

use crate::amf0::{self, Amf0Value};
use crate::chunk::{ChunkDecoder, ChunkEncoder};
use crate::command::Command;
use crate::config::SessionConfig;
use crate::error::Error;
use crate::handshake::Filler;
use crate::message::{self, user_control, MessageType, RawMessage, CSID_COMMAND, CSID_CONTROL};
use crate::timer::{Timer, TimerTable};
use crate::{MediaMessage, Output, CSID_AUDIO, CSID_DATA, CSID_VIDEO};

/// How far ahead `poll_output` puts its `Timeout` when no timer is armed.
pub(crate) const NO_TIMER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) config: SessionConfig,
    pub(crate) decoder: ChunkDecoder,
    pub(crate) encoder: ChunkEncoder,
    pub(crate) out: ByteRope,
    pub(crate) timers: TimerTable,
    pub(crate) now: Instant,
    pub(crate) filler: Filler,
    /// Total bytes received, handshake included.
    pub(crate) received: u64,
    /// The peer's Window Acknowledgement Size (0: never acknowledge).
    ack_window: u32,
    last_ack: u64,
    pub(crate) dead: bool,
}

impl Conn {
    pub(crate) fn new(config: SessionConfig, now: Instant) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Handshake, now + config.handshake_timeout);
        timers.set(Timer::Idle, now + config.idle_timeout);
        Conn {
            decoder: ChunkDecoder::new(&config.limits, 0),
            encoder: ChunkEncoder::default(),
            out: ByteRope::new(),
            timers,
            now,
            filler: Filler::new(),
            received: 0,
            ack_window: 0,
            last_ack: 0,
            dead: false,
            config,
        }
    }

    pub(crate) fn out_chunk_size(&self) -> u32 {
        self.config.out_chunk_size.clamp(1, 0x7fff_ffff)
    }

    /// Accounts for received bytes: re-arms the idle timer (when `idle` applies) and queues an
    /// Acknowledgement each time a window's worth has arrived since the last one.
    pub(crate) fn note_received(&mut self, now: Instant, n: usize, idle: bool) {
        self.now = self.now.max(now);
        self.received += n as u64;
        if idle {
            self.timers.set(Timer::Idle, now + self.config.idle_timeout);
        }
    }

    pub(crate) fn maybe_ack(&mut self) {
        if self.ack_window > 0 && self.received - self.last_ack >= u64::from(self.ack_window) {
            self.last_ack = self.received;
            // The sequence number wraps at 2^32 (spec 5.4.3).
            let body = message::u32_body(self.received as u32);
            self.send(CSID_CONTROL, MessageType::Ack.id(), 0, 0, &body);
        }
    }

    pub(crate) fn send(&mut self, csid: u32, t: u8, sid: u32, ts: u32, payload: &ByteRope) {
        self.encoder
            .encode(csid, t, sid, ts, payload, &mut self.out);
    }

    pub(crate) fn send_command(&mut self, sid: u32, cmd: &Command) {
        let body = ByteRope::from(cmd.encode());
        self.send(CSID_COMMAND, MessageType::CommandAmf0.id(), sid, 0, &body);
    }

    pub(crate) fn send_data(&mut self, sid: u32, values: &[Amf0Value]) {
        let body = ByteRope::from(amf0::encode_all(values));
        self.send(CSID_DATA, MessageType::DataAmf0.id(), sid, 0, &body);
    }

    pub(crate) fn send_user_control(&mut self, event: u16, data: &[u32]) {
        let body = message::user_control_body(event, data);
        self.send(CSID_CONTROL, MessageType::UserControl.id(), 0, 0, &body);
    }

    /// Announces and starts using our chunk size.
    pub(crate) fn send_chunk_size(&mut self) {
        let size = self.out_chunk_size();
        let body = message::u32_body(size);
        self.send(CSID_CONTROL, MessageType::SetChunkSize.id(), 0, 0, &body);
        self.encoder.set_chunk_size(size);
    }

    pub(crate) fn send_media(&mut self, msg: &MediaMessage, sid: u32) {
        let (csid, t) = media_ids(msg.kind);
        self.send(csid, t, sid, msg.timestamp, &msg.payload);
    }

    /// Handles Ack, User Control, Window Ack Size and Set Peer Bandwidth. Returns the User
    /// Control event type and first value when it was one the caller may care about.
    pub(crate) fn protocol_control(&mut self, m: &RawMessage) -> Result<Option<(u16, u32)>, Error> {
        let invalid = |what| Error::Invalid {
            offset: m.offset,
            what,
        };
        match MessageType::from_u8(m.msg_type) {
            Some(MessageType::WindowAckSize) => {
                let v = m
                    .payload
                    .reader()
                    .u32()
                    .map_err(|_| invalid("Window Acknowledgement Size body too short"))?;
                self.ack_window = v;
            }
            Some(MessageType::UserControl) => {
                let mut r = m.payload.reader();
                let ev = r
                    .u16()
                    .map_err(|_| invalid("User Control body too short"))?;
                let v = r.u32().unwrap_or(0);
                if ev == user_control::PING_REQUEST {
                    self.send_user_control(user_control::PING_RESPONSE, &[v]);
                }
                return Ok(Some((ev, v)));
            }
            // Acknowledgements and the peer's bandwidth wishes need no action here.
            _ => {}
        }
        Ok(None)
    }

    /// The next output of a session whose undelivered events are `events`: bytes first, then
    /// events, then the next timeout. Shared by the server and client roles.
    pub(crate) fn poll_output<E>(&mut self, events: &mut VecDeque<E>) -> Output<E> {
        if !self.out.is_empty() {
            return Output::Transmit(std::mem::take(&mut self.out));
        }
        if let Some(e) = events.pop_front() {
            return Output::Event(e);
        }
        Output::Timeout(self.next_timeout())
    }

    /// Fails with `SessionDead` once a previous input failed.
    pub(crate) fn check_alive(&self) -> Result<(), Error> {
        if self.dead {
            Err(Error::SessionDead)
        } else {
            Ok(())
        }
    }

    /// The next `Timeout` to report.
    pub(crate) fn next_timeout(&self) -> Instant {
        self.timers
            .next()
            .unwrap_or_else(|| self.now.checked_add(NO_TIMER).unwrap_or(self.now))
    }
}

/// Chunk stream id and message type used to send media of `kind`.
pub(crate) fn media_ids(kind: MediaKind) -> (u32, u8) {
    match kind {
        MediaKind::Audio => (CSID_AUDIO, MessageType::Audio.id()),
        MediaKind::Video => (CSID_VIDEO, MessageType::Video.id()),
        MediaKind::Data => (CSID_DATA, MessageType::DataAmf0.id()),
    }
}

/// A decoded command body (AMF3 command messages carry a leading format byte, then AMF0).
pub(crate) fn decode_command(m: &RawMessage, config: &SessionConfig) -> Result<Command, Error> {
    let body = m.payload.to_contiguous();
    let body: &[u8] = if m.msg_type == MessageType::CommandAmf3.id() && !body.is_empty() {
        &body[1..]
    } else {
        &body
    };
    Command::decode(body, &config.limits.amf0()).map_err(|source| Error::Amf0 {
        offset: m.offset,
        source,
    })
}

/// What a media-carrying message turned into.
#[derive(Debug)]
pub(crate) enum Incoming {
    Media(MediaMessage),
    Metadata {
        stream_id: u32,
        timestamp: u32,
        payload: ByteRope,
    },
}

/// The leading AMF0 string of a data body, and the offset just after it.
fn leading_string(payload: &ByteRope) -> Option<(Bytes, usize)> {
    let mut r = payload.reader();
    if r.u8().ok()? != 2 {
        return None;
    }
    let len = r.u16().ok()? as usize;
    let s = r.take(len).ok()?;
    Some((s.to_contiguous(), r.position()))
}

/// Interprets a data message body: `@setDataFrame` is stripped, `onMetaData` becomes
/// metadata, `@clearDataFrame` and `|RtmpSampleAccess` are dropped, anything else is timed
/// data.
fn data_message(stream_id: u32, timestamp: u32, mut payload: ByteRope, out: &mut Vec<Incoming>) {
    if let Some((s, end)) = leading_string(&payload) {
        match &s[..] {
            b"@setDataFrame" => {
                payload = payload.slice(end, payload.len() - end).unwrap_or_default();
            }
            b"@clearDataFrame" | b"|RtmpSampleAccess" | b"onStatus" => return,
            _ => {}
        }
    }
    match leading_string(&payload) {
        Some((s, _)) if &s[..] == b"onMetaData" => out.push(Incoming::Metadata {
            stream_id,
            timestamp,
            payload,
        }),
        _ => out.push(Incoming::Media(MediaMessage {
            kind: MediaKind::Data,
            timestamp,
            stream_id,
            payload,
        })),
    }
}

/// Turns an Audio, Video, Data or Aggregate message into media and metadata.
pub(crate) fn media_message(m: RawMessage, out: &mut Vec<Incoming>) -> Result<(), Error> {
    match MessageType::from_u8(m.msg_type) {
        Some(MessageType::Audio) | Some(MessageType::Video) => {
            let kind = if m.msg_type == MessageType::Audio.id() {
                MediaKind::Audio
            } else {
                MediaKind::Video
            };
            out.push(Incoming::Media(MediaMessage {
                kind,
                timestamp: m.timestamp,
                stream_id: m.stream_id,
                payload: m.payload,
            }));
        }
        Some(MessageType::DataAmf0) => data_message(m.stream_id, m.timestamp, m.payload, out),
        Some(MessageType::DataAmf3) => {
            let n = m.payload.len().saturating_sub(1);
            let body = m.payload.slice(1, n).unwrap_or_default();
            data_message(m.stream_id, m.timestamp, body, out);
        }
        Some(MessageType::Aggregate) => aggregate(&m, out)?,
        _ => {}
    }
    Ok(())
}

/// Splits an aggregate message into its FLV tags (spec 7.1.6). Each sub-message keeps its
/// offset from the first tag's timestamp, rebased on the aggregate's own timestamp.
fn aggregate(m: &RawMessage, out: &mut Vec<Incoming>) -> Result<(), Error> {
    let invalid = |what| Error::Invalid {
        offset: m.offset,
        what,
    };
    let mut r = m.payload.reader();
    let mut first_ts: Option<u32> = None;
    while r.remaining() > 0 {
        let t = r
            .u8()
            .map_err(|_| invalid("aggregate tag header truncated"))?;
        let size = r
            .u24()
            .map_err(|_| invalid("aggregate tag header truncated"))?;
        let ts_low = r
            .u24()
            .map_err(|_| invalid("aggregate tag header truncated"))?;
        let ts_high = r
            .u8()
            .map_err(|_| invalid("aggregate tag header truncated"))?;
        r.skip(3)
            .map_err(|_| invalid("aggregate tag header truncated"))?;
        let body = r
            .take(size as usize)
            .map_err(|_| invalid("aggregate tag body exceeds the message"))?;
        // Back pointer; tolerated when missing after the last tag.
        let _ = r.skip(4.min(r.remaining()));
        let ts = (u32::from(ts_high) << 24) | ts_low;
        let base = *first_ts.get_or_insert(ts);
        let timestamp = m.timestamp.wrapping_add(ts.wrapping_sub(base));
        let sub = RawMessage {
            csid: m.csid,
            msg_type: t & 0x1f,
            stream_id: m.stream_id,
            timestamp,
            payload: body,
            offset: m.offset,
        };
        match MessageType::from_u8(sub.msg_type) {
            Some(MessageType::Audio) | Some(MessageType::Video) | Some(MessageType::DataAmf0) => {
                media_message(sub, out)?
            }
            _ => {
                return Err(invalid(
                    "aggregate message holds a tag that is not audio, video or data",
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_split_and_rebased() {
        let mut body = Vec::new();
        for (t, ts, data) in [(9u8, 1000u32, &b"vid"[..]), (8, 1020, b"au")] {
            body.push(t);
            body.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            body.extend_from_slice(&ts.to_be_bytes()[1..]);
            body.push((ts >> 24) as u8);
            body.extend_from_slice(&[0, 0, 0]);
            body.extend_from_slice(data);
            body.extend_from_slice(&(11 + data.len() as u32).to_be_bytes());
        }
        let m = RawMessage {
            csid: 6,
            msg_type: 22,
            stream_id: 1,
            timestamp: 5000,
            payload: ByteRope::from(body),
            offset: 0,
        };
        let mut out = Vec::new();
        media_message(m, &mut out).unwrap();
        let got: Vec<_> = out
            .iter()
            .map(|i| match i {
                Incoming::Media(mm) => (mm.kind, mm.timestamp, mm.payload.to_contiguous()),
                Incoming::Metadata { .. } => panic!("no metadata expected"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (MediaKind::Video, 5000, Bytes::from_static(b"vid")),
                (MediaKind::Audio, 5020, Bytes::from_static(b"au")),
            ]
        );
    }

    #[test]
    fn set_data_frame_is_stripped() {
        let meta = amf0::encode_all(&[
            Amf0Value::string("onMetaData"),
            Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(1280.0))]),
        ]);
        let mut body = amf0::encode_all(&[Amf0Value::string("@setDataFrame")]);
        body.extend_from_slice(&meta);
        let mut out = Vec::new();
        data_message(1, 0, ByteRope::from(body), &mut out);
        match &out[..] {
            [Incoming::Metadata { payload, .. }] => {
                assert_eq!(payload.to_contiguous(), Bytes::from(meta))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
