//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing`). They live here so
//! that they compile, and replay their seeds, in this crate's own tests.

use bytes::Bytes;

use crate::packet::{
    peek_dest_socket, peer_ip_from_wire, Control, ControlPacket, Handshake, HsExtension, Packet,
    HEADER_LEN,
};
use crate::reject::RejectReason;

/// One UDP datagram as a peer sends it: parse it; whatever parses must encode to bytes that
/// parse back to the same packet, and encode again to the same bytes.
pub fn fuzz_packet(data: &[u8]) {
    let peeked = peek_dest_socket(data);
    match Packet::parse(Bytes::copy_from_slice(data)) {
        Ok(packet) => {
            assert_eq!(peeked, Some(packet.dest_socket()));
            round_trip(&packet);
            if let Packet::Control(ControlPacket {
                body: Control::Handshake(hs),
                ..
            }) = &packet
            {
                inspect(hs);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A handshake control information field (48 fixed bytes, then extensions), as a caller or
/// listener sends it; the entry point puts the control header in front, so every input
/// reaches the handshake parser. Same round-trip rule as [`fuzz_packet`].
pub fn fuzz_handshake(data: &[u8]) {
    let mut datagram = Vec::with_capacity(HEADER_LEN + data.len());
    // Control type 0 (handshake), timestamp 1000, destination socket 0 (a caller's first packet).
    datagram.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xE8, 0, 0, 0, 0]);
    datagram.extend_from_slice(data);
    match Packet::parse(Bytes::from(datagram)) {
        Ok(packet) => {
            round_trip(&packet);
            if let Packet::Control(ControlPacket {
                body: Control::Handshake(hs),
                ..
            }) = &packet
            {
                inspect(hs);
            } else {
                panic!("a handshake header parsed as {packet:?}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fn round_trip(packet: &Packet) {
    let wire = packet.to_vec();
    let again = match Packet::parse(Bytes::from(wire.clone())) {
        Ok(p) => p,
        Err(e) => panic!("encoding of {packet:?} does not parse: {e}"),
    };
    assert_eq!(&again, packet);
    assert_eq!(again.to_vec(), wire);
    if let Packet::Data(d) = packet {
        assert_eq!(wire.get(..HEADER_LEN), Some(&d.encode_header()[..]));
    }
}

/// What the handshake state machines read from a handshake, exercised for panics.
fn inspect(hs: &Handshake) {
    if let Some(reason) = hs.kind.reject_reason() {
        let _ = reason.to_string();
        assert_eq!(RejectReason::from_wire(reason.wire_code()), reason);
    }
    let _ = peer_ip_from_wire(hs.peer_ip, false);
    let _ = peer_ip_from_wire(hs.peer_ip, true);
    let _ = hs.stream_id().map(str::len);
    let _ = hs.srt_handshake();
    let _ = hs.key_material();
    for ext in &hs.extensions {
        if let HsExtension::StreamId(s) = ext {
            assert!(s.len() <= crate::packet::STREAM_ID_MAX);
        }
    }
}

/// A connected pair (caller publishing to a listener) fed a script of hostile inputs: each
/// step is `[op][len][bytes]`, where `op` picks the target session and whether to advance
/// virtual time, send data, or deliver `bytes` as a datagram (raw, or spliced into a valid
/// header for the session so it reaches the control and data paths). Nothing may panic, and
/// the session's buffers stay within the flow window.
pub fn fuzz_session(data: &[u8]) {
    use std::time::{Duration, Instant};

    use zerocast_codecs::ByteRope;

    use crate::connection::{Input, Output};
    use crate::entropy::Entropy;
    use crate::handshake::{CallerOutput, Listener, ListenerOutput};
    use crate::{Caller, SessionConfig};

    let cfg = SessionConfig::default();
    let t0 = Instant::now();
    let listener_addr: std::net::SocketAddr = ([127, 0, 0, 1], 8890).into();
    let caller_addr: std::net::SocketAddr = ([127, 0, 0, 1], 40000).into();
    let listener = Listener::new(&cfg, [3; 32], t0);
    let mut caller = Caller::new(
        cfg.clone(),
        t0,
        listener_addr,
        Some("#!::r=live/fuzz,m=publish".into()),
        Duration::from_secs(3),
        Entropy::new([4; 32]),
    );
    // A loss-free handshake: induction, conclusion, accept.
    let (mut tx, mut rx) = (None, None);
    for _ in 0..8 {
        match caller.poll_output() {
            CallerOutput::Transmit(b) => match listener.handle(t0, caller_addr, b) {
                ListenerOutput::Reply(r) => caller.handle_input(Input::Receive(t0, r)),
                ListenerOutput::Connect(req) => {
                    match req.accept(&cfg, 0x5eed, t0, Entropy::new([5; 32])) {
                        Ok(a) => {
                            caller.handle_input(Input::Receive(t0, a.response));
                            rx = Some(a.connection);
                        }
                        Err(_) => return,
                    }
                }
                ListenerOutput::Drop(_) => return,
            },
            CallerOutput::Connected(c) => {
                tx = Some(c);
                break;
            }
            CallerOutput::Timeout(_) | CallerOutput::Failed(_) => return,
        }
    }
    let (Some(mut tx), Some(mut rx)) = (tx, rx) else {
        panic!("the in-memory handshake must connect");
    };
    let mut now = t0;
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let len = (usize::from(u16::from_be_bytes([rest[1], rest[2]])) % 1500).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let (target, peer_socket) = if op & 1 == 0 {
            (&mut rx, 0x5eed_u32)
        } else {
            let id = tx.local_socket();
            (&mut tx, id)
        };
        match (op >> 1) % 4 {
            0 => target.handle_input(Input::Receive(now, Bytes::copy_from_slice(body))),
            1 => {
                // A valid header for this session, then the fuzzer's bytes.
                let mut d = Vec::with_capacity(16 + body.len());
                d.extend_from_slice(body.get(..8).unwrap_or(&[0x80, 0x02, 0, 0, 0, 0, 0, 1]));
                d.extend_from_slice(&0u32.to_be_bytes());
                d.extend_from_slice(&peer_socket.to_be_bytes());
                d.extend_from_slice(body.get(8..).unwrap_or_default());
                target.handle_input(Input::Receive(now, Bytes::from(d)));
            }
            2 => {
                now += Duration::from_micros(u64::from(op) * 997 + len as u64 * 131);
                target.handle_input(Input::Timeout(now));
            }
            _ => {
                let _ = tx.send(now, ByteRope::from(body.to_vec()));
            }
        }
        for conn in [&mut tx, &mut rx] {
            for _ in 0..100_000 {
                if let Output::Timeout(_) = conn.poll_output() {
                    break;
                }
            }
            let s = conn.stats();
            assert!(s.recv_buffer_packets <= u64::from(cfg.flow_window));
            assert!(s.send_buffer_packets <= u64::from(cfg.flow_window));
        }
    }
}

/// A key material message (the body of KMREQ/KMRSP) as a peer sends it: unwrapping with a
/// passphrase, and applying it as an in-band refresh, must fail cleanly or give keys that
/// decrypt and re-encode.
pub fn fuzz_key_material(data: &[u8]) {
    use crate::crypto::{CryptoContext, KeyParity, Passphrase};
    // Construction from a constant of valid length cannot fail.
    let pass = Passphrase::new("fuzzing passphrase").expect("valid passphrase");
    let Ok(mut ctx) = CryptoContext::from_key_material(&pass, data) else {
        return;
    };
    let _ = ctx.key_material_message();
    let mut payload = [0x47u8; 188];
    let _ = ctx.apply(KeyParity::Even, crate::SeqNo::new(1), &mut payload);
    let _ = ctx.update_from_key_material(&pass, data);
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Runs `f` on every seed and regression input of `target`; returns how many it ran.
    fn replay(target: &str, f: fn(&[u8])) -> usize {
        let mut n = 0;
        for kind in ["seeds", "regressions"] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../fuzz")
                .join(kind)
                .join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            files.sort();
            for path in files {
                let data =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                f(&data);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn srt_packet_seeds() {
        assert!(replay("srt_packet", fuzz_packet) > 0);
    }

    #[test]
    fn srt_handshake_seeds() {
        assert!(replay("srt_handshake", fuzz_handshake) > 0);
    }

    #[test]
    fn srt_key_material_seeds() {
        assert!(replay("srt_key_material", fuzz_key_material) > 0);
    }

    #[test]
    fn srt_session_seeds() {
        assert!(replay("srt_session", fuzz_session) > 0);
    }

    #[test]
    fn hostile_inputs() {
        for input in [
            &[][..],
            &[0x80; 15][..],
            &[0xFF; 64][..],
            &[
                0x80, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1,
            ][..],
        ] {
            fuzz_packet(input);
            fuzz_handshake(input);
        }
    }
}
