//! Limits and session configuration.

use std::time::Duration;

use crate::amf0::Amf0Limits;

/// Caps on what a peer may make a session buffer or parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest chunk size a peer may set with Set Chunk Size; larger is an error.
    pub max_chunk_size: u32,
    /// Largest message length a chunk header may announce.
    pub max_message_size: u32,
    /// Deepest AMF0 container nesting accepted.
    pub max_amf_depth: usize,
    /// Longest AMF0 string accepted, in bytes.
    pub max_amf_string: usize,
    /// Most items in one AMF0 container.
    pub max_amf_items: usize,
    /// Most distinct chunk stream ids a peer may use.
    pub max_chunk_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_chunk_size: 65536,
            max_message_size: 8 * 1024 * 1024,
            max_amf_depth: 16,
            max_amf_string: 64 * 1024,
            max_amf_items: 1024,
            max_chunk_streams: 64,
        }
    }
}

impl Limits {
    /// The AMF0 part of the limits.
    pub fn amf0(&self) -> Amf0Limits {
        Amf0Limits {
            max_depth: self.max_amf_depth,
            max_string: self.max_amf_string,
            max_items: self.max_amf_items,
        }
    }
}

/// Configuration shared by [`ServerSession`](crate::ServerSession) and
/// [`ClientSession`](crate::ClientSession).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Caps on peer input.
    pub limits: Limits,
    /// Chunk size this side announces and sends with (clamped to `1..=0x7fff_ffff`).
    pub out_chunk_size: u32,
    /// Window Acknowledgement Size announced to the peer.
    pub window_ack_size: u32,
    /// Time allowed from the first byte to a completed handshake and `connect`.
    pub handshake_timeout: Duration,
    /// Time allowed without any received byte (not applied while only sending, see the
    /// session docs).
    pub idle_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            out_chunk_size: 4096,
            window_ack_size: 2_500_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}
