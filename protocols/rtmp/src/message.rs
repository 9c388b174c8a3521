//! RTMP message types and the protocol control / user control message bodies.
//!
//! Reference: Adobe RTMP specification 1.0, sections 5.4 (protocol control messages),
//! 6.2 (user control messages) and 7.1 (message types).

use zerocast_codecs::ByteRope;

/// The message type id of an RTMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Set Chunk Size (5.4.1).
    SetChunkSize = 1,
    /// Abort Message (5.4.2).
    Abort = 2,
    /// Acknowledgement (5.4.3).
    Ack = 3,
    /// User Control Message (6.2).
    UserControl = 4,
    /// Window Acknowledgement Size (5.4.4).
    WindowAckSize = 5,
    /// Set Peer Bandwidth (5.4.5).
    SetPeerBandwidth = 6,
    /// Audio data (an FLV audio tag body).
    Audio = 8,
    /// Video data (an FLV video tag body).
    Video = 9,
    /// Data message in AMF3.
    DataAmf3 = 15,
    /// Shared object message in AMF3.
    SharedObjAmf3 = 16,
    /// Command message in AMF3.
    CommandAmf3 = 17,
    /// Data message in AMF0 (`@setDataFrame`, `onMetaData`).
    DataAmf0 = 18,
    /// Shared object message in AMF0.
    SharedObj = 19,
    /// Command message in AMF0 (`connect`, `publish`, ...).
    CommandAmf0 = 20,
    /// Aggregate message: a run of FLV tags.
    Aggregate = 22,
}

impl MessageType {
    /// The type for a wire id, if known.
    pub fn from_u8(id: u8) -> Option<Self> {
        Some(match id {
            1 => Self::SetChunkSize,
            2 => Self::Abort,
            3 => Self::Ack,
            4 => Self::UserControl,
            5 => Self::WindowAckSize,
            6 => Self::SetPeerBandwidth,
            8 => Self::Audio,
            9 => Self::Video,
            15 => Self::DataAmf3,
            16 => Self::SharedObjAmf3,
            17 => Self::CommandAmf3,
            18 => Self::DataAmf0,
            19 => Self::SharedObj,
            20 => Self::CommandAmf0,
            22 => Self::Aggregate,
            _ => return None,
        })
    }

    /// The wire id.
    pub fn id(self) -> u8 {
        self as u8
    }
}

/// User control event types (6.2 and 7.1.7).
pub mod user_control {
    /// The server tells the client a stream became functional.
    pub const STREAM_BEGIN: u16 = 0;
    /// Playback of a stream ended.
    pub const STREAM_EOF: u16 = 1;
    /// No more data on the stream for now.
    pub const STREAM_DRY: u16 = 2;
    /// The client's buffer length in milliseconds.
    pub const SET_BUFFER_LENGTH: u16 = 3;
    /// The stream is a recorded stream.
    pub const STREAM_IS_RECORDED: u16 = 4;
    /// Ping request (carries a timestamp).
    pub const PING_REQUEST: u16 = 6;
    /// Ping response (echoes the timestamp).
    pub const PING_RESPONSE: u16 = 7;
}

/// A complete message as reassembled by the chunk decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Chunk stream it arrived on.
    pub csid: u32,
    /// Message type id.
    pub msg_type: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// Absolute timestamp in milliseconds (wrapping).
    pub timestamp: u32,
    /// The body, as slices of the received buffers.
    pub payload: ByteRope,
    /// Inbound byte offset of the message's first chunk header.
    pub offset: u64,
}

/// Chunk stream used for protocol control and user control messages.
pub const CSID_CONTROL: u32 = 2;
/// Chunk stream used for command messages.
pub const CSID_COMMAND: u32 = 3;

/// A 4-byte big-endian body (Set Chunk Size, Abort, Ack, Window Ack Size).
pub fn u32_body(v: u32) -> ByteRope {
    ByteRope::from(v.to_be_bytes().to_vec())
}

/// Set Peer Bandwidth body: window and limit type (0 hard, 1 soft, 2 dynamic).
pub fn peer_bandwidth_body(window: u32, limit: u8) -> ByteRope {
    let mut v = window.to_be_bytes().to_vec();
    v.push(limit);
    ByteRope::from(v)
}

/// User control body: event type and one or two 32-bit values.
pub fn user_control_body(event: u16, data: &[u32]) -> ByteRope {
    let mut v = event.to_be_bytes().to_vec();
    for d in data {
        v.extend_from_slice(&d.to_be_bytes());
    }
    ByteRope::from(v)
}
