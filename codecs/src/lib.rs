//! Bitstreams, containers and the shared media model of zerocast.
//!
//! Everything here is a pure function or a sans-IO type: no sockets, no clocks, no threads.
//!
//! - [`rope`]: [`ByteRope`], a payload made of `Bytes` slices cut from receive buffers, and a
//!   bounds-checked reader over it. Media bytes are never copied into a contiguous buffer.
//! - [`media`]: [`Track`], [`Frame`] and friends, the model every protocol reads and writes.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod media;
pub mod rope;

pub use media::{CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};
pub use rope::{ByteRope, RopeReader};
