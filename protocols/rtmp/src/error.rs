//! Errors of the RTMP layer.
//!
//! Every variant that comes from peer data carries the byte offset, in the connection's inbound
//! stream (handshake bytes included), of the chunk or message that broke the rule.

use crate::amf0::Amf0Error;

/// Why a session stopped. After an `Err` from `handle_input` the session is dead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// C0 (or S0) named an RTMP version other than 3.
    #[error("unsupported RTMP handshake version {version} at offset {offset}")]
    BadHandshakeVersion {
        /// The version byte received.
        version: u8,
        /// Offset of the version byte.
        offset: u64,
    },
    /// The handshake and `connect` did not complete within the configured time.
    #[error("handshake did not complete in time")]
    HandshakeTimeout,
    /// No byte arrived within the idle timeout.
    #[error("no data received within the idle timeout")]
    IdleTimeout,
    /// Set Chunk Size asked for more than the configured maximum.
    #[error("peer chunk size {size} exceeds the limit {max} (message at offset {offset})")]
    ChunkSizeTooLarge {
        /// Requested chunk size.
        size: u32,
        /// Configured maximum.
        max: u32,
        /// Offset of the Set Chunk Size message.
        offset: u64,
    },
    /// A message header announced a length above the configured maximum.
    #[error("message length {len} exceeds the limit {max} (chunk at offset {offset})")]
    MessageTooLarge {
        /// Announced length.
        len: u32,
        /// Configured maximum.
        max: u32,
        /// Offset of the chunk header.
        offset: u64,
    },
    /// The peer used more distinct chunk stream ids than allowed.
    #[error("more than {max} chunk streams (chunk at offset {offset})")]
    TooManyChunkStreams {
        /// Configured maximum.
        max: usize,
        /// Offset of the chunk header.
        offset: u64,
    },
    /// A type 1, 2 or 3 chunk header arrived on a chunk stream that never had a type 0 header.
    #[error("chunk header format {fmt} on unknown chunk stream {csid} at offset {offset}")]
    UnknownChunkStream {
        /// The chunk stream id.
        csid: u32,
        /// The header format (1, 2 or 3).
        fmt: u8,
        /// Offset of the chunk header.
        offset: u64,
    },
    /// An AMF0 payload could not be decoded.
    #[error("bad AMF0 in message at offset {offset}: {source}")]
    Amf0 {
        /// Offset of the message carrying the AMF0 data.
        offset: u64,
        /// What was wrong.
        source: Amf0Error,
    },
    /// Any other protocol violation.
    #[error("invalid RTMP at offset {offset}: {what}")]
    Invalid {
        /// Offset of the chunk or message that broke the rule.
        offset: u64,
        /// The rule that was broken.
        what: &'static str,
    },
    /// `handle_input` was called after the session had failed.
    #[error("session already failed")]
    SessionDead,
}

impl Error {
    /// The inbound byte offset the error refers to, when it has one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::BadHandshakeVersion { offset, .. }
            | Error::ChunkSizeTooLarge { offset, .. }
            | Error::MessageTooLarge { offset, .. }
            | Error::TooManyChunkStreams { offset, .. }
            | Error::UnknownChunkStream { offset, .. }
            | Error::Amf0 { offset, .. }
            | Error::Invalid { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}
