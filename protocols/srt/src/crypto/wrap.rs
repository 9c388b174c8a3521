//! The block cipher, AES key wrap (RFC 3394) and the passphrase KDF that SRT key material is
//! built from (draft-sharabayko-srt §6.1.4, §6.2.1, §6.3.1).
//!
//! libsrt wraps the stream keys with RFC 3394 §2.2.1 under its default initial value
//! `A6A6A6A6A6A6A6A6` (haicrypt `cryspr.c`, `crysprFallback_AES_WrapKey`); a wrong KEK shows up
//! as a mismatch of that value after unwrapping (§2.2.3), which is how a wrong passphrase is
//! detected.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, InnerIvInit, KeyInit, StreamCipherCore};

use super::{CryptoError, KeyLen, Passphrase};

/// RFC 3394 §2.2.3.1: the default initial value, which doubles as the integrity check.
const DEFAULT_IV: [u8; 8] = [0xA6; 8];

/// Bytes the wrap adds in front of the keys (the integrity check value).
pub(super) const ICV_LEN: usize = 8;

/// PBKDF2 iteration count (§6.1.4; haicrypt `HAICRYPT_PBKDF2_ITER_CNT`).
pub(super) const PBKDF2_ITERATIONS: u32 = 2048;

/// PBKDF2 takes the last 8 bytes of the 16-byte salt: `LSB(64, Salt)` (§6.2.1; haicrypt
/// `HAICRYPT_PBKDF2_SALT_LEN` and `hcryptCtx_GenSecret`).
pub(super) const PBKDF2_SALT_LEN: usize = 8;

/// An AES block cipher with its key schedule expanded, for any of the three key lengths.
#[derive(Clone)]
pub(super) enum Aes {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

/// The first `N` bytes of `key` (`N` is at most 32, so every index exists; `get` keeps the
/// function total anyway).
fn prefix<const N: usize>(key: &[u8; 32]) -> [u8; N] {
    std::array::from_fn(|i| key.get(i).copied().unwrap_or(0))
}

impl Aes {
    /// The cipher keyed with the first `len.bytes()` bytes of `key`.
    pub(super) fn new(len: KeyLen, key: &[u8; 32]) -> Aes {
        match len {
            KeyLen::Aes128 => Aes::A128(aes::Aes128::new(&prefix::<16>(key).into())),
            KeyLen::Aes192 => Aes::A192(aes::Aes192::new(&prefix::<24>(key).into())),
            KeyLen::Aes256 => Aes::A256(aes::Aes256::new(&prefix::<32>(key).into())),
        }
    }

    fn encrypt_block(&self, block: &mut [u8; 16]) {
        let b = GenericArray::from_mut_slice(block);
        match self {
            Aes::A128(c) => c.encrypt_block(b),
            Aes::A192(c) => c.encrypt_block(b),
            Aes::A256(c) => c.encrypt_block(b),
        }
    }

    fn decrypt_block(&self, block: &mut [u8; 16]) {
        let b = GenericArray::from_mut_slice(block);
        match self {
            Aes::A128(c) => c.decrypt_block(b),
            Aes::A192(c) => c.decrypt_block(b),
            Aes::A256(c) => c.decrypt_block(b),
        }
    }

    /// XORs `data` with the AES-CTR keystream that starts at counter block `iv` (§6.1.2).
    ///
    /// The counter is the whole 128-bit block, incremented big-endian. libsrt's fallback
    /// increments only the last 16 bits; the two agree for any payload below 1 MiB, and SRT
    /// payloads are below 1500 bytes.
    pub(super) fn ctr(&self, iv: &[u8; 16], data: &mut [u8]) {
        type Core<C> = ctr::CtrCore<C, ctr::flavors::Ctr128BE>;
        let iv = GenericArray::from_slice(iv);
        match self {
            Aes::A128(c) => Core::inner_iv_init(c.clone(), iv).apply_keystream_partial(data.into()),
            Aes::A192(c) => Core::inner_iv_init(c.clone(), iv).apply_keystream_partial(data.into()),
            Aes::A256(c) => Core::inner_iv_init(c.clone(), iv).apply_keystream_partial(data.into()),
        }
    }
}

/// `A XOR t` for step `t` of RFC 3394 §2.2.1.
fn xor_step(a: &mut [u8; 8], t: u64) {
    for (x, y) in a.iter_mut().zip(t.to_be_bytes()) {
        *x ^= y;
    }
}

/// Splits `data` (a multiple of 8 bytes, checked by the callers) into 64-bit registers.
fn registers(data: &[u8]) -> Vec<[u8; 8]> {
    data.chunks_exact(8)
        .map(|c| std::array::from_fn(|i| c.get(i).copied().unwrap_or(0)))
        .collect()
}

/// RFC 3394 §2.2.1 key wrap of `plain` (16 bytes or more, a multiple of 8) under `kek`.
/// Returns `ICV_LEN + plain.len()` bytes.
pub(super) fn wrap(kek: &Aes, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if plain.len() < 16 || plain.len() & 7 != 0 {
        return Err(CryptoError::Malformed {
            what: "key data to wrap is not 2 or more 64-bit blocks",
        });
    }
    let mut a = DEFAULT_IV;
    let mut r = registers(plain);
    let mut t = 0u64;
    for _j in 0..6 {
        for ri in r.iter_mut() {
            t += 1;
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            kek.encrypt_block(&mut b);
            a = std::array::from_fn(|i| b[i]);
            xor_step(&mut a, t);
            *ri = std::array::from_fn(|i| b[8 + i]);
        }
    }
    let mut out = Vec::with_capacity(ICV_LEN + plain.len());
    out.extend_from_slice(&a);
    for ri in &r {
        out.extend_from_slice(ri);
    }
    Ok(out)
}

/// RFC 3394 §2.2.2 key unwrap of `wrapped` (24 bytes or more, a multiple of 8) under `kek`.
/// A result that fails the §2.2.3 integrity check means the KEK, so the passphrase, is wrong:
/// [`CryptoError::BadSecret`].
pub(super) fn unwrap(kek: &Aes, wrapped: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if wrapped.len() < 24 || wrapped.len() & 7 != 0 {
        return Err(CryptoError::Malformed {
            what: "wrapped keys are not 3 or more 64-bit blocks",
        });
    }
    let Some((icv, rest)) = wrapped.split_first_chunk::<ICV_LEN>() else {
        return Err(CryptoError::Malformed {
            what: "wrapped keys shorter than the integrity check value",
        });
    };
    let mut a = *icv;
    let mut r = registers(rest);
    let n = r.len() as u64;
    let mut t = 6 * n;
    for _j in 0..6 {
        for ri in r.iter_mut().rev() {
            let mut b = [0u8; 16];
            xor_step(&mut a, t);
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            kek.decrypt_block(&mut b);
            a = std::array::from_fn(|i| b[i]);
            *ri = std::array::from_fn(|i| b[8 + i]);
            t -= 1;
        }
    }
    // Fold rather than `==` so the comparison does not stop at the first differing byte.
    let diff = a
        .iter()
        .zip(DEFAULT_IV)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff != 0 {
        return Err(CryptoError::BadSecret);
    }
    Ok(r.concat())
}

/// PBKDF2-HMAC-SHA1 (RFC 8018 §5.2) into `out`.
pub(super) fn pbkdf2_sha1(password: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, out);
}

/// The key encrypting key for `salt` and `len` (§6.2.1):
/// `KEK = PBKDF2(passphrase, LSB(64, Salt), 2048, KLen)`.
pub(super) fn derive_kek(passphrase: &Passphrase, salt: &[u8; 16], len: KeyLen) -> Aes {
    let mut kek = [0u8; 32];
    let pbkdf2_salt = &salt[salt.len() - PBKDF2_SALT_LEN..];
    // `len.bytes()` is 16, 24 or 32, so the range is inside `kek`.
    pbkdf2_sha1(
        passphrase.as_bytes(),
        pbkdf2_salt,
        PBKDF2_ITERATIONS,
        &mut kek[..len.bytes()],
    );
    let cipher = Aes::new(len, &kek);
    kek.fill(0);
    cipher
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    fn kek(bytes: &[u8]) -> Aes {
        let len = KeyLen::from_bytes(bytes.len()).expect("test KEK length");
        let mut k = [0u8; 32];
        k[..bytes.len()].copy_from_slice(bytes);
        Aes::new(len, &k)
    }

    /// RFC 3394 §4.1–4.6: every KEK size against every key data size it allows.
    #[test]
    fn rfc3394_vectors() {
        let kek128 = "000102030405060708090A0B0C0D0E0F";
        let kek192 = "000102030405060708090A0B0C0D0E0F1011121314151617";
        let kek256 = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
        let data128 = "00112233445566778899AABBCCDDEEFF";
        let data192 = "00112233445566778899AABBCCDDEEFF0001020304050607";
        let data256 = "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F";
        let cases = [
            (
                kek128,
                data128,
                "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5",
            ),
            (
                kek192,
                data128,
                "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D",
            ),
            (
                kek256,
                data128,
                "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7",
            ),
            (
                kek192,
                data192,
                "031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2",
            ),
            (
                kek256,
                data192,
                "A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1",
            ),
            (
                kek256,
                data256,
                "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B \
                 FB988B9B7A02DD21",
            ),
        ];
        for (k, p, c) in cases {
            let kek = kek(&hex(k));
            let wrapped = wrap(&kek, &hex(p)).expect("wrap");
            assert_eq!(wrapped, hex(c), "wrap with KEK {k}");
            assert_eq!(
                unwrap(&kek, &wrapped).expect("unwrap"),
                hex(p),
                "unwrap with KEK {k}"
            );
        }
    }

    #[test]
    fn unwrap_detects_wrong_kek_and_tampering() {
        let good = kek(&hex("000102030405060708090A0B0C0D0E0F"));
        let bad = kek(&hex("000102030405060708090A0B0C0D0E0E"));
        let wrapped = wrap(&good, &hex("00112233445566778899AABBCCDDEEFF")).expect("wrap");
        assert_eq!(unwrap(&bad, &wrapped), Err(CryptoError::BadSecret));
        let mut tampered = wrapped.clone();
        tampered[20] ^= 1;
        assert_eq!(unwrap(&good, &tampered), Err(CryptoError::BadSecret));
    }

    #[test]
    fn wrap_and_unwrap_reject_bad_lengths() {
        let k = kek(&[7; 16]);
        for len in [0, 8, 12, 17, 23] {
            assert!(matches!(
                wrap(&k, &vec![0; len]),
                Err(CryptoError::Malformed { .. })
            ));
        }
        for len in [0, 8, 16, 25, 31] {
            assert!(matches!(
                unwrap(&k, &vec![0; len]),
                Err(CryptoError::Malformed { .. })
            ));
        }
    }

    /// RFC 6070 §2 PBKDF2-HMAC-SHA1 vectors.
    #[test]
    fn rfc6070_vectors() {
        let cases: [(&[u8], &[u8], u32, &str); 4] = [
            (
                b"password",
                b"salt",
                1,
                "0c60c80f961f0e71f3a9b524af6012062fe037a6",
            ),
            (
                b"password",
                b"salt",
                2,
                "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957",
            ),
            (
                b"password",
                b"salt",
                4096,
                "4b007901b765489abead49d926f721d065a429c1",
            ),
            (
                b"passwordPASSWORDpassword",
                b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
                4096,
                "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
            ),
        ];
        for (p, s, c, dk) in cases {
            let want = hex(dk);
            let mut out = vec![0u8; want.len()];
            pbkdf2_sha1(p, s, c, &mut out);
            assert_eq!(out, want, "c={c}");
        }
    }

    /// AES-128 CTR, NIST SP 800-38A F.5.1, first two blocks.
    #[test]
    fn ctr_matches_sp800_38a() {
        let key = kek(&hex("2b7e151628aed2a6abf7158809cf4f3c"));
        let iv: [u8; 16] = hex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
            .try_into()
            .expect("iv");
        let mut data = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        key.ctr(&iv, &mut data);
        assert_eq!(
            data,
            hex("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff")
        );
    }
}
