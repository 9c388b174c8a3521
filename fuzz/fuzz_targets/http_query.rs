#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerocast_engine::http::query::fuzz_http_query(data));
