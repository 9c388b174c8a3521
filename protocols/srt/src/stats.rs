//! Per-session statistics.

use std::time::{Duration, Instant};

/// Counters and gauges of one session, as [`crate::Connection::stats`] reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// RTT variance, microseconds.
    pub rtt_var_us: u32,
    /// Send rate over the last second, bits per second (all datagrams).
    pub send_rate_bps: u64,
    /// Receive rate over the last second, bits per second (data packets).
    pub recv_rate_bps: u64,
    /// The sender's pacing rate now, bits per second.
    pub pacing_rate_bps: u64,
    /// Data packets sent, retransmissions included.
    pub packets_sent: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Data packets retransmitted.
    pub retransmitted: u64,
    /// Packets the peer reported lost (NAKed) that we could still resend.
    pub loss_reported: u64,
    /// NAK packets received.
    pub nak_received: u64,
    /// Retransmissions resent because no ACK covered them in time (no NAK asked again).
    pub rexmit_timeouts: u64,
    /// Packets the sender dropped unsent or unacknowledged (too old, or buffer full).
    pub send_dropped: u64,
    /// Data packets received, duplicates included.
    pub packets_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Packets found missing (gaps in the sequence).
    pub lost: u64,
    /// Missing packets that arrived later (retransmitted or reordered).
    pub recovered: u64,
    /// Retransmitted packets received (the R flag was set).
    pub retransmitted_received: u64,
    /// Missing packets given up because their delivery time passed.
    pub dropped_too_late: u64,
    /// Packets that arrived after their place was delivered or given up.
    pub belated: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Packets beyond the receive window.
    pub overflow: u64,
    /// Encrypted packets we could not decrypt.
    pub undecryptable: u64,
    /// Datagrams that did not parse or did not belong to the session.
    pub bad_packets: u64,
    /// Payloads delivered to the application.
    pub packets_delivered: u64,
    /// Sender key switches (key refresh).
    pub key_switches: u64,
    /// Packets in the send buffer.
    pub send_buffer_packets: u64,
    /// Packets sent and not yet acknowledged.
    pub in_flight_packets: u64,
    /// Packets held by the receiver (waiting for delivery or missing).
    pub recv_buffer_packets: u64,
}

/// A rate over the last full second.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateMeter {
    window_start: Instant,
    bytes: u64,
    packets: u64,
    last_bps: u64,
    last_pps: u64,
}

impl RateMeter {
    pub(crate) fn new(now: Instant) -> RateMeter {
        RateMeter {
            window_start: now,
            bytes: 0,
            packets: 0,
            last_bps: 0,
            last_pps: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let span = now.saturating_duration_since(self.window_start);
        if span >= Duration::from_secs(1) {
            let secs = span.as_secs_f64();
            // Over two seconds of silence: the last window says nothing about now.
            let (b, p) = if span >= Duration::from_secs(2) {
                (0, 0)
            } else {
                (self.bytes, self.packets)
            };
            self.last_bps = (b as f64 * 8.0 / secs) as u64;
            self.last_pps = (p as f64 / secs) as u64;
            self.window_start = now;
            self.bytes = 0;
            self.packets = 0;
        }
    }

    pub(crate) fn add(&mut self, now: Instant, bytes: usize) {
        self.roll(now);
        self.bytes += bytes as u64;
        self.packets += 1;
    }

    pub(crate) fn rate(&self, now: Instant) -> u64 {
        let mut m = *self;
        m.roll(now);
        m.last_bps
    }

    pub(crate) fn packet_rate(&self, now: Instant) -> u64 {
        let mut m = *self;
        m.roll(now);
        m.last_pps
    }
}
