//! The CPU backend: always built, always available.
//!
//! It makes no codec stages yet. Real software decode, scale and encode (openh264 and friends)
//! arrive with the transcoding work; until then every constructor answers
//! [`HalError::Unsupported`] rather than pretending, and [`Capabilities`] lists no codecs so
//! callers can tell in advance.

use bytes::Bytes;

use crate::{
    Backend, Capabilities, CodecId, Decoder, Device, Encoder, EncoderSettings, HalError,
    PixelFormat, Resolution, Scaler,
};

/// The CPU as a [`Device`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SoftwareDevice;

fn not_yet(what: &str) -> HalError {
    HalError::Unsupported(format!("software {what} is not implemented yet"))
}

impl Device for SoftwareDevice {
    fn name(&self) -> &str {
        "software"
    }

    fn backend(&self) -> Backend {
        Backend::Software
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn decoder(&self, codec: CodecId, _config: &Bytes) -> Result<Box<dyn Decoder>, HalError> {
        Err(not_yet(&format!("{} decoding", codec.name())))
    }

    fn scaler(&self, _size: Resolution, _format: PixelFormat) -> Result<Box<dyn Scaler>, HalError> {
        Err(not_yet("scaling"))
    }

    fn encoder(&self, settings: &EncoderSettings) -> Result<Box<dyn Encoder>, HalError> {
        Err(not_yet(&format!("{} encoding", settings.codec.name())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_refuses_every_codec() {
        let device = SoftwareDevice;
        assert_eq!(device.capabilities(), Capabilities::default());
        let size = Resolution {
            width: 1280,
            height: 720,
        };
        let settings = EncoderSettings {
            codec: CodecId::H264,
            size,
            bitrate: 2_000_000,
            frame_rate: (30, 1),
            keyframe_interval: 60,
        };
        assert!(matches!(
            device.encoder(&settings),
            Err(HalError::Unsupported(_))
        ));
        assert!(device.decoder(CodecId::H264, &Bytes::new()).is_err());
        assert!(device.scaler(size, PixelFormat::Nv12).is_err());
    }
}
