//! A caller and a listener joined by a simulated network, in virtual time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::ByteRope;

use crate::config::SessionConfig;
use crate::crypto::{KeyLen, Passphrase};
use crate::entropy::Entropy;
use crate::handshake::{CallError, Caller, CallerOutput, Listener, ListenerOutput};
use crate::reject::RejectReason;
use crate::{CloseReason, Connection, Event, Input, Output};

/// One direction of the network.
#[derive(Debug, Clone, Copy)]
struct Link {
    delay: Duration,
    /// Probability (per mille) that a datagram is lost.
    loss: u32,
    /// Probability (per mille) that a datagram is held back an extra `jitter`.
    reorder: u32,
    jitter: Duration,
    /// Probability (per mille) that a datagram arrives twice.
    duplicate: u32,
}

impl Link {
    fn clean(delay_ms: u64) -> Link {
        Link {
            delay: Duration::from_millis(delay_ms),
            loss: 0,
            reorder: 0,
            jitter: Duration::ZERO,
            duplicate: 0,
        }
    }
}

struct Rng(u64);
impl Rng {
    fn per_mille(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1000) as u32
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Caller,
    Listener,
}

/// The network: datagrams in flight, ordered by arrival time.
struct Net {
    t0: Instant,
    now: Instant,
    in_flight: BTreeMap<(Instant, u64), (Side, Bytes)>,
    counter: u64,
    rng: Rng,
    to_listener: Link,
    to_caller: Link,
    /// Drop everything towards the listener during this window (relative to t0).
    blackout: Option<(Duration, Duration)>,
}

impl Net {
    fn new(to_listener: Link, to_caller: Link) -> Net {
        let t0 = Instant::now();
        Net {
            t0,
            now: t0,
            in_flight: BTreeMap::new(),
            counter: 0,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            to_listener,
            to_caller,
            blackout: None,
        }
    }

    fn send(&mut self, to: Side, rope: ByteRope) {
        let data = rope.to_contiguous();
        let link = match to {
            Side::Listener => self.to_listener,
            Side::Caller => self.to_caller,
        };
        if let (Side::Listener, Some((from, until))) = (to, self.blackout) {
            let at = self.now - self.t0;
            if at >= from && at < until {
                return;
            }
        }
        if self.rng.per_mille() < link.loss {
            return;
        }
        let mut at = self.now + link.delay;
        if self.rng.per_mille() < link.reorder {
            at += link.jitter;
        }
        let copies = if self.rng.per_mille() < link.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            self.counter += 1;
            self.in_flight
                .insert((at, self.counter), (to, data.clone()));
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.keys().next().map(|(t, _)| *t)
    }

    fn pop_due(&mut self) -> Option<(Side, Bytes)> {
        let (&key, _) = self.in_flight.iter().next()?;
        if key.0 > self.now {
            return None;
        }
        self.in_flight.remove(&key)
    }
}

const CALLER_ADDR: &str = "127.0.0.1:40000";
const LISTENER_ADDR: &str = "127.0.0.1:8890";

fn caller_addr() -> SocketAddr {
    CALLER_ADDR.parse().unwrap()
}

/// Drains a connection's output into the network; returns delivered payloads and the
/// next timeout.
fn drain(
    conn: &mut Connection,
    to: Side,
    net: &mut Net,
    got: &mut Vec<Bytes>,
    closed: &mut Option<CloseReason>,
) -> Instant {
    loop {
        match conn.poll_output() {
            Output::Transmit(rope) => net.send(to, rope),
            Output::Event(Event::Data(p)) => got.push(p),
            Output::Event(Event::Closed(r)) => *closed = Some(r),
            Output::Timeout(t) => return t,
        }
    }
}

/// A connected pair: the caller sends, the listener receives (a publisher), or the other
/// way round.
struct Pair {
    net: Net,
    caller: Connection,
    listener: Connection,
    caller_timeout: Instant,
    listener_timeout: Instant,
    caller_got: Vec<Bytes>,
    listener_got: Vec<Bytes>,
    caller_closed: Option<CloseReason>,
    listener_closed: Option<CloseReason>,
}

fn config(latency_ms: u64, pass: Option<&str>, key_len: KeyLen) -> SessionConfig {
    SessionConfig {
        latency: Duration::from_millis(latency_ms),
        passphrase: pass.map(|p| Passphrase::new(p).unwrap()),
        key_len,
        ..SessionConfig::default()
    }
}

/// Runs the handshake over `net`; `Err` with the caller's failure.
fn connect(
    mut net: Net,
    caller_cfg: SessionConfig,
    listener_cfg: SessionConfig,
) -> Result<Pair, CallError> {
    let listener = Listener::new(&listener_cfg, [7; 32], net.now);
    let mut caller = Caller::new(
        caller_cfg,
        net.now,
        LISTENER_ADDR.parse().unwrap(),
        Some("#!::r=live/test,m=publish".into()),
        Duration::from_secs(3),
        Entropy::new([1; 32]),
    );
    let mut accepted: Option<Connection> = None;
    let deadline = net.now + Duration::from_secs(5);
    loop {
        let caller_timeout;
        loop {
            match caller.poll_output() {
                CallerOutput::Transmit(b) => net.send(Side::Listener, ByteRope::from(b)),
                CallerOutput::Timeout(t) => {
                    caller_timeout = t;
                    break;
                }
                CallerOutput::Connected(c) => {
                    let mut listener_conn = accepted.take().expect("listener accepted first");
                    let mut throwaway = (Vec::new(), None);
                    let lt = drain(
                        &mut listener_conn,
                        Side::Caller,
                        &mut net,
                        &mut throwaway.0,
                        &mut throwaway.1,
                    );
                    return Ok(Pair {
                        caller_timeout: net.now,
                        listener_timeout: lt,
                        net,
                        caller: *c,
                        listener: listener_conn,
                        caller_got: Vec::new(),
                        listener_got: Vec::new(),
                        caller_closed: None,
                        listener_closed: None,
                    });
                }
                CallerOutput::Failed(e) => return Err(e),
            }
        }
        assert!(net.now < deadline, "handshake did not finish");
        let next = net
            .next_arrival()
            .map_or(caller_timeout, |a| a.min(caller_timeout));
        net.now = next.max(net.now);
        while let Some((side, data)) = net.pop_due() {
            match side {
                Side::Caller => caller.handle_input(Input::Receive(net.now, data)),
                Side::Listener => {
                    if let Some(conn) = accepted.as_mut() {
                        // A repeated conclusion: the session answers it.
                        conn.handle_input(Input::Receive(net.now, data));
                        let mut sink = (Vec::new(), None);
                        drain(conn, Side::Caller, &mut net, &mut sink.0, &mut sink.1);
                        continue;
                    }
                    match listener.handle(net.now, caller_addr(), data) {
                        ListenerOutput::Reply(b) => net.send(Side::Caller, ByteRope::from(b)),
                        ListenerOutput::Connect(req) => {
                            assert_eq!(req.stream_id(), Some("#!::r=live/test,m=publish"));
                            match req.accept(&listener_cfg, 0x1234, net.now, Entropy::new([2; 32]))
                            {
                                Ok(a) => {
                                    net.send(Side::Caller, ByteRope::from(a.response));
                                    accepted = Some(*a.connection);
                                }
                                Err(r) => net.send(Side::Caller, ByteRope::from(r.response)),
                            }
                        }
                        ListenerOutput::Drop(_) => {}
                    }
                }
            }
        }
        if net.now >= caller_timeout {
            caller.handle_input(Input::Timeout(net.now));
        }
    }
}

impl Pair {
    /// Runs until `until` (relative to the start), calling `source` at each step to let the
    /// sender queue payloads.
    fn run(&mut self, until: Duration, mut source: impl FnMut(Instant, &mut Connection)) {
        let end = self.net.t0 + until;
        while self.net.now < end {
            source(self.net.now, &mut self.caller);
            self.caller_timeout = drain(
                &mut self.caller,
                Side::Listener,
                &mut self.net,
                &mut self.caller_got,
                &mut self.caller_closed,
            );
            // Step at most 1 ms so the source can feed in real time.
            let mut next = self.caller_timeout.min(self.listener_timeout);
            if let Some(a) = self.net.next_arrival() {
                next = next.min(a);
            }
            next = next.min(self.net.now + Duration::from_millis(1));
            self.net.now = next.max(self.net.now);
            while let Some((side, data)) = self.net.pop_due() {
                let now = self.net.now;
                match side {
                    Side::Caller => self.caller.handle_input(Input::Receive(now, data)),
                    Side::Listener => self.listener.handle_input(Input::Receive(now, data)),
                }
            }
            let now = self.net.now;
            if now >= self.caller_timeout {
                self.caller.handle_input(Input::Timeout(now));
            }
            if now >= self.listener_timeout {
                self.listener.handle_input(Input::Timeout(now));
            }
            self.caller_timeout = drain(
                &mut self.caller,
                Side::Listener,
                &mut self.net,
                &mut self.caller_got,
                &mut self.caller_closed,
            );
            self.listener_timeout = drain(
                &mut self.listener,
                Side::Caller,
                &mut self.net,
                &mut self.listener_got,
                &mut self.listener_closed,
            );
        }
    }
}

/// A numbered payload: 7 TS-sized packets' worth, first bytes = the index.
fn payload(i: u32) -> ByteRope {
    let mut v = vec![0x47u8; 1316];
    v[..4].copy_from_slice(&i.to_be_bytes());
    ByteRope::from(v)
}

fn index(p: &Bytes) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

/// A source of `n` payloads, one every `every`, starting at the first call.
fn paced_source(n: u32, every: Duration) -> impl FnMut(Instant, &mut Connection) {
    let mut sent = 0u32;
    let mut start = None;
    move |now, conn| {
        let start = *start.get_or_insert(now);
        while sent < n && start + every * sent <= now {
            assert!(conn.send(now, payload(sent)));
            sent += 1;
        }
    }
}

fn assert_in_order(got: &[Bytes], n: u32) {
    let idx: Vec<u32> = got.iter().map(index).collect();
    let expected: Vec<u32> = (0..n).collect();
    assert_eq!(idx.len(), expected.len(), "delivered {} of {n}", idx.len());
    assert_eq!(idx, expected);
}

#[test]
fn clean_link_delivers_everything_at_the_latency() {
    let mut pair = connect(
        Net::new(Link::clean(5), Link::clean(5)),
        config(120, None, KeyLen::Aes128),
        config(80, None, KeyLen::Aes128),
    )
    .unwrap();
    assert_eq!(pair.listener.recv_latency(), Duration::from_millis(120));
    assert_eq!(pair.caller.send_latency(), Duration::from_millis(120));
    pair.run(
        Duration::from_secs(3),
        paced_source(1000, Duration::from_millis(2)),
    );
    assert_in_order(&pair.listener_got, 1000);
    let s = pair.listener.stats();
    assert_eq!((s.lost, s.dropped_too_late), (0, 0));
    let c = pair.caller.stats();
    assert_eq!(c.retransmitted, 0);
    assert!(c.rtt_us > 5_000 && c.rtt_us < 30_000, "rtt {}", c.rtt_us);
}

#[test]
fn loss_reordering_and_duplication_are_repaired_within_the_latency() {
    let bad = Link {
        delay: Duration::from_millis(30),
        loss: 50,
        reorder: 20,
        jitter: Duration::from_millis(10),
        duplicate: 10,
    };
    let mut pair = connect(
        Net::new(bad, bad),
        config(400, None, KeyLen::Aes128),
        config(400, None, KeyLen::Aes128),
    )
    .unwrap();
    pair.run(
        Duration::from_secs(6),
        paced_source(2000, Duration::from_millis(2)),
    );
    assert_in_order(&pair.listener_got, 2000);
    let (rx, tx) = (pair.listener.stats(), pair.caller.stats());
    assert!(rx.lost > 50, "{rx:?}");
    assert!(rx.recovered >= rx.lost - rx.dropped_too_late, "{rx:?}");
    assert_eq!(rx.dropped_too_late, 0, "{rx:?}");
    assert!(rx.duplicates > 0, "{rx:?}");
    assert!(tx.retransmitted >= rx.lost, "{tx:?} {rx:?}");
}

#[test]
fn an_outage_longer_than_the_latency_drops_and_moves_on() {
    let mut net = Net::new(Link::clean(5), Link::clean(5));
    // 1.5 s without anything reaching the receiver, starting at 1 s.
    net.blackout = Some((Duration::from_secs(1), Duration::from_millis(2500)));
    let mut pair = connect(
        net,
        config(120, None, KeyLen::Aes128),
        config(120, None, KeyLen::Aes128),
    )
    .unwrap();
    pair.run(
        Duration::from_secs(5),
        paced_source(2000, Duration::from_millis(2)),
    );
    let s = pair.listener.stats();
    assert!(pair.listener_closed.is_none());
    assert!(s.dropped_too_late > 100, "{s:?}");
    let idx: Vec<u32> = pair.listener_got.iter().map(index).collect();
    assert!(idx.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(
        *idx.last().unwrap(),
        1999,
        "the stream continued after the outage"
    );
}

#[test]
fn handshake_survives_loss_duplication_and_reordering() {
    let bad = Link {
        delay: Duration::from_millis(20),
        loss: 300,
        reorder: 300,
        jitter: Duration::from_millis(300),
        duplicate: 300,
    };
    let mut ok = 0;
    for seed in 1..20u64 {
        let mut net = Net::new(bad, bad);
        net.rng = Rng(seed * 0x1234_5678_9abc);
        if connect(
            net,
            config(120, None, KeyLen::Aes128),
            config(120, None, KeyLen::Aes128),
        )
        .is_ok()
        {
            ok += 1;
        }
    }
    assert!(ok >= 17, "{ok} of 19 handshakes completed");
}

#[test]
fn encrypted_with_every_key_length() {
    for key_len in [KeyLen::Aes128, KeyLen::Aes192, KeyLen::Aes256] {
        let pass = Some("correct horse battery");
        let mut pair = connect(
            Net::new(Link::clean(2), Link::clean(2)),
            config(120, pass, key_len),
            config(120, pass, KeyLen::Aes128),
        )
        .unwrap();
        assert!(pair.listener.is_encrypted() && pair.caller.is_encrypted());
        pair.run(
            Duration::from_secs(1),
            paced_source(200, Duration::from_millis(2)),
        );
        assert_in_order(&pair.listener_got, 200);
        assert_eq!(pair.listener.stats().undecryptable, 0);
    }
}

#[test]
fn wrong_or_missing_passphrase_is_refused() {
    let run = |caller: Option<&str>, listener: Option<&str>| {
        connect(
            Net::new(Link::clean(2), Link::clean(2)),
            config(120, caller, KeyLen::Aes128),
            config(120, listener, KeyLen::Aes128),
        )
        .err()
    };
    assert_eq!(
        run(Some("wrong passphrase!"), Some("right passphrase")),
        Some(CallError::Rejected(RejectReason::BadSecret))
    );
    assert_eq!(
        run(None, Some("right passphrase")),
        Some(CallError::Rejected(RejectReason::Unsecure))
    );
    assert_eq!(
        run(Some("right passphrase"), None),
        Some(CallError::Rejected(RejectReason::Unsecure))
    );
}

#[test]
fn keys_refresh_without_losing_a_packet() {
    let pass = Some("refresh passphrase");
    let mut cfg = config(120, pass, KeyLen::Aes128);
    cfg.key_refresh_packets = 200;
    cfg.key_preannounce_packets = 50;
    let mut pair = connect(
        Net::new(Link::clean(3), Link::clean(3)),
        cfg,
        config(120, pass, KeyLen::Aes128),
    )
    .unwrap();
    pair.run(
        Duration::from_secs(3),
        paced_source(1000, Duration::from_millis(2)),
    );
    assert_in_order(&pair.listener_got, 1000);
    let (tx, rx) = (pair.caller.stats(), pair.listener.stats());
    assert!(tx.key_switches >= 4, "{tx:?}");
    assert_eq!(rx.undecryptable, 0, "{rx:?}");
}

#[test]
fn shutdown_and_idle_peer_close_the_session() {
    let mut pair = connect(
        Net::new(Link::clean(2), Link::clean(2)),
        config(120, None, KeyLen::Aes128),
        config(120, None, KeyLen::Aes128),
    )
    .unwrap();
    pair.run(Duration::from_millis(500), |_, _| {});
    let now = pair.net.now;
    pair.caller.close(now);
    pair.run(Duration::from_millis(600), |_, _| {});
    assert_eq!(pair.listener_closed, Some(CloseReason::PeerShutdown));
    assert_eq!(pair.caller_closed, Some(CloseReason::Local));

    let mut pair = connect(
        Net::new(Link::clean(2), Link::clean(2)),
        config(120, None, KeyLen::Aes128),
        config(120, None, KeyLen::Aes128),
    )
    .unwrap();
    // Everything towards the listener is lost from 0.2 s on: it hears nothing for 5 s.
    pair.net.blackout = Some((Duration::from_millis(200), Duration::from_secs(60)));
    pair.run(Duration::from_secs(6), |_, _| {});
    assert_eq!(pair.listener_closed, Some(CloseReason::PeerIdle));
}

#[test]
fn garbage_and_foreign_packets_leave_the_session_alone() {
    let mut pair = connect(
        Net::new(Link::clean(2), Link::clean(2)),
        config(120, None, KeyLen::Aes128),
        config(120, None, KeyLen::Aes128),
    )
    .unwrap();
    let now = pair.net.now;
    for junk in [&b""[..], &[0xff; 3], &[0x80; 16], &[0u8; 2000]] {
        pair.listener
            .handle_input(Input::Receive(now, Bytes::copy_from_slice(junk)));
    }
    pair.run(
        Duration::from_secs(1),
        paced_source(100, Duration::from_millis(2)),
    );
    assert_in_order(&pair.listener_got, 100);
    assert!(pair.listener.stats().bad_packets >= 3);
}

#[test]
fn rtt_starts_from_the_first_sample_and_adopts_the_peers_once_it_measured() {
    use super::{Rtt, RttSource};
    let ms = Duration::from_millis;
    let mut rtt = Rtt::initial();
    assert_eq!(
        rtt.rexmit_timeout(),
        ms(100 + 50 + 20),
        "jitter at most half an RTT"
    );
    // A peer that has not measured yet sends the initial values: our ACK timing counts.
    rtt.on_ack(Rtt::INITIAL, Some(ms(60)));
    assert_eq!(
        (rtt.rtt, rtt.var, rtt.source),
        (60_000, 30_000, RttSource::Measured)
    );
    rtt.on_ack(Rtt::INITIAL, Some(ms(60)));
    assert_eq!((rtt.rtt, rtt.var), (60_000, 22_500));
    assert_eq!(rtt.rexmit_timeout(), ms(60 + 30 + 20));
    // Then the peer's measurement wins, and our samples no longer move it.
    rtt.on_ack((62_000, 2_000), Some(ms(90)));
    rtt.on_ack((0, 0), Some(ms(90)));
    assert_eq!(
        (rtt.rtt, rtt.var, rtt.source),
        (62_000, 2_000, RttSource::Peer)
    );
    assert_eq!(rtt.rexmit_timeout(), ms(62 + 8 + 20));
    assert_eq!(rtt.rexmit_guard(), ms(62 - 8));
}
