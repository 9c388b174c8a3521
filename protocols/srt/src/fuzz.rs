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
