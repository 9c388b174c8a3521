//! What a session is configured with.

use std::time::Duration;

use crate::crypto::{KeyLen, Passphrase};

/// Settings of one SRT session (either role). The engine builds one from `[srt]`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our TSBPD latency: how long the receiver holds packets before delivering them, and so
    /// how long losses have to be repaired. The session uses the larger of both sides' values.
    pub latency: Duration,
    /// With nothing received for this long, the peer is gone.
    pub peer_idle_timeout: Duration,
    /// Packets we can hold unacknowledged (sender) or undelivered (receiver): the flow window
    /// advertised in the handshake.
    pub flow_window: u32,
    /// Largest datagram, advertised in the handshake.
    pub mtu: u32,
    /// Sender pacing cap in bytes per second; 0 paces from the input rate (see
    /// [`crate::connection`]).
    pub max_bandwidth: u64,
    /// Encrypt with keys derived from this passphrase; `None` for clear text. A peer whose
    /// setting differs is refused.
    pub passphrase: Option<Passphrase>,
    /// Key length when this side creates the keys (caller, or sender).
    pub key_len: KeyLen,
    /// Packets sent with one key before the sender switches to a fresh one.
    pub key_refresh_packets: u64,
    /// Packets before a switch at which the next key is announced.
    pub key_preannounce_packets: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            latency: Duration::from_millis(120),
            peer_idle_timeout: Duration::from_secs(5),
            flow_window: 8192,
            mtu: 1500,
            max_bandwidth: 0,
            passphrase: None,
            key_len: KeyLen::Aes128,
            // libsrt's defaults (SRTO_KMREFRESHRATE, SRTO_KMPREANNOUNCE).
            key_refresh_packets: 1 << 24,
            key_preannounce_packets: 1 << 12,
        }
    }
}
