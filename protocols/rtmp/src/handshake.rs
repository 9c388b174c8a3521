//! The RTMP handshake: C0/C1/C2 from the client, S0/S1/S2 from the server.
//!
//! C0/S0 is one version byte (3). C1/S1/C2/S2 are 1536 bytes each. Two variants exist:
//!
//! * **Plain** (RTMP spec 1.0, section 5.2): C1 = time(4) zero(4) random(1528); S2 echoes C1
//!   and C2 echoes S1.
//! * **Digest** (Flash Player 9+, ffmpeg, OBS): bytes 4..8 of C1/S1 carry a non-zero version and
//!   the packet hides a 32-byte HMAC-SHA256 digest at a position derived from the packet itself.
//!   Scheme 0 puts the 4 "offset bytes" at 8..12 and the digest at `sum % 728 + 12`; scheme 1
//!   puts them at 772..776 and the digest at `sum % 728 + 776`. The digest covers the other
//!   1504 bytes. C1 is keyed with the first 30 bytes of the Flash Player key, S1 with the first
//!   36 bytes of the Flash Media Server key. S2 (C2) ends with
//!   `HMAC(HMAC(full FMS (FP) key, C1 (S1) digest), S2 (C2) bytes 0..1504)`.
//!
//! ffmpeg, when playing, verifies the S1 digest and the S2 signature whenever S1's version
//! byte is 3 or more; so the server answers a digest C1 with a digest S1/S2 and a plain C1 with
//! a plain S1/S2. The client always sends a digest C1 (nginx-rtmp, SRS and FMS accept both).
//!
//! The states are consumed on each step, so a finished handshake cannot be fed again.

use bytes::{Buf, Bytes};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zerocast_codecs::ByteRope;

use crate::error::Error;

/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// The only RTMP version byte accepted in C0/S0.
pub const RTMP_VERSION: u8 = 3;

const KEY_TAIL: [u8; 32] = [
    0xf0, 0xee, 0xc2, 0x4a, 0x80, 0x68, 0xbe, 0xe8, 0x2e, 0x00, 0xd0, 0xd1, 0x02, 0x9e, 0x7e, 0x57,
    0x6e, 0xec, 0x5d, 0x2d, 0x29, 0x80, 0x6f, 0xab, 0x93, 0xb8, 0xe6, 0x36, 0xcf, 0xeb, 0x31, 0xae,
];
const FP_TEXT: &[u8; 30] = b"Genuine Adobe Flash Player 001";
const FMS_TEXT: &[u8; 36] = b"Genuine Adobe Flash Media Server 001";

/// Version advertised in the client's C1 (what Flash Player 9 sent; ffmpeg sends the same).
const CLIENT_VERSION: [u8; 4] = [9, 0, 124, 2];
/// Version advertised in a digest S1 (>= 3 in the first byte makes ffmpeg check digests).
const SERVER_VERSION: [u8; 4] = [13, 14, 10, 13];

/// The full 62-byte Flash Player key.
fn fp_key() -> [u8; 62] {
    let mut k = [0u8; 62];
    k[..30].copy_from_slice(FP_TEXT);
    k[30..].copy_from_slice(&KEY_TAIL);
    k
}

/// The full 68-byte Flash Media Server key.
fn fms_key() -> [u8; 68] {
    let mut k = [0u8; 68];
    k[..36].copy_from_slice(FMS_TEXT);
    k[36..].copy_from_slice(&KEY_TAIL);
    k
}

/// Where a digest handshake packet keeps its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestScheme {
    /// Offset bytes at 8..12.
    Scheme0,
    /// Offset bytes at 772..776.
    Scheme1,
}

/// Position of the digest in a 1536-byte packet under `scheme`.
pub fn digest_offset(packet: &[u8; HANDSHAKE_SIZE], scheme: DigestScheme) -> usize {
    let base = match scheme {
        DigestScheme::Scheme0 => 8,
        DigestScheme::Scheme1 => 772,
    };
    let sum: usize = packet[base..base + 4].iter().map(|b| *b as usize).sum();
    sum % 728 + base + 4
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this never takes the else branch.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The digest of `packet` with the 32 bytes at `at` left out.
fn packet_digest(packet: &[u8; HANDSHAKE_SIZE], at: usize, key: &[u8]) -> [u8; 32] {
    hmac(key, &[&packet[..at], &packet[at + 32..]])
}

/// Finds a valid digest keyed with `key`, trying scheme 0 then scheme 1; returns the scheme and
/// the digest.
pub fn find_digest(packet: &[u8; HANDSHAKE_SIZE], key: &[u8]) -> Option<(DigestScheme, [u8; 32])> {
    [DigestScheme::Scheme0, DigestScheme::Scheme1]
        .into_iter()
        .find_map(|s| {
            let at = digest_offset(packet, s);
            let d = packet_digest(packet, at, key);
            (packet[at..at + 32] == d).then_some((s, d))
        })
}

fn imprint(packet: &mut [u8; HANDSHAKE_SIZE], scheme: DigestScheme, key: &[u8]) -> [u8; 32] {
    let at = digest_offset(packet, scheme);
    let d = packet_digest(packet, at, key);
    packet[at..at + 32].copy_from_slice(&d);
    d
}

/// Fills the last 32 bytes of an S2/C2 with its signature over the first 1504 bytes.
fn sign_response(packet: &mut [u8; HANDSHAKE_SIZE], full_key: &[u8], peer_digest: &[u8; 32]) {
    let k = hmac(full_key, &[peer_digest]);
    let sig = hmac(&k, &[&packet[..HANDSHAKE_SIZE - 32]]);
    packet[HANDSHAKE_SIZE - 32..].copy_from_slice(&sig);
}

/// True when `packet` (an S2 or C2) is signed for `our_digest` with `full_key`.
pub fn response_is_signed(
    packet: &[u8; HANDSHAKE_SIZE],
    full_key: &[u8],
    our_digest: &[u8; 32],
) -> bool {
    let k = hmac(full_key, &[our_digest]);
    hmac(&k, &[&packet[..HANDSHAKE_SIZE - 32]])[..] == packet[HANDSHAKE_SIZE - 32..]
}

/// The full Flash Player key (signs C2, keyed on the S1 digest).
pub fn flash_player_key() -> [u8; 62] {
    fp_key()
}

/// The full Flash Media Server key (signs S2, keyed on the C1 digest).
pub fn flash_media_server_key() -> [u8; 68] {
    fms_key()
}

/// Handshake filler bytes. Not secret (the handshake protects nothing), only varied.
#[derive(Debug, Clone)]
pub(crate) struct Filler(u64);

impl Filler {
    /// Seeded from the standard library's per-process random hasher keys (no clock, no I/O).
    pub(crate) fn new() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Filler(h.finish() | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *b = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

fn packet_from(buf: &[u8]) -> [u8; HANDSHAKE_SIZE] {
    let mut p = [0u8; HANDSHAKE_SIZE];
    p.copy_from_slice(&buf[..HANDSHAKE_SIZE]);
    p
}

/// Moves bytes from `data` into `buf` until it holds `want` bytes; true when it does.
fn fill_to(buf: &mut Vec<u8>, want: usize, data: &mut Bytes) -> bool {
    let n = (want - buf.len()).min(data.len());
    buf.extend_from_slice(&data[..n]);
    data.advance(n);
    buf.len() == want
}

/// Server side states.
#[derive(Debug)]
pub(crate) enum ServerHandshake {
    /// Waiting for C0 and C1 (1537 bytes, collected here).
    ExpectC0C1(Vec<u8>),
    /// S0/S1/S2 sent; waiting for C2 (`usize` bytes of it still missing). C2 is not checked:
    /// clients in the wild send echoes, signed packets and garbage alike.
    ExpectC2(usize),
    /// Done: further bytes are chunk stream.
    Done,
}

impl ServerHandshake {
    pub(crate) fn new() -> Self {
        ServerHandshake::ExpectC0C1(Vec::with_capacity(1 + HANDSHAKE_SIZE))
    }

    /// Consumes handshake bytes from the front of `data`; S0+S1+S2 are appended to `out`.
    pub(crate) fn handle(
        self,
        data: &mut Bytes,
        filler: &mut Filler,
        out: &mut ByteRope,
    ) -> Result<Self, Error> {
        match self {
            ServerHandshake::ExpectC0C1(mut buf) => {
                if buf.is_empty() {
                    if let Some(&v) = data.first() {
                        if v != RTMP_VERSION {
                            return Err(Error::BadHandshakeVersion {
                                version: v,
                                offset: 0,
                            });
                        }
                    }
                }
                if !fill_to(&mut buf, 1 + HANDSHAKE_SIZE, data) {
                    return Ok(ServerHandshake::ExpectC0C1(buf));
                }
                let c1 = packet_from(&buf[1..]);
                out.push(Bytes::from(server_response(&c1, filler)));
                ServerHandshake::ExpectC2(HANDSHAKE_SIZE).handle(data, filler, out)
            }
            ServerHandshake::ExpectC2(missing) => {
                let n = missing.min(data.len());
                data.advance(n);
                if n == missing {
                    Ok(ServerHandshake::Done)
                } else {
                    Ok(ServerHandshake::ExpectC2(missing - n))
                }
            }
            ServerHandshake::Done => Ok(ServerHandshake::Done),
        }
    }
}

/// S0+S1+S2 answering `c1`.
pub(crate) fn server_response(c1: &[u8; HANDSHAKE_SIZE], filler: &mut Filler) -> Vec<u8> {
    let mut s1 = [0u8; HANDSHAKE_SIZE];
    filler.fill(&mut s1[8..]);
    let mut s2;
    let client_digest = if c1[4..8] != [0; 4] {
        find_digest(c1, &fp_key()[..30])
    } else {
        None
    };
    match client_digest {
        Some((scheme, digest)) => {
            s1[4..8].copy_from_slice(&SERVER_VERSION);
            imprint(&mut s1, scheme, &fms_key()[..36]);
            s2 = [0u8; HANDSHAKE_SIZE];
            filler.fill(&mut s2[..HANDSHAKE_SIZE - 32]);
            sign_response(&mut s2, &fms_key(), &digest);
        }
        None => {
            s2 = *c1;
        }
    }
    let mut out = Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE);
    out.push(RTMP_VERSION);
    out.extend_from_slice(&s1);
    out.extend_from_slice(&s2);
    out
}

/// Client side states.
#[derive(Debug)]
pub(crate) enum ClientHandshake {
    /// C0+C1 sent; collecting S0+S1+S2. Holds our C1 digest.
    ExpectS0S1S2 { c1_digest: [u8; 32], buf: Vec<u8> },
    /// C2 sent: further bytes are chunk stream.
    Done,
}

impl ClientHandshake {
    /// The initial state and the C0+C1 bytes to send.
    pub(crate) fn start(filler: &mut Filler) -> (Self, Vec<u8>) {
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        c1[4..8].copy_from_slice(&CLIENT_VERSION);
        filler.fill(&mut c1[8..]);
        let c1_digest = imprint(&mut c1, DigestScheme::Scheme0, &fp_key()[..30]);
        let mut out = Vec::with_capacity(1 + HANDSHAKE_SIZE);
        out.push(RTMP_VERSION);
        out.extend_from_slice(&c1);
        (
            ClientHandshake::ExpectS0S1S2 {
                c1_digest,
                buf: Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE),
            },
            out,
        )
    }

    /// Consumes handshake bytes from `data`; C2 is appended to `out` once S0-S2 are in.
    pub(crate) fn handle(
        self,
        data: &mut Bytes,
        filler: &mut Filler,
        out: &mut ByteRope,
    ) -> Result<Self, Error> {
        match self {
            ClientHandshake::ExpectS0S1S2 { c1_digest, mut buf } => {
                if buf.is_empty() {
                    if let Some(&v) = data.first() {
                        if v != RTMP_VERSION {
                            return Err(Error::BadHandshakeVersion {
                                version: v,
                                offset: 0,
                            });
                        }
                    }
                }
                if !fill_to(&mut buf, 1 + 2 * HANDSHAKE_SIZE, data) {
                    return Ok(ClientHandshake::ExpectS0S1S2 { c1_digest, buf });
                }
                let s1 = packet_from(&buf[1..]);
                // S2 is not verified: servers answer with echoes as often as with signatures.
                let server_digest = if s1[4..8] != [0; 4] {
                    find_digest(&s1, &fms_key()[..36])
                } else {
                    None
                };
                let c2 = match server_digest {
                    Some((_, d)) => {
                        let mut c2 = [0u8; HANDSHAKE_SIZE];
                        filler.fill(&mut c2[..HANDSHAKE_SIZE - 32]);
                        sign_response(&mut c2, &fp_key(), &d);
                        c2
                    }
                    None => s1,
                };
                out.push(Bytes::copy_from_slice(&c2));
                Ok(ClientHandshake::Done)
            }
            ClientHandshake::Done => Ok(ClientHandshake::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks S0+S1+S2 the way ffmpeg's `rtmp_handshake` does when playing.
    fn ffmpeg_accepts(c1: &[u8; HANDSHAKE_SIZE], resp: &[u8]) -> bool {
        assert_eq!(resp.len(), 1 + 2 * HANDSHAKE_SIZE);
        let s1 = packet_from(&resp[1..]);
        let s2 = packet_from(&resp[1 + HANDSHAKE_SIZE..]);
        if s1[4] < 3 {
            return true;
        }
        let Some((_, _)) = find_digest(&s1, &fms_key()[..36]) else {
            return false;
        };
        let at = digest_offset(c1, DigestScheme::Scheme0);
        let mut d = [0u8; 32];
        d.copy_from_slice(&c1[at..at + 32]);
        response_is_signed(&s2, &fms_key(), &d)
    }

    #[test]
    fn digest_handshake_round_trip() {
        let mut f = Filler::new();
        let (mut client, c0c1) = ClientHandshake::start(&mut f);
        assert_eq!(c0c1.len(), 1537);
        let c1 = packet_from(&c0c1[1..]);
        assert!(find_digest(&c1, &fp_key()[..30]).is_some());

        let mut server = ServerHandshake::new();
        let mut s_out = ByteRope::new();
        // Deliver C0C1 in two pieces.
        let mut a = Bytes::copy_from_slice(&c0c1[..100]);
        server = server.handle(&mut a, &mut f, &mut s_out).unwrap();
        assert!(s_out.is_empty());
        let mut b = Bytes::copy_from_slice(&c0c1[100..]);
        server = server.handle(&mut b, &mut f, &mut s_out).unwrap();
        let resp = s_out.to_contiguous();
        assert!(ffmpeg_accepts(&c1, &resp));
        assert_eq!(resp[5], 13);

        let mut c_out = ByteRope::new();
        let mut r = resp.clone();
        client = client.handle(&mut r, &mut f, &mut c_out).unwrap();
        assert!(matches!(client, ClientHandshake::Done));
        let c2 = packet_from(&c_out.to_contiguous());
        let s1 = packet_from(&resp[1..]);
        let (_, sd) = find_digest(&s1, &fms_key()[..36]).unwrap();
        assert!(response_is_signed(&c2, &fp_key(), &sd));

        let mut c2b = Bytes::copy_from_slice(&c2);
        server = server.handle(&mut c2b, &mut f, &mut s_out).unwrap();
        assert!(matches!(server, ServerHandshake::Done));
    }

    #[test]
    fn scheme1_client_is_answered_with_scheme1() {
        let mut f = Filler::new();
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        c1[4..8].copy_from_slice(&CLIENT_VERSION);
        f.fill(&mut c1[8..]);
        imprint(&mut c1, DigestScheme::Scheme1, &fp_key()[..30]);
        let (scheme, _) = find_digest(&c1, &fp_key()[..30]).unwrap();
        assert_eq!(scheme, DigestScheme::Scheme1);
        let resp = server_response(&c1, &mut f);
        let s1 = packet_from(&resp[1..]);
        assert_eq!(
            find_digest(&s1, &fms_key()[..36]).map(|x| x.0),
            Some(DigestScheme::Scheme1)
        );
        let at = digest_offset(&c1, DigestScheme::Scheme1);
        let mut d = [0u8; 32];
        d.copy_from_slice(&c1[at..at + 32]);
        assert!(response_is_signed(
            &packet_from(&resp[1 + HANDSHAKE_SIZE..]),
            &fms_key(),
            &d
        ));
    }

    #[test]
    fn plain_client_gets_echo() {
        let mut f = Filler::new();
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        f.fill(&mut c1[8..]);
        let resp = server_response(&c1, &mut f);
        assert_eq!(&resp[5..9], &[0, 0, 0, 0]);
        assert_eq!(&resp[1 + HANDSHAKE_SIZE..], &c1[..]);
    }

    #[test]
    fn bad_version() {
        let mut f = Filler::new();
        let mut d = Bytes::from_static(&[6, 0, 0]);
        let r = ServerHandshake::new().handle(&mut d, &mut f, &mut ByteRope::new());
        assert!(matches!(
            r,
            Err(Error::BadHandshakeVersion {
                version: 6,
                offset: 0
            })
        ));
    }
}
