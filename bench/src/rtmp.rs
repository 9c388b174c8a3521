//! A thin tokio driver around the sans-IO [`ClientSession`], shared by the publisher and the
//! viewers, plus RTMP URL parsing.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{lookup_host, TcpStream};
use zerocast_rtmp::{ClientEvent, ClientParams, ClientSession, Input, Output, SessionConfig};

/// The parts of `rtmp://host[:port]/app/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// `host:port` (port 1935 when absent).
    pub authority: String,
    /// Application, e.g. "live".
    pub app: String,
    /// Stream name (may carry a query string).
    pub name: String,
}

impl RtmpUrl {
    /// Parses `rtmp://host[:port]/app/name`; `name` may contain further slashes.
    pub fn parse(url: &str) -> Result<RtmpUrl> {
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| anyhow!("{url}: only rtmp:// URLs are supported"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| anyhow!("{url}: no /app/name"))?;
        let (app, name) = path
            .split_once('/')
            .ok_or_else(|| anyhow!("{url}: no stream name after the app"))?;
        if authority.is_empty() || app.is_empty() || name.is_empty() {
            bail!("{url}: want rtmp://host[:port]/app/name");
        }
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:1935")
        };
        Ok(RtmpUrl {
            authority,
            app: app.to_owned(),
            name: name.to_owned(),
        })
    }

    /// `tcUrl` for `connect`.
    pub fn tc_url(&self) -> String {
        format!("rtmp://{}/{}", self.authority, self.app)
    }

    /// Session parameters for this URL.
    pub fn params(&self) -> ClientParams {
        ClientParams {
            app: self.app.clone(),
            tc_url: self.tc_url(),
            flash_ver: None,
        }
    }

    /// Resolves the host (first address).
    pub async fn resolve(&self) -> Result<SocketAddr> {
        lookup_host(&self.authority)
            .await
            .with_context(|| format!("resolving {}", self.authority))?
            .next()
            .ok_or_else(|| anyhow!("{}: no address", self.authority))
    }
}

/// Wall-clock nanoseconds since the Unix epoch: the publisher stamps frames with it and the
/// viewers (same machine, same clock) subtract it from their own reading.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// One client connection: a socket and its session.
pub struct Client {
    /// The socket.
    pub sock: TcpStream,
    /// The session.
    pub session: ClientSession,
    buf: BytesMut,
    out: Vec<u8>,
    /// The instant of the session's next timer.
    pub deadline: Instant,
    /// Wall-clock ns at which the last read returned.
    pub last_read_ns: u64,
}

/// Size of each socket read.
const READ_SIZE: usize = 64 * 1024;

impl Client {
    /// Connects (TCP_NODELAY on) and starts the handshake.
    pub async fn connect(addr: SocketAddr, url: &RtmpUrl) -> Result<Client> {
        let sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        sock.set_nodelay(true)?;
        let now = Instant::now();
        Ok(Client {
            sock,
            session: ClientSession::new(SessionConfig::default(), now, url.params()),
            buf: BytesMut::with_capacity(READ_SIZE),
            out: Vec::new(),
            deadline: now,
            last_read_ns: 0,
        })
    }

    /// Drains the session: sends its transmits, appends its events to `events`, records the
    /// next timer in `deadline`.
    pub async fn flush(&mut self, events: &mut Vec<ClientEvent>) -> Result<()> {
        loop {
            match self.session.poll_output() {
                Output::Transmit(rope) => {
                    for p in rope.parts() {
                        self.out.extend_from_slice(p);
                    }
                }
                Output::Event(e) => events.push(e),
                Output::Timeout(at) => {
                    self.deadline = at;
                    break;
                }
            }
        }
        if !self.out.is_empty() {
            self.sock.write_all(&self.out).await.context("writing")?;
            self.out.clear();
        }
        Ok(())
    }

    /// Waits for bytes or the session's timer and feeds the session. Records in
    /// `last_read_ns` when the bytes arrived (taken right after the read returned).
    /// Cancel-safe (only `read_buf` and a sleep are awaited).
    pub async fn step(&mut self) -> Result<()> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let deadline = tokio::time::Instant::from_std(self.deadline);
        tokio::select! {
            r = self.sock.read_buf(&mut self.buf) => {
                let n = r.context("reading")?;
                let ns = wall_ns();
                if n == 0 {
                    bail!("server closed the connection");
                }
                self.last_read_ns = ns;
                let data = self.buf.split().freeze();
                self.session
                    .handle_input(Input::Receive(Instant::now(), data))
                    .map_err(|e| anyhow!("RTMP session: {e}"))?;
                Ok(())
            }
            _ = tokio::time::sleep_until(deadline) => {
                self.session
                    .handle_input(Input::Timeout(Instant::now()))
                    .map_err(|e| anyhow!("RTMP session: {e}"))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1:1940/live/bench").unwrap();
        assert_eq!(u.authority, "127.0.0.1:1940");
        assert_eq!(u.app, "live");
        assert_eq!(u.name, "bench");
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1940/live");
        let u = RtmpUrl::parse("rtmp://example.org/live/a/b?k=1").unwrap();
        assert_eq!(u.authority, "example.org:1935");
        assert_eq!(u.name, "a/b?k=1");
        assert!(RtmpUrl::parse("http://x/live/a").is_err());
        assert!(RtmpUrl::parse("rtmp://x/live").is_err());
    }
}
