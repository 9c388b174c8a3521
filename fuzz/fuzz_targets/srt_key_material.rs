#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_srt::fuzz::fuzz_key_material(data));
