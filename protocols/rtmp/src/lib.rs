//! Sans-IO RTMP for zerocast: the server role (publishers and players connect to us) and the
//! client role (we publish to or play from another server).
//!
//! # Design
//!
//! A session never touches a socket or a clock. The driver feeds it received bytes and timer
//! ticks with [`Input`], each stamped with the current [`Instant`], and drains [`Output`]:
//! bytes to send, events, and the instant of the next timer. Media is never copied: the
//! [`ChunkDecoder`] cuts chunk payloads out of the received [`Bytes`] by refcount and hands
//! each message on as a [`ByteRope`]; outbound, [`encode_message`] writes the chunk headers of
//! a whole message into one small allocation and interleaves them with slices of the payload.
//!
//! Layers, one module each, following the spec (Adobe RTMP 1.0):
//!
//! * [`handshake`]: C0-C2 / S0-S2, plain and digest (Flash Player 9 / ffmpeg) variants.
//! * [`chunk`]: chunk stream reassembly and chunking (section 5.3).
//! * [`message`]: message types, protocol and user control messages (5.4, 6.2, 7.1).
//! * [`amf0`] and [`command`]: AMF0 values and the NetConnection / NetStream commands (7.2).
//! * [`ServerSession`] and [`ClientSession`]: the two state machines.
//!
//! # Drive-loop contract
//!
//! 1. Create the session with the current instant.
//! 2. After **every** `handle_input`, call `poll_output` until it returns [`Output::Timeout`]:
//!    send every [`Output::Transmit`] in order, act on every [`Output::Event`].
//! 3. When the instant of the last `Output::Timeout` is reached and no bytes arrived first,
//!    call `handle_input(Input::Timeout(now))`. Spurious or early ticks are harmless. When no
//!    timer is armed the returned instant is a day ahead.
//! 4. After calling a mutator (`accept_publish`, `send_media`, ...) drain `poll_output` too.
//! 5. An `Err` from `handle_input` is final: it names the violation and, for peer errors, the
//!    byte offset in the inbound stream. Send what `poll_output` still yields if you like, then
//!    close the connection.
//!
//! ```no_run
//! use std::time::Instant;
//! use bytes::Bytes;
//! use zerocast_rtmp::{Input, Output, ServerEvent, ServerSession, SessionConfig};
//!
//! # fn recv() -> Option<Bytes> { None }
//! # fn send(_: &[Bytes]) {}
//! let mut session = ServerSession::new(SessionConfig::default(), Instant::now());
//! let mut deadline;
//! loop {
//!     // Drain everything the session has to say.
//!     loop {
//!         match session.poll_output() {
//!             Output::Transmit(rope) => send(rope.parts()), // a vectored write
//!             Output::Event(ServerEvent::Publish { stream_id, .. }) => {
//!                 session.accept_publish(stream_id)
//!             }
//!             Output::Event(_) => {}
//!             Output::Timeout(at) => {
//!                 deadline = at;
//!                 break;
//!             }
//!         }
//!     }
//!     // Wait for bytes or the deadline, whichever comes first.
//!     let input = match recv() {
//!         Some(bytes) => Input::Receive(Instant::now(), bytes),
//!         None if Instant::now() >= deadline => Input::Timeout(Instant::now()),
//!         None => continue,
//!     };
//!     if let Err(e) = session.handle_input(input) {
//!         eprintln!("closing connection: {e}");
//!         break;
//!     }
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod amf0;
pub mod chunk;
mod client;
pub mod command;
mod config;
mod conn;
mod error;
pub mod handshake;
pub mod message;
mod server;
mod timer;

#[cfg(feature = "fuzzing")]
pub mod fuzz;

use std::time::Instant;

use bytes::Bytes;

pub use amf0::{Amf0Error, Amf0Limits, Amf0Value};
pub use chunk::{encode_message, ChunkDecoder, ChunkEncoder};
pub use client::{ClientEvent, ClientParams, ClientSession};
pub use command::Command;
pub use config::{Limits, SessionConfig};
pub use error::Error;
pub use message::{MessageType, RawMessage};
pub use server::{ServerEvent, ServerSession, MAX_STREAMS};
pub use zerocast_codecs::{ByteRope, MediaKind};

/// Chunk stream id used to send audio.
pub const CSID_AUDIO: u32 = 4;
/// Chunk stream id used to send data messages (metadata).
pub const CSID_DATA: u32 = 5;
/// Chunk stream id used to send video.
pub const CSID_VIDEO: u32 = 6;

/// What the driver feeds a session.
#[derive(Debug, Clone)]
pub enum Input {
    /// Bytes received from the peer, in order, at the given instant.
    Receive(Instant, Bytes),
    /// The instant has come (see [`Output::Timeout`]).
    Timeout(Instant),
}

/// What a session asks of its driver.
#[derive(Debug, Clone)]
pub enum Output<E> {
    /// Bytes to send, in order (a rope: write it vectored).
    Transmit(ByteRope),
    /// Something happened.
    Event(E),
    /// Nothing else is pending; call `handle_input(Input::Timeout(..))` at this instant unless
    /// bytes arrive before. A day ahead when no timer is armed.
    Timeout(Instant),
}

/// An audio, video or data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaMessage {
    /// Audio (message type 8), video (9) or data (18).
    pub kind: MediaKind,
    /// Absolute timestamp in milliseconds (wrapping at 2^32).
    pub timestamp: u32,
    /// Message stream id.
    pub stream_id: u32,
    /// The FLV tag body exactly as carried in the RTMP message.
    pub payload: ByteRope,
}
