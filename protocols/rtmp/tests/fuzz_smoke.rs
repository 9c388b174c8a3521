//! Runs the fuzz entry points on pseudo-random and structured inputs (feature `fuzzing`).
#![cfg(feature = "fuzzing")]

use zerocast_rtmp::fuzz;

fn inputs() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [0usize, 1, 2, 8, 17, 100, 1537, 3073, 3200, 5000] {
        for _ in 0..20 {
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            if let Some(f) = b.first_mut() {
                // Half the time a valid C0.
                if x & 1 == 0 {
                    *f = 3;
                }
            }
            v.push(b);
        }
    }
    v
}

#[test]
fn entry_points_do_not_panic() {
    for i in inputs() {
        fuzz::fuzz_handshake(&i);
        fuzz::fuzz_chunk(&i);
        fuzz::fuzz_amf0(&i);
        fuzz::fuzz_amf0_roundtrip(&i);
        fuzz::fuzz_chunk_roundtrip(&i);
        fuzz::fuzz_server_session(&i);
        fuzz::fuzz_client_session(&i);
    }
}
