//! TCP on a shard: accept, zero-copy reads into shared buffers, vectored zero-copy writes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};

/// A listening socket of one shard. Every shard binds the same address with SO_REUSEPORT and
/// the kernel spreads new connections across them.
pub struct TcpListener(glommio::net::TcpListener);

impl TcpListener {
    /// Binds `addr` with SO_REUSEPORT.
    ///
    /// SO_REUSEADDR is set too (glommio's own `bind` sets only SO_REUSEPORT): without it a
    /// restart fails while connections of the previous process linger in TIME_WAIT.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let fd = socket.into_raw_fd();
        // SAFETY: `fd` is a listening TCP socket we own (just released by `into_raw_fd`), and
        // glommio's listener takes sole ownership of it, as its own `bind` does.
        Ok(TcpListener(unsafe {
            glommio::net::TcpListener::from_raw_fd(fd)
        }))
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<TcpConn> {
        let s = self.0.accept().await.map_err(io::Error::from)?;
        TcpConn::new(s)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr().map_err(io::Error::from)
    }
}

/// Smallest receive area worth reading into; below this a fresh buffer is allocated.
const MIN_READ_AREA: usize = 2048;
/// First receive buffer of a connection. Players send little, so start small.
const SMALL_RX_BUFFER: usize = 8 * 1024;
/// Receive buffer of a connection whose last read filled its area (a publisher).
const LARGE_RX_BUFFER: usize = 64 * 1024;
/// Most slices handed to one `sendmsg` (Linux's IOV_MAX is 1024).
pub const MAX_IOVECS: usize = 512;

/// One TCP connection, shareable between the reading and the writing task of a shard.
///
/// Reads land directly in a shared buffer and come back as frozen `Bytes` that protocol
/// parsers slice without copying. Writes take a list of slices and hand them to the kernel in
/// one `sendmsg`, so payloads shared by many viewers are never gathered into a per-viewer buffer.
#[derive(Clone)]
pub struct TcpConn {
    stream: Rc<RefCell<glommio::net::TcpStream>>,
    rx: Rc<RefCell<BytesMut>>,
    fd: RawFd,
    peer: SocketAddr,
}

impl TcpConn {
    fn new(stream: glommio::net::TcpStream) -> io::Result<Self> {
        let peer = stream.peer_addr().map_err(io::Error::from)?;
        // Media is latency-sensitive and we already batch writes ourselves.
        stream.set_nodelay(true).map_err(io::Error::from)?;
        let fd = stream.as_raw_fd();
        Ok(TcpConn {
            stream: Rc::new(RefCell::new(stream)),
            rx: Rc::new(RefCell::new(BytesMut::zeroed(SMALL_RX_BUFFER))),
            fd,
            peer,
        })
    }

    /// Connects to `addr` (used by tests and outbound sessions).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let s = glommio::net::TcpStream::connect(addr)
            .await
            .map_err(io::Error::from)?;
        TcpConn::new(s)
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Fails pending and future writes that wait longer than `d` for room in the socket.
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.stream
            .borrow()
            .set_write_timeout(d)
            .map_err(io::Error::from)
    }

    /// Reads what the kernel has (waiting for at least one byte). An empty result means the
    /// peer closed its side.
    pub async fn read(&self) -> io::Result<Bytes> {
        {
            let mut rx = self.rx.borrow_mut();
            if rx.len() < MIN_READ_AREA {
                // The old block stays alive as long as frames sliced from it do.
                *rx = BytesMut::zeroed(SMALL_RX_BUFFER);
            }
        }
        let n = poll_fn(|cx| {
            let mut rx = self.rx.borrow_mut();
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_read(cx, &mut rx[..])
        })
        .await?;
        let mut rx = self.rx.borrow_mut();
        let filled = n == rx.len();
        let data = rx.split_to(n).freeze();
        if filled {
            *rx = BytesMut::zeroed(LARGE_RX_BUFFER);
        }
        Ok(data)
    }

    /// Writes every byte of `slices`, in order, without copying them.
    ///
    /// Fast path: one non-blocking `sendmsg` per batch of up to [`MAX_IOVECS`] slices. When
    /// the socket is full, waits for room through the executor (which also enforces the write
    /// timeout) and goes on.
    pub async fn write_all(&self, slices: &[Bytes]) -> io::Result<()> {
        let mut index = 0usize; // first slice not fully written
        let mut offset = 0usize; // bytes of slices[index] already written
        while index < slices.len() {
            let n = {
                let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOVECS.min(slices.len()));
                iov.push(IoSlice::new(&slices[index][offset..]));
                for s in slices[index + 1..].iter().take(MAX_IOVECS - 1) {
                    iov.push(IoSlice::new(s));
                }
                send_vectored_nonblocking(self.fd, &iov)
            };
            let n = match n {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Wait for room by writing (part of) the current slice the executor's way.
                    let head = &slices[index][offset..];
                    poll_fn(|cx| {
                        let mut stream = self.stream.borrow_mut();
                        Pin::new(&mut *stream).poll_write(cx, head)
                    })
                    .await?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            let mut left = n;
            while left > 0 && index < slices.len() {
                let avail = slices[index].len() - offset;
                if left >= avail {
                    left -= avail;
                    index += 1;
                    offset = 0;
                } else {
                    offset += left;
                    left = 0;
                }
            }
            while index < slices.len() && slices[index].len() == offset {
                index += 1;
                offset = 0;
            }
        }
        Ok(())
    }

    /// Shuts down one or both directions; a reader blocked in [`read`](Self::read) then sees
    /// end of stream.
    pub fn shutdown(&self, how: Shutdown) {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: `fd` belongs to the stream this `TcpConn` keeps alive, so it is open; shutdown
        // touches no memory. Its error (already shut down, peer gone) does not matter here.
        unsafe {
            libc::shutdown(self.fd, how);
        }
    }

    /// Flushes and closes the write side, then the read side.
    pub async fn close(&self) {
        let _ = poll_fn(|cx| {
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_close(cx)
        })
        .await;
        self.shutdown(Shutdown::Both);
    }
}

impl TcpConn {
    /// Poll-style read into `buf`, for stream adapters (HTTP). The media path uses
    /// [`TcpConn::read`], which avoids this copy.
    pub fn poll_read_into(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let mut stream = self.stream.borrow_mut();
        Pin::new(&mut *stream).poll_read(cx, buf)
    }

    /// Poll-style vectored write: one non-blocking `sendmsg` of up to [`MAX_IOVECS`] slices;
    /// when the socket is full, waits for it to become writable. Returns how many bytes went.
    pub fn poll_write_vectored(
        &self,
        cx: &mut std::task::Context<'_>,
        iov: &[IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let iov = &iov[..iov.len().min(MAX_IOVECS)];
        loop {
            match send_vectored_nonblocking(self.fd, iov) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                other => return std::task::Poll::Ready(other),
            }
        }
        // glommio's poll_write tries one plain send of the first slice and, when the socket is
        // still full, registers for writability; it holds no data of ours in flight.
        let head = iov
            .iter()
            .find(|s| !s.is_empty())
            .map_or(&[][..], |s| &s[..]);
        let mut stream = self.stream.borrow_mut();
        Pin::new(&mut *stream).poll_write(cx, head)
    }
}

impl AsyncRead for TcpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.poll_read_into(cx, buf)
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        TcpConn::poll_write_vectored(&self, cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        TcpConn::poll_write_vectored(&self, cx, bufs)
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        // Nothing is buffered here: every write went to the kernel.
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.shutdown(Shutdown::Write);
        std::task::Poll::Ready(Ok(()))
    }
}

/// One non-blocking `sendmsg` of `iov`; never raises SIGPIPE.
fn send_vectored_nonblocking(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix; `iov` and
    // the memory it points to stay borrowed for the whole call; `msghdr` is zeroed (no name,
    // no control data) and only its iov fields are set; `fd` is an open socket owned by the
    // caller's `TcpConn`.
    let ret = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}
