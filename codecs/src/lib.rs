//! Bitstreams, containers and the shared media model of zerocast.
//!
//! Everything here is a pure function or a sans-IO type: no sockets, no clocks, no threads.
//!
//! - [`rope`]: [`ByteRope`], a payload made of `Bytes` slices cut from receive buffers, and a
//!   bounds-checked reader over it. Media bytes are never copied into a contiguous buffer.
//! - [`media`]: [`Track`], [`Frame`] and friends, the model every protocol reads and writes.
//! - [`flv`]: FLV tag bodies of RTMP audio/video messages (legacy and Enhanced RTMP), parsed
//!   into the media model and muxed back without copying media.
//! - [`fmp4`]: the fragmented MP4 / CMAF muxer (init segment, fragments, RFC 6381 codecs).
//! - [`h264`], [`h265`], [`aac`], [`opus`]: codec headers (decoder configuration records,
//!   parameter sets, SEI, AudioSpecificConfig, OpusHead).
//! - [`bits`]: the bit reader and emulation-prevention helpers behind the codec parsers.
//!
//! Parsers never panic on input: every malformed byte is an error naming the rule and the
//! offset. With the `fuzzing` feature, the `fuzz` module exposes panic-free entry points for
//! cargo-fuzz targets.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aac;
pub mod bits;
pub mod flv;
pub mod fmp4;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod h264;
pub mod h265;
pub mod media;
pub mod opus;
pub mod rope;
pub mod ts;

pub use media::{CodecId, Frame, FramePayload, MediaKind, Track, TrackInfo};
pub use rope::{ByteRope, RopeReader};
