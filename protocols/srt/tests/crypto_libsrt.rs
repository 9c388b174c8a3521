//! Key material and payload encryption against libsrt 1.5.1 (`srt-live-transmit`), replayed
//! from captures in `tests/data/libsrt-*` (made by `tests/data/capture_km.py`; see
//! `tests/data/libsrt-README.md`).
//!
//! * caller captures: libsrt made the keys. Its KMREQ must unwrap with the passphrase (and
//!   fail with [`CryptoError::BadSecret`] with another), and its encrypted data packets must
//!   decrypt to the datagrams fed to it.
//! * listener captures: zerocast's seed made the keys. The KMREQ sent to libsrt must be the
//!   bytes [`CryptoContext::key_material_message`] produces, libsrt must have echoed it in
//!   its KMRSP (accepted), and the packets libsrt then encrypted with those keys must decrypt.

use zerocast_srt::crypto::{
    CryptoContext, CryptoError, KeyLen, KeyMaterialSeed, KeyParity, KmState, Passphrase,
};
use zerocast_srt::SeqNo;

/// The caller captures' passphrase (`srt-live-transmit ... passphrase=...`).
const CALLER_PASSPHRASE: &str = "0123456789abcdef";
/// The listener captures' passphrase, shared by the script's KM and libsrt.
const SEED_PASSPHRASE: &str = "zerocast-interop-passphrase";

struct Capture {
    len: KeyLen,
    kmreq: &'static str,
    data: &'static str,
}

const CALLER: [Capture; 3] = [
    Capture {
        len: KeyLen::Aes128,
        kmreq: include_str!("data/libsrt-caller-aes128-kmreq.hex"),
        data: include_str!("data/libsrt-caller-aes128-data.hex"),
    },
    Capture {
        len: KeyLen::Aes192,
        kmreq: include_str!("data/libsrt-caller-aes192-kmreq.hex"),
        data: include_str!("data/libsrt-caller-aes192-data.hex"),
    },
    Capture {
        len: KeyLen::Aes256,
        kmreq: include_str!("data/libsrt-caller-aes256-kmreq.hex"),
        data: include_str!("data/libsrt-caller-aes256-data.hex"),
    },
];

const LISTENER: [(Capture, &str); 3] = [
    (
        Capture {
            len: KeyLen::Aes128,
            kmreq: include_str!("data/libsrt-listener-aes128-kmreq.hex"),
            data: include_str!("data/libsrt-listener-aes128-data.hex"),
        },
        include_str!("data/libsrt-listener-aes128-kmrsp.hex"),
    ),
    (
        Capture {
            len: KeyLen::Aes192,
            kmreq: include_str!("data/libsrt-listener-aes192-kmreq.hex"),
            data: include_str!("data/libsrt-listener-aes192-data.hex"),
        },
        include_str!("data/libsrt-listener-aes192-kmrsp.hex"),
    ),
    (
        Capture {
            len: KeyLen::Aes256,
            kmreq: include_str!("data/libsrt-listener-aes256-kmreq.hex"),
            data: include_str!("data/libsrt-listener-aes256-data.hex"),
        },
        include_str!("data/libsrt-listener-aes256-kmrsp.hex"),
    ),
];

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex fixture"))
        .collect()
}

fn lines(s: &str) -> Vec<Vec<u8>> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(unhex)
        .collect()
}

fn pass(s: &str) -> Passphrase {
    Passphrase::new(s).expect("fixture passphrase")
}

/// The capture script's `ts_datagram(i)`: 7 MPEG-TS packets, PID 0x100.
fn ts_datagram(i: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1316);
    for k in 0..7 {
        let n = i * 7 + k;
        out.extend_from_slice(&[0x47, 0x01, 0x00, 0x10 | (n & 0x0F) as u8]);
        out.extend((0..184).map(|j| ((n + j) & 0xFF) as u8));
    }
    out
}

/// The seed the capture script built its KMREQ from.
fn script_seed() -> KeyMaterialSeed {
    KeyMaterialSeed {
        salt: std::array::from_fn(|i| 0xA0 + i as u8),
        even: std::array::from_fn(|i| 0x30 + i as u8),
        odd: [0; 32],
    }
}

/// Decrypts every captured data packet with `ctx` and checks each against the datagrams the
/// script fed to srt-live-transmit (`inputs`).
fn check_data(ctx: &CryptoContext, data: &str, inputs: std::ops::Range<usize>, label: &str) {
    let packets = lines(data);
    assert!(packets.len() >= 3, "{label}: too few packets");
    for pkt in packets {
        // §3.1: word 0 is F=0 and the sequence number; KK sits in bits 28..27 of word 1.
        let word0 = u32::from_be_bytes(pkt[0..4].try_into().expect("word 0"));
        assert_eq!(word0 >> 31, 0, "{label}: a data packet");
        let kk = (pkt[4] >> 3) & 0x03;
        let parity = KeyParity::from_kk(kk).expect("encrypted packet");
        let mut payload = pkt[16..].to_vec();
        assert_ne!(
            payload[0], 0x47,
            "{label}: payload is encrypted on the wire"
        );
        ctx.apply(parity, SeqNo::new(word0), &mut payload)
            .expect("key present");
        assert!(
            inputs.clone().any(|i| ts_datagram(i) == payload),
            "{label}: packet #{word0} does not decrypt to any input datagram"
        );
    }
}

#[test]
fn libsrt_caller_kmreq_unwraps_and_its_packets_decrypt() {
    for cap in &CALLER {
        let km = unhex(cap.kmreq);
        let ctx = CryptoContext::from_key_material(&pass(CALLER_PASSPHRASE), &km)
            .expect("libsrt KMREQ unwraps");
        assert_eq!(ctx.key_len(), cap.len);
        assert_eq!(
            ctx.active(),
            KeyParity::Even,
            "libsrt starts with the even key"
        );
        // A responder's KMRSP echoes the message; ours re-encodes it byte for byte.
        assert_eq!(ctx.key_material_message().to_vec(), km);
        check_data(&ctx, cap.data, 0..64, &format!("caller {:?}", cap.len));
    }
}

#[test]
fn libsrt_caller_kmreq_with_wrong_passphrase_is_bad_secret() {
    for cap in &CALLER {
        let km = unhex(cap.kmreq);
        for wrong in ["0123456789abcdeF", "another passphrase entirely"] {
            assert_eq!(
                CryptoContext::from_key_material(&pass(wrong), &km).err(),
                Some(CryptoError::BadSecret),
                "{:?}",
                cap.len
            );
        }
    }
}

#[test]
fn libsrt_listener_accepts_zerocast_key_material() {
    let p = pass(SEED_PASSPHRASE);
    for (cap, kmrsp) in &LISTENER {
        let ctx = CryptoContext::new_sender(&p, cap.len, &script_seed());
        let km = ctx.key_material_message();
        // zerocast and the script (Python `cryptography`) build the same message.
        assert_eq!(km.to_vec(), unhex(cap.kmreq), "{:?}", cap.len);
        // libsrt echoed it: it unwrapped the keys (a refusal is a 4-byte KM state).
        let kmrsp = unhex(kmrsp);
        assert_eq!(KmState::decode(&kmrsp), None);
        assert_eq!(kmrsp, km.to_vec(), "{:?}", cap.len);
        // The responder encrypts its own data with the caller's keys.
        check_data(&ctx, cap.data, 100..164, &format!("listener {:?}", cap.len));
    }
}

#[test]
fn libsrt_listener_rejects_the_handshake_on_bad_secret() {
    // With a different passphrase libsrt 1.5.1 (enforced encryption, the default) does not
    // send a KMRSP state: it answers the conclusion with handshake type 1000 +
    // SRT_REJ_BADSECRET (10) and no extensions.
    let resp = unhex(include_str!(
        "data/libsrt-listener-aes128-badsecret-response.hex"
    ));
    assert_eq!(resp.len(), 16 + 48, "header and CIF, no extensions");
    assert_eq!(&resp[0..4], &[0x80, 0, 0, 0], "handshake control packet");
    let hs_type = u32::from_be_bytes(resp[36..40].try_into().expect("type"));
    assert_eq!(hs_type, 1010);
}
