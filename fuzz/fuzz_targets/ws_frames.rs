#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_engine::events::ws::fuzz_ws_frames(data));
