//! The publisher: loops the clip in real time on its own thread and stamps every H.264 frame
//! with an SEI carrying its wall-clock send time and a sequence number.
//!
//! Frame body rewrite (AVC NALU packet, 4-byte NAL lengths):
//!
//! ```text
//! original: [FrameType|CodecID][AVCPacketType=1][CTS 3] [len][NAL] [len][NAL] ...
//! sent:     [FrameType|CodecID][AVCPacketType=1][CTS 3] [len][SEI] [len][NAL] [len][NAL] ...
//! SEI user data (after the 16-byte UUID): send time ns (u64 BE), sequence number (u64 BE)
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use zerocast_codecs::h264::sei;
use zerocast_codecs::ByteRope;
use zerocast_rtmp::{ClientEvent, MediaKind, MediaMessage};

use crate::clip::{Clip, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::rtmp::{wall_ns, Client, RtmpUrl};

/// The UUID of zerocast's latency SEI (user_data_unregistered).
pub const SEI_UUID: [u8; 16] = *b"zerocast-latency";

/// Decodes our SEI user data: (send time ns, sequence number).
pub fn decode_stamp(data: &[u8]) -> Option<(u64, u64)> {
    let ns = u64::from_be_bytes(data.get(0..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
    Some((ns, seq))
}

/// What the publisher thread shares with the harness.
#[derive(Debug, Default)]
pub struct PublisherState {
    /// Set once the server answered `NetStream.Publish.Start`.
    pub started: AtomicBool,
    /// Set by the harness to stop the thread.
    pub stop: AtomicBool,
    /// Wall-clock send time (ns) of every stamped video frame, in order.
    pub sent: Mutex<Vec<u64>>,
    /// Why the publisher stopped early.
    pub error: Mutex<Option<String>>,
}

impl PublisherState {
    /// Video frames whose send time falls in `[from, to)`.
    pub fn frames_sent_between(&self, from: u64, to: u64) -> u64 {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.iter().filter(|&&t| t >= from && t < to).count() as u64
    }

    fn fail(&self, e: &anyhow::Error) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
    }

    /// The error, if the publisher died.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A running publisher thread.
pub struct Publisher {
    /// Shared state.
    pub state: Arc<PublisherState>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts publishing `clip` to `url` and waits until the server accepted the stream.
    pub fn start(url: &str, clip: Arc<Clip>) -> Result<Publisher> {
        let url = RtmpUrl::parse(url)?;
        let state = Arc::new(PublisherState::default());
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return st.fail(&e.into()),
                };
                if let Err(e) = rt.block_on(run(&url, &clip, &st)) {
                    st.fail(&e);
                }
            })?;
        let p = Publisher {
            state,
            thread: Some(thread),
        };
        let t0 = Instant::now();
        while !p.state.started.load(Ordering::Acquire) {
            if let Some(e) = p.state.error() {
                bail!("publisher: {e}");
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!("publisher: no NetStream.Publish.Start within 15 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(p)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(url: &RtmpUrl, clip: &Clip, st: &PublisherState) -> Result<()> {
    let addr = url.resolve().await?;
    let mut c = Client::connect(addr, url).await?;
    c.session.publish(&url.name);
    let mut events = Vec::new();
    let t0 = Instant::now();
    let mut stream_id = None;
    while stream_id.is_none() {
        c.flush(&mut events).await?;
        for e in events.drain(..) {
            match e {
                ClientEvent::PublishStarted { stream_id: s } => stream_id = Some(s),
                ClientEvent::Status { level, code, .. } if level == "error" => {
                    bail!("publish refused: {code}")
                }
                _ => {}
            }
        }
        if stream_id.is_some() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("publish: no answer within 10 s");
        }
        tokio::time::timeout(Duration::from_secs(10), c.step())
            .await
            .map_err(|_| anyhow!("publish: server silent"))??;
    }
    let stream_id = stream_id.unwrap_or(1);
    st.started.store(true, Ordering::Release);

    let start = Instant::now();
    let mut seq = 0u64;
    for lap in 0u64.. {
        let offset = lap * clip.duration_ms;
        for tag in &clip.tags {
            if lap > 0 && (tag.is_sequence_header() || tag.tag_type == TAG_SCRIPT) {
                continue;
            }
            let ts = offset + u64::from(tag.timestamp);
            let due = start + Duration::from_millis(ts);
            // Serve the server (acks, pings) until the tag is due.
            while Instant::now() < due {
                if st.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                let wait = due.min(Instant::now() + Duration::from_millis(200));
                if let Ok(r) = tokio::time::timeout_at(wait.into(), c.step()).await {
                    r?;
                    c.flush(&mut events).await?;
                    for e in events.drain(..) {
                        if let ClientEvent::Status { level, code, .. } = e {
                            if level == "error" {
                                bail!("server error while publishing: {code}");
                            }
                        }
                    }
                }
            }
            if st.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            match tag.tag_type {
                TAG_SCRIPT => {
                    c.session.send_metadata(&ByteRope::from(tag.body.clone()));
                }
                TAG_AUDIO | TAG_VIDEO => {
                    let kind = if tag.tag_type == TAG_AUDIO {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    let mut stamped = None;
                    let payload = if tag.is_avc_frame() {
                        let ns = wall_ns();
                        stamped = Some(ns);
                        stamp(&tag.body, ns, seq)
                    } else {
                        ByteRope::from(tag.body.clone())
                    };
                    c.session.send_media(&MediaMessage {
                        kind,
                        timestamp: ts as u32,
                        stream_id,
                        payload,
                    });
                    if let Some(ns) = stamped {
                        seq += 1;
                        st.sent.lock().unwrap_or_else(|p| p.into_inner()).push(ns);
                    }
                }
                _ => {}
            }
            c.flush(&mut events)
                .await
                .context("sending media to the server")?;
        }
    }
    Ok(())
}

/// Rebuilds an AVC NALU packet with our SEI NAL first.
fn stamp(body: &Bytes, ns: u64, seq: u64) -> ByteRope {
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&ns.to_be_bytes());
    data[8..].copy_from_slice(&seq.to_be_bytes());
    let nal = sei::build_user_data_unregistered(&SEI_UUID, &data);
    let mut head = Vec::with_capacity(9 + nal.len());
    head.extend_from_slice(&body[..5]);
    head.extend_from_slice(&(nal.len() as u32).to_be_bytes());
    head.extend_from_slice(&nal);
    let mut rope = ByteRope::with_capacity(2);
    rope.push(Bytes::from(head));
    rope.push(body.slice(5..));
    rope
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocast_codecs::flv::{parse_video, FlvTag};
    use zerocast_codecs::FramePayload;

    #[test]
    fn stamped_frame_carries_time_and_sequence() {
        // An inter frame with one (fake) slice NAL of 3 bytes.
        let body = Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9a, 0x00]);
        let rope = stamp(&body, 1_234_567_890_123, 42);
        let tag = parse_video(&rope, 0, Instant::now(), 4).unwrap();
        let FlvTag::Frame { frame, .. } = tag else {
            panic!("not a frame: {tag:?}")
        };
        let FramePayload::Nalus(nalus) = &frame.payload else {
            panic!("no NAL units")
        };
        assert_eq!(nalus.len(), 2);
        assert_eq!(nalus[1].to_contiguous().as_ref(), &[0x41, 0x9a, 0x00]);
        let data = sei::find_user_data_unregistered(nalus, &SEI_UUID).unwrap();
        assert_eq!(decode_stamp(&data), Some((1_234_567_890_123, 42)));
    }
}
