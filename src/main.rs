//! The `zerocast` binary: everything lives in `zerocast-engine`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    zerocast_engine::cli::main()
}
