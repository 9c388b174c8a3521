//! The sending half of a live session: the send buffer, retransmission on NAK, sender-side
//! too-late drop and pacing (SRT spec 4.6, 4.8, 5.1 "SRT Packet Pacing and Congestion Control").

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use zerocast_codecs::ByteRope;

use crate::packet::{KeyFlag, LossRange};
use crate::seq::{next_msg_no, SeqNo};

/// A packet in the send buffer.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) payload: ByteRope,
    pub(crate) ts: u32,
    pub(crate) msg_no: u32,
    created: Instant,
    /// The key it went out with the first time (retransmissions must use the same).
    pub(crate) key: KeyFlag,
    sent: bool,
    rexmit_queued: bool,
    /// When it was last retransmitted.
    last_rexmit: Option<Instant>,
}

/// A packet to put on the wire now.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) seq: SeqNo,
    pub(crate) retransmitted: bool,
}

/// The send buffer: packets from the oldest unacknowledged one on.
#[derive(Debug)]
pub(crate) struct Sender {
    /// Sequence number of `buffer[0]`.
    base: SeqNo,
    buffer: VecDeque<Entry>,
    /// Index in `buffer` of the first packet never sent.
    unsent: usize,
    next_msg: u32,
    rexmit: VecDeque<SeqNo>,
    capacity: usize,
    pacer: Pacer,
}

impl Sender {
    pub(crate) fn new(initial: SeqNo, capacity: usize, max_bandwidth: u64, now: Instant) -> Self {
        Sender {
            base: initial,
            buffer: VecDeque::new(),
            unsent: 0,
            next_msg: 1,
            rexmit: VecDeque::new(),
            capacity: capacity.max(32),
            pacer: Pacer::new(max_bandwidth, now),
        }
    }

    /// Queues one payload. Returns the range dropped to make room, if the buffer was full.
    pub(crate) fn push(
        &mut self,
        now: Instant,
        ts: u32,
        payload: ByteRope,
    ) -> Option<(u32, LossRange)> {
        let dropped = (self.buffer.len() >= self.capacity)
            .then(|| self.drop_front(1))
            .flatten();
        self.pacer.note_input(now, payload.len());
        let msg_no = self.next_msg;
        self.next_msg = next_msg_no(self.next_msg);
        self.buffer.push_back(Entry {
            payload,
            ts,
            msg_no,
            created: now,
            key: KeyFlag::None,
            sent: false,
            rexmit_queued: false,
            last_rexmit: None,
        });
        dropped
    }

    /// Drops the `n` oldest packets; returns the message number of the last one and the
    /// sequence range, for a DROPREQ.
    fn drop_front(&mut self, n: usize) -> Option<(u32, LossRange)> {
        let n = n.min(self.buffer.len());
        if n == 0 {
            return None;
        }
        let first = self.base;
        let mut msg_no = 0;
        for _ in 0..n {
            if let Some(e) = self.buffer.pop_front() {
                msg_no = e.msg_no;
            }
        }
        self.base = self.base.add(n as u32);
        self.unsent = self.unsent.saturating_sub(n);
        Some((
            msg_no,
            LossRange {
                first,
                last: self.base.sub(1),
            },
        ))
    }

    /// Drops packets older than `threshold` (the receiver would throw them away anyway).
    pub(crate) fn drop_expired(
        &mut self,
        now: Instant,
        threshold: Duration,
    ) -> Option<(u32, LossRange)> {
        let n = self
            .buffer
            .iter()
            .take_while(|e| now.saturating_duration_since(e.created) >= threshold)
            .count();
        self.drop_front(n)
    }

    /// When the oldest packet expires.
    pub(crate) fn next_expiry(&self, threshold: Duration) -> Option<Instant> {
        self.buffer.front().map(|e| e.created + threshold)
    }

    /// The receiver has everything before `ack`. Returns false for an ACK of packets never
    /// sent.
    pub(crate) fn acknowledge(&mut self, ack: SeqNo) -> bool {
        let n = ack.diff(self.base);
        if n <= 0 {
            return true;
        }
        if n as usize > self.unsent {
            return false;
        }
        for _ in 0..n {
            self.buffer.pop_front();
        }
        self.base = ack;
        self.unsent -= n as usize;
        true
    }

    /// Queues the packets of a loss report for retransmission; returns how many. A packet
    /// retransmitted less than `min_gap` ago (about one RTT) is not queued again: the report
    /// crossed the retransmission, which is still on its way.
    pub(crate) fn lost(&mut self, ranges: &[LossRange], now: Instant, min_gap: Duration) -> usize {
        let mut queued = 0;
        for r in ranges {
            let span = r.last.diff(r.first);
            if span < 0 {
                continue;
            }
            // Only what is still buffered and was sent can be resent.
            let start = r.first.diff(self.base).max(0) as usize;
            let end = (r.last.diff(self.base) + 1).clamp(0, self.unsent as i32) as usize;
            for i in start..end {
                let e = &mut self.buffer[i];
                let recent = e
                    .last_rexmit
                    .is_some_and(|t| now.saturating_duration_since(t) < min_gap);
                if !e.rexmit_queued && !recent {
                    e.rexmit_queued = true;
                    self.rexmit.push_back(self.base.add(i as u32));
                    queued += 1;
                }
            }
        }
        queued
    }

    /// The next packet to send at `now`: retransmissions first, then new packets within
    /// the peer's flow window. `Err(at)` when pacing holds it until `at`.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        flow_window: usize,
    ) -> Result<Option<Outgoing>, Instant> {
        while let Some(&seq) = self.rexmit.front() {
            let offset = seq.diff(self.base);
            if offset < 0 || offset as usize >= self.unsent {
                // Acknowledged or dropped since.
                self.rexmit.pop_front();
                continue;
            }
            let len = self.buffer[offset as usize].payload.len();
            self.pacer.take(now, len)?;
            self.rexmit.pop_front();
            self.buffer[offset as usize].rexmit_queued = false;
            self.buffer[offset as usize].last_rexmit = Some(now);
            return Ok(Some(Outgoing {
                seq,
                retransmitted: true,
            }));
        }
        if self.unsent >= self.buffer.len() || self.unsent >= flow_window {
            return Ok(None);
        }
        let len = self.buffer[self.unsent].payload.len();
        self.pacer.take(now, len)?;
        let seq = self.base.add(self.unsent as u32);
        self.buffer[self.unsent].sent = true;
        self.unsent += 1;
        Ok(Some(Outgoing {
            seq,
            retransmitted: false,
        }))
    }

    /// The buffered packet `seq`.
    pub(crate) fn entry_mut(&mut self, seq: SeqNo) -> Option<&mut Entry> {
        let offset = seq.diff(self.base);
        if offset < 0 {
            return None;
        }
        self.buffer.get_mut(offset as usize)
    }

    /// Packets buffered (unacknowledged or unsent).
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Packets sent and not yet acknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.unsent
    }

    /// The pacing rate now, bytes per second.
    pub(crate) fn pacing_rate(&self) -> u64 {
        self.pacer.rate()
    }
}

/// Live congestion control: a token bucket refilled at the pacing rate.
///
/// With no cap configured the rate is 125% of the measured input rate (libsrt's default
/// overhead), but never below [`Pacer::FLOOR`], so a keyframe burst of a typical live stream
/// leaves at once instead of being spread over a fraction of a second (which would eat into
/// the latency budget). A cap, when set, is a hard limit.
#[derive(Debug)]
struct Pacer {
    cap: u64,
    tokens: f64,
    last: Instant,
    /// Measured input rate (bytes per second), and the current measuring window.
    input_rate: u64,
    window_start: Instant,
    window_bytes: u64,
}

impl Pacer {
    const FLOOR: u64 = 100_000_000 / 8;
    /// Burst allowance: this many full packets may leave back to back.
    const BURST_PACKETS: f64 = 64.0;
    const PACKET: f64 = 1500.0;

    fn new(cap: u64, now: Instant) -> Pacer {
        Pacer {
            cap,
            tokens: Self::BURST_PACKETS * Self::PACKET,
            last: now,
            input_rate: 0,
            window_start: now,
            window_bytes: 0,
        }
    }

    fn rate(&self) -> u64 {
        if self.cap > 0 {
            self.cap
        } else {
            (self.input_rate + self.input_rate / 4).max(Self::FLOOR)
        }
    }

    fn note_input(&mut self, now: Instant, len: usize) {
        self.window_bytes += len as u64;
        let span = now.saturating_duration_since(self.window_start);
        if span >= Duration::from_millis(500) {
            let rate = (self.window_bytes as f64 / span.as_secs_f64()) as u64;
            // A light average keeps one quiet window from halving the rate.
            self.input_rate = if self.input_rate == 0 {
                rate
            } else {
                (self.input_rate * 3 + rate) / 4
            };
            self.window_start = now;
            self.window_bytes = 0;
        }
    }

    fn take(&mut self, now: Instant, len: usize) -> Result<(), Instant> {
        let rate = self.rate() as f64;
        let burst = Self::BURST_PACKETS * Self::PACKET;
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
        let need = len as f64 + 44.0; // headers: SRT 16, UDP 8, IPv4 20
        if self.tokens >= need {
            self.tokens -= need;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((need - self.tokens) / rate);
        // Never "now": a timer that is already due would spin.
        Err(now + wait.max(Duration::from_micros(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rope(n: usize) -> ByteRope {
        let mut r = ByteRope::new();
        r.push(Bytes::from(vec![0u8; n]));
        r
    }

    #[test]
    fn sends_acks_and_retransmits() {
        let t0 = Instant::now();
        let mut s = Sender::new(SeqNo::new(100), 64, 0, t0);
        for i in 0..5 {
            assert!(s.push(t0, i, rope(1316)).is_none());
        }
        let mut sent = Vec::new();
        while let Ok(Some(o)) = s.next(t0, 8192) {
            sent.push(o.seq.get());
        }
        assert_eq!(sent, vec![100, 101, 102, 103, 104]);
        assert!(s.acknowledge(SeqNo::new(102)));
        assert_eq!(s.in_flight(), 3);
        assert!(!s.acknowledge(SeqNo::new(110)), "ack beyond what was sent");
        let report = [LossRange {
            first: SeqNo::new(98),
            last: SeqNo::new(103),
        }];
        let rtt = Duration::from_millis(50);
        let queued = s.lost(&report, t0, rtt);
        assert_eq!(queued, 2, "only 102 and 103 are still buffered");
        let o = s.next(t0, 8192).unwrap().unwrap();
        assert_eq!((o.seq.get(), o.retransmitted), (102, true));
        assert_eq!(
            s.lost(&report, t0, rtt),
            0,
            "102 just resent, 103 still queued"
        );
        let later = t0 + Duration::from_millis(60);
        assert_eq!(s.lost(&report, later, rtt), 1, "102 again after an RTT");
    }

    #[test]
    fn full_buffer_and_expiry_drop_the_oldest() {
        let t0 = Instant::now();
        let mut s = Sender::new(SeqNo::new(0), 32, 0, t0);
        for i in 0..32 {
            s.push(t0, i, rope(10));
        }
        let (_, r) = s.push(t0, 32, rope(10)).unwrap();
        assert_eq!((r.first.get(), r.last.get()), (0, 0));
        let later = t0 + Duration::from_secs(2);
        let (_, r) = s.drop_expired(later, Duration::from_secs(1)).unwrap();
        assert_eq!((r.first.get(), r.last.get()), (1, 32));
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn a_cap_paces_packets() {
        let t0 = Instant::now();
        // 1 MB/s: after the burst allowance, a packet every ~1.36 ms.
        let mut s = Sender::new(SeqNo::new(0), 1024, 1_000_000, t0);
        for i in 0..100 {
            s.push(t0, i, rope(1316));
        }
        let mut n = 0;
        let held = loop {
            match s.next(t0, 8192) {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("ran out"),
                Err(at) => break at,
            }
        };
        assert!((64..=73).contains(&n), "burst of {n}");
        assert!(held > t0 && held < t0 + Duration::from_millis(3));
    }
}
