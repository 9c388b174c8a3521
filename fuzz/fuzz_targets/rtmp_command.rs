#![no_main]
use zerocast_rtmp::{Amf0Limits, Command};
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(Command::decode(data, &Amf0Limits::default())));
