#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_engine::hooks::fuzz_hook_response(data));
