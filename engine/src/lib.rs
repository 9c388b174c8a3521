//! The zerocast appliance: shards, listeners, stream router, storage and CLI.

pub mod cli;
pub mod config;
pub mod server;
pub mod store;
