//! A minimal HTTP/1.1 client: one keep-alive connection, one request at a time, GET only.
//!
//! The response decoder is sans-IO ([`ResponseDecoder`]): bytes go in, a whole [`Response`]
//! comes out once its last body byte arrived. The head is parsed by `httparse`; the body is
//! framed by `Content-Length` or `Transfer-Encoding: chunked` (RFC 9112 §6, §7.1):
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF
//! ```
//!
//! [`Connection`] drives it over a tokio `TcpStream` and stamps the wall-clock time at which
//! the read that completed the response returned: the "last byte received" time.

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rtmp::wall_ns;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body accepted (a 2 s segment of the bench clip is under 1 MB).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Most response headers accepted.
const MAX_HEADERS: usize = 48;
/// Size of each socket read.
const READ_SIZE: usize = 64 * 1024;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Bytes,
    /// False when the server said `Connection: close` (or spoke HTTP/1.0 without keep-alive).
    pub keep_alive: bool,
    /// Wall-clock ns at which the read that completed the response returned.
    pub done_ns: u64,
}

/// Why the bytes are not an HTTP/1.1 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The bytes break a rule at `offset` (from the start of the response).
    #[error("invalid HTTP response at byte {offset}: {what}")]
    Invalid {
        /// Offset of the offending byte.
        offset: usize,
        /// The rule broken.
        what: &'static str,
    },
    /// A size over this client's caps.
    #[error("HTTP response too large: {what}")]
    TooLarge {
        /// Which size.
        what: &'static str,
    },
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes still to come.
    Length(usize),
    /// Chunked transfer coding, in this state.
    Chunked(Chunk),
}

/// Where a chunked body decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a `chunk-size [ext] CRLF` line.
    Size,
    /// Inside chunk data: this many bytes left.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailer,
}

/// The head of the response being decoded.
#[derive(Debug, Clone, Copy)]
struct Head {
    status: u16,
    keep_alive: bool,
    framing: Framing,
}

/// Decodes one response at a time from a byte stream (sans-IO).
#[derive(Debug, Default)]
pub struct ResponseDecoder {
    head: Option<Head>,
    body: BytesMut,
    /// Bytes of the current response consumed so far (for error offsets).
    consumed: usize,
    /// Set for a request whose response has no body (HEAD).
    no_body: bool,
}

impl ResponseDecoder {
    /// Resets for the next response; `no_body` for the answer to a HEAD request.
    pub fn start(&mut self, no_body: bool) {
        *self = ResponseDecoder {
            no_body,
            body: std::mem::take(&mut self.body),
            ..ResponseDecoder::default()
        };
        self.body.clear();
    }

    /// Consumes what it can of `buf`. `Ok(None)`: incomplete, feed more bytes (what was
    /// consumed is kept). `Ok(Some(..))`: one whole response; bytes after it stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<(u16, bool, Bytes)>, HttpError> {
        let mut head = match self.head {
            Some(h) => h,
            None => {
                let Some((h, len)) = self.parse_head(buf)? else {
                    return Ok(None);
                };
                buf.advance(len);
                self.consumed += len;
                self.head = Some(h);
                h
            }
        };
        loop {
            match head.framing {
                Framing::Length(0) | Framing::Chunked(Chunk::Trailer)
                    if self.trailer_done(&head, buf)? =>
                {
                    let body = self.body.split().freeze();
                    self.head = None;
                    return Ok(Some((head.status, head.keep_alive, body)));
                }
                Framing::Length(0) | Framing::Chunked(Chunk::Trailer) => return Ok(None),
                Framing::Length(n) => {
                    let take = n.min(buf.len());
                    if take == 0 {
                        return Ok(None);
                    }
                    self.body.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    self.consumed += take;
                    head.framing = Framing::Length(n - take);
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(line_end) = find_crlf(buf) else {
                        if buf.len() > 1024 {
                            return Err(self.invalid(0, "chunk-size line longer than 1 KiB"));
                        }
                        return Ok(None);
                    };
                    let digits = buf[..line_end]
                        .iter()
                        .take_while(|b| b.is_ascii_hexdigit())
                        .count();
                    if digits == 0 || digits > 12 {
                        return Err(self.invalid(0, "chunk-size is not 1..=12 hex digits"));
                    }
                    // Invariant: `digits` ASCII hex digits, at most 12, fit a u64.
                    let size = std::str::from_utf8(&buf[..digits])
                        .ok()
                        .and_then(|s| u64::from_str_radix(s, 16).ok())
                        .ok_or_else(|| self.invalid(0, "chunk-size"))?;
                    let rest = &buf[digits..line_end];
                    if !(rest.is_empty() || rest[0] == b';' || rest[0] == b' ' || rest[0] == b'\t')
                    {
                        return Err(self.invalid(digits, "junk after chunk-size"));
                    }
                    let size = usize::try_from(size).unwrap_or(usize::MAX);
                    if self.body.len().saturating_add(size) > MAX_BODY {
                        return Err(HttpError::TooLarge {
                            what: "chunked body",
                        });
                    }
                    buf.advance(line_end + 2);
                    self.consumed += line_end + 2;
                    head.framing = Framing::Chunked(if size == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data(size)
                    });
                }
                Framing::Chunked(Chunk::Data(n)) => {
                    let take = n.min(buf.len());
                    if take == 0 {
                        return Ok(None);
                    }
                    self.body.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    self.consumed += take;
                    head.framing = Framing::Chunked(if n == take {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(n - take)
                    });
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(self.invalid(0, "chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.consumed += 2;
                    head.framing = Framing::Chunked(Chunk::Size);
                }
            }
            self.head = Some(head);
        }
    }

    /// For a body that is complete: true once the trailer section (chunked) has ended too.
    fn trailer_done(&mut self, head: &Head, buf: &mut BytesMut) -> Result<bool, HttpError> {
        if head.framing != Framing::Chunked(Chunk::Trailer) {
            return Ok(true);
        }
        loop {
            let Some(end) = find_crlf(buf) else {
                if buf.len() > MAX_HEAD {
                    return Err(HttpError::TooLarge {
                        what: "trailer section",
                    });
                }
                return Ok(false);
            };
            buf.advance(end + 2);
            self.consumed += end + 2;
            if end == 0 {
                return Ok(true);
            }
        }
    }

    fn invalid(&self, at: usize, what: &'static str) -> HttpError {
        HttpError::Invalid {
            offset: self.consumed + at,
            what,
        }
    }

    /// Parses the head once it is complete: `Ok(None)` while it is not.
    fn parse_head(&self, buf: &[u8]) -> Result<Option<(Head, usize)>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut headers);
        let len = match r.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(HttpError::TooLarge { what: "head" });
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::TooLarge {
                    what: "header count",
                })
            }
            Err(_) => return Err(self.invalid(0, "malformed status line or header")),
        };
        let status = r.code.ok_or_else(|| self.invalid(0, "no status code"))?;
        let http10 = r.version == Some(0);
        let mut keep_alive = !http10;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        for h in r.headers.iter() {
            let value = std::str::from_utf8(h.value).unwrap_or("").trim();
            if h.name.eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .parse()
                    .map_err(|_| self.invalid(0, "Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(self.invalid(0, "two different Content-Length values"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
                if !chunked {
                    return Err(self.invalid(0, "a transfer coding other than chunked"));
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
        }
        // RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304.
        let bodiless = self.no_body || status < 200 || status == 204 || status == 304;
        let framing = if bodiless {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked(Chunk::Size)
        } else if let Some(n) = length {
            if n > MAX_BODY {
                return Err(HttpError::TooLarge {
                    what: "Content-Length",
                });
            }
            Framing::Length(n)
        } else {
            // A body delimited by closing the connection cannot be reused: this client
            // is keep-alive only.
            return Err(self.invalid(0, "response with neither Content-Length nor chunked"));
        };
        if (100..200).contains(&status) {
            return Err(self.invalid(0, "interim (1xx) response to a GET"));
        }
        Ok(Some((
            Head {
                status,
                keep_alive,
                framing,
            },
            len,
        )))
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    sock: TcpStream,
    buf: BytesMut,
    host: String,
    decoder: ResponseDecoder,
    request: Vec<u8>,
}

impl Connection {
    /// Connects (TCP_NODELAY on). `host` is the `Host` header value.
    pub async fn connect(addr: SocketAddr, host: &str) -> Result<Connection> {
        let sock = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        sock.set_nodelay(true)?;
        Ok(Connection {
            sock,
            buf: BytesMut::with_capacity(READ_SIZE),
            host: host.to_owned(),
            decoder: ResponseDecoder::default(),
            request: Vec::with_capacity(256),
        })
    }

    /// Sends `GET target` and reads the whole response. Not cancel-safe: after a timeout or
    /// an error, drop the connection.
    pub async fn get(&mut self, target: &str) -> Result<Response> {
        self.request.clear();
        self.request.extend_from_slice(b"GET ");
        self.request.extend_from_slice(target.as_bytes());
        self.request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.request.extend_from_slice(self.host.as_bytes());
        self.request
            .extend_from_slice(b"\r\nUser-Agent: zerocast-bench\r\nAccept: */*\r\n\r\n");
        self.sock
            .write_all(&self.request)
            .await
            .context("writing the request")?;
        self.decoder.start(false);
        let mut done_ns = wall_ns();
        loop {
            if let Some((status, keep_alive, body)) = self.decoder.decode(&mut self.buf)? {
                if !self.buf.is_empty() {
                    bail!("{} bytes after the response, unasked for", self.buf.len());
                }
                return Ok(Response {
                    status,
                    body,
                    keep_alive,
                    done_ns,
                });
            }
            if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
                self.buf.reserve(READ_SIZE);
            }
            let n = self
                .sock
                .read_buf(&mut self.buf)
                .await
                .context("reading the response")?;
            done_ns = wall_ns();
            if n == 0 {
                return Err(anyhow!("server closed the connection mid-response"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(pieces: &[&[u8]]) -> Result<Option<(u16, bool, Bytes)>, HttpError> {
        let mut d = ResponseDecoder::default();
        d.start(false);
        let mut buf = BytesMut::new();
        let mut out = None;
        for p in pieces {
            buf.extend_from_slice(p);
            if let Some(r) = d.decode(&mut buf)? {
                assert!(out.is_none(), "two responses");
                out = Some(r);
            }
        }
        Ok(out)
    }

    #[test]
    fn content_length_body_byte_by_byte() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: x\r\n\r\nhello";
        let pieces: Vec<&[u8]> = raw.chunks(1).collect();
        let (status, keep_alive, body) = decode_all(&pieces).unwrap().unwrap();
        assert_eq!(status, 200);
        assert!(keep_alive);
        assert_eq!(&body[..], b"hello");
    }

    #[test]
    fn chunked_body_with_extension_and_trailer() {
        let raw: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0002\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        for split in 1..raw.len() {
            let (a, b) = raw.split_at(split);
            let (_, _, body) = decode_all(&[a, b]).unwrap().unwrap();
            assert_eq!(&body[..], b"abcde", "split at {split}");
        }
    }

    #[test]
    fn keeps_the_next_response_in_the_buffer() {
        let mut d = ResponseDecoder::default();
        d.start(false);
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}HTTP/1.1"
                [..],
        );
        let (status, keep_alive, body) = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!((status, keep_alive, &body[..]), (404, false, &b"{}"[..]));
        assert_eq!(&buf[..], b"HTTP/1.1");
    }

    #[test]
    fn no_content_has_no_body() {
        let (status, _, body) = decode_all(&[b"HTTP/1.1 204 No Content\r\n\r\n"])
            .unwrap()
            .unwrap();
        assert_eq!(status, 204);
        assert!(body.is_empty());
    }

    #[test]
    fn rejects_bad_framing() {
        assert!(matches!(
            decode_all(&[b"HTTP/1.1 200 OK\r\n\r\nabc"]),
            Err(HttpError::Invalid { .. })
        ));
        assert!(matches!(
            decode_all(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
            Err(HttpError::Invalid {
                what: "chunk-size is not 1..=12 hex digits",
                ..
            })
        ));
        assert!(matches!(
            decode_all(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY\r\n"]),
            Err(HttpError::Invalid { .. })
        ));
        assert!(matches!(
            decode_all(&[b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]),
            Err(HttpError::Invalid { .. })
        ));
        assert!(decode_all(&[b"HTTP/1.1 200 OK\r\nContent-Len"])
            .unwrap()
            .is_none());
    }
}
