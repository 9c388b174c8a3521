//! From RTMP media messages to [`MediaItem`]s: FLV tag bodies parsed into the media model.

use std::time::Instant;

use zerocast_codecs::flv::{self, FlvError, FlvTag};
use zerocast_codecs::MediaKind;
use zerocast_rtmp::MediaMessage;

use crate::stream::MediaItem;

/// Per-publisher parsing state: what the last sequence headers said.
#[derive(Debug)]
pub struct FlvIngest {
    nalu_length_size: u8,
}

impl Default for FlvIngest {
    fn default() -> Self {
        // AVCC's usual 4-byte lengths until a sequence header says otherwise.
        FlvIngest {
            nalu_length_size: 4,
        }
    }
}

impl FlvIngest {
    /// Parses one audio or video message. `Ok(None)` for tags with nothing to forward.
    pub fn ingest(
        &mut self,
        msg: &MediaMessage,
        ingest: Instant,
    ) -> Result<Option<MediaItem>, FlvError> {
        let ts = i64::from(msg.timestamp);
        let tag = match msg.kind {
            MediaKind::Video => flv::parse_video(&msg.payload, ts, ingest, self.nalu_length_size)?,
            MediaKind::Audio => flv::parse_audio(&msg.payload, ts, ingest)?,
            MediaKind::Data => return Ok(None),
        };
        Ok(match tag {
            FlvTag::SequenceHeader(track) => {
                if track.kind == MediaKind::Video {
                    self.nalu_length_size = flv::nalu_length_size(&track);
                }
                Some(MediaItem::Track(track))
            }
            FlvTag::Frame { frame, .. } => Some(MediaItem::Frame(frame)),
            FlvTag::Passthrough {
                kind,
                body,
                keyframe,
                ..
            } => Some(MediaItem::Passthrough {
                kind,
                timestamp: msg.timestamp,
                body,
                keyframe,
            }),
            FlvTag::EndOfSequence(_) | FlvTag::Ignored { .. } => None,
        })
    }
}
