//! Hardware abstraction for decode, scale and encode.
//!
//! A backend is a provider: it exposes one [`Device`] per accelerator, and the device makes
//! [`Decoder`]s, [`Scaler`]s and [`Encoder`]s whose pictures are [`Surface`]s in that device's
//! own memory, so a decode → scale → encode pipeline on one device never copies pictures to the
//! host. Backends are chosen at run time: [`probe`] says which are usable here and, for the rest,
//! why not.
//!
//! The codec stages are sans-IO: `submit` hands work in, `poll` takes results out until it
//! returns `None`, and `flush` drains the stage at end of stream. Nothing here spawns threads or
//! reads clocks; timestamps pass through untouched.
//!
//! Only the [`software`] backend exists so far, and it reports no codecs: real software
//! decoding and encoding arrive with the transcoding work. Hardware backends (NVENC, VA-API,
//! Quick Sync) will live behind cargo features.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;
pub use zerocast_codecs::media::CodecId;

pub mod software;

/// A failed HAL operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HalError {
    /// The device cannot do this (codec, size or format not supported).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller passed something malformed (a surface of another backend, a short plane, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backend's driver or library failed.
    #[error("backend failure: {0}")]
    Backend(String),
}

/// Layout of a picture's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PixelFormat {
    /// 8-bit 4:2:0, three planes (Y, U, V).
    I420,
    /// 8-bit 4:2:0, two planes (Y, interleaved UV).
    Nv12,
    /// 10-bit 4:2:0 in 16-bit words, two planes (Y, interleaved UV).
    P010,
}

/// Picture size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// A decoded picture in host memory.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPicture {
    /// Sample layout.
    pub format: PixelFormat,
    /// Size.
    pub size: Resolution,
    /// One buffer per plane, shared rather than copied.
    pub planes: Vec<Bytes>,
    /// Bytes per row of each plane (at least the row's sample bytes; may include padding).
    /// Chroma planes of the 4:2:0 formats have half the rows, rounded up.
    pub strides: Vec<usize>,
}

/// A picture in a device's memory, opaque outside its backend.
#[derive(Debug, Clone)]
pub struct DeviceSurface {
    /// Sample layout.
    pub format: PixelFormat,
    /// Size.
    pub size: Resolution,
    /// The backend's own handle (a CUDA pointer wrapper, a VA surface id, ...); backends
    /// downcast it and reject handles of other backends with [`HalError::InvalidInput`].
    pub handle: Arc<dyn Any + Send + Sync>,
}

/// A decoded picture, wherever it lives.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Surface {
    /// Host memory planes.
    Host(HostPicture),
    /// CUDA device memory; provided by the NVENC/NVDEC backend.
    Cuda(DeviceSurface),
    /// A VA-API surface; provided by the VA-API backend.
    Va(DeviceSurface),
    /// A oneVPL surface; provided by the Quick Sync backend.
    Vpl(DeviceSurface),
}

/// A picture and its presentation time, in the stream's timescale.
#[derive(Debug, Clone)]
pub struct Picture {
    /// The samples.
    pub surface: Surface,
    /// Presentation timestamp.
    pub pts: i64,
}

/// One compressed access unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// Presentation timestamp.
    pub pts: i64,
    /// Decode timestamp.
    pub dts: i64,
    /// Whether decoding can start here.
    pub keyframe: bool,
    /// NAL units without start codes for H.264/H.265; one element for other codecs.
    pub data: Vec<Bytes>,
}

/// Settings for a new encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    /// Output codec.
    pub codec: CodecId,
    /// Picture size.
    pub size: Resolution,
    /// Target bitrate in bits per second.
    pub bitrate: u32,
    /// Frame rate as a fraction (numerator, denominator).
    pub frame_rate: (u32, u32),
    /// Frames between forced keyframes.
    pub keyframe_interval: u32,
}

/// What a device can do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Codecs it can decode.
    pub decode: Vec<CodecId>,
    /// Codecs it can encode.
    pub encode: Vec<CodecId>,
    /// Largest picture it handles; `None` when it handles none.
    pub max_resolution: Option<Resolution>,
}

/// One accelerator (or the CPU), able to make codec stages.
pub trait Device: Send + Sync {
    /// A human-readable name ("software", "NVIDIA H200 #0", ...).
    fn name(&self) -> &str;
    /// The backend that provides it.
    fn backend(&self) -> Backend;
    /// What it can do.
    fn capabilities(&self) -> Capabilities;
    /// A decoder for `codec`, configured by `config` (SPS/PPS, sequence header, ...).
    fn decoder(&self, codec: CodecId, config: &Bytes) -> Result<Box<dyn Decoder>, HalError>;
    /// A scaler to `size` in `format`.
    fn scaler(&self, size: Resolution, format: PixelFormat) -> Result<Box<dyn Scaler>, HalError>;
    /// An encoder with `settings`.
    fn encoder(&self, settings: &EncoderSettings) -> Result<Box<dyn Encoder>, HalError>;
}

/// Compressed packets in, pictures out.
pub trait Decoder: Send {
    /// Queues one packet.
    fn submit(&mut self, packet: Packet) -> Result<(), HalError>;
    /// The next decoded picture, if one is ready.
    fn poll(&mut self) -> Option<Result<Picture, HalError>>;
    /// Marks end of stream; `poll` then returns the pictures still held.
    fn flush(&mut self);
}

/// Pictures in, resized or converted pictures out.
pub trait Scaler: Send {
    /// Queues one picture.
    fn submit(&mut self, picture: Picture) -> Result<(), HalError>;
    /// The next output picture, if one is ready.
    fn poll(&mut self) -> Option<Result<Picture, HalError>>;
}

/// Pictures in, compressed packets out.
pub trait Encoder: Send {
    /// The codec configuration (SPS/PPS, ...) once known.
    fn codec_config(&self) -> Option<Bytes>;
    /// Queues one picture; `keyframe` forces it to be a keyframe.
    fn submit(&mut self, picture: Picture, keyframe: bool) -> Result<(), HalError>;
    /// The next packet, if one is ready.
    fn poll(&mut self) -> Option<Result<Packet, HalError>>;
    /// Marks end of stream; `poll` then returns the packets still held.
    fn flush(&mut self);
}

/// The backends zerocast knows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// CPU; always built.
    Software,
    /// NVIDIA NVENC/NVDEC.
    Nvenc,
    /// VA-API (Intel, AMD on Linux).
    Vaapi,
    /// Intel Quick Sync through oneVPL.
    Qsv,
}

/// Lists every known backend, software first, each `Ok` if usable on this machine or `Err`
/// with the reason it is not (not built in, no driver, no device, ...).
pub fn probe() -> Vec<(Backend, Result<(), String>)> {
    let not_built = |name: &str| Err(format!("the {name} backend is not part of this build yet"));
    vec![
        (Backend::Software, Ok(())),
        (Backend::Nvenc, not_built("nvenc")),
        (Backend::Vaapi, not_built("vaapi")),
        (Backend::Qsv, not_built("qsv")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_always_offers_software() {
        let backends = probe();
        assert_eq!(backends[0], (Backend::Software, Ok(())));
        assert!(backends[1..]
            .iter()
            .all(|(_, a)| a.as_ref().is_err_and(|why| !why.is_empty())));
    }
}
