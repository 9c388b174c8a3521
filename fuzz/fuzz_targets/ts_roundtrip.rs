#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_codecs::fuzz::fuzz_ts_roundtrip(data));
