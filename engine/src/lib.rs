//! The zerocast appliance: shards, listeners, stream router, storage and CLI.
//!
//! `unsafe` is allowed in one module only, the runtime facade's TCP layer (`rt::tcp`), for the
//! vectored `sendmsg` glommio does not offer.
#![deny(unsafe_code)]

pub mod admission;
pub mod api;
pub mod banner;
pub mod cli;
pub mod config;
pub mod control;
pub mod events;
pub mod hls;
pub mod hooks;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod recording;
pub mod rt;
pub mod rtmp_conn;
pub mod server;
pub mod shard;
pub mod srt;
pub mod store;
pub mod stream;
pub mod tls;
pub mod transport;
