//! The sending half of a live session: the send buffer, retransmission on NAK and on
//! timeout, sender-side too-late drop and pacing (SRT spec 4.6, 4.8, 5.1 "SRT Packet Pacing
//! and Congestion Control").

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
    /// When it was first sent.
    sent_at: Option<Instant>,
    rexmit_queued: bool,
    /// When it was last retransmitted.
    last_rexmit: Option<Instant>,
}

/// An ACK of packets never sent: a broken or hostile peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AckBeyondSent;

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
    /// Retransmissions not known to have arrived, oldest first: (packet, when it went).
    /// See [`Sender::overdue`].
    rexmit_sent: VecDeque<(SeqNo, Instant)>,
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
            rexmit_sent: VecDeque::new(),
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
            sent_at: None,
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

    /// The receiver has everything before `ack`, as of `now`. Returns how long ago the newest
    /// packet it acknowledges went out when none of those it acknowledges was retransmitted
    /// (an RTT sample that the ACK period inflates by at most 10 ms), or [`AckBeyondSent`].
    pub(crate) fn acknowledge(
        &mut self,
        ack: SeqNo,
        now: Instant,
    ) -> Result<Option<Duration>, AckBeyondSent> {
        let n = ack.diff(self.base);
        if n <= 0 {
            return Ok(None);
        }
        if n as usize > self.unsent {
            return Err(AckBeyondSent);
        }
        let newest = self.buffer[n as usize - 1].sent_at;
        let mut repaired = false;
        for _ in 0..n {
            if let Some(e) = self.buffer.pop_front() {
                repaired |= e.last_rexmit.is_some();
            }
        }
        // An ACK held back by a hole until a retransmission filled it says nothing of the RTT.
        let sample = newest
            .filter(|_| !repaired)
            .map(|at| now.saturating_duration_since(at));
        self.base = ack;
        self.unsent -= n as usize;
        Ok(sample)
    }

    /// Queues the packets of a loss report for retransmission; returns how many. A packet
    /// retransmitted less than `min_gap` ago is not queued again: the report crossed the
    /// retransmission, which is still on its way.
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

    /// Queues again the retransmissions still unacknowledged `rto` after they went, while
    /// the receiver can still play them (`playable` says so from a packet's timestamp);
    /// returns how many.
    ///
    /// A lost retransmission is normally asked for again by the receiver's periodic NAK,
    /// but libsrt sends its first periodic NAK only about 300 ms into a connection: until
    /// then, a lost retransmission of the joining burst would never be asked for again
    /// within the latency. Since the ACK stops at the first missing packet, a
    /// retransmission that stays unacknowledged for an RTO most likely did not arrive;
    /// one that did (behind an earlier hole) is resent for nothing and discarded as a
    /// duplicate.
    pub(crate) fn overdue(
        &mut self,
        now: Instant,
        rto: Duration,
        playable: impl Fn(u32) -> bool,
    ) -> usize {
        let mut queued = 0;
        while let Some(&(seq, at)) = self.rexmit_sent.front() {
            let offset = seq.diff(self.base);
            let live = offset >= 0 && (offset as usize) < self.unsent;
            let entry = live.then(|| &mut self.buffer[offset as usize]);
            // Acknowledged, dropped, or resent since (a later record stands for it).
            let Some(e) = entry.filter(|e| e.last_rexmit == Some(at)) else {
                self.rexmit_sent.pop_front();
                continue;
            };
            if now.saturating_duration_since(at) < rto {
                break;
            }
            self.rexmit_sent.pop_front();
            if !e.rexmit_queued && playable(e.ts) {
                e.rexmit_queued = true;
                self.rexmit.push_back(seq);
                queued += 1;
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
            if self.rexmit_sent.len() >= self.capacity {
                self.rexmit_sent.pop_front();
            }
            self.rexmit_sent.push_back((seq, now));
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
        self.buffer[self.unsent].sent_at = Some(now);
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
        let later = t0 + Duration::from_millis(70);
        assert_eq!(
            s.acknowledge(SeqNo::new(102), later),
            Ok(Some(Duration::from_millis(70))),
            "an RTT sample from a packet sent once"
        );
        assert_eq!(s.in_flight(), 3);
        assert_eq!(s.acknowledge(SeqNo::new(101), later), Ok(None), "old ACK");
        assert_eq!(
            s.acknowledge(SeqNo::new(110), later),
            Err(AckBeyondSent),
            "ack beyond what was sent"
        );
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
    fn unacknowledged_retransmissions_go_again_after_the_rto() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Sender::new(SeqNo::new(0), 64, 0, t0);
        for ts in 0..4 {
            s.push(t0, ts * 1000, rope(100));
        }
        while let Ok(Some(_)) = s.next(t0, 8192) {}
        let report = |a, b| {
            [LossRange {
                first: SeqNo::new(a),
                last: SeqNo::new(b),
            }]
        };
        assert_eq!(s.lost(&report(1, 2), t0, Duration::ZERO), 2);
        let resent = |s: &mut Sender, at| {
            let mut v = Vec::new();
            while let Ok(Some(o)) = s.next(at, 8192) {
                assert!(o.retransmitted);
                v.push(o.seq.get());
            }
            v
        };
        assert_eq!(resent(&mut s, t0), vec![1, 2]);
        let always = |_| true;
        assert_eq!(s.overdue(t0 + ms(79), ms(80), always), 0, "before the RTO");
        // The ACK reaches 2: 1 arrived, 2 did not (or is behind a hole: resent all the same).
        assert_eq!(
            s.acknowledge(SeqNo::new(2), t0 + ms(80)),
            Ok(None),
            "1 was retransmitted: no RTT sample"
        );
        assert_eq!(s.overdue(t0 + ms(80), ms(80), always), 1);
        assert_eq!(resent(&mut s, t0 + ms(80)), vec![2]);
        // A NAK crossing that retransmission does not queue it twice, and its record is the
        // new one: not due until another RTO has passed.
        assert_eq!(s.lost(&report(2, 2), t0 + ms(90), ms(40)), 0);
        assert_eq!(s.overdue(t0 + ms(150), ms(80), always), 0);
        // Past what the receiver can play: given up.
        assert_eq!(s.overdue(t0 + ms(160), ms(80), |ts| ts < 2000), 0);
        assert_eq!(s.overdue(t0 + ms(400), ms(80), always), 0, "nothing left");
        assert_eq!(
            s.acknowledge(SeqNo::new(4), t0 + ms(400)),
            Ok(None),
            "2 was retransmitted and held the ACK back: no RTT sample"
        );
        assert_eq!(s.overdue(t0 + ms(500), ms(80), always), 0);
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
