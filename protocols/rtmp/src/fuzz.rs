//! Entry points for cargo-fuzz targets (feature `fuzzing`). Each must never panic.

use std::time::{Duration, Instant};

use bytes::Bytes;
use zerocast_codecs::ByteRope;

use crate::amf0::{self, Amf0Limits, Amf0Value};
use crate::chunk::{encode_message, ChunkDecoder};
use crate::handshake::{Filler, ServerHandshake};
use crate::{ClientParams, ClientSession, Input, Limits, Output, ServerSession, SessionConfig};

/// Feeds `data` to a server handshake.
pub fn fuzz_handshake(data: &[u8]) {
    let mut f = Filler::new();
    let mut out = ByteRope::new();
    let mut hs = ServerHandshake::new();
    for piece in data.chunks(700) {
        let mut b = Bytes::copy_from_slice(piece);
        hs = match hs.handle(&mut b, &mut f, &mut out) {
            Ok(h) => h,
            Err(_) => return,
        };
    }
}

/// Feeds `data` to a chunk decoder, split where the first byte says.
pub fn fuzz_chunk(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = (cut as usize).min(rest.len());
    let mut d = ChunkDecoder::new(&Limits::default(), 0);
    let mut out = Vec::new();
    if d.push(Bytes::copy_from_slice(&rest[..cut]), &mut out)
        .is_ok()
    {
        let _ = d.push(Bytes::copy_from_slice(&rest[cut..]), &mut out);
    }
}

/// Decodes `data` as AMF0 values.
pub fn fuzz_amf0(data: &[u8]) {
    let _ = amf0::decode_all(data, &Amf0Limits::default());
}

/// Decoded AMF0 values re-encode to something that decodes to the same values.
pub fn fuzz_amf0_roundtrip(data: &[u8]) {
    let limits = Amf0Limits::default();
    let Ok(values) = amf0::decode_all(data, &limits) else {
        return;
    };
    let enc = amf0::encode_all(&values);
    let again = amf0::decode_all(&enc, &limits);
    let same = match &again {
        // NaN != NaN: compare encodings instead.
        Ok(v) => amf0::encode_all(v) == enc,
        Err(_) => false,
    };
    assert!(same, "AMF0 round trip changed {values:?}");
    let _: Option<&Amf0Value> = values.first();
}

/// A message encoded with `encode_message` decodes to itself, for any chunk size and split.
pub fn fuzz_chunk_roundtrip(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let chunk_size = u32::from(u16::from_be_bytes([data[0], data[1]])).max(1);
    let csid = 2 + u32::from(u16::from_be_bytes([data[2], data[3]])) % 65598;
    let ts = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
    let payload = &data[8..];
    let mut rope = ByteRope::new();
    for p in payload.chunks(97) {
        rope.push(Bytes::copy_from_slice(p));
    }
    let mut wire = ByteRope::new();
    encode_message(
        2,
        1,
        0,
        0,
        &ByteRope::from(chunk_size.to_be_bytes().to_vec()),
        128,
        &mut wire,
    );
    encode_message(csid, 9, 1, ts, &rope, chunk_size, &mut wire);
    let wire = wire.to_contiguous();
    let limits = Limits {
        max_chunk_size: u32::MAX,
        ..Limits::default()
    };
    let mut d = ChunkDecoder::new(&limits, 0);
    let mut out = Vec::new();
    let cut = payload.len() % (wire.len() + 1);
    let ok =
        d.push(wire.slice(..cut), &mut out).is_ok() && d.push(wire.slice(cut..), &mut out).is_ok();
    assert!(ok, "round trip failed to decode");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].timestamp, ts);
    assert_eq!(&out[0].payload.to_contiguous()[..], payload);
}

fn config() -> SessionConfig {
    SessionConfig::default()
}

/// Feeds `data` to a server session (after a valid C0+C1 prefix is not required: the fuzzer
/// finds it), in pieces, with time advancing.
pub fn fuzz_server_session(data: &[u8]) {
    let t0 = Instant::now();
    let mut s = ServerSession::new(config(), t0);
    for (i, piece) in data.chunks(512).enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        if s.handle_input(Input::Receive(now, Bytes::copy_from_slice(piece)))
            .is_err()
        {
            return;
        }
        while let Output::Transmit(_) | Output::Event(_) = s.poll_output() {}
    }
    let _ = s.handle_input(Input::Timeout(t0 + Duration::from_secs(60)));
}

/// Feeds `data` to a client session that is publishing.
pub fn fuzz_client_session(data: &[u8]) {
    let t0 = Instant::now();
    let params = ClientParams {
        app: "live".into(),
        tc_url: "rtmp://localhost/live".into(),
        flash_ver: None,
    };
    let mut c = ClientSession::new(config(), t0, params);
    c.publish("key");
    while let Output::Transmit(_) | Output::Event(_) = c.poll_output() {}
    for (i, piece) in data.chunks(512).enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        if c.handle_input(Input::Receive(now, Bytes::copy_from_slice(piece)))
            .is_err()
        {
            return;
        }
        while let Output::Transmit(_) | Output::Event(_) = c.poll_output() {}
    }
}
