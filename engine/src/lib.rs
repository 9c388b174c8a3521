//! The zerocast appliance: shards, listeners, stream router, storage and CLI.

pub mod banner;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod limits;
pub mod logging;
pub mod outbox;
pub mod rt;
pub mod rtmp_conn;
pub mod server;
pub mod shard;
pub mod store;
pub mod stream;
pub mod tls;
pub mod transport;
