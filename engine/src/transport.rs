//! A connection's byte transport: plain TCP, or TLS (RTMPS) over TCP with rustls.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::rt::TcpConn;

/// Plain TCP or TLS over TCP.
#[derive(Clone)]
pub enum Transport {
    /// Bytes go to the socket as they are, slices handed to the kernel without copying.
    Plain(TcpConn),
    /// Bytes are encrypted by rustls first (which copies them, as encryption must).
    Tls(TcpConn, Rc<RefCell<rustls::ServerConnection>>),
}

impl Transport {
    /// Wraps an accepted connection in a TLS server session.
    pub fn tls(conn: TcpConn, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let mut tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        // The outbox bounds what is handed over; the writer flushes after every batch.
        tls.set_buffer_limit(None);
        Ok(Transport::Tls(conn, Rc::new(RefCell::new(tls))))
    }

    /// The underlying TCP connection.
    pub fn tcp(&self) -> &TcpConn {
        match self {
            Transport::Plain(c) | Transport::Tls(c, _) => c,
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.tcp().peer_addr()
    }

    /// True when TLS has records of its own to send (handshake messages, alerts).
    pub fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(_, tls) => tls.borrow().wants_write(),
        }
    }

    /// Reads application bytes; empty at end of stream.
    ///
    /// With TLS, `wake_writer` is called when rustls has records to send (handshake
    /// messages), since only the writing task writes to the socket.
    pub async fn read(&self, wake_writer: &dyn Fn()) -> io::Result<Bytes> {
        match self {
            Transport::Plain(c) => c.read().await,
            Transport::Tls(c, tls) => {
                let mut plain = BytesMut::new();
                let mut cipher = Bytes::new();
                loop {
                    {
                        let mut tls = tls.borrow_mut();
                        // Feed a record's worth, then decrypt: rustls holds only a bounded
                        // amount of undecrypted input.
                        if !cipher.is_empty() {
                            let mut rd = &cipher[..];
                            let n = tls.read_tls(&mut rd)?;
                            let _ = cipher.split_to(n);
                        }
                        let state = tls.process_new_packets().map_err(io::Error::other)?;
                        if tls.wants_write() {
                            wake_writer();
                        }
                        let n = state.plaintext_bytes_to_read();
                        if n > 0 {
                            let start = plain.len();
                            plain.resize(start + n, 0);
                            let got = tls.reader().read(&mut plain[start..])?;
                            plain.truncate(start + got);
                        }
                        if cipher.is_empty() {
                            if !plain.is_empty() {
                                return Ok(plain.freeze());
                            }
                            if state.peer_has_closed() {
                                return Ok(Bytes::new());
                            }
                        }
                    }
                    if cipher.is_empty() {
                        cipher = c.read().await?;
                        if cipher.is_empty() {
                            return Ok(cipher);
                        }
                    }
                }
            }
        }
    }

    /// Sends `slices` in order.
    pub async fn write_all(&self, slices: &[Bytes]) -> io::Result<()> {
        match self {
            Transport::Plain(c) => c.write_all(slices).await,
            Transport::Tls(c, tls) => {
                {
                    let mut tls = tls.borrow_mut();
                    for s in slices {
                        tls.writer().write_all(s)?;
                    }
                }
                Self::flush_tls(c, tls).await
            }
        }
    }

    /// Sends whatever TLS has pending.
    pub async fn flush(&self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(c, tls) => Self::flush_tls(c, tls).await,
        }
    }

    async fn flush_tls(c: &TcpConn, tls: &RefCell<rustls::ServerConnection>) -> io::Result<()> {
        loop {
            let mut out = Vec::new();
            {
                let mut tls = tls.borrow_mut();
                if !tls.wants_write() {
                    return Ok(());
                }
                while tls.wants_write() {
                    tls.write_tls(&mut out)?;
                }
            }
            c.write_all(&[Bytes::from(out)]).await?;
        }
    }

    /// Says goodbye (TLS close_notify) and shuts the socket down.
    pub async fn close(&self) {
        if let Transport::Tls(_, tls) = self {
            tls.borrow_mut().send_close_notify();
            let _ = self.flush().await;
        }
        self.tcp().close().await;
    }

    /// Shuts the socket down at once, waking a blocked reader.
    pub fn shutdown(&self) {
        self.tcp().shutdown(Shutdown::Both);
    }
}
