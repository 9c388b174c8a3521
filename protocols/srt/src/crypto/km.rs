//! The Key Material message (draft-sharabayko-srt §3.2.2): the body of a KMREQ/KMRSP handshake
//! extension (§3.2.1.2) and of an in-band KMREQ/KMRSP user-defined control packet.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |S|  V  |   PT  |              Sign             |   Resv1   | KK|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                              KEKI                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Cipher    |      Auth     |       SE      |     Resv2     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Resv3             |     SLen/4    |     KLen/4    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Salt (SLen bytes)                     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Wrapped key(s): 8 + n * KLen bytes, RFC 3394        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The checks follow libsrt's receiver (haicrypt `hcryptCtx_Rx_ParseKM` and
//! `hcryptMsg_SRT_ParseMsg`), which is what peers are tested against. Like libsrt, the KEKI and
//! reserved fields are not checked.

use bytes::{BufMut, Bytes, BytesMut};

use super::wrap::ICV_LEN;
use super::{CryptoError, KeyLen, SALT_LEN};

/// KM message version (the V field).
const VERSION: u8 = 1;
/// Packet type "Keying Material" (the PT field).
const PT_KM: u8 = 2;
/// `'H' 'A' 'I'` as a PnP vendor id.
const SIGN: u16 = 0x2029;
/// Cipher: AES-CTR.
const CIPHER_AES_CTR: u8 = 2;
/// Cipher: AES-GCM (libsrt 1.6; not supported here).
const CIPHER_AES_GCM: u8 = 4;
/// Auth: none.
const AUTH_NONE: u8 = 0;
/// Stream encapsulation: MPEG-TS/SRT, the only value libsrt accepts.
const SE_SRT: u8 = 2;
/// Bytes before the salt.
const HEADER_LEN: usize = 16;

/// Which stream encrypting keys a KM message carries (its KK field).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum KeySet {
    /// KK = 01b.
    Even,
    /// KK = 10b.
    Odd,
    /// KK = 11b: even key first, then odd.
    Both,
}

impl KeySet {
    fn kk(self) -> u8 {
        match self {
            KeySet::Even => 1,
            KeySet::Odd => 2,
            KeySet::Both => 3,
        }
    }

    /// How many keys the wrap holds.
    pub(super) fn count(self) -> usize {
        match self {
            KeySet::Both => 2,
            KeySet::Even | KeySet::Odd => 1,
        }
    }
}

/// A KM message's fields, borrowed from the message.
#[derive(Debug)]
pub(super) struct KeyMaterial<'a> {
    pub(super) keys: KeySet,
    pub(super) key_len: KeyLen,
    pub(super) salt: [u8; SALT_LEN],
    /// `ICV_LEN + keys.count() * key_len.bytes()` bytes.
    pub(super) wrapped: &'a [u8],
}

/// A bounds-checked reader over a KM message.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CryptoError> {
        if self.buf.len() < n {
            return Err(CryptoError::Malformed { what });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CryptoError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or(0))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CryptoError> {
        let bytes = self.take(N, what)?;
        Ok(std::array::from_fn(|i| bytes.get(i).copied().unwrap_or(0)))
    }

    fn rest(self) -> &'a [u8] {
        self.buf
    }
}

impl<'a> KeyMaterial<'a> {
    /// Parses and checks a KM message; the wrapped keys are not opened here.
    pub(super) fn decode(msg: &'a [u8]) -> Result<KeyMaterial<'a>, CryptoError> {
        let mut r = Reader { buf: msg };
        let short = "KM message shorter than its 16-byte header";
        let vpt = r.u8(short)?;
        // S is the top bit of the version nibble; libsrt reads the nibble whole, so a set S bit
        // reads as a version other than 1.
        if vpt >> 4 != VERSION {
            return Err(CryptoError::Unsupported {
                what: "KM message version other than 1",
            });
        }
        if vpt & 0x0F != PT_KM {
            return Err(CryptoError::Malformed {
                what: "KM message packet type is not 2 (keying material)",
            });
        }
        let sign = r.array::<2>(short)?;
        if u16::from_be_bytes(sign) != SIGN {
            return Err(CryptoError::Malformed {
                what: "KM message signature is not 0x2029 ('HAI')",
            });
        }
        let keys = match r.u8(short)? & 0x03 {
            1 => KeySet::Even,
            2 => KeySet::Odd,
            3 => KeySet::Both,
            _ => {
                return Err(CryptoError::Malformed {
                    what: "KM message KK field names no key",
                })
            }
        };
        let _keki = r.array::<4>(short)?;
        let cipher = r.u8(short)?;
        let auth = r.u8(short)?;
        let se = r.u8(short)?;
        let _resv2 = r.u8(short)?;
        let _resv3 = r.array::<2>(short)?;
        let slen = usize::from(r.u8(short)?) * 4;
        let klen = usize::from(r.u8(short)?) * 4;
        match cipher {
            CIPHER_AES_CTR => {}
            CIPHER_AES_GCM => {
                return Err(CryptoError::Unsupported {
                    what: "KM cipher AES-GCM (4); only AES-CTR (2) is supported",
                })
            }
            _ => {
                return Err(CryptoError::Unsupported {
                    what: "KM cipher other than AES-CTR (2)",
                })
            }
        }
        if auth != AUTH_NONE {
            return Err(CryptoError::Unsupported {
                what: "KM auth other than none (0) with AES-CTR",
            });
        }
        if se != SE_SRT {
            return Err(CryptoError::Unsupported {
                what: "KM stream encapsulation other than MPEG-TS/SRT (2)",
            });
        }
        // §3.2.2: "The only valid length of salt defined is 128 bits." libsrt accepts shorter
        // salts but never sends one.
        if slen != SALT_LEN {
            return Err(CryptoError::Unsupported {
                what: "KM salt length other than 16 bytes",
            });
        }
        let Some(key_len) = KeyLen::from_bytes(klen) else {
            return Err(CryptoError::Unsupported {
                what: "KM key length other than 16, 24 or 32 bytes",
            });
        };
        let salt = r.array::<SALT_LEN>("KM message shorter than its salt")?;
        let wrapped = r.rest();
        if wrapped.len() != ICV_LEN + keys.count() * key_len.bytes() {
            return Err(CryptoError::Malformed {
                what: "KM message length does not match its KK, SLen and KLen fields",
            });
        }
        Ok(KeyMaterial {
            keys,
            key_len,
            salt,
            wrapped,
        })
    }

    /// Serializes the message the way libsrt's `hcryptCtx_Tx_AsmKM` does (KEKI and reserved
    /// fields zero).
    pub(super) fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_LEN + SALT_LEN + self.wrapped.len());
        out.put_u8((VERSION << 4) | PT_KM);
        out.put_u16(SIGN);
        out.put_u8(self.keys.kk());
        out.put_u32(0); // KEKI: the default stream key
        out.put_u8(CIPHER_AES_CTR);
        out.put_u8(AUTH_NONE);
        out.put_u8(SE_SRT);
        out.put_u8(0); // Resv2
        out.put_u16(0); // Resv3

        // SALT_LEN / 4 = 4 and key lengths / 4 = 4, 6 or 8: all fit in a byte.
        out.put_u8((SALT_LEN / 4) as u8);
        out.put_u8((self.key_len.bytes() / 4) as u8);
        out.put_slice(&self.salt);
        out.put_slice(self.wrapped);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(keys: KeySet, key_len: KeyLen) -> Vec<u8> {
        let wrapped = vec![0xAB; ICV_LEN + keys.count() * key_len.bytes()];
        KeyMaterial {
            keys,
            key_len,
            salt: [0x5A; SALT_LEN],
            wrapped: &wrapped,
        }
        .encode()
        .to_vec()
    }

    #[test]
    fn header_layout_matches_libsrt() {
        let m = sample(KeySet::Both, KeyLen::Aes192);
        assert_eq!(
            &m[..16],
            &[0x12, 0x20, 0x29, 0x03, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 4, 6]
        );
        assert_eq!(m.len(), 16 + 16 + 8 + 2 * 24);
    }

    #[test]
    fn encode_decode_round_trip() {
        for keys in [KeySet::Even, KeySet::Odd, KeySet::Both] {
            for len in [KeyLen::Aes128, KeyLen::Aes192, KeyLen::Aes256] {
                let m = sample(keys, len);
                let km = KeyMaterial::decode(&m).expect("decode");
                assert_eq!((km.keys, km.key_len, km.salt), (keys, len, [0x5A; 16]));
                assert_eq!(km.encode().to_vec(), m);
            }
        }
    }

    #[test]
    fn every_truncation_is_malformed() {
        let m = sample(KeySet::Both, KeyLen::Aes256);
        for n in 0..m.len() {
            assert!(
                matches!(
                    KeyMaterial::decode(&m[..n]),
                    Err(CryptoError::Malformed { .. })
                ),
                "prefix of {n} bytes"
            );
        }
        let mut long = m.clone();
        long.push(0);
        assert!(matches!(
            KeyMaterial::decode(&long),
            Err(CryptoError::Malformed { .. })
        ));
    }

    #[test]
    fn field_violations_are_named() {
        let base = sample(KeySet::Even, KeyLen::Aes128);
        let cases: [(usize, u8, bool); 9] = [
            (0, 0x22, false), // version 2
            (0, 0x92, false), // S bit set
            (0, 0x11, true),  // PT 1
            (1, 0x21, true),  // signature
            (3, 0x00, true),  // KK = 0
            (8, 4, false),    // AES-GCM
            (9, 1, false),    // auth
            (10, 1, false),   // SE = MPEG-TS/UDP
            (15, 5, false),   // KLen 20
        ];
        for (at, value, malformed) in cases {
            let mut m = base.clone();
            m[at] = value;
            let err = KeyMaterial::decode(&m).expect_err("must be refused");
            assert_eq!(
                matches!(err, CryptoError::Malformed { .. }),
                malformed,
                "byte {at} = {value:#x}: {err}"
            );
        }
        let mut m = base.clone();
        m[14] = 3; // SLen 12
        assert!(matches!(
            KeyMaterial::decode(&m),
            Err(CryptoError::Unsupported { .. })
        ));
    }

    #[test]
    fn keki_and_reserved_bits_are_ignored_like_libsrt() {
        let mut m = sample(KeySet::Odd, KeyLen::Aes128);
        m[3] |= 0xFC;
        m[4..8].copy_from_slice(&[0, 0, 0, 1]);
        m[11] = 0xFF;
        let km = KeyMaterial::decode(&m).expect("decode");
        assert_eq!(km.keys, KeySet::Odd);
    }

    #[test]
    fn garbage_never_panics() {
        // A small deterministic generator; every outcome is an error or a valid message.
        let mut x = 0x1234_5678_u32;
        for len in 0..200 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            let _ = KeyMaterial::decode(&buf);
            let mut valid_header = sample(KeySet::Both, KeyLen::Aes128);
            valid_header.truncate(16.min(len));
            valid_header.extend_from_slice(&buf);
            let _ = KeyMaterial::decode(&valid_header);
        }
    }
}
