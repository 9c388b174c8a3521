#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_hls::fuzz::fuzz_request(data));
