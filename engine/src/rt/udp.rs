//! UDP on a shard: zero-copy receives into shared buffers, vectored sends of shared slices.
//!
//! Every shard binds the listening address with SO_REUSEPORT; the kernel hashes each peer's
//! 4-tuple to one of them, so all datagrams of a session reach the shard that owns it.

use std::io::{self, IoSlice};
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

/// Receive area kept ahead of each read: larger than any datagram we accept.
const RECV_AREA: usize = 2048;
/// Buffer refilled this many datagrams' worth at a time, so allocations are amortised.
const RECV_SLAB: usize = 64 * 1024;
/// Kernel socket buffers we ask for (the kernel may cap them at net.core.*mem_max).
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket of one shard.
pub struct UdpSocket {
    /// The executor's handle, for receiving (and sending when the socket is full).
    io: glommio::net::UdpSocket,
    /// A duplicate descriptor of the same socket, for non-blocking vectored sends.
    sender: socket2::Socket,
    rx: std::cell::RefCell<BytesMut>,
}

impl UdpSocket {
    /// Binds `addr` with SO_REUSEADDR and SO_REUSEPORT.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Best effort: a bigger buffer absorbs bursts (a keyframe to many viewers).
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        let sender = socket.try_clone()?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(socket);
        // SAFETY: `fd` is a bound UDP socket we own (just released by `into_raw_fd`), and
        // glommio's socket takes sole ownership of it. (glommio's `From<socket2::Socket>` is
        // for another socket2 version.) `sender` is a separate descriptor from `try_clone`.
        let io = unsafe { <glommio::net::UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(UdpSocket {
            io,
            sender,
            rx: std::cell::RefCell::new(BytesMut::new()),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr().map_err(io::Error::from)
    }

    /// Waits for the next datagram; its bytes are a slice of a shared receive buffer.
    pub async fn recv_from(&self) -> io::Result<(Bytes, SocketAddr)> {
        let mut area = {
            let mut rx = self.rx.borrow_mut();
            if rx.capacity() < RECV_AREA {
                *rx = BytesMut::with_capacity(RECV_SLAB);
            }
            rx.resize(RECV_AREA, 0);
            rx.split_to(RECV_AREA)
        };
        let (n, from) = self
            .io
            .recv_from(&mut area)
            .await
            .map_err(io::Error::from)?;
        area.truncate(n);
        // The unused tail of the area is wasted: a slab serves RECV_SLAB / RECV_AREA datagrams.
        Ok((area.freeze(), from))
    }

    /// Sends one datagram made of `slices` to `to` without gathering them. When the socket
    /// buffer is full, waits for room through the executor (copying this datagram once).
    pub async fn send_to(&self, slices: &[Bytes], to: SocketAddr) -> io::Result<()> {
        let iov: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
        match self.sender.send_to_vectored(&iov, &to.into()) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let whole: Vec<u8> = slices.concat();
                self.io
                    .send_to(&whole, to)
                    .await
                    .map(|_| ())
                    .map_err(io::Error::from)
            }
            Err(e) => Err(e),
        }
    }
}
