//! SRT payload encryption and key material, the way libsrt's haicrypt does it
//! (draft-sharabayko-srt §6 "Encryption", §3.2.2 "Key Material").
//!
//! # Keys
//!
//! The sender draws a 16-byte salt and a stream encrypting key (SEK) of 16, 24 or 32 bytes at
//! random. Both sides derive the key encrypting key (KEK) from the shared passphrase (§6.1.4,
//! §6.2.1):
//!
//! ```text
//! KEK = PBKDF2-HMAC-SHA1(passphrase, salt[8..16], 2048 iterations, KLen bytes)
//! ```
//!
//! The SEK travels wrapped under the KEK (RFC 3394, default IV `A6A6A6A6A6A6A6A6`) in a Key
//! Material message ([`CryptoContext::key_material_message`]): in the caller's conclusion
//! handshake as a KMREQ extension, and in-band during a key refresh. The responder unwraps it
//! ([`CryptoContext::from_key_material`]); a wrong passphrase fails the RFC 3394 integrity
//! check, [`CryptoError::BadSecret`], and the responder answers with a 4-byte
//! [`KmState::BadSecret`] KMRSP instead of echoing the message.
//!
//! # Payload
//!
//! Only the payload of data packets is encrypted, with AES-CTR (§6.1.1, §6.1.2). The counter
//! block for a packet is built as libsrt's `hcrypt_SetCtrIV` does:
//!
//! ```text
//! byte  0 ..................... 9 | 10 ........ 13 | 14   15
//!       0                         | seq no (BE)    | block counter, from 0
//! then bytes 0..14 XOR salt[0..14]
//! ```
//!
//! The packet index is the first header word of the data packet, whose top bit is 0, so it is
//! exactly the 31-bit sequence number. (§6.2.2's `IV = (MSB(112, Salt) << 2) XOR PktSeqNo` is a
//! garbled rendering of the same thing; §6.1.2 and libsrt agree with the layout above, and the
//! libsrt interop test in `tests/crypto_libsrt.rs` checks it against real packets.)
//!
//! # Key refresh (§6.1.6)
//!
//! Data packets name their key in the KK bits of the message number word: even or odd
//! ([`KeyParity`]). A sender swaps keys without interrupting the stream:
//!
//! 1. [`CryptoContext::announce_next_key`] installs a fresh key for the idle parity; the KM
//!    message now carries both keys (KK = 3) and is sent in-band until acknowledged.
//! 2. [`CryptoContext::switch_key`] moves data encryption to the new key.
//! 3. [`CryptoContext::retire_old_key`] forgets the old key; the KM message carries one key
//!    again.
//!
//! A receiver feeds each in-band KMREQ to [`CryptoContext::update_from_key_material`] and
//! decrypts every packet with the key its KK bits name.
//!
//! # Sans-IO
//!
//! Nothing here draws random bytes: the caller passes them in ([`KeyMaterialSeed`],
//! `announce_next_key`'s `fresh`). Keys, salts and passphrases never appear in `Debug` output.

mod km;
mod wrap;

use std::fmt;

use bytes::Bytes;

use crate::SeqNo;
use km::{KeyMaterial, KeySet};
use wrap::Aes;

/// Salt length in bytes (§3.2.2: "the only valid length of salt defined is 128 bits").
const SALT_LEN: usize = 16;

/// Bytes of the salt XORed into the counter block (`MSB(112, Salt)`, §6.1.2).
const IV_SALT_LEN: usize = 14;

/// Shortest passphrase libsrt accepts (`SRTO_PASSPHRASE`, `socketconfig.cpp`).
pub const PASSPHRASE_MIN_LEN: usize = 10;

/// Longest passphrase libsrt accepts: `HAICRYPT_SECRET_MAX_SZ`, 80 bytes. (Older SRT
/// documents say 79 characters; libsrt 1.5 takes 80.)
pub const PASSPHRASE_MAX_LEN: usize = 80;

/// Why key material or a payload could not be processed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The wrapped keys failed the RFC 3394 integrity check: the peer's passphrase differs
    /// (answer with [`KmState::BadSecret`]).
    #[error("key material does not unwrap with this passphrase (RFC 3394 integrity check failed)")]
    BadSecret,
    /// A data packet named a key (even or odd) that this context does not hold.
    #[error("no stream encrypting key for the key parity the packet names")]
    NoKey,
    /// The key material message breaks the §3.2.2 format.
    #[error("malformed key material: {what}")]
    Malformed {
        /// The rule that was broken.
        what: &'static str,
    },
    /// The key material is well formed but asks for something this implementation (like
    /// libsrt 1.5) does not do: another version, cipher, encapsulation, salt or key length.
    #[error("unsupported key material: {what}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
    /// A passphrase outside 10..=80 bytes, which libsrt refuses.
    #[error("passphrase of {len} bytes; SRT needs 10 to 80")]
    BadPassphrase {
        /// The length given, in bytes.
        len: usize,
    },
}

/// AES key length: the SEK and the KEK have the same length (§6.1.4, `SRTO_PBKEYLEN`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyLen {
    /// 16-byte keys.
    Aes128,
    /// 24-byte keys.
    Aes192,
    /// 32-byte keys.
    Aes256,
}

impl KeyLen {
    /// The key length in bytes: 16, 24 or 32.
    pub fn bytes(self) -> usize {
        match self {
            KeyLen::Aes128 => 16,
            KeyLen::Aes192 => 24,
            KeyLen::Aes256 => 32,
        }
    }

    /// The key length for 16, 24 or 32 bytes.
    pub fn from_bytes(n: usize) -> Option<KeyLen> {
        match n {
            16 => Some(KeyLen::Aes128),
            24 => Some(KeyLen::Aes192),
            32 => Some(KeyLen::Aes256),
            _ => None,
        }
    }

    /// The handshake's encryption field value (2, 3, 4; 0 = none), §3.2.1 "Encryption Field".
    pub fn hs_field(self) -> u16 {
        match self {
            KeyLen::Aes128 => 2,
            KeyLen::Aes192 => 3,
            KeyLen::Aes256 => 4,
        }
    }

    /// The key length a handshake encryption field names; `None` for 0 (no key length
    /// advertised) and for undefined values.
    pub fn from_hs_field(v: u16) -> Option<KeyLen> {
        match v {
            2 => Some(KeyLen::Aes128),
            3 => Some(KeyLen::Aes192),
            4 => Some(KeyLen::Aes256),
            _ => None,
        }
    }
}

/// The shared secret the KEK is derived from: 10 to 80 bytes, as libsrt's `SRTO_PASSPHRASE`
/// requires. Its `Debug` output does not show it.
#[derive(Clone)]
pub struct Passphrase(Box<[u8]>);

impl Passphrase {
    /// A passphrase from text; its UTF-8 bytes are the secret (what ffmpeg and
    /// `srt-live-transmit` pass to libsrt). Fails with [`CryptoError::BadPassphrase`] outside
    /// 10..=80 bytes.
    pub fn new(s: &str) -> Result<Passphrase, CryptoError> {
        Passphrase::from_bytes(s.as_bytes())
    }

    /// A passphrase from raw bytes, with the same length rule as [`Passphrase::new`].
    pub fn from_bytes(b: &[u8]) -> Result<Passphrase, CryptoError> {
        if !(PASSPHRASE_MIN_LEN..=PASSPHRASE_MAX_LEN).contains(&b.len()) {
            return Err(CryptoError::BadPassphrase { len: b.len() });
        }
        Ok(Passphrase(b.into()))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Equal secrets, compared without stopping at the first difference.
    fn same_as(&self, other: &Passphrase) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(other.0.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Which stream encrypting key a data packet uses, from its KK bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyParity {
    /// The even key (KK = 01b).
    Even,
    /// The odd key (KK = 10b).
    Odd,
}

impl KeyParity {
    /// The parity a data packet's KK bits name: 1 even, 2 odd; `None` for 0 (not encrypted)
    /// and 3 (not valid in a data packet, §3.1).
    pub fn from_kk(kk: u8) -> Option<KeyParity> {
        match kk {
            1 => Some(KeyParity::Even),
            2 => Some(KeyParity::Odd),
            _ => None,
        }
    }

    /// The KK bits for a data packet encrypted with this key.
    pub fn kk(self) -> u8 {
        match self {
            KeyParity::Even => 1,
            KeyParity::Odd => 2,
        }
    }

    /// The other parity.
    pub fn other(self) -> KeyParity {
        match self {
            KeyParity::Even => KeyParity::Odd,
            KeyParity::Odd => KeyParity::Even,
        }
    }

    fn index(self) -> usize {
        match self {
            KeyParity::Even => 0,
            KeyParity::Odd => 1,
        }
    }
}

/// Random bytes the caller supplies for new key material: a 16-byte salt and one key per parity.
///
/// Only the first `KeyLen::bytes()` bytes of a key are used. [`CryptoContext::new_sender`]
/// installs `even` alone, as libsrt starts with the even key; `odd` is not used by it (a later
/// refresh takes its fresh key from [`CryptoContext::announce_next_key`]).
#[derive(Clone)]
pub struct KeyMaterialSeed {
    /// The salt: PBKDF2 salt (last 8 bytes) and counter-block nonce (first 14 bytes).
    pub salt: [u8; 16],
    /// The even stream encrypting key.
    pub even: [u8; 32],
    /// The odd stream encrypting key.
    pub odd: [u8; 32],
}

impl fmt::Debug for KeyMaterialSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterialSeed(<redacted>)")
    }
}

/// One stream encrypting key, with the salt and length of the KM message that brought it.
#[derive(Clone)]
struct Sek {
    raw: [u8; 32],
    len: KeyLen,
    salt: [u8; SALT_LEN],
    cipher: Aes,
}

impl Sek {
    fn new(len: KeyLen, salt: [u8; SALT_LEN], key: &[u8]) -> Sek {
        let raw: [u8; 32] = std::array::from_fn(|i| key.get(i).copied().unwrap_or(0));
        Sek {
            cipher: Aes::new(len, &raw),
            raw,
            len,
            salt,
        }
    }

    fn key(&self) -> &[u8] {
        self.raw.get(..self.len.bytes()).unwrap_or(&self.raw)
    }
}

/// The KEK and what it was derived from, so a refresh with the same salt skips PBKDF2.
#[derive(Clone)]
struct Kek {
    passphrase: Passphrase,
    salt: [u8; SALT_LEN],
    len: KeyLen,
    cipher: Aes,
}

impl Kek {
    fn derive(passphrase: &Passphrase, salt: [u8; SALT_LEN], len: KeyLen) -> Kek {
        Kek {
            cipher: wrap::derive_kek(passphrase, &salt, len),
            passphrase: passphrase.clone(),
            salt,
            len,
        }
    }

    /// This KEK if it was derived from the same inputs, else a new one.
    fn reuse_or_derive(&self, passphrase: &Passphrase, salt: [u8; SALT_LEN], len: KeyLen) -> Kek {
        if self.salt == salt && self.len == len && self.passphrase.same_as(passphrase) {
            self.clone()
        } else {
            Kek::derive(passphrase, salt, len)
        }
    }
}

/// Both keys of a session and the salt; what KMREQ/KMRSP carry, unwrapped.
///
/// One context serves one direction. An HSv5 responder that also sends uses the caller's keys
/// for its own data too (libsrt clones them): `clone()` the receiving context for that and
/// refresh the clone independently.
#[derive(Clone)]
pub struct CryptoContext {
    /// The key length of the latest key material.
    key_len: KeyLen,
    /// The salt of the latest key material; new keys are announced under it.
    salt: [u8; SALT_LEN],
    kek: Kek,
    /// Indexed by [`KeyParity::index`].
    keys: [Option<Sek>; 2],
    /// The key data is encrypted with; always present in `keys`.
    active: KeyParity,
}

impl fmt::Debug for CryptoContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoContext")
            .field("key_len", &self.key_len)
            .field("active", &self.active)
            .field("even", &self.keys[0].is_some())
            .field("odd", &self.keys[1].is_some())
            .finish_non_exhaustive()
    }
}

/// Splits unwrapped key data into the keys a KM message announced.
fn install(
    keys: &mut [Option<Sek>; 2],
    set: KeySet,
    len: KeyLen,
    salt: [u8; SALT_LEN],
    plain: &[u8],
) {
    let (first, second) = plain.split_at(len.bytes().min(plain.len()));
    match set {
        KeySet::Even => keys[0] = Some(Sek::new(len, salt, first)),
        KeySet::Odd => keys[1] = Some(Sek::new(len, salt, first)),
        // §3.2.2: with both keys present the even key comes first.
        KeySet::Both => {
            keys[0] = Some(Sek::new(len, salt, first));
            keys[1] = Some(Sek::new(len, salt, second));
        }
    }
}

impl CryptoContext {
    /// The sender side: fresh keys from `seed` (only the even key is active at first).
    pub fn new_sender(
        passphrase: &Passphrase,
        key_len: KeyLen,
        seed: &KeyMaterialSeed,
    ) -> CryptoContext {
        CryptoContext {
            key_len,
            salt: seed.salt,
            kek: Kek::derive(passphrase, seed.salt, key_len),
            keys: [Some(Sek::new(key_len, seed.salt, &seed.even)), None],
            active: KeyParity::Even,
        }
    }

    /// The KM message (the body of a KMREQ extension or an in-band KMREQ) announcing the
    /// current keys, wrapped with the passphrase-derived KEK.
    ///
    /// Both keys (KK = 3, even first) while a refresh is under way, else the active one. A key
    /// that came from older key material with another salt or length cannot share a message
    /// with the current ones and is left out.
    pub fn key_material_message(&self) -> Bytes {
        let current = |p: KeyParity| {
            self.keys[p.index()]
                .as_ref()
                .filter(|k| k.salt == self.salt && k.len == self.key_len)
        };
        let (set, plain) = match (current(KeyParity::Even), current(KeyParity::Odd)) {
            (Some(e), Some(o)) => (KeySet::Both, [e.key(), o.key()].concat()),
            (Some(e), None) => (KeySet::Even, e.key().to_vec()),
            (None, Some(o)) => (KeySet::Odd, o.key().to_vec()),
            // Unreachable: the latest key material always installs a key under `self.salt`.
            // Fall back to announcing the active key.
            (None, None) => match self.keys[self.active.index()].as_ref() {
                Some(k) if self.active == KeyParity::Odd => (KeySet::Odd, k.key().to_vec()),
                Some(k) => (KeySet::Even, k.key().to_vec()),
                None => (KeySet::Even, vec![0; self.key_len.bytes()]),
            },
        };
        // `plain` is 1 or 2 keys of 16, 24 or 32 bytes: always a valid RFC 3394 input.
        let wrapped = wrap::wrap(&self.kek.cipher, &plain).unwrap_or_default();
        KeyMaterial {
            keys: set,
            key_len: self.key_len,
            salt: self.salt,
            wrapped: &wrapped,
        }
        .encode()
    }

    /// The receiver side: unwraps a KM message with `passphrase`. Wrong passphrase =>
    /// [`CryptoError::BadSecret`] (RFC 3394 integrity check fails); malformed =>
    /// [`CryptoError::Malformed`]; unsupported cipher/version => [`CryptoError::Unsupported`].
    ///
    /// The active key is the one the message carries (even if it carries both).
    pub fn from_key_material(
        passphrase: &Passphrase,
        km: &[u8],
    ) -> Result<CryptoContext, CryptoError> {
        let msg = KeyMaterial::decode(km)?;
        let kek = Kek::derive(passphrase, msg.salt, msg.key_len);
        let plain = wrap::unwrap(&kek.cipher, msg.wrapped)?;
        let mut keys = [None, None];
        install(&mut keys, msg.keys, msg.key_len, msg.salt, &plain);
        Ok(CryptoContext {
            key_len: msg.key_len,
            salt: msg.salt,
            kek,
            keys,
            active: if msg.keys == KeySet::Odd {
                KeyParity::Odd
            } else {
                KeyParity::Even
            },
        })
    }

    /// Applies an in-band KM refresh on the receiver (updates whichever keys it carries); same
    /// errors as [`CryptoContext::from_key_material`]. On error nothing changes.
    ///
    /// Keys the message does not carry are kept, with the salt they came with, as libsrt's
    /// receiver does (`hcryptCtx_Rx_ParseKM`). [`CryptoContext::active`] is left alone.
    pub fn update_from_key_material(
        &mut self,
        passphrase: &Passphrase,
        km: &[u8],
    ) -> Result<(), CryptoError> {
        let msg = KeyMaterial::decode(km)?;
        let kek = self.kek.reuse_or_derive(passphrase, msg.salt, msg.key_len);
        let plain = wrap::unwrap(&kek.cipher, msg.wrapped)?;
        install(&mut self.keys, msg.keys, msg.key_len, msg.salt, &plain);
        self.kek = kek;
        self.salt = msg.salt;
        self.key_len = msg.key_len;
        if self.keys[self.active.index()].is_none() {
            // Keep the invariant that the active key exists: a context built from an even key
            // that then receives only an odd one.
            self.active = self.active.other();
        }
        Ok(())
    }

    /// The key length of the current key material.
    pub fn key_len(&self) -> KeyLen {
        self.key_len
    }

    /// Whether the key for `parity` is installed.
    pub fn has_key(&self, parity: KeyParity) -> bool {
        self.keys[parity.index()].is_some()
    }

    /// Encrypts or decrypts (CTR is symmetric) `payload` in place for the packet with sequence
    /// number `seq` and key `parity`. Returns `Err(CryptoError::NoKey)` if that key is not known.
    pub fn apply(
        &self,
        parity: KeyParity,
        seq: SeqNo,
        payload: &mut [u8],
    ) -> Result<(), CryptoError> {
        let Some(key) = self.keys[parity.index()].as_ref() else {
            return Err(CryptoError::NoKey);
        };
        key.cipher.ctr(&counter_block(&key.salt, seq), payload);
        Ok(())
    }

    /// Sender key refresh: which key is active for data now.
    pub fn active(&self) -> KeyParity {
        self.active
    }

    /// Sender key refresh step 1 (pre-announce): installs a new key for the inactive parity
    /// from `fresh` (32 random bytes; the first `key_len().bytes()` are used), keeps the active
    /// one; the next `key_material_message()` carries both (KK=3).
    ///
    /// The salt stays, as in libsrt's `hcryptCtx_Tx_Refresh`; the KEK is derived again only if
    /// `passphrase` differs from the one it came from.
    pub fn announce_next_key(&mut self, passphrase: &Passphrase, fresh: &[u8; 32]) {
        self.kek = self
            .kek
            .reuse_or_derive(passphrase, self.salt, self.key_len);
        self.keys[self.active.other().index()] = Some(Sek::new(self.key_len, self.salt, fresh));
    }

    /// Sender key refresh step 2: switch data to the other parity. Does nothing if no key has
    /// been announced for it.
    pub fn switch_key(&mut self) {
        if self.keys[self.active.other().index()].is_some() {
            self.active = self.active.other();
        }
    }

    /// Step 3: forget the old key (the KM message then carries only the active one).
    pub fn retire_old_key(&mut self) {
        self.keys[self.active.other().index()] = None;
    }
}

/// The AES-CTR counter block for packet `seq` (§6.1.2; libsrt `hcrypt_SetCtrIV`).
fn counter_block(salt: &[u8; SALT_LEN], seq: SeqNo) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[10..14].copy_from_slice(&seq.get().to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt.iter()).take(IV_SALT_LEN) {
        *b ^= s;
    }
    iv
}

/// The KM state a KMRSP carries when key material was refused (libsrt SRT_KM_S_*: 0
/// unsecured, 1 securing, 2 secured, 3 NOSECRET, 4 BADSECRET), encoded as the 4-byte KMRSP
/// body libsrt sends on failure.
///
/// On success a KMRSP echoes the KM message instead; libsrt tells the two apart by length
/// (one 32-bit word means a state).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KmState {
    /// `SRT_KM_S_UNSECURED` (0): no encryption; sent by a peer without a passphrase.
    Unsecured,
    /// `SRT_KM_S_SECURING` (1): key material exchange under way.
    Securing,
    /// `SRT_KM_S_SECURED` (2): keys exchanged.
    Secured,
    /// `SRT_KM_S_NOSECRET` (3): the peer encrypts but this side has no passphrase.
    NoSecret,
    /// `SRT_KM_S_BADSECRET` (4): the passphrases differ.
    BadSecret,
}

impl KmState {
    /// The KMRSP body: the state as one big-endian 32-bit word.
    pub fn encode(self) -> [u8; 4] {
        let v: u32 = match self {
            KmState::Unsecured => 0,
            KmState::Securing => 1,
            KmState::Secured => 2,
            KmState::NoSecret => 3,
            KmState::BadSecret => 4,
        };
        v.to_be_bytes()
    }

    /// The state in a 4-byte KMRSP body; `None` for any other length (an echoed KM message)
    /// or value (libsrt 1.5.2+ adds 5, `SRT_KM_S_BADCRYPTOMODE`, which this crate never sends).
    pub fn decode(body: &[u8]) -> Option<KmState> {
        let word: [u8; 4] = body.try_into().ok()?;
        match u32::from_be_bytes(word) {
            0 => Some(KmState::Unsecured),
            1 => Some(KmState::Securing),
            2 => Some(KmState::Secured),
            3 => Some(KmState::NoSecret),
            4 => Some(KmState::BadSecret),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_LENS: [KeyLen; 3] = [KeyLen::Aes128, KeyLen::Aes192, KeyLen::Aes256];

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s).expect("test passphrase")
    }

    fn seed(n: u8) -> KeyMaterialSeed {
        KeyMaterialSeed {
            salt: std::array::from_fn(|i| n.wrapping_mul(31).wrapping_add(i as u8)),
            even: std::array::from_fn(|i| n.wrapping_add(0x40).wrapping_add(i as u8)),
            odd: std::array::from_fn(|i| n.wrapping_add(0x80).wrapping_add(i as u8)),
        }
    }

    fn ts_payload() -> Vec<u8> {
        (0..1316)
            .map(|i| if i % 188 == 0 { 0x47 } else { i as u8 })
            .collect()
    }

    #[test]
    fn key_len_fields() {
        for (len, bytes, hs) in [
            (KeyLen::Aes128, 16, 2),
            (KeyLen::Aes192, 24, 3),
            (KeyLen::Aes256, 32, 4),
        ] {
            assert_eq!(len.bytes(), bytes);
            assert_eq!(KeyLen::from_bytes(bytes), Some(len));
            assert_eq!(len.hs_field(), hs);
            assert_eq!(KeyLen::from_hs_field(hs), Some(len));
        }
        for v in [0, 1, 5, 16, 0xFFFF] {
            assert_eq!(KeyLen::from_hs_field(v), None);
        }
        assert_eq!(KeyLen::from_bytes(0), None);
        assert_eq!(KeyLen::from_bytes(20), None);
    }

    #[test]
    fn passphrase_length_rule_and_redaction() {
        assert_eq!(
            Passphrase::new("123456789").err(),
            Some(CryptoError::BadPassphrase { len: 9 })
        );
        assert!(Passphrase::new("0123456789").is_ok());
        assert!(Passphrase::new(&"x".repeat(80)).is_ok());
        assert_eq!(
            Passphrase::new(&"x".repeat(81)).err(),
            Some(CryptoError::BadPassphrase { len: 81 })
        );
        assert_eq!(
            Passphrase::new("").err(),
            Some(CryptoError::BadPassphrase { len: 0 })
        );
        let p = pass("supersecret-passphrase");
        assert!(!format!("{p:?}").contains("supersecret"));
        let ctx = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(1));
        let dbg = format!("{ctx:?} {:?}", seed(1));
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(!dbg.contains("65"), "{dbg}");
    }

    #[test]
    fn round_trip_every_key_length() {
        let p = pass("0123456789abcdef");
        for len in ALL_LENS {
            let tx = CryptoContext::new_sender(&p, len, &seed(7));
            let km = tx.key_material_message();
            assert_eq!(km.len(), 16 + 16 + 8 + len.bytes());
            assert_eq!(km[3], 1, "KK = even");
            assert_eq!(usize::from(km[15]) * 4, len.bytes());
            let rx = CryptoContext::from_key_material(&p, &km).expect("unwrap");
            assert_eq!(rx.key_len(), len);
            assert_eq!(rx.active(), KeyParity::Even);
            assert!(rx.has_key(KeyParity::Even) && !rx.has_key(KeyParity::Odd));
            // The receiver re-announces the same material byte for byte (a KMRSP echo).
            assert_eq!(rx.key_material_message(), km);

            let plain = ts_payload();
            let mut data = plain.clone();
            tx.apply(KeyParity::Even, SeqNo::new(0x1234_5678), &mut data)
                .expect("encrypt");
            assert_ne!(data, plain);
            rx.apply(KeyParity::Even, SeqNo::new(0x1234_5678), &mut data)
                .expect("decrypt");
            assert_eq!(data, plain);
            assert_eq!(
                rx.apply(KeyParity::Odd, SeqNo::new(1), &mut data),
                Err(CryptoError::NoKey)
            );
        }
    }

    #[test]
    fn wrong_passphrase_is_bad_secret() {
        for len in ALL_LENS {
            let tx = CryptoContext::new_sender(&pass("0123456789abcdef"), len, &seed(3));
            let km = tx.key_material_message();
            let err = CryptoContext::from_key_material(&pass("0123456789abcdeF"), &km)
                .expect_err("wrong passphrase");
            assert_eq!(err, CryptoError::BadSecret);
        }
    }

    #[test]
    fn counter_block_layout() {
        let salt: [u8; 16] = std::array::from_fn(|i| 0xF0 | i as u8);
        let iv = counter_block(&salt, SeqNo::new(0x0102_0304));
        let mut want: [u8; 16] = std::array::from_fn(|i| if i < 14 { salt[i] } else { 0 });
        want[10] ^= 1;
        want[11] ^= 2;
        want[12] ^= 3;
        want[13] ^= 4;
        assert_eq!(iv, want);
    }

    #[test]
    fn ciphertext_depends_on_seq_and_key() {
        let p = pass("0123456789abcdef");
        let tx = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(9));
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        tx.apply(KeyParity::Even, SeqNo::new(1), &mut a).expect("a");
        tx.apply(KeyParity::Even, SeqNo::new(2), &mut b).expect("b");
        assert_ne!(a, b);
        // Blocks within a packet use consecutive counters, so no 16-byte block repeats.
        assert_ne!(a[..16], a[16..32]);
    }

    #[test]
    fn refresh_sequence() {
        let p = pass("refresh-passphrase");
        let mut tx = CryptoContext::new_sender(&p, KeyLen::Aes256, &seed(5));
        let mut rx =
            CryptoContext::from_key_material(&p, &tx.key_material_message()).expect("initial KM");
        let plain = ts_payload();
        let seal = |ctx: &CryptoContext, seq: u32| {
            let mut d = plain.clone();
            ctx.apply(ctx.active(), SeqNo::new(seq), &mut d)
                .expect("encrypt");
            (ctx.active(), d)
        };
        let open = |ctx: &CryptoContext, parity: KeyParity, seq: u32, mut d: Vec<u8>| {
            ctx.apply(parity, SeqNo::new(seq), &mut d).map(|()| d)
        };

        let (k1, before) = seal(&tx, 100);
        assert_eq!(k1, KeyParity::Even);

        // 1. Pre-announce: both keys, even first.
        tx.announce_next_key(&p, &[0xEE; 32]);
        assert_eq!(tx.active(), KeyParity::Even);
        let both = tx.key_material_message();
        assert_eq!(both[3], 3, "KK = both");
        assert_eq!(both.len(), 16 + 16 + 8 + 2 * 32);
        rx.update_from_key_material(&p, &both).expect("KK=3 update");
        assert!(rx.has_key(KeyParity::Odd));

        // 2. Switch: data now uses the odd key; the old key still opens late packets.
        tx.switch_key();
        assert_eq!(tx.active(), KeyParity::Odd);
        assert_eq!(tx.key_material_message()[3], 3, "still both until retired");
        let (k2, after) = seal(&tx, 101);
        assert_eq!(k2, KeyParity::Odd);
        assert_ne!(after, before);
        assert_eq!(open(&rx, k2, 101, after).expect("odd"), plain);
        assert_eq!(
            open(&rx, k1, 100, before.clone()).expect("late even"),
            plain
        );

        // 3. Retire: only the odd key is announced.
        tx.retire_old_key();
        let odd_only = tx.key_material_message();
        assert_eq!(odd_only[3], 2, "KK = odd");
        assert_eq!(odd_only.len(), 16 + 16 + 8 + 32);
        assert_eq!(open(&tx, k1, 100, before), Err(CryptoError::NoKey));
        rx.update_from_key_material(&p, &odd_only)
            .expect("KK=2 update");

        // Next round goes back to even with a new key.
        tx.announce_next_key(&p, &[0x11; 32]);
        tx.switch_key();
        assert_eq!(tx.active(), KeyParity::Even);
        rx.update_from_key_material(&p, &tx.key_material_message())
            .expect("second refresh");
        let (k3, third) = seal(&tx, 102);
        assert_eq!(open(&rx, k3, 102, third).expect("new even"), plain);
    }

    #[test]
    fn switch_without_announce_is_a_no_op() {
        let p = pass("0123456789");
        let mut tx = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(2));
        tx.switch_key();
        assert_eq!(tx.active(), KeyParity::Even);
        tx.retire_old_key();
        assert!(tx.has_key(KeyParity::Even));
    }

    #[test]
    fn odd_only_material_sets_odd_active() {
        let p = pass("0123456789");
        let mut tx = CryptoContext::new_sender(&p, KeyLen::Aes192, &seed(4));
        tx.announce_next_key(&p, &[9; 32]);
        tx.switch_key();
        tx.retire_old_key();
        let rx = CryptoContext::from_key_material(&p, &tx.key_material_message()).expect("odd");
        assert_eq!(rx.active(), KeyParity::Odd);
        assert!(!rx.has_key(KeyParity::Even));
    }

    #[test]
    fn failed_update_changes_nothing() {
        let p = pass("0123456789");
        let tx = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(6));
        let km = tx.key_material_message();
        let mut rx = CryptoContext::from_key_material(&p, &km).expect("rx");
        let mut other = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(8));
        other.announce_next_key(&p, &[3; 32]);
        let foreign = other.key_material_message();
        assert_eq!(
            rx.update_from_key_material(&pass("9876543210"), &foreign),
            Err(CryptoError::BadSecret)
        );
        assert!(!rx.has_key(KeyParity::Odd));
        assert_eq!(rx.key_material_message(), km);
    }

    #[test]
    fn a_new_salt_keeps_the_other_key_with_its_own_salt() {
        // libsrt never changes the salt within a session, but its receiver keeps a salt per
        // key; so does this one.
        let p = pass("0123456789");
        let tx = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(10));
        let mut rx = CryptoContext::from_key_material(&p, &tx.key_material_message()).expect("rx");
        let mut tx2 = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(11));
        tx2.announce_next_key(&p, &[0x77; 32]);
        tx2.switch_key();
        tx2.retire_old_key();
        rx.update_from_key_material(&p, &tx2.key_material_message())
            .expect("odd, new salt");
        let plain = ts_payload();
        for (ctx, parity) in [(&tx, KeyParity::Even), (&tx2, KeyParity::Odd)] {
            let mut d = plain.clone();
            ctx.apply(parity, SeqNo::new(42), &mut d).expect("enc");
            rx.apply(parity, SeqNo::new(42), &mut d).expect("dec");
            assert_eq!(d, plain, "{parity:?}");
        }
        // The KM message only carries the key under the latest salt.
        assert_eq!(rx.key_material_message()[3], 2);
    }

    #[test]
    fn truncated_and_garbage_km_are_malformed_never_panic() {
        let p = pass("0123456789");
        let km = CryptoContext::new_sender(&p, KeyLen::Aes128, &seed(12)).key_material_message();
        for n in 0..km.len() {
            let err = CryptoContext::from_key_material(&p, &km[..n]).expect_err("truncated");
            assert!(matches!(err, CryptoError::Malformed { .. }), "{n}: {err}");
        }
        let mut x = 0x9E37_79B9_u32;
        let mut rx = CryptoContext::from_key_material(&p, &km).expect("rx");
        for len in [0, 1, 15, 16, 31, 40, 48, 56, 64, 72, 80, 96, 200] {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            assert!(CryptoContext::from_key_material(&p, &buf).is_err());
            assert!(rx.update_from_key_material(&p, &buf).is_err());
            // Garbage after a valid header: length, cipher or integrity check refuses it.
            let mut framed = km[..32].to_vec();
            framed.extend_from_slice(&buf);
            assert!(CryptoContext::from_key_material(&p, &framed).is_err());
        }
    }

    #[test]
    fn km_state_bodies() {
        for (state, v) in [
            (KmState::Unsecured, 0u8),
            (KmState::Securing, 1),
            (KmState::Secured, 2),
            (KmState::NoSecret, 3),
            (KmState::BadSecret, 4),
        ] {
            assert_eq!(state.encode(), [0, 0, 0, v]);
            assert_eq!(KmState::decode(&[0, 0, 0, v]), Some(state));
        }
        assert_eq!(KmState::decode(&[0, 0, 0, 5]), None);
        assert_eq!(KmState::decode(&[0, 0, 4]), None);
        assert_eq!(KmState::decode(&[0, 0, 0, 4, 0]), None);
        assert_eq!(KmState::decode(&[1, 0, 0, 4]), None);
    }

    #[test]
    fn key_parity_bits() {
        assert_eq!(KeyParity::from_kk(1), Some(KeyParity::Even));
        assert_eq!(KeyParity::from_kk(2), Some(KeyParity::Odd));
        assert_eq!(KeyParity::from_kk(0), None);
        assert_eq!(KeyParity::from_kk(3), None);
        assert_eq!(KeyParity::Even.kk(), 1);
        assert_eq!(KeyParity::Odd.kk(), 2);
        assert_eq!(KeyParity::Odd.other(), KeyParity::Even);
    }
}
