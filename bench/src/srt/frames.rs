//! The viewer side: from the MPEG-TS payloads an SRT player is handed to one sample per
//! video frame: the publisher's send time (from the SEI) and the time the frame's *last* TS
//! packet was handed over.
//!
//! A video PES with `PES_packet_length = 0` (what ffmpeg and OBS write, and zerocast's muxer
//! for frames over 64 KiB) ends for sure only when the next one starts. To measure when the
//! frame was *received* (as the RTMP viewers do), [`FrameClock`] walks the 188-byte packets
//! itself and remembers, per PID, when the last packet of the current PES came; when the next
//! PES starts, the declared length is reached, or (as zerocast's demuxer does) a packet padded
//! with adaptation-field stuffing ends it, that time is the frame's.
//!
//! Two ways to read the stamp:
//! - [`Parse::Scan`] (cheap, for hundreds of viewers): the first few packets of each video
//!   PES are searched for the SEI UUID and the 16 bytes after it are un-escaped.
//! - [`Parse::Demux`] (the real path): every packet also goes through zerocast's
//!   [`Demuxer`]; the stamp comes from the SEI of each demuxed frame
//!   ([`sei::find_user_data_unregistered`]) and is checked against the scan's.
//!
//! A PES with a continuity-counter gap (a TS packet lost) counts as damaged, not received.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use zerocast_codecs::bits::remove_emulation_prevention;
use zerocast_codecs::h264::sei;
use zerocast_codecs::ts::{DemuxConfig, DemuxEvent, Demuxer, PACKET_SIZE, SYNC_BYTE};
use zerocast_codecs::{FramePayload, MediaKind};

use super::source::payload_start;
use crate::publisher::{decode_stamp, SEI_UUID};

/// How the viewer reads the stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Parse {
    /// Search the head of each video PES for the SEI.
    Scan,
    /// Demux every frame with zerocast's TS demuxer (and check the scan against it).
    Demux,
}

/// One video frame received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSample {
    /// Publisher send time, wall-clock ns.
    pub sent_ns: u64,
    /// Publisher sequence number.
    pub seq: u64,
    /// When the frame's last TS packet was handed over, wall-clock ns.
    pub done_ns: u64,
}

/// Bytes of a video PES searched for the SEI (its first four packets' worth).
const HEAD_MAX: usize = 4 * 184;

#[derive(Debug)]
struct PidState {
    pid: u16,
    cc: Option<u8>,
    in_pes: bool,
    video: bool,
    broken: bool,
    last_ns: u64,
    /// PES_packet_length + 6, or 0 when unbounded.
    declared: usize,
    got: usize,
    head: Vec<u8>,
    stamp: Option<(u64, u64)>,
}

/// A video PES the scan saw end.
#[derive(Debug, Clone, Copy)]
struct Completed {
    stamp: Option<(u64, u64)>,
    done_ns: u64,
    broken: bool,
}

/// Per-viewer state: see the module docs.
#[derive(Debug)]
pub struct FrameClock {
    pids: Vec<PidState>,
    demux: Option<Demuxer>,
    events: Vec<DemuxEvent>,
    completed: VecDeque<Completed>,
    /// Continuity-counter gaps (TS packets missing) on any PID.
    pub cc_errors: u64,
    /// The first gap: PID, counter expected, counter found, packets seen before it.
    pub first_cc_error: Option<(u16, u8, u8, u64)>,
    packets: u64,
    /// Payloads that were not whole sync-aligned TS packets.
    pub bad_packets: u64,
    /// Video frames that ended damaged (a gap inside).
    pub damaged: u64,
    /// Video frames without our SEI.
    pub unstamped: u64,
    /// Demux mode: frames whose demuxed stamp the scan did not see the same way.
    pub mismatches: u64,
    /// Demux mode: errors of the demuxer.
    pub demux_errors: u64,
    /// Demux mode: video frames the demuxer produced.
    pub demuxed: u64,
}

/// Finds our stamp in the first bytes of a PES (the SEI UUID is ASCII, so it is never
/// escaped; the 16 bytes after it may be).
fn find_stamp(head: &[u8]) -> Option<(u64, u64)> {
    let pos = head.windows(16).position(|w| w == SEI_UUID)?;
    let tail = &head[pos + 16..];
    let raw = remove_emulation_prevention(&tail[..tail.len().min(32)]);
    decode_stamp(&raw)
}

impl FrameClock {
    /// A clock that reads stamps the `parse` way.
    pub fn new(parse: Parse) -> FrameClock {
        FrameClock {
            pids: Vec::with_capacity(4),
            demux: (parse == Parse::Demux).then(|| Demuxer::new(DemuxConfig::default())),
            events: Vec::new(),
            completed: VecDeque::new(),
            cc_errors: 0,
            first_cc_error: None,
            packets: 0,
            bad_packets: 0,
            damaged: 0,
            unstamped: 0,
            mismatches: 0,
            demux_errors: 0,
            demuxed: 0,
        }
    }

    /// Consumes one SRT payload handed over at `recv_ns`; appends the frames it completed.
    pub fn push(&mut self, payload: &Bytes, recv_ns: u64, out: &mut Vec<FrameSample>) {
        let whole = payload.len() / PACKET_SIZE;
        // (`is_multiple_of` is newer than the workspace's MSRV.)
        if whole * PACKET_SIZE != payload.len() {
            self.bad_packets += 1;
        }
        for k in 0..whole {
            let range = k * PACKET_SIZE..(k + 1) * PACKET_SIZE;
            if payload[range.start] != SYNC_BYTE {
                self.bad_packets += 1;
                continue;
            }
            self.scan(&payload[range.clone()], recv_ns);
            let Some(d) = self.demux.as_mut() else {
                while let Some(c) = self.completed.pop_front() {
                    match (c.broken, c.stamp) {
                        (true, _) => self.damaged += 1,
                        (false, None) => self.unstamped += 1,
                        (false, Some((sent_ns, seq))) => out.push(FrameSample {
                            sent_ns,
                            seq,
                            done_ns: c.done_ns,
                        }),
                    }
                }
                continue;
            };
            if d.push(payload.slice(range), Instant::now(), &mut self.events)
                .is_err()
            {
                self.demux_errors += 1;
            }
            for e in self.events.drain(..) {
                let DemuxEvent::Frame(f) = e else { continue };
                if f.kind != MediaKind::Video {
                    continue;
                }
                self.demuxed += 1;
                let FramePayload::Nalus(nalus) = &f.payload else {
                    continue;
                };
                let Some((sent_ns, seq)) = sei::find_user_data_unregistered(nalus, &SEI_UUID)
                    .and_then(|d| decode_stamp(&d))
                else {
                    self.unstamped += 1;
                    continue;
                };
                // The scan saw this PES end (the demuxer emits it at the same packet).
                let at = self
                    .completed
                    .iter()
                    .position(|c| c.stamp == Some((sent_ns, seq)));
                match at {
                    Some(i) => {
                        let c = self.completed[i];
                        self.completed.drain(..=i);
                        out.push(FrameSample {
                            sent_ns,
                            seq,
                            done_ns: c.done_ns,
                        });
                    }
                    None => self.mismatches += 1,
                }
            }
            // PES the demuxer dropped (damaged) stay unmatched: forget all but the last few.
            while self.completed.len() > 4 {
                if let Some(c) = self.completed.pop_front() {
                    self.damaged += u64::from(c.broken);
                }
            }
        }
    }

    fn state(&mut self, pid: u16) -> &mut PidState {
        let i = match self.pids.iter().position(|s| s.pid == pid) {
            Some(i) => i,
            None => {
                self.pids.push(PidState {
                    pid,
                    cc: None,
                    in_pes: false,
                    video: false,
                    broken: false,
                    last_ns: 0,
                    declared: 0,
                    got: 0,
                    head: Vec::new(),
                    stamp: None,
                });
                self.pids.len() - 1
            }
        };
        &mut self.pids[i]
    }

    /// One TS packet (ISO/IEC 13818-1 2.4.3.2): continuity, PES boundaries, the stamp.
    fn scan(&mut self, pkt: &[u8], recv_ns: u64) {
        let pid = (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2]);
        if pid == 0x1fff {
            return;
        }
        let unit_start = pkt[1] & 0x40 != 0;
        let cc = pkt[3] & 0x0f;
        let start = payload_start(pkt);
        let discontinuity = (pkt[3] & 0x20) != 0 && pkt[4] > 0 && pkt[5] & 0x80 != 0;
        let mut cc_error = None;
        let mut done = [None, None];
        {
            let st = self.state(pid);
            if start.is_some() {
                // The counter steps only with a payload; a repeat is a duplicate (2.4.3.3).
                if let Some(last) = st.cc {
                    if cc == last && !discontinuity {
                        return;
                    }
                    if cc != (last + 1) & 0x0f && !discontinuity {
                        cc_error = Some((pid, (last + 1) & 0x0f, cc));
                        st.broken = true;
                    }
                }
                st.cc = Some(cc);
            }
            let Some(start) = start else { return };
            let payload = &pkt[start..];
            if unit_start {
                if st.in_pes && st.video {
                    done[0] = Some(Completed {
                        stamp: st.stamp,
                        done_ns: st.last_ns,
                        broken: st.broken,
                    });
                }
                st.in_pes = true;
                st.broken = false;
                st.video =
                    payload.len() >= 6 && payload[..3] == [0, 0, 1] && payload[3] & 0xf0 == 0xe0;
                st.declared = if st.video {
                    match usize::from(u16::from_be_bytes([payload[4], payload[5]])) {
                        0 => 0,
                        n => n + 6,
                    }
                } else {
                    0
                };
                st.got = 0;
                st.head.clear();
                st.stamp = None;
            }
            if st.in_pes {
                st.last_ns = recv_ns;
                if st.video {
                    st.got += payload.len();
                    if st.stamp.is_none() && st.head.len() < HEAD_MAX {
                        st.head.extend_from_slice(payload);
                        st.stamp = find_stamp(&st.head);
                    }
                    // As zerocast's demuxer: an unbounded video PES ends at a packet padded
                    // with adaptation-field stuffing (muxers pad only a PES's last packet).
                    let padding = PACKET_SIZE - 4 - payload.len();
                    let af_flags = if pkt[3] & 0x20 != 0 && pkt[4] > 0 {
                        pkt[5]
                    } else {
                        0
                    };
                    let fields = if af_flags & 0x10 != 0 {
                        8
                    } else if af_flags & 0xc0 != 0 {
                        2
                    } else {
                        0
                    };
                    let stuffed = pkt[3] & 0x20 != 0 && padding > fields;
                    if (st.declared != 0 && st.got >= st.declared) || (st.declared == 0 && stuffed)
                    {
                        done[1] = Some(Completed {
                            stamp: st.stamp,
                            done_ns: recv_ns,
                            broken: st.broken,
                        });
                        st.in_pes = false;
                    }
                }
            }
        }
        self.packets += 1;
        if let Some((pid, expected, found)) = cc_error {
            self.cc_errors += 1;
            self.first_cc_error
                .get_or_insert((pid, expected, found, self.packets - 1));
        }
        self.completed.extend(done.into_iter().flatten());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use zerocast_codecs::ts::Muxer;
    use zerocast_codecs::{ByteRope, Frame, FramePayload, MediaKind, Track, TrackInfo};

    use super::*;
    use crate::srt::source::{payloads, stamp_nal, zero_pes_length};

    /// x264's AVCDecoderConfigurationRecord at 1280x720, High profile (as in
    /// zerocast-codecs' TS round-trip fuzz target).
    const AVCC: &[u8] = &[
        0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40,
        0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0,
        0xf1, 0x83, 0x19, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8,
        0xf8, 0x00,
    ];

    fn h264_track() -> Track {
        Track {
            kind: MediaKind::Video,
            codec: zerocast_codecs::CodecId::H264,
            config: Bytes::from_static(AVCC),
            timescale: 1000,
            info: TrackInfo::default(),
        }
    }

    /// The TS of `n` stamped frames of `size` bytes, cut into SRT payloads; video PES have
    /// their length (as zerocast writes them) or 0 (as ffmpeg does).
    fn stream(n: u64, size: usize, zero_length: bool) -> Vec<Bytes> {
        let mut mux = Muxer::new(vec![h264_track()]).unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            // Slice data full of zeros and 3s: emulation prevention everywhere.
            let mut slice = vec![if i == 0 { 0x65 } else { 0x41 }];
            slice.extend((0..size).map(|k| if k % 3 == 2 { 3 } else { 0 }));
            let frame = Frame {
                kind: MediaKind::Video,
                dts: i as i64 * 33,
                pts: i as i64 * 33,
                keyframe: i == 0,
                ingest: Instant::now(),
                payload: FramePayload::Nalus(vec![
                    // A stamp whose bytes need escaping too.
                    ByteRope::from(stamp_nal(0x0000_0300_0000_0000 + i, i)),
                    ByteRope::from(Bytes::from(slice)),
                ]),
            };
            let mut rope = ByteRope::new();
            mux.mux(&frame, &mut rope).unwrap();
            let mut ts = rope.to_contiguous().to_vec();
            if zero_length {
                assert!(zero_pes_length(&mut ts, 0x100));
            }
            out.extend(payloads(&Bytes::from(ts)).collect::<Vec<_>>());
        }
        out
    }

    fn run(parse: Parse, payloads: &[Bytes]) -> (FrameClock, Vec<FrameSample>) {
        let mut clock = FrameClock::new(parse);
        let mut out = Vec::new();
        for (t, p) in payloads.iter().enumerate() {
            clock.push(p, 1000 + t as u64, &mut out);
        }
        (clock, out)
    }

    #[test]
    fn scan_and_demux_agree_and_time_the_last_packet() {
        let payloads = stream(5, 3000, true);
        for parse in [Parse::Scan, Parse::Demux] {
            let (clock, out) = run(parse, &payloads);
            // Every frame ends at its stuffed last packet, the last one too.
            assert_eq!(out.len(), 5, "{parse:?}");
            for (i, s) in out.iter().enumerate() {
                assert_eq!(s.seq, i as u64);
                assert_eq!(s.sent_ns, 0x0000_0300_0000_0000 + i as u64);
            }
            // Frame 0 ends in payload 2 (3 KB = 17 packets: 7 + 7 + 3), frame 1 starts in 3.
            assert_eq!(out[0].done_ns, 1002, "{parse:?}");
            assert_eq!(
                (clock.cc_errors, clock.mismatches, clock.damaged),
                (0, 0, 0)
            );
        }
    }

    #[test]
    fn a_declared_length_ends_the_frame_at_once() {
        let payloads = stream(3, 3000, false);
        let (clock, out) = run(Parse::Demux, &payloads);
        assert_eq!(out.len(), 3, "every frame ends on its last packet");
        assert_eq!(clock.mismatches, 0);
        let (_, scanned) = run(Parse::Scan, &payloads);
        assert_eq!(scanned, out);
    }

    #[test]
    fn a_lost_packet_damages_its_frame() {
        let mut payloads = stream(4, 3000, true);
        // Drop the middle payload of frame 1 (payloads 3, 4, 5).
        payloads.remove(4);
        let (clock, out) = run(Parse::Scan, &payloads);
        assert_eq!(out.iter().map(|s| s.seq).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!((clock.damaged, clock.cc_errors), (1, 1));
    }
}
