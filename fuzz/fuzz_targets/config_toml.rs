#![no_main]
use zerocast_engine::config::Config;
libfuzzer_sys::fuzz_target!(|text: &str| drop(Config::from_toml_str(text)));
