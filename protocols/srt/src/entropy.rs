//! Randomness without reading the OS: the driver hands a session a 32-byte seed, and every
//! salt, key and socket id the session needs is drawn from it (HMAC-SHA1 in counter mode).

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A deterministic stream of random bytes from a secret seed.
#[derive(Clone)]
pub struct Entropy {
    seed: [u8; 32],
    counter: u64,
}

impl std::fmt::Debug for Entropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Entropy(..)")
    }
}

impl Entropy {
    /// A stream from `seed`, which must come from a cryptographic random source.
    pub fn new(seed: [u8; 32]) -> Entropy {
        Entropy { seed, counter: 0 }
    }

    /// Fills `out` with the next bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(20) {
            // The key is 32 bytes, valid for HMAC: `new_from_slice` cannot fail.
            let mut mac =
                <Hmac<Sha1> as Mac>::new_from_slice(&self.seed).expect("HMAC takes any key length");
            mac.update(&self.counter.to_be_bytes());
            self.counter += 1;
            let block = mac.finalize().into_bytes();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    /// 32 fresh bytes (a stream encrypting key).
    pub fn next_key(&mut self) -> [u8; 32] {
        let mut k = [0u8; 32];
        self.fill(&mut k);
        k
    }

    /// A fresh non-zero 32-bit value (socket ids, cookies).
    pub fn next_u32(&mut self) -> u32 {
        loop {
            let mut b = [0u8; 4];
            self.fill(&mut b);
            let v = u32::from_be_bytes(b);
            if v != 0 {
                return v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_seed_and_never_repeat_blocks() {
        let mut a = Entropy::new([1; 32]);
        let mut b = Entropy::new([2; 32]);
        let (ka, kb) = (a.next_key(), b.next_key());
        assert_ne!(ka, kb);
        assert_ne!(ka, a.next_key());
    }
}
