//! The appliance configuration, read from one TOML file.
//!
//! Every value has a default, so an empty file (or no file at all) is a working configuration;
//! [`DEFAULT_TOML`] spells out every key with its default and what it does. An unknown key
//! anywhere is an error that names the key and its line: a typo must not silently fall back to
//! a default. Durations are written as strings (`"10s"`, `"500ms"`, `"2m"`, `"1m30s"`); sizes are
//! byte counts, either as integers or as strings with a unit (`"8MiB"`, `"64 KiB"`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole default configuration, every key present and commented.
///
/// `zerocast config default` prints it; parsing it yields exactly [`Config::default()`] (a unit
/// test holds the two together, so edit both at once).
pub const DEFAULT_TOML: &str = r#"# zerocast configuration. Every key is optional; the values below are the defaults.
# Durations are strings such as "500ms", "10s", "2m", "1h" or "1m30s".
# Sizes are byte counts: an integer, or a string with a unit such as "8MiB" or "64KiB".

[server]
# Directory for the SQLite database (streams and keys) and other state. Created if missing.
data_dir = "./zerocast-data"
# Number of shards (one pinned executor thread each). 0 = one per online CPU core.
shards = 0

[rtmp]
# Address for plain RTMP. Use "[::]:1935" to listen on IPv6 as well.
listen = "0.0.0.0:1935"
# Address for RTMPS (RTMP over TLS). Absent or "" = RTMPS off.
# tls_listen = "0.0.0.0:1936"
# PEM certificate chain and private key for RTMPS. Give both or neither; with neither,
# RTMPS uses a self-signed certificate generated once into <data_dir>/tls/.
# tls_cert = "/etc/zerocast/cert.pem"
# tls_key = "/etc/zerocast/key.pem"
# Chunk size zerocast sends with (128..=65536). Larger chunks mean fewer headers per frame.
chunk_size = 4096
# Largest RTMP message a peer may send, in bytes; larger ones close the connection.
max_message_size = 8388608
# Largest chunk size a peer may announce with Set Chunk Size, in bytes.
max_chunk_size = 65536
# Deepest nesting of AMF0 objects and arrays accepted in a command or metadata message.
max_amf_depth = 16
# Longest AMF0 string accepted, in bytes.
max_amf_string = 65536
# Window acknowledgement size announced to peers, in bytes.
window_ack_size = 2500000
# Audio frames wait up to this long for the next video frame so that both reach a player in
# one write (half the system calls per player). Video is never held. "0s" sends every frame
# at once.
audio_coalesce = "40ms"

[srt]
# UDP address for SRT (publish and play, caller mode). "" = SRT off.
# Publish: srt://HOST:8890?streamid=#!::r=live/KEY,m=publish
# Play:    srt://HOST:8890?streamid=#!::r=live/NAME,m=request
listen = "0.0.0.0:8890"
# Receiver buffering latency (SRT TSBPD delay), 20ms..=10s; the larger of this and the peer's
# own setting applies. More latency rides out more packet loss.
latency = "120ms"
# Encryption passphrase, 10 to 79 characters. Absent = no encryption; when set, every peer
# must use it.
# passphrase = "a-long-secret-phrase"
# AES key length in bytes when a passphrase is set: 16, 24 or 32.
pbkeylen = 16
# A peer that sends nothing (not even keepalives) for this long is dropped.
peer_idle_timeout = "5s"
# Sending rate cap per connection, in bytes per second (a size, e.g. "10MB"). 0 = automatic.
max_bandwidth = 0
# Most SRT connections on the whole server; further callers are rejected.
max_sessions = 1000
# Most handshakes in progress at once; further callers are rejected until some complete.
max_pending_handshakes = 256

[http]
# Address of the HTTP server (LL-HLS under /hls, /healthz; later the API). "" = HTTP off.
listen = "0.0.0.0:8080"
# Address for HTTPS. Absent or "" = HTTPS off.
# tls_listen = "0.0.0.0:8443"
# PEM certificate chain and private key for HTTPS. Give both or neither; with neither,
# HTTPS uses the self-signed certificate in <data_dir>/tls/ (shared with RTMPS).
# tls_cert = "/etc/zerocast/cert.pem"
# tls_key = "/etc/zerocast/key.pem"
# Largest request head (request line and headers) accepted, in bytes; larger ones get 431.
max_header_bytes = 16384
# Most headers in one request; more get 431.
max_headers = 64
# Time a client has to send a complete request head once it started one.
header_timeout = "10s"
# A keep-alive connection with no request in progress is closed after this long.
idle_timeout = "60s"

[hls]
# Package every live stream as LL-HLS at /hls/NAME/index.m3u8.
enabled = true
# Segments are cut at the first video keyframe after this long.
segment_duration = "2s"
# Target duration of the partial segments (EXT-X-PART); 50ms..=segment_duration.
part_duration = "200ms"
# Complete segments kept in memory and listed in the playlist, per stream.
window = 10
# How long the playlist of a stream that ended stays available (with EXT-X-ENDLIST).
ended_retention = "60s"

[recording]
# Record every stream unless the stream itself says otherwise (`zerocast streams create --record`).
record = false
# "fmp4" (fragmented MP4, one fragment per segment) or "flv".
format = "fmp4"
# Recordings go to <data_dir>/recordings/NAME/YYYYMMDD-HHMMSS.<ext>.
# A recording starts a new fragment at the first video keyframe after this long.
fragment_duration = "2s"
# Bytes waiting for the disk, over all recordings; a recording whose writes cannot keep up
# beyond this is stopped with a logged reason (the live stream goes on).
max_queued_bytes = "64MiB"

[auth]
# Who may publish. "keys": the RTMP stream key must be a stored stream's key
# (see `zerocast streams create`). "open": anyone may publish, and the key is the stream name.
publish = "keys"
# Bearer token for the HTTP API (/api/v1). Absent: the ZEROCAST_API_TOKEN environment variable,
# else a token generated on first start into <data_dir>/api-token (its path is printed).
# api_token = "a-long-random-string"
# Failed publish attempts (wrong key, refused by the on_publish hook) allowed per IP address per
# minute; further attempts from that address are refused without checking until the minute passes.
# 0 = no limit.
max_failed_publish_per_minute = 10

[metrics]
# Whether GET /metrics needs the API token too.
require_token = false

[hooks]
# HTTP(S) URLs zerocast POSTs JSON to. Absent = that hook is off.
# on_publish: asked before a publish is allowed; a 2xx answer allows it, anything else refuses.
# on_publish = "http://127.0.0.1:9000/on_publish"
# Notifications (retried with backoff; never delay the media):
# on_publish_done = "http://127.0.0.1:9000/on_publish_done"
# on_play = "http://127.0.0.1:9000/on_play"
# on_play_done = "http://127.0.0.1:9000/on_play_done"
# on_recording_done = "http://127.0.0.1:9000/on_recording_done"
# How long on_publish (and each notification attempt) may take.
timeout = "2s"
# When on_publish cannot be reached or times out: false = refuse the publish, true = allow it.
fail_open = false
# Key of the HMAC-SHA256 signature sent in the X-Zerocast-Signature header (hex of the body's
# HMAC). Absent = no signature.
# secret = "shared-secret"
# Attempts per notification (the first included), with exponential backoff from 500ms.
attempts = 5

[streams]
# When a second publisher arrives for a stream that is live: false = refuse the newcomer,
# true = disconnect the current publisher and let the newcomer take over.
takeover = false

[limits]
# Bytes of the latest group of pictures kept per stream, so a new viewer starts on a keyframe.
gop_cache_bytes = 16777216
# Bytes queued per viewer before it skips ahead to the next keyframe.
viewer_queue_bytes = 8388608
# A viewer that stays this far behind is disconnected.
viewer_stall = "10s"
# Time a new connection has to finish the RTMP handshake and start publishing or playing.
handshake_timeout = "10s"
# A connection that sends nothing for this long is closed (players are exempt: they only
# receive; a stalled player is caught by viewer_stall).
idle_timeout = "30s"
# Most simultaneous connections across all protocols; further ones are refused.
max_connections = 10000
# Most simultaneous connections from one IP address.
max_connections_per_ip = 100

[log]
# Log filter, a tracing EnvFilter directive such as "info" or "info,zerocast_engine=debug".
# The RUST_LOG environment variable, when set, takes precedence.
level = "info"
# Log line format on stderr: "text" or "json".
format = "text"
"#;

/// A configuration that could not be read, parsed or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file name, or `<config>` for a string.
        origin: String,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key (from the TOML parser).
        message: String,
    },
    /// A value parsed but is out of range or inconsistent with another.
    #[error("{origin}: invalid value for `{key}`: {reason}")]
    Invalid {
        /// The file name, or `<config>`.
        origin: String,
        /// The key, as `section.name`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: process-wide settings.
    pub server: ServerConfig,
    /// `[rtmp]`: the RTMP and RTMPS listeners.
    pub rtmp: RtmpConfig,
    /// `[srt]`: the SRT listener.
    pub srt: SrtConfig,
    /// `[http]`: the HTTP(S) server.
    pub http: HttpConfig,
    /// `[hls]`: LL-HLS packaging.
    pub hls: HlsConfig,
    /// `[recording]`: recordings to disk.
    pub recording: RecordingConfig,
    /// `[auth]`: who may publish, the API token.
    pub auth: AuthConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[hooks]`: webhooks.
    pub hooks: HooksConfig,
    /// `[streams]`: stream behaviour.
    pub streams: StreamsConfig,
    /// `[limits]`: resource limits and timeouts.
    pub limits: LimitsConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Directory for the database and other state.
    pub data_dir: PathBuf,
    /// Number of shards; 0 = one per online core (see [`Config::shard_count`]).
    pub shards: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./zerocast-data"),
            shards: 0,
        }
    }
}

/// `[rtmp]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    /// Plain RTMP listen address.
    pub listen: SocketAddr,
    /// RTMPS listen address; `None` = off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for RTMPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for RTMPS.
    pub tls_key: Option<PathBuf>,
    /// Outgoing chunk size.
    pub chunk_size: u32,
    /// Largest message a peer may send, in bytes.
    #[serde(deserialize_with = "size_u32")]
    pub max_message_size: u32,
    /// Largest chunk size a peer may set, in bytes.
    #[serde(deserialize_with = "size_u32")]
    pub max_chunk_size: u32,
    /// Deepest AMF0 nesting accepted.
    pub max_amf_depth: usize,
    /// Longest AMF0 string accepted, in bytes.
    #[serde(deserialize_with = "size_usize")]
    pub max_amf_string: usize,
    /// Window acknowledgement size announced to peers.
    #[serde(deserialize_with = "size_u32")]
    pub window_ack_size: u32,
    /// Longest time an audio frame waits for the next video frame before players are woken.
    #[serde(deserialize_with = "duration")]
    pub audio_coalesce: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            chunk_size: 4096,
            max_message_size: 8 * MIB as u32,
            max_chunk_size: 65536,
            max_amf_depth: 16,
            max_amf_string: 65536,
            window_ack_size: 2_500_000,
            audio_coalesce: Duration::from_millis(40),
        }
    }
}

/// `[srt]`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SrtConfig {
    /// UDP listen address; `None` = off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// Receiver latency (TSBPD delay) zerocast asks for.
    #[serde(deserialize_with = "duration")]
    pub latency: Duration,
    /// Encryption passphrase; `None` = no encryption. Secret: `Debug` redacts it.
    pub passphrase: Option<String>,
    /// AES key length in bytes (16, 24 or 32), used when `passphrase` is set.
    pub pbkeylen: u8,
    /// Silence after which a peer is dropped.
    #[serde(deserialize_with = "duration")]
    pub peer_idle_timeout: Duration,
    /// Sending rate cap per connection, bytes per second; 0 = automatic.
    #[serde(deserialize_with = "size")]
    pub max_bandwidth: u64,
    /// Most SRT connections on the whole server.
    pub max_sessions: usize,
    /// Most handshakes in progress at once.
    pub max_pending_handshakes: usize,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8890))),
            latency: Duration::from_millis(120),
            passphrase: None,
            pbkeylen: 16,
            peer_idle_timeout: Duration::from_secs(5),
            max_bandwidth: 0,
            max_sessions: 1000,
            max_pending_handshakes: 256,
        }
    }
}

impl fmt::Debug for SrtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtConfig")
            .field("listen", &self.listen)
            .field("latency", &self.latency)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("pbkeylen", &self.pbkeylen)
            .field("peer_idle_timeout", &self.peer_idle_timeout)
            .field("max_bandwidth", &self.max_bandwidth)
            .field("max_sessions", &self.max_sessions)
            .field("max_pending_handshakes", &self.max_pending_handshakes)
            .finish()
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Plain HTTP listen address; `None` = off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
    /// HTTPS listen address; `None` = off.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Largest request head, in bytes.
    #[serde(deserialize_with = "size_usize")]
    pub max_header_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Time allowed for a request head once started.
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// Keep-alive idle time before the connection is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// `[hls]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    /// Whether live streams are packaged.
    pub enabled: bool,
    /// Segment length (cut at the next keyframe).
    #[serde(deserialize_with = "duration")]
    pub segment_duration: Duration,
    /// Partial segment target length.
    #[serde(deserialize_with = "duration")]
    pub part_duration: Duration,
    /// Complete segments kept per stream.
    pub window: usize,
    /// How long an ended stream's playlist stays.
    #[serde(deserialize_with = "duration")]
    pub ended_retention: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            segment_duration: Duration::from_secs(2),
            part_duration: Duration::from_millis(200),
            window: 10,
            ended_retention: Duration::from_secs(60),
        }
    }
}

/// Container of recordings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingFormat {
    /// Fragmented MP4, one fragment per segment.
    #[default]
    Fmp4,
    /// FLV tags as they travel over RTMP.
    Flv,
}

/// `[recording]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// Default for streams that do not say.
    pub record: bool,
    /// Container.
    pub format: RecordingFormat,
    /// Fragment length (cut at the next keyframe).
    #[serde(deserialize_with = "duration")]
    pub fragment_duration: Duration,
    /// Bytes queued for the disk over all recordings.
    #[serde(deserialize_with = "size_usize")]
    pub max_queued_bytes: usize,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            record: false,
            format: RecordingFormat::Fmp4,
            fragment_duration: Duration::from_secs(2),
            max_queued_bytes: 64 * MIB as usize,
        }
    }
}

/// Who may publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishAuth {
    /// The stream key must be a stored stream's key; the stream published is that stream.
    #[default]
    Keys,
    /// Anyone may publish; the stream key is taken as the stream name.
    Open,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Who may publish.
    pub publish: PublishAuth,
    /// Bearer token of the HTTP API; `None` = environment or generated.
    pub api_token: Option<String>,
    /// Failed publish attempts allowed per IP per minute; 0 = no limit.
    pub max_failed_publish_per_minute: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            publish: PublishAuth::Keys,
            api_token: None,
            max_failed_publish_per_minute: 10,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether `/metrics` needs the API token.
    pub require_token: bool,
}

/// `[hooks]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// Allow/deny before a publish.
    pub on_publish: Option<String>,
    /// Notification: a publish ended.
    pub on_publish_done: Option<String>,
    /// Notification: a viewer started.
    pub on_play: Option<String>,
    /// Notification: a viewer stopped.
    pub on_play_done: Option<String>,
    /// Notification: a recording was closed.
    pub on_recording_done: Option<String>,
    /// Time allowed for one request.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Whether an unreachable on_publish allows the publish.
    pub fail_open: bool,
    /// HMAC-SHA256 key for the signature header.
    pub secret: Option<String>,
    /// Attempts per notification.
    pub attempts: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            on_publish: None,
            on_publish_done: None,
            on_play: None,
            on_play_done: None,
            on_recording_done: None,
            timeout: Duration::from_secs(2),
            fail_open: false,
            secret: None,
            attempts: 5,
        }
    }
}

/// `[streams]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// Whether a new publisher replaces a live one (true) or is refused (false).
    pub takeover: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Bytes of GOP cache per stream.
    #[serde(deserialize_with = "size_usize")]
    pub gop_cache_bytes: usize,
    /// Bytes queued per viewer before it skips to the next keyframe.
    #[serde(deserialize_with = "size_usize")]
    pub viewer_queue_bytes: usize,
    /// How far behind a viewer may stay before it is disconnected.
    #[serde(deserialize_with = "duration")]
    pub viewer_stall: Duration,
    /// Time allowed for the RTMP handshake and the start of publishing or playing.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Silence after which a connection is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            gop_cache_bytes: 16 * MIB as usize,
            viewer_queue_bytes: 8 * MIB as usize,
            viewer_stall: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_ip: 100,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive.
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// RTMP message lengths are 24-bit fields (RTMP spec 5.3.1.2.1), so nothing larger can arrive.
const RTMP_MAX_MESSAGE: u32 = 0xFF_FFFF;

impl Config {
    /// Reads and validates the file at `path`; `None` gives the (validated) defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate_in("<defaults>")?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<config>")
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_column(text, span.start));
            ConfigError::Parse {
                origin: origin.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        config.validate_in(origin)?;
        Ok(config)
    }

    /// Checks ranges and combinations that the types alone do not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in("<config>")
    }

    fn validate_in(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            key,
            reason,
        };
        let r = &self.rtmp;
        // 65536 bounds the shard count far above any real machine and catches a negative
        // number that wrapped somewhere upstream.
        if self.server.shards > 65536 {
            return Err(invalid(
                "server.shards",
                format!("{} is more than 65536", self.server.shards),
            ));
        }
        if !(128..=65536).contains(&r.chunk_size) {
            return Err(invalid(
                "rtmp.chunk_size",
                format!("{} is outside 128..=65536", r.chunk_size),
            ));
        }
        if !(128..=RTMP_MAX_MESSAGE).contains(&r.max_chunk_size) {
            return Err(invalid(
                "rtmp.max_chunk_size",
                format!("{} is outside 128..={RTMP_MAX_MESSAGE}", r.max_chunk_size),
            ));
        }
        if !(1..=RTMP_MAX_MESSAGE).contains(&r.max_message_size) {
            return Err(invalid(
                "rtmp.max_message_size",
                format!(
                    "{} is outside 1..={RTMP_MAX_MESSAGE} (RTMP lengths are 24-bit)",
                    r.max_message_size
                ),
            ));
        }
        if r.max_amf_depth == 0 {
            return Err(invalid(
                "rtmp.max_amf_depth",
                "must be at least 1".to_owned(),
            ));
        }
        if r.max_amf_string == 0 {
            return Err(invalid(
                "rtmp.max_amf_string",
                "must be at least 1".to_owned(),
            ));
        }
        if r.window_ack_size == 0 {
            return Err(invalid(
                "rtmp.window_ack_size",
                "must be at least 1".to_owned(),
            ));
        }
        match (&r.tls_cert, &r.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "rtmp.tls_key",
                    "tls_cert is set, so tls_key must be too".to_owned(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "rtmp.tls_cert",
                    "tls_key is set, so tls_cert must be too".to_owned(),
                ))
            }
            _ => {}
        }
        if r.tls_listen == Some(r.listen) {
            return Err(invalid(
                "rtmp.tls_listen",
                format!("{} is also rtmp.listen", r.listen),
            ));
        }
        let srt = &self.srt;
        if !(Duration::from_millis(20)..=Duration::from_secs(10)).contains(&srt.latency) {
            return Err(invalid(
                "srt.latency",
                format!("{:?} is outside 20ms..=10s", srt.latency),
            ));
        }
        if let Some(p) = &srt.passphrase {
            // SRT's limit (SRTO_PASSPHRASE), in bytes. The passphrase itself is never shown.
            if !(10..=79).contains(&p.len()) {
                return Err(invalid(
                    "srt.passphrase",
                    format!("must be 10 to 79 bytes long, not {}", p.len()),
                ));
            }
        }
        if ![16, 24, 32].contains(&srt.pbkeylen) {
            return Err(invalid(
                "srt.pbkeylen",
                format!("{} is not 16, 24 or 32", srt.pbkeylen),
            ));
        }
        if srt.peer_idle_timeout.is_zero() {
            return Err(invalid(
                "srt.peer_idle_timeout",
                "must be longer than zero".to_owned(),
            ));
        }
        for (key, value) in [
            ("srt.max_sessions", srt.max_sessions),
            ("srt.max_pending_handshakes", srt.max_pending_handshakes),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        let h = &self.http;
        match (&h.tls_cert, &h.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "http.tls_key",
                    "tls_cert is set, so tls_key must be too".to_owned(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "http.tls_cert",
                    "tls_key is set, so tls_cert must be too".to_owned(),
                ))
            }
            _ => {}
        }
        if h.tls_listen.is_some() && h.tls_listen == h.listen {
            return Err(invalid("http.tls_listen", "is also http.listen".to_owned()));
        }
        // hyper cannot buffer less than 8 KiB; 1 MiB of headers is no legitimate request.
        if !(8192..=1 << 20).contains(&h.max_header_bytes) {
            return Err(invalid(
                "http.max_header_bytes",
                format!("{} is outside 8192..=1048576", h.max_header_bytes),
            ));
        }
        if !(1..=1024).contains(&h.max_headers) {
            return Err(invalid(
                "http.max_headers",
                format!("{} is outside 1..=1024", h.max_headers),
            ));
        }
        let hls = &self.hls;
        if hls.part_duration < Duration::from_millis(50) || hls.part_duration > hls.segment_duration
        {
            return Err(invalid(
                "hls.part_duration",
                format!(
                    "{:?} is outside 50ms..=hls.segment_duration ({:?})",
                    hls.part_duration, hls.segment_duration
                ),
            ));
        }
        if hls.segment_duration > Duration::from_secs(60) {
            return Err(invalid(
                "hls.segment_duration",
                format!("{:?} is longer than 60s", hls.segment_duration),
            ));
        }
        if !(3..=1000).contains(&hls.window) {
            return Err(invalid(
                "hls.window",
                format!("{} is outside 3..=1000 segments", hls.window),
            ));
        }
        let rec = &self.recording;
        if rec.fragment_duration.is_zero() || rec.fragment_duration > Duration::from_secs(60) {
            return Err(invalid(
                "recording.fragment_duration",
                format!("{:?} is outside (0s, 60s]", rec.fragment_duration),
            ));
        }
        if self
            .auth
            .api_token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                "auth.api_token",
                "must be at least 16 characters, without spaces".to_owned(),
            ));
        }
        let hooks = &self.hooks;
        for (key, url) in [
            ("hooks.on_publish", &hooks.on_publish),
            ("hooks.on_publish_done", &hooks.on_publish_done),
            ("hooks.on_play", &hooks.on_play),
            ("hooks.on_play_done", &hooks.on_play_done),
            ("hooks.on_recording_done", &hooks.on_recording_done),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(key, format!("{url:?} is not an http(s) URL")));
                }
            }
        }
        if !(1..=100).contains(&hooks.attempts) {
            return Err(invalid(
                "hooks.attempts",
                format!("{} is outside 1..=100", hooks.attempts),
            ));
        }
        let l = &self.limits;
        for (key, value) in [
            ("hooks.timeout", hooks.timeout),
            ("http.header_timeout", h.header_timeout),
            ("http.idle_timeout", h.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero".to_owned()));
            }
        }
        if rec.max_queued_bytes == 0 {
            return Err(invalid(
                "recording.max_queued_bytes",
                "must be at least 1".to_owned(),
            ));
        }
        for (key, value) in [
            ("limits.gop_cache_bytes", l.gop_cache_bytes),
            ("limits.viewer_queue_bytes", l.viewer_queue_bytes),
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        for (key, value) in [
            ("limits.viewer_stall", l.viewer_stall),
            ("limits.handshake_timeout", l.handshake_timeout),
            ("limits.idle_timeout", l.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "must be longer than zero".to_owned()));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log.level", format!("{:?}: {e}", self.log.level)));
        }
        Ok(())
    }

    /// The number of shards to run: `server.shards`, or one per online core when that is 0.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            // When the core count cannot be read (restricted /proc, odd platforms), one shard
            // still serves everything correctly, only slower.
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Parses a human duration: one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`
/// (`"500ms"`, `"10s"`, `"1m30s"`). A bare `"0"` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration; write e.g. \"10s\" or \"500ms\"".to_owned());
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration; write e.g. \"10s\", \"500ms\" or \"2m\""
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "" => return Err(format!("{text:?} lacks a unit; use ms, s, m or h")),
            unit => {
                return Err(format!(
                    "{text:?} has unknown unit {unit:?}; use ms, s, m or h"
                ))
            }
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Parses a size: digits, optionally followed by a unit (`B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`,
/// `GB`), with optional space between (`"8MiB"`, `"64 KiB"`, `"1000"`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return Err(format!(
            "{text:?} is not a size; write bytes or e.g. \"8MiB\""
        ));
    }
    let number: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("{text:?}: number too large"))?;
    let multiplier: u64 = match s[digits..].trim_start() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => MIB,
        "GiB" => 1024 * MIB,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        unit => {
            return Err(format!(
                "{text:?} has unknown unit {unit:?}; use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration string such as \"10s\", \"500ms\" or \"2m\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_str(V)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte count (integer) or a size string such as \"8MiB\"")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).map_err(E::custom)
        }
    }
    d.deserialize_any(V)
}

fn size_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = size(d)?;
    u32::try_from(v).map_err(|_| de::Error::custom(format!("{v} is larger than {}", u32::MAX)))
}

fn size_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let v = size(d)?;
    usize::try_from(v).map_err(|_| de::Error::custom(format!("{v} is too large for this platform")))
}

/// `""` means "off", so a templated config can leave the value empty instead of deleting the line.
fn optional_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.trim()
        .parse()
        .map(Some)
        .map_err(|_| de::Error::custom(format!("{s:?} is not an address such as \"0.0.0.0:1936\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_is_the_default() {
        assert_eq!(
            Config::from_toml_str(DEFAULT_TOML).unwrap(),
            Config::default()
        );
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml_str("[limits]\nidle_timeout = \"5s\"\nidle_timout = \"5s\"\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("idle_timout"), "{text}");
        assert!(text.starts_with("<config>:3:"), "{text}");

        let err = Config::from_toml_str("[nope]\n").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn bad_duration_is_reported() {
        let err = Config::from_toml_str("[limits]\nidle_timeout = \"10 parsecs\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("10 parsecs"), "{text}");
        assert!(Config::from_toml_str("[limits]\nidle_timeout = 10\n").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10 s",
            "-1s",
            "3d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 * MIB);
        assert_eq!(parse_size("64 KiB").unwrap(), 65536);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert!(parse_size("8 mebibytes").is_err());
        let c = Config::from_toml_str(
            "[limits]\ngop_cache_bytes = \"4MiB\"\nviewer_queue_bytes = 1024\n",
        )
        .unwrap();
        assert_eq!(c.limits.gop_cache_bytes, 4 * MIB as usize);
        assert_eq!(c.limits.viewer_queue_bytes, 1024);
        assert!(Config::from_toml_str("[limits]\ngop_cache_bytes = -1\n").is_err());
    }

    #[test]
    fn ranges_and_combinations() {
        let err = Config::from_toml_str("[rtmp]\nchunk_size = 64\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rtmp.chunk_size"), "{err}");
        let err = Config::from_toml_str("[rtmp]\ntls_cert = \"c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rtmp.tls_key"), "{err}");
        let err = Config::from_toml_str("[rtmp]\nlisten = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nowhere") || err.contains("socket address"),
            "{err}"
        );
        let err = Config::from_toml_str("[log]\nlevel = \"info,[\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log.level"), "{err}");
        let err = Config::from_toml_str("[auth]\npublish = \"nobody\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nobody"), "{err}");
    }

    #[test]
    fn tls_listen_empty_means_off() {
        let c = Config::from_toml_str("[rtmp]\ntls_listen = \"\"\n").unwrap();
        assert_eq!(c.rtmp.tls_listen, None);
        let c = Config::from_toml_str(
            "[rtmp]\ntls_listen = \"[::]:1936\"\ntls_cert = \"c\"\ntls_key = \"k\"\n",
        )
        .unwrap();
        assert_eq!(c.rtmp.tls_listen, Some("[::]:1936".parse().unwrap()));
    }

    #[test]
    fn srt_section() {
        let c = Config::from_toml_str(
            "[srt]\nlisten = \"[::]:9000\"\nlatency = \"200ms\"\npassphrase = \"0123456789\"\n\
             pbkeylen = 32\nmax_bandwidth = \"10MB\"\n",
        )
        .unwrap();
        assert_eq!(c.srt.listen, Some("[::]:9000".parse().unwrap()));
        assert_eq!(c.srt.latency, Duration::from_millis(200));
        assert_eq!(c.srt.pbkeylen, 32);
        assert_eq!(c.srt.max_bandwidth, 10_000_000);
        assert!(
            !format!("{c:?}").contains("0123456789"),
            "Debug shows the passphrase"
        );
        let off = Config::from_toml_str("[srt]\nlisten = \"\"\n").unwrap();
        assert_eq!(off.srt.listen, None);
        for (toml, key) in [
            ("latency = \"10ms\"", "srt.latency"),
            ("latency = \"11s\"", "srt.latency"),
            ("passphrase = \"short\"", "srt.passphrase"),
            ("passphrase = \"x\"", "srt.passphrase"),
            ("pbkeylen = 20", "srt.pbkeylen"),
            ("peer_idle_timeout = \"0s\"", "srt.peer_idle_timeout"),
            ("max_sessions = 0", "srt.max_sessions"),
            ("max_pending_handshakes = 0", "srt.max_pending_handshakes"),
        ] {
            let err = Config::from_toml_str(&format!("[srt]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let long = "p".repeat(80);
        let err = Config::from_toml_str(&format!("[srt]\npassphrase = \"{long}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("srt.passphrase") && !err.contains(&long),
            "{err}"
        );
        for ok in ["20ms", "10s"] {
            Config::from_toml_str(&format!("[srt]\nlatency = \"{ok}\"\n")).unwrap();
        }
    }

    #[test]
    fn shard_count_resolves_zero() {
        let mut c = Config::default();
        assert!(c.shard_count() >= 1);
        c.server.shards = 3;
        assert_eq!(c.shard_count(), 3);
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.toml");
        std::fs::write(&path, "[server]\nshard = 2\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("z.toml:2:"), "{err}");
        assert!(err.contains("shard"), "{err}");
        let err = Config::load(Some(&dir.path().join("missing.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert_eq!(Config::load(None).unwrap(), Config::default());
    }
}
