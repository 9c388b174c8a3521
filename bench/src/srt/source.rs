//! The SRT publisher: the bench clip as MPEG-TS over SRT, every H.264 frame stamped with the
//! same latency SEI as the RTMP publisher's ([`crate::publisher`]).
//!
//! The clip's FLV tags are parsed once into frames ([`TsSource`]); each is sent when its
//! timestamp is due (looping, as the RTMP publisher does): video frames get the SEI NAL unit
//! (UUID `zerocast-latency`, send time ns, sequence number) in front of their NAL units, then
//! the frame goes through zerocast's TS [`Muxer`] and out in payloads of at most seven
//! 188-byte packets (1316 bytes); the frame's last payload goes out at once, short.
//!
//! zerocast's muxer writes the real `PES_packet_length` into every PES that fits 16 bits
//! (64 KiB), so a demuxer can end such a frame at its last packet; a bigger frame (a large
//! keyframe) gets 0 and ends only when the next PES starts. ffmpeg's mpegts muxer (and so OBS
//! and `ffmpeg -f mpegts srt://...`) writes 0 for every video PES by default
//! (`omit_video_pes_length`); `--video-pes-length zero` does the same, to measure what that
//! costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use zerocast_codecs::flv::{self, FlvTag};
use zerocast_codecs::h264::sei;
use zerocast_codecs::ts::{Muxer, PACKET_SIZE};
use zerocast_codecs::{ByteRope, Frame, FramePayload, MediaKind, Track};
use zerocast_srt::{SessionConfig, Stats};

use super::link;
use crate::clip::{Clip, TAG_AUDIO, TAG_VIDEO};
use crate::publisher::{PublisherState, SEI_UUID};
use crate::rtmp::wall_ns;

/// Seven TS packets: the SRT payload every implementation sends.
pub const TS_PAYLOAD: usize = 7 * PACKET_SIZE;
/// The PID our muxer gives its first track (the video track here).
const VIDEO_PID: u16 = 0x100;

/// One frame of the clip, at its place in the loop.
#[derive(Debug, Clone)]
struct ClipFrame {
    /// Milliseconds from the start of the loop (the FLV tag timestamp, i.e. the DTS).
    at_ms: u64,
    frame: Frame,
}

/// What the publisher writes into `PES_packet_length` of video PES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum PesLength {
    /// zerocast's muxer: the real length when it fits 16 bits, else 0.
    Auto,
    /// Always 0, as ffmpeg (and OBS) write video PES.
    Zero,
}

/// The clip as frames, and the muxer that turns them into TS.
pub struct TsSource {
    muxer: Muxer,
    frames: Vec<ClipFrame>,
    duration_ms: u64,
    pes_length: PesLength,
    /// Video PES sent with their length.
    pub pes_bounded: u64,
    /// Video PES sent with length 0 (too long for 16 bits, or `PesLength::Zero`).
    pub pes_unbounded: u64,
    /// Of `pes_unbounded`, those whose last TS packet is full: no stuffing marks their end,
    /// so a demuxer sees it only when the next PES starts, a frame later.
    pub pes_unbounded_unstuffed: u64,
}

impl TsSource {
    /// Parses the clip's tags into an H.264 track, an AAC track and their frames.
    pub fn new(clip: &Clip, pes_length: PesLength) -> Result<TsSource> {
        let t0 = Instant::now();
        let (mut video, mut audio, mut frames) = (None::<Track>, None::<Track>, Vec::new());
        let mut nalu_len = 4u8;
        for tag in &clip.tags {
            let body = ByteRope::from(tag.body.clone());
            let ts = i64::from(tag.timestamp);
            let parsed = match tag.tag_type {
                TAG_VIDEO => flv::parse_video(&body, ts, t0, nalu_len),
                TAG_AUDIO => flv::parse_audio(&body, ts, t0),
                _ => continue,
            }
            .map_err(|e| anyhow!("clip tag at {ts} ms: {e}"))?;
            match parsed {
                FlvTag::SequenceHeader(t) if t.kind == MediaKind::Video => {
                    nalu_len = flv::nalu_length_size(&t);
                    video.get_or_insert(t);
                }
                FlvTag::SequenceHeader(t) => {
                    audio.get_or_insert(t);
                }
                FlvTag::Frame { frame, .. } => frames.push(ClipFrame {
                    at_ms: u64::from(tag.timestamp),
                    frame,
                }),
                _ => {}
            }
        }
        let video = video.ok_or_else(|| anyhow!("the clip has no H.264 sequence header"))?;
        // Video first: it gets PID 0x100 and carries the PCR.
        let tracks: Vec<Track> = std::iter::once(video).chain(audio).collect();
        let muxer = Muxer::new(tracks).map_err(|e| anyhow!("TS muxer: {e}"))?;
        Ok(TsSource {
            muxer,
            frames,
            duration_ms: clip.duration_ms,
            pes_length,
            pes_bounded: 0,
            pes_unbounded: 0,
            pes_unbounded_unstuffed: 0,
        })
    }

    /// Frames per loop.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// When frame `i` of loop `lap` is due, in ms from the start, and whether it is video.
    pub fn due_ms(&self, lap: u64, i: usize) -> (u64, bool) {
        let f = &self.frames[i];
        (
            lap * self.duration_ms + f.at_ms,
            f.frame.kind == MediaKind::Video,
        )
    }

    /// The TS packets of frame `i` of loop `lap`; a video frame carries `stamp` (send time
    /// ns, sequence number) in an SEI before its NAL units.
    pub fn packets(&mut self, lap: u64, i: usize, stamp: Option<(u64, u64)>) -> Result<Bytes> {
        let mut frame = self.frames[i].frame.clone();
        let offset = (lap * self.duration_ms) as i64;
        frame.dts += offset;
        frame.pts += offset;
        frame.ingest = Instant::now();
        if let (Some((ns, seq)), FramePayload::Nalus(nalus)) = (stamp, &mut frame.payload) {
            nalus.insert(0, ByteRope::from(stamp_nal(ns, seq)));
        }
        let mut rope = ByteRope::new();
        self.muxer
            .mux(&frame, &mut rope)
            .map_err(|e| anyhow!("muxing a frame: {e}"))?;
        let mut ts = Vec::with_capacity(rope.len());
        for p in rope.parts() {
            ts.extend_from_slice(p);
        }
        if frame.kind == MediaKind::Video {
            if self.pes_length == PesLength::Zero {
                zero_pes_length(&mut ts, VIDEO_PID);
            }
            match pes_length(&ts, VIDEO_PID) {
                Some(0) => {
                    self.pes_unbounded += 1;
                    if !ends_stuffed(&ts, VIDEO_PID) {
                        self.pes_unbounded_unstuffed += 1;
                    }
                }
                Some(_) => self.pes_bounded += 1,
                None => {}
            }
        }
        Ok(Bytes::from(ts))
    }
}

/// The SEI NAL unit of one stamp, as the RTMP publisher writes it.
pub fn stamp_nal(ns: u64, seq: u64) -> Bytes {
    let mut data = [0u8; 16];
    data[..8].copy_from_slice(&ns.to_be_bytes());
    data[8..].copy_from_slice(&seq.to_be_bytes());
    sei::build_user_data_unregistered(&SEI_UUID, &data)
}

/// Cuts TS bytes into SRT payloads of at most [`TS_PAYLOAD`] bytes (slices, no copy).
pub fn payloads(ts: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    (0..ts.len())
        .step_by(TS_PAYLOAD)
        .map(move |at| ts.slice(at..(at + TS_PAYLOAD).min(ts.len())))
}

/// Offset of a TS packet's payload and whether it has one (ISO/IEC 13818-1 2.4.3.2:
/// adaptation_field_control bit 1 = adaptation field, bit 0 = payload).
pub fn payload_start(pkt: &[u8]) -> Option<usize> {
    let afc = (pkt[3] >> 4) & 3;
    if afc & 1 == 0 {
        return None;
    }
    let start = if afc & 2 != 0 {
        5 + usize::from(pkt[4])
    } else {
        4
    };
    (start <= PACKET_SIZE).then_some(start)
}

/// Where the PES that starts on `pid` in `ts` (whole TS packets) has its header.
fn pes_start(ts: &[u8], pid: u16) -> Option<usize> {
    ts.chunks_exact(PACKET_SIZE)
        .enumerate()
        .find_map(|(k, pkt)| {
            let p = (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2]);
            (p == pid && pkt[1] & 0x40 != 0)
                .then(|| payload_start(pkt).map(|s| k * PACKET_SIZE + s))
                .flatten()
        })
        .filter(|&at| at + 6 <= ts.len() && ts[at..at + 3] == [0, 0, 1])
}

/// PES_packet_length of the PES that starts on `pid` in `ts`.
pub fn pes_length(ts: &[u8], pid: u16) -> Option<u16> {
    let at = pes_start(ts, pid)?;
    Some(u16::from_be_bytes([ts[at + 4], ts[at + 5]]))
}

/// Whether the last TS packet on `pid` in `ts` is padded, as zerocast's demuxer tells the
/// end of an unbounded PES: its adaptation field takes more bytes than its contents need
/// (PCR: 8, discontinuity or random-access flag: 2, nothing flagged: 0).
pub fn ends_stuffed(ts: &[u8], pid: u16) -> bool {
    let Some(pkt) = ts
        .chunks_exact(PACKET_SIZE)
        .rfind(|p| (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]) == pid)
    else {
        return false;
    };
    if pkt[3] & 0x20 == 0 {
        return false;
    }
    let len = usize::from(pkt[4]);
    let flags = if len > 0 { pkt[5] } else { 0 };
    let needed = if flags & 0x10 != 0 {
        8
    } else if flags & 0xc0 != 0 {
        2
    } else {
        0
    };
    1 + len > needed
}

/// Sets PES_packet_length of the PES that starts on `pid` in `ts` to 0 ("unbounded", allowed
/// for video: ISO/IEC 13818-1 2.4.3.7).
pub fn zero_pes_length(ts: &mut [u8], pid: u16) -> bool {
    let Some(at) = pes_start(ts, pid) else {
        return false;
    };
    ts[at + 4..at + 6].fill(0);
    true
}

/// What the SRT publisher thread reports besides [`PublisherState`].
#[derive(Debug, Default)]
pub struct SrtPublisherInfo {
    /// TSBPD latency of the publishing hop (the server's receiver), ms.
    pub latency_ms: AtomicU64,
    /// The session's statistics, refreshed about once a second.
    pub stats: Mutex<Option<Stats>>,
    /// Video PES with / without a patched length.
    pub pes_bounded: AtomicU64,
    /// See `pes_bounded`.
    pub pes_unbounded: AtomicU64,
    /// See [`TsSource::pes_unbounded_unstuffed`].
    pub pes_unbounded_unstuffed: AtomicU64,
    /// How late frames went out after their due time, µs (a stalled publisher thread).
    pub send_late: Mutex<Option<Histogram<u64>>>,
}

impl SrtPublisherInfo {
    /// Refreshes the link statistics and the PES counts.
    fn update(&self, link: &link::Link, source: &TsSource) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(link.stats());
        self.pes_bounded
            .store(source.pes_bounded, Ordering::Relaxed);
        self.pes_unbounded
            .store(source.pes_unbounded, Ordering::Relaxed);
        self.pes_unbounded_unstuffed
            .store(source.pes_unbounded_unstuffed, Ordering::Relaxed);
    }
}

/// A running SRT publisher thread.
pub struct SrtPublisher {
    /// Shared with the viewers, as the RTMP publisher's.
    pub state: Arc<PublisherState>,
    /// Session facts.
    pub info: Arc<SrtPublisherInfo>,
    thread: Option<JoinHandle<()>>,
}

impl SrtPublisher {
    /// Publishes `clip` to `server` as `live/NAME` and waits until the server accepted.
    pub fn start(
        server: std::net::SocketAddr,
        name: &str,
        clip: &Clip,
        cfg: SessionConfig,
        pes_length: PesLength,
    ) -> Result<SrtPublisher> {
        let source = TsSource::new(clip, pes_length)?;
        let state = Arc::new(PublisherState::default());
        let info = Arc::new(SrtPublisherInfo::default());
        let (st, inf) = (state.clone(), info.clone());
        let sid = format!("#!::r=live/{name},m=publish");
        let thread = std::thread::Builder::new()
            .name("srt-publisher".into())
            .spawn(move || {
                if let Err(e) = run(server, &sid, cfg, source, &st, &inf) {
                    *st.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{e:#}"));
                }
            })?;
        let p = SrtPublisher {
            state,
            info,
            thread: Some(thread),
        };
        let t0 = Instant::now();
        while !p.state.started.load(Ordering::Acquire) {
            if let Some(e) = p.state.error() {
                bail!("SRT publisher: {e}");
            }
            if t0.elapsed() > Duration::from_secs(15) {
                bail!("SRT publisher: not connected within 15 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(p)
    }
}

impl Drop for SrtPublisher {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    server: std::net::SocketAddr,
    sid: &str,
    cfg: SessionConfig,
    mut source: TsSource,
    st: &PublisherState,
    info: &SrtPublisherInfo,
) -> Result<()> {
    let mut link = link::call(
        server,
        sid,
        cfg,
        link::seed(u64::MAX),
        Duration::from_secs(10),
    )
    .context("SRT publish")?;
    info.latency_ms.store(
        link.connection().send_latency().as_millis() as u64,
        Ordering::Relaxed,
    );
    st.started.store(true, Ordering::Release);
    let start = Instant::now();
    let mut stats_at = start;
    let mut seq = 0u64;
    let mut late = super::viewers::new_histogram();
    let result = (|| -> Result<()> {
        for lap in 0u64.. {
            for i in 0..source.len() {
                let (due_ms, video) = source.due_ms(lap, i);
                let due = start + Duration::from_millis(due_ms);
                // Serve the server (ACKs, NAKs, retransmissions) until the frame is due.
                while Instant::now() < due {
                    if st.stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    let until = due.min(Instant::now() + Duration::from_millis(200));
                    link.run_until(until, &mut |_, _| {})?;
                }
                let behind = Instant::now().saturating_duration_since(due);
                let _ = late.record((behind.as_micros() as u64).max(1));
                let stamp = video.then(|| (wall_ns(), seq));
                let ts = source.packets(lap, i, stamp)?;
                link.send(Instant::now(), payloads(&ts))?;
                if let Some((ns, _)) = stamp {
                    seq += 1;
                    st.sent.lock().unwrap_or_else(|p| p.into_inner()).push(ns);
                }
                if Instant::now() >= stats_at {
                    stats_at += Duration::from_secs(1);
                    info.update(&link, &source);
                }
            }
        }
        Ok(())
    })();
    info.update(&link, &source);
    *info.send_late.lock().unwrap_or_else(|p| p.into_inner()) = Some(late);
    link.close();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_whole_packets_of_at_most_1316_bytes() {
        let ts = Bytes::from(vec![0x47u8; PACKET_SIZE * 15]);
        let sizes: Vec<usize> = payloads(&ts).map(|p| p.len()).collect();
        assert_eq!(sizes, [1316, 1316, 188]);
    }

    fn packet(pid: u16, pusi: bool, af: Option<u8>, fill: u8) -> Vec<u8> {
        let mut p = vec![
            0x47,
            (u8::from(pusi) << 6) | (pid >> 8) as u8,
            pid as u8,
            0x10,
        ];
        if let Some(n) = af {
            p[3] |= 0x20;
            p.push(n);
            p.extend(std::iter::repeat_n(0xff, usize::from(n)));
        }
        p.resize(PACKET_SIZE, fill);
        p
    }

    #[test]
    fn pes_length_is_found_behind_the_adaptation_field_and_zeroed() {
        // A PAT packet, then a PES on 0x100 whose first packet has an 8-byte adaptation field.
        let mut ts = packet(0, true, None, 0xff);
        let mut first = packet(0x100, true, Some(7), 0xaa);
        first[12..18].copy_from_slice(&[0, 0, 1, 0xe0, 0x12, 0x34]);
        ts.extend(first);
        ts.extend(packet(0x100, false, None, 0xbb));
        assert_eq!(pes_length(&ts, 0x100), Some(0x1234));
        assert_eq!(pes_length(&ts, 0x101), None);
        assert!(zero_pes_length(&mut ts, 0x100));
        assert_eq!(pes_length(&ts, 0x100), Some(0));
        assert!(!zero_pes_length(&mut ts, 0x101));
    }

    #[test]
    fn stuffing_is_told_from_flags_and_pcr() {
        let last = |af: Option<u8>, flags: u8| {
            let mut p = packet(0x100, false, af, 0xbb);
            if af.is_some_and(|n| n > 0) {
                p[5] = flags;
            }
            ends_stuffed(&p, 0x100)
        };
        assert!(!last(None, 0), "full payload");
        assert!(last(Some(0), 0), "a bare length byte");
        assert!(last(Some(1), 0), "an empty flags byte is padding too");
        assert!(!last(Some(1), 0x40), "random access flag only");
        assert!(
            last(Some(2), 0x40),
            "random access flag and one stuffing byte"
        );
        assert!(!last(Some(7), 0x10), "flags and PCR");
        assert!(last(Some(8), 0x10), "flags, PCR and stuffing");
        assert!(
            !ends_stuffed(&packet(0x101, false, Some(0), 0), 0x100),
            "no such PID"
        );
    }
}
