#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_rtmp::fuzz::fuzz_chunk(data));
